// Pure logic of the pages (no DOM, no network), unit-tested in tests/unit/.
import { formatMinute } from './format.js';

/** The slots still open for trading: after gate closure is too late. */
export function openSlots(charter, now, count = 12) {
  const slotMs = (charter?.slot_minutes ?? 15) * 60000;
  const gate = (charter?.gate_closure_secs ?? 0) * 1000;
  const out = [];
  let t = Math.ceil(now / slotMs) * slotMs;
  while (out.length < count) {
    if (t - gate > now) out.push(t);
    t += slotMs;
  }
  return out;
}

/** Money for `wh` at `price` (milli-minor per kWh), in milli-minor, rounded (display only). */
export const cost = (wh, price) => Math.round((wh * price) / 1000);

/** What a person calls the trade's status now. */
export function tradeStatus(t, slotMinutes, now = Date.now()) {
  const end = t.slot_ms + (slotMinutes ?? 15) * 60000;
  switch (t.settlement) {
    case 'settled':
      return t.delivered_wh != null && t.delivered_wh < t.energy_wh
        ? { key: 'short', label: 'short-delivered', kind: 'warn' }
        : { key: 'settled', label: 'settled', kind: 'good' };
    case 'unilateral':
      return { key: 'settled', label: 'settled (one-sided)', kind: 'warn' };
    case 'disputed':
      return { key: 'disputed', label: 'disputed', kind: 'bad' };
    case 'proposed':
      return { key: 'settling', label: 'settling', kind: '' };
    default:
      break;
  }
  if (t.state && t.state !== 'agreed') return { key: t.state, label: t.state, kind: '' };
  if (now < t.slot_ms) return { key: 'agreed', label: 'agreed', kind: '' };
  if (now < end) return { key: 'delivering', label: 'delivering', kind: 'live' };
  return { key: 'awaiting', label: 'awaiting settlement', kind: '' };
}

/** Live power from the event stream (x: seconds). */
export function livePowerData(history) {
  const x = [];
  const g = [];
  const s = [];
  const l = [];
  for (const p of history) {
    x.push(p.at_ms / 1000);
    g.push(p.grid_w);
    s.push(p.solar_w);
    l.push(p.load_w);
  }
  return [x, g, s, l];
}

/** Readings -> power chart data (x: seconds). */
export function powerData(rows, battery) {
  const data = [[], [], [], []];
  if (battery) data.push([]);
  for (const r of rows) {
    data[0].push(r.t / 1000);
    data[1].push(r.grid_w ?? null);
    data[2].push(r.solar_w ?? null);
    data[3].push(r.load_w ?? null);
    if (battery) data[4].push(r.battery_w ?? null);
  }
  return data;
}

/**
 * Readings -> energy per step. Registers are at each step's end, so a step's import is its
 * register minus the previous step's; the first row only serves as that previous value.
 * Produced and consumed energy come from mean power times the step's length (display only).
 */
export function energyData(rows, stepMs) {
  const x = [];
  const imp = [];
  const exp = [];
  const sol = [];
  const load = [];
  for (let i = 1; i < rows.length; i++) {
    const a = rows[i - 1];
    const b = rows[i];
    const di = b.import_wh != null && a.import_wh != null ? b.import_wh - a.import_wh : null;
    const de = b.export_wh != null && a.export_wh != null ? b.export_wh - a.export_wh : null;
    const hours = stepMs / 3600000;
    x.push(b.t / 1000);
    imp.push(di != null && di >= 0 ? di : null);
    exp.push(de != null && de >= 0 ? -de : null);
    sol.push(b.solar_w != null ? b.solar_w * hours : null);
    load.push(b.load_w != null ? b.load_w * hours : null);
  }
  return [x, imp, exp, sol, load];
}

export const hasBattery = (rows) => rows.some((r) => r.battery_w != null && r.battery_w !== 0);

const DAYS = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'];
export const WEEKDAY_NAMES = ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday'];

/** An agreement's weekday mask (bit 0 Monday … bit 6 Sunday) in words. */
export function weekdaysText(mask) {
  const m = Number(mask) & 127;
  if (m === 127) return 'every day';
  if (m === 31) return 'Monday to Friday';
  if (m === 96) return 'weekends';
  if (m === 0) return 'no day';
  const on = DAYS.filter((_, i) => m & (1 << i));
  // Runs of three or more days read as a range: "Mon–Thu, Sat".
  const out = [];
  let i = 0;
  while (i < 7) {
    if (!(m & (1 << i))) {
      i++;
      continue;
    }
    let j = i;
    while (j + 1 < 7 && m & (1 << (j + 1))) j++;
    if (j - i >= 2) out.push(`${DAYS[i]}–${DAYS[j]}`);
    else for (let k = i; k <= j; k++) out.push(DAYS[k]);
    i = j + 1;
  }
  return on.length ? out.join(', ') : 'no day';
}

/** The covered hours: "all day" or "10:00–14:00". */
export function hoursText(fromMin, toMin) {
  if (fromMin === 0 && toMin === 1440) return 'all day';
  return `${formatMinute(fromMin)}–${formatMinute(toMin)}`;
}

/** Where a two-party document stands, for people. */
export function docState(d) {
  switch (d.state) {
    case 'signed':
      return d.kind === 'payment'
        ? { label: 'confirmed', kind: 'good' }
        : { label: 'signed by both', kind: 'good' };
    case 'proposed':
      return { label: d.kind === 'payment' ? 'waiting for them to confirm' : 'waiting for them', kind: '' };
    case 'offered':
      return { label: 'waiting for you', kind: 'warn' };
    case 'declined':
      return { label: 'declined', kind: 'bad' };
    case 'withdrawn':
      return { label: d.outgoing ? 'withdrawn by you' : 'withdrawn by them', kind: '' };
    default:
      return { label: d.state ?? '–', kind: '' };
  }
}

/** The latest resolution amount in a dispute's notes, ours or theirs (null if none). */
export function lastResolve(notes, ours) {
  for (let i = (notes ?? []).length - 1; i >= 0; i--) {
    const n = notes[i];
    if (!!n.ours === !!ours && n.stage === 'resolve' && n.amount != null) return n.amount;
  }
  return null;
}

/** The stage a plain note of ours takes: open when nobody wrote, otherwise an answer. */
export const noteStage = (notes) => ((notes ?? []).length === 0 ? 'open' : 'answer');

/** A trade's full value, milli-minor, rounded down as the node does (the most a resolution may name). */
export const tradeValue = (wh, price) => Math.floor((wh * price) / 1000);

/** UTF-8 length of a text (the node limits notes in bytes). */
export const byteLength = (text) => new TextEncoder().encode(String(text ?? '')).length;

/** Whether an agreement covers the slot starting at `slotMs` (as the node decides it). */
export function agreementCovers(a, slotMs) {
  if (slotMs < a.start_ms || slotMs >= a.end_ms) return false;
  const local = Math.floor(slotMs / 60000) + (a.utc_offset_min ?? 0);
  const day = Math.floor(local / 1440);
  const minute = local - day * 1440;
  const weekday = (((day + 3) % 7) + 7) % 7; // 1970-01-01 was a Thursday; Monday is 0
  return (a.weekdays & (1 << weekday)) !== 0 && minute >= a.from_min && minute < a.to_min;
}

/** How many slots an agreement covers. */
export function agreementSlotCount(a, slotMs) {
  if (!(slotMs > 0) || !(a.end_ms > a.start_ms)) return 0;
  let n = 0;
  for (let s = Math.ceil(a.start_ms / slotMs) * slotMs; s < a.end_ms; s += slotMs) if (agreementCovers(a, s)) n++;
  return n;
}
