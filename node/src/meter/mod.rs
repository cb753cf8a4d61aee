//! Meter sources: what a home imports and exports, from a simulation or from real hardware.
//!
//! A [`MeterSource`] is polled with the current time and answers with a [`Sample`]: one
//! [`Reading`] per channel (grid connection, solar, battery, EV, household load). The grid
//! channel is the one whose registers decide what the home can trade; the others are for the
//! owner's dashboard and the automatic trader's forecasts.
//!
//! # Sign convention
//!
//! Every channel's power uses the *load* (consumer) convention, seen from the home: **positive
//! power flows into the home or into the device on that channel, negative power flows out.**
//!
//! | channel | positive | negative |
//! | --- | --- | --- |
//! | grid | import from the utility | export to the utility |
//! | solar | the inverter's standby draw | production |
//! | battery | charging | discharging |
//! | EV | charging | vehicle-to-home |
//! | load | consumption | (never) |
//!
//! So for a home with these channels, `grid = load + battery + ev + solar` at every instant.
//!
//! # Registers
//!
//! Where a source has them, each channel carries two energy registers in whole watt-hours: an
//! import register that only counts positive power and an export register that only counts
//! negative power. Both only ever grow. A net figure is never kept instead of the two, because a
//! home that imports 3 kWh in the morning and exports 3 kWh at noon has traded energy both ways
//! even though its net is zero. Each source documents where its floating-point power becomes an
//! integer count of energy (the one conversion point that the style guide asks for).
//!
//! A Modbus meter ([`modbus`]) and a DSMR smart meter's P1 port ([`p1`]) keep their own
//! registers; the current clamps ([`clamps`]) count theirs and store them ([`registers`]).
//!
//! Sources do no IO of their own in these types: the simulated meter ([`sim`]) is a pure function
//! of its seed, the home and the time; the current-clamp computation ([`ct`]) is fed samples by
//! a sampling thread that owns the ADC ([`adc`]).

pub mod adc;
pub mod clamps;
pub mod ct;
pub mod modbus;
pub mod p1;
pub mod registers;
pub mod sim;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use wattmesh_protocol::EnergyWh;

/// What a channel measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// The connection to the utility. Its registers decide what the home can trade.
    Grid,
    /// A solar inverter's output.
    Solar,
    /// A home battery.
    Battery,
    /// An electric vehicle charger.
    Ev,
    /// The household's consumption (everything else).
    Load,
}

/// Which directions of flow a channel can tell apart.
///
/// A current clamp alone measures the size of a current, not its direction: the direction of
/// power is the sign of the product of voltage and current, so it needs a voltage reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// Measured against a voltage reference: import and export are both seen.
    Bidirectional,
    /// No voltage reference; the wiring fixes the direction: all energy is counted as import
    /// (consumption), e.g. a heat pump's circuit.
    ImportOnly,
    /// No voltage reference; the wiring fixes the direction: all energy is counted as export
    /// (production), e.g. a solar inverter's output.
    ExportOnly,
}

/// One channel of a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// A short name for people (`grid`, `solar`, `garage EV`).
    pub name: String,
    /// What it measures.
    pub kind: ChannelKind,
    /// Which directions it can tell apart.
    pub flow: Flow,
}

/// How the home is connected to the utility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Connection {
    /// One line and neutral (most of Europe: 230 V).
    SinglePhase,
    /// North American split phase: two 120 V legs in antiphase, 240 V between them. A meter
    /// needs one current clamp per leg; one voltage reference serves both (the second leg's
    /// voltage is the first one's, inverted).
    SplitPhase,
    /// Three lines and neutral (230/400 V in Europe). A meter needs one clamp and one voltage
    /// reference per line.
    ThreePhase,
}

impl Connection {
    /// How many lines (legs, phases) carry current, so how many clamps a grid channel needs.
    pub fn legs(self) -> usize {
        match self {
            Connection::SinglePhase => 1,
            Connection::SplitPhase => 2,
            Connection::ThreePhase => 3,
        }
    }
}

/// The home's mains supply. The default is the original setting's: US split phase, 120 V per
/// leg, 60 Hz.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mains {
    /// How the home is connected.
    pub connection: Connection,
    /// Nominal line-to-neutral voltage, volts RMS (120 in the US, 230 in Europe).
    pub nominal_v: f64,
    /// Nominal frequency, hertz (60 in the Americas, 50 in most other places).
    pub nominal_hz: f64,
}

impl Default for Mains {
    fn default() -> Mains {
        Mains {
            connection: Connection::SplitPhase,
            nominal_v: 120.0,
            nominal_hz: 60.0,
        }
    }
}

/// What a source is and what it measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// The channels, in the order a [`Sample`]'s readings refer to them.
    pub channels: Vec<ChannelInfo>,
    /// The mains supply.
    pub mains: Mains,
    /// True for the simulated meter: attestations say so (`MeterStatus::Simulated`).
    pub simulated: bool,
}

impl SourceInfo {
    /// The index of the grid channel, the one that decides what is traded.
    pub fn grid_channel(&self) -> Option<usize> {
        self.channels
            .iter()
            .position(|c| c.kind == ChannelKind::Grid)
    }

    /// Checks the rules every source must keep: at most one grid channel, and it can tell
    /// import from export. A source without a grid channel is allowed (a clamp on a solar
    /// inverter next to a Modbus grid meter); a node needs exactly one grid channel among
    /// all its sources, which its configuration checks.
    pub fn check(&self) -> Result<(), MeterError> {
        let grids = self
            .channels
            .iter()
            .filter(|c| c.kind == ChannelKind::Grid)
            .count();
        if grids > 1 {
            return Err(MeterError::GridChannels(grids));
        }
        match self.channels.iter().find(|c| c.kind == ChannelKind::Grid) {
            Some(c) if c.flow != Flow::Bidirectional => Err(MeterError::GridNeedsVoltage),
            _ => Ok(()),
        }
    }
}

/// A channel's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelStatus {
    /// Measured normally.
    Ok,
    /// Measured, but something was off (some cycles discarded, frequency out of range, a
    /// reading clipped). The figures are usable.
    Degraded,
    /// Nothing usable was measured since the last poll.
    Fault,
}

/// Energy register totals of one channel, whole watt-hours. Both only ever grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registers {
    /// Energy that flowed in (positive power), Wh.
    pub import_wh: EnergyWh,
    /// Energy that flowed out (negative power), Wh.
    pub export_wh: EnergyWh,
}

/// One current-carrying line of an AC channel, from a current clamp.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LegReading {
    /// RMS voltage, volts (the nominal voltage for a channel without a voltage reference).
    pub vrms_v: f64,
    /// RMS current, amperes.
    pub irms_a: f64,
    /// Real power, watts, signed as the module describes.
    pub real_power_w: f64,
    /// Apparent power, volt-amperes.
    pub apparent_power_va: f64,
    /// Real over apparent power, signed like the real power; 0 when no current flows.
    pub power_factor: f64,
}

/// One channel's figures at one time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Index into [`SourceInfo::channels`].
    pub channel: usize,
    /// Power, watts: positive into the home (import, consumption), negative out of it.
    pub power_w: f64,
    /// Register totals, where the source keeps them.
    pub registers: Option<Registers>,
    /// Health.
    pub status: ChannelStatus,
    /// Per-leg AC detail, where the source measures it (empty otherwise).
    pub legs: Vec<LegReading>,
    /// Measured mains frequency, hertz, where the source measures it.
    pub frequency_hz: Option<f64>,
}

/// Everything a source says at one time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When, UTC milliseconds.
    pub at_ms: u64,
    /// One reading per channel.
    pub readings: Vec<Reading>,
}

impl Sample {
    /// The reading of channel `index`.
    pub fn reading(&self, index: usize) -> Option<&Reading> {
        self.readings.iter().find(|r| r.channel == index)
    }
}

/// A hardware source's read counters and what is wrong now, for `wattmesh status`, the web UI
/// and `/metrics`. The counters run from the source's start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceHealth {
    /// Which source: `p1`, `modbus` or `ct`.
    pub source: String,
    /// What is wrong now, in words for the owner; none while the meter reads normally.
    pub error: Option<String>,
    /// Counters by name: reads that worked (`telegrams`, `reads_ok`, `cycles`) and the read
    /// errors by kind (`crc_errors`, `malformed`, `wrong_meter`, `backwards`,
    /// `connection_errors`, `reads_failed`, `adc_errors`, `cycles_discarded`).
    pub counters: BTreeMap<String, u64>,
}

impl SourceHealth {
    /// A health report of `source` with these counters.
    pub fn new(source: &str, error: Option<String>, counters: &[(&str, u64)]) -> SourceHealth {
        SourceHealth {
            source: source.into(),
            error,
            counters: counters.iter().map(|(k, v)| ((*k).into(), *v)).collect(),
        }
    }
}

/// What goes wrong with a meter source.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MeterError {
    /// A source has more than one grid channel.
    #[error("a meter has at most one grid channel, found {0}")]
    GridChannels(usize),
    /// The grid channel cannot tell import from export.
    #[error(
        "the grid channel needs a voltage reference: without one, import and export cannot be told apart"
    )]
    GridNeedsVoltage,
    /// The configuration is inconsistent.
    #[error("invalid meter configuration: {0}")]
    Config(String),
    /// The hardware failed.
    #[error("meter hardware: {0}")]
    Hardware(String),
    /// The registers could not be stored or read back.
    #[error("meter registers: {0}")]
    Storage(String),
}

/// Changes a running source's calibration; refuses (changing nothing) a calibration that
/// does not fit the meter.
pub type Calibrator =
    std::sync::Arc<dyn Fn(&ct::Calibration) -> Result<(), MeterError> + Send + Sync>;

/// A meter: polled with the current time, it answers with a reading for every channel.
///
/// Implementations do no blocking IO in `poll`: a hardware source is fed by its own sampling
/// thread and `poll` only reads what has accumulated; the simulated source computes its answer.
pub trait MeterSource {
    /// What the source measures. Fixed for the source's lifetime.
    fn info(&self) -> &SourceInfo;

    /// The readings at `now_ms` (UTC milliseconds).
    fn poll(&mut self, now_ms: u64) -> Result<Sample, MeterError>;

    /// Makes the registers reported so far durable, for a source that keeps them itself (the
    /// current clamps; a Modbus or P1 meter and the simulation keep or compute their own, so
    /// the default does nothing). With `force` the write happens now: the meter loop forces it
    /// before it hands over a slot's registers to be signed, so a published attestation never
    /// contains a register that a power cut could take back. Without `force` the source writes
    /// only when its batch interval has passed since its last write (to spare the SD card).
    fn persist(&mut self, now_ms: u64, force: bool) -> Result<(), MeterError> {
        let _ = (now_ms, force);
        Ok(())
    }

    /// The source's read counters and current fault, for a hardware source (the simulation
    /// has none, which the default says).
    fn health(&self) -> Option<SourceHealth> {
        None
    }

    /// A handle that changes the calibration while the source runs, for a source whose
    /// calibration the owner sets (the current clamps). The default has none: a Modbus or P1
    /// meter is calibrated by its maker, and the simulation needs none.
    fn calibrator(&self) -> Option<Calibrator> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(kind: ChannelKind, flow: Flow) -> ChannelInfo {
        ChannelInfo {
            name: format!("{kind:?}"),
            kind,
            flow,
        }
    }

    #[test]
    fn a_grid_channel_without_voltage_reference_is_refused() {
        let info = SourceInfo {
            channels: vec![
                channel(ChannelKind::Grid, Flow::ImportOnly),
                channel(ChannelKind::Solar, Flow::ExportOnly),
            ],
            mains: Mains::default(),
            simulated: false,
        };
        assert_eq!(info.check(), Err(MeterError::GridNeedsVoltage));
    }

    #[test]
    fn at_most_one_grid_channel() {
        let mut info = SourceInfo {
            channels: vec![channel(ChannelKind::Solar, Flow::ExportOnly)],
            mains: Mains::default(),
            simulated: false,
        };
        assert_eq!(info.check(), Ok(()), "a solar-only source is fine");
        assert_eq!(info.grid_channel(), None);
        info.channels
            .push(channel(ChannelKind::Grid, Flow::Bidirectional));
        assert_eq!(info.check(), Ok(()));
        assert_eq!(info.grid_channel(), Some(1));
        info.channels
            .push(channel(ChannelKind::Grid, Flow::Bidirectional));
        assert_eq!(info.check(), Err(MeterError::GridChannels(2)));
    }

    #[test]
    fn default_mains_is_us_split_phase() {
        let m = Mains::default();
        assert_eq!(m.connection.legs(), 2);
        assert_eq!(m.nominal_hz, 60.0);
    }
}
