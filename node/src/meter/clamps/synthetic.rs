//! A synthetic MCP3008/MCP3208 for tests: an embedded-hal [`SpiDevice`] that answers the
//! chip's bit protocol with the quantised voltage of a waveform generator at a simulated time.
//!
//! The waveforms are written by the tests as pin voltages (a bias plus sines), and the chip's
//! side of the exchange is read bit by bit from MOSI (the start bit wherever it is, SGL/DIFF,
//! three channel bits) as in datasheets DS21295/DS21298 figure 6-1; nothing here uses the
//! driver's byte layout or the DSP's formulas.
//!
//! Simulated time advances by one transfer per conversion. The test hands out time with
//! [`SimTime::run_until`], which returns once the sampling thread has used all of it and is
//! blocked waiting for more, so every sample up to then has been pushed into the meter: tests
//! synchronise on that, never on sleeps.

use crate::meter::adc::MonotonicClock;
use embedded_hal::spi::{ErrorKind, ErrorType, Operation, SpiDevice};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Pin voltage of each input at time `t` seconds.
pub(crate) type Waveform = Arc<dyn Fn(u8, f64) -> f64 + Send + Sync>;

#[derive(Debug)]
struct TimeState {
    now_us: u64,
    limit_us: u64,
    waiting: bool,
    shut: bool,
}

/// Simulated time shared by the synthetic ADC, its clock and the test.
#[derive(Debug)]
pub(crate) struct SimTime {
    state: Mutex<TimeState>,
    cv: Condvar,
    transfer_us: u64,
}

impl SimTime {
    /// Time starting at `now_us`, one conversion taking `transfer_us`.
    pub(crate) fn new(now_us: u64, transfer_us: u64) -> Arc<SimTime> {
        Arc::new(SimTime {
            state: Mutex::new(TimeState {
                now_us,
                limit_us: now_us,
                waiting: false,
                shut: false,
            }),
            cv: Condvar::new(),
            transfer_us,
        })
    }

    /// Lets the ADC run until `limit_us` and waits until it has (the sampling thread is then
    /// blocked on the next conversion, every earlier sample pushed).
    pub(crate) fn run_until(&self, limit_us: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut s = self.state.lock().unwrap();
        s.limit_us = s.limit_us.max(limit_us);
        s.waiting = false;
        self.cv.notify_all();
        while !(s.waiting && s.now_us + self.transfer_us > s.limit_us) {
            assert!(Instant::now() < deadline, "the sampling thread stopped");
            s = self
                .cv
                .wait_timeout(s, Duration::from_millis(100))
                .unwrap()
                .0;
        }
    }

    /// The power goes off: every further conversion fails.
    pub(crate) fn shutdown(&self) {
        self.state.lock().unwrap().shut = true;
        self.cv.notify_all();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unplugged;

impl embedded_hal::spi::Error for Unplugged {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// The synthetic converter.
pub(crate) struct SyntheticAdc {
    bits: u32,
    vref: f64,
    time: Arc<SimTime>,
    pins: Waveform,
}

impl SyntheticAdc {
    /// A converter of `bits` (10 or 12) with a 3.3 V reference reading `pins`.
    pub(crate) fn new(bits: u32, time: Arc<SimTime>, pins: Waveform) -> SyntheticAdc {
        SyntheticAdc {
            bits,
            vref: 3.3,
            time,
            pins,
        }
    }

    /// Waits for simulated time for one conversion; returns when it starts.
    fn take_time(&self) -> Result<u64, Unplugged> {
        let mut s = self.time.state.lock().unwrap();
        loop {
            if s.shut {
                return Err(Unplugged);
            }
            if s.now_us + self.time.transfer_us <= s.limit_us {
                break;
            }
            s.waiting = true;
            self.time.cv.notify_all();
            s = self.time.cv.wait(s).unwrap();
        }
        s.waiting = false;
        let t = s.now_us;
        s.now_us += self.time.transfer_us;
        Ok(t)
    }

    /// The chip's side of one exchange, sampling at `t_us`.
    fn exchange(&self, tx: &[u8], t_us: u64) -> Vec<u8> {
        let n = tx.len() * 8;
        let mosi = |k: usize| tx[k / 8] >> (7 - k % 8) & 1;
        // Undefined bits are driven high, to catch a decoder that forgets to mask them.
        let mut miso = vec![1u8; n];
        let Some(start) = (0..n).find(|k| mosi(*k) == 1) else {
            return pack(&miso);
        };
        if start + 7 + self.bits as usize > n {
            return pack(&miso);
        }
        let single = mosi(start + 1) == 1;
        let code = mosi(start + 2) << 2 | mosi(start + 3) << 1 | mosi(start + 4);
        let t = t_us as f64 / 1e6;
        let volts = if single {
            (self.pins)(code, t)
        } else {
            (self.pins)(code, t) - (self.pins)(code ^ 1, t)
        };
        let full = f64::from(1u32 << self.bits);
        let count = (full * volts / self.vref).floor().clamp(0.0, full - 1.0) as u32;
        miso[start + 6] = 0;
        for b in 0..self.bits as usize {
            miso[start + 7 + b] = ((count >> (self.bits as usize - 1 - b)) & 1) as u8;
        }
        pack(&miso)
    }
}

fn pack(bits: &[u8]) -> Vec<u8> {
    bits.chunks(8)
        .map(|c| c.iter().fold(0u8, |acc, b| acc << 1 | b))
        .collect()
}

impl ErrorType for SyntheticAdc {
    type Error = Unplugged;
}

impl SpiDevice for SyntheticAdc {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Unplugged> {
        for op in operations {
            match op {
                Operation::Transfer(read, write) => {
                    let t = self.take_time()?;
                    let reply = self.exchange(write, t);
                    let n = read.len().min(reply.len());
                    read[..n].copy_from_slice(&reply[..n]);
                }
                _ => return Err(Unplugged),
            }
        }
        Ok(())
    }
}

/// The sampler's clock on simulated time.
pub(crate) struct SimClock(pub(crate) Arc<SimTime>);

impl MonotonicClock for SimClock {
    fn now_us(&mut self) -> u64 {
        self.0.state.lock().unwrap().now_us
    }
}
