// Unit tests of the UI's pure code: units, parsing, money display, slots, trade status, charts data.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseScaled, scaledToString, parsePrice, parseKwh, formatPrice, roundToMinor, formatMoney, formatEnergy,
  formatPower, exactMoney, localDayStart, dateInput,
} from '../../src/format.js';
import { openSlots, tradeStatus, energyData, cost } from '../../src/logic.js';

test('decimal strings parse to scaled integers without floats', () => {
  assert.equal(parsePrice('9.5'), 9500);
  assert.equal(parsePrice('9,5'), 9500);
  assert.equal(parsePrice('0.001'), 1);
  assert.equal(parsePrice('12'), 12000);
  assert.equal(parsePrice('.5'), 500);
  assert.equal(parsePrice('0.1'), 100); // 0.1 is not representable in binary; the parse is exact
  assert.equal(parsePrice('9.0001'), null, 'more decimals than the unit has');
  assert.equal(parsePrice(''), null);
  assert.equal(parsePrice('abc'), null);
  assert.equal(parsePrice('1e3'), null);
  assert.equal(parsePrice('.'), null);
  assert.equal(parseKwh('1.5'), 1500);
  assert.equal(parseScaled('-2.25', 3), -2250);
  assert.equal(parseScaled('99999999999999999', 3), null, 'beyond safe integers');
});

test('scaled integers print exactly', () => {
  assert.equal(scaledToString(9500, 3), '9.5');
  assert.equal(scaledToString(1, 3), '0.001');
  assert.equal(scaledToString(-1, 3), '-0.001');
  assert.equal(scaledToString(12000, 3), '12');
  assert.equal(scaledToString(12000, 3, 2), '12.00');
  assert.equal(formatPrice(9500, 'USD'), '9.5 ¢/kWh');
  assert.equal(formatPrice(9500, 'EUR'), '9.5 c/kWh');
  assert.equal(exactMoney(123456, 'USD'), '123.456 ¢');
});

test('money rounds to whole minor units half away from zero', () => {
  assert.equal(roundToMinor(1499), 1);
  assert.equal(roundToMinor(1500), 2);
  assert.equal(roundToMinor(-1500), -2);
  assert.equal(roundToMinor(-1499), -1);
  assert.equal(roundToMinor(0), 0);
  assert.match(formatMoney(143250, 'USD'), /1\.43/);
  assert.match(formatMoney(-40850, 'USD'), /0\.41/);
  assert.match(formatMoney(500, 'USD', { signed: true }), /^\+/);
  assert.equal(cost(500, 10000), 5000, '0.5 kWh at 10 ¢/kWh is 5 ¢');
});

test('energy and power pick a readable unit', () => {
  assert.equal(formatEnergy(850), '850 Wh');
  assert.equal(formatEnergy(1250), '1.25 kWh');
  assert.equal(formatEnergy(1000), '1 kWh');
  assert.equal(formatEnergy(2500000), '2.5 MWh');
  assert.equal(formatPower(-1800), '-1.8 kW');
  assert.equal(formatPower(999), '999 W');
});

test('dates: local midnight and back', () => {
  const ms = localDayStart('2026-06-15');
  const d = new Date(ms);
  assert.equal(d.getHours(), 0);
  assert.equal(dateInput(ms), '2026-06-15');
  assert.equal(localDayStart('15/06/2026'), null);
});

test('open slots start after gate closure', () => {
  const charter = { slot_minutes: 15, gate_closure_secs: 300 };
  const slot = 15 * 60000;
  const base = 1_780_000_000_000 - (1_780_000_000_000 % slot);
  // 2 minutes before a slot boundary: that slot is closed (gate 5 min), the next one is open.
  assert.equal(openSlots(charter, base + slot - 120000, 3)[0], base + 2 * slot);
  // 10 minutes before: it is still open.
  assert.equal(openSlots(charter, base + slot - 600000, 3)[0], base + slot);
  assert.equal(openSlots(charter, base, 12).length, 12);
});

test('trade status in words', () => {
  const t = { slot_ms: 1000 * 60000, energy_wh: 500, state: 'agreed', settlement: null, delivered_wh: null };
  assert.equal(tradeStatus(t, 15, t.slot_ms - 1).key, 'agreed');
  assert.equal(tradeStatus(t, 15, t.slot_ms + 60000).key, 'delivering');
  assert.equal(tradeStatus(t, 15, t.slot_ms + 16 * 60000).key, 'awaiting');
  assert.equal(tradeStatus({ ...t, settlement: 'settled', delivered_wh: 500 }, 15).key, 'settled');
  assert.equal(tradeStatus({ ...t, settlement: 'settled', delivered_wh: 300 }, 15).key, 'short');
  assert.equal(tradeStatus({ ...t, settlement: 'disputed' }, 15).key, 'disputed');
  assert.equal(tradeStatus({ ...t, settlement: 'proposed' }, 15).key, 'settling');
});

test('energy per step from registers at each step end', () => {
  const rows = [
    { t: 0, import_wh: 1000, export_wh: 50, solar_w: 0, load_w: 400 },
    { t: 900000, import_wh: 1100, export_wh: 50, solar_w: 400, load_w: 800 },
    { t: 1800000, import_wh: 1100, export_wh: 170, solar_w: 1200, load_w: 720 },
    { t: 2700000, import_wh: 5, export_wh: 170, solar_w: null, load_w: 100 }, // meter replaced
  ];
  const [x, imp, exp, sol, load] = energyData(rows, 900000);
  assert.deepEqual(x, [900, 1800, 2700]);
  assert.deepEqual(imp, [100, 0, null]);
  assert.deepEqual(exp, [-0, -120, -0]);
  assert.deepEqual(sol, [100, 300, null]);
  assert.deepEqual(load, [200, 180, 25]);
});

import { parseJson, stringifyJson, rawInt } from '../../src/json.js';

test('u64 nonces survive the round trip exactly', () => {
  const text = '[{"maker":"ab","nonce":18446744073709551615,"price":9500,"note":"a \\"12345678901234567890\\" b"},{"nonce":42,"x":[12345678901234567,1.5]}]';
  const v = parseJson(text);
  assert.equal(v[0].nonce, '18446744073709551615');
  assert.equal(v[0].price, 9500);
  assert.equal(v[0].note, 'a "12345678901234567890" b');
  assert.equal(v[1].nonce, 42);
  assert.deepEqual(v[1].x, ['12345678901234567', 1.5]);
  assert.equal(parseJson('{"a":1234567890123456}').a, 1234567890123456, 'safe 16-digit integers stay numbers');
  assert.equal(
    stringifyJson({ maker: 'ab', nonce: rawInt(v[0].nonce), energy_wh: 500 }),
    '{"maker":"ab","nonce":18446744073709551615,"energy_wh":500}',
  );
  assert.equal(stringifyJson({ nonce: rawInt(42) }), '{"nonce":42}');
});

import { weekdaysText, hoursText, agreementCovers, agreementSlotCount, lastResolve, noteStage, tradeValue, byteLength, docState } from '../../src/logic.js';
import { parseMoney, moneyInput, formatOffset, offsetDayStart, offsetDateInput, parseMinute } from '../../src/format.js';

test('weekday masks read as words', () => {
  assert.equal(weekdaysText(127), 'every day');
  assert.equal(weekdaysText(31), 'Monday to Friday');
  assert.equal(weekdaysText(96), 'weekends');
  assert.equal(weekdaysText(0b0010101), 'Mon, Wed, Fri');
  assert.equal(weekdaysText(0b0101111), 'Mon–Thu, Sat');
  assert.equal(hoursText(0, 1440), 'all day');
  assert.equal(hoursText(600, 960), '10:00–16:00');
});

test('an agreement covers the slots the node derives (offset, weekdays, hours)', () => {
  // 2026-06-01 is a Monday. At UTC+02:00, 10:00 local is 08:00 UTC.
  const mon = Date.UTC(2026, 5, 1);
  const a = { start_ms: mon - 120 * 60000, end_ms: mon + 7 * 86400000, weekdays: 1, from_min: 600, to_min: 720, utc_offset_min: 120 };
  assert.equal(agreementCovers(a, mon + 8 * 3600000), true, 'Monday 10:00 local');
  assert.equal(agreementCovers(a, mon + 10 * 3600000), false, '12:00 local is the end, exclusive');
  assert.equal(agreementCovers(a, mon + 86400000 + 8 * 3600000), false, 'Tuesday');
  assert.equal(agreementSlotCount(a, 15 * 60000), 8, 'two hours of 15-minute slots on one Monday');
});

test('money, offsets and times of day parse exactly', () => {
  assert.equal(parseMoney('1.23'), 123000);
  assert.equal(parseMoney('0.00001'), 1);
  assert.equal(parseMoney('1.000001'), null);
  assert.equal(moneyInput(123000), '1.23');
  assert.equal(moneyInput(123456), '1.23456');
  assert.equal(formatOffset(60), 'UTC+01:00');
  assert.equal(formatOffset(-330), 'UTC−05:30');
  assert.equal(formatOffset(0), 'UTC');
  assert.equal(offsetDayStart('2026-06-01', 120), Date.UTC(2026, 5, 1) - 7200000);
  assert.equal(offsetDateInput(Date.UTC(2026, 5, 1, 23, 30), 60), '2026-06-02');
  assert.equal(parseMinute('24:00'), 1440);
  assert.equal(parseMinute('7:60'), null);
});

test('dispute notes: the latest resolution of each side, the next stage, limits', () => {
  const notes = [
    { ours: true, stage: 'open', text: 'short' },
    { ours: false, stage: 'answer', text: 'no' },
    { ours: false, stage: 'resolve', amount: 100 },
    { ours: true, stage: 'resolve', amount: 200 },
    { ours: false, stage: 'resolve', amount: 150 },
  ];
  assert.equal(lastResolve(notes, true), 200);
  assert.equal(lastResolve(notes, false), 150);
  assert.equal(lastResolve([], false), null);
  assert.equal(noteStage([]), 'open');
  assert.equal(noteStage(notes), 'answer');
  assert.equal(tradeValue(333, 9999), 3329, 'rounded down like units::cost');
  assert.equal(byteLength('€'), 3);
  assert.equal(docState({ kind: 'payment', state: 'signed' }).label, 'confirmed');
  assert.equal(docState({ kind: 'agreement', state: 'offered' }).label, 'waiting for you');
});
