//! The hostile home: a member whose node (with `[testing] allow_raw_publish`) is told to
//! publish, every two seconds, one message of each hostile kind: an offer with a forged
//! signature, an offer impersonating another member, a replay of an older offer version, bytes
//! that are not an envelope at all, and an oversized message. Afterwards every healthy home's
//! book is searched for the hostile offers: any found was accepted.

use crate::run::HostileRecord;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wattmesh_node::control::ControlRequest;
use wattmesh_node::net::behaviour::TopicKind;
use wattmesh_protocol::charter::CharterChain;
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::offer::{Offer, Side};
use wattmesh_protocol::{NodeId, NodeKey, slot};

/// The attack in progress.
#[derive(Debug)]
pub struct Attack {
    dir: PathBuf,
    key: NodeKey,
    chain: CharterChain,
    rounds_left: u32,
    last: Option<Instant>,
    rng: u64,
    record: HostileRecord,
    /// Offers that must never be accepted: (maker, nonce, the highest version that may be
    /// seen; 0 for none at all).
    watch: Vec<(NodeId, u64, u32)>,
    /// Old offer versions to send again once the healthy homes' gossip duplicate caches have
    /// forgotten them (so the replay reaches their replay window), with when they were new.
    replays: std::collections::VecDeque<(Instant, Vec<u8>)>,
}

/// How long the hostile home waits before replaying an old offer version: longer than the
/// healthy homes' gossip duplicate cache (`run::DUPLICATE_CACHE_SECS`).
const REPLAY_AFTER: Duration = Duration::from_secs(crate::run::DUPLICATE_CACHE_SECS + 5);

impl Attack {
    /// Prepares an attack from the hostile home at `dir`.
    pub fn new(dir: &Path, chain: CharterChain, rounds: u32) -> anyhow::Result<Attack> {
        let key = wattmesh_node::identity::load(&dir.join("node.key"))?;
        Ok(Attack {
            dir: dir.to_owned(),
            rng: u64::from_le_bytes(key.node_id().0[..8].try_into().unwrap_or([7; 8])),
            key,
            chain,
            rounds_left: rounds,
            last: None,
            record: HostileRecord::default(),
            watch: Vec::new(),
            replays: std::collections::VecDeque::new(),
        })
    }

    fn next(&mut self) -> u64 {
        // xorshift64*: only needs to differ between messages.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    async fn publish(&mut self, kind: &str, topic: TopicKind, bytes: Vec<u8>) {
        let req = ControlRequest::PublishRaw {
            topic,
            hex: hex::encode(&bytes),
        };
        match crate::run::call(&self.dir, &req).await {
            Ok(v) if v["ok"] == true => {
                self.record.sent += 1;
                *self.record.sent_by_kind.entry(kind.to_owned()).or_default() += 1;
            }
            _ => self.record.refused_locally += 1,
        }
    }

    fn offer(&mut self, maker: NodeId, now: u64, version: u32, nonce: u64) -> Offer {
        let c = &self.chain.at(now).charter;
        let slot_ms = slot::first_open_slot(c, now);
        Offer {
            maker,
            nonce,
            version,
            side: Side::Sell,
            slot_ms,
            quantity_wh: 100 + version as u64,
            min_fill_wh: 1,
            price: c.feed_in_price + 1_000,
            created_ms: now,
            expires_ms: slot::gate_closure(c, slot_ms),
            attributes: 0,
            ext: Vec::new(),
        }
    }

    /// Sends one round if one is due (every two seconds), and the replays that are due.
    pub async fn step(&mut self, victim_dir: &Path) {
        while self
            .replays
            .front()
            .is_some_and(|(t, _)| t.elapsed() >= REPLAY_AFTER)
        {
            if let Some((_, v1)) = self.replays.pop_front() {
                self.publish("replay", TopicKind::Offers, v1).await;
            }
        }
        if self.rounds_left == 0
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.last = Some(Instant::now());
        self.rounds_left -= 1;
        let Ok(v) = crate::run::call(&self.dir, &ControlRequest::Status).await else {
            return;
        };
        let now = v["status"]["now_ms"].as_u64().unwrap_or(0);
        let charter = self.chain.at(now).hash;
        let me = self.key.node_id();
        let victim = wattmesh_node::identity::load(&victim_dir.join("node.key"))
            .map(|k| k.node_id())
            .unwrap_or(NodeId([9; 32]));

        // A forged signature.
        let nonce = self.next();
        let o = self.offer(me, now, 1, nonce);
        let mut env = Envelope::seal(&o, charter, &self.key);
        let mut sig = env.signatures[0].sig.to_bytes();
        sig[5] ^= 0x40;
        env.signatures[0].sig = wattmesh_protocol::SignatureBytes::from_bytes(&sig);
        self.watch.push((me, nonce, 0));
        self.publish("forged_signature", TopicKind::Offers, env.to_bytes())
            .await;

        // Impersonation: the victim's id as maker, signed with our key.
        let nonce = self.next();
        let o = self.offer(victim, now, 1, nonce);
        self.watch.push((victim, nonce, 0));
        let env = Envelope::seal(&o, charter, &self.key);
        self.publish("impersonation", TopicKind::Offers, env.to_bytes())
            .await;

        // A replay: version 1, version 2, then version 1 again.
        let nonce = self.next();
        let v1 = Envelope::seal(&self.offer(me, now, 1, nonce), charter, &self.key).to_bytes();
        let v2 = Envelope::seal(&self.offer(me, now, 2, nonce), charter, &self.key).to_bytes();
        // The first two are honest messages; only the third is hostile.
        let _ = crate::run::call(
            &self.dir,
            &ControlRequest::PublishRaw {
                topic: TopicKind::Offers,
                hex: hex::encode(&v1),
            },
        )
        .await;
        let _ = crate::run::call(
            &self.dir,
            &ControlRequest::PublishRaw {
                topic: TopicKind::Offers,
                hex: hex::encode(&v2),
            },
        )
        .await;
        self.watch.push((me, nonce, 2));
        self.replays.push_back((Instant::now(), v1));

        // Not an envelope at all.
        let junk: Vec<u8> = (0..300).map(|_| self.next() as u8).collect();
        self.publish("malformed", TopicKind::Offers, junk).await;

        // Larger than any envelope may be.
        let big: Vec<u8> = (0..8_000).map(|_| self.next() as u8).collect();
        self.publish("oversized", TopicKind::Attestations, big)
            .await;
    }

    /// What came of it: searches every healthy home's book for the hostile offers.
    pub async fn outcome(&self, homes: &[PathBuf]) -> HostileRecord {
        let mut r = self.record.clone();
        for dir in homes {
            let Ok(v) = crate::run::call(dir, &ControlRequest::Offers).await else {
                continue;
            };
            for o in v["offers"].as_array().into_iter().flatten() {
                let maker = o["maker"].as_str().unwrap_or("");
                let nonce = o["nonce"].as_u64().unwrap_or(0);
                let version = o["version"].as_u64().unwrap_or(0) as u32;
                let bad = self.watch.iter().any(|(m, n, allowed)| {
                    m.to_hex() == maker && *n == nonce && (*allowed == 0 || version < *allowed)
                });
                if bad {
                    r.accepted += 1;
                }
            }
        }
        r
    }
}
