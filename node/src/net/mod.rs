//! Networking: one task owns the libp2p `Swarm`; everything else talks to it through a
//! cloneable [`NetHandle`] (commands with oneshot replies) and receives [`NetEvent`]s on a
//! bounded channel. Nothing slow runs on the swarm task: signature checks happen in the
//! validation worker and database commits on blocking threads (see `crate::node`).
//!
//! The model is rust-libp2p's `examples/file-sharing/src/network.rs`.
//!
//! Reach (docs/ARCHITECTURE.md, "Reach"): every connection, direct or through a member's
//! circuit relay, runs pnet with the current network key, then Noise and yamux. AutoNAT tells
//! the node whether it is reachable; if not, it holds reservations on up to
//! `max_reservations` reachable members; DCUtR upgrades relayed connections to direct ones.

pub mod behaviour;
pub mod codec;
pub mod reach;

use behaviour::{Behaviour, BehaviourEvent, BehaviourSettings, TopicKind};
use futures::StreamExt;
use libp2p::core::transport::{ListenerId, OrTransport, Transport as _};
use libp2p::core::upgrade::Version;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::multiaddr::Protocol;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, autonat, dcutr, identity, noise, relay, tcp, upnp, yamux};
pub use reach::{Reach, ReservationMode};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};
use wattmesh_protocol::sync::{SyncRequest, SyncResponse};
use wattmesh_protocol::trade::{RejectReason, TradeRequest, TradeResponse};
use wattmesh_protocol::{NodeId, NodeKey};

/// How many events may wait for the node before the network drops (and counts) more.
pub const EVENT_QUEUE: usize = 4096;
/// How many commands may wait for the swarm task.
pub const COMMAND_QUEUE: usize = 4096;

/// The libp2p keypair for a node key: the same ed25519 key.
pub fn keypair(key: &NodeKey) -> identity::Keypair {
    identity::Keypair::ed25519_from_bytes(key.secret_bytes())
        .expect("a 32-byte ed25519 secret is always valid")
}

/// The peer id of a node id.
pub fn peer_id_of(node: &NodeId) -> Option<PeerId> {
    let pk = identity::ed25519::PublicKey::try_from_bytes(&node.0).ok()?;
    Some(identity::PublicKey::from(pk).to_peer_id())
}

/// The node id of a peer id, if the peer id embeds an ed25519 key (all wattmesh peers do).
pub fn node_id_of(peer: &PeerId) -> Option<NodeId> {
    let mh = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let pk = identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    Some(NodeId(pk.try_into_ed25519().ok()?.to_bytes()))
}

/// What the network needs to start.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Behaviour settings.
    pub behaviour: BehaviourSettings,
    /// The private network key.
    pub psk: [u8; 32],
    /// Where to listen.
    pub listen: Vec<Multiaddr>,
    /// Peers to keep dialling while disconnected (addresses ending in `/p2p/<id>`).
    pub bootstrap: Vec<Multiaddr>,
    /// Close idle connections after this long.
    pub idle_timeout: Duration,
    /// When to hold relay reservations.
    pub reservations: ReservationMode,
    /// On how many relays at most.
    pub max_reservations: usize,
    /// Addresses where this node is known to be reachable (a port forwarded by hand).
    pub external: Vec<Multiaddr>,
}

/// How this node itself is reached, as the status shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReachInfo {
    /// What AutoNAT concluded: `public`, `private` or `unknown`.
    pub nat: &'static str,
    /// Addresses other members can dial: confirmed external ones and relayed circuit ones.
    pub external: Vec<String>,
    /// The relays we hold a reservation on (peer ids).
    pub reservations: Vec<String>,
    /// Connected peers that serve as relays (peer ids).
    pub relays: Vec<String>,
}

/// A peer as the status shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerInfo {
    /// The peer id.
    pub peer_id: String,
    /// Its node id's short form.
    pub node: String,
    /// The address of the connection.
    pub address: String,
    /// How it is reached: `direct`, `hole-punched` (direct, made by DCUtR after a relayed
    /// connection) or `relayed` (through another member's circuit relay).
    pub reach: &'static str,
    /// Whether we dialled it.
    pub outbound: bool,
    /// Its gossipsub score.
    pub score: f64,
    /// Seconds connected.
    pub connected_secs: u64,
    /// Open connections to it (a relayed one and a direct one while hole punching replaces
    /// the first).
    pub connections: usize,
}

/// Something the network tells the node.
#[derive(Debug)]
pub enum NetEvent {
    /// A peer asks for sync; answer with [`NetHandle::respond_sync`].
    SyncRequest {
        /// Who asks.
        peer: PeerId,
        /// What.
        request: SyncRequest,
        /// Where the answer goes.
        channel: ResponseChannel<SyncResponse>,
    },
    /// A peer sends a trade handshake message; answer with [`NetHandle::respond_trade`].
    TradeRequest {
        /// Who asks.
        peer: PeerId,
        /// What.
        request: TradeRequest,
        /// Where the answer goes.
        channel: ResponseChannel<TradeResponse>,
    },
    /// A connection to a peer we were not connected to was established.
    PeerConnected(PeerId, Multiaddr),
    /// The last connection to a peer closed.
    PeerDisconnected(PeerId),
    /// We are listening on a new (direct, not relayed) address.
    Listening(Multiaddr),
    /// The addresses other members can reach this node at changed (confirmed external
    /// addresses and relayed circuit addresses, each ending in `/p2p/<our id>`).
    ExternalAddresses(Vec<Multiaddr>),
}

type Reply<T> = oneshot::Sender<T>;

#[derive(Debug)]
enum Command {
    Publish(TopicKind, Vec<u8>, Reply<Result<(), String>>),
    Report(MessageId, PeerId, MessageAcceptance),
    Dial(Multiaddr, Reply<Result<(), String>>),
    Peers(Reply<Vec<PeerInfo>>),
    Listening(Reply<Vec<Multiaddr>>),
    Score(PeerId, Reply<Option<f64>>),
    Sync(PeerId, SyncRequest, Reply<Result<SyncResponse, String>>),
    RespondSync(ResponseChannel<SyncResponse>, SyncResponse),
    Trade(PeerId, TradeRequest, Reply<Result<TradeResponse, String>>),
    RespondTrade(ResponseChannel<TradeResponse>, TradeResponse),
    Disconnect(PeerId, bool),
    External(Reply<Vec<Multiaddr>>),
    AddAddresses(PeerId, Vec<Multiaddr>, Reply<usize>),
    DialPeer(PeerId, Reply<Result<Reach, String>>),
    Reach(Reply<ReachInfo>),
    Stop(Reply<()>),
}

/// The network key new connections use; swapped by [`NetHandle::set_network_key`].
pub type SharedKey = Arc<RwLock<PreSharedKey>>;

/// The cloneable handle to the swarm task.
#[derive(Clone)]
pub struct NetHandle {
    tx: mpsc::Sender<Command>,
    local: PeerId,
    psk: SharedKey,
}

impl std::fmt::Debug for NetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("NetHandle")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// The swarm task has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the network task has stopped")]
pub struct NetStopped;

impl NetHandle {
    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NetStopped> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| NetStopped)?;
        rx.await.map_err(|_| NetStopped)
    }

    /// Publishes envelope bytes on a topic.
    pub async fn publish(
        &self,
        topic: TopicKind,
        data: Vec<u8>,
    ) -> Result<Result<(), String>, NetStopped> {
        self.ask(|r| Command::Publish(topic, data, r)).await
    }

    /// Reports the verdict on a gossip message. Never blocks: a full queue drops the report,
    /// and gossipsub then forgets the message when its cache expires.
    pub fn report(&self, id: MessageId, source: PeerId, acceptance: MessageAcceptance) {
        if self
            .tx
            .try_send(Command::Report(id, source, acceptance))
            .is_err()
        {
            debug!("verdict dropped: command queue full");
        }
    }

    /// Dials an address.
    pub async fn dial(&self, addr: Multiaddr) -> Result<Result<(), String>, NetStopped> {
        self.ask(|r| Command::Dial(addr, r)).await
    }

    /// The connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NetStopped> {
        self.ask(Command::Peers).await
    }

    /// The addresses we listen on.
    pub async fn listening(&self) -> Result<Vec<Multiaddr>, NetStopped> {
        self.ask(Command::Listening).await
    }

    /// A peer's gossipsub score.
    pub async fn score(&self, peer: PeerId) -> Result<Option<f64>, NetStopped> {
        self.ask(|r| Command::Score(peer, r)).await
    }

    /// Sends a sync request and waits for the answer.
    pub async fn sync(
        &self,
        peer: PeerId,
        req: SyncRequest,
    ) -> Result<Result<SyncResponse, String>, NetStopped> {
        self.ask(|r| Command::Sync(peer, req, r)).await
    }

    /// Answers a sync request.
    pub async fn respond_sync(
        &self,
        ch: ResponseChannel<SyncResponse>,
        resp: SyncResponse,
    ) -> Result<(), NetStopped> {
        self.tx
            .send(Command::RespondSync(ch, resp))
            .await
            .map_err(|_| NetStopped)
    }

    /// Sends a trade handshake message and waits for the answer.
    pub async fn trade(
        &self,
        peer: PeerId,
        req: TradeRequest,
    ) -> Result<Result<TradeResponse, String>, NetStopped> {
        self.ask(|r| Command::Trade(peer, req, r)).await
    }

    /// Answers a trade handshake message.
    pub async fn respond_trade(
        &self,
        ch: ResponseChannel<TradeResponse>,
        resp: TradeResponse,
    ) -> Result<(), NetStopped> {
        self.tx
            .send(Command::RespondTrade(ch, resp))
            .await
            .map_err(|_| NetStopped)
    }

    /// Switches the private network key for new connections (the neighbourhood rotated it).
    /// Connections already open stay up; every connection made from now on, direct or
    /// relayed, in either direction, needs the new key.
    pub fn set_network_key(&self, psk: [u8; 32]) {
        let key = PreSharedKey::new(psk);
        match self.psk.write() {
            Ok(mut k) => *k = key,
            // A panic while holding the lock cannot leave a half-written key (it is Copy).
            Err(poisoned) => *poisoned.into_inner() = key,
        }
        info!(fingerprint = %key.fingerprint(), "network key changed for new connections");
    }

    /// The addresses other members can reach this node at: confirmed external addresses
    /// (AutoNAT, UPnP, configured) and relayed circuit addresses, each with `/p2p/<our id>`.
    pub async fn external_addresses(&self) -> Result<Vec<Multiaddr>, NetStopped> {
        self.ask(Command::External).await
    }

    /// Adds addresses for `peer` learned elsewhere (e.g. shared by members); they are used
    /// whenever the peer is dialled by its id. Returns how many were accepted (addresses
    /// that cannot be dialled or that name another peer are dropped; the book is bounded).
    pub async fn add_addresses(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> Result<usize, NetStopped> {
        self.ask(|r| Command::AddAddresses(peer, addrs, r)).await
    }

    /// Makes sure we are connected to `peer`: at once if we are, otherwise dials its known
    /// addresses and, through each connected relay, its circuit address, and waits for the
    /// first connection (or the failure of all). Answers how the peer is reached.
    pub async fn dial_peer(&self, peer: PeerId) -> Result<Result<Reach, String>, NetStopped> {
        self.ask(|r| Command::DialPeer(peer, r)).await
    }

    /// How this node is reached (AutoNAT's verdict, external addresses, relays).
    pub async fn reach(&self) -> Result<ReachInfo, NetStopped> {
        self.ask(Command::Reach).await
    }

    /// Stops the swarm task.
    pub async fn stop(&self) {
        let _ = self.ask(Command::Stop).await;
    }

    /// Closes every connection to `peer`; with `ban`, refuses its connections from now on
    /// and stops redialling it (a removed member).
    pub fn disconnect(&self, peer: PeerId, ban: bool) {
        let _ = self.tx.try_send(Command::Disconnect(peer, ban));
    }
}

/// A connection as the transport yields it: the peer and its multiplexed stream.
pub type Muxed = (PeerId, libp2p::core::muxing::StreamMuxerBox);

/// Builds the transport: TCP, or a circuit through another member's relay, then the private
/// network handshake with the current pre-shared key (a peer without it cannot get further;
/// the key is read for each new connection, so [`NetHandle::set_network_key`] takes effect at
/// once), then Noise and yamux. Relayed connections get exactly the same upgrades, end to end:
/// the relay only forwards bytes it cannot read.
pub fn transport(
    key: &identity::Keypair,
    psk: SharedKey,
    relay: relay::client::Transport,
) -> anyhow::Result<libp2p::core::transport::Boxed<Muxed>> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    Ok(OrTransport::new(relay, tcp)
        .and_then(move |socket, _| {
            // Copy the key out: the lock is never held across an await.
            let k = match psk.read() {
                Ok(k) => *k,
                Err(poisoned) => *poisoned.into_inner(),
            };
            PnetConfig::new(k).handshake(socket)
        })
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .timeout(Duration::from_secs(20))
        .boxed())
}

/// The swarm's settings: tasks on the tokio runtime, connections closed after `idle_timeout`
/// without use, and lazy protocol selection on the substreams we open.
pub fn swarm_config(idle_timeout: Duration) -> libp2p::swarm::Config {
    libp2p::swarm::Config::with_tokio_executor()
        .with_idle_connection_timeout(idle_timeout)
        // A substream we open asks for exactly one protocol; sending the request with the
        // protocol's name instead of waiting for the other side to confirm it saves a round
        // trip on every trade and sync request (all members run wattmesh).
        .with_substream_upgrade_protocol_override(Version::V1Lazy)
}

/// Takes a gossip message for validation straight from the swarm task (topic, id, forwarding
/// peer, envelope bytes), without a hop through the node's own task: a message is forwarded
/// only once its verdict is in, so every hand-over on this path adds to each hop of
/// propagation. Runs on the swarm task: it may do a message's own checks there (a signature
/// check is tens of microseconds) but must not wait on anything.
pub type GossipSink = Box<dyn FnMut(TopicKind, MessageId, PeerId, Vec<u8>) -> SinkVerdict + Send>;

/// What a [`GossipSink`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkVerdict {
    /// Judged already: the swarm task reports this verdict now.
    Now(MessageAcceptance),
    /// Taken; its verdict comes later through [`NetHandle::report`].
    Later,
    /// Could not be taken (a full queue): ignored, and counted as dropped.
    Dropped,
}

/// Starts the swarm task. Gossip messages go to `gossip_sink`.
pub fn spawn(
    key: &NodeKey,
    cfg: NetConfig,
    gossip_sink: GossipSink,
) -> anyhow::Result<(NetHandle, mpsc::Receiver<NetEvent>)> {
    let kp = keypair(key);
    let local = kp.public().to_peer_id();
    let psk: SharedKey = Arc::new(RwLock::new(PreSharedKey::new(cfg.psk)));
    let (relay_transport, relay_client) = relay::client::new(local);
    let behaviour = Behaviour::new(&kp, &cfg.behaviour, relay_client)?;
    let mut swarm = Swarm::new(
        transport(&kp, psk.clone(), relay_transport)?,
        behaviour,
        local,
        swarm_config(cfg.idle_timeout),
    );
    for addr in &cfg.listen {
        match swarm.listen_on(addr.clone()) {
            Ok(_) => {}
            // IPv6 where present: a machine without it still runs on IPv4.
            Err(e) if matches!(addr.iter().next(), Some(Protocol::Ip6(_))) => {
                warn!(%addr, "not listening on IPv6: {e:?}");
            }
            Err(e) => return Err(anyhow::anyhow!("cannot listen on {addr}: {e:?}")),
        }
    }
    for addr in &cfg.external {
        swarm.add_external_address(addr.clone());
    }
    if let Some(relay) = swarm.behaviour_mut().relay.as_mut() {
        relay.set_status(Some(if cfg.external.is_empty() {
            relay::Status::Disable
        } else {
            relay::Status::Enable
        }));
    }
    let mut wanted: HashMap<PeerId, Redial> = HashMap::new();
    for a in &cfg.bootstrap {
        if let Some(p) = reach::target_of(a) {
            if p != local && (wanted.len() < MAX_WANTED || wanted.contains_key(&p)) {
                wanted.entry(p).or_insert_with(Redial::new).add(a.clone());
            }
        }
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let task = SwarmTask {
        swarm,
        commands: cmd_rx,
        events: ev_tx,
        topics: TopicKind::ALL.map(|k| k.topic(&cfg.behaviour.neighbourhood).hash()),
        wanted,
        pending_sync: HashMap::new(),
        pending_trade: HashMap::new(),
        connected: HashMap::new(),
        banned: std::collections::HashSet::new(),
        waiters: HashMap::new(),
        reservations: HashMap::new(),
        reservation_retry: HashMap::new(),
        reservation_mode: cfg.reservations,
        max_reservations: cfg.max_reservations,
        static_external: cfg.external,
        last_external: Vec::new(),
        dropped_events: 0,
        gossip_sink,
    };
    tokio::spawn(tracing::Instrument::in_current_span(task.run()));
    Ok((
        NetHandle {
            tx: cmd_tx,
            local,
            psk,
        },
        ev_rx,
    ))
}

/// The most peers kept redialling (bootstrap and dialled addresses).
const MAX_WANTED: usize = 256;
/// The most addresses kept per redialled peer.
const MAX_REDIAL_ADDRS: usize = 8;
/// The most peers with callers waiting in [`NetHandle::dial_peer`], and callers per peer.
const MAX_WAITING_PEERS: usize = 256;
const MAX_WAITERS_PER_PEER: usize = 16;
/// How long [`NetHandle::dial_peer`] waits at most.
const DIAL_PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// A relayed connection is closed this long after a direct one to the same peer exists
/// (requests under way on it have finished by then).
const RELAYED_GRACE: Duration = Duration::from_secs(15);
/// How long to leave a relay alone after a reservation on it failed or ended.
const RESERVATION_RETRY: Duration = Duration::from_secs(30);

/// Redial state for a peer we want to stay connected to (bootstrap addresses, addresses
/// dialled by command): exponential backoff from 1 s to 60 s.
#[derive(Debug)]
struct Redial {
    addrs: Vec<Multiaddr>,
    next: Instant,
    backoff: Duration,
}

impl Redial {
    fn new() -> Redial {
        Redial {
            addrs: Vec::new(),
            next: Instant::now(),
            backoff: Duration::from_secs(1),
        }
    }

    fn add(&mut self, addr: Multiaddr) {
        if !self.addrs.contains(&addr) {
            if self.addrs.len() >= MAX_REDIAL_ADDRS {
                self.addrs.remove(0);
            }
            self.addrs.push(addr);
        }
    }
}

/// One established connection.
#[derive(Debug)]
struct Conn {
    addr: Multiaddr,
    outbound: bool,
    since: Instant,
    reach: Reach,
}

/// The established connections to one peer.
#[derive(Debug)]
struct PeerConns {
    since: Instant,
    conns: HashMap<ConnectionId, Conn>,
}

impl PeerConns {
    /// The connection that best describes how the peer is reached: direct before relayed,
    /// then the oldest.
    fn best(&self) -> Option<&Conn> {
        self.conns
            .values()
            .max_by_key(|c| (c.reach.rank(), std::cmp::Reverse(c.since)))
    }
}

type DialReply = Reply<Result<Reach, String>>;

struct SwarmTask {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    /// Each topic's hash, worked out once (not per message), at the place `kind as usize`.
    topics: [gossipsub::TopicHash; 3],
    wanted: HashMap<PeerId, Redial>,
    pending_sync: HashMap<OutboundRequestId, Reply<Result<SyncResponse, String>>>,
    pending_trade: HashMap<OutboundRequestId, Reply<Result<TradeResponse, String>>>,
    /// Peers refused outright (removed members). Bounded by the roster's size.
    banned: std::collections::HashSet<PeerId>,
    connected: HashMap<PeerId, PeerConns>,
    /// Callers of `dial_peer` waiting for a connection, with their deadlines.
    waiters: HashMap<PeerId, Vec<(Instant, DialReply)>>,
    /// Relay reservations we hold or are asking for: relay -> listener.
    reservations: HashMap<PeerId, ListenerId>,
    /// Relays whose reservation failed or ended recently: not before this time.
    reservation_retry: HashMap<PeerId, Instant>,
    reservation_mode: ReservationMode,
    max_reservations: usize,
    static_external: Vec<Multiaddr>,
    last_external: Vec<Multiaddr>,
    dropped_events: u64,
    gossip_sink: GossipSink,
}

impl SwarmTask {
    async fn run(mut self) {
        self.external_changed();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Stop(reply)) => { let _ = reply.send(()); break; }
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                ev = self.swarm.select_next_some() => self.swarm_event(ev),
                _ = tick.tick() => self.tick(),
            }
        }
        debug!("swarm task stopped");
    }

    fn tick(&mut self) {
        self.redial();
        self.expire_waiters();
        self.reservations_upkeep();
        self.close_redundant_relayed();
    }

    fn redial(&mut self) {
        let now = Instant::now();
        let due: Vec<(PeerId, Vec<Multiaddr>)> = self
            .wanted
            .iter_mut()
            .filter(|(p, r)| !self.connected.contains_key(p) && r.next <= now)
            .map(|(p, r)| {
                r.next = now + r.backoff;
                r.backoff = (r.backoff * 2).min(Duration::from_secs(60));
                (*p, r.addrs.clone())
            })
            .collect();
        for (peer, mut addrs) in due {
            // The addresses we were given, what the book knows, and circuits through relays.
            addrs.extend(self.swarm.behaviour().addresses.circuits(&peer));
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(addrs)
                .extend_addresses_through_behaviour()
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(%peer, "redial failed: {e}");
            }
        }
    }

    fn expire_waiters(&mut self) {
        let now = Instant::now();
        for (peer, list) in self.waiters.iter_mut() {
            let (expired, keep): (Vec<_>, Vec<_>) = std::mem::take(list)
                .into_iter()
                .partition(|(d, _)| *d <= now);
            *list = keep;
            for (_, reply) in expired {
                let _ = reply.send(Err(format!(
                    "no connection to {peer} within {DIAL_PEER_TIMEOUT:?}"
                )));
            }
        }
        self.waiters.retain(|_, l| !l.is_empty());
    }

    fn answer_waiters(&mut self, peer: &PeerId, r: Result<Reach, String>) {
        if let Some(list) = self.waiters.remove(peer) {
            for (_, reply) in list {
                let _ = reply.send(r.clone());
            }
        }
    }

    /// How `peer` is reached now, if connected.
    fn reach_of(&self, peer: &PeerId) -> Option<Reach> {
        self.connected.get(peer)?.best().map(|c| c.reach)
    }

    /// Whether something other than a relay shows that peers can dial us: an address
    /// confirmed by AutoNAT or UPnP, or configured.
    fn publicly_reachable(&self) -> bool {
        self.swarm
            .external_addresses()
            .any(|a| !reach::is_relayed(a))
    }

    /// Holds reservations on up to `max_reservations` connected relays while this node is
    /// not known to be reachable (or always/never, as configured); drops them once it is.
    fn reservations_upkeep(&mut self) {
        let want = match self.reservation_mode {
            ReservationMode::Never => 0,
            ReservationMode::Always => self.max_reservations,
            ReservationMode::Auto if self.publicly_reachable() => 0,
            ReservationMode::Auto => self.max_reservations,
        };
        let now = Instant::now();
        self.reservation_retry.retain(|_, t| *t > now);
        if self.reservations.len() > want {
            let mut extra: Vec<PeerId> = self.reservations.keys().copied().collect();
            extra.sort();
            for r in extra.into_iter().skip(want) {
                if let Some(id) = self.reservations.remove(&r) {
                    info!(relay = %r, "dropping relay reservation: this node is reachable");
                    self.swarm.remove_listener(id);
                }
            }
            return;
        }
        let mut candidates: Vec<(PeerId, Multiaddr)> = self
            .swarm
            .behaviour()
            .addresses
            .relays()
            .filter(|(p, _)| {
                !self.reservations.contains_key(p) && !self.reservation_retry.contains_key(p)
            })
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        candidates.sort_by_key(|(p, _)| *p);
        for (relay, addr) in candidates
            .into_iter()
            .take(want.saturating_sub(self.reservations.len()))
        {
            let circuit = addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    info!(%relay, "asking for a relay reservation");
                    self.reservations.insert(relay, id);
                }
                Err(e) => {
                    debug!(%circuit, "cannot listen through relay: {e}");
                    self.reservation_retry
                        .insert(relay, now + RESERVATION_RETRY);
                }
            }
        }
    }

    /// Closes relayed connections to peers that have had a direct one for a while.
    fn close_redundant_relayed(&mut self) {
        let now = Instant::now();
        let mut close = Vec::new();
        for pc in self.connected.values() {
            let direct_since = pc
                .conns
                .values()
                .filter(|c| c.reach != Reach::Relayed)
                .map(|c| c.since)
                .min();
            if direct_since.is_some_and(|t| now.duration_since(t) >= RELAYED_GRACE) {
                close.extend(
                    pc.conns
                        .iter()
                        .filter(|(_, c)| c.reach == Reach::Relayed)
                        .map(|(id, _)| *id),
                );
            }
        }
        for id in close {
            debug!(connection = %id, "closing a relayed connection: a direct one exists");
            self.swarm.close_connection(id);
        }
    }

    /// Our external addresses with `/p2p/<our id>`.
    fn external(&self) -> Vec<Multiaddr> {
        let me = *self.swarm.local_peer_id();
        let mut out: Vec<Multiaddr> = self
            .swarm
            .external_addresses()
            .map(|a| a.clone().with_p2p(me).unwrap_or_else(|a| a))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Tells the node when our external addresses changed, and offers the relay service only
    /// while peers can dial us directly. (Left to itself the relay server would also count
    /// our own relayed addresses as reachable, and relay through relays.)
    fn external_changed(&mut self) {
        let reachable = self.publicly_reachable();
        if let Some(relay) = self.swarm.behaviour_mut().relay.as_mut() {
            relay.set_status(Some(if reachable {
                relay::Status::Enable
            } else {
                relay::Status::Disable
            }));
        }
        let now = self.external();
        if now != self.last_external {
            info!(addresses = ?now.iter().map(ToString::to_string).collect::<Vec<_>>(), "external addresses");
            self.last_external = now.clone();
            let _ = self.send_event(NetEvent::ExternalAddresses(now));
        }
    }

    fn reach_info(&self) -> ReachInfo {
        let b = self.swarm.behaviour();
        let mut reservations: Vec<String> =
            self.reservations.keys().map(ToString::to_string).collect();
        reservations.sort();
        let mut relays: Vec<String> = b.addresses.relays().map(|(p, _)| p.to_string()).collect();
        relays.sort();
        ReachInfo {
            nat: match b.autonat.nat_status() {
                autonat::NatStatus::Public(_) => "public",
                autonat::NatStatus::Private => "private",
                autonat::NatStatus::Unknown => "unknown",
            },
            external: self.external().iter().map(ToString::to_string).collect(),
            reservations,
            relays,
        }
    }

    /// Hands an event to the node; when its queue is full, gives the event back (boxed, so
    /// the happy path stays small) for the caller to refuse.
    fn send_event(&mut self, ev: NetEvent) -> Result<(), Box<NetEvent>> {
        self.events.try_send(ev).map_err(|e| {
            self.dropped_events += 1;
            match e {
                mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev) => {
                    Box::new(ev)
                }
            }
        })
    }

    fn command(&mut self, cmd: Command) {
        let b = self.swarm.behaviour_mut();
        match cmd {
            Command::Publish(topic, data, reply) => {
                let r = b
                    .gossipsub
                    .publish(self.topics[topic as usize].clone(), data)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            Command::Report(id, source, acceptance) => {
                b.gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
            }
            Command::Dial(addr, reply) => {
                let me = *self.swarm.local_peer_id();
                if let Some(p) = reach::target_of(&addr).filter(|p| *p != me) {
                    if self.wanted.len() < MAX_WANTED || self.wanted.contains_key(&p) {
                        self.wanted
                            .entry(p)
                            .or_insert_with(Redial::new)
                            .add(addr.clone());
                    }
                }
                let r = self.swarm.dial(addr).map_err(|e: DialError| e.to_string());
                let _ = reply.send(r);
            }
            Command::Peers(reply) => {
                let list = self
                    .connected
                    .iter()
                    .filter_map(|(p, pc)| {
                        let c = pc.best()?;
                        Some(PeerInfo {
                            peer_id: p.to_string(),
                            node: node_id_of(p).map(|n| n.short()).unwrap_or_default(),
                            address: c.addr.to_string(),
                            reach: c.reach.as_str(),
                            outbound: c.outbound,
                            score: self
                                .swarm
                                .behaviour()
                                .gossipsub
                                .peer_score(p)
                                .unwrap_or(0.0),
                            connected_secs: pc.since.elapsed().as_secs(),
                            connections: pc.conns.len(),
                        })
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::Listening(reply) => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Score(peer, reply) => {
                let _ = reply.send(b.gossipsub.peer_score(&peer));
            }
            Command::Sync(peer, req, reply) => {
                let id = b.sync.send_request(&peer, req);
                self.pending_sync.insert(id, reply);
            }
            Command::RespondSync(ch, resp) => {
                let _ = b.sync.send_response(ch, resp);
            }
            Command::Trade(peer, req, reply) => {
                let id = b.trade.send_request(&peer, req);
                self.pending_trade.insert(id, reply);
            }
            Command::RespondTrade(ch, resp) => {
                let _ = b.trade.send_response(ch, resp);
            }
            Command::Disconnect(peer, ban) => {
                if ban && self.banned.len() < 10_000 {
                    self.banned.insert(peer);
                    self.wanted.remove(&peer);
                }
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::External(reply) => {
                let _ = reply.send(self.external());
            }
            Command::AddAddresses(peer, addrs, reply) => {
                let n = addrs
                    .iter()
                    .take(reach::MAX_ADDRS_PER_PEER)
                    .filter(|a| b.addresses.add(peer, a))
                    .count();
                let _ = reply.send(n);
            }
            Command::DialPeer(peer, reply) => self.dial_peer(peer, reply),
            Command::Reach(reply) => {
                let _ = reply.send(self.reach_info());
            }
            Command::Stop(_) => unreachable!("handled in run"),
        }
    }

    fn dial_peer(&mut self, peer: PeerId, reply: DialReply) {
        if let Some(r) = self.reach_of(&peer) {
            let _ = reply.send(Ok(r));
            return;
        }
        if peer == *self.swarm.local_peer_id() {
            let _ = reply.send(Err("that is this node".into()));
            return;
        }
        if !self.waiters.contains_key(&peer) && self.waiters.len() >= MAX_WAITING_PEERS {
            let _ = reply.send(Err("too many dials under way".into()));
            return;
        }
        let list = self.waiters.entry(peer).or_default();
        if list.len() >= MAX_WAITERS_PER_PEER {
            let _ = reply.send(Err("too many callers waiting for this peer".into()));
            return;
        }
        list.push((Instant::now() + DIAL_PEER_TIMEOUT, reply));
        // Known addresses and circuits through connected relays come from the address book.
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) => {}
            // A dial is already under way: its outcome answers.
            Err(DialError::DialPeerConditionFalse(_)) => {}
            Err(e) => {
                let msg = match e {
                    DialError::NoAddresses => {
                        format!("no known address of {peer} and no relay to reach it through")
                    }
                    e => e.to_string(),
                };
                self.answer_waiters(&peer, Err(msg));
            }
        }
    }

    fn swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                if reach::is_relayed(&address) {
                    info!(%address, "reachable through a relay");
                } else {
                    info!(%address, "listening");
                    let _ = self.send_event(NetEvent::Listening(address));
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let relay = self
                    .reservations
                    .iter()
                    .find(|(_, id)| **id == listener_id)
                    .map(|(p, _)| *p);
                if let Some(relay) = relay {
                    info!(%relay, ?reason, "relay reservation ended");
                    self.reservations.remove(&relay);
                    self.reservation_retry
                        .insert(relay, Instant::now() + RESERVATION_RETRY);
                }
                self.external_changed();
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                debug!(%address, "external address confirmed");
                self.external_changed();
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                debug!(%address, "external address expired");
                self.external_changed();
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                if self.banned.contains(&peer_id) {
                    debug!(peer = %peer_id, "refused a removed member");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                let addr = match &endpoint {
                    // An inbound relayed connection's remote address is only `/p2p/<id>`; the
                    // circuit address it came in on names the relay.
                    libp2p::core::ConnectedPoint::Listener { local_addr, .. }
                        if endpoint.is_relayed() =>
                    {
                        let mut a = local_addr.clone();
                        if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
                            a.pop();
                        }
                        a
                    }
                    _ => endpoint.get_remote_address().clone(),
                };
                let now = Instant::now();
                let pc = self.connected.entry(peer_id).or_insert_with(|| PeerConns {
                    since: now,
                    conns: HashMap::new(),
                });
                let first = pc.conns.is_empty();
                let had_relayed = pc.conns.values().any(|c| c.reach == Reach::Relayed);
                // A direct connection to a peer we only had a relayed one with comes from
                // hole punching (DCUtR also says so for the connections it dialled).
                let reach = if endpoint.is_relayed() {
                    Reach::Relayed
                } else if had_relayed {
                    Reach::HolePunched
                } else {
                    Reach::Direct
                };
                pc.conns.insert(
                    connection_id,
                    Conn {
                        addr: addr.clone(),
                        outbound: endpoint.is_dialer(),
                        since: now,
                        reach,
                    },
                );
                if first {
                    info!(peer = %peer_id, %addr, reach = reach.as_str(), "connected");
                    if let Some(r) = self.wanted.get_mut(&peer_id) {
                        r.backoff = Duration::from_secs(1);
                    }
                    let _ = self.send_event(NetEvent::PeerConnected(peer_id, addr));
                } else if reach == Reach::HolePunched {
                    info!(peer = %peer_id, %addr, "direct connection after a relayed one");
                }
                let best = self.reach_of(&peer_id).unwrap_or(reach);
                self.answer_waiters(&peer_id, Ok(best));
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(pc) = self.connected.get_mut(&peer_id) {
                    pc.conns.remove(&connection_id);
                }
                if num_established == 0 {
                    self.connected.remove(&peer_id);
                    info!(peer = %peer_id, "disconnected");
                    if let Some(r) = self.wanted.get_mut(&peer_id) {
                        r.next = Instant::now() + r.backoff;
                    }
                    let _ = self.send_event(NetEvent::PeerDisconnected(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(?peer_id, "dial failed: {error}");
                if let Some(p) = peer_id {
                    if !self.swarm.is_connected(&p) && self.waiters.contains_key(&p) {
                        self.answer_waiters(&p, Err(format!("cannot reach {p}: {error}")));
                    }
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                // Includes peers without the network key: they fail the pnet handshake.
                debug!(%send_back_addr, "incoming connection failed: {error}");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let topic = TopicKind::ALL
                    .into_iter()
                    .zip(&self.topics)
                    .find(|(_, h)| **h == message.topic)
                    .map(|(k, _)| k);
                let Some(topic) = topic else {
                    // We only subscribe to our topics; anything else is a protocol violation.
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            MessageAcceptance::Reject,
                        );
                    return;
                };
                let verdict =
                    (self.gossip_sink)(topic, message_id.clone(), propagation_source, message.data);
                let acceptance = match verdict {
                    SinkVerdict::Now(a) => a,
                    SinkVerdict::Later => return,
                    SinkVerdict::Dropped => {
                        // The node is overloaded: ignore rather than hold the message.
                        self.dropped_events += 1;
                        MessageAcceptance::Ignore
                    }
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(ev)) => self.sync_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Trade(ev)) => self.trade_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                connection_id,
                info,
            })) => {
                debug!(peer = %peer_id, agent = %info.agent_version, "identified");
                self.identified(peer_id, connection_id, &info);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) => match result {
                Ok(id) => {
                    if let Some(c) = self
                        .connected
                        .get_mut(&remote_peer_id)
                        .and_then(|pc| pc.conns.get_mut(&id))
                    {
                        c.reach = Reach::HolePunched;
                    }
                    info!(peer = %remote_peer_id, "hole punched: direct connection");
                }
                Err(e) => info!(peer = %remote_peer_id, "hole punching failed: {e}"),
            },
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::Event::StatusChanged {
                old,
                new,
            })) => {
                info!(?old, ?new, "AutoNAT: reachability changed");
                if let autonat::NatStatus::Public(a) = &old {
                    if !matches!(new, autonat::NatStatus::Public(_))
                        && !self.static_external.contains(a)
                    {
                        self.swarm.remove_external_address(a);
                    }
                }
                self.external_changed();
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(ev)) => match ev {
                relay::client::Event::ReservationReqAccepted {
                    relay_peer_id,
                    renewal: false,
                    ..
                } => info!(relay = %relay_peer_id, "relay reservation accepted"),
                ev => debug!(?ev, "relay client"),
            },
            SwarmEvent::Behaviour(BehaviourEvent::Relay(ev)) => match ev {
                relay::Event::ReservationReqAccepted {
                    src_peer_id,
                    renewed: false,
                } => info!(peer = %src_peer_id, "serving a relay reservation"),
                relay::Event::CircuitReqAccepted {
                    src_peer_id,
                    dst_peer_id,
                } => debug!(src = %src_peer_id, dst = %dst_peer_id, "relaying a connection"),
                relay::Event::StatusChanged { status } => {
                    info!(?status, "relay service");
                }
                ev => debug!(?ev, "relay server"),
            },
            SwarmEvent::Behaviour(BehaviourEvent::Upnp(ev)) => match ev {
                upnp::Event::NewExternalAddr { external_addr, .. } => {
                    info!(%external_addr, "UPnP: port mapped on the router");
                }
                upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                    info!(%external_addr, "UPnP: port mapping expired");
                }
                upnp::Event::GatewayNotFound => debug!("UPnP: no gateway"),
                upnp::Event::NonRoutableGateway => {
                    debug!("UPnP: the gateway is itself behind NAT");
                }
            },
            _ => {}
        }
    }

    /// What identify tells about a peer: its addresses for the book, and whether it serves
    /// as a relay.
    fn identified(&mut self, peer: PeerId, conn: ConnectionId, info: &identify::Info) {
        let Some(c) = self.connected.get(&peer).and_then(|pc| pc.conns.get(&conn)) else {
            return;
        };
        let (conn_addr, outbound, direct) = (c.addr.clone(), c.outbound, c.reach != Reach::Relayed);
        // Loopback addresses only mean something to a peer reached over loopback.
        let local_ok = reach::is_loopback(&conn_addr);
        let usable: Vec<&Multiaddr> = info
            .listen_addrs
            .iter()
            .take(2 * reach::MAX_ADDRS_PER_PEER)
            .filter(|a| local_ok || !reach::is_loopback(a))
            .collect();
        let book = &mut self.swarm.behaviour_mut().addresses;
        for a in usable.iter().rev() {
            book.add(peer, a);
        }
        let hop = info.protocols.contains(&relay::HOP_PROTOCOL_NAME);
        if hop && direct {
            // The address we reach it at: the one we dialled, else one it listens on.
            let addr = if outbound {
                Some(conn_addr)
            } else {
                usable
                    .iter()
                    .find(|a| !reach::is_relayed(a))
                    .map(|a| (*a).clone())
            };
            if addr.is_some() && !book.relays().any(|(p, _)| *p == peer) {
                info!(relay = %peer, "peer serves as a relay");
            }
            book.set_relay(peer, addr);
        } else if !hop {
            book.set_relay(peer, None);
        }
    }

    fn sync_event(&mut self, ev: request_response::Event<SyncRequest, SyncResponse>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let ev = NetEvent::SyncRequest {
                        peer,
                        request,
                        channel,
                    };
                    if let Err(NetEvent::SyncRequest { channel, .. }) =
                        self.send_event(ev).map_err(|b| *b)
                    {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .sync
                            .send_response(channel, SyncResponse::Refused);
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(r) = self.pending_sync.remove(&request_id) {
                        let _ = r.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(r) = self.pending_sync.remove(&request_id) {
                    let _ = r.send(Err(error.to_string()));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, "inbound sync failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn trade_event(&mut self, ev: request_response::Event<TradeRequest, TradeResponse>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let ev = NetEvent::TradeRequest {
                        peer,
                        request,
                        channel,
                    };
                    if let Err(NetEvent::TradeRequest { channel, .. }) =
                        self.send_event(ev).map_err(|b| *b)
                    {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .trade
                            .send_response(channel, TradeResponse::Reject(RejectReason::Busy));
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(r) = self.pending_trade.remove(&request_id) {
                        let _ = r.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(r) = self.pending_trade.remove(&request_id) {
                    let _ = r.send(Err(error.to_string()));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                warn!(%peer, "inbound trade message failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}

use libp2p::identify;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_and_peer_ids_map_one_to_one() {
        let key = NodeKey::from_secret(&[3; 32]);
        let peer = keypair(&key).public().to_peer_id();
        assert_eq!(peer_id_of(&key.node_id()), Some(peer));
        assert_eq!(node_id_of(&peer), Some(key.node_id()));
    }
}
