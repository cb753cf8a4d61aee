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
        /// Number of homes.
        #[arg(long, default_value_t = 5)]
        homes: usize,
        /// Simulated seconds per real second.
        #[arg(long, default_value_t = 20)]
        speed: u32,
        /// Simulated minutes to run.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Directory for the homes' data, logs and the summary.
        #[arg(long, default_value = "out/testnet")]
        out: PathBuf,
        /// TCP port of the first home; home i uses this plus i, and its web UI this plus 1000 plus i
        /// (keep them below the kernel's ephemeral range, 32768 and up on Linux).
        #[arg(long, default_value_t = 24100)]
        base_port: u16,
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
            homes,
            speed,
            duration,
            out,
            base_port,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let opts = wattmesh_testnet::run::Options {
                    homes,
                    speed,
                    duration_min: duration,
                    out,
                    base_port,
                    bin: wattmesh_bin(),
                    // 2026-06-21 16:00 UTC: a summer late morning in Ames (11:00 local).
                    start_ms: 1_782_057_600_000,
                };
                let stop = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                let s = wattmesh_testnet::run::run(&opts, stop).await?;
                println!("{}", serde_json::to_string_pretty(&s)?);
                anyhow::ensure!(
                    s.mismatched_trades == 0,
                    "some trades differ between their two parties"
                );
                Ok(())
            })
        }
        Command::Walkthrough { homes, seed } => {
            let s = wattmesh_testnet::walkthrough::run(homes, seed)?;
            print!("{}", s.report);
            anyhow::ensure!(s.oversold == 0 && s.ledger_sum == 0, "invariant broken");
            Ok(())
        }
    }
}
