// Shared building blocks: headings, notices, fields, dialogs, charts.
import { useEffect, useRef, useState, useCallback } from 'preact/hooks';
import uPlot from 'uplot';
import { useTheme, cssVar } from './theme.js';
import { nodeNow } from './api.js';

export function PageHeader({ title, sub, children }) {
  return (
    <header class="page-head">
      <div>
        <h1 id="page-title" tabIndex={-1}>{title}</h1>
        {sub && <p class="sub">{sub}</p>}
      </div>
      {children && <div class="page-actions">{children}</div>}
    </header>
  );
}

export function Section({ title, id, children, actions, class: cls = '' }) {
  const hid = id ? `${id}-h` : undefined;
  return (
    <section class={`card ${cls}`} aria-labelledby={hid} id={id}>
      {(title || actions) && (
        <div class="card-head">
          {title && <h2 id={hid}>{title}</h2>}
          {actions}
        </div>
      )}
      {children}
    </section>
  );
}

export function Notice({ kind = 'info', children }) {
  return (
    <div class={`notice ${kind}`} role={kind === 'error' ? 'alert' : 'status'}>
      {children}
    </div>
  );
}

export function ErrorNote({ error }) {
  if (!error) return null;
  return <Notice kind="error">{error.message || String(error)}</Notice>;
}

export function Loading({ what = 'Loading' }) {
  return (
    <p class="loading" role="status">
      <span class="spinner" aria-hidden="true" /> {what}…
    </p>
  );
}

export function Empty({ children }) {
  return <p class="empty">{children}</p>;
}

export function Field({ label, id, hint, children, class: cls = '' }) {
  return (
    <div class={`field ${cls}`}>
      <label for={id}>{label}</label>
      {children}
      {hint && (
        <small class="hint" id={`${id}-hint`}>
          {hint}
        </small>
      )}
    </div>
  );
}

export function Check({ id, label, checked, onChange, disabled, hint }) {
  return (
    <div class="check">
      <input
        type="checkbox"
        id={id}
        checked={checked}
        disabled={disabled}
        onChange={(e) => onChange(e.currentTarget.checked)}
        aria-describedby={hint ? `${id}-hint` : undefined}
      />
      <label for={id}>{label}</label>
      {hint && (
        <small class="hint" id={`${id}-hint`}>
          {hint}
        </small>
      )}
    </div>
  );
}

export function Badge({ kind = '', children, title }) {
  return (
    <span class={`badge ${kind}`} title={title}>
      {children}
    </span>
  );
}

export function Stat({ label, value, sub, kind = '', title, testid }) {
  return (
    <div class={`stat ${kind}`} title={title} data-testid={testid}>
      <span class="stat-label">{label}</span>
      <span class="stat-value">{value}</span>
      {sub && <span class="stat-sub">{sub}</span>}
    </div>
  );
}

/** A modal dialog (native <dialog>: focus is kept inside, Escape closes it). */
export function Dialog({ open, title, onClose, children }) {
  const ref = useRef();
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  return (
    <dialog ref={ref} aria-labelledby="dialog-title" onClose={onClose} onCancel={onClose}>
      {open && (
        <div class="dialog-body">
          <div class="card-head">
            <h2 id="dialog-title">{title}</h2>
            <button type="button" class="icon" aria-label="Close" onClick={onClose}>
              ✕
            </button>
          </div>
          {children}
        </div>
      )}
    </dialog>
  );
}

/** Runs an async action with busy and error state. */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = useCallback(async (fn) => {
    setBusy(true);
    setError(null);
    try {
      return await fn();
    } catch (e) {
      setError(e);
      return undefined;
    } finally {
      setBusy(false);
    }
  }, []);
  return { run, busy, error, setError };
}

/** The node's current time, updated every `every` ms. */
export function useNow(every = 1000) {
  const [now, setNow] = useState(nodeNow());
  useEffect(() => {
    const id = setInterval(() => setNow(nodeNow()), every);
    return () => clearInterval(id);
  }, [every]);
  return now;
}

/** Colours of the chart series, from the stylesheet so they follow the theme. */
export function chartColors() {
  return {
    grid: cssVar('--c-grid'),
    import: cssVar('--c-import'),
    export: cssVar('--c-export'),
    solar: cssVar('--c-solar'),
    load: cssVar('--c-load'),
    battery: cssVar('--c-battery'),
    axis: cssVar('--muted'),
    rule: cssVar('--rule'),
  };
}

/**
 * A uPlot chart. `build(colors)` returns uPlot options without width/height; `data` is
 * uPlot's aligned data (x in seconds). The chart is re-created when the theme or `key` changes.
 */
export function Chart({ label, build, data, height = 240, chartKey = '' }) {
  const ref = useRef();
  const plot = useRef(null);
  const theme = useTheme();
  useEffect(() => {
    const el = ref.current;
    if (!el) return undefined;
    const c = chartColors();
    const opts = build(c);
    const axis = { stroke: c.axis, grid: { stroke: c.rule, width: 1 }, ticks: { stroke: c.rule, width: 1 } };
    opts.axes = (opts.axes ?? [{}, {}]).map((a) => ({ ...axis, ...a }));
    const width = Math.max(200, el.clientWidth);
    const u = new uPlot({ ...opts, width, height }, data, el);
    plot.current = u;
    let raf = 0;
    const ro = new ResizeObserver(() => {
      cancelAnimationFrame(raf);
      raf = requestAnimationFrame(() => u.setSize({ width: Math.max(200, el.clientWidth), height }));
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      cancelAnimationFrame(raf);
      u.destroy();
      plot.current = null;
    };
  }, [theme, chartKey, height]);
  useEffect(() => {
    if (plot.current && data) plot.current.setData(data);
  }, [data]);
  return <figure class="chart" ref={ref} role="img" aria-label={label} />;
}

export { uPlot };
