//! `wattmesh-testnet run`: a simulated neighbourhood of real `wattmesh` processes on this
//! machine, on loopback, each home with its own data directory, key, port, simulated meter and
//! automatic trader, all on one accelerated clock. No mDNS: homes find each other through
//! bootstrap addresses.

use anyhow::{Context, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wattmesh_node::config::{ClockCheck, Config};
use wattmesh_node::control::{self, ControlRequest};
use wattmesh_node::meter::sim::calendar::Date;
use wattmesh_node::metering::SourceKind;
use wattmesh_node::neighbourhood::Neighbourhood;
use wattmesh_node::store::Store;
use wattmesh_protocol::roster::Profile;
use wattmesh_protocol::{Charter, NeighbourhoodId, NodeKey};

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
    /// Simulated start time, UTC ms.
    pub start_ms: u64,
    /// The scenario: charter, home mix, faults, hostile home, expectations.
    pub scenario: crate::scenario::Scenario,
}

/// What the run produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Homes.
    pub homes: usize,
    /// Simulated seconds run.
    pub simulated_seconds: u64,
    /// Real seconds taken.
    pub wall_seconds: u64,
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
    /// Trades whose two copies differ (state or figures).
    pub mismatched_trades: usize,
    /// Homes that stopped running during the run (other than by an injected fault).
    pub crashed_homes: Vec<String>,
    /// The scenario's name.
    pub scenario: String,
    /// Delivery slots the run covered.
    pub slots: u64,
    /// Trades past their settlement deadline that neither party settled nor disputed.
    pub unsettled_trades: usize,
    /// Key figures.
    pub kpis: Kpis,
    /// Each healthy home's peak memory and CPU time.
    pub nodes: Vec<NodeUsage>,
    /// Every fault injected.
    pub faults: Vec<FaultRecord>,
    /// The hostile home's messages.
    pub hostile: HostileRecord,
    /// Why `--check` fails; empty when every invariant holds.
    pub check_failures: Vec<String>,
}

/// Key figures of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Kpis {
    /// Gains from trade against the grid, in milli-minor units: for each trade, what the seller
    /// got above the feed-in tariff plus what the buyer paid below the retail tariff.
    pub savings_vs_grid: i64,
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
}

/// One injected fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// `kill` or `freeze`.
    pub kind: crate::scenario::FaultKind,
    /// The home.
    pub home: String,
    /// When, wall seconds after the start.
    pub at_wall_s: f64,
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

fn charter_for(founder: wattmesh_protocol::NodeId, sc: &crate::scenario::Scenario) -> Charter {
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

fn config_for(i: usize, o: &Options, origin_ms: u64) -> Config {
    let mut c = Config::default();
    c.network.listen = vec![format!("/ip4/127.0.0.1/tcp/{}", o.base_port as usize + i)];
    c.network.heartbeat_ms = 300;
    c.mdns.enabled = false;
    c.web.listen = format!("127.0.0.1:{}", web_port(o, i));
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
    c.trader.enabled = true;
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
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let origin_ms = wattmesh_node::clock::Clock::new(&Default::default()).now_ms();
    let mut homes = Vec::new();
    let mut hood: Option<Neighbourhood> = None;
    let mut founder: Option<NodeKey> = None;
    let hostile = o.scenario.hostile.enabled;
    let total = o.homes + usize::from(hostile);
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
        let mut cfg = config_for(i, o, origin_ms);
        // Each home dials every home before it, so every pair is connected: a trade needs a
        // direct connection to the maker, and addresses are not yet shared through the
        // roster (issue 4).
        let peer = |j: usize| -> anyhow::Result<String> {
            let k = wattmesh_node::identity::load(&homes_dir(o, j).join("node.key"))?;
            let pid = wattmesh_node::net::keypair(&k).public().to_peer_id();
            Ok(format!(
                "/ip4/127.0.0.1/tcp/{}/p2p/{pid}",
                o.base_port as usize + j
            ))
        };
        for j in 0..i {
            cfg.network.bootstrap.push(peer(j)?);
        }
        if i >= o.homes {
            // The hostile home: a member that may be told to send anything.
            cfg.testing.allow_raw_publish = true;
            cfg.trader.enabled = false;
            // So that it can publish a replay at all (its own gossip would drop a duplicate).
            cfg.network.duplicate_cache_secs = 1;
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
    for h in &mut homes {
        h.child = Some(spawn_home(o, &h.dir, false)?);
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
    let mut pending: Vec<crate::scenario::Fault> = o.scenario.faults.clone();
    // Faults in progress: home index, kind, and when to end them.
    let mut active: Vec<(usize, crate::scenario::FaultKind, Instant)> = Vec::new();
    let mut fault_log = Vec::new();
    tokio::pin!(stop);
    let mut crashed = Vec::new();
    let mut last_print = Instant::now();
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
            let h = &mut homes[f.home];
            let Some(child) = &mut h.child else { continue };
            let pid = child.id();
            match f.kind {
                crate::scenario::FaultKind::Kill => {
                    let _ = child.kill();
                    let _ = child.wait();
                    h.child = None;
                }
                crate::scenario::FaultKind::Freeze => signal(pid, libc::SIGSTOP),
            }
            println!("fault: {:?} {} for {} s", f.kind, h.name, f.for_s);
            fault_log.push(FaultRecord {
                kind: f.kind,
                home: h.name.clone(),
                at_wall_s: started.elapsed().as_secs_f64(),
                for_s: f.for_s,
            });
            active.push((
                f.home,
                f.kind,
                Instant::now() + Duration::from_secs(f.for_s),
            ));
        }
        // End faults whose time is up.
        let mut k = 0;
        while k < active.len() {
            if active[k].2 > Instant::now() {
                k += 1;
                continue;
            }
            let (i, kind, _) = active.remove(k);
            match kind {
                crate::scenario::FaultKind::Kill => {
                    homes[i].child = Some(spawn_home(o, &homes[i].dir, true)?);
                }
                crate::scenario::FaultKind::Freeze => {
                    if let Some(c) = &homes[i].child {
                        signal(c.id(), libc::SIGCONT);
                    }
                }
            }
            println!("fault over: {}", homes[i].name);
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
            let trades = collect(&homes[..o.homes]).await;
            println!("{line}  trades {}", trades.len());
        }
        if started.elapsed() >= real_duration {
            break;
        }
    }
    // End any fault still in progress, so every home can be asked and stopped.
    for (i, kind, _) in active.drain(..) {
        match kind {
            crate::scenario::FaultKind::Kill => {
                homes[i].child = Some(spawn_home(o, &homes[i].dir, true)?);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            crate::scenario::FaultKind::Freeze => {
                if let Some(c) = &homes[i].child {
                    signal(c.id(), libc::SIGCONT);
                }
            }
        }
    }
    let healthy = &homes[..o.homes];
    let trades = collect(healthy).await;
    let now_ms = match status(&homes[0].dir).await {
        Some(s) => s["now_ms"].as_u64().unwrap_or(0),
        None => 0,
    };
    let c = charter_for(wattmesh_protocol::NodeId([0; 32]), &o.scenario);
    let slot_ms = c.slot_ms();
    let grace_ms = u64::from(c.settlement_grace_secs) * 1000;
    let mut summary = Summary {
        homes: o.homes,
        scenario: o.scenario.name.clone(),
        simulated_seconds: started.elapsed().as_secs() * u64::from(o.speed),
        wall_seconds: started.elapsed().as_secs(),
        slots: started.elapsed().as_millis() as u64 * u64::from(o.speed) / slot_ms,
        crashed_homes: crashed,
        faults: fault_log,
        ..Summary::default()
    };
    for views in trades.values() {
        summary.trades += 1;
        let energy = views[0]["energy_wh"].as_u64().unwrap_or(0);
        summary.energy_traded_wh += energy;
        let gain =
            i128::from(energy) * i128::from(c.retail_price.saturating_sub(c.feed_in_price)) / 1000;
        summary.kpis.savings_vs_grid += i64::try_from(gain).unwrap_or(0);
        let settled = views
            .iter()
            .filter(|v| v["settlement"] == "settled")
            .count();
        if views.len() == 2 && settled == 2 {
            summary.settled_trades += 1;
            summary.energy_delivered_wh += views[0]["delivered_wh"].as_u64().unwrap_or(0);
        }
        let disputed = views
            .iter()
            .any(|v| v["settlement"] == "disputed" || v["settlement"] == "unilateral");
        if disputed {
            summary.disputed_trades += 1;
        }
        let slot = views[0]["slot_ms"].as_u64().unwrap_or(0);
        if slot + slot_ms + 2 * grace_ms < now_ms && settled < 2 && !disputed {
            summary.unsettled_trades += 1;
        }
        let same = views.len() == 2
            && views[0]["energy_wh"] == views[1]["energy_wh"]
            && views[0]["price"] == views[1]["price"]
            && views[0]["slot_ms"] == views[1]["slot_ms"]
            && views[0]["state"] == views[1]["state"];
        if !same && views.iter().all(|v| v["state"] == "agreed") {
            summary.mismatched_trades += 1;
        }
    }
    if let Some(a) = &attack {
        let dirs: Vec<PathBuf> = healthy.iter().map(|h| h.dir.clone()).collect();
        summary.hostile = a.outcome(&dirs).await;
    }
    for h in healthy {
        if let Some(c) = &h.child {
            summary.nodes.push(usage(&h.name, c.id()));
        }
        if let Some(s) = status(&h.dir).await {
            summary.hostile.rejected_by_homes +=
                s["counters"]["gossip_rejected"].as_u64().unwrap_or(0);
        }
    }
    summary.check_failures = check(&summary, &o.scenario.expect);
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
    let json = serde_json::to_string_pretty(&summary)?;
    std::fs::write(o.out.join("summary.json"), &json)?;
    std::fs::write(o.out.join("report.json"), &json)?;
    Ok(summary)
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
fn usage(home: &str, pid: u32) -> NodeUsage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb_max = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
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
    }
}

/// Starts (or restarts) a home's `wattmesh run`, appending to its log.
fn spawn_home(o: &Options, dir: &Path, append: bool) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(dir.join("node.log"))?;
    Command::new(&o.bin)
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
        .with_context(|| format!("starting {}", o.bin.display()))
}

/// Every trade as each of its parties sees it, by (taker, nonce).
async fn collect(homes: &[Home]) -> BTreeMap<(String, u64), Vec<serde_json::Value>> {
    let mut out: BTreeMap<(String, u64), Vec<serde_json::Value>> = BTreeMap::new();
    for h in homes {
        if let Ok(v) = call(&h.dir, &ControlRequest::Trades).await {
            for t in v["trades"].as_array().into_iter().flatten() {
                let key = (
                    t["taker"].as_str().unwrap_or("").to_owned(),
                    t["nonce"].as_u64().unwrap_or(0),
                );
                out.entry(key).or_default().push(t.clone());
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
        bad.unsettled_trades = 2;
        bad.hostile.accepted = 1;
        bad.crashed_homes = vec!["home-01".into()];
        bad.trades = 1;
        bad.settled_trades = 0;
        let why = check(&bad, &expect);
        assert_eq!(why.len(), 6, "{why:?}");
        assert!(why[0].contains("differ"));
    }
}
