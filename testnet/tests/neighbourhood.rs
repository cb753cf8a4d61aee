//! A small neighbourhood of real `wattmesh` processes: they connect, trade with their automatic
//! traders, settle, and every trade's two copies agree.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_neighbourhood_trades_and_settles_consistently() {
    let out = tempfile::tempdir().unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_wattmesh-testnet")).with_file_name("wattmesh");
    assert!(
        bin.exists(),
        "the wattmesh binary is built next to the testnet's: {}",
        bin.display()
    );
    let opts = wattmesh_testnet::run::Options {
        homes: 4,
        speed: 20,
        duration_min: 40,
        out: out.path().to_owned(),
        base_port: 24300,
        bin,
        home_cmds: Default::default(),
        // A summer late morning in Ames: PV homes have surplus, the others need energy.
        start_ms: 1_782_057_600_000,
        scenario: wattmesh_testnet::scenario::Scenario::default(),
    };
    let s = wattmesh_testnet::run::run(&opts, std::future::pending())
        .await
        .unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&s).unwrap());
    assert!(
        s.crashed_homes.is_empty(),
        "homes crashed: {:?}",
        s.crashed_homes
    );
    assert_eq!(s.mismatched_trades, 0);
    assert!(s.trades >= 1, "the traders never traded");
    assert!(s.settled_trades <= s.trades && s.energy_delivered_wh <= s.energy_traded_wh);
}
