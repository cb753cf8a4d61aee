//! `wattmesh-testnet`: simulated neighbourhoods on one machine.

use clap::{Parser, Subcommand};

/// Simulated wattmesh neighbourhoods.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Walkthrough { homes, seed } => {
            let s = wattmesh_testnet::walkthrough::run(homes, seed)?;
            print!("{}", s.report);
            anyhow::ensure!(s.oversold == 0 && s.ledger_sum == 0, "invariant broken");
        }
    }
    Ok(())
}
