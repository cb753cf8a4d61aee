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
    /// Homes that stopped running during the run.
    pub crashed_homes: Vec<String>,
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

fn charter_for(founder: wattmesh_protocol::NodeId) -> Charter {
    let mut c = Charter::founding(
        NeighbourhoodId(*b"testnet-ames-ia!"),
        "Testnet Lane, Ames",
        founder,
        0,
    );
    c.slot_minutes = 5;
    c.gate_closure_secs = 30;
    // Generous grace: real-time lags are multiplied by the clock's speed.
    c.settlement_grace_secs = 180;
    c
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
    if i % 2 == 1 {
        c.meter.sim.pv = None;
    } else if let Some(pv) = &mut c.meter.sim.pv {
        pv.kwp = 3.0 + (i as f64 * 2.7) % 6.0;
    }
    if i % 4 == 3 {
        c.meter.sim.battery = Some(Default::default());
    }
    c.trader.enabled = true;
    c.trader.min_sell_price = 5_000 + (i as u64 * 1_300) % 4_000;
    c.trader.max_buy_price = 8_500 + (i as u64 * 1_700) % 4_500;
    c.trader.ramp_minutes = 4;
    c.trader.lead_slots = 2;
    c
}

async fn status(dir: &Path) -> Option<serde_json::Value> {
    let v = control::call(dir, &ControlRequest::Status).await.ok()?;
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
    for i in 0..o.homes {
        let name = format!("home-{i:02}");
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
                    charter_for(key.node_id()),
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
            let k = wattmesh_node::identity::load(
                &o.out.join(format!("home-{j:02}")).join("node.key"),
            )?;
            let pid = wattmesh_node::net::keypair(&k).public().to_peer_id();
            Ok(format!(
                "/ip4/127.0.0.1/tcp/{}/p2p/{pid}",
                o.base_port as usize + j
            ))
        };
        for j in 0..i {
            cfg.network.bootstrap.push(peer(j)?);
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
        let log = std::fs::File::create(h.dir.join("node.log"))?;
        let child = Command::new(&o.bin)
            .arg("--data-dir")
            .arg(&h.dir)
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
            .with_context(|| format!("starting {}", o.bin.display()))?;
        h.child = Some(child);
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
        "{} homes running; each home's data, config and log are in {}",
        homes.len(),
        o.out.display()
    );
    println!("Each home's web UI (sign in with its one-time setup code the first time):");
    for (i, h) in homes.iter().enumerate() {
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
    tokio::pin!(stop);
    let mut crashed = Vec::new();
    loop {
        tokio::select! {
            _ = &mut stop => { println!("stopping"); break; }
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let mut line = String::new();
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
        if let Some(s) = status(&homes[0].dir).await {
            line = format!(
                "simulated {}  peers {}  offers {}",
                s["now_ms"].as_u64().map(fmt_time).unwrap_or_default(),
                s["peers"].as_array().map(Vec::len).unwrap_or(0),
                s["offers"]
            );
        }
        let trades = collect(&homes).await;
        println!("{line}  trades {}", trades.len());
        if started.elapsed() >= real_duration {
            break;
        }
    }
    let trades = collect(&homes).await;
    let mut summary = Summary {
        homes: homes.len(),
        simulated_seconds: started.elapsed().as_secs() * u64::from(o.speed),
        wall_seconds: started.elapsed().as_secs(),
        crashed_homes: crashed,
        ..Summary::default()
    };
    for views in trades.values() {
        summary.trades += 1;
        summary.energy_traded_wh += views[0]["energy_wh"].as_u64().unwrap_or(0);
        let settled = views
            .iter()
            .filter(|v| v["settlement"] == "settled")
            .count();
        if views.len() == 2 && settled == 2 {
            summary.settled_trades += 1;
            summary.energy_delivered_wh += views[0]["delivered_wh"].as_u64().unwrap_or(0);
        }
        if views
            .iter()
            .any(|v| v["settlement"] == "disputed" || v["settlement"] == "unilateral")
        {
            summary.disputed_trades += 1;
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
    for h in &homes {
        let _ = control::call(&h.dir, &ControlRequest::Stop).await;
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
    std::fs::write(
        o.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(summary)
}

/// Every trade as each of its parties sees it, by (taker, nonce).
async fn collect(homes: &[Home]) -> BTreeMap<(String, u64), Vec<serde_json::Value>> {
    let mut out: BTreeMap<(String, u64), Vec<serde_json::Value>> = BTreeMap::new();
    for h in homes {
        if let Ok(v) = control::call(&h.dir, &ControlRequest::Trades).await {
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
