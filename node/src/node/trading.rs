//! The bilateral trade handshake, both sides.
//!
//! Maker: runs inside the node task, so proposals are handled one at a time and the check of
//! the remaining quantity, the reservation and the durable commit are atomic with respect to
//! every other proposal. A fill publishes the offer's next version with the remaining quantity.
//!
//! Taker: runs in its own task (it waits on the network), signs the proposal, checks the
//! maker's signed trade against it, countersigns, stores the agreed trade durably and only then
//! sends the countersignature. Proposals are retried with the same nonce, which makes them
//! idempotent: the maker answers a repeated proposal with the trade it already signed.

use super::Core;
use crate::net::NetHandle;
use crate::store::{Store, TradeState};
use serde::Serialize;
use std::sync::Arc;
use tracing::{debug, info};
use wattmesh_protocol::charter::CharterChain;
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::offer::Offer;
use wattmesh_protocol::trade::{
    RejectReason, Trade, TradeProposal, TradeRequest, TradeResponse, terms_acceptable,
};
use wattmesh_protocol::validate::{self, Msg};
use wattmesh_protocol::{NodeId, NodeKey};

/// A trade as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TradeView {
    /// The taker (hex).
    pub taker: String,
    /// The taker's nonce.
    pub nonce: u64,
    /// `maker` or `taker`: our role.
    pub role: &'static str,
    /// `sell` or `buy`: our side.
    pub side: &'static str,
    /// The counterparty's short id.
    pub counterparty: String,
    /// The slot.
    pub slot_ms: u64,
    /// Energy, Wh.
    pub energy_wh: u64,
    /// Price per kWh, thousandths of a minor unit.
    pub price: u64,
    /// Where it stands.
    pub state: TradeState,
}

/// The view of a stored trade from `me`'s side.
pub(super) fn view(me: &NodeId, t: &Trade, state: TradeState) -> TradeView {
    let maker = t.maker() == *me;
    let selling = t.seller() == *me;
    TradeView {
        taker: t.taker.to_hex(),
        nonce: t.nonce,
        role: if maker { "maker" } else { "taker" },
        side: if selling { "sell" } else { "buy" },
        counterparty: if maker {
            t.taker.short()
        } else {
            t.maker().short()
        },
        slot_ms: t.slot_ms,
        energy_wh: t.energy_wh,
        price: t.price,
        state,
    }
}

fn reject_for(e: &validate::Invalid) -> RejectReason {
    use validate::Invalid::*;
    match e {
        GateClosed | Expired | Late => RejectReason::Closed,
        _ => RejectReason::Invalid,
    }
}

impl Core {
    /// Handles one inbound handshake message as the maker.
    pub(super) async fn answer_trade(&mut self, req: TradeRequest) -> TradeResponse {
        match req {
            TradeRequest::Propose(env) => self.on_propose(env).await,
            TradeRequest::Countersigned(env) => self.on_countersigned(env).await,
            TradeRequest::Settle { .. } => {
                TradeResponse::Dispute(wattmesh_protocol::trade::DisputeReason::UnknownTrade)
            }
            TradeRequest::Status(id) => {
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || store.trade(&id)).await {
                    Ok(Ok(Some((_, bytes)))) => match Envelope::from_bytes(&bytes) {
                        Ok(env) => TradeResponse::Status(Some(env)),
                        Err(_) => TradeResponse::Status(None),
                    },
                    _ => TradeResponse::Status(None),
                }
            }
        }
    }

    async fn on_propose(&mut self, env: Envelope) -> TradeResponse {
        let now = self.clock.now_ms();
        let accepted = match validate::validate_archival(&env.to_bytes(), &self.n.chain, false) {
            Ok(a) => a,
            Err(e) => return TradeResponse::Reject(reject_for(&e)),
        };
        let Msg::TradeProposal(p) = accepted.msg else {
            return TradeResponse::Reject(RejectReason::Invalid);
        };
        let charter = &self.n.chain.at(now).charter;
        if let Err(e) = validate::check_proposal_fresh(charter, &p, now) {
            return TradeResponse::Reject(reject_for(&e));
        }
        if p.offer.maker != self.key.node_id() {
            return TradeResponse::Reject(RejectReason::UnknownOffer);
        }
        // A retry: answer with the trade already signed, if the terms are the same.
        let id = p.trade_id();
        let store = self.store.clone();
        if let Ok(Ok(Some((_, bytes)))) =
            tokio::task::spawn_blocking(move || store.trade(&id)).await
        {
            let Ok(existing) = Envelope::from_bytes(&bytes) else {
                return TradeResponse::Reject(RejectReason::Invalid);
            };
            return match existing.payload_as::<Trade>() {
                Ok(t) if t.matches_proposal(&p) => {
                    let mut maker_signed = existing;
                    maker_signed.signatures.truncate(1);
                    TradeResponse::Accept(maker_signed)
                }
                _ => TradeResponse::Reject(RejectReason::Invalid),
            };
        }
        if !self.clock.may_sign() {
            return TradeResponse::Reject(RejectReason::ClockUnsynced);
        }
        let Some(entry) = self.book.get(&p.offer) else {
            return TradeResponse::Reject(RejectReason::UnknownOffer);
        };
        let current = entry.offer.clone();
        if let Err(r) = terms_acceptable(&current, &p, now) {
            return TradeResponse::Reject(r);
        }
        let trade = Trade::from_proposal(&current, &p, now);
        let hash = self.n.chain.at(now).hash;
        let trade_env = Envelope::seal(&trade, hash, &self.key);
        // The offer's next version carries what remains; a fill of everything closes it.
        let mut next = current.clone();
        next.version += 1;
        next.quantity_wh -= p.energy_wh;
        next.min_fill_wh = next.min_fill_wh.min(next.quantity_wh);
        next.created_ms = now.max(current.created_ms);
        let next_env = Envelope::seal(&next, hash, &self.key);
        let (store, id, tb, nb) = (
            self.store.clone(),
            trade.id(),
            trade_env.to_bytes(),
            next_env.to_bytes(),
        );
        let oid = next.id();
        let committed = tokio::task::spawn_blocking(move || {
            store.put_trade(&id, TradeState::MakerSigned, &tb, Some((oid, &nb)))
        })
        .await;
        if !matches!(committed, Ok(Ok(()))) {
            return TradeResponse::Reject(RejectReason::Busy);
        }
        let next_bytes = next_env.to_bytes();
        let _ = self
            .work
            .send(crate::worker::Work::Own(Box::new(next.clone())))
            .await;
        self.book.insert(next, next_bytes.clone());
        if let Ok(Err(e)) = self
            .net
            .publish(crate::net::behaviour::TopicKind::Offers, next_bytes)
            .await
        {
            debug!("remaining quantity not gossiped: {e}");
        }
        info!(taker = %p.taker.short(), energy_wh = p.energy_wh, price = p.price, "accepted a proposal");
        TradeResponse::Accept(trade_env)
    }

    async fn on_countersigned(&mut self, env: Envelope) -> TradeResponse {
        let Ok(acc) = validate::validate_archival(&env.to_bytes(), &self.n.chain, false) else {
            return TradeResponse::Reject(RejectReason::Invalid);
        };
        let Msg::Trade(t) = acc.msg else {
            return TradeResponse::Reject(RejectReason::Invalid);
        };
        if t.maker() != self.key.node_id() {
            return TradeResponse::Reject(RejectReason::Invalid);
        }
        let (store, id) = (self.store.clone(), t.id());
        let stored = tokio::task::spawn_blocking(move || store.trade(&id)).await;
        let Ok(Ok(Some((state, bytes)))) = stored else {
            return TradeResponse::Reject(RejectReason::UnknownOffer);
        };
        // The countersigned trade must be exactly the one we signed.
        match Envelope::from_bytes(&bytes) {
            Ok(ours) if ours.payload == env.payload && ours.charter == env.charter => {}
            _ => return TradeResponse::Reject(RejectReason::Invalid),
        }
        if state == TradeState::Agreed {
            return TradeResponse::Stored;
        }
        let (store, bytes) = (self.store.clone(), env.to_bytes());
        match tokio::task::spawn_blocking(move || {
            store.put_trade(&id, TradeState::Agreed, &bytes, None)
        })
        .await
        {
            Ok(Ok(())) => TradeResponse::Stored,
            _ => TradeResponse::Reject(RejectReason::Busy),
        }
    }
}

/// Everything the taker's task needs.
pub(super) struct Taker {
    pub(super) key: Arc<NodeKey>,
    pub(super) store: Store,
    pub(super) net: NetHandle,
    pub(super) chain: CharterChain,
    pub(super) now_ms: u64,
    pub(super) may_sign: bool,
}

impl Taker {
    /// Takes `energy_wh` of `offer` at its price. Returns the agreed trade.
    pub(super) async fn take(self, offer: Offer, energy_wh: u64) -> Result<TradeView, String> {
        if !self.may_sign {
            return Err("the clock is not synchronised; refusing to sign".into());
        }
        let me = self.key.node_id();
        if offer.maker == me {
            return Err("that is our own offer".into());
        }
        let peer =
            crate::net::peer_id_of(&offer.maker).ok_or("the maker's id is not a valid key")?;
        let mut nonce = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let proposal = TradeProposal {
            taker: me,
            nonce: u64::from_le_bytes(nonce),
            offer: offer.id(),
            offer_version: offer.version,
            slot_ms: offer.slot_ms,
            energy_wh,
            price: offer.price,
            created_ms: self.now_ms,
            ext: Vec::new(),
        };
        let hash = self.chain.at(self.now_ms).hash;
        let penv = Envelope::seal(&proposal, hash, &self.key);
        let mut answer = Err("no answer".to_string());
        for _ in 0..3 {
            answer = match self
                .net
                .trade(peer, TradeRequest::Propose(penv.clone()))
                .await
            {
                Ok(r) => r,
                Err(e) => return Err(e.to_string()),
            };
            if answer.is_ok() {
                break;
            }
        }
        let mut env = match answer? {
            TradeResponse::Accept(env) => env,
            TradeResponse::Reject(r) => return Err(format!("the maker declined: {r}")),
            other => return Err(format!("unexpected answer: {other:?}")),
        };
        let acc = validate::validate_archival(&env.to_bytes(), &self.chain, true)
            .map_err(|e| e.to_string())?;
        let Msg::Trade(t) = acc.msg else {
            return Err("the maker sent something other than a trade".into());
        };
        if !t.matches_proposal(&proposal) || t.maker_side != offer.side {
            return Err("the maker signed different terms".into());
        }
        env.add_signature(&self.key);
        let (store, id, bytes) = (self.store.clone(), t.id(), env.to_bytes());
        tokio::task::spawn_blocking(move || store.put_trade(&id, TradeState::Agreed, &bytes, None))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        // Our copy is durable; now let the maker store its own. If this fails, the maker can
        // still reconcile with a Status request.
        let mut stored = false;
        for _ in 0..3 {
            if let Ok(Ok(TradeResponse::Stored)) = self
                .net
                .trade(peer, TradeRequest::Countersigned(env.clone()))
                .await
            {
                stored = true;
                break;
            }
        }
        if !stored {
            debug!("the maker did not confirm storing the countersigned trade");
        }
        info!(maker = %offer.maker.short(), energy_wh, side = ?offer.side.opposite(), "trade agreed");
        Ok(view(&me, &t, TradeState::Agreed))
    }
}
