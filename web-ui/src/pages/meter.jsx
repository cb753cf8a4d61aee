// Meter: live readings and registers, the last hour minute by minute, and the calibration of
// current clamps.
import { useEffect, useMemo, useState } from 'preact/hooks';
import { canTrade, put, useApi, useLive, nodeNow } from '../api.js';
import { Chart, Empty, ErrorNote, Field, Loading, Notice, PageHeader, Section, Stat, useAction } from '../components.jsx';
import { LivePower } from './dashboard.jsx';
import { powerChart } from '../charts.js';
import { hasBattery, powerData } from '../logic.js';
import { formatClock, formatEnergy, formatPower } from '../format.js';

export function MeterPage({ ctx }) {
  const s = ctx.status;
  const m = s?.meter;
  const live = useLive();
  const last = live.last ?? (m?.enabled ? m : null);
  const minute = Math.floor(nodeNow() / 60000);
  const to = (minute + 1) * 60000;
  const readings = useApi(`/api/readings?from=${to - 3600000}&to=${to}&step=minute`, { every: 60000 });
  const rows = readings.data ?? [];
  const battery = hasBattery(rows);
  const data = useMemo(() => powerData(rows, battery), [readings.data]);
  const recent = rows.slice(-10).reverse();

  return (
    <>
      <PageHeader title="Meter" sub="What this home's meter measures, live." />
      {m && m.enabled === false ? (
        <Section>
          <Empty>
            No meter is configured on this node. Meters are chosen in the node's configuration file
            (see the README's meter section).
          </Empty>
        </Section>
      ) : (
        <>
          <Section title="Live" id="meter-live">
            <LivePower compact />
          </Section>
          <Section title="Registers" id="registers">
            <div class="stats">
              <Stat label="Imported (total)" value={last ? formatEnergy(last.import_wh) : '…'} kind="import" testid="reg-import" />
              <Stat label="Exported (total)" value={last ? formatEnergy(last.export_wh) : '…'} kind="export" testid="reg-export" />
              <Stat label="Grid power" value={last ? formatPower(last.grid_w) : '…'} sub="positive: importing" />
            </div>
            <p class="muted small">Last reading {last ? formatClock(last.at_ms) : '–'}.</p>
            {m?.privacy && (
              <p class="muted small" data-testid="privacy-mode">
                Privacy mode: each slot's attestation goes only to the neighbours you traded with; the others get a commitment to it.
              </p>
            )}
          </Section>
          {m?.health && (
            <Section title="Meter reads" id="meter-health">
              {m.health.error && <Notice kind="error">{m.health.error}</Notice>}
              <div class="stats">
                {Object.entries(m.health.counters).map(([k, v]) => (
                  <Stat key={k} label={k.replace(/_/g, ' ')} value={String(v)} testid={`health-${k}`} />
                ))}
              </div>
              <p class="muted small">Counted since the node started ({m.health.source} meter).</p>
            </Section>
          )}
          <CalibrationSection ctx={ctx} />
          <Section title="Last hour" id="meter-hour">
            <ErrorNote error={readings.error} />
            {!readings.data ? (
              <Loading />
            ) : rows.length < 2 ? (
              <Empty>Not enough readings yet.</Empty>
            ) : (
              <>
                <Chart label="Mean power per minute over the last hour" build={powerChart({ battery })} data={data} chartKey={`m-${battery}`} />
                <div class="scroll-x" tabIndex={0} role="region" aria-label="Last minutes">
                <table class="table">
                  <caption>Last minutes</caption>
                  <thead>
                    <tr>
                      <th scope="col">Minute</th>
                      <th scope="col" class="num">Grid</th>
                      <th scope="col" class="num">Solar</th>
                      <th scope="col" class="num">Consumption</th>
                      {battery && <th scope="col" class="num">Battery</th>}
                      <th scope="col" class="num">Import register</th>
                      <th scope="col" class="num">Export register</th>
                    </tr>
                  </thead>
                  <tbody>
                    {recent.map((r) => (
                      <tr key={r.t}>
                        <td data-label="Minute">{formatClock(r.t)}</td>
                        <td data-label="Grid" class="num">{formatPower(r.grid_w)}</td>
                        <td data-label="Solar" class="num">{formatPower(r.solar_w)}</td>
                        <td data-label="Consumption" class="num">{formatPower(r.load_w)}</td>
                        {battery && <td data-label="Battery" class="num">{formatPower(r.battery_w)}</td>}
                        <td data-label="Import register" class="num">{formatEnergy(r.import_wh)}</td>
                        <td data-label="Export register" class="num">{formatEnergy(r.export_wh)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
                </div>
              </>
            )}
          </Section>
        </>
      )}
    </>
  );
}

const NUM = /^\s*\d+(?:[.,]\d+)?(?:[eE]-?\d+)?\s*$/;
const SNUM = /^\s*-?\d+(?:[.,]\d+)?\s*$/;
const num = (t) => Number(String(t).trim().replace(',', '.'));

function toForm(cal) {
  return {
    volts: cal.volts_per_count == null ? null : String(cal.volts_per_count),
    channels: cal.channels.map((c) => ({
      name: c.name,
      legs: c.legs.map((l) => ({ amps: String(l.amps_per_count), phase: String(l.phase_lead_deg) })),
    })),
  };
}

/** The form back to a calibration, or the problems found (the node checks again). */
function fromForm(f) {
  const bad = [];
  let volts = null;
  if (f.volts != null) {
    if (!NUM.test(f.volts) || !(num(f.volts) > 0 && num(f.volts) <= 100)) bad.push('voltage reference: volts per count above 0, at most 100');
    volts = num(f.volts);
  }
  const channels = f.channels.map((c) => ({
    name: c.name,
    legs: c.legs.map((l, k) => {
      if (!NUM.test(l.amps) || !(num(l.amps) > 0 && num(l.amps) <= 100)) bad.push(`${c.name} clamp ${k + 1}: amperes per count above 0, at most 100`);
      if (!SNUM.test(l.phase) || Math.abs(num(l.phase)) > 20) bad.push(`${c.name} clamp ${k + 1}: phase correction within ±20°`);
      return { amps_per_count: num(l.amps), phase_lead_deg: num(l.phase) };
    }),
  }));
  return { calibration: { volts_per_count: volts, channels }, bad };
}

const fixed = (v, d) => (v == null || !Number.isFinite(v) ? '–' : v.toFixed(d));

function LiveChannels({ live }) {
  const legs = live.some((c) => c.legs.length > 0);
  return (
    <div class="scroll-x" tabIndex={0} role="region" aria-label="Live readings per channel">
      <table class={legs ? 'table' : 'table narrow'} data-testid="calibration-live">
        <caption>Live readings per channel{legs ? ' and clamp' : ''}</caption>
        <thead>
          <tr>
            <th scope="col">Channel</th>
            <th scope="col" class="num">Power</th>
            {legs && <th scope="col" class="num">Voltage</th>}
            {legs && <th scope="col" class="num">Current</th>}
            {legs && <th scope="col" class="num">Power factor</th>}
            <th scope="col">Status</th>
          </tr>
        </thead>
        <tbody>
          {live.flatMap((c) => {
            const rows = [
              <tr key={c.name}>
                <td data-label="Channel">{c.name}{c.frequency_hz ? ` (${fixed(c.frequency_hz, 2)} Hz)` : ''}</td>
                <td data-label="Power" class="num">{formatPower(c.power_w)}</td>
                {legs && <td data-label="Voltage" class="num">{c.legs.length === 1 ? `${fixed(c.legs[0].vrms_v, 1)} V` : ''}</td>}
                {legs && <td data-label="Current" class="num">{c.legs.length === 1 ? `${fixed(c.legs[0].irms_a, 2)} A` : ''}</td>}
                {legs && <td data-label="Power factor" class="num">{c.legs.length === 1 ? fixed(c.legs[0].power_factor, 2) : ''}</td>}
                <td data-label="Status">{c.status}</td>
              </tr>,
            ];
            if (c.legs.length > 1) {
              c.legs.forEach((l, k) => rows.push(
                <tr key={`${c.name}-${k}`}>
                  <td data-label="Channel">{c.name}, clamp {k + 1}</td>
                  <td data-label="Power" class="num">{formatPower(l.real_power_w)}</td>
                  <td data-label="Voltage" class="num">{fixed(l.vrms_v, 1)} V</td>
                  <td data-label="Current" class="num">{fixed(l.irms_a, 2)} A</td>
                  <td data-label="Power factor" class="num">{fixed(l.power_factor, 2)}</td>
                  <td data-label="Status"></td>
                </tr>,
              ));
            }
            return rows;
          })}
        </tbody>
      </table>
    </div>
  );
}

function CalibrationSection({ ctx }) {
  const cal = useApi('/api/meter/calibration', { every: 5000 });
  const editable = canTrade(ctx.user);
  const [form, setForm] = useState(null);
  const [dirty, setDirty] = useState(false);
  const [saved, setSaved] = useState(false);
  const [problem, setProblem] = useState(null);
  const { run, busy, error } = useAction();
  const v = cal.data;

  useEffect(() => {
    if (v?.calibration && !dirty) setForm(toForm(v.calibration));
  }, [v]);

  const change = (fn) => {
    const f = structuredClone(form);
    fn(f);
    setForm(f);
    setDirty(true);
    setSaved(false);
  };
  const save = async (e) => {
    e.preventDefault();
    setProblem(null);
    const { calibration, bad } = fromForm(form);
    if (bad.length) return setProblem(`Check: ${bad.join('; ')}.`);
    const ok = await run(() => put('/api/meter/calibration', { calibration }));
    if (ok !== undefined) {
      setDirty(false);
      setSaved(true);
      cal.reload();
    }
  };

  return (
    <Section title="Calibration" id="calibration">
      <ErrorNote error={cal.error} />
      {!v ? (
        <Loading />
      ) : (
        <>
          <p class="muted small" data-testid="calibration-note">{v.note}</p>
          {v.live.length > 0 ? <LiveChannels live={v.live} /> : <Empty>No reading yet.</Empty>}
          {v.calibratable && form && (
            <form onSubmit={save} data-testid="calibration-form">
              {!editable && <Notice>Your account can see the calibration but not change it.</Notice>}
              <fieldset disabled={!editable || busy} class="plain">
                <div class="form-cols">
                  {form.volts != null && (
                    <fieldset>
                      <legend>Voltage reference</legend>
                      <Field label="Volts per ADC count" id="cal-volts" hint="Raise it if the voltage reads low against a multimeter.">
                        <input id="cal-volts" inputMode="decimal" value={form.volts} aria-describedby="cal-volts-hint"
                          onInput={(e) => change((f) => { f.volts = e.currentTarget.value; })} />
                      </Field>
                    </fieldset>
                  )}
                  {form.channels.map((c, ci) => (
                    <fieldset key={c.name}>
                      <legend>Channel {c.name}</legend>
                      {c.legs.map((l, li) => (
                        <div key={li} class="row2">
                          <Field label={`Clamp ${li + 1}: amperes per count`} id={`cal-a-${ci}-${li}`}>
                            <input id={`cal-a-${ci}-${li}`} inputMode="decimal" value={l.amps}
                              onInput={(e) => change((f) => { f.channels[ci].legs[li].amps = e.currentTarget.value; })} />
                          </Field>
                          <Field label={`Clamp ${li + 1}: phase correction (°)`} id={`cal-p-${ci}-${li}`}>
                            <input id={`cal-p-${ci}-${li}`} inputMode="decimal" value={l.phase}
                              onInput={(e) => change((f) => { f.channels[ci].legs[li].phase = e.currentTarget.value; })} />
                          </Field>
                        </div>
                      ))}
                    </fieldset>
                  ))}
                </div>
                <p class="muted small">
                  Gain: compare a clamp's current with a clamp meter and scale amperes per count by
                  their ratio. Phase: with only a resistive load on (a kettle, a heater), adjust until
                  the power factor reads 1.00.
                </p>
                {problem && <ErrorNote error={{ message: problem }} />}
                <ErrorNote error={error} />
                {saved && <Notice kind="ok">Saved. The meter uses it from the next mains cycle; no restart is needed.</Notice>}
                <div class="form-actions">
                  <button type="submit" class="primary" disabled={busy || !dirty}>
                    {busy ? 'Saving…' : 'Save calibration'}
                  </button>
                  {dirty && (
                    <button type="button" onClick={() => { setForm(toForm(v.calibration)); setDirty(false); }}>
                      Undo changes
                    </button>
                  )}
                </div>
              </fieldset>
            </form>
          )}
        </>
      )}
    </Section>
  );
}
