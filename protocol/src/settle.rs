//! The settlement rule: a pure, deterministic function from a trade and both parties'
//! attestations to the energy counted as delivered and the money due.
//!
//! For a trade of `E` Wh at price `p` between seller `S` and buyer `B` in slot `t`:
//!
//! 1. With no attestation from `S` for `t` by the attestation deadline, nothing counts as
//!    delivered (the seller must show its export).
//! 2. Otherwise the trade must be in the seller's commitment: an inclusion proof of
//!    `(trade id, E)` against `S`'s `sold` root ([`crate::merkle`]). Without one the trade is
//!    disputed. This stops a seller from leaving trades out of its total to look fully
//!    delivered.
//! 3. If `S` exported at least what it sold (`export_wh ≥ sold.sum`), `E` is delivered; if not,
//!    the export is split pro rata over everything `S` sold in the slot:
//!    `⌊E × export_wh / sold.sum⌋`. Each buyer computes its own share from the commitment and
//!    its own trade alone, without seeing the other buyers' trades.
//! 4. **Money** = `⌊delivered × p / 1000⌋` milli-minor units, booked once to each side, so the
//!    ledger sums to zero. The Wh lost to rounding down stay with the seller.
//! 5. Coverage below 100 % is never extrapolated: the measured deltas are what counts.
//! 6. The buyer's attestation is recorded but does not reduce delivery: the buyer committed to
//!    take the energy, and letting its own figures cut what it pays would reward a buyer for
//!    inflating its `bought` total.

use crate::attestation::{FULL_COVERAGE, MeterAttestation};
use crate::merkle::{self, ProofStep};
use crate::trade::Trade;
use crate::units::{EnergyWh, MilliMinor, cost, pro_rata};
use serde::{Deserialize, Serialize};

/// How a trade came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// All the agreed energy was delivered.
    Delivered,
    /// Less than agreed was delivered: the seller exported less than it sold.
    Short,
    /// Less than agreed, and the seller's meter covered only part of the slot.
    ShortPartialCoverage,
    /// The seller published no attestation for the slot in time: nothing counts as delivered.
    NoSellerAttestation,
}

/// The rule's result for one trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Energy counted as delivered.
    pub delivered_wh: EnergyWh,
    /// Money the buyer owes the seller.
    pub amount: MilliMinor,
    /// The outcome.
    pub outcome: Outcome,
}

/// Why a trade cannot be settled by the rule and must be disputed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DisputeCause {
    /// An attestation is for another node or slot than the trade's party and slot.
    #[error("attestation does not belong to this trade's party and slot")]
    WrongAttestation,
    /// No valid proof that the trade is in the seller's `sold` commitment.
    #[error("trade not proven to be in the seller's commitment")]
    NotInCommitment,
}

/// Applies the rule. `seller` is the seller's attestation for the trade's slot if it arrived by
/// the attestation deadline, with the proof that the trade is in its `sold` commitment; `buyer`
/// is the buyer's, if any (recorded, checked to belong, not limiting).
pub fn settle(
    trade: &Trade,
    seller: Option<(&MeterAttestation, &[ProofStep])>,
    buyer: Option<&MeterAttestation>,
) -> Result<Settled, DisputeCause> {
    let e = trade.energy_wh;
    if let Some(a) = buyer {
        if a.node != trade.buyer() || a.slot_ms != trade.slot_ms {
            return Err(DisputeCause::WrongAttestation);
        }
    }
    let Some((a, proof)) = seller else {
        return Ok(Settled {
            delivered_wh: 0,
            amount: 0,
            outcome: Outcome::NoSellerAttestation,
        });
    };
    if a.node != trade.seller() || a.slot_ms != trade.slot_ms {
        return Err(DisputeCause::WrongAttestation);
    }
    if !merkle::verify(&a.sold, &trade.id(), e, proof) {
        return Err(DisputeCause::NotInCommitment);
    }
    let delivered = if a.export_wh >= a.sold.sum {
        e
    } else {
        pro_rata(e, a.export_wh, a.sold.sum)
    };
    let outcome = if delivered == e {
        Outcome::Delivered
    } else if a.coverage_permille < FULL_COVERAGE {
        Outcome::ShortPartialCoverage
    } else {
        Outcome::Short
    };
    Ok(Settled {
        delivered_wh: delivered,
        amount: cost(delivered, trade.price),
        outcome,
    })
}
