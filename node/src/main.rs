//! The `wattmesh` command.

/// Prints a line to standard output like `println!`, but a reader that went away
/// (`wattmesh trades | head`) ends the program quietly instead of with a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("error: writing to standard output: {e}");
            std::process::exit(1);
        }
    }};
}

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;
use std::path::{Path, PathBuf};
use wattmesh_node::config::Config;
use wattmesh_node::control::{self, ControlRequest};
use wattmesh_node::neighbourhood::{Invite, Neighbourhood, default_profile};
use wattmesh_node::node::{self, Amendment, InviteArgs, NodeOptions, PostOffer, SideArg};
use wattmesh_node::store::Store;
use wattmesh_node::{clock, dirs, identity};
use wattmesh_protocol::roster::Profile;
use zeroize::Zeroizing;

/// wattmesh: trade rooftop-solar surplus with your neighbours, with no company in the middle.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The node's data directory (default: $WATTMESH_DATA_DIR, $XDG_DATA_HOME/wattmesh or
    /// ~/.local/share/wattmesh).
    #[arg(long, global = true, env = "WATTMESH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The config file (default: <data dir>/wattmesh.toml).
    #[arg(long, global = true, env = "WATTMESH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Set up a node: create its key, config and data directory, and found a new
    /// neighbourhood (--found) or join one with an invite code (--join).
    Init {
        /// Found a new neighbourhood with this name, with this node as its first admin.
        #[arg(long, conflicts_with = "join")]
        found: Option<String>,
        /// Join a neighbourhood with an invite code from a neighbour.
        #[arg(long)]
        join: Option<String>,
        /// Address to listen on, written into the new config (e.g. /ip4/0.0.0.0/tcp/4100).
        #[arg(long)]
        listen: Option<String>,
        /// The name your neighbours see for this home (default: "home" and the short id).
        #[arg(long)]
        name: Option<String>,
        /// Your PV capacity in watts (peak), which neighbours see.
        #[arg(long, default_value_t = 0)]
        pv_w: u32,
    },
    /// Join a neighbourhood with an invite code (same as `init --join CODE`).
    Join {
        /// The invite code (starts with wm2-).
        code: String,
        /// The name your neighbours see for this home.
        #[arg(long)]
        name: Option<String>,
        /// Your PV capacity in watts (peak).
        #[arg(long, default_value_t = 0)]
        pv_w: u32,
    },
    /// Run the node until interrupted (Ctrl-C or SIGTERM stop it gracefully).
    Run,
    /// Whether this machine's clock is synchronised, as the node judges it (the kernel's NTP
    /// status, systemd-timesyncd); exits non-zero when it is not. Needs no running node.
    Clock,
    /// Show the running node's status: identity, neighbourhood, clock, peers, offers.
    Status {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Issue an invite for one neighbour (admins only): a single-use, expiring code with the
    /// network key, the charter and this running node's addresses to dial.
    Invite {
        /// Who it is for (shown in `wattmesh invites`).
        #[arg(long, default_value = "")]
        note: String,
        /// How long it stays valid, in hours.
        #[arg(long, default_value_t = 168)]
        hours: u64,
        /// Addresses to put in the invite instead of the node's listening addresses.
        #[arg(long)]
        bootstrap: Vec<String>,
    },
    /// List the invites this node issued and whether they were used.
    Invites,
    /// Revoke an unused invite (admins only).
    Revoke {
        /// The ticket id from `wattmesh invites` (at least 8 hex digits).
        ticket: String,
    },
    /// List the neighbourhood's members.
    Members,
    /// Remove a member (admins only); everyone else moves to a new network key.
    Remove {
        /// The member's node id (at least 8 hex digits, from `wattmesh members`).
        member: String,
        /// The member lost its key (a stolen Pi) and rejoined with this new node id (full
        /// hex): its membership and history move there instead of ending.
        #[arg(long)]
        moved_to: Option<String>,
    },
    /// Sign a new charter version (admins only); it takes effect at its time on every node.
    Amend {
        /// Slot length in minutes (5 to 60, a divisor of 60).
        #[arg(long)]
        slot_minutes: Option<u8>,
        /// Feed-in tariff, cents per kWh (e.g. 4.0).
        #[arg(long)]
        feed_in: Option<String>,
        /// Retail tariff, cents per kWh (e.g. 13.5).
        #[arg(long)]
        retail: Option<String>,
        /// Make this node (hex id) an admin too.
        #[arg(long)]
        add_admin: Option<String>,
        /// Minutes from now until it takes effect.
        #[arg(long, default_value_t = 60)]
        in_minutes: u64,
    },
    /// Post a sell or buy offer from the running node.
    Offer {
        /// sell or buy.
        side: SideCli,
        /// Energy in Wh.
        #[arg(long)]
        wh: u64,
        /// Limit price in minor currency units (cents) per kWh, e.g. 9.5.
        #[arg(long)]
        price: String,
        /// The slot start (UTC ms); the first slot open for trading if absent.
        #[arg(long)]
        slot: Option<u64>,
    },
    /// Cancel one of the running node's own offers.
    Cancel {
        /// The offer's nonce (see `wattmesh offers`).
        nonce: u64,
    },
    /// List the offers the running node knows.
    Offers,
    /// Take (part of) an offer from the book through the bilateral handshake.
    Take {
        /// The maker's node id (hex, from `wattmesh offers`).
        maker: String,
        /// The offer's nonce.
        nonce: u64,
        /// How much energy, Wh.
        #[arg(long)]
        wh: u64,
    },
    /// List the running node's trades.
    Trades,
    /// Statements, balances per neighbour, delivery records, agreements, payments and
    /// disputes.
    Ledger {
        /// Print the whole ledger as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Propose a standing agreement to a neighbour: up to --wh per slot, on the given days
    /// and hours, for --days days from the next slot, at --price.
    Agree {
        /// The neighbour's node id (hex).
        with: String,
        /// `sell` (you sell to them) or `buy`.
        #[arg(value_enum)]
        side: SideCli,
        /// Energy per slot, Wh.
        #[arg(long)]
        wh: u64,
        /// Price in cents (minor units) per kWh, e.g. 9.5.
        #[arg(long)]
        price: String,
        /// How many days it runs (at most 92).
        #[arg(long, default_value_t = 30)]
        days: u64,
        /// Local hours it covers, `from-to` (e.g. 12-16).
        #[arg(long, default_value = "0-24")]
        hours: String,
        /// Days of the week: `all`, `weekdays`, `weekends`, or a list like `mon,wed,fri`.
        #[arg(long, default_value = "all")]
        weekdays: String,
    },
    /// Declare that you paid a neighbour; it confirms with `wattmesh accept`.
    Pay {
        /// The neighbour's node id (hex).
        to: String,
        /// Amount in cents (minor units), e.g. 125.5.
        amount: String,
        /// How you paid.
        #[arg(long, default_value = "")]
        reference: String,
    },
    /// Countersign an agreement or confirm a payment a neighbour sent you (its id from
    /// `wattmesh ledger`).
    Accept {
        /// The document id.
        id: String,
    },
    /// Decline an agreement or payment a neighbour sent you.
    Decline {
        /// The document id.
        id: String,
    },
    /// Write in a trade's dispute: open it, answer, or resolve it with an amount (resolved
    /// when both sides name the same amount).
    Dispute {
        /// The trade's taker (hex, from `wattmesh trades`).
        taker: String,
        /// The trade's nonce.
        nonce: u64,
        /// `open`, `answer` or `resolve`.
        #[arg(long, value_enum, default_value_t = StageCli::Answer)]
        stage: StageCli,
        /// What you say.
        #[arg(long, default_value = "")]
        text: String,
        /// For `resolve`: what the buyer owes for the trade, cents (minor units).
        #[arg(long)]
        amount: Option<String>,
    },
    /// Print live meter readings (to wire and calibrate a meter). Reads the meter directly
    /// when the node is not running, through the node when it is.
    Meter {
        /// Print one reading and exit.
        #[arg(long)]
        once: bool,
    },
    /// Export what the node holds as CSV, for a range of delivery slots.
    Export {
        /// What to export.
        #[arg(value_enum, default_value_t = ExportWhat::Trades)]
        what: ExportWhat,
        /// First slot start to include, UTC ms (default: all).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Last slot start to include, UTC ms (default: all).
        #[arg(long, default_value_t = u64::MAX)]
        to: u64,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check signed exports (from `wattmesh export signed`) from one or more homes, and
    /// reconcile them: every signature, that both parties' copies of a trade agree, and each
    /// home's totals per slot, to compare with the operator's own meters. Needs no node.
    VerifyExport {
        /// The export files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the per-slot totals as CSV.
        #[arg(long)]
        csv: bool,
    },
    /// Show or back up the node's identity key (created on first use).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExportWhat {
    /// The node's trades.
    Trades,
    /// The offers in the node's book.
    Offers,
    /// The signed export of the node's trades with their evidence (JSON), for the utility
    /// or the subdivision's operator; check it with `wattmesh verify-export`.
    Signed,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StageCli {
    Open,
    Answer,
    Resolve,
}

/// Parses `12-16` into local minutes of the day.
fn parse_hours(s: &str) -> anyhow::Result<(u16, u16)> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("hours {s:?}: give them as from-to, e.g. 12-16"))?;
    let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
    if a >= b || b > 24 {
        bail!("hours {s:?}: from must be before to, within 0-24");
    }
    Ok((a * 60, b * 60))
}

/// Parses a weekday set into a mask (bit 0 Monday).
fn parse_weekdays(s: &str) -> anyhow::Result<u8> {
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    Ok(match s.trim() {
        "all" => 0b111_1111,
        "weekdays" => 0b001_1111,
        "weekends" => 0b110_0000,
        list => {
            let mut m = 0u8;
            for d in list.split(',') {
                let i = NAMES
                    .iter()
                    .position(|n| *n == d.trim().to_ascii_lowercase())
                    .with_context(|| format!("weekday {d:?}: use mon, tue, ... sun"))?;
                m |= 1 << i;
            }
            m
        }
    })
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SideCli {
    Sell,
    Buy,
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Print the node id (the public key) and its short form. Creates the key if there is none.
    Show,
    /// Write a copy of the secret key to a new file (mode 0600). Keep it offline.
    Backup {
        /// Where to write the backup; must not exist yet.
        out: PathBuf,
        /// Encrypt the backup with a passphrase read from standard input (one line, at least
        /// 12 characters; Argon2id and XChaCha20-Poly1305).
        #[arg(long)]
        passphrase: bool,
    },
    /// Restore the key from a backup (plain or sealed with a passphrase, read from standard
    /// input) into a data directory that has no key yet.
    Restore {
        /// The backup file.
        from: PathBuf,
    },
    /// Move this node to a new key (the old one leaked), keeping its membership and history.
    /// Run it with the node stopped; neighbours learn of the move when it reconnects.
    Rotate {
        /// Rotate even though some trades are not settled yet (they stay unsettled).
        #[arg(long)]
        force: bool,
    },
}

/// Parses a price in minor units per kWh with up to three decimals ("9.5" -> 9500), without
/// floating point.
fn parse_price(s: &str) -> anyhow::Result<u64> {
    let (whole, frac) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    if frac.len() > 3 || whole.is_empty() && frac.is_empty() {
        bail!("price {s:?}: give cents per kWh with at most three decimals, e.g. 9.5");
    }
    let w: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().with_context(|| format!("price {s:?}"))?
    };
    let f: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<3}")
            .parse()
            .with_context(|| format!("price {s:?}"))?
    };
    w.checked_mul(1000)
        .and_then(|x| x.checked_add(f))
        .context("price too large")
}

async fn doc_call(data_dir: &Path, req: node::DocRequest, done: &str) -> anyhow::Result<()> {
    let v = ok(control::call(data_dir, &ControlRequest::Doc(req)).await?)?;
    let id = v["message"].as_str().unwrap_or_default();
    if id.is_empty() {
        out!("{done}");
    } else {
        out!("{id}: {done}");
    }
    Ok(())
}

/// Money in milli-minor units as minor units with three decimals.
fn money(v: &Value) -> String {
    let m = v.as_i64().unwrap_or(0);
    let sign = if m < 0 { "-" } else { "" };
    format!(
        "{sign}{}.{:03}",
        m.unsigned_abs() / 1000,
        m.unsigned_abs() % 1000
    )
}

fn print_ledger(l: &Value) {
    let empty = Vec::new();
    let list = |k: &str| l[k].as_array().unwrap_or(&empty).clone();
    out!("Balances (cents; positive: they owe you)");
    for b in list("balances") {
        let peer = b["counterparty"].as_str().unwrap_or_default();
        out!(
            "  {}  sold {:>7} Wh  bought {:>7} Wh  net {:>10}  received {:>10}  paid {:>10}  balance {:>10}  pending {:>10}  open disputes {}",
            peer.get(..8).unwrap_or(peer),
            b["sold_wh"],
            b["bought_wh"],
            money(&b["net"]),
            money(&b["payments_received"]),
            money(&b["payments_made"]),
            money(&b["closing"]),
            money(&b["pending"]),
            b["open_disputes"],
        );
    }
    out!("Delivery as sellers to you");
    for r in list("reputation") {
        let peer = r["peer"].as_str().unwrap_or_default();
        let share = r["delivered_permille"]
            .as_u64()
            .map_or("-".to_string(), |p| format!("{}.{}%", p / 10, p % 10));
        out!(
            "  {}  promised {:>7} Wh  delivered {:>7} Wh  {share}  disputed {}",
            peer.get(..8).unwrap_or(peer),
            r["promised_wh"],
            r["delivered_wh"],
            r["disputed"],
        );
    }
    out!("Agreements and payments");
    for d in list("documents") {
        out!(
            "  {}  {} {} {} with {}",
            d["id"].as_str().unwrap_or_default(),
            d["kind"].as_str().unwrap_or_default(),
            d["state"].as_str().unwrap_or_default(),
            if d["outgoing"].as_bool() == Some(true) {
                "(yours)"
            } else {
                "(theirs)"
            },
            d["counterparty"]
                .as_str()
                .unwrap_or_default()
                .get(..8)
                .unwrap_or_default(),
        );
    }
    out!("Disputes");
    for d in list("disputes") {
        out!(
            "  trade {} {}  {}  {} notes",
            d["taker"]
                .as_str()
                .unwrap_or_default()
                .get(..8)
                .unwrap_or_default(),
            d["nonce"],
            d["status"].as_str().unwrap_or_default(),
            d["notes"].as_array().map_or(0, Vec::len),
        );
    }
}

fn config_path(cli_config: &Option<PathBuf>, data_dir: &Path) -> PathBuf {
    cli_config
        .clone()
        .unwrap_or_else(|| dirs::config_path(data_dir, Path::new(dirs::SYSTEM_CONFIG)))
}

fn now_ms() -> u64 {
    clock::Clock::new(&Default::default()).now_ms()
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(real_main(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain of causes, without a backtrace: these are messages for people.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<()> {
    let data_dir = dirs::data_dir(cli.data_dir.clone())?;
    let cfg_path = config_path(&cli.config, &data_dir);
    match cli.command {
        Command::Init {
            found,
            join,
            listen,
            name,
            pv_w,
        } => init(
            &data_dir,
            &cfg_path,
            found,
            join,
            listen,
            profile(name, pv_w),
        ),
        Command::Join { code, name, pv_w } => init(
            &data_dir,
            &cfg_path,
            None,
            Some(code),
            None,
            profile(name, pv_w),
        ),
        Command::Run => run(&data_dir, &cfg_path).await,
        Command::Clock => clock_check(),
        Command::Status { json } => {
            let v = ok(control::call(&data_dir, &ControlRequest::Status).await?)?;
            let sum = ok(control::call(&data_dir, &ControlRequest::Summary).await?)?;
            if json {
                let mut all = v["status"].clone();
                all["summary"] = sum["summary"].clone();
                out!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                let s: wattmesh_node::summary::Summary =
                    serde_json::from_value(sum["summary"].clone()).context("the node's summary")?;
                out!(
                    "{}",
                    wattmesh_node::summary::text_block(&s).trim_end_matches('\n')
                );
                print_status(&v["status"]);
            }
            Ok(())
        }
        Command::Invite {
            note,
            hours,
            bootstrap,
        } => {
            let args = InviteArgs {
                bootstrap,
                note,
                valid_secs: hours.max(1).saturating_mul(3600),
            };
            let v = ok(control::call(&data_dir, &ControlRequest::Invite(args)).await?)?;
            out!("{}", v["invite"]["code"].as_str().unwrap_or(""));
            eprintln!(
                "Single use, valid until {} (UTC ms); ticket {}. It carries the neighbourhood's \
                 network key: give it only to the neighbour you are inviting, who runs \
                 `wattmesh join CODE`. You need not be online when they do.",
                v["invite"]["expires_ms"],
                &v["invite"]["ticket_id"].as_str().unwrap_or("")
            );
            Ok(())
        }
        Command::Invites => {
            let v = ok(control::call(&data_dir, &ControlRequest::Tickets).await?)?;
            out!("ticket            status   expires_ms     note");
            for t in v["tickets"].as_array().into_iter().flatten() {
                out!(
                    "{}  {:<8} {}  {}",
                    &t["id"].as_str().unwrap_or("")[..16.min(t["id"].as_str().unwrap_or("").len())],
                    t["status"].as_str().unwrap_or(""),
                    t["expires_ms"],
                    t["note"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        Command::Revoke { ticket } => {
            let v = ok(control::call(&data_dir, &ControlRequest::Revoke { ticket }).await?)?;
            out!("{}", v["message"].as_str().unwrap_or(""));
            Ok(())
        }
        Command::Members => {
            let v = ok(control::call(&data_dir, &ControlRequest::Members).await?)?;
            for m in v["members"].as_array().into_iter().flatten() {
                let flag = |k: &str, s: &'static str| if m[k] == true { s } else { "" };
                out!(
                    "{}  {:<24} {:>6} W  {:<8} {}{}{}",
                    m["short_id"].as_str().unwrap_or(""),
                    m["name"].as_str().unwrap_or(""),
                    m["pv_capacity_w"],
                    m["how"].as_str().unwrap_or(""),
                    flag("admin", "admin "),
                    flag("me", "(this node) "),
                    if m["online"] == true {
                        "online"
                    } else {
                        "offline"
                    },
                );
            }
            Ok(())
        }
        Command::Remove { member, moved_to } => {
            let req = ControlRequest::Remove { member, moved_to };
            let v = ok(control::call(&data_dir, &req).await?)?;
            out!("{}", v["message"].as_str().unwrap_or(""));
            Ok(())
        }
        Command::Amend {
            slot_minutes,
            feed_in,
            retail,
            add_admin,
            in_minutes,
        } => {
            let a = Amendment {
                slot_minutes,
                feed_in_price: feed_in.as_deref().map(parse_price).transpose()?,
                retail_price: retail.as_deref().map(parse_price).transpose()?,
                add_admin,
                effective_ms: Some(now_ms() + in_minutes.saturating_mul(60_000)),
                ..Amendment::default()
            };
            let v = ok(control::call(&data_dir, &ControlRequest::Amend(a)).await?)?;
            out!("{}", v["message"].as_str().unwrap_or(""));
            Ok(())
        }
        Command::Offer {
            side,
            wh,
            price,
            slot,
        } => {
            let p = PostOffer {
                side: match side {
                    SideCli::Sell => SideArg::Sell,
                    SideCli::Buy => SideArg::Buy,
                },
                quantity_wh: wh,
                price: parse_price(&price)?,
                slot_ms: slot,
                min_fill_wh: None,
            };
            let v = ok(control::call(&data_dir, &ControlRequest::Post(p)).await?)?;
            out!("{}", serde_json::to_string_pretty(&v["offer"])?);
            Ok(())
        }
        Command::Cancel { nonce } => {
            ok(control::call(&data_dir, &ControlRequest::Cancel { nonce }).await?)?;
            out!("cancelled");
            Ok(())
        }
        Command::Offers => {
            let v = ok(control::call(&data_dir, &ControlRequest::Offers).await?)?;
            print_offers(
                v["offers"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                &mut std::io::stdout(),
            )?;
            Ok(())
        }
        Command::Take { maker, nonce, wh } => {
            let req = ControlRequest::Take {
                maker,
                nonce,
                energy_wh: wh,
            };
            let v = ok(control::call(&data_dir, &req).await?)?;
            out!("{}", serde_json::to_string_pretty(&v["trade"])?);
            Ok(())
        }
        Command::Ledger { json } => {
            let v = ok(control::call(&data_dir, &ControlRequest::Ledger).await?)?;
            if json {
                out!("{}", serde_json::to_string_pretty(&v["ledger"])?);
            } else {
                print_ledger(&v["ledger"]);
            }
            Ok(())
        }
        Command::Agree {
            with,
            side,
            wh,
            price,
            days,
            hours,
            weekdays,
        } => {
            let (from_min, to_min) = parse_hours(&hours)?;
            let start_ms = now_ms();
            let req = node::DocRequest::Agreement(node::AgreementArgs {
                counterparty: with,
                side: match side {
                    SideCli::Sell => SideArg::Sell,
                    SideCli::Buy => SideArg::Buy,
                },
                per_slot_wh: wh,
                price: parse_price(&price)?,
                start_ms,
                end_ms: start_ms + days.min(92) * 86_400_000,
                weekdays: parse_weekdays(&weekdays)?,
                from_min,
                to_min,
            });
            doc_call(&data_dir, req, "proposed; it takes effect when they accept").await
        }
        Command::Pay {
            to,
            amount,
            reference,
        } => {
            let req = node::DocRequest::Pay(node::PaymentArgs {
                payee: to,
                amount: parse_price(&amount)?,
                through_ms: 0,
                reference,
            });
            doc_call(&data_dir, req, "declared; it counts once they confirm").await
        }
        Command::Accept { id } => {
            let req = node::DocRequest::Decide(id, node::Decision::Accept);
            doc_call(&data_dir, req, "countersigned").await
        }
        Command::Decline { id } => {
            let req = node::DocRequest::Decide(id, node::Decision::Decline);
            doc_call(&data_dir, req, "declined").await
        }
        Command::Dispute {
            taker,
            nonce,
            stage,
            text,
            amount,
        } => {
            let req = node::DocRequest::Note(node::NoteArgs {
                taker,
                nonce,
                stage: match stage {
                    StageCli::Open => node::StageArg::Open,
                    StageCli::Answer => node::StageArg::Answer,
                    StageCli::Resolve => node::StageArg::Resolve,
                },
                text,
                amount: amount.as_deref().map(parse_price).transpose()?,
            });
            doc_call(&data_dir, req, "sent").await
        }
        Command::Trades => {
            let v = ok(control::call(&data_dir, &ControlRequest::Trades).await?)?;
            print_trades(
                v["trades"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                &mut std::io::stdout(),
            )?;
            Ok(())
        }
        Command::Export {
            what,
            from,
            to,
            out,
        } => {
            let (req, key) = match what {
                ExportWhat::Trades => (ControlRequest::Trades, "trades"),
                ExportWhat::Offers => (ControlRequest::Offers, "offers"),
                ExportWhat::Signed => {
                    let req = ControlRequest::SignedExport {
                        from,
                        to: to.saturating_add(1),
                    };
                    let v = ok(control::call(&data_dir, &req).await?)?;
                    let text = serde_json::to_string_pretty(&v["export"])?;
                    match out {
                        Some(path) => std::fs::write(&path, text + "\n")
                            .with_context(|| format!("writing {}", path.display()))?,
                        None => out!("{text}"),
                    }
                    return Ok(());
                }
            };
            let v = ok(control::call(&data_dir, &req).await?)?;
            let rows: Vec<Value> = v[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|o| o["slot_ms"].as_u64().is_some_and(|s| s >= from && s <= to))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let mut w: Box<dyn std::io::Write> = match out {
                Some(path) => Box::new(
                    std::fs::File::create(&path)
                        .with_context(|| format!("creating {}", path.display()))?,
                ),
                None => Box::new(std::io::stdout()),
            };
            match what {
                ExportWhat::Trades => print_trades(&rows, &mut w)?,
                ExportWhat::Offers | ExportWhat::Signed => print_offers(&rows, &mut w)?,
            }
            Ok(())
        }
        Command::Meter { once } => meter(&data_dir, &cfg_path, once).await,
        Command::VerifyExport { files, csv } => verify_export(&files, csv),
        Command::Keys { action } => keys(&data_dir, &cfg_path, action),
    }
}

fn verify_export(files: &[PathBuf], csv: bool) -> anyhow::Result<()> {
    use wattmesh_node::signed_export::{ExportFile, reconcile};
    let mut parsed = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let e: ExportFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a wattmesh export", f.display()))?;
        parsed.push(e);
    }
    let r = reconcile(&parsed).map_err(|e| anyhow::anyhow!(e))?;
    if csv {
        out!("slot_ms,home,sold_wh,bought_wh,sold_delivered_wh,bought_delivered_wh");
        for (slot, homes) in &r.per_slot {
            for (home, t) in homes {
                out!(
                    "{slot},{home},{},{},{},{}",
                    t.sold_wh,
                    t.bought_wh,
                    t.sold_delivered_wh,
                    t.bought_delivered_wh
                );
            }
        }
    } else {
        out!(
            "{} files check out: {} trades, {} exported by both parties, {} slots",
            files.len(),
            r.trades,
            r.confirmed_by_both,
            r.per_slot.len()
        );
    }
    if !r.conflicts.is_empty() {
        for c in &r.conflicts {
            eprintln!("conflict: {c}");
        }
        bail!(
            "{} trades differ between their parties' exports",
            r.conflicts.len()
        );
    }
    Ok(())
}

fn ok(v: Value) -> anyhow::Result<Value> {
    if v["ok"].as_bool() == Some(true) {
        Ok(v)
    } else {
        bail!("{}", v["error"].as_str().unwrap_or("the node refused"))
    }
}

fn open_store(data_dir: &Path, cfg_path: &Path) -> anyhow::Result<Store> {
    let cfg = Config::load(cfg_path)?;
    Ok(Store::open(&cfg.database_path(data_dir))?)
}

/// The profile a home gives its neighbours.
fn profile(name: Option<String>, pv_w: u32) -> Option<Profile> {
    name.map(|name| Profile {
        name,
        pv_capacity_w: pv_w,
    })
}

fn init(
    data_dir: &Path,
    cfg_path: &Path,
    found: Option<String>,
    join: Option<String>,
    listen: Option<String>,
    profile: Option<Profile>,
) -> anyhow::Result<()> {
    dirs::check_owner(data_dir)?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let (key, created) = identity::load_or_create(&dirs::key_path(data_dir))?;
    if created {
        out!("created node key {}", dirs::key_path(data_dir).display());
    }
    if !cfg_path.exists() {
        let mut cfg = Config::default();
        if let Some(l) = listen {
            cfg.network.listen = vec![l];
        }
        if let Some(code) = &join {
            let (invite, _) = Invite::from_code(code)?;
            cfg.network.bootstrap = invite.bootstrap.clone();
        }
        std::fs::write(cfg_path, toml::to_string_pretty(&cfg)?)
            .with_context(|| format!("writing {}", cfg_path.display()))?;
        out!("wrote config {}", cfg_path.display());
    }
    let store = open_store(data_dir, cfg_path)?;
    if let Some(existing) = Neighbourhood::load(data_dir, &store)? {
        if found.is_some() || join.is_some() {
            bail!(
                "this node already belongs to neighbourhood {:?} ({}); use another data directory",
                existing.chain.latest().charter.name,
                existing.id().to_hex()
            );
        }
    }
    match (found, join) {
        (Some(name), None) => {
            let mut id = [0u8; 16];
            let mut psk = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut psk);
            let charter = wattmesh_protocol::Charter::founding(
                wattmesh_protocol::NeighbourhoodId(id),
                &name,
                key.node_id(),
                now_ms(),
            );
            let me = profile.unwrap_or_else(|| default_profile(&key.node_id()));
            let n = Neighbourhood::found_with(data_dir, &store, &key, charter, psk, me)?;
            out!(
                "founded neighbourhood {name:?} ({}), with this node as its admin",
                n.id().to_hex()
            );
        }
        (None, Some(code)) => {
            let (invite, _) = Invite::from_code(&code)?;
            let me = profile.unwrap_or_else(|| default_profile(&key.node_id()));
            let n = invite.join(data_dir, &store, &key, me, now_ms())?;
            // Remembered peers are dialled at every start, so the invite's addresses count even
            // when the config file already existed (the Pi package installs one).
            remember_bootstrap(&store, &invite.bootstrap);
            out!(
                "joined neighbourhood {:?} ({})",
                n.chain.latest().charter.name,
                n.id().to_hex()
            );
        }
        _ => {}
    }
    out!("node id {} ({})", key.node_id(), key.node_id().short());
    Ok(())
}

async fn run(data_dir: &Path, cfg_path: &Path) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,libp2p_gossipsub=warn")
            }),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Config::load(cfg_path)?;
    let testing = config.testing.clone();
    let display = config.display.clone();
    if testing.allow_raw_publish {
        tracing::warn!("[testing] allow_raw_publish is on: this node can be told to send anything");
    }
    if testing.allow_clock_skew {
        tracing::warn!("[testing] allow_clock_skew is on: this node's clock can be moved");
    }
    if testing.crash_after_secs > 0 {
        let secs = testing.crash_after_secs;
        tracing::warn!(
            secs,
            "[testing] crash_after_secs is set: this node will abort"
        );
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(secs));
            eprintln!("[testing] crash_after_secs: aborting");
            std::process::abort();
        });
    }
    let running = node::start(NodeOptions {
        data_dir: data_dir.to_owned(),
        config,
    })
    .await?;
    let server = control::serve(data_dir, running.handle.clone(), testing).await?;
    let _display = start_display(&running.handle, &display)?;
    let status = running.handle.status().await?;
    for a in &status.listening {
        tracing::info!(address = %a, "reachable at");
    }
    tracing::info!(node = %status.short_id, neighbourhood = %status.neighbourhood, clock = ?status.clock, "running");
    if let Some(web) = &running.web {
        tracing::info!(url = %web.url(), "web UI");
        if let Some(code) = &web.setup_code {
            eprintln!(
                "\n  Open {} and create the owner account with the one-time setup code {code}\n",
                web.url()
            );
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut task = running.task;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = &mut task => {
            server.abort();
            let _ = std::fs::remove_file(control::socket_path(data_dir));
            return r?;
        }
    }
    tracing::info!("stopping");
    running.handle.stop().await;
    let r = task.await?;
    server.abort();
    let _ = std::fs::remove_file(control::socket_path(data_dir));
    r
}

/// Starts the status display when `[display] enabled`; refuses in a build without the `pi`
/// feature, which cannot open the bus.
#[cfg(feature = "pi")]
fn start_display(
    node: &node::NodeHandle,
    cfg: &wattmesh_node::display::DisplayConfig,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if !cfg.enabled {
        return Ok(None);
    }
    let task = wattmesh_node::display::spawn(node.clone(), cfg)?;
    tracing::info!(
        bus = cfg.i2c_bus,
        address = cfg.address,
        "status display on"
    );
    Ok(Some(task))
}

#[cfg(not(feature = "pi"))]
fn start_display(
    _node: &node::NodeHandle,
    cfg: &wattmesh_node::display::DisplayConfig,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if cfg.enabled {
        bail!(
            "[display] enabled needs a wattmesh built with --features pi (the Raspberry Pi \
             package is); this build cannot open the I2C bus"
        );
    }
    Ok(None)
}

fn clock_check() -> anyhow::Result<()> {
    let r = clock::SyncReport::now();
    match &r.kernel {
        Ok(true) => out!("kernel       synchronised (an NTP daemon disciplines the clock)"),
        Ok(false) => out!("kernel       not synchronised"),
        Err(e) => out!(
            "kernel       cannot ask: {e} (a sandbox filtering adjtimex/clock_adjtime, such as \
             systemd's ProtectClock=yes?)"
        ),
    }
    if r.timesyncd {
        out!(
            "timesyncd    synchronised ({} exists)",
            clock::TIMESYNCD_FLAG
        );
    } else {
        out!("timesyncd    no flag file ({})", clock::TIMESYNCD_FLAG);
    }
    if !r.synced() {
        bail!(
            "the clock is not synchronised: the node signs no offers or attestations until it \
             is (docs/DEPLOY.md, \"Keep the clock synchronised\")"
        );
    }
    out!("clock        synchronised: the node may sign");
    Ok(())
}

fn print_status(s: &Value) {
    out!(
        "node         {} ({})",
        s["short_id"].as_str().unwrap_or(""),
        s["node_id"].as_str().unwrap_or("")
    );
    out!(
        "neighbourhood {} (charter v{})",
        s["neighbourhood"].as_str().unwrap_or(""),
        s["charter_version"]
    );
    let clock = s["clock"].as_str().unwrap_or("unknown");
    if clock == "synced" {
        out!("clock        synchronised");
    } else {
        out!("clock        NOT synchronised: the node signs no offers or attestations until it is");
    }
    for a in s["listening"].as_array().into_iter().flatten() {
        out!("listening    {}", a.as_str().unwrap_or(""));
    }
    let reach = &s["reach"];
    out!(
        "reachable    {} (AutoNAT), relay reservations {}",
        reach["nat"].as_str().unwrap_or("unknown"),
        reach["reservations"].as_array().map_or(0, Vec::len)
    );
    for a in reach["external"].as_array().into_iter().flatten() {
        out!("external     {}", a.as_str().unwrap_or(""));
    }
    let peers = s["peers"].as_array().cloned().unwrap_or_default();
    out!("peers        {}", peers.len());
    for p in peers {
        out!(
            "  {}  {:<12} {}  score {:.1}",
            p["node"].as_str().unwrap_or(""),
            p["reach"].as_str().unwrap_or(""),
            p["address"].as_str().unwrap_or(""),
            p["score"].as_f64().unwrap_or(0.0)
        );
    }
    out!("offers       {}", s["offers"]);
    print_meter(&s["meter"]);
    out!("counters     {}", s["counters"]);
}

/// The status's meter lines: whether there is one, privacy mode, and a hardware source's read
/// counters and current fault.
fn print_meter(m: &Value) {
    if m["enabled"].as_bool() != Some(true) {
        out!("meter        none");
        return;
    }
    let privacy = if m["privacy"].as_bool() == Some(true) {
        "private (attestations to counterparties only, commitments to everyone)"
    } else {
        "public"
    };
    out!("meter        attestations {privacy}");
    let h = &m["health"];
    if h.is_null() {
        return;
    }
    let counters: Vec<String> = h["counters"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    out!(
        "meter reads  {}: {}",
        h["source"].as_str().unwrap_or("?"),
        counters.join(", ")
    );
    if let Some(e) = h["error"].as_str() {
        out!("meter fault  {e}");
    }
}

fn print_offers(offers: &[Value], w: &mut dyn std::io::Write) -> anyhow::Result<()> {
    writeln!(
        w,
        "slot_ms,side,maker,nonce,version,quantity_wh,price_millicents_per_kwh,expires_ms"
    )?;
    for o in offers {
        writeln!(
            w,
            "{},{},{},{},{},{},{},{}",
            o["slot_ms"],
            o["side"].as_str().unwrap_or(""),
            o["maker"].as_str().unwrap_or(""),
            o["nonce"],
            o["version"],
            o["quantity_wh"],
            o["price"],
            o["expires_ms"]
        )?;
    }
    Ok(())
}

async fn meter(data_dir: &Path, cfg_path: &Path, once: bool) -> anyhow::Result<()> {
    let running = control::call(data_dir, &ControlRequest::Status)
        .await
        .is_ok();
    let mut source = if running {
        None
    } else {
        let cfg = Config::load(cfg_path)?;
        let short = identity::load(&dirs::key_path(data_dir))
            .map(|k| k.node_id().short())
            .unwrap_or_default();
        let s = wattmesh_node::metering::open(&cfg.meter, &short, None)?
            .context("no meter is configured ([meter] source = \"none\")")?;
        Some((s, clock::Clock::new(&cfg.clock)))
    };
    loop {
        match &mut source {
            None => {
                let v = ok(control::call(data_dir, &ControlRequest::Status).await?)?;
                let m = &v["status"]["meter"];
                out!(
                    "grid {:>8.1} W   solar {:>8.1} W   load {:>8.1} W   import {} Wh   export {} Wh",
                    m["grid_w"].as_f64().unwrap_or(0.0),
                    m["solar_w"].as_f64().unwrap_or(0.0),
                    m["load_w"].as_f64().unwrap_or(0.0),
                    m["import_wh"],
                    m["export_wh"]
                );
            }
            Some((src, clock)) => {
                let info = src.info().clone();
                let sample = src.poll(clock.now_ms())?;
                for r in &sample.readings {
                    let name = info
                        .channels
                        .get(r.channel)
                        .map(|c| c.name.as_str())
                        .unwrap_or("?");
                    let regs = r
                        .registers
                        .map(|g| format!("import {} Wh  export {} Wh", g.import_wh, g.export_wh))
                        .unwrap_or_default();
                    out!("{name:<8} {:>9.1} W  {:?}  {regs}", r.power_w, r.status);
                    for (i, leg) in r.legs.iter().enumerate() {
                        out!(
                            "   leg {}: {:>6.1} V {:>6.2} A {:>8.1} W {:>8.1} VA  PF {:>5.2}",
                            i + 1,
                            leg.vrms_v,
                            leg.irms_a,
                            leg.real_power_w,
                            leg.apparent_power_va,
                            leg.power_factor
                        );
                    }
                }
            }
        }
        if once {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

fn print_trades(trades: &[Value], w: &mut dyn std::io::Write) -> anyhow::Result<()> {
    writeln!(
        w,
        "slot_ms,role,side,counterparty,energy_wh,price_millicents_per_kwh,state,taker,nonce"
    )?;
    for t in trades {
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{}",
            t["slot_ms"],
            t["role"].as_str().unwrap_or(""),
            t["side"].as_str().unwrap_or(""),
            t["counterparty"].as_str().unwrap_or(""),
            t["energy_wh"],
            t["price"],
            t["state"].as_str().unwrap_or(""),
            t["taker"].as_str().unwrap_or(""),
            t["nonce"]
        )?;
    }
    Ok(())
}

/// Reads one line (a passphrase) from standard input, without its line end.
fn read_passphrase() -> anyhow::Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the passphrase from standard input")?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// `wattmesh keys restore`: writes the key from a plain or sealed backup where there is none.
fn restore_key(key_path: &Path, from: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !key_path.exists(),
        "there is a key at {} already; restore into a new data directory, or move that key \
         away first",
        key_path.display()
    );
    let text = Zeroizing::new(
        std::fs::read_to_string(from)
            .with_context(|| format!("reading the backup {}", from.display()))?,
    );
    let key = if text.starts_with("wattmesh key backup") {
        eprintln!("passphrase (one line on standard input):");
        wattmesh_node::backup::open(&text, &read_passphrase()?)?
    } else {
        identity::parse(&text)
            .map_err(|why| anyhow::anyhow!("{} is not a key backup: {why}", from.display()))?
    };
    identity::write_new(key_path, &identity::render(&key))?;
    out!(
        "restored node {} ({}) to {}",
        key.node_id().short(),
        key.node_id(),
        key_path.display()
    );
    Ok(())
}

/// Stores the invite's addresses (`.../p2p/<peer id>`) as known peers; one without a peer id
/// is skipped with a warning (the node needs the id to dial it under the network key).
fn remember_bootstrap(store: &Store, addrs: &[String]) {
    use libp2p::multiaddr::{Multiaddr, Protocol};
    let mut by_peer: std::collections::BTreeMap<Vec<u8>, Vec<String>> = Default::default();
    for a in addrs {
        let Ok(mut m) = a.parse::<Multiaddr>() else {
            eprintln!("warning: the invite's address {a:?} is not a multiaddr; skipped");
            continue;
        };
        let Some(Protocol::P2p(peer)) = m.pop() else {
            eprintln!("warning: the invite's address {a} has no /p2p/ peer id; skipped");
            continue;
        };
        by_peer
            .entry(peer.to_bytes())
            .or_default()
            .push(m.to_string());
    }
    for (peer, list) in by_peer {
        if let Err(e) = store.put_peer(&peer, &list) {
            eprintln!("warning: could not remember the invite's addresses: {e}");
        }
    }
}

fn keys(data_dir: &Path, cfg_path: &Path, action: KeysAction) -> anyhow::Result<()> {
    if !matches!(action, KeysAction::Backup { .. }) {
        dirs::check_owner(data_dir)?;
    }
    let key_path = dirs::key_path(data_dir);
    if let KeysAction::Restore { from } = &action {
        return restore_key(&key_path, from);
    }
    let (key, created) = identity::load_or_create(&key_path)?;
    match action {
        KeysAction::Show => {
            if created {
                eprintln!("created a new node key at {}", key_path.display());
            }
            let id = key.node_id();
            out!("node id:    {id}");
            out!("short form: {}", id.short());
            out!(
                "peer id:    {}",
                wattmesh_node::net::keypair(&key).public().to_peer_id()
            );
            out!("key file:   {}", key_path.display());
        }
        KeysAction::Rotate { force } => {
            if control::socket_path(data_dir).exists()
                && std::os::unix::net::UnixStream::connect(control::socket_path(data_dir)).is_ok()
            {
                bail!("stop the node first (`wattmesh run` is using this data directory)");
            }
            let store = open_store(data_dir, cfg_path)?;
            let n = Neighbourhood::load(data_dir, &store)?
                .context("this node has not joined a neighbourhood")?;
            let new = n.migrate_key(data_dir, &store, &key, now_ms(), force)?;
            out!(
                "moved node {} to new key {} ({}); the old key is kept as node.key.retired-{}. \
                 Start the node: neighbours accept the new key once they fetch the move.",
                key.node_id().short(),
                new.node_id().short(),
                new.node_id(),
                key.node_id().short()
            );
        }
        // Restored before a key was loaded or created.
        KeysAction::Restore { .. } => {}
        KeysAction::Backup { out, passphrase } => {
            let text = if passphrase {
                eprintln!("passphrase (one line on standard input, at least 12 characters):");
                Zeroizing::new(wattmesh_node::backup::seal(&key, &read_passphrase()?)?)
            } else {
                identity::render(&key)
            };
            identity::write_new(&out, &text)
                .with_context(|| format!("backing up the key to {}", out.display()))?;
            out!(
                "wrote a backup of node {} to {}",
                key.node_id().short(),
                out.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_price;

    #[test]
    fn prices_parse_without_floating_point() {
        assert_eq!(parse_price("9.5").unwrap(), 9_500);
        assert_eq!(parse_price("13").unwrap(), 13_000);
        assert_eq!(parse_price("0.125").unwrap(), 125);
        assert!(parse_price("1.2345").is_err());
        assert!(parse_price("abc").is_err());
        assert!(parse_price(".").is_err());
    }
}
