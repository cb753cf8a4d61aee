//! Scenario files (`configs/testnet/*.toml`): the neighbourhood, the run, the faults to inject
//! and what `--check` expects.

use serde::Deserialize;
use std::path::Path;

/// The fastest clock the testnet runs. The shortest protocol window is the gate closure (30
/// simulated seconds in the testnet's charter): at speed S it lasts 30/S real seconds, which
/// must stay well above a trade's real round trips and a gossip heartbeat (300 ms), or a faster
/// clock would change outcomes and not only how long the run takes.
pub const MAX_SPEED: u32 = 60;

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
    /// Whether the homes' automatic traders are on (off: an idle neighbourhood whose homes
    /// only meter, attest and gossip, for footprint measurements).
    pub trading: bool,
    /// What `--check` requires.
    pub expect: Expect,
    /// Faults to inject.
    pub faults: Vec<Fault>,
    /// A hostile home.
    pub hostile: Hostile,
    /// Homes deliberately broken (to show that `--check` catches them).
    pub sabotage: Vec<Sabotage>,
    /// Whom each home dials at start.
    pub dial: Dial,
    /// A fixed offer workload driven by the testnet itself (for the benchmarks), besides or
    /// instead of the traders.
    pub workload: Option<Workload>,
}

/// Whom each home dials at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Dial {
    /// The homes 1, 2, 4, 8, ... places before it (`run::dial_targets`).
    Sparse,
    /// Every home before it, so every pair is connected (for memory with many peers).
    All,
}

/// A fixed workload: every home posts an offer every `offer_every_s` real seconds and cancels
/// it `cancel_after_s` later, so each home publishes two offer versions per period (the cancel
/// is a new version). Homes start staggered evenly over one period.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Real seconds between a home's posts.
    pub offer_every_s: f64,
    /// Real seconds from a post to its cancellation (less than `offer_every_s`).
    pub cancel_after_s: f64,
    /// The offers' energy, Wh.
    #[serde(default = "default_workload_wh")]
    pub quantity_wh: u64,
    /// Every odd home takes `take_wh` from the open offer of the home before it every this
    /// many real seconds (0: no takes). For the trade agreement benchmark.
    #[serde(default)]
    pub take_every_s: f64,
    /// See `take_every_s`.
    #[serde(default = "default_take_wh")]
    pub take_wh: u64,
}

fn default_take_wh() -> u64 {
    1
}

fn default_workload_wh() -> u64 {
    100
}

impl Workload {
    /// Messages (offer versions) each home publishes per real second.
    pub fn messages_per_s(&self) -> f64 {
        2.0 / self.offer_every_s
    }
}

/// A deliberately broken home.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sabotage {
    /// Which home (0-based).
    pub home: usize,
    /// The home aborts this many real seconds after it starts, as a crash would.
    pub crash_after_s: u64,
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
            trading: true,
            expect: Expect::default(),
            faults: Vec::new(),
            hostile: Hostile::default(),
            sabotage: Vec::new(),
            workload: None,
            dial: Dial::Sparse,
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
    /// What to do.
    pub kind: FaultKind,
    /// Which home (0-based), for every kind but `partition`.
    #[serde(default)]
    pub home: usize,
    /// For `partition`: the homes on one side (the others form the other side).
    #[serde(default)]
    pub homes: Vec<usize>,
    /// For `loss`: the share of packets the home drops, percent (each way).
    #[serde(default)]
    pub percent: u8,
    /// For `skew`: how far the home's clock moves, simulated seconds (negative: behind).
    #[serde(default)]
    pub skew_s: i64,
    /// When, simulated minutes after the start.
    pub at_min: u64,
    /// How long the fault lasts, real seconds.
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
    /// Cut the network into two parts, then heal it (network namespaces and nftables).
    Partition,
    /// Drop a share of one home's packets (network namespaces and nftables).
    Loss,
    /// Move one home's clock, then move it back.
    Skew,
}

impl FaultKind {
    /// Whether the fault needs every home in its own network namespace.
    pub fn needs_namespaces(self) -> bool {
        matches!(self, FaultKind::Partition | FaultKind::Loss)
    }
}

impl Fault {
    /// Parses a fault given on the command line, written as a TOML inline table:
    /// `{ kind = "kill", home = 2, at_min = 12, for_s = 5 }`.
    pub fn parse(text: &str) -> anyhow::Result<Fault> {
        #[derive(Deserialize)]
        struct One {
            f: Fault,
        }
        let one: One = toml::from_str(&format!("f = {text}")).map_err(|e| {
            anyhow::anyhow!(
                "the fault {text:?} is invalid: {e}(write it as {{ kind = \"kill\", home = 2, at_min = 12, for_s = 5 }})"
            )
        })?;
        Ok(one.f)
    }

    /// Checks the fault against the number of homes.
    pub fn check(&self, homes: usize) -> anyhow::Result<()> {
        match self.kind {
            FaultKind::Partition => {
                anyhow::ensure!(
                    !self.homes.is_empty() && self.homes.len() < homes,
                    "a partition names the homes on one side (some, not all)"
                );
                for &h in &self.homes {
                    anyhow::ensure!(h < homes, "a partition names home {h} of {homes}");
                }
            }
            _ => anyhow::ensure!(
                self.home < homes,
                "a fault names home {} of {homes}",
                self.home
            ),
        }
        if self.kind == FaultKind::Loss {
            anyhow::ensure!(
                (1..=100).contains(&self.percent),
                "a loss fault needs percent = 1 to 100"
            );
        }
        if self.kind == FaultKind::Skew {
            anyhow::ensure!(self.skew_s != 0, "a skew fault needs skew_s (not 0)");
        }
        Ok(())
    }
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
        s.validate()?;
        Ok(s)
    }

    /// Checks the faults and sabotaged homes against the number of homes.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=MAX_SPEED).contains(&self.speed),
            "speed must be 1 to {MAX_SPEED}: libp2p's heartbeats and timeouts run on real time, \
             and above that the 30-second gate closure lasts less than half a real second"
        );
        for f in &self.faults {
            f.check(self.homes)?;
        }
        for b in &self.sabotage {
            anyhow::ensure!(
                b.home < self.homes,
                "sabotage names home {} of {}",
                b.home,
                self.homes
            );
        }
        if let Some(w) = &self.workload {
            anyhow::ensure!(
                w.offer_every_s >= 0.1 && w.offer_every_s.is_finite(),
                "workload.offer_every_s must be at least 0.1 s"
            );
            anyhow::ensure!(
                w.cancel_after_s > 0.0 && w.cancel_after_s < w.offer_every_s,
                "workload.cancel_after_s must be above 0 and below offer_every_s"
            );
            anyhow::ensure!(w.quantity_wh > 0, "workload.quantity_wh must be above 0");
            anyhow::ensure!(
                w.take_every_s == 0.0 || (w.take_every_s >= 0.05 && w.take_every_s.is_finite()),
                "workload.take_every_s must be 0 (no takes) or at least 0.05 s"
            );
            anyhow::ensure!(
                (1..=w.quantity_wh).contains(&w.take_wh),
                "workload.take_wh must be 1 to quantity_wh"
            );
        }
        Ok(())
    }

    /// Whether the run needs network namespaces (a partition or packet loss).
    pub fn needs_namespaces(&self) -> bool {
        self.faults.iter().any(|f| f.kind.needs_namespaces())
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

    #[test]
    fn faults_from_the_command_line() {
        let f = Fault::parse(r#"{ kind = "partition", homes = [0, 1], at_min = 10, for_s = 20 }"#)
            .unwrap();
        assert_eq!(f.kind, FaultKind::Partition);
        assert!(f.check(5).is_ok());
        assert!(
            f.check(2).is_err(),
            "both homes on one side is no partition"
        );
        let e = Fault::parse(r#"{ kind = "loss", home = 1, at_min = 1, for_s = 5 }"#).unwrap();
        assert!(e.check(3).unwrap_err().to_string().contains("percent"));
        assert!(Fault::parse("kill").is_err());
    }
}
