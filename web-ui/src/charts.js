// uPlot options for the power and energy charts, and readings -> chart data.
import uPlot from 'uplot';
import { formatEnergy, formatPower } from './format.js';

const pw = (u, v) => (v == null ? '–' : formatPower(v));
const en = (u, v) => (v == null ? '–' : formatEnergy(v));
const axisPower = (u, vals) => vals.map((v) => formatPower(v));
const axisEnergy = (u, vals) => vals.map((v) => formatEnergy(v));

/** Mean power lines: grid (positive = import), solar, consumption, and battery when present. */
export function powerChart({ battery = false } = {}) {
  return (c) => ({
    cursor: { drag: { x: false, y: false } },
    legend: { live: true },
    scales: { x: { time: true } },
    series: [
      {},
      { label: 'Grid', stroke: c.grid, width: 2, value: pw },
      { label: 'Solar', stroke: c.solar, fill: c.solar + '33', width: 2, value: pw },
      { label: 'Consumption', stroke: c.load, width: 2, value: pw },
      ...(battery ? [{ label: 'Battery', stroke: c.battery, width: 1.5, dash: [4, 4], value: pw }] : []),
    ],
    axes: [{}, { values: axisPower, size: 64 }],
  });
}

/** Energy per step: import (up) and export (down) bars, production and consumption lines. */
export function energyChart() {
  return (c) => ({
    cursor: { drag: { x: false, y: false } },
    legend: { live: true },
    scales: { x: { time: true } },
    series: [
      {},
      {
        label: 'Imported',
        stroke: c.import,
        fill: c.import + 'bb',
        paths: uPlot.paths.bars({ size: [0.7, 40] }),
        fillTo: 0,
        points: { show: false },
        value: en,
      },
      {
        label: 'Exported',
        stroke: c.export,
        fill: c.export + 'bb',
        paths: uPlot.paths.bars({ size: [0.7, 40] }),
        fillTo: 0,
        points: { show: false },
        value: (u, v) => (v == null ? '–' : formatEnergy(-v)),
      },
      { label: 'Produced', stroke: c.solar, width: 2, value: en },
      { label: 'Consumed', stroke: c.load, width: 2, value: en },
    ],
    axes: [{}, { values: axisEnergy, size: 72 }],
  });
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
