//! Slot arithmetic: delivery slots, gate closure and deadlines, all in UTC milliseconds.
//!
//! Slots are aligned to the Unix epoch: a slot starts at a multiple of the slot length. Because
//! the slot length divides an hour, slots also line up with every whole hour.
//!
//! For a slot starting at `s` with length `L`, gate closure `G` and grace `P`:
//! - trading is open until `s - G` ([`gate_closure`]); a trade must be co-signed by then;
//! - the slot ends at `s + L`; attestations are due by `s + L + P` ([`attestation_deadline`]);
//! - settlements are due by `s + L + 2P` ([`settlement_deadline`]); a trade neither settled
//!   nor disputed by then is overdue.

use crate::charter::Charter;

/// Whether `t` is the start of a slot.
pub fn is_aligned(c: &Charter, t: u64) -> bool {
    t % c.slot_ms() == 0
}

/// The start of the slot containing `t`.
pub fn slot_start(c: &Charter, t: u64) -> u64 {
    t - t % c.slot_ms()
}

/// The start of the slot after the one containing `t`.
pub fn next_slot(c: &Charter, t: u64) -> u64 {
    slot_start(c, t).saturating_add(c.slot_ms())
}

/// When trading for the slot starting at `slot` closes.
pub fn gate_closure(c: &Charter, slot: u64) -> u64 {
    slot.saturating_sub(c.gate_closure_secs as u64 * 1000)
}

/// The first slot still open for trading at `now`.
pub fn first_open_slot(c: &Charter, now: u64) -> u64 {
    let mut s = next_slot(c, now);
    while gate_closure(c, s) <= now {
        s += c.slot_ms();
    }
    s
}

/// The end of the slot starting at `slot`.
pub fn slot_end(c: &Charter, slot: u64) -> u64 {
    slot.saturating_add(c.slot_ms())
}

/// When attestations for the slot starting at `slot` are due.
pub fn attestation_deadline(c: &Charter, slot: u64) -> u64 {
    slot_end(c, slot).saturating_add(c.settlement_grace_secs as u64 * 1000)
}

/// When settlements for the slot starting at `slot` are due.
pub fn settlement_deadline(c: &Charter, slot: u64) -> u64 {
    slot_end(c, slot).saturating_add(2 * c.settlement_grace_secs as u64 * 1000)
}

/// How far ahead offers may be made: two days of slots.
pub const MAX_SLOT_HORIZON_MS: u64 = 2 * 24 * 3600 * 1000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NeighbourhoodId, NodeId};

    fn charter() -> Charter {
        Charter::founding(NeighbourhoodId([0; 16]), "t", NodeId([1; 32]), 0)
    }

    #[test]
    fn fifteen_minute_slots() {
        let c = charter();
        let t = 1_700_000_123_456;
        let s = slot_start(&c, t);
        assert!(is_aligned(&c, s));
        assert!(s <= t && t < s + 900_000);
        assert_eq!(next_slot(&c, t), s + 900_000);
        assert_eq!(gate_closure(&c, s), s - 60_000);
        assert_eq!(attestation_deadline(&c, s), s + 900_000 + 300_000);
        assert_eq!(settlement_deadline(&c, s), s + 900_000 + 600_000);
    }

    #[test]
    fn first_open_slot_skips_a_closed_gate() {
        let c = charter();
        let s = 2_000 * 900_000_000;
        // 30 s before the next slot: its gate (60 s before) has closed.
        let now = s + 900_000 - 30_000;
        assert_eq!(first_open_slot(&c, now), s + 1_800_000);
        assert_eq!(first_open_slot(&c, s), s + 900_000);
    }
}
