//! Helpers for multi-node tests: in-process nodes on loopback, sharing one neighbourhood.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod http;

use std::path::{Path, PathBuf};
use std::time::Duration;
use wattmesh_node::config::{ClockCheck, Config};
use wattmesh_node::neighbourhood::Neighbourhood;
use wattmesh_node::node::{self, NodeHandle, NodeOptions, Running};
use wattmesh_node::store::Store;
use wattmesh_protocol::NodeKey;

/// A config for tests: loopback, fast heartbeats, short duplicate cache, trusted clock, no
/// UPnP (no SSDP multicast from tests).
pub fn test_config(bootstrap: Vec<String>) -> Config {
    let mut c = Config::default();
    c.network.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    c.reach.upnp = false;
    c.network.bootstrap = bootstrap;
    c.network.heartbeat_ms = 100;
    c.network.duplicate_cache_secs = 2;
    // Many nodes share the machine: the web UI on any free port.
    c.web.listen = "127.0.0.1:0".into();
    c.clock.check = ClockCheck::Trust;
    // Most tests do not need a meter; the attestation tests turn the simulated one on.
    c.meter.source = wattmesh_node::metering::SourceKind::None;
    c
}

/// The founder's key file of each neighbourhood a test founded, so that [`join`] can admit
/// members in the founder's name.
static FOUNDERS: std::sync::Mutex<Vec<([u8; 16], PathBuf)>> = std::sync::Mutex::new(Vec::new());

fn remember_founder(n: &Neighbourhood, dir: &Path) {
    FOUNDERS
        .lock()
        .unwrap()
        .push((n.id().0, dir.join("node.key")));
}

/// Founds a neighbourhood in `dir` and returns it.
pub fn found(dir: &Path) -> Neighbourhood {
    std::fs::create_dir_all(dir).unwrap();
    let store = Store::open(&dir.join("wattmesh.redb")).unwrap();
    let (key, _) = wattmesh_node::identity::load_or_create(&dir.join("node.key")).unwrap();
    let n = Neighbourhood::found(dir, &store, &key, "Test Lane", 0).unwrap();
    remember_founder(&n, dir);
    n
}

/// Founds a neighbourhood with 5-minute slots, a 30 s gate closure and a 5-minute grace, for
/// tests that run whole slots on an accelerated clock (the grace leaves room for real-time
/// lags multiplied by the clock's speed: at 20x it is 15 s of wall time, enough for a node to
/// attest on a loaded 2-core machine; 2 minutes, 6 s of wall time, was not always).
pub fn found_fast(dir: &Path) -> Neighbourhood {
    std::fs::create_dir_all(dir).unwrap();
    let store = Store::open(&dir.join("wattmesh.redb")).unwrap();
    let (key, _) = wattmesh_node::identity::load_or_create(&dir.join("node.key")).unwrap();
    // Every neighbourhood its own id (taken from the founder's fresh key): tests in one
    // process share the founders list that `join` looks the admin up in.
    let mut id = [0u8; 16];
    id.copy_from_slice(&key.node_id().0[..16]);
    let mut c = wattmesh_protocol::Charter::founding(
        wattmesh_protocol::NeighbourhoodId(id),
        "Fast Lane",
        key.node_id(),
        0,
    );
    c.slot_minutes = 5;
    c.gate_closure_secs = 30;
    c.settlement_grace_secs = 300;
    let profile = wattmesh_node::neighbourhood::default_profile(&key.node_id());
    let n = Neighbourhood::found_with(dir, &store, &key, c, [0x17; 32], profile).unwrap();
    remember_founder(&n, dir);
    n
}

/// Makes `dir` a member of `n`: saves the neighbourhood there, and the founder (an admin)
/// adds the node to the roster. The record is stored only in `dir`; the founder's node and the
/// others learn it by sync when the node connects, as with a real join.
pub fn join(dir: &Path, n: &Neighbourhood) {
    let key = provision(dir, n);
    let founder = FOUNDERS
        .lock()
        .unwrap()
        .iter()
        .find(|(id, _)| *id == n.id().0)
        .map(|(_, p)| p.clone())
        .expect("the neighbourhood was founded by common::found or found_fast");
    let admin = wattmesh_node::identity::load(&founder).unwrap();
    let store = Store::open(&dir.join("wattmesh.redb")).unwrap();
    let local = Neighbourhood::load(dir, &store).unwrap().unwrap();
    let profile = wattmesh_node::neighbourhood::default_profile(&key.node_id());
    local
        .add_member(&store, &admin, key.node_id(), profile, 0)
        .unwrap();
}

/// Saves the neighbourhood (network key, charters, roster as `n` holds it) in `dir` without
/// admitting the node: it holds the network key but is not a member.
pub fn provision(dir: &Path, n: &Neighbourhood) -> NodeKey {
    std::fs::create_dir_all(dir).unwrap();
    let store = Store::open(&dir.join("wattmesh.redb")).unwrap();
    n.save(dir, &store).unwrap();
    let (key, _) = wattmesh_node::identity::load_or_create(&dir.join("node.key")).unwrap();
    key
}

/// A running test node.
pub struct TestNode {
    pub dir: PathBuf,
    pub handle: NodeHandle,
    pub running: Running,
}

impl TestNode {
    pub async fn start(dir: &Path, config: Config) -> TestNode {
        let running = node::start(NodeOptions {
            data_dir: dir.to_owned(),
            config,
        })
        .await
        .unwrap();
        TestNode {
            dir: dir.to_owned(),
            handle: running.handle.clone(),
            running,
        }
    }

    /// Stops the node and waits until it has let go of its database.
    pub async fn shutdown(self) {
        self.handle.stop().await;
        let _ = self.running.task.await;
        // Blocking database work the node spawned finishes on its own; give it a moment.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// The first listening address with `/p2p/`, waiting until there is one.
    pub async fn addr(&self) -> String {
        eventually(Duration::from_secs(10), || async {
            self.handle.status().await.ok()?.listening.first().cloned()
        })
        .await
        .expect("the node listens")
    }

    pub async fn peer_count(&self) -> usize {
        self.handle
            .status()
            .await
            .map(|s| s.peers.len())
            .unwrap_or(0)
    }

    pub async fn has_offer(&self, nonce: u64) -> bool {
        self.handle
            .offers()
            .await
            .map(|o| o.iter().any(|x| x.nonce == nonce))
            .unwrap_or(false)
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or `None` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The key of the node in `dir`.
pub fn key_of(dir: &Path) -> NodeKey {
    wattmesh_node::identity::load(&dir.join("node.key")).unwrap()
}
