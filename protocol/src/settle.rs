//! The settlement rule: a pure, deterministic function from a trade and both parties'
//! attestations to the energy counted as delivered and the money due.
//!
//! For a trade of `E` Wh at price `p` between seller `S` and buyer `B` in slot `t`:
//!
//! 1. **Seller's share.** With no attestation from `S` for `t` by the attestation deadline,
//!    the seller's share is 0 (the seller must show its export). Otherwise, if `S` exported at
//!    least what it committed to selling (`export_wh ≥ sold.sum`), the share is `E`; if not,
//!    the export is split pro rata over everything `S` sold in the slot:
//!    `⌊E × export_wh / sold.sum⌋`. Each buyer computes its own share from the commitment
//!    alone, without seeing the other buyers' trades.
//! 2. **Buyer's share**, the same from the buyer's side: no attestation from `B` gives `E`
//!    (the seller's pay does not depend on the buyer publishing); `import_wh ≥ bought.sum`
//!    gives `E`; otherwise `⌊E × import_wh / bought.sum⌋`.
//! 3. **Delivered** = the smaller of the two shares. **Money** = `⌊delivered × p / 1000⌋`
//!    milli-minor units, booked once to each side, so the ledger sums to zero. The Wh lost to
//!    rounding down stay with the seller (exported to the grid at the feed-in tariff).
//! 4. Coverage below 100 % is never extrapolated: the measured deltas are what counts.
//!
//! An attestation whose commitment could not include the trade (`sold.sum < E` for the
//! seller, `bought.sum < E` for the buyer), or that is not for the right node and slot, makes
//! the trade a dispute ([`DisputeCause`]) instead of a settlement.

use crate::attestation::{FULL_COVERAGE, MeterAttestation};
use crate::trade::Trade;
use crate::units::{EnergyWh, MilliMinor, cost, pro_rata};
use serde::{Deserialize, Serialize};

/// How a trade came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// All the agreed energy was delivered.
    Delivered,
    /// Less than agreed was delivered; the seller's export or the buyer's import fell short.
    Short,
    /// Less than agreed, and a counted meter covered only part of the slot.
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
    /// The seller's committed sold total is smaller than this trade alone.
    #[error("seller's commitment cannot include this trade")]
    SellerCommitment,
    /// The buyer's committed bought total is smaller than this trade alone.
    #[error("buyer's commitment cannot include this trade")]
    BuyerCommitment,
}

/// Applies the rule. `seller` and `buyer` are the parties' attestations for the trade's slot,
/// if they arrived by the attestation deadline.
pub fn settle(
    trade: &Trade,
    seller: Option<&MeterAttestation>,
    buyer: Option<&MeterAttestation>,
) -> Result<Settled, DisputeCause> {
    let e = trade.energy_wh;
    let seller_share = match seller {
        None => None,
        Some(a) => {
            if a.node != trade.seller() || a.slot_ms != trade.slot_ms {
                return Err(DisputeCause::WrongAttestation);
            }
            if a.sold.sum < e {
                return Err(DisputeCause::SellerCommitment);
            }
            Some(if a.export_wh >= a.sold.sum {
                e
            } else {
                pro_rata(e, a.export_wh, a.sold.sum)
            })
        }
    };
    let buyer_share = match buyer {
        None => e,
        Some(a) => {
            if a.node != trade.buyer() || a.slot_ms != trade.slot_ms {
                return Err(DisputeCause::WrongAttestation);
            }
            if a.bought.sum < e {
                return Err(DisputeCause::BuyerCommitment);
            }
            if a.import_wh >= a.bought.sum {
                e
            } else {
                pro_rata(e, a.import_wh, a.bought.sum)
            }
        }
    };
    let Some(seller_share) = seller_share else {
        return Ok(Settled {
            delivered_wh: 0,
            amount: 0,
            outcome: Outcome::NoSellerAttestation,
        });
    };
    let delivered = seller_share.min(buyer_share);
    let partial = seller.is_some_and(|a| a.coverage_permille < FULL_COVERAGE)
        || buyer.is_some_and(|a| a.coverage_permille < FULL_COVERAGE);
    let outcome = if delivered == e {
        Outcome::Delivered
    } else if partial {
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
