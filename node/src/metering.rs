//! The node's meter loop: polls the configured [`MeterSource`], keeps per-minute readings, and
//! at the end of every delivery slot hands the node the grid registers at the slot's start and
//! end and how much of the slot was measured, from which the node signs its attestation.
//!
//! Time when the meter was not read (the node was down, the meter failed) is counted as
//! missing coverage, never interpolated. Registers come from the source and only grow.

use crate::clock::Clock;
use crate::meter::registers::{MemoryRegisters, RegisterStore};
use crate::meter::sim::{SimConfig, SimMeter, home_id};
use crate::meter::{ChannelKind, ChannelStatus, MeterSource, Registers, Sample};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;

/// Which meter the node reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// No meter: the node trades by hand but attests nothing.
    None,
    /// The simulated household (load, PV, battery) of `[meter.sim]`.
    Simulated,
    /// An Eastron SDM120/SDM630-class energy meter over Modbus, as `[meter.modbus]` says.
    Modbus,
    /// Current clamps and a voltage reference on a Raspberry Pi's SPI ADC, as `[meter.ct]`
    /// says (needs a binary built with the `pi` feature).
    Ct,
    /// A DSMR 4/5 smart meter's P1 port, on a serial device or a TCP socket, as `[meter.p1]`
    /// says.
    P1,
}

/// The `[meter]` section of the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeterConfig {
    /// Which meter.
    pub source: SourceKind,
    /// Seconds between polls.
    pub poll_secs: u32,
    /// The simulated home's name (its behaviour is a function of the seed and this name);
    /// empty means the node id.
    pub home: String,
    /// Days of per-minute readings to keep.
    pub retention_days: u32,
    /// Privacy mode: each slot's attestation goes only to the node's trade counterparties in
    /// the slot, and everyone else gets a signed commitment to it (its place in the chain and
    /// its hash), so the chain stays checkable. Off by default: attestations are gossiped to
    /// every member.
    pub privacy: bool,
    /// The simulated household.
    pub sim: SimConfig,
    /// The Modbus meter.
    pub modbus: crate::meter::modbus::ModbusConfig,
    /// The current clamps.
    pub ct: crate::meter::ct::CtConfig,
    /// The P1 port.
    pub p1: crate::meter::p1::P1Config,
}

impl Default for MeterConfig {
    fn default() -> Self {
        MeterConfig {
            source: SourceKind::Simulated,
            poll_secs: 10,
            home: String::new(),
            retention_days: 400,
            privacy: false,
            sim: SimConfig::default(),
            modbus: crate::meter::modbus::ModbusConfig::default(),
            ct: crate::meter::ct::CtConfig::default(),
            p1: crate::meter::p1::P1Config::default(),
        }
    }
}

/// One minute of readings, as stored (`readings_v1`) and shown.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Minute {
    /// The minute's start, UTC ms.
    pub minute_ms: u64,
    /// Mean grid power over the polls in the minute, W (positive import).
    pub grid_w: i32,
    /// Mean household consumption, W, where measured.
    pub load_w: i32,
    /// Mean solar production, W (positive), where measured.
    pub solar_w: i32,
    /// Mean battery power, W (positive charging), where measured.
    pub battery_w: i32,
    /// Grid import register at the minute's last poll, Wh.
    pub import_wh: u64,
    /// Grid export register at the minute's last poll, Wh.
    pub export_wh: u64,
}

/// Minutes summed: one minute, or a block of consecutive minutes as the store keeps them for
/// the longer charts (`reading_blocks_v1`). Means over any set of minutes follow from sums of
/// blocks and single minutes exactly: the same sums, divided by the same count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MinuteSum {
    /// The first minute's start (a block's start), UTC ms.
    pub start_ms: u64,
    /// How many minutes are summed.
    pub minutes: u32,
    /// Sum of the minutes' mean grid power, W.
    pub grid_w: i64,
    /// Sum of the minutes' mean consumption, W.
    pub load_w: i64,
    /// Sum of the minutes' mean solar production, W.
    pub solar_w: i64,
    /// Sum of the minutes' mean battery power, W.
    pub battery_w: i64,
    /// Grid import register at the last minute, Wh.
    pub import_wh: u64,
    /// Grid export register at the last minute, Wh.
    pub export_wh: u64,
}

impl MinuteSum {
    /// Adds a later minute.
    pub fn add(&mut self, m: &Minute) {
        if self.minutes == 0 {
            self.start_ms = m.minute_ms;
        }
        self.minutes += 1;
        self.grid_w += i64::from(m.grid_w);
        self.load_w += i64::from(m.load_w);
        self.solar_w += i64::from(m.solar_w);
        self.battery_w += i64::from(m.battery_w);
        self.import_wh = m.import_wh;
        self.export_wh = m.export_wh;
    }
}

impl From<&Minute> for MinuteSum {
    fn from(m: &Minute) -> MinuteSum {
        let mut s = MinuteSum::default();
        s.add(m);
        s
    }
}

/// A finished slot's meter figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlotTotals {
    /// The slot's start.
    pub slot_ms: u64,
    /// Grid registers at the slot's start (or at the first reading in it, if the start was
    /// missed).
    pub start: Registers,
    /// Grid registers at the slot's end.
    pub end: Registers,
    /// Thousandths of the slot that were measured.
    pub coverage_permille: u16,
    /// Whether any reading in the slot was degraded or faulty.
    pub degraded: bool,
    /// Whether the source is a simulation.
    pub simulated: bool,
}

/// What the meter loop tells the node.
#[derive(Debug, Clone)]
pub enum MeterEvent {
    /// A fresh reading (for status and live views).
    Live(Box<Sample>),
    /// A minute is complete.
    Minute(Minute),
    /// A slot is complete.
    Slot(SlotTotals),
    /// A hardware source's read counters and current fault (after every poll).
    Health(crate::meter::SourceHealth),
}

/// Builds the configured source; `None` when metering is off. `registers` is where a source
/// that counts its own registers (the current clamps) keeps them durably: the node's store.
/// Without one (`wattmesh meter` on a stopped node) they are kept in memory and count from zero.
pub fn open(
    cfg: &MeterConfig,
    node_short: &str,
    registers: Option<Box<dyn RegisterStore>>,
) -> anyhow::Result<Option<Box<dyn MeterSource + Send>>> {
    Ok(match cfg.source {
        SourceKind::None => None,
        SourceKind::Simulated => {
            let name = if cfg.home.is_empty() {
                node_short
            } else {
                &cfg.home
            };
            Some(Box::new(SimMeter::new(cfg.sim.clone(), home_id(name))?))
        }
        SourceKind::Modbus => Some(Box::new(crate::meter::modbus::ModbusMeter::start(
            cfg.modbus.clone(),
        )?)),
        SourceKind::Ct => Some(Box::new(crate::meter::clamps::open(
            &cfg.ct,
            registers.unwrap_or_else(|| Box::new(MemoryRegisters::default())),
        )?)),
        SourceKind::P1 => Some(Box::new(crate::meter::p1::P1Meter::start(cfg.p1.clone())?)),
    })
}

struct Loop {
    source: Box<dyn MeterSource + Send>,
    grid: usize,
    simulated: bool,
    slot_len: u64,
    poll_ms: u64,
    /// The slot being measured: start, registers at its start, measured ms, degraded.
    slot: Option<(u64, Registers, u64, bool)>,
    last: Option<(u64, Registers)>,
    minute: Option<(Minute, u32, [f64; 4])>,
}

fn registers(s: &Sample, ch: usize) -> Option<Registers> {
    s.reading(ch)?.registers
}

impl Loop {
    fn channel_power(&self, s: &Sample, kind: ChannelKind) -> f64 {
        let info = self.source.info();
        info.channels
            .iter()
            .position(|c| c.kind == kind)
            .and_then(|i| s.reading(i))
            .map(|r| r.power_w)
            .unwrap_or(0.0)
    }

    /// Handles one poll at `t`; returns the events it produces.
    fn step(&mut self, t: u64) -> Vec<MeterEvent> {
        let mut out = Vec::new();
        let polled = self.source.poll(t);
        // The counters change whether or not the poll worked.
        if let Some(h) = self.source.health() {
            out.push(MeterEvent::Health(h));
        }
        let sample = match polled {
            Ok(s) => s,
            Err(e) => {
                warn!("meter: {e}");
                self.last = None;
                return out;
            }
        };
        let Some(reg) = registers(&sample, self.grid) else {
            warn!("meter: the grid channel reports no registers");
            return out;
        };
        // A batch write of the registers, if the source keeps them and its interval has passed.
        if let Err(e) = self.source.persist(t, false) {
            warn!("meter: {e}");
        }
        let status = sample
            .reading(self.grid)
            .map(|r| r.status)
            .unwrap_or(ChannelStatus::Fault);
        let slot_start = t - t % self.slot_len;
        // Close the slot we were in, if this poll is past its end.
        if let Some((s, start_reg, measured, degraded)) = self.slot {
            if slot_start > s {
                let end_ms = s + self.slot_len;
                // A simulated meter can be read exactly at the boundary; a real one is read
                // at the first poll after it.
                let end_reg = if self.simulated {
                    self.source
                        .poll(end_ms)
                        .ok()
                        .and_then(|x| registers(&x, self.grid))
                        .unwrap_or(reg)
                } else {
                    reg
                };
                let measured = measured + self.gap_credit(end_ms, status);
                // The registers are made durable before the node is given them to sign, so a
                // power cut can never take back a register value that was published. If they
                // cannot be stored, the slot is not attested (the next one starts from them).
                match self.source.persist(t, true) {
                    Ok(()) => out.push(MeterEvent::Slot(SlotTotals {
                        slot_ms: s,
                        start: start_reg,
                        end: end_reg,
                        coverage_permille: (measured.min(self.slot_len) * 1000 / self.slot_len)
                            as u16,
                        degraded,
                        simulated: self.simulated,
                    })),
                    Err(e) => warn!(slot = s, "meter: {e}; the slot is not attested"),
                }
                self.slot = None;
                if slot_start == end_ms {
                    // The next slot starts at the boundary; the time measured in it is
                    // credited below, clipped to the slot.
                    self.slot = Some((slot_start, end_reg, 0, false));
                }
            }
        }
        match &mut self.slot {
            Some((start, _, measured, degraded)) => {
                // Time since the last poll counts as measured only if this poll measured
                // something: a `Fault` means nothing was (a source that saw no mains cycle, a
                // meter that did not answer), and that time is missing coverage.
                if let Some((lt, _)) = self.last.filter(|_| status != ChannelStatus::Fault) {
                    if t > lt && t - lt <= 3 * self.poll_ms {
                        *measured += t - lt.max(*start);
                    }
                }
                *degraded |= status != ChannelStatus::Ok;
            }
            None => {
                // Joining a slot part-way (start-up, or after a gap): measured from now.
                self.slot = Some((slot_start, reg, 0, status != ChannelStatus::Ok));
            }
        }
        self.last = Some((t, reg));
        // Per-minute means.
        let minute_ms = t - t % 60_000;
        let p = [
            self.channel_power(&sample, ChannelKind::Grid),
            self.channel_power(&sample, ChannelKind::Load),
            -self.channel_power(&sample, ChannelKind::Solar),
            self.channel_power(&sample, ChannelKind::Battery),
        ];
        if let Some((m, n, sums)) = &mut self.minute {
            if m.minute_ms != minute_ms {
                out.push(MeterEvent::Minute(finish(*m, *n, *sums)));
                self.minute = None;
            } else {
                *n += 1;
                for (s, x) in sums.iter_mut().zip(p) {
                    *s += x;
                }
                m.import_wh = reg.import_wh;
                m.export_wh = reg.export_wh;
            }
        }
        if self.minute.is_none() {
            let m = Minute {
                minute_ms,
                import_wh: reg.import_wh,
                export_wh: reg.export_wh,
                ..Minute::default()
            };
            self.minute = Some((m, 1, p));
        }
        out.push(MeterEvent::Live(Box::new(sample)));
        out
    }

    /// Measured time between the last poll and the slot's end, if the polls were continuous
    /// and the poll after the end (`status`) measured something.
    fn gap_credit(&self, end_ms: u64, status: ChannelStatus) -> u64 {
        match self.last {
            Some((lt, _))
                if status != ChannelStatus::Fault
                    && lt < end_ms
                    && end_ms - lt <= 3 * self.poll_ms =>
            {
                end_ms - lt
            }
            _ => 0,
        }
    }
}

fn finish(mut m: Minute, n: u32, sums: [f64; 4]) -> Minute {
    let mean = |s: f64| (s / f64::from(n.max(1))).round() as i32;
    m.grid_w = mean(sums[0]);
    m.load_w = mean(sums[1]);
    m.solar_w = mean(sums[2]);
    m.battery_w = mean(sums[3]);
    m
}

/// Starts the meter loop on a blocking thread (the simulation is CPU work; a hardware source
/// is read from its own sampling thread). Events go to `out`; the loop ends when `out` closes.
pub fn spawn(
    source: Box<dyn MeterSource + Send>,
    cfg: &MeterConfig,
    slot_len_ms: u64,
    clock: Clock,
    out: mpsc::Sender<MeterEvent>,
) -> anyhow::Result<()> {
    let info = source.info().clone();
    let grid = info
        .grid_channel()
        .ok_or_else(|| anyhow::anyhow!("the meter has no grid channel"))?;
    let poll_ms = u64::from(cfg.poll_secs.max(1)) * 1000;
    let mut lp = Loop {
        source,
        grid,
        simulated: info.simulated,
        slot_len: slot_len_ms,
        poll_ms,
        slot: None,
        last: None,
        minute: None,
    };
    std::thread::Builder::new()
        .name("wattmesh-meter".into())
        .spawn(move || {
            loop {
                let now = clock.now_ms();
                for ev in lp.step(now) {
                    // Live readings are only for display: drop one rather than wait, so a busy
                    // node never stalls the meter (stalls would show up as missing coverage).
                    let sent = match ev {
                        MeterEvent::Live(_) | MeterEvent::Health(_) => match out.try_send(ev) {
                            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
                            _ => Ok(()),
                        },
                        other => out.blocking_send(other).map_err(|_| ()),
                    };
                    if sent.is_err() {
                        return;
                    }
                }
                // Wake at the next poll, or just after the next slot boundary if sooner, so a
                // slot closes promptly.
                let next_poll = now + poll_ms;
                let boundary = now - now % slot_len_ms + slot_len_ms + 200;
                let wake = next_poll.min(boundary);
                std::thread::sleep(Duration::from_millis(
                    wake.saturating_sub(clock.now_ms()).max(50),
                ));
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod power_loss;

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(poll_ms: u64) -> Loop {
        let src = SimMeter::new(SimConfig::default(), home_id("home-01")).unwrap();
        let grid = src.info().grid_channel().unwrap();
        Loop {
            source: Box::new(src),
            grid,
            simulated: true,
            slot_len: 900_000,
            poll_ms,
            slot: None,
            last: None,
            minute: None,
        }
    }

    const T0: u64 = 1_782_043_200_000; // 2026-06-21 12:00 UTC, a slot boundary

    fn slots(events: &[MeterEvent]) -> Vec<SlotTotals> {
        events
            .iter()
            .filter_map(|e| match e {
                MeterEvent::Slot(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn continuous_polling_gives_full_coverage_and_chained_registers() {
        let mut l = lp(10_000);
        let mut all = Vec::new();
        let mut t = T0 - 5_000;
        while t < T0 + 3 * 900_000 + 20_000 {
            all.extend(l.step(t));
            t += 10_000;
        }
        let s = slots(&all);
        assert!(s.len() >= 3, "{s:?}");
        // The first slot was joined part-way; the full ones are fully covered.
        for w in s.windows(2) {
            assert_eq!(w[0].end, w[1].start, "registers chain from slot to slot");
            assert_eq!(w[1].slot_ms, w[0].slot_ms + 900_000);
        }
        for x in &s[1..] {
            assert_eq!(x.coverage_permille, 1000, "{x:?}");
            assert!(x.end.import_wh >= x.start.import_wh && x.end.export_wh >= x.start.export_wh);
        }
        // The slot registers are the meter's registers exactly at the boundaries.
        let mut fresh = lp(10_000);
        let at = fresh.source.poll(s[1].slot_ms).unwrap();
        assert_eq!(Some(s[1].start), registers(&at, fresh.grid));
    }

    #[test]
    fn a_gap_shows_as_missing_coverage() {
        let mut l = lp(10_000);
        let mut all = Vec::new();
        // Polls until 12:05, then nothing until 12:20 (the node was down), then on.
        for t in (T0..T0 + 300_000).step_by(10_000) {
            all.extend(l.step(t));
        }
        for t in (T0 + 1_200_000..T0 + 2_000_000).step_by(10_000) {
            all.extend(l.step(t));
        }
        let s = slots(&all);
        assert_eq!(s[0].slot_ms, T0);
        assert!(s[0].coverage_permille < 400, "{:?}", s[0]);
        // The next slot was joined at 12:20, five minutes late.
        assert_eq!(s[1].slot_ms, T0 + 900_000);
        assert!(s[1].coverage_permille <= 667, "{:?}", s[1]);
    }

    #[test]
    fn minutes_average_the_polls() {
        let mut l = lp(10_000);
        let mut mins = Vec::new();
        let noon = T0 + 6 * 3_600_000; // 13:00 in Ames
        for t in (noon..noon + 180_000).step_by(10_000) {
            for e in l.step(t) {
                if let MeterEvent::Minute(m) = e {
                    mins.push(m);
                }
            }
        }
        assert_eq!(mins.len(), 2);
        assert_eq!(mins[0].minute_ms, noon);
        assert!(mins[1].import_wh >= mins[0].import_wh);
        // Midsummer noon in Ames with a 6 kWp array: solar is producing.
        assert!(mins[0].solar_w > 500, "{:?}", mins[0]);
    }
}
