// End-to-end browser tests of the node's web UI in real headless Chromium (Debian's chromium,
// driven by playwright-core), against two running nodes of one neighbourhood.
//
// Environment:
//   WATTMESH_UI_A, WATTMESH_UI_B        base URLs of the two nodes (e.g. http://127.0.0.1:8701)
//   WATTMESH_SETUP_A, WATTMESH_SETUP_B  their one-time setup codes (nodes must be fresh)
//   WATTMESH_SCREENSHOTS                where to save screenshots (default: docs/screenshots)
//   CHROMIUM                            the browser (default: /usr/bin/chromium)
//   WATTMESH_E2E_TIMEOUT_MS             how long to wait for gossip and trades (default 90000)
//
// Prints one line per check and closes with "N passed, N failed".
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseJson } from '../src/json.js';
import { scaledToString } from '../src/format.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const need = (k) => {
  const v = process.env[k];
  if (!v) {
    console.error(`e2e: ${k} is not set (see the header of ${path.relative(process.cwd(), fileURLToPath(import.meta.url))})`);
    process.exit(2);
  }
  return v;
};
const A = need('WATTMESH_UI_A').replace(/\/$/, '');
const B = need('WATTMESH_UI_B').replace(/\/$/, '');
const CODE_A = need('WATTMESH_SETUP_A');
const CODE_B = need('WATTMESH_SETUP_B');
const SHOTS = path.resolve(process.env.WATTMESH_SCREENSHOTS || path.join(here, '..', '..', 'docs', 'screenshots'));
const WAIT = Number(process.env.WATTMESH_E2E_TIMEOUT_MS || 90000);
const PASSWORD = 'correct horse battery';
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1366, height: 900 };

let passed = 0;
let failed = 0;
const t0 = Date.now();
async function check(name, fn) {
  const t = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok   ${name} (${((Date.now() - t) / 1000).toFixed(1)} s)`);
    return true;
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}\n     ${String(e?.stack || e).split('\n').slice(0, 6).join('\n     ')}`);
    return false;
  }
}
function finish() {
  console.log(`\ne2e: ${((Date.now() - t0) / 1000).toFixed(0)} s, screenshots in ${SHOTS}`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

await mkdir(SHOTS, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
  ],
});

const browserErrors = [];
async function newPage(base, name) {
  const ctx = await browser.newContext({ viewport: DESKTOP, acceptDownloads: true, colorScheme: 'light', locale: 'en-GB' });
  const page = await ctx.newPage();
  page.setDefaultTimeout(15000);
  page.on('pageerror', (e) => browserErrors.push(`${name}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/401|403|Failed to load resource/.test(m.text())) browserErrors.push(`${name}: ${m.text()}`);
  });
  page.on('dialog', (d) => d.accept());
  await page.goto(base + '/');
  return { ctx, page, base };
}

/** Calls the API from inside the page (same origin, the page's session cookie). */
// Integers beyond 2^53 (u64 offer nonces) are read as strings, as the app itself does.
const inPage = (page, route) =>
  page.evaluate(async (r) => {
    const res = await fetch(r, { credentials: 'same-origin' });
    const text = await res.text();
    const BIG = /("(?:[^"\\]|\\.)*")|([:,[]\s*)(-?\d{16,})(?=\s*[,}\]])/g;
    const safe = text.replace(BIG, (m, str, pre, num) => (str !== undefined ? str : Number.isSafeInteger(Number(num)) ? m : `${pre}"${num}"`));
    let body = null;
    try {
      body = JSON.parse(safe);
    } catch {
      body = null;
    }
    return { status: res.status, body };
  }, route);

/** A state-changing API call from inside the page, with the session's CSRF token. */
const postInPage = (page, route, body) =>
  page.evaluate(
    async ([r, b]) => {
      const { csrf } = await (await fetch('/api/session')).json();
      const res = await fetch(r, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
        body: JSON.stringify(b),
      });
      return { status: res.status, body: await res.json().catch(() => null) };
    },
    [route, body],
  );

async function go(page, hash) {
  await page.evaluate((h) => {
    location.hash = h;
  }, hash);
  await page.waitForFunction((h) => document.title && location.hash === h, hash);
}

const overflow = [];
/** Screenshot at phone and desktop size; `ready` waits for the page's content. */
async function shoot(page, name, ready) {
  for (const [size, vp] of [['phone', PHONE], ['desktop', DESKTOP]]) {
    await page.setViewportSize(vp);
    await page.evaluate(() => window.scrollTo(0, 0));
    if (ready) await ready();
    await page.waitForTimeout(600); // charts resize on the next frame
    const sw = await page.evaluate(() => document.documentElement.scrollWidth);
    if (sw > vp.width) overflow.push(`${name} is ${sw}px wide at ${vp.width}px`);
    await page.screenshot({ path: path.join(SHOTS, `${name}-${size}.png`), fullPage: true });
  }
  await page.setViewportSize(DESKTOP);
}

const heading = (page, text) => page.getByRole('heading', { level: 1, name: text }).waitFor();

async function setupNode(base, code, user, shots) {
  const n = await newPage(base, user);
  const { page } = n;
  await heading(page, 'Set up this node');
  if (shots) await shoot(page, 'setup');
  // A wrong code is refused.
  await page.getByLabel('Setup code').fill('not-the-code');
  await page.getByLabel('Your user name').fill(user);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByLabel('Password again').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create owner account' }).click();
  await page.getByRole('alert').waitFor();
  assert.equal(await page.getByRole('heading', { level: 1, name: 'Set up this node' }).count(), 1);
  await page.getByLabel('Setup code').fill(code);
  await page.getByRole('button', { name: 'Create owner account' }).click();
  await heading(page, 'Dashboard');
  const s = await inPage(page, '/api/session');
  assert.equal(s.status, 200);
  assert.equal(s.body.user.role, 'owner');
  const setupAgain = await inPage(page, '/api/setup');
  assert.equal(setupAgain.body.needed, false, 'setup is needed no more');
  return n;
}

let a;
let b;
let nodeA;
let nodeB;
let nonce; // the offer's
let trade; // what the take answered: the trade is named by (taker, the taker's proposal nonce)

await check('unauthenticated API requests get 401', async () => {
  for (const base of [A, B]) {
    for (const r of ['/api/status', '/api/offers', '/api/trades', '/api/summary', '/api/members', '/api/users', '/api/trader', '/api/session', `/api/export/trades.csv?from=0&to=${Date.now()}`]) {
      const res = await fetch(base + r);
      assert.equal(res.status, 401, `${base}${r} answered ${res.status}`);
      if (!r.endsWith('.csv') && r !== '/api/session') {
        const body = await res.json().catch(() => null);
        assert.ok(body && typeof body.error === 'string', `${r}: 401 without {"error"}`);
      }
    }
    const post = await fetch(base + '/api/offers', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ side: 'sell', quantity_wh: 100, price: 9000 }),
    });
    assert.ok([401, 403].includes(post.status), `POST /api/offers without a session answered ${post.status}`);
    const live = await fetch(base + '/api/live');
    assert.equal(live.status, 401, `/api/live answered ${live.status}`);
    await live.body?.cancel();
  }
});

const setupOk =
  (await check('first-run setup with the one-time code on node A', async () => {
    a = await setupNode(A, CODE_A, 'ada', true);
  })) &
  (await check('first-run setup with the one-time code on node B', async () => {
    b = await setupNode(B, CODE_B, 'bo', false);
  }));

if (!setupOk) {
  await browser.close();
  finish();
  process.exit();
}

await check('logout and login', async () => {
  const { page } = a;
  await page.getByRole('button', { name: 'Sign out' }).click();
  await heading(page, 'Sign in');
  assert.equal((await inPage(page, '/api/status')).status, 401, 'the session is gone after logout');
  await shoot(page, 'login');
  await page.getByLabel('User name').fill('ada');
  await page.getByLabel('Password').fill('wrong password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').waitFor();
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await heading(page, 'Dashboard');
  assert.equal((await inPage(page, '/api/status')).status, 200);
});

await check('live power arrives on the dashboard by itself', async () => {
  const { page } = a;
  await go(page, '#/dashboard');
  const at = page.getByTestId('live-at');
  await at.waitFor({ timeout: 20000 });
  const first = Number(await at.getAttribute('data-at'));
  await page.waitForFunction(
    (f) => Number(document.querySelector('[data-testid="live-at"]')?.dataset.at) > f,
    first,
    { timeout: 20000 },
  );
  const grid = await page.getByTestId('live-grid').innerText();
  assert.match(grid, /\d+(\.\d+)? k?W/, `grid power shows a value: ${grid}`);
});

await check('cross-site and CSRF-less state-changing requests are refused', async () => {
  const cookies = await a.ctx.cookies(A);
  assert.ok(cookies.length > 0, 'a session cookie is set');
  const sessionCookie = cookies.find((c) => c.httpOnly);
  assert.ok(sessionCookie, 'the session cookie is HttpOnly');
  assert.equal(sessionCookie.sameSite, 'Strict', 'the session cookie is SameSite=Strict');
  const cookie = cookies.map((c) => `${c.name}=${c.value}`).join('; ');
  const { csrf } = (await inPage(a.page, '/api/session')).body;
  assert.ok(csrf, 'the session has a CSRF token');
  const offer = JSON.stringify({ side: 'sell', quantity_wh: 100, price: 9000 });
  const json = { 'Content-Type': 'application/json', Cookie: cookie };
  // No CSRF header.
  let r = await fetch(A + '/api/offers', { method: 'POST', headers: { ...json, Origin: A }, body: offer });
  assert.ok(r.status === 403 || r.status === 401, `no CSRF header: ${r.status}`);
  // A wrong CSRF token.
  r = await fetch(A + '/api/offers', { method: 'POST', headers: { ...json, Origin: A, 'X-CSRF-Token': 'x' + csrf }, body: offer });
  assert.ok(r.status === 403 || r.status === 401, `wrong CSRF token: ${r.status}`);
  // The right token but from another site.
  r = await fetch(A + '/api/offers', { method: 'POST', headers: { ...json, Origin: 'http://evil.example', 'X-CSRF-Token': csrf }, body: offer });
  assert.ok(r.status >= 400 && r.status < 500, `foreign Origin: ${r.status}`);
  // A form post from another site (the classic CSRF).
  r = await fetch(A + '/api/logout', { method: 'POST', headers: { Cookie: cookie, Origin: 'http://evil.example', 'Content-Type': 'application/x-www-form-urlencoded' }, body: '' });
  assert.ok(r.status >= 400 && r.status < 500, `cross-site form post: ${r.status}`);
  // In the browser, from a page of another site (no CSP of ours applies to it): a script's
  // request and the classic CSRF, a cross-site form post. The SameSite=Strict cookie stays home.
  const evil = await a.ctx.newPage();
  await evil.goto('data:text/html,<title>elsewhere</title><p>another site</p>');
  await evil.evaluate(async (target) => {
    await fetch(target + '/api/offers', {
      method: 'POST', mode: 'no-cors', credentials: 'include', headers: { 'Content-Type': 'text/plain' },
      body: JSON.stringify({ side: 'sell', quantity_wh: 100, price: 9000 }),
    }).catch(() => {});
  }, A);
  await evil.evaluate((target) => {
    const f = document.createElement('form');
    f.method = 'POST';
    f.action = target + '/api/offers';
    f.enctype = 'text/plain';
    const i = document.createElement('input');
    i.name = '{"side":"sell","quantity_wh":100,"price":9000,"x":"';
    i.value = '"}';
    f.append(i);
    document.body.append(f);
    f.submit();
  }, A);
  await evil.waitForURL(`${A}/api/offers`);
  const answer = await evil.locator('body').innerText();
  assert.match(answer, /"error"/, `the cross-site form post was refused: ${answer.slice(0, 200)}`);
  await evil.close();
  // Nothing was posted by any of these (an automatic trader may post offers of its own).
  const mine = (await inPage(a.page, '/api/offers')).body.filter((o) => o.mine && o.quantity_wh === 100 && o.price === 9000);
  assert.equal(mine.length, 0, 'no offer was created by the refused requests');
  // Still signed in.
  assert.equal((await inPage(a.page, '/api/status')).status, 200);
});

nodeA = (await inPage(a.page, '/api/status')).body;
nodeB = (await inPage(b.page, '/api/status')).body;

await check('automation page: the automatic trader is switched off on both nodes', async () => {
  // So that no automatic trader takes the offer this test posts before node B's owner does.
  for (const n of [a, b]) {
    await go(n.page, '#/automation');
    await heading(n.page, 'Automation');
    const sw = n.page.getByTestId('trader-switch');
    await sw.waitFor();
    if ((await sw.getAttribute('aria-checked')) === 'true') {
      await sw.click();
      await n.page.waitForFunction(() => document.querySelector('[data-testid="trader-switch"]')?.getAttribute('aria-checked') === 'false');
      await n.page.getByText('Saved.').waitFor();
    }
    const t = await inPage(n.page, '/api/trader');
    assert.equal(t.body.limits.enabled, false);
  }
});

const posted = await check('posting a sell offer on node A', async () => {
  const { page } = a;
  await go(page, '#/market');
  await heading(page, 'Market');
  const form = page.getByTestId('offer-form');
  await form.getByLabel('Sell energy').check();
  await form.getByLabel('Energy (kWh)').fill('0.5');
  const ch = (await inPage(page, '/api/charter')).body;
  const price = Math.round((ch.feed_in_price + ch.retail_price) / 2);
  await form.getByLabel(/^Price/).fill(String(price / 1000));
  // Three slots ahead, so that its gate does not close before B takes it (also on a fast clock).
  await form.getByLabel('Delivery slot').selectOption({ index: 3 });
  const before = new Set((await inPage(page, '/api/offers')).body.filter((o) => o.mine).map((o) => String(o.nonce)));
  await form.getByRole('button', { name: 'Post sell offer' }).click();
  await page.getByText('Posted: sell').waitFor({ timeout: WAIT });
  const mine = (await inPage(page, '/api/offers')).body.filter((o) => o.mine && !before.has(String(o.nonce)) && o.side === 'sell');
  assert.equal(mine.length, 1, `one new own offer in the book: ${JSON.stringify(mine)}`);
  assert.equal(mine[0].quantity_wh, 500);
  assert.equal(mine[0].price, price);
  nonce = mine[0].nonce;
  await page.locator(`[data-testid="offer-row"][data-nonce="${nonce}"][data-maker="${nodeA.node_id}"]`).waitFor();
});

const taken =
  posted &&
  (await check('taking the offer from node B', async () => {
    const { page } = b;
    await go(page, '#/market');
    await heading(page, 'Market');
    const row = page.locator(`[data-testid="offer-row"][data-nonce="${nonce}"][data-maker="${nodeA.node_id}"]`);
    await row.waitFor({ timeout: WAIT }); // gossip from A, the book refreshes every 5 s
    await row.getByTestId('take-offer').click();
    const dlg = page.getByRole('dialog');
    await dlg.getByLabel('Energy (kWh)').fill('0.5');
    const [res] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/api/take'), { timeout: WAIT }),
      dlg.getByRole('button', { name: 'Buy', exact: true }).click(),
    ]);
    const text = await res.text();
    assert.equal(res.status(), 200, `take: ${text}`);
    trade = parseJson(text);
    await dlg.getByText('Agreed: you buy').waitFor({ timeout: WAIT });
    assert.equal(trade.taker, nodeB.node_id);
    assert.equal(trade.energy_wh, 500);
    assert.equal(trade.side, 'buy');
    await dlg.getByRole('button', { name: 'Done' }).click();
  }));

await check('the trade shows on both nodes, signatures verified', async () => {
  assert.ok(taken, 'no trade was made');
  const rowSel = `[data-testid="trade-row"][data-nonce="${trade.nonce}"][data-taker="${trade.taker}"]`;
  for (const [n, side] of [[b, 'bought'], [a, 'sold']]) {
    await go(n.page, '#/trades');
    await heading(n.page, 'Trades');
    const row = n.page.locator(rowSel);
    await row.waitFor({ timeout: WAIT });
    assert.match(await row.innerText(), new RegExp(side));
  }
  const t = (await inPage(a.page, `/api/trades/${trade.taker}/${trade.nonce}`)).body;
  assert.ok(t?.taker === trade.taker, 'A has the trade');
  assert.equal(t.role, 'maker');
  assert.equal(t.side, 'sell');
  assert.equal(t.energy_wh, 500);
  await go(b.page, `#/trades/${trade.taker}/${trade.nonce}`);
  await b.page.getByTestId('trade-detail').waitFor();
  assert.match(await b.page.getByTestId('signatures').innerText(), /both signatures verified/);
});

await check('CSV download has a header and a row', async () => {
  const { page } = a;
  await go(page, '#/downloads');
  await heading(page, 'Downloads');
  // Through tomorrow, so a trade in a slot just after midnight is inside the range too.
  const nodeNow = (await inPage(page, '/api/status')).body.now_ms; // the node's clock may differ
  const tomorrow = new Date(nodeNow + 86400000);
  const p = (x) => String(x).padStart(2, '0');
  await page.getByLabel('Last day').fill(`${tomorrow.getFullYear()}-${p(tomorrow.getMonth() + 1)}-${p(tomorrow.getDate())}`);
  const [dl] = await Promise.all([page.waitForEvent('download'), page.getByTestId('download-trades').click()]);
  const text = await readFile(await dl.path(), 'utf8');
  const lines = text.split(/\r?\n/).filter((l) => l.trim());
  assert.ok(lines.length >= 2, `trades.csv has a header and at least one row:\n${text.slice(0, 400)}`);
  assert.ok(lines[0].includes(','), `a CSV header: ${lines[0]}`);
  assert.ok(!/^\d/.test(lines[0]), `the first line is a header, not data: ${lines[0]}`);
  for (const k of ['readings', 'settlements']) {
    const [d] = await Promise.all([page.waitForEvent('download'), page.getByTestId(`download-${k}`).click()]);
    const head = (await readFile(await d.path(), 'utf8')).split(/\r?\n/)[0];
    assert.ok(head.includes(','), `${k}.csv has a header: ${head}`);
  }
});

// Standing agreements, payments and disputes, end to end between the two homes.
let agreementId;
let agTrade; // a trade the agreement made, on both nodes
const rowOf = (page, id) => page.locator(`[data-testid="agreement-row"][data-id="${id}"]`);

const proposed = await check('standing agreement: A proposes one to B (a price outside the band is refused first)', async () => {
  const { page } = a;
  await go(page, '#/agreements');
  await heading(page, 'Agreements');
  const form = page.getByTestId('agreement-form');
  await form.waitFor();
  const ch = (await inPage(page, '/api/charter')).body;
  const mid = Math.round((ch.feed_in_price + ch.retail_price) / 2);
  await form.getByLabel('Neighbour').selectOption(nodeB.node_id);
  await form.getByLabel('Sell to them').check();
  await form.getByLabel('Energy per slot (Wh)').fill('150');
  await form.getByLabel(/^Price/).fill(scaledToString(ch.retail_price + 1000, 3));
  await form.getByRole('button', { name: 'Propose agreement' }).click();
  await page.getByRole('alert').filter({ hasText: 'must be between' }).waitFor();
  await form.getByLabel(/^Price/).fill(scaledToString(mid, 3));
  await form.getByLabel('Number of days').fill('2');
  await form.getByLabel('From', { exact: true }).selectOption('0');
  await form.getByLabel('Until').selectOption('1440');
  await page.getByTestId('agreement-preview').waitFor();
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/api/agreements') && r.request().method() === 'POST', { timeout: WAIT }),
    form.getByRole('button', { name: 'Propose agreement' }).click(),
  ]);
  const text = await res.text();
  assert.equal(res.status(), 200, `propose: ${text}`);
  agreementId = parseJson(text).id;
  await page.getByText('Sent to').waitFor();
  const row = rowOf(page, agreementId);
  await row.waitFor({ timeout: WAIT });
  assert.equal(await row.getAttribute('data-state'), 'proposed');
  assert.match(await row.innerText(), /waiting for them/);
});

const accepted =
  proposed &&
  (await check('standing agreement: B sees it waiting and accepts; both see it signed', async () => {
    const { page } = b;
    await go(page, '#/agreements');
    await heading(page, 'Agreements');
    const waiting = page.locator(`[data-testid="agreement-row"][data-id="${agreementId}"][data-state="offered"]`);
    await waiting.waitFor({ timeout: WAIT });
    assert.match(await waiting.innerText(), /waiting for you/);
    assert.match(await waiting.innerText(), /150 Wh/);
    await shoot(page, 'agreement-waiting', () => waiting.waitFor());
    await waiting.getByTestId('doc-accept').click();
    await page.locator(`[data-testid="agreement-row"][data-id="${agreementId}"][data-state="signed"]`).waitFor({ timeout: WAIT });
    await a.page.locator(`[data-testid="agreement-row"][data-id="${agreementId}"][data-state="signed"]`).waitFor({ timeout: WAIT });
    assert.match(await rowOf(a.page, agreementId).innerText(), /signed by both/);
    await shoot(a.page, 'agreements', () => rowOf(a.page, agreementId).waitFor());
  }));

await check("standing agreement: A's trades list gets its trades, and B has the same ones", async () => {
  assert.ok(accepted, 'no agreement was signed');
  const { page } = a;
  await go(page, '#/trades');
  await heading(page, 'Trades');
  await page.locator('[data-testid="trade-row"][data-agreement="yes"]').first().waitFor({ timeout: WAIT });
  const mine = (await inPage(page, '/api/trades?status=standing&limit=500')).body.trades.filter((t) => t.from_agreement && t.counterparty_id === nodeB.node_id);
  assert.ok(mine.length > 0, 'A has trades from the agreement');
  assert.ok(mine.every((t) => t.side === 'sell' && t.energy_wh === 150), 'A sells 150 Wh in each');
  await page.waitForFunction(
    async (ids) => {
      const list = await (await fetch('/api/trades?status=standing&limit=500')).text();
      return ids.some((id) => list.includes(id));
    },
    mine.map((t) => `${t.nonce}`),
    { timeout: WAIT, polling: 1000 },
  );
  const theirs = (await inPage(b.page, '/api/trades?status=standing&side=buy&limit=500')).body.trades.filter((t) => t.from_agreement && t.side === 'buy');
  agTrade = mine.sort((x, y) => x.slot_ms - y.slot_ms).find((t) => theirs.some((u) => u.taker === t.taker && String(u.nonce) === String(t.nonce)));
  assert.ok(agTrade, 'B holds the same trade as A');
  assert.match(await page.locator('[data-testid="trade-row"][data-agreement="yes"]').first().innerText(), /standing/);
});

const paid = await check('payment: B records a payment to A (bad input refused first)', async () => {
  const { page } = b;
  await go(page, '#/statements');
  await heading(page, 'Statements');
  const bal = page.locator(`[data-testid="balance"][data-peer="${nodeA.node_id}"]`);
  await bal.waitFor({ timeout: WAIT });
  await bal.getByTestId('record-payment').click();
  const dlg = page.getByRole('dialog');
  await dlg.getByLabel(/^Amount/).fill('one euro');
  await dlg.getByRole('button', { name: 'Record payment' }).click();
  await dlg.getByRole('alert').filter({ hasText: 'Enter the amount' }).waitFor();
  await dlg.getByLabel(/^Amount/).fill('1.23');
  await dlg.getByLabel('Reference').fill('bank transfer 42');
  await dlg.getByRole('button', { name: 'Record payment' }).click();
  await dlg.getByText('Recorded: you paid').waitFor({ timeout: WAIT });
  await dlg.getByRole('button', { name: 'Done' }).click();
  const row = page.locator('[data-testid="payment-row"]').filter({ hasText: 'bank transfer 42' });
  await row.waitFor({ timeout: WAIT });
  assert.equal(await row.getAttribute('data-state'), 'proposed');
});

await check('payment: A confirms it; both statements show it', async () => {
  assert.ok(paid, 'no payment was recorded');
  const { page } = a;
  await go(page, '#/statements');
  await heading(page, 'Statements');
  const waiting = page.locator('[data-testid="waiting-doc"][data-kind="payment"]').filter({ hasText: 'bank transfer 42' });
  await waiting.waitFor({ timeout: WAIT });
  await shoot(page, 'statements-waiting', () => waiting.waitFor());
  await waiting.getByRole('button', { name: /^Confirm/ }).click();
  await page.locator('[data-testid="payment-row"][data-state="signed"]').filter({ hasText: 'bank transfer 42' }).waitFor({ timeout: WAIT });
  await page.locator(`[data-testid="statement-row"][data-peer="${nodeB.node_id}"] [data-testid="statement-payments"]`).filter({ hasText: 'received' }).waitFor({ timeout: WAIT });
  await b.page.locator('[data-testid="payment-row"][data-state="signed"]').filter({ hasText: 'bank transfer 42' }).waitFor({ timeout: WAIT });
  await b.page.locator(`[data-testid="statement-row"][data-peer="${nodeA.node_id}"] [data-testid="statement-payments"]`).filter({ hasText: 'paid' }).waitFor({ timeout: WAIT });
  const sum = (lines, peer, k) => lines.filter((l) => l.counterparty === peer).reduce((x, l) => x + l[k], 0);
  const la = (await inPage(page, '/api/ledger')).body;
  const lb = (await inPage(b.page, '/api/ledger')).body;
  assert.equal(sum(la.statements, nodeB.node_id, 'payments_received'), 123000, 'A counts 1.23 received');
  assert.equal(sum(lb.statements, nodeA.node_id, 'payments_made'), 123000, 'B counts 1.23 paid');
});

await check('payment: B records one by mistake and withdraws it before A confirms; both show it withdrawn', async () => {
  assert.ok(paid, 'no payment was recorded');
  const { page } = b;
  await go(page, '#/statements');
  await heading(page, 'Statements');
  const bal = page.locator(`[data-testid="balance"][data-peer="${nodeA.node_id}"]`);
  await bal.getByTestId('record-payment').click();
  const dlg = page.getByRole('dialog');
  await dlg.getByLabel(/^Amount/).fill('4.56');
  await dlg.getByLabel('Reference').fill('typed twice');
  await dlg.getByRole('button', { name: 'Record payment' }).click();
  await dlg.getByText('Recorded: you paid').waitFor({ timeout: WAIT });
  await dlg.getByRole('button', { name: 'Done' }).click();
  const row = page.locator('[data-testid="payment-row"]').filter({ hasText: 'typed twice' });
  await row.waitFor({ timeout: WAIT });
  assert.equal(await row.getAttribute('data-state'), 'proposed');
  await go(a.page, '#/statements');
  await a.page.locator('[data-testid="waiting-doc"][data-kind="payment"]').filter({ hasText: 'typed twice' }).waitFor({ timeout: WAIT });
  await row.getByTestId('doc-withdraw').click();
  await page.locator('[data-testid="payment-row"][data-state="withdrawn"]').filter({ hasText: 'typed twice' }).waitFor({ timeout: WAIT });
  assert.match(await page.locator('[data-testid="payment-row"]').filter({ hasText: 'typed twice' }).innerText(), /withdrawn by you/);
  await a.page.locator('[data-testid="payment-row"][data-state="withdrawn"]').filter({ hasText: 'typed twice' }).waitFor({ timeout: WAIT });
  assert.equal(await a.page.locator('[data-testid="waiting-doc"]').filter({ hasText: 'typed twice' }).count(), 0, 'nothing left to confirm');
  const lb = (await inPage(page, '/api/ledger')).body;
  const sum = (lines, peer, k) => lines.filter((l) => l.counterparty === peer).reduce((x, l) => x + l[k], 0);
  assert.equal(sum(lb.statements, nodeA.node_id, 'payments_made'), 123000, 'only the confirmed 1.23 counts');
});

const cardOf = (page, t) => page.locator(`[data-testid="dispute"][data-taker="${t.taker}"][data-nonce="${t.nonce}"]`);
await check('dispute: A opens one on a shared trade, B answers, both name the same amount: resolved on both', async () => {
  assert.ok(agTrade, 'no shared trade');
  const t = agTrade;
  const value = Math.floor((t.energy_wh * t.price) / 1000);
  const half = Math.floor(value / 2);
  const { page } = a;
  await go(page, `#/trades/${t.taker}/${t.nonce}`);
  const open = page.getByTestId('open-dispute');
  await open.waitFor();
  await open.getByRole('button', { name: 'Open a dispute' }).click();
  await page.getByRole('alert').filter({ hasText: 'Say what went wrong' }).waitFor();
  await open.getByLabel('What went wrong?').fill('My meter shows less than we agreed for this slot.');
  await open.getByRole('button', { name: 'Open a dispute' }).click();
  await cardOf(page, t).and(page.locator('[data-status="open"]')).waitFor({ timeout: WAIT });
  // B sees A's note and answers.
  await go(b.page, '#/trades');
  await heading(b.page, 'Trades');
  const cb = cardOf(b.page, t);
  await cb.locator('[data-testid="dispute-note"][data-ours="no"]').filter({ hasText: 'less than we agreed' }).waitFor({ timeout: WAIT });
  await cb.getByLabel('Your answer').fill('Mine too: the clouds came early. Half the value?');
  await cb.getByTestId('send-note').click();
  await b.page.locator(`[data-testid="dispute"][data-nonce="${t.nonce}"][data-status="answered"]`).waitFor({ timeout: WAIT });
  // A sees the answer, tries too much, then proposes half.
  const ca = cardOf(page, t);
  await ca.locator('[data-testid="dispute-note"][data-ours="no"]').waitFor({ timeout: WAIT });
  await page.locator(`[data-testid="dispute"][data-nonce="${t.nonce}"][data-status="answered"]`).waitFor({ timeout: WAIT });
  await ca.getByLabel(/pays \(/).fill(scaledToString(value + 1000, 5));
  await ca.getByTestId('propose-resolution').click();
  await ca.getByRole('alert').filter({ hasText: 'full value' }).waitFor();
  await ca.getByLabel(/pays \(/).fill(scaledToString(half, 5));
  await ca.getByTestId('propose-resolution').click();
  await ca.locator('[data-testid="dispute-note"][data-stage="resolve"][data-ours="yes"]').waitFor({ timeout: WAIT });
  // B accepts A's amount: both resolve notes name it.
  await cb.getByTestId('accept-resolution').waitFor({ timeout: WAIT });
  await cb.getByTestId('accept-resolution').click();
  // (On the Trades page resolved disputes fold away under a summary.)
  await b.page.locator(`[data-testid="dispute"][data-nonce="${t.nonce}"][data-status="resolved"]`).waitFor({ state: 'attached', timeout: WAIT });
  await page.locator(`[data-testid="dispute"][data-nonce="${t.nonce}"][data-status="resolved"]`).waitFor({ timeout: WAIT });
  assert.match(await cardOf(page, t).innerText(), /Resolved/);
  const da = (await inPage(page, '/api/ledger')).body.disputes.find((d) => String(d.nonce) === String(t.nonce));
  const db = (await inPage(b.page, '/api/ledger')).body.disputes.find((d) => String(d.nonce) === String(t.nonce));
  assert.equal(da.status, 'resolved');
  assert.equal(db.status, 'resolved');
  assert.equal(da.resolved_amount, half);
  assert.equal(db.resolved_amount, half);
  await shoot(page, 'dispute', () => cardOf(page, t).waitFor());
  // The history is long with an agreement's trades: filter it down to trades with a dispute.
  await go(b.page, '#/trades');
  await b.page.getByLabel('Status', { exact: true }).selectOption('dispute');
  await b.page.locator(`[data-testid="trade-row"][data-nonce="${t.nonce}"][data-dispute="resolved"]`).waitFor({ timeout: WAIT });
});

await check('neighbourhood shows delivery records; the signed export downloads', async () => {
  const { page } = a;
  await go(page, '#/neighbourhood');
  await page.getByTestId('members-table').waitFor();
  assert.ok((await page.getByTestId('delivery-record').count()) >= 2, 'a delivery record column');
  await go(page, '#/downloads');
  await heading(page, 'Downloads');
  const [dl] = await Promise.all([page.waitForEvent('download'), page.getByTestId('download-signed').click()]);
  const text = await readFile(await dl.path(), 'utf8');
  const doc = parseJson(text);
  assert.ok(doc && typeof doc === 'object', `the signed export is JSON: ${text.slice(0, 200)}`);
});

await check('meter: live readings per channel; current clamps are calibrated without a restart, bad values refused', async () => {
  const { page } = a;
  await go(page, '#/meter');
  await page.getByTestId('calibration-note').waitFor({ timeout: WAIT });
  await page.getByTestId('calibration-live').waitFor({ timeout: WAIT });
  const view = (await inPage(page, '/api/meter/calibration')).body;
  assert.ok(view.live.some((c) => c.kind === 'grid'), 'the grid channel reads live');
  if (!view.calibratable) {
    // A simulated or self-calibrating meter (the testnet's homes): said plainly, no form.
    assert.equal(await page.getByTestId('calibration-form').count(), 0);
    assert.match(await page.getByTestId('calibration-note').innerText(), /needs no calibration|calibrated at source/);
    return;
  }
  const form = page.getByTestId('calibration-form');
  const gain = form.getByLabel('Clamp 1: amperes per count').first();
  await gain.fill('-1');
  await form.getByRole('button', { name: 'Save calibration' }).click();
  await form.getByText('amperes per count above 0').waitFor({ timeout: WAIT });
  await gain.fill('0.31');
  await form.getByRole('button', { name: 'Save calibration' }).click();
  await form.getByText('no restart is needed').waitFor({ timeout: WAIT });
  const after = (await inPage(page, '/api/meter/calibration')).body;
  assert.equal(after.calibration.channels[0].legs[0].amps_per_count, 0.31);
});

await check('settings: the retention is saved; the key backup downloads sealed with a passphrase', async () => {
  const { page } = a;
  await go(page, '#/settings');
  const ret = page.getByTestId('retention-form');
  await ret.waitFor();
  await ret.getByLabel('Keep per-minute readings for (days)').fill('90');
  await ret.getByRole('button', { name: 'Save' }).click();
  await page.getByText('Saved: readings are kept for 90 days.').waitFor({ timeout: WAIT });
  assert.equal((await inPage(page, '/api/settings/retention')).body.days, 90);
  const kb = page.getByTestId('key-backup-form');
  await kb.getByLabel('Your password').fill(PASSWORD);
  await kb.getByLabel('Backup passphrase').fill('a phrase to keep apart');
  await kb.getByLabel('Passphrase again').fill('a phrase to keep apart');
  const [dl] = await Promise.all([page.waitForEvent('download'), kb.getByRole('button', { name: 'Download encrypted backup' }).click()]);
  assert.equal(dl.suggestedFilename(), 'wattmesh-key.backup');
  const text = await readFile(await dl.path(), 'utf8');
  assert.match(text, /^wattmesh key backup v1 argon2id m=65536 t=3 p=1\n/);
  assert.ok(text.includes(`node ${nodeA.node_id}`), 'the backup names the node');
  assert.match(text, /\ndata [0-9a-f]{96}\n/);
});

await check('screenshots of every page, phone and desktop', async () => {
  const { page } = a;
  // Something in the order book: a buy offer from B and another sell offer of A's own.
  const ch = (await inPage(page, '/api/charter')).body;
  const mid = Math.round((ch.feed_in_price + ch.retail_price) / 2);
  // A few slots ahead, so that they are still open when the market is photographed (also on a
  // fast test clock, where the next slot's trading closes within seconds).
  const slotMs = ch.slot_minutes * 60000;
  const ahead = Math.ceil((await inPage(page, '/api/status')).body.now_ms / slotMs) * slotMs + 4 * slotMs;
  const r1 = await postInPage(b.page, '/api/offers', { side: 'buy', quantity_wh: 1200, price: mid - 500, slot_ms: ahead });
  const r2 = await postInPage(page, '/api/offers', { side: 'sell', quantity_wh: 800, price: mid + 500, slot_ms: ahead });
  assert.equal(r1.status, 200, `B's buy offer: ${JSON.stringify(r1.body)}`);
  assert.equal(r2.status, 200, `A's sell offer: ${JSON.stringify(r2.body)}`);
  await page.waitForFunction(
    async (maker) => (await (await fetch('/api/offers')).json()).some((o) => o.maker === maker),
    nodeB.node_id,
    { timeout: WAIT, polling: 1000 },
  ).catch(() => console.log('     (B\'s offer did not reach A in time; the market screenshot shows A\'s own only)'));
  const pages = [
    ['dashboard', '#/dashboard', () => page.getByTestId('live-at').waitFor()],
    ['market', '#/market', () => page.getByTestId('order-book').waitFor()],
    ['trades', '#/trades', () => page.getByTestId('trades-table').waitFor()],
    ['trade-detail', `#/trades/${trade?.taker}/${trade?.nonce}`, () => page.getByTestId('trade-detail').waitFor()],
    ['statements', '#/statements', () => page.locator('#statement').waitFor()],
    ['automation', '#/automation', () => page.getByTestId('trader-form').waitFor()],
    ['meter', '#/meter', () => page.getByTestId('reg-import').or(page.getByText('No meter is configured')).first().waitFor()],
    ['settings', '#/settings', () => page.getByTestId('users').waitFor()],
    ['downloads', '#/downloads', () => page.getByTestId('download-trades').waitFor()],
  ];
  for (const [name, hash, ready] of pages) {
    await go(page, hash);
    await page.locator('.loading').first().waitFor({ state: 'detached', timeout: 15000 }).catch(() => {});
    await shoot(page, name, ready);
  }
  // The neighbourhood with a freshly issued invite and its QR code.
  await go(page, '#/neighbourhood');
  await page.getByTestId('members-table').waitFor();
  const form = page.getByTestId('invite-form');
  if (await form.count()) {
    await form.getByLabel('Who is it for?').fill('Number 12');
    await form.getByRole('button', { name: 'Issue invite' }).click();
    await page.getByTestId('invite-result').locator('svg').waitFor();
    const code = await page.getByRole('textbox', { name: 'Invite code' }).inputValue();
    assert.ok(code.length > 10, 'an invite code is shown');
  }
  await shoot(page, 'neighbourhood');
  // Dark mode and the phone menu.
  await page.emulateMedia({ colorScheme: 'dark' });
  await go(page, '#/dashboard');
  await shoot(page, 'dashboard-dark', () => page.getByTestId('live-at').waitFor());
  await page.emulateMedia({ colorScheme: 'light' });
  await page.setViewportSize(PHONE);
  await page.getByRole('button', { name: 'Menu' }).click();
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Market' }).waitFor();
  await page.screenshot({ path: path.join(SHOTS, 'menu-phone.png') });
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Market' }).click();
  await heading(page, 'Market');
  await page.setViewportSize(DESKTOP);
});

await check('no page scrolls sideways at phone or desktop size', async () => {
  assert.deepEqual(overflow, []);
});

await check('keyboard: skip link and focus move to the page heading', async () => {
  const { page } = b;
  await go(page, '#/dashboard');
  await page.reload();
  await heading(page, 'Dashboard');
  await page.keyboard.press('Tab');
  const first = await page.evaluate(() => document.activeElement?.textContent?.trim());
  assert.equal(first, 'Skip to content');
  await go(page, '#/statements');
  await page.waitForFunction(() => document.activeElement?.id === 'page-title');
});

await check('no script errors in the browser', async () => {
  assert.deepEqual(browserErrors, []);
});

await browser.close();
finish();
