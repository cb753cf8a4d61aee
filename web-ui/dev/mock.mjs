// Dev-only mock of the node's web API (never shipped): serves web-ui/dist and fakes the JSON API
// for two nodes sharing one order book, so pages and the browser tests can be developed before
// the real server exists. Usage: node dev/mock.mjs [PORT_A] [PORT_B]   (defaults 8701 8702)
// Prints the setup codes. Not a model of the real node's behaviour beyond the API's shapes.
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { parseJson } from '../src/json.js';
import { fileURLToPath } from 'node:url';

const dist = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist');
const ports = [Number(process.argv[2] ?? 8701), Number(process.argv[3] ?? 8702)];
const hex = (n) => randomBytes(n).toString('hex');
const SLOT = 15 * 60000;
const charter = {
  version: 1, name: 'Maple Street', slot_minutes: 15, feed_in_price: 6000, retail_price: 14000,
  currency: 'USD', time_zone: 'America/Chicago', admins: [], gate_closure_secs: 300,
  settlement_grace_secs: 3600, max_power_w: 20000, effective_ms: Date.now() - 30 * 86400000,
};
const book = []; // shared offers
const documents = []; // agreements and payments between the two nodes: first signs, second decides
const notes = new Map(); // "taker/nonce" -> dispute notes
const nodes = ports.map((port, i) => ({
  i, port, id: hex(32), name: ['Ada', 'Bo'][i], code: process.env[`MOCK_SETUP_${'AB'[i]}`] ?? hex(4), users: new Map(), sessions: new Map(),
  trades: [], invites: [], nonce: 1, trader: {
    enabled: true, sell: true, min_sell_price: 7000, sell_above_wh: 50, max_sell_wh: 5000, buy: true,
    max_buy_price: 11000, max_buy_wh: 5000, from_hour: 0, to_hour: 24, lead_slots: 2, ramp_minutes: 20,
    utc_offset_minutes: -360,
  },
  // Node A reads current clamps (calibratable), node B is simulated.
  calibration: i === 0 ? {
    volts_per_count: 0.426,
    channels: [
      { name: 'grid', legs: [{ amps_per_count: 0.293, phase_lead_deg: 0 }, { amps_per_count: 0.293, phase_lead_deg: 0 }] },
      { name: 'solar', legs: [{ amps_per_count: 0.293, phase_lead_deg: 0 }] },
    ],
  } : null,
}));
charter.admins = [nodes[0].id];

// A deterministic simulated home: PV by time of day, load with morning and evening peaks.
function power(node, t) {
  const h = (t / 3600000) % 24;
  const solar = Math.max(0, Math.sin(((h - 6) / 12) * Math.PI)) * (node.i ? 3200 : 4800);
  const load = 400 + 900 * Math.exp(-((h - 7.5) ** 2)) + 1400 * Math.exp(-((h - 19) ** 2) / 2) + 150 * Math.sin(t / 97000);
  return { solar_w: Math.round(solar), load_w: Math.round(load), grid_w: Math.round(load - solar) };
}
function registers(node, t) {
  // Integrates by the hour (coarse; good enough for a mock).
  let imp = 1000000 + node.i * 50000;
  let exp = 400000;
  const start = t - 40 * 86400000;
  for (let x = start; x < t; x += 3600000) {
    const g = power(node, x).grid_w;
    if (g > 0) imp += g;
    else exp -= g;
  }
  return { import_wh: Math.round(imp), export_wh: Math.round(exp) };
}
const reading = (node, t) => ({ at_ms: t, ...power(node, t), ...registers(node, t) });

function member(n, me) {
  return {
    node_id: n.id, short_id: n.id.slice(0, 8), name: n.name, pv_capacity_w: n.i ? 3200 : 4800,
    since_ms: charter.effective_ms + n.i * 86400000, how: n.i ? 'join' : 'founder', admin: n.i === 0,
    me: n === me, online: true, previous: null,
  };
}

// Nonces are u64s like the real node's (most beyond 2^53), kept as strings here and written as
// bare JSON integers.
const bigNonce = () => (BigInt('0x' + hex(8)) | (1n << 60n)).toString();
function json(res, status, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...headers });
  res.end(JSON.stringify(body).replace(/"nonce":"(\d+)"/g, '"nonce":$1'));
}
const fail = (res, status, error) => json(res, status, { error });

async function body(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  try {
    return parseJson(Buffer.concat(chunks).toString() || '{}');
  } catch {
    return null;
  }
}

function cookie(req) {
  const m = /(?:^|;\s*)wm_session=([^;]+)/.exec(req.headers.cookie ?? '');
  return m?.[1];
}

function newSession(node, res, user) {
  const sid = hex(16);
  const csrf = hex(16);
  node.sessions.set(sid, { user, csrf });
  res.setHeader('Set-Cookie', `wm_session=${sid}; HttpOnly; SameSite=Strict; Path=/`);
  return { user: { name: user.name, role: user.role }, csrf };
}

function csv(res, rows) {
  res.writeHead(200, { 'Content-Type': 'text/csv', 'Content-Disposition': 'attachment' });
  res.end(rows.map((r) => r.join(',')).join('\n') + '\n');
}

// The ledger as the real node shows it (shapes only; the numbers are made up around the
// payments and trades the mock knows).
function docView(node, d) {
  const outgoing = d.first === node.id;
  const other = nodes.find((n) => n.id === (outgoing ? d.second : d.first));
  const v = {
    id: d.id, kind: d.kind, outgoing, counterparty: other.id, counterparty_name: other.name, created_ms: d.created_ms,
    state: d.state === 'pending' ? (outgoing ? 'proposed' : 'offered') : d.state,
    side: null, per_slot_wh: null, price: null, start_ms: null, end_ms: null, weekdays: null, from_min: null, to_min: null,
    utc_offset_min: null, amount: null, through_ms: null, reference: null,
  };
  if (d.kind === 'agreement') {
    Object.assign(v, {
      side: outgoing ? d.side : d.side === 'sell' ? 'buy' : 'sell', per_slot_wh: d.per_slot_wh, price: d.price,
      start_ms: d.start_ms, end_ms: d.end_ms, weekdays: d.weekdays, from_min: d.from_min, to_min: d.to_min, utc_offset_min: d.utc_offset_min,
    });
  } else Object.assign(v, { amount: d.second === node.id ? d.amount : -d.amount, through_ms: d.through_ms, reference: d.reference });
  return v;
}

/** The agreement's next few slots become trades on both nodes (the real node: a day ahead). */
function materialize(d, now) {
  const [a, b] = [nodes.find((n) => n.id === d.first), nodes.find((n) => n.id === d.second)];
  for (let k = 0, s = Math.max(d.start_ms, Math.ceil(now / SLOT) * SLOT); k < 4 && s < d.end_ms; s += SLOT, k++) {
    const base = { taker: a.id, nonce: bigNonce(), slot_ms: s, energy_wh: d.per_slot_wh, price: d.price, state: 'agreed', settlement: null, delivered_wh: null, amount: null, signatures_verified: true, from_agreement: true };
    a.trades.push({ ...base, role: 'taker', side: d.side, counterparty: b.id.slice(0, 8), counterparty_id: b.id, counterparty_name: b.name });
    b.trades.push({ ...base, role: 'maker', side: d.side === 'sell' ? 'buy' : 'sell', counterparty: a.id.slice(0, 8), counterparty_id: a.id, counterparty_name: a.name });
  }
}

function disputeStatus(node, t) {
  const list = notes.get(`${t.taker}/${t.nonce}`) ?? [];
  if (!list.length) return null;
  const last = (mine) => [...list].reverse().find((n) => (n.author === node.id) === mine && n.stage === 'resolve')?.amount;
  const [x, y] = [last(true), last(false)];
  if (x != null && x === y) return ['resolved', x];
  const both = list.some((n) => n.author === node.id) && list.some((n) => n.author !== node.id);
  return [both ? 'answered' : 'open', null];
}

function ledger(node, now) {
  const other = nodes[1 - node.i];
  const month = new Date(now).toISOString().slice(0, 7);
  const signedPay = documents.filter((d) => d.kind === 'payment' && d.state === 'signed');
  const received = signedPay.filter((d) => d.second === node.id).reduce((a, d) => a + d.amount, 0);
  const made = signedPay.filter((d) => d.first === node.id).reduce((a, d) => a + d.amount, 0);
  const open = node.trades.filter((t) => ['open', 'answered'].includes(disputeStatus(node, t)?.[0])).length;
  const pending = node.trades.filter((t) => !t.settlement).reduce((a, t) => a + (t.side === 'sell' ? 1 : -1) * Math.floor((t.energy_wh * t.price) / 1000), 0);
  const sign = node.i ? -1 : 1;
  const line = (l) => ({ ...l, net: l.receivable - l.payable, closing: l.opening + l.receivable - l.payable - l.payments_received + l.payments_made });
  const withOther = line({
    month, counterparty: other.id, counterparty_name: other.name, sold_wh: node.i ? 1300 : 4200, bought_wh: node.i ? 4200 : 1300,
    receivable: node.i ? 12350 : 39900, payable: node.i ? 39900 : 12350, payments_received: received, payments_made: made,
    opening: sign * 18250, pending, open_disputes: open,
  });
  const cyOld = line({ month: '2026-05', counterparty: 'c0ffee12'.repeat(8), counterparty_name: 'Cy', sold_wh: 800, bought_wh: 5100, receivable: 7600, payable: 48450, payments_received: 0, payments_made: 0, opening: 0, pending: 0, open_disputes: 0 });
  const statements = [cyOld, withOther];
  const balances = [{ ...cyOld, month: '' }, { ...withOther, month: '' }];
  const disputes = node.trades
    .map((t) => [t, disputeStatus(node, t)])
    .filter(([, s]) => s)
    .map(([t, s]) => ({
      taker: t.taker, nonce: t.nonce, counterparty: t.counterparty_id, counterparty_name: t.counterparty_name, side: t.side, slot_ms: t.slot_ms,
      energy_wh: t.energy_wh, price: t.price, status: s[0], resolved_amount: s[1], settlement: t.settlement, reason: null,
      notes: notes.get(`${t.taker}/${t.nonce}`).map((n) => ({ ours: n.author === node.id, stage: n.stage, text: n.text, amount: n.amount, created_ms: n.created_ms })),
    }));
  return {
    statements, balances, disputes,
    documents: documents.filter((d) => d.first === node.id || d.second === node.id).map((d) => docView(node, d)),
    reputation: [
      { peer: other.id, counterparty_name: other.name, promised_wh: 5200, delivered_wh: 4980, delivered_permille: 957, disputed: 1 },
      { peer: 'c0ffee12'.repeat(8), counterparty_name: 'Cy', promised_wh: 0, delivered_wh: 0, delivered_permille: null, disputed: 0 },
    ],
  };
}

async function handle(node, req, res) {
  const url = new URL(req.url, `http://${req.headers.host}`);
  const p = url.pathname;
  const m = req.method;
  if (!p.startsWith('/api/')) {
    const file = p === '/' ? 'index.html' : p.slice(1);
    if (file.includes('..')) return fail(res, 400, 'bad path');
    try {
      const data = await readFile(path.join(dist, file));
      const type = file.endsWith('.js') ? 'text/javascript' : file.endsWith('.css') ? 'text/css' : 'text/html';
      res.writeHead(200, { 'Content-Type': type });
      return res.end(data);
    } catch {
      return fail(res, 404, 'not found');
    }
  }
  const now = Date.now();
  const sess = node.sessions.get(cookie(req));
  if (m !== 'GET') {
    const origin = req.headers.origin;
    if (origin && origin !== `http://${req.headers.host}`) return fail(res, 403, 'cross-site request refused');
  }
  if (p === '/api/setup' && m === 'GET') return json(res, 200, { needed: node.users.size === 0 });
  if (p === '/api/setup' && m === 'POST') {
    const b = await body(req);
    if (node.users.size) return fail(res, 409, 'already set up');
    if (!b || b.code !== node.code) return fail(res, 403, 'wrong setup code');
    if (!b.username || (b.password ?? '').length < 8) return fail(res, 400, 'password must have at least 8 characters');
    const u = { name: b.username, role: 'owner', password: b.password };
    node.users.set(u.name, u);
    return json(res, 200, newSession(node, res, u));
  }
  if (p === '/api/login' && m === 'POST') {
    const b = await body(req);
    const u = node.users.get(b?.username);
    if (!u || u.password !== b.password) return fail(res, 401, 'wrong user name or password');
    return json(res, 200, newSession(node, res, u));
  }
  if (!sess) return fail(res, 401, 'not signed in');
  if (m !== 'GET' && req.headers['x-csrf-token'] !== sess.csrf) return fail(res, 403, 'missing or wrong CSRF token');
  const role = sess.user.role;
  const trading = role !== 'viewer';
  if (p === '/api/session') return json(res, 200, { user: { name: sess.user.name, role }, csrf: sess.csrf });
  if (p === '/api/logout') {
    node.sessions.delete(cookie(req));
    return json(res, 200, {});
  }
  if (p === '/api/status') {
    const other = nodes[1 - node.i];
    return json(res, 200, {
      node_id: node.id, short_id: node.id.slice(0, 8), peer_id: '12D3Koo' + hex(10), neighbourhood: charter.name,
      neighbourhood_id: 'a1b2c3', charter_version: 1, clock: 'synced', now_ms: now,
      listening: [`/ip4/127.0.0.1/tcp/${4001 + node.i}`],
      peers: [{ peer_id: '12D3KooW' + other.id.slice(0, 20), node: other.id, address: `/ip4/127.0.0.1/tcp/${4002 - node.i}`, reach: 'direct', outbound: node.i === 1, score: 12.5, connected_secs: 3725 }],
      offers: book.length, meter: { enabled: true, ...reading(node, now) }, counters: {}, uptime_secs: 4000,
    });
  }
  if (p === '/api/live') {
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store' });
    const send = () => res.write(`event: power\ndata: ${JSON.stringify(reading(node, Date.now()))}\n\n`);
    send();
    const id = setInterval(send, 2000);
    req.on('close', () => clearInterval(id));
    return undefined;
  }
  if (p === '/api/readings') {
    const from = Number(url.searchParams.get('from'));
    const to = Number(url.searchParams.get('to'));
    const step = { minute: 60000, slot: SLOT, hour: 3600000, day: 86400000 }[url.searchParams.get('step')];
    if (!step || !(to > from)) return fail(res, 400, 'bad range or step');
    const out = [];
    for (let t = Math.ceil(from / step) * step; t < to && out.length < 2000; t += step) {
      const pw = power(node, t + step / 2);
      out.push({ t, ...pw, battery_w: null, ...registers(node, t + step) });
    }
    return json(res, 200, out);
  }
  if (p === '/api/summary') {
    const d = new Date(now);
    d.setHours(0, 0, 0, 0);
    const a = registers(node, d.getTime());
    const b = registers(node, now);
    return json(res, 200, {
      day_start_ms: d.getTime(), import_wh: b.import_wh - a.import_wh, export_wh: b.export_wh - a.export_wh,
      solar_wh: 14200, load_wh: 11800, self_sufficiency: 0.62, savings: 143250, retail_price: charter.retail_price,
      feed_in_price: charter.feed_in_price, currency: charter.currency,
    });
  }
  if (p === '/api/charter') return json(res, 200, charter);
  if (p === '/api/offers' && m === 'GET') {
    return json(res, 200, book.filter((o) => o.expires_ms > now).map((o) => ({ ...o, mine: o.maker === node.id })));
  }
  if (p === '/api/offers' && m === 'POST') {
    if (!trading) return fail(res, 403, 'your account may not trade');
    const b = await body(req);
    if (!b || !['sell', 'buy'].includes(b.side) || !(b.quantity_wh > 0) || !(b.price >= 0)) return fail(res, 400, 'bad offer');
    const slot = b.slot_ms ?? Math.ceil((now + 300000) / SLOT) * SLOT;
    const o = {
      maker: node.id, maker_short: node.id.slice(0, 8), maker_name: node.name, nonce: bigNonce(), version: 1,
      side: b.side, slot_ms: slot, quantity_wh: b.quantity_wh, price: b.price, expires_ms: slot - 300000,
    };
    book.push(o);
    return json(res, 200, { ...o, mine: true });
  }
  let mm = /^\/api\/offers\/(\d+)$/.exec(p);
  if (mm && m === 'DELETE') {
    const k = book.findIndex((o) => o.maker === node.id && o.nonce === mm[1]);
    if (k < 0) return fail(res, 404, 'no such offer of ours');
    book.splice(k, 1);
    return json(res, 200, {});
  }
  if (p === '/api/take' && m === 'POST') {
    if (!trading) return fail(res, 403, 'your account may not trade');
    const b = await body(req);
    const o = book.find((x) => x.maker === b?.maker && x.nonce === String(b?.nonce));
    if (!o) return fail(res, 404, 'no such offer');
    if (o.maker === node.id) return fail(res, 400, 'cannot take your own offer');
    if (!(b.energy_wh > 0) || b.energy_wh > o.quantity_wh) return fail(res, 400, 'energy out of range');
    o.quantity_wh -= b.energy_wh;
    if (o.quantity_wh === 0) book.splice(book.indexOf(o), 1);
    const maker = nodes.find((n) => n.id === o.maker);
    const base = { taker: node.id, nonce: bigNonce(), slot_ms: o.slot_ms, energy_wh: b.energy_wh, price: o.price, state: 'agreed', settlement: null, delivered_wh: null, amount: null, signatures_verified: true, from_agreement: false };
    const mine = { ...base, role: 'taker', side: o.side === 'sell' ? 'buy' : 'sell', counterparty: maker.id.slice(0, 8), counterparty_id: maker.id, counterparty_name: maker.name };
    node.trades.push(mine);
    maker.trades.push({ ...base, role: 'maker', side: o.side, counterparty: node.id.slice(0, 8), counterparty_id: node.id, counterparty_name: node.name });
    return json(res, 200, mine);
  }
  if (p === '/api/trades') {
    // Paging like the node's (limit, cursor); the mock's cursor is an index. Filters by side only.
    const q = url.searchParams;
    const limit = Number(q.get('limit') ?? 100);
    if (!(limit >= 1 && limit <= 500)) return fail(res, 400, 'limit must be 1 to 500');
    const start = q.get('cursor') ? Number(q.get('cursor')) : 0;
    if (!Number.isInteger(start) || start < 0) return fail(res, 400, 'cursor is not one this node gave out');
    const all = node.trades
      .filter((t) => !q.get('side') || t.side === q.get('side'))
      .sort((x, y) => y.slot_ms - x.slot_ms)
      .map((t) => ({ ...t, dispute: disputeStatus(node, t)?.[0] ?? null }));
    const trades = all.slice(start, start + limit);
    const next = start + limit < all.length ? String(start + limit) : null;
    return json(res, 200, { trades, next_cursor: next, total: all.length });
  }
  const tm = /^\/api\/trades\/([0-9a-f]+)\/(\d+)$/.exec(p);
  if (tm) {
    const t = node.trades.find((x) => x.taker === tm[1] && String(x.nonce) === tm[2]);
    if (!t) return fail(res, 404, 'no such trade on this node');
    return json(res, 200, { ...t, dispute: disputeStatus(node, t)?.[0] ?? null });
  }
  if (p === '/api/statements') return json(res, 200, ledger(node, now).statements);
  if (p === '/api/ledger') return json(res, 200, ledger(node, now));
  if (p === '/api/agreements' && m === 'POST') {
    if (!trading) return fail(res, 403, 'your account may not trade');
    const b = await body(req);
    const other = nodes.find((n) => n.id === b?.counterparty && n !== node);
    if (!other) return fail(res, 422, `not a node id: ${JSON.stringify(b?.counterparty)} (64 hex digits)`);
    if (!['sell', 'buy'].includes(b.side) || !(b.per_slot_wh > 0)) return fail(res, 400, 'bad agreement');
    if (b.price < charter.feed_in_price || b.price > charter.retail_price) return fail(res, 422, 'price outside the charter band');
    if (!(b.end_ms > b.start_ms) || b.end_ms - b.start_ms > 92 * 86400000) return fail(res, 422, 'invalid field: end_ms');
    if (!b.weekdays || !(b.from_min < b.to_min)) return fail(res, 422, 'invalid field: hours');
    const d = {
      id: hex(32), kind: 'agreement', first: node.id, second: other.id, state: 'pending', created_ms: now,
      side: b.side, per_slot_wh: b.per_slot_wh, price: b.price, start_ms: Math.ceil(b.start_ms / SLOT) * SLOT,
      end_ms: b.end_ms, weekdays: b.weekdays, from_min: b.from_min, to_min: b.to_min, utc_offset_min: node.trader.utc_offset_minutes,
    };
    documents.push(d);
    return json(res, 200, { ok: true, id: d.id });
  }
  if (p === '/api/payments' && m === 'POST') {
    if (!trading) return fail(res, 403, 'your account may not trade');
    const b = await body(req);
    const other = nodes.find((n) => n.id === b?.payee && n !== node);
    if (!other) return fail(res, 422, 'not a node id');
    if (!(b.amount > 0)) return fail(res, 422, 'invalid field: amount');
    const d = { id: hex(32), kind: 'payment', first: node.id, second: other.id, state: 'pending', created_ms: now, amount: b.amount, reference: b.reference ?? '', through_ms: now };
    documents.push(d);
    return json(res, 200, { ok: true, id: d.id });
  }
  mm = /^\/api\/documents\/(\w+)$/.exec(p);
  if (mm && m === 'POST') {
    if (!trading) return fail(res, 403, 'your account may not trade');
    const b = await body(req);
    if (b?.decision === 'withdraw') {
      const w = documents.find((x) => x.id === mm[1] && x.first === node.id);
      if (!w) return fail(res, 422, 'you sent no document with that id');
      if (w.state !== 'pending') return fail(res, 422, `it is ${w.state} already; only what waits for them can be withdrawn`);
      w.state = 'withdrawn';
      return json(res, 200, { ok: true, id: w.id });
    }
    const d = documents.find((x) => x.id === mm[1] && x.second === node.id && x.state === 'pending');
    if (!d) return fail(res, 422, 'no document waits for you with that id');
    if (!['accept', 'decline'].includes(b?.decision)) return fail(res, 400, 'decision must be accept, decline or withdraw');
    d.state = b.decision === 'accept' ? 'signed' : 'declined';
    if (d.kind === 'agreement' && d.state === 'signed') materialize(d, now);
    return json(res, 200, { ok: true, id: d.id });
  }
  if (p === '/api/disputes' && m === 'POST') {
    if (!trading) return fail(res, 403, 'your account may not trade');
    const b = await body(req);
    const t = node.trades.find((x) => x.taker === b?.taker && x.nonce === String(b?.nonce));
    if (!t) return fail(res, 422, 'no agreed trade of ours with that id');
    if (!['open', 'answer', 'resolve'].includes(b.stage)) return fail(res, 400, 'bad stage');
    if (Buffer.byteLength(b.text ?? '') > 280) return fail(res, 422, 'invalid field: text');
    if ((b.stage === 'resolve') !== (b.amount != null)) return fail(res, 422, 'invalid field: amount');
    const most = Math.floor((t.energy_wh * t.price) / 1000);
    if (b.amount > most) return fail(res, 422, `a resolution cannot exceed the trade's full value (${most} milli-units)`);
    const key = `${t.taker}/${t.nonce}`;
    if (!notes.has(key)) notes.set(key, []);
    notes.get(key).push({ author: node.id, stage: b.stage, text: b.text ?? '', amount: b.amount ?? null, created_ms: now });
    return json(res, 200, { ok: true, id: hex(32) });
  }
  if (p === '/api/export/signed.json') {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Disposition': 'attachment; filename="wattmesh-export.json"' });
    return res.end(JSON.stringify({ format: 'wattmesh-signed-export', seal: hex(64), items: node.trades.map((t) => ({ slot_ms: t.slot_ms, evidence: hex(40) })) }));
  }
  if (p === '/api/members') return json(res, 200, nodes.map((n) => member(n, node)));
  if (p === '/api/invites' && m === 'GET') return json(res, 200, node.invites);
  if (p === '/api/invites' && m === 'POST') {
    if (role !== 'owner' || node.i !== 0) return fail(res, 403, 'only the owner of an admin node may invite');
    const b = await body(req);
    const inv = { id: hex(4), note: b?.note ?? '', issued_ms: now, expires_ms: now + (b?.valid_secs ?? 604800) * 1000, status: 'open' };
    node.invites.push(inv);
    return json(res, 200, { code: 'wm2-' + randomBytes(180).toString('base64url').toUpperCase(), ticket_id: inv.id, expires_ms: inv.expires_ms });
  }
  mm = /^\/api\/invites\/(\w+)$/.exec(p);
  if (mm && m === 'DELETE') {
    const inv = node.invites.find((x) => x.id === mm[1]);
    if (!inv) return fail(res, 404, 'no such invite');
    inv.status = 'revoked';
    return json(res, 200, {});
  }
  if (p === '/api/meter/calibration') {
    const view = () => {
      const pw = power(node, now);
      const leg = (w, g) => ({ vrms_v: 120.4, irms_a: Math.abs(w) / 120.4 * g, real_power_w: w * g, apparent_power_va: Math.abs(w) * g, power_factor: w < 0 ? -0.98 : 0.98 });
      const c = node.calibration;
      const live = c
        ? [
          { name: 'grid', kind: 'grid', power_w: pw.grid_w, status: 'ok', frequency_hz: 60.01, legs: [leg(pw.grid_w / 2, c.channels[0].legs[0].amps_per_count / 0.293), leg(pw.grid_w / 2, c.channels[0].legs[1].amps_per_count / 0.293)] },
          { name: 'solar', kind: 'solar', power_w: -pw.solar_w, status: 'ok', frequency_hz: 60.01, legs: [leg(-pw.solar_w, c.channels[1].legs[0].amps_per_count / 0.293)] },
        ]
        : [
          { name: 'grid', kind: 'grid', power_w: pw.grid_w, status: 'ok', frequency_hz: null, legs: [] },
          { name: 'solar', kind: 'solar', power_w: -pw.solar_w, status: 'ok', frequency_hz: null, legs: [] },
          { name: 'load', kind: 'load', power_w: pw.load_w, status: 'ok', frequency_hz: null, legs: [] },
        ];
      return {
        source: c ? 'ct' : 'simulated',
        calibratable: !!c,
        note: c
          ? 'Set each clamp\'s gain (amperes per ADC count) and phase correction, and the voltage reference\'s gain, against a trusted meter. A change applies from the next mains cycle, without a restart, and is kept over restarts.'
          : 'The simulated meter needs no calibration: its readings are computed.',
        calibration: c, live, at_ms: now,
      };
    };
    if (m === 'GET') return json(res, 200, view());
    if (m === 'PUT') {
      if (!trading) return fail(res, 403, 'this account may only look, not trade');
      const b = await body(req);
      const cal = b?.calibration;
      if (!cal || !Array.isArray(cal.channels)) return fail(res, 400, 'calibration missing');
      if (!node.calibration) return fail(res, 409, view().note);
      const gain = (g) => typeof g === 'number' && g > 0 && g <= 100;
      if (!gain(cal.volts_per_count)) return fail(res, 400, `volts_per_count ${cal.volts_per_count} is not a gain: above 0 and at most 100`);
      if (cal.channels.length !== node.calibration.channels.length) return fail(res, 400, 'the channels do not match the meter');
      for (const [ci, ch] of cal.channels.entries()) {
        const mine = node.calibration.channels[ci];
        if (ch.name !== mine.name || ch.legs?.length !== mine.legs.length) return fail(res, 400, `channel ${JSON.stringify(ch.name)} does not match the meter`);
        for (const [k, l] of ch.legs.entries()) {
          if (!gain(l.amps_per_count)) return fail(res, 400, `channel "${ch.name}" clamp ${k + 1}: amps_per_count ${l.amps_per_count} is not a gain: above 0 and at most 100`);
          if (typeof l.phase_lead_deg !== 'number' || Math.abs(l.phase_lead_deg) > 20) return fail(res, 400, `channel "${ch.name}" clamp ${k + 1}: phase_lead_deg ${l.phase_lead_deg} is beyond ±20°`);
        }
      }
      node.calibration = cal;
      return json(res, 200, view());
    }
  }
  if (p === '/api/trader' && m === 'GET') {
    return json(res, 200, {
      limits: node.trader,
      log: [
        { at_ms: now - 60000, acted: true, slot_ms: now + 900000, action: 'Offered 1.2 kWh for sale at 12.0 ¢/kWh for 14:30–14:45', why: 'forecast surplus 1.25 kWh, keeping 50 Wh back; asking 12.0 ¢ now, stepping down to your floor of 7.0 ¢ by 14:29' },
        { at_ms: now - 360000, acted: true, slot_ms: now + 600000, action: "Took 7f3a-91c0's bid: selling 300 Wh at 10.2 ¢/kWh for 14:15–14:30", why: 'forecast surplus 420 Wh, keeping 50 Wh back; their 10.2 ¢ meets the asking price now, 9.8 ¢ (your floor is 7.0 ¢); agreed once they countersign' },
        { at_ms: now - 5400000, acted: false, slot_ms: now - 3600000, action: 'Did nothing for 6 slots, 12:00–13:30', why: 'forecast surplus 30 Wh is no more than the 50 Wh you keep back' },
      ],
    });
  }
  if (p === '/api/trader' && m === 'PUT') {
    if (!trading) return fail(res, 403, 'your account may not trade');
    const b = await body(req);
    if (!b?.limits) return fail(res, 400, 'limits missing');
    node.trader = b.limits;
    return json(res, 200, { limits: node.trader });
  }
  if (p === '/api/users' && m === 'GET') return json(res, 200, [...node.users.values()].map((u) => ({ name: u.name, role: u.role })));
  if (p === '/api/users' && m === 'POST') {
    if (role !== 'owner') return fail(res, 403, 'owner only');
    const b = await body(req);
    if (!b?.username || (b.password ?? '').length < 8 || !['owner', 'trader', 'viewer'].includes(b.role)) return fail(res, 400, 'bad account');
    node.users.set(b.username, { name: b.username, role: b.role, password: b.password });
    return json(res, 200, {});
  }
  mm = /^\/api\/users\/(.+)$/.exec(p);
  if (mm && m === 'DELETE') {
    node.users.delete(decodeURIComponent(mm[1]));
    return json(res, 200, {});
  }
  if (p === '/api/password' && m === 'POST') {
    const b = await body(req);
    if (b?.old !== sess.user.password) return fail(res, 400, 'wrong current password');
    if ((b.new ?? '').length < 8) return fail(res, 400, 'password must have at least 8 characters');
    sess.user.password = b.new;
    return json(res, 200, {});
  }
  if (p === '/api/settings/retention') {
    if (m === 'PUT') {
      const b = await body(req);
      if (sess.user.role !== 'owner') return fail(res, 403, 'only the owner changes the retention');
      if (!Number.isInteger(b?.days) || b.days < 7 || b.days > 3650) return fail(res, 400, 'keep readings for 7 to 3650 days');
      node.retentionDays = b.days;
    }
    return json(res, 200, { days: node.retentionDays ?? 400 });
  }
  if (p === '/api/keys/backup' && m === 'POST') {
    const b = await body(req);
    if (sess.user.role !== 'owner') return fail(res, 403, 'only the owner may back up the node\'s key');
    if (b?.password !== sess.user.password) return fail(res, 403, 'the password is wrong');
    if ((b.passphrase ?? '').length < 12) return fail(res, 400, 'the backup passphrase needs 12 to 1024 characters');
    res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Disposition': 'attachment; filename="wattmesh-key.backup"' });
    return res.end(`wattmesh key backup v1 argon2id m=65536 t=3 p=1\nnode ${node.id}\nsalt ${hex(16)}\nnonce ${hex(24)}\ndata ${hex(48)}\n`);
  }
  mm = /^\/api\/export\/(readings|trades|settlements)\.csv$/.exec(p);
  if (mm) {
    if (mm[1] === 'readings') return csv(res, [['slot_start_utc', 'import_wh', 'export_wh'], [new Date(now).toISOString(), 120, 0]]);
    if (mm[1] === 'trades') return csv(res, [['slot_start_utc', 'side', 'energy_wh', 'price'], ...node.trades.map((t) => [new Date(t.slot_ms).toISOString(), t.side, t.energy_wh, t.price])]);
    return csv(res, [['slot_start_utc', 'delivered_wh', 'amount'], [new Date(now).toISOString(), 500, 4750]]);
  }
  return fail(res, 404, 'no such route');
}

for (const node of nodes) {
  http
    .createServer((req, res) => handle(node, req, res).catch((e) => fail(res, 500, String(e))))
    .listen(node.port, '127.0.0.1', () => {
      console.log(`mock node ${node.name}: http://127.0.0.1:${node.port}/  setup code ${node.code}`);
    });
}
