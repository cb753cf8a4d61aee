//! The bilateral handshake over real request-response connections: a trade agreed and stored
//! identically on both sides, the offer's remaining quantity published, and twenty buyers
//! racing for one offer without ever over-committing it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;
use wattmesh_node::node::{PostOffer, SideArg};
use wattmesh_node::store::TradeState;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_buyers_race_for_one_offer_and_never_over_commit_it() {
    let dir = tempfile::tempdir().unwrap();
    let hood = found(&dir.path().join("maker"));
    let maker = TestNode::start(&dir.path().join("maker"), test_config(vec![])).await;
    let maker_addr = maker.addr().await;
    let mut buyers = Vec::new();
    for i in 0..20 {
        let d = dir.path().join(format!("buyer{i}"));
        join(&d, &hood);
        buyers.push(TestNode::start(&d, test_config(vec![maker_addr.clone()])).await);
    }
    eventually(WAIT, || async {
        (maker.peer_count().await == 20).then_some(())
    })
    .await
    .expect("all buyers connect");
    // 1 000 Wh for sale; each buyer wants 100 Wh: exactly ten can have it.
    let offer = maker
        .handle
        .post(PostOffer {
            side: SideArg::Sell,
            quantity_wh: 1_000,
            price: 9_000,
            slot_ms: None,
            min_fill_wh: Some(100),
        })
        .await
        .unwrap()
        .unwrap();
    for b in &buyers {
        eventually(WAIT, || async {
            b.has_offer(offer.nonce).await.then_some(())
        })
        .await
        .expect("every buyer sees the offer");
    }
    let maker_id = key_of(&maker.dir).node_id();
    let results = futures::future::join_all(
        buyers
            .iter()
            .map(|b| b.handle.take(maker_id, offer.nonce, 100)),
    )
    .await;
    let ok = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    let declined: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok()?.as_ref().err().cloned())
        .collect();
    assert_eq!(
        ok, 10,
        "exactly the offered quantity is sold; declined: {declined:?}"
    );
    assert!(
        declined.iter().all(|e| e.contains("declined")),
        "the others are declined by the maker: {declined:?}"
    );

    // The maker sold exactly 1 000 Wh and holds every trade co-signed, identical to the
    // buyer's copy.
    let maker_trades = eventually(WAIT, || async {
        let t = maker.handle.trades().await.ok()?;
        (t.len() == 10 && t.iter().all(|x| x.state == TradeState::Agreed)).then_some(t)
    })
    .await
    .expect("the maker stores ten agreed trades");
    assert_eq!(maker_trades.iter().map(|t| t.energy_wh).sum::<u64>(), 1_000);
    for b in &buyers {
        for t in b.handle.trades().await.unwrap() {
            let m = maker_trades
                .iter()
                .find(|m| m.taker == t.taker && m.nonce == t.nonce)
                .expect("the maker has the buyer's trade");
            assert_eq!(
                (m.energy_wh, m.price, m.slot_ms),
                (t.energy_wh, t.price, t.slot_ms)
            );
            assert_eq!(
                (t.role, t.side, m.role, m.side),
                ("taker", "buy", "maker", "sell")
            );
        }
    }
    // The filled offer is gone from the book everywhere (its last version has nothing left).
    for b in &buyers {
        let gone = eventually(WAIT, || async {
            (!b.has_offer(offer.nonce).await).then_some(())
        })
        .await;
        assert!(gone.is_some(), "a buyer still lists the sold-out offer");
    }
    for n in buyers.iter().chain([&maker]) {
        n.handle.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_database_was_lost_recovers_its_trades_from_its_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (mdir, bdir) = (dir.path().join("maker"), dir.path().join("buyer"));
    let hood = found(&mdir);
    let maker = TestNode::start(&mdir, test_config(vec![])).await;
    join(&bdir, &hood);
    let buyer = TestNode::start(&bdir, test_config(vec![maker.addr().await])).await;
    eventually(WAIT, || async {
        (maker.peer_count().await == 1).then_some(())
    })
    .await
    .unwrap();
    let offer = maker
        .handle
        .post(PostOffer {
            side: SideArg::Sell,
            quantity_wh: 600,
            price: 8_000,
            slot_ms: None,
            min_fill_wh: None,
        })
        .await
        .unwrap()
        .unwrap();
    eventually(WAIT, || async {
        buyer.has_offer(offer.nonce).await.then_some(())
    })
    .await
    .unwrap();
    let maker_id = key_of(&mdir).node_id();
    let t1 = buyer
        .handle
        .take(maker_id, offer.nonce, 200)
        .await
        .unwrap()
        .unwrap();
    let t2 = buyer
        .handle
        .take(maker_id, offer.nonce, 300)
        .await
        .unwrap()
        .unwrap();
    // The handshakes are complete on both sides (the maker holds both trades co-signed)
    // before the buyer's disk dies.
    eventually(WAIT, || async {
        let t = maker.handle.trades().await.ok()?;
        (t.len() == 2 && t.iter().all(|x| x.state == TradeState::Agreed)).then_some(())
    })
    .await
    .expect("the maker stores both trades co-signed");
    buyer.handle.stop().await;
    let _ = buyer.running.task.await;

    // The database is gone; the key survived (restored from a backup) and the owner joins again.
    std::fs::remove_file(bdir.join("wattmesh.redb")).unwrap();
    join(&bdir, &hood);
    let buyer = TestNode::start(&bdir, test_config(vec![maker.addr().await])).await;
    let back = eventually(WAIT, || async {
        let t = buyer.handle.trades().await.ok()?;
        (t.len() == 2).then_some(t)
    })
    .await
    .expect("the buyer's trades come back from the maker");
    for want in [&t1, &t2] {
        assert!(back.iter().any(|t| t.nonce == want.nonce
            && t.energy_wh == want.energy_wh
            && t.state == TradeState::Agreed));
    }
    buyer.handle.stop().await;
    maker.handle.stop().await;
}
