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
