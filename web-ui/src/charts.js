// uPlot options for the power and energy charts, and readings -> chart data.
import uPlot from 'uplot';
import { formatClock, formatEnergy, formatPower } from './format.js';

const pw = (u, v) => (v == null ? '–' : formatPower(v));
const en = (u, v) => (v == null ? '–' : formatEnergy(v));
const axisPower = (u, vals) => vals.map((v) => formatPower(v));
const axisEnergy = (u, vals) => vals.map((v) => formatEnergy(v));

/** Mean power lines: grid (positive = import), solar, consumption, and battery when present. */
export function powerChart({ battery = false, live = false } = {}) {
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
    axes: [live ? { values: (u, vals) => vals.map((v) => formatClock(v * 1000)), space: 90 } : {}, { values: axisPower, size: 64 }],
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
