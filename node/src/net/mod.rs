//! Networking: one task owns the libp2p `Swarm`; everything else talks to it through a
//! cloneable [`NetHandle`] (commands with oneshot replies) and receives [`NetEvent`]s on a
//! bounded channel. Nothing slow runs on the swarm task: signature checks happen in the
//! validation worker and database commits on blocking threads (see `crate::node`).
//!
//! The model is rust-libp2p's `examples/file-sharing/src/network.rs`.

pub mod behaviour;
pub mod codec;

use behaviour::{Behaviour, BehaviourEvent, BehaviourSettings, TopicKind};
use futures::StreamExt;
use libp2p::core::transport::Transport as _;
use libp2p::core::upgrade::Version;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::multiaddr::Protocol;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identity, noise, tcp, yamux};
use std::collections::HashMap;
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
    /// How it is reached: `direct` (relayed and hole-punched arrive with issue 4).
    pub reach: &'static str,
    /// Whether we dialled it.
    pub outbound: bool,
    /// Its gossipsub score.
    pub score: f64,
    /// Seconds connected.
    pub connected_secs: u64,
}

/// Something the network tells the node.
#[derive(Debug)]
pub enum NetEvent {
    /// A gossip message awaiting the node's verdict ([`NetHandle::report`]).
    Gossip {
        /// Which topic.
        topic: TopicKind,
        /// Its message id.
        id: MessageId,
        /// The peer that forwarded it.
        source: PeerId,
        /// The envelope bytes.
        data: Vec<u8>,
    },
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
    /// We are listening on a new address.
    Listening(Multiaddr),
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
    Stop(Reply<()>),
}

/// The cloneable handle to the swarm task.
#[derive(Debug, Clone)]
pub struct NetHandle {
    tx: mpsc::Sender<Command>,
    local: PeerId,
    psk: SharedKey,
}

/// The network key new connections use.
type SharedKey = std::sync::Arc<std::sync::RwLock<PreSharedKey>>;

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

    /// Stops the swarm task.
    pub async fn stop(&self) {
        let _ = self.ask(Command::Stop).await;
    }

    /// Closes every connection to `peer`; with `ban`, refuses its connections from now on
    /// and stops redialling it (a removed member).
    pub fn disconnect(&self, peer: PeerId, ban: bool) {
        let _ = self.tx.try_send(Command::Disconnect(peer, ban));
    }

    /// Switches the private network key for new connections (a rotation); connections open
    /// now stay up.
    pub fn set_network_key(&self, psk: [u8; 32]) {
        *self.psk.write().unwrap_or_else(|e| e.into_inner()) = PreSharedKey::new(psk);
    }
}

/// Builds the transport: TCP, then the private network handshake with the pre-shared key (a
/// peer without the key cannot get further), then Noise and yamux.
fn transport(
    key: &identity::Keypair,
    psk: SharedKey,
) -> anyhow::Result<libp2p::core::transport::Boxed<(PeerId, libp2p::core::muxing::StreamMuxerBox)>>
{
    Ok(
        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
            .and_then(move |socket, _| {
                // Read per connection, so a rotated key applies to the next one.
                let current = *psk.read().unwrap_or_else(|e| e.into_inner());
                PnetConfig::new(current).handshake(socket)
            })
            .upgrade(Version::V1Lazy)
            .authenticate(noise::Config::new(key)?)
            .multiplex(yamux::Config::default())
            .timeout(Duration::from_secs(20))
            .boxed(),
    )
}

/// Starts the swarm task.
pub fn spawn(
    key: &NodeKey,
    cfg: NetConfig,
) -> anyhow::Result<(NetHandle, mpsc::Receiver<NetEvent>)> {
    let kp = keypair(key);
    let local = kp.public().to_peer_id();
    let behaviour = Behaviour::new(&kp, &cfg.behaviour)?;
    let psk: SharedKey = std::sync::Arc::new(std::sync::RwLock::new(PreSharedKey::new(cfg.psk)));
    let mut swarm = Swarm::new(
        transport(&kp, psk.clone())?,
        behaviour,
        local,
        libp2p::swarm::Config::with_tokio_executor().with_idle_connection_timeout(cfg.idle_timeout),
    );
    for addr in &cfg.listen {
        swarm.listen_on(addr.clone())?;
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let task = SwarmTask {
        swarm,
        commands: cmd_rx,
        events: ev_tx,
        neighbourhood: cfg.behaviour.neighbourhood,
        bootstrap: cfg
            .bootstrap
            .iter()
            .filter_map(|a| Some((peer_of(a)?, Redial::new(a.clone()))))
            .collect(),
        pending_sync: HashMap::new(),
        pending_trade: HashMap::new(),
        connected: HashMap::new(),
        banned: std::collections::HashSet::new(),
        dropped_events: 0,
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

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

/// Redial state for a bootstrap peer: exponential backoff from 1 s to 60 s.
#[derive(Debug)]
struct Redial {
    addr: Multiaddr,
    next: Instant,
    backoff: Duration,
}

impl Redial {
    fn new(addr: Multiaddr) -> Redial {
        Redial {
            addr,
            next: Instant::now(),
            backoff: Duration::from_secs(1),
        }
    }
}

struct Conn {
    addr: Multiaddr,
    outbound: bool,
    since: Instant,
    count: u32,
}

struct SwarmTask {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    neighbourhood: wattmesh_protocol::NeighbourhoodId,
    bootstrap: HashMap<PeerId, Redial>,
    pending_sync: HashMap<OutboundRequestId, Reply<Result<SyncResponse, String>>>,
    pending_trade: HashMap<OutboundRequestId, Reply<Result<TradeResponse, String>>>,
    connected: HashMap<PeerId, Conn>,
    /// Peers refused outright (removed members). Bounded by the roster's size.
    banned: std::collections::HashSet<PeerId>,
    dropped_events: u64,
}

impl SwarmTask {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Stop(reply)) => { let _ = reply.send(()); break; }
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                ev = self.swarm.select_next_some() => self.swarm_event(ev),
                _ = tick.tick() => self.redial(),
            }
        }
        debug!("swarm task stopped");
    }

    fn redial(&mut self) {
        let now = Instant::now();
        let due: Vec<Multiaddr> = self
            .bootstrap
            .iter_mut()
            .filter(|(p, r)| !self.connected.contains_key(p) && r.next <= now)
            .map(|(_, r)| {
                r.next = now + r.backoff;
                r.backoff = (r.backoff * 2).min(Duration::from_secs(60));
                r.addr.clone()
            })
            .collect();
        for addr in due {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                debug!(%addr, "redial failed: {e}");
            }
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
                    .publish(topic.topic(&self.neighbourhood), data)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            Command::Report(id, source, acceptance) => {
                b.gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
            }
            Command::Dial(addr, reply) => {
                if let Some(p) = peer_of(&addr) {
                    self.bootstrap
                        .entry(p)
                        .or_insert_with(|| Redial::new(addr.clone()));
                }
                let r = self.swarm.dial(addr).map_err(|e: DialError| e.to_string());
                let _ = reply.send(r);
            }
            Command::Peers(reply) => {
                let list = self
                    .connected
                    .iter()
                    .map(|(p, c)| PeerInfo {
                        peer_id: p.to_string(),
                        node: node_id_of(p).map(|n| n.short()).unwrap_or_default(),
                        address: c.addr.to_string(),
                        reach: "direct",
                        outbound: c.outbound,
                        score: self
                            .swarm
                            .behaviour()
                            .gossipsub
                            .peer_score(p)
                            .unwrap_or(0.0),
                        connected_secs: c.since.elapsed().as_secs(),
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
                    self.bootstrap.remove(&peer);
                }
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Stop(_) => unreachable!("handled in run"),
        }
    }

    fn swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                let _ = self.send_event(NetEvent::Listening(address));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                if self.banned.contains(&peer_id) {
                    debug!(peer = %peer_id, "refused a removed member");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                let outbound = endpoint.is_dialer();
                let c = self.connected.entry(peer_id).or_insert_with(|| Conn {
                    addr: addr.clone(),
                    outbound,
                    since: Instant::now(),
                    count: 0,
                });
                c.count += 1;
                if c.count == 1 {
                    info!(peer = %peer_id, %addr, "connected");
                    if let Some(r) = self.bootstrap.get_mut(&peer_id) {
                        r.backoff = Duration::from_secs(1);
                    }
                    let _ = self.send_event(NetEvent::PeerConnected(peer_id, addr));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
                info!(peer = %peer_id, "disconnected");
                if let Some(r) = self.bootstrap.get_mut(&peer_id) {
                    r.next = Instant::now() + r.backoff;
                }
                let _ = self.send_event(NetEvent::PeerDisconnected(peer_id));
            }
            SwarmEvent::ConnectionClosed { peer_id, .. } => {
                if let Some(c) = self.connected.get_mut(&peer_id) {
                    c.count = c.count.saturating_sub(1);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(?peer_id, "dial failed: {error}");
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
                    .find(|k| k.topic(&self.neighbourhood).hash() == message.topic);
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
                let ev = NetEvent::Gossip {
                    topic,
                    id: message_id,
                    source: propagation_source,
                    data: message.data,
                };
                if let Err(NetEvent::Gossip { id, source, .. }) =
                    self.send_event(ev).map_err(|b| *b)
                {
                    // The node is overloaded: ignore rather than hold the message.
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(&id, &source, MessageAcceptance::Ignore);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(ev)) => self.sync_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Trade(ev)) => self.trade_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                debug!(peer = %peer_id, agent = %info.agent_version, "identified");
            }
            _ => {}
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
