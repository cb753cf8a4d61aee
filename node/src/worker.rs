//! The validation worker: a dedicated thread that owns the stateful [`Validator`] and checks
//! every incoming message (signatures included) off the swarm task and off the async runtime.
//! It reports each gossip message's verdict straight to the network and hands accepted
//! messages to the node.

use crate::clock::Clock;
use crate::neighbourhood::{self, SharedRoster};
use crate::net::NetHandle;
use crate::net::behaviour::TopicKind;
use libp2p::PeerId;
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use tokio::sync::mpsc;
use tracing::debug;
use wattmesh_protocol::attestation::{AttestationCommitment, MeterAttestation, chain_hash};
use wattmesh_protocol::charter::CharterChain;
use wattmesh_protocol::envelope::{Envelope, Kind};
use wattmesh_protocol::offer::Offer;
use wattmesh_protocol::roster::{self, Rekey, RosterError, Transition};
use wattmesh_protocol::validate::{Accepted, Invalid, Validator};

/// Work for the validator.
#[derive(Debug)]
pub enum Work {
    /// A gossip message awaiting a verdict.
    Gossip {
        /// The topic it came on.
        topic: TopicKind,
        /// Its id.
        id: MessageId,
        /// The forwarding peer.
        source: PeerId,
        /// The envelope bytes.
        data: Vec<u8>,
    },
    /// An envelope fetched by sync (validated the same way, but there is no verdict to report).
    Synced(Vec<u8>),
    /// An envelope fetched by sync that may be old (attestations of past slots): archival
    /// checks only, no freshness.
    Archival(Vec<u8>),
    /// A membership record, charter version or key rotation fetched by sync (or made by this
    /// node): checked without freshness.
    Members(Vec<u8>),
    /// One of our own offers, recorded so that replays of it are refused.
    Own(Box<Offer>),
    /// A private attestation and its commitment sent to us by their node (privacy mode, on
    /// `/wattmesh/trade/1`): archival checks of both, and that the commitment opens to the
    /// attestation. Not recorded in the replay window: the commitment still travels by gossip,
    /// and this node must not refuse to relay it.
    Private {
        /// Who sent it (the peer's node id).
        from: wattmesh_protocol::NodeId,
        /// The attestation's envelope bytes.
        attestation: Vec<u8>,
        /// The commitment's envelope bytes.
        commitment: Vec<u8>,
        /// Where the answer goes (the node's reply token).
        reply: u64,
    },
    /// A new charter chain (a charter version was added).
    Chain(Box<CharterChain>),
}

/// What the worker found.
#[derive(Debug)]
pub enum Outcome {
    /// Accepted: the node should store and use it.
    Accepted {
        /// The message.
        accepted: Box<Accepted>,
        /// Whether it came by sync rather than gossip.
        synced: bool,
    },
    /// Refused.
    Refused {
        /// Why.
        why: Invalid,
        /// Whether it came by sync.
        synced: bool,
    },
    /// A membership record new to this node, already in the shared roster.
    Roster {
        /// Its envelope bytes.
        bytes: Vec<u8>,
        /// Who it admitted or expelled.
        transitions: Vec<Transition>,
        /// Whether it came by sync (or from this node) rather than gossip.
        synced: bool,
    },
    /// A charter version new to this node, already appended to the worker's chain.
    Charter {
        /// Its envelope bytes.
        bytes: Vec<u8>,
        /// Whether it came by sync.
        synced: bool,
    },
    /// A network key rotation part signed by an admin.
    Rekey {
        /// Its envelope bytes.
        bytes: Vec<u8>,
        /// The decoded rotation.
        rekey: Box<Rekey>,
        /// Whether it came by sync.
        synced: bool,
    },
    /// A member's addresses.
    Presence {
        /// Its envelope bytes.
        bytes: Vec<u8>,
        /// The decoded presence.
        presence: Box<roster::Presence>,
        /// Whether it came by sync (or from this node).
        synced: bool,
    },
    /// A private attestation sent to us, checked (or why not).
    Private {
        /// The reply token of the request.
        reply: u64,
        /// The checked pair.
        checked: Result<Box<PrivatePair>, String>,
    },
    /// A membership message refused.
    RefusedRecord {
        /// Why.
        why: String,
        /// Whether it proves misbehaviour.
        provable: bool,
        /// Whether it came by sync.
        synced: bool,
    },
}

/// A private attestation with the commitment that opens to it, both checked.
#[derive(Debug)]
pub struct PrivatePair {
    /// The attestation.
    pub attestation: MeterAttestation,
    /// Its envelope bytes.
    pub attestation_bytes: Vec<u8>,
    /// The commitment.
    pub commitment: AttestationCommitment,
    /// Its envelope bytes.
    pub commitment_bytes: Vec<u8>,
}

/// Checks a private attestation and its commitment from `from`: both valid (archival), both
/// `from`'s, the attestation marked private, and the commitment opening to it.
pub fn check_private(
    from: &wattmesh_protocol::NodeId,
    attestation: Vec<u8>,
    commitment: Vec<u8>,
    chain: &CharterChain,
) -> Result<PrivatePair, String> {
    use wattmesh_protocol::validate::{Msg, validate_archival};
    let a = match validate_archival(&attestation, chain, false) {
        Ok(acc) => match acc.msg {
            Msg::Attestation(a) => (a, acc.envelope),
            _ => return Err("not an attestation".into()),
        },
        Err(e) => return Err(format!("attestation: {e}")),
    };
    let c = match validate_archival(&commitment, chain, false) {
        Ok(acc) => match acc.msg {
            Msg::Commitment(c) => c,
            _ => return Err("not a commitment".into()),
        },
        Err(e) => return Err(format!("commitment: {e}")),
    };
    let (a, env) = a;
    if &a.node != from || &c.node != from {
        return Err("not the sender's".into());
    }
    if !a.is_private() {
        return Err("the attestation is not marked private".into());
    }
    c.opens(&a, &chain_hash(&env.payload))
        .map_err(|e| e.to_string())?;
    Ok(PrivatePair {
        attestation: a,
        attestation_bytes: attestation,
        commitment: c,
        commitment_bytes: commitment,
    })
}

/// How many messages may wait for the worker.
pub const WORK_QUEUE: usize = 8192;

/// The worker's queue (made before the network starts, so that the swarm task can hand gossip
/// to the worker directly: [`gossip_sink`]).
pub fn channel() -> (mpsc::Sender<Work>, mpsc::Receiver<Work>) {
    mpsc::channel::<Work>(WORK_QUEUE)
}

/// The network's way into the worker's queue for gossip.
pub fn gossip_sink(tx: mpsc::Sender<Work>) -> crate::net::GossipSink {
    Box::new(move |topic, id, source, data| {
        tx.try_send(Work::Gossip {
            topic,
            id,
            source,
            data,
        })
        .is_ok()
    })
}

/// Starts the worker thread on the queue from [`channel`].
pub fn spawn(
    mut rx: mpsc::Receiver<Work>,
    chain: CharterChain,
    roster: SharedRoster,
    clock: Clock,
    net: NetHandle,
    out: mpsc::Sender<Outcome>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("wattmesh-validate".into())
        .spawn(move || {
            let mut chain = chain;
            let mut v = Validator::new();
            while let Some(work) = rx.blocking_recv() {
                let now = clock.now_ms();
                let (data, gossip) = match work {
                    Work::Archival(data) => {
                        let outcome = match wattmesh_protocol::validate::validate_archival(
                            &data, &chain, false,
                        ) {
                            Ok(a) => {
                                match &a.msg {
                                    wattmesh_protocol::validate::Msg::Attestation(att) => {
                                        v.record_attestation(att);
                                    }
                                    wattmesh_protocol::validate::Msg::Commitment(c) => {
                                        v.record_chain(c.node, c.seq);
                                    }
                                    _ => {}
                                }
                                Outcome::Accepted {
                                    accepted: Box::new(a),
                                    synced: true,
                                }
                            }
                            Err(why) => Outcome::Refused { why, synced: true },
                        };
                        if out.blocking_send(outcome).is_err() {
                            break;
                        }
                        continue;
                    }
                    Work::Gossip {
                        topic: TopicKind::Members,
                        id,
                        source,
                        data,
                    } => {
                        let outcome = members(&data, &mut chain, &roster, Some(now), false);
                        net.report(id, source, acceptance_of(&outcome));
                        if out.blocking_send(outcome).is_err() {
                            break;
                        }
                        continue;
                    }
                    Work::Members(data) => {
                        let outcome = members(&data, &mut chain, &roster, None, true);
                        if out.blocking_send(outcome).is_err() {
                            break;
                        }
                        continue;
                    }
                    Work::Gossip {
                        topic,
                        id,
                        source,
                        data,
                    } => (data, Some((topic, id, source))),
                    Work::Synced(data) => (data, None),
                    Work::Own(offer) => {
                        v.record_offer(&offer, now);
                        continue;
                    }
                    Work::Private {
                        from,
                        attestation,
                        commitment,
                        reply,
                    } => {
                        let checked =
                            check_private(&from, attestation, commitment, &chain).map(Box::new);
                        if out
                            .blocking_send(Outcome::Private { reply, checked })
                            .is_err()
                        {
                            break;
                        }
                        continue;
                    }
                    Work::Chain(c) => {
                        chain = *c;
                        neighbourhood::write(&roster).set_chain(&chain);
                        continue;
                    }
                };
                let result = {
                    let members = neighbourhood::read(&roster);
                    v.validate_gossip(&data, &chain, &members, now)
                };
                if let Some((topic, id, source)) = &gossip {
                    let acceptance = match &result {
                        Ok(a) if topic_matches(*topic, a) => MessageAcceptance::Accept,
                        Ok(_) => MessageAcceptance::Reject,
                        Err(e) if e.is_provable() => MessageAcceptance::Reject,
                        Err(_) => MessageAcceptance::Ignore,
                    };
                    net.report(id.clone(), *source, acceptance);
                }
                let synced = gossip.is_none();
                let outcome = match result {
                    Ok(a)
                        if gossip
                            .as_ref()
                            .is_none_or(|(t, _, _)| topic_matches(*t, &a)) =>
                    {
                        Outcome::Accepted {
                            accepted: Box::new(a),
                            synced,
                        }
                    }
                    Ok(_) => Outcome::Refused {
                        why: Invalid::Field("topic"),
                        synced,
                    },
                    Err(why) => {
                        debug!(%why, synced, "refused a message");
                        Outcome::Refused { why, synced }
                    }
                };
                if out.blocking_send(outcome).is_err() {
                    break;
                }
            }
        })?;
    Ok(())
}

/// The gossip verdict for a membership message.
fn acceptance_of(o: &Outcome) -> MessageAcceptance {
    match o {
        Outcome::Roster { .. }
        | Outcome::Charter { .. }
        | Outcome::Rekey { .. }
        | Outcome::Presence { .. } => MessageAcceptance::Accept,
        Outcome::RefusedRecord { provable: true, .. } => MessageAcceptance::Reject,
        _ => MessageAcceptance::Ignore,
    }
}

/// Checks a message from the members topic, or fetched by sync: a roster record goes into the
/// shared roster, a charter version onto the chain, a key rotation to the node.
fn members(
    data: &[u8],
    chain: &mut CharterChain,
    roster: &SharedRoster,
    fresh_now: Option<u64>,
    synced: bool,
) -> Outcome {
    let refused = |why: String, provable: bool| Outcome::RefusedRecord {
        why,
        provable,
        synced,
    };
    let env = match Envelope::from_bytes(data) {
        Ok(env) => env,
        Err(e) => return refused(e.to_string(), true),
    };
    match Kind::from_u8(env.kind) {
        Some(Kind::Membership) => {
            let inserted = neighbourhood::write(roster).insert(data, chain, fresh_now);
            match inserted {
                Ok(Some(transitions)) => Outcome::Roster {
                    bytes: data.to_vec(),
                    transitions,
                    synced,
                },
                Ok(None) => refused("already known".into(), false),
                Err(e) => {
                    let provable = e.is_provable();
                    refused(e.to_string(), provable)
                }
            }
        }
        Some(Kind::Charter) => {
            let version = env
                .payload_as::<wattmesh_protocol::Charter>()
                .map(|c| c.version)
                .unwrap_or(0);
            let latest = chain.latest().charter.version;
            if version != latest + 1 {
                // Known already, or a gap that sync fills.
                return refused(format!("charter version {version} after {latest}"), false);
            }
            match chain.push(env) {
                Ok(_) => {
                    neighbourhood::write(roster).set_chain(chain);
                    Outcome::Charter {
                        bytes: data.to_vec(),
                        synced,
                    }
                }
                Err(e) => refused(e.to_string(), true),
            }
        }
        Some(Kind::Rekey) => match roster::open_rekey(data, chain) {
            Ok(rekey) => Outcome::Rekey {
                bytes: data.to_vec(),
                rekey: Box::new(rekey),
                synced,
            },
            Err(e) => {
                let provable = e.is_provable() && !matches!(e, RosterError::UnknownCharter);
                refused(e.to_string(), provable)
            }
        },
        Some(Kind::Presence) => match roster::open_presence(data, chain) {
            Ok(p) if neighbourhood::read(roster).is_member(&p.node) => Outcome::Presence {
                bytes: data.to_vec(),
                presence: Box::new(p),
                synced,
            },
            Ok(_) => refused("presence of a non-member".into(), false),
            Err(e) => {
                let provable = e.is_provable();
                refused(e.to_string(), provable)
            }
        },
        _ => refused(format!("kind {} on the members topic", env.kind), true),
    }
}

/// An offer must come on the offers topic, an attestation or a commitment on the attestations
/// topic.
fn topic_matches(topic: TopicKind, a: &Accepted) -> bool {
    use wattmesh_protocol::validate::Msg;
    matches!(
        (topic, &a.msg),
        (TopicKind::Offers, Msg::Offer(_))
            | (
                TopicKind::Attestations,
                Msg::Attestation(_) | Msg::Commitment(_)
            )
    )
}
