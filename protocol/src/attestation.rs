//! Meter attestations: a node's signed, hash-chained statement of what its meter measured in
//! one delivery slot, and what it committed to sell and buy in that slot.
//!
//! Only per-slot totals leave the home. Each attestation carries the hash of the node's
//! previous one and a sequence number, so removing, inserting or altering one breaks the chain
//! visibly. The sold and bought totals are roots of Merkle sum trees over the node's trades in
//! the slot ([`crate::merkle`]).
//!
//! **Privacy mode.** A node may keep its figures from everyone but its trade counterparties:
//! it marks the attestation private (the [`EXT_PRIVATE`] extension, which also carries random
//! bytes so that the attestation's hash cannot be guessed from likely figures), sends it only to
//! its counterparties in the slot, and publishes a signed [`AttestationCommitment`] instead: the
//! chain fields (`seq`, `prev`, slot) and the attestation's chain hash. Everyone can check the
//! chain's continuity through commitments alone ([`check_chain`]); a counterparty holding the
//! full attestation checks that it is the one committed to ([`AttestationCommitment::opens`]).

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

/// The extension tag (odd, so optional for nodes that do not know it) that marks an attestation
/// as private: made in privacy mode, sent only to the node's trade counterparties in the slot,
/// and never relayed to anyone else. Its body is 16 to 32 random bytes, which make the
/// attestation's chain hash (published in the [`AttestationCommitment`]) impossible to guess
/// from likely figures.
pub const EXT_PRIVATE: u16 = 1;
/// The shortest body of an [`EXT_PRIVATE`] extension.
pub const PRIVATE_BLINDING_MIN: usize = 16;
/// The longest body of an [`EXT_PRIVATE`] extension.
pub const PRIVATE_BLINDING_MAX: usize = 32;

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
    /// A full attestation is not the one its node's commitment for the same `seq` names (the
    /// two signed messages together prove the node equivocated).
    #[error("attestation does not match its commitment")]
    Commitment,
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

    /// Whether the attestation is marked private ([`EXT_PRIVATE`]): its node sent it only to its
    /// counterparties, and nobody else may pass it on.
    pub fn is_private(&self) -> bool {
        self.ext.iter().any(|e| e.tag == EXT_PRIVATE)
    }

    /// Whether an [`EXT_PRIVATE`] extension, if present, has a body of the allowed length.
    pub fn private_ext_well_formed(&self) -> bool {
        self.ext
            .iter()
            .filter(|e| e.tag == EXT_PRIVATE)
            .all(|e| (PRIVATE_BLINDING_MIN..=PRIVATE_BLINDING_MAX).contains(&e.data.len()))
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

/// What a node in privacy mode publishes instead of its attestation: the chain fields and the
/// attestation's chain hash, signed by the node. Made from the attestation with
/// [`AttestationCommitment::of`], so every field but `ext` is determined by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationCommitment {
    /// The metered node; must be the envelope's signer.
    pub node: NodeId,
    /// The attestation's `seq`.
    pub seq: u64,
    /// The attestation's `prev`: the chain hash of the node's previous attestation.
    pub prev: Hash32,
    /// The attestation's slot.
    pub slot_ms: u64,
    /// The attestation's chain hash ([`chain_hash`] of its payload): what its successor's
    /// `prev` holds.
    pub attestation: Hash32,
    /// The attestation's `created_ms`.
    pub created_ms: u64,
    /// Extensions (of the commitment itself).
    pub ext: Vec<Extension>,
}

impl Message for AttestationCommitment {
    const KIND: Kind = Kind::AttestationCommitment;
}

impl AttestationCommitment {
    /// The commitment to `a`, whose canonical payload is `payload`.
    pub fn of(a: &MeterAttestation, payload: &[u8]) -> AttestationCommitment {
        AttestationCommitment {
            node: a.node,
            seq: a.seq,
            prev: a.prev,
            slot_ms: a.slot_ms,
            attestation: chain_hash(payload),
            created_ms: a.created_ms,
            ext: Vec::new(),
        }
    }

    /// Whether the full attestation `a`, whose payload hashed to `a_hash`, is the one committed
    /// to here.
    pub fn opens(&self, a: &MeterAttestation, a_hash: &Hash32) -> Result<(), ChainError> {
        if self.node != a.node {
            return Err(ChainError::Node);
        }
        if self.attestation == *a_hash
            && self.seq == a.seq
            && self.prev == a.prev
            && self.slot_ms == a.slot_ms
            && self.created_ms == a.created_ms
        {
            Ok(())
        } else {
            Err(ChainError::Commitment)
        }
    }

    /// Internal consistency: a first commitment has a zero `prev`, and a later one does not.
    pub fn self_consistent(&self) -> bool {
        (self.seq == 0) == (self.prev == Hash32::ZERO)
    }
}

/// One link of a node's chain as a verifier holds it: the full attestation, or only the
/// commitment to it.
#[derive(Debug, Clone, Copy)]
pub enum Link<'a> {
    /// A full attestation and its chain hash.
    Full(&'a MeterAttestation, Hash32),
    /// A commitment (privacy mode, for a node that is not a counterparty in the slot).
    Committed(&'a AttestationCommitment),
}

impl Link<'_> {
    /// The metered node.
    pub fn node(&self) -> NodeId {
        match self {
            Link::Full(a, _) => a.node,
            Link::Committed(c) => c.node,
        }
    }

    /// The sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            Link::Full(a, _) => a.seq,
            Link::Committed(c) => c.seq,
        }
    }

    /// The predecessor's chain hash.
    pub fn prev(&self) -> Hash32 {
        match self {
            Link::Full(a, _) => a.prev,
            Link::Committed(c) => c.prev,
        }
    }

    /// The slot.
    pub fn slot_ms(&self) -> u64 {
        match self {
            Link::Full(a, _) => a.slot_ms,
            Link::Committed(c) => c.slot_ms,
        }
    }

    /// The attestation's chain hash (what the successor's `prev` must hold).
    pub fn hash(&self) -> Hash32 {
        match self {
            Link::Full(_, h) => *h,
            Link::Committed(c) => c.attestation,
        }
    }
}

/// Checks that `next` directly follows `prev`, whichever of them are full attestations or
/// commitments: same node, `seq` one more, `prev` the predecessor's chain hash, a later slot.
/// Between two full attestations the registers are checked too
/// ([`MeterAttestation::check_follows`]); a commitment hides them.
pub fn check_link(prev: &Link<'_>, next: &Link<'_>, slot_len_ms: u64) -> Result<(), ChainError> {
    if let (Link::Full(p, h), Link::Full(n, _)) = (prev, next) {
        return n.check_follows(p, h, slot_len_ms);
    }
    if next.node() != prev.node() {
        return Err(ChainError::Node);
    }
    if prev.seq().checked_add(1) != Some(next.seq()) {
        return Err(ChainError::Sequence);
    }
    if next.prev() != prev.hash() {
        return Err(ChainError::PrevHash);
    }
    if next.slot_ms() <= prev.slot_ms() {
        return Err(ChainError::Slot);
    }
    Ok(())
}

/// Checks a run of one node's chain, in order, as a verifier holds it (full attestations,
/// commitments, or a mix). On failure, says at which index the chain breaks: the link there
/// does not follow the one before it.
pub fn check_chain(links: &[Link<'_>], slot_len_ms: u64) -> Result<(), (usize, ChainError)> {
    for (i, w) in links.windows(2).enumerate() {
        check_link(&w[0], &w[1], slot_len_ms).map_err(|e| (i + 1, e))?;
    }
    Ok(())
}
