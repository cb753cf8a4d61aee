//! Validation: every incoming message is checked (signatures included) against one stateful
//! [`Validator`] and the charter chain, shared behind a lock by two callers. Offers,
//! attestations and commitments arriving by gossip are checked on the swarm task itself as they
//! arrive ([`gossip_sink`]): a message is forwarded only once its verdict is in, so a hand-over
//! to another thread (and waiting for a core there) would add to every hop of propagation.
//! Everything else (membership records, whose checks write the shared roster, and bulk sync)
//! goes to a dedicated thread ([`spawn`]), off the swarm task and off the async runtime. Both
//! hand accepted messages to the node as [`Outcome`]s.

use crate::clock::Clock;
use crate::neighbourhood::{self, SharedRoster};
use crate::net::behaviour::TopicKind;
use crate::net::{NetHandle, SinkVerdict};
use libp2p::PeerId;
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use std::sync::{Arc, Mutex, MutexGuard};
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
    /// A message from the members topic awaiting its verdict (other topics are judged on the
    /// swarm task: [`gossip_sink`]).
    MembersGossip {
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

/// How many messages may wait for the worker, and how many outcomes for the node.
pub const WORK_QUEUE: usize = 8192;

/// The worker's queue (made before the network starts, so that the swarm task can hand
/// membership gossip to the worker directly: [`gossip_sink`]).
pub fn channel() -> (mpsc::Sender<Work>, mpsc::Receiver<Work>) {
    mpsc::channel::<Work>(WORK_QUEUE)
}

/// What the checks share: the replay windows and the charter chain.
struct State {
    validator: Validator,
    chain: CharterChain,
}

/// The checks, shared by the swarm task ([`gossip_sink`]) and the worker thread ([`spawn`]).
#[derive(Clone)]
pub struct Checks {
    state: Arc<Mutex<State>>,
    roster: SharedRoster,
    clock: Clock,
    out: mpsc::Sender<Outcome>,
}

impl std::fmt::Debug for Checks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checks").finish_non_exhaustive()
    }
}

impl Checks {
    /// Checks against `chain` and the members in `roster`, handing outcomes to `out`.
    pub fn new(
        chain: CharterChain,
        roster: SharedRoster,
        clock: Clock,
        out: mpsc::Sender<Outcome>,
    ) -> Checks {
        Checks {
            state: Arc::new(Mutex::new(State {
                validator: Validator::new(),
                chain,
            })),
            roster,
            clock,
            out,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves nothing half-written that matters here: the
        // validator's windows are caches.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks a gossip message (not from the members topic) as of now: its verdict for the
    /// network, and what the node is told.
    fn judge(&self, topic: TopicKind, data: &[u8]) -> (MessageAcceptance, Outcome) {
        let now = self.clock.now_ms();
        let result = {
            let mut st = self.state();
            let State { validator, chain } = &mut *st;
            let members = neighbourhood::read(&self.roster);
            validator.validate_gossip(data, chain, &members, now)
        };
        match result {
            Ok(a) if topic_matches(topic, &a) => (
                MessageAcceptance::Accept,
                Outcome::Accepted {
                    accepted: Box::new(a),
                    synced: false,
                },
            ),
            Ok(_) => (
                MessageAcceptance::Reject,
                Outcome::Refused {
                    why: Invalid::Field("topic"),
                    synced: false,
                },
            ),
            Err(why) => {
                debug!(%why, "refused a gossip message");
                let acceptance = if why.is_provable() {
                    MessageAcceptance::Reject
                } else {
                    MessageAcceptance::Ignore
                };
                (acceptance, Outcome::Refused { why, synced: false })
            }
        }
    }
}

/// The network's way into validation: offers, attestations and commitments are judged at once
/// on the swarm task; membership messages are queued for the worker thread, which reports
/// their verdicts later.
pub fn gossip_sink(checks: Checks, work: mpsc::Sender<Work>) -> crate::net::GossipSink {
    Box::new(move |topic, id, source, data| {
        if topic == TopicKind::Members {
            return match work.try_send(Work::MembersGossip { id, source, data }) {
                Ok(()) => SinkVerdict::Later,
                Err(_) => SinkVerdict::Dropped,
            };
        }
        let (acceptance, outcome) = checks.judge(topic, &data);
        match checks.out.try_send(outcome) {
            Ok(()) => SinkVerdict::Now(acceptance),
            // The node is not keeping up: it never sees the message, so it is not forwarded
            // either (ignored, not rejected: the sender did nothing wrong).
            Err(_) => SinkVerdict::Dropped,
        }
    })
}

/// Starts the worker thread on the queue from [`channel`].
pub fn spawn(mut rx: mpsc::Receiver<Work>, checks: Checks, net: NetHandle) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("wattmesh-validate".into())
        .spawn(move || {
            let out = checks.out.clone();
            while let Some(work) = rx.blocking_recv() {
                let now = checks.clock.now_ms();
                let outcome = match work {
                    Work::Archival(data) => {
                        let mut st = checks.state();
                        let State { validator, chain } = &mut *st;
                        match wattmesh_protocol::validate::validate_archival(&data, chain, false) {
                            Ok(a) => {
                                match &a.msg {
                                    wattmesh_protocol::validate::Msg::Attestation(att) => {
                                        validator.record_attestation(att);
                                    }
                                    wattmesh_protocol::validate::Msg::Commitment(c) => {
                                        validator.record_chain(c.node, c.seq);
                                    }
                                    _ => {}
                                }
                                Outcome::Accepted {
                                    accepted: Box::new(a),
                                    synced: true,
                                }
                            }
                            Err(why) => Outcome::Refused { why, synced: true },
                        }
                    }
                    Work::MembersGossip { id, source, data } => {
                        let outcome = members(&checks, &data, Some(now), false);
                        net.report(id, source, acceptance_of(&outcome));
                        outcome
                    }
                    Work::Members(data) => members(&checks, &data, None, true),
                    Work::Synced(data) => {
                        let result = {
                            let mut st = checks.state();
                            let State { validator, chain } = &mut *st;
                            let members = neighbourhood::read(&checks.roster);
                            validator.validate_gossip(&data, chain, &members, now)
                        };
                        match result {
                            Ok(a) => Outcome::Accepted {
                                accepted: Box::new(a),
                                synced: true,
                            },
                            Err(why) => {
                                debug!(%why, "refused a synced message");
                                Outcome::Refused { why, synced: true }
                            }
                        }
                    }
                    Work::Own(offer) => {
                        checks.state().validator.record_offer(&offer, now);
                        continue;
                    }
                    Work::Private {
                        from,
                        attestation,
                        commitment,
                        reply,
                    } => {
                        let checked = {
                            let st = checks.state();
                            check_private(&from, attestation, commitment, &st.chain)
                        };
                        Outcome::Private {
                            reply,
                            checked: checked.map(Box::new),
                        }
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
fn members(checks: &Checks, data: &[u8], fresh_now: Option<u64>, synced: bool) -> Outcome {
    let roster = &checks.roster;
    let mut st = checks.state();
    let chain = &mut st.chain;
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
