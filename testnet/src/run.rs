//! `wattmesh-testnet run`: a simulated neighbourhood of real `wattmesh` processes on this
//! machine, on loopback, each home with its own data directory, key, port, simulated meter and
//! automatic trader, all on one accelerated clock. No mDNS: homes find each other through
//! bootstrap addresses.

use anyhow::{Context, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wattmesh_node::config::{ClockCheck, Config};
use wattmesh_node::control::{self, ControlRequest};
use wattmesh_node::meter::sim::calendar::Date;
use wattmesh_node::metering::SourceKind;
use wattmesh_node::neighbourhood::Neighbourhood;
use wattmesh_node::store::Store;
use wattmesh_protocol::roster::Profile;
use wattmesh_protocol::{Charter, NeighbourhoodId, NodeKey};

use crate::netns::Namespaces;
use crate::scenario::{Fault, FaultKind};

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Homes.
    pub homes: usize,
    /// Simulated seconds per real second.
    pub speed: u32,
    /// Simulated minutes to run.
    pub duration_min: u64,
    /// Where the homes' directories and the summary go.
    pub out: PathBuf,
    /// The first home's TCP port; home i listens on `base_port + i`.
    pub base_port: u16,
    /// The `wattmesh` binary.
    pub bin: PathBuf,
    /// Homes run by another command instead of `bin`: the program and its first arguments,
    /// before the node's own (`--data-dir DIR run`). `scripts/pi-test` runs one home as the
    /// aarch64 build under qemu user-mode emulation in a neighbourhood of x86 homes.
    pub home_cmds: BTreeMap<usize, Vec<String>>,
    /// Simulated start time, UTC ms.
    pub start_ms: u64,
    /// The scenario: charter, home mix, faults, hostile home, expectations.
    pub scenario: crate::scenario::Scenario,
}

/// What the run produced: `report.json`, described by `testnet/report.schema.json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The scenario's name.
    pub scenario: String,
    /// Healthy homes (the hostile one is not counted).
    pub homes: usize,
    /// `loopback`, or `namespaces` (each home in its own network namespace, for network faults).
    pub network: String,
    /// Simulated seconds per real second.
    pub speed: u32,
    /// Simulated seconds run.
    pub simulated_seconds: u64,
    /// Real seconds taken.
    pub wall_seconds: u64,
    /// Delivery slots the run covered.
    pub slots: u64,
    /// The charter's tariffs, thousandths of a cent per kWh (the band prices must stay in).
    pub tariffs: Tariffs,
    /// Distinct agreed trades.
    pub trades: usize,
    /// Energy agreed, Wh.
    pub energy_traded_wh: u64,
    /// Energy counted as delivered in settled trades, Wh.
    pub energy_delivered_wh: u64,
    /// Trades settled by both parties.
    pub settled_trades: usize,
    /// Trades disputed on some side.
    pub disputed_trades: usize,
    /// Offers on which more was sold than the maker ever offered.
    pub oversold_offers: usize,
    /// Trades whose two copies differ (state or figures).
    pub mismatched_trades: usize,
    /// Trades past their settlement deadline that neither party settled nor disputed.
    pub unsettled_trades: usize,
    /// Homes that stopped running during the run (other than by an injected fault).
    pub crashed_homes: Vec<String>,
    /// What the scenario's fixed workload did (absent without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadCounts>,
    /// The share of the machine's CPU time (all cores, everything running on it) that was
    /// busy while the workload ran (absent without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_busy: Option<f64>,
    /// Key figures.
    pub kpis: Kpis,
    /// The neighbourhood's metered energy over the run.
    pub energy: Energy,
    /// Wall-clock latencies, ms.
    pub latency_ms: Latencies,
    /// Each healthy home's peak memory and CPU time.
    pub nodes: Vec<NodeUsage>,
    /// For every slot and home, what its automatic trader worked with.
    pub orders: Vec<OrderRow>,
    /// Every agreed trade.
    pub trades_list: Vec<TradeRow>,
    /// The neighbourhood's power per simulated minute (sums over the healthy homes).
    pub power: Vec<PowerRow>,
    /// Every fault injected.
    pub faults: Vec<FaultRecord>,
    /// The hostile home's messages.
    pub hostile: HostileRecord,
    /// Why `--check` fails; empty when every invariant holds.
    pub check_failures: Vec<String>,
}

/// The charter's tariffs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tariffs {
    /// What the utility pays for exported energy.
    pub feed_in_millicents_per_kwh: u64,
    /// What the utility charges for imported energy.
    pub retail_millicents_per_kwh: u64,
}

/// Key figures of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Kpis {
    /// Share of the homes' consumption met by local generation (their own and, through
    /// trades, their neighbours'), 0 to 1.
    pub self_sufficiency: f64,
    /// Share of the homes' grid imports that neighbours supplied through settled trades.
    pub local_energy_share: f64,
    /// Gains from trade against the grid, thousandths of a cent: for each trade, what the
    /// seller got above the feed-in tariff plus what the buyer paid below the retail tariff.
    pub savings_vs_grid: i64,
    /// Gains from trade realised / those of a central uniform-price clearing of the same limit
    /// orders: 1 when neither gained anything; null when the central clearing gains nothing
    /// but the trades do (a home's limits moved within a slot).
    pub market_efficiency: Option<f64>,
    /// Gains from trade realised, thousandths of a cent (Σ (buyer's limit − seller's limit) ×
    /// energy).
    pub gains_realised_millicents: u64,
    /// Gains a central clearing of the same orders would realise, thousandths of a cent.
    pub gains_central_millicents: u64,
}

/// Metered energy over the run, summed over the healthy homes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Energy {
    /// Household consumption, Wh.
    pub consumption_wh: u64,
    /// Solar production, Wh.
    pub production_wh: u64,
    /// Grid import (register difference), Wh.
    pub import_wh: u64,
    /// Grid export (register difference), Wh.
    pub export_wh: u64,
}

/// The wall-clock latencies.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latencies {
    /// From a maker signing an offer version to the last other healthy home having it
    /// (homes down or frozen at the time are left out).
    pub offer_propagation: crate::observe::Latency,
    /// From the taker's proposal to the co-signed trade durably stored on both sides.
    pub trade_agreement: crate::observe::Latency,
}

/// One trader order.
#[derive(Debug, Clone, Serialize)]
pub struct OrderRow {
    /// The slot's start, UTC ms.
    pub slot_ms: u64,
    /// The home.
    pub home: String,
    /// `sell` or `buy`.
    pub side: String,
    /// Its limit (floor to sell, ceiling to buy).
    pub limit_price_millicents_per_kwh: u64,
    /// The most energy it wanted while the slot's trading window was open, Wh.
    pub quantity_wh: u64,
}

/// One agreed trade.
#[derive(Debug, Clone, Serialize)]
pub struct TradeRow {
    /// The slot's start, UTC ms.
    pub slot_ms: u64,
    /// The selling home.
    pub seller: String,
    /// The buying home.
    pub buyer: String,
    /// Energy agreed, Wh.
    pub energy_wh: u64,
    /// Price.
    pub price_millicents_per_kwh: u64,
    /// Energy counted as delivered, once both parties settled.
    pub delivered_wh: Option<u64>,
    /// `settled`, `disputed`, `pending` (not settled yet) or `mismatched`.
    pub outcome: String,
}

/// The neighbourhood's power in one simulated minute.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PowerRow {
    /// The minute's start, UTC ms.
    pub minute_ms: u64,
    /// Σ of the homes' grid import, W.
    pub import_w: i64,
    /// Σ of the homes' grid export, W.
    pub export_w: i64,
    /// Σ of the homes' solar production, W.
    pub solar_w: i64,
    /// Σ of the homes' consumption, W.
    pub load_w: i64,
}

/// A home's resource use (from /proc at the end of the run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeUsage {
    /// The home.
    pub home: String,
    /// Peak resident memory, kB (VmHWM).
    pub rss_kb_max: u64,
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident memory at the end, kB (VmRSS).
    pub rss_kb: u64,
    /// Bytes the process caused to be written to storage (`write_bytes` in /proc/PID/io:
    /// the database, and its `node.log`, which on a Pi goes to the journal instead).
    pub disk_write_bytes: u64,
    /// Of those, the size of its `node.log`, bytes.
    pub log_bytes: u64,
    /// Peers it was connected to at the end of the run (absent when it did not answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_peers: Option<usize>,
}

/// One injected fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// What was done.
    pub kind: crate::scenario::FaultKind,
    /// The home (for a partition: the homes on one side, comma-separated).
    pub home: String,
    /// Details (loss percentage, clock skew).
    pub detail: String,
    /// When, wall seconds after the start.
    pub at_wall_s: f64,
    /// When, simulated minutes after the start.
    pub at_simulated_min: u64,
    /// For how long, real seconds.
    pub for_s: u64,
}

/// What the hostile home sent and what came of it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostileRecord {
    /// Messages it published (by kind).
    pub sent: u64,
    /// By kind: forged signature, impersonation, replay, malformed, oversized.
    pub sent_by_kind: BTreeMap<String, u64>,
    /// Messages the network refused to even carry (oversized ones).
    pub refused_locally: u64,
    /// Hostile messages that some healthy home accepted (should be 0).
    pub accepted: u64,
    /// Gossip messages the healthy homes rejected as provably invalid, in total.
    pub rejected_by_homes: u64,
}

struct Home {
    name: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Drop for Home {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn charter_for(
    founder: wattmesh_protocol::NodeId,
    sc: &crate::scenario::Scenario,
) -> Charter {
    let mut c = Charter::founding(
        NeighbourhoodId(*b"testnet-ames-ia!"),
        "Testnet Lane, Ames",
        founder,
        0,
    );
    c.slot_minutes = sc.slot_minutes;
    c.feed_in_price = sc.feed_in_price;
    c.retail_price = sc.retail_price;
    c.gate_closure_secs = 30;
    // Generous grace: real-time lags are multiplied by the clock's speed.
    c.settlement_grace_secs = 180;
    c
}

/// The healthy homes' gossip duplicate cache, seconds: short, so that the hostile home's
/// replays get past it to the node's own replay window.
pub const DUPLICATE_CACHE_SECS: u64 = 15;

/// The homes' gossipsub heartbeat, ms.
pub const HEARTBEAT_MS: u64 = 300;

/// The earlier homes home `i` dials at start: those 1, 2, 4, 8, ... places before it. Every
/// home is reachable from every other in O(log n) hops and has about 2·log2(n) connections
/// (7 outgoing at most for 100 homes), as many as gossipsub's mesh wants, where dialling every
/// pair would give each of 100 homes 99 connections no real neighbourhood would have. Homes
/// with trades to agree dial each other by id, through the members' address book.
pub fn dial_targets(i: usize) -> Vec<usize> {
    std::iter::successors(Some(1usize), |d| d.checked_mul(2))
        .take_while(|&d| d <= i)
        .map(|d| i - d)
        .collect()
}

/// Home `i`'s data directory (the hostile home comes after the healthy ones).
fn homes_dir(o: &Options, i: usize) -> PathBuf {
    if i < o.homes {
        o.out.join(format!("home-{i:02}"))
    } else {
        o.out.join("hostile")
    }
}

/// Home `i`'s web UI port: a thousand above its libp2p port.
pub fn web_port(o: &Options, i: usize) -> usize {
    o.base_port as usize + 1000 + i
}

fn config_for(i: usize, o: &Options, origin_ms: u64, host: &str) -> Config {
    let mut c = Config::default();
    c.network.listen = vec![format!("/ip4/{host}/tcp/{}", o.base_port as usize + i)];
    c.network.heartbeat_ms = HEARTBEAT_MS;
    c.network.duplicate_cache_secs = DUPLICATE_CACHE_SECS;
    c.mdns.enabled = false;
    c.web.listen = format!("{host}:{}", web_port(o, i));
    // No SSDP multicast from the testnet (everything is on loopback anyway).
    c.reach.upnp = false;
    c.clock.check = ClockCheck::Trust;
    c.clock.speed = o.speed;
    c.clock.origin_ms = origin_ms;
    c.clock.offset_ms = o.start_ms as i64 - origin_ms as i64;
    c.meter.source = SourceKind::Simulated;
    c.meter.home = format!("home-{i:02}");
    c.meter.poll_secs = 10;
    c.meter.sim.registers_from = Date::new(2026, 6, 1).expect("a valid date");
    c.meter.sim.load.daily_kwh = 16.0 + (i as f64 * 7.3) % 20.0;
    let sc = &o.scenario;
    c.meter.sim.location.latitude_deg = sc.latitude;
    c.meter.sim.location.longitude_deg = sc.longitude;
    if sc.no_pv_every > 0 && i % sc.no_pv_every == sc.no_pv_every - 1 {
        c.meter.sim.pv = None;
    } else if let Some(pv) = &mut c.meter.sim.pv {
        pv.kwp = 3.0 + (i as f64 * 2.7) % 6.0;
    }
    if sc.battery_every > 0 && i % sc.battery_every == sc.battery_every - 1 {
        c.meter.sim.battery = Some(Default::default());
    }
    c.trader.enabled = sc.trading;
    c.trader.min_sell_price = 5_000 + (i as u64 * 1_300) % 4_000;
    c.trader.max_buy_price = 8_500 + (i as u64 * 1_700) % 4_500;
    c.trader.ramp_minutes = 4;
    c.trader.lead_slots = 2;
    c
}

/// A control-socket request with a timeout: a frozen home must not stall the testnet.
pub async fn call(dir: &Path, req: &ControlRequest) -> anyhow::Result<serde_json::Value> {
    tokio::time::timeout(Duration::from_secs(5), control::call(dir, req))
        .await
        .map_err(|_| anyhow::anyhow!("{} did not answer in 5 s", dir.display()))?
}

async fn status(dir: &Path) -> Option<serde_json::Value> {
    let v = call(dir, &ControlRequest::Status).await.ok()?;
    (v["ok"] == true).then(|| v["status"].clone())
}

/// Home `i`'s IP address: loopback, or its own namespace's.
fn host(net: Option<&Namespaces>, i: usize) -> String {
    match net {
        Some(n) => n.addr(i).to_string(),
        None => "127.0.0.1".into(),
    }
}

/// Runs a neighbourhood until the duration passes or `stop` resolves.
pub async fn run(
    o: &Options,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Summary> {
    if !o.bin.exists() {
        bail!(
            "the wattmesh binary is not at {} (build it, or set WATTMESH_BIN)",
            o.bin.display()
        );
    }
    o.scenario.validate()?;
    for (&i, c) in &o.home_cmds {
        anyhow::ensure!(
            i < o.homes && !c.is_empty(),
            "a home command for home {i}: there are {} homes, and the command must not be empty",
            o.homes
        );
        println!("home-{i:02} runs as: {} ...", c.join(" "));
    }
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let hostile = o.scenario.hostile.enabled;
    let total = o.homes + usize::from(hostile);
    let mut net = if o.scenario.needs_namespaces() {
        let n = Namespaces::create(total).context(
            "the scenario has network faults (partition or packet loss), which need a network \
             namespace per home",
        )?;
        println!("every home runs in its own network namespace (10.77.0.0/16) for network faults");
        Some(n)
    } else {
        None
    };
    let origin_ms = wattmesh_node::clock::Clock::new(&Default::default()).now_ms();
    let mut homes = Vec::new();
    let mut hood: Option<Neighbourhood> = None;
    let mut founder: Option<NodeKey> = None;
    let mut node_ids = Vec::new();
    for i in 0..total {
        let name = if i < o.homes {
            format!("home-{i:02}")
        } else {
            "hostile".to_string()
        };
        let dir = o.out.join(&name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        let store = Store::open(&dir.join("wattmesh.redb"))?;
        let (key, _) = wattmesh_node::identity::load_or_create(&dir.join("node.key"))?;
        if i < o.homes {
            node_ids.push(key.node_id().to_hex());
        }
        match &hood {
            None => {
                let mut psk = [0u8; 32];
                for (j, b) in psk.iter_mut().enumerate() {
                    *b = (origin_ms >> (j % 8 * 8)) as u8 ^ j as u8;
                }
                let profile = Profile {
                    name: name.clone(),
                    pv_capacity_w: 0,
                };
                hood = Some(Neighbourhood::found_with(
                    &dir,
                    &store,
                    &key,
                    charter_for(key.node_id(), &o.scenario),
                    psk,
                    profile,
                )?);
                founder = Some(NodeKey::from_secret(&key.secret_bytes()));
            }
            Some(n) => {
                // The founder adds every home to the roster (a real neighbourhood joins by
                // invite; the testnet sets up the whole roster before it starts).
                let admin = founder.as_ref().context("the founder's key")?;
                let profile = Profile {
                    name: name.clone(),
                    pv_capacity_w: 0,
                };
                n.add_member(&store, admin, key.node_id(), profile, 0)?;
                // Earlier homes were saved before this one was added: give them the record.
                n.save(&dir, &store)?;
            }
        }
        drop(store);
        let mut cfg = config_for(i, o, origin_ms, &host(net.as_ref(), i));
        // Each home dials a few homes before it (see `dial_targets`); gossipsub's mesh and
        // the members' address book do the rest, as in a real neighbourhood.
        let targets = match o.scenario.dial {
            crate::scenario::Dial::Sparse => dial_targets(i),
            crate::scenario::Dial::All => (0..i).collect(),
        };
        for j in targets {
            let k = wattmesh_node::identity::load(&homes_dir(o, j).join("node.key"))?;
            let pid = wattmesh_node::net::keypair(&k).public().to_peer_id();
            cfg.network.bootstrap.push(format!(
                "/ip4/{}/tcp/{}/p2p/{pid}",
                host(net.as_ref(), j),
                o.base_port as usize + j
            ));
        }
        if i >= o.homes {
            // The hostile home: a member that may be told to send anything.
            cfg.testing.allow_raw_publish = true;
            cfg.trader.enabled = false;
            // So that it can publish a replay at all (its own gossip would drop a duplicate).
            cfg.network.duplicate_cache_secs = 1;
        } else {
            cfg.testing.allow_clock_skew = o
                .scenario
                .faults
                .iter()
                .any(|f| f.kind == FaultKind::Skew && f.home == i);
            if let Some(b) = o.scenario.sabotage.iter().find(|b| b.home == i) {
                cfg.testing.crash_after_secs = b.crash_after_s;
            }
        }
        std::fs::write(dir.join("wattmesh.toml"), toml::to_string(&cfg)?)?;
        homes.push(Home {
            name,
            dir,
            child: None,
        });
    }
    // Every home starts with the whole roster.
    if let Some(n) = &hood {
        for h in &homes {
            n.save(&h.dir, &Store::open(&h.dir.join("wattmesh.redb"))?)?;
        }
    }
    for (i, h) in homes.iter_mut().enumerate() {
        h.child = Some(spawn_home(o, net.as_ref(), i, &h.dir, false)?);
    }
    let started = Instant::now();
    for h in &homes {
        let up = tokio::time::timeout(Duration::from_secs(60), async {
            while status(&h.dir).await.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        if up.is_err() {
            bail!(
                "{} did not start; see {}",
                h.name,
                h.dir.join("node.log").display()
            );
        }
    }
    println!(
        "{} homes running{}; data, configs and logs in {}",
        o.homes,
        if hostile { " and a hostile one" } else { "" },
        o.out.display()
    );
    if let Some(n) = &net {
        println!(
            "The homes' web UIs listen inside their namespaces (open one with: ip netns exec {} \
             curl http://{}:{}/)",
            n.name(0),
            n.addr(0),
            web_port(o, 0)
        );
    } else {
        println!("Each home's web UI (sign in with its one-time setup code the first time):");
        for (i, h) in homes.iter().enumerate().take(o.homes) {
            let code = std::fs::read_to_string(wattmesh_node::web::setup_code_path(&h.dir))
                .map(|c| c.trim().to_owned())
                .unwrap_or_else(|_| "(already set up)".into());
            println!(
                "  {}  http://127.0.0.1:{}/  setup code {code}   (CLI: wattmesh --data-dir {} status)",
                h.name,
                web_port(o, i),
                h.dir.display()
            );
        }
    }
    let real_duration = Duration::from_millis(o.duration_min * 60_000 / u64::from(o.speed.max(1)));
    let mut attack = if hostile {
        let chain = hood.as_ref().context("the neighbourhood")?.chain.clone();
        Some(crate::hostile::Attack::new(
            &homes[o.homes].dir,
            chain,
            o.scenario.hostile.rounds,
        )?)
    } else {
        None
    };
    let cpu_at_start = MachineCpu::read();
    let workload = o.scenario.workload.clone().map(|w| {
        println!(
            "workload: every home posts a {} Wh offer every {} s and cancels it after {} s",
            w.quantity_wh, w.offer_every_s, w.cancel_after_s
        );
        let list: Vec<(PathBuf, String)> = homes[..o.homes]
            .iter()
            .zip(&node_ids)
            .map(|(h, id)| (h.dir.clone(), id.clone()))
            .collect();
        let counts = Arc::new(std::sync::Mutex::new(WorkloadCounts::default()));
        (
            tokio::spawn(drive_workload(w, list, counts.clone())),
            counts,
        )
    });
    let mut observed = crate::observe::Observed::new(o.homes);
    let mut pending: Vec<Fault> = o.scenario.faults.clone();
    // Faults in progress, and when to end them.
    let mut active: Vec<(Fault, Instant)> = Vec::new();
    let mut fault_log = Vec::new();
    // Per home: wall-clock windows (UTC ms) when it was down or frozen.
    let mut outages: Vec<Vec<(u64, u64)>> = vec![Vec::new(); o.homes];
    tokio::pin!(stop);
    let mut crashed = Vec::new();
    let mut last_print = Instant::now();
    let mut next_poll = 0usize;
    loop {
        tokio::select! {
            _ = &mut stop => { println!("stopping"); break; }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let sim_min = started.elapsed().as_millis() as u64 * u64::from(o.speed) / 60_000;
        // Start due faults.
        let mut k = 0;
        while k < pending.len() {
            if pending[k].at_min > sim_min {
                k += 1;
                continue;
            }
            let f = pending.remove(k);
            let (who, detail) = start_fault(&f, &mut homes, net.as_mut()).await?;
            if matches!(f.kind, FaultKind::Kill | FaultKind::Freeze) {
                let now = wattmesh_node::node::timeline::wall_ms();
                outages[f.home].push((now, now + f.for_s * 1000));
            }
            println!("fault: {:?} {who} {detail} for {} s", f.kind, f.for_s);
            fault_log.push(FaultRecord {
                kind: f.kind,
                home: who,
                detail,
                at_wall_s: started.elapsed().as_secs_f64(),
                at_simulated_min: sim_min,
                for_s: f.for_s,
            });
            let until = Instant::now() + Duration::from_secs(f.for_s);
            active.push((f, until));
        }
        // End faults whose time is up.
        let mut k = 0;
        while k < active.len() {
            if active[k].1 > Instant::now() {
                k += 1;
                continue;
            }
            let (f, _) = active.remove(k);
            end_fault(o, &f, &mut homes, net.as_mut()).await?;
            println!("fault over: {:?}", f.kind);
        }
        if let Some(a) = &mut attack {
            if started.elapsed() > Duration::from_secs(15) {
                a.step(&homes[0].dir).await;
            }
        }
        for h in &mut homes {
            if let Some(c) = &mut h.child {
                if let Ok(Some(code)) = c.try_wait() {
                    if !crashed.contains(&h.name) {
                        eprintln!(
                            "{} exited ({code}); see {}",
                            h.name,
                            h.dir.join("node.log").display()
                        );
                        crashed.push(h.name.clone());
                    }
                }
            }
        }
        // Read a few homes' timelines each second, so each is read every few seconds.
        for _ in 0..o.homes.div_ceil(4) {
            let i = next_poll % o.homes;
            next_poll += 1;
            observed.poll(i, &homes[i].dir).await;
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            let mut line = String::new();
            if let Some(s) = status(&homes[0].dir).await {
                line = format!(
                    "simulated {}  peers {}  offers {}",
                    s["now_ms"].as_u64().map(fmt_time).unwrap_or_default(),
                    s["peers"].as_array().map(Vec::len).unwrap_or(0),
                    s["offers"]
                );
            }
            println!("{line}  trades {}", observed.trades_stored());
        }
        if started.elapsed() >= real_duration {
            break;
        }
    }
    let machine_busy = match (&workload, cpu_at_start, MachineCpu::read()) {
        (Some(_), Some(a), Some(b)) => b.busy_since(&a),
        _ => None,
    };
    let workload_counts = match workload {
        Some((task, counts)) => {
            task.abort();
            let _ = task.await;
            let c = *lock(&counts);
            println!(
                "workload: {} offers posted, {} cancelled, {} requests failed; {} takes traded, \
                 {} refused",
                c.posted, c.cancelled, c.failed, c.taken, c.failed_takes
            );
            Some(c)
        }
        None => None,
    };
    // End any fault still in progress, so every home can be asked and stopped.
    for (f, _) in std::mem::take(&mut active) {
        end_fault(o, &f, &mut homes, net.as_mut()).await?;
    }
    let wall_seconds = started.elapsed().as_secs();
    let healthy = &homes[..o.homes];
    for (i, h) in healthy.iter().enumerate() {
        observed.poll(i, &h.dir).await;
    }
    let now_ms = match status(&homes[0].dir).await {
        Some(s) => s["now_ms"].as_u64().unwrap_or(0),
        None => 0,
    };
    let mut readings = Vec::new();
    for h in healthy {
        let req = ControlRequest::Readings {
            from_ms: o.start_ms,
            to_ms: now_ms.max(o.start_ms),
        };
        let list: Vec<wattmesh_node::metering::Minute> = match call(&h.dir, &req).await {
            Ok(v) => serde_json::from_value(v["readings"].clone()).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        readings.push(list);
    }
    let trades = collect(healthy).await;
    let mut summary = crate::report::summarise(&crate::report::Inputs {
        options: o,
        names: healthy.iter().map(|h| h.name.clone()).collect(),
        node_ids: &node_ids,
        trades: &trades,
        observed: &observed,
        readings: &readings,
        outages: &outages,
        now_ms,
        wall_seconds,
    });
    summary.network = if net.is_some() {
        "namespaces"
    } else {
        "loopback"
    }
    .into();
    summary.crashed_homes = crashed;
    summary.workload = workload_counts;
    summary.machine_busy = machine_busy;
    summary.faults = fault_log;
    if let Some(a) = &attack {
        let dirs: Vec<PathBuf> = healthy.iter().map(|h| h.dir.clone()).collect();
        summary.hostile = a.outcome(&dirs).await;
    }
    for h in healthy {
        let s = status(&h.dir).await;
        if let Some(c) = &h.child {
            let mut u = usage(&h.name, c.id(), &h.dir);
            u.connected_peers = s.as_ref().and_then(|s| s["peers"].as_array()).map(Vec::len);
            summary.nodes.push(u);
        }
        if let Some(s) = s {
            summary.hostile.rejected_by_homes +=
                s["counters"]["gossip_rejected"].as_u64().unwrap_or(0);
        }
    }
    summary.check_failures = check(&summary, &o.scenario.expect);
    summary
        .check_failures
        .extend(crate::report::schema_errors(&summary));
    for h in &homes {
        let _ = call(&h.dir, &ControlRequest::Stop).await;
    }
    for h in &mut homes {
        if let Some(c) = &mut h.child {
            for _ in 0..50 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // The homes are gone before their namespaces are.
    drop(homes);
    drop(net.take());
    let json = serde_json::to_string_pretty(&summary)?;
    std::fs::write(o.out.join("report.json"), &json)?;
    std::fs::write(o.out.join("report.html"), crate::html::render(&summary))?;
    Ok(summary)
}

/// What the workload did, for the report.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct WorkloadCounts {
    /// Offers posted.
    pub posted: u64,
    /// Offers cancelled.
    pub cancelled: u64,
    /// Posts and cancels a home refused or did not answer.
    pub failed: u64,
    /// Takes that became trades.
    pub taken: u64,
    /// Takes refused (the offer had just been cancelled or filled, ...) or not answered.
    pub failed_takes: u64,
}

/// Drives `w` on every home until aborted: each home posts, waits, cancels, waits, in its own
/// task, starting staggered over one period so that the publications spread evenly; with
/// takes on, each odd home takes from the open offer of the home before it.
async fn drive_workload(
    w: crate::scenario::Workload,
    homes: Vec<(PathBuf, String)>,
    counts: Arc<std::sync::Mutex<WorkloadCounts>>,
) {
    let period = Duration::from_secs_f64(w.offer_every_s);
    let hold = Duration::from_secs_f64(w.cancel_after_s);
    let n = homes.len().max(1) as u32;
    // Each home's open workload offer, if any.
    let open: Arc<Vec<std::sync::Mutex<Option<u64>>>> =
        Arc::new(homes.iter().map(|_| std::sync::Mutex::new(None)).collect());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (dir, _)) in homes.iter().cloned().enumerate() {
        let counts = counts.clone();
        let open = open.clone();
        let start = tokio::time::Instant::now() + period * i as u32 / n;
        tasks.spawn(async move {
            let mut tick = tokio::time::interval_at(start, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let post = ControlRequest::Post(wattmesh_node::node::PostOffer {
                    side: wattmesh_node::node::SideArg::Sell,
                    quantity_wh: w.quantity_wh,
                    price: 9_000,
                    slot_ms: None,
                    min_fill_wh: None,
                });
                let nonce = match call(&dir, &post).await {
                    Ok(v) if v["ok"] == true => v["offer"]["nonce"].as_u64(),
                    _ => None,
                };
                let Some(nonce) = nonce else {
                    lock(&counts).failed += 1;
                    continue;
                };
                lock(&counts).posted += 1;
                *lock(&open[i]) = Some(nonce);
                tokio::time::sleep(hold).await;
                *lock(&open[i]) = None;
                match call(&dir, &ControlRequest::Cancel { nonce }).await {
                    Ok(v) if v["ok"] == true => lock(&counts).cancelled += 1,
                    _ => lock(&counts).failed += 1,
                }
            }
        });
    }
    if w.take_every_s > 0.0 {
        let every = Duration::from_secs_f64(w.take_every_s);
        for i in (1..homes.len()).step_by(2) {
            let (dir, _) = homes[i].clone();
            let maker = homes[i - 1].1.clone();
            let counts = counts.clone();
            let open = open.clone();
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(nonce) = *lock(&open[i - 1]) else {
                        continue;
                    };
                    let take = ControlRequest::Take {
                        maker: maker.clone(),
                        nonce,
                        energy_wh: w.take_wh,
                    };
                    match call(&dir, &take).await {
                        Ok(v) if v["ok"] == true => lock(&counts).taken += 1,
                        _ => lock(&counts).failed_takes += 1,
                    }
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts a fault; returns who it hit and details, for the log.
async fn start_fault(
    f: &Fault,
    homes: &mut [Home],
    net: Option<&mut Namespaces>,
) -> anyhow::Result<(String, String)> {
    let h = &mut homes[f.home];
    match f.kind {
        FaultKind::Kill => {
            if let Some(child) = &mut h.child {
                let _ = child.kill();
                let _ = child.wait();
            }
            h.child = None;
            Ok((h.name.clone(), String::new()))
        }
        FaultKind::Freeze => {
            if let Some(c) = &h.child {
                signal(c.id(), libc::SIGSTOP);
            }
            Ok((h.name.clone(), String::new()))
        }
        FaultKind::Skew => {
            let delta = f.skew_s * 1000;
            let v = call(&h.dir, &ControlRequest::SkewClock { delta_ms: delta }).await?;
            anyhow::ensure!(v["ok"] == true, "skewing {}: {}", h.name, v["error"]);
            Ok((h.name.clone(), format!("clock {:+} s", f.skew_s)))
        }
        FaultKind::Loss => {
            let n = net.context("packet loss needs network namespaces")?;
            n.loss(f.home, f.percent)?;
            Ok((
                h.name.clone(),
                format!("{} % of packets dropped", f.percent),
            ))
        }
        FaultKind::Partition => {
            let n = net.context("a partition needs network namespaces")?;
            let others: Vec<usize> = (0..homes.len()).filter(|i| !f.homes.contains(i)).collect();
            n.partition(&f.homes, &others)?;
            let side: Vec<&str> = f.homes.iter().map(|&i| homes[i].name.as_str()).collect();
            Ok((
                side.join(","),
                format!("cut off from the other {} homes", others.len()),
            ))
        }
    }
}

/// Ends a fault.
async fn end_fault(
    o: &Options,
    f: &Fault,
    homes: &mut [Home],
    net: Option<&mut Namespaces>,
) -> anyhow::Result<()> {
    match f.kind {
        FaultKind::Kill => {
            let child = spawn_home(o, net.as_deref(), f.home, &homes[f.home].dir, true)?;
            homes[f.home].child = Some(child);
        }
        FaultKind::Freeze => {
            if let Some(c) = &homes[f.home].child {
                signal(c.id(), libc::SIGCONT);
            }
        }
        FaultKind::Skew => {
            let req = ControlRequest::SkewClock {
                delta_ms: -f.skew_s * 1000,
            };
            if let Err(e) = call(&homes[f.home].dir, &req).await {
                eprintln!("could not undo the skew of {}: {e}", homes[f.home].name);
            }
        }
        FaultKind::Loss => {
            if let Some(n) = net {
                n.loss(f.home, 0)?;
            }
        }
        FaultKind::Partition => {
            if let Some(n) = net {
                n.heal()?;
            }
        }
    }
    Ok(())
}

/// What `--check` finds wrong with a run.
pub fn check(s: &Summary, e: &crate::scenario::Expect) -> Vec<String> {
    let mut out = Vec::new();
    if s.mismatched_trades > 0 {
        out.push(format!(
            "{} trades differ between their two parties",
            s.mismatched_trades
        ));
    }
    if s.oversold_offers > 0 {
        out.push(format!(
            "{} offers sold more than their makers offered",
            s.oversold_offers
        ));
    }
    if s.unsettled_trades > 0 {
        out.push(format!(
            "{} trades past their settlement deadline are neither settled nor disputed",
            s.unsettled_trades
        ));
    }
    if s.hostile.accepted > 0 {
        out.push(format!(
            "{} hostile messages were accepted",
            s.hostile.accepted
        ));
    }
    if !s.crashed_homes.is_empty() {
        out.push(format!("healthy homes crashed: {:?}", s.crashed_homes));
    }
    if s.trades < e.min_trades {
        out.push(format!(
            "{} trades, fewer than the {} expected",
            s.trades, e.min_trades
        ));
    }
    if s.settled_trades < e.min_settled {
        out.push(format!(
            "{} settled trades, fewer than the {} expected",
            s.settled_trades, e.min_settled
        ));
    }
    out
}

/// Sends a signal to a child we started; an error (it has exited) is ignored.
#[allow(unsafe_code)]
fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let _ = unsafe { libc::kill(pid, sig) };
}

/// Peak memory and CPU time of a running process, from /proc.
/// The machine's CPU time so far, all cores (the first line of /proc/stat), in clock ticks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    /// Now; `None` where /proc/stat cannot be read.
    pub(crate) fn read() -> Option<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        MachineCpu::parse(stat.lines().next()?)
    }

    /// From the `cpu` line: user nice system idle iowait irq softirq steal ...
    fn parse(line: &str) -> Option<MachineCpu> {
        let mut fields = line.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let v: Vec<u64> = fields
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        let total: u64 = v.iter().sum();
        // Idle and waiting for the disk count as not busy.
        let idle = v.get(3)? + v.get(4)?;
        Some(MachineCpu {
            busy: total - idle,
            total,
        })
    }

    /// The busy share of the time between `earlier` and this reading.
    pub(crate) fn busy_since(&self, earlier: &MachineCpu) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let busy = self.busy.checked_sub(earlier.busy)?;
        (total > 0).then(|| busy as f64 / total as f64)
    }
}

pub(crate) fn usage(home: &str, pid: u32, dir: &Path) -> NodeUsage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let rss_kb_max = kb("VmHWM:");
    let rss_kb = kb("VmRSS:");
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let disk_write_bytes = io
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state.
    let cpu_seconds = (ticks(11) + ticks(12)) as f64 / 100.0;
    NodeUsage {
        home: home.to_owned(),
        rss_kb_max,
        cpu_seconds,
        rss_kb,
        disk_write_bytes,
        log_bytes: std::fs::metadata(dir.join("node.log")).map_or(0, |m| m.len()),
        connected_peers: None,
    }
}

/// Starts (or restarts) a home's `wattmesh run`, appending to its log.
fn spawn_home(
    o: &Options,
    net: Option<&Namespaces>,
    i: usize,
    dir: &Path,
    append: bool,
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(dir.join("node.log"))?;
    let (program, first_args) = match o.home_cmds.get(&i) {
        Some(c) if !c.is_empty() => (PathBuf::from(&c[0]), &c[1..]),
        _ => (o.bin.clone(), &[][..]),
    };
    let mut cmd = match net {
        Some(n) => n.command(i, &program),
        None => Command::new(&program),
    };
    cmd.args(first_args)
        .arg("--data-dir")
        .arg(dir)
        .arg("run")
        .env("RUST_LOG", "info")
        .env_remove("WATTMESH_BOOTSTRAP")
        .env_remove("WATTMESH_MDNS")
        .env_remove("WATTMESH_UPNP")
        .env_remove("WATTMESH_CLOCK")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))
}

/// Every trade as each of its parties sees it (with the home's index), by (taker, nonce).
pub type Collected = BTreeMap<(String, u64), Vec<(usize, serde_json::Value)>>;

async fn collect(homes: &[Home]) -> Collected {
    let mut out: Collected = BTreeMap::new();
    for (i, h) in homes.iter().enumerate() {
        if let Ok(v) = call(&h.dir, &ControlRequest::Trades).await {
            for t in v["trades"].as_array().into_iter().flatten() {
                let key = (
                    t["taker"].as_str().unwrap_or("").to_owned(),
                    t["nonce"].as_u64().unwrap_or(0),
                );
                out.entry(key).or_default().push((i, t.clone()));
            }
        }
    }
    out
}

fn fmt_time(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "day {} {:02}:{:02} UTC",
        s / 86_400 % 1000,
        s / 3600 % 24,
        s / 60 % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Expect;

    #[test]
    fn machine_busy_share_from_proc_stat() {
        let a = MachineCpu::parse("cpu  100 0 50 800 50 0 0 0 0 0").unwrap();
        let b = MachineCpu::parse("cpu  400 0 150 1100 50 0 0 0 0 0").unwrap();
        // 400 busy ticks of 700 in between.
        assert_eq!(b.busy_since(&a), Some(400.0 / 700.0));
        assert_eq!(a.busy_since(&b), None);
        assert_eq!(a.busy_since(&a), None);
        assert!(MachineCpu::parse("cpu0 1 2 3 4 5 6 7 8").is_none());
        assert!(MachineCpu::parse("cpu 1 2 x 4 5 6 7 8").is_none());
    }

    #[test]
    fn sparse_dialling_connects_every_home_with_few_connections() {
        for n in [2, 5, 30, 100, 257] {
            let mut adj = vec![Vec::new(); n];
            for i in 0..n {
                for j in dial_targets(i) {
                    assert!(j < i);
                    adj[i].push(j);
                    adj[j].push(i);
                }
            }
            let max_degree = adj.iter().map(Vec::len).max().unwrap_or(0);
            let log2 = usize::BITS - (n - 1).leading_zeros();
            assert!(
                max_degree <= 2 * log2 as usize,
                "{n} homes: degree {max_degree}"
            );
            // Breadth-first from home 0 reaches every home.
            let mut seen = vec![false; n];
            let mut queue = std::collections::VecDeque::from([0]);
            seen[0] = true;
            while let Some(h) = queue.pop_front() {
                for &k in &adj[h] {
                    if !std::mem::replace(&mut seen[k], true) {
                        queue.push_back(k);
                    }
                }
            }
            assert!(seen.iter().all(|&s| s), "{n} homes: not connected");
        }
        assert_eq!(dial_targets(0), Vec::<usize>::new());
        assert_eq!(dial_targets(5), vec![4, 3, 1]);
    }

    #[test]
    fn check_names_every_broken_invariant() {
        let ok = Summary {
            trades: 5,
            settled_trades: 3,
            ..Summary::default()
        };
        let expect = Expect {
            min_trades: 3,
            min_settled: 2,
        };
        assert!(check(&ok, &expect).is_empty());
        let mut bad = ok.clone();
        bad.mismatched_trades = 1;
        bad.oversold_offers = 1;
        bad.unsettled_trades = 2;
        bad.hostile.accepted = 1;
        bad.crashed_homes = vec!["home-01".into()];
        bad.trades = 1;
        bad.settled_trades = 0;
        let why = check(&bad, &expect);
        assert_eq!(why.len(), 7, "{why:?}");
        assert!(why[0].contains("differ"));
    }
}
