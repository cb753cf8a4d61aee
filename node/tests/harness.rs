//! The deterministic market simulation: many seeds, each with ten homes, several slots, dozens
//! of trades, and loss, duplication, reordering, delay, a partition and crash-restarts. Every
//! run must hold every invariant; a deliberately broken build must fail some seed; a seed
//! replays exactly. `WATTMESH_HARNESS_SEEDS` sets how many seeds (default 200; `scripts/harness`
//! runs thousands).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use wattmesh_node::market::harness::{Scenario, run};

fn seeds() -> u64 {
    std::env::var("WATTMESH_HARNESS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

/// Runs seeds `part`, `part + parts`, ... (so that the parts run in parallel).
fn every_seed_holds_every_invariant(part: u64, parts: u64) {
    let sc = Scenario::default();
    let (mut trades, mut settled, mut disputed, mut crashes, mut n) = (0, 0, 0, 0, 0u64);
    let (mut realised, mut central) = (0u64, 0u64);
    for seed in (part..seeds()).step_by(parts as usize) {
        let r = run(seed, &sc);
        assert!(
            r.violations.is_empty(),
            "seed {seed} broke invariants (replay it with harness::run({seed}, &Scenario::default())): {:#?}",
            r.violations
        );
        trades += r.trades;
        settled += r.settled;
        disputed += r.disputed;
        crashes += r.crashes;
        realised += r.gains_realised;
        central += r.gains_central;
        n += 1;
    }
    let efficiency = realised as f64 / central.max(1) as f64;
    eprintln!(
        "{n} seeds: {trades} trades, {settled} settled, {disputed} disputed, {crashes} crashes; \
         market efficiency {efficiency:.3} (gains realised {realised} of {central} by central clearing)"
    );
    assert!(
        efficiency >= 0.9,
        "decentralised matching captured only {efficiency:.3} of the gains"
    );
    assert!(
        trades as u64 >= 24 * n,
        "too few trades to mean anything: {trades} over {n} seeds"
    );
    assert!(crashes > 0, "the faults must actually happen");
}

#[test]
fn even_seeds_hold_every_invariant() {
    every_seed_holds_every_invariant(0, 2);
}

#[test]
fn odd_seeds_hold_every_invariant() {
    every_seed_holds_every_invariant(1, 2);
}

#[test]
fn a_broken_build_fails_some_seed() {
    // Random owners collide on the same offers more often than traders do.
    let sc = Scenario {
        break_reservation: true,
        traders: false,
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
