//! What happened when, in wall-clock time: offers first seen, proposals sent, co-signed trades
//! stored. The testnet reads it to measure offer propagation and trade agreement latency
//! across homes (all homes share the machine's clock). Bounded: the oldest events go first.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};
use wattmesh_protocol::offer::Offer;

/// The most events kept.
pub const CAPACITY: usize = 8192;
/// The most events one request returns.
pub const PAGE: usize = 2048;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its number: 1 for the node's first event, +1 for each one after.
    pub seq: u64,
    /// When, real (not simulated) UTC microseconds: trade agreement takes a few
    /// milliseconds, so milliseconds would hide most of it.
    pub wall_us: u64,
    /// What.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// An offer version entered our book: ours when we signed it, a neighbour's when it first
    /// reached us.
    Offer {
        /// The maker (hex).
        maker: String,
        /// The offer's nonce.
        nonce: u64,
        /// The version.
        version: u32,
        /// Its quantity, Wh.
        quantity_wh: u64,
        /// Whether we made it.
        own: bool,
    },
    /// We sent a proposal to take an offer.
    Proposed {
        /// The taker (us, hex).
        taker: String,
        /// The proposal's nonce.
        nonce: u64,
    },
    /// A co-signed trade was durably stored here.
    TradeStored {
        /// The taker (hex).
        taker: String,
        /// The taker's nonce.
        nonce: u64,
    },
}

/// The events, oldest first.
#[derive(Debug, Default)]
pub struct Timeline {
    events: VecDeque<Event>,
    next: u64,
}

/// A page of events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    /// Events after the one asked for, oldest first.
    pub events: Vec<Event>,
    /// The highest sequence number recorded so far.
    pub last: u64,
}

/// Now, real UTC ms.
pub fn wall_ms() -> u64 {
    wall_us() / 1000
}

/// Now, real UTC microseconds.
pub fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Timeline {
    /// Records an event that happened now.
    pub fn record(&mut self, kind: EventKind) {
        self.record_at(wall_us(), kind);
    }

    /// Records an event at a given wall time, UTC microseconds.
    pub fn record_at(&mut self, wall_us: u64, kind: EventKind) {
        self.next += 1;
        if self.events.len() >= CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            seq: self.next,
            wall_us,
            kind,
        });
    }

    /// Up to [`PAGE`] events with a sequence number above `after`.
    pub fn after(&self, after: u64) -> Page {
        let first = self.events.partition_point(|e| e.seq <= after);
        Page {
            events: self.events.range(first..).take(PAGE).cloned().collect(),
            last: self.next,
        }
    }
}

/// The event for an offer version entering the book.
pub fn offer_event(o: &Offer, own: bool) -> EventKind {
    EventKind::Offer {
        maker: o.maker.to_hex(),
        nonce: o.nonce,
        version: o.version,
        quantity_wh: o.quantity_wh,
        own,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposed(n: u64) -> EventKind {
        EventKind::Proposed {
            taker: "aa".into(),
            nonce: n,
        }
    }

    #[test]
    fn pages_follow_on_and_the_oldest_go_first() {
        let mut t = Timeline::default();
        for n in 0..(CAPACITY as u64 + 10) {
            t.record_at(n, proposed(n));
        }
        let p = t.after(0);
        // The first ten were dropped to stay within the bound.
        assert_eq!(p.events[0].seq, 11);
        assert_eq!(p.events.len(), PAGE);
        assert_eq!(p.last, CAPACITY as u64 + 10);
        let next = t.after(p.events.last().unwrap().seq);
        assert_eq!(next.events[0].seq, 11 + PAGE as u64);
        assert!(t.after(p.last).events.is_empty());
    }
}
