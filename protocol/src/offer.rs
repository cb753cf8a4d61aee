//! Offers: signed sell and buy orders for one delivery slot, gossiped to the neighbourhood.
//!
//! An offer is identified by `(maker, nonce)`, never by a hash of its bytes. Updates (new price,
//! new remaining quantity after a fill) and cancellations are new versions with the same id and
//! a higher `version`; a cancellation has `quantity_wh == 0`.

use crate::envelope::{Kind, Message};
use crate::ext::Extension;
use crate::ids::NodeId;
use crate::units::{EnergyWh, PricePerKwh};
use serde::{Deserialize, Serialize};

/// Sell or buy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Side {
    /// The maker sells energy.
    Sell,
    /// The maker buys energy.
    Buy,
}

impl Side {
    /// The other side.
    pub fn opposite(self) -> Side {
        match self {
            Side::Sell => Side::Buy,
            Side::Buy => Side::Sell,
        }
    }
}

/// Offer attribute: the energy is from renewable generation.
pub const ATTR_GREEN: u32 = 1;
/// Offer attribute: the maker wants only counterparties on the same feeder.
pub const ATTR_LOCAL: u32 = 2;

/// An offer's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OfferId {
    /// Who made it.
    pub maker: NodeId,
    /// Chosen by the maker, unique among its offers.
    pub nonce: u64,
}

/// A sell or buy offer for one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The maker; must be the envelope's signer.
    pub maker: NodeId,
    /// With `maker`, identifies the offer.
    pub nonce: u64,
    /// 1 for the first version, +1 for each update.
    pub version: u32,
    /// Sell or buy.
    pub side: Side,
    /// The delivery slot's start, UTC ms, aligned to the slot length.
    pub slot_ms: u64,
    /// Energy still available (sell) or still wanted (buy) as of this version; 0 cancels.
    pub quantity_wh: EnergyWh,
    /// The smallest fill the maker accepts (at most `quantity_wh`, unless cancelled).
    pub min_fill_wh: EnergyWh,
    /// The limit price per kWh, inside the charter's band.
    pub price: PricePerKwh,
    /// When this version was made, UTC ms.
    pub created_ms: u64,
    /// After this, the offer can no longer be taken; at or before the slot's gate closure.
    pub expires_ms: u64,
    /// Bit flags ([`ATTR_GREEN`], [`ATTR_LOCAL`]); unknown bits are kept and ignored.
    pub attributes: u32,
    /// Extensions (see [`crate::ext`]).
    pub ext: Vec<Extension>,
}

impl Message for Offer {
    const KIND: Kind = Kind::Offer;
}

impl Offer {
    /// The offer's identity.
    pub fn id(&self) -> OfferId {
        OfferId {
            maker: self.maker,
            nonce: self.nonce,
        }
    }

    /// Whether this version cancels the offer.
    pub fn is_cancelled(&self) -> bool {
        self.quantity_wh == 0
    }
}
