//! The bilateral handshake with each step failing or timing out (a lost message and a timeout
//! look the same to the sender: no answer). Whatever fails, the two sides end up agreeing on
//! whether the trade exists, and the maker's offer is reserved once.

use super::testkit::Pair;
use super::{CmdResult, Input, MAX_ATTEMPTS, Market, TradeState};
use wattmesh_protocol::offer::{OfferId, Side};
use wattmesh_protocol::trade::{TradeId, TradeRequest};
use wattmesh_protocol::{Offer, Trade, slot};

const QTY: u64 = 1_000;
const WH: u64 = 400;

/// Market 0 posts a sell offer that reaches market 1's book.
fn posted(p: &mut Pair) -> Offer {
    let c = p.m[0].chain.at(p.now).charter.clone();
    let r = p.feed(
        0,
        Input::Post {
            cmd: 1,
            side: Side::Sell,
            quantity_wh: QTY,
            price: c.feed_in_price + 1_000,
            slot_ms: slot::first_open_slot(&c, p.now),
            min_fill_wh: 1,
            nonce: 7,
        },
    );
    let Some(Ok(CmdResult::Posted(o))) = r.into_iter().next() else {
        panic!("posting failed");
    };
    assert!(
        p.m[1].book.get(&o.id()).is_some(),
        "the taker sees the offer"
    );
    o
}

/// Market 1 takes `WH` of the offer; the command's result.
fn take(p: &mut Pair, o: &Offer) -> Result<Trade, String> {
    let r = p.feed(
        1,
        Input::Take {
            cmd: 2,
            offer: o.id(),
            energy_wh: WH,
            nonce: 99,
        },
    );
    match r.into_iter().next().expect("the take reports") {
        Ok(CmdResult::Traded(t)) => Ok(t),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(e) => Err(e),
    }
}

fn state(m: &Market, id: &TradeId) -> Option<TradeState> {
    m.trades.get(id).map(|t| t.state)
}

fn remaining(p: &Pair, i: usize, id: &OfferId) -> u64 {
    p.m[i].book.get(id).map_or(0, |e| e.offer.quantity_wh)
}

/// After gate closure the maker asks about what it never saw confirmed.
fn past_gate(p: &mut Pair, o: &Offer) {
    let c = p.m[0].chain.at(p.now).charter.clone();
    p.now = slot::gate_closure(&c, o.slot_ms) + 1;
    p.tick();
}

#[test]
fn every_step_delivered_agrees_once() {
    let mut p = Pair::new();
    let o = posted(&mut p);
    let t = take(&mut p, &o).expect("agreed");
    assert_eq!(state(&p.m[0], &t.id()), Some(TradeState::Agreed));
    assert_eq!(state(&p.m[1], &t.id()), Some(TradeState::Agreed));
    assert_eq!(
        p.m[0].trades[&t.id()].envelope,
        p.m[1].trades[&t.id()].envelope
    );
    // The maker published the remaining quantity, and both books show it.
    assert_eq!(remaining(&p, 0, &o.id()), QTY - WH);
    assert_eq!(remaining(&p, 1, &o.id()), QTY - WH);
}

#[test]
fn a_lost_proposal_is_sent_again() {
    let mut p = Pair::new();
    let o = posted(&mut p);
    p.drop = 1;
    let t = take(&mut p, &o).expect("agreed on the second attempt");
    assert_eq!(state(&p.m[0], &t.id()), Some(TradeState::Agreed));
    assert_eq!(remaining(&p, 0, &o.id()), QTY - WH);
}

#[test]
fn a_maker_that_never_answers_leaves_no_trade_anywhere() {
    let mut p = Pair::new();
    let o = posted(&mut p);
    p.drop = MAX_ATTEMPTS as usize;
    let e = take(&mut p, &o).unwrap_err();
    assert!(e.contains("did not answer"), "{e}");
    assert!(p.m[0].trades.is_empty() && p.m[1].trades.is_empty());
    assert_eq!(remaining(&p, 0, &o.id()), QTY, "nothing reserved");
}

#[test]
fn a_lost_acceptance_is_answered_again_with_the_same_trade_and_reserved_once() {
    let mut p = Pair::new();
    let o = posted(&mut p);
    // The maker signs and reserves, but its answer is lost; the taker's retry gets the same
    // maker-signed trade back (the proposal is idempotent), not a second reservation.
    p.drop_answers = 1;
    let t = take(&mut p, &o).expect("agreed on the retry");
    assert_eq!(state(&p.m[0], &t.id()), Some(TradeState::Agreed));
    assert_eq!(state(&p.m[1], &t.id()), Some(TradeState::Agreed));
    assert_eq!(remaining(&p, 0, &o.id()), QTY - WH, "reserved exactly once");
    assert_eq!(p.m[0].trades.len(), 1);
}

#[test]
fn a_lost_countersignature_is_recovered_by_the_makers_status_request() {
    let mut p = Pair::new();
    let o = posted(&mut p);
    p.lose = |r| matches!(r, TradeRequest::Countersigned(_));
    let t = take(&mut p, &o).expect("the taker holds the co-signed trade");
    assert_eq!(state(&p.m[1], &t.id()), Some(TradeState::Agreed));
    assert_eq!(state(&p.m[0], &t.id()), Some(TradeState::MakerSigned));
    p.lose = |_| false;
    past_gate(&mut p, &o);
    assert_eq!(state(&p.m[0], &t.id()), Some(TradeState::Agreed));
    assert_eq!(
        p.m[0].trades[&t.id()].envelope,
        p.m[1].trades[&t.id()].envelope
    );
}

#[test]
fn a_taker_that_never_stored_the_trade_is_asked_and_the_trade_never_counts() {
    let mut p = Pair::new();
    let o = posted(&mut p);
    // Every acceptance is lost: the taker gives up (as if it crashed before storing).
    p.drop_answers = MAX_ATTEMPTS as usize;
    let e = take(&mut p, &o).unwrap_err();
    assert!(e.contains("did not answer"), "{e}");
    let id = TradeId {
        taker: p.id(1),
        nonce: 99,
    };
    assert_eq!(state(&p.m[1], &id), None);
    assert_eq!(state(&p.m[0], &id), Some(TradeState::MakerSigned));
    // After gate closure the maker asks; the taker holds nothing, so it was never agreed:
    // it is not committed, not settled, and not asked about again.
    past_gate(&mut p, &o);
    assert_eq!(state(&p.m[0], &id), Some(TradeState::MakerSigned));
    assert!(p.m[0].settled_status.contains(&id));
    assert!(p.m[0].agreed_in(o.slot_ms, Side::Sell).is_empty());
    let c = p.m[0].chain.at(p.now).charter.clone();
    p.now = slot::settlement_deadline(&c, o.slot_ms) + 1;
    p.tick();
    assert!(p.m[0].settlements.is_empty() && p.m[1].settlements.is_empty());
}

#[test]
fn a_lost_settlement_answer_ends_in_the_same_record_on_both_sides() {
    let mut p = Pair::new();
    let o = posted(&mut p);
    let t = take(&mut p, &o).expect("agreed");
    let c = p.m[0].chain.at(p.now).charter.clone();
    // The buyer countersigns the settlement but every answer is lost until the deadline.
    p.now = slot::attestation_deadline(&c, o.slot_ms) + 1;
    p.drop_answers = 1;
    p.tick();
    let seller = p.m[0].settlements[&t.id()].state;
    let buyer = p.m[1].settlements[&t.id()].state;
    assert_eq!(buyer, super::SettleState::Settled);
    assert_eq!(seller, super::SettleState::Proposed);
    // The seller asks again on its next turn and gets the co-signed copy back.
    p.tick();
    assert_eq!(
        p.m[0].settlements[&t.id()].state,
        super::SettleState::Settled
    );
    assert_eq!(
        p.m[0].settlements[&t.id()].envelope,
        p.m[1].settlements[&t.id()].envelope
    );
}
