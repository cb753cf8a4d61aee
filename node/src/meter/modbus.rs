//! Modbus energy meters: Eastron SDM120 (single phase) and SDM630 (three phase), and meters with
//! the same register map, over Modbus TCP or Modbus RTU on a serial port (RS-485).
//!
//! Unlike a current clamp, such a meter keeps its own import and export energy registers, so the
//! node reads finished registers instead of integrating power. The register map, its sources and
//! the conversion from the meter's kWh floats to whole watt-hours are in [`sdm`].
//!
//! # How it runs
//!
//! [`ModbusMeter::start`] starts one thread (`wattmesh-modbus`) with its own single-threaded
//! tokio runtime, so the meter works the same whether or not the caller runs in tokio. Every
//! `poll_interval_ms` the thread reads, in this order: the serial number (holding registers
//! 0xFC00–0xFC01), the meter's two blocks of input registers, and the serial number again (so
//! that values are attributed to a meter only if it answered both before and after them). Each
//! request waits at most `timeout_ms`. [`MeterSource::poll`] never touches the bus: it turns the latest result into a
//! [`Reading`], so it never blocks.
//!
//! # When the meter is wrong or silent
//!
//! The channel's status is [`ChannelStatus::Fault`] — with the last good registers kept, and no
//! power, legs or frequency, since nothing is invented — when:
//!
//! - the meter did not answer within the timeout, the connection or serial port failed, or the
//!   meter answered with a Modbus exception. After a failure the connection is dropped and made
//!   again at the next cycle (for RTU the serial port is reopened, which also discards any late
//!   reply still on the line), so the source recovers by itself once the meter answers;
//! - another meter answers: the serial number differs from `serial` (or, when none is configured,
//!   from the first one seen since start). Its values are not taken, however plausible, until
//!   the configuration names the new meter;
//! - an energy register went backwards (a reset or replaced meter): the last good value is kept
//!   and reported until the meter's register reaches it again, so the registers this source
//!   reports never decrease;
//! - a value is not a number, or an energy is negative;
//! - no cycle has succeeded for `2 · poll_interval_ms + 5 · timeout_ms` (a backstop: the thread
//!   records a timeout long before that).
//!
//! [`ModbusMeter::health`] says why, in words for the owner.
//!
//! # Sign
//!
//! Positive power flows into the home (module [`crate::meter`]); the meters count it the same
//! way when wired as labelled. `reversed = true` is for a meter mounted the other way round.

mod client;
pub mod sdm;
mod track;

pub use self::sdm::Model;

use self::track::Tracker;
use super::{
    ChannelInfo, ChannelKind, ChannelStatus, Connection, Flow, Mains, MeterError, MeterSource,
    Registers, Sample, SourceInfo,
};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Serial-line parity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// No parity bit.
    #[default]
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

/// How to reach the meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Transport {
    /// Modbus TCP: a meter with an Ethernet interface, or an RS-485-to-Ethernet gateway.
    Tcp {
        /// Host name or address.
        host: String,
        /// TCP port (Modbus TCP's is 502).
        #[serde(default = "default_tcp_port")]
        port: u16,
    },
    /// Modbus RTU on a serial port, usually a USB RS-485 adapter. Always 8 data bits.
    Rtu {
        /// The serial device (`/dev/ttyUSB0`, or a stable `/dev/serial/by-id/...` name).
        device: String,
        /// Baud rate, as set in the meter's setup menu (Eastron's SDM630 ships at 9600,
        /// the SDM120 at 2400).
        #[serde(default = "default_baud")]
        baud: u32,
        /// Parity, as set in the meter.
        #[serde(default)]
        parity: Parity,
        /// Stop bits, 1 or 2, as set in the meter.
        #[serde(default = "default_stop_bits")]
        stop_bits: u8,
    },
}

fn default_tcp_port() -> u16 {
    502
}

fn default_baud() -> u32 {
    9600
}

fn default_stop_bits() -> u8 {
    1
}

impl Default for Transport {
    fn default() -> Transport {
        Transport::Rtu {
            device: "/dev/ttyUSB0".into(),
            baud: default_baud(),
            parity: Parity::None,
            stop_bits: default_stop_bits(),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Tcp { host, port } => write!(f, "{host}:{port}"),
            Transport::Rtu { device, .. } => write!(f, "{device}"),
        }
    }
}

/// A Modbus meter's settings. The default: an SDM630 at unit 1 on a USB RS-485 adapter
/// (`/dev/ttyUSB0`, 9600 baud, 8N1), read every second with a one-second timeout, measuring the
/// grid connection. Set `serial` to the number printed on the meter.
///
/// ```toml
/// model = "sdm630"
/// unit_id = 1
/// serial = 12345678
/// timeout_ms = 1000
/// poll_interval_ms = 1000
///
/// [transport]
/// type = "rtu"            # or: type = "tcp", host = "192.168.1.50", port = 502
/// device = "/dev/ttyUSB0"
/// baud = 9600
/// parity = "none"         # "even", "odd"
/// stop_bits = 1
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModbusConfig {
    /// The channel's name for people.
    pub name: String,
    /// What the meter measures: the grid connection (the default), or a solar inverter, a
    /// battery, an EV charger.
    pub kind: ChannelKind,
    /// Which meter.
    pub model: Model,
    /// How to reach it.
    pub transport: Transport,
    /// Its Modbus address (unit or slave id), 1–247; Eastron meters ship with 1.
    pub unit_id: u8,
    /// The meter's serial number (holding registers 0xFC00–0xFC01, also printed on the
    /// meter). Another serial number faults the channel: a swapped meter must never be taken
    /// for the old one, whose registers the published attestations continue. `None` accepts
    /// the first meter that answers and then holds on to it until restart; set it.
    pub serial: Option<u32>,
    /// How long to wait for each answer (and for a TCP connection), milliseconds.
    pub timeout_ms: u32,
    /// Time between reads, milliseconds.
    pub poll_interval_ms: u32,
    /// The meter is mounted the other way round (the home on its supply side): negate its
    /// power and swap its import and export registers.
    pub reversed: bool,
    /// The supply. `None`: single phase for the SDM120, three phase for the SDM630, both at the
    /// meters' rated 230 V and 50 Hz. An SDM630 reads as many phases as `connection` has legs,
    /// so a split-phase home wired to its phases 1 and 2 sets `connection = "split_phase"`
    /// (use a variant rated for 120 V line to neutral).
    pub mains: Option<Mains>,
}

impl Default for ModbusConfig {
    fn default() -> ModbusConfig {
        ModbusConfig {
            name: "grid".into(),
            kind: ChannelKind::Grid,
            model: Model::Sdm630,
            transport: Transport::default(),
            unit_id: 1,
            serial: None,
            timeout_ms: 1000,
            poll_interval_ms: 1000,
            reversed: false,
            mains: None,
        }
    }
}

impl ModbusConfig {
    /// The supply: configured, or the model's.
    pub fn mains(&self) -> Mains {
        self.mains.unwrap_or(Mains {
            connection: match self.model {
                Model::Sdm120 => Connection::SinglePhase,
                Model::Sdm630 => Connection::ThreePhase,
            },
            nominal_v: 230.0,
            nominal_hz: 50.0,
        })
    }

    /// Checks the settings.
    pub fn check(&self) -> Result<(), MeterError> {
        let bad = |m: String| Err(MeterError::Config(m));
        if self.name.trim().is_empty() {
            return bad("modbus: the channel needs a name".into());
        }
        if !(1..=247).contains(&self.unit_id) {
            return bad(format!(
                "modbus: unit_id {} is not a device address (1-247)",
                self.unit_id
            ));
        }
        if !(10..=60_000).contains(&self.timeout_ms) {
            return bad(format!(
                "modbus: timeout_ms {} is outside 10-60000",
                self.timeout_ms
            ));
        }
        if !(100..=3_600_000).contains(&self.poll_interval_ms) {
            return bad(format!(
                "modbus: poll_interval_ms {} is outside 100-3600000",
                self.poll_interval_ms
            ));
        }
        match &self.transport {
            Transport::Tcp { host, port } => {
                if host.trim().is_empty() || *port == 0 {
                    return bad("modbus: tcp needs a host and a port".into());
                }
            }
            Transport::Rtu {
                device,
                baud,
                stop_bits,
                ..
            } => {
                if device.trim().is_empty() || *baud == 0 {
                    return bad("modbus: rtu needs a device and a baud rate".into());
                }
                if !matches!(stop_bits, 1 | 2) {
                    return bad(format!("modbus: stop_bits {stop_bits} is not 1 or 2"));
                }
            }
        }
        let legs = self.mains().connection.legs();
        if legs > self.model.phases() {
            return bad(format!(
                "modbus: a {:?} measures {} phase(s), the supply has {legs}",
                self.model,
                self.model.phases()
            ));
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.timeout_ms))
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.poll_interval_ms))
    }

    /// How old the last good reading may be before the channel faults even without a recorded
    /// failure: two poll intervals plus five timeouts (connect and four requests).
    fn stale_after(&self) -> Duration {
        self.poll_interval() * 2 + self.timeout() * 5
    }
}

/// A Modbus meter's health, for status pages, logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModbusHealth {
    /// The channel's status as `poll` reports it now.
    pub status: ChannelStatus,
    /// Why the channel is faulty, in words for the owner; `None` when it is `Ok`.
    pub error: Option<String>,
    /// The serial number the meter must answer with (configured, or learnt).
    pub serial: Option<u32>,
    /// Whether `serial` was learnt from the first answer rather than configured.
    pub serial_learnt: bool,
    /// The last good registers.
    pub registers: Option<Registers>,
    /// Read cycles accepted since start.
    pub reads_ok: u64,
    /// Read cycles that failed or were refused since start.
    pub reads_failed: u64,
}

/// A Modbus energy meter as a [`MeterSource`] with one channel.
#[derive(Debug)]
pub struct ModbusMeter {
    info: SourceInfo,
    stale_after: Duration,
    tracker: Arc<Mutex<Tracker>>,
    /// Dropping it tells the worker to stop.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    worker: Option<JoinHandle<()>>,
}

fn lock(tracker: &Mutex<Tracker>) -> MutexGuard<'_, Tracker> {
    // The tracker's updates are single assignments of complete values; a panic elsewhere while
    // holding the lock cannot leave it half-written, so a poisoned lock is still usable.
    tracker
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ModbusMeter {
    /// Checks `cfg` and starts reading the meter in the background. Succeeds even if the meter
    /// does not answer yet (the channel is then `Fault` until it does); fails only on a bad
    /// configuration or if the thread cannot be started.
    pub fn start(cfg: ModbusConfig) -> Result<ModbusMeter, MeterError> {
        cfg.check()?;
        let mains = cfg.mains();
        let info = SourceInfo {
            channels: vec![ChannelInfo {
                name: cfg.name.clone(),
                kind: cfg.kind,
                flow: Flow::Bidirectional,
            }],
            mains,
            simulated: false,
        };
        info.check()?;
        let tracker = Arc::new(Mutex::new(Tracker::new(
            cfg.model,
            mains.connection.legs(),
            cfg.reversed,
            cfg.serial,
        )));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let stale_after = cfg.stale_after();
        let worker = client::spawn(cfg, Arc::clone(&tracker), stopped)
            .map_err(|e| MeterError::Hardware(format!("cannot start the Modbus thread: {e}")))?;
        Ok(ModbusMeter {
            info,
            stale_after,
            tracker,
            stop: Some(stop),
            worker: Some(worker),
        })
    }

    /// The meter's health now.
    pub fn health(&self) -> ModbusHealth {
        lock(&self.tracker).health(Instant::now(), self.stale_after)
    }
}

impl MeterSource for ModbusMeter {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    /// The latest values the worker read; never waits for the bus.
    fn health(&self) -> Option<super::SourceHealth> {
        let h = ModbusMeter::health(self);
        Some(super::SourceHealth::new(
            "modbus",
            h.error,
            &[("reads_ok", h.reads_ok), ("reads_failed", h.reads_failed)],
        ))
    }

    fn poll(&mut self, now_ms: u64) -> Result<Sample, MeterError> {
        if self.worker.as_ref().is_none_or(|w| w.is_finished()) {
            return Err(MeterError::Hardware("the Modbus thread has stopped".into()));
        }
        let reading = lock(&self.tracker).reading(0, Instant::now(), self.stale_after);
        Ok(Sample {
            at_ms: now_ms,
            readings: vec![reading],
        })
    }
}

impl Drop for ModbusMeter {
    fn drop(&mut self) {
        // Closing the channel stops the worker at its next await point (it waits on the bus or
        // on its timer, both of which it abandons), and the port is closed before we return.
        drop(self.stop.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests;
