//! The driver against a fake SPI device that behaves like the chips bit by bit.
//!
//! The fake does not reuse the driver's byte layout: it reads the bits sent on MOSI one by
//! one, finds the start bit wherever it is, takes SGL/DIFF and three channel bits after it,
//! and answers on MISO with undefined bits (driven high, to catch a decoder that forgets to mask
//! them), a null bit six clocks after the start bit, and the result MSB first — the timing of
//! figure 6-1 in both datasheets.

use super::*;
use crate::meter::ChannelKind;
use crate::meter::ct::{CtChannelConfig, CtConfig, CtInput, CtMeter, Direction, VoltageInput};
use embedded_hal::spi::{ErrorKind, ErrorType, Operation};
use std::cell::Cell;
use std::f64::consts::TAU;
use std::rc::Rc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FakeError;

impl embedded_hal::spi::Error for FakeError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// Pin voltage of each input at time `t` seconds.
type Waveform = Box<dyn Fn(u8, f64) -> f64>;

struct FakeAdc {
    bits: u32,
    vref: f64,
    /// Microseconds, shared with the fake clock.
    now_us: Rc<Cell<u64>>,
    /// How long one transfer takes, microseconds.
    transfer_us: u64,
    pins: Waveform,
    /// Every command received.
    sent: Vec<[u8; 3]>,
    /// Answer with MISO floating high (no chip).
    absent: bool,
}

impl FakeAdc {
    fn new(bits: u32, pins: Waveform, now_us: Rc<Cell<u64>>) -> FakeAdc {
        FakeAdc {
            bits,
            vref: 3.3,
            now_us,
            transfer_us: 41,
            pins,
            sent: Vec::new(),
            absent: false,
        }
    }

    /// The chip's side of one 24-clock exchange.
    fn exchange(&mut self, tx: &[u8]) -> Vec<u8> {
        let n = tx.len() * 8;
        let mosi = |k: usize| tx[k / 8] >> (7 - k % 8) & 1;
        let mut miso = vec![1u8; n];
        if self.absent {
            return pack(&miso);
        }
        let Some(start) = (0..n).find(|k| mosi(*k) == 1) else {
            return pack(&miso);
        };
        if start + 7 + self.bits as usize > n {
            return pack(&miso);
        }
        let single = mosi(start + 1) == 1;
        let code = mosi(start + 2) << 2 | mosi(start + 3) << 1 | mosi(start + 4);
        // The chip samples early in the exchange: at the time the transfer starts.
        let t = self.now_us.get() as f64 / 1e6;
        let volts = if single {
            (self.pins)(code, t)
        } else {
            (self.pins)(code, t) - (self.pins)(code ^ 1, t)
        };
        let full = f64::from(1u32 << self.bits);
        // Output code = 2^bits · VIN / VREF, truncated, within the range.
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

impl ErrorType for FakeAdc {
    type Error = FakeError;
}

impl SpiDevice for FakeAdc {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), FakeError> {
        for op in operations {
            match op {
                Operation::Transfer(read, write) => {
                    let mut cmd = [0u8; 3];
                    cmd.copy_from_slice(&write[..3]);
                    self.sent.push(cmd);
                    let reply = self.exchange(write);
                    read.copy_from_slice(&reply[..read.len()]);
                    self.now_us.set(self.now_us.get() + self.transfer_us);
                }
                // The driver must never rely on these (see the module's note on rppal).
                _ => return Err(FakeError),
            }
        }
        Ok(())
    }
}

struct FakeClock(Rc<Cell<u64>>);

impl MonotonicClock for FakeClock {
    fn now_us(&mut self) -> u64 {
        // Reading the clock takes a microsecond, like a real syscall.
        let t = self.0.get();
        self.0.set(t + 1);
        t
    }
}

fn constant(volts: [f64; 8]) -> Waveform {
    Box::new(move |ch, _| volts[ch as usize])
}

#[test]
fn command_bytes_select_the_input_as_the_datasheets_say() {
    // Single-ended input 5: SGL = 1, D2 D1 D0 = 101.
    assert_eq!(
        Chip::Mcp3008.command(Input::Single(5)),
        Ok([0x01, 0b1101_0000, 0x00])
    );
    assert_eq!(
        Chip::Mcp3208.command(Input::Single(5)),
        Ok([0b0000_0111, 0b0100_0000, 0x00])
    );
    assert_eq!(
        Chip::Mcp3008.command(Input::Single(0)),
        Ok([0x01, 0x80, 0x00])
    );
    assert_eq!(
        Chip::Mcp3208.command(Input::Single(2)),
        Ok([0x06, 0x80, 0x00])
    );
    // Differential CH3+ / CH2−: SGL = 0, code 011.
    assert_eq!(
        Chip::Mcp3008.command(Input::Differential { positive: 3 }),
        Ok([0x01, 0x30, 0x00])
    );
    assert_eq!(
        Chip::Mcp3208.command(Input::Differential { positive: 3 }),
        Ok([0x04, 0xc0, 0x00])
    );
    assert_eq!(
        Chip::Mcp3008.command(Input::Single(8)),
        Err(InvalidInput(8))
    );

    // And through the device: every input, both chips, the bytes on the wire.
    for chip in [Chip::Mcp3008, Chip::Mcp3208] {
        let clock = Rc::new(Cell::new(0));
        let fake = FakeAdc::new(u32::from(chip.bits()), constant([1.0; 8]), clock);
        let mut adc = Mcp3x08::new(fake, chip);
        for ch in 0..8 {
            adc.read(Input::Single(ch)).unwrap();
        }
        let fake = adc.release();
        for (ch, sent) in fake.sent.iter().enumerate() {
            assert_eq!(*sent, chip.command(Input::Single(ch as u8)).unwrap());
        }
    }
}

#[test]
fn replies_decode_to_the_right_count_at_10_and_12_bits() {
    // Distinct voltages on every input, so a wrong channel shows.
    let volts = [0.0, 0.4, 0.8, 1.2, 1.65, 2.2, 3.0, 3.3];
    for chip in [Chip::Mcp3008, Chip::Mcp3208] {
        let bits = u32::from(chip.bits());
        let fake = FakeAdc::new(bits, constant(volts), Rc::new(Cell::new(0)));
        let mut adc = Mcp3x08::new(fake, chip);
        for (ch, v) in volts.iter().enumerate() {
            let full = f64::from(1u32 << bits);
            let expected = ((full * v / 3.3).floor()).min(full - 1.0) as u16;
            assert_eq!(
                adc.read(Input::Single(ch as u8)).unwrap(),
                expected,
                "{chip:?} input {ch}"
            );
        }
        // Mid-scale, full scale.
        assert_eq!(
            adc.read(Input::Single(4)).unwrap(),
            if bits == 10 { 512 } else { 2048 }
        );
        assert_eq!(adc.read(Input::Single(7)).unwrap(), chip.max_count());
        // Differential: CH5 − CH4 = 0.55 V; CH4 − CH5 is negative and reads 0.
        let full = f64::from(1u32 << bits);
        let diff = (full * (2.2 - 1.65) / 3.3).floor() as u16;
        assert_eq!(adc.read(Input::Differential { positive: 5 }).unwrap(), diff);
        assert_eq!(adc.read(Input::Differential { positive: 4 }).unwrap(), 0);
    }
    // The undefined high bits are masked: a reply with every `?` bit set decodes cleanly.
    assert_eq!(Chip::Mcp3008.decode([0xff, 0b1111_1011, 0x34]), Some(0x334));
    assert_eq!(Chip::Mcp3208.decode([0xff, 0b1110_1010, 0x34]), Some(0xa34));
}

#[test]
fn a_missing_chip_is_reported_not_read_as_full_scale() {
    let mut fake = FakeAdc::new(10, constant([1.0; 8]), Rc::new(Cell::new(0)));
    fake.absent = true;
    let mut adc = Mcp3x08::new(fake, Chip::Mcp3008);
    assert_eq!(adc.read(Input::Single(0)), Err(AdcError::NoReply));
    let mut fake = FakeAdc::new(12, constant([1.0; 8]), Rc::new(Cell::new(0)));
    fake.absent = true;
    let mut adc = Mcp3x08::new(fake, Chip::Mcp3208);
    assert_eq!(adc.read(Input::Single(0)), Err(AdcError::NoReply));
}

/// The whole path on synthetic mains: a 60 Hz voltage reference and a current clamp, each
/// biased at half the reference voltage, read by the sampler through the fake device with its
/// real transfer time (so voltage and current are 42 µs apart and the sample rate is not a
/// multiple of 60 Hz), into the CT computation. The power matches the waveforms' within 1 %.
#[test]
fn the_sampler_feeds_the_ct_computation_through_the_fake_device() {
    for chip in [Chip::Mcp3008, Chip::Mcp3208] {
        let bits = u32::from(chip.bits());
        let (v_amp, i_amp, lag) = (1.2, 0.9, 35f64.to_radians());
        let pins: Waveform = Box::new(move |ch, t| {
            let w = TAU * 60.0 * t;
            match ch {
                0 => 1.65 + v_amp * w.sin(),
                1 => 1.62 + i_amp * (w - lag).sin(),
                _ => 0.0,
            }
        });
        let clock = Rc::new(Cell::new(1_000_000));
        let fake = FakeAdc::new(bits, pins, clock.clone());
        let adc = Mcp3x08::new(fake, chip);
        let counts_per_volt = f64::from(1u32 << bits) / 3.3;
        let (volts_per_count, amps_per_count) =
            (120.0 * 2f64.sqrt() / (v_amp * counts_per_volt), 0.05);
        let cfg = CtConfig {
            adc_bits: chip.bits(),
            voltage: Some(VoltageInput {
                adc_input: 0,
                volts_per_count,
            }),
            channels: vec![CtChannelConfig {
                name: "grid".into(),
                kind: ChannelKind::Grid,
                legs: vec![CtInput {
                    adc_input: 1,
                    amps_per_count,
                    phase_lead_deg: 0.0,
                    invert_voltage: false,
                    spans_both_legs: false,
                    noise_floor_a: 0.1,
                }],
                direction: Direction::Measured,
            }],
            ..CtConfig::default()
        };
        let mut meter = CtMeter::new(cfg).unwrap();
        let mut sampler = Sampler::new(adc, FakeClock(clock), meter.inputs()).unwrap();
        let cycles = sampler.feed(&mut meter, 40_000).unwrap();
        // 40 000 samples of 43 µs: about 1.7 s, about 100 cycles.
        assert!(cycles.len() > 90, "{} cycles", cycles.len());
        let dur: f64 = cycles.iter().map(|c| c.duration_s).sum();
        let p = cycles
            .iter()
            .map(|c| c.channels[0].power_w * c.duration_s)
            .sum::<f64>()
            / dur;
        let expected = 120.0 * (i_amp * counts_per_volt * amps_per_count / 2f64.sqrt()) * lag.cos();
        eprintln!("{chip:?} through the fake SPI: {p:.2} W, expected {expected:.2} W");
        assert!((p / expected - 1.0).abs() < 0.01, "{p} vs {expected}");
        for c in &cycles {
            assert!((c.frequency_hz.unwrap() - 60.0).abs() < 0.05);
            assert!((c.channels[0].legs[0].vrms_v - 120.0).abs() < 1.2);
        }
    }
}

#[test]
fn the_sampler_reads_inputs_in_turn_with_rising_timestamps() {
    let clock = Rc::new(Cell::new(0));
    let fake = FakeAdc::new(
        10,
        constant([0.5, 1.0, 1.5, 2.0, 0.0, 0.0, 0.0, 0.0]),
        clock.clone(),
    );
    let mut sampler = Sampler::new(
        Mcp3x08::new(fake, Chip::Mcp3008),
        FakeClock(clock),
        vec![3, 0, 2],
    )
    .unwrap();
    let samples: Vec<TimedSample> = (0..6).map(|_| sampler.next_sample().unwrap()).collect();
    let order: Vec<u8> = samples.iter().map(|s| s.input).collect();
    assert_eq!(order, [3, 0, 2, 3, 0, 2]);
    assert_eq!(samples[0].raw, (1024.0 * 2.0 / 3.3) as u16);
    assert!(samples.windows(2).all(|w| w[1].t_us > w[0].t_us));
    assert!(matches!(
        Sampler::new(
            Mcp3x08::new(
                FakeAdc::new(10, constant([0.0; 8]), Rc::new(Cell::new(0))),
                Chip::Mcp3008
            ),
            FakeClock(Rc::new(Cell::new(0))),
            vec![9]
        ),
        Err(InvalidInput(9))
    ));
}
