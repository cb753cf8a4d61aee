//! Meter attestations: a node's signed, hash-chained statement of what its meter measured in
//! one delivery slot, and what it committed to sell and buy in that slot.
//!
//! Only per-slot totals leave the home. Each attestation carries the hash of the node's
//! previous one and a sequence number, so removing, inserting or altering one breaks the chain
//! visibly. The sold and bought totals are roots of Merkle sum trees over the node's trades in
//! the slot ([`crate::merkle`]).

use crate::envelope::{Kind, Message};
use crate::ext::Extension;
use crate::ids::{Hash32, NodeId};
use crate::merkle::SumNode;
use crate::units::EnergyWh;
use serde::{Deserialize, Serialize};

/// The meter's health during the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeterStatus {
    /// Measured normally.
    Ok,
    /// Measured, but something was off (a channel missing, readings noisy).
    Degraded,
    /// The meter failed; the figures are not reliable.
    Fault,
    /// A simulated meter (testnet and try-outs).
    Simulated,
}

/// Coverage is given in thousandths of the slot.
pub const FULL_COVERAGE: u16 = 1000;

/// One node's meter figures for one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterAttestation {
    /// The metered node; must be the envelope's signer.
    pub node: NodeId,
    /// 0 for the node's first attestation, +1 for each one after.
    pub seq: u64,
    /// The hash of the previous attestation's payload ([`Hash32::ZERO`] for `seq` 0).
    pub prev: Hash32,
    /// The slot's start, UTC ms.
    pub slot_ms: u64,
    /// The import register at the end of the slot, Wh. Never decreases along the chain.
    pub import_register_wh: EnergyWh,
    /// The export register at the end of the slot, Wh. Never decreases along the chain.
    pub export_register_wh: EnergyWh,
    /// Energy imported during the slot, Wh.
    pub import_wh: EnergyWh,
    /// Energy exported during the slot, Wh.
    pub export_wh: EnergyWh,
    /// How much of the slot was measured, in thousandths (1000 = all of it). Unmeasured time
    /// is never interpolated.
    pub coverage_permille: u16,
    /// The meter's health.
    pub status: MeterStatus,
    /// The node's total sold in the slot, and the root over those trades.
    pub sold: SumNode,
    /// The node's total bought in the slot, and the root over those trades.
    pub bought: SumNode,
    /// When the attestation was made.
    pub created_ms: u64,
    /// Extensions.
    pub ext: Vec<Extension>,
}

impl Message for MeterAttestation {
    const KIND: Kind = Kind::MeterAttestation;
}

/// The hash an attestation's successor puts in `prev`.
pub fn chain_hash(payload: &[u8]) -> Hash32 {
    Hash32::tagged("wattmesh/attestation/v1", &[payload])
}

/// What breaks an attestation chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Not the same node.
    #[error("different node")]
    Node,
    /// The sequence number is not one more than the previous.
    #[error("sequence gap or repeat")]
    Sequence,
    /// `prev` does not match the previous attestation's hash.
    #[error("previous hash does not match")]
    PrevHash,
    /// The slot does not come after the previous one.
    #[error("slot not after the previous")]
    Slot,
    /// A register went backwards, or moved less than the slot's delta says.
    #[error("registers inconsistent with the previous attestation")]
    Registers,
}

impl MeterAttestation {
    /// Internal consistency: deltas within registers, coverage in range, a first attestation
    /// has a zero `prev`.
    pub fn self_consistent(&self) -> bool {
        self.coverage_permille <= FULL_COVERAGE
            && self.import_wh <= self.import_register_wh
            && self.export_wh <= self.export_register_wh
            && ((self.seq == 0) == (self.prev == Hash32::ZERO))
    }

    /// Checks that `self` directly follows `prev` (whose payload hashed to `prev_hash`).
    ///
    /// Registers must not go backwards; for adjacent slots the register increase must equal
    /// the slot's delta exactly, and across a gap it must be at least the delta (energy
    /// measured while no attestation was made is not lost, only unattributed).
    pub fn check_follows(
        &self,
        prev: &MeterAttestation,
        prev_hash: &Hash32,
        slot_len_ms: u64,
    ) -> Result<(), ChainError> {
        if self.node != prev.node {
            return Err(ChainError::Node);
        }
        if prev.seq.checked_add(1) != Some(self.seq) {
            return Err(ChainError::Sequence);
        }
        if &self.prev != prev_hash {
            return Err(ChainError::PrevHash);
        }
        if self.slot_ms <= prev.slot_ms {
            return Err(ChainError::Slot);
        }
        let di = self.import_register_wh.checked_sub(prev.import_register_wh);
        let de = self.export_register_wh.checked_sub(prev.export_register_wh);
        let (Some(di), Some(de)) = (di, de) else {
            return Err(ChainError::Registers);
        };
        let adjacent = self.slot_ms == prev.slot_ms.saturating_add(slot_len_ms);
        let ok = if adjacent {
            di == self.import_wh && de == self.export_wh
        } else {
            di >= self.import_wh && de >= self.export_wh
        };
        if ok {
            Ok(())
        } else {
            Err(ChainError::Registers)
        }
    }
}
