//! The bare gossipsub baseline for the propagation benchmark: the same number of processes,
//! dialled in the same pattern as the testnet's homes ([`crate::run::dial_targets`]), on the
//! same transport stack as a node (TCP with no delay, pnet with a pre-shared key, Noise,
//! yamux), with the node's gossipsub settings (heartbeat, duplicate cache, message ids, size
//! cap), publishing payloads of an offer's size at the workload's rate, and no application
//! validation: a received message is forwarded at once and only its arrival time is noted.
//! With `signed`, each payload carries an Ed25519 signature of the protocol's rule
//! ([`wattmesh_protocol::sign`]) and every peer checks it before gossipsub forwards the
//! message: the baseline plus the one check a node cannot skip, to tell that cost apart from
//! the rest of the node's. With `node_stack` the peers gossip through the node's whole libp2p
//! stack instead ([`wattmesh_node::net::transport`] and the node's combined behaviour): the
//! node without its application, to tell the stack's cost from the application's.
//! Propagation is measured as in the testnet report: a message's publication to its arrival
//! at the last other peer, all on this machine's wall clock.

use crate::observe::Latency;
use anyhow::Context;
use libp2p::core::transport::upgrade::Version;
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, Swarm, Transport, identity, noise, tcp, yamux};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use wattmesh_node::net::behaviour::BehaviourEvent;
use wattmesh_node::node::timeline::{wall_ms, wall_us};

/// Connections stay open for the whole run (an hour without use).
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The bytes at the head of every payload: origin (u32), sequence (u32), both little-endian.
const HEAD: usize = 8;
/// The tail of a signed payload: the signer's key (32 bytes) and the signature (64) of all
/// the bytes before them.
const SIGNED_TAIL: usize = 96;

/// One baseline peer's settings (the hidden `gossip-peer` command).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerArgs {
    /// This peer's index.
    pub index: u32,
    /// Peers in the run.
    pub peers: u32,
    /// Where to listen.
    pub listen: String,
    /// Whom to dial.
    pub dial: Vec<String>,
    /// The pre-shared network key, hex.
    pub psk_hex: String,
    /// Publish one message every this many milliseconds.
    pub every_ms: u64,
    /// Payload bytes per message.
    pub payload_bytes: usize,
    /// Gossipsub heartbeat, ms (the testnet's homes use 300).
    pub heartbeat_ms: u64,
    /// Gossipsub duplicate cache, seconds.
    pub duplicate_cache_secs: u64,
    /// Sign every payload and check every signature before forwarding.
    pub signed: bool,
    /// Gossip through the node's whole libp2p stack instead of bare gossipsub.
    pub node_stack: bool,
    /// Wall clock (UTC ms) at which publishing starts and stops.
    pub start_ms: u64,
    /// See `start_ms`.
    pub stop_ms: u64,
    /// Wall clock at which the peer writes its record (after the last messages arrived).
    pub write_ms: u64,
    /// Where to write it.
    pub out: PathBuf,
}

/// What one peer saw.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Its own messages: (sequence, wall µs when published).
    pub published: Vec<(u32, u64)>,
    /// Messages received: (origin, sequence, wall µs).
    pub received: Vec<(u32, u32, u64)>,
    /// Publications gossipsub refused (no peers yet, ...).
    pub publish_errors: u64,
}

/// Runs one baseline peer until `write_ms`, then writes its record and idles until killed
/// (so that the orchestrator can read its memory and CPU use before it ends).
pub async fn peer(a: PeerArgs) -> anyhow::Result<()> {
    let key = identity::Keypair::generate_ed25519();
    let psk: [u8; 32] = hex::decode(&a.psk_hex)
        .ok()
        .and_then(|v| v.try_into().ok())
        .context("--psk-hex must be 32 bytes of hex")?;
    if a.node_stack {
        return node_stack_peer(a, key, psk).await;
    }
    let local = key.public().to_peer_id();
    let transport = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .and_then(move |socket, _| PnetConfig::new(PreSharedKey::new(psk)).handshake(socket))
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(&key)?)
        .multiplex(yamux::Config::default())
        .timeout(Duration::from_secs(20))
        .boxed();
    let mut config = gossipsub::ConfigBuilder::default();
    config.validation_mode(ValidationMode::Anonymous);
    if a.signed {
        // As the node: forwarded only once judged.
        config.validate_messages();
    }
    let config = config
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(wattmesh_protocol::Envelope::content_id(&m.data).0.to_vec())
        })
        .heartbeat_interval(Duration::from_millis(a.heartbeat_ms))
        .duplicate_cache_time(Duration::from_secs(a.duplicate_cache_secs))
        .max_transmit_size(wattmesh_protocol::codec::MAX_ENVELOPE_BYTES + 256)
        .build()
        .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
    let mut behaviour: gossipsub::Behaviour =
        gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, config)
            .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;
    let topic = IdentTopic::new("wattmesh-baseline");
    behaviour.subscribe(&topic)?;
    let swarm = Swarm::new(
        transport,
        behaviour,
        local,
        // As the node's swarm.
        wattmesh_node::net::swarm_config(IDLE_TIMEOUT),
    );
    drive(swarm, topic, &a).await
}

/// A baseline peer on the node's whole libp2p stack: its transport (TCP or relay circuits,
/// pnet, Noise, yamux), its combined behaviour (gossipsub with its topics, scoring and
/// validation; identify, trade and sync request-response, connection limits, the address
/// book, relay client and server, DCUtR, AutoNAT) and the settings a testnet home gets, with
/// no application on top: every message's signature is checked (with `signed`; accepted
/// otherwise) and its verdict reported at once, as the node's swarm task does.
async fn node_stack_peer(a: PeerArgs, key: identity::Keypair, psk: [u8; 32]) -> anyhow::Result<()> {
    use wattmesh_node::net::behaviour::{Behaviour, TopicKind};
    let local = key.public().to_peer_id();
    let mut cfg = wattmesh_node::config::Config::default();
    cfg.network.listen = vec![a.listen.clone()];
    cfg.network.heartbeat_ms = a.heartbeat_ms;
    cfg.network.duplicate_cache_secs = a.duplicate_cache_secs;
    cfg.reach.upnp = false;
    // The neighbourhood only names the topics.
    let n = wattmesh_protocol::NeighbourhoodId(
        wattmesh_protocol::Hash32::tagged("wattmesh/baseline-neighbourhood", &[&psk]).0[..16]
            .try_into()
            .context("16 bytes")?,
    );
    let (relay_transport, relay_client) = libp2p::relay::client::new(local);
    let mut behaviour = Behaviour::new(&key, &cfg.behaviour_settings(n), relay_client)?;
    if let Some(relay) = behaviour.relay.as_mut() {
        // As a home with no external address configured (the testnet's).
        relay.set_status(Some(libp2p::relay::Status::Disable));
    }
    let shared = std::sync::Arc::new(std::sync::RwLock::new(PreSharedKey::new(psk)));
    let swarm = Swarm::new(
        wattmesh_node::net::transport(&key, shared, relay_transport)?,
        behaviour,
        local,
        wattmesh_node::net::swarm_config(IDLE_TIMEOUT),
    );
    drive(swarm, TopicKind::Offers.topic(&n), &a).await
}

/// A behaviour a baseline peer gossips through.
trait Gossiping: NetworkBehaviour {
    /// Its gossipsub.
    fn gossipsub(&mut self) -> &mut gossipsub::Behaviour;
    /// A gossipsub event among its events.
    fn gossip_event(ev: Self::ToSwarm) -> Option<gossipsub::Event>;
}

impl Gossiping for gossipsub::Behaviour {
    fn gossipsub(&mut self) -> &mut gossipsub::Behaviour {
        self
    }
    fn gossip_event(ev: gossipsub::Event) -> Option<gossipsub::Event> {
        Some(ev)
    }
}

impl Gossiping for wattmesh_node::net::behaviour::Behaviour {
    fn gossipsub(&mut self) -> &mut gossipsub::Behaviour {
        &mut self.gossipsub
    }
    fn gossip_event(ev: BehaviourEvent) -> Option<gossipsub::Event> {
        match ev {
            BehaviourEvent::Gossipsub(ev) => Some(ev),
            _ => None,
        }
    }
}

/// Dials, publishes on `topic` at the peer's rate, notes what arrives, and writes the record.
async fn drive<B: Gossiping>(
    mut swarm: Swarm<B>,
    topic: IdentTopic,
    a: &PeerArgs,
) -> anyhow::Result<()> {
    swarm.listen_on(a.listen.parse::<Multiaddr>()?)?;
    for d in &a.dial {
        swarm.dial(d.parse::<Multiaddr>()?)?;
    }
    // Judged before forwarding: signed payloads, and everything on the node's stack (whose
    // gossipsub waits for a verdict).
    let judged = a.signed || a.node_stack;
    let signer = a.signed.then(|| {
        let seed = wattmesh_protocol::Hash32::tagged(
            "wattmesh/baseline-signer",
            &[a.psk_hex.as_bytes(), &a.index.to_le_bytes()],
        );
        wattmesh_protocol::sign::NodeKey::from_secret(&seed.0)
    });
    let mut record = PeerRecord::default();
    // Publications spread evenly: peer i publishes at start + i/peers of a period, and then
    // once per period.
    let offset = a.every_ms * u64::from(a.index) / u64::from(a.peers.max(1));
    let mut next = a.start_ms + offset;
    let mut seq = 0u32;
    let mut written = false;
    loop {
        let now = wall_ms();
        if now >= next && now < a.stop_ms {
            let payload = payload(a.index, seq, a.payload_bytes, signer.as_ref());
            match swarm
                .behaviour_mut()
                .gossipsub()
                .publish(topic.clone(), payload)
            {
                Ok(_) => record.published.push((seq, wall_us())),
                Err(_) => record.publish_errors += 1,
            }
            seq += 1;
            next += a.every_ms;
        }
        if !written && now >= a.write_ms {
            let json = serde_json::to_vec(&record)?;
            let tmp = a.out.with_extension("tmp");
            std::fs::write(&tmp, json)?;
            std::fs::rename(&tmp, &a.out)?;
            written = true;
        }
        // Until the next publication while publishing, then until the record is due, then
        // idle (never a busy loop: it would take cores from the peers still forwarding).
        let until = if now < a.stop_ms {
            next
        } else if !written {
            a.write_ms
        } else {
            now + 1_000
        };
        let wait = Duration::from_millis(until.saturating_sub(now).clamp(1, 1_000));
        tokio::select! {
            ev = swarm.select_next_some() => {
                let SwarmEvent::Behaviour(ev) = ev else { continue };
                if let Some(gossipsub::Event::Message {
                    message,
                    message_id,
                    propagation_source,
                }) = B::gossip_event(ev)
                {
                    let d = &message.data;
                    let accepted = !a.signed || signature_holds(d);
                    if judged {
                        let acceptance = if accepted {
                            gossipsub::MessageAcceptance::Accept
                        } else {
                            gossipsub::MessageAcceptance::Reject
                        };
                        swarm.behaviour_mut().gossipsub().report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            acceptance,
                        );
                    }
                    if accepted && d.len() >= HEAD {
                        let word = |r: std::ops::Range<usize>| {
                            u32::from_le_bytes(d[r].try_into().unwrap_or_default())
                        };
                        record.received.push((word(0..4), word(4..8), wall_us()));
                    }
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Peer `index`'s message `seq` of `size` bytes (at least the head, and the signed tail when
/// signed by `signer`).
fn payload(
    index: u32,
    seq: u32,
    size: usize,
    signer: Option<&wattmesh_protocol::sign::NodeKey>,
) -> Vec<u8> {
    let tail = if signer.is_some() { SIGNED_TAIL } else { 0 };
    let mut payload = vec![0u8; size.max(HEAD + tail)];
    payload[..4].copy_from_slice(&index.to_le_bytes());
    payload[4..8].copy_from_slice(&seq.to_le_bytes());
    if let Some(key) = signer {
        let body = payload.len() - SIGNED_TAIL;
        let sig = key.sign(&payload[..body]);
        payload[body..body + 32].copy_from_slice(&key.node_id().0);
        payload[body + 32..].copy_from_slice(&sig.to_bytes());
    }
    payload
}

/// Whether a signed payload's signature holds (see [`SIGNED_TAIL`]).
fn signature_holds(d: &[u8]) -> bool {
    let Some(body) = d.len().checked_sub(SIGNED_TAIL) else {
        return false;
    };
    let (Ok(signer), Ok(sig)) = (
        <[u8; 32]>::try_from(&d[body..body + 32]),
        <[u8; 64]>::try_from(&d[body + 32..]),
    ) else {
        return false;
    };
    wattmesh_protocol::sign::verify(
        &wattmesh_protocol::NodeId(signer),
        &d[..body],
        &wattmesh_protocol::sign::SignatureBytes::from_bytes(&sig),
    )
    .is_ok()
}

/// The baseline run's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Peers.
    pub peers: usize,
    /// One message per peer every this many ms.
    pub every_ms: u64,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// Real seconds of publishing.
    pub duration_s: u64,
    /// Sign every payload and check every signature before forwarding.
    pub signed: bool,
    /// Gossip through the node's whole libp2p stack (transport, every behaviour, the homes'
    /// settings) instead of bare gossipsub: the node without its application.
    pub node_stack: bool,
    /// TCP port of peer 0 (peer i: plus i).
    pub base_port: u16,
    /// Output directory.
    pub out: PathBuf,
}

/// The baseline's report (`DIR/baseline.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Peers.
    pub peers: usize,
    /// One message per peer every this many ms.
    pub every_ms: u64,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// Real seconds of publishing.
    pub duration_s: u64,
    /// Whether payloads were signed and checked before forwarding.
    pub signed: bool,
    /// Whether the peers ran the node's whole libp2p stack instead of bare gossipsub.
    pub node_stack: bool,
    /// Messages published.
    pub messages: usize,
    /// Publications gossipsub refused.
    pub publish_errors: u64,
    /// The share of the machine's CPU time (all cores, everything on it) that was busy while
    /// the peers published (absent where /proc/stat cannot be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_busy: Option<f64>,
    /// Publication to arrival at the last other peer, wall-clock ms.
    pub offer_propagation_ms: Latency,
    /// Per peer: peak RSS (kB) and CPU seconds over the run.
    pub nodes: Vec<crate::run::NodeUsage>,
}

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the baseline: starts the peers, lets them connect and form their mesh for 10 s,
/// publishes for `duration_s`, waits 5 s for the last messages, and measures.
pub async fn run(o: &Options) -> anyhow::Result<Report> {
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let exe = std::env::current_exe()?;
    // Only keeps other processes' connections out of a benchmark on loopback: need not be
    // secret, only different per run.
    let psk = wattmesh_protocol::Hash32::tagged(
        "wattmesh/baseline-psk",
        &[&wall_ms().to_le_bytes(), &std::process::id().to_le_bytes()],
    )
    .0;
    let start_ms = wall_ms() + 10_000;
    let stop_ms = start_ms + o.duration_s * 1000;
    let write_ms = stop_ms + 5_000;
    let mut peers = Vec::new();
    let addr = |i: usize| format!("/ip4/127.0.0.1/tcp/{}", o.base_port as usize + i);
    for i in 0..o.peers {
        let out = o.out.join(format!("peer-{i:03}.json"));
        let _ = std::fs::remove_file(&out);
        let args = PeerArgs {
            index: i as u32,
            peers: o.peers as u32,
            listen: addr(i),
            dial: crate::run::dial_targets(i).into_iter().map(addr).collect(),
            psk_hex: hex::encode(psk),
            every_ms: o.every_ms,
            payload_bytes: o.payload_bytes,
            heartbeat_ms: crate::run::HEARTBEAT_MS,
            duplicate_cache_secs: crate::run::DUPLICATE_CACHE_SECS,
            signed: o.signed,
            node_stack: o.node_stack,
            start_ms,
            stop_ms,
            write_ms,
            out,
        };
        let child = Command::new(&exe)
            .arg("gossip-peer")
            .arg(serde_json::to_string(&args)?)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting baseline peer {i}"))?;
        peers.push(Peer(child));
        // Listening before the next one dials it.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "baseline: {} gossipsub peers, one {} B message each every {} ms for {} s",
        o.peers, o.payload_bytes, o.every_ms, o.duration_s
    );
    let files: Vec<PathBuf> = (0..o.peers)
        .map(|i| o.out.join(format!("peer-{i:03}.json")))
        .collect();
    let deadline = write_ms + 30_000;
    // The machine's CPU while the peers publish.
    let (mut cpu_at_start, mut machine_busy) = (None, None);
    while !files.iter().all(|f| f.exists()) {
        let now = wall_ms();
        if cpu_at_start.is_none() && now >= start_ms {
            cpu_at_start = crate::run::MachineCpu::read();
        }
        if machine_busy.is_none() && now >= stop_ms {
            machine_busy = cpu_at_start
                .zip(crate::run::MachineCpu::read())
                .and_then(|(a, b)| b.busy_since(&a));
        }
        anyhow::ensure!(
            wall_ms() < deadline,
            "baseline peers did not write their records"
        );
        for (i, p) in peers.iter_mut().enumerate() {
            if let Ok(Some(code)) = p.0.try_wait() {
                anyhow::bail!("baseline peer {i} exited early ({code})");
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let nodes = peers
        .iter()
        .enumerate()
        .map(|(i, p)| crate::run::usage(&format!("peer-{i:03}"), p.0.id(), &o.out))
        .collect();
    drop(peers);
    let records = files
        .iter()
        .map(|f| read_record(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = Report {
        peers: o.peers,
        every_ms: o.every_ms,
        payload_bytes: o.payload_bytes,
        duration_s: o.duration_s,
        signed: o.signed,
        node_stack: o.node_stack,
        messages: records.iter().map(|r| r.published.len()).sum(),
        publish_errors: records.iter().map(|r| r.publish_errors).sum(),
        machine_busy,
        offer_propagation_ms: propagation(&records),
        nodes,
    };
    std::fs::write(
        o.out.join("baseline.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(report)
}

fn read_record(f: &Path) -> anyhow::Result<PeerRecord> {
    let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", f.display()))
}

/// Publication to arrival at the last other peer, for every message every other peer got;
/// the others count as incomplete.
pub fn propagation(records: &[PeerRecord]) -> Latency {
    let n = records.len();
    // (origin, seq) -> (arrivals, latest arrival)
    let mut seen: HashMap<(u32, u32), (usize, u64)> = HashMap::new();
    for (k, r) in records.iter().enumerate() {
        for &(origin, seq, at) in &r.received {
            if origin as usize == k {
                continue;
            }
            let e = seen.entry((origin, seq)).or_insert((0, 0));
            e.0 += 1;
            e.1 = e.1.max(at);
        }
    }
    let mut samples = Vec::new();
    let mut incomplete = 0;
    for (origin, r) in records.iter().enumerate() {
        for &(seq, at) in &r.published {
            match seen.get(&(origin as u32, seq)) {
                Some(&(count, last)) if count >= n - 1 => samples.push(last.saturating_sub(at)),
                _ => incomplete += 1,
            }
        }
    }
    Latency::from_samples_us(samples, incomplete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_payloads_check_and_tampered_ones_do_not() {
        let key = wattmesh_protocol::sign::NodeKey::from_secret(&[7; 32]);
        let p = payload(3, 9, 192, Some(&key));
        assert_eq!(p.len(), 192);
        assert_eq!(&p[..8], &[3, 0, 0, 0, 9, 0, 0, 0]);
        assert!(signature_holds(&p));
        for i in [0, 100, 191] {
            let mut bad = p.clone();
            bad[i] ^= 1;
            assert!(!signature_holds(&bad), "byte {i} changed");
        }
        assert!(!signature_holds(&p[..95]));
        assert!(!signature_holds(&payload(3, 9, 192, None)));
        // Unsigned payloads keep their size; signed ones grow to hold the tail.
        assert_eq!(payload(1, 1, 8, None).len(), 8);
        assert_eq!(payload(1, 1, 8, Some(&key)).len(), HEAD + SIGNED_TAIL);
    }

    #[test]
    fn propagation_waits_for_the_last_peer_and_counts_the_missing() {
        let records = vec![
            PeerRecord {
                published: vec![(0, 1_000_000), (1, 2_000_000)],
                ..PeerRecord::default()
            },
            PeerRecord {
                received: vec![(0, 0, 1_004_000), (0, 1, 2_003_000)],
                ..PeerRecord::default()
            },
            PeerRecord {
                // Message 1 never arrives here; message 0 arrives last here.
                received: vec![(0, 0, 1_030_250)],
                ..PeerRecord::default()
            },
        ];
        let l = propagation(&records);
        assert_eq!((l.p50_us, l.p50), (30_250, 30));
        assert_eq!(l.incomplete, 1);
    }
}
