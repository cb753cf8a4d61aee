//! Standing agreements, short delivery, disputes, payments and the signed export, end to end
//! between two real nodes on simulated meters and an accelerated clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;
use wattmesh_node::market::{DisputeStatus, DocState, SettleState};
use wattmesh_node::metering::SourceKind;
use wattmesh_node::node::{
    AgreementArgs, Decision, DocRequest, NoteArgs, PaymentArgs, SideArg, StageArg, TradeView,
};

/// 2026-06-21 05:54 UTC, 00:54 in Ames: night, so a seller's panels export nothing.
const NIGHT_MS: u64 = 1_782_021_240_000;

fn night_config(bootstrap: Vec<String>, origin: u64) -> wattmesh_node::config::Config {
    let mut c = test_config(bootstrap);
    c.meter.source = SourceKind::Simulated;
    c.meter.poll_secs = 10;
    c.meter.sim.registers_from =
        wattmesh_node::meter::sim::calendar::Date::new(2026, 6, 1).unwrap();
    // No home battery: nothing to export at night.
    c.meter.sim.battery = None;
    c.clock.speed = 20;
    c.clock.origin_ms = origin;
    c.clock.offset_ms = NIGHT_MS as i64 - origin as i64;
    c
}

async fn agreement_trade(node: &TestNode, settled: bool) -> Option<TradeView> {
    let t = node.handle.trades().await.ok()?;
    t.into_iter()
        .filter(|t| t.from_agreement)
        .filter(|t| !settled || t.settlement == Some(SettleState::Settled))
        .min_by_key(|t| t.slot_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agreement_trades_every_slot_is_settled_short_disputed_resolved_paid_and_exported() {
    let dir = tempfile::tempdir().unwrap();
    let (sdir, bdir) = (dir.path().join("seller"), dir.path().join("buyer"));
    let hood = found_fast(&sdir);
    join(&bdir, &hood);
    let origin = wattmesh_node::clock::Clock::new(&Default::default()).now_ms();
    let seller = TestNode::start(&sdir, night_config(vec![], origin)).await;
    let buyer = TestNode::start(&bdir, night_config(vec![seller.addr().await], origin)).await;
    eventually(Duration::from_secs(30), || async {
        (buyer.peer_count().await == 1).then_some(())
    })
    .await
    .expect("connected");
    let (sid, bid) = (key_of(&sdir).node_id(), key_of(&bdir).node_id());

    // The seller proposes 500 Wh a slot, from the slot after next, for a day.
    let now = seller.handle.status().await.unwrap().now_ms;
    let id = seller
        .handle
        .doc(DocRequest::Agreement(AgreementArgs {
            counterparty: bid.to_hex(),
            side: SideArg::Sell,
            per_slot_wh: 500,
            price: 9_000,
            start_ms: now + 10 * 60_000,
            end_ms: now + 10 * 60_000 + 86_400_000,
            weekdays: 0b111_1111,
            from_min: 0,
            to_min: 1440,
        }))
        .await
        .unwrap()
        .expect("proposed");
    // The buyer's owner sees it waiting and accepts it.
    eventually(Duration::from_secs(10), || async {
        let l = buyer.handle.ledger().await.ok()?;
        l.documents
            .iter()
            .any(|d| d.id == id && d.state == DocState::Offered && !d.outgoing)
            .then_some(())
    })
    .await
    .expect("the buyer holds the proposal");
    buyer
        .handle
        .doc(DocRequest::Decide(id.clone(), Decision::Accept))
        .await
        .unwrap()
        .expect("accepted");
    eventually(Duration::from_secs(10), || async {
        let l = seller.handle.ledger().await.ok()?;
        l.documents
            .iter()
            .any(|d| d.id == id && d.state == DocState::Signed)
            .then_some(())
    })
    .await
    .expect("the seller holds the countersigned agreement");

    // Its first slot runs at night: the seller exports nothing, both attest, and the
    // settlement records the short delivery on both sides, identically.
    let s = eventually(Duration::from_secs(150), || agreement_trade(&seller, true))
        .await
        .expect("the seller settles the agreement's first slot");
    let b = eventually(Duration::from_secs(30), || async {
        agreement_trade(&buyer, true)
            .await
            .filter(|t| t.slot_ms == s.slot_ms)
    })
    .await
    .expect("the buyer settles it too");
    assert_eq!(s.energy_wh, 500);
    let delivered = s.delivered_wh.unwrap();
    assert!(delivered < 500, "night: short delivery, got {delivered} Wh");
    assert_eq!(s.delivered_wh, b.delivered_wh);
    assert_eq!(s.amount, b.amount.map(|a| -a));
    let atts = buyer.handle.attestations(sid).await.unwrap();
    let att = atts
        .iter()
        .find(|a| a.slot_ms == s.slot_ms)
        .expect("the buyer holds the seller's attestation");
    assert!(
        att.sold.sum >= 500,
        "the agreement's slot is in the commitment"
    );

    // The buyer disputes it, the seller answers, and both resolve at the same amount.
    let note = |stage, text: &str, amount| {
        DocRequest::Note(NoteArgs {
            taker: s.taker.clone(),
            nonce: s.nonce,
            stage,
            text: text.into(),
            amount,
        })
    };
    buyer
        .handle
        .doc(note(StageArg::Open, "no energy came at night", None))
        .await
        .unwrap()
        .expect("opened");
    let status = |node: &TestNode, want: DisputeStatus| {
        let h = node.handle.clone();
        let nonce = s.nonce;
        async move {
            let l = h.ledger().await.ok()?;
            l.disputes
                .into_iter()
                .find(|d| d.nonce == nonce && d.status == want)
        }
    };
    let d = eventually(Duration::from_secs(10), || {
        status(&seller, DisputeStatus::Open)
    })
    .await
    .expect("the seller sees the dispute");
    assert_eq!(d.notes[0].text, "no energy came at night");
    assert!(!d.notes[0].ours);
    seller
        .handle
        .doc(note(StageArg::Answer, "the panels sleep at night", None))
        .await
        .unwrap()
        .expect("answered");
    eventually(Duration::from_secs(10), || {
        status(&buyer, DisputeStatus::Answered)
    })
    .await
    .expect("the buyer sees the answer");
    for node in [&seller, &buyer] {
        node.handle
            .doc(note(StageArg::Resolve, "as metered", Some(0)))
            .await
            .unwrap()
            .expect("resolution sent");
    }
    for node in [&seller, &buyer] {
        let d = eventually(Duration::from_secs(10), || {
            status(node, DisputeStatus::Resolved)
        })
        .await
        .expect("resolved on both sides");
        assert_eq!(d.resolved_amount, Some(0));
    }

    // The buyer pays the seller; it counts once the seller confirms.
    let pid = buyer
        .handle
        .doc(DocRequest::Pay(PaymentArgs {
            payee: sid.to_hex(),
            amount: 1_234,
            through_ms: 0,
            reference: "cash".into(),
        }))
        .await
        .unwrap()
        .expect("declared");
    eventually(Duration::from_secs(10), || async {
        let l = seller.handle.ledger().await.ok()?;
        l.documents
            .iter()
            .any(|d| d.id == pid && d.state == DocState::Offered)
            .then_some(())
    })
    .await
    .expect("the seller holds the payment");
    seller
        .handle
        .doc(DocRequest::Decide(pid, Decision::Accept))
        .await
        .unwrap()
        .expect("confirmed");
    let received = |node: &TestNode| {
        let h = node.handle.clone();
        async move {
            let l = h.ledger().await.ok()?;
            let b = l.balances.first()?.clone();
            (b.payments_received + b.payments_made > 0).then_some(b)
        }
    };
    let sb = eventually(Duration::from_secs(10), || received(&seller))
        .await
        .expect("the seller's ledger shows the payment");
    let bb = eventually(Duration::from_secs(10), || received(&buyer))
        .await
        .expect("the buyer's ledger shows it confirmed");
    assert_eq!((sb.payments_received, bb.payments_made), (1_234, 1_234));
    assert_eq!(sb.closing, -bb.closing, "one balance, seen from both sides");

    // Both export their trades signed; checked together, the copies agree.
    let to = s.slot_ms + 1;
    let se = seller.handle.signed_export(0, to).await.unwrap().unwrap();
    let be = buyer.handle.signed_export(0, to).await.unwrap().unwrap();
    let r = wattmesh_node::signed_export::reconcile(&[se.clone(), be]).expect("both check");
    assert!(r.conflicts.is_empty(), "{:?}", r.conflicts);
    assert!(r.confirmed_by_both >= 1);
    let slot = &r.per_slot[&s.slot_ms];
    assert_eq!(slot[&sid.to_hex()].sold_wh, 500);
    assert_eq!(slot[&bid.to_hex()].bought_wh, 500);
    // A tampered copy does not check out.
    let mut bad = se;
    bad.trades[0].energy_wh = 5_000;
    assert!(wattmesh_node::signed_export::check(&bad).is_err());

    seller.shutdown().await;
    buyer.shutdown().await;
}

/// A payment recorded by mistake is withdrawn before the payee confirms it: both nodes record it
/// withdrawn, the payee can no longer confirm it, and it counts nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_not_yet_confirmed_can_be_withdrawn() {
    let dir = tempfile::tempdir().unwrap();
    let (adir, bdir) = (dir.path().join("payee"), dir.path().join("payer"));
    let hood = found_fast(&adir);
    join(&bdir, &hood);
    let origin = wattmesh_node::clock::Clock::new(&Default::default()).now_ms();
    let payee = TestNode::start(&adir, night_config(vec![], origin)).await;
    let payer = TestNode::start(&bdir, night_config(vec![payee.addr().await], origin)).await;
    eventually(Duration::from_secs(30), || async {
        (payer.peer_count().await == 1).then_some(())
    })
    .await
    .expect("connected");
    let aid = key_of(&adir).node_id();
    let pid = payer
        .handle
        .doc(DocRequest::Pay(PaymentArgs {
            payee: aid.to_hex(),
            amount: 5_000,
            through_ms: 0,
            reference: "typo".into(),
        }))
        .await
        .unwrap()
        .expect("declared");
    let state_of = |node: &TestNode, want: DocState| {
        let h = node.handle.clone();
        let pid = pid.clone();
        async move {
            let l = h.ledger().await.ok()?;
            l.documents
                .iter()
                .any(|d| d.id == pid && d.state == want)
                .then_some(())
        }
    };
    eventually(Duration::from_secs(10), || {
        state_of(&payee, DocState::Offered)
    })
    .await
    .expect("the payee holds the payment");
    // Only its sender may withdraw it.
    let e = payee
        .handle
        .doc(DocRequest::Decide(pid.clone(), Decision::Withdraw))
        .await
        .unwrap()
        .unwrap_err();
    assert!(e.contains("you sent no document"), "{e}");
    payer
        .handle
        .doc(DocRequest::Decide(pid.clone(), Decision::Withdraw))
        .await
        .unwrap()
        .expect("withdrawn");
    eventually(Duration::from_secs(10), || {
        state_of(&payer, DocState::Withdrawn)
    })
    .await
    .expect("the payer records it withdrawn");
    eventually(Duration::from_secs(10), || {
        state_of(&payee, DocState::Withdrawn)
    })
    .await
    .expect("the payee hears of it");
    let e = payee
        .handle
        .doc(DocRequest::Decide(pid.clone(), Decision::Accept))
        .await
        .unwrap()
        .unwrap_err();
    assert!(e.contains("no document waits"), "{e}");
    for node in [&payer, &payee] {
        let l = node.handle.ledger().await.unwrap();
        assert!(
            l.balances
                .iter()
                .all(|b| b.payments_made == 0 && b.payments_received == 0),
            "a withdrawn payment counts nowhere"
        );
    }
    payer.handle.stop().await;
    payee.handle.stop().await;
}
