//! What the Modbus worker has learnt about the meter, and the rules that turn it into a
//! [`Reading`]: the serial check, the energy conversion, the sign mapping, and registers that
//! never go backwards. Pure: time is passed in.

use super::sdm::{RawReading, kwh_bits_to_wh};
use super::{ModbusHealth, Model};
use crate::meter::{ChannelStatus, LegReading, Reading, Registers};
use std::time::{Duration, Instant};

/// The last reading that passed every check, in our sign convention.
#[derive(Debug, Clone, PartialEq)]
struct Good {
    registers: Registers,
    power_w: f64,
    legs: Vec<LegReading>,
    frequency_hz: f64,
}

/// The meter's state as the worker records it and `poll` reads it.
#[derive(Debug)]
pub(super) struct Tracker {
    legs: usize,
    reversed: bool,
    /// The serial number the meter must answer with: configured, or learnt at first contact.
    serial: Option<u32>,
    serial_learnt: bool,
    good: Option<Good>,
    /// Why the last cycle was refused, if it was.
    fault: Option<String>,
    last_ok: Option<Instant>,
    reads_ok: u64,
    reads_failed: u64,
}

impl Tracker {
    /// A tracker for a `model` meter whose channel has `legs` legs (phases read), expecting
    /// serial number `serial` (`None`: the first one seen).
    pub(super) fn new(model: Model, legs: usize, reversed: bool, serial: Option<u32>) -> Tracker {
        Tracker {
            legs: legs.min(model.phases()),
            reversed,
            serial,
            serial_learnt: false,
            good: None,
            fault: None,
            last_ok: None,
            reads_ok: 0,
            reads_failed: 0,
        }
    }

    /// Records a read cycle that failed (no answer, a transport error, a Modbus exception).
    /// The last good values are kept; nothing is estimated.
    pub(super) fn failed(&mut self, reason: String) {
        self.reads_failed = self.reads_failed.saturating_add(1);
        self.fault = Some(reason);
    }

    /// Records a complete answer at `at`: accepted if the serial number matches, every value is
    /// valid and neither register went backwards; otherwise the channel faults and keeps the
    /// last good values.
    pub(super) fn answered(&mut self, at: Instant, serial: u32, raw: &RawReading) {
        match self.check(serial, raw) {
            Ok(good) => {
                if self.serial.is_none() {
                    self.serial = Some(serial);
                    self.serial_learnt = true;
                }
                self.good = Some(good);
                self.fault = None;
                self.last_ok = Some(at);
                self.reads_ok = self.reads_ok.saturating_add(1);
            }
            Err(reason) => self.failed(reason),
        }
    }

    fn check(&self, serial: u32, raw: &RawReading) -> Result<Good, String> {
        if let Some(expected) = self.serial {
            if serial != expected {
                let source = if self.serial_learnt {
                    "the one first seen at this address (no serial was configured)"
                } else {
                    "the configured serial"
                };
                return Err(format!(
                    "wrong meter: serial number {serial} answers, expected {expected} ({source}); \
                     a swapped meter is refused until the configured serial is changed"
                ));
            }
        }
        let energy = |bits: u32, name: &str| {
            kwh_bits_to_wh(bits).ok_or_else(|| {
                format!(
                    "the meter's {name} energy register holds {} kWh, which is no energy count",
                    f32::from_bits(bits)
                )
            })
        };
        let (mut import_wh, mut export_wh) = (
            energy(raw.import_kwh_bits, "import")?,
            energy(raw.export_kwh_bits, "export")?,
        );
        let sign = if self.reversed {
            // Mounted the other way round: the meter's export is the home's import.
            std::mem::swap(&mut import_wh, &mut export_wh);
            -1.0
        } else {
            1.0
        };
        let registers = Registers {
            import_wh,
            export_wh,
        };
        if let Some(last) = &self.good {
            let last = last.registers;
            for (name, now, before) in [
                ("import", registers.import_wh, last.import_wh),
                ("export", registers.export_wh, last.export_wh),
            ] {
                if now < before {
                    return Err(format!(
                        "the {name} register went backwards: the meter reads {now} Wh after \
                         {before} Wh; keeping {before} Wh until it catches up (was the meter \
                         reset or replaced?)"
                    ));
                }
            }
        }
        let finite = raw
            .voltage_v
            .iter()
            .chain(&raw.current_a)
            .chain(&raw.power_w)
            .chain([&raw.total_power_w, &raw.frequency_hz])
            .all(|x| x.is_finite());
        if !finite {
            return Err("the meter returned a value that is not a number".into());
        }
        let legs = (0..self.legs)
            .map(|p| {
                let vrms_v = f64::from(raw.voltage_v[p]);
                let irms_a = f64::from(raw.current_a[p]).abs();
                let real_power_w = sign * f64::from(raw.power_w[p]);
                let apparent_power_va = vrms_v.abs() * irms_a;
                LegReading {
                    vrms_v,
                    irms_a,
                    real_power_w,
                    apparent_power_va,
                    power_factor: if apparent_power_va > 0.0 {
                        (real_power_w / apparent_power_va).clamp(-1.0, 1.0)
                    } else {
                        0.0
                    },
                }
            })
            .collect();
        Ok(Good {
            registers,
            power_w: sign * f64::from(raw.total_power_w),
            legs,
            frequency_hz: f64::from(raw.frequency_hz),
        })
    }

    /// Whether the last good answer is recent enough at `now`.
    fn is_fresh(&self, now: Instant, stale_after: Duration) -> bool {
        self.last_ok
            .is_some_and(|t| now.saturating_duration_since(t) <= stale_after)
    }

    /// The channel's reading at `now`. `Ok` only while the last cycle was accepted and is at
    /// most `stale_after` old. A `Fault` reading keeps the last good registers (they are still
    /// true: registers only grow) but reports no power, legs or frequency; with no good reading
    /// yet it has no registers at all.
    pub(super) fn reading(&self, channel: usize, now: Instant, stale_after: Duration) -> Reading {
        let ok = self.fault.is_none() && self.is_fresh(now, stale_after);
        match (&self.good, ok) {
            (Some(good), true) => Reading {
                channel,
                power_w: good.power_w,
                registers: Some(good.registers),
                status: ChannelStatus::Ok,
                legs: good.legs.clone(),
                frequency_hz: Some(good.frequency_hz),
            },
            (good, _) => Reading {
                channel,
                power_w: 0.0,
                registers: good.as_ref().map(|g| g.registers),
                status: ChannelStatus::Fault,
                legs: Vec::new(),
                frequency_hz: None,
            },
        }
    }

    /// The meter's health at `now`, for status pages and logs.
    pub(super) fn health(&self, now: Instant, stale_after: Duration) -> ModbusHealth {
        let fresh = self.is_fresh(now, stale_after);
        let error = match (&self.fault, self.last_ok) {
            (Some(reason), _) => Some(reason.clone()),
            (None, _) if fresh => None,
            (None, None) => Some("no answer from the meter yet".into()),
            (None, Some(t)) => Some(format!(
                "no reading for {} ms",
                now.saturating_duration_since(t).as_millis()
            )),
        };
        ModbusHealth {
            status: if error.is_none() {
                ChannelStatus::Ok
            } else {
                ChannelStatus::Fault
            },
            error,
            serial: self.serial,
            serial_learnt: self.serial_learnt,
            registers: self.good.as_ref().map(|g| g.registers),
            reads_ok: self.reads_ok,
            reads_failed: self.reads_failed,
        }
    }
}
