//! The current-clamp meter as a node's [`MeterSource`] (`[meter] source = "ct"`): a dedicated
//! sampling thread owns the ADC and feeds every sample to the per-cycle computation
//! ([`super::ct`]), which adds each cycle's energy to the import or export register; `poll`
//! only reads what has accumulated, and `persist` writes the registers durably
//! ([`super::registers`]).
//!
//! # Threads
//!
//! The sampling thread (`wattmesh-ct`) reads the inputs in turn as fast as the SPI bus allows
//! (about 20 000 conversions a second at 1 MHz) and pushes each sample into the shared
//! [`CtMeter`] under a mutex, held for one sample at a time so `poll` never waits long. A
//! failing ADC (no reply, an SPI error) is counted; the thread waits 100 ms and tries again,
//! and the channels read `Fault` (no cycles) until it answers. Dropping the source stops the
//! thread at its next sample.
//!
//! # Hardware
//!
//! On a Raspberry Pi (cargo feature `pi`) [`open`] opens the MCP3008/MCP3208 with rppal. A
//! binary built without the feature refuses `source = "ct"` with an error that says so. Tests
//! pass their own ADC, any embedded-hal [`SpiDevice`], to [`CtSource::start`].

use super::adc::{AdcError, Chip, Mcp3x08, MonotonicClock, Sampler, TimedSample};
use super::ct::{CtConfig, CtMeter, Direction};
use super::registers::{RegisterStore, SavedChannel};
use super::{ChannelKind, MeterError, MeterSource, Sample, SourceInfo};
use embedded_hal::spi::SpiDevice;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;
use tracing::warn;

/// The name under which the registers are stored.
const SOURCE: &str = "ct";

/// Reads the next timestamped sample; the sampling thread's view of the ADC.
pub trait SampleReader: Send {
    /// The next input's sample.
    fn next_sample(&mut self) -> Result<TimedSample, MeterError>;
}

impl<S, C> SampleReader for Sampler<S, C>
where
    S: SpiDevice + Send,
    S::Error: std::fmt::Debug,
    C: MonotonicClock + Send,
{
    fn next_sample(&mut self) -> Result<TimedSample, MeterError> {
        Sampler::next_sample(self)
            .map_err(|e: AdcError<S::Error>| MeterError::Hardware(e.to_string()))
    }
}

/// What the sampling thread shares with `poll`.
#[derive(Debug)]
struct Shared {
    meter: CtMeter,
    adc_errors: u64,
    last_error: Option<String>,
    /// Whether the last ADC read failed (cleared by the next good sample).
    failing: bool,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Every update under the lock is a complete push of one sample or one counter; a panic in
    // another holder cannot leave a value half-written that matters more than one sample.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The current-clamp meter, sampled on its own thread.
pub struct CtSource {
    info: SourceInfo,
    shared: Arc<Mutex<Shared>>,
    store: Box<dyn RegisterStore>,
    persist_ms: u64,
    last_persist_ms: Option<u64>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for CtSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CtSource")
            .field("info", &self.info)
            .field("persist_ms", &self.persist_ms)
            .finish_non_exhaustive()
    }
}

/// Checks a `[meter.ct]` configuration for the node: the rules of [`CtMeter::new`] plus
/// exactly one grid channel, measured against a voltage reference, and a resolution that is a
/// chip's. The messages name the config keys.
pub fn check(cfg: &CtConfig) -> Result<Chip, MeterError> {
    let grids: Vec<_> = cfg
        .channels
        .iter()
        .filter(|c| c.kind == ChannelKind::Grid)
        .collect();
    let Some(grid) = grids.first() else {
        return Err(MeterError::Config(
            "[meter.ct] has no channel with kind = \"grid\": the grid channel decides what the \
             home can trade"
                .into(),
        ));
    };
    if cfg.voltage.is_none() || grid.direction != Direction::Measured {
        return Err(MeterError::Config(format!(
            "[meter.ct]: the grid channel {:?} needs a voltage reference ([meter.ct.voltage] and \
             direction = \"measured\"): without one, import and export cannot be told apart",
            grid.name
        )));
    }
    if !(10..=3600).contains(&cfg.persist_secs) {
        return Err(MeterError::Config(format!(
            "[meter.ct] persist_secs {} is outside 10-3600",
            cfg.persist_secs
        )));
    }
    let chip = Chip::with_bits(cfg.adc_bits).ok_or_else(|| {
        MeterError::Config(format!(
            "[meter.ct] adc_bits {} is no supported ADC: 10 (MCP3008) or 12 (MCP3208)",
            cfg.adc_bits
        ))
    })?;
    CtMeter::new(cfg.clone())?;
    Ok(chip)
}

impl CtSource {
    /// Starts the meter of `cfg` on `adc` (whose chip must match `adc_bits`), timestamping
    /// samples with `clock`, continuing the registers stored in `store`.
    pub fn start<S, C>(
        cfg: CtConfig,
        adc: Mcp3x08<S>,
        clock: C,
        store: Box<dyn RegisterStore>,
    ) -> Result<CtSource, MeterError>
    where
        S: SpiDevice + Send + 'static,
        S::Error: std::fmt::Debug,
        C: MonotonicClock + Send + 'static,
    {
        let chip = check(&cfg)?;
        if adc.chip() != chip {
            return Err(MeterError::Config(format!(
                "[meter.ct] adc_bits = {} but the ADC is an {:?} ({} bits)",
                cfg.adc_bits,
                adc.chip(),
                adc.chip().bits()
            )));
        }
        let mut meter = CtMeter::new(cfg.clone())?;
        let sampler = Sampler::new(adc, clock, meter.inputs())
            .map_err(|e| MeterError::Config(e.to_string()))?;
        Self::restore(&mut meter, &cfg, store.as_ref())?;
        let info = meter.info().clone();
        let shared = Arc::new(Mutex::new(Shared {
            meter,
            adc_errors: 0,
            last_error: None,
            failing: false,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = spawn(Box::new(sampler), Arc::clone(&shared), Arc::clone(&stop))
            .map_err(|e| MeterError::Hardware(format!("cannot start the sampling thread: {e}")))?;
        Ok(CtSource {
            info,
            shared,
            store,
            persist_ms: u64::from(cfg.persist_secs) * 1000,
            last_persist_ms: None,
            stop,
            worker: Some(worker),
        })
    }

    /// Continues every channel's registers from the store. The grid channel is found by kind
    /// (the largest stored grid registers, should there be several names), the others by name.
    fn restore(
        meter: &mut CtMeter,
        cfg: &CtConfig,
        store: &dyn RegisterStore,
    ) -> Result<(), MeterError> {
        let saved = store.load(SOURCE)?;
        for (i, ch) in cfg.channels.iter().enumerate() {
            for s in &saved {
                let same = if ch.kind == ChannelKind::Grid {
                    s.kind == ChannelKind::Grid
                } else {
                    s.name == ch.name && s.kind == ch.kind
                };
                if same {
                    meter.restore_registers_mwh(i, s.import_mwh, s.export_mwh);
                }
            }
        }
        Ok(())
    }

    /// Channel `channel`'s registers in milliwatt-hours (import, export).
    pub fn registers_mwh(&self, channel: usize) -> Option<(u64, u64)> {
        lock(&self.shared).meter.registers_mwh(channel)
    }

    /// ADC errors since start, and the last one.
    pub fn adc_errors(&self) -> (u64, Option<String>) {
        let s = lock(&self.shared);
        (s.adc_errors, s.last_error.clone())
    }

    /// The settings in use now (with the calibration last applied).
    pub fn current_config(&self) -> CtConfig {
        lock(&self.shared).meter.config().clone()
    }

    /// Cycles used and discarded since start.
    pub fn cycle_counts(&self) -> (u64, u64) {
        lock(&self.shared).meter.cycle_counts()
    }
}

fn spawn(
    mut reader: Box<dyn SampleReader>,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("wattmesh-ct".into())
        .spawn(move || {
            let mut failing = false;
            while !stop.load(Ordering::Relaxed) {
                match reader.next_sample() {
                    Ok(s) => {
                        let mut sh = lock(&shared);
                        sh.meter.push(s.input, s.t_us, s.raw);
                        sh.failing = false;
                        failing = false;
                    }
                    Err(e) => {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        if !failing {
                            warn!("current clamps: {e}");
                        }
                        failing = true;
                        {
                            let mut s = lock(&shared);
                            s.adc_errors = s.adc_errors.saturating_add(1);
                            s.last_error = Some(e.to_string());
                            s.failing = true;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
}

impl MeterSource for CtSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn health(&self) -> Option<super::SourceHealth> {
        let s = lock(&self.shared);
        let (cycles, discarded) = s.meter.cycle_counts();
        let error = match (&s.last_error, s.failing, self.worker.as_ref()) {
            (_, _, w) if w.is_none_or(|w| w.is_finished()) => {
                Some("the current-clamp sampling thread has stopped".to_string())
            }
            (Some(e), true, _) => Some(format!("reading the ADC fails: {e}")),
            _ => None,
        };
        Some(super::SourceHealth::new(
            "ct",
            error,
            &[
                ("cycles", cycles),
                ("cycles_discarded", discarded),
                ("adc_errors", s.adc_errors),
            ],
        ))
    }

    fn calibrator(&self) -> Option<super::Calibrator> {
        let shared = Arc::clone(&self.shared);
        Some(Arc::new(move |cal| lock(&shared).meter.calibrate(cal)))
    }

    fn poll(&mut self, now_ms: u64) -> Result<Sample, MeterError> {
        if self.worker.as_ref().is_none_or(|w| w.is_finished()) {
            return Err(MeterError::Hardware(
                "the current-clamp sampling thread has stopped".into(),
            ));
        }
        lock(&self.shared).meter.poll(now_ms)
    }

    /// Writes every channel's registers (taken now, so at least what the last `poll` reported)
    /// when forced or when `persist_secs` have passed since the last write.
    fn persist(&mut self, now_ms: u64, force: bool) -> Result<(), MeterError> {
        let due = self
            .last_persist_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= self.persist_ms);
        if !(force || due) {
            return Ok(());
        }
        let rows: Vec<SavedChannel> = {
            let s = lock(&self.shared);
            self.info
                .channels
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let (import_mwh, export_mwh) = s.meter.registers_mwh(i)?;
                    Some(SavedChannel {
                        source: SOURCE.into(),
                        name: c.name.clone(),
                        kind: c.kind,
                        import_mwh,
                        export_mwh,
                        saved_ms: now_ms,
                    })
                })
                .collect()
        };
        self.store.save(&rows)?;
        self.last_persist_ms = Some(now_ms);
        Ok(())
    }
}

impl Drop for CtSource {
    fn drop(&mut self) {
        // The thread stops at its next sample; it is not joined, so a stuck SPI transfer can
        // never hang the node's shutdown.
        self.stop.store(true, Ordering::Relaxed);
        drop(self.worker.take());
    }
}

/// Opens the clamp meter of `cfg` on the Pi's SPI bus.
#[cfg(feature = "pi")]
pub fn open(cfg: &CtConfig, store: Box<dyn RegisterStore>) -> Result<CtSource, MeterError> {
    let chip = check(cfg)?;
    let adc = super::adc::pi::open(cfg.spi.bus, cfg.spi.chip_select, cfg.spi.clock_hz, chip)?;
    CtSource::start(cfg.clone(), adc, super::adc::StdClock::new(), store)
}

/// Without the `pi` feature there is no SPI driver: refuses with an error that says so.
#[cfg(not(feature = "pi"))]
pub fn open(cfg: &CtConfig, store: Box<dyn RegisterStore>) -> Result<CtSource, MeterError> {
    check(cfg)?;
    drop(store);
    Err(MeterError::Hardware(
        "the \"ct\" meter source reads current clamps through a Raspberry Pi's SPI bus, but this \
         wattmesh was built without the `pi` feature; rebuild it with `cargo build --release \
         --features pi` (docs/HARDWARE.md)"
            .into(),
    ))
}

#[cfg(test)]
pub(crate) mod synthetic;
#[cfg(test)]
pub(crate) mod tests;
