// Dashboard: live power from server-sent events, today's energy and savings, history charts.
import { useMemo, useState } from 'preact/hooks';
import { useApi, useLive, nodeNow } from '../api.js';
import { Chart, ErrorNote, Loading, PageHeader, Section, Stat, Empty, useNow } from '../components.jsx';
import { energyChart, powerChart } from '../charts.js';
import { energyData, hasBattery, livePowerData, powerData } from '../logic.js';
import {
  formatClock, formatEnergy, formatTime, formatMoney, formatPercent, formatPower, formatPrice, exactMoney,
} from '../format.js';

export function LivePower({ compact = false }) {
  const live = useLive();
  useNow(1000); // re-render every second for the age
  const p = live.last;
  const age = p ? Math.max(0, Math.round((Date.now() - live.receivedAt) / 1000)) : null;
  const importing = p && p.grid_w > 0;
  return (
    <div>
      <div class="stats live" data-testid="live-power">
        <Stat
          label={p ? (importing ? 'Importing from grid' : p.grid_w < 0 ? 'Exporting to grid' : 'Grid') : 'Grid'}
          value={p ? formatPower(Math.abs(p.grid_w)) : '…'}
          kind={p ? (importing ? 'import' : 'export') : ''}
          testid="live-grid"
        />
        <Stat label="Solar" value={p ? formatPower(p.solar_w) : '…'} kind="solar" testid="live-solar" />
        <Stat label="Consumption" value={p ? formatPower(p.load_w) : '…'} kind="load" testid="live-load" />
      </div>
      <p class="live-state muted small">
        <span class={`dot ${live.connected ? 'on' : ''}`} aria-hidden="true" />{' '}
        {p ? (
          <span data-testid="live-at" data-at={p.at_ms}>
            Live · {formatClock(p.at_ms)} (received {age} s ago)
          </span>
        ) : live.connected ? (
          'Connected, waiting for the first reading…'
        ) : (
          'Connecting to the live stream…'
        )}
      </p>
      {!compact && live.history.length > 1 && (
        <Chart
          label="Power over the last minutes"
          build={powerChart({ live: true })}
          data={livePowerData(live.history)}
          height={180}
          chartKey="live"
        />
      )}
    </div>
  );
}

const RANGES = {
  '24h': { label: '24 hours', ms: 86400000, step: 'slot', stepName: 'slot', every: 60000 },
  '7d': { label: '7 days', ms: 7 * 86400000, step: 'hour', stepName: 'hour', every: 300000 },
  '30d': { label: '30 days', ms: 30 * 86400000, step: 'day', stepName: 'day', every: 600000 },
};

function History({ slotMinutes }) {
  const [range, setRange] = useState('24h');
  const r = RANGES[range];
  const stepMs =
    r.step === 'slot' ? slotMinutes * 60000 : r.step === 'hour' ? 3600000 : 86400000;
  // Aligned to the step (re-computed each minute) so the URL stays the same between polls.
  const minute = Math.floor(nodeNow() / 60000);
  const to = (minute + 1) * 60000;
  const from = Math.floor((to - r.ms) / stepMs) * stepMs - stepMs;
  const path = `/api/readings?from=${from}&to=${to}&step=${r.step}`;
  const readings = useApi(path, { every: r.every });
  const rows = readings.data ?? [];
  const battery = hasBattery(rows);
  const pData = useMemo(() => powerData(rows.slice(1), battery), [readings.data]);
  const eData = useMemo(() => energyData(rows, stepMs), [readings.data]);

  return (
    <Section
      title="History"
      id="history"
      actions={
        <div class="segmented" role="group" aria-label="Time range">
          {Object.entries(RANGES).map(([k, v]) => (
            <button type="button" key={k} aria-pressed={range === k} onClick={() => setRange(k)}>
              {v.label}
            </button>
          ))}
        </div>
      }
    >
      <ErrorNote error={readings.error} />
      {readings.loading && !readings.data ? (
        <Loading what="Loading readings" />
      ) : rows.length < 2 ? (
        <Empty>No readings for this period yet.</Empty>
      ) : (
        <>
          <h3>Mean power per {r.stepName}</h3>
          <Chart
            label={`Mean grid, solar and consumption power per ${r.stepName} over the last ${r.label}`}
            build={powerChart({ battery })}
            data={pData}
            chartKey={`p-${range}-${battery}`}
          />
          <h3>Energy per {r.stepName}</h3>
          <p class="muted small">Imported above the line, exported below it.</p>
          <Chart
            label={`Energy imported, exported, produced and consumed per ${r.stepName} over the last ${r.label}`}
            build={energyChart()}
            data={eData}
            chartKey={`e-${range}`}
          />
        </>
      )}
    </Section>
  );
}

function Today({ currency }) {
  const summary = useApi('/api/summary', { every: 30000 });
  const s = summary.data;
  return (
    <Section title="Today" id="today">
      <ErrorNote error={summary.error} />
      {!s ? (
        <Loading />
      ) : (
        <>
          <div class="stats">
            <Stat label="Produced" value={formatEnergy(s.solar_wh)} kind="solar" />
            <Stat label="Consumed" value={formatEnergy(s.load_wh)} kind="load" />
            <Stat label="Imported" value={formatEnergy(s.import_wh)} kind="import" />
            <Stat label="Exported" value={formatEnergy(s.export_wh)} kind="export" />
            <Stat
              label="Self-sufficiency"
              value={formatPercent(s.self_sufficiency)}
              sub="of consumption covered without the grid"
            />
            <Stat
              label="Saved"
              value={formatMoney(s.savings, s.currency ?? currency)}
              title={exactMoney(s.savings, s.currency ?? currency)}
              sub="compared with the utility alone"
              kind={s.savings > 0 ? 'good' : ''}
              testid="savings"
            />
          </div>
          <p class="muted small">
            Utility prices: buying {formatPrice(s.retail_price, s.currency)}, feed-in{' '}
            {formatPrice(s.feed_in_price, s.currency)}. Counted since {formatTime(s.day_start_ms)}.
          </p>
        </>
      )}
    </Section>
  );
}

export function DashboardPage({ ctx }) {
  const s = ctx.status;
  return (
    <>
      <PageHeader
        title="Dashboard"
        sub={s ? `${s.neighbourhood ?? 'Neighbourhood'} · node ${s.short_id ?? ''}` : null}
      />
      <div class="grid-2">
        <Section title="Power now" id="now">
          {s && s.meter && s.meter.enabled === false ? (
            <Empty>This node has no meter configured.</Empty>
          ) : (
            <LivePower />
          )}
        </Section>
        <Today currency={ctx.currency} />
      </div>
      <History slotMinutes={ctx.slotMinutes} />
      {s && (
        <Section title="Market at a glance" id="glance">
          <div class="stats">
            <Stat label="Open offers" value={s.offers ?? '–'} />
            <Stat label="Neighbours online" value={s.peers?.length ?? 0} />
            <Stat label="Clock" value={s.clock ?? '–'} kind={s.clock === 'synced' ? 'good' : 'warn'} />
          </div>
          <p>
            <a href="#/market">Go to the market</a> · <a href="#/trades">See trades</a>
          </p>
        </Section>
      )}
    </>
  );
}
