//! The validation worker: a dedicated thread that owns the stateful [`Validator`] and checks
//! every incoming message (signatures included) off the swarm task and off the async runtime.
//! It reports each gossip message's verdict straight to the network and hands accepted
//! messages to the node.

use crate::clock::Clock;
use crate::net::NetHandle;
use crate::net::behaviour::TopicKind;
use libp2p::PeerId;
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use tokio::sync::mpsc;
use tracing::debug;
use wattmesh_protocol::charter::CharterChain;
use wattmesh_protocol::offer::Offer;
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
    /// One of our own offers, recorded so that replays of it are refused.
    Own(Box<Offer>),
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
}

/// How many messages may wait for the worker.
pub const WORK_QUEUE: usize = 8192;

/// Starts the worker thread.
pub fn spawn(
    chain: CharterChain,
    clock: Clock,
    net: NetHandle,
    out: mpsc::Sender<Outcome>,
) -> std::io::Result<mpsc::Sender<Work>> {
    let (tx, mut rx) = mpsc::channel::<Work>(WORK_QUEUE);
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
                                if let wattmesh_protocol::validate::Msg::Attestation(att) = &a.msg {
                                    v.record_attestation(att);
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
                    Work::Chain(c) => {
                        chain = *c;
                        continue;
                    }
                };
                let result = v.validate_gossip(&data, &chain, now);
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
    Ok(tx)
}

/// An offer must come on the offers topic, an attestation on the attestations topic.
fn topic_matches(topic: TopicKind, a: &Accepted) -> bool {
    use wattmesh_protocol::validate::Msg;
    matches!(
        (topic, &a.msg),
        (TopicKind::Offers, Msg::Offer(_)) | (TopicKind::Attestations, Msg::Attestation(_))
    )
}
