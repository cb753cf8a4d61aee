//! Meter attestations end to end: nodes on simulated meters sign an attestation when a slot
//! ends, gossip it, and a peer stores it; the chain continues across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;
use wattmesh_node::metering::SourceKind;

/// A config whose clock is offset so that a slot boundary comes `lead_ms` after start.
fn metered_config(bootstrap: Vec<String>, lead_ms: u64) -> wattmesh_node::config::Config {
    let mut c = test_config(bootstrap);
    c.meter.source = SourceKind::Simulated;
    c.meter.poll_secs = 1;
    let now = wattmesh_node::clock::Clock::new(&Default::default()).now_ms();
    let slot = 900_000;
    let boundary = now - now % slot + slot;
    c.clock.offset_ms = (boundary - now) as i64 - lead_ms as i64;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_attest_each_slot_and_peers_keep_the_attestations() {
    let dir = tempfile::tempdir().unwrap();
    let (adir, bdir) = (dir.path().join("a"), dir.path().join("b"));
    let hood = found(&adir);
    join(&bdir, &hood);
    let a = TestNode::start(&adir, metered_config(vec![], 6_000)).await;
    let b = TestNode::start(&bdir, metered_config(vec![a.addr().await], 6_000)).await;
    eventually(Duration::from_secs(30), || async {
        (a.peer_count().await == 1).then_some(())
    })
    .await
    .expect("connected");
    let a_id = key_of(&adir).node_id();
    // The slot boundary passes a few seconds in; a signs its attestation and b receives it.
    let got = eventually(Duration::from_secs(60), || async {
        let list = b.handle.attestations(a_id).await.ok()?;
        (!list.is_empty()).then_some(list)
    })
    .await
    .expect("b holds a's attestation");
    let att = &got[0];
    assert_eq!(att.node, a_id);
    assert_eq!(att.seq, 0);
    assert!(
        att.coverage_permille < 1000,
        "a joined the slot part-way: {att:?}"
    );
    assert!(att.import_register_wh >= att.import_wh);
    let status = a.handle.status().await.unwrap();
    assert!(
        status.meter.enabled && status.meter.at_ms > 0,
        "{:?}",
        status.meter
    );
    assert_eq!(status.counters.attestations_signed, 1);
    // The attestation's registers are a's meter registers (the meter reports them live).
    assert!(status.meter.import_wh >= att.import_register_wh);
    // Per-minute readings are kept.
    let readings = eventually(Duration::from_secs(90), || async {
        let r = a.handle.readings(0, u64::MAX).await.ok()?;
        (!r.is_empty()).then_some(r)
    })
    .await
    .expect("a stores readings");
    assert!(readings[0].import_wh > 0);
    a.handle.stop().await;
    b.handle.stop().await;
}

/// A config on an accelerated clock that starts at a sunny midsummer midday in Ames; nodes
/// made with the same `origin` agree on the time.
fn fast_config(bootstrap: Vec<String>, origin: u64) -> wattmesh_node::config::Config {
    let mut c = test_config(bootstrap);
    c.meter.source = SourceKind::Simulated;
    c.meter.poll_secs = 10;
    // Registers from a recent date, so the first reading is quick to integrate.
    c.meter.sim.registers_from =
        wattmesh_node::meter::sim::calendar::Date::new(2026, 6, 1).unwrap();
    c.clock.speed = 20;
    c.clock.origin_ms = origin;
    // 2026-06-21 17:54 UTC is 12:54 in Ames: a slot boundary six minutes away.
    c.clock.offset_ms = 1_782_064_440_000 - origin as i64;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trade_is_delivered_attested_and_settled_identically_on_both_sides() {
    use wattmesh_node::market::SettleState;
    use wattmesh_node::node::{PostOffer, SideArg};
    let dir = tempfile::tempdir().unwrap();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (sdir, bdir) = (dir.path().join("seller"), dir.path().join("buyer"));
    let hood = found_fast(&sdir);
    join(&bdir, &hood);
    let origin = wattmesh_node::clock::Clock::new(&Default::default()).now_ms();
    let seller = TestNode::start(&sdir, fast_config(vec![], origin)).await;
    let buyer = TestNode::start(&bdir, fast_config(vec![seller.addr().await], origin)).await;
    eventually(Duration::from_secs(30), || async {
        (buyer.peer_count().await == 1).then_some(())
    })
    .await
    .expect("connected");
    let offer = seller
        .handle
        .post(PostOffer {
            side: SideArg::Sell,
            quantity_wh: 300,
            price: 9_000,
            slot_ms: None,
            min_fill_wh: None,
        })
        .await
        .unwrap()
        .unwrap();
    eventually(Duration::from_secs(30), || async {
        buyer.has_offer(offer.nonce).await.then_some(())
    })
    .await
    .expect("the buyer sees the offer");
    let trade = buyer
        .handle
        .take(key_of(&sdir).node_id(), offer.nonce, 200)
        .await
        .unwrap()
        .unwrap();
    // The slot runs, both attest, the seller settles and the buyer countersigns.
    let settled = |node: &TestNode| {
        let nonce = trade.nonce;
        let h = node.handle.clone();
        async move {
            let t = h.trades().await.ok()?;
            let t = t.into_iter().find(|t| t.nonce == nonce)?;
            (t.settlement == Some(SettleState::Settled)).then_some(t)
        }
    };
    let s = eventually(Duration::from_secs(90), || settled(&seller))
        .await
        .expect("the seller settles");
    let b = eventually(Duration::from_secs(30), || settled(&buyer))
        .await
        .expect("the buyer settles");
    assert_eq!(s.delivered_wh, b.delivered_wh);
    assert_eq!(
        s.amount,
        b.amount.map(|a| -a),
        "one amount, booked to both sides"
    );
    let delivered = s.delivered_wh.unwrap();
    assert!(delivered <= 200);
    assert_eq!(
        s.amount.unwrap() as u64,
        wattmesh_protocol::units::cost(delivered, 9_000)
    );
    // Both attested the slot; the seller's attestation commits to the 200 Wh it sold.
    let seller_id = key_of(&sdir).node_id();
    let atts = buyer.handle.attestations(seller_id).await.unwrap();
    let own = seller.handle.attestations(seller_id).await.unwrap();
    let Some(att) = atts.iter().find(|a| a.slot_ms == trade.slot_ms) else {
        panic!(
            "no attestation of the seller for slot {} at the buyer: buyer has {:?}, seller has {:?}; seller view {s:?}; buyer counters {:?}",
            trade.slot_ms,
            atts.iter().map(|a| a.slot_ms).collect::<Vec<_>>(),
            own.iter()
                .map(|a| (a.slot_ms, a.sold.sum))
                .collect::<Vec<_>>(),
            buyer.handle.status().await.unwrap().counters
        );
    };
    eprintln!(
        "settled: delivered {:?} Wh, amount {:?}; seller exported {} Wh in the slot",
        s.delivered_wh, s.amount, att.export_wh
    );
    assert_eq!(att.sold.sum, 200);
    // The settlement rule, from the attestation alone: one sale, so the export up to 200 Wh.
    assert_eq!(delivered, att.export_wh.min(200));
    seller.handle.stop().await;
    buyer.handle.stop().await;
}

/// Privacy mode: the seller and the buyer keep their attestations private. Each sends its full
/// attestation only to the other (its counterparty in the slot); a neighbour that did not
/// trade with them, and a node that joins later and catches up by sync, get only the
/// commitments, and can check both chains through them. The trade settles identically on both
/// sides, as without privacy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_privacy_mode_only_counterparties_get_the_attestation_and_everyone_the_commitment() {
    use wattmesh_node::market::SettleState;
    use wattmesh_node::node::{PostOffer, SideArg};
    use wattmesh_protocol::attestation::{Link, chain_hash, check_chain};
    let dir = tempfile::tempdir().unwrap();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let [sdir, bdir, odir, ldir] =
        ["seller", "buyer", "observer", "late"].map(|n| dir.path().join(n));
    let hood = found_fast(&sdir);
    for d in [&bdir, &odir, &ldir] {
        join(d, &hood);
    }
    let origin = wattmesh_node::clock::Clock::new(&Default::default()).now_ms();
    let private = |bootstrap: Vec<String>| {
        let mut c = fast_config(bootstrap, origin);
        c.meter.privacy = true;
        c
    };
    let seller = TestNode::start(&sdir, private(vec![])).await;
    let s_addr = seller.addr().await;
    let buyer = TestNode::start(&bdir, private(vec![s_addr.clone()])).await;
    let b_addr = buyer.addr().await;
    // The observer keeps privacy off; it trades with nobody.
    let observer = TestNode::start(
        &odir,
        fast_config(vec![s_addr.clone(), b_addr.clone()], origin),
    )
    .await;
    eventually(Duration::from_secs(30), || async {
        (seller.peer_count().await == 2 && observer.peer_count().await == 2).then_some(())
    })
    .await
    .expect("connected");
    let (seller_id, buyer_id) = (key_of(&sdir).node_id(), key_of(&bdir).node_id());
    let offer = seller
        .handle
        .post(PostOffer {
            side: SideArg::Sell,
            quantity_wh: 300,
            price: 9_000,
            slot_ms: None,
            min_fill_wh: None,
        })
        .await
        .unwrap()
        .unwrap();
    eventually(Duration::from_secs(30), || async {
        buyer.has_offer(offer.nonce).await.then_some(())
    })
    .await
    .expect("the buyer sees the offer");
    let trade = buyer
        .handle
        .take(seller_id, offer.nonce, 200)
        .await
        .unwrap()
        .unwrap();
    let settled = |node: &TestNode| {
        let nonce = trade.nonce;
        let h = node.handle.clone();
        async move {
            let t = h.trades().await.ok()?;
            let t = t.into_iter().find(|t| t.nonce == nonce)?;
            (t.settlement == Some(SettleState::Settled)).then_some(t)
        }
    };
    let s = eventually(Duration::from_secs(120), || settled(&seller))
        .await
        .expect("the seller settles");
    let b = eventually(Duration::from_secs(30), || settled(&buyer))
        .await
        .expect("the buyer settles");
    assert_eq!(s.delivered_wh, b.delivered_wh);
    assert_eq!(
        s.amount,
        b.amount.map(|a| -a),
        "one amount, booked to both sides"
    );

    // The counterparties hold each other's full attestation for the slot, marked private, and
    // the commitment that opens to it.
    let full_of = |h: wattmesh_node::node::NodeHandle, node| async move {
        h.attestations(node)
            .await
            .unwrap()
            .into_iter()
            .find(|a| a.slot_ms == trade.slot_ms)
    };
    let seller_att = eventually(Duration::from_secs(30), || {
        full_of(buyer.handle.clone(), seller_id)
    })
    .await
    .expect("the buyer holds the seller's attestation");
    assert!(seller_att.is_private());
    assert_eq!(seller_att.sold.sum, 200);
    assert_eq!(s.delivered_wh, Some(seller_att.export_wh.min(200)));
    let buyer_att = eventually(Duration::from_secs(30), || {
        full_of(seller.handle.clone(), buyer_id)
    })
    .await
    .expect("the seller holds the buyer's attestation");
    assert!(buyer_att.is_private());
    assert_eq!(buyer_att.bought.sum, 200);
    let opened = buyer
        .handle
        .commitments(seller_id)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.seq == seller_att.seq)
        .expect("the buyer holds the seller's commitment");
    let hash = chain_hash(&wattmesh_protocol::codec::encode(&seller_att));
    assert_eq!(opened.opens(&seller_att, &hash), Ok(()));

    // The observer traded with neither: commitments only, and both chains check through them.
    let slot_len = 5 * 60_000;
    for node in [seller_id, buyer_id] {
        let commitments = eventually(Duration::from_secs(30), || {
            let h = observer.handle.clone();
            async move {
                let c = h.commitments(node).await.ok()?;
                c.iter().any(|c| c.slot_ms == trade.slot_ms).then_some(c)
            }
        })
        .await
        .expect("the observer holds the commitment for the traded slot");
        assert!(
            observer.handle.attestations(node).await.unwrap().is_empty(),
            "the observer never gets a private attestation"
        );
        let links: Vec<Link> = commitments.iter().map(Link::Committed).collect();
        assert_eq!(commitments[0].seq, 0);
        assert_eq!(check_chain(&links, slot_len), Ok(()));
    }
    let o = observer.handle.status().await.unwrap();
    assert!(o.counters.commitments_received >= 2, "{:?}", o.counters);
    assert_eq!(o.counters.attestation_chain_breaks, 0);
    let sc = seller.handle.status().await.unwrap().counters;
    let bc = buyer.handle.status().await.unwrap().counters;
    assert!(sc.attestations_sent_privately >= 1, "{sc:?}");
    assert!(bc.attestations_received_privately >= 1, "{bc:?}");
    assert_eq!(sc.attestation_chain_breaks + bc.attestation_chain_breaks, 0);

    // A node that joins now catches up by sync from the seller and the buyer themselves: it
    // gets their commitments, never their private attestations.
    let late = TestNode::start(&ldir, fast_config(vec![s_addr, b_addr], origin)).await;
    for node in [seller_id, buyer_id] {
        eventually(Duration::from_secs(60), || {
            let h = late.handle.clone();
            async move {
                let c = h.commitments(node).await.ok()?;
                c.iter().any(|c| c.slot_ms == trade.slot_ms).then_some(())
            }
        })
        .await
        .expect("the late joiner syncs the commitments");
        assert!(late.handle.attestations(node).await.unwrap().is_empty());
    }
    assert_eq!(
        late.handle
            .status()
            .await
            .unwrap()
            .counters
            .attestation_chain_breaks,
        0
    );
    for n in [seller, buyer, observer, late] {
        n.handle.stop().await;
    }
}
