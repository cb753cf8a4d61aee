//! SPI analogue-to-digital converters for current clamps: Microchip's MCP3008 (8 inputs,
//! 10 bits) and MCP3208 (8 inputs, 12 bits), driven through embedded-hal 1.0's [`SpiDevice`],
//! and a sampler that reads the meter's inputs in turn, each with its own timestamp.
//!
//! The driver is written against the trait, not against a Raspberry Pi library, so it is
//! tested with a fake device on any machine; on a Pi, [`pi::open`] (cargo feature `pi`)
//! constructs it with rppal.
//!
//! # The SPI command (datasheets DS21295 and DS21298, section 6.1)
//!
//! One conversion is one three-byte full-duplex transfer in SPI mode 0. The host sends a start
//! bit, then SGL/DIFF (1 = single-ended), then the three channel bits D2 D1 D0; the chip samples
//! for one and a half clocks, sends a null bit (always 0) and then the result, most significant
//! bit first. The command is placed so the result ends exactly at the last bit received:
//!
//! | chip | sent | received |
//! | --- | --- | --- |
//! | MCP3008 | `0000_0001`, `S D2 D1 D0 xxxx`, `xxxx_xxxx` | `????_????`, `????_?0 B9 B8`, `B7..B0` |
//! | MCP3208 | `0000_01 S D2`, `D1 D0 xx_xxxx`, `xxxx_xxxx` | `????_????`, `???0 B11..B8`, `B7..B0` |
//!
//! Bits marked `?` are undefined (the output is high-impedance) and are masked off. A set null
//! bit means no chip answered (MISO floating high) and is reported as [`AdcError::NoReply`].
//!
//! The transfer is made with separate read and write buffers ([`SpiDevice::transfer`]), not in
//! place: rppal 0.22 turns an in-place transfer into a read-only segment that sends zeros, which
//! the chip would never see as a command.

use embedded_hal::spi::SpiDevice;
use serde::{Deserialize, Serialize};

/// Which converter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chip {
    /// MCP3008: 8 inputs, 10 bits.
    Mcp3008,
    /// MCP3208: 8 inputs, 12 bits.
    Mcp3208,
}

impl Chip {
    /// Resolution, bits.
    pub fn bits(self) -> u8 {
        match self {
            Chip::Mcp3008 => 10,
            Chip::Mcp3208 => 12,
        }
    }

    /// The largest count.
    pub fn max_count(self) -> u16 {
        (1u16 << self.bits()) - 1
    }

    /// The three bytes to send for one conversion of `input`.
    pub fn command(self, input: Input) -> Result<[u8; 3], InvalidInput> {
        let (single, code) = match input {
            Input::Single(ch) if ch < 8 => (1u8, ch),
            Input::Differential { positive } if positive < 8 => (0u8, positive),
            Input::Single(ch) | Input::Differential { positive: ch } => {
                return Err(InvalidInput(ch));
            }
        };
        Ok(match self {
            Chip::Mcp3008 => [0x01, (single << 7) | (code << 4), 0x00],
            Chip::Mcp3208 => [0x04 | (single << 1) | (code >> 2), (code & 0x03) << 6, 0x00],
        })
    }

    /// The count in the three bytes received; `None` if the null bit is set (no chip).
    pub fn decode(self, rx: [u8; 3]) -> Option<u16> {
        let (null_bit, high_mask) = match self {
            Chip::Mcp3008 => (0x04, 0x03),
            Chip::Mcp3208 => (0x10, 0x0f),
        };
        if rx[1] & null_bit != 0 {
            return None;
        }
        Some((u16::from(rx[1] & high_mask) << 8) | u16::from(rx[2]))
    }
}

/// Where the ADC sits on the Raspberry Pi's SPI bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpiConfig {
    /// The SPI bus: 0 is the header's pins 19/21/23 (MOSI, MISO, SCLK).
    pub bus: u8,
    /// The chip select: 0 = CE0 (pin 24), 1 = CE1 (pin 26).
    pub chip_select: u8,
    /// The SPI clock, hertz. 1 MHz is within both chips' limits at 3.3 V (1.35 MHz at 2.7 V).
    pub clock_hz: u32,
}

impl Default for SpiConfig {
    fn default() -> SpiConfig {
        SpiConfig {
            bus: 0,
            chip_select: 0,
            clock_hz: 1_000_000,
        }
    }
}

impl Chip {
    /// The chip with `bits` of resolution: 10 is the MCP3008, 12 the MCP3208.
    pub fn with_bits(bits: u8) -> Option<Chip> {
        match bits {
            10 => Some(Chip::Mcp3008),
            12 => Some(Chip::Mcp3208),
            _ => None,
        }
    }
}

/// An input selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Single-ended input 0–7, measured against the chip's ground.
    Single(u8),
    /// A differential pair: `positive` is IN+ and its neighbour `positive ^ 1` is IN−
    /// (the datasheet's pairs CH0/CH1, CH2/CH3, CH4/CH5, CH6/CH7, either way round).
    Differential {
        /// The input used as IN+.
        positive: u8,
    },
}

/// An input number beyond 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ADC input {0} does not exist (0..=7)")]
pub struct InvalidInput(pub u8);

/// What goes wrong reading the ADC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdcError<E: std::fmt::Debug> {
    /// The SPI transfer failed.
    #[error("SPI transfer failed: {0:?}")]
    Spi(E),
    /// The input does not exist.
    #[error(transparent)]
    Input(#[from] InvalidInput),
    /// The null bit was set: nothing answered on MISO (chip missing, unpowered or miswired).
    #[error("no reply from the ADC (null bit set): check its power, CS and MISO wiring")]
    NoReply,
}

/// An MCP3008 or MCP3208 on an SPI device.
#[derive(Debug)]
pub struct Mcp3x08<S> {
    spi: S,
    chip: Chip,
}

impl<S: SpiDevice> Mcp3x08<S> {
    /// The converter `chip` on `spi` (mode 0; at most 1.35 MHz at 2.7 V and 3.6 MHz at 5 V).
    pub fn new(spi: S, chip: Chip) -> Mcp3x08<S> {
        Mcp3x08 { spi, chip }
    }

    /// Which converter.
    pub fn chip(&self) -> Chip {
        self.chip
    }

    /// One conversion of `input`, in counts.
    pub fn read(&mut self, input: Input) -> Result<u16, AdcError<S::Error>> {
        let tx = self.chip.command(input)?;
        let mut rx = [0u8; 3];
        self.spi.transfer(&mut rx, &tx).map_err(AdcError::Spi)?;
        self.chip.decode(rx).ok_or(AdcError::NoReply)
    }

    /// The SPI device back.
    pub fn release(self) -> S {
        self.spi
    }
}

/// A monotonic microsecond clock for timestamping samples.
pub trait MonotonicClock {
    /// Microseconds since an arbitrary fixed start; never decreases.
    fn now_us(&mut self) -> u64;
}

/// The operating system's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct StdClock(std::time::Instant);

impl StdClock {
    /// A clock counting from now.
    pub fn new() -> StdClock {
        StdClock(std::time::Instant::now())
    }
}

impl Default for StdClock {
    fn default() -> StdClock {
        StdClock::new()
    }
}

impl MonotonicClock for StdClock {
    fn now_us(&mut self) -> u64 {
        u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// One sample of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedSample {
    /// The single-ended input.
    pub input: u8,
    /// When, microseconds on the sampler's clock: the midpoint of the transfer. The chip
    /// samples early in the transfer, a fixed offset that is the same for every input and so
    /// cancels between voltage and current.
    pub t_us: u64,
    /// The count.
    pub raw: u16,
}

/// Reads a list of single-ended inputs in turn, round and round, timestamping each sample.
/// Put the voltage reference first ([`super::ct::CtMeter::inputs`] lists them that way).
#[derive(Debug)]
pub struct Sampler<S, C> {
    adc: Mcp3x08<S>,
    clock: C,
    inputs: Vec<u8>,
    next: usize,
}

impl<S: SpiDevice, C: MonotonicClock> Sampler<S, C> {
    /// A sampler of `inputs` (each 0–7, at least one).
    pub fn new(adc: Mcp3x08<S>, clock: C, inputs: Vec<u8>) -> Result<Self, InvalidInput> {
        if let Some(bad) = inputs.iter().find(|i| **i > 7) {
            return Err(InvalidInput(*bad));
        }
        if inputs.is_empty() {
            return Err(InvalidInput(u8::MAX));
        }
        Ok(Sampler {
            adc,
            clock,
            inputs,
            next: 0,
        })
    }

    /// The next input's sample.
    pub fn next_sample(&mut self) -> Result<TimedSample, AdcError<S::Error>> {
        let input = self.inputs.get(self.next).copied().unwrap_or(0);
        self.next = (self.next + 1) % self.inputs.len().max(1);
        let before = self.clock.now_us();
        let raw = self.adc.read(Input::Single(input))?;
        let after = self.clock.now_us();
        Ok(TimedSample {
            input,
            t_us: before + after.saturating_sub(before) / 2,
            raw,
        })
    }

    /// Reads `count` samples into `meter`, returning the cycles they completed. The sampling
    /// thread calls this in a loop.
    pub fn feed(
        &mut self,
        meter: &mut super::ct::CtMeter,
        count: usize,
    ) -> Result<Vec<super::ct::CycleReport>, AdcError<S::Error>> {
        let mut cycles = Vec::new();
        for _ in 0..count {
            let s = self.next_sample()?;
            if let Some(c) = meter.push(s.input, s.t_us, s.raw) {
                cycles.push(c);
            }
        }
        Ok(cycles)
    }
}

/// Opening the ADC on a Raspberry Pi's SPI pins with rppal.
#[cfg(feature = "pi")]
pub mod pi {
    use super::{Chip, Mcp3x08};
    use crate::meter::MeterError;
    use rppal::spi::{Bus, Mode, SimpleHalSpiDevice, SlaveSelect, Spi};

    /// The converter on SPI bus `bus` (0 is the header's pins 19/21/23), chip select `cs`
    /// (0 = CE0 on pin 24, 1 = CE1 on pin 26), clocked at `clock_hz` (1 MHz is safe at 3.3 V).
    pub fn open(
        bus: u8,
        cs: u8,
        clock_hz: u32,
        chip: Chip,
    ) -> Result<Mcp3x08<SimpleHalSpiDevice>, MeterError> {
        let bus = match bus {
            0 => Bus::Spi0,
            1 => Bus::Spi1,
            other => {
                return Err(MeterError::Config(format!(
                    "SPI bus {other} is not supported"
                )));
            }
        };
        let cs = match cs {
            0 => SlaveSelect::Ss0,
            1 => SlaveSelect::Ss1,
            2 => SlaveSelect::Ss2,
            other => {
                return Err(MeterError::Config(format!(
                    "chip select {other} is not supported"
                )));
            }
        };
        let spi = Spi::new(bus, cs, clock_hz, Mode::Mode0).map_err(|e| {
            MeterError::Hardware(format!(
                "opening SPI: {e} (is SPI enabled in raspi-config?)"
            ))
        })?;
        Ok(Mcp3x08::new(SimpleHalSpiDevice::new(spi), chip))
    }
}

#[cfg(test)]
mod tests;
