//! The node's combined libp2p behaviour and the configuration of each part.

use super::codec::PostcardCodec;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, autonat, connection_limits, dcutr, identify, identity, relay, upnp};
use std::time::Duration;
use wattmesh_protocol::NeighbourhoodId;
use wattmesh_protocol::codec::MAX_ENVELOPE_BYTES;
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::sync::{MAX_SYNC_MESSAGE_BYTES, SyncRequest, SyncResponse};
use wattmesh_protocol::trade::{MAX_TRADE_MESSAGE_BYTES, TradeRequest, TradeResponse};

/// The trade handshake protocol.
pub const TRADE_PROTOCOL: StreamProtocol = StreamProtocol::new("/wattmesh/trade/1");
/// The sync protocol.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/wattmesh/sync/1");

/// Gossip topics: one per message kind per neighbourhood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicKind {
    /// Offers.
    Offers,
    /// Meter attestations.
    Attestations,
    /// Membership: roster records, charter versions and network key rotations.
    Members,
}

impl TopicKind {
    /// Every topic.
    pub const ALL: [TopicKind; 3] = [
        TopicKind::Offers,
        TopicKind::Attestations,
        TopicKind::Members,
    ];

    /// The topic for this kind in neighbourhood `n`: `wattmesh/<nid hex>/offers/1`.
    pub fn topic(self, n: &NeighbourhoodId) -> IdentTopic {
        let name = match self {
            TopicKind::Offers => "offers",
            TopicKind::Attestations => "attestations",
            TopicKind::Members => "members",
        };
        IdentTopic::new(format!("wattmesh/{}/{name}/1", n.to_hex()))
    }
}

/// Gossipsub score thresholds. One provably invalid message costs 100 points (see
/// [`topic_score_params`]), which takes a peer below the graylist threshold at once.
pub fn score_thresholds() -> gossipsub::PeerScoreThresholds {
    gossipsub::PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 1.0,
    }
}

/// Per-topic score parameters. Without them gossipsub's invalid-message penalty (P4) is
/// zero, so invalid messages would cost nothing.
pub fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        // P1: a little credit for staying in the mesh.
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 300.0,
        // P2: credit for delivering messages first.
        first_message_deliveries_weight: 0.5,
        first_message_deliveries_decay: gossipsub::score_parameter_decay(Duration::from_secs(600)),
        first_message_deliveries_cap: 50.0,
        // P3/P3b off: a quiet neighbourhood has long stretches with no offers, and honest
        // peers must not be punished for having nothing to forward.
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        // P4: a provably invalid message costs 100 points, squared per count; it decays to
        // 1 % over an hour.
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: gossipsub::score_parameter_decay(Duration::from_secs(
            3600,
        )),
        ..Default::default()
    }
}

/// The combined behaviour; one swarm task owns it. (libp2p behaviours do not implement Debug.)
#[allow(missing_debug_implementations)]
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Offers and attestations, each held until the application has validated it.
    pub gossipsub: gossipsub::Behaviour,
    /// Tells other libp2p implementations (and us) each peer's addresses and agent.
    pub identify: identify::Behaviour,
    /// The bilateral trade handshake (`/wattmesh/trade/1`).
    pub trade: request_response::Behaviour<PostcardCodec<TradeRequest, TradeResponse>>,
    /// Catching up after an outage (`/wattmesh/sync/1`).
    pub sync: request_response::Behaviour<PostcardCodec<SyncRequest, SyncResponse>>,
    /// Caps on connections in total and per peer.
    pub limits: connection_limits::Behaviour,
    /// Peers' addresses, and circuits through connected relays for dials by peer id.
    pub addresses: super::reach::AddressBook,
    /// Circuit relay v2, client side: reservations on reachable members and relayed dials.
    pub relay_client: relay::client::Behaviour,
    /// Circuit relay v2, server side: serves other members once this node is reachable.
    pub relay: Toggle<relay::Behaviour>,
    /// Hole punching: upgrades relayed connections to direct ones where the NATs allow.
    pub dcutr: dcutr::Behaviour,
    /// AutoNAT (v1): peers dial us back to tell whether we are reachable.
    pub autonat: autonat::Behaviour,
    /// UPnP port mapping on the home router (off in tests and the testnet).
    pub upnp: Toggle<upnp::tokio::Behaviour>,
}

/// Reach settings: relay server, UPnP.
#[derive(Debug, Clone)]
pub struct ReachSettings {
    /// Serve circuit relay v2 (only advertised while we have a confirmed external address).
    pub relay_server: bool,
    /// The most reservations we hold for others.
    pub relay_max_reservations: usize,
    /// The most relayed connections we carry at once.
    pub relay_max_circuits: usize,
    /// ... per peer.
    pub relay_max_circuits_per_peer: usize,
    /// How long one relayed connection may last.
    pub relay_max_circuit_duration: Duration,
    /// How many bytes one relayed connection may carry.
    pub relay_max_circuit_bytes: u64,
    /// Map our listening port on the router with UPnP.
    pub upnp: bool,
}

/// Settings the behaviour is built from.
#[derive(Debug, Clone)]
pub struct BehaviourSettings {
    /// The neighbourhood (for topic names and score parameters).
    pub neighbourhood: NeighbourhoodId,
    /// Gossipsub heartbeat.
    pub heartbeat: Duration,
    /// How long gossipsub remembers seen message ids.
    pub duplicate_cache: Duration,
    /// Request-response timeout.
    pub request_timeout: Duration,
    /// Connection caps.
    pub max_connections: u32,
    /// Connections per peer.
    pub max_connections_per_peer: u32,
    /// Relay, UPnP.
    pub reach: ReachSettings,
}

impl Behaviour {
    /// Builds the behaviour for a node with identity `key`; `relay_client` comes with the
    /// relay transport (`relay::client::new`).
    pub fn new(
        key: &identity::Keypair,
        s: &BehaviourSettings,
        relay_client: relay::client::Behaviour,
    ) -> anyhow::Result<Behaviour> {
        let local = key.public().to_peer_id();
        let config = gossipsub::ConfigBuilder::default()
            .validation_mode(ValidationMode::Anonymous)
            .validate_messages()
            .message_id_fn(|m: &gossipsub::Message| {
                gossipsub::MessageId::from(Envelope::content_id(&m.data).0.to_vec())
            })
            .heartbeat_interval(s.heartbeat)
            .duplicate_cache_time(s.duplicate_cache)
            .max_transmit_size(MAX_ENVELOPE_BYTES + 256)
            // Peer exchange stays off (the default): it would hand out addresses of peers we
            // cannot vouch for.
            .build()
            .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
        let mut gossipsub = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, config)
            .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;
        let mut params = gossipsub::PeerScoreParams {
            // Neighbours behind one router (an apartment block) share an IP; membership is
            // controlled by the network key and the roster instead.
            ip_colocation_factor_weight: 0.0,
            ..Default::default()
        };
        for kind in TopicKind::ALL {
            params
                .topics
                .insert(kind.topic(&s.neighbourhood).hash(), topic_score_params());
        }
        gossipsub
            .with_peer_score(params, score_thresholds())
            .map_err(|e| anyhow::anyhow!("gossipsub scoring: {e}"))?;
        for kind in TopicKind::ALL {
            gossipsub.subscribe(&kind.topic(&s.neighbourhood))?;
        }
        let identify = identify::Behaviour::new(
            identify::Config::new("/ipfs/id/1.0.0".into(), key.public())
                .with_agent_version(format!("wattmesh/{}", env!("CARGO_PKG_VERSION")))
                // New addresses (a relay reservation, a router mapping) reach peers at once.
                .with_push_listen_addr_updates(true)
                // identify's own peer cache is unused (the address book is ours).
                .with_cache_size(0),
        );
        let rr = request_response::Config::default()
            .with_request_timeout(s.request_timeout)
            .with_max_concurrent_streams(32);
        let trade = request_response::Behaviour::with_codec(
            PostcardCodec::new(MAX_TRADE_MESSAGE_BYTES),
            [(TRADE_PROTOCOL, ProtocolSupport::Full)],
            rr.clone(),
        );
        let sync = request_response::Behaviour::with_codec(
            PostcardCodec::new(MAX_SYNC_MESSAGE_BYTES),
            [(SYNC_PROTOCOL, ProtocolSupport::Full)],
            rr,
        );
        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(s.max_connections))
                .with_max_established_per_peer(Some(s.max_connections_per_peer))
                .with_max_pending_incoming(Some(32))
                .with_max_pending_outgoing(Some(32)),
        );
        let r = &s.reach;
        let relay = r.relay_server.then(|| {
            relay::Behaviour::new(
                local,
                relay::Config {
                    max_reservations: r.relay_max_reservations,
                    max_reservations_per_peer: 2,
                    max_circuits: r.relay_max_circuits,
                    max_circuits_per_peer: r.relay_max_circuits_per_peer,
                    // The relay protocol carries durations as u32 seconds.
                    max_circuit_duration: r
                        .relay_max_circuit_duration
                        .min(Duration::from_secs(u64::from(u32::MAX))),
                    max_circuit_bytes: r.relay_max_circuit_bytes,
                    ..relay::Config::default()
                },
            )
        });
        let autonat = autonat::Behaviour::new(
            local,
            autonat::Config {
                // Neighbourhoods are small: probe soon after start, and ask the same peer
                // again sooner than the public-network default.
                boot_delay: Duration::from_secs(5),
                retry_interval: Duration::from_secs(30),
                refresh_interval: Duration::from_secs(10 * 60),
                throttle_server_period: Duration::from_secs(15),
                ..autonat::Config::default()
            },
        );
        Ok(Behaviour {
            gossipsub,
            identify,
            trade,
            sync,
            limits,
            addresses: super::reach::AddressBook::new(local),
            relay_client,
            relay: Toggle::from(relay),
            dcutr: dcutr::Behaviour::new(local),
            autonat,
            upnp: Toggle::from(r.upnp.then(upnp::tokio::Behaviour::default)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_kind_as_a_number_is_its_place_in_all() {
        // The swarm task keeps the topics' hashes in this order and looks them up by number.
        for (i, k) in TopicKind::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i);
        }
    }
}
