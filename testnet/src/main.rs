//! `wattmesh-testnet`: simulated neighbourhoods on one machine.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Simulated wattmesh neighbourhoods.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a neighbourhood of real `wattmesh` processes on loopback, each home with a simulated
    /// meter and the automatic trader on, on one accelerated clock. Ctrl-C stops it cleanly.
    Run {
        /// A scenario file (configs/testnet/*.toml): charter, home mix, faults, hostile home,
        /// what --check expects. The options below override it.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Number of homes (default 5).
        #[arg(long)]
        homes: Option<usize>,
        /// Simulated seconds per real second (default 20).
        #[arg(long)]
        speed: Option<u32>,
        /// Simulated minutes to run (default 60).
        #[arg(long)]
        duration: Option<u64>,
        /// Whom each home dials at start: `sparse` (the homes 1, 2, 4, 8, ... places before
        /// it; the default) or `all` (every pair connected).
        #[arg(long, value_enum)]
        dial: Option<wattmesh_testnet::scenario::Dial>,
        /// The scenario's workload at another rate: every home posts an offer every this many
        /// real seconds and cancels it half that later (a scenario without a `[workload]`
        /// refuses it).
        #[arg(long, value_name = "SECONDS")]
        offer_every: Option<f64>,
        /// Exit non-zero, saying why, when an invariant fails (mismatched or unsettled trades,
        /// a hostile message accepted, a healthy home crashed, fewer trades or settlements
        /// than the scenario expects).
        #[arg(long)]
        check: bool,
        /// Inject a fault besides the scenario's, written as a TOML inline table; repeat for
        /// more. Kinds: kill, freeze, partition (homes = [..] on one side), loss (percent),
        /// skew (skew_s). Example: --fault '{ kind = "kill", home = 2, at_min = 12, for_s = 5 }'
        #[arg(long = "fault", value_name = "TABLE")]
        faults: Vec<String>,
        /// Directory for the homes' data, logs and the summary.
        #[arg(long, default_value = "out/testnet")]
        out: PathBuf,
        /// Run home N with another command instead of the wattmesh binary, written N=COMMAND
        /// (split at spaces; the node's arguments follow it), e.g. an aarch64 build under
        /// emulation: --home-cmd '0=qemu-aarch64 -L /usr/aarch64-linux-gnu path/to/wattmesh'.
        /// Repeat for more homes.
        #[arg(long = "home-cmd", value_name = "N=COMMAND")]
        home_cmds: Vec<String>,
        /// TCP port of the first home; home i uses this plus i, and its web UI this plus 1000 plus i
        /// (keep them below the kernel's ephemeral range, 32768 and up on Linux).
        #[arg(long, default_value_t = 24100)]
        base_port: u16,
    },
    /// The bare gossipsub baseline for the propagation benchmark: PEERS processes on loopback,
    /// dialled like the testnet's homes, on a node's transport stack (TCP, pnet, Noise,
    /// yamux) and gossipsub settings, publishing PAYLOAD-byte messages with no application
    /// validation. Writes DIR/baseline.json with the propagation percentiles.
    Baseline {
        /// Peers.
        #[arg(long, default_value_t = 30)]
        peers: usize,
        /// One message per peer every this many milliseconds (a workload of one offer every
        /// 10 s, cancelled 5 s later, publishes every 5000 ms).
        #[arg(long, default_value_t = 5000)]
        every_ms: u64,
        /// Payload bytes (an offer's envelope is 192).
        #[arg(long, default_value_t = 192)]
        payload: usize,
        /// Real seconds of publishing.
        #[arg(long, default_value_t = 120)]
        duration: u64,
        /// Sign every payload (Ed25519, the protocol's rule) and check every signature before
        /// forwarding, as a node must: the baseline plus the one check no node can skip.
        #[arg(long)]
        signed: bool,
        /// Gossip through the node's whole libp2p stack (its transport, every behaviour and a
        /// home's settings) instead of bare gossipsub: the node without its application.
        #[arg(long)]
        node_stack: bool,
        /// TCP port of the first peer.
        #[arg(long, default_value_t = 25100)]
        base_port: u16,
        /// Output directory.
        #[arg(long, default_value = "out/baseline")]
        out: PathBuf,
    },
    /// One baseline peer (started by `baseline`).
    #[command(hide = true)]
    GossipPeer {
        /// Its settings, JSON.
        args: String,
    },
    /// Play one delivery slot of a neighbourhood through the real protocol code, in one
    /// process: offers, handshakes, attestations, settlement and statements.
    Walkthrough {
        /// Number of homes.
        #[arg(long, default_value_t = 8)]
        homes: usize,
        /// Seed; the same seed gives the same run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn wattmesh_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WATTMESH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.with_file_name("wattmesh")
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run {
            scenario,
            homes,
            speed,
            duration,
            dial,
            offer_every,
            check,
            faults,
            out,
            base_port,
            home_cmds,
        } => {
            let mut sc = match &scenario {
                Some(p) => wattmesh_testnet::scenario::Scenario::load(p)?,
                None => wattmesh_testnet::scenario::Scenario::default(),
            };
            if let Some(h) = homes {
                sc.homes = h;
                // Faults and sabotage of homes beyond the count are dropped.
                sc.faults.retain(|f| f.check(h).is_ok());
                sc.sabotage.retain(|b| b.home < h);
            }
            if let Some(v) = speed {
                sc.speed = v;
            }
            if let Some(v) = duration {
                sc.duration_min = v;
            }
            if let Some(v) = dial {
                sc.dial = v;
            }
            if let Some(every) = offer_every {
                let w = sc.workload.as_mut().ok_or_else(|| {
                    anyhow::anyhow!("--offer-every: the scenario has no [workload]")
                })?;
                w.offer_every_s = every;
                w.cancel_after_s = every / 2.0;
            }
            for f in &faults {
                sc.faults.push(wattmesh_testnet::scenario::Fault::parse(f)?);
            }
            sc.validate()?;
            let mut cmds = std::collections::BTreeMap::new();
            for spec in &home_cmds {
                let (n, c) = spec
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--home-cmd {spec:?}: write N=COMMAND"))?;
                let n: usize = n
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--home-cmd {spec:?}: N is a home number"))?;
                cmds.insert(n, c.split_whitespace().map(str::to_owned).collect());
            }
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let opts = wattmesh_testnet::run::Options {
                    homes: sc.homes,
                    speed: sc.speed,
                    duration_min: sc.duration_min,
                    out,
                    base_port,
                    bin: wattmesh_bin(),
                    home_cmds: cmds,
                    start_ms: sc.start_ms,
                    scenario: sc,
                };
                let stop = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                let s = wattmesh_testnet::run::run(&opts, stop).await?;
                println!("{}", serde_json::to_string_pretty(&s)?);
                println!("report: {}", opts.out.join("report.json").display());
                if check {
                    anyhow::ensure!(
                        s.check_failures.is_empty(),
                        "--check failed:\n  {}",
                        s.check_failures.join("\n  ")
                    );
                    println!("--check: every invariant holds");
                }
                Ok(())
            })
        }
        Command::Baseline {
            peers,
            every_ms,
            payload,
            duration,
            signed,
            node_stack,
            base_port,
            out,
        } => {
            anyhow::ensure!(peers >= 2, "--peers: at least 2");
            anyhow::ensure!(every_ms >= 10, "--every-ms: at least 10");
            anyhow::ensure!((8..=4096).contains(&payload), "--payload: 8 to 4096 bytes");
            anyhow::ensure!(
                !signed || payload >= 104,
                "--payload: at least 104 bytes with --signed (8 + a 96-byte signature tail)"
            );
            let o = wattmesh_testnet::baseline::Options {
                peers,
                every_ms,
                payload_bytes: payload,
                duration_s: duration,
                signed,
                node_stack,
                base_port,
                out,
            };
            let rt = tokio::runtime::Runtime::new()?;
            let r = rt.block_on(wattmesh_testnet::baseline::run(&o))?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            println!("report: {}", o.out.join("baseline.json").display());
            Ok(())
        }
        Command::GossipPeer { args } => {
            let a: wattmesh_testnet::baseline::PeerArgs = serde_json::from_str(&args)?;
            // The same runtime as a node's.
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(wattmesh_testnet::baseline::peer(a))
        }
        Command::Walkthrough { homes, seed } => {
            let s = wattmesh_testnet::walkthrough::run(homes, seed)?;
            print!("{}", s.report);
            anyhow::ensure!(s.oversold == 0 && s.ledger_sum == 0, "invariant broken");
            Ok(())
        }
    }
}
