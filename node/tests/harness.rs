//! The deterministic market simulation: many seeds, each with ten homes, several slots, dozens
//! of trades, and loss, duplication, reordering, delay, a partition and crash-restarts. Every
//! run must hold every invariant; a deliberately broken build must fail some seed; a seed
//! replays exactly. `WATTMESH_HARNESS_SEEDS` sets how many seeds (default 200; scripts/harness
//! runs thousands).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use wattmesh_node::market::harness::{Scenario, run};

fn seeds() -> u64 {
    std::env::var("WATTMESH_HARNESS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

#[test]
fn every_seed_holds_every_invariant() {
    let sc = Scenario::default();
    let (mut trades, mut settled, mut disputed, mut crashes) = (0, 0, 0, 0);
    let n = seeds();
    for seed in 0..n {
        let r = run(seed, &sc);
        assert!(
            r.violations.is_empty(),
            "seed {seed} broke invariants: {:#?}",
            r.violations
        );
        trades += r.trades;
        settled += r.settled;
        disputed += r.disputed;
        crashes += r.crashes;
        if seed == 0 {
            eprintln!("seed 0 disputes: {:?}", r.dispute_reasons);
        }
    }
    eprintln!(
        "{n} seeds: {trades} trades, {settled} settled, {disputed} disputed, {crashes} crashes"
    );
    assert!(
        trades as u64 >= 24 * n,
        "too few trades to mean anything: {trades} over {n} seeds"
    );
    assert!(crashes > 0, "the faults must actually happen");
}

#[test]
fn a_broken_build_fails_some_seed() {
    let sc = Scenario {
        break_reservation: true,
        ..Scenario::default()
    };
    let failing = (0..200).find(|&seed| {
        run(seed, &sc)
            .violations
            .iter()
            .any(|v| v.contains("oversold"))
    });
    assert!(
        failing.is_some(),
        "without reservation some seed must oversell"
    );
}

#[test]
fn a_seed_replays_exactly() {
    let sc = Scenario::default();
    let a = run(42, &sc);
    let b = run(42, &sc);
    assert_eq!(a.trades_list, b.trades_list);
    assert_eq!(
        (a.settled, a.disputed, a.crashes, a.dropped),
        (b.settled, b.disputed, b.crashes, b.dropped)
    );
}
