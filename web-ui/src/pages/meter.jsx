// Meter: live readings and registers, the last hour minute by minute.
import { useMemo } from 'preact/hooks';
import { useApi, useLive, nodeNow } from '../api.js';
import { Chart, Empty, ErrorNote, Loading, Notice, PageHeader, Section, Stat } from '../components.jsx';
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
