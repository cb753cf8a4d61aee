//! The documents two neighbours sign about their dealings after (or beside) single trades:
//!
//! - [`Agreement`]: a standing agreement, "up to 1 kWh per slot, weekday afternoons, this month,
//!   at this price", signed by the proposer and then the counterparty. Each slot it covers is
//!   executed as a [`Trade`] derived from it ([`Agreement::trade_for`]), so settlement,
//!   commitments and the ledger treat it like any other trade.
//! - [`DisputeNote`]: one step of a dispute's lifecycle about one trade (open, answer,
//!   resolve), signed by its author and sent to the other party.
//! - [`Payment`]: "I paid you this much for our dealings up to this date", signed by the payer
//!   and then by the payee, who confirms receiving it.

use crate::envelope::{Kind, Message};
use crate::ext::Extension;
use crate::ids::{Hash32, NodeId};
use crate::offer::{OfferId, Side};
use crate::trade::{Trade, TradeId};
use crate::units::{EnergyWh, MilliMinor, PricePerKwh};
use serde::{Deserialize, Serialize};

/// The longest a standing agreement may run, days.
pub const MAX_AGREEMENT_DAYS: u64 = 92;
/// The longest text in a dispute note, bytes.
pub const MAX_NOTE_BYTES: usize = 280;
/// The longest payment reference, bytes.
pub const MAX_REFERENCE_BYTES: usize = 64;
/// The most notes one trade's dispute may hold (each side answers a few times at most).
pub const MAX_NOTES_PER_TRADE: usize = 16;

const DAY_MS: u64 = 86_400_000;

/// A standing agreement's id: its proposer and the proposer's nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AgreementId {
    /// Who proposed it.
    pub proposer: NodeId,
    /// The proposer's nonce.
    pub nonce: u64,
}

/// A standing agreement between two neighbours, executed slot by slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    /// Who proposed it (first signature).
    pub proposer: NodeId,
    /// The proposer's nonce.
    pub nonce: u64,
    /// The other party (second signature).
    pub counterparty: NodeId,
    /// The proposer's side: `Sell` means the proposer sells to the counterparty.
    pub proposer_side: Side,
    /// Energy per covered slot, Wh ("up to": settlement counts what the seller delivered).
    pub per_slot_wh: EnergyWh,
    /// Price per kWh.
    pub price: PricePerKwh,
    /// The first slot it may cover (slot-aligned), UTC ms.
    pub start_ms: u64,
    /// The end of the period, exclusive, UTC ms.
    pub end_ms: u64,
    /// Days of the week it covers, in local time: bit 0 Monday .. bit 6 Sunday.
    pub weekdays: u8,
    /// The first local minute of the day it covers (a slot is covered if it starts in
    /// `from_min..to_min`).
    pub from_min: u16,
    /// The end of the covered local time of day, minutes, exclusive.
    pub to_min: u16,
    /// The local time zone's offset from UTC the hours are in, minutes (fixed when signed,
    /// so both parties derive the same slots).
    pub utc_offset_min: i16,
    /// When the proposer signed it.
    pub created_ms: u64,
    /// Extensions.
    pub ext: Vec<Extension>,
}

impl Message for Agreement {
    const KIND: Kind = Kind::Agreement;
}

impl Agreement {
    /// Its id.
    pub fn id(&self) -> AgreementId {
        AgreementId {
            proposer: self.proposer,
            nonce: self.nonce,
        }
    }

    /// Who sells.
    pub fn seller(&self) -> NodeId {
        match self.proposer_side {
            Side::Sell => self.proposer,
            Side::Buy => self.counterparty,
        }
    }

    /// Who buys.
    pub fn buyer(&self) -> NodeId {
        match self.proposer_side {
            Side::Sell => self.counterparty,
            Side::Buy => self.proposer,
        }
    }

    /// Whether `node` is one of the two parties.
    pub fn is_party(&self, node: &NodeId) -> bool {
        *node == self.proposer || *node == self.counterparty
    }

    /// Whether the agreement covers the slot starting at `slot_ms` (inside the period, on a
    /// covered weekday, starting inside the covered hours, all in the agreement's local time).
    pub fn covers(&self, slot_ms: u64) -> bool {
        if slot_ms < self.start_ms || slot_ms >= self.end_ms {
            return false;
        }
        let local_min = (slot_ms / 60_000) as i64 + i64::from(self.utc_offset_min);
        let day = local_min.div_euclid(1440);
        let minute = local_min.rem_euclid(1440) as u16;
        // 1970-01-01 was a Thursday: day 0 has weekday index 3 (Monday = 0).
        let weekday = (day + 3).rem_euclid(7) as u8;
        self.weekdays & (1 << weekday) != 0 && minute >= self.from_min && minute < self.to_min
    }

    /// The covered slots starting in `from_ms..to_ms`, for slots of `slot_ms_len`.
    pub fn slots_in(&self, slot_ms_len: u64, from_ms: u64, to_ms: u64) -> Vec<u64> {
        if slot_ms_len == 0 {
            return Vec::new();
        }
        let lo = from_ms.max(self.start_ms);
        let hi = to_ms.min(self.end_ms);
        let mut s = lo.div_ceil(slot_ms_len) * slot_ms_len;
        let mut out = Vec::new();
        while s < hi {
            if self.covers(s) {
                out.push(s);
            }
            s += slot_ms_len;
        }
        out
    }

    /// The trade the agreement makes in one covered slot. Both parties derive the same one;
    /// its offer id is the agreement's id with version 0 (no gossiped offer has version 0),
    /// which marks it as coming from an agreement.
    pub fn trade_for(&self, slot_ms: u64) -> Trade {
        let h = Hash32::tagged(
            "wattmesh/agreement-slot/v1",
            &[
                &self.proposer.0,
                &self.nonce.to_be_bytes(),
                &slot_ms.to_be_bytes(),
            ],
        );
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.0[..8]);
        Trade {
            offer: OfferId {
                maker: self.proposer,
                nonce: self.nonce,
            },
            offer_version: 0,
            maker_side: self.proposer_side,
            taker: self.counterparty,
            nonce: u64::from_be_bytes(b),
            slot_ms,
            energy_wh: self.per_slot_wh,
            price: self.price,
            agreed_ms: self.created_ms,
            ext: Vec::new(),
        }
    }

    /// The id of the trade in one slot.
    pub fn trade_id_for(&self, slot_ms: u64) -> TradeId {
        self.trade_for(slot_ms).id()
    }
}

/// Whether a trade was derived from a standing agreement rather than agreed on an offer.
pub fn from_agreement(t: &Trade) -> bool {
    t.offer_version == 0
}

/// One step of a dispute's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoteStage {
    /// The author opens a dispute (or states why it recorded one).
    Open,
    /// The author answers the other party.
    Answer,
    /// The author proposes or accepts a resolution: the buyer owes the seller `amount` for
    /// the trade. The dispute is resolved when both parties' latest resolutions name the
    /// same amount.
    Resolve,
}

/// A note about a disputed trade, signed by its author and sent to the other party.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeNote {
    /// The trade.
    pub trade: TradeId,
    /// Who wrote it (the signer).
    pub author: NodeId,
    /// Which step.
    pub stage: NoteStage,
    /// What the owner (or the node, for automatic notes) says, at most [`MAX_NOTE_BYTES`].
    pub text: String,
    /// For [`NoteStage::Resolve`]: what the buyer owes the seller for the trade.
    pub amount: Option<MilliMinor>,
    /// When it was written.
    pub created_ms: u64,
    /// Extensions.
    pub ext: Vec<Extension>,
}

impl Message for DisputeNote {
    const KIND: Kind = Kind::DisputeNote;
}

/// A payment between two neighbours, declared by the payer and confirmed by the payee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// Who paid (first signature).
    pub payer: NodeId,
    /// Who was paid (second signature, confirming receipt).
    pub payee: NodeId,
    /// The payer's nonce.
    pub nonce: u64,
    /// How much.
    pub amount: MilliMinor,
    /// The dealings it pays for end here (a statement's end), UTC ms.
    pub through_ms: u64,
    /// How it was paid, for people ("cash", "bank transfer 2026-11"), at most
    /// [`MAX_REFERENCE_BYTES`].
    pub reference: String,
    /// When the payer declared it.
    pub created_ms: u64,
    /// Extensions.
    pub ext: Vec<Extension>,
}

impl Message for Payment {
    const KIND: Kind = Kind::Payment;
}

impl Payment {
    /// Its id: payer and nonce.
    pub fn id(&self) -> (NodeId, u64) {
        (self.payer, self.nonce)
    }
}

/// The id of a two-party document or note: a hash of its payload bytes (the same before and
/// after the second signature).
pub fn document_hash(payload: &[u8]) -> Hash32 {
    Hash32::tagged("wattmesh/document/v1", &[payload])
}

/// Structural checks of an agreement's terms (the charter's band and limits are checked by
/// the validator).
pub fn check_agreement_terms(a: &Agreement, slot_len_ms: u64) -> Result<(), &'static str> {
    if a.proposer == a.counterparty {
        return Err("counterparty");
    }
    if slot_len_ms == 0 || a.start_ms % slot_len_ms != 0 {
        return Err("start_ms");
    }
    if a.end_ms <= a.start_ms || a.end_ms - a.start_ms > MAX_AGREEMENT_DAYS * DAY_MS {
        return Err("end_ms");
    }
    if a.weekdays == 0 || a.weekdays >= 1 << 7 {
        return Err("weekdays");
    }
    if a.from_min >= a.to_min || a.to_min > 1440 {
        return Err("hours");
    }
    if a.utc_offset_min.unsigned_abs() > 14 * 60 {
        return Err("utc_offset_min");
    }
    Ok(())
}

/// Structural checks of a dispute note.
pub fn check_note(n: &DisputeNote) -> Result<(), &'static str> {
    if n.text.len() > MAX_NOTE_BYTES {
        return Err("text");
    }
    if (n.stage == NoteStage::Resolve) != n.amount.is_some() {
        return Err("amount");
    }
    Ok(())
}

/// Structural checks of a payment.
pub fn check_payment(p: &Payment) -> Result<(), &'static str> {
    if p.payer == p.payee {
        return Err("payee");
    }
    if p.amount == 0 {
        return Err("amount");
    }
    if p.reference.len() > MAX_REFERENCE_BYTES {
        return Err("reference");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    fn agreement() -> Agreement {
        let (a, b) = (
            sample::seller_key().node_id(),
            sample::buyer_key().node_id(),
        );
        Agreement {
            proposer: a,
            nonce: 7,
            counterparty: b,
            proposer_side: Side::Sell,
            per_slot_wh: 1000,
            price: 90_000,
            // 2026-11-02 00:00 UTC, a Monday.
            start_ms: 1_793_577_600_000,
            end_ms: 1_793_577_600_000 + 7 * DAY_MS,
            weekdays: 0b001_1111,
            from_min: 12 * 60,
            to_min: 16 * 60,
            utc_offset_min: 0,
            created_ms: 1_793_577_000_000,
            ext: vec![],
        }
    }

    #[test]
    fn an_agreement_covers_weekday_afternoons_only() {
        let a = agreement();
        let hour = 3_600_000;
        assert!(a.covers(a.start_ms + 12 * hour), "Monday 12:00");
        assert!(
            a.covers(a.start_ms + 15 * hour + 45 * 60_000),
            "Monday 15:45"
        );
        assert!(
            !a.covers(a.start_ms + 16 * hour),
            "Monday 16:00 is past the window"
        );
        assert!(
            !a.covers(a.start_ms + 11 * hour),
            "Monday 11:00 is before it"
        );
        assert!(!a.covers(a.start_ms + 5 * DAY_MS + 13 * hour), "Saturday");
        assert!(a.covers(a.start_ms + 4 * DAY_MS + 13 * hour), "Friday");
        assert!(!a.covers(a.end_ms + 12 * hour), "after the period");
        // 15-minute slots: 16 a day on 5 weekdays.
        let slots = a.slots_in(15 * 60_000, 0, u64::MAX);
        assert_eq!(slots.len(), 5 * 16);
        // A local offset moves the window: at UTC-6, 12:00 local is 18:00 UTC.
        let mut b = a.clone();
        b.utc_offset_min = -360;
        assert!(b.covers(a.start_ms + 18 * hour));
        assert!(!b.covers(a.start_ms + 12 * hour));
    }

    #[test]
    fn each_slot_has_its_own_trade_and_both_parties_derive_the_same_one() {
        let a = agreement();
        let s = a.start_ms + 12 * 3_600_000;
        let t1 = a.trade_for(s);
        let t2 = a.trade_for(s + 900_000);
        assert_ne!(t1.id(), t2.id());
        assert_eq!(t1, a.clone().trade_for(s));
        assert_eq!(t1.seller(), a.proposer);
        assert_eq!(t1.buyer(), a.counterparty);
        assert!(from_agreement(&t1));
        let mut buy = a.clone();
        buy.proposer_side = Side::Buy;
        assert_eq!(buy.trade_for(s).seller(), a.counterparty);
    }

    #[test]
    fn terms_are_checked() {
        let a = agreement();
        assert_eq!(check_agreement_terms(&a, 900_000), Ok(()));
        let mut b = a.clone();
        b.end_ms = b.start_ms + 100 * DAY_MS;
        assert_eq!(check_agreement_terms(&b, 900_000), Err("end_ms"));
        let mut b = a.clone();
        b.weekdays = 0;
        assert_eq!(check_agreement_terms(&b, 900_000), Err("weekdays"));
        let mut b = a.clone();
        b.start_ms += 1;
        assert_eq!(check_agreement_terms(&b, 900_000), Err("start_ms"));
        let mut b = a;
        b.counterparty = b.proposer;
        assert_eq!(check_agreement_terms(&b, 900_000), Err("counterparty"));
    }
}
