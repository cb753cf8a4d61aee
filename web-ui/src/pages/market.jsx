// Market: the order book for the coming slots, posting, taking and cancelling offers.
import { useMemo, useState } from 'preact/hooks';
import { canTrade, del, post, useApi } from '../api.js';
import { cost, openSlots } from '../logic.js';
import { rawInt } from '../json.js';
import {
  Badge, Dialog, Empty, ErrorNote, Field, Loading, Notice, PageHeader, Section, useAction, useNow,
} from '../components.jsx';
import {
  exactMoney, formatEnergy, formatMoney, formatPrice, formatRelative, formatSlot, kwhInput,
  minorUnit, parseKwh, parsePrice, priceInput,
} from '../format.js';

function PostOffer({ ctx, onPosted }) {
  const { charter, currency } = ctx;
  const now = useNow(30000);
  const slots = openSlots(charter, now);
  const mid =
    charter?.feed_in_price != null && charter?.retail_price != null
      ? Math.round((charter.feed_in_price + charter.retail_price) / 2)
      : null;
  const [side, setSide] = useState('sell');
  const [kwh, setKwh] = useState('1');
  const [price, setPrice] = useState(mid != null ? priceInput(mid) : '');
  const [slot, setSlot] = useState('');
  const [done, setDone] = useState(null);
  const [problem, setProblem] = useState(null);
  const { run, busy, error } = useAction();

  const submit = async (e) => {
    e.preventDefault();
    setProblem(null);
    setDone(null);
    const wh = parseKwh(kwh);
    const p = parsePrice(price);
    if (wh == null || wh <= 0) return setProblem('Enter the energy in kWh, for example 1.5 (at most 3 decimals).');
    if (p == null || p < 0) return setProblem('Enter the price per kWh, for example 9.5 (at most 3 decimals).');
    const body = { side, quantity_wh: wh, price: p };
    if (slot) body.slot_ms = Number(slot);
    const offer = await run(() => post('/api/offers', body));
    if (offer) {
      setDone(offer);
      onPosted();
    }
  };

  const maxWh = charter?.max_power_w ? Math.floor((charter.max_power_w * (charter.slot_minutes ?? 15)) / 60) : null;
  return (
    <Section title="Post an offer" id="post">
      <form onSubmit={submit} class="form-grid" data-testid="offer-form">
        <fieldset class="radios">
          <legend>I want to</legend>
          <label>
            <input type="radio" name="side" value="sell" checked={side === 'sell'} onChange={() => setSide('sell')} />
            Sell energy
          </label>
          <label>
            <input type="radio" name="side" value="buy" checked={side === 'buy'} onChange={() => setSide('buy')} />
            Buy energy
          </label>
        </fieldset>
        <Field
          label="Energy (kWh)"
          id="offer-kwh"
          hint={maxWh ? `At most ${formatEnergy(maxWh)} per slot.` : null}
        >
          <input
            id="offer-kwh"
            inputMode="decimal"
            required
            value={kwh}
            onInput={(e) => setKwh(e.currentTarget.value)}
            aria-describedby={maxWh ? 'offer-kwh-hint' : undefined}
          />
        </Field>
        <Field
          label={`Price (${minorUnit(currency)} per kWh)`}
          id="offer-price"
          hint={
            charter
              ? `Utility: feed-in ${formatPrice(charter.feed_in_price, currency)}, retail ${formatPrice(charter.retail_price, currency)}.`
              : null
          }
        >
          <input
            id="offer-price"
            inputMode="decimal"
            required
            value={price}
            onInput={(e) => setPrice(e.currentTarget.value)}
            aria-describedby="offer-price-hint"
          />
        </Field>
        <Field label="Delivery slot" id="offer-slot">
          <select id="offer-slot" value={slot} onChange={(e) => setSlot(e.currentTarget.value)}>
            <option value="">Next open slot</option>
            {slots.map((t) => (
              <option key={t} value={String(t)}>
                {formatSlot(t, charter?.slot_minutes, now)}
              </option>
            ))}
          </select>
        </Field>
        <div class="form-actions">
          <button type="submit" class="primary" disabled={busy}>
            {busy ? 'Posting…' : side === 'sell' ? 'Post sell offer' : 'Post buy offer'}
          </button>
        </div>
      </form>
      {problem && <ErrorNote error={{ message: problem }} />}
      <ErrorNote error={error} />
      {done && (
        <Notice kind="ok">
          Posted: {done.side} {formatEnergy(done.quantity_wh)} at {formatPrice(done.price, currency)} for{' '}
          {formatSlot(done.slot_ms, charter?.slot_minutes)}.
        </Notice>
      )}
    </Section>
  );
}

function TakeDialog({ offer, ctx, onClose, onTaken }) {
  const { currency, charter } = ctx;
  const [kwh, setKwh] = useState(kwhInput(offer.quantity_wh));
  const [trade, setTrade] = useState(null);
  const [problem, setProblem] = useState(null);
  const { run, busy, error } = useAction();
  const wh = parseKwh(kwh);
  const weBuy = offer.side === 'sell';
  const submit = async (e) => {
    e.preventDefault();
    setProblem(null);
    if (wh == null || wh <= 0) return setProblem('Enter the energy in kWh (at most 3 decimals).');
    if (wh > offer.quantity_wh) return setProblem(`At most ${formatEnergy(offer.quantity_wh)} is on offer.`);
    const t = await run(() => post('/api/take', { maker: offer.maker, nonce: rawInt(offer.nonce), energy_wh: wh }));
    if (t) {
      setTrade(t);
      onTaken();
    }
  };
  return (
    <Dialog open title={weBuy ? 'Buy from this offer' : 'Sell to this offer'} onClose={onClose}>
      <dl class="facts">
        <dt>{weBuy ? 'Seller' : 'Buyer'}</dt>
        <dd>{offer.maker_name || offer.maker_short}</dd>
        <dt>Slot</dt>
        <dd>{formatSlot(offer.slot_ms, charter?.slot_minutes)}</dd>
        <dt>Price</dt>
        <dd>{formatPrice(offer.price, currency)}</dd>
        <dt>Available</dt>
        <dd>{formatEnergy(offer.quantity_wh)}</dd>
      </dl>
      {trade ? (
        <>
          <Notice kind="ok">
            Agreed: you {weBuy ? 'buy' : 'sell'} {formatEnergy(trade.energy_wh)} at {formatPrice(trade.price, currency)}.
            Both signatures are {trade.signatures_verified ? 'verified' : 'not yet verified'}.
          </Notice>
          <div class="form-actions">
            <a class="button" href="#/trades">
              See trades
            </a>
            <button type="button" class="primary" onClick={onClose}>
              Done
            </button>
          </div>
        </>
      ) : (
        <form onSubmit={submit} class="stack" data-testid="take-form">
          <Field label="Energy (kWh)" id="take-kwh">
            <input id="take-kwh" inputMode="decimal" required value={kwh} onInput={(e) => setKwh(e.currentTarget.value)} />
          </Field>
          {wh != null && wh > 0 && (
            <p>
              You {weBuy ? 'pay' : 'receive'} about{' '}
              <strong title={exactMoney(cost(wh, offer.price), currency)}>
                {formatMoney(cost(wh, offer.price), currency)}
              </strong>{' '}
              for {formatEnergy(wh)}, settled after delivery by what the meters measured.
            </p>
          )}
          {problem && <ErrorNote error={{ message: problem }} />}
          <ErrorNote error={error} />
          <div class="form-actions">
            <button type="button" onClick={onClose}>
              Cancel
            </button>
            <button type="submit" class="primary" disabled={busy}>
              {busy ? 'Agreeing…' : weBuy ? 'Buy' : 'Sell'}
            </button>
          </div>
        </form>
      )}
    </Dialog>
  );
}

function OfferRow({ o, ctx, trading, onTake, onCancel, busy }) {
  const now = useNow(30000);
  return (
    <tr class={o.mine ? 'mine' : ''} data-testid="offer-row" data-nonce={o.nonce} data-maker={o.maker}>
      <td data-label="Slot">{formatSlot(o.slot_ms, ctx.slotMinutes, now)}</td>
      <td data-label="Side">
        <Badge kind={o.side}>{o.side === 'sell' ? 'Selling' : 'Buying'}</Badge>
      </td>
      <td data-label="Energy" class="num">{formatEnergy(o.quantity_wh)}</td>
      <td data-label="Price" class="num">{formatPrice(o.price, ctx.currency)}</td>
      <td data-label="Who">
        {o.mine ? (
          <strong>You</strong>
        ) : (
          <span title={o.maker}>
            {o.maker_name || 'Neighbour'} <code class="muted">{o.maker_short}</code>
          </span>
        )}
      </td>
      <td data-label="Expires">{formatRelative(o.expires_ms, now)}</td>
      <td class="actions">
        {o.mine ? (
          <button type="button" class="danger" disabled={!trading || busy} onClick={() => onCancel(o)} data-testid="cancel-offer">
            Cancel
          </button>
        ) : (
          <button type="button" class="primary" disabled={!trading} onClick={() => onTake(o)} data-testid="take-offer">
            {o.side === 'sell' ? 'Buy' : 'Sell'}
            <span class="sr-only"> {formatEnergy(o.quantity_wh)} from {o.maker_name || o.maker_short}</span>
          </button>
        )}
      </td>
    </tr>
  );
}

export function MarketPage({ ctx }) {
  const offers = useApi('/api/offers', { every: 5000 });
  const trading = canTrade(ctx.user);
  const [q, setQ] = useState('');
  const [side, setSide] = useState('');
  const [slot, setSlot] = useState('');
  const [minP, setMinP] = useState('');
  const [maxP, setMaxP] = useState('');
  const [mine, setMine] = useState(false);
  const [taking, setTaking] = useState(null);
  const cancel = useAction();
  const list = offers.data ?? [];

  const slotsInBook = useMemo(() => [...new Set(list.map((o) => o.slot_ms))].sort((a, b) => a - b), [offers.data]);
  const filtered = useMemo(() => {
    const lo = parsePrice(minP);
    const hi = parsePrice(maxP);
    const text = q.trim().toLowerCase();
    return list
      .filter(
        (o) =>
          (!side || o.side === side) &&
          (!slot || String(o.slot_ms) === slot) &&
          (lo == null || o.price >= lo) &&
          (hi == null || o.price <= hi) &&
          (!mine || o.mine) &&
          (!text ||
            (o.maker_name ?? '').toLowerCase().includes(text) ||
            (o.maker_short ?? '').toLowerCase().includes(text) ||
            (o.maker ?? '').toLowerCase().startsWith(text)),
      )
      .sort(
        (a, b) =>
          a.slot_ms - b.slot_ms ||
          (a.side === b.side ? (a.side === 'sell' ? a.price - b.price : b.price - a.price) : a.side === 'sell' ? -1 : 1),
      );
  }, [offers.data, q, side, slot, minP, maxP, mine]);

  const doCancel = (o) => {
    if (!window.confirm(`Cancel your ${o.side} offer of ${formatEnergy(o.quantity_wh)}?`)) return;
    cancel.run(async () => {
      await del(`/api/offers/${encodeURIComponent(o.nonce)}`);
      offers.reload();
    });
  };
  const filtersOn = q || side || slot || minP || maxP || mine;

  return (
    <>
      <PageHeader title="Market" sub="Offers from your neighbours for the coming delivery slots." />
      {!trading && <Notice>Your account can view the market but not trade.</Notice>}
      {trading && <PostOffer ctx={ctx} onPosted={offers.reload} />}
      <Section title="Order book" id="book">
        <form class="filters" onSubmit={(e) => e.preventDefault()} aria-label="Filter offers">
          <Field label="Search by neighbour" id="f-q">
            <input id="f-q" type="search" value={q} placeholder="Name or short id" onInput={(e) => setQ(e.currentTarget.value)} />
          </Field>
          <Field label="Side" id="f-side">
            <select id="f-side" value={side} onChange={(e) => setSide(e.currentTarget.value)}>
              <option value="">Both</option>
              <option value="sell">Selling</option>
              <option value="buy">Buying</option>
            </select>
          </Field>
          <Field label="Slot" id="f-slot">
            <select id="f-slot" value={slot} onChange={(e) => setSlot(e.currentTarget.value)}>
              <option value="">All slots</option>
              {slotsInBook.map((t) => (
                <option key={t} value={String(t)}>
                  {formatSlot(t, ctx.slotMinutes)}
                </option>
              ))}
            </select>
          </Field>
          <Field label="Min price" id="f-min">
            <input id="f-min" inputMode="decimal" value={minP} onInput={(e) => setMinP(e.currentTarget.value)} />
          </Field>
          <Field label="Max price" id="f-max">
            <input id="f-max" inputMode="decimal" value={maxP} onInput={(e) => setMaxP(e.currentTarget.value)} />
          </Field>
          <div class="check">
            <input id="f-mine" type="checkbox" checked={mine} onChange={(e) => setMine(e.currentTarget.checked)} />
            <label for="f-mine">Only mine</label>
          </div>
          {filtersOn && (
            <button
              type="button"
              class="link"
              onClick={() => {
                setQ('');
                setSide('');
                setSlot('');
                setMinP('');
                setMaxP('');
                setMine(false);
              }}
            >
              Clear filters
            </button>
          )}
        </form>
        <ErrorNote error={offers.error} />
        <ErrorNote error={cancel.error} />
        {offers.loading && !offers.data ? (
          <Loading what="Loading offers" />
        ) : filtered.length === 0 ? (
          <Empty>{list.length ? 'No offer matches these filters.' : 'No open offers right now.'}</Empty>
        ) : (
          <table class="table responsive" data-testid="order-book">
            <caption class="sr-only">
              {filtered.length} of {list.length} offers
            </caption>
            <thead>
              <tr>
                <th scope="col">Slot</th>
                <th scope="col">Side</th>
                <th scope="col" class="num">Energy</th>
                <th scope="col" class="num">Price</th>
                <th scope="col">Who</th>
                <th scope="col">Expires</th>
                <th scope="col"><span class="sr-only">Action</span></th>
              </tr>
            </thead>
            <tbody>
              {filtered.map((o) => (
                <OfferRow
                  key={`${o.maker}-${o.nonce}`}
                  o={o}
                  ctx={ctx}
                  trading={trading}
                  busy={cancel.busy}
                  onTake={setTaking}
                  onCancel={doCancel}
                />
              ))}
            </tbody>
          </table>
        )}
        <p class="muted small">
          {list.length} open offer{list.length === 1 ? '' : 's'} · refreshed every 5 s
        </p>
      </Section>
      {taking && (
        <TakeDialog
          offer={taking}
          ctx={ctx}
          onClose={() => setTaking(null)}
          onTaken={() => offers.reload()}
        />
      )}
    </>
  );
}
