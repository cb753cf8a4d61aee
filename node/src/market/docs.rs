//! The market's two-party documents and dispute notes: standing agreements (executed slot by
//! slot as derived trades), payments between neighbours, and the notes that carry a dispute
//! through its lifecycle (open, answered, resolved).
//!
//! A document is signed by its first party and sent with [`TradeRequest::Cosign`]; the
//! recipient holds it for its owner ([`DocState::Offered`]), who accepts (countersigns, and the
//! copy goes back with [`TradeRequest::Cosigned`]) or declines. Both sides persist every step.
//! While a document we proposed is unanswered we ask again every [`RESEND_MS`]; the
//! recipient answers a repeated `Cosign` with the countersigned copy once it has one, so a lost
//! answer heals by itself.

use super::{CmdId, CmdResult, Market, Output, Pending, Record, SettleState, TradeRec, TradeState};
use serde::{Deserialize, Serialize};
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::ledger::{
    self, Agreement, DisputeNote, MAX_NOTES_PER_TRADE, NoteStage, Payment, document_hash,
};
use wattmesh_protocol::offer::Side;
use wattmesh_protocol::trade::{RejectReason, TradeId, TradeRequest, TradeResponse};
use wattmesh_protocol::validate::{self, Msg};
use wattmesh_protocol::{Hash32, MilliMinor, NodeId, slot};

/// How often an unanswered document or undelivered note is sent again, ms.
pub const RESEND_MS: u64 = 60_000;
/// The most documents a peer may leave waiting for our owner.
pub const MAX_OFFERED_PER_PEER: usize = 8;
/// The most documents waiting for our owner in all.
pub const MAX_OFFERED: usize = 64;
/// How far ahead an agreement's slots become trades (so the trader counts them), ms.
pub const AGREEMENT_HORIZON_MS: u64 = 24 * 3_600_000;
/// How long a payment may wait for the payee before we stop asking, ms.
pub const PAYMENT_PATIENCE_MS: u64 = 30 * 86_400_000;

/// Where a two-party document stands, on our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocState {
    /// We signed first and sent it; the other party has not countersigned.
    Proposed,
    /// The other party signed first; it waits for our owner.
    Offered,
    /// Both signed.
    Signed,
    /// Declined (by either owner) or refused by the other node.
    Declined,
    /// Withdrawn by the first party's owner before the second party countersigned it.
    Withdrawn,
}

/// A two-party document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Doc {
    /// A standing agreement.
    Agreement(Agreement),
    /// A payment.
    Payment(Payment),
}

impl Doc {
    fn parties(&self) -> (NodeId, NodeId) {
        match self {
            Doc::Agreement(a) => (a.proposer, a.counterparty),
            Doc::Payment(p) => (p.payer, p.payee),
        }
    }
}

/// A document we hold.
#[derive(Debug, Clone)]
pub struct DocRec {
    /// The document.
    pub doc: Doc,
    /// Our state.
    pub state: DocState,
    /// Its envelope (one or two signatures).
    pub envelope: Vec<u8>,
    /// When we may next send it again (not persisted).
    retry_at: u64,
    /// For agreements: slots up to here have become trades (not persisted).
    materialized_to: u64,
    /// For a document we withdrew: whether the other node confirmed it (not persisted: after
    /// a restart the withdrawal is sent once more, which the other side takes as a duplicate).
    withdrawal_confirmed: bool,
}

/// A dispute note we hold, ours or the other party's.
#[derive(Debug, Clone)]
pub struct NoteRec {
    /// The note.
    pub note: DisputeNote,
    /// Its envelope.
    pub envelope: Vec<u8>,
    /// For our own notes: whether the other party answered it, storing or refusing it (not
    /// persisted: after a restart our notes are sent once more, which the other side takes as
    /// a duplicate).
    delivered: bool,
    retry_at: u64,
}

/// A document or note request in flight.
#[derive(Debug, Clone)]
pub(super) struct DocSend {
    /// The document's (or note's) hash.
    pub(super) hash: Hash32,
    /// The recipient.
    pub(super) to: NodeId,
    /// The request, to send again.
    pub(super) req: TradeRequest,
    /// How many times it was sent.
    pub(super) attempts: u32,
}

/// Where a dispute stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeStatus {
    /// Recorded by one side; the other has not answered.
    Open,
    /// Both sides have written.
    Answered,
    /// Both sides' latest resolutions name the same amount.
    Resolved,
}

impl Market {
    fn doc_in_flight(&self, hash: &Hash32) -> bool {
        self.pending
            .values()
            .any(|p| matches!(p, Pending::Doc(d) if d.hash == *hash))
    }

    fn send_doc(&mut self, to: NodeId, hash: Hash32, req: TradeRequest, out: &mut Vec<Output>) {
        let token = self.token();
        out.push(Output::Send {
            to,
            token,
            req: req.clone(),
        });
        self.pending.insert(
            token,
            Pending::Doc(DocSend {
                hash,
                to,
                req,
                attempts: 1,
            }),
        );
    }

    fn put_doc(&mut self, hash: Hash32, doc: Doc, state: DocState, envelope: Vec<u8>, now: u64) {
        self.docs.insert(
            hash,
            DocRec {
                doc,
                state,
                envelope,
                retry_at: now + RESEND_MS,
                materialized_to: 0,
                withdrawal_confirmed: false,
            },
        );
    }

    fn persist_doc(&self, hash: Hash32, out: &mut Vec<Output>) {
        if let Some(d) = self.docs.get(&hash) {
            out.push(Output::Persist(Record::Document {
                hash,
                state: d.state,
                envelope: d.envelope.clone(),
            }));
        }
    }

    /// Takes a persisted document into the state. Returns whether anything changed.
    pub(super) fn apply_document(
        &mut self,
        hash: Hash32,
        state: DocState,
        envelope: &[u8],
    ) -> bool {
        let Ok(env) = Envelope::from_bytes(envelope) else {
            return false;
        };
        let doc = if let Ok(a) = env.payload_as::<Agreement>() {
            Doc::Agreement(a)
        } else if let Ok(p) = env.payload_as::<Payment>() {
            Doc::Payment(p)
        } else {
            return false;
        };
        if self
            .docs
            .get(&hash)
            .is_some_and(|d| d.state == DocState::Signed || d.state == state)
        {
            return false;
        }
        self.put_doc(hash, doc, state, envelope.to_vec(), 0);
        true
    }

    /// Takes a persisted note into the state.
    pub(super) fn apply_note(&mut self, envelope: &[u8]) -> bool {
        let Ok(env) = Envelope::from_bytes(envelope) else {
            return false;
        };
        let Ok(note) = env.payload_as::<DisputeNote>() else {
            return false;
        };
        let list = self.notes.entry(note.trade).or_default();
        if list.iter().any(|n| n.envelope == envelope) || list.len() >= MAX_NOTES_PER_TRADE {
            return false;
        }
        list.push(NoteRec {
            delivered: note.author != self.me,
            note,
            envelope: envelope.to_vec(),
            retry_at: 0,
        });
        true
    }

    /// The owner proposes a standing agreement to a neighbour.
    pub(super) fn propose_agreement(
        &mut self,
        now: u64,
        mut a: Agreement,
        out: &mut Vec<Output>,
    ) -> Result<Hash32, String> {
        a.proposer = self.me;
        a.created_ms = now;
        let charter = self.chain.at(now);
        let env = Envelope::seal(&a, charter.hash, &self.key);
        validate::check_agreement(&charter.charter, &env, &a, false).map_err(|e| e.to_string())?;
        if now >= slot::gate_closure(&charter.charter, a.start_ms) {
            return Err("trading for the agreement's first slot has closed; start it later".into());
        }
        Ok(self.propose_doc(now, Doc::Agreement(a), env, out))
    }

    /// Holds a document we signed first as proposed, persists it and sends it for the other
    /// party to countersign.
    fn propose_doc(&mut self, now: u64, doc: Doc, env: Envelope, out: &mut Vec<Output>) -> Hash32 {
        let hash = document_hash(&env.payload);
        let to = doc.parties().1;
        self.put_doc(hash, doc, DocState::Proposed, env.to_bytes(), now);
        self.persist_doc(hash, out);
        self.send_doc(to, hash, TradeRequest::Cosign(env), out);
        hash
    }

    /// The owner declares a payment to a neighbour.
    pub(super) fn pay(
        &mut self,
        now: u64,
        mut p: Payment,
        out: &mut Vec<Output>,
    ) -> Result<Hash32, String> {
        p.payer = self.me;
        p.created_ms = now;
        let charter = self.chain.at(now);
        let env = Envelope::seal(&p, charter.hash, &self.key);
        validate::check_payment(&env, &p, false).map_err(|e| e.to_string())?;
        Ok(self.propose_doc(now, Doc::Payment(p), env, out))
    }

    /// The owner accepts (countersigns) a document offered to us.
    pub(super) fn accept_doc(
        &mut self,
        now: u64,
        hash: Hash32,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        let rec = self
            .docs
            .get(&hash)
            .filter(|d| d.state == DocState::Offered)
            .ok_or("no document waits for you with that id")?;
        if let Doc::Agreement(a) = &rec.doc {
            let c = &self.chain.at(now).charter;
            if now >= slot::gate_closure(c, a.start_ms) {
                return Err(
                    "trading for the agreement's first slot has closed; ask for a new one".into(),
                );
            }
        }
        let mut env = Envelope::from_bytes(&rec.envelope).map_err(|e| e.to_string())?;
        env.add_signature(&self.key);
        let (first, _) = rec.doc.parties();
        let rec = self.docs.get_mut(&hash).expect("checked above");
        rec.state = DocState::Signed;
        rec.envelope = env.to_bytes();
        self.persist_doc(hash, out);
        self.send_doc(first, hash, TradeRequest::Cosigned(env), out);
        self.materialize(now);
        Ok(())
    }

    /// The owner declines a document offered to us.
    pub(super) fn decline_doc(
        &mut self,
        hash: Hash32,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        let rec = self
            .docs
            .get_mut(&hash)
            .filter(|d| d.state == DocState::Offered)
            .ok_or("no document waits for you with that id")?;
        rec.state = DocState::Declined;
        let (first, _) = rec.doc.parties();
        self.persist_doc(hash, out);
        self.send_doc(first, hash, TradeRequest::Decline(hash), out);
        Ok(())
    }

    /// The owner withdraws a document we signed first and sent, which the other party has not
    /// countersigned: we stop asking and tell the other node, which closes it unless its owner
    /// countersigned it already (then its signed copy comes back and the document is signed).
    pub(super) fn withdraw_doc(
        &mut self,
        now: u64,
        hash: Hash32,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        let me = self.me;
        let rec = self
            .docs
            .get_mut(&hash)
            .filter(|d| d.doc.parties().0 == me)
            .ok_or("you sent no document with that id")?;
        match rec.state {
            DocState::Proposed => {}
            DocState::Signed => {
                return Err(
                    "your neighbour already countersigned it; it cannot be withdrawn".into(),
                );
            }
            DocState::Declined => return Err("your neighbour already declined it".into()),
            DocState::Withdrawn => return Err("it is already withdrawn".into()),
            DocState::Offered => return Err("you sent no document with that id".into()),
        }
        rec.state = DocState::Withdrawn;
        rec.withdrawal_confirmed = false;
        rec.retry_at = now + RESEND_MS;
        let (_, to) = rec.doc.parties();
        self.persist_doc(hash, out);
        self.send_doc(to, hash, TradeRequest::Decline(hash), out);
        Ok(())
    }

    /// A peer sends a document it signed first.
    pub(super) fn on_cosign(
        &mut self,
        now: u64,
        from: NodeId,
        env: Envelope,
        out: &mut Vec<Output>,
    ) -> TradeResponse {
        let hash = document_hash(&env.payload);
        if let Some(d) = self.docs.get(&hash) {
            return match d.state {
                DocState::Signed => match Envelope::from_bytes(&d.envelope) {
                    Ok(e) => TradeResponse::Cosigned(e),
                    Err(_) => TradeResponse::Reject(RejectReason::Invalid),
                },
                DocState::Declined | DocState::Withdrawn => {
                    TradeResponse::Reject(RejectReason::Closed)
                }
                _ => TradeResponse::Pending,
            };
        }
        let Ok(acc) = validate::validate_archival(&env.to_bytes(), &self.chain, true) else {
            return TradeResponse::Reject(RejectReason::Invalid);
        };
        let doc = match acc.msg {
            Msg::Agreement(a) if a.proposer == from && a.counterparty == self.me => {
                let c = &self.chain.at(now).charter;
                if now >= slot::gate_closure(c, a.start_ms) {
                    return TradeResponse::Reject(RejectReason::Closed);
                }
                Doc::Agreement(a)
            }
            Msg::Payment(p) if p.payer == from && p.payee == self.me => Doc::Payment(p),
            _ => return TradeResponse::Reject(RejectReason::Invalid),
        };
        let waiting = |m: &Market, who: Option<NodeId>| {
            m.docs
                .values()
                .filter(|d| d.state == DocState::Offered)
                .filter(|d| who.is_none_or(|w| d.doc.parties().0 == w))
                .count()
        };
        if waiting(self, Some(from)) >= MAX_OFFERED_PER_PEER || waiting(self, None) >= MAX_OFFERED {
            return TradeResponse::Reject(RejectReason::Busy);
        }
        self.put_doc(hash, doc, DocState::Offered, env.to_bytes(), now);
        self.persist_doc(hash, out);
        TradeResponse::Pending
    }

    /// A peer sends back a document we signed first, countersigned.
    pub(super) fn on_cosigned(
        &mut self,
        now: u64,
        from: NodeId,
        env: Envelope,
        out: &mut Vec<Output>,
    ) -> TradeResponse {
        let hash = document_hash(&env.payload);
        let Some(rec) = self.docs.get(&hash) else {
            return TradeResponse::Reject(RejectReason::UnknownOffer);
        };
        if rec.state == DocState::Signed {
            return TradeResponse::Stored;
        }
        let (first, second) = rec.doc.parties();
        if first != self.me || second != from || rec.state == DocState::Offered {
            return TradeResponse::Reject(RejectReason::Invalid);
        }
        if validate::validate_archival(&env.to_bytes(), &self.chain, false).is_err() {
            return TradeResponse::Reject(RejectReason::Invalid);
        }
        let rec = self.docs.get_mut(&hash).expect("checked above");
        // Declined by a timeout on our side but signed on theirs: the signatures decide.
        rec.state = DocState::Signed;
        rec.envelope = env.to_bytes();
        self.persist_doc(hash, out);
        self.materialize(now);
        TradeResponse::Stored
    }

    /// A peer's owner declined a document we proposed.
    pub(super) fn on_decline(
        &mut self,
        from: NodeId,
        hash: Hash32,
        out: &mut Vec<Output>,
    ) -> TradeResponse {
        match self.docs.get_mut(&hash) {
            Some(d) if d.state == DocState::Proposed && d.doc.parties() == (self.me, from) => {
                d.state = DocState::Declined;
                self.persist_doc(hash, out);
                TradeResponse::Stored
            }
            // The first party withdraws what it sent us: closed unless our owner signed it.
            Some(d) if d.doc.parties() == (from, self.me) => match d.state {
                DocState::Offered => {
                    d.state = DocState::Withdrawn;
                    self.persist_doc(hash, out);
                    TradeResponse::Stored
                }
                // Too late: both signed, and the signatures decide. The copy goes back.
                DocState::Signed => match Envelope::from_bytes(&d.envelope) {
                    Ok(e) => TradeResponse::Cosigned(e),
                    Err(_) => TradeResponse::Reject(RejectReason::Invalid),
                },
                _ => TradeResponse::Stored,
            },
            Some(_) => TradeResponse::Stored,
            None => TradeResponse::Reject(RejectReason::UnknownOffer),
        }
    }

    /// Answers to the document and note requests we sent.
    pub(super) fn on_doc_response(
        &mut self,
        now: u64,
        sent: DocSend,
        resp: Option<TradeResponse>,
        out: &mut Vec<Output>,
    ) {
        let DocSend {
            hash,
            to,
            req,
            attempts,
        } = sent;
        match (resp, &req) {
            (Some(TradeResponse::Cosigned(env)), TradeRequest::Cosign(_)) => {
                self.on_cosigned(now, to, env, out);
            }
            (Some(TradeResponse::Reject(r)), TradeRequest::Cosign(_)) => {
                if let Some(d) = self.docs.get_mut(&hash) {
                    if d.state == DocState::Proposed && r != RejectReason::Busy {
                        tracing::info!(%r, "a neighbour refused our document");
                        d.state = DocState::Declined;
                        self.persist_doc(hash, out);
                    }
                }
            }
            // Our withdrawal: the other node closed it, had never seen it, or had already
            // countersigned it (then the signed copy comes back and the signatures decide).
            (Some(TradeResponse::Cosigned(env)), TradeRequest::Decline(_)) => {
                self.on_cosigned(now, to, env, out);
            }
            (Some(TradeResponse::Stored | TradeResponse::Reject(_)), TradeRequest::Decline(_)) => {
                if let Some(d) = self.docs.get_mut(&hash) {
                    d.withdrawal_confirmed = true;
                }
            }
            // Stored, or refused (the other side holds no such trade with us): either way,
            // sending it again changes nothing.
            (Some(TradeResponse::Stored | TradeResponse::Reject(_)), TradeRequest::Note(_)) => {
                if let Some(n) = self
                    .notes
                    .values_mut()
                    .flatten()
                    .find(|n| document_hash(&n.note_payload()) == hash)
                {
                    n.delivered = true;
                }
            }
            (None, _) if attempts < super::MAX_ATTEMPTS => {
                let token = self.token();
                out.push(Output::Send {
                    to,
                    token,
                    req: req.clone(),
                });
                self.pending.insert(
                    token,
                    Pending::Doc(DocSend {
                        hash,
                        to,
                        req,
                        attempts: attempts + 1,
                    }),
                );
            }
            // Otherwise the periodic resend in `docs_tick` tries again later.
            _ => {}
        }
    }

    /// A peer sends a note about a trade we share.
    pub(super) fn on_note(
        &mut self,
        from: NodeId,
        env: Envelope,
        out: &mut Vec<Output>,
    ) -> TradeResponse {
        let Ok(acc) = validate::validate_archival(&env.to_bytes(), &self.chain, false) else {
            return TradeResponse::Reject(RejectReason::Invalid);
        };
        let Msg::DisputeNote(n) = acc.msg else {
            return TradeResponse::Reject(RejectReason::Invalid);
        };
        let shared = self
            .trades
            .get(&n.trade)
            .is_some_and(|t| counterparty(&t.trade, &self.me) == Some(from));
        if n.author != from || !shared {
            return TradeResponse::Reject(RejectReason::UnknownOffer);
        }
        let bytes = env.to_bytes();
        let list = self.notes.entry(n.trade).or_default();
        if list.iter().any(|x| x.envelope == bytes) {
            return TradeResponse::Stored;
        }
        if list.len() >= MAX_NOTES_PER_TRADE {
            return TradeResponse::Reject(RejectReason::Busy);
        }
        let trade = n.trade;
        list.push(NoteRec {
            note: n,
            envelope: bytes.clone(),
            delivered: true,
            retry_at: 0,
        });
        out.push(Output::Persist(Record::Note {
            trade,
            envelope: bytes,
        }));
        TradeResponse::Stored
    }

    /// The owner (or the node, recording a dispute) writes a note about a trade.
    pub(super) fn write_note(
        &mut self,
        now: u64,
        trade: TradeId,
        stage: NoteStage,
        text: String,
        amount: Option<MilliMinor>,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        let t = self
            .trades
            .get(&trade)
            .filter(|t| t.state == TradeState::Agreed)
            .ok_or("no agreed trade of ours with that id")?;
        let to = counterparty(&t.trade, &self.me).ok_or("not our trade")?;
        if let Some(a) = amount {
            let most = wattmesh_protocol::units::cost(t.trade.energy_wh, t.trade.price);
            if a > most {
                return Err(format!(
                    "a resolution cannot exceed the trade's full value ({most} milli-units)"
                ));
            }
        }
        if self.notes.get(&trade).map_or(0, Vec::len) >= MAX_NOTES_PER_TRADE {
            return Err("this dispute already holds the most notes allowed".into());
        }
        let note = DisputeNote {
            trade,
            author: self.me,
            stage,
            text,
            amount,
            created_ms: now,
            ext: Vec::new(),
        };
        let charter = self.chain.at(now);
        let env = Envelope::seal(&note, charter.hash, &self.key);
        validate::check_dispute_note(&env, &note).map_err(|e| e.to_string())?;
        let bytes = env.to_bytes();
        self.notes.entry(trade).or_default().push(NoteRec {
            note,
            envelope: bytes.clone(),
            delivered: false,
            retry_at: now + RESEND_MS,
        });
        out.push(Output::Persist(Record::Note {
            trade,
            envelope: bytes,
        }));
        let hash = document_hash(&env.payload);
        self.send_doc(to, hash, TradeRequest::Note(env), out);
        Ok(())
    }

    /// The trades of every signed agreement, from its start up to the horizon.
    pub(super) fn materialize(&mut self, now: u64) {
        let until = now + AGREEMENT_HORIZON_MS;
        let mut new = Vec::new();
        for d in self.docs.values_mut() {
            let Doc::Agreement(a) = &d.doc else { continue };
            if d.state != DocState::Signed || d.materialized_to >= until.min(a.end_ms) {
                continue;
            }
            let slot_len = self.chain.at(a.start_ms).charter.slot_ms();
            let from = d.materialized_to.max(a.start_ms);
            for s in a.slots_in(slot_len, from, until) {
                new.push((a.trade_for(s), d.envelope.clone()));
            }
            d.materialized_to = until;
        }
        for (trade, envelope) in new {
            self.trades.entry(trade.id()).or_insert(TradeRec {
                trade,
                state: TradeState::Agreed,
                envelope,
            });
        }
    }

    /// Periodic work: agreements' trades, documents and notes sent again, and an automatic
    /// note for each dispute we recorded, so that the other owner sees it.
    pub(super) fn docs_tick(&mut self, now: u64, may_sign: bool, out: &mut Vec<Output>) {
        self.materialize(now);
        // Agreements offered to us that our owner left undecided past their first slot's gate
        // closure can no longer be accepted: recorded declined, so they stop waiting (and the
        // proposer learns it when it asks again).
        let c = self.chain.at(now).charter.clone();
        let expired: Vec<Hash32> = self
            .docs
            .iter()
            .filter(|(_, d)| d.state == DocState::Offered)
            .filter(|(_, d)| {
                matches!(&d.doc, Doc::Agreement(a) if now >= slot::gate_closure(&c, a.start_ms))
            })
            .map(|(h, _)| *h)
            .collect();
        for h in expired {
            if let Some(d) = self.docs.get_mut(&h) {
                d.state = DocState::Declined;
            }
            self.persist_doc(h, out);
        }
        let resend: Vec<(Hash32, NodeId, Vec<u8>)> = self
            .docs
            .iter()
            .filter(|(_, d)| d.state == DocState::Proposed && now >= d.retry_at)
            .filter(|(_, d)| match &d.doc {
                // Until the period ends: if the other side countersigned but its copy never
                // reached us, it answers with the signed copy; if it never saw the proposal, it
                // refuses it as closed, and we record it declined. Either way both agree.
                Doc::Agreement(a) => now < a.end_ms,
                Doc::Payment(p) => now < p.created_ms.saturating_add(PAYMENT_PATIENCE_MS),
            })
            .map(|(h, d)| (*h, d.doc.parties().1, d.envelope.clone()))
            .collect();
        for (hash, to, bytes) in resend {
            if let Some(d) = self.docs.get_mut(&hash) {
                d.retry_at = now + RESEND_MS;
            }
            if self.doc_in_flight(&hash) {
                continue;
            }
            if let Ok(env) = Envelope::from_bytes(&bytes) {
                self.send_doc(to, hash, TradeRequest::Cosign(env), out);
            }
        }
        let me = self.me;
        let withdrawals: Vec<(Hash32, NodeId)> = self
            .docs
            .iter_mut()
            .filter(|(_, d)| {
                d.state == DocState::Withdrawn
                    && !d.withdrawal_confirmed
                    && d.doc.parties().0 == me
                    && now >= d.retry_at
            })
            .filter(|(_, d)| match &d.doc {
                Doc::Agreement(a) => now < a.end_ms,
                Doc::Payment(p) => now < p.created_ms.saturating_add(PAYMENT_PATIENCE_MS),
            })
            .map(|(h, d)| {
                d.retry_at = now + RESEND_MS;
                (*h, d.doc.parties().1)
            })
            .collect();
        for (hash, to) in withdrawals {
            if !self.doc_in_flight(&hash) {
                self.send_doc(to, hash, TradeRequest::Decline(hash), out);
            }
        }
        let mut notes = Vec::new();
        for (id, list) in self.notes.iter_mut() {
            for n in list.iter_mut() {
                if n.note.author == me && !n.delivered && now >= n.retry_at {
                    n.retry_at = now + RESEND_MS;
                    notes.push((*id, n.envelope.clone()));
                }
            }
        }
        for (id, bytes) in notes {
            let Some(to) = self
                .trades
                .get(&id)
                .and_then(|t| counterparty(&t.trade, &me))
            else {
                continue;
            };
            if let Ok(env) = Envelope::from_bytes(&bytes) {
                let hash = document_hash(&env.payload);
                if !self.doc_in_flight(&hash) {
                    self.send_doc(to, hash, TradeRequest::Note(env), out);
                }
            }
        }
        if !may_sign {
            return;
        }
        // Disputes we recorded without telling the other side yet.
        let unannounced: Vec<(TradeId, String)> = self
            .settlements
            .iter()
            .filter(|(_, s)| matches!(s.state, SettleState::Disputed | SettleState::Unilateral))
            .filter(|(id, _)| {
                !self
                    .notes
                    .get(id)
                    .is_some_and(|l| l.iter().any(|n| n.note.author == me))
            })
            .filter(|(id, _)| {
                self.trades
                    .get(id)
                    .is_some_and(|t| t.state == TradeState::Agreed)
            })
            .map(|(id, s)| {
                let why = s.dispute.clone().unwrap_or_else(|| "disputed".into());
                (*id, why)
            })
            .take(16)
            .collect();
        for (id, why) in unannounced {
            let mut text = format!("Recorded automatically: {why}.");
            text.truncate(ledger::MAX_NOTE_BYTES);
            let _ = self.write_note(now, id, NoteStage::Open, text, None, out);
        }
    }

    /// The documents we hold.
    pub fn documents(&self) -> impl Iterator<Item = (&Hash32, &DocRec)> {
        self.docs.iter()
    }

    /// The notes about one trade, oldest first.
    pub fn notes(&self, id: &TradeId) -> &[NoteRec] {
        self.notes.get(id).map_or(&[], Vec::as_slice)
    }

    /// Where a trade's dispute stands, and the amount a resolution settled on.
    pub fn dispute_status(&self, id: &TradeId) -> Option<(DisputeStatus, Option<MilliMinor>)> {
        let notes = self.notes(id);
        let recorded = self
            .settlements
            .get(id)
            .is_some_and(|s| matches!(s.state, SettleState::Disputed | SettleState::Unilateral));
        if notes.is_empty() && !recorded {
            return None;
        }
        let t = self.trades.get(id)?;
        let other = counterparty(&t.trade, &self.me)?;
        let last_resolve = |who: NodeId| {
            notes
                .iter()
                .rev()
                .find(|n| n.note.author == who && n.note.stage == NoteStage::Resolve)
                .and_then(|n| n.note.amount)
        };
        if let (Some(a), Some(b)) = (last_resolve(self.me), last_resolve(other)) {
            if a == b {
                return Some((DisputeStatus::Resolved, Some(a)));
            }
        }
        let wrote = |who: NodeId| notes.iter().any(|n| n.note.author == who);
        let answered = wrote(self.me) && wrote(other);
        Some((
            if answered {
                DisputeStatus::Answered
            } else {
                DisputeStatus::Open
            },
            None,
        ))
    }

    /// The energy our signed standing agreements commit in a slot on one side (included in
    /// the trades once materialised; this is for agreements beyond the horizon).
    pub fn agreements_in(&self, slot_ms: u64, side: Side) -> u64 {
        self.docs
            .values()
            .filter(|d| d.state == DocState::Signed)
            .filter_map(|d| match &d.doc {
                Doc::Agreement(a) if a.covers(slot_ms) => {
                    let ours = if side == Side::Sell {
                        a.seller()
                    } else {
                        a.buyer()
                    };
                    (ours == self.me).then_some(a.per_slot_wh)
                }
                _ => None,
            })
            .sum()
    }

    /// Runs an owner command about documents and notes.
    pub(super) fn doc_command(
        &mut self,
        now: u64,
        may_sign: bool,
        cmd: CmdId,
        c: DocCommand,
        out: &mut Vec<Output>,
    ) {
        let signs = !matches!(c, DocCommand::Decline(_) | DocCommand::Withdraw(_));
        let r = if signs && !may_sign {
            Err("the clock is not synchronised; refusing to sign".into())
        } else {
            match c {
                DocCommand::Propose(a) => self
                    .propose_agreement(now, *a, out)
                    .map(CmdResult::Document),
                DocCommand::Pay(p) => self.pay(now, *p, out).map(CmdResult::Document),
                DocCommand::Accept(h) => self
                    .accept_doc(now, h, out)
                    .map(|()| CmdResult::Document(h)),
                DocCommand::Decline(h) => self.decline_doc(h, out).map(|()| CmdResult::Document(h)),
                DocCommand::Withdraw(h) => self
                    .withdraw_doc(now, h, out)
                    .map(|()| CmdResult::Document(h)),
                DocCommand::Note {
                    trade,
                    stage,
                    text,
                    amount,
                } => self
                    .write_note(now, trade, stage, text, amount, out)
                    .map(|()| CmdResult::Noted),
            }
        };
        out.push(Output::Done { cmd, result: r });
    }
}

/// An owner command about documents and notes.
#[derive(Debug, Clone)]
pub enum DocCommand {
    /// Propose a standing agreement (proposer and created time are filled in).
    Propose(Box<Agreement>),
    /// Declare a payment (payer and created time are filled in).
    Pay(Box<Payment>),
    /// Countersign a document offered to us.
    Accept(Hash32),
    /// Decline a document offered to us.
    Decline(Hash32),
    /// Withdraw a document we sent that the other party has not countersigned.
    Withdraw(Hash32),
    /// Write a dispute note about a trade.
    Note {
        /// The trade.
        trade: TradeId,
        /// Which step.
        stage: NoteStage,
        /// What to say.
        text: String,
        /// For a resolution: what the buyer owes.
        amount: Option<MilliMinor>,
    },
}

impl NoteRec {
    fn note_payload(&self) -> Vec<u8> {
        Envelope::from_bytes(&self.envelope)
            .map(|e| e.payload)
            .unwrap_or_default()
    }
}

fn counterparty(t: &wattmesh_protocol::Trade, me: &NodeId) -> Option<NodeId> {
    if t.maker() == *me {
        Some(t.taker)
    } else if t.taker == *me {
        Some(t.maker())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::testkit::Pair;
    use crate::market::{Input, SettleState};
    use std::sync::Arc;
    use wattmesh_protocol::sample;

    fn state(p: &Pair, i: usize, h: &Hash32) -> Option<DocState> {
        p.m[i].docs.get(h).map(|d| d.state)
    }

    fn agreement(p: &Pair) -> Agreement {
        let c = p.m[0].chain.at(p.now).charter.clone();
        let start = slot::first_open_slot(&c, p.now);
        Agreement {
            proposer: p.id(0),
            nonce: 42,
            counterparty: p.id(1),
            proposer_side: Side::Sell,
            per_slot_wh: 500,
            price: c.feed_in_price + 1000,
            start_ms: start,
            end_ms: start + 2 * 86_400_000,
            weekdays: 0b111_1111,
            from_min: 0,
            to_min: 1440,
            utc_offset_min: 0,
            created_ms: 0,
            ext: vec![],
        }
    }

    fn hash_of(r: Result<CmdResult, String>) -> Hash32 {
        match r {
            Ok(CmdResult::Document(h)) => h,
            other => panic!("expected a document, got {other:?}"),
        }
    }

    #[test]
    fn an_accepted_agreement_becomes_the_same_trades_on_both_sides_and_they_settle() {
        let mut p = Pair::new();
        let a = agreement(&p);
        let h = hash_of(p.cmd(0, DocCommand::Propose(Box::new(a.clone()))));
        assert_eq!(state(&p, 0, &h), Some(DocState::Proposed));
        assert_eq!(state(&p, 1, &h), Some(DocState::Offered));
        // Nothing is a trade until the buyer's owner accepts.
        p.tick();
        assert_eq!(p.m[0].trades().count(), 0);
        hash_of(p.cmd(1, DocCommand::Accept(h)));
        assert_eq!(state(&p, 0, &h), Some(DocState::Signed));
        assert_eq!(state(&p, 1, &h), Some(DocState::Signed));
        p.tick();
        let ids = |m: &Market| m.trades().map(|t| t.trade.clone()).collect::<Vec<_>>();
        let (sa, sb) = (ids(&p.m[0]), ids(&p.m[1]));
        // Every 15-minute slot from the start to a day ahead is covered.
        let expect = a.slots_in(900_000, 0, p.now + AGREEMENT_HORIZON_MS).len();
        assert!(expect >= 95, "{expect}");
        assert_eq!(sa.len(), expect);
        assert_eq!(sa, sb, "both derive the same trades");
        assert!(
            sa.iter()
                .all(|t| t.seller() == p.id(0) && t.energy_wh == 500)
        );
        assert_eq!(p.m[0].agreements_in(a.start_ms, Side::Sell), 500);
        assert_eq!(p.m[1].agreements_in(a.start_ms, Side::Buy), 500);
        assert_eq!(p.m[1].agreements_in(a.start_ms, Side::Sell), 0);
        // After the first slot's deadlines both hold the same co-signed settlement (no
        // attestations here, so it records the shortfall rather than hiding it).
        let c = p.m[0].chain.at(p.now).charter.clone();
        p.now = slot::attestation_deadline(&c, a.start_ms) + 1;
        p.tick();
        let first = a.trade_id_for(a.start_ms);
        let s0 = p.m[0].settlements.get(&first).expect("seller settled");
        let s1 = p.m[1].settlements.get(&first).expect("buyer settled");
        assert_eq!(s0.state, SettleState::Settled);
        assert_eq!(s0.envelope, s1.envelope);
    }

    #[test]
    fn a_lost_countersignature_heals_when_the_proposal_is_sent_again() {
        let mut p = Pair::new();
        let h = hash_of(p.cmd(0, DocCommand::Propose(Box::new(agreement(&p)))));
        // The countersigned copy is lost on every attempt.
        p.drop = super::super::MAX_ATTEMPTS as usize;
        hash_of(p.cmd(1, DocCommand::Accept(h)));
        assert_eq!(state(&p, 1, &h), Some(DocState::Signed));
        assert_eq!(state(&p, 0, &h), Some(DocState::Proposed));
        // A minute later the proposer asks again and gets the signed copy back.
        p.now += RESEND_MS;
        p.tick();
        assert_eq!(state(&p, 0, &h), Some(DocState::Signed));
    }

    #[test]
    fn a_countersignature_lost_until_after_the_first_slot_still_reaches_the_proposer() {
        let mut p = Pair::new();
        let a = agreement(&p);
        let h = hash_of(p.cmd(0, DocCommand::Propose(Box::new(a.clone()))));
        p.drop = super::super::MAX_ATTEMPTS as usize;
        hash_of(p.cmd(1, DocCommand::Accept(h)));
        // The proposer hears nothing until well after the first slot's gate closed...
        let c = p.m[0].chain.at(p.now).charter.clone();
        p.now = slot::slot_end(&c, a.start_ms) + 1;
        p.tick();
        // ...and then holds the signed agreement and the same trades as the other side.
        assert_eq!(state(&p, 0, &h), Some(DocState::Signed));
        let first = a.trade_id_for(a.start_ms);
        assert!(p.m[0].trades.contains_key(&first) && p.m[1].trades.contains_key(&first));
    }

    #[test]
    fn an_agreement_left_undecided_past_its_first_slot_is_declined_on_both_sides() {
        let mut p = Pair::new();
        let a = agreement(&p);
        let h = hash_of(p.cmd(0, DocCommand::Propose(Box::new(a.clone()))));
        assert_eq!(state(&p, 1, &h), Some(DocState::Offered));
        let c = p.m[0].chain.at(p.now).charter.clone();
        p.now = slot::gate_closure(&c, a.start_ms);
        // The recipient's turn comes first here; the proposer then asks again and hears it.
        p.feed(1, Input::Tick);
        assert_eq!(state(&p, 1, &h), Some(DocState::Declined));
        p.now += RESEND_MS;
        p.feed(0, Input::Tick);
        assert_eq!(state(&p, 0, &h), Some(DocState::Declined));
        assert!(p.cmd(1, DocCommand::Accept(h)).is_err());
    }

    #[test]
    fn a_note_the_other_side_refuses_is_not_sent_again() {
        let mut p = Pair::new();
        let a = agreement(&p);
        let h = hash_of(p.cmd(0, DocCommand::Propose(Box::new(a.clone()))));
        hash_of(p.cmd(1, DocCommand::Accept(h)));
        p.tick();
        let id = a.trade_id_for(a.start_ms);
        // The seller forgets the trade (as if its agreement had never reached it).
        p.m[0].trades.remove(&id);
        p.cmd(
            1,
            DocCommand::Note {
                trade: id,
                stage: NoteStage::Open,
                text: "where is it?".into(),
                amount: None,
            },
        )
        .unwrap();
        assert!(
            p.m[0].notes(&id).is_empty(),
            "refused: not a trade it holds"
        );
        let before = p.m[1].pending.len();
        p.now += 10 * RESEND_MS;
        let outs = p.m[1].handle(p.now, true, Input::Tick);
        let resent = outs
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Output::Send {
                        req: TradeRequest::Note(_),
                        ..
                    }
                )
            })
            .count();
        assert_eq!(resent, 0, "a refused note is not sent again");
        assert_eq!(p.m[1].pending.len(), before);
    }

    #[test]
    fn a_declined_agreement_makes_no_trades_and_accepting_twice_is_refused() {
        let mut p = Pair::new();
        let h = hash_of(p.cmd(0, DocCommand::Propose(Box::new(agreement(&p)))));
        hash_of(p.cmd(1, DocCommand::Decline(h)));
        assert_eq!(state(&p, 0, &h), Some(DocState::Declined));
        assert!(p.cmd(1, DocCommand::Accept(h)).is_err());
        p.tick();
        assert_eq!(p.m[0].trades().count() + p.m[1].trades().count(), 0);
    }

    #[test]
    fn an_agreement_whose_first_slot_has_closed_is_refused() {
        let mut p = Pair::new();
        let mut a = agreement(&p);
        a.start_ms -= 900_000;
        let e = p.cmd(0, DocCommand::Propose(Box::new(a))).unwrap_err();
        assert!(e.contains("closed"), "{e}");
    }

    fn payment(p: &Pair, amount: u64) -> Payment {
        Payment {
            payer: p.id(1),
            payee: p.id(0),
            nonce: 9,
            amount,
            through_ms: p.now,
            reference: "cash".into(),
            created_ms: 0,
            ext: vec![],
        }
    }

    #[test]
    fn a_withdrawn_agreement_is_closed_on_both_sides_and_makes_no_trades() {
        let mut p = Pair::new();
        let h = hash_of(p.cmd(0, DocCommand::Propose(Box::new(agreement(&p)))));
        assert_eq!(state(&p, 1, &h), Some(DocState::Offered));
        // Only the side that sent it may withdraw it.
        assert!(p.cmd(1, DocCommand::Withdraw(h)).is_err());
        hash_of(p.cmd(0, DocCommand::Withdraw(h)));
        assert_eq!(state(&p, 0, &h), Some(DocState::Withdrawn));
        assert_eq!(state(&p, 1, &h), Some(DocState::Withdrawn));
        // The other owner can no longer accept it, and nothing is sent again.
        let e = p.cmd(1, DocCommand::Accept(h)).unwrap_err();
        assert!(e.contains("no document waits"), "{e}");
        assert!(p.cmd(0, DocCommand::Withdraw(h)).is_err(), "withdrawn once");
        p.now += 3 * RESEND_MS;
        p.tick();
        assert_eq!(state(&p, 0, &h), Some(DocState::Withdrawn));
        assert_eq!(state(&p, 1, &h), Some(DocState::Withdrawn));
        assert_eq!(p.m[0].trades().count() + p.m[1].trades().count(), 0);
    }

    #[test]
    fn a_withdrawal_that_does_not_arrive_is_sent_again() {
        let mut p = Pair::new();
        let h = hash_of(p.cmd(1, DocCommand::Pay(Box::new(payment(&p, 12_345)))));
        assert_eq!(state(&p, 0, &h), Some(DocState::Offered));
        p.lose = |r| matches!(r, TradeRequest::Decline(_));
        hash_of(p.cmd(1, DocCommand::Withdraw(h)));
        assert_eq!(state(&p, 1, &h), Some(DocState::Withdrawn));
        assert_eq!(state(&p, 0, &h), Some(DocState::Offered), "not heard yet");
        p.lose = |_| false;
        p.now += RESEND_MS;
        p.tick();
        assert_eq!(state(&p, 0, &h), Some(DocState::Withdrawn));
        // A withdrawn payment never counts, on either side.
        assert!(crate::ledger::balances(&p.m[0], 0).is_empty());
        assert!(crate::ledger::balances(&p.m[1], 0).is_empty());
    }

    #[test]
    fn withdrawing_what_the_other_side_already_signed_brings_back_the_signed_copy() {
        let mut p = Pair::new();
        let h = hash_of(p.cmd(0, DocCommand::Propose(Box::new(agreement(&p)))));
        // The countersigned copy is lost on every attempt, so the proposer still thinks it is
        // only proposed when its owner withdraws it.
        p.drop = super::super::MAX_ATTEMPTS as usize;
        hash_of(p.cmd(1, DocCommand::Accept(h)));
        assert_eq!(state(&p, 0, &h), Some(DocState::Proposed));
        hash_of(p.cmd(0, DocCommand::Withdraw(h)));
        // Both signed: the signatures decide, and both hold it signed.
        assert_eq!(state(&p, 1, &h), Some(DocState::Signed));
        assert_eq!(state(&p, 0, &h), Some(DocState::Signed));
        let e = p.cmd(0, DocCommand::Withdraw(h)).unwrap_err();
        assert!(e.contains("already countersigned"), "{e}");
    }

    #[test]
    fn a_payment_counts_once_the_payee_confirms_it() {
        let mut p = Pair::new();
        let h = hash_of(p.cmd(1, DocCommand::Pay(Box::new(payment(&p, 12_345)))));
        let paid = |m: &Market| {
            crate::ledger::balances(m, 0)
                .iter()
                .map(|l| (l.payments_received, l.payments_made, l.closing))
                .collect::<Vec<_>>()
        };
        assert!(
            paid(&p.m[0]).is_empty(),
            "unconfirmed payments do not count"
        );
        hash_of(p.cmd(0, DocCommand::Accept(h)));
        assert_eq!(paid(&p.m[0]), vec![(12_345, 0, -12_345)]);
        assert_eq!(paid(&p.m[1]), vec![(0, 12_345, 12_345)]);
    }

    #[test]
    fn a_peer_cannot_flood_us_with_documents() {
        let mut p = Pair::new();
        for n in 0..MAX_OFFERED_PER_PEER as u64 {
            let mut x = payment(&p, 1000);
            x.nonce = n;
            hash_of(p.cmd(1, DocCommand::Pay(Box::new(x))));
        }
        let mut x = payment(&p, 1000);
        x.nonce = 999;
        let h = hash_of(p.cmd(1, DocCommand::Pay(Box::new(x))));
        assert_eq!(
            state(&p, 0, &h),
            None,
            "the ninth waiting document is refused"
        );
        // Refused as busy: the payer keeps it proposed and tries again later.
        assert_eq!(state(&p, 1, &h), Some(DocState::Proposed));
    }

    #[test]
    fn a_dispute_goes_from_open_to_answered_to_resolved_on_both_sides() {
        let mut p = Pair::new();
        let a = agreement(&p);
        let h = hash_of(p.cmd(0, DocCommand::Propose(Box::new(a.clone()))));
        hash_of(p.cmd(1, DocCommand::Accept(h)));
        p.tick();
        let id = a.trade_id_for(a.start_ms);
        let status = |p: &Pair, i: usize| p.m[i].dispute_status(&id);
        assert_eq!(status(&p, 0), None);
        let note = |stage, amount| DocCommand::Note {
            trade: id,
            stage,
            text: "the clamp was off that afternoon".into(),
            amount,
        };
        p.cmd(1, note(NoteStage::Open, None)).unwrap();
        assert_eq!(status(&p, 0), Some((DisputeStatus::Open, None)));
        assert_eq!(status(&p, 1), Some((DisputeStatus::Open, None)));
        p.cmd(0, note(NoteStage::Answer, None)).unwrap();
        assert_eq!(status(&p, 1), Some((DisputeStatus::Answered, None)));
        // Different amounts do not resolve it; the same amount does, on both sides.
        p.cmd(0, note(NoteStage::Resolve, Some(2_000))).unwrap();
        p.cmd(1, note(NoteStage::Resolve, Some(1_000))).unwrap();
        assert_eq!(status(&p, 0), Some((DisputeStatus::Answered, None)));
        p.cmd(0, note(NoteStage::Resolve, Some(1_000))).unwrap();
        assert_eq!(status(&p, 0), Some((DisputeStatus::Resolved, Some(1_000))));
        assert_eq!(status(&p, 1), Some((DisputeStatus::Resolved, Some(1_000))));
        // The ledger counts the resolved amount on both sides.
        let owed = |m: &Market| {
            crate::ledger::balances(m, 0)
                .iter()
                .map(|l| l.receivable - l.payable)
                .sum::<i64>()
        };
        assert_eq!(owed(&p.m[0]), 1_000);
        assert_eq!(owed(&p.m[1]), -1_000);
        // A resolution above the trade's value is refused.
        assert!(p.cmd(1, note(NoteStage::Resolve, Some(u64::MAX))).is_err());
    }

    #[test]
    fn documents_and_notes_survive_a_restart() {
        let mut p = Pair::new();
        let a = agreement(&p);
        let h = hash_of(p.cmd(0, DocCommand::Propose(Box::new(a.clone()))));
        hash_of(p.cmd(1, DocCommand::Accept(h)));
        p.tick();
        let id = a.trade_id_for(a.start_ms);
        p.cmd(
            1,
            DocCommand::Note {
                trade: id,
                stage: NoteStage::Open,
                text: "short".into(),
                amount: None,
            },
        )
        .unwrap();
        // Everything the buyer persisted, replayed into a fresh market.
        let mut records = Vec::new();
        for (hash, d) in p.m[1].documents() {
            records.push(Record::Document {
                hash: *hash,
                state: d.state,
                envelope: d.envelope.clone(),
            });
        }
        for n in p.m[1].notes(&id) {
            records.push(Record::Note {
                trade: id,
                envelope: n.envelope.clone(),
            });
        }
        let mut m = Market::restore(
            Arc::new(sample::buyer_key()),
            sample::chain(),
            &records,
            &[],
        );
        m.handle(p.now, true, Input::Tick);
        assert_eq!(m.trades().count(), p.m[1].trades().count());
        assert_eq!(m.dispute_status(&id), Some((DisputeStatus::Open, None)));
    }
}
