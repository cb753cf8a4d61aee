//! The Eastron SDM120 and SDM630 register maps, and the conversion of their values: pure, no IO.
//!
//! # Sources
//!
//! Eastron's published Modbus protocol documents: "SDM630 Modbus Protocol" (input registers
//! 3X, holding registers 4X, in the SDM630-Modbus V2 user manual's Modbus section) and
//! "SDM120-Modbus Protocol"; the same layout is used by the SDM220/SDM230/SDM72 family. Register
//! numbers there are written 3xxxx (input) and 4xxxx (holding), one-based; the addresses on the
//! wire (the "Modbus Protocol Start Address Hex" column) are zero-based, so parameter 30073
//! "Total import kWh" is address 0x0048.
//!
//! | address | SDM630 | SDM120 | unit |
//! | --- | --- | --- | --- |
//! | 0x0000, 0x0002, 0x0004 | phase 1, 2, 3 line-to-neutral voltage | 0x0000 voltage | V |
//! | 0x0006, 0x0008, 0x000A | phase 1, 2, 3 current | 0x0006 current | A |
//! | 0x000C, 0x000E, 0x0010 | phase 1, 2, 3 active power | 0x000C active power | W |
//! | 0x0034 | total system active power | (none) | W |
//! | 0x0046 | frequency | frequency | Hz |
//! | 0x0048 | total import active energy | import active energy | kWh |
//! | 0x004A | total export active energy | export active energy | kWh |
//! | holding 0xFC00 | serial number | serial number | u32 |
//!
//! Input registers are read with function code 0x04. Each value is an IEEE-754 single-precision
//! float in two consecutive registers, the most significant register first (the meters'
//! default "normal" register order). The serial number is read with function code 0x03 from
//! holding registers 0xFC00–0xFC01, an unsigned 32-bit integer, high word first, read-only.
//!
//! Eastron limits one request to 40 parameters (80 registers); the blocks below stay well inside
//! that and inside the 30-parameter limit of the smaller models. A block may span parameters a
//! model does not have (the SDM120 has no phase 2 or 3); the meters answer those with zero.
//!
//! # Sign
//!
//! Active power is signed. With the meter wired as its label shows (supply on the input
//! terminals, the home on the output terminals), positive power is energy flowing from the grid
//! into the home and counts in the import register; negative power flows out and counts in the
//! export register. That is our convention (`meter` module: positive into the home). A meter
//! mounted the other way round (the home on its supply side) is configured with `reversed`,
//! which negates power and swaps the two registers.
//!
//! # Energy: kWh floats to whole watt-hours
//!
//! The energy registers are `f32` kWh. [`kwh_bits_to_wh`] converts the register's exact binary
//! value (`m · 2^e`) to watt-hours in integer arithmetic — `m · 1000 · 2^e`, rounded to the
//! nearest watt-hour, halves up — with no floating-point multiplication, so the result depends
//! only on the 32 bits the meter sent. Rounding to the nearest (rather than down) makes a value
//! the meter holds as a decimal such as 1234.56 kWh, stored as 1234.5599… in binary, read as
//! 1 234 560 Wh. The conversion is monotonic, so a meter register that never decreases gives a
//! watt-hour register that never decreases. A single float carries 24 significant bits: from
//! 8 192 kWh up the smallest step a register can show is 2^-10 kWh (0.98 Wh), from 131 072 kWh
//! up 2^-6 kWh (15.6 Wh); this is the meter's own resolution, not an error of the conversion.
//! NaN, infinities and negative values are refused.

use serde::{Deserialize, Serialize};

/// Which meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// Eastron SDM120: single phase.
    Sdm120,
    /// Eastron SDM630: three phase (also wired single phase or to two phases).
    Sdm630,
}

/// Holding register of the serial number (two registers, u32, high word first).
pub const SERIAL_ADDRESS: u16 = 0xFC00;

/// Input register of the import active energy, kWh.
pub const IMPORT_KWH: u16 = 0x0048;
/// Input register of the export active energy, kWh.
pub const EXPORT_KWH: u16 = 0x004A;
/// Input register of the frequency, Hz.
pub const FREQUENCY_HZ: u16 = 0x0046;
/// Input register of the SDM630's total system active power, W.
pub const TOTAL_POWER_W: u16 = 0x0034;
/// Input registers of the phases' line-to-neutral voltages, V.
pub const VOLTAGE_V: [u16; 3] = [0x0000, 0x0002, 0x0004];
/// Input registers of the phases' currents, A.
pub const CURRENT_A: [u16; 3] = [0x0006, 0x0008, 0x000A];
/// Input registers of the phases' active powers, W.
pub const POWER_W: [u16; 3] = [0x000C, 0x000E, 0x0010];

/// A run of input registers read in one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// First address.
    pub start: u16,
    /// Number of registers.
    pub len: u16,
}

impl Model {
    /// How many phases the meter measures.
    pub fn phases(self) -> usize {
        match self {
            Model::Sdm120 => 1,
            Model::Sdm630 => 3,
        }
    }

    /// The input-register requests one reading takes: the per-phase values, then the totals
    /// and energies (close together, so import and export are read in one request).
    pub fn blocks(self) -> [Block; 2] {
        match self {
            // 0x0000..=0x000D: voltage, current, power (7 parameters, 4 of them absent).
            // 0x0046..=0x004B: frequency, import, export.
            Model::Sdm120 => [
                Block {
                    start: 0x0000,
                    len: 0x000E,
                },
                Block {
                    start: FREQUENCY_HZ,
                    len: 0x0006,
                },
            ],
            // 0x0000..=0x0011: three voltages, currents, powers (9 parameters).
            // 0x0034..=0x004B: total power .. export energy (12 parameters).
            Model::Sdm630 => [
                Block {
                    start: 0x0000,
                    len: 0x0012,
                },
                Block {
                    start: TOTAL_POWER_W,
                    len: EXPORT_KWH + 2 - TOTAL_POWER_W,
                },
            ],
        }
    }
}

/// What one reading of the meter returned, as the meter encodes it (its sign, its units).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawReading {
    /// Line-to-neutral voltage per phase, V (unused phases 0).
    pub voltage_v: [f32; 3],
    /// Current per phase, A.
    pub current_a: [f32; 3],
    /// Active power per phase, W, the meter's sign.
    pub power_w: [f32; 3],
    /// Total active power, W, the meter's sign.
    pub total_power_w: f32,
    /// Frequency, Hz.
    pub frequency_hz: f32,
    /// The import energy register's raw bits (an `f32` kWh).
    pub import_kwh_bits: u32,
    /// The export energy register's raw bits (an `f32` kWh).
    pub export_kwh_bits: u32,
}

/// Two registers as a 32-bit word, most significant register first.
fn word32(regs: &[u16], offset: usize) -> Option<u32> {
    let hi = *regs.get(offset)?;
    let lo = *regs.get(offset.checked_add(1)?)?;
    Some((u32::from(hi) << 16) | u32::from(lo))
}

/// The 32-bit value at `address` from a block read from `block.start`.
fn at(block: Block, regs: &[u16], address: u16) -> Option<u32> {
    if regs.len() != usize::from(block.len) {
        return None;
    }
    let offset = address.checked_sub(block.start)?;
    word32(regs, usize::from(offset))
}

impl RawReading {
    /// Decodes the two blocks of [`Model::blocks`], in order. `None` if a block has the wrong
    /// length (the client checks the response's byte count, so this is a programming error).
    pub fn decode(model: Model, first: &[u16], second: &[u16]) -> Option<RawReading> {
        let [a, b] = model.blocks();
        let float = |block, regs, address| at(block, regs, address).map(f32::from_bits);
        let mut r = RawReading {
            voltage_v: [0.0; 3],
            current_a: [0.0; 3],
            power_w: [0.0; 3],
            total_power_w: 0.0,
            frequency_hz: float(b, second, FREQUENCY_HZ)?,
            import_kwh_bits: at(b, second, IMPORT_KWH)?,
            export_kwh_bits: at(b, second, EXPORT_KWH)?,
        };
        for p in 0..model.phases() {
            r.voltage_v[p] = float(a, first, VOLTAGE_V[p])?;
            r.current_a[p] = float(a, first, CURRENT_A[p])?;
            r.power_w[p] = float(a, first, POWER_W[p])?;
        }
        r.total_power_w = match model {
            Model::Sdm120 => r.power_w[0],
            Model::Sdm630 => float(b, second, TOTAL_POWER_W)?,
        };
        Some(r)
    }
}

/// The serial number from holding registers 0xFC00–0xFC01.
pub fn decode_serial(regs: &[u16]) -> Option<u32> {
    if regs.len() != 2 {
        return None;
    }
    word32(regs, 0)
}

/// An energy register's `f32` kWh bits as whole watt-hours: exact binary value times 1000,
/// rounded to the nearest watt-hour, halves up. `None` for NaN, an infinity, a negative value
/// (other than −0) or one beyond `u64` watt-hours.
pub fn kwh_bits_to_wh(bits: u32) -> Option<u64> {
    let negative = bits >> 31 == 1;
    let exponent = (bits >> 23) & 0xFF;
    let fraction = bits & 0x007F_FFFF;
    if exponent == 0xFF {
        return None; // infinity or NaN
    }
    if negative {
        // −0 is zero; anything else below zero is no energy count.
        return (exponent == 0 && fraction == 0).then_some(0);
    }
    // value = mantissa · 2^power kWh.
    let (mantissa, power) = if exponent == 0 {
        (fraction, -149i32) // subnormal
    } else {
        (fraction | 0x0080_0000, exponent as i32 - 150)
    };
    // Wh = mantissa · 1000 · 2^power; mantissa · 1000 < 2^34.
    let scaled = u128::from(mantissa) * 1000;
    let wh = if power >= 0 {
        // power ≤ 104 here, so the shift stays inside u128 only while the result is small;
        // anything past u64 is refused below.
        if power > 64 {
            return None;
        }
        scaled << power
    } else {
        let shift = power.unsigned_abs();
        if shift >= 64 {
            // scaled / 2^64 < 2^-30: rounds to zero.
            0
        } else {
            let quotient = scaled >> shift;
            let remainder = scaled & ((1u128 << shift) - 1);
            let half = 1u128 << (shift - 1);
            quotient + u128::from(remainder >= half)
        }
    };
    u64::try_from(wh).ok()
}
