//! Meter attestations: signing our own at the end of every slot, storing everyone's, and
//! serving and fetching them through sync.

use super::Core;
use crate::metering::SlotTotals;
use tracing::{debug, info, warn};
use wattmesh_protocol::attestation::{MeterAttestation, MeterStatus, chain_hash};
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::merkle;
use wattmesh_protocol::offer::Side;
use wattmesh_protocol::{Hash32, NodeId};

/// Our own last attestation, decoded, with its chain hash.
fn decode(bytes: &[u8]) -> Option<(MeterAttestation, Hash32)> {
    let env = Envelope::from_bytes(bytes).ok()?;
    let a: MeterAttestation = env.payload_as().ok()?;
    Some((a, chain_hash(&env.payload)))
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
            ext: Vec::new(),
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
        let env = Envelope::seal(&a, self.n.chain.at(self.clock.now_ms()).hash, &self.key);
        let bytes = env.to_bytes();
        let store = self.store.clone();
        let item = vec![(me, a.seq, bytes.clone())];
        match tokio::task::spawn_blocking(move || store.put_attestations(&item)).await {
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
        if let Ok(Err(e)) = self
            .net
            .publish(crate::net::behaviour::TopicKind::Attestations, bytes)
            .await
        {
            debug!("attestation stored but not gossiped: {e}");
        }
        info!(
            slot = a.slot_ms,
            seq = a.seq,
            import_wh = a.import_wh,
            export_wh = a.export_wh,
            coverage = a.coverage_permille,
            "attested"
        );
    }

    /// Stores a peer's attestation received by gossip or sync; a break in its chain is logged
    /// and counted (it is evidence, so the attestation is kept).
    pub(super) fn keep_attestation(&mut self, a: MeterAttestation, bytes: Vec<u8>) {
        let store = self.store.clone();
        let slot_len = self.n.chain.at(a.slot_ms).charter.slot_ms();
        let broken = tokio::task::spawn_blocking(move || {
            let prev = if a.seq == 0 {
                None
            } else {
                store
                    .attestations(&a.node, a.seq - 1, 1)
                    .ok()
                    .and_then(|v| v.into_iter().next())
                    .and_then(|b| decode(&b))
                    .filter(|(p, _)| p.seq + 1 == a.seq)
            };
            let broken = prev.is_some_and(|(p, h)| a.check_follows(&p, &h, slot_len).is_err());
            let _ = store.put_attestations(&[(a.node, a.seq, bytes)]);
            broken
        });
        let counters = self.chain_breaks.clone();
        tokio::spawn(async move {
            if let Ok(true) = broken.await {
                counters.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn!("a peer's attestation does not follow its previous one");
            }
        });
    }

    /// Asks `peer` for the attestations of `node` we do not have yet, and feeds them to the
    /// worker (archival checks) and the store.
    pub(super) fn fetch_attestations(&self, peer: libp2p::PeerId, node: NodeId) {
        let (net, store, work) = (self.net.clone(), self.store.clone(), self.work.clone());
        tokio::spawn(async move {
            let have = tokio::task::spawn_blocking(move || store.last_attestation(&node))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .and_then(|b| decode(&b))
                .map(|(a, _)| a.seq + 1)
                .unwrap_or(0);
            let mut from_seq = have;
            for _ in 0..64 {
                let req = wattmesh_protocol::sync::SyncRequest::Attestations { node, from_seq };
                let Ok(Ok(wattmesh_protocol::sync::SyncResponse::Envelopes { items, more })) =
                    net.sync(peer, req).await
                else {
                    return;
                };
                let n = items.len() as u64;
                for item in items {
                    if work
                        .send(crate::worker::Work::Archival(item))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if !more || n == 0 {
                    return;
                }
                from_seq += n;
            }
        });
    }
}
