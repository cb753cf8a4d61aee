//! Many nodes on loopback: gossip across a sparse mesh, forgeries and replays refused, a node
//! without the network key shut out, catching up by sync, and no signing on an unsynced clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;
use wattmesh_node::config::ClockCheck;
use wattmesh_node::net::behaviour::{TopicKind, score_thresholds};
use wattmesh_node::node::{PostOffer, SideArg};
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::offer::{Offer, Side};
use wattmesh_protocol::slot;

const WAIT: Duration = Duration::from_secs(30);

fn sell(wh: u64) -> PostOffer {
    PostOffer {
        side: SideArg::Sell,
        quantity_wh: wh,
        price: 9_000,
        slot_ms: None,
        min_fill_wh: None,
    }
}

/// Starts `n` nodes in a line (node i dials node i-1), so a message from one end must hop
/// n-1 times to reach the other.
async fn line(
    root: &std::path::Path,
    n: usize,
) -> (Vec<TestNode>, wattmesh_node::neighbourhood::Neighbourhood) {
    let hood = found(&root.join("n0"));
    let mut nodes: Vec<TestNode> = Vec::new();
    for i in 0..n {
        let dir = root.join(format!("n{i}"));
        if i > 0 {
            join(&dir, &hood);
        }
        let bootstrap = match nodes.last() {
            Some(prev) => vec![prev.addr().await],
            None => vec![],
        };
        nodes.push(TestNode::start(&dir, test_config(bootstrap)).await);
    }
    for (i, node) in nodes.iter().enumerate() {
        let want = if i == 0 || i == n - 1 { 1 } else { 2 };
        let got = eventually(WAIT, || async {
            (node.peer_count().await >= want).then_some(())
        })
        .await;
        assert!(got.is_some(), "node {i} did not reach {want} peers");
    }
    (nodes, hood)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_cross_a_sparse_mesh_and_forgeries_and_replays_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, hood) = line(dir.path(), 10).await;

    // A valid offer from one end reaches every node, 9 hops away at the far end.
    let posted = nodes[0].handle.post(sell(700)).await.unwrap().unwrap();
    for (i, n) in nodes.iter().enumerate().skip(1) {
        let got = eventually(WAIT, || async {
            n.has_offer(posted.nonce).await.then_some(())
        })
        .await;
        assert!(got.is_some(), "node {i} never got the offer");
    }

    // A hostile member joins in the middle.
    let hdir = dir.path().join("hostile");
    join(&hdir, &hood);
    let hostile = TestNode::start(&hdir, test_config(vec![nodes[5].addr().await])).await;
    eventually(WAIT, || async {
        (hostile.peer_count().await >= 1).then_some(())
    })
    .await
    .expect("the hostile node connects");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Replay: once gossip's duplicate cache (2 s here) has forgotten the offer, the hostile
    // node sends the same bytes again. The replay window refuses it.
    // The exact bytes node 0 signed (any node's book holds them unchanged).
    let original = nodes[5]
        .handle
        .offer_bytes(posted.nonce)
        .await
        .unwrap()
        .expect("node 5 has the offer");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before: Vec<u64> = futures_counters(&nodes, |c| c.replays_refused).await;
    hostile
        .handle
        .publish_raw(TopicKind::Offers, original)
        .await
        .unwrap()
        .unwrap();
    let refused = eventually(WAIT, || async {
        let now: Vec<u64> = futures_counters(&nodes, |c| c.replays_refused).await;
        (now[5] > before[5]).then_some(now)
    })
    .await
    .expect("node 5 refuses the replay");
    // Ignored, so not forwarded: nobody else even saw it.
    for (i, (a, b)) in before.iter().zip(&refused).enumerate() {
        if i != 5 {
            assert_eq!(a, b, "node {i} should not have received the replay");
        }
    }

    // Forgery: an offer claiming to be node 0's but signed by the hostile node.
    let c = hood.chain.latest().charter.clone();
    let now = wattmesh_node::clock::Clock::new(&Default::default()).now_ms();
    let slot_ms = slot::first_open_slot(&c, now);
    let forged = Offer {
        maker: key_of(&nodes[0].dir).node_id(),
        nonce: 4242,
        version: 1,
        side: Side::Sell,
        slot_ms,
        quantity_wh: 500,
        min_fill_wh: 1,
        price: 9_000,
        created_ms: now,
        expires_ms: slot::gate_closure(&c, slot_ms),
        attributes: 0,
        ext: vec![],
    };
    let env = Envelope::seal(&forged, hood.chain.latest().hash, &key_of(&hdir));
    hostile
        .handle
        .publish_raw(TopicKind::Offers, env.to_bytes())
        .await
        .unwrap()
        .unwrap();
    let score = eventually(WAIT, || async {
        let s = nodes[5].handle.score(hostile.handle.peer_id).await.ok()??;
        (s < score_thresholds().graylist_threshold).then_some(s)
    })
    .await;
    assert!(
        score.is_some(),
        "the forger's score must fall below the graylist threshold"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (i, n) in nodes.iter().enumerate() {
        assert!(!n.has_offer(4242).await, "node {i} accepted a forged offer");
    }
    let rejected = nodes[5]
        .handle
        .status()
        .await
        .unwrap()
        .counters
        .gossip_rejected;
    assert!(rejected >= 1);
    for n in nodes.iter().chain([&hostile]) {
        n.handle.stop().await;
    }
}

async fn futures_counters(
    nodes: &[TestNode],
    f: impl Fn(&wattmesh_node::node::Counters) -> u64,
) -> Vec<u64> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(n.handle.status().await.map(|s| f(&s.counters)).unwrap_or(0));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_network_key_cannot_connect_or_inject() {
    let dir = tempfile::tempdir().unwrap();
    let hood = found(&dir.path().join("a"));
    let a = TestNode::start(&dir.path().join("a"), test_config(vec![])).await;
    // Same charter, different network key.
    let mut outsider_hood = hood.clone();
    outsider_hood.psk = [0x55; 32];
    let odir = dir.path().join("outsider");
    join(&odir, &outsider_hood);
    let outsider = TestNode::start(&odir, test_config(vec![a.addr().await])).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(outsider.peer_count().await, 0);
    assert_eq!(a.peer_count().await, 0);
    let posted = outsider.handle.post(sell(100)).await.unwrap();
    assert!(posted.is_ok(), "the outsider signs locally: {posted:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(a.handle.offers().await.unwrap().is_empty());
    a.handle.stop().await;
    outsider.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_was_offline_catches_up_through_sync() {
    let dir = tempfile::tempdir().unwrap();
    let hood = found(&dir.path().join("a"));
    let a = TestNode::start(&dir.path().join("a"), test_config(vec![])).await;
    join(&dir.path().join("b"), &hood);
    let b = TestNode::start(&dir.path().join("b"), test_config(vec![a.addr().await])).await;
    eventually(WAIT, || async { (a.peer_count().await == 1).then_some(()) })
        .await
        .unwrap();
    let mut nonces = Vec::new();
    for wh in [100, 200, 300] {
        nonces.push(b.handle.post(sell(wh)).await.unwrap().unwrap().nonce);
    }
    // C was not there when the offers were gossiped.
    join(&dir.path().join("c"), &hood);
    let c = TestNode::start(&dir.path().join("c"), test_config(vec![a.addr().await])).await;
    let got = eventually(WAIT, || async {
        let o = c.handle.offers().await.ok()?;
        nonces
            .iter()
            .all(|n| o.iter().any(|x| x.nonce == *n))
            .then_some(())
    })
    .await;
    assert!(got.is_some(), "c fetched the offers it missed");
    assert!(c.handle.status().await.unwrap().counters.sync_accepted >= 3);
    for n in [a, b, c] {
        n.handle.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_an_unsynchronised_clock_signs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hood = found(&dir.path().join("a"));
    let a = TestNode::start(&dir.path().join("a"), test_config(vec![])).await;
    join(&dir.path().join("b"), &hood);
    let mut cfg = test_config(vec![a.addr().await]);
    cfg.clock.check = ClockCheck::Unsynced;
    let b = TestNode::start(&dir.path().join("b"), cfg).await;
    eventually(WAIT, || async { (b.peer_count().await == 1).then_some(()) })
        .await
        .unwrap();
    let status = b.handle.status().await.unwrap();
    assert_eq!(status.clock, wattmesh_node::clock::ClockState::Unsynced);
    let err = b.handle.post(sell(100)).await.unwrap().unwrap_err();
    assert!(err.contains("clock"), "{err}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(b.handle.offers().await.unwrap().is_empty());
    assert!(a.handle.offers().await.unwrap().is_empty());
    a.handle.stop().await;
    b.handle.stop().await;
}
