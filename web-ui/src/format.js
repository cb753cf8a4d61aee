// Units, parsing and display. Energy and money are integers everywhere (Wh, prices in
// thousandths of a minor unit per kWh, amounts in thousandths of a minor unit); floats are used
// only to build display strings.

/** Parses a decimal string with at most `scale` decimals into an integer scaled by 10^scale. */
export function parseScaled(text, scale) {
  const s = String(text ?? '').trim().replace(',', '.');
  const m = /^(-?)(\d*)(?:\.(\d*))?$/.exec(s);
  if (!m || (m[2] === '' && (m[3] ?? '') === '')) return null;
  const frac = m[3] ?? '';
  if (frac.length > scale) return null;
  const digits = (m[2] || '0') + frac.padEnd(scale, '0');
  const n = Number(digits);
  if (!Number.isSafeInteger(n)) return null;
  return m[1] === '-' ? -n : n;
}

/** Integer scaled by 10^scale to a decimal string, trailing zeros trimmed to `min` decimals. */
export function scaledToString(n, scale, min = 0) {
  if (n == null || !Number.isFinite(n)) return '';
  const neg = n < 0;
  const abs = String(Math.abs(Math.trunc(n))).padStart(scale + 1, '0');
  const int = abs.slice(0, abs.length - scale);
  let frac = abs.slice(abs.length - scale);
  while (frac.length > min && frac.endsWith('0')) frac = frac.slice(0, -1);
  return (neg ? '-' : '') + int + (frac ? '.' + frac : '');
}

/** "9.5" (¢/kWh) -> 9500; null when not a price with at most three decimals. */
export const parsePrice = (text) => parseScaled(text, 3);
/** 9500 -> "9.5" */
export const priceInput = (price) => scaledToString(price, 3);
/** "1.5" (kWh) -> 1500 Wh */
export const parseKwh = (text) => parseScaled(text, 3);
export const kwhInput = (wh) => scaledToString(wh, 3);

const MINOR = { EUR: 'c', USD: '¢', CAD: '¢', AUD: 'c', NZD: 'c', GBP: 'p', CHF: 'Rp', ZAR: 'c' };
export const minorUnit = (currency) => MINOR[currency] ?? '¢';

/** A price (thousandths of a minor unit per kWh) for display: "9.5 c/kWh". */
export function formatPrice(price, currency) {
  if (price == null) return '–';
  return `${scaledToString(price, 3)} ${minorUnit(currency)}/kWh`;
}

/** Rounds milli-minor to whole minor units, half away from zero (integers only). */
export function roundToMinor(milli) {
  const sign = milli < 0 ? -1 : 1;
  return sign * Math.floor((Math.abs(milli) + 500) / 1000);
}

const moneyFormats = new Map();
/** An amount in milli-minor units for display, in the currency's major unit: "€1.23". */
export function formatMoney(milli, currency, { signed = false } = {}) {
  if (milli == null) return '–';
  const minor = roundToMinor(milli);
  let f = moneyFormats.get(currency);
  if (!f) {
    try {
      f = new Intl.NumberFormat(undefined, { style: 'currency', currency: currency || 'EUR' });
    } catch {
      f = { format: (v) => `${v.toFixed(2)} ${currency}` };
    }
    moneyFormats.set(currency, f);
  }
  const text = f.format(minor / 100); // display only
  return signed && minor > 0 ? '+' + text : text;
}

/** The exact amount, for a title attribute: "123.456 c". */
export const exactMoney = (milli, currency) =>
  milli == null ? '' : `${scaledToString(milli, 3)} ${minorUnit(currency)}`;

export function formatEnergy(wh) {
  if (wh == null || !Number.isFinite(wh)) return '–';
  const a = Math.abs(wh);
  if (a < 1000) return `${Math.round(wh)} Wh`;
  if (a < 1e6) return `${trimFixed(wh / 1000, a < 1e4 ? 2 : 1)} kWh`;
  return `${trimFixed(wh / 1e6, 2)} MWh`;
}

export function formatPower(w) {
  if (w == null || !Number.isFinite(w)) return '–';
  const a = Math.abs(w);
  if (a < 1000) return `${Math.round(w)} W`;
  return `${trimFixed(w / 1000, 2)} kW`;
}

function trimFixed(v, d) {
  return v.toFixed(d).replace(/\.?0+$/, '');
}

export const formatPercent = (x) => (x == null ? '–' : `${Math.round(x * 100)} %`);

const dtf = new Intl.DateTimeFormat(undefined, {
  weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit',
});
const tf = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const tfs = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const df = new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric', month: 'short' });
const dfy = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' });

const sameDay = (a, b) => {
  const x = new Date(a);
  const y = new Date(b);
  return x.getFullYear() === y.getFullYear() && x.getMonth() === y.getMonth() && x.getDate() === y.getDate();
};

/** A UTC ms time in the browser's local time. */
export function formatTime(ms, now = Date.now()) {
  if (ms == null) return '–';
  return sameDay(ms, now) ? `today ${tf.format(ms)}` : dtf.format(ms);
}
export const formatClock = (ms) => (ms == null ? '–' : tfs.format(ms));
export const formatDate = (ms) => (ms == null ? '–' : dfy.format(ms));

/** A delivery slot: "today 14:15–14:30" or "Tue 3 Jun 14:15–14:30". */
export function formatSlot(slotMs, slotMinutes, now = Date.now()) {
  if (slotMs == null) return '–';
  const end = slotMs + (slotMinutes || 15) * 60000;
  const day = sameDay(slotMs, now) ? 'today' : sameDay(slotMs, now + 86400000) ? 'tomorrow' : df.format(slotMs);
  return `${day} ${tf.format(slotMs)}–${tf.format(end)}`;
}

/** "in 4 min", "3 h ago" */
export function formatRelative(ms, now = Date.now()) {
  if (ms == null) return '–';
  const d = ms - now;
  const a = Math.abs(d);
  let t;
  if (a < 60000) t = `${Math.round(a / 1000)} s`;
  else if (a < 3600000) t = `${Math.round(a / 60000)} min`;
  else if (a < 86400000 * 2) t = `${Math.round(a / 3600000)} h`;
  else t = `${Math.round(a / 86400000)} days`;
  return d >= 0 ? `in ${t}` : `${t} ago`;
}

export function formatDuration(secs) {
  if (secs == null) return '–';
  if (secs < 60) return `${secs} s`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min`;
  if (secs < 86400) return `${Math.floor(secs / 3600)} h ${Math.floor((secs % 3600) / 60)} min`;
  return `${Math.floor(secs / 86400)} d ${Math.floor((secs % 86400) / 3600)} h`;
}

/** A month key "2026-06" as "June 2026". */
export function formatMonth(key) {
  const m = /^(\d{4})-(\d{2})$/.exec(key ?? '');
  if (!m) return key ?? '';
  return new Intl.DateTimeFormat(undefined, { month: 'long', year: 'numeric' }).format(
    new Date(Number(m[1]), Number(m[2]) - 1, 1),
  );
}

/** Local midnight of a yyyy-mm-dd date input value, in UTC ms. */
export function localDayStart(value) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value ?? '');
  if (!m) return null;
  return new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3])).getTime();
}

/** yyyy-mm-dd of a time in local time (for date inputs). */
export function dateInput(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

export const shortHex = (hex, n = 8) => (hex ? String(hex).slice(0, n) : '');

/** A node id as the node shows it short ("4e78-3800"); ids already short are kept. */
export function shortId(id) {
  const s = String(id ?? '');
  return /^[0-9a-f]{16,}$/i.test(s) ? `${s.slice(0, 4)}-${s.slice(4, 8)}` : s;
}

/** "1.23" (in the currency's major unit) -> milli-minor units (123000); null when not an amount. */
export const parseMoney = (text) => parseScaled(text, 5);
/** Milli-minor units as a major-unit input value: 123000 -> "1.23". */
export const moneyInput = (milli) => scaledToString(milli, 5, 2);

/** A UTC offset in minutes as "UTC+01:00" / "UTC−05:30" / "UTC". */
export function formatOffset(min) {
  const m = Number(min) || 0;
  if (m === 0) return 'UTC';
  const a = Math.abs(m);
  const p = (n) => String(n).padStart(2, '0');
  return `UTC${m < 0 ? '−' : '+'}${p(Math.floor(a / 60))}:${p(a % 60)}`;
}

/** A minute of the day as "07:30" (1440 is "24:00"). */
export function formatMinute(min) {
  const p = (n) => String(n).padStart(2, '0');
  return `${p(Math.floor(min / 60))}:${p(min % 60)}`;
}

/** "07:30" -> 450; "24:00" -> 1440; null when not a time of day. */
export function parseMinute(text) {
  const m = /^(\d{1,2}):(\d{2})$/.exec(String(text ?? '').trim());
  if (!m) return null;
  const v = Number(m[1]) * 60 + Number(m[2]);
  return Number(m[2]) < 60 && v <= 1440 ? v : null;
}

// Standing agreements keep their days and hours in the owner's UTC offset (the trader
// settings), which may differ from this browser's time zone: these compute in that offset.

/** Midnight of a yyyy-mm-dd date at a UTC offset (minutes), in UTC ms. */
export function offsetDayStart(value, offsetMin) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value ?? '');
  if (!m) return null;
  return Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) - (Number(offsetMin) || 0) * 60000;
}

/** yyyy-mm-dd of a time at a UTC offset (for date inputs). */
export function offsetDateInput(ms, offsetMin) {
  return new Date(ms + (Number(offsetMin) || 0) * 60000).toISOString().slice(0, 10);
}

const dfyUtc = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric', timeZone: 'UTC' });
/** The date of a time at a UTC offset: "3 Jun 2026". */
export const formatOffsetDate = (ms, offsetMin) =>
  ms == null ? '–' : dfyUtc.format(ms + (Number(offsetMin) || 0) * 60000);
