//! The co-signed settlement of one trade, signed by the seller and then the buyer.

use crate::envelope::{Kind, Message};
use crate::ext::Extension;
use crate::ids::{Hash32, NodeId};
use crate::settle::{Outcome, Settled};
use crate::trade::{Trade, TradeId};
use crate::units::{EnergyWh, MilliMinor, PricePerKwh};
use serde::{Deserialize, Serialize};

/// The result of applying the settlement rule to one trade, as both parties sign it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// The trade settled.
    pub trade: TradeId,
    /// The seller (first signature).
    pub seller: NodeId,
    /// The buyer (second signature).
    pub buyer: NodeId,
    /// The trade's slot.
    pub slot_ms: u64,
    /// Energy agreed in the trade.
    pub agreed_wh: EnergyWh,
    /// Energy counted as delivered by the rule.
    pub delivered_wh: EnergyWh,
    /// Price per kWh from the trade.
    pub price: PricePerKwh,
    /// Money the buyer owes the seller: `cost(delivered_wh, price)`.
    pub amount: MilliMinor,
    /// Chain hash of the seller's attestation used, if any.
    pub seller_attestation: Option<Hash32>,
    /// Chain hash of the buyer's attestation used, if any.
    pub buyer_attestation: Option<Hash32>,
    /// How the trade came out.
    pub outcome: Outcome,
    /// When the settlement was computed.
    pub created_ms: u64,
    /// Extensions.
    pub ext: Vec<Extension>,
}

impl Message for Settlement {
    const KIND: Kind = Kind::Settlement;
}

impl Settlement {
    /// Builds the settlement record for `trade` from the rule's result.
    pub fn new(
        trade: &Trade,
        settled: &Settled,
        seller_attestation: Option<Hash32>,
        buyer_attestation: Option<Hash32>,
        created_ms: u64,
    ) -> Settlement {
        Settlement {
            trade: trade.id(),
            seller: trade.seller(),
            buyer: trade.buyer(),
            slot_ms: trade.slot_ms,
            agreed_wh: trade.energy_wh,
            delivered_wh: settled.delivered_wh,
            price: trade.price,
            amount: settled.amount,
            seller_attestation,
            buyer_attestation,
            outcome: settled.outcome,
            created_ms,
            ext: Vec::new(),
        }
    }

    /// Whether the figures are internally consistent (delivered within agreed, amount as the
    /// rounding rule gives it, distinct parties).
    pub fn self_consistent(&self) -> bool {
        self.delivered_wh <= self.agreed_wh
            && self.amount == crate::units::cost(self.delivered_wh, self.price)
            && self.seller != self.buyer
    }
}
