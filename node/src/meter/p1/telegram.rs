//! DSMR 4 and 5 P1 telegrams: framing a byte stream into telegrams, the CRC check, and the
//! few objects a node needs. Pure: no IO, no clock.
//!
//! # The format (DSMR 5.0.2 P1 Companion Standard, chapter 6)
//!
//! ```text
//! /XXXZ Ident CR LF CR LF Data ! CRC CR LF
//! ```
//!
//! A telegram starts with `/` and the meter's identification, then one COSEM object per line
//! (`1-0:1.8.1(001234.567*kWh)`: an OBIS reference and values in brackets), and ends with `!`
//! and the CRC as four upper-case hexadecimal digits. The CRC is CRC-16/ARC (polynomial
//! x^16 + x^15 + x^2 + 1, reflected, initial value 0) over every byte from `/` to `!`, both
//! included. DSMR 2 and 3 telegrams have no CRC and are refused.
//!
//! # What is read
//!
//! | OBIS | what | here |
//! | --- | --- | --- |
//! | `0-0:96.1.1` | equipment identifier | `equipment_id` (as sent) |
//! | `1-0:1.8.1`, `1-0:1.8.2` | energy delivered to the client, tariffs 1 and 2, kWh | `import_wh` |
//! | `1-0:2.8.1`, `1-0:2.8.2` | energy delivered by the client, tariffs 1 and 2, kWh | `export_wh` |
//! | `1-0:1.7.0`, `1-0:2.7.0` | power delivered to / by the client, kW | `import_w`, `export_w` |
//! | `1-3:0.2.8` | version of the P1 output (`50` for DSMR 5.0) | `version` |
//!
//! Energies are decimal kWh with three decimals (`F9(3)`), so they become whole watt-hours
//! exactly, by moving the decimal point, without floating point; powers likewise become whole
//! watts. A value with more decimals, another unit, or a missing register is a malformed
//! telegram, never a reading.

use std::fmt;

/// The longest telegram accepted, bytes. DSMR 5 telegrams are about 1 KiB; M-Bus devices and a
/// long text message can add a few; anything past this is not a P1 port.
pub const MAX_TELEGRAM: usize = 16 * 1024;

/// CRC-16/ARC of `bytes`.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Why a telegram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelegramError {
    /// The CRC does not match the bytes.
    #[error("CRC mismatch: the telegram says {sent:04X}, its bytes give {computed:04X}")]
    Crc {
        /// The CRC in the telegram.
        sent: u16,
        /// The CRC of the bytes received.
        computed: u16,
    },
    /// No CRC after `!` (a DSMR 2 or 3 meter, or a truncated telegram).
    #[error("no CRC after '!': DSMR 2 and 3 telegrams are not supported")]
    NoCrc,
    /// A new telegram started before this one ended, or the stream broke off.
    #[error("a partial telegram (it broke off before its end)")]
    Partial,
    /// Longer than [`MAX_TELEGRAM`].
    #[error("a telegram longer than {MAX_TELEGRAM} bytes")]
    TooLong,
    /// The telegram's structure or a value is wrong.
    #[error("malformed telegram: {0}")]
    Malformed(String),
}

/// A telegram's readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Telegram {
    /// The identification after `/` (manufacturer, meter type).
    pub ident: String,
    /// The P1 version (`1-3:0.2.8`), if sent.
    pub version: Option<String>,
    /// The equipment identifier (`0-0:96.1.1`), as sent (usually hex-encoded ASCII).
    pub equipment_id: Option<String>,
    /// Energy delivered to the client, tariffs 1 and 2, Wh.
    pub import_wh: [u64; 2],
    /// Energy delivered by the client, tariffs 1 and 2, Wh.
    pub export_wh: [u64; 2],
    /// Power delivered to the client now, W.
    pub import_w: u64,
    /// Power delivered by the client now, W.
    pub export_w: u64,
}

impl Telegram {
    /// Both tariffs' import, Wh.
    pub fn total_import_wh(&self) -> Option<u64> {
        self.import_wh[0].checked_add(self.import_wh[1])
    }

    /// Both tariffs' export, Wh.
    pub fn total_export_wh(&self) -> Option<u64> {
        self.export_wh[0].checked_add(self.export_wh[1])
    }

    /// Parses one framed telegram (`/` .. `!XXXX`, optionally followed by CR LF), checking
    /// its CRC first: no value of a telegram whose CRC fails is looked at.
    pub fn parse(frame: &[u8]) -> Result<Telegram, TelegramError> {
        if frame.len() > MAX_TELEGRAM {
            return Err(TelegramError::TooLong);
        }
        if frame.first() != Some(&b'/') {
            return Err(TelegramError::Partial);
        }
        let bang = frame
            .iter()
            .rposition(|b| *b == b'!')
            .ok_or(TelegramError::Partial)?;
        let (body, tail) = frame.split_at(bang + 1);
        let tail = tail.strip_suffix(b"\r\n").unwrap_or(tail);
        if tail.is_empty() {
            return Err(TelegramError::NoCrc);
        }
        let sent = std::str::from_utf8(tail)
            .ok()
            .filter(|s| s.len() == 4)
            .and_then(|s| u16::from_str_radix(s, 16).ok())
            .ok_or_else(|| TelegramError::Malformed("the CRC is not four hex digits".into()))?;
        let computed = crc16(body);
        if sent != computed {
            return Err(TelegramError::Crc { sent, computed });
        }
        let text = std::str::from_utf8(&body[1..bang])
            .map_err(|_| TelegramError::Malformed("bytes that are not text".into()))?;
        let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
        let ident = lines.next().unwrap_or_default().to_owned();
        let mut version = None;
        let mut equipment_id = None;
        let mut energies: [Option<u64>; 4] = [None; 4];
        let mut powers: [Option<u64>; 2] = [None; 2];
        for line in lines {
            let Some(open) = line.find('(') else {
                continue;
            };
            let (obis, values) = line.split_at(open);
            let first = || {
                values
                    .strip_prefix('(')
                    .and_then(|v| v.split_once(')'))
                    .map(|(v, _)| v)
                    .ok_or_else(|| TelegramError::Malformed(format!("{obis}: no closing bracket")))
            };
            let slot = match obis {
                "1-3:0.2.8" => {
                    version = Some(first()?.to_owned());
                    continue;
                }
                "0-0:96.1.1" => {
                    equipment_id = Some(first()?.to_owned());
                    continue;
                }
                "1-0:1.8.1" => Field::Energy(0),
                "1-0:1.8.2" => Field::Energy(1),
                "1-0:2.8.1" => Field::Energy(2),
                "1-0:2.8.2" => Field::Energy(3),
                "1-0:1.7.0" => Field::Power(0),
                "1-0:2.7.0" => Field::Power(1),
                _ => continue,
            };
            let (target, unit) = match slot {
                Field::Energy(k) => (energies.get_mut(k), "kWh"),
                Field::Power(k) => (powers.get_mut(k), "kW"),
            };
            let v = milli(first()?, unit)
                .ok_or_else(|| TelegramError::Malformed(format!("{obis}: bad value")))?;
            if let Some(t) = target {
                if t.replace(v).is_some() {
                    return Err(TelegramError::Malformed(format!("{obis} appears twice")));
                }
            }
        }
        let need = |v: Option<u64>, obis: &str| {
            v.ok_or_else(|| TelegramError::Malformed(format!("{obis} is missing")))
        };
        Ok(Telegram {
            ident,
            version,
            equipment_id,
            import_wh: [
                need(energies[0], "1-0:1.8.1")?,
                need(energies[1], "1-0:1.8.2")?,
            ],
            export_wh: [
                need(energies[2], "1-0:2.8.1")?,
                need(energies[3], "1-0:2.8.2")?,
            ],
            import_w: need(powers[0], "1-0:1.7.0")?,
            export_w: need(powers[1], "1-0:2.7.0")?,
        })
    }
}

#[derive(Clone, Copy)]
enum Field {
    Energy(usize),
    Power(usize),
}

/// `"001234.567*kWh"` in thousandths of the unit (here: Wh or W), exactly: digits, an optional
/// point with at most three decimals, `*`, and `unit`.
fn milli(value: &str, unit: &str) -> Option<u64> {
    let (number, u) = value.split_once('*')?;
    if u != unit {
        return None;
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || int.len() > 12 || frac.len() > 3 || !digits(int) || !digits(frac) {
        return None;
    }
    let whole: u64 = int.parse().ok()?;
    let mut thousandths: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..3 {
        thousandths *= 10;
    }
    whole.checked_mul(1000)?.checked_add(thousandths)
}

/// Cuts a byte stream into telegrams. Bytes before a `/` are skipped (the middle of a
/// telegram when the port was opened); a telegram cut short by a new `/` is reported as
/// [`TelegramError::Partial`], one that grows past [`MAX_TELEGRAM`] as
/// [`TelegramError::TooLong`].
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// An empty framer.
    pub fn new() -> Framer {
        Framer::default()
    }

    /// Forgets a telegram in progress (after a broken connection: the rest will not come).
    /// Returns whether one was in progress.
    pub fn reset(&mut self) -> bool {
        let had = self.buf.first() == Some(&b'/');
        self.buf.clear();
        had
    }

    /// Adds received bytes; returns the complete frames (or framing errors) they finish.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Result<Vec<u8>, TelegramError>> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            // Skip to the start of a telegram.
            match self.buf.iter().position(|b| *b == b'/') {
                Some(0) => {}
                Some(k) => {
                    self.buf.drain(..k);
                }
                None => {
                    self.buf.clear();
                    return out;
                }
            }
            // A second start before the end: the first one broke off.
            let next_start = self.buf.iter().skip(1).position(|b| *b == b'/');
            let bang = self.buf.iter().position(|b| *b == b'!');
            // The end of this telegram is the first `!`, unless another telegram starts first.
            let end_first = match (bang, next_start) {
                (Some(bang), Some(n)) => (n + 1 > bang).then_some(bang),
                (bang, None) => bang,
                (None, Some(_)) => None,
            };
            match (end_first, next_start) {
                (Some(bang), _) => {
                    // The CRC's four digits must have arrived; a CR right after `!` means none
                    // will come.
                    let after = self.buf.get(bang + 1..).unwrap_or_default();
                    let crc_len = after
                        .iter()
                        .take(4)
                        .take_while(|b| b.is_ascii_hexdigit())
                        .count();
                    if crc_len == 4 {
                        let end = bang + 5;
                        out.push(Ok(self.buf[..end].to_vec()));
                        self.buf.drain(..end);
                    } else if crc_len < after.len().min(4) {
                        // Something other than a hex digit after '!': hand it to the parser,
                        // which says why.
                        let end = bang + 1 + crc_len;
                        out.push(Ok(self.buf[..end].to_vec()));
                        self.buf.drain(..end);
                    } else {
                        return out;
                    }
                }
                (_, Some(n)) => {
                    out.push(Err(TelegramError::Partial));
                    self.buf.drain(..n + 1);
                }
                (None, None) => {
                    if self.buf.len() > MAX_TELEGRAM {
                        out.push(Err(TelegramError::TooLong));
                        self.buf.clear();
                    }
                    return out;
                }
            }
        }
    }
}

impl fmt::Display for Telegram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} import {}+{} Wh export {}+{} Wh, {} W in, {} W out",
            self.ident,
            self.import_wh[0],
            self.import_wh[1],
            self.export_wh[0],
            self.export_wh[1],
            self.import_w,
            self.export_w
        )
    }
}
