//! The market: a sans-IO state machine. It is fed [`Input`]s (validated gossip, handshake and
//! settlement messages, responses to its own requests, owner commands, the time) and answers
//! with [`Output`]s (records to persist, messages to publish or send, replies). It does no IO
//! and reads no clock: the node's driver and the deterministic simulation harness
//! ([`harness`]) run this same code with the real encoding and signatures.
//!
//! Rules the driver must keep: outputs are executed in order, and a [`Output::Persist`] is
//! durable before any output after it is executed (so a trade is stored before it is
//! acknowledged). After a crash, [`Market::restore`] rebuilds the state from the persisted
//! records alone.

pub mod clearing;
pub mod docs;
#[cfg(test)]
mod handshake_tests;
pub mod harness;
#[cfg(test)]
pub(crate) mod testkit;
pub mod trader;

pub use docs::{DisputeStatus, DocCommand, DocState};

use crate::book::Book;
use crate::net::behaviour::TopicKind;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use wattmesh_protocol::attestation::{MeterAttestation, chain_hash};
use wattmesh_protocol::charter::CharterChain;
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::merkle::{self, ProofStep};
use wattmesh_protocol::offer::{Offer, OfferId, Side};
use wattmesh_protocol::settle::{self, Outcome};
use wattmesh_protocol::trade::{
    DisputeReason, RejectReason, Trade, TradeId, TradeProposal, TradeRequest, TradeResponse,
    terms_acceptable,
};
use wattmesh_protocol::validate::{self, Msg};
use wattmesh_protocol::{Hash32, NodeId, NodeKey, Settlement, slot};

/// Where a trade stands, on our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TradeState {
    /// We are the maker and signed; the taker's countersignature has not arrived.
    MakerSigned,
    /// Both signed.
    Agreed,
}

/// Where a trade's settlement stands, on our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettleState {
    /// We (the seller) signed and sent it; no answer yet.
    Proposed,
    /// Both signed.
    Settled,
    /// The buyer disputed it, or it was never settled by the deadline. Kept, never hidden.
    Disputed,
    /// The seller's settlement went unanswered past the deadline: only the seller signed.
    Unilateral,
}

/// A record the driver must persist before executing the outputs after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// An offer version (ours, or one we hold).
    Offer {
        /// Its id.
        id: OfferId,
        /// Its envelope bytes.
        envelope: Vec<u8>,
    },
    /// A trade we are party to.
    Trade {
        /// Its id.
        id: TradeId,
        /// Its state.
        state: TradeState,
        /// Its envelope bytes (one or two signatures).
        envelope: Vec<u8>,
    },
    /// A settlement we are party to.
    Settlement {
        /// The trade.
        id: TradeId,
        /// Its state.
        state: SettleState,
        /// The settlement envelope (seller's signature, or both), if there is one.
        envelope: Option<Vec<u8>>,
        /// Why it is disputed, if it is.
        dispute: Option<String>,
    },
    /// A two-party document (standing agreement or payment).
    Document {
        /// Its [`wattmesh_protocol::ledger::document_hash`].
        hash: Hash32,
        /// Where it stands.
        state: DocState,
        /// Its envelope (one or two signatures).
        envelope: Vec<u8>,
    },
    /// A dispute note about a trade (ours or the other party's).
    Note {
        /// The trade.
        trade: TradeId,
        /// The note's envelope.
        envelope: Vec<u8>,
    },
}

/// A token the driver gives with an inbound request, to route the reply.
pub type ReplyId = u64;
/// An owner command's id, to route its result.
pub type CmdId = u64;

/// What the market is told.
#[derive(Debug, Clone)]
pub enum Input {
    /// Time passed (the driver calls this regularly; `now` is in every call anyway).
    Tick,
    /// A validated offer version (gossip or sync).
    Offer(Offer, Vec<u8>),
    /// A validated attestation (ours or a peer's).
    Attestation(MeterAttestation, Vec<u8>),
    /// A handshake or settlement request from a peer.
    Request {
        /// Who sent it.
        from: NodeId,
        /// What.
        req: TradeRequest,
        /// Where the reply goes.
        reply: ReplyId,
    },
    /// The answer to a request we sent (`None`: it failed or timed out).
    Response {
        /// The token we sent it with.
        token: u64,
        /// The answer.
        resp: Option<TradeResponse>,
    },
    /// The owner (or the automatic trader) posts an offer.
    Post {
        /// The command's id.
        cmd: CmdId,
        /// Sell or buy.
        side: Side,
        /// Energy, Wh.
        quantity_wh: u64,
        /// Limit price.
        price: u64,
        /// The slot.
        slot_ms: u64,
        /// Smallest fill.
        min_fill_wh: u64,
        /// The offer's nonce (random, chosen by the driver: the core has no randomness).
        nonce: u64,
    },
    /// The owner cancels one of its offers.
    Cancel {
        /// The command's id.
        cmd: CmdId,
        /// The offer's nonce.
        nonce: u64,
    },
    /// The automatic trader's turn: it looks at the book and the forecast (expected net
    /// export per slot, Wh) and acts within the owner's limits.
    Trade {
        /// The owner's limits.
        limits: trader::Limits,
        /// The neighbourhood's UTC offset now, minutes (for the owner's hours).
        utc_offset_min: i64,
        /// Expected net export per upcoming slot.
        forecast: Vec<(u64, i64)>,
    },
    /// Move one of our offers to a new price.
    Reprice {
        /// The command's id.
        cmd: CmdId,
        /// The offer's nonce.
        nonce: u64,
        /// The new price.
        price: u64,
    },
    /// A record recovered from a peer by sync (a trade or settlement we had lost).
    Restore(Record),
    /// An owner command about standing agreements, payments or disputes.
    Doc {
        /// The command's id.
        cmd: CmdId,
        /// What.
        command: DocCommand,
    },
    /// The owner takes (part of) an offer.
    Take {
        /// The command's id.
        cmd: CmdId,
        /// The offer.
        offer: OfferId,
        /// How much.
        energy_wh: u64,
        /// The proposal's nonce (random, chosen by the driver).
        nonce: u64,
    },
}

/// What a command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdResult {
    /// An offer was posted.
    Posted(Offer),
    /// A trade was agreed.
    Traded(Trade),
    /// An offer was cancelled.
    Cancelled,
    /// A document was proposed, accepted or declined (its hash).
    Document(Hash32),
    /// A dispute note was written.
    Noted,
}

/// What the market asks the driver to do.
#[derive(Debug, Clone)]
pub enum Output {
    /// Persist durably before executing anything after it.
    Persist(Record),
    /// Gossip envelope bytes.
    Publish(TopicKind, Vec<u8>),
    /// Send a request; its answer comes back as [`Input::Response`] with `token`.
    Send {
        /// The recipient.
        to: NodeId,
        /// The token.
        token: u64,
        /// The request.
        req: TradeRequest,
    },
    /// Answer an inbound request.
    Reply {
        /// Which request.
        reply: ReplyId,
        /// The answer.
        resp: TradeResponse,
    },
    /// The automatic trader did something; here is what and why.
    Traded(trader::Action),
    /// A command finished.
    Done {
        /// Which command.
        cmd: CmdId,
        /// How.
        result: Result<CmdResult, String>,
    },
}

/// A trade we are party to.
#[derive(Debug, Clone)]
pub struct TradeRec {
    /// The trade.
    pub trade: Trade,
    /// Our state.
    pub state: TradeState,
    /// The envelope as stored.
    pub envelope: Vec<u8>,
}

/// A settlement we are party to.
#[derive(Debug, Clone)]
pub struct SettleRec {
    /// Its state.
    pub state: SettleState,
    /// The settlement, if one was signed.
    pub settlement: Option<Settlement>,
    /// Its envelope.
    pub envelope: Option<Vec<u8>>,
    /// Why disputed.
    pub dispute: Option<String>,
}

#[derive(Debug, Clone)]
enum Pending {
    /// We proposed; waiting for the maker's signed trade.
    Propose {
        cmd: CmdId,
        to: NodeId,
        proposal: TradeProposal,
        envelope: Envelope,
        side: Side,
        attempts: u32,
    },
    /// We countersigned and stored; telling the maker.
    Confirm {
        to: NodeId,
        envelope: Envelope,
        attempts: u32,
    },
    /// We (the seller) proposed a settlement.
    Settle { id: TradeId },
    /// We (the maker) ask the taker whether it holds a trade it never confirmed.
    Status { id: TradeId },
    /// A document or note request (see [`docs`]).
    Doc(docs::DocSend),
}

/// How long after the settlement deadline a seller keeps asking a silent buyer, in grace
/// periods, before its unilateral record is final.
pub const RECONCILE_GRACES: u64 = 10;

/// How many times a request is retried (with the same content, so retries are idempotent).
pub const MAX_ATTEMPTS: u32 = 3;

/// The market state of one node.
pub struct Market {
    me: NodeId,
    key: Arc<NodeKey>,
    chain: CharterChain,
    /// The order book (everyone's offers, ours included).
    pub book: Book,
    /// Our own offers' first-version quantities: the most we may ever sell or buy on each.
    offered: HashMap<OfferId, u64>,
    trades: BTreeMap<TradeId, TradeRec>,
    settlements: BTreeMap<TradeId, SettleRec>,
    attestations: HashMap<(NodeId, u64), (MeterAttestation, Vec<u8>)>,
    docs: BTreeMap<Hash32, docs::DocRec>,
    notes: BTreeMap<TradeId, Vec<docs::NoteRec>>,
    pending: HashMap<u64, Pending>,
    /// Counts derived nonces.
    nonce_counter: u64,
    /// What the automatic trader worked with per slot and side: its limit and the most it
    /// wanted (the forecast moves while a slot's window is open). Kept for two days.
    trader_orders: BTreeMap<(u64, Side), trader::Order>,
    /// The last reason the trader logged for doing nothing in a slot ([`trader::Hold::key`]).
    trader_holds: BTreeMap<u64, (u8, u8)>,
    /// Maker-signed trades whose taker said it holds nothing: not asked again.
    settled_status: std::collections::HashSet<TradeId>,
    next_token: u64,
    /// Test hook: skip the remaining-quantity check (a deliberately broken build for the
    /// harness's self-test). Never set outside tests.
    pub break_reservation: bool,
}

impl std::fmt::Debug for Market {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Market({}, {} trades)",
            self.me.short(),
            self.trades.len()
        )
    }
}

fn decode_trade(bytes: &[u8]) -> Option<Trade> {
    Envelope::from_bytes(bytes).ok()?.payload_as().ok()
}

impl Market {
    /// A market with nothing in it.
    pub fn new(key: Arc<NodeKey>, chain: CharterChain) -> Market {
        Market {
            me: key.node_id(),
            key,
            chain,
            book: Book::new(),
            offered: HashMap::new(),
            trades: BTreeMap::new(),
            settlements: BTreeMap::new(),
            attestations: HashMap::new(),
            docs: BTreeMap::new(),
            notes: BTreeMap::new(),
            pending: HashMap::new(),
            settled_status: std::collections::HashSet::new(),
            nonce_counter: 0,
            trader_orders: BTreeMap::new(),
            trader_holds: BTreeMap::new(),
            next_token: 1,
            break_reservation: false,
        }
    }

    /// Adopts a longer charter chain (a new version was signed); each version still takes
    /// effect at its own time.
    pub fn set_chain(&mut self, chain: CharterChain) {
        self.chain = chain;
    }

    /// Rebuilds the state from persisted records (after a restart or a crash).
    pub fn restore(
        key: Arc<NodeKey>,
        chain: CharterChain,
        records: &[Record],
        attestations: &[Vec<u8>],
    ) -> Market {
        let mut m = Market::new(key, chain);
        for r in records {
            m.apply_record(r);
        }
        for a in attestations {
            if let Ok(env) = Envelope::from_bytes(a) {
                if let Ok(att) = env.payload_as::<MeterAttestation>() {
                    m.attestations
                        .insert((att.node, att.slot_ms), (att, a.clone()));
                }
            }
        }
        m
    }

    /// Takes a persisted record into the state (restore, or recovery by sync). A trade record
    /// only replaces a maker-signed one; a settlement record only replaces a proposed or
    /// unilateral one. Returns whether anything changed.
    fn apply_record(&mut self, r: &Record) -> bool {
        match r {
            Record::Offer { envelope, .. } => {
                match validate::validate_archival(envelope, &self.chain, false).map(|a| a.msg) {
                    Ok(Msg::Offer(o)) => self.note_offer(o, envelope.clone()),
                    _ => false,
                }
            }
            Record::Trade {
                id,
                state,
                envelope,
            } => {
                let Some(trade) = decode_trade(envelope) else {
                    return false;
                };
                let replace = self
                    .trades
                    .get(id)
                    .is_none_or(|t| t.state == TradeState::MakerSigned);
                if replace {
                    self.trades.insert(
                        *id,
                        TradeRec {
                            trade,
                            state: *state,
                            envelope: envelope.clone(),
                        },
                    );
                }
                replace
            }
            Record::Settlement {
                id,
                state,
                envelope,
                dispute,
            } => {
                let replace = self.settlements.get(id).is_none_or(|s| {
                    matches!(s.state, SettleState::Proposed | SettleState::Unilateral)
                        || *state == s.state
                });
                if replace {
                    let settlement = envelope
                        .as_ref()
                        .and_then(|b| Envelope::from_bytes(b).ok()?.payload_as().ok());
                    self.settlements.insert(
                        *id,
                        SettleRec {
                            state: *state,
                            settlement,
                            envelope: envelope.clone(),
                            dispute: dispute.clone(),
                        },
                    );
                }
                replace
            }
            Record::Document {
                hash,
                state,
                envelope,
            } => self.apply_document(*hash, *state, envelope),
            Record::Note { envelope, .. } => self.apply_note(envelope),
        }
    }

    /// Our node id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// What the automatic trader worked with, per slot and side, for the last two days: its
    /// limit price and the most energy it wanted.
    pub fn trader_orders(&self) -> impl Iterator<Item = &trader::Order> {
        self.trader_orders.values()
    }

    /// The trades we are party to.
    pub fn trades(&self) -> impl Iterator<Item = &TradeRec> {
        self.trades.values()
    }

    /// Our settlements.
    pub fn settlements(&self) -> impl Iterator<Item = (&TradeId, &SettleRec)> {
        self.settlements.iter()
    }

    /// Net balance with each counterparty from settled trades, milli-minor units (positive:
    /// they owe us).
    pub fn balances(&self) -> BTreeMap<NodeId, i128> {
        let mut out = BTreeMap::new();
        for rec in self.settlements.values() {
            if rec.state != SettleState::Settled {
                continue;
            }
            let Some(s) = &rec.settlement else { continue };
            if s.seller == self.me {
                *out.entry(s.buyer).or_default() += s.amount as i128;
            } else if s.buyer == self.me {
                *out.entry(s.seller).or_default() -= s.amount as i128;
            }
        }
        out
    }

    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    fn note_offer(&mut self, o: Offer, envelope: Vec<u8>) -> bool {
        if o.maker == self.me {
            self.offered.entry(o.id()).or_insert(o.quantity_wh);
        }
        self.book.insert(o, envelope)
    }

    /// Handles one input at `now`. `may_sign` is false while the clock is unsynchronised.
    pub fn handle(&mut self, now: u64, may_sign: bool, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Tick => self.tick(now, may_sign, &mut out),
            Input::Offer(o, bytes) => {
                if self.note_offer(o.clone(), bytes.clone()) && o.maker == self.me {
                    out.push(Output::Persist(Record::Offer {
                        id: o.id(),
                        envelope: bytes,
                    }));
                }
            }
            Input::Attestation(a, bytes) => {
                self.attestations.insert((a.node, a.slot_ms), (a, bytes));
            }
            Input::Request { from, req, reply } => {
                let resp = match req {
                    TradeRequest::Propose(env) => {
                        self.on_propose(now, may_sign, from, env, &mut out)
                    }
                    TradeRequest::Countersigned(env) => self.on_countersigned(from, env, &mut out),
                    TradeRequest::Status(id) => TradeResponse::Status(
                        self.trades
                            .get(&id)
                            .and_then(|t| Envelope::from_bytes(&t.envelope).ok()),
                    ),
                    TradeRequest::Settle {
                        settlement,
                        attestation,
                        proof,
                    } => self.on_settle(from, settlement, attestation, proof, may_sign, &mut out),
                    TradeRequest::Cosign(env) => self.on_cosign(now, from, env, &mut out),
                    TradeRequest::Cosigned(env) => self.on_cosigned(now, from, env, &mut out),
                    TradeRequest::Decline(hash) => self.on_decline(from, hash, &mut out),
                    TradeRequest::Note(env) => self.on_note(from, env, &mut out),
                    // Private attestations (privacy mode) are the node's to check and store
                    // (`node/attest.rs`); the driver never hands them to the market.
                    TradeRequest::Attestation { .. } => {
                        TradeResponse::Reject(wattmesh_protocol::trade::RejectReason::Invalid)
                    }
                };
                out.push(Output::Reply { reply, resp });
            }
            Input::Response { token, resp } => self.on_response(now, token, resp, &mut out),
            Input::Post {
                cmd,
                side,
                quantity_wh,
                price,
                slot_ms,
                min_fill_wh,
                nonce,
            } => {
                let r = self.post(
                    now,
                    may_sign,
                    side,
                    quantity_wh,
                    price,
                    slot_ms,
                    min_fill_wh,
                    nonce,
                    &mut out,
                );
                out.push(Output::Done {
                    cmd,
                    result: r.map(CmdResult::Posted),
                });
            }
            Input::Cancel { cmd, nonce } => {
                let r = self.cancel(now, may_sign, nonce, &mut out);
                out.push(Output::Done {
                    cmd,
                    result: r.map(|()| CmdResult::Cancelled),
                });
            }
            Input::Trade {
                limits,
                utc_offset_min,
                forecast,
            } => {
                self.run_trader(now, may_sign, &limits, utc_offset_min, &forecast, &mut out);
            }
            Input::Reprice { cmd, nonce, price } => {
                let r = self.resize(now, may_sign, nonce, None, price, &mut out);
                out.push(Output::Done {
                    cmd,
                    result: r.map(|()| CmdResult::Cancelled),
                });
            }
            Input::Doc { cmd, command } => {
                self.doc_command(now, may_sign, cmd, command, &mut out);
            }
            Input::Restore(r) => {
                if self.apply_record(&r) {
                    out.push(Output::Persist(r));
                }
            }
            Input::Take {
                cmd,
                offer,
                energy_wh,
                nonce,
            } => {
                if let Err(e) = self.take(now, may_sign, cmd, offer, energy_wh, nonce, &mut out) {
                    out.push(Output::Done {
                        cmd,
                        result: Err(e),
                    });
                }
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn post(
        &mut self,
        now: u64,
        may_sign: bool,
        side: Side,
        quantity_wh: u64,
        price: u64,
        slot_ms: u64,
        min_fill_wh: u64,
        nonce: u64,
        out: &mut Vec<Output>,
    ) -> Result<Offer, String> {
        if !may_sign {
            return Err("the clock is not synchronised; refusing to sign".into());
        }
        let charter = self.chain.at(now);
        let c = &charter.charter;
        let open = self
            .book
            .sorted_from(slot_ms)
            .into_iter()
            .filter(|e| e.offer.maker == self.me && e.offer.slot_ms == slot_ms)
            .count();
        if open >= c.max_open_offers_per_slot as usize {
            return Err(format!(
                "already {open} open offers for this slot, the neighbourhood's limit"
            ));
        }
        let offer = Offer {
            maker: self.me,
            nonce,
            version: 1,
            side,
            slot_ms,
            quantity_wh,
            min_fill_wh: min_fill_wh.clamp(1, quantity_wh.max(1)),
            price,
            created_ms: now,
            expires_ms: slot::gate_closure(c, slot_ms),
            attributes: 0,
            ext: Vec::new(),
        };
        validate::check_offer(c, &offer, &self.me).map_err(|e| e.to_string())?;
        validate::check_offer_fresh(c, &offer, now).map_err(|e| e.to_string())?;
        let bytes = Envelope::seal(&offer, charter.hash, &self.key).to_bytes();
        self.note_offer(offer.clone(), bytes.clone());
        out.push(Output::Persist(Record::Offer {
            id: offer.id(),
            envelope: bytes.clone(),
        }));
        out.push(Output::Publish(TopicKind::Offers, bytes));
        Ok(offer)
    }

    /// Energy in our proposals still in flight, for a slot and our side.
    pub fn pending_energy(&self, slot_ms: u64, side: Side) -> u64 {
        self.pending
            .values()
            .filter_map(|p| match p {
                Pending::Propose {
                    proposal,
                    side: offer_side,
                    ..
                } if proposal.slot_ms == slot_ms && offer_side.opposite() == side => {
                    Some(proposal.energy_wh)
                }
                _ => None,
            })
            .sum()
    }

    /// A nonce for our next offer or proposal, unique without randomness: a hash of who we are,
    /// the time and a counter (the core must stay deterministic for the harness).
    fn derive_nonce(&mut self, now: u64) -> u64 {
        self.nonce_counter += 1;
        let h = Hash32::tagged(
            "wattmesh/trader-nonce/v1",
            &[
                &self.me.0,
                &now.to_be_bytes(),
                &self.nonce_counter.to_be_bytes(),
            ],
        );
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.0[..8]);
        u64::from_be_bytes(b)
    }

    fn run_trader(
        &mut self,
        now: u64,
        may_sign: bool,
        limits: &trader::Limits,
        utc_offset_min: i64,
        forecast: &[(u64, i64)],
        out: &mut Vec<Output>,
    ) {
        if !may_sign {
            return;
        }
        let c = self.chain.at(now).charter.clone();
        let agreed: Vec<Trade> = self
            .trades
            .values()
            .filter(|t| t.state == TradeState::Agreed || t.trade.maker() == self.me)
            .map(|t| t.trade.clone())
            .collect();
        let fc = |s: u64| {
            forecast
                .iter()
                .find(|(x, _)| *x == s)
                .map(|(_, v)| *v)
                .unwrap_or(0)
        };
        for o in trader::orders(now, &c, limits, utc_offset_min, &fc) {
            let e = self.trader_orders.entry((o.slot_ms, o.side)).or_insert(o);
            e.limit_price = o.limit_price;
            e.quantity_wh = e.quantity_wh.max(o.quantity_wh);
        }
        let keep_from = now.saturating_sub(2 * 86_400_000);
        self.trader_orders.retain(|(s, _), _| *s >= keep_from);
        self.trader_holds.retain(|s, _| *s >= keep_from);
        let pend = |s: u64, side: Side| self.pending_energy(s, side);
        let actions = trader::decide(
            now,
            &c,
            limits,
            utc_offset_min,
            self.me,
            &self.book,
            &agreed,
            &fc,
            &pend,
        );
        for a in actions {
            let ok = match &a {
                trader::Action::Post {
                    side,
                    slot_ms,
                    quantity_wh,
                    price,
                    ..
                } => {
                    let nonce = self.derive_nonce(now);
                    self.post(
                        now,
                        may_sign,
                        *side,
                        *quantity_wh,
                        *price,
                        *slot_ms,
                        1,
                        nonce,
                        out,
                    )
                    .is_ok()
                }
                trader::Action::Resize {
                    nonce,
                    quantity_wh,
                    price,
                    ..
                } => self
                    .resize(now, may_sign, *nonce, Some(*quantity_wh), *price, out)
                    .is_ok(),
                trader::Action::Take {
                    offer, energy_wh, ..
                } => {
                    let nonce = self.derive_nonce(now);
                    // The trader's takes report through its log, not a command (id 0).
                    self.take(now, may_sign, 0, *offer, *energy_wh, nonce, out)
                        .is_ok()
                }
                // Doing nothing is logged once per slot and reason, not at every turn.
                trader::Action::Hold { slot_ms, why } => {
                    self.trader_holds.insert(*slot_ms, why.key()) != Some(why.key())
                }
            };
            if ok {
                out.push(Output::Traded(a));
            }
        }
    }

    /// Publishes a new version of one of our offers with a new price and, optionally, a new
    /// quantity (0 withdraws it).
    fn resize(
        &mut self,
        now: u64,
        may_sign: bool,
        nonce: u64,
        quantity_wh: Option<u64>,
        price: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        if !may_sign {
            return Err("the clock is not synchronised; refusing to sign".into());
        }
        let id = OfferId {
            maker: self.me,
            nonce,
        };
        let mut o = self
            .book
            .get(&id)
            .map(|e| e.offer.clone())
            .ok_or("no open offer of ours with that nonce")?;
        let charter = self.chain.at(now);
        o.version += 1;
        o.price = price;
        if let Some(q) = quantity_wh {
            o.quantity_wh = q;
            o.min_fill_wh = o.min_fill_wh.clamp(u64::from(q > 0), q);
        }
        o.created_ms = now.max(o.created_ms);
        validate::check_offer(&charter.charter, &o, &self.me).map_err(|e| e.to_string())?;
        let bytes = Envelope::seal(&o, charter.hash, &self.key).to_bytes();
        self.note_offer(o, bytes.clone());
        out.push(Output::Persist(Record::Offer {
            id,
            envelope: bytes.clone(),
        }));
        out.push(Output::Publish(TopicKind::Offers, bytes));
        Ok(())
    }

    /// Withdraws one of our offers: a new version with nothing left.
    fn cancel(
        &mut self,
        now: u64,
        may_sign: bool,
        nonce: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        let id = OfferId {
            maker: self.me,
            nonce,
        };
        let price = self
            .book
            .get(&id)
            .map(|e| e.offer.price)
            .ok_or("no open offer of ours with that nonce")?;
        self.resize(now, may_sign, nonce, Some(0), price, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn take(
        &mut self,
        now: u64,
        may_sign: bool,
        cmd: CmdId,
        id: OfferId,
        energy_wh: u64,
        nonce: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        if !may_sign {
            return Err("the clock is not synchronised; refusing to sign".into());
        }
        let offer = self
            .book
            .get(&id)
            .map(|e| e.offer.clone())
            .ok_or("no such offer in the book")?;
        if offer.maker == self.me {
            return Err("that is our own offer".into());
        }
        let proposal = TradeProposal {
            taker: self.me,
            nonce,
            offer: id,
            offer_version: offer.version,
            slot_ms: offer.slot_ms,
            energy_wh,
            price: offer.price,
            created_ms: now,
            ext: Vec::new(),
        };
        let charter = self.chain.at(now);
        validate::check_proposal(&charter.charter, &proposal, &self.me)
            .map_err(|e| e.to_string())?;
        let envelope = Envelope::seal(&proposal, charter.hash, &self.key);
        let token = self.token();
        out.push(Output::Send {
            to: offer.maker,
            token,
            req: TradeRequest::Propose(envelope.clone()),
        });
        self.pending.insert(
            token,
            Pending::Propose {
                cmd,
                to: offer.maker,
                proposal,
                envelope,
                side: offer.side,
                attempts: 1,
            },
        );
        Ok(())
    }

    fn on_propose(
        &mut self,
        now: u64,
        may_sign: bool,
        from: NodeId,
        env: Envelope,
        out: &mut Vec<Output>,
    ) -> TradeResponse {
        let reject = |r| TradeResponse::Reject(r);
        let Ok(acc) = validate::validate_archival(&env.to_bytes(), &self.chain, false) else {
            return reject(RejectReason::Invalid);
        };
        let Msg::TradeProposal(p) = acc.msg else {
            return reject(RejectReason::Invalid);
        };
        if p.taker != from || p.offer.maker != self.me {
            return reject(RejectReason::Invalid);
        }
        // A retry: the same signed trade again, if the terms are the same.
        if let Some(t) = self.trades.get(&p.trade_id()) {
            if !t.trade.matches_proposal(&p) {
                return reject(RejectReason::Invalid);
            }
            let Ok(mut env) = Envelope::from_bytes(&t.envelope) else {
                return reject(RejectReason::Invalid);
            };
            env.signatures.truncate(1);
            return TradeResponse::Accept(env);
        }
        let charter = self.chain.at(now);
        if let Err(e) = validate::check_proposal_fresh(&charter.charter, &p, now) {
            return reject(if e.is_provable() {
                RejectReason::Invalid
            } else {
                RejectReason::Closed
            });
        }
        if !may_sign {
            return reject(RejectReason::ClockUnsynced);
        }
        let Some(current) = self.book.get(&p.offer).map(|e| e.offer.clone()) else {
            return reject(RejectReason::UnknownOffer);
        };
        let mut judged = current.clone();
        if self.break_reservation {
            // The deliberately broken build: forgets what was already sold.
            judged.quantity_wh = self
                .offered
                .get(&current.id())
                .copied()
                .unwrap_or(current.quantity_wh);
        }
        if let Err(r) = terms_acceptable(&judged, &p, now) {
            return reject(r);
        }
        let trade = Trade::from_proposal(&current, &p, now);
        let trade_env = Envelope::seal(&trade, charter.hash, &self.key);
        let mut next = current.clone();
        next.version += 1;
        next.quantity_wh = next.quantity_wh.saturating_sub(p.energy_wh);
        next.min_fill_wh = next.min_fill_wh.min(next.quantity_wh);
        next.created_ms = now.max(current.created_ms);
        let next_bytes = Envelope::seal(&next, charter.hash, &self.key).to_bytes();
        let bytes = trade_env.to_bytes();
        // Trade and remaining quantity, durable together, before the answer goes out.
        out.push(Output::Persist(Record::Offer {
            id: next.id(),
            envelope: next_bytes.clone(),
        }));
        out.push(Output::Persist(Record::Trade {
            id: trade.id(),
            state: TradeState::MakerSigned,
            envelope: bytes.clone(),
        }));
        self.note_offer(next, next_bytes.clone());
        self.trades.insert(
            trade.id(),
            TradeRec {
                trade,
                state: TradeState::MakerSigned,
                envelope: bytes,
            },
        );
        out.push(Output::Publish(TopicKind::Offers, next_bytes));
        TradeResponse::Accept(trade_env)
    }

    fn on_countersigned(
        &mut self,
        from: NodeId,
        env: Envelope,
        out: &mut Vec<Output>,
    ) -> TradeResponse {
        let Ok(acc) = validate::validate_archival(&env.to_bytes(), &self.chain, false) else {
            return TradeResponse::Reject(RejectReason::Invalid);
        };
        let Msg::Trade(t) = acc.msg else {
            return TradeResponse::Reject(RejectReason::Invalid);
        };
        if t.maker() != self.me || t.taker != from {
            return TradeResponse::Reject(RejectReason::Invalid);
        }
        let Some(rec) = self.trades.get_mut(&t.id()) else {
            return TradeResponse::Reject(RejectReason::UnknownOffer);
        };
        match Envelope::from_bytes(&rec.envelope) {
            Ok(ours) if ours.payload == env.payload && ours.charter == env.charter => {}
            _ => return TradeResponse::Reject(RejectReason::Invalid),
        }
        if rec.state != TradeState::Agreed {
            rec.state = TradeState::Agreed;
            rec.envelope = env.to_bytes();
            out.push(Output::Persist(Record::Trade {
                id: t.id(),
                state: TradeState::Agreed,
                envelope: rec.envelope.clone(),
            }));
        }
        TradeResponse::Stored
    }

    fn on_response(
        &mut self,
        now: u64,
        token: u64,
        resp: Option<TradeResponse>,
        out: &mut Vec<Output>,
    ) {
        let Some(p) = self.pending.remove(&token) else {
            return;
        };
        match p {
            Pending::Propose {
                cmd,
                to,
                proposal,
                envelope,
                side,
                attempts,
            } => match resp {
                None if attempts < MAX_ATTEMPTS => {
                    let token = self.token();
                    out.push(Output::Send {
                        to,
                        token,
                        req: TradeRequest::Propose(envelope.clone()),
                    });
                    self.pending.insert(
                        token,
                        Pending::Propose {
                            cmd,
                            to,
                            proposal,
                            envelope,
                            side,
                            attempts: attempts + 1,
                        },
                    );
                }
                None => out.push(Output::Done {
                    cmd,
                    result: Err("the maker did not answer".into()),
                }),
                Some(TradeResponse::Accept(mut env)) => {
                    let checked = validate::validate_archival(&env.to_bytes(), &self.chain, true);
                    let trade = match checked {
                        Ok(acc) => match acc.msg {
                            Msg::Trade(t)
                                if t.matches_proposal(&proposal) && t.maker_side == side =>
                            {
                                t
                            }
                            _ => {
                                out.push(Output::Done {
                                    cmd,
                                    result: Err("the maker signed different terms".into()),
                                });
                                return;
                            }
                        },
                        Err(e) => {
                            out.push(Output::Done {
                                cmd,
                                result: Err(format!("the maker's trade is invalid: {e}")),
                            });
                            return;
                        }
                    };
                    env.add_signature(&self.key);
                    let bytes = env.to_bytes();
                    out.push(Output::Persist(Record::Trade {
                        id: trade.id(),
                        state: TradeState::Agreed,
                        envelope: bytes.clone(),
                    }));
                    self.trades.insert(
                        trade.id(),
                        TradeRec {
                            trade: trade.clone(),
                            state: TradeState::Agreed,
                            envelope: bytes,
                        },
                    );
                    let token = self.token();
                    out.push(Output::Send {
                        to,
                        token,
                        req: TradeRequest::Countersigned(env.clone()),
                    });
                    self.pending.insert(
                        token,
                        Pending::Confirm {
                            to,
                            envelope: env,
                            attempts: 1,
                        },
                    );
                    out.push(Output::Done {
                        cmd,
                        result: Ok(CmdResult::Traded(trade)),
                    });
                }
                Some(TradeResponse::Reject(r)) => out.push(Output::Done {
                    cmd,
                    result: Err(format!("the maker declined: {r}")),
                }),
                Some(other) => out.push(Output::Done {
                    cmd,
                    result: Err(format!("unexpected answer {other:?}")),
                }),
            },
            Pending::Confirm {
                to,
                envelope,
                attempts,
            } => {
                if resp.is_none() && attempts < MAX_ATTEMPTS {
                    let token = self.token();
                    out.push(Output::Send {
                        to,
                        token,
                        req: TradeRequest::Countersigned(envelope.clone()),
                    });
                    self.pending.insert(
                        token,
                        Pending::Confirm {
                            to,
                            envelope,
                            attempts: attempts + 1,
                        },
                    );
                }
                // Otherwise the maker reconciles through Status or settlement; our copy is
                // already durable.
            }
            Pending::Settle { id } => self.on_settle_response(now, id, resp, out),
            Pending::Status { id } => self.on_status_response(id, resp, out),
            Pending::Doc(sent) => self.on_doc_response(now, sent, resp, out),
        }
    }

    /// Periodic work: settle trades whose slot's attestations are due, record disputes for
    /// settlements past their deadline, and reconcile trades the maker never saw confirmed.
    fn tick(&mut self, now: u64, may_sign: bool, out: &mut Vec<Output>) {
        self.book.prune(now);
        self.docs_tick(now, may_sign, out);
        let ids: Vec<TradeId> = self.trades.keys().copied().collect();
        for id in ids {
            let Some(rec) = self.trades.get(&id).cloned() else {
                continue;
            };
            let c = self.chain.at(rec.trade.slot_ms).charter.clone();
            let att_due = slot::attestation_deadline(&c, rec.trade.slot_ms);
            let settle_due = slot::settlement_deadline(&c, rec.trade.slot_ms);
            let in_flight = |m: &Market| {
                m.pending
                    .values()
                    .any(|p| matches!(p, Pending::Settle { id: x } | Pending::Status { id: x } if *x == id))
            };
            if rec.state == TradeState::MakerSigned {
                // The countersignature never came: once trading for the slot has closed, ask
                // the taker whether it holds the trade (it may have stored it and crashed, or
                // its confirmation was lost).
                if now >= slot::gate_closure(&c, rec.trade.slot_ms)
                    && now <= settle_due
                    && !in_flight(self)
                    && !self.settled_status.contains(&id)
                {
                    let token = self.token();
                    out.push(Output::Send {
                        to: rec.trade.taker,
                        token,
                        req: TradeRequest::Status(id),
                    });
                    self.pending.insert(token, Pending::Status { id });
                }
                continue;
            }
            let existing = self.settlements.get(&id).map(|s| s.state);
            let seller = rec.trade.seller() == self.me;
            match existing {
                None if seller && now >= att_due && may_sign => {
                    self.propose_settlement(now, &rec, out)
                }
                None if !seller && now > settle_due => {
                    self.record_settlement(
                        id,
                        SettleState::Disputed,
                        None,
                        None,
                        Some("the seller never settled".into()),
                        out,
                    );
                }
                Some(SettleState::Proposed) if !in_flight(self) => {
                    let env = self.settlements.get(&id).and_then(|r| r.envelope.clone());
                    if now > settle_due {
                        self.record_settlement(
                            id,
                            SettleState::Unilateral,
                            env,
                            None,
                            Some("the buyer never answered".into()),
                            out,
                        );
                    } else {
                        // After a restart nothing is in flight: send it again.
                        self.resend_settlement(id, out);
                    }
                }
                // The buyer may have signed while its answer was lost: keep asking for a while
                // after the deadline, so that both records end up the same.
                Some(SettleState::Unilateral)
                    if !in_flight(self)
                        && now
                            <= settle_due
                                + RECONCILE_GRACES * u64::from(c.settlement_grace_secs) * 1000 =>
                {
                    self.resend_settlement(id, out);
                }
                _ => {}
            }
        }
    }

    fn resend_settlement(&mut self, id: TradeId, out: &mut Vec<Output>) {
        let Some(t) = self.trades.get(&id).cloned() else {
            return;
        };
        let Some(env) = self
            .settlements
            .get(&id)
            .and_then(|r| r.envelope.as_ref())
            .and_then(|b| Envelope::from_bytes(b).ok())
        else {
            return;
        };
        let att = self
            .attestations
            .get(&(self.me, t.trade.slot_ms))
            .map(|(_, b)| b.clone());
        let proof =
            merkle::prove(&self.agreed_in(t.trade.slot_ms, Side::Sell), &id).unwrap_or_default();
        let token = self.token();
        out.push(Output::Send {
            to: t.trade.buyer(),
            token,
            req: TradeRequest::Settle {
                settlement: env,
                attestation: att,
                proof,
            },
        });
        self.pending.insert(token, Pending::Settle { id });
    }

    fn record_settlement(
        &mut self,
        id: TradeId,
        state: SettleState,
        envelope: Option<Vec<u8>>,
        settlement: Option<Settlement>,
        dispute: Option<String>,
        out: &mut Vec<Output>,
    ) {
        let settlement = settlement.or_else(|| {
            envelope
                .as_ref()
                .and_then(|b| Envelope::from_bytes(b).ok()?.payload_as().ok())
        });
        out.push(Output::Persist(Record::Settlement {
            id,
            state,
            envelope: envelope.clone(),
            dispute: dispute.clone(),
        }));
        self.settlements.insert(
            id,
            SettleRec {
                state,
                settlement,
                envelope,
                dispute,
            },
        );
    }

    /// Our sales in a slot, for the proof.
    /// Our agreed trades in a slot on one side, as the leaves of that side's commitment.
    pub fn agreed_in(&self, slot_ms: u64, side: Side) -> Vec<(TradeId, u64)> {
        self.trades
            .values()
            .filter(|t| t.state == TradeState::Agreed && t.trade.slot_ms == slot_ms)
            .filter(|t| match side {
                Side::Sell => t.trade.seller() == self.me,
                Side::Buy => t.trade.buyer() == self.me,
            })
            .map(|t| (t.trade.id(), t.trade.energy_wh))
            .collect()
    }

    /// The nodes we have agreed trades with in a slot: those a node in privacy mode sends its
    /// attestation for the slot to, and serves it to.
    pub fn counterparties_in(&self, slot_ms: u64) -> std::collections::BTreeSet<NodeId> {
        self.trades
            .values()
            .filter(|t| t.state == TradeState::Agreed && t.trade.slot_ms == slot_ms)
            .map(|t| {
                if t.trade.seller() == self.me {
                    t.trade.buyer()
                } else {
                    t.trade.seller()
                }
            })
            .collect()
    }

    fn propose_settlement(&mut self, now: u64, rec: &TradeRec, out: &mut Vec<Output>) {
        let t = &rec.trade;
        let own = self.attestations.get(&(self.me, t.slot_ms)).cloned();
        let buyer_att = self
            .attestations
            .get(&(t.buyer(), t.slot_ms))
            .map(|(a, _)| a.clone());
        let proof =
            merkle::prove(&self.agreed_in(t.slot_ms, Side::Sell), &t.id()).unwrap_or_default();
        let result = match &own {
            Some((a, _)) => settle::settle(t, Some((a, &proof)), buyer_att.as_ref()),
            None => settle::settle(t, None, buyer_att.as_ref()),
        };
        let settled = match result {
            Ok(s) => s,
            Err(cause) => {
                self.record_settlement(
                    t.id(),
                    SettleState::Disputed,
                    None,
                    None,
                    Some(cause.to_string()),
                    out,
                );
                return;
            }
        };
        let att_hash = own
            .as_ref()
            .and_then(|(_, b)| Some(chain_hash(&Envelope::from_bytes(b).ok()?.payload)));
        let buyer_hash = self
            .attestations
            .get(&(t.buyer(), t.slot_ms))
            .and_then(|(_, b)| Some(chain_hash(&Envelope::from_bytes(b).ok()?.payload)));
        let s = Settlement::new(t, &settled, att_hash, buyer_hash, now);
        let env = Envelope::seal(&s, self.chain.at(now).hash, &self.key);
        self.record_settlement(
            t.id(),
            SettleState::Proposed,
            Some(env.to_bytes()),
            Some(s),
            None,
            out,
        );
        let token = self.token();
        out.push(Output::Send {
            to: t.buyer(),
            token,
            req: TradeRequest::Settle {
                settlement: env,
                attestation: own.map(|(_, b)| b),
                proof,
            },
        });
        self.pending.insert(token, Pending::Settle { id: t.id() });
    }

    fn on_settle(
        &mut self,
        from: NodeId,
        env: Envelope,
        attestation: Option<Vec<u8>>,
        proof: Vec<ProofStep>,
        may_sign: bool,
        out: &mut Vec<Output>,
    ) -> TradeResponse {
        let Ok(acc) = validate::validate_archival(&env.to_bytes(), &self.chain, true) else {
            return TradeResponse::Dispute(DisputeReason::WrongFigures);
        };
        let Ok(s) = acc.envelope.payload_as::<Settlement>() else {
            return TradeResponse::Dispute(DisputeReason::WrongFigures);
        };
        if env.signatures.len() != 1 || env.signatures[0].signer != from || s.seller != from {
            return TradeResponse::Dispute(DisputeReason::WrongFigures);
        }
        // Already settled: the same answer again (idempotent retries).
        if let Some(rec) = self.settlements.get(&s.trade) {
            if rec.state == SettleState::Settled {
                if let Some(b) = &rec.envelope {
                    if let Ok(e) = Envelope::from_bytes(b) {
                        if e.payload == env.payload {
                            return TradeResponse::Settled(e);
                        }
                    }
                }
            }
            if rec.state == SettleState::Disputed {
                return TradeResponse::Dispute(DisputeReason::WrongFigures);
            }
        }
        let Some(rec) = self
            .trades
            .get(&s.trade)
            .filter(|t| t.state == TradeState::Agreed)
        else {
            return TradeResponse::Dispute(DisputeReason::UnknownTrade);
        };
        let t = rec.trade.clone();
        if t.seller() != from || t.buyer() != self.me {
            return TradeResponse::Dispute(DisputeReason::UnknownTrade);
        }
        let att = match &attestation {
            None => None,
            Some(bytes) => {
                match validate::validate_archival(bytes, &self.chain, false).map(|a| a.msg) {
                    Ok(Msg::Attestation(a)) if a.node == from && a.slot_ms == t.slot_ms => Some(a),
                    _ => return self.dispute(t.id(), DisputeReason::BadAttestation, out),
                }
            }
        };
        if let (Some(a), Some((held, _))) = (&att, self.attestations.get(&(from, t.slot_ms))) {
            if a != held {
                return self.dispute(t.id(), DisputeReason::ConflictingAttestation, out);
            }
        }
        let ours = match &att {
            Some(a) => settle::settle(&t, Some((a, &proof)), None),
            None => settle::settle(&t, None, None),
        };
        let ours = match ours {
            Ok(x) => x,
            Err(settle::DisputeCause::NotInCommitment) => {
                return self.dispute(t.id(), DisputeReason::NotInCommitment, out);
            }
            Err(_) => return self.dispute(t.id(), DisputeReason::BadAttestation, out),
        };
        let att_hash = attestation
            .as_ref()
            .and_then(|b| Some(chain_hash(&Envelope::from_bytes(b).ok()?.payload)));
        let figures_match = s.trade == t.id()
            && s.buyer == self.me
            && s.slot_ms == t.slot_ms
            && s.agreed_wh == t.energy_wh
            && s.price == t.price
            && s.delivered_wh == ours.delivered_wh
            && s.amount == ours.amount
            && s.outcome == ours.outcome
            && s.seller_attestation == att_hash;
        if !figures_match {
            return self.dispute(t.id(), DisputeReason::WrongFigures, out);
        }
        if !may_sign {
            // Not a dispute: the seller retries, and the deadline still applies.
            return TradeResponse::Dispute(DisputeReason::WrongFigures);
        }
        if let Some(a) = att {
            self.attestations
                .entry((from, t.slot_ms))
                .or_insert((a, attestation.clone().unwrap_or_default()));
        }
        let mut signed = env;
        signed.add_signature(&self.key);
        self.record_settlement(
            t.id(),
            SettleState::Settled,
            Some(signed.to_bytes()),
            Some(s),
            None,
            out,
        );
        TradeResponse::Settled(signed)
    }

    fn dispute(
        &mut self,
        id: TradeId,
        reason: DisputeReason,
        out: &mut Vec<Output>,
    ) -> TradeResponse {
        self.record_settlement(
            id,
            SettleState::Disputed,
            None,
            None,
            Some(reason.to_string()),
            out,
        );
        TradeResponse::Dispute(reason)
    }

    fn on_settle_response(
        &mut self,
        _now: u64,
        id: TradeId,
        resp: Option<TradeResponse>,
        out: &mut Vec<Output>,
    ) {
        let Some(rec) = self.settlements.get(&id).cloned() else {
            return;
        };
        if !matches!(rec.state, SettleState::Proposed | SettleState::Unilateral) {
            return;
        }
        match resp {
            Some(TradeResponse::Settled(env)) => {
                let ok = rec
                    .envelope
                    .as_ref()
                    .and_then(|b| Envelope::from_bytes(b).ok())
                    .is_some_and(|ours| {
                        ours.payload == env.payload
                            && env.signatures.len() == 2
                            && env.verify_signatures().is_ok()
                            && self
                                .trades
                                .get(&id)
                                .is_some_and(|t| env.signatures[1].signer == t.trade.buyer())
                    });
                if ok {
                    self.record_settlement(
                        id,
                        SettleState::Settled,
                        Some(env.to_bytes()),
                        rec.settlement,
                        None,
                        out,
                    );
                }
            }
            Some(TradeResponse::Dispute(r)) => {
                self.record_settlement(
                    id,
                    SettleState::Disputed,
                    rec.envelope,
                    rec.settlement,
                    Some(format!("the buyer disputes: {r}")),
                    out,
                );
            }
            // No answer: the next tick sends it again while the deadline allows.
            _ => {}
        }
    }

    fn on_status_response(
        &mut self,
        id: TradeId,
        resp: Option<TradeResponse>,
        out: &mut Vec<Output>,
    ) {
        let Some(rec) = self.trades.get(&id).cloned() else {
            return;
        };
        if rec.state != TradeState::MakerSigned {
            return;
        }
        match resp {
            Some(TradeResponse::Status(Some(env))) => {
                let ours = Envelope::from_bytes(&rec.envelope).ok();
                let complete =
                    validate::validate_archival(&env.to_bytes(), &self.chain, false).is_ok();
                if complete && ours.is_some_and(|o| o.payload == env.payload) {
                    let bytes = env.to_bytes();
                    out.push(Output::Persist(Record::Trade {
                        id,
                        state: TradeState::Agreed,
                        envelope: bytes.clone(),
                    }));
                    if let Some(r) = self.trades.get_mut(&id) {
                        r.state = TradeState::Agreed;
                        r.envelope = bytes;
                    }
                }
            }
            // The taker never stored it, so it was never agreed and nothing is delivered or
            // owed; it stays maker-signed in our records as evidence, and we stop asking.
            Some(TradeResponse::Status(None)) => {
                self.settled_status.insert(id);
            }
            _ => {}
        }
    }

    /// Every outcome our settlements record, for reports.
    pub fn outcomes(&self) -> Vec<(TradeId, SettleState, Option<Outcome>)> {
        self.settlements
            .iter()
            .map(|(id, r)| (*id, r.state, r.settlement.as_ref().map(|s| s.outcome)))
            .collect()
    }

    /// The hash of the charter in effect.
    pub fn charter_hash(&self, now: u64) -> Hash32 {
        self.chain.at(now).hash
    }
}
