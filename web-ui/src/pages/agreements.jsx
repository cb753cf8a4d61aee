// Agreements: standing agreements with neighbours (the same trade in every covered slot for a
// period), the ones waiting for this owner, and a form to propose one.
import { useMemo, useState } from 'preact/hooks';
import { canTrade, get, nodeNow, post, useApi } from '../api.js';
import { Badge, Empty, ErrorNote, Field, Loading, Notice, PageHeader, Section, useAction, useNow } from '../components.jsx';
import { DocBadge, Decide, ReadOnlyNote, Withdraw, periodText, scheduleText, who } from '../ledger.jsx';
import { WEEKDAY_NAMES, agreementSlotCount, cost, hoursText, weekdaysText } from '../logic.js';
import {
  exactMoney, formatEnergy, formatMinute, formatMoney, formatOffset, formatPrice, minorUnit, offsetDateInput,
  offsetDayStart, parsePrice, priceInput, shortId,
} from '../format.js';

const MAX_DAYS = 92;

function ProposeAgreement({ ctx, members, offset, onSent }) {
  const { charter, currency } = ctx;
  const slotMin = charter?.slot_minutes ?? 15;
  const slotMs = slotMin * 60000;
  const others = (members ?? []).filter((m) => !m.me);
  const mid =
    charter?.feed_in_price != null && charter?.retail_price != null
      ? Math.round((charter.feed_in_price + charter.retail_price) / 2)
      : null;
  const [peer, setPeer] = useState('');
  const [side, setSide] = useState('sell');
  const [wh, setWh] = useState('200');
  const [price, setPrice] = useState(mid != null ? priceInput(mid) : '');
  const [first, setFirst] = useState(() => offsetDateInput(nodeNow(), offset));
  const [days, setDays] = useState('7');
  const [mask, setMask] = useState(127);
  const [fromMin, setFromMin] = useState(600);
  const [toMin, setToMin] = useState(960);
  const [problem, setProblem] = useState(null);
  const [sent, setSent] = useState(null);
  const { run, busy, error } = useAction();
  const maxWh = charter?.max_power_w ? Math.floor((charter.max_power_w * slotMin) / 60) : null;
  const times = useMemo(() => {
    const out = [];
    for (let m = 0; m <= 1440; m += slotMin) out.push(m);
    return out;
  }, [slotMin]);
  const peerId = peer || others[0]?.node_id || '';
  const peerName = others.find((m) => m.node_id === peerId)?.name || shortId(peerId);

  /** The agreement's terms from the form, or a message saying what is wrong. */
  const terms = (now) => {
    const e = Number(wh);
    if (!peerId) return 'Choose a neighbour.';
    if (!/^\d+$/.test(wh.trim()) || e <= 0) return 'Enter the energy per slot in whole Wh, for example 200.';
    if (maxWh && e > maxWh) return `At most ${formatEnergy(maxWh)} per slot (the charter's limit).`;
    const p = parsePrice(price);
    if (p == null) return 'Enter the price per kWh, for example 9.5 (at most 3 decimals).';
    if (charter && (p < charter.feed_in_price || p > charter.retail_price)) {
      return `The price must be between the utility's feed-in price (${formatPrice(charter.feed_in_price, currency)}) and its retail price (${formatPrice(charter.retail_price, currency)}).`;
    }
    const d = Number(days);
    if (!/^\d+$/.test(days.trim()) || d < 1 || d > MAX_DAYS) return `Enter the number of days, 1 to ${MAX_DAYS}.`;
    const dayStart = offsetDayStart(first, offset);
    if (dayStart == null) return 'Choose the first day.';
    if (!mask) return 'Tick at least one day of the week.';
    if (fromMin >= toMin) return 'The hours must end after they start.';
    // Today's slots whose trading closes soon are skipped: the neighbour needs time to accept.
    const gate = (charter?.gate_closure_secs ?? 0) * 1000;
    const earliest = Math.ceil((now + gate + 2 * slotMs) / slotMs) * slotMs;
    const start = Math.max(dayStart, earliest);
    const end = dayStart + d * 86400000;
    if (end <= start) return 'That period is over already: choose a later first day.';
    return {
      counterparty: peerId, side, per_slot_wh: e, price: p, start_ms: start, end_ms: end, weekdays: mask,
      from_min: fromMin, to_min: toMin,
    };
  };

  const now = useNow(30000);
  const preview = terms(now);
  const slots = typeof preview === 'object' ? agreementSlotCount({ ...preview, utc_offset_min: offset }, slotMs) : 0;

  const submit = async (e) => {
    e.preventDefault();
    setProblem(null);
    setSent(null);
    // The node's clock right now (it may run fast on a test network).
    const s = await get('/api/status').catch(() => null);
    const t = terms(s?.now_ms ?? nodeNow());
    if (typeof t === 'string') return setProblem(t);
    const r = await run(() => post('/api/agreements', t));
    if (r) {
      setSent({ ...t, name: peerName });
      onSent();
    }
  };

  const browserOffset = -new Date(now).getTimezoneOffset();
  return (
    <Section title="Propose a standing agreement" id="propose">
      {others.length === 0 ? (
        <Empty>No neighbour to agree with yet.</Empty>
      ) : (
        <form onSubmit={submit} class="form-grid" data-testid="agreement-form" noValidate>
          <Field label="Neighbour" id="ag-peer" class="span-all">
            <select id="ag-peer" value={peerId} onChange={(e) => setPeer(e.currentTarget.value)}>
              {others.map((m) => (
                <option key={m.node_id} value={m.node_id}>
                  {m.name || 'Neighbour'} ({m.short_id})
                </option>
              ))}
            </select>
          </Field>
          <fieldset class="radios">
            <legend>I want to</legend>
            <label>
              <input type="radio" name="ag-side" value="sell" checked={side === 'sell'} onChange={() => setSide('sell')} />
              Sell to them
            </label>
            <label>
              <input type="radio" name="ag-side" value="buy" checked={side === 'buy'} onChange={() => setSide('buy')} />
              Buy from them
            </label>
          </fieldset>
          <Field label="Energy per slot (Wh)" id="ag-wh" hint={maxWh ? `At most ${formatEnergy(maxWh)} per ${slotMin}-minute slot.` : null}>
            <input id="ag-wh" inputMode="numeric" value={wh} onInput={(e) => setWh(e.currentTarget.value)} aria-describedby="ag-wh-hint" />
          </Field>
          <Field
            label={`Price (${minorUnit(currency)} per kWh)`}
            id="ag-price"
            hint={charter ? `Between ${formatPrice(charter.feed_in_price, currency)} (feed-in) and ${formatPrice(charter.retail_price, currency)} (retail).` : null}
          >
            <input id="ag-price" inputMode="decimal" value={price} onInput={(e) => setPrice(e.currentTarget.value)} aria-describedby="ag-price-hint" />
          </Field>
          <Field label="First day" id="ag-first">
            <input id="ag-first" type="date" value={first} onInput={(e) => setFirst(e.currentTarget.value)} />
          </Field>
          <Field label="Number of days" id="ag-days" hint={`1 to ${MAX_DAYS}.`}>
            <input id="ag-days" type="number" min="1" max={MAX_DAYS} value={days} onInput={(e) => setDays(e.currentTarget.value)} aria-describedby="ag-days-hint" />
          </Field>
          <fieldset class="weekdays">
            <legend>Days of the week</legend>
            {WEEKDAY_NAMES.map((n, i) => (
              <label key={n}>
                <input
                  type="checkbox"
                  checked={(mask & (1 << i)) !== 0}
                  onChange={(e) => setMask(e.currentTarget.checked ? mask | (1 << i) : mask & ~(1 << i))}
                />
                <span aria-hidden="true">{n.slice(0, 3)}</span>
                <span class="sr-only">{n}</span>
              </label>
            ))}
          </fieldset>
          <div class="row2">
            <Field label="From" id="ag-from">
              <select id="ag-from" value={fromMin} onChange={(e) => setFromMin(Number(e.currentTarget.value))}>
                {times.slice(0, -1).map((m) => (
                  <option key={m} value={m}>{formatMinute(m)}</option>
                ))}
              </select>
            </Field>
            <Field label="Until" id="ag-to">
              <select id="ag-to" value={toMin} onChange={(e) => setToMin(Number(e.currentTarget.value))}>
                {times.slice(1).map((m) => (
                  <option key={m} value={m}>{formatMinute(m)}</option>
                ))}
              </select>
            </Field>
          </div>
          <p class="muted small span-all">
            Days and hours are in {formatOffset(offset)}, the time zone of your automatic trader (Automation page)
            {browserOffset !== offset ? `; this device is at ${formatOffset(browserOffset)}` : ''}.
          </p>
          {typeof preview === 'object' && (
            <p class="span-all" data-testid="agreement-preview">
              You {side === 'sell' ? 'sell' : 'buy'} {formatEnergy(preview.per_slot_wh)} {side === 'sell' ? 'to' : 'from'} {peerName}{' '}
              {weekdaysText(mask)}, {hoursText(fromMin, toMin)}: {slots} slot{slots === 1 ? '' : 's'}, {formatEnergy(slots * preview.per_slot_wh)} for about{' '}
              <strong title={exactMoney(slots * cost(preview.per_slot_wh, preview.price), currency)}>
                {formatMoney(slots * cost(preview.per_slot_wh, preview.price), currency)}
              </strong>
              , settled slot by slot by what the meters measure.
            </p>
          )}
          <div class="form-actions">
            <button type="submit" class="primary" disabled={busy}>
              {busy ? 'Sending…' : 'Propose agreement'}
            </button>
          </div>
        </form>
      )}
      {problem && <ErrorNote error={{ message: problem }} />}
      <ErrorNote error={error} />
      {sent && (
        <Notice kind="ok">
          Sent to {sent.name}. The agreement binds you both once they accept it; until then it shows as waiting.
        </Notice>
      )}
    </Section>
  );
}

export function AgreementsPage({ ctx }) {
  const led = useApi('/api/ledger', { every: 5000 });
  const trader = useApi('/api/trader');
  const members = useApi('/api/members', { every: 60000 });
  const now = useNow(30000);
  const trading = canTrade(ctx.user);
  const c = ctx.currency;
  const docs = (led.data?.documents ?? []).filter((d) => d.kind === 'agreement');
  const waits = (d) => (!d.outgoing && d.state === 'offered' ? 1 : 0);
  const list = [...docs].sort((a, b) => waits(b) - waits(a) || b.created_ms - a.created_ms);
  const offset = trader.data?.limits?.utc_offset_minutes;

  return (
    <>
      <PageHeader
        title="Agreements"
        sub="Standing agreements: the same trade with a neighbour in every slot of the hours and days you choose, for up to 92 days."
      />
      <ReadOnlyNote trading={trading} />
      <ErrorNote error={led.error} />
      <Section title="Your agreements" id="agreements">
        {!led.data ? (
          <Loading />
        ) : list.length === 0 ? (
          <Empty>No standing agreements yet.</Empty>
        ) : (
          <table class="table responsive" data-testid="agreements-table">
            <caption class="sr-only">Standing agreements with neighbours</caption>
            <thead>
              <tr>
                <th scope="col">Neighbour</th>
                <th scope="col">We</th>
                <th scope="col" class="num">Per slot</th>
                <th scope="col" class="num">Price</th>
                <th scope="col">When</th>
                <th scope="col">Period</th>
                <th scope="col">State</th>
                <th scope="col"><span class="sr-only">Action</span></th>
              </tr>
            </thead>
            <tbody>
              {list.map((d) => (
                <tr key={d.id} data-testid="agreement-row" data-id={d.id} data-state={d.state}>
                  <th scope="row" data-label="Neighbour">
                    <span>
                      {who(d)} <code class="muted" title={d.counterparty}>{shortId(d.counterparty)}</code>
                    </span>
                  </th>
                  <td data-label="We">
                    <Badge kind={d.side}>{d.side === 'sell' ? 'sell' : 'buy'}</Badge>
                  </td>
                  <td data-label="Per slot" class="num">{formatEnergy(d.per_slot_wh)}</td>
                  <td data-label="Price" class="num">{formatPrice(d.price, c)}</td>
                  <td data-label="When">{scheduleText(d)}</td>
                  <td data-label="Period">
                    <span>
                      {periodText(d)}
                      {d.end_ms <= now && <small class="muted"> (ended)</small>}
                    </span>
                  </td>
                  <td data-label="State">
                    <DocBadge d={d} />
                  </td>
                  <td class="actions">
                    {!d.outgoing && d.state === 'offered' && <Decide d={d} trading={trading} currency={c} onDone={led.reload} />}
                    {d.outgoing && d.state === 'proposed' && trading && (
                      <Withdraw d={d} trading={trading} currency={c} onDone={led.reload} />
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        <p class="muted small">
          Once both of you signed, each covered slot becomes a trade on both nodes a day ahead (marked
          “standing” on the Trades page) and settles like any other.
        </p>
      </Section>
      {trading &&
        (offset == null || !members.data ? (
          <Section title="Propose a standing agreement" id="propose">
            <ErrorNote error={trader.error || members.error} />
            <Loading />
          </Section>
        ) : (
          <ProposeAgreement ctx={ctx} members={members.data} offset={offset} onSent={led.reload} />
        ))}
    </>
  );
}
