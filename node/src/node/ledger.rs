//! The node's side of standing agreements, payments and disputes: owner commands go to the
//! market, and the ledger, documents and disputes are read from it for the API and the CLI.

use super::{CmdReply, Core, Reply, Request};
use crate::ledger::{self, Line, Reputation};
use crate::market::docs::Doc;
use crate::market::{DisputeStatus, DocCommand, DocState, SettleState};
use serde::{Deserialize, Serialize};
use wattmesh_protocol::ledger::{Agreement, NoteStage, Payment};
use wattmesh_protocol::offer::Side;
use wattmesh_protocol::{Hash32, NodeId, TradeId};

/// A standing agreement as the owner asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreementArgs {
    /// The neighbour (hex node id).
    pub counterparty: String,
    /// `sell` (we sell to them) or `buy`.
    pub side: super::SideArg,
    /// Energy per covered slot, Wh.
    pub per_slot_wh: u64,
    /// Price per kWh, thousandths of a minor unit.
    pub price: u64,
    /// First slot, UTC ms (rounded up to a slot start).
    pub start_ms: u64,
    /// End of the period, UTC ms, exclusive.
    pub end_ms: u64,
    /// Days of the week, bit 0 Monday .. bit 6 Sunday.
    pub weekdays: u8,
    /// First local minute of the day covered.
    pub from_min: u16,
    /// End of the covered local time of day, minutes.
    pub to_min: u16,
}

/// A payment as the owner declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentArgs {
    /// Who was paid (hex node id).
    pub payee: String,
    /// How much, milli-minor units.
    pub amount: u64,
    /// The dealings it pays for end here, UTC ms (0: now).
    #[serde(default)]
    pub through_ms: u64,
    /// How it was paid.
    #[serde(default)]
    pub reference: String,
}

/// A dispute note as the owner writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteArgs {
    /// The trade's taker (hex).
    pub taker: String,
    /// The trade's nonce.
    pub nonce: u64,
    /// `open`, `answer` or `resolve`.
    pub stage: StageArg,
    /// What to say.
    #[serde(default)]
    pub text: String,
    /// For `resolve`: what the buyer owes the seller for the trade, milli-minor units.
    #[serde(default)]
    pub amount: Option<u64>,
}

/// A dispute step, as the API and CLI spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageArg {
    /// Open a dispute.
    Open,
    /// Answer.
    Answer,
    /// Propose or accept a resolution.
    Resolve,
}

/// An owner's decision on a document offered to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Countersign.
    Accept,
    /// Decline.
    Decline,
    /// Withdraw a document we sent that the other party has not countersigned.
    Withdraw,
}

/// A two-party document as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DocView {
    /// Its id (hex document hash).
    pub id: String,
    /// `agreement` or `payment`.
    pub kind: &'static str,
    /// Where it stands.
    pub state: DocState,
    /// Whether we signed first.
    pub outgoing: bool,
    /// The other party (hex).
    pub counterparty: String,
    /// Agreements: our side, `sell` or `buy`.
    pub side: Option<&'static str>,
    /// Agreements: Wh per slot.
    pub per_slot_wh: Option<u64>,
    /// Agreements: price per kWh.
    pub price: Option<u64>,
    /// Agreements: period start, UTC ms.
    pub start_ms: Option<u64>,
    /// Agreements: period end, UTC ms.
    pub end_ms: Option<u64>,
    /// Agreements: weekdays mask (bit 0 Monday).
    pub weekdays: Option<u8>,
    /// Agreements: covered local minutes of the day.
    pub from_min: Option<u16>,
    /// Agreements: end of the covered local minutes.
    pub to_min: Option<u16>,
    /// Agreements: the time zone offset the hours are in, minutes.
    pub utc_offset_min: Option<i16>,
    /// Payments: amount, milli-minor units (positive: paid to us).
    pub amount: Option<i64>,
    /// Payments: the end of the dealings it pays for.
    pub through_ms: Option<u64>,
    /// Payments: how it was paid.
    pub reference: Option<String>,
    /// When the first party signed.
    pub created_ms: u64,
}

/// A note in a dispute, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NoteView {
    /// Whether we wrote it.
    pub ours: bool,
    /// `open`, `answer` or `resolve`.
    pub stage: StageArg,
    /// The text.
    pub text: String,
    /// For resolutions: what the buyer owes.
    pub amount: Option<u64>,
    /// When it was written.
    pub created_ms: u64,
}

/// A trade with a dispute (or a one-sided settlement), as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DisputeView {
    /// The trade's taker (hex).
    pub taker: String,
    /// The trade's nonce.
    pub nonce: u64,
    /// The other party (hex).
    pub counterparty: String,
    /// Our side.
    pub side: &'static str,
    /// The trade's slot.
    pub slot_ms: u64,
    /// Energy agreed, Wh.
    pub energy_wh: u64,
    /// Price per kWh.
    pub price: u64,
    /// Where the dispute stands.
    pub status: DisputeStatus,
    /// The amount both resolutions name, once resolved.
    pub resolved_amount: Option<u64>,
    /// Our settlement's state, if any.
    pub settlement: Option<SettleState>,
    /// Why we recorded it, if we did.
    pub reason: Option<String>,
    /// The notes, oldest first.
    pub notes: Vec<NoteView>,
}

/// Everything the ledger pages show.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerView {
    /// Monthly statements per neighbour, oldest month first.
    pub statements: Vec<Line>,
    /// Balances over all time per neighbour.
    pub balances: Vec<Line>,
    /// Each neighbour's delivery record as a seller to us.
    pub reputation: Vec<Reputation>,
    /// Standing agreements and payments.
    pub documents: Vec<DocView>,
    /// Disputes.
    pub disputes: Vec<DisputeView>,
}

fn stage(s: NoteStage) -> StageArg {
    match s {
        NoteStage::Open => StageArg::Open,
        NoteStage::Answer => StageArg::Answer,
        NoteStage::Resolve => StageArg::Resolve,
    }
}

fn parse_node(s: &str) -> Result<NodeId, String> {
    NodeId::from_hex(s.trim()).map_err(|_| format!("not a node id: {s:?} (64 hex digits)"))
}

/// Parses a document id (64 hex digits).
pub fn parse_doc_id(s: &str) -> Result<Hash32, String> {
    let b = hex::decode(s.trim()).map_err(|_| format!("not a document id: {s:?}"))?;
    <[u8; 32]>::try_from(b.as_slice())
        .map(Hash32)
        .map_err(|_| format!("not a document id: {s:?} (64 hex digits)"))
}

impl AgreementArgs {
    fn into_agreement(self, utc_offset_min: i64, slot_ms: u64) -> Result<Agreement, String> {
        let counterparty = parse_node(&self.counterparty)?;
        let start_ms = self.start_ms.div_ceil(slot_ms.max(1)) * slot_ms.max(1);
        Ok(Agreement {
            proposer: counterparty, // filled in by the market
            nonce: super::random_u64(),
            counterparty,
            proposer_side: match self.side {
                super::SideArg::Sell => Side::Sell,
                super::SideArg::Buy => Side::Buy,
            },
            per_slot_wh: self.per_slot_wh,
            price: self.price,
            start_ms,
            end_ms: self.end_ms,
            weekdays: self.weekdays,
            from_min: self.from_min,
            to_min: self.to_min,
            utc_offset_min: i16::try_from(utc_offset_min).map_err(|_| "bad time zone offset")?,
            created_ms: 0,
            ext: Vec::new(),
        })
    }
}

impl Core {
    /// Hands a document or note command to the market; the reply carries the document id.
    pub(super) async fn doc_request(
        &mut self,
        command: Result<DocCommand, String>,
        reply: Reply<Result<String, String>>,
    ) {
        match command {
            Err(e) => {
                let _ = reply.send(Err(e));
            }
            Ok(command) => {
                let cmd = self.cmd(CmdReply::Doc(reply));
                self.feed(crate::market::Input::Doc { cmd, command }).await;
            }
        }
    }

    /// Builds the market command for an owner's request.
    pub(super) fn doc_command(&self, req: &DocRequest) -> Result<DocCommand, String> {
        let now = self.clock.now_ms();
        Ok(match req {
            DocRequest::Agreement(a) => {
                let slot_ms = self.n.chain.at(now).charter.slot_ms();
                DocCommand::Propose(Box::new(
                    a.clone()
                        .into_agreement(self.trader.utc_offset_minutes, slot_ms)?,
                ))
            }
            DocRequest::Pay(p) => DocCommand::Pay(Box::new(Payment {
                payer: self.key.node_id(),
                payee: parse_node(&p.payee)?,
                nonce: super::random_u64(),
                amount: p.amount,
                through_ms: if p.through_ms == 0 { now } else { p.through_ms },
                reference: p.reference.clone(),
                created_ms: now,
                ext: Vec::new(),
            })),
            DocRequest::Decide(id, Decision::Accept) => DocCommand::Accept(parse_doc_id(id)?),
            DocRequest::Decide(id, Decision::Decline) => DocCommand::Decline(parse_doc_id(id)?),
            DocRequest::Decide(id, Decision::Withdraw) => DocCommand::Withdraw(parse_doc_id(id)?),
            DocRequest::Note(n) => DocCommand::Note {
                trade: TradeId {
                    taker: parse_node(&n.taker)?,
                    nonce: n.nonce,
                },
                stage: match n.stage {
                    StageArg::Open => NoteStage::Open,
                    StageArg::Answer => NoteStage::Answer,
                    StageArg::Resolve => NoteStage::Resolve,
                },
                text: n.text.clone(),
                amount: n.amount,
            },
        })
    }

    /// The ledger, documents and disputes, as the API shows them.
    pub(super) fn ledger_view(&self) -> LedgerView {
        let m = &self.market;
        let me = m.me();
        let offset = self.trader.utc_offset_minutes;
        let documents = m
            .documents()
            .map(|(h, d)| {
                let (first, second) = match &d.doc {
                    Doc::Agreement(a) => (a.proposer, a.counterparty),
                    Doc::Payment(p) => (p.payer, p.payee),
                };
                let other = if first == me { second } else { first };
                let mut v = DocView {
                    id: hex::encode(h.0),
                    kind: "agreement",
                    state: d.state,
                    outgoing: first == me,
                    counterparty: other.to_hex(),
                    side: None,
                    per_slot_wh: None,
                    price: None,
                    start_ms: None,
                    end_ms: None,
                    weekdays: None,
                    from_min: None,
                    to_min: None,
                    utc_offset_min: None,
                    amount: None,
                    through_ms: None,
                    reference: None,
                    created_ms: 0,
                };
                match &d.doc {
                    Doc::Agreement(a) => {
                        v.side = Some(if a.seller() == me { "sell" } else { "buy" });
                        v.per_slot_wh = Some(a.per_slot_wh);
                        v.price = Some(a.price);
                        v.start_ms = Some(a.start_ms);
                        v.end_ms = Some(a.end_ms);
                        v.weekdays = Some(a.weekdays);
                        v.from_min = Some(a.from_min);
                        v.to_min = Some(a.to_min);
                        v.utc_offset_min = Some(a.utc_offset_min);
                        v.created_ms = a.created_ms;
                    }
                    Doc::Payment(p) => {
                        v.kind = "payment";
                        let amt = i64::try_from(p.amount).unwrap_or(i64::MAX);
                        v.amount = Some(if p.payee == me { amt } else { -amt });
                        v.through_ms = Some(p.through_ms);
                        v.reference = Some(p.reference.clone());
                        v.created_ms = p.created_ms;
                    }
                }
                v
            })
            .collect();
        let settlements: std::collections::HashMap<_, _> = m.settlements().collect();
        let disputes = m
            .trades()
            .filter_map(|t| {
                let id = t.trade.id();
                let (status, resolved_amount) = m.dispute_status(&id)?;
                let s = settlements.get(&id);
                let selling = t.trade.seller() == me;
                Some(DisputeView {
                    taker: t.trade.taker.to_hex(),
                    nonce: t.trade.nonce,
                    counterparty: if selling {
                        t.trade.buyer().to_hex()
                    } else {
                        t.trade.seller().to_hex()
                    },
                    side: if selling { "sell" } else { "buy" },
                    slot_ms: t.trade.slot_ms,
                    energy_wh: t.trade.energy_wh,
                    price: t.trade.price,
                    status,
                    resolved_amount,
                    settlement: s.map(|s| s.state),
                    reason: s.and_then(|s| s.dispute.clone()),
                    notes: m
                        .notes(&id)
                        .iter()
                        .map(|n| NoteView {
                            ours: n.note.author == me,
                            stage: stage(n.note.stage),
                            text: n.note.text.clone(),
                            amount: n.note.amount,
                            created_ms: n.note.created_ms,
                        })
                        .collect(),
                })
            })
            .collect();
        LedgerView {
            statements: ledger::statements(m, offset),
            balances: ledger::balances(m, offset),
            reputation: ledger::reputation(m),
            documents,
            disputes,
        }
    }

    /// The signed export of our agreed trades in slots `from_ms..to_ms`.
    pub(super) fn signed_export(
        &self,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<crate::signed_export::ExportFile, String> {
        use wattmesh_protocol::envelope::Envelope;
        use wattmesh_protocol::export::{ExportItem, ExportSeal, digest};
        let m = &self.market;
        let settled: std::collections::HashMap<_, _> = m
            .settlements()
            .filter(|(_, s)| s.state == SettleState::Settled)
            .filter_map(|(id, s)| Some((*id, s.envelope.clone()?)))
            .collect();
        let mut trades: Vec<_> = m
            .trades()
            .filter(|t| t.state == crate::market::TradeState::Agreed)
            .filter(|t| t.trade.slot_ms >= from_ms && t.trade.slot_ms < to_ms)
            .collect();
        trades.sort_by_key(|t| (t.trade.slot_ms, t.trade.id()));
        let items: Vec<ExportItem> = trades
            .iter()
            .map(|t| ExportItem {
                slot_ms: t.trade.slot_ms,
                evidence: t.envelope.clone(),
                settlement: settled.get(&t.trade.id()).cloned(),
            })
            .collect();
        let now = self.clock.now_ms();
        let seal = ExportSeal {
            exporter: self.key.node_id(),
            neighbourhood: self.n.chain.neighbourhood(),
            from_ms,
            to_ms,
            items: u32::try_from(items.len()).map_err(|_| "too many trades for one export")?,
            digest: digest(&items),
            created_ms: now,
            ext: Vec::new(),
        };
        let env = Envelope::seal(&seal, self.n.chain.at(now).hash, &self.key);
        crate::signed_export::build(&env.to_bytes(), &items)
    }

    /// Handles the ledger requests.
    pub(super) async fn ledger_request(&mut self, req: Request) {
        match req {
            Request::Ledger(reply) => {
                let _ = reply.send(self.ledger_view());
            }
            Request::Export(from, to, reply) => {
                let _ = reply.send(self.signed_export(from, to));
            }
            Request::Doc(r, reply) => {
                let c = self.doc_command(&r);
                self.doc_request(c, reply).await;
            }
            _ => {}
        }
    }
}

/// An owner's request about documents and disputes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocRequest {
    /// Propose a standing agreement.
    Agreement(AgreementArgs),
    /// Declare a payment.
    Pay(PaymentArgs),
    /// Accept or decline a document offered to us (its id).
    Decide(String, Decision),
    /// Write a dispute note.
    Note(NoteArgs),
}
