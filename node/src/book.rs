//! The order book: the latest version of every live offer the node knows, its own included.
//! Pure state, no IO: fed with validated offers and the time.

use serde::Serialize;
use std::collections::HashMap;
use wattmesh_protocol::offer::{Offer, OfferId, Side};

/// One offer in the book.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The offer (latest version seen).
    pub offer: Offer,
    /// Its envelope bytes, exactly as signed.
    pub envelope: Vec<u8>,
}

/// An offer as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct OfferView {
    /// The maker's node id (hex).
    pub maker: String,
    /// The maker's short id.
    pub maker_short: String,
    /// The offer nonce.
    pub nonce: u64,
    /// The version.
    pub version: u32,
    /// `sell` or `buy`.
    pub side: &'static str,
    /// The slot start, UTC ms.
    pub slot_ms: u64,
    /// Remaining energy, Wh.
    pub quantity_wh: u64,
    /// Price, thousandths of a minor unit per kWh.
    pub price: u64,
    /// Expiry, UTC ms.
    pub expires_ms: u64,
}

impl From<&Offer> for OfferView {
    fn from(o: &Offer) -> Self {
        OfferView {
            maker: o.maker.to_hex(),
            maker_short: o.maker.short(),
            nonce: o.nonce,
            version: o.version,
            side: match o.side {
                Side::Sell => "sell",
                Side::Buy => "buy",
            },
            slot_ms: o.slot_ms,
            quantity_wh: o.quantity_wh,
            price: o.price,
            expires_ms: o.expires_ms,
        }
    }
}

/// The book.
#[derive(Debug, Default)]
pub struct Book {
    entries: HashMap<OfferId, Entry>,
}

impl Book {
    /// An empty book.
    pub fn new() -> Book {
        Book::default()
    }

    /// Inserts an offer version if it is newer than what the book has. Cancellations remove
    /// the offer. Returns whether the book changed.
    pub fn insert(&mut self, offer: Offer, envelope: Vec<u8>) -> bool {
        let id = offer.id();
        if self
            .entries
            .get(&id)
            .is_some_and(|e| e.offer.version >= offer.version)
        {
            return false;
        }
        if offer.is_cancelled() {
            self.entries.remove(&id);
        } else {
            self.entries.insert(id, Entry { offer, envelope });
        }
        true
    }

    /// Drops offers that expired before `now`; returns their ids.
    pub fn prune(&mut self, now: u64) -> Vec<OfferId> {
        let gone: Vec<OfferId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.offer.expires_ms < now)
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            self.entries.remove(id);
        }
        gone
    }

    /// An offer by id.
    pub fn get(&self, id: &OfferId) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// How many offers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Offers for slots at or after `from_slot_ms`, in a stable order (slot, maker, nonce).
    pub fn sorted_from(&self, from_slot_ms: u64) -> Vec<&Entry> {
        let mut v: Vec<&Entry> = self
            .entries
            .values()
            .filter(|e| e.offer.slot_ms >= from_slot_ms)
            .collect();
        v.sort_by_key(|e| (e.offer.slot_ms, e.offer.maker, e.offer.nonce));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattmesh_protocol::sample;

    #[test]
    fn newer_versions_replace_older_and_cancellations_remove() {
        let mut b = Book::new();
        let o = sample::offer();
        assert!(b.insert(o.clone(), vec![1]));
        assert!(
            !b.insert(o.clone(), vec![1]),
            "same version again changes nothing"
        );
        let mut v2 = o.clone();
        v2.version = 2;
        v2.quantity_wh = 10;
        assert!(b.insert(v2, vec![2]));
        assert_eq!(b.get(&o.id()).unwrap().offer.quantity_wh, 10);
        assert!(!b.insert(o.clone(), vec![1]), "older versions are ignored");
        let mut cancel = o.clone();
        cancel.version = 3;
        cancel.quantity_wh = 0;
        assert!(b.insert(cancel, vec![3]));
        assert!(b.is_empty());
    }

    #[test]
    fn prune_drops_expired() {
        let mut b = Book::new();
        let o = sample::offer();
        b.insert(o.clone(), vec![]);
        assert!(b.prune(o.expires_ms).is_empty());
        assert_eq!(b.prune(o.expires_ms + 1), vec![o.id()]);
    }
}
