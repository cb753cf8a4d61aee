//! Scenario files (`configs/testnet/*.toml`): the neighbourhood, the run, the faults to inject
//! and what `--check` expects.

use serde::Deserialize;
use std::path::Path;

/// A scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// A name for the report.
    pub name: String,
    /// Healthy homes (a hostile home, if any, comes on top).
    pub homes: usize,
    /// Simulated seconds per real second.
    pub speed: u32,
    /// Simulated minutes to run.
    pub duration_min: u64,
    /// Simulated start, UTC ms (default 2026-06-21 16:00 UTC, a summer late morning in Ames).
    pub start_ms: u64,
    /// Delivery slot length, minutes.
    pub slot_minutes: u8,
    /// Feed-in and retail tariffs, thousandths of a cent per kWh.
    pub feed_in_price: u64,
    /// See `feed_in_price`.
    pub retail_price: u64,
    /// Latitude and longitude of the neighbourhood (Ames, Iowa by default).
    pub latitude: f64,
    /// See `latitude`.
    pub longitude: f64,
    /// Every `pv_every`-th home has no PV (2: every other home).
    pub no_pv_every: usize,
    /// Every `battery_every`-th home has a battery (0: none).
    pub battery_every: usize,
    /// What `--check` requires.
    pub expect: Expect,
    /// Faults to inject.
    pub faults: Vec<Fault>,
    /// A hostile home.
    pub hostile: Hostile,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "default".into(),
            homes: 5,
            speed: 20,
            duration_min: 60,
            start_ms: 1_782_057_600_000,
            slot_minutes: 5,
            feed_in_price: 4_000,
            retail_price: 13_500,
            latitude: 42.03,
            longitude: -93.62,
            no_pv_every: 2,
            battery_every: 4,
            expect: Expect::default(),
            faults: Vec::new(),
            hostile: Hostile::default(),
        }
    }
}

/// What `--check` requires besides the invariants (no mismatched trade, no hostile message
/// accepted, no healthy home crashed, nothing left unsettled past its deadline).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Expect {
    /// At least this many trades.
    pub min_trades: usize,
    /// At least this many trades settled by both parties.
    pub min_settled: usize,
}

/// One fault.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// `kill` (SIGKILL, then a restart) or `freeze` (SIGSTOP, then SIGCONT).
    pub kind: FaultKind,
    /// Which home (0-based).
    pub home: usize,
    /// When, simulated minutes after the start.
    pub at_min: u64,
    /// How long the home stays down or frozen, real seconds.
    pub for_s: u64,
}

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `kill -9`, then restart the same home.
    Kill,
    /// `SIGSTOP`, then `SIGCONT`.
    Freeze,
}

/// The hostile home.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hostile {
    /// Whether there is one.
    pub enabled: bool,
    /// Rounds of attack (each round sends one message of every kind).
    pub rounds: u32,
}

impl Scenario {
    /// Reads a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the scenario {}: {e}", path.display()))?;
        let s: Scenario = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("the scenario {} is invalid: {e}", path.display()))?;
        anyhow::ensure!(s.homes >= 2, "a scenario needs at least 2 homes");
        anyhow::ensure!(
            (1..=200).contains(&s.speed),
            "speed must be 1 to 200 (protocol deadlines run on real time)"
        );
        for f in &s.faults {
            anyhow::ensure!(
                f.home < s.homes,
                "a fault names home {} of {}",
                f.home,
                s.homes
            );
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_scenarios_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/testnet");
        for name in ["small.toml", "subdivision.toml", "large.toml"] {
            let s = Scenario::load(&dir.join(name)).unwrap();
            assert!(s.homes >= 5, "{name}");
        }
    }
}
