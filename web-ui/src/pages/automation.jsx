// Automation: the automatic trader's limits, on/off, and what it did lately and why.
import { useEffect, useState } from 'preact/hooks';
import { canTrade, nodeNow, put, useApi } from '../api.js';
import {
  Badge, Check, Empty, ErrorNote, Field, Loading, Notice, PageHeader, Section, useAction,
} from '../components.jsx';
import { formatPrice, formatTime, kwhInput, minorUnit, parseKwh, parsePrice, priceInput } from '../format.js';

const PRICE = ['min_sell_price', 'max_buy_price'];
const ENERGY = ['sell_above_wh', 'max_sell_wh', 'max_buy_wh'];
const INT = ['from_hour', 'to_hour', 'lead_slots', 'ramp_minutes', 'utc_offset_minutes'];

function toForm(l) {
  const f = { ...l };
  for (const k of PRICE) f[k] = priceInput(l[k] ?? 0);
  for (const k of ENERGY) f[k] = kwhInput(l[k] ?? 0);
  for (const k of INT) f[k] = String(l[k] ?? 0);
  return f;
}

function fromForm(f) {
  const l = { enabled: !!f.enabled, sell: !!f.sell, buy: !!f.buy };
  const bad = [];
  for (const k of PRICE) {
    const v = parsePrice(f[k]);
    if (v == null || v < 0) bad.push(k);
    l[k] = v;
  }
  for (const k of ENERGY) {
    const v = parseKwh(f[k]);
    if (v == null || v < 0) bad.push(k);
    l[k] = v;
  }
  for (const k of INT) {
    const v = /^-?\d+$/.test(String(f[k]).trim()) ? Number(f[k]) : null;
    if (v == null) bad.push(k);
    l[k] = v;
  }
  if (l.from_hour < 0 || l.from_hour > 24) bad.push('from_hour');
  if (l.to_hour < 0 || l.to_hour > 24) bad.push('to_hour');
  return { limits: l, bad };
}

const NAMES = {
  min_sell_price: 'lowest selling price',
  max_buy_price: 'highest buying price',
  sell_above_wh: 'energy kept back',
  max_sell_wh: 'most to sell per slot',
  max_buy_wh: 'most to buy per slot',
  from_hour: 'from hour',
  to_hour: 'to hour',
  lead_slots: 'slots ahead',
  ramp_minutes: 'price ramp',
  utc_offset_minutes: 'time zone offset',
};

export function AutomationPage({ ctx }) {
  const tr = useApi('/api/trader', { every: 15000 });
  const editable = canTrade(ctx.user);
  const [form, setForm] = useState(null);
  const [dirty, setDirty] = useState(false);
  const [saved, setSaved] = useState(false);
  const [problem, setProblem] = useState(null);
  const [showAll, setShowAll] = useState(false);
  const { run, busy, error } = useAction();
  const c = ctx.currency;
  const mu = minorUnit(c);

  useEffect(() => {
    if (tr.data?.limits && !dirty) setForm(toForm(tr.data.limits));
  }, [tr.data]);

  const set = (k) => (v) => {
    setForm({ ...form, [k]: v });
    setDirty(true);
    setSaved(false);
  };
  const input = (k) => (e) => set(k)(e.currentTarget.value);

  const save = async (e, override) => {
    e?.preventDefault();
    setProblem(null);
    const { limits, bad } = fromForm(override ?? form);
    if (bad.length) return setProblem(`Check: ${[...new Set(bad)].map((k) => NAMES[k]).join(', ')}.`);
    const ok = await run(() => put('/api/trader', { limits }));
    if (ok !== undefined) {
      setDirty(false);
      setSaved(true);
      tr.reload();
    }
  };
  const toggle = (on) => {
    const f = { ...form, enabled: on };
    setForm(f);
    save(null, f);
  };

  const log = tr.data?.log ?? [];
  return (
    <>
      <PageHeader title="Automation" sub="The automatic trader sells your surplus and buys for your deficit within your limits." />
      <ErrorNote error={tr.error} />
      {!form ? (
        <Loading />
      ) : (
        <>
          <Section title="Automatic trader" id="switch">
            <div class="switch-row">
              <Badge kind={form.enabled ? 'good' : ''}>{form.enabled ? 'On' : 'Off'}</Badge>
              <button
                type="button"
                class={form.enabled ? '' : 'primary'}
                role="switch"
                aria-checked={!!form.enabled}
                disabled={!editable || busy}
                onClick={() => toggle(!form.enabled)}
                data-testid="trader-switch"
              >
                {form.enabled ? 'Turn automatic trading off' : 'Turn automatic trading on'}
              </button>
            </div>
            {!editable && <Notice>Your account can see these settings but not change them.</Notice>}
          </Section>
          <Section title="Limits" id="limits">
            <form onSubmit={save} data-testid="trader-form">
              <fieldset disabled={!editable} class="plain">
                <div class="form-cols">
                  <fieldset>
                    <legend>Selling</legend>
                    <Check id="l-sell" label="Sell my forecast surplus" checked={form.sell} onChange={set('sell')} />
                    <Field label={`Lowest price (${mu}/kWh)`} id="l-minsell">
                      <input id="l-minsell" inputMode="decimal" value={form.min_sell_price} onInput={input('min_sell_price')} />
                    </Field>
                    <Field label="Most to sell per slot (kWh)" id="l-maxsell">
                      <input id="l-maxsell" inputMode="decimal" value={form.max_sell_wh} onInput={input('max_sell_wh')} />
                    </Field>
                    <Field label="Keep back per slot (kWh)" id="l-above" hint="A margin against a poor forecast.">
                      <input id="l-above" inputMode="decimal" value={form.sell_above_wh} onInput={input('sell_above_wh')} aria-describedby="l-above-hint" />
                    </Field>
                  </fieldset>
                  <fieldset>
                    <legend>Buying</legend>
                    <Check id="l-buy" label="Buy for my forecast deficit" checked={form.buy} onChange={set('buy')} />
                    <Field label={`Highest price (${mu}/kWh)`} id="l-maxbuy">
                      <input id="l-maxbuy" inputMode="decimal" value={form.max_buy_price} onInput={input('max_buy_price')} />
                    </Field>
                    <Field label="Most to buy per slot (kWh)" id="l-maxbuywh">
                      <input id="l-maxbuywh" inputMode="decimal" value={form.max_buy_wh} onInput={input('max_buy_wh')} />
                    </Field>
                  </fieldset>
                  <fieldset>
                    <legend>When</legend>
                    <div class="row2">
                      <Field label="From hour" id="l-from">
                        <input id="l-from" type="number" min="0" max="24" value={form.from_hour} onInput={input('from_hour')} />
                      </Field>
                      <Field label="To hour" id="l-to">
                        <input id="l-to" type="number" min="0" max="24" value={form.to_hour} onInput={input('to_hour')} />
                      </Field>
                    </div>
                    <Field label="Time zone (minutes from UTC)" id="l-tz" hint="For the hours above.">
                      <div class="input-row">
                        <input id="l-tz" type="number" value={form.utc_offset_minutes} onInput={input('utc_offset_minutes')} aria-describedby="l-tz-hint" />
                        <button type="button" onClick={() => set('utc_offset_minutes')(String(-new Date().getTimezoneOffset()))}>
                          Use this device's
                        </button>
                      </div>
                    </Field>
                    <Field label="Slots ahead" id="l-lead">
                      <input id="l-lead" type="number" min="0" value={form.lead_slots} onInput={input('lead_slots')} />
                    </Field>
                    <Field label="Price ramp (minutes before gate closure)" id="l-ramp">
                      <input id="l-ramp" type="number" min="0" value={form.ramp_minutes} onInput={input('ramp_minutes')} />
                    </Field>
                  </fieldset>
                </div>
                {problem && <ErrorNote error={{ message: problem }} />}
                <ErrorNote error={error} />
                {saved && <Notice kind="ok">Saved. The trader uses the new limits from its next step.</Notice>}
                <div class="form-actions">
                  <button type="submit" class="primary" disabled={busy || !dirty}>
                    {busy ? 'Saving…' : 'Save limits'}
                  </button>
                  {dirty && (
                    <button type="button" onClick={() => { setForm(toForm(tr.data.limits)); setDirty(false); }}>
                      Undo changes
                    </button>
                  )}
                </div>
              </fieldset>
            </form>
            <p class="muted small">
              Sells no lower than {formatPrice(parsePrice(form.min_sell_price), c)} and buys no higher than{' '}
              {formatPrice(parsePrice(form.max_buy_price), c)}; within each slot's trading window the
              price moves from the best towards these limits.
            </p>
          </Section>
        </>
      )}
      <Section title="What it did lately" id="log">
        {!tr.data ? (
          <Loading />
        ) : log.length === 0 ? (
          <Empty>Nothing yet{form && !form.enabled ? ': the trader is off' : ''}.</Empty>
        ) : (
          <>
            <ol class="log" data-testid="trader-log">
              {[...log]
                .sort((a, b) => b.at_ms - a.at_ms)
                .slice(0, showAll ? undefined : 15)
                .map((e, i) => (
                  <li key={`${e.at_ms}-${i}`} class={e.acted === false ? 'held' : ''}>
                    <time dateTime={new Date(e.at_ms).toISOString()}>{formatTime(e.at_ms, nodeNow())}</time>
                    <strong>{e.action}</strong>
                    <span class="why">{e.why ? `Why: ${e.why}.` : ''}</span>
                  </li>
                ))}
            </ol>
            {log.length > 15 && (
              <button type="button" class="link" onClick={() => setShowAll(!showAll)}>
                {showAll ? 'Show the latest 15' : `Show all ${log.length}`}
              </button>
            )}
          </>
        )}
      </Section>
    </>
  );
}
