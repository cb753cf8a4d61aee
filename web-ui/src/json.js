// JSON with integers beyond 2^53 kept exact. Offer nonces are random u64s: JSON.parse would round
// them, and a rounded nonce names another offer (or none). Unsafe integers are read as strings
// and written back as bare integers. (No regex lookbehind, so older Safari can parse this file.)

// A string, or an integer value of 16+ digits between JSON punctuation.
const BIG = /("(?:[^"\\]|\\.)*")|([:,[]\s*)(-?\d{16,})(?=\s*[,}\]])/g;

export function parseJson(text) {
  return JSON.parse(
    text.replace(BIG, (m, str, pre, num) =>
      str !== undefined ? str : Number.isSafeInteger(Number(num)) ? m : `${pre}"${num}"`,
    ),
  );
}

const MARK = '\u0000int:';
/** Marks an integer (a number or a string of digits) to be written as a bare JSON integer. */
export const rawInt = (v) => ({ [MARK]: String(v) });

export function stringifyJson(value) {
  const s = JSON.stringify(value, (k, v) =>
    v && typeof v === 'object' && MARK in v && /^-?\d+$/.test(v[MARK]) ? MARK + v[MARK] : v,
  );
  return s.replace(/"\\u0000int:(-?\d+)"/g, '$1');
}
