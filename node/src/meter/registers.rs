//! Durable energy registers for a source that counts them itself (the current clamps).
//!
//! A Modbus or P1 meter keeps its own registers in the meter; the current-clamp source
//! integrates power into registers in memory, so those must be written to disk or a power cut
//! would reset them, and the next attestation would have registers below the published ones.
//!
//! # Where and when
//!
//! The registers live in the node's redb database (table `registers_v1`, see
//! [`crate::store`]), one row per source and channel, in milliwatt-hours so that a restart
//! loses no more than the carry below a milliwatt-hour. The source writes them
//!
//! - in batches, every `persist_secs` (the meter loop offers a write after every poll and the
//!   source declines until the interval has passed), to spare the SD card; and
//! - always, before the meter loop hands a slot's registers to the node to be signed
//!   ([`super::MeterSource::persist`] with `force`). If that write fails, the slot is not
//!   attested.
//!
//! So the stored value is always at least every value that was ever signed. After a power cut
//! the source continues from the stored value: energy measured after the last write is lost
//! (the registers under-count, never over-count), and the time the node was down is missing
//! coverage in the meter loop, never interpolated.
//!
//! Writes never lower a stored register (the store keeps the larger of the old and new
//! value), so even a confused caller cannot make the registers go backwards.

use super::{ChannelKind, MeterError};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// One channel's registers as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedChannel {
    /// The source (`ct`).
    pub source: String,
    /// The channel's name in the configuration.
    pub name: String,
    /// What it measures; the grid channel is found by kind, so renaming it keeps its registers.
    pub kind: ChannelKind,
    /// The import register, milliwatt-hours.
    pub import_mwh: u64,
    /// The export register, milliwatt-hours.
    pub export_mwh: u64,
    /// When it was written, UTC ms.
    pub saved_ms: u64,
}

impl SavedChannel {
    /// The row's key: source and channel name.
    pub fn key(&self) -> String {
        format!("{}/{}", self.source, self.name)
    }

    /// The larger of each register (and the later time) of `self` and `other`.
    pub fn max(&self, other: &SavedChannel) -> SavedChannel {
        SavedChannel {
            import_mwh: self.import_mwh.max(other.import_mwh),
            export_mwh: self.export_mwh.max(other.export_mwh),
            saved_ms: self.saved_ms.max(other.saved_ms),
            ..self.clone()
        }
    }
}

/// Where a source keeps its registers.
pub trait RegisterStore: Send {
    /// Every stored channel of `source`.
    fn load(&self, source: &str) -> Result<Vec<SavedChannel>, MeterError>;

    /// Writes `channels` durably (fsync'd before it returns), keeping the larger value of each
    /// register.
    fn save(&self, channels: &[SavedChannel]) -> Result<(), MeterError>;
}

impl RegisterStore for crate::store::Store {
    fn load(&self, source: &str) -> Result<Vec<SavedChannel>, MeterError> {
        self.meter_registers(source)
            .map_err(|e| MeterError::Storage(e.to_string()))
    }

    fn save(&self, channels: &[SavedChannel]) -> Result<(), MeterError> {
        self.put_meter_registers(channels)
            .map_err(|e| MeterError::Storage(e.to_string()))
    }
}

/// Registers kept in memory only: for `wattmesh meter` on a stopped node (a calibration view
/// whose registers count from zero) and for tests.
#[derive(Debug, Clone, Default)]
pub struct MemoryRegisters(pub Arc<Mutex<Vec<SavedChannel>>>);

impl RegisterStore for MemoryRegisters {
    fn load(&self, source: &str) -> Result<Vec<SavedChannel>, MeterError> {
        let rows = self
            .0
            .lock()
            .map_err(|_| MeterError::Storage("poisoned".into()))?;
        Ok(rows
            .iter()
            .filter(|c| c.source == source)
            .cloned()
            .collect())
    }

    fn save(&self, channels: &[SavedChannel]) -> Result<(), MeterError> {
        let mut rows = self
            .0
            .lock()
            .map_err(|_| MeterError::Storage("poisoned".into()))?;
        for c in channels {
            match rows.iter_mut().find(|r| r.key() == c.key()) {
                Some(r) => *r = r.max(c),
                None => rows.push(c.clone()),
            }
        }
        Ok(())
    }
}
