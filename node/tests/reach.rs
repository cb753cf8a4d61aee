//! Reach: homes behind separate NATs trade with each other through a reachable member's
//! relay, and hole punching upgrades the connection where the NAT allows it.
//!
//! The test builds its own little internet out of network namespaces: one namespace plays the
//! internet and runs the public member (the neighbourhood's founder, which serves as relay);
//! each home has a router namespace doing nftables masquerade, with a home namespace behind
//! it. Homes 1 and 2 sit behind ordinary home-router NATs (the source port is kept, and only
//! replies come in); home 3 sits behind a symmetric NAT (`masquerade fully-random`: a new
//! random port for every connection), where hole punching cannot work. Nodes are real
//! `wattmesh` processes started with `ip netns exec`, set up with the CLI (`init --found`,
//! `invite`, `join`) and driven with `offer` and `take`. Nothing touches this machine's real
//! interfaces: the namespaces have no route out, and UPnP and mDNS are off.
//!
//! It needs root, `ip` and nftables; `tests/reach/setup.sh` installs nftables on first use.
//! Set WATTMESH_SKIP_NETNS=1 to skip it on a machine that cannot build namespaces.
//!
//! A second test, in-process, checks that the network key can change for new connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use wattmesh_node::config::Config;
use wattmesh_node::control::{self, ControlRequest};

const BIN: &str = env!("CARGO_BIN_EXE_wattmesh");
const WAIT: Duration = Duration::from_secs(90);
/// Where the public member listens, on the internet namespace.
const PUBLIC_IP: &str = "25.0.0.1";
const PORT: u16 = 4100;

/// The homes: name and the masquerade rule of their router.
const HOMES: [(&str, &str); 3] = [
    ("h1", "masquerade"),
    ("h2", "masquerade"),
    ("h3", "masquerade fully-random"),
];

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs an nftables ruleset inside a namespace.
fn nft(ns: &str, ruleset: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ruleset.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The namespaces; deleted on drop.
struct Topology {
    tag: String,
    names: Vec<String>,
}

impl Topology {
    fn ns(&self, what: &str) -> String {
        format!("{}{what}", self.tag)
    }

    /// The internet (with the public member's address on its loopback), and per home a
    /// router doing NAT and a home behind it, all homes on 192.168.1.0/24 as real ones are.
    fn build() -> Result<Topology, String> {
        let tag = format!("wr{}", std::process::id() % 100_000);
        let mut t = Topology {
            tag,
            names: Vec::new(),
        };
        let ip = |args: &[&str]| run("ip", args).map(|_| ());
        let sysctl = |ns: &str, kv: &str| run("ip", &["netns", "exec", ns, "sysctl", "-qw", kv]);
        let inet = t.ns("inet");
        ip(&["netns", "add", &inet])?;
        t.names.push(inet.clone());
        ip(&["-n", &inet, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &inet,
            "addr",
            "add",
            &format!("{PUBLIC_IP}/32"),
            "dev",
            "lo",
        ])?;
        sysctl(&inet, "net.ipv4.ip_forward=1")?;
        for (k, (home, masquerade)) in HOMES.iter().enumerate() {
            let k = k + 1;
            let (r, h) = (t.ns(&format!("r{k}")), t.ns(home));
            for n in [&r, &h] {
                ip(&["netns", "add", n])?;
                t.names.push(n.clone());
                ip(&["-n", n, "link", "set", "lo", "up"])?;
            }
            let uplink = format!("r{k}");
            ip(&[
                "link", "add", "wan", "netns", &r, "type", "veth", "peer", "name", &uplink,
                "netns", &inet,
            ])?;
            ip(&[
                "link", "add", "lan", "netns", &r, "type", "veth", "peer", "name", "eth0", "netns",
                &h,
            ])?;
            ip(&[
                "-n",
                &inet,
                "addr",
                "add",
                &format!("25.0.{k}.1/24"),
                "dev",
                &uplink,
            ])?;
            ip(&["-n", &inet, "link", "set", &uplink, "up"])?;
            ip(&[
                "-n",
                &r,
                "addr",
                "add",
                &format!("25.0.{k}.2/24"),
                "dev",
                "wan",
            ])?;
            ip(&["-n", &r, "addr", "add", "192.168.1.1/24", "dev", "lan"])?;
            ip(&["-n", &r, "link", "set", "wan", "up"])?;
            ip(&["-n", &r, "link", "set", "lan", "up"])?;
            ip(&[
                "-n",
                &r,
                "route",
                "add",
                "default",
                "via",
                &format!("25.0.{k}.1"),
            ])?;
            ip(&["-n", &h, "addr", "add", "192.168.1.2/24", "dev", "eth0"])?;
            ip(&["-n", &h, "link", "set", "eth0", "up"])?;
            ip(&["-n", &h, "route", "add", "default", "via", "192.168.1.1"])?;
            sysctl(&r, "net.ipv4.ip_forward=1")?;
            // A home router: NAT out of the WAN port; from the WAN only replies get in (to the
            // router itself too, so unsolicited SYNs are dropped, not answered with RST).
            nft(
                &r,
                &format!(
                    "table ip nat {{
                       chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
                         oifname \"wan\" {masquerade}; }}
                     }}
                     table inet filter {{
                       chain input {{ type filter hook input priority filter; policy accept;
                         iifname \"wan\" ct state established,related accept;
                         iifname \"wan\" drop; }}
                       chain forward {{ type filter hook forward priority filter; policy drop;
                         ct state established,related accept;
                         iifname \"lan\" oifname \"wan\" accept; }}
                     }}"
                ),
            )?;
        }
        Ok(t)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Root, `ip netns`, and nftables (installed by `tests/reach/setup.sh` if missing).
fn prerequisites() -> Result<(), String> {
    let uid = run("id", &["-u"])?;
    if uid.trim() != "0" {
        return Err(format!("not root (uid {})", uid.trim()));
    }
    run("ip", &["netns", "list"])?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reach/setup.sh");
    run("bash", &[script.to_str().unwrap()])?;
    Ok(())
}

/// A `wattmesh run` child, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &Path, ns: &str) -> Proc {
    let log = std::fs::File::create(dir.join("node.log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, BIN])
        .arg("--data-dir")
        .arg(dir)
        .arg("run")
        .env("RUST_LOG", "info,libp2p_gossipsub=warn")
        .env_remove("WATTMESH_BOOTSTRAP")
        .env_remove("WATTMESH_LISTEN")
        .env_remove("WATTMESH_MDNS")
        .env_remove("WATTMESH_UPNP")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start wattmesh");
    Proc(child)
}

/// Runs a `wattmesh` CLI command for the node in `dir` (it talks to the node's control
/// socket, a file, so it needs no namespace) and returns its standard output.
fn cli(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["--data-dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    run(BIN, &all).unwrap_or_else(|e| panic!("wattmesh {}: {e}", args.join(" ")))
}

/// Rewrites the config `init`/`join` wrote: listen on the namespace's interfaces (IPv4 and
/// IPv6), no UPnP, no mDNS, no meter, trusted clock; the bootstrap addresses stay.
fn configure(dir: &Path) {
    let path = dir.join("wattmesh.toml");
    let written: Config = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut cfg = test_config(written.network.bootstrap);
    cfg.network.listen = vec![
        format!("/ip4/0.0.0.0/tcp/{PORT}"),
        format!("/ip6/::/tcp/{PORT}"),
    ];
    assert!(!cfg.reach.upnp && !cfg.mdns.enabled);
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
}

async fn status(dir: &Path) -> Option<Value> {
    let v = control::call(dir, &ControlRequest::Status).await.ok()?;
    (v["ok"] == true).then(|| v["status"].clone())
}

/// How `dir`'s node reaches the peer with short id `short`, if connected.
async fn reach_of(dir: &Path, short: &str) -> Option<(String, String)> {
    let s = status(dir).await?;
    s["peers"].as_array()?.iter().find_map(|p| {
        (p["node"] == short).then(|| {
            (
                p["reach"].as_str().unwrap_or("").to_owned(),
                p["address"].as_str().unwrap_or("").to_owned(),
            )
        })
    })
}

fn logs(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| {
            let log = std::fs::read_to_string(d.join("node.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            format!(
                "--- {} ---\n{}",
                d.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homes_behind_separate_nats_trade_through_a_members_relay() {
    let topo = match prerequisites().and_then(|()| Topology::build()) {
        Ok(t) => t,
        Err(e) if std::env::var_os("WATTMESH_SKIP_NETNS").is_some() => {
            eprintln!("SKIPPED (WATTMESH_SKIP_NETNS is set): cannot build the NAT namespaces: {e}");
            return;
        }
        Err(e) => panic!(
            "this test needs root, `ip netns` and nftables to build NATed network namespaces \
             ({e}); set WATTMESH_SKIP_NETNS=1 to skip it on a machine that cannot"
        ),
    };
    let tmp = tempfile::tempdir().unwrap();
    let public = tmp.path().join("public");
    let homes: Vec<PathBuf> = HOMES.iter().map(|(h, _)| tmp.path().join(h)).collect();
    let mut all = vec![public.clone()];
    all.extend(homes.iter().cloned());

    // The public member founds the neighbourhood and invites the homes, with the CLI.
    cli(
        &public,
        &[
            "init",
            "--found",
            "Reach Lane",
            "--listen",
            "/ip4/0.0.0.0/tcp/4100",
        ],
    );
    configure(&public);
    let _public_node = spawn(&public, &topo.ns("inet"));
    let public_peer = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(s) = status(&public).await {
                return s["peer_id"].as_str().unwrap().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the public member did not start\n{}", logs(&all)));
    let bootstrap = format!("/ip4/{PUBLIC_IP}/tcp/{PORT}/p2p/{public_peer}");
    let mut home_nodes = Vec::new();
    for (dir, (name, _)) in homes.iter().zip(HOMES) {
        let code = cli(&public, &["invite", "--bootstrap", &bootstrap]);
        cli(dir, &["join", code.trim()]);
        configure(dir);
        home_nodes.push(spawn(dir, &topo.ns(name)));
    }
    let shorts: Vec<String> = {
        let mut v = Vec::new();
        for dir in &homes {
            let s = eventually(WAIT, || status(dir)).await.expect("home starts");
            v.push(s["short_id"].as_str().unwrap().to_owned());
        }
        v
    };

    // AutoNAT finds the public member reachable, so it serves as relay, and every home
    // reserves a slot on it.
    let ready = eventually(WAIT, || async {
        for dir in &homes {
            let s = status(dir).await?;
            let external = s["reach"]["external"].as_array()?;
            if !external
                .iter()
                .any(|a| a.as_str().is_some_and(|a| a.contains(&public_peer)))
            {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "the homes did not get relay reservations on the public member\n{}",
        logs(&all)
    );
    let ps = status(&public).await.unwrap();
    eprintln!(
        "public member: AutoNAT {}, external {}",
        ps["reach"]["nat"], ps["reach"]["external"]
    );
    assert_eq!(ps["reach"]["nat"], "public", "{ps}");

    // Each home offers; the offers cross the mesh through the public member.
    let mut offers = Vec::new();
    for dir in &homes {
        let v: Value = serde_json::from_str(&cli(
            dir,
            &["offer", "sell", "--wh", "1000", "--price", "9.5"],
        ))
        .unwrap();
        offers.push((
            v["maker"].as_str().unwrap().to_owned(),
            v["nonce"].as_u64().unwrap(),
        ));
    }
    // Every pair trades: the later home takes from the earlier one. The homes are connected
    // only to the public member, so the taker reaches the maker through its relay.
    let pairs = [(0usize, 1usize), (0, 2), (1, 2)];
    for &(maker, taker) in &pairs {
        let (id, nonce) = &offers[maker];
        let arrived = eventually(WAIT, || async {
            let o = control::call(&homes[taker], &ControlRequest::Offers)
                .await
                .ok()?;
            o["offers"]
                .as_array()?
                .iter()
                .any(|x| x["nonce"].as_u64() == Some(*nonce))
                .then_some(())
        })
        .await;
        assert!(arrived.is_some(), "offer did not arrive\n{}", logs(&all));
        let t = std::time::Instant::now();
        let traded = cli(
            &homes[taker],
            &["take", id, &nonce.to_string(), "--wh", "100"],
        );
        eprintln!(
            "{} took 100 Wh from {} in {:?}",
            HOMES[taker].0,
            HOMES[maker].0,
            t.elapsed()
        );
        assert!(traded.contains("\"energy_wh\": 100"), "{traded}");
    }
    // Both sides of every pair hold the trade.
    for &(maker, taker) in &pairs {
        for (me, them) in [(maker, taker), (taker, maker)] {
            let csv = cli(&homes[me], &["trades"]);
            assert!(
                csv.lines()
                    .any(|l| l.contains(&format!(",{},100,9500,agreed,", shorts[them]))),
                "{} lacks its trade with {}:\n{csv}",
                HOMES[me].0,
                HOMES[them].0
            );
        }
    }

    // How each pair ends up reached. Behind the two ordinary NATs, hole punching replaces the
    // relayed connection with a direct one; the symmetric NAT leaves its pairs relayed.
    let mut punched = 0;
    let mut relayed = 0;
    for &(a, b) in &pairs {
        let symmetric = HOMES[a].1.contains("random") || HOMES[b].1.contains("random");
        let want = if symmetric { "relayed" } else { "hole-punched" };
        // Give hole punching (and the closing of the replaced relayed connection) time.
        let seen = eventually(Duration::from_secs(30), || async {
            let (r1, addr) = reach_of(&homes[a], &shorts[b]).await?;
            let (r2, _) = reach_of(&homes[b], &shorts[a]).await?;
            (r1 == want && r2 == want).then_some((r1, addr))
        })
        .await;
        let now = (
            reach_of(&homes[a], &shorts[b]).await,
            reach_of(&homes[b], &shorts[a]).await,
        );
        eprintln!(
            "pair {}-{}: {} as seen from {} / {} from {}",
            HOMES[a].0,
            HOMES[b].0,
            now.0.as_ref().map_or("not connected", |r| r.0.as_str()),
            HOMES[a].0,
            now.1.as_ref().map_or("not connected", |r| r.0.as_str()),
            HOMES[b].0,
        );
        let Some((r, addr)) = seen else {
            panic!(
                "pair {}-{} should be {want}, is {now:?}\n{}",
                HOMES[a].0,
                HOMES[b].0,
                logs(&all)
            );
        };
        if r == "relayed" {
            relayed += 1;
            assert!(
                addr.contains(&public_peer) && addr.contains("p2p-circuit"),
                "relayed through the public member: {addr}"
            );
        } else {
            punched += 1;
        }
    }
    eprintln!(
        "reach: {punched} of {} home pairs direct (hole-punched), {relayed} relayed through the \
         public member",
        pairs.len()
    );
    assert_eq!((punched, relayed), (1, 2));
    // Once the direct connection has lasted a while, the relayed one is closed, freeing the
    // relay.
    let single = eventually(Duration::from_secs(40), || async {
        let s = status(&homes[0]).await?;
        let p = s["peers"]
            .as_array()?
            .iter()
            .find(|p| p["node"] == shorts[1].as_str())?
            .clone();
        (p["connections"] == 1 && p["reach"] == "hole-punched").then_some(())
    })
    .await;
    assert!(
        single.is_some(),
        "the relayed connection outlived the hole-punched one: {}",
        status(&homes[0]).await.unwrap_or_default()
    );
    drop(home_nodes);
}

/// Builds an in-process network for the key test.
async fn net(
    psk: [u8; 32],
    seed: u8,
) -> (
    wattmesh_node::net::NetHandle,
    tokio::sync::mpsc::Receiver<wattmesh_node::net::NetEvent>,
) {
    let mut c = test_config(vec![]);
    c.reach.relay_server = false;
    let settings = wattmesh_node::net::behaviour::BehaviourSettings {
        neighbourhood: wattmesh_protocol::NeighbourhoodId([9; 16]),
        heartbeat: Duration::from_millis(100),
        duplicate_cache: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        max_connections: 16,
        max_connections_per_peer: 2,
        reach: c.reach_settings(),
    };
    let cfg = wattmesh_node::net::NetConfig {
        behaviour: settings,
        psk,
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: vec![],
        idle_timeout: Duration::from_secs(60),
        reservations: wattmesh_node::net::ReservationMode::Never,
        max_reservations: 0,
        external: vec![],
    };
    // These tests gossip nothing; anything that arrives is ignored.
    wattmesh_node::net::spawn(
        &wattmesh_protocol::NodeKey::from_secret(&[seed; 32]),
        cfg,
        Box::new(|_, _, _, _| {
            wattmesh_node::net::SinkVerdict::Now(libp2p::gossipsub::MessageAcceptance::Ignore)
        }),
    )
    .unwrap()
}

async fn addr_of(h: &wattmesh_node::net::NetHandle) -> libp2p::Multiaddr {
    let a = eventually(Duration::from_secs(10), || async {
        h.listening().await.ok()?.into_iter().next()
    })
    .await
    .unwrap();
    a.with_p2p(h.local_peer_id()).unwrap()
}

async fn connected(a: &wattmesh_node::net::NetHandle, b: &wattmesh_node::net::NetHandle) -> bool {
    let b = b.local_peer_id().to_string();
    a.peers()
        .await
        .map(|p| p.iter().any(|p| p.peer_id == b))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_key_changes_for_new_connections_only() {
    let (old, new) = ([1u8; 32], [2u8; 32]);
    let (a, _ea) = net(old, 1).await;
    let (b, _eb) = net(old, 2).await;
    b.dial(addr_of(&a).await).await.unwrap().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            connected(&a, &b).await.then_some(())
        })
        .await
        .is_some(),
        "a and b connect with the shared key"
    );

    // The neighbourhood rotates its key; a switches.
    a.set_network_key(new);
    // A node with the new key connects; one with the old key no longer can.
    let (c, _ec) = net(new, 3).await;
    let (d, _ed) = net(old, 4).await;
    c.dial(addr_of(&a).await).await.unwrap().unwrap();
    d.dial(addr_of(&a).await).await.unwrap().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            connected(&a, &c).await.then_some(())
        })
        .await
        .is_some(),
        "a node with the new key connects"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !connected(&a, &d).await,
        "a node with the old key cannot connect"
    );
    // The connection made under the old key stays up.
    assert!(connected(&a, &b).await, "existing connections stay");

    // A peer with no known address and no relay cannot be dialled, and says why.
    let stranger = libp2p::PeerId::random();
    let err = a.dial_peer(stranger).await.unwrap().unwrap_err();
    assert!(err.contains("no known address"), "{err}");
    // A connected peer answers at once with how it is reached.
    assert_eq!(
        a.dial_peer(b.local_peer_id()).await.unwrap().unwrap(),
        wattmesh_node::net::Reach::Direct
    );
}
