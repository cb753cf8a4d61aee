//! `wattmesh-testnet baseline` end to end, in both of its stacks: every peer's messages reach
//! every other peer, and the report says which stack ran.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// Runs a 4-peer baseline with `extra` arguments on ports from `base_port` and returns its
/// report.
fn baseline(base_port: u16, extra: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wattmesh-testnet"))
        .args([
            "baseline",
            "--peers",
            "4",
            "--every-ms",
            "500",
            "--duration",
            "3",
        ])
        .args(["--base-port", &base_port.to_string(), "--out"])
        .arg(dir.path().join("out"))
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "baseline failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(dir.path().join("out/baseline.json")).unwrap()).unwrap()
}

/// Every published message arrived at every other peer.
fn all_delivered(r: &serde_json::Value) {
    let messages = r["messages"].as_u64().unwrap();
    // 4 peers, one message each every 500 ms for 3 s.
    assert!(messages >= 20, "{messages} messages published");
    assert_eq!(r["publish_errors"], 0);
    let p = &r["offer_propagation_ms"];
    assert_eq!(p["count"].as_u64(), Some(messages), "{p}");
    assert_eq!(p["incomplete"], 0, "{p}");
}

#[test]
fn bare_gossipsub_delivers_every_message() {
    let r = baseline(24700, &[]);
    all_delivered(&r);
    assert_eq!(r["signed"], false);
    assert_eq!(r["node_stack"], false);
}

#[test]
fn the_nodes_stack_with_signatures_delivers_every_message() {
    let r = baseline(24720, &["--signed", "--node-stack"]);
    all_delivered(&r);
    assert_eq!(r["signed"], true);
    assert_eq!(r["node_stack"], true);
}
