//! Real `wattmesh` processes: a node killed with SIGKILL in the middle of writing restarts with
//! everything it acknowledged and rejoins; two nodes in separate network namespaces find each
//! other with mDNS (and nothing multicasts on this machine's real interfaces).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use wattmesh_node::config::Config;
use wattmesh_node::control::{self, ControlRequest};
use wattmesh_node::node::{PostOffer, SideArg};

const BIN: &str = env!("CARGO_BIN_EXE_wattmesh");
const WAIT: Duration = Duration::from_secs(30);

fn write_config(dir: &Path, cfg: &Config) {
    std::fs::write(dir.join("wattmesh.toml"), toml::to_string(cfg).unwrap()).unwrap();
}

/// A `wattmesh run` child, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &Path, netns: Option<&str>) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("node.log"))
        .unwrap();
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, BIN]);
            c
        }
        None => Command::new(BIN),
    };
    cmd.arg("--data-dir")
        .arg(dir)
        .arg("run")
        .env("RUST_LOG", "info")
        .env_remove("WATTMESH_BOOTSTRAP")
        .env_remove("WATTMESH_MDNS")
        .env_remove("WATTMESH_UPNP")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    Proc(cmd.spawn().expect("start wattmesh"))
}

async fn status(dir: &Path) -> Option<serde_json::Value> {
    let v = control::call(dir, &ControlRequest::Status).await.ok()?;
    (v["ok"] == true).then(|| v["status"].clone())
}

async fn wait_peers(dir: &Path, n: usize) -> bool {
    eventually(WAIT, || async {
        let s = status(dir).await?;
        (s["peers"].as_array()?.len() >= n).then_some(())
    })
    .await
    .is_some()
}

/// The `i`th offer of a stream that respects the limit of 8 open offers per slot by moving to
/// the next slot every 8 offers.
fn offer(i: u64, now_ms: u64) -> ControlRequest {
    let slot = 900_000;
    let base = (now_ms / slot + 2) * slot;
    ControlRequest::Post(PostOffer {
        side: SideArg::Sell,
        quantity_wh: 100 + i,
        price: 9_000,
        slot_ms: Some(base + (i / 8) * slot),
        min_fill_wh: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_write_restarts_with_its_data_and_rejoins() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let hood = found(&a);
    join(&b, &hood);
    write_config(&a, &test_config(vec![]));
    let _pa = spawn(&a, None);
    let addr = eventually(WAIT, || async {
        status(&a).await?["listening"][0]
            .as_str()
            .map(str::to_owned)
    })
    .await
    .expect("a listens");
    write_config(&b, &test_config(vec![addr]));
    let mut pb = spawn(&b, None);
    assert!(wait_peers(&b, 1).await, "b connects to a");

    // Post offers as fast as possible, and SIGKILL b while it is writing.
    let writer = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let now = wattmesh_node::clock::Clock::new(&Default::default()).now_ms();
            for i in 0..1_500u64 {
                match control::call(&b, &offer(i, now)).await {
                    Ok(v) if v["ok"] == true => acked.push(v["offer"]["nonce"].as_u64().unwrap()),
                    Ok(v) if v["ok"] == false => panic!("the node refused an offer: {v}"),
                    _ => break,
                }
            }
            acked
        })
    };
    // Wait for the first acknowledgements, then kill while the stream is still running.
    eventually(WAIT, || async {
        let s = status(&b).await?;
        (s["offers"].as_u64()? >= 50).then_some(())
    })
    .await
    .expect("b is writing");
    let pid = pb.0.id() as i32;
    // SAFETY-free: kill(2) through the command line, as an operator would.
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let _ = pb.0.wait();
    let acked = writer.await.unwrap();
    eprintln!("{} offers acknowledged before SIGKILL", acked.len());
    assert!(
        acked.len() >= 50 && acked.len() < 1_500,
        "the kill must land mid-stream; {} of 1500 were acknowledged",
        acked.len()
    );

    // Restart: every acknowledged offer is still there, and b rejoins a.
    let _pb2 = spawn(&b, None);
    assert!(wait_peers(&b, 1).await, "b rejoins after the restart");
    let offers = control::call(&b, &ControlRequest::Offers).await.unwrap();
    let have: std::collections::HashSet<u64> = offers["offers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["nonce"].as_u64())
        .collect();
    let missing: Vec<_> = acked.iter().filter(|n| !have.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged offers lost: {missing:?}",
        missing.len()
    );
    // And a, which saw them by gossip or sync, agrees.
    let got = eventually(WAIT, || async {
        let o = control::call(&a, &ControlRequest::Offers).await.ok()?;
        (o["offers"].as_array()?.len() >= acked.len()).then_some(())
    })
    .await;
    assert!(got.is_some(), "a holds b's offers");
}

/// Two network namespaces joined by a veth pair; deleted on drop.
struct Netns {
    names: [String; 2],
}

impl Netns {
    fn create() -> Result<Netns, String> {
        let tag = std::process::id() % 100_000;
        let names = [format!("wm{tag}a"), format!("wm{tag}b")];
        let (va, vb) = (format!("wv{tag}a"), format!("wv{tag}b"));
        let run = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        let ns = Netns {
            names: names.clone(),
        };
        run(&["netns", "add", &names[0]])?;
        run(&["netns", "add", &names[1]])?;
        run(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        for (n, v, ip) in [
            (&names[0], &va, "10.213.0.1/24"),
            (&names[1], &vb, "10.213.0.2/24"),
        ] {
            run(&["link", "set", v, "netns", n])?;
            run(&["-n", n, "addr", "add", ip, "dev", v])?;
            run(&["-n", n, "link", "set", v, "up", "multicast", "on"])?;
            run(&["-n", n, "link", "set", "lo", "up"])?;
            run(&["-n", n, "route", "add", "224.0.0.0/4", "dev", v])?;
        }
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_in_separate_namespaces_find_each_other_with_mdns() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) if std::env::var_os("WATTMESH_SKIP_NETNS").is_some() => {
            eprintln!(
                "SKIPPED (WATTMESH_SKIP_NETNS is set): cannot create network namespaces: {e}"
            );
            return;
        }
        Err(e) => panic!(
            "this test needs root and `ip netns` to build two namespaces joined by veth ({e}); \
             set WATTMESH_SKIP_NETNS=1 to skip it on a machine that cannot"
        ),
    };
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = ["a", "b"].iter().map(|n| tmp.path().join(n)).collect();
    let hood = found(&dirs[0]);
    join(&dirs[1], &hood);
    let tag = std::process::id() % 100_000;
    for (dir, iface) in dirs.iter().zip([format!("wv{tag}a"), format!("wv{tag}b")]) {
        let mut cfg = test_config(vec![]);
        cfg.network.listen = vec!["/ip4/0.0.0.0/tcp/4100".into()];
        cfg.mdns.enabled = true;
        cfg.mdns.interfaces = vec![iface];
        write_config(dir, &cfg);
    }
    let _pa = spawn(&dirs[0], Some(&ns.names[0]));
    let _pb = spawn(&dirs[1], Some(&ns.names[1]));
    // No bootstrap addresses: only mDNS can bring them together.
    let found_each_other = wait_peers(&dirs[0], 1).await && wait_peers(&dirs[1], 1).await;
    if !found_each_other {
        let log = std::fs::read_to_string(dirs[0].join("node.log")).unwrap_or_default();
        panic!("the nodes did not find each other; node a's log:\n{log}");
    }
    let s = status(&dirs[0]).await.unwrap();
    assert!(
        s["peers"][0]["address"]
            .as_str()
            .unwrap()
            .contains("10.213.0.2"),
        "{s}"
    );
}
