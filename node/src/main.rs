//! The `wattmesh` command.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use wattmesh_node::{dirs, identity};

/// wattmesh: trade rooftop-solar surplus with your neighbours, with no company in the middle.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The node's data directory (default: $WATTMESH_DATA_DIR, $XDG_DATA_HOME/wattmesh or
    /// ~/.local/share/wattmesh).
    #[arg(long, global = true, env = "WATTMESH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show or back up the node's identity key (created on first use).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Print the node id (the public key) and its short form. Creates the key if there is none.
    Show,
    /// Write a copy of the secret key to a new file (mode 0600). Keep it offline.
    Backup {
        /// Where to write the backup; must not exist yet.
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let data_dir = dirs::data_dir(cli.data_dir)?;
    let key_path = dirs::key_path(&data_dir);
    match cli.command {
        Command::Keys { action } => {
            let (key, created) = identity::load_or_create(&key_path)?;
            match action {
                KeysAction::Show => {
                    if created {
                        eprintln!("created a new node key at {}", key_path.display());
                    }
                    let id = key.node_id();
                    println!("node id:    {id}");
                    println!("short form: {}", id.short());
                    println!("key file:   {}", key_path.display());
                }
                KeysAction::Backup { out } => {
                    identity::write_new(&out, &identity::render(&key))
                        .with_context(|| format!("backing up the key to {}", out.display()))?;
                    println!(
                        "wrote a backup of node {} to {}",
                        key.node_id().short(),
                        out.display()
                    );
                }
            }
        }
    }
    Ok(())
}
