//! The local control socket: `wattmesh status` and the other commands talk to a running node
//! through a Unix socket in its data directory (mode 0600, so only the node's user can use
//! it), one JSON request per line, one JSON answer per line. No browser session is involved.

use crate::node::{Amendment, InviteArgs, NodeHandle, PostOffer};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::debug;

/// The socket's path in a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// A request on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ControlRequest {
    /// The node's status.
    Status,
    /// The owner's summary: power now, today's energy and trades, trading state (what
    /// `wattmesh status` prints first and the meter's display shows).
    Summary,
    /// The order book.
    Offers,
    /// Post an offer.
    Post(PostOffer),
    /// Cancel an own offer.
    Cancel {
        /// Its nonce.
        nonce: u64,
    },
    /// Dial a peer.
    Dial {
        /// Its multiaddr.
        addr: String,
    },
    /// An invite code for a neighbour (admins only).
    Invite(InviteArgs),
    /// The members.
    Members,
    /// The invites this node issued.
    Tickets,
    /// Revoke an unused invite.
    Revoke {
        /// Its ticket id (a prefix of at least 8 hex digits).
        ticket: String,
    },
    /// Remove a member and rotate the network key.
    Remove {
        /// Its node id (a prefix of at least 8 hex digits).
        member: String,
        /// The new node id (full hex) it moved to after losing its key, if it did.
        #[serde(default)]
        moved_to: Option<String>,
    },
    /// Sign a new charter version.
    Amend(Amendment),
    /// Publish raw bytes on a gossip topic (the testnet's hostile home; refused unless the
    /// config's `[testing] allow_raw_publish` is on).
    PublishRaw {
        /// `offers`, `attestations` or `members`.
        topic: crate::net::behaviour::TopicKind,
        /// The bytes, hex.
        hex: String,
    },
    /// Take an offer from the book.
    Take {
        /// The maker's node id (hex).
        maker: String,
        /// The offer's nonce.
        nonce: u64,
        /// How much, Wh.
        energy_wh: u64,
    },
    /// The node's trades.
    Trades,
    /// Statements, balances, reputation, agreements, payments and disputes.
    Ledger,
    /// Propose an agreement, declare a payment, decide on a document, or write a dispute note.
    Doc(crate::node::DocRequest),
    /// The signed export of the node's trades in a range of slots.
    SignedExport {
        /// First slot start, UTC ms.
        from: u64,
        /// End, UTC ms, exclusive.
        to: u64,
    },
    /// Wall-clock events after sequence number `after` (offers seen, proposals sent, trades
    /// stored) and the automatic trader's orders: what the testnet measures latency and market
    /// efficiency from.
    Observations {
        /// The last event already read (0 for all).
        #[serde(default)]
        after: u64,
    },
    /// Per-minute meter readings in `[from_ms, to_ms)` (at most 31 days).
    Readings {
        /// Start, UTC ms.
        from_ms: u64,
        /// End, UTC ms, exclusive.
        to_ms: u64,
    },
    /// Move the node's clock (refused unless the config's `[testing] allow_clock_skew` is on).
    SkewClock {
        /// By how much, ms (simulated time).
        delta_ms: i64,
    },
    /// Stop the node.
    Stop,
}

/// The longest span of readings one request returns, ms.
const MAX_READINGS_MS: u64 = 31 * 86_400_000;

/// The longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

/// Serves the control socket until the node stops.
pub async fn serve(
    data_dir: &Path,
    node: NodeHandle,
    testing: crate::config::TestingConfig,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let path = socket_path(data_dir);
    if path.exists() {
        // A socket left by a node that died; if a live node holds it, connecting succeeds.
        if UnixStream::connect(&path).await.is_ok() {
            anyhow::bail!(
                "another wattmesh node is already running with data directory {}",
                data_dir.display()
            );
        }
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (node, testing) = (node.clone(), testing.clone());
            tokio::spawn(async move {
                if let Err(e) = connection(stream, node, testing).await {
                    debug!("control connection: {e}");
                }
            });
        }
    }))
}

async fn connection(
    stream: UnixStream,
    node: NodeHandle,
    testing: crate::config::TestingConfig,
) -> anyhow::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r.take(MAX_LINE as u64 * 64)).lines();
    while let Some(line) = lines.next_line().await? {
        if line.len() > MAX_LINE {
            break;
        }
        let answer = match serde_json::from_str::<ControlRequest>(&line) {
            Ok(req) => handle(req, &node, &testing).await,
            Err(e) => serde_json::json!({"ok": false, "error": format!("bad request: {e}")}),
        };
        w.write_all(format!("{answer}\n").as_bytes()).await?;
    }
    Ok(())
}

async fn handle(
    req: ControlRequest,
    node: &NodeHandle,
    testing: &crate::config::TestingConfig,
) -> serde_json::Value {
    use serde_json::json;
    let stopped = || json!({"ok": false, "error": "the node is stopping"});
    match req {
        ControlRequest::Status => match node.status().await {
            Ok(s) => json!({"ok": true, "status": s}),
            Err(_) => stopped(),
        },
        ControlRequest::Summary => match crate::summary::fetch(node).await {
            Ok(s) => json!({"ok": true, "summary": s}),
            Err(_) => stopped(),
        },
        ControlRequest::Offers => match node.offers().await {
            Ok(o) => json!({"ok": true, "offers": o}),
            Err(_) => stopped(),
        },
        ControlRequest::Post(p) => match node.post(p).await {
            Ok(Ok(o)) => json!({"ok": true, "offer": o}),
            Ok(Err(e)) => json!({"ok": false, "error": e}),
            Err(_) => stopped(),
        },
        ControlRequest::Cancel { nonce } => match node.cancel(nonce).await {
            Ok(Ok(())) => json!({"ok": true}),
            Ok(Err(e)) => json!({"ok": false, "error": e}),
            Err(_) => stopped(),
        },
        ControlRequest::Dial { addr } => match addr.parse() {
            Ok(a) => match node.dial(a).await {
                Ok(Ok(())) => json!({"ok": true}),
                Ok(Err(e)) => json!({"ok": false, "error": e}),
                Err(_) => stopped(),
            },
            Err(e) => json!({"ok": false, "error": format!("not a multiaddr: {e}")}),
        },
        ControlRequest::Invite(args) => match node.invite(args).await {
            Ok(Ok(i)) => json!({"ok": true, "invite": i}),
            Ok(Err(e)) => json!({"ok": false, "error": e}),
            Err(_) => stopped(),
        },
        ControlRequest::Members => match node.members().await {
            Ok(m) => json!({"ok": true, "members": m}),
            Err(_) => stopped(),
        },
        ControlRequest::Tickets => match node.tickets().await {
            Ok(Ok(t)) => json!({"ok": true, "tickets": t}),
            Ok(Err(e)) => json!({"ok": false, "error": e}),
            Err(_) => stopped(),
        },
        ControlRequest::Revoke { ticket } => said(node.revoke(ticket).await),
        ControlRequest::Remove { member, moved_to } => said(node.remove(member, moved_to).await),
        ControlRequest::Amend(a) => said(node.amend(a).await),
        ControlRequest::PublishRaw { topic, hex } => {
            if !testing.allow_raw_publish {
                return json!({"ok": false, "error": "raw publishing is off ([testing] allow_raw_publish)"});
            }
            match ::hex::decode(hex.trim()) {
                Err(e) => json!({"ok": false, "error": format!("not hex: {e}")}),
                Ok(bytes) => match node.publish_raw(topic, bytes).await {
                    Ok(Ok(())) => json!({"ok": true}),
                    Ok(Err(e)) => json!({"ok": false, "error": e}),
                    Err(_) => stopped(),
                },
            }
        }
        ControlRequest::Take {
            maker,
            nonce,
            energy_wh,
        } => match wattmesh_protocol::NodeId::from_hex(&maker) {
            Err(_) => json!({"ok": false, "error": "maker must be a 64-digit hex node id"}),
            Ok(m) => match node.take(m, nonce, energy_wh).await {
                Ok(Ok(t)) => json!({"ok": true, "trade": t}),
                Ok(Err(e)) => json!({"ok": false, "error": e}),
                Err(_) => stopped(),
            },
        },
        ControlRequest::Trades => match node.trades().await {
            Ok(t) => json!({"ok": true, "trades": t}),
            Err(_) => stopped(),
        },
        ControlRequest::Ledger => match node.ledger().await {
            Ok(l) => json!({"ok": true, "ledger": l}),
            Err(_) => stopped(),
        },
        ControlRequest::Doc(r) => said(node.doc(r).await),
        ControlRequest::SignedExport { from, to } => match node.signed_export(from, to).await {
            Ok(Ok(f)) => json!({"ok": true, "export": f}),
            Ok(Err(e)) => json!({"ok": false, "error": e}),
            Err(_) => stopped(),
        },
        ControlRequest::Observations { after } => match node.observations(after).await {
            Ok(o) => json!({"ok": true, "observations": o}),
            Err(_) => stopped(),
        },
        ControlRequest::Readings { from_ms, to_ms } => {
            if to_ms.saturating_sub(from_ms) > MAX_READINGS_MS {
                return json!({"ok": false, "error": "at most 31 days of readings at a time"});
            }
            match node.readings(from_ms, to_ms).await {
                Ok(r) => json!({"ok": true, "readings": r}),
                Err(_) => stopped(),
            }
        }
        ControlRequest::SkewClock { delta_ms } => {
            if !testing.allow_clock_skew {
                return json!({"ok": false, "error": "clock skew is off ([testing] allow_clock_skew)"});
            }
            match node.skew_clock(delta_ms).await {
                Ok(offset) => json!({"ok": true, "offset_ms": offset}),
                Err(_) => stopped(),
            }
        }
        ControlRequest::Stop => {
            node.stop().await;
            json!({"ok": true})
        }
    }
}

/// The answer to a request whose result is a sentence for the owner.
fn said(r: Result<Result<String, String>, crate::node::Stopped>) -> serde_json::Value {
    use serde_json::json;
    match r {
        Ok(Ok(m)) => json!({"ok": true, "message": m}),
        Ok(Err(e)) => json!({"ok": false, "error": e}),
        Err(_) => json!({"ok": false, "error": "the node is stopping"}),
    }
}

/// Sends one request to the node at `data_dir` and returns its answer.
pub async fn call(data_dir: &Path, req: &ControlRequest) -> anyhow::Result<serde_json::Value> {
    let path = socket_path(data_dir);
    let stream = UnixStream::connect(&path).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach a running node at {} ({e}). Is `wattmesh run` running with this data directory?",
            path.display()
        )
    })?;
    let (r, mut w) = stream.into_split();
    w.write_all(format!("{}\n", serde_json::to_string(req)?).as_bytes())
        .await?;
    let mut lines = BufReader::new(r).lines();
    let line = lines
        .next_line()
        .await?
        .ok_or_else(|| anyhow::anyhow!("the node closed the control connection"))?;
    Ok(serde_json::from_str(&line)?)
}

use tokio::io::AsyncReadExt as _;
