//! The bilateral trade handshake and the co-signed trade.
//!
//! 1. The taker signs a [`TradeProposal`] against an offer `(maker, nonce)` at a version, for an
//!    amount and a price, and sends it as [`TradeRequest::Propose`].
//! 2. The maker checks the terms ([`terms_acceptable`]), reserves the quantity atomically,
//!    signs the [`Trade`] and answers [`TradeResponse::Accept`] with its signature.
//! 3. The taker countersigns, stores the trade durably, and sends it back as
//!    [`TradeRequest::Countersigned`]; the maker stores it durably and answers
//!    [`TradeResponse::Stored`]. Only then do both treat the trade as agreed.
//!
//! A trade is identified by `(taker, proposal_nonce)`, so a retried proposal is recognised and
//! answered with the same signed trade (idempotent).

use crate::envelope::{Envelope, Kind, Message};
use crate::ext::Extension;
use crate::ids::NodeId;
use crate::offer::{Offer, OfferId, Side};
use crate::units::{EnergyWh, PricePerKwh};
use serde::{Deserialize, Serialize};

/// A trade's identity: the taker and the nonce of its proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TradeId {
    /// The taker.
    pub taker: NodeId,
    /// The taker's proposal nonce.
    pub nonce: u64,
}

impl TradeId {
    /// The 40 bytes `taker ‖ nonce (u64 big-endian)`, as used in commitments.
    pub fn to_bytes(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..32].copy_from_slice(&self.taker.0);
        out[32..].copy_from_slice(&self.nonce.to_be_bytes());
        out
    }
}

/// A taker's signed proposal to trade against an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeProposal {
    /// The taker; must be the envelope's signer.
    pub taker: NodeId,
    /// Chosen by the taker, unique among its proposals.
    pub nonce: u64,
    /// The offer taken.
    pub offer: OfferId,
    /// The offer version the taker saw.
    pub offer_version: u32,
    /// The offer's slot (repeated so the proposal stands on its own).
    pub slot_ms: u64,
    /// Energy to trade.
    pub energy_wh: EnergyWh,
    /// Price per kWh.
    pub price: PricePerKwh,
    /// When the proposal was made.
    pub created_ms: u64,
    /// Extensions.
    pub ext: Vec<Extension>,
}

impl Message for TradeProposal {
    const KIND: Kind = Kind::TradeProposal;
}

impl TradeProposal {
    /// The id of the trade this proposal would create.
    pub fn trade_id(&self) -> TradeId {
        TradeId {
            taker: self.taker,
            nonce: self.nonce,
        }
    }
}

/// An agreed trade. Signed by the maker, then the taker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    /// The offer taken.
    pub offer: OfferId,
    /// The offer version the proposal named.
    pub offer_version: u32,
    /// The side of the maker's offer (the taker is on the other side).
    pub maker_side: Side,
    /// The taker.
    pub taker: NodeId,
    /// The taker's proposal nonce.
    pub nonce: u64,
    /// The delivery slot.
    pub slot_ms: u64,
    /// Energy agreed.
    pub energy_wh: EnergyWh,
    /// Price per kWh agreed.
    pub price: PricePerKwh,
    /// When the maker accepted.
    pub agreed_ms: u64,
    /// Extensions.
    pub ext: Vec<Extension>,
}

impl Message for Trade {
    const KIND: Kind = Kind::Trade;
}

impl Trade {
    /// The trade's identity.
    pub fn id(&self) -> TradeId {
        TradeId {
            taker: self.taker,
            nonce: self.nonce,
        }
    }

    /// The maker.
    pub fn maker(&self) -> NodeId {
        self.offer.maker
    }

    /// The selling party.
    pub fn seller(&self) -> NodeId {
        match self.maker_side {
            Side::Sell => self.offer.maker,
            Side::Buy => self.taker,
        }
    }

    /// The buying party.
    pub fn buyer(&self) -> NodeId {
        match self.maker_side {
            Side::Sell => self.taker,
            Side::Buy => self.offer.maker,
        }
    }

    /// The trade a maker signs in answer to `proposal` against `offer`.
    pub fn from_proposal(offer: &Offer, p: &TradeProposal, agreed_ms: u64) -> Trade {
        Trade {
            offer: p.offer,
            offer_version: p.offer_version,
            maker_side: offer.side,
            taker: p.taker,
            nonce: p.nonce,
            slot_ms: p.slot_ms,
            energy_wh: p.energy_wh,
            price: p.price,
            agreed_ms,
            ext: Vec::new(),
        }
    }

    /// Whether this trade is exactly what `proposal` asked for against an offer on `maker_side`.
    pub fn matches_proposal(&self, p: &TradeProposal) -> bool {
        self.offer == p.offer
            && self.offer_version == p.offer_version
            && self.taker == p.taker
            && self.nonce == p.nonce
            && self.slot_ms == p.slot_ms
            && self.energy_wh == p.energy_wh
            && self.price == p.price
    }
}

/// Why a maker turned a proposal down. Sent in [`TradeResponse::Reject`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RejectReason {
    /// The maker has no such offer.
    #[error("unknown offer")]
    UnknownOffer,
    /// The proposal names a version the maker never published.
    #[error("no such offer version")]
    StaleVersion,
    /// Not enough quantity remains.
    #[error("not enough quantity left")]
    InsufficientQuantity,
    /// The price is worse for the maker than its current offer.
    #[error("price worse than the offer")]
    PriceWorse,
    /// Below the offer's minimum fill.
    #[error("below the minimum fill")]
    BelowMinFill,
    /// Trading for the slot has closed, or the offer expired.
    #[error("gate closed or offer expired")]
    Closed,
    /// The maker would commit more energy in the slot than it offered.
    #[error("maker would over-commit the slot")]
    OverCommitted,
    /// The taker is not a member, or the proposal is invalid.
    #[error("invalid proposal")]
    Invalid,
    /// The maker's clock is not synchronised; it signs nothing.
    #[error("maker clock unsynchronised")]
    ClockUnsynced,
    /// The maker is overloaded; try again later.
    #[error("busy")]
    Busy,
}

/// Whether a maker whose offer is now `current` may accept `p`.
///
/// The proposal may name any version up to the current one, and is always judged against the
/// current version: the quantity must still be there, the fill at least the current minimum
/// (or all that remains), and the price no worse for the maker (a seller gets at least its
/// current price, a buyer pays at most its current price).
///
/// Older versions are honoured because every fill publishes a new version with the remaining
/// quantity: twenty takers who saw version 1 at once would otherwise lose to the first one or
/// two fills, though the maker could serve ten of them on exactly the terms they saw. Judging
/// against the current terms means honouring an old version never costs the maker anything.
pub fn terms_acceptable(
    current: &Offer,
    p: &TradeProposal,
    now_ms: u64,
) -> Result<(), RejectReason> {
    if p.offer != current.id() || p.slot_ms != current.slot_ms {
        return Err(RejectReason::UnknownOffer);
    }
    if p.offer_version == 0 || p.offer_version > current.version {
        return Err(RejectReason::StaleVersion);
    }
    if current.is_cancelled() || now_ms > current.expires_ms {
        return Err(RejectReason::Closed);
    }
    if p.energy_wh == 0 || p.energy_wh > current.quantity_wh {
        return Err(RejectReason::InsufficientQuantity);
    }
    if p.energy_wh < current.min_fill_wh && p.energy_wh != current.quantity_wh {
        return Err(RejectReason::BelowMinFill);
    }
    let worse = match current.side {
        Side::Sell => p.price < current.price,
        Side::Buy => p.price > current.price,
    };
    if worse {
        return Err(RejectReason::PriceWorse);
    }
    Ok(())
}

/// A request on `/wattmesh/trade/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TradeRequest {
    /// Step 1: an envelope holding a [`TradeProposal`] signed by the taker.
    Propose(Envelope),
    /// Step 3: an envelope holding the [`Trade`] signed by maker and taker.
    Countersigned(Envelope),
    /// Reconciliation: what does the maker hold for this trade?
    Status(TradeId),
    /// Settlement: the seller's signed [`crate::Settlement`] of one trade, with the seller's
    /// attestation for the slot (envelope bytes; absent if it has none) and the proof that the
    /// trade is in that attestation's `sold` commitment. The buyer checks and countersigns.
    Settle {
        /// The settlement, signed by the seller.
        settlement: Envelope,
        /// The seller's attestation envelope for the slot, if any.
        attestation: Option<Vec<u8>>,
        /// Inclusion proof of the trade in the attestation's `sold` root.
        proof: Vec<crate::merkle::ProofStep>,
    },
    /// A two-party document signed by its first party (a standing
    /// [`crate::ledger::Agreement`] or a [`crate::ledger::Payment`]), for the recipient's owner
    /// to accept (countersign) or decline.
    Cosign(Envelope),
    /// The document of an earlier [`TradeRequest::Cosign`], countersigned by the recipient.
    Cosigned(Envelope),
    /// The recipient's owner declined the document whose payload has this
    /// [`crate::ledger::document_hash`].
    Decline(crate::ids::Hash32),
    /// A [`crate::ledger::DisputeNote`] about a trade the two share.
    Note(Envelope),
    /// Privacy mode: a node's private [`crate::MeterAttestation`] for a slot, sent to a trade
    /// counterparty in that slot, with the [`crate::attestation::AttestationCommitment`] the
    /// node published for it. The recipient checks both and that the commitment opens to the
    /// attestation, stores them, and answers [`TradeResponse::Stored`]; it never passes the
    /// attestation on to anyone but its node.
    Attestation {
        /// The private attestation's envelope.
        attestation: Envelope,
        /// The commitment's envelope.
        commitment: Envelope,
    },
}

/// A response on `/wattmesh/trade/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TradeResponse {
    /// Step 2: the [`Trade`] signed by the maker.
    Accept(Envelope),
    /// The proposal was turned down.
    Reject(RejectReason),
    /// Step 4: the maker stored the co-signed trade.
    Stored,
    /// Answer to [`TradeRequest::Status`]: the co-signed trade if the maker has it, or the
    /// maker-signed one if it accepted but never saw the countersignature.
    Status(Option<Envelope>),
    /// Answer to [`TradeRequest::Settle`]: the settlement signed by seller and buyer.
    Settled(Envelope),
    /// Answer to [`TradeRequest::Settle`]: the buyer computes a different result, or cannot
    /// check the seller's; the trade is disputed.
    Dispute(DisputeReason),
    /// Answer to [`TradeRequest::Cosign`]: held for the recipient's owner to decide.
    Pending,
    /// Answer to [`TradeRequest::Cosign`]: the owner already countersigned; here it is.
    Cosigned(Envelope),
}

/// Why a buyer disputes a seller's settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DisputeReason {
    /// The buyer knows no such agreed trade.
    #[error("unknown trade")]
    UnknownTrade,
    /// The settlement's figures are not the rule's result for the trade and attestation.
    #[error("figures differ from the settlement rule")]
    WrongFigures,
    /// The attestation is missing, invalid, or not the seller's for the slot.
    #[error("bad or missing attestation")]
    BadAttestation,
    /// The trade is not proven to be in the seller's commitment.
    #[error("trade not in the seller's commitment")]
    NotInCommitment,
    /// The seller's attestation conflicts with another the buyer holds for the same slot.
    #[error("conflicting attestations")]
    ConflictingAttestation,
}

/// The largest trade request or response, in bytes: two envelopes and a proof.
pub const MAX_TRADE_MESSAGE_BYTES: usize = 2 * crate::codec::MAX_ENVELOPE_BYTES + 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    #[test]
    fn older_versions_are_judged_against_the_current_terms() {
        let mut current = sample::offer();
        current.version = 5;
        current.quantity_wh = 400;
        let p = sample::proposal(); // against version 1, 1 000 Wh at 9.5 ¢
        let now = sample::NOW_MS;
        assert_eq!(
            terms_acceptable(&current, &p, now),
            Err(RejectReason::InsufficientQuantity)
        );
        let small = TradeProposal {
            energy_wh: 400,
            ..p.clone()
        };
        assert_eq!(terms_acceptable(&current, &small, now), Ok(()));
        // The seller raised its price since version 1: the old price is now worse for it.
        current.price = 10_000;
        assert_eq!(
            terms_acceptable(&current, &small, now),
            Err(RejectReason::PriceWorse)
        );
        // A version the maker never published.
        let future = TradeProposal {
            offer_version: 6,
            ..small.clone()
        };
        current.price = 9_500;
        assert_eq!(
            terms_acceptable(&current, &future, now),
            Err(RejectReason::StaleVersion)
        );
        // Below the minimum fill, unless it takes all that remains.
        current.min_fill_wh = 300;
        let tiny = TradeProposal {
            energy_wh: 200,
            ..small.clone()
        };
        assert_eq!(
            terms_acceptable(&current, &tiny, now),
            Err(RejectReason::BelowMinFill)
        );
        current.quantity_wh = 200;
        assert_eq!(terms_acceptable(&current, &tiny, now), Ok(()));
        // Expired or cancelled.
        assert_eq!(
            terms_acceptable(&current, &tiny, current.expires_ms + 1),
            Err(RejectReason::Closed)
        );
    }
}
