//! DSMR P1 smart-meter telegrams (the Netherlands, Belgium, Luxembourg): the utility's own
//! meter as a node's [`MeterSource`] (`[meter] source = "p1"`), read from its P1 port on a
//! serial device (a P1 cable: RJ12 to USB) or from a TCP socket (a ser2net-style P1-to-network
//! bridge). The meter pushes a telegram every second (DSMR 5) or ten (DSMR 4); nothing is sent
//! to it.
//!
//! Like a Modbus meter it keeps its own import and export registers, so the node reads
//! finished registers ([`telegram`] says how they become whole watt-hours) and stores none.
//!
//! # When a telegram is refused
//!
//! A telegram is taken only if its CRC matches, it parses completely and it comes from the
//! expected meter. Otherwise it is counted ([`P1Health`]) and nothing of it is used:
//!
//! - bad CRC, no CRC (DSMR 2/3), a partial or oversized telegram, a malformed or missing value;
//! - another equipment identifier than `equipment_id` (or, when none is configured, than the
//!   first one seen since start): a swapped meter never continues the old one's registers;
//! - a register below the last accepted one (a reset or replaced meter): the last good value is
//!   kept until the meter's register reaches it again.
//!
//! The channel is `Fault` (keeping the last good registers, with no power) while the latest
//! telegram was refused, and when no telegram was accepted for `stale_after_ms`.
//!
//! # How it runs
//!
//! [`P1Meter::start`] starts one thread (`wattmesh-p1`) with a single-threaded tokio runtime
//! that owns the port or socket. A read that waits longer than `stale_after_ms`, a closed
//! socket or a port error drops the connection, forgets any telegram in progress, and connects
//! again a second later. `poll` never touches the port.

pub mod telegram;

use self::telegram::{Framer, Telegram, TelegramError};
use super::{
    ChannelInfo, ChannelKind, ChannelStatus, Connection, Flow, Mains, MeterError, MeterSource,
    Reading, Registers, Sample, SourceInfo,
};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tracing::{debug, info, warn};

/// How to reach the P1 port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum P1Transport {
    /// A P1 cable on a serial device. DSMR 4 and 5: 115200 baud, 8 data bits, no parity, one
    /// stop bit.
    Serial {
        /// The device (`/dev/ttyUSB0`, or a stable `/dev/serial/by-id/...` name).
        device: String,
        /// Baud rate (115200 for DSMR 4 and 5).
        #[serde(default = "default_baud")]
        baud: u32,
    },
    /// A TCP socket that passes the P1 port's bytes through (ser2net, a P1 Wi-Fi dongle).
    Tcp {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
    },
}

fn default_baud() -> u32 {
    115_200
}

impl std::fmt::Display for P1Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            P1Transport::Serial { device, .. } => write!(f, "{device}"),
            P1Transport::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// A P1 meter's settings. The default: a P1 cable on `/dev/ttyUSB0` at 115200 baud, the grid
/// connection, a European single-phase 230 V 50 Hz supply, stale after 30 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct P1Config {
    /// The channel's name for people.
    pub name: String,
    /// The meter's equipment identifier (`0-0:96.1.1`, as the telegram sends it). Another one
    /// faults the channel; `None` accepts the first meter seen and holds on to it until
    /// restart. Set it.
    pub equipment_id: Option<String>,
    /// How long without an accepted telegram before the channel faults, milliseconds.
    pub stale_after_ms: u32,
    /// The supply (for display; a P1 meter reports energy and power, not per-leg detail).
    pub mains: Mains,
    /// How to reach the port.
    pub transport: P1Transport,
}

impl Default for P1Config {
    fn default() -> P1Config {
        P1Config {
            name: "grid".into(),
            equipment_id: None,
            stale_after_ms: 30_000,
            mains: Mains {
                connection: Connection::SinglePhase,
                nominal_v: 230.0,
                nominal_hz: 50.0,
            },
            transport: P1Transport::Serial {
                device: "/dev/ttyUSB0".into(),
                baud: default_baud(),
            },
        }
    }
}

impl P1Config {
    /// Checks the settings.
    pub fn check(&self) -> Result<(), MeterError> {
        let bad = |m: &str| Err(MeterError::Config(format!("[meter.p1] {m}")));
        if self.name.trim().is_empty() {
            return bad("the channel needs a name");
        }
        if !(2_000..=600_000).contains(&self.stale_after_ms) {
            return bad("stale_after_ms is outside 2000-600000");
        }
        if self
            .equipment_id
            .as_deref()
            .is_some_and(|e| e.trim().is_empty())
        {
            return bad("equipment_id is empty: leave it out or give the meter's identifier");
        }
        match &self.transport {
            P1Transport::Serial { device, baud } if device.trim().is_empty() || *baud == 0 => {
                bad("serial needs a device and a baud rate")
            }
            P1Transport::Tcp { host, port } if host.trim().is_empty() || *port == 0 => {
                bad("tcp needs a host and a port")
            }
            _ => Ok(()),
        }
    }
}

/// Counters and state, for status pages, logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct P1Health {
    /// The channel's status as `poll` reports it now.
    pub status: Option<ChannelStatus>,
    /// Why the channel is faulty, in words for the owner.
    pub error: Option<String>,
    /// The equipment identifier held on to (configured, or the first seen).
    pub equipment_id: Option<String>,
    /// The last good registers.
    pub registers: Option<Registers>,
    /// Telegrams accepted.
    pub telegrams: u64,
    /// Telegrams refused for a bad or missing CRC.
    pub crc_errors: u64,
    /// Partial, oversized or malformed telegrams.
    pub malformed: u64,
    /// Telegrams from another meter.
    pub wrong_meter: u64,
    /// Telegrams whose registers went backwards.
    pub backwards: u64,
    /// Connections lost or failed.
    pub connection_errors: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct Good {
    registers: Registers,
    power_w: f64,
}

/// What the worker has learnt, and the rules that make it a reading. Pure: time is passed in.
#[derive(Debug)]
pub(crate) struct Tracker {
    equipment_id: Option<String>,
    good: Option<Good>,
    fault: Option<String>,
    last_ok: Option<Instant>,
    health: P1Health,
}

impl Tracker {
    pub(crate) fn new(equipment_id: Option<String>) -> Tracker {
        Tracker {
            equipment_id,
            good: None,
            fault: None,
            last_ok: None,
            health: P1Health::default(),
        }
    }

    /// A framed telegram (or a framing error) arrived at `at`.
    pub(crate) fn frame(&mut self, at: Instant, frame: Result<Vec<u8>, TelegramError>) {
        match frame.and_then(|f| Telegram::parse(&f)) {
            Ok(t) => self.telegram(at, t),
            Err(e) => {
                match e {
                    TelegramError::Crc { .. } | TelegramError::NoCrc => self.health.crc_errors += 1,
                    _ => self.health.malformed += 1,
                }
                self.fault = Some(format!("refused a telegram: {e}"));
            }
        }
    }

    fn telegram(&mut self, at: Instant, t: Telegram) {
        let id = t.equipment_id.clone().unwrap_or_default();
        match &self.equipment_id {
            Some(expected) if *expected != id => {
                self.health.wrong_meter += 1;
                self.fault = Some(format!(
                    "wrong meter: equipment id {id:?} answers, expected {expected:?}; a swapped \
                     meter is refused until [meter.p1] equipment_id names it"
                ));
                return;
            }
            Some(_) => {}
            None => self.equipment_id = Some(id),
        }
        let (Some(import_wh), Some(export_wh)) = (t.total_import_wh(), t.total_export_wh()) else {
            self.health.malformed += 1;
            self.fault = Some("register overflow".into());
            return;
        };
        if let Some(g) = &self.good {
            if import_wh < g.registers.import_wh || export_wh < g.registers.export_wh {
                self.health.backwards += 1;
                self.fault = Some(format!(
                    "the registers went backwards (import {import_wh} Wh, export {export_wh} Wh \
                     after {} and {}); keeping the last good values (was the meter replaced?)",
                    g.registers.import_wh, g.registers.export_wh
                ));
                return;
            }
        }
        // Whole watts, positive import: the telegram's powers are exact thousandths of a kW.
        let power_w = t.import_w as f64 - t.export_w as f64;
        self.good = Some(Good {
            registers: Registers {
                import_wh,
                export_wh,
            },
            power_w,
        });
        self.fault = None;
        self.last_ok = Some(at);
        self.health.telegrams += 1;
    }

    /// The connection failed or was lost.
    pub(crate) fn connection_failed(&mut self, reason: String) {
        self.health.connection_errors += 1;
        self.fault = Some(reason);
    }

    fn is_fresh(&self, now: Instant, stale_after: Duration) -> bool {
        self.last_ok
            .is_some_and(|t| now.saturating_duration_since(t) <= stale_after)
    }

    pub(crate) fn reading(&self, now: Instant, stale_after: Duration) -> Reading {
        let ok = self.fault.is_none() && self.is_fresh(now, stale_after);
        Reading {
            channel: 0,
            power_w: if ok {
                self.good.as_ref().map_or(0.0, |g| g.power_w)
            } else {
                0.0
            },
            registers: self.good.as_ref().map(|g| g.registers),
            status: if ok && self.good.is_some() {
                ChannelStatus::Ok
            } else {
                ChannelStatus::Fault
            },
            legs: Vec::new(),
            frequency_hz: None,
        }
    }

    pub(crate) fn health(&self, now: Instant, stale_after: Duration) -> P1Health {
        let r = self.reading(now, stale_after);
        let error = match (&self.fault, self.last_ok) {
            (Some(e), _) => Some(e.clone()),
            (None, _) if r.status == ChannelStatus::Ok => None,
            (None, None) => Some("no telegram from the meter yet".into()),
            (None, Some(_)) => Some("no telegram for too long".into()),
        };
        P1Health {
            status: Some(r.status),
            error,
            equipment_id: self.equipment_id.clone(),
            registers: r.registers,
            ..self.health.clone()
        }
    }
}

fn lock(t: &Mutex<Tracker>) -> MutexGuard<'_, Tracker> {
    // Updates are whole assignments; a poisoned lock still holds consistent values.
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// A P1 port as a [`MeterSource`] with one grid channel.
#[derive(Debug)]
pub struct P1Meter {
    info: SourceInfo,
    stale_after: Duration,
    tracker: Arc<Mutex<Tracker>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    worker: Option<JoinHandle<()>>,
}

impl P1Meter {
    /// Checks `cfg` and starts reading the port in the background. Succeeds even if the port
    /// cannot be opened yet (the channel is `Fault` until telegrams arrive).
    pub fn start(cfg: P1Config) -> Result<P1Meter, MeterError> {
        cfg.check()?;
        let info = SourceInfo {
            channels: vec![ChannelInfo {
                name: cfg.name.clone(),
                kind: ChannelKind::Grid,
                flow: Flow::Bidirectional,
            }],
            mains: cfg.mains,
            simulated: false,
        };
        info.check()?;
        let tracker = Arc::new(Mutex::new(Tracker::new(cfg.equipment_id.clone())));
        let stale_after = Duration::from_millis(u64::from(cfg.stale_after_ms));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| MeterError::Hardware(format!("cannot start the P1 thread: {e}")))?;
        let t = Arc::clone(&tracker);
        let worker = std::thread::Builder::new()
            .name("wattmesh-p1".into())
            .spawn(move || runtime.block_on(run(cfg, t, stopped)))
            .map_err(|e| MeterError::Hardware(format!("cannot start the P1 thread: {e}")))?;
        Ok(P1Meter {
            info,
            stale_after,
            tracker,
            stop: Some(stop),
            worker: Some(worker),
        })
    }

    /// Counters and state now.
    pub fn health(&self) -> P1Health {
        lock(&self.tracker).health(Instant::now(), self.stale_after)
    }
}

impl MeterSource for P1Meter {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn health(&self) -> Option<super::SourceHealth> {
        let h = P1Meter::health(self);
        Some(super::SourceHealth::new(
            "p1",
            h.error,
            &[
                ("telegrams", h.telegrams),
                ("crc_errors", h.crc_errors),
                ("malformed", h.malformed),
                ("wrong_meter", h.wrong_meter),
                ("backwards", h.backwards),
                ("connection_errors", h.connection_errors),
            ],
        ))
    }

    fn poll(&mut self, now_ms: u64) -> Result<Sample, MeterError> {
        if self.worker.as_ref().is_none_or(|w| w.is_finished()) {
            return Err(MeterError::Hardware("the P1 thread has stopped".into()));
        }
        let reading = lock(&self.tracker).reading(Instant::now(), self.stale_after);
        Ok(Sample {
            at_ms: now_ms,
            readings: vec![reading],
        })
    }
}

impl Drop for P1Meter {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

type Port = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

async fn connect(cfg: &P1Config, timeout: Duration) -> Result<Port, String> {
    match &cfg.transport {
        P1Transport::Tcp { host, port } => {
            let s = tokio::time::timeout(
                timeout,
                tokio::net::TcpStream::connect((host.as_str(), *port)),
            )
            .await
            .map_err(|_| format!("connecting to {host}:{port} timed out"))?
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
            Ok(Box::new(s))
        }
        P1Transport::Serial { device, baud } => {
            let builder = tokio_serial::new(device, *baud)
                .data_bits(tokio_serial::DataBits::Eight)
                .parity(tokio_serial::Parity::None)
                .stop_bits(tokio_serial::StopBits::One)
                .flow_control(tokio_serial::FlowControl::None);
            let port = tokio_serial::SerialStream::open(&builder)
                .map_err(|e| format!("cannot open serial port {device}: {e}"))?;
            Ok(Box::new(port))
        }
    }
}

async fn run(
    cfg: P1Config,
    tracker: Arc<Mutex<Tracker>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let stale = Duration::from_millis(u64::from(cfg.stale_after_ms));
    let mut framer = Framer::new();
    let mut logged: Option<Option<String>> = None;
    loop {
        let port = tokio::select! {
            _ = &mut stop => break,
            p = connect(&cfg, stale) => p,
        };
        match port {
            Ok(mut port) => {
                let mut buf = [0u8; 2048];
                loop {
                    let n = tokio::select! {
                        _ = &mut stop => return,
                        r = tokio::time::timeout(stale, port.read(&mut buf)) => r,
                    };
                    let reason = match n {
                        Ok(Ok(0)) => "the P1 connection was closed".to_string(),
                        Ok(Ok(n)) => {
                            let frames = framer.push(buf.get(..n).unwrap_or_default());
                            let mut t = lock(&tracker);
                            for f in frames {
                                t.frame(Instant::now(), f);
                            }
                            let h = t.health(Instant::now(), Duration::MAX);
                            drop(t);
                            let error = h.error;
                            if logged.as_ref() != Some(&error) {
                                match &error {
                                    None => info!(
                                        meter = %cfg.transport,
                                        equipment_id = h.equipment_id.as_deref().unwrap_or(""),
                                        "P1 telegrams arrive"
                                    ),
                                    Some(e) => warn!(meter = %cfg.transport, "P1: {e}"),
                                }
                                logged = Some(error);
                            }
                            continue;
                        }
                        Ok(Err(e)) => format!("reading the P1 port failed: {e}"),
                        Err(_) => format!("no data from the P1 port for {} ms", stale.as_millis()),
                    };
                    let mut t = lock(&tracker);
                    if framer.reset() {
                        t.frame(Instant::now(), Err(TelegramError::Partial));
                    }
                    t.connection_failed(reason.clone());
                    drop(t);
                    warn!(meter = %cfg.transport, "{reason}");
                    logged = None;
                    break;
                }
            }
            Err(e) => {
                lock(&tracker).connection_failed(e.clone());
                if logged.as_ref() != Some(&Some(e.clone())) {
                    warn!(meter = %cfg.transport, "P1: {e}");
                    logged = Some(Some(e));
                }
            }
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    debug!(meter = %cfg.transport, "P1 thread stopped");
}

#[cfg(test)]
mod tests;
