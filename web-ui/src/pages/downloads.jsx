// Downloads: CSV of readings, trades and settlements for a date range, and the signed export.
import { nodeNow } from '../api.js';
import { useState } from 'preact/hooks';
import { ErrorNote, Field, PageHeader, Section } from '../components.jsx';
import { dateInput, formatDate, localDayStart } from '../format.js';

const FILES = [
  ['readings', 'Readings', 'Usage and production per slot: grid, solar, consumption, registers.'],
  ['trades', 'Trades', 'Every trade with its neighbour, slot, energy, price and status.'],
  ['settlements', 'Settlements', 'How each trade settled: energy delivered and the amount.'],
];

function presets(now) {
  const d = new Date(now);
  const today = new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  const monthStart = new Date(d.getFullYear(), d.getMonth(), 1).getTime();
  const lastMonthStart = new Date(d.getFullYear(), d.getMonth() - 1, 1).getTime();
  return [
    ['Today', today, today],
    ['Last 7 days', today - 6 * 86400000, today],
    ['This month', monthStart, today],
    ['Last month', lastMonthStart, monthStart - 86400000],
  ];
}

export function DownloadsPage() {
  const now = nodeNow();
  const [from, setFrom] = useState(dateInput(now - 6 * 86400000));
  const [to, setTo] = useState(dateInput(now));
  const a = localDayStart(from);
  const bDay = localDayStart(to);
  // The end is exclusive: the day after the last day chosen (local midnight, DST-safe).
  const b = bDay == null ? null : new Date(new Date(bDay).setDate(new Date(bDay).getDate() + 1)).getTime();
  const valid = a != null && b != null && a < b;
  return (
    <>
      <PageHeader title="Downloads" sub="Spreadsheet-ready CSV files of this node's data, and a signed export for the utility." />
      <Section title="Date range" id="range">
        <div class="form-grid">
          <Field label="First day" id="d-from">
            <input id="d-from" type="date" value={from} max={to} onInput={(e) => setFrom(e.currentTarget.value)} />
          </Field>
          <Field label="Last day" id="d-to">
            <input id="d-to" type="date" value={to} min={from} onInput={(e) => setTo(e.currentTarget.value)} />
          </Field>
        </div>
        <div class="chips" role="group" aria-label="Quick ranges">
          {presets(now).map(([label, x, y]) => (
            <button
              type="button"
              key={label}
              class="chip-button"
              onClick={() => {
                setFrom(dateInput(x));
                setTo(dateInput(y));
              }}
            >
              {label}
            </button>
          ))}
        </div>
        {!valid && <ErrorNote error={{ message: 'Choose a first day on or before the last day.' }} />}
      </Section>
      <Section title="Files" id="files">
        <ul class="downloads">
          {FILES.map(([k, title, what]) => {
            const href = `/api/export/${k}.csv?from=${a}&to=${b}`;
            const name = `wattmesh-${k}-${from}-to-${to}.csv`;
            return (
              <li key={k}>
                <div>
                  <strong>{title}</strong>
                  <p class="muted small">{what}</p>
                </div>
                {valid ? (
                  <a class="button primary" href={href} download={name} data-testid={`download-${k}`}>
                    Download {title.toLowerCase()}
                    <span class="sr-only">
                      {' '}
                      from {formatDate(a)} to {to}
                    </span>
                  </a>
                ) : (
                  <button type="button" disabled>
                    Download {title.toLowerCase()}
                  </button>
                )}
              </li>
            );
          })}
        </ul>
      </Section>
      <Section title="For the utility" id="signed">
        <ul class="downloads">
          <li>
            <div>
              <strong>Signed export</strong>
              <p class="muted small">
                Every trade in the range with both parties' signatures and the co-signed settlements,
                sealed by this node (JSON), for the date range above. The utility can check it against your neighbours' exports.
              </p>
            </div>
            {valid ? (
              <a
                class="button primary"
                href={`/api/export/signed.json?from=${a}&to=${b - 1}`}
                download={`wattmesh-signed-${from}-to-${to}.json`}
                data-testid="download-signed"
              >
                Download signed export
                <span class="sr-only"> from {formatDate(a)} to {to}</span>
              </a>
            ) : (
              <button type="button" disabled>
                Download signed export
              </button>
            )}
          </li>
        </ul>
      </Section>
    </>
  );
}
