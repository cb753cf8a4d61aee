//! The running node: wires the identity, the database, the network, the validation worker and
//! the control interface together, and keeps the order book. The node task owns the state; the
//! swarm task owns the network; the worker thread owns validation; database commits run on
//! blocking threads.

use crate::book::OfferView;
use crate::clock::{Clock, ClockState};
use crate::config::Config;
use crate::neighbourhood::Neighbourhood;
use crate::net::behaviour::TopicKind;
use crate::net::{self, NetConfig, NetEvent, NetHandle, PeerInfo};
use crate::store::Store;
use crate::worker::{self, Outcome, Work};
use crate::{dirs, identity};
use anyhow::{Context, bail};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::offer::{Offer, OfferId, Side};
use wattmesh_protocol::sync::{MAX_SYNC_ITEMS, SyncRequest, SyncResponse};
use wattmesh_protocol::trade::{RejectReason, TradeResponse};
use wattmesh_protocol::validate::{self, Msg};
use wattmesh_protocol::{NodeId, NodeKey, slot};

mod attest;
mod ledger;
mod members;
pub mod timeline;

pub use ledger::{
    AgreementArgs, Decision, DisputeView, DocRequest, DocView, LedgerView, NoteArgs, NoteView,
    PaymentArgs, StageArg, parse_doc_id,
};

pub use members::{
    Amendment, DEFAULT_INVITE_SECS, InviteArgs, InviteOut, MemberView, PROBATION, REKEY_DELAY_MS,
    TicketView,
};

/// What the owner asks for when posting an offer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PostOffer {
    /// Sell or buy.
    pub side: SideArg,
    /// Energy, Wh.
    pub quantity_wh: u64,
    /// Limit price, thousandths of a minor unit per kWh.
    pub price: u64,
    /// The slot; the first slot still open for trading if absent.
    #[serde(default)]
    pub slot_ms: Option<u64>,
    /// The smallest fill accepted; 1 Wh if absent.
    #[serde(default)]
    pub min_fill_wh: Option<u64>,
}

/// Sell or buy, as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SideArg {
    /// Sell.
    Sell,
    /// Buy.
    Buy,
}

/// Counters shown by `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// Gossip messages accepted.
    pub gossip_accepted: u64,
    /// Gossip messages rejected as provably invalid.
    pub gossip_rejected: u64,
    /// Gossip messages ignored (time-dependent, replays, unknown versions).
    pub gossip_ignored: u64,
    /// Replays refused (part of the ignored).
    pub replays_refused: u64,
    /// Envelopes accepted from sync.
    pub sync_accepted: u64,
    /// Envelopes from sync refused.
    pub sync_refused: u64,
    /// Inbound requests refused for exceeding a peer's quota.
    pub requests_over_quota: u64,
    /// Messages dropped because the worker's queue was full.
    pub work_dropped: u64,
    /// Attestations this node signed.
    pub attestations_signed: u64,
    /// Peers' attestations or commitments that did not follow their previous one, or
    /// attestations that did not match their commitment.
    pub attestation_chain_breaks: u64,
    /// Peers' attestation commitments accepted (privacy mode), by gossip or sync.
    pub commitments_received: u64,
    /// Our private attestations delivered to trade counterparties (privacy mode).
    pub attestations_sent_privately: u64,
    /// Private attestations that counterparties sent us (privacy mode).
    pub attestations_received_privately: u64,
}

/// The meter as the status shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MeterStatus {
    /// Whether a meter is configured.
    pub enabled: bool,
    /// When it was last read, UTC ms.
    pub at_ms: u64,
    /// Grid power, W (positive import).
    pub grid_w: f64,
    /// Solar production, W.
    pub solar_w: f64,
    /// Household consumption, W.
    pub load_w: f64,
    /// Grid import register, Wh.
    pub import_wh: u64,
    /// Grid export register, Wh.
    pub export_wh: u64,
    /// Whether attestations are kept private (`[meter] privacy`): sent only to trade
    /// counterparties, with a commitment for everyone else.
    pub privacy: bool,
    /// A hardware source's read counters (P1 telegrams and CRC errors, Modbus reads, ADC
    /// errors and discarded cycles) and what is wrong now; none for the simulated meter.
    pub health: Option<crate::meter::SourceHealth>,
}

/// Where the trader's limits last set in the web UI are stored (JSON).
const META_TRADER: &str = "owner.trader_limits";
/// Where the readings retention last set in the web UI is stored (days, u32 little-endian).
const META_RETENTION: &str = "owner.retention_days";
/// Where the current clamps' calibration last set in the web UI is stored (JSON,
/// [`crate::meter::ct::Calibration`]).
const META_CALIBRATION: &str = "owner.meter_calibration";

/// The meter's calibration as the owner sees it, with the live readings to calibrate against.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationView {
    /// The configured source (`none`, `simulated`, `modbus`, `ct`, `p1`).
    pub source: crate::metering::SourceKind,
    /// Whether the owner can calibrate it here (the current clamps only).
    pub calibratable: bool,
    /// What applies, in words.
    pub note: String,
    /// The calibration in use (current clamps only).
    pub calibration: Option<crate::meter::ct::Calibration>,
    /// Each channel's latest reading, with its per-clamp detail where measured.
    pub live: Vec<ChannelLive>,
    /// When the live readings were taken, UTC ms (0: none yet).
    pub at_ms: u64,
}

/// One channel's latest reading.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelLive {
    /// Its name.
    pub name: String,
    /// What it measures.
    pub kind: crate::meter::ChannelKind,
    /// Power, W (positive into the home).
    pub power_w: f64,
    /// Health.
    pub status: crate::meter::ChannelStatus,
    /// Per clamp (current clamps only).
    pub legs: Vec<crate::meter::LegReading>,
    /// Mains frequency, Hz, where measured.
    pub frequency_hz: Option<f64>,
}

/// Why a calibration was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalibrationError {
    /// This meter is not calibrated here.
    NotCalibratable(String),
    /// The calibration does not fit the meter or has a value out of range.
    Invalid(String),
    /// It could not be stored.
    Store(String),
}

/// What the testnet (or an operator) observes of a node: timed events and the automatic
/// trader's orders.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Observations {
    /// Events after the one asked for.
    pub timeline: timeline::Page,
    /// What the automatic trader worked with per slot and side (last two days).
    pub orders: Vec<crate::market::trader::Order>,
    /// The clock's offset, ms (non-zero when skewed).
    pub clock_offset_ms: i64,
}

/// The node's status, as `wattmesh status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Full node id.
    pub node_id: String,
    /// Short node id.
    pub short_id: String,
    /// libp2p peer id.
    pub peer_id: String,
    /// Neighbourhood name.
    pub neighbourhood: String,
    /// Neighbourhood id (hex).
    pub neighbourhood_id: String,
    /// Charter version in effect.
    pub charter_version: u32,
    /// Whether the clock is synchronised (the node signs nothing when it is not).
    pub clock: ClockState,
    /// Now, UTC ms, as the node sees it.
    pub now_ms: u64,
    /// Listening addresses, with `/p2p/<id>`.
    pub listening: Vec<String>,
    /// Connected peers.
    pub peers: Vec<PeerInfo>,
    /// How this node is reached (AutoNAT, external and relayed addresses, relays).
    pub reach: net::ReachInfo,
    /// Offers in the book.
    pub offers: usize,
    /// The meter.
    pub meter: MeterStatus,
    /// Counters.
    pub counters: Counters,
    /// Seconds since start.
    pub uptime_secs: u64,
}

type Reply<T> = oneshot::Sender<T>;

#[derive(Debug)]
enum Request {
    Status(Reply<Status>),
    Offers(Reply<Vec<OfferView>>),
    Post(PostOffer, Reply<Result<OfferView, String>>),
    Cancel(u64, Reply<Result<(), String>>),
    Dial(Multiaddr, Reply<Result<(), String>>),
    Score(PeerId, Reply<Option<f64>>),
    PublishRaw(TopicKind, Vec<u8>, Reply<Result<(), String>>),
    Invite(InviteArgs, Reply<Result<InviteOut, String>>),
    Members(Reply<Vec<MemberView>>),
    Tickets(Reply<Result<Vec<TicketView>, String>>),
    Revoke(String, Reply<Result<String, String>>),
    Remove(String, Option<String>, Reply<Result<String, String>>),
    Amend(Amendment, Reply<Result<String, String>>),
    OfferBytes(u64, Reply<Option<Vec<u8>>>),
    Readings(u64, u64, Reply<Vec<crate::metering::Minute>>),
    Attestations(NodeId, Reply<Vec<wattmesh_protocol::MeterAttestation>>),
    Commitments(NodeId, Reply<Vec<wattmesh_protocol::AttestationCommitment>>),
    Take(NodeId, u64, u64, Reply<Result<TradeView, String>>),
    Trades(Reply<Vec<TradeView>>),
    Observations(u64, Reply<Observations>),
    SkewClock(i64, Reply<i64>),
    Retention(Reply<u32>),
    SetRetention(u32, Reply<Result<(), String>>),
    KeyBackup(
        crate::backup::Passphrase,
        Reply<Result<String, crate::backup::BackupError>>,
    ),
    Trader(Reply<TraderView>),
    Calibration(Reply<CalibrationView>),
    SetCalibration(
        crate::meter::ct::Calibration,
        Reply<Result<(), CalibrationError>>,
    ),
    SetTrader(crate::market::trader::Limits, Reply<Result<(), String>>),
    Charter(Reply<wattmesh_protocol::Charter>),
    Ledger(Reply<LedgerView>),
    Doc(DocRequest, Reply<Result<String, String>>),
    Export(
        u64,
        u64,
        Reply<Result<crate::signed_export::ExportFile, String>>,
    ),
    Stop(Reply<()>),
}

/// A handle to a running node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Request>,
    /// The node's peer id.
    pub peer_id: PeerId,
}

/// The node has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the node has stopped")]
pub struct Stopped;

impl NodeHandle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// The status.
    pub async fn status(&self) -> Result<Status, Stopped> {
        self.ask(Request::Status).await
    }

    /// The offers in the book.
    pub async fn offers(&self) -> Result<Vec<OfferView>, Stopped> {
        self.ask(Request::Offers).await
    }

    /// Signs, stores and publishes a new offer.
    pub async fn post(&self, p: PostOffer) -> Result<Result<OfferView, String>, Stopped> {
        self.ask(|r| Request::Post(p, r)).await
    }

    /// Cancels one of the node's own offers.
    pub async fn cancel(&self, nonce: u64) -> Result<Result<(), String>, Stopped> {
        self.ask(|r| Request::Cancel(nonce, r)).await
    }

    /// Dials an address (and keeps redialling it while disconnected).
    pub async fn dial(&self, addr: Multiaddr) -> Result<Result<(), String>, Stopped> {
        self.ask(|r| Request::Dial(addr, r)).await
    }

    /// A peer's gossipsub score.
    pub async fn score(&self, peer: PeerId) -> Result<Option<f64>, Stopped> {
        self.ask(|r| Request::Score(peer, r)).await
    }

    /// Publishes raw bytes on a topic, bypassing every check. For fault-injection tests and
    /// the testnet's hostile home only.
    pub async fn publish_raw(
        &self,
        topic: TopicKind,
        bytes: Vec<u8>,
    ) -> Result<Result<(), String>, Stopped> {
        self.ask(|r| Request::PublishRaw(topic, bytes, r)).await
    }

    /// Issues an invite (admins only): a code carrying a single-use, expiring ticket, the
    /// network key, the charters and addresses to dial (`args.bootstrap`, or the node's own
    /// listening addresses if empty).
    pub async fn invite(&self, args: InviteArgs) -> Result<Result<InviteOut, String>, Stopped> {
        self.ask(|r| Request::Invite(args, r)).await
    }

    /// The neighbourhood's members.
    pub async fn members(&self) -> Result<Vec<MemberView>, Stopped> {
        self.ask(Request::Members).await
    }

    /// The invites this node issued and what became of them.
    pub async fn tickets(&self) -> Result<Result<Vec<TicketView>, String>, Stopped> {
        self.ask(Request::Tickets).await
    }

    /// Revokes an unused invite by its ticket id (a prefix of at least 8 hex digits).
    pub async fn revoke(&self, ticket: String) -> Result<Result<String, String>, Stopped> {
        self.ask(|r| Request::Revoke(ticket, r)).await
    }

    /// Removes a member (admins only) and rotates the network key to everyone else. With
    /// `moved_to` (a full node id), the member lost its key and its membership moves to the
    /// new one instead of ending.
    pub async fn remove(
        &self,
        member: String,
        moved_to: Option<String>,
    ) -> Result<Result<String, String>, Stopped> {
        self.ask(|r| Request::Remove(member, moved_to, r)).await
    }

    /// Signs a new charter version (admins only).
    pub async fn amend(&self, a: Amendment) -> Result<Result<String, String>, Stopped> {
        self.ask(|r| Request::Amend(a, r)).await
    }

    /// The exact envelope bytes of an offer in the book, by nonce.
    pub async fn offer_bytes(&self, nonce: u64) -> Result<Option<Vec<u8>>, Stopped> {
        self.ask(|r| Request::OfferBytes(nonce, r)).await
    }

    /// Takes `energy_wh` of the offer `(maker, nonce)` at its price, through the bilateral
    /// handshake. Returns once the trade is agreed and stored, or why it was not.
    pub async fn take(
        &self,
        maker: NodeId,
        nonce: u64,
        energy_wh: u64,
    ) -> Result<Result<TradeView, String>, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Take(maker, nonce, energy_wh, tx))
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// The trades this node is party to.
    pub async fn trades(&self) -> Result<Vec<TradeView>, Stopped> {
        self.ask(Request::Trades).await
    }

    /// Events after `after` (wall-clock times of offers seen, proposals sent and trades
    /// stored) and what the automatic trader worked with.
    pub async fn observations(&self, after: u64) -> Result<Observations, Stopped> {
        self.ask(|r| Request::Observations(after, r)).await
    }

    /// The node's key sealed with `passphrase` (see [`crate::backup`]).
    pub async fn key_backup(
        &self,
        passphrase: String,
    ) -> Result<Result<String, crate::backup::BackupError>, Stopped> {
        self.ask(|r| Request::KeyBackup(crate::backup::Passphrase::new(passphrase), r))
            .await
    }

    /// Moves the node's clock by `delta_ms` (the testnet's clock skew); returns the new offset.
    pub async fn skew_clock(&self, delta_ms: i64) -> Result<i64, Stopped> {
        self.ask(|r| Request::SkewClock(delta_ms, r)).await
    }

    /// Per-minute readings for minutes in `[from_ms, to_ms)`.
    pub async fn readings(
        &self,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<crate::metering::Minute>, Stopped> {
        self.ask(|r| Request::Readings(from_ms, to_ms, r)).await
    }

    /// The attestations this node holds for `node`, in sequence order.
    pub async fn attestations(
        &self,
        node: NodeId,
    ) -> Result<Vec<wattmesh_protocol::MeterAttestation>, Stopped> {
        self.ask(|r| Request::Attestations(node, r)).await
    }

    /// The attestation commitments (privacy mode) this node holds for `node`, in sequence
    /// order.
    pub async fn commitments(
        &self,
        node: NodeId,
    ) -> Result<Vec<wattmesh_protocol::AttestationCommitment>, Stopped> {
        self.ask(|r| Request::Commitments(node, r)).await
    }

    /// Statements, balances, reputation, standing agreements, payments and disputes.
    pub async fn ledger(&self) -> Result<LedgerView, Stopped> {
        self.ask(Request::Ledger).await
    }

    /// Proposes an agreement, declares a payment, decides on a document offered to us, or
    /// writes a dispute note. Answers with the document's id (hex), or why it failed.
    pub async fn doc(&self, req: DocRequest) -> Result<Result<String, String>, Stopped> {
        self.ask(|r| Request::Doc(req, r)).await
    }

    /// The signed export of our trades in slots `from_ms..to_ms`.
    pub async fn signed_export(
        &self,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Result<crate::signed_export::ExportFile, String>, Stopped> {
        self.ask(|r| Request::Export(from_ms, to_ms, r)).await
    }

    /// The automatic trader's limits and what it did lately.
    pub async fn trader(&self) -> Result<TraderView, Stopped> {
        self.ask(Request::Trader).await
    }

    /// The meter's calibration and live per-channel readings.
    pub async fn meter_calibration(&self) -> Result<CalibrationView, Stopped> {
        self.ask(Request::Calibration).await
    }

    /// Calibrates the current clamps: checked, stored (it overrides the config file's
    /// `[meter.ct]` gains and phase corrections from then on) and applied to the running meter
    /// from its next mains cycle.
    pub async fn set_meter_calibration(
        &self,
        cal: crate::meter::ct::Calibration,
    ) -> Result<Result<(), CalibrationError>, Stopped> {
        self.ask(|r| Request::SetCalibration(cal, r)).await
    }

    /// Replaces the automatic trader's limits; they are stored, and override the config
    /// file's `[trader]` from then on.
    pub async fn set_trader(
        &self,
        limits: crate::market::trader::Limits,
    ) -> Result<Result<(), String>, Stopped> {
        self.ask(|r| Request::SetTrader(limits, r)).await
    }

    /// How many days of per-minute readings are kept.
    pub async fn retention_days(&self) -> Result<u32, Stopped> {
        self.ask(Request::Retention).await
    }

    /// Sets how many days of per-minute readings are kept (stored; overrides the config
    /// file's `[meter] retention_days`). Older readings go at the next minute's write.
    pub async fn set_retention_days(&self, days: u32) -> Result<Result<(), String>, Stopped> {
        self.ask(|r| Request::SetRetention(days, r)).await
    }

    /// The charter in effect now.
    pub async fn charter(&self) -> Result<wattmesh_protocol::Charter, Stopped> {
        self.ask(Request::Charter).await
    }

    /// Resolves once the node has stopped.
    pub async fn stopped(&self) {
        self.tx.closed().await;
    }

    /// Stops the node gracefully.
    pub async fn stop(&self) {
        let _ = self.ask(Request::Stop).await;
    }
}

/// The automatic trader as the owner sees it.
#[derive(Debug, Clone, Serialize)]
pub struct TraderView {
    /// Its limits.
    pub limits: crate::market::trader::Limits,
    /// What it did lately, newest last: when (UTC ms) and what, with why.
    pub log: Vec<TraderEntry>,
}

/// One thing the trader did.
#[derive(Debug, Clone, Serialize)]
pub struct TraderEntry {
    /// When, UTC ms.
    pub at_ms: u64,
    /// What, in words.
    pub action: String,
    /// Why, in words, with the figures.
    pub why: String,
    /// Whether it did something (false: it decided to do nothing, and `why` says why).
    pub acted: bool,
    /// The (last) slot it is about, UTC ms.
    pub slot_ms: u64,
}

/// One entry of the trader's log as kept: the action and, for a hold repeated over
/// consecutive slots, how many slots from which.
#[derive(Debug, Clone)]
struct TraderLogItem {
    at_ms: u64,
    action: crate::market::trader::Action,
    slots: u32,
    first_slot_ms: u64,
}

/// The most entries the trader's log keeps.
const TRADER_LOG_LEN: usize = 200;

/// How many gossiped offers may wait for their commit while the previous batch is written.
const MAX_PENDING_STORE: usize = 4096;
/// How often expired offers are deleted from the database (the book drops them at once).
const OFFER_PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Adds an action to the trader's log. A hold for the same reason as the newest entry, for a
/// later slot, extends that entry ("did nothing for 6 slots") instead of filling the log with
/// a night of "no surplus".
fn push_trader_log(
    log: &mut std::collections::VecDeque<TraderLogItem>,
    at_ms: u64,
    action: crate::market::trader::Action,
) {
    use crate::market::trader::Action;
    if let (
        Some(last),
        Action::Hold {
            slot_ms,
            why: new_why,
        },
    ) = (log.back_mut(), &action)
    {
        if let Action::Hold {
            slot_ms: last_slot,
            why: last_why,
        } = &last.action
        {
            if last_why.key() == new_why.key() && slot_ms > last_slot {
                last.slots += 1;
                last.at_ms = at_ms;
                last.action = action;
                return;
            }
        }
    }
    if log.len() >= TRADER_LOG_LEN {
        log.pop_front();
    }
    log.push_back(TraderLogItem {
        at_ms,
        first_slot_ms: action.slot_ms(),
        action,
        slots: 1,
    });
}

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The configuration.
    pub config: Config,
}

/// A started node: its handle and the task to await for its end.
#[derive(Debug)]
pub struct Running {
    /// The handle.
    pub handle: NodeHandle,
    /// Finishes when the node stops.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The web UI, if it is enabled.
    pub web: Option<crate::web::WebServer>,
}

fn parse_addrs(list: &[String], what: &str) -> anyhow::Result<Vec<Multiaddr>> {
    list.iter()
        .map(|a| {
            a.parse::<Multiaddr>()
                .with_context(|| format!("{what} address {a:?} is not a multiaddr"))
        })
        .collect()
}

/// Starts a node: loads its key, database and neighbourhood, and starts the network.
pub async fn start(opts: NodeOptions) -> anyhow::Result<Running> {
    let data_dir = opts.data_dir.clone();
    let cfg = opts.config.clone();
    // A bad web certificate or key stops the start before anything opens.
    let web_tls = if cfg.web.enabled {
        crate::web::load_tls(&cfg.web, &data_dir)?
    } else {
        None
    };
    let (key, created) = identity::load_or_create(&dirs::key_path(&data_dir))?;
    if created {
        info!("created a new node key");
    }
    let db_path = cfg.database_path(&data_dir);
    let store = tokio::task::spawn_blocking(move || Store::open(&db_path)).await??;
    // Settings the owner changed in the web UI outlive restarts and override the config file.
    let mut cfg = cfg;
    if let Some(limits) = store
        .meta(META_TRADER)?
        .and_then(|v| serde_json::from_slice::<crate::market::trader::Limits>(&v).ok())
    {
        info!("automatic trader: the limits last set in the web UI (they override [trader])");
        cfg.trader = limits;
    }
    if let Some(days) = store
        .meta(META_RETENTION)?
        .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
        .map(u32::from_le_bytes)
    {
        info!(
            days,
            "readings retention: as last set in the web UI (overrides [meter])"
        );
        cfg.meter.retention_days = days;
    }
    if let Some(cal) = store
        .meta(META_CALIBRATION)?
        .and_then(|v| serde_json::from_slice::<crate::meter::ct::Calibration>(&v).ok())
    {
        match cal.apply(&cfg.meter.ct) {
            Ok(ct) => {
                info!(
                    "current clamps: the calibration last set in the web UI (overrides [meter.ct])"
                );
                cfg.meter.ct = ct;
            }
            // The wiring in the config file changed since: the file's calibration applies.
            Err(e) => warn!("the calibration set in the web UI no longer fits [meter.ct]: {e}"),
        }
    }
    let n = {
        let (store, dir) = (store.clone(), data_dir.clone());
        tokio::task::spawn_blocking(move || Neighbourhood::load(&dir, &store)).await??
    };
    let Some(n) = n else {
        bail!(
            "this node has not joined a neighbourhood yet: run `wattmesh init --found NAME` to \
             found one, or `wattmesh join CODE` with an invite from a neighbour"
        );
    };
    let clock = Clock::new(&cfg.clock);
    let settings = cfg.behaviour_settings(n.id());
    let mut bootstrap = parse_addrs(&cfg.network.bootstrap, "bootstrap")?;
    {
        // Peers remembered from earlier runs are redialled too.
        let store = store.clone();
        let known = tokio::task::spawn_blocking(move || store.peers()).await??;
        for (peer, addrs) in known {
            let Ok(peer) = PeerId::from_bytes(&peer) else {
                continue;
            };
            for a in addrs.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
                let with_id = a.with_p2p(peer).unwrap_or_else(|a| a);
                if !bootstrap.contains(&with_id) {
                    bootstrap.push(with_id);
                }
            }
        }
    }
    let net_cfg = NetConfig {
        behaviour: settings,
        psk: n.psk,
        listen: parse_addrs(&cfg.network.listen, "listen")?,
        bootstrap,
        idle_timeout: Duration::from_secs(cfg.network.idle_timeout_secs.max(1)),
        reservations: cfg.reach.reservations,
        max_reservations: cfg.reach.max_reservations as usize,
        external: parse_addrs(&cfg.reach.external_addresses, "external")?,
    };
    let span = info_span!("node", id = %key.node_id().short());
    let entered = span.clone().entered();
    let (work, work_rx) = worker::channel();
    let (out_tx, out_rx) = mpsc::channel(worker::WORK_QUEUE);
    let checks = worker::Checks::new(n.chain.clone(), n.roster.clone(), clock.clone(), out_tx);
    let (net, events) = net::spawn(
        &key,
        net_cfg,
        worker::gossip_sink(checks.clone(), work.clone()),
    )?;
    worker::spawn(work_rx, checks, net.clone())?;
    {
        let r = crate::neighbourhood::read(&n.roster);
        let me = key.node_id();
        if r.is_former(&me) {
            warn!("this node was removed from the neighbourhood; its neighbours refuse it");
        } else if !r.is_member(&me) {
            warn!(
                "this node is not a member yet: neighbours accept it once they have its join \
                 record, which they fetch when it connects"
            );
        }
    }
    // A key rotation received before a restart, not yet applied.
    let pending_rekey = {
        let store = store.clone();
        let rekeys = tokio::task::spawn_blocking(move || store.rekeys()).await??;
        rekeys
            .iter()
            .filter_map(|b| wattmesh_protocol::roster::open_rekey(b, &n.chain).ok())
            .filter(|r| r.epoch > n.epoch)
            .filter_map(|r| {
                let psk = wattmesh_protocol::roster::open_network_key(&key, &r.sealed)?;
                Some((r.epoch, r.effective_ms, psk))
            })
            .max_by_key(|p| p.0)
    };
    let (meter_tx, meter_rx) = mpsc::channel(64);
    let (meter_enabled, meter_kinds, meter_names, calibrator) = match crate::metering::open(
        &cfg.meter,
        &key.node_id().short(),
        Some(Box::new(store.clone())),
    )? {
        Some(source) => {
            let kinds = source.info().channels.iter().map(|c| c.kind).collect();
            let names = source
                .info()
                .channels
                .iter()
                .map(|c| c.name.clone())
                .collect();
            let calibrator = source.calibrator();
            let slot_ms = n.chain.at(clock.now_ms()).charter.slot_ms();
            crate::metering::spawn(source, &cfg.meter, slot_ms, clock.clone(), meter_tx)?;
            (true, kinds, names, calibrator)
        }
        None => (false, Vec::new(), Vec::new(), None),
    };
    let (tx, rx) = mpsc::channel(256);
    let handle = NodeHandle {
        tx,
        peer_id: net.local_peer_id(),
    };
    drop(entered);
    let market = {
        let (store, me) = (store.clone(), key.node_id());
        let (records, attestations) = tokio::task::spawn_blocking(move || {
            let records = store.records()?;
            // Our recent attestations and our counterparties', for settling.
            let mut nodes: std::collections::BTreeSet<NodeId> = [me].into();
            for r in &records {
                if let crate::market::Record::Trade { envelope, .. } = r {
                    if let Ok(t) = Envelope::from_bytes(envelope)
                        .and_then(|e| e.payload_as::<wattmesh_protocol::Trade>())
                    {
                        nodes.insert(t.maker());
                        nodes.insert(t.taker);
                    }
                }
            }
            let mut atts = Vec::new();
            for n in nodes {
                atts.extend(store.recent_attestations(&n, 400)?);
            }
            Ok::<_, crate::store::StoreError>((records, atts))
        })
        .await??;
        let key = std::sync::Arc::new(NodeKey::from_secret(&key.secret_bytes()));
        let m = crate::market::Market::restore(key, n.chain.clone(), &records, &attestations);
        info!(
            offers = m.book.len(),
            trades = m.trades().count(),
            "restored"
        );
        for e in m.book.sorted_from(0) {
            let _ = work.send(Work::Own(Box::new(e.offer.clone()))).await;
        }
        m
    };
    let (responses_tx, responses_rx) = mpsc::channel(1024);
    let (restore_tx, restore_rx) = mpsc::channel(1024);
    let (synced_tx, synced_rx) = mpsc::channel(256);
    let web_store = store.clone();
    // The trader's same-slot history: the last week's readings.
    let profile = {
        let now = clock.now_ms();
        let slot_ms = n.chain.at(now).charter.slot_ms();
        let store = store.clone();
        let from = now.saturating_sub(crate::forecast::DAYS as u64 * 86_400_000);
        let rows = tokio::task::spawn_blocking(move || store.readings(from, now))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let mut p = crate::forecast::SlotProfile::new(slot_ms);
        for (_, bytes) in rows {
            if let Ok(m) = postcard::from_bytes::<crate::metering::Minute>(&bytes) {
                p.record(m.minute_ms, f64::from(m.grid_w));
            }
        }
        p
    };
    let core = Core {
        key: std::sync::Arc::new(key),
        n,
        data_dir,
        probation: HashMap::new(),
        pending_rekey,
        presence: HashMap::new(),
        presence_shared: None,
        clock,
        store,
        net,
        work,
        market,
        replies: HashMap::new(),
        next_reply: 1,
        cmds: HashMap::new(),
        next_cmd: 1,
        responses_tx,
        restore_tx,
        synced_tx,
        trader: cfg.trader.clone(),
        last_trader_ms: 0,
        trader_log: std::collections::VecDeque::new(),
        timeline: timeline::Timeline::default(),
        power_history: std::collections::VecDeque::new(),
        profile,
        counters: Counters::default(),
        quotas: HashMap::new(),
        quota_per_minute: cfg.network.requests_per_peer_per_minute.max(1),
        pending_store: Vec::new(),
        store_job: None,
        offers_pruned: None,
        started: Instant::now(),
        mdns_config: cfg.mdns.clone(),
        mdns: None,
        meter: MeterStatus {
            enabled: meter_enabled,
            privacy: cfg.meter.privacy,
            ..MeterStatus::default()
        },
        privacy: cfg.meter.privacy,
        chain_breaks: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
        private_sent: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
        meter_kinds,
        meter_names,
        meter_source: cfg.meter.source,
        last_sample: None,
        ct: cfg.meter.ct.clone(),
        calibrator,
        retention_ms: u64::from(cfg.meter.retention_days) * 86_400_000,
    };
    let web = if cfg.web.enabled {
        Some(crate::web::spawn(&cfg.web, web_tls, handle.clone(), web_store, &opts.data_dir).await?)
    } else {
        None
    };
    let task = tokio::spawn(
        core.run(Inbox {
            requests: rx,
            events,
            outcomes: out_rx,
            meter: meter_rx,
            responses: responses_rx,
            restores: restore_rx,
            synced: synced_rx,
        })
        .instrument(span),
    );
    Ok(Running { handle, task, web })
}

struct Core {
    key: std::sync::Arc<NodeKey>,
    n: Neighbourhood,
    data_dir: PathBuf,
    /// Peers connected but not (yet) members, since when.
    probation: HashMap<PeerId, Instant>,
    /// A rotated network key to switch to: (epoch, effective UTC ms, key).
    pending_rekey: Option<(u32, u64, [u8; 32])>,
    /// Each member's newest presence (signed addresses): issued ms and envelope bytes.
    presence: HashMap<NodeId, (u64, Vec<u8>)>,
    /// When this node last shared its own addresses.
    presence_shared: Option<Instant>,
    clock: Clock,
    store: Store,
    net: NetHandle,
    work: mpsc::Sender<Work>,
    market: crate::market::Market,
    replies: HashMap<u64, libp2p::request_response::ResponseChannel<TradeResponse>>,
    next_reply: u64,
    cmds: HashMap<u64, CmdReply>,
    next_cmd: u64,
    responses_tx: mpsc::Sender<(u64, Option<TradeResponse>)>,
    restore_tx: mpsc::Sender<crate::market::Record>,
    /// Peers whose roster and charters we fetched, ready for the rest of the catch-up.
    synced_tx: mpsc::Sender<PeerId>,
    trader: crate::market::trader::Limits,
    last_trader_ms: u64,
    trader_log: std::collections::VecDeque<TraderLogItem>,
    /// Wall-clock times of offers seen, proposals sent and trades stored.
    timeline: timeline::Timeline,
    /// Recent grid power readings (time, W), for the trader's forecast.
    power_history: std::collections::VecDeque<(u64, f64)>,
    /// Mean grid power per slot of the day over the last week, for the trader's forecast.
    profile: crate::forecast::SlotProfile,
    counters: Counters,
    quotas: HashMap<PeerId, (Instant, u32)>,
    quota_per_minute: u32,
    pending_store: Vec<(OfferId, Vec<u8>)>,
    /// The background commit of gossiped offers, or their pruning, under way (one at a time:
    /// the node task does not wait for it, so offers keep arriving in the book meanwhile).
    store_job: Option<tokio::task::JoinHandle<()>>,
    /// When expired offers were last deleted from the database.
    offers_pruned: Option<Instant>,
    started: Instant,
    mdns_config: crate::config::MdnsConfig,
    mdns: Option<crate::discovery::Mdns>,
    meter: MeterStatus,
    /// `[meter] privacy`: our attestations go only to counterparties, commitments to all.
    privacy: bool,
    chain_breaks: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Private attestations delivered to counterparties (by the tasks that send them).
    private_sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    meter_kinds: Vec<crate::meter::ChannelKind>,
    meter_names: Vec<String>,
    /// The configured meter source.
    meter_source: crate::metering::SourceKind,
    /// The latest reading of every channel.
    last_sample: Option<Box<crate::meter::Sample>>,
    /// The current clamps' settings with the calibration in use, and the handle that changes
    /// the running meter's.
    ct: crate::meter::ct::CtConfig,
    calibrator: Option<crate::meter::Calibrator>,
    retention_ms: u64,
}

/// Everything the node task listens to.
struct Inbox {
    requests: mpsc::Receiver<Request>,
    events: mpsc::Receiver<NetEvent>,
    outcomes: mpsc::Receiver<Outcome>,
    meter: mpsc::Receiver<crate::metering::MeterEvent>,
    responses: mpsc::Receiver<(u64, Option<TradeResponse>)>,
    restores: mpsc::Receiver<crate::market::Record>,
    synced: mpsc::Receiver<PeerId>,
}

impl Core {
    async fn run(mut self, inbox: Inbox) -> anyhow::Result<()> {
        let Inbox {
            mut requests,
            mut events,
            mut outcomes,
            mut meter,
            mut responses,
            mut restores,
            mut synced,
        } = inbox;
        let mut flush = tokio::time::interval(Duration::from_secs(1));
        // The market's clock: once a simulated second, but at most 20 times a real second.
        let tick_ms = (1000 / self.clock.speed()).max(50);
        let mut tick = tokio::time::interval(Duration::from_millis(tick_ms));
        let mut prune = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                req = requests.recv() => match req {
                    Some(Request::Stop(reply)) => {
                        self.settle_store_job().await;
                        self.flush().await;
                        self.settle_store_job().await;
                        let store = self.store.clone();
                        match tokio::task::spawn_blocking(move || store.make_durable()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => warn!("the last commit failed: {e}"),
                            Err(e) => warn!("the last commit panicked: {e}"),
                        }
                        self.net.stop().await;
                        let _ = reply.send(());
                        break;
                    }
                    Some(req) => self.request(req).await,
                    None => break,
                },
                ev = events.recv() => match ev {
                    Some(ev) => self.net_event(ev).await,
                    None => bail!("the network task stopped"),
                },
                Some(outcome) = outcomes.recv() => self.outcome(outcome).await,
                Some((token, resp)) = responses.recv() => {
                    self.feed(crate::market::Input::Response { token, resp }).await;
                }
                Some(r) = restores.recv() => self.feed(crate::market::Input::Restore(r)).await,
                Some(peer) = synced.recv() => self.catch_up_after_roster(peer),
                _ = tick.tick() => {
                    self.feed(crate::market::Input::Tick).await;
                    self.apply_rekey().await;
                    // The trader acts every five simulated seconds (its ramp moves in steps of
                    // a tenth of the window, so more often would change nothing).
                    let now = self.clock.now_ms();
                    if self.trader.enabled && now >= self.last_trader_ms + 5_000 {
                        self.last_trader_ms = now;
                        let input = self.trader_input();
                        self.feed(input).await;
                    }
                }
                Some(ev) = meter.recv() => self.meter_event(ev).await,
                _ = flush.tick() => self.flush().await,
                _ = prune.tick() => self.prune().await,
            }
        }
        info!("stopped");
        Ok(())
    }

    /// Whether a background store job is still running.
    fn store_busy(&self) -> bool {
        self.store_job.as_ref().is_some_and(|j| !j.is_finished())
    }

    /// Waits for the background store job, if any.
    async fn settle_store_job(&mut self) {
        if let Some(job) = self.store_job.take() {
            if let Err(e) = job.await {
                warn!("storing offers panicked: {e}");
            }
        }
    }

    /// Commits the accepted offers gathered since the last flush (once a second), in one
    /// transaction that waits for no disk flush, in the background: gossiped offers are others'
    /// signed messages, which sync brings back if a power cut loses them, so the node task goes
    /// on taking offers into the book meanwhile.
    /// While a commit is under way the next batch keeps gathering, up to [`MAX_PENDING_STORE`]
    /// (then the node waits for the commit).
    async fn flush(&mut self) {
        if self.pending_store.is_empty() {
            return;
        }
        if self.store_busy() {
            if self.pending_store.len() < MAX_PENDING_STORE {
                return;
            }
            self.settle_store_job().await;
        }
        let batch = std::mem::take(&mut self.pending_store);
        let store = self.store.clone();
        self.store_job = Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = store.put_gossiped_offers(&batch) {
                warn!("storing offers failed: {e}");
            }
        }));
    }

    async fn prune(&mut self) {
        // The market drops expired offers from the book on its own ticks; the database is
        // cleaned here, from what it holds, in the background, once a minute (it reads every
        // stored offer; skipped while a commit of offers is under way: a later tick does it).
        let due = self
            .offers_pruned
            .is_none_or(|t| t.elapsed() >= OFFER_PRUNE_EVERY);
        if due && !self.store_busy() {
            self.offers_pruned = Some(Instant::now());
            let now = self.clock.now_ms();
            let store = self.store.clone();
            self.store_job = Some(tokio::task::spawn_blocking(move || {
                match store.prune_expired_offers(now) {
                    Ok(n) if n > 0 => debug!(offers = n, "pruned expired offers"),
                    Ok(_) => {}
                    Err(e) => warn!("pruning offers failed: {e}"),
                }
            }));
        }
        self.quotas
            .retain(|_, (t, _)| t.elapsed() < Duration::from_secs(60));
        self.end_probations();
        self.refresh_presence().await;
    }

    async fn outcome(&mut self, o: Outcome) {
        match o {
            Outcome::Accepted { accepted, synced } => {
                if synced {
                    self.counters.sync_accepted += 1;
                } else {
                    self.counters.gossip_accepted += 1;
                }
                let bytes = accepted.envelope.to_bytes();
                match accepted.msg {
                    Msg::Offer(o) => {
                        if o.maker != self.key.node_id() {
                            self.timeline.record(timeline::offer_event(&o, false));
                            self.pending_store.push((o.id(), bytes.clone()));
                        }
                        self.feed(crate::market::Input::Offer(o, bytes)).await;
                    }
                    // Ours too: a node that lost its database gets its chain back by sync.
                    Msg::Attestation(a) => {
                        self.keep_chain(Some((a.clone(), bytes.clone())), None);
                        self.feed(crate::market::Input::Attestation(a, bytes)).await;
                    }
                    Msg::Commitment(c) => {
                        if c.node != self.key.node_id() {
                            self.counters.commitments_received += 1;
                        }
                        self.keep_chain(None, Some((c, bytes)));
                    }
                    _ => {}
                }
            }
            Outcome::Private { reply, checked } => self.on_private(reply, checked).await,
            Outcome::Roster {
                bytes,
                transitions,
                synced,
            } => self.on_roster(bytes, transitions, synced).await,
            Outcome::Charter { bytes, synced } => self.on_charter(bytes, synced).await,
            Outcome::Rekey {
                bytes,
                rekey,
                synced,
            } => self.on_rekey(bytes, *rekey, synced).await,
            Outcome::Presence {
                bytes,
                presence,
                synced,
            } => self.on_presence(bytes, *presence, synced).await,
            Outcome::RefusedRecord {
                why,
                provable,
                synced,
            } => {
                debug!(%why, synced, "refused a membership message");
                if synced {
                    self.counters.sync_refused += 1;
                } else if provable {
                    self.counters.gossip_rejected += 1;
                } else {
                    self.counters.gossip_ignored += 1;
                }
            }
            Outcome::Refused { why, synced } => {
                if synced {
                    self.counters.sync_refused += 1;
                } else if why.is_provable() {
                    self.counters.gossip_rejected += 1;
                } else {
                    self.counters.gossip_ignored += 1;
                }
                if why == validate::Invalid::Replay {
                    self.counters.replays_refused += 1;
                }
            }
        }
    }

    /// Counts an inbound request against the peer's quota; false when over it.
    fn within_quota(&mut self, peer: PeerId) -> bool {
        let e = self.quotas.entry(peer).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= Duration::from_secs(60) {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
        if e.1 > self.quota_per_minute {
            self.counters.requests_over_quota += 1;
            return false;
        }
        true
    }

    async fn net_event(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::SyncRequest {
                peer,
                request,
                channel,
            } => {
                let resp = if self.within_quota(peer) {
                    self.answer_sync(peer, request).await
                } else {
                    SyncResponse::Refused
                };
                let _ = self.net.respond_sync(channel, resp).await;
            }
            NetEvent::TradeRequest {
                peer,
                request,
                channel,
            } => {
                let from = net::node_id_of(&peer);
                let proposal =
                    matches!(request, wattmesh_protocol::trade::TradeRequest::Propose(_));
                let private = matches!(
                    request,
                    wattmesh_protocol::trade::TradeRequest::Attestation { .. }
                );
                match from {
                    // A counterparty's private attestation (privacy mode): checked on the
                    // worker, stored, then answered (`attest.rs`).
                    Some(from) if private => {
                        self.private_request(from, peer, request, channel).await;
                    }
                    // New trades only with members; trades already agreed settle whatever
                    // became of the counterparty since.
                    Some(from) if proposal && !self.is_member(&from) => {
                        let _ = self
                            .net
                            .respond_trade(channel, TradeResponse::Reject(RejectReason::Invalid))
                            .await;
                    }
                    Some(from) if self.within_quota(peer) => {
                        let reply = self.next_reply;
                        self.next_reply += 1;
                        self.replies.insert(reply, channel);
                        self.feed(crate::market::Input::Request {
                            from,
                            req: request,
                            reply,
                        })
                        .await;
                    }
                    _ => {
                        let _ = self
                            .net
                            .respond_trade(channel, TradeResponse::Reject(RejectReason::Busy))
                            .await;
                    }
                }
            }
            NetEvent::PeerConnected(peer, addr) => {
                self.remember_peer(peer, addr);
                // Charters and roster first, so that what follows is judged by who the
                // members are; then `catch_up_after_roster`.
                self.on_connected(peer);
            }
            NetEvent::Listening(addr) => self.start_mdns(&addr),
            // Shared with members once the roster carries addresses (membership, issue 4).
            NetEvent::ExternalAddresses(addrs) => self.share_presence(addrs).await,
            NetEvent::PeerDisconnected(_) => {}
        }
    }

    /// Starts mDNS, if enabled, once the node listens on a TCP port.
    fn start_mdns(&mut self, addr: &Multiaddr) {
        if !self.mdns_config.enabled || self.mdns.is_some() {
            return;
        }
        let Some(port) = addr.iter().find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        }) else {
            return;
        };
        let tag = self.n.id().discovery_tag(&self.n.psk);
        match crate::discovery::start(
            &self.mdns_config,
            self.net.local_peer_id(),
            &tag,
            port,
            self.net.clone(),
        ) {
            Ok(m) => self.mdns = Some(m),
            Err(e) => warn!("mDNS could not start: {e}"),
        }
    }

    fn remember_peer(&self, peer: PeerId, addr: Multiaddr) {
        // Only addresses we dialled are worth redialling (an inbound address is an
        // ephemeral port); identify refines this with issue 4.
        if !addr
            .iter()
            .any(|p| matches!(p, libp2p::multiaddr::Protocol::Tcp(port) if port != 0))
        {
            return;
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let _ = store.put_peer(&peer.to_bytes(), &[addr.to_string()]);
        });
    }

    /// The rest of a newly connected peer's catch-up, once its roster is in the worker's queue:
    /// trades we share, offers, and attestations.
    fn catch_up_after_roster(&mut self, peer: PeerId) {
        self.catch_up(peer);
        // Our own chain first (a node whose database was lost continues it rather than
        // restarting at 0), then the peer's.
        self.fetch_attestations(peer, self.key.node_id());
        if let Some(them) = net::node_id_of(&peer) {
            self.fetch_attestations(peer, them);
        }
    }

    /// Fetches a newly connected peer's offers, page by page, through the worker.
    fn catch_up(&self, peer: PeerId) {
        self.recover_trades(peer);
        let net = self.net.clone();
        let work = self.work.clone();
        let from = slot::slot_start(&self.n.chain.latest().charter, self.clock.now_ms());
        tokio::spawn(async move {
            let mut skip = 0u32;
            for _ in 0..64 {
                let req = SyncRequest::Offers {
                    from_slot_ms: from,
                    skip,
                };
                match net.sync(peer, req).await {
                    Ok(Ok(SyncResponse::Envelopes { items, more })) => {
                        let n = items.len().min(MAX_SYNC_ITEMS);
                        for item in items.into_iter().take(MAX_SYNC_ITEMS) {
                            if work.send(Work::Synced(item)).await.is_err() {
                                return;
                            }
                        }
                        if !more || n == 0 {
                            return;
                        }
                        skip += n as u32;
                    }
                    Ok(Ok(SyncResponse::Refused)) => return,
                    Ok(Err(e)) => {
                        debug!(%peer, "sync failed: {e}");
                        return;
                    }
                    Err(_) => return,
                }
            }
        });
    }

    /// The co-signed trades we share with `peer`, for slots from `from_slot_ms`, one page.
    /// Fetches the trades we share with a newly connected peer and stores any we lack: a node
    /// whose database was lost, but whose key was restored, gets its trades back this way.
    fn recover_trades(&self, peer: PeerId) {
        let (net, chain, restore) = (
            self.net.clone(),
            self.n.chain.clone(),
            self.restore_tx.clone(),
        );
        let me = self.key.node_id();
        tokio::spawn(async move {
            let mut skip = 0u32;
            for _ in 0..1024 {
                let req = SyncRequest::Shared {
                    from_slot_ms: 0,
                    skip,
                };
                let Ok(Ok(SyncResponse::Envelopes { items, more })) = net.sync(peer, req).await
                else {
                    return;
                };
                let n = items.len();
                for bytes in items.into_iter().take(MAX_SYNC_ITEMS) {
                    let Ok(acc) = validate::validate_archival(&bytes, &chain, false) else {
                        continue;
                    };
                    let Msg::Trade(t) = acc.msg else { continue };
                    if t.maker() != me && t.taker != me {
                        continue;
                    }
                    // The market keeps what it lacks and persists it.
                    let record = crate::market::Record::Trade {
                        id: t.id(),
                        state: crate::market::TradeState::Agreed,
                        envelope: bytes,
                    };
                    if restore.send(record).await.is_err() {
                        return;
                    }
                }
                if !more || n == 0 {
                    return;
                }
                skip += n as u32;
            }
        });
    }

    async fn shared_trades(&self, peer: PeerId, from_slot_ms: u64, skip: u32) -> SyncResponse {
        let Some(them) = net::node_id_of(&peer) else {
            return SyncResponse::Refused;
        };
        let mut shared: Vec<(u64, Vec<u8>)> = self
            .market
            .trades()
            .filter(|t| t.state == crate::market::TradeState::Agreed)
            .filter(|t| {
                (t.trade.maker() == them || t.trade.taker == them)
                    && t.trade.slot_ms >= from_slot_ms
            })
            .map(|t| (t.trade.slot_ms, t.envelope.clone()))
            .collect();
        shared.sort();
        let start = (skip as usize).min(shared.len());
        let items: Vec<Vec<u8>> = shared[start..]
            .iter()
            .take(MAX_SYNC_ITEMS)
            .map(|(_, b)| b.clone())
            .collect();
        let more = start + items.len() < shared.len();
        SyncResponse::Envelopes { items, more }
    }

    async fn answer_sync(&self, peer: PeerId, req: SyncRequest) -> SyncResponse {
        match req {
            SyncRequest::Offers { from_slot_ms, skip } => {
                let all = self.market.book.sorted_from(from_slot_ms);
                let start = (skip as usize).min(all.len());
                let page: Vec<Vec<u8>> = all[start..]
                    .iter()
                    .take(MAX_SYNC_ITEMS)
                    .map(|e| e.envelope.clone())
                    .collect();
                let more = start + page.len() < all.len();
                SyncResponse::Envelopes { items: page, more }
            }
            SyncRequest::Charters { from_version } => SyncResponse::Envelopes {
                items: self
                    .n
                    .chain
                    .versions()
                    .iter()
                    .filter(|c| c.charter.version >= from_version)
                    .map(|c| c.envelope.to_bytes())
                    .collect(),
                more: false,
            },
            SyncRequest::Attestations { node, from_seq } => {
                self.chain_page(peer, node, from_seq).await
            }
            SyncRequest::Shared { from_slot_ms, skip } => {
                self.shared_trades(peer, from_slot_ms, skip).await
            }
            SyncRequest::Roster { skip } => self.roster_page(skip).await,
        }
    }

    /// Our listening addresses with `/p2p/<peer id>`, as others dial them.
    async fn dialable_addrs(&self) -> Vec<String> {
        let me = self.net.local_peer_id();
        self.net
            .listening()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.with_p2p(me).unwrap_or_else(|a| a).to_string())
            .collect()
    }

    async fn request(&mut self, req: Request) {
        match req {
            r @ (Request::Ledger(_) | Request::Doc(..) | Request::Export(..)) => {
                self.ledger_request(r).await
            }
            Request::Status(reply) => {
                let listening = self.dialable_addrs().await;
                let peers = self.net.peers().await.unwrap_or_default();
                let reach = self.net.reach().await.unwrap_or_default();
                let now = self.clock.now_ms();
                let charter = self.n.chain.at(now);
                let _ = reply.send(Status {
                    node_id: self.key.node_id().to_hex(),
                    short_id: self.key.node_id().short(),
                    peer_id: self.net.local_peer_id().to_string(),
                    neighbourhood: charter.charter.name.clone(),
                    neighbourhood_id: self.n.id().to_hex(),
                    charter_version: charter.charter.version,
                    clock: self.clock.state(),
                    now_ms: now,
                    listening,
                    peers,
                    reach,
                    offers: self.market.book.len(),
                    meter: self.meter.clone(),
                    counters: Counters {
                        attestation_chain_breaks: self
                            .chain_breaks
                            .load(std::sync::atomic::Ordering::Relaxed),
                        attestations_sent_privately: self
                            .private_sent
                            .load(std::sync::atomic::Ordering::Relaxed),
                        ..self.counters.clone()
                    },
                    uptime_secs: self.started.elapsed().as_secs(),
                });
            }
            Request::Offers(reply) => {
                let list = self
                    .market
                    .book
                    .sorted_from(0)
                    .into_iter()
                    .map(|e| OfferView::from(&e.offer))
                    .collect();
                let _ = reply.send(list);
            }
            Request::Post(p, reply) => {
                let now = self.clock.now_ms();
                let c = self.n.chain.at(now).charter.clone();
                let slot_ms = p.slot_ms.unwrap_or_else(|| slot::first_open_slot(&c, now));
                let cmd = self.cmd(CmdReply::Post(reply));
                self.feed(crate::market::Input::Post {
                    cmd,
                    side: match p.side {
                        SideArg::Sell => Side::Sell,
                        SideArg::Buy => Side::Buy,
                    },
                    quantity_wh: p.quantity_wh,
                    price: p.price,
                    slot_ms,
                    min_fill_wh: p.min_fill_wh.unwrap_or(1),
                    nonce: random_u64(),
                })
                .await;
            }
            Request::Cancel(nonce, reply) => {
                let cmd = self.cmd(CmdReply::Cancel(reply));
                self.feed(crate::market::Input::Cancel { cmd, nonce }).await;
            }
            Request::Dial(addr, reply) => {
                let r = self
                    .net
                    .dial(addr)
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                let _ = reply.send(r);
            }
            Request::Score(peer, reply) => {
                let _ = reply.send(self.net.score(peer).await.ok().flatten());
            }
            Request::PublishRaw(topic, bytes, reply) => {
                let r = self
                    .net
                    .publish(topic, bytes)
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                let _ = reply.send(r);
            }
            Request::Invite(args, reply) => {
                let _ = reply.send(self.invite(args).await);
            }
            Request::Members(reply) => {
                let _ = reply.send(self.member_list().await);
            }
            Request::Tickets(reply) => {
                let _ = reply.send(self.ticket_list().await);
            }
            Request::Revoke(ticket, reply) => {
                let _ = reply.send(self.revoke(&ticket).await);
            }
            Request::Remove(member, moved_to, reply) => {
                let _ = reply.send(self.remove(&member, moved_to.as_deref()).await);
            }
            Request::Amend(a, reply) => {
                let _ = reply.send(self.amend(a).await);
            }
            Request::OfferBytes(nonce, reply) => {
                let bytes = self
                    .market
                    .book
                    .sorted_from(0)
                    .into_iter()
                    .find(|e| e.offer.nonce == nonce)
                    .map(|e| e.envelope.clone());
                let _ = reply.send(bytes);
            }
            Request::Take(maker, nonce, energy_wh, reply) => {
                let cmd = self.cmd(CmdReply::Take(reply));
                self.feed(crate::market::Input::Take {
                    cmd,
                    offer: OfferId { maker, nonce },
                    energy_wh,
                    nonce: random_u64(),
                })
                .await;
            }
            Request::Trades(reply) => {
                let me = self.key.node_id();
                let settlements: HashMap<_, _> = self.market.settlements().collect();
                let list = self
                    .market
                    .trades()
                    .map(|t| {
                        let mut v = trade_view(
                            &me,
                            &t.trade,
                            t.state,
                            settlements.get(&t.trade.id()).copied(),
                        );
                        // Both parties' signatures, checked again now against the charter
                        // the trade names.
                        v.signatures_verified =
                            validate::validate_archival(&t.envelope, &self.n.chain, false).is_ok();
                        v.dispute = self.market.dispute_status(&t.trade.id()).map(|d| d.0);
                        v
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Request::Observations(after, reply) => {
                let _ = reply.send(Observations {
                    timeline: self.timeline.after(after),
                    orders: self.market.trader_orders().copied().collect(),
                    clock_offset_ms: self.clock.offset_ms(),
                });
            }
            Request::KeyBackup(passphrase, reply) => {
                // Argon2id takes a while: off the node task.
                let key = self.key.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = reply.send(crate::backup::seal(&key, passphrase.expose()));
                });
            }
            Request::SkewClock(delta, reply) => {
                self.clock.skew_by(delta);
                warn!(
                    delta_ms = delta,
                    offset_ms = self.clock.offset_ms(),
                    "clock skewed"
                );
                let _ = reply.send(self.clock.offset_ms());
            }
            Request::Readings(from, to, reply) => {
                let store = self.store.clone();
                let list = tokio::task::spawn_blocking(move || store.readings(from, to))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(_, b)| postcard::from_bytes(&b).ok())
                    .collect();
                let _ = reply.send(list);
            }
            Request::Attestations(node, reply) => {
                let store = self.store.clone();
                let list =
                    tokio::task::spawn_blocking(move || store.attestations(&node, 0, usize::MAX))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|b| Envelope::from_bytes(&b).ok()?.payload_as().ok())
                        .collect();
                let _ = reply.send(list);
            }
            Request::Commitments(node, reply) => {
                let store = self.store.clone();
                let list =
                    tokio::task::spawn_blocking(move || store.commitments(&node, 0, usize::MAX))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|b| Envelope::from_bytes(&b).ok()?.payload_as().ok())
                        .collect();
                let _ = reply.send(list);
            }
            Request::Trader(reply) => {
                let c = &self.n.chain.at(self.clock.now_ms()).charter;
                let ctx = crate::market::trader::text::Ctx {
                    currency: c.currency.clone(),
                    utc_offset_minutes: self.trader.utc_offset_minutes,
                    slot_minutes: u64::from(c.slot_minutes),
                };
                let log = self
                    .trader_log
                    .iter()
                    .map(|e| {
                        let t = crate::market::trader::text::describe(
                            &e.action,
                            &ctx,
                            e.slots,
                            e.first_slot_ms,
                        );
                        TraderEntry {
                            at_ms: e.at_ms,
                            acted: e.action.acts(),
                            slot_ms: e.action.slot_ms(),
                            action: t.what,
                            why: t.why,
                        }
                    })
                    .collect();
                let _ = reply.send(TraderView {
                    limits: self.trader.clone(),
                    log,
                });
            }
            Request::Calibration(reply) => {
                let _ = reply.send(self.calibration_view());
            }
            Request::SetCalibration(cal, reply) => {
                let r = self.set_calibration(cal).await;
                let _ = reply.send(r);
            }
            Request::SetTrader(limits, reply) => {
                info!(
                    enabled = limits.enabled,
                    "trader limits changed by the owner"
                );
                // Stored first: a change the node could not keep is refused, not half made.
                let saved = match serde_json::to_vec(&limits) {
                    Ok(bytes) => self.put_setting(META_TRADER, bytes).await,
                    Err(e) => Err(format!("the limits cannot be written: {e}")),
                };
                if saved.is_ok() {
                    self.trader = limits;
                }
                let _ = reply.send(saved);
            }
            Request::Retention(reply) => {
                let _ = reply.send((self.retention_ms / 86_400_000) as u32);
            }
            Request::SetRetention(days, reply) => {
                let saved = self
                    .put_setting(META_RETENTION, days.to_le_bytes().to_vec())
                    .await;
                if saved.is_ok() {
                    info!(days, "readings retention changed by the owner");
                    self.retention_ms = u64::from(days) * 86_400_000;
                }
                let _ = reply.send(saved);
            }
            Request::Charter(reply) => {
                let _ = reply.send(self.n.chain.at(self.clock.now_ms()).charter.clone());
            }
            Request::Stop(_) => unreachable!("handled in run"),
        }
    }

    /// Stores an owner's setting durably (off the node task).
    async fn put_setting(&self, key: &'static str, value: Vec<u8>) -> Result<(), String> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.put_meta(key, &value)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the setting could not be stored: {e}")),
            Err(e) => Err(format!("the setting could not be stored: {e}")),
        }
    }

    fn calibration_view(&self) -> CalibrationView {
        use crate::metering::SourceKind;
        let calibratable = self.calibrator.is_some();
        let note = match self.meter_source {
            _ if calibratable => "Set each clamp's gain (amperes per ADC count) and phase \
                correction, and the voltage reference's gain, against a trusted meter. A change \
                applies from the next mains cycle, without a restart, and is kept over restarts."
                .to_owned(),
            SourceKind::None => "No meter is configured on this node.".to_owned(),
            SourceKind::Simulated => {
                "The simulated meter needs no calibration: its readings are computed.".to_owned()
            }
            SourceKind::Modbus | SourceKind::P1 => "This meter is calibrated at source: the \
                energy meter measures and keeps its own registers, and the node reads them as \
                they are. There is nothing to calibrate here."
                .to_owned(),
            SourceKind::Ct => "The current clamps are not running, so they cannot be \
                calibrated now; see the node's log."
                .to_owned(),
        };
        let live = self
            .last_sample
            .as_ref()
            .map(|s| {
                s.readings
                    .iter()
                    .filter_map(|r| {
                        Some(ChannelLive {
                            name: self.meter_names.get(r.channel)?.clone(),
                            kind: *self.meter_kinds.get(r.channel)?,
                            power_w: r.power_w,
                            status: r.status,
                            legs: r.legs.clone(),
                            frequency_hz: r.frequency_hz,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        CalibrationView {
            source: self.meter_source,
            calibratable,
            note,
            calibration: calibratable.then(|| crate::meter::ct::Calibration::of(&self.ct)),
            live,
            at_ms: self.last_sample.as_ref().map_or(0, |s| s.at_ms),
        }
    }

    async fn set_calibration(
        &mut self,
        cal: crate::meter::ct::Calibration,
    ) -> Result<(), CalibrationError> {
        let Some(calibrate) = self.calibrator.clone() else {
            return Err(CalibrationError::NotCalibratable(
                self.calibration_view().note,
            ));
        };
        let ct = cal
            .apply(&self.ct)
            .map_err(|e| CalibrationError::Invalid(e.to_string()))?;
        info!("current clamps calibrated by the owner");
        // Stored first: a calibration the node could not keep is refused, not half made.
        let bytes = serde_json::to_vec(&cal).map_err(|e| CalibrationError::Store(e.to_string()))?;
        self.put_setting(META_CALIBRATION, bytes)
            .await
            .map_err(CalibrationError::Store)?;
        calibrate(&cal).map_err(|e| CalibrationError::Invalid(e.to_string()))?;
        self.ct = ct;
        Ok(())
    }

    async fn meter_event(&mut self, ev: crate::metering::MeterEvent) {
        use crate::meter::ChannelKind;
        match ev {
            crate::metering::MeterEvent::Live(sample) => {
                // The meter loop only runs with a source, whose info is fixed; the first
                // reading of each kind is the one shown.
                let mut m = MeterStatus {
                    enabled: true,
                    privacy: self.privacy,
                    health: self.meter.health.take(),
                    at_ms: sample.at_ms,
                    ..MeterStatus::default()
                };
                for (i, r) in sample.readings.iter().enumerate() {
                    match self.meter_kinds.get(i) {
                        Some(ChannelKind::Grid) => {
                            m.grid_w = r.power_w;
                            if let Some(reg) = r.registers {
                                m.import_wh = reg.import_wh;
                                m.export_wh = reg.export_wh;
                            }
                        }
                        Some(ChannelKind::Solar) => m.solar_w = -r.power_w,
                        Some(ChannelKind::Load) => m.load_w = r.power_w,
                        _ => {}
                    }
                }
                self.last_sample = Some(sample.clone());
                if self.power_history.len() >= 512 {
                    self.power_history.pop_front();
                }
                self.power_history.push_back((m.at_ms, m.grid_w));
                self.meter = m;
            }
            crate::metering::MeterEvent::Minute(m) => {
                self.profile.record(m.minute_ms, f64::from(m.grid_w));
                let store = self.store.clone();
                let bytes = postcard::to_allocvec(&m).unwrap_or_default();
                let horizon = m.minute_ms.saturating_sub(self.retention_ms);
                tokio::task::spawn_blocking(move || {
                    let _ = store.put_readings(&[(m.minute_ms, bytes)]);
                    // Retention: once an hour, drop what is older than the horizon.
                    if m.minute_ms % 3_600_000 == 0 {
                        let _ = store.prune_readings(horizon);
                    }
                });
            }
            crate::metering::MeterEvent::Slot(t) => self.attest(t).await,
            crate::metering::MeterEvent::Health(h) => self.meter.health = Some(h),
        }
    }

    /// The trader's turn, with a forecast from the home's own history: the mean grid power over
    /// the last readings (up to 15 minutes) blended with the same slot on the last days
    /// ([`crate::forecast`]).
    fn trader_input(&self) -> crate::market::Input {
        let now = self.clock.now_ms();
        let c = &self.n.chain.at(now).charter;
        let recent: Vec<f64> = self
            .power_history
            .iter()
            .filter(|(t, _)| now.saturating_sub(*t) <= 15 * 60_000)
            .map(|(_, w)| *w)
            .collect();
        let mean_w = (!recent.is_empty()).then(|| recent.iter().sum::<f64>() / recent.len() as f64);
        let first = slot::first_open_slot(c, now);
        let forecast = (0..u64::from(self.trader.lead_slots.max(1)))
            .map(|k| {
                let s = first + k * c.slot_ms();
                let history = self.profile.history(s);
                let wh = crate::forecast::expected_export_wh(
                    mean_w,
                    &history,
                    k,
                    u64::from(c.slot_minutes),
                );
                (s, wh)
            })
            .collect();
        crate::market::Input::Trade {
            limits: self.trader.clone(),
            utc_offset_min: self.trader.utc_offset_minutes,
            forecast,
        }
    }

    /// Hands one input to the market and carries out what it asks.
    async fn feed(&mut self, input: crate::market::Input) {
        let outs = self
            .market
            .handle(self.clock.now_ms(), self.clock.may_sign(), input);
        self.exec(outs).await;
    }

    /// Carries out the market's outputs in order; records are durable before anything after
    /// them happens.
    async fn exec(&mut self, outs: Vec<crate::market::Output>) {
        use crate::market::Output;
        let mut batch = Vec::new();
        for o in outs {
            if let Output::Persist(r) = o {
                batch.push(r);
                continue;
            }
            self.commit(&mut batch).await;
            match o {
                Output::Persist(_) => {}
                Output::Publish(topic, bytes) => {
                    if topic == net::behaviour::TopicKind::Offers {
                        // Propagation is timed from here: the offer is stored and signed.
                        if let Ok(o) =
                            Envelope::from_bytes(&bytes).and_then(|e| e.payload_as::<Offer>())
                        {
                            self.timeline.record(timeline::offer_event(&o, true));
                        }
                    }
                    if let Ok(Err(e)) = self.net.publish(topic, bytes).await {
                        // With no peers yet, offers still reach them by sync when they connect.
                        debug!("not gossiped: {e}");
                    }
                }
                Output::Send { to, token, req } => {
                    if let wattmesh_protocol::trade::TradeRequest::Propose(env) = &req {
                        if let Ok(p) = env.payload_as::<wattmesh_protocol::TradeProposal>() {
                            self.timeline.record(timeline::EventKind::Proposed {
                                taker: p.taker.to_hex(),
                                nonce: p.nonce,
                            });
                        }
                    }
                    let (net, tx) = (self.net.clone(), self.responses_tx.clone());
                    let Some(peer) = net::peer_id_of(&to) else {
                        let _ = tx.send((token, None)).await;
                        continue;
                    };
                    tokio::spawn(async move {
                        // Usually connected already: ask at once (a request to a peer that is
                        // not connected dials it from the address book too).
                        let resp = match net.trade(peer, req.clone()).await {
                            Ok(Ok(r)) => Some(r),
                            Ok(Err(first)) => {
                                // Not reached: wait for a connection, direct or through a
                                // relay, and ask once more.
                                match net.dial_peer(peer).await {
                                    Ok(Ok(_)) => match net.trade(peer, req).await {
                                        Ok(Ok(r)) => Some(r),
                                        _ => None,
                                    },
                                    Ok(Err(e)) => {
                                        debug!(%peer, "counterparty not reachable: {first}; {e}");
                                        None
                                    }
                                    Err(_) => None,
                                }
                            }
                            Err(_) => None,
                        };
                        let _ = tx.send((token, resp)).await;
                    });
                }
                Output::Reply { reply, resp } => {
                    if let Some(ch) = self.replies.remove(&reply) {
                        let _ = self.net.respond_trade(ch, resp).await;
                    }
                }
                Output::Done { cmd, result } => self.done(cmd, result),
                Output::Traded(action) => {
                    if action.acts() {
                        info!(?action, "automatic trader");
                    } else {
                        debug!(?action, "automatic trader holds");
                    }
                    push_trader_log(&mut self.trader_log, self.clock.now_ms(), action);
                }
            }
        }
        self.commit(&mut batch).await;
    }

    async fn commit(&mut self, batch: &mut Vec<crate::market::Record>) {
        if batch.is_empty() {
            return;
        }
        let records = std::mem::take(batch);
        let me = self.key.node_id();
        let mut stored = Vec::new();
        for r in &records {
            match r {
                crate::market::Record::Offer { envelope, .. } => {
                    let Ok(o) =
                        Envelope::from_bytes(envelope).and_then(|e| e.payload_as::<Offer>())
                    else {
                        continue;
                    };
                    if o.maker == me {
                        // So that replays of our own offers are refused too.
                        let _ = self.work.send(Work::Own(Box::new(o))).await;
                    }
                }
                crate::market::Record::Trade {
                    id,
                    state: crate::market::TradeState::Agreed,
                    ..
                } => stored.push(*id),
                _ => {}
            }
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.put_records(&records)).await {
            Ok(Ok(())) => {
                for id in stored {
                    self.timeline.record(timeline::EventKind::TradeStored {
                        taker: id.taker.to_hex(),
                        nonce: id.nonce,
                    });
                }
            }
            other => warn!("storing market records failed: {other:?}"),
        }
    }

    fn done(&mut self, cmd: u64, result: Result<crate::market::CmdResult, String>) {
        use crate::market::CmdResult;
        let Some(reply) = self.cmds.remove(&cmd) else {
            // The automatic trader's own takes (command 0): log how they ended.
            match &result {
                Ok(r) => info!(?r, "automatic trader: done"),
                Err(e) => info!("automatic trader: {e}"),
            }
            return;
        };
        let me = self.key.node_id();
        match reply {
            CmdReply::Post(r) => {
                let _ = r.send(result.and_then(|x| match x {
                    CmdResult::Posted(o) => Ok(OfferView::from(&o)),
                    other => Err(format!("unexpected result {other:?}")),
                }));
            }
            CmdReply::Cancel(r) => {
                let _ = r.send(result.map(|_| ()));
            }
            CmdReply::Take(r) => {
                let _ = r.send(result.and_then(|x| match x {
                    CmdResult::Traded(t) => {
                        Ok(trade_view(&me, &t, crate::market::TradeState::Agreed, None))
                    }
                    other => Err(format!("unexpected result {other:?}")),
                }));
            }
            CmdReply::Doc(r) => {
                let _ = r.send(result.map(|x| match x {
                    CmdResult::Document(h) => hex::encode(h.0),
                    _ => String::new(),
                }));
            }
        }
    }

    fn cmd(&mut self, reply: CmdReply) -> u64 {
        let id = self.next_cmd;
        self.next_cmd += 1;
        self.cmds.insert(id, reply);
        id
    }
}

/// Where a command's result goes.
#[derive(Debug)]
enum CmdReply {
    Post(Reply<Result<OfferView, String>>),
    Cancel(Reply<Result<(), String>>),
    Take(Reply<Result<TradeView, String>>),
    Doc(Reply<Result<String, String>>),
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    u64::from_le_bytes(b)
}

/// A trade as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TradeView {
    /// The taker (hex).
    pub taker: String,
    /// The taker's nonce.
    pub nonce: u64,
    /// `maker` or `taker`: our role.
    pub role: &'static str,
    /// `sell` or `buy`: our side.
    pub side: &'static str,
    /// The counterparty's short id.
    pub counterparty: String,
    /// The counterparty's node id (hex).
    pub counterparty_id: String,
    /// The slot.
    pub slot_ms: u64,
    /// Energy, Wh.
    pub energy_wh: u64,
    /// Price per kWh, thousandths of a minor unit.
    pub price: u64,
    /// Where it stands.
    pub state: crate::market::TradeState,
    /// Where its settlement stands, once there is one.
    pub settlement: Option<crate::market::SettleState>,
    /// Energy counted as delivered, once settled.
    pub delivered_wh: Option<u64>,
    /// Money due (positive: to us), milli-minor units, once settled.
    pub amount: Option<i64>,
    /// Whether both signatures verify (checked when the list is made).
    pub signatures_verified: bool,
    /// Whether it is one slot of a standing agreement.
    pub from_agreement: bool,
    /// Where its dispute stands, if it has one.
    pub dispute: Option<crate::market::DisputeStatus>,
    /// The offer taken: its maker's node id (hex) and nonce.
    pub offer_maker: String,
    /// See `offer_maker`.
    pub offer_nonce: u64,
}

fn trade_view(
    me: &NodeId,
    t: &wattmesh_protocol::Trade,
    state: crate::market::TradeState,
    settlement: Option<&crate::market::SettleRec>,
) -> TradeView {
    let maker = t.maker() == *me;
    let selling = t.seller() == *me;
    let s = settlement.and_then(|r| r.settlement.as_ref());
    TradeView {
        taker: t.taker.to_hex(),
        nonce: t.nonce,
        role: if maker { "maker" } else { "taker" },
        side: if selling { "sell" } else { "buy" },
        counterparty: if maker {
            t.taker.short()
        } else {
            t.maker().short()
        },
        counterparty_id: if maker {
            t.taker.to_hex()
        } else {
            t.maker().to_hex()
        },
        slot_ms: t.slot_ms,
        energy_wh: t.energy_wh,
        price: t.price,
        state,
        settlement: settlement.map(|r| r.state),
        delivered_wh: s.map(|s| s.delivered_wh),
        amount: s.map(|s| {
            let a = i64::try_from(s.amount).unwrap_or(i64::MAX);
            if selling { a } else { -a }
        }),
        // Stored trades were verified when they were stored; the trade list checks again.
        signatures_verified: true,
        from_agreement: wattmesh_protocol::ledger::from_agreement(t),
        dispute: None,
        offer_maker: t.offer.maker.to_hex(),
        offer_nonce: t.offer.nonce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::trader::{Action, Hold};

    fn hold(slot_ms: u64, forecast_wh: i64) -> Action {
        Action::Hold {
            slot_ms,
            why: Hold::NoSurplus {
                forecast_wh,
                keep_back_wh: 50,
            },
        }
    }

    #[test]
    fn a_night_of_no_surplus_is_one_log_entry() {
        let mut log = std::collections::VecDeque::new();
        let s = 1_782_154_800_000;
        for k in 0..40 {
            push_trader_log(
                &mut log,
                s + k * 900_000 - 600_000,
                hold(s + k * 900_000, 0),
            );
        }
        assert_eq!(log.len(), 1);
        assert_eq!((log[0].slots, log[0].first_slot_ms), (40, s));
        assert_eq!(log[0].action.slot_ms(), s + 39 * 900_000);
        // A different reason starts a new entry, and so does a hold after an action.
        let outside = Action::Hold {
            slot_ms: s + 40 * 900_000,
            why: Hold::OutsideHours {
                from_hour: 8,
                to_hour: 20,
                utc_offset_minutes: -300,
            },
        };
        push_trader_log(&mut log, s, outside);
        push_trader_log(
            &mut log,
            s,
            Action::Post {
                side: wattmesh_protocol::offer::Side::Sell,
                slot_ms: s + 41 * 900_000,
                quantity_wh: 300,
                price: 9_000,
                why: crate::market::trader::Why {
                    forecast_wh: 350,
                    keep_back_wh: 50,
                    max_wh: 5_000,
                    wanted_wh: 300,
                    done_wh: 0,
                    taking_wh: 0,
                    limit_price: 8_000,
                    ramp_price: 9_000,
                    gate_ms: s,
                    duplicate: false,
                },
            },
        );
        push_trader_log(&mut log, s, hold(s + 42 * 900_000, 10));
        assert_eq!(log.len(), 4);
        assert_eq!(log[3].slots, 1);
        // Never more than the cap.
        for k in 0..(TRADER_LOG_LEN as u64 * 2) {
            let f = if k % 2 == 0 { 0 } else { -10 };
            let a = if f == 0 {
                hold(s + (50 + k) * 900_000, 0)
            } else {
                Action::Hold {
                    slot_ms: s + (50 + k) * 900_000,
                    why: Hold::BuyingOff { forecast_wh: f },
                }
            };
            push_trader_log(&mut log, s, a);
        }
        assert_eq!(log.len(), TRADER_LOG_LEN);
    }
}
