// Trades: history with status and filters, and one trade's details.
import { useMemo, useState } from 'preact/hooks';
import { canTrade, get, useApi } from '../api.js';
import { tradeStatus } from '../logic.js';
import { Badge, Empty, ErrorNote, Field, Loading, Notice, PageHeader, Section, useNow } from '../components.jsx';
import { DisputeBadge, DisputeCard, Disputes, OpenDispute } from './disputes.jsx';
import {
  dateInput, exactMoney, formatEnergy, formatMoney, formatPrice, formatSlot, localDayStart,
} from '../format.js';

const STATUS_FILTERS = [
  ['', 'Any status'],
  ['agreed', 'Agreed'],
  ['delivering', 'Delivering'],
  ['awaiting', 'Awaiting settlement'],
  ['settling', 'Settling'],
  ['settled', 'Settled'],
  ['short', 'Short-delivered'],
  ['disputed', 'Disputed'],
  ['standing', 'From a standing agreement'],
  ['dispute', 'With a dispute note'],
];

const tradeId = (t) => `${t.taker}/${t.nonce}`;
// A standing agreement makes a trade per slot, so the history comes from the node a page at a
// time (GET /api/trades?limit=&cursor=, filtered by the node).
const PAGE = 50;

/** The query string for the filters (dates are local days, `to` inclusive). */
export function tradesQuery({ status, side, who, from, to }) {
  const p = new URLSearchParams({ limit: String(PAGE) });
  if (status) p.set('status', status);
  if (side) p.set('side', side);
  if (who.trim()) p.set('who', who.trim().slice(0, 64));
  const lo = localDayStart(from);
  const hi = localDayStart(to);
  if (lo != null) p.set('from', String(lo));
  if (hi != null) p.set('to', String(hi + 86400000));
  return p.toString();
}

function Signatures({ ok }) {
  return ok ? (
    <Badge kind="good" title="Both parties' signatures on this trade were checked">✓ both signatures verified</Badge>
  ) : (
    <Badge kind="bad" title="The trade's signatures did not verify">✗ signatures not verified</Badge>
  );
}

function TradeDetail({ ctx, taker, nonce }) {
  const trades = useApi(`/api/trades/${encodeURIComponent(taker)}/${encodeURIComponent(nonce)}`, { every: 10000 });
  const led = useApi('/api/ledger', { every: 5000 });
  const now = useNow(10000);
  const t = trades.data;
  const missing = trades.error && (trades.error.status === 404 || trades.error.status === 400);
  const dispute = (led.data?.disputes ?? []).find((d) => d.taker === taker && String(d.nonce) === String(nonce));
  const trading = canTrade(ctx.user);
  const changed = () => {
    led.reload();
    trades.reload();
  };
  const c = ctx.currency;
  return (
    <>
      <PageHeader title="Trade" sub={t ? `${t.side === 'sell' ? 'Sold to' : 'Bought from'} ${t.counterparty_name || t.counterparty}` : null}>
        <a class="button" href="#/trades">
          ← All trades
        </a>
      </PageHeader>
      {!missing && <ErrorNote error={trades.error} />}
      {missing ? (
        <Notice kind="warn">This trade is not on this node.</Notice>
      ) : !t ? (
        <Loading />
      ) : (
        <Section title="Details" id="trade-detail">
          <dl class="facts wide" data-testid="trade-detail">
            <dt>Status</dt>
            <dd>
              {(() => {
                const s = tradeStatus(t, ctx.slotMinutes, now);
                return <Badge kind={s.kind}>{s.label}</Badge>;
              })()}{' '}
              <span class="muted small">
                (trade {t.state}
                {t.settlement ? `, settlement ${t.settlement}` : ''})
              </span>
            </dd>
            {(t.from_agreement || t.dispute || dispute) && (
              <>
                <dt>Also</dt>
                <dd>
                  {t.from_agreement && <Badge title="Made by a standing agreement">standing agreement</Badge>}{' '}
                  <DisputeBadge status={dispute?.status ?? t.dispute} />
                </dd>
              </>
            )}
            <dt>Signatures</dt>
            <dd data-testid="signatures">
              <Signatures ok={t.signatures_verified} />
            </dd>
            <dt>We</dt>
            <dd>
              {t.side === 'sell' ? 'sell' : 'buy'}, as the {t.role} (
              {t.role === 'maker' ? 'our offer was taken' : 'we took their offer'})
            </dd>
            <dt>Neighbour</dt>
            <dd>
              {t.counterparty_name || 'Neighbour'} <code>{t.counterparty}</code>
              {t.counterparty_id && (
                <>
                  <br />
                  <code class="wrap muted small">{t.counterparty_id}</code>
                </>
              )}
            </dd>
            <dt>Delivery slot</dt>
            <dd>{formatSlot(t.slot_ms, ctx.slotMinutes, now)}</dd>
            <dt>Energy agreed</dt>
            <dd>{formatEnergy(t.energy_wh)}</dd>
            <dt>Energy delivered</dt>
            <dd>{t.delivered_wh == null ? 'not yet settled' : formatEnergy(t.delivered_wh)}</dd>
            <dt>Price</dt>
            <dd>{formatPrice(t.price, c)}</dd>
            <dt>Amount</dt>
            <dd title={exactMoney(t.amount, c)}>
              {t.amount == null
                ? 'after settlement'
                : `${formatMoney(Math.abs(t.amount), c)} ${t.amount >= 0 ? 'owed to us' : 'we owe'}`}
            </dd>
            <dt>Taker</dt>
            <dd>
              <code class="wrap">{t.taker}</code>
            </dd>
            <dt>Nonce</dt>
            <dd>
              <code>{t.nonce}</code>
            </dd>
          </dl>
          {t.settlement === 'disputed' && (
            <Notice kind="warn">
              The two meters' attestations for this slot did not agree, so the trade is disputed. The
              record and both attestations stay on both nodes; agree on an amount with your neighbour
              below (until then it is pending in your statements).
            </Notice>
          )}
          {t.settlement === 'unilateral' && (
            <Notice>
              Your neighbour did not co-sign the settlement in time, so this node recorded it from its
              own proof alone{dispute?.reason ? ` (${dispute.reason})` : ''}. It stays pending in your
              statements until the dispute about it is resolved.
            </Notice>
          )}
        </Section>
      )}
      {t && led.data && (
        dispute ? (
          <Section title="Dispute" id="trade-dispute">
            <DisputeCard d={dispute} ctx={ctx} trading={trading} onChange={changed} headless />
          </Section>
        ) : t.state === 'agreed' ? (
          <Section title="Dispute" id="trade-dispute">
            <OpenDispute t={t} ctx={ctx} trading={trading} onOpened={changed} />
          </Section>
        ) : null
      )}
    </>
  );
}

export function TradesPage({ ctx }) {
  const [, taker, nonce] = ctx.route.parts;
  if (taker && nonce != null) return <TradeDetail ctx={ctx} taker={taker} nonce={nonce} />;
  return <TradeList ctx={ctx} />;
}

function TradeList({ ctx }) {
  const now = useNow(10000);
  const [status, setStatus] = useState('');
  const [side, setSide] = useState('');
  const [who, setWho] = useState('');
  const [from, setFrom] = useState('');
  const [to, setTo] = useState('');
  const qs = useMemo(() => tradesQuery({ status, side, who, from, to }), [status, side, who, from, to]);
  // The first page stays fresh; pages loaded on demand are kept for these same filters.
  const trades = useApi(`/api/trades?${qs}`, { every: 10000 });
  const [more, setMore] = useState({ qs: null, items: [], next: null });
  const [busy, setBusy] = useState(false);
  const [moreError, setMoreError] = useState(null);
  const c = ctx.currency;
  const extra = more.qs === qs ? more : { items: [], next: undefined };
  const rows = useMemo(() => {
    const first = trades.data?.trades ?? [];
    const seen = new Set(first.map(tradeId));
    return [...first, ...extra.items.filter((t) => !seen.has(tradeId(t)))].map((t) => ({
      t,
      s: tradeStatus(t, ctx.slotMinutes, now),
    }));
  }, [trades.data, extra.items, now]);
  const next = extra.next !== undefined ? extra.next : trades.data?.next_cursor;
  const total = trades.data?.total ?? 0;
  const filtered = Boolean(status || side || who.trim() || from || to);
  const loadMore = async () => {
    if (!next) return;
    setBusy(true);
    setMoreError(null);
    try {
      const page = await get(`/api/trades?${qs}&cursor=${encodeURIComponent(next)}`);
      setMore({ qs, items: [...extra.items, ...page.trades], next: page.next_cursor ?? null });
    } catch (e) {
      setMoreError(e);
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      <PageHeader title="Trades" sub="Every trade this node agreed, and how it settled." />
      <Section title="History" id="trades">
        <form class="filters" onSubmit={(e) => e.preventDefault()} aria-label="Filter trades">
          <Field label="Status" id="t-status">
            <select id="t-status" value={status} onChange={(e) => setStatus(e.currentTarget.value)}>
              {STATUS_FILTERS.map(([v, l]) => (
                <option key={v} value={v}>
                  {l}
                </option>
              ))}
            </select>
          </Field>
          <Field label="We" id="t-side">
            <select id="t-side" value={side} onChange={(e) => setSide(e.currentTarget.value)}>
              <option value="">Both</option>
              <option value="sell">Sold</option>
              <option value="buy">Bought</option>
            </select>
          </Field>
          <Field label="Neighbour" id="t-who">
            <input id="t-who" type="search" value={who} placeholder="Name or short id" onInput={(e) => setWho(e.currentTarget.value)} />
          </Field>
          <Field label="From" id="t-from">
            <input id="t-from" type="date" value={from} max={dateInput(now)} onInput={(e) => setFrom(e.currentTarget.value)} />
          </Field>
          <Field label="To" id="t-to">
            <input id="t-to" type="date" value={to} onInput={(e) => setTo(e.currentTarget.value)} />
          </Field>
        </form>
        <ErrorNote error={trades.error} />
        {!trades.data ? (
          <Loading what="Loading trades" />
        ) : rows.length === 0 ? (
          <Empty>{filtered ? 'No trade matches these filters.' : 'No trades yet. Take an offer on the market to make one.'}</Empty>
        ) : (
          <table class="table responsive" data-testid="trades-table">
            <caption class="sr-only">
              {rows.length} of {total} trades
            </caption>
            <thead>
              <tr>
                <th scope="col">Slot</th>
                <th scope="col">We</th>
                <th scope="col">Neighbour</th>
                <th scope="col" class="num">Energy</th>
                <th scope="col" class="num">Price</th>
                <th scope="col" class="num">Amount</th>
                <th scope="col">Status</th>
                <th scope="col"><span class="sr-only">Details</span></th>
              </tr>
            </thead>
            <tbody>
              {rows.map(({ t, s }) => (
                <tr
                  key={tradeId(t)}
                  data-testid="trade-row"
                  data-nonce={t.nonce}
                  data-taker={t.taker}
                  data-agreement={t.from_agreement ? 'yes' : undefined}
                  data-dispute={t.dispute ?? undefined}
                >
                  <td data-label="Slot">{formatSlot(t.slot_ms, ctx.slotMinutes, now)}</td>
                  <td data-label="We">
                    <span>
                      <Badge kind={t.side}>{t.side === 'sell' ? 'sold' : 'bought'}</Badge>
                      {t.from_agreement && (
                        <>
                          {' '}
                          <Badge title="Made by a standing agreement">standing</Badge>
                        </>
                      )}
                    </span>
                  </td>
                  <td data-label="Neighbour">
                    <span>
                      {t.counterparty_name || 'Neighbour'} <code class="muted">{t.counterparty}</code>
                    </span>
                  </td>
                  <td data-label="Energy" class="num">
                    {t.delivered_wh != null && t.delivered_wh !== t.energy_wh
                      ? `${formatEnergy(t.delivered_wh)} of ${formatEnergy(t.energy_wh)}`
                      : formatEnergy(t.energy_wh)}
                  </td>
                  <td data-label="Price" class="num">{formatPrice(t.price, c)}</td>
                  <td data-label="Amount" class="num" title={exactMoney(t.amount, c)}>
                    {t.amount == null ? '–' : formatMoney(t.amount, c, { signed: true })}
                  </td>
                  <td data-label="Status">
                    <span>
                    <Badge kind={s.kind}>{s.label}</Badge>{' '}
                    {t.dispute && (
                      <>
                        <DisputeBadge status={t.dispute} />{' '}
                      </>
                    )}
                    {t.signatures_verified ? (
                      <span class="sig ok" title="Both signatures verified">✓<span class="sr-only"> signatures verified</span></span>
                    ) : (
                      <span class="sig bad" title="Signatures not verified">✗<span class="sr-only"> signatures not verified</span></span>
                    )}
                    </span>
                  </td>
                  <td class="actions">
                    <a class="button" href={`#/trades/${encodeURIComponent(t.taker)}/${encodeURIComponent(t.nonce)}`}>
                      Details<span class="sr-only"> of the trade with {t.counterparty_name || t.counterparty}</span>
                    </a>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        <ErrorNote error={moreError} />
        {trades.data && rows.length > 0 && (
          <div class="form-actions" data-testid="trades-more">
            <span class="muted small" aria-live="polite">
              Showing {rows.length} of {total} {filtered ? 'matching ' : ''}trades.
            </span>
            {next && (
              <button type="button" onClick={loadMore} disabled={busy}>
                {busy ? 'Loading…' : 'Load more'}
              </button>
            )}
          </div>
        )}
        <p class="muted small">
          Amounts: positive is owed to you, negative is what you owe.
        </p>
      </Section>
      <Disputes ctx={ctx} onChange={trades.reload} />
    </>
  );
}
