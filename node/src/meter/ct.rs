//! Current clamps (CTs) and a voltage reference: from raw ADC samples to RMS voltage and
//! current, real and apparent power, power factor, and import and export registers.
//!
//! # How a cycle is measured
//!
//! A sampling thread reads the ADC inputs in turn and pushes each sample with its own
//! timestamp ([`CtMeter::push`]). Voltage and current are therefore never sampled at the same
//! instant, and the number of samples per mains cycle is not a whole number and drifts with
//! the mains frequency. The computation copes with both:
//!
//! 1. **Cycle boundaries** are the rising zero crossings of the voltage, each placed between its
//!    two samples by linear interpolation. Zero is the previous cycle's mean (the DC bias of the
//!    input), with hysteresis so that noise near zero cannot make a second crossing. A cycle is
//!    used only if its length gives a frequency within `min_hz..=max_hz` and no input paused for
//!    more than a tenth of it.
//! 2. **Integrals over exactly one cycle**: every quantity is a time integral over
//!    `[t0, t1]` by the trapezoidal rule on the samples' real timestamps, with the integrand
//!    interpolated at the boundaries. Nothing assumes a whole number of samples per cycle.
//! 3. **Alignment**: for each current sample at time `t`, the voltage at `t + δ` is interpolated
//!    from the four nearest voltage samples (Lagrange, cubic). This removes the skew between
//!    the inputs exactly; `δ = phase_lead_deg / 360 · period` adds the calibrated phase
//!    correction (a CT's current leads the true current by a degree or few; a voltage
//!    transformer also shifts phase).
//! 4. **DC offset** is removed by subtracting the cycle's mean of each signal (means, variances
//!    and the covariance are taken over the same cycle).
//! 5. `Vrms = √var(v)`, `Irms = √var(i)`, real power `P = cov(v, i)` (each times its
//!    calibration), apparent power `S = Vrms · Irms`, power factor `P / S`. A current below the
//!    noise floor reads as zero.
//! 6. **Registers**: `P · cycle length` is added to the import register when `P > 0` and to the
//!    export register when `P < 0`, per channel (the sum of a channel's legs, so a split-phase
//!    grid connection nets its two legs as the utility's meter does).
//!
//! # Direction needs a voltage reference
//!
//! The sign of power is the sign of the product of voltage and current; a clamp alone only
//! knows the current's size. A [`Direction::Measured`] channel needs the voltage input and
//! sees both directions. A [`Direction::Fixed`] channel has no reference: its power is the
//! (measured or nominal) voltage times the current times an assumed power factor, counted in the
//! one direction its wiring fixes (a solar inverter's output). The grid channel must be
//! measured; [`CtMeter::new`] refuses anything else.
//!
//! # Rounding
//!
//! Each cycle's energy `P · Δt` becomes milliwatt-hours in `f64` and is added to a per-direction
//! carry; whole milliwatt-hours move from the carry to the integer register (rounding down; the
//! remainder stays in the carry, so nothing is lost while the meter runs). Registers are
//! reported in whole watt-hours, rounded down.

use super::{
    ChannelInfo, ChannelKind, ChannelStatus, Flow, LegReading, Mains, MeterError, MeterSource,
    Reading, Registers, Sample, SourceInfo,
};
use serde::{Deserialize, Serialize};

/// The voltage reference input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoltageInput {
    /// The ADC input it is wired to.
    pub adc_input: u8,
    /// Mains volts per ADC count (after the AC-AC adapter and divider). Calibrate against a
    /// multimeter.
    pub volts_per_count: f64,
}

/// One current clamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtInput {
    /// The ADC input it is wired to.
    pub adc_input: u8,
    /// Amperes per ADC count: the CT's ratio over its burden resistor, times volts per count.
    pub amps_per_count: f64,
    /// How far, in degrees, this clamp's signal path leads the voltage path. Calibrate with a
    /// purely resistive load (a kettle, a heater) until the power factor reads 1.00.
    #[serde(default)]
    pub phase_lead_deg: f64,
    /// True when this clamp's line is in antiphase with the voltage reference: the second leg
    /// of a split-phase supply (or a clamp that is on backwards).
    #[serde(default)]
    pub invert_voltage: bool,
    /// True when this clamp is on one conductor of a 240 V circuit that runs across both legs
    /// of a split-phase supply (a 240 V solar inverter, a dryer): the same current flows in
    /// both conductors and the circuit's voltage is twice the reference's, so one clamp is
    /// enough and its power is doubled.
    #[serde(default)]
    pub spans_both_legs: bool,
    /// Currents below this RMS value read as zero, amperes.
    #[serde(default = "default_noise_floor_a")]
    pub noise_floor_a: f64,
}

fn default_noise_floor_a() -> f64 {
    0.4
}

/// The one direction a channel without voltage reference counts its energy in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixedFlow {
    /// All energy is consumption (import register).
    Import,
    /// All energy is production (export register).
    Export,
}

/// Whether a channel can tell import from export.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Measured against the voltage reference: both directions, real power from `v · i`.
    Measured,
    /// No voltage reference: only the size of the current is known. Power is
    /// `V · Irms · power_factor`, with V measured if a reference exists and nominal otherwise,
    /// always counted as `flow`.
    Fixed {
        /// The direction the wiring fixes.
        flow: FixedFlow,
        /// The assumed power factor (near 1 for a solar inverter).
        power_factor: f64,
    },
}

/// One channel: one clamp per line it covers (two for a split-phase grid connection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtChannelConfig {
    /// A short name for people.
    pub name: String,
    /// What the channel measures.
    pub kind: ChannelKind,
    /// Its clamps.
    pub legs: Vec<CtInput>,
    /// Whether it can tell import from export.
    pub direction: Direction,
}

/// A current-clamp meter's settings. The default is the original setting's: US split phase,
/// an MCP3008 with the voltage reference on input 0, the grid's two legs on inputs 1 and 2
/// and one conductor of a 240 V solar inverter's output on input 3, calibrated for an SCT-013-000 (100 A : 50 mA) with
/// a 22 Ω burden and a 9 V AC-AC adapter behind a 100 kΩ / 10 kΩ divider (docs/HARDWARE.md).
/// Every installation must still be calibrated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CtConfig {
    /// The mains supply.
    pub mains: Mains,
    /// The ADC's resolution, bits (10 for the MCP3008, 12 for the MCP3208).
    pub adc_bits: u8,
    /// The voltage reference, if wired.
    pub voltage: Option<VoltageInput>,
    /// The channels.
    pub channels: Vec<CtChannelConfig>,
    /// Cycles whose frequency falls outside these bounds are discarded, hertz.
    pub min_hz: f64,
    /// See `min_hz`.
    pub max_hz: f64,
    /// Where the ADC is on the Pi's SPI bus (used by the node's `ct` source).
    pub spi: crate::meter::adc::SpiConfig,
    /// Seconds between writes of the registers to the database while the meter runs (batched
    /// to spare the SD card). They are also always written before an attestation containing
    /// them is signed, so a power cut loses at most this much measured energy and never makes
    /// the registers go backwards. 10..=3600.
    pub persist_secs: u32,
}

impl Default for CtConfig {
    fn default() -> CtConfig {
        // 3.3 V over 1024 counts, across 22 Ω, through 2000 turns: 0.293 A per count.
        let amps_per_count = 3.3 / 1024.0 / 22.0 * 2000.0;
        let leg = |adc_input, invert_voltage, spans_both_legs| CtInput {
            adc_input,
            amps_per_count,
            phase_lead_deg: 0.0,
            invert_voltage,
            spans_both_legs,
            noise_floor_a: default_noise_floor_a(),
        };
        CtConfig {
            mains: Mains::default(),
            adc_bits: 10,
            voltage: Some(VoltageInput {
                adc_input: 0,
                volts_per_count: 0.426,
            }),
            channels: vec![
                CtChannelConfig {
                    name: "grid".into(),
                    kind: ChannelKind::Grid,
                    legs: vec![leg(1, false, false), leg(2, true, false)],
                    direction: Direction::Measured,
                },
                CtChannelConfig {
                    name: "solar".into(),
                    kind: ChannelKind::Solar,
                    legs: vec![leg(3, false, true)],
                    direction: Direction::Fixed {
                        flow: FixedFlow::Export,
                        power_factor: 1.0,
                    },
                },
            ],
            min_hz: 40.0,
            max_hz: 70.0,
            spi: crate::meter::adc::SpiConfig::default(),
            persist_secs: 300,
        }
    }
}

/// The calibration the owner may change while the meter runs (the web UI's meter page):
/// the voltage reference's gain, and each clamp's gain and phase correction. Everything else
/// (wiring, inputs, channels) stays as `[meter.ct]` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Mains volts per ADC count of the voltage reference; `None` when none is wired.
    pub volts_per_count: Option<f64>,
    /// Per channel, in configuration order.
    pub channels: Vec<ChannelCalibration>,
}

/// One channel's calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelCalibration {
    /// The channel's name (must match the configuration's, in order).
    pub name: String,
    /// Per clamp, in configuration order.
    pub legs: Vec<LegCalibration>,
}

/// One clamp's calibration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegCalibration {
    /// Amperes per ADC count.
    pub amps_per_count: f64,
    /// Phase correction, degrees (±20).
    pub phase_lead_deg: f64,
}

/// The largest gain accepted for volts or amperes per count: far beyond any real clamp or
/// adapter (the defaults are 0.43 V and 0.29 A per count), so a typo is caught.
pub const MAX_GAIN: f64 = 100.0;

impl Calibration {
    /// The calibration a configuration has.
    pub fn of(cfg: &CtConfig) -> Calibration {
        Calibration {
            volts_per_count: cfg.voltage.as_ref().map(|v| v.volts_per_count),
            channels: cfg
                .channels
                .iter()
                .map(|c| ChannelCalibration {
                    name: c.name.clone(),
                    legs: c
                        .legs
                        .iter()
                        .map(|l| LegCalibration {
                            amps_per_count: l.amps_per_count,
                            phase_lead_deg: l.phase_lead_deg,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// `cfg` with this calibration, checked: the same channels (by name, in order) and clamps
    /// as `cfg`, gains above 0 and at most [`MAX_GAIN`], phase corrections within ±20°. The
    /// messages say which value is wrong.
    pub fn apply(&self, cfg: &CtConfig) -> Result<CtConfig, MeterError> {
        let bad = |m: String| Err(MeterError::Config(m));
        let gain_ok = |g: f64| g.is_finite() && g > 0.0 && g <= MAX_GAIN;
        let mut out = cfg.clone();
        match (&mut out.voltage, self.volts_per_count) {
            (Some(v), Some(g)) if gain_ok(g) => v.volts_per_count = g,
            (Some(_), Some(g)) => {
                return bad(format!(
                    "volts_per_count {g} is not a gain: above 0 and at most {MAX_GAIN}"
                ));
            }
            (Some(_), None) => return bad("volts_per_count is missing".into()),
            (None, Some(_)) => {
                return bad(
                    "no voltage reference is wired, so volts_per_count must be null".into(),
                );
            }
            (None, None) => {}
        }
        if self.channels.len() != cfg.channels.len() {
            return bad(format!(
                "the meter has {} channels, the calibration {}",
                cfg.channels.len(),
                self.channels.len()
            ));
        }
        for (ch, cal) in out.channels.iter_mut().zip(&self.channels) {
            if ch.name != cal.name {
                return bad(format!(
                    "channel {:?} is not the meter's channel {:?} at that place",
                    cal.name, ch.name
                ));
            }
            if ch.legs.len() != cal.legs.len() {
                return bad(format!(
                    "channel {:?} has {} clamps, the calibration {}",
                    ch.name,
                    ch.legs.len(),
                    cal.legs.len()
                ));
            }
            for (k, (leg, c)) in ch.legs.iter_mut().zip(&cal.legs).enumerate() {
                if !gain_ok(c.amps_per_count) {
                    return bad(format!(
                        "channel {:?} clamp {}: amps_per_count {} is not a gain: above 0 and at most {MAX_GAIN}",
                        ch.name,
                        k + 1,
                        c.amps_per_count
                    ));
                }
                if !(c.phase_lead_deg.is_finite() && c.phase_lead_deg.abs() <= 20.0) {
                    return bad(format!(
                        "channel {:?} clamp {}: phase_lead_deg {} is beyond ±20°",
                        ch.name,
                        k + 1,
                        c.phase_lead_deg
                    ));
                }
                leg.amps_per_count = c.amps_per_count;
                leg.phase_lead_deg = c.phase_lead_deg;
            }
        }
        CtMeter::new(out.clone())?;
        Ok(out)
    }
}

/// One channel's result for one cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelCycle {
    /// Real power, the sum over the legs, W.
    pub power_w: f64,
    /// Per leg.
    pub legs: Vec<LegReading>,
}

/// The result of one mains cycle (or, without a voltage reference, one fixed window).
#[derive(Debug, Clone, PartialEq)]
pub struct CycleReport {
    /// Start, microseconds on the sampler's clock.
    pub start_us: f64,
    /// Length, seconds.
    pub duration_s: f64,
    /// `1 / duration` for a zero-crossing cycle; `None` for a fixed window.
    pub frequency_hz: Option<f64>,
    /// Per channel, in configuration order.
    pub channels: Vec<ChannelCycle>,
}

/// What an ADC input is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Voltage,
    Leg { channel: usize, leg: usize },
}

/// A timestamped sample: (microseconds, raw counts).
type Point = (f64, f64);

/// Per-channel totals since the last poll, and the registers.
#[derive(Debug, Clone, Default)]
struct ChannelAcc {
    energy_ws: f64,
    duration_s: f64,
    /// Per leg: time-weighted sums of Vrms, Irms, real and apparent power.
    legs: Vec<[f64; 4]>,
    import_mwh: u64,
    export_mwh: u64,
    import_carry_mwh: f64,
    export_carry_mwh: f64,
}

/// Longest fixed window without a voltage reference, in nominal cycles.
const FIXED_WINDOW_CYCLES: f64 = 10.0;
/// Samples kept before a window's start, for interpolation across it.
const MARGIN_SAMPLES: usize = 4;
/// A buffer that grows past this many samples has seen no usable cycle: it is cleared.
const MAX_BUFFER: usize = 20_000;

/// The current-clamp computation for one meter. Feed it samples; read cycles, powers and
/// registers. It does no IO and keeps no clock of its own.
#[derive(Debug, Clone)]
pub struct CtMeter {
    cfg: CtConfig,
    info: SourceInfo,
    roles: Vec<(u8, Role)>,
    v: Vec<Point>,
    /// Per channel, per leg.
    i: Vec<Vec<Vec<Point>>>,
    /// The zero level of the voltage input, raw counts, and the hysteresis around it.
    level: Option<(f64, f64)>,
    armed: bool,
    window_start: Option<f64>,
    pending_end: Option<f64>,
    acc: Vec<ChannelAcc>,
    clipped: bool,
    cycles: u64,
    discarded: u64,
    cycles_at_poll: u64,
    discarded_at_poll: u64,
    freq_sum: f64,
    freq_n: u32,
}

impl CtMeter {
    /// A meter for `cfg`. Refuses a grid channel that is not measured against a voltage
    /// reference, a measured channel without one, and an ADC input used twice.
    pub fn new(cfg: CtConfig) -> Result<CtMeter, MeterError> {
        let mut roles = Vec::new();
        if let Some(v) = &cfg.voltage {
            roles.push((v.adc_input, Role::Voltage));
        }
        for (c, ch) in cfg.channels.iter().enumerate() {
            if ch.legs.is_empty() {
                return Err(MeterError::Config(format!(
                    "channel {:?} has no clamp",
                    ch.name
                )));
            }
            if ch.direction == Direction::Measured && cfg.voltage.is_none() {
                return Err(MeterError::Config(format!(
                    "channel {:?} is measured against a voltage reference, but none is wired",
                    ch.name
                )));
            }
            for (l, leg) in ch.legs.iter().enumerate() {
                if leg.phase_lead_deg.is_nan() || leg.phase_lead_deg.abs() > 20.0 {
                    return Err(MeterError::Config(format!(
                        "phase_lead_deg {} is beyond ±20°: check the wiring",
                        leg.phase_lead_deg
                    )));
                }
                roles.push((leg.adc_input, Role::Leg { channel: c, leg: l }));
            }
        }
        let mut inputs: Vec<u8> = roles.iter().map(|(i, _)| *i).collect();
        inputs.sort_unstable();
        inputs.dedup();
        if inputs.len() != roles.len() {
            return Err(MeterError::Config("an ADC input is used twice".into()));
        }
        let hz_ok = cfg.min_hz > 0.0
            && cfg.min_hz < cfg.max_hz
            && (cfg.min_hz..=cfg.max_hz).contains(&cfg.mains.nominal_hz);
        if !(hz_ok && cfg.mains.nominal_v > 0.0 && matches!(cfg.adc_bits, 8..=16)) {
            return Err(MeterError::Config(
                "need 0 < min_hz <= nominal_hz <= max_hz, nominal_v > 0 and adc_bits 8..=16".into(),
            ));
        }
        let info = SourceInfo {
            channels: cfg
                .channels
                .iter()
                .map(|c| ChannelInfo {
                    name: c.name.clone(),
                    kind: c.kind,
                    flow: match c.direction {
                        Direction::Measured => Flow::Bidirectional,
                        Direction::Fixed {
                            flow: FixedFlow::Import,
                            ..
                        } => Flow::ImportOnly,
                        Direction::Fixed {
                            flow: FixedFlow::Export,
                            ..
                        } => Flow::ExportOnly,
                    },
                })
                .collect(),
            mains: cfg.mains,
            simulated: false,
        };
        info.check()?;
        Ok(CtMeter {
            i: cfg
                .channels
                .iter()
                .map(|c| vec![Vec::new(); c.legs.len()])
                .collect(),
            acc: cfg
                .channels
                .iter()
                .map(|c| ChannelAcc {
                    legs: vec![[0.0; 4]; c.legs.len()],
                    ..ChannelAcc::default()
                })
                .collect(),
            cfg,
            info,
            roles,
            v: Vec::new(),
            level: None,
            armed: false,
            window_start: None,
            pending_end: None,
            clipped: false,
            cycles: 0,
            discarded: 0,
            cycles_at_poll: 0,
            discarded_at_poll: 0,
            freq_sum: 0.0,
            freq_n: 0,
        })
    }

    /// The ADC inputs in use, voltage first: the order a sampler should read them in.
    pub fn inputs(&self) -> Vec<u8> {
        self.roles.iter().map(|(i, _)| *i).collect()
    }

    /// Cycles used and cycles discarded so far.
    pub fn cycle_counts(&self) -> (u64, u64) {
        (self.cycles, self.discarded)
    }

    /// Channel `channel`'s registers.
    pub fn registers(&self, channel: usize) -> Option<Registers> {
        self.acc.get(channel).map(|a| Registers {
            import_wh: a.import_mwh / 1000,
            export_wh: a.export_mwh / 1000,
        })
    }

    /// Channel `channel`'s registers in milliwatt-hours (import, export).
    pub fn registers_mwh(&self, channel: usize) -> Option<(u64, u64)> {
        self.acc.get(channel).map(|a| (a.import_mwh, a.export_mwh))
    }

    /// Continues channel `channel`'s registers from `import_mwh` and `export_mwh` (the values
    /// stored before a restart). Registers only grow: a value below the current one is ignored.
    pub fn restore_registers_mwh(&mut self, channel: usize, import_mwh: u64, export_mwh: u64) {
        if let Some(a) = self.acc.get_mut(channel) {
            a.import_mwh = a.import_mwh.max(import_mwh);
            a.export_mwh = a.export_mwh.max(export_mwh);
        }
    }

    /// The settings.
    pub fn config(&self) -> &CtConfig {
        &self.cfg
    }

    /// Takes a new calibration from the next cycle on; the registers and the cycle in
    /// progress are kept. Refused (and nothing changed) if [`Calibration::apply`] refuses it.
    pub fn calibrate(&mut self, cal: &Calibration) -> Result<(), MeterError> {
        self.cfg = cal.apply(&self.cfg)?;
        Ok(())
    }

    /// One sample of ADC input `input` taken at `t_us` (microseconds on any monotonic clock).
    /// Returns the cycle this sample completed, if any. Samples of one input must arrive in
    /// time order; an unknown input is ignored.
    pub fn push(&mut self, input: u8, t_us: u64, raw: u16) -> Option<CycleReport> {
        let role = self
            .roles
            .iter()
            .find(|(i, _)| *i == input)
            .map(|(_, r)| *r)?;
        let max = (1u32 << self.cfg.adc_bits) - 1;
        if raw == 0 || u32::from(raw) >= max {
            self.clipped = true;
        }
        let p = (t_us as f64, f64::from(raw));
        match role {
            Role::Voltage => {
                self.v.push(p);
                self.detect_crossing();
            }
            Role::Leg { channel, leg } => {
                if let Some(buf) = self.i.get_mut(channel).and_then(|c| c.get_mut(leg)) {
                    buf.push(p);
                }
                if self.cfg.voltage.is_none() {
                    self.advance_fixed_window();
                }
            }
        }
        if self.v.len() + self.i.iter().flatten().map(Vec::len).sum::<usize>() > MAX_BUFFER {
            self.reset_buffers();
            self.discarded += 1;
            return None;
        }
        let (start, end) = (self.window_start?, self.pending_end?);
        self.try_close(start, end)
    }

    fn reset_buffers(&mut self) {
        self.v.clear();
        for legs in &mut self.i {
            for l in legs {
                l.clear();
            }
        }
        self.level = None;
        self.window_start = None;
        self.pending_end = None;
    }

    /// Zero-crossing detection on the newest voltage sample.
    fn detect_crossing(&mut self) {
        let n = self.v.len();
        let Some(&(t, v)) = self.v.last() else { return };
        let Some((level, hyst)) = self.level else {
            // Learn the bias from the extremes of at least one and a half nominal cycles.
            let span_us = 1.5e6 / self.cfg.mains.nominal_hz;
            if let Some(&(t_first, _)) = self.v.first() {
                if t - t_first >= span_us {
                    let (lo, hi) = self
                        .v
                        .iter()
                        .fold((f64::MAX, f64::MIN), |(lo, hi), (_, x)| {
                            (lo.min(*x), hi.max(*x))
                        });
                    if hi - lo >= 8.0 {
                        self.level = Some(((hi + lo) / 2.0, 0.1 * (hi - lo) / 2.0));
                    } else {
                        // No voltage signal: keep only a little history.
                        let keep = self.v.len().saturating_sub(MARGIN_SAMPLES);
                        self.v.drain(..keep);
                    }
                }
            }
            return;
        };
        if v < level - hyst {
            self.armed = true;
        }
        if !self.armed || n < 2 {
            return;
        }
        let (tp, vp) = self.v[n - 2];
        if vp < level && v >= level {
            self.armed = false;
            let crossing = tp + (level - vp) / (v - vp) * (t - tp);
            match (self.window_start, self.pending_end) {
                (None, _) => {
                    self.window_start = Some(crossing);
                    self.trim(crossing);
                }
                (Some(_), None) => self.pending_end = Some(crossing),
                (Some(_), Some(_)) => {
                    // A whole cycle passed without the previous one closing (a current input
                    // stopped): give it up.
                    self.discarded += 1;
                    self.window_start = Some(crossing);
                    self.pending_end = None;
                    self.trim(crossing);
                }
            }
        }
    }

    /// Without a voltage reference, windows are a fixed number of nominal cycles long.
    fn advance_fixed_window(&mut self) {
        if self.window_start.is_none() {
            // Start once every leg has a sample, at the latest of their first samples.
            let firsts: Option<Vec<f64>> = self
                .i
                .iter()
                .flatten()
                .map(|l| l.first().map(|p| p.0))
                .collect();
            self.window_start = firsts.and_then(|f| f.into_iter().reduce(f64::max));
        }
        if let (Some(start), None) = (self.window_start, self.pending_end) {
            self.pending_end = Some(start + FIXED_WINDOW_CYCLES * 1e6 / self.cfg.mains.nominal_hz);
        }
    }

    /// Drops samples that lie well before `t`, keeping a margin for interpolation.
    fn trim(&mut self, t: f64) {
        let cut = |buf: &mut Vec<Point>| {
            let before = buf.partition_point(|p| p.0 < t);
            let drop = before.saturating_sub(MARGIN_SAMPLES);
            buf.drain(..drop);
        };
        cut(&mut self.v);
        for legs in &mut self.i {
            for l in legs {
                cut(l);
            }
        }
    }

    /// Closes the window `[t0, t1]` once every input has samples past `t1`.
    fn try_close(&mut self, t0: f64, t1: f64) -> Option<CycleReport> {
        let period_us = t1 - t0;
        let measured_v = self.cfg.voltage.is_some();
        let max_lead = self
            .cfg
            .channels
            .iter()
            .flat_map(|c| &c.legs)
            .map(|l| l.phase_lead_deg)
            .fold(0.0f64, f64::max);
        // Every leg needs a sample at or after t1; the voltage needs two samples after the
        // last of those, shifted by the phase correction, for the cubic interpolation.
        let mut last_i = t1;
        for l in self.i.iter().flatten() {
            let after = l.iter().find(|p| p.0 >= t1)?;
            last_i = last_i.max(after.0);
        }
        if measured_v {
            let need = last_i + max_lead.max(0.0) / 360.0 * period_us;
            let after = self.v.len() - self.v.partition_point(|p| p.0 <= need);
            if after < 2 {
                return None;
            }
        }
        self.pending_end = None;
        self.window_start = Some(t1);
        let freq = 1e6 / period_us;
        let ok_freq = !measured_v || (self.cfg.min_hz..=self.cfg.max_hz).contains(&freq);
        let report = if ok_freq && self.no_gaps(t0, t1) {
            self.compute(t0, t1)
        } else {
            None
        };
        self.trim(t1);
        match report {
            Some(r) => {
                self.cycles += 1;
                if measured_v {
                    self.freq_sum += freq;
                    self.freq_n += 1;
                }
                self.book(&r);
                Some(r)
            }
            None => {
                self.discarded += 1;
                None
            }
        }
    }

    /// True when no input paused for more than a tenth of the window inside it.
    fn no_gaps(&self, t0: f64, t1: f64) -> bool {
        let limit = (t1 - t0) / 10.0;
        let ok = |buf: &Vec<Point>| {
            let a = buf.partition_point(|p| p.0 < t0).saturating_sub(1);
            let b = (buf.partition_point(|p| p.0 <= t1) + 1).min(buf.len());
            buf.get(a..b)
                .is_some_and(|s| s.len() >= 2 && s.windows(2).all(|w| w[1].0 - w[0].0 <= limit))
        };
        (self.cfg.voltage.is_none() || ok(&self.v)) && self.i.iter().flatten().all(ok)
    }

    /// The figures of one window.
    fn compute(&mut self, t0: f64, t1: f64) -> Option<CycleReport> {
        let dur_us = t1 - t0;
        let (v_mean, v_var) = match &self.cfg.voltage {
            Some(_) => {
                let [s1, s2] = integrate(&self.v, t0, t1, |_, y| [y, y * y])?;
                let mean = s1 / dur_us;
                (mean, (s2 / dur_us - mean * mean).max(0.0))
            }
            None => (0.0, 0.0),
        };
        let v_scale = self.cfg.voltage.as_ref().map_or(0.0, |v| v.volts_per_count);
        let vrms_v = match self.cfg.voltage {
            Some(_) => v_var.sqrt() * v_scale,
            None => self.cfg.mains.nominal_v,
        };
        let mut channels = Vec::with_capacity(self.cfg.channels.len());
        for (c, ch) in self.cfg.channels.iter().enumerate() {
            let mut legs = Vec::with_capacity(ch.legs.len());
            for (l, leg) in ch.legs.iter().enumerate() {
                let buf = self.i.get(c)?.get(l)?;
                let delta_us = leg.phase_lead_deg / 360.0 * dur_us;
                let v = &self.v;
                let measured = ch.direction == Direction::Measured;
                let [si, si2, sv, svi] = integrate(buf, t0, t1, |t, y| {
                    if measured {
                        let vs = interpolate(v, t + delta_us);
                        [y, y * y, vs, vs * y]
                    } else {
                        [y, y * y, 0.0, 0.0]
                    }
                })?;
                let i_mean = si / dur_us;
                let i_var = (si2 / dur_us - i_mean * i_mean).max(0.0);
                let mut irms_a = i_var.sqrt() * leg.amps_per_count;
                let legs_spanned = if leg.spans_both_legs { 2.0 } else { 1.0 };
                let leg_vrms_v = vrms_v * legs_spanned;
                let mut real_power_w = match ch.direction {
                    Direction::Measured => {
                        let cov = svi / dur_us - (sv / dur_us) * i_mean;
                        let sign = if leg.invert_voltage { -1.0 } else { 1.0 };
                        sign * legs_spanned * cov * v_scale * leg.amps_per_count
                    }
                    Direction::Fixed { flow, power_factor } => {
                        let p = leg_vrms_v * irms_a * power_factor;
                        match flow {
                            FixedFlow::Import => p,
                            FixedFlow::Export => -p,
                        }
                    }
                };
                if irms_a < leg.noise_floor_a {
                    irms_a = 0.0;
                    real_power_w = 0.0;
                }
                let apparent_power_va = leg_vrms_v * irms_a;
                let power_factor = if apparent_power_va > 0.0 {
                    (real_power_w / apparent_power_va).clamp(-1.0, 1.0)
                } else {
                    0.0
                };
                legs.push(LegReading {
                    vrms_v: leg_vrms_v,
                    irms_a,
                    real_power_w,
                    apparent_power_va,
                    power_factor,
                });
            }
            channels.push(ChannelCycle {
                power_w: legs.iter().map(|l| l.real_power_w).sum(),
                legs,
            });
        }
        if self.cfg.voltage.is_some() {
            // The next crossing is judged against this cycle's mean.
            let amplitude = (2.0 * v_var).sqrt();
            self.level = Some((v_mean, (0.1 * amplitude).max(2.0)));
        }
        Some(CycleReport {
            start_us: t0,
            duration_s: dur_us / 1e6,
            frequency_hz: self.cfg.voltage.as_ref().map(|_| 1e6 / dur_us),
            channels,
        })
    }

    /// Adds a cycle to the registers and to the totals since the last poll.
    fn book(&mut self, r: &CycleReport) {
        for (acc, ch) in self.acc.iter_mut().zip(&r.channels) {
            let e_ws = ch.power_w * r.duration_s;
            acc.energy_ws += e_ws;
            acc.duration_s += r.duration_s;
            for (sums, leg) in acc.legs.iter_mut().zip(&ch.legs) {
                sums[0] += leg.vrms_v * r.duration_s;
                sums[1] += leg.irms_a * r.duration_s;
                sums[2] += leg.real_power_w * r.duration_s;
                sums[3] += leg.apparent_power_va * r.duration_s;
            }
            // 1 mWh = 3.6 W·s. The conversion point from float power to integer energy.
            let mwh = e_ws / 3.6;
            let (carry, register) = if mwh >= 0.0 {
                (&mut acc.import_carry_mwh, &mut acc.import_mwh)
            } else {
                (&mut acc.export_carry_mwh, &mut acc.export_mwh)
            };
            *carry += mwh.abs();
            let whole = carry.floor();
            if whole >= 1.0 {
                *carry -= whole;
                *register = register.saturating_add(whole as u64);
            }
        }
    }
}

impl MeterSource for CtMeter {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    /// Averages over the cycles since the last poll. A channel with no cycle since then is a
    /// `Fault`; discarded cycles or clipped samples make it `Degraded`.
    fn poll(&mut self, now_ms: u64) -> Result<Sample, MeterError> {
        let new_cycles = self.cycles - self.cycles_at_poll;
        let new_discarded = self.discarded - self.discarded_at_poll;
        let status = if new_cycles == 0 {
            ChannelStatus::Fault
        } else if new_discarded > 0 || self.clipped {
            ChannelStatus::Degraded
        } else {
            ChannelStatus::Ok
        };
        let frequency_hz = (self.freq_n > 0).then(|| self.freq_sum / f64::from(self.freq_n));
        let readings = self
            .acc
            .iter_mut()
            .enumerate()
            .map(|(c, acc)| {
                let d = acc.duration_s;
                let avg = |x: f64| if d > 0.0 { x / d } else { 0.0 };
                let legs = acc
                    .legs
                    .iter()
                    .map(|s| {
                        let (p, va) = (avg(s[2]), avg(s[3]));
                        LegReading {
                            vrms_v: avg(s[0]),
                            irms_a: avg(s[1]),
                            real_power_w: p,
                            apparent_power_va: va,
                            power_factor: if va > 0.0 {
                                (p / va).clamp(-1.0, 1.0)
                            } else {
                                0.0
                            },
                        }
                    })
                    .collect();
                let reading = Reading {
                    channel: c,
                    power_w: avg(acc.energy_ws),
                    registers: Some(Registers {
                        import_wh: acc.import_mwh / 1000,
                        export_wh: acc.export_mwh / 1000,
                    }),
                    status,
                    legs,
                    frequency_hz,
                };
                acc.energy_ws = 0.0;
                acc.duration_s = 0.0;
                acc.legs.iter_mut().for_each(|s| *s = [0.0; 4]);
                reading
            })
            .collect();
        self.cycles_at_poll = self.cycles;
        self.discarded_at_poll = self.discarded;
        self.clipped = false;
        self.freq_sum = 0.0;
        self.freq_n = 0;
        Ok(Sample {
            at_ms: now_ms,
            readings,
        })
    }
}

/// `∫ f(t, y(t)) dt` over `[t0, t1]` by the trapezoidal rule on the samples' own times, `f`
/// evaluated at each sample and interpolated linearly at the two boundaries. `None` unless the
/// samples reach both boundaries.
fn integrate<const N: usize>(
    pts: &[Point],
    t0: f64,
    t1: f64,
    f: impl Fn(f64, f64) -> [f64; N],
) -> Option<[f64; N]> {
    let a = pts.partition_point(|p| p.0 <= t0).checked_sub(1)?;
    let b = pts.partition_point(|p| p.0 < t1);
    if b >= pts.len() || a >= b {
        return None;
    }
    let span = pts.get(a..=b)?;
    let vals: Vec<[f64; N]> = span.iter().map(|p| f(p.0, p.1)).collect();
    let mut total = [0.0; N];
    for k in 0..span.len() - 1 {
        let (ta, tb) = (span[k].0, span[k + 1].0);
        let lo = ta.max(t0);
        let hi = tb.min(t1);
        if hi <= lo {
            continue;
        }
        let w = tb - ta;
        for n in 0..N {
            let at = |t: f64| vals[k][n] + (vals[k + 1][n] - vals[k][n]) * (t - ta) / w;
            total[n] += (at(lo) + at(hi)) / 2.0 * (hi - lo);
        }
    }
    Some(total)
}

/// The signal at time `t`, by cubic Lagrange interpolation through the four samples around it
/// (fewer at the ends of the buffer).
fn interpolate(pts: &[Point], t: f64) -> f64 {
    let n = pts.len();
    if n == 0 {
        return 0.0;
    }
    if n == 1 {
        return pts[0].1;
    }
    let k = pts.partition_point(|p| p.0 <= t);
    let lo = k.saturating_sub(2).min(n.saturating_sub(4));
    let hi = (lo + 4).min(n);
    let stencil = &pts[lo..hi];
    let mut sum = 0.0;
    for (j, pj) in stencil.iter().enumerate() {
        let mut w = 1.0;
        for (m, pm) in stencil.iter().enumerate() {
            if m != j {
                let d = pj.0 - pm.0;
                if d == 0.0 {
                    // Two samples at one instant: fall back to the nearest sample.
                    return pts[k.min(n - 1)].1;
                }
                w *= (t - pm.0) / d;
            }
        }
        sum += w * pj.1;
    }
    sum
}

#[cfg(test)]
mod tests;
