//! Meter attestations: signing our own at the end of every slot, storing everyone's, checking
//! their chains, and serving and fetching them through sync.
//!
//! **Privacy mode** (`[meter] privacy`): our attestation is marked private (random bytes in
//! the [`EXT_PRIVATE`] extension make its hash unguessable) and sent only to our counterparties
//! in the slot over `/wattmesh/trade/1`; everyone gets a signed [`AttestationCommitment`] by
//! gossip instead. Sync serves a private attestation only to its own node and, from its own
//! node, to the counterparties of the slot; everyone else gets the commitment. Every node
//! checks each chain link by link, through full attestations where it has them and through
//! commitments elsewhere.

use super::Core;
use crate::metering::SlotTotals;
use crate::store::{ChainItem, Store};
use crate::worker::{PrivatePair, Work};
use libp2p::PeerId;
use libp2p::request_response::ResponseChannel;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing::{debug, info, warn};
use wattmesh_protocol::attestation::{
    AttestationCommitment, EXT_PRIVATE, Link, MeterAttestation, MeterStatus, chain_hash, check_link,
};
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::ext::Extension;
use wattmesh_protocol::merkle;
use wattmesh_protocol::offer::Side;
use wattmesh_protocol::sync::{MAX_SYNC_ITEMS, SyncRequest, SyncResponse};
use wattmesh_protocol::trade::{RejectReason, TradeRequest, TradeResponse};
use wattmesh_protocol::{Hash32, NodeId};

/// How often a private attestation is offered to a counterparty that does not take it.
const PRIVATE_ATTEMPTS: u32 = 5;
/// How many random bytes blind a private attestation.
const BLINDING_BYTES: usize = 16;
/// How far back (in sequence numbers) a reconnecting counterparty looks for private
/// attestations it should have received but did not.
const MISSED_LOOKBACK: u64 = 192;

/// An attestation, decoded, with its chain hash.
fn decode(bytes: &[u8]) -> Option<(MeterAttestation, Hash32)> {
    let env = Envelope::from_bytes(bytes).ok()?;
    let a: MeterAttestation = env.payload_as().ok()?;
    Some((a, chain_hash(&env.payload)))
}

fn decode_commitment(bytes: &[u8]) -> Option<AttestationCommitment> {
    Envelope::from_bytes(bytes).ok()?.payload_as().ok()
}

/// The sequence number of an attestation or commitment envelope.
fn seq_of(bytes: &[u8]) -> Option<u64> {
    decode(bytes)
        .map(|(a, _)| a.seq)
        .or_else(|| decode_commitment(bytes).map(|c| c.seq))
}

/// What this node holds of one sequence number of a chain, decoded.
#[derive(Debug, Default)]
struct Held {
    full: Option<(MeterAttestation, Hash32)>,
    commitment: Option<AttestationCommitment>,
}

impl Held {
    fn read(store: &Store, node: &NodeId, seq: u64) -> Held {
        let entry = store
            .chain(node, seq, 1)
            .ok()
            .and_then(|v| v.into_iter().next())
            .filter(|e| e.seq == seq)
            .unwrap_or_default();
        Held {
            full: entry.attestation.as_deref().and_then(decode),
            commitment: entry.commitment.as_deref().and_then(decode_commitment),
        }
    }

    /// The link to check the chain through: the full attestation where held.
    fn link(&self) -> Option<Link<'_>> {
        match (&self.full, &self.commitment) {
            (Some((a, h)), _) => Some(Link::Full(a, *h)),
            (None, Some(c)) => Some(Link::Committed(c)),
            (None, None) => None,
        }
    }

    /// A full attestation and a commitment for the same `seq` must agree.
    fn consistent(&self) -> bool {
        match (&self.full, &self.commitment) {
            (Some((a, h)), Some(c)) => c.opens(a, h).is_ok(),
            _ => true,
        }
    }
}

/// Whether what the store holds for `seq` of `node` fits with the sequence numbers around it.
fn chain_holds_at(store: &Store, node: &NodeId, seq: u64, slot_len: u64) -> bool {
    let here = Held::read(store, node, seq);
    if !here.consistent() {
        return false;
    }
    let Some(link) = here.link() else {
        return true;
    };
    let before = seq.checked_sub(1).map(|s| Held::read(store, node, s));
    let after = seq.checked_add(1).map(|s| Held::read(store, node, s));
    let follows = before
        .as_ref()
        .and_then(Held::link)
        .is_none_or(|p| check_link(&p, &link, slot_len).is_ok());
    let followed = after
        .as_ref()
        .and_then(Held::link)
        .is_none_or(|n| check_link(&link, &n, slot_len).is_ok());
    follows && followed
}

/// Whether this node (`me`) may give `requester` the attestation `a` by sync. A public
/// attestation goes to anyone. A private one goes to its own node (which may have lost its
/// database), and from its own node to the counterparties of its agreed trades in the slot
/// (`counterparty(slot, requester)`); never from a third party that holds it because it was a
/// counterparty itself.
fn may_share(
    a: &MeterAttestation,
    me: NodeId,
    requester: Option<NodeId>,
    counterparty: impl Fn(u64, &NodeId) -> bool,
) -> bool {
    if !a.is_private() {
        return true;
    }
    let Some(r) = requester else {
        return false;
    };
    r == a.node || (a.node == me && counterparty(a.slot_ms, &r))
}

fn random_blinding() -> Vec<u8> {
    let mut b = vec![0u8; BLINDING_BYTES];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    b
}

impl Core {
    /// Signs, stores durably and publishes our attestation for a finished slot. The meter loop
    /// hands over `t` only after the source has stored its registers durably (for a source
    /// that counts them itself), so nothing signed here can be taken back by a power cut.
    pub(super) async fn attest(&mut self, t: SlotTotals) {
        let me = self.key.node_id();
        if !self.clock.may_sign() {
            warn!(
                slot = t.slot_ms,
                "clock not synchronised: no attestation for this slot"
            );
            return;
        }
        let store = self.store.clone();
        let prev = match tokio::task::spawn_blocking(move || store.last_attestation(&me)).await {
            Ok(Ok(x)) => x,
            other => {
                warn!("cannot read the attestation chain: {other:?}");
                return;
            }
        };
        let prev = prev.as_deref().and_then(decode);
        let c = self.n.chain.at(t.slot_ms).charter.clone();
        if prev.as_ref().is_some_and(|(p, _)| p.slot_ms >= t.slot_ms) {
            debug!(slot = t.slot_ms, "slot already attested");
            return;
        }
        // Adjacent slots chain exactly: the deltas are the register increases since the
        // previous attestation. Across a gap, the deltas are what was measured in the slot.
        let start = match &prev {
            Some((p, _)) if p.slot_ms + c.slot_ms() == t.slot_ms => crate::meter::Registers {
                import_wh: p.import_register_wh,
                export_wh: p.export_register_wh,
            },
            _ => t.start,
        };
        let (Some(import_wh), Some(export_wh)) = (
            t.end.import_wh.checked_sub(start.import_wh),
            t.end.export_wh.checked_sub(start.export_wh),
        ) else {
            warn!(
                slot = t.slot_ms,
                "meter registers went backwards; not attesting"
            );
            return;
        };
        // The market holds our trades; its agreed ones in the slot are the commitments' leaves.
        let sold = self.market.agreed_in(t.slot_ms, Side::Sell);
        let bought = self.market.agreed_in(t.slot_ms, Side::Buy);
        let (Some(sold), Some(bought)) = (merkle::root(&sold), merkle::root(&bought)) else {
            warn!("trade totals overflow");
            return;
        };
        let a = MeterAttestation {
            node: me,
            seq: prev.as_ref().map(|(p, _)| p.seq + 1).unwrap_or(0),
            prev: prev.as_ref().map(|(_, h)| *h).unwrap_or(Hash32::ZERO),
            slot_ms: t.slot_ms,
            import_register_wh: t.end.import_wh,
            export_register_wh: t.end.export_wh,
            import_wh: import_wh.min(c.max_energy_per_slot_wh()),
            export_wh: export_wh.min(c.max_energy_per_slot_wh()),
            coverage_permille: t.coverage_permille,
            status: if t.simulated {
                MeterStatus::Simulated
            } else if t.degraded {
                MeterStatus::Degraded
            } else {
                MeterStatus::Ok
            },
            sold,
            bought,
            created_ms: self.clock.now_ms().max(t.slot_ms + c.slot_ms()),
            // Private: only our counterparties get it, and the random bytes keep its hash (in
            // the public commitment) from being matched against guessed figures.
            ext: if self.privacy {
                vec![Extension {
                    tag: EXT_PRIVATE,
                    data: random_blinding(),
                }]
            } else {
                Vec::new()
            },
        };
        if let Some((p, h)) = &prev {
            if let Err(e) = a.check_follows(p, h, c.slot_ms()) {
                warn!(
                    slot = t.slot_ms,
                    "attestation would break our chain ({e}); not attesting"
                );
                return;
            }
        }
        let charter = self.n.chain.at(self.clock.now_ms()).hash;
        let env = Envelope::seal(&a, charter, &self.key);
        let bytes = env.to_bytes();
        let commitment = self.privacy.then(|| {
            Envelope::seal(
                &AttestationCommitment::of(&a, &env.payload),
                charter,
                &self.key,
            )
        });
        let store = self.store.clone();
        let full: Vec<ChainItem> = vec![(me, a.seq, bytes.clone())];
        let committed: Vec<ChainItem> = commitment
            .iter()
            .map(|e| (me, a.seq, e.to_bytes()))
            .collect();
        match tokio::task::spawn_blocking(move || store.put_chain(&full, &committed)).await {
            Ok(Ok(())) => {}
            other => {
                warn!("storing our attestation failed: {other:?}");
                return;
            }
        }
        self.counters.attestations_signed += 1;
        // The market settles our sales against it.
        self.feed(crate::market::Input::Attestation(a.clone(), bytes.clone()))
            .await;
        let public = commitment
            .as_ref()
            .map(Envelope::to_bytes)
            .unwrap_or_else(|| bytes.clone());
        if let Ok(Err(e)) = self
            .net
            .publish(crate::net::behaviour::TopicKind::Attestations, public)
            .await
        {
            debug!("attestation stored but not gossiped: {e}");
        }
        if let Some(commitment) = commitment {
            self.send_private(a.slot_ms, env, commitment);
        }
        info!(
            slot = a.slot_ms,
            seq = a.seq,
            import_wh = a.import_wh,
            export_wh = a.export_wh,
            coverage = a.coverage_permille,
            private = self.privacy,
            "attested"
        );
    }

    /// Sends our private attestation for `slot_ms` and its commitment to each counterparty of
    /// our agreed trades in the slot, trying a few times while one is unreachable.
    fn send_private(&self, slot_ms: u64, attestation: Envelope, commitment: Envelope) {
        for node in self.market.counterparties_in(slot_ms) {
            let Some(peer) = crate::net::peer_id_of(&node) else {
                continue;
            };
            let (net, sent) = (self.net.clone(), self.private_sent.clone());
            let req = TradeRequest::Attestation {
                attestation: attestation.clone(),
                commitment: commitment.clone(),
            };
            tokio::spawn(deliver_private(net, peer, req, sent));
        }
    }

    /// A counterparty's private attestation arrived on `/wattmesh/trade/1`: from a member and
    /// within its quota, it goes to the worker to be checked; the answer follows in
    /// [`Core::on_private`].
    pub(super) async fn private_request(
        &mut self,
        from: NodeId,
        peer: PeerId,
        request: TradeRequest,
        channel: ResponseChannel<TradeResponse>,
    ) {
        let refuse = if !self.is_member(&from) {
            Some(RejectReason::Invalid)
        } else if !self.within_quota(peer) {
            Some(RejectReason::Busy)
        } else {
            None
        };
        let TradeRequest::Attestation {
            attestation,
            commitment,
        } = request
        else {
            return;
        };
        if let Some(why) = refuse {
            let _ = self
                .net
                .respond_trade(channel, TradeResponse::Reject(why))
                .await;
            return;
        }
        let reply = self.next_reply;
        self.next_reply += 1;
        self.replies.insert(reply, channel);
        let work = Work::Private {
            from,
            attestation: attestation.to_bytes(),
            commitment: commitment.to_bytes(),
            reply,
        };
        if self.work.try_send(work).is_err() {
            self.counters.work_dropped += 1;
            if let Some(ch) = self.replies.remove(&reply) {
                let _ = self
                    .net
                    .respond_trade(ch, TradeResponse::Reject(RejectReason::Busy))
                    .await;
            }
        }
    }

    /// The worker checked a private attestation sent to us: store it with its commitment, give
    /// it to the market (for settling with its node) and answer.
    pub(super) async fn on_private(
        &mut self,
        reply: u64,
        checked: Result<Box<PrivatePair>, String>,
    ) {
        let resp = match checked {
            Ok(pair) => {
                let PrivatePair {
                    attestation: a,
                    attestation_bytes,
                    commitment,
                    commitment_bytes,
                } = *pair;
                let stored = self.store_chain(
                    Some((a.clone(), attestation_bytes.clone())),
                    Some((commitment, commitment_bytes)),
                );
                match stored.await {
                    Ok(()) => {
                        self.counters.attestations_received_privately += 1;
                        self.feed(crate::market::Input::Attestation(a, attestation_bytes))
                            .await;
                        TradeResponse::Stored
                    }
                    Err(e) => {
                        warn!("storing a private attestation failed: {e}");
                        TradeResponse::Reject(RejectReason::Busy)
                    }
                }
            }
            Err(why) => {
                debug!(%why, "refused a private attestation");
                TradeResponse::Reject(RejectReason::Invalid)
            }
        };
        if let Some(ch) = self.replies.remove(&reply) {
            let _ = self.net.respond_trade(ch, resp).await;
        }
    }

    /// Stores an attestation or a commitment (or both) of a peer received by gossip or sync;
    /// a break in its chain is logged and counted (it is evidence, so the message is kept).
    pub(super) fn keep_chain(
        &mut self,
        full: Option<(MeterAttestation, Vec<u8>)>,
        commitment: Option<(AttestationCommitment, Vec<u8>)>,
    ) {
        let stored = self.store_chain(full, commitment);
        tokio::spawn(async move {
            if let Err(e) = stored.await {
                debug!("storing an attestation failed: {e}");
            }
        });
    }

    /// Stores chain items durably, then checks the chain around them (counting a break).
    fn store_chain(
        &self,
        full: Option<(MeterAttestation, Vec<u8>)>,
        commitment: Option<(AttestationCommitment, Vec<u8>)>,
    ) -> impl std::future::Future<Output = Result<(), String>> + use<> {
        let (node, seq, slot_ms) = match (&full, &commitment) {
            (Some((a, _)), _) => (a.node, a.seq, a.slot_ms),
            (None, Some((c, _))) => (c.node, c.seq, c.slot_ms),
            (None, None) => (NodeId([0; 32]), 0, 0),
        };
        let slot_len = self.n.chain.at(slot_ms).charter.slot_ms();
        let store = self.store.clone();
        let breaks = self.chain_breaks.clone();
        let full: Vec<ChainItem> = full.into_iter().map(|(_, b)| (node, seq, b)).collect();
        let committed: Vec<ChainItem> = commitment
            .into_iter()
            .map(|(_, b)| (node, seq, b))
            .collect();
        async move {
            if full.is_empty() && committed.is_empty() {
                return Ok(());
            }
            let holds = tokio::task::spawn_blocking(move || {
                store
                    .put_chain(&full, &committed)
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(chain_holds_at(&store, &node, seq, slot_len))
            })
            .await
            .map_err(|e| e.to_string())??;
            if !holds {
                breaks.fetch_add(1, Ordering::Relaxed);
                warn!(
                    node = %node.short(),
                    seq,
                    "a peer's attestation chain is broken here (or an attestation does not match its commitment)"
                );
            }
            Ok(())
        }
    }

    /// One page of `node`'s chain for `peer` (`SyncRequest::Attestations`): per sequence
    /// number the commitment if held, then the attestation if `peer` may have it. A private
    /// attestation goes only to its own node, and from its own node (us) to our counterparties
    /// in its slot. A page never splits a sequence number's items.
    pub(super) async fn chain_page(
        &self,
        peer: PeerId,
        node: NodeId,
        from_seq: u64,
    ) -> SyncResponse {
        let requester = crate::net::node_id_of(&peer);
        let store = self.store.clone();
        let entries = match tokio::task::spawn_blocking(move || {
            store.chain(&node, from_seq, MAX_SYNC_ITEMS + 1)
        })
        .await
        {
            Ok(Ok(e)) => e,
            _ => return SyncResponse::Refused,
        };
        let me = self.key.node_id();
        let may_share = |bytes: &[u8]| -> bool {
            decode(bytes).is_some_and(|(a, _)| {
                may_share(&a, me, requester, |slot, r| {
                    self.market.counterparties_in(slot).contains(r)
                })
            })
        };
        let mut items = Vec::new();
        let mut more = false;
        for (i, e) in entries.iter().enumerate() {
            if i >= MAX_SYNC_ITEMS {
                more = true;
                break;
            }
            let mut group: Vec<Vec<u8>> = e.commitment.iter().cloned().collect();
            if let Some(full) = e.attestation.as_ref().filter(|b| may_share(b)) {
                group.push(full.clone());
            }
            if items.len() + group.len() > MAX_SYNC_ITEMS {
                more = true;
                break;
            }
            items.extend(group);
        }
        SyncResponse::Envelopes { items, more }
    }

    /// Asks `peer` for the part of `node`'s chain we do not have yet (attestations and
    /// commitments), and feeds it to the worker (archival checks) and the store. From `node`
    /// itself we also ask again for the private attestations of slots in which we traded with
    /// it and got only the commitment (its delivery to us failed).
    pub(super) fn fetch_attestations(&self, peer: PeerId, node: NodeId) {
        let (net, store, work) = (self.net.clone(), self.store.clone(), self.work.clone());
        let traded: BTreeSet<u64> = if crate::net::node_id_of(&peer) == Some(node) {
            self.market
                .trades()
                .filter(|t| t.state == crate::market::TradeState::Agreed)
                .filter(|t| t.trade.maker() == node || t.trade.taker == node)
                .map(|t| t.trade.slot_ms)
                .collect()
        } else {
            BTreeSet::new()
        };
        tokio::spawn(async move {
            let from = tokio::task::spawn_blocking(move || {
                let next = store
                    .last_chain_seq(&node)
                    .ok()
                    .flatten()
                    .map_or(0, |s| s + 1);
                if traded.is_empty() {
                    return next;
                }
                // The first recent slot we traded in whose private attestation we lack.
                let back = next.saturating_sub(MISSED_LOOKBACK);
                store
                    .chain(&node, back, MISSED_LOOKBACK as usize)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|e| {
                        e.attestation.is_none()
                            && e.commitment
                                .as_deref()
                                .and_then(decode_commitment)
                                .is_some_and(|c| traded.contains(&c.slot_ms))
                    })
                    .map_or(next, |e| e.seq)
            })
            .await
            .unwrap_or(0);
            let mut from_seq = from;
            for _ in 0..64 {
                let req = SyncRequest::Attestations { node, from_seq };
                let Ok(Ok(SyncResponse::Envelopes { items, more })) = net.sync(peer, req).await
                else {
                    return;
                };
                let mut highest = None;
                for item in items.into_iter().take(MAX_SYNC_ITEMS) {
                    highest = highest.max(seq_of(&item));
                    if work.send(Work::Archival(item)).await.is_err() {
                        return;
                    }
                }
                match highest {
                    Some(h) if more && h >= from_seq => from_seq = h + 1,
                    _ => return,
                }
            }
        });
    }
}

/// Offers a private attestation to one counterparty until it takes it (`Stored`), refuses it
/// for good, or the attempts run out (4, 8, 16 and 32 s apart).
async fn deliver_private(
    net: crate::net::NetHandle,
    peer: PeerId,
    req: TradeRequest,
    sent: Arc<AtomicU64>,
) {
    for attempt in 0..PRIVATE_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(2 << attempt)).await;
        }
        if let Ok(Err(e)) = net.dial_peer(peer).await {
            debug!(%peer, "counterparty not reachable yet: {e}");
        }
        match net.trade(peer, req.clone()).await {
            Ok(Ok(TradeResponse::Stored)) => {
                sent.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Ok(TradeResponse::Reject(RejectReason::Busy))) | Ok(Err(_)) => {}
            Ok(Ok(other)) => {
                debug!(%peer, ?other, "counterparty refused our private attestation");
                return;
            }
            Err(_) => return,
        }
    }
    debug!(%peer, "private attestation not delivered; the counterparty can fetch it by sync");
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattmesh_protocol::sample;

    #[test]
    fn a_private_attestation_is_shared_only_with_its_node_and_by_its_node_with_counterparties() {
        let public = sample::seller_attestation();
        let private = sample::seller_private_attestation();
        let seller = sample::seller_key().node_id();
        let buyer = sample::buyer_key().node_id();
        let other = NodeId([9; 32]);
        let traded_with_buyer = |slot: u64, r: &NodeId| slot == private.slot_ms && *r == buyer;
        // The seller serves its own: to its counterparty in the slot, not to anyone else.
        assert!(may_share(&private, seller, Some(buyer), traded_with_buyer));
        assert!(!may_share(&private, seller, Some(other), traded_with_buyer));
        assert!(!may_share(&private, seller, None, traded_with_buyer));
        // The buyer, holding the seller's private attestation, passes it to nobody but the
        // seller, even to a node that traded with the seller in that slot too.
        let anyone = |_: u64, _: &NodeId| true;
        assert!(!may_share(&private, buyer, Some(other), anyone));
        assert!(may_share(&private, buyer, Some(seller), anyone));
        // Another slot: not a counterparty there.
        let mut later = private.clone();
        later.slot_ms += 900_000;
        assert!(!may_share(&later, seller, Some(buyer), traded_with_buyer));
        // A public attestation goes to anyone.
        assert!(may_share(&public, buyer, Some(other), |_, _| false));
    }

    #[test]
    fn a_broken_chain_is_found_through_commitments_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let seller = sample::seller_key().node_id();
        let slot_len = 900_000;
        // seq 0 public, seq 1 private with its commitment: the mixed chain holds.
        let first = sample::attestation_envelope().to_bytes();
        let private = sample::private_attestation_envelope().to_bytes();
        let commitment = sample::commitment_envelope().to_bytes();
        store
            .put_chain(
                &[(seller, 0, first.clone()), (seller, 1, private)],
                &[(seller, 1, commitment)],
            )
            .unwrap();
        assert!(chain_holds_at(&store, &seller, 0, slot_len));
        assert!(chain_holds_at(&store, &seller, 1, slot_len));
        assert_eq!(store.last_chain_seq(&seller).unwrap(), Some(1));
        // A commitment for seq 2 that names another predecessor.
        let key = sample::seller_key();
        let mut bad: AttestationCommitment =
            Envelope::from_bytes(&sample::commitment_envelope().to_bytes())
                .unwrap()
                .payload_as()
                .unwrap();
        bad.seq = 2;
        bad.slot_ms += slot_len;
        bad.created_ms += slot_len;
        bad.prev = Hash32([7; 32]);
        let env = Envelope::seal(&bad, sample::charter().hash, &key);
        store
            .put_chain(&[], &[(seller, 2, env.to_bytes())])
            .unwrap();
        assert!(!chain_holds_at(&store, &seller, 2, slot_len));
        // A full attestation that does not match the commitment held for its seq.
        let mut other = sample::seller_private_attestation();
        other.export_wh -= 1;
        other.export_register_wh -= 1;
        let env = Envelope::seal(&other, sample::charter().hash, &key);
        store
            .put_chain(&[(seller, 1, env.to_bytes())], &[])
            .unwrap();
        assert!(!chain_holds_at(&store, &seller, 1, slot_len));
        let entries = store.chain(&seller, 0, 10).unwrap();
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(entries[2].attestation.is_none() && entries[2].commitment.is_some());
        assert_eq!(entries[0].attestation.as_ref(), Some(&first));
    }
}
