//! Validation of every message, split into **archival** checks (signatures, structure and
//! internal consistency: what is true of the message forever) and **fresh** checks (expiry,
//! clock skew, gate closure, replay and spam limits: what depends on when and where it
//! arrived).
//!
//! Every error says whether it is provable misbehaviour ([`Invalid::is_provable`]): the network
//! layer rejects and penalises those, and merely ignores the rest, since an honest relay with a
//! slightly different clock or view could have forwarded them.

use crate::attestation::{AttestationCommitment, MeterAttestation};
use crate::charter::{Charter, CharterChain, SignedCharter};
use crate::envelope::{Envelope, EnvelopeError, Kind};
use crate::ext::{self, ExtError};
use crate::ids::{Hash32, NodeId};
use crate::ledger::{self, Agreement, DisputeNote, Payment};
use crate::offer::{Offer, OfferId};
use crate::roster::Roster;
use crate::settlement::Settlement;
use crate::slot;
use crate::trade::{Trade, TradeProposal};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Extension tags this version understands (none yet).
pub const KNOWN_EXTENSIONS: &[u16] = &[];

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The envelope or its signatures are bad.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Signed under a charter this node does not know (perhaps a newer one).
    #[error("unknown charter")]
    UnknownCharter,
    /// Signed under a known charter that is not in effect now.
    #[error("charter not in effect")]
    CharterNotInEffect,
    /// The kind may not be sent this way (a trade on the gossip topic, say).
    #[error("kind {0:?} not allowed here")]
    KindNotAllowed(Kind),
    /// The author in the payload is not the signer, or the signers are not the parties.
    #[error("signer is not the author")]
    WrongSigner,
    /// A field is out of range.
    #[error("field {0} out of range")]
    Field(&'static str),
    /// A price outside the charter's feed-in..retail band.
    #[error("price outside the band")]
    PriceOutsideBand,
    /// A slot not aligned to the slot length.
    #[error("misaligned slot")]
    MisalignedSlot,
    /// Zero energy where some is needed, or more than the charter's maximum per slot.
    #[error("energy zero or absurd")]
    Energy,
    /// Extensions malformed.
    #[error("malformed extensions")]
    MalformedExt,
    /// A critical extension this node does not know.
    #[error("unknown critical extension {0}")]
    UnknownCriticalExt(u16),
    /// The message expired.
    #[error("expired")]
    Expired,
    /// A timestamp too far ahead of this node's clock.
    #[error("too far in the future")]
    TooFarInFuture,
    /// Trading for the slot has closed.
    #[error("after gate closure")]
    GateClosed,
    /// Arrived after its deadline.
    #[error("late")]
    Late,
    /// Seen before (same offer version, same attestation sequence number).
    #[error("replay")]
    Replay,
    /// Older than a version already seen.
    #[error("stale version")]
    Stale,
    /// More versions of one offer than the charter allows.
    #[error("too many versions")]
    TooManyVersions,
    /// More open offers for one slot than the charter allows.
    #[error("too many open offers for the slot")]
    TooManyOpenOffers,
    /// The author is not a member of the neighbourhood (as far as this node's roster knows).
    #[error("author is not a member")]
    NotMember,
    /// A private attestation (privacy mode) arrived by gossip: its node sent it only to its
    /// counterparties, so someone passed it on. Not relayed; not the forwarder's provable fault
    /// as far as the receiver can tell, so not punished either.
    #[error("a private attestation on gossip")]
    Private,
}

impl Invalid {
    /// Whether the message itself proves its author or forwarder misbehaved. Errors that
    /// depend on time, on this node's state, or on what this version knows are not provable.
    pub fn is_provable(&self) -> bool {
        match self {
            Invalid::Envelope(EnvelopeError::UnsupportedVersion(_))
            | Invalid::Envelope(EnvelopeError::UnknownKind(_))
            | Invalid::UnknownCharter
            | Invalid::CharterNotInEffect
            | Invalid::UnknownCriticalExt(_)
            | Invalid::Expired
            | Invalid::TooFarInFuture
            | Invalid::GateClosed
            | Invalid::Late
            | Invalid::Replay
            | Invalid::Stale
            | Invalid::TooManyOpenOffers
            | Invalid::NotMember
            | Invalid::Private => false,
            Invalid::Envelope(_)
            | Invalid::KindNotAllowed(_)
            | Invalid::WrongSigner
            | Invalid::Field(_)
            | Invalid::PriceOutsideBand
            | Invalid::MisalignedSlot
            | Invalid::Energy
            | Invalid::MalformedExt
            | Invalid::TooManyVersions => true,
        }
    }
}

fn check_ext(e: &[crate::ext::Extension]) -> Result<(), Invalid> {
    ext::check(e, KNOWN_EXTENSIONS).map_err(|e| match e {
        ExtError::Malformed => Invalid::MalformedExt,
        ExtError::UnknownCritical(t) => Invalid::UnknownCriticalExt(t),
    })
}

fn check_price(c: &Charter, price: u64) -> Result<(), Invalid> {
    if price < c.feed_in_price || price > c.retail_price {
        return Err(Invalid::PriceOutsideBand);
    }
    Ok(())
}

fn check_slot(c: &Charter, slot_ms: u64) -> Result<(), Invalid> {
    if !slot::is_aligned(c, slot_ms) {
        return Err(Invalid::MisalignedSlot);
    }
    Ok(())
}

fn check_energy(c: &Charter, e: u64) -> Result<(), Invalid> {
    if e == 0 || e > c.max_energy_per_slot_wh() {
        return Err(Invalid::Energy);
    }
    Ok(())
}

/// A message that passed validation, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// A charter version.
    Charter(Box<SignedCharter>),
    /// An offer.
    Offer(Offer),
    /// A trade proposal.
    TradeProposal(TradeProposal),
    /// A trade (with one signature, the maker's, if it was accepted as partial).
    Trade(Trade),
    /// A meter attestation.
    Attestation(MeterAttestation),
    /// A commitment to a private meter attestation.
    Commitment(AttestationCommitment),
    /// A settlement.
    Settlement(Settlement),
    /// A standing agreement (one signature if accepted as partial).
    Agreement(Agreement),
    /// A dispute note.
    DisputeNote(DisputeNote),
    /// A payment (the payer's signature alone if accepted as partial).
    Payment(Payment),
}

/// A validated message with its envelope (kept to store and forward unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The envelope as received.
    pub envelope: Envelope,
    /// The decoded payload.
    pub msg: Msg,
}

/// Archival checks of an offer under the charter it was signed for.
pub fn check_offer(c: &Charter, o: &Offer, signer: &NodeId) -> Result<(), Invalid> {
    if &o.maker != signer {
        return Err(Invalid::WrongSigner);
    }
    if o.version == 0 {
        return Err(Invalid::Field("version"));
    }
    if o.version > c.max_offer_versions {
        return Err(Invalid::TooManyVersions);
    }
    check_slot(c, o.slot_ms)?;
    if o.is_cancelled() {
        if o.version == 1 {
            return Err(Invalid::Energy);
        }
    } else {
        check_energy(c, o.quantity_wh)?;
    }
    if o.min_fill_wh > o.quantity_wh {
        return Err(Invalid::Field("min_fill_wh"));
    }
    check_price(c, o.price)?;
    if o.expires_ms > slot::gate_closure(c, o.slot_ms) {
        return Err(Invalid::Field("expires_ms"));
    }
    if o.created_ms > o.expires_ms {
        return Err(Invalid::Field("created_ms"));
    }
    if o.slot_ms.saturating_sub(o.created_ms) > slot::MAX_SLOT_HORIZON_MS {
        return Err(Invalid::Field("slot_ms"));
    }
    check_ext(&o.ext)
}

/// Fresh checks of an offer at `now`.
pub fn check_offer_fresh(c: &Charter, o: &Offer, now: u64) -> Result<(), Invalid> {
    if o.created_ms > now.saturating_add(c.max_clock_skew_ms as u64) {
        return Err(Invalid::TooFarInFuture);
    }
    if now >= slot::gate_closure(c, o.slot_ms) {
        return Err(Invalid::GateClosed);
    }
    if now > o.expires_ms {
        return Err(Invalid::Expired);
    }
    Ok(())
}

/// Archival checks of a trade proposal.
pub fn check_proposal(c: &Charter, p: &TradeProposal, signer: &NodeId) -> Result<(), Invalid> {
    if &p.taker != signer {
        return Err(Invalid::WrongSigner);
    }
    if p.taker == p.offer.maker {
        return Err(Invalid::Field("taker"));
    }
    check_slot(c, p.slot_ms)?;
    check_energy(c, p.energy_wh)?;
    check_price(c, p.price)?;
    if p.created_ms > slot::gate_closure(c, p.slot_ms) {
        return Err(Invalid::GateClosed);
    }
    check_ext(&p.ext)
}

/// Fresh checks of a trade proposal at `now`.
pub fn check_proposal_fresh(c: &Charter, p: &TradeProposal, now: u64) -> Result<(), Invalid> {
    let skew = c.max_clock_skew_ms as u64;
    if p.created_ms > now.saturating_add(skew) {
        return Err(Invalid::TooFarInFuture);
    }
    if p.created_ms.saturating_add(skew) < now {
        return Err(Invalid::Expired);
    }
    if now >= slot::gate_closure(c, p.slot_ms) {
        return Err(Invalid::GateClosed);
    }
    Ok(())
}

/// Archival checks of a trade envelope. `complete` requires both signatures (maker first,
/// then taker); otherwise the maker's alone is enough (handshake step 2).
pub fn check_trade(c: &Charter, env: &Envelope, t: &Trade, complete: bool) -> Result<(), Invalid> {
    let want = if complete { 2 } else { 1 };
    if env.signatures.len() != want {
        return Err(Invalid::Envelope(EnvelopeError::SignatureCount(
            env.signatures.len(),
        )));
    }
    if env.signatures[0].signer != t.maker() || (complete && env.signatures[1].signer != t.taker) {
        return Err(Invalid::WrongSigner);
    }
    if t.taker == t.maker() {
        return Err(Invalid::Field("taker"));
    }
    check_slot(c, t.slot_ms)?;
    check_energy(c, t.energy_wh)?;
    check_price(c, t.price)?;
    if t.agreed_ms > slot::gate_closure(c, t.slot_ms) {
        return Err(Invalid::GateClosed);
    }
    check_ext(&t.ext)
}

/// Archival checks of a meter attestation (the chain is checked separately, against the
/// node's previous attestation, by [`MeterAttestation::check_follows`]).
pub fn check_attestation(
    c: &Charter,
    a: &MeterAttestation,
    signer: &NodeId,
) -> Result<(), Invalid> {
    if &a.node != signer {
        return Err(Invalid::WrongSigner);
    }
    check_slot(c, a.slot_ms)?;
    if !a.self_consistent() {
        return Err(Invalid::Field("registers"));
    }
    // A meter cannot see more energy in a slot than the charter's maximum power allows.
    let max = c.max_energy_per_slot_wh();
    if a.import_wh > max || a.export_wh > max {
        return Err(Invalid::Energy);
    }
    if a.created_ms < slot::slot_end(c, a.slot_ms) {
        return Err(Invalid::Field("created_ms"));
    }
    if !a.private_ext_well_formed() {
        return Err(Invalid::Field("ext"));
    }
    check_ext(&a.ext)
}

/// Fresh checks of an attestation at `now`: not from the future, not after its deadline.
pub fn check_attestation_fresh(c: &Charter, a: &MeterAttestation, now: u64) -> Result<(), Invalid> {
    check_chain_fresh(c, a.created_ms, a.slot_ms, now)
}

fn check_chain_fresh(c: &Charter, created_ms: u64, slot_ms: u64, now: u64) -> Result<(), Invalid> {
    if created_ms > now.saturating_add(c.max_clock_skew_ms as u64) {
        return Err(Invalid::TooFarInFuture);
    }
    if now > slot::attestation_deadline(c, slot_ms) {
        return Err(Invalid::Late);
    }
    Ok(())
}

/// Archival checks of an attestation commitment (its chain is checked separately, against the
/// node's neighbouring attestations or commitments, by [`crate::attestation::check_link`]).
pub fn check_commitment(
    c: &Charter,
    m: &AttestationCommitment,
    signer: &NodeId,
) -> Result<(), Invalid> {
    if &m.node != signer {
        return Err(Invalid::WrongSigner);
    }
    check_slot(c, m.slot_ms)?;
    if !m.self_consistent() {
        return Err(Invalid::Field("prev"));
    }
    if m.attestation == Hash32::ZERO {
        return Err(Invalid::Field("attestation"));
    }
    if m.created_ms < slot::slot_end(c, m.slot_ms) {
        return Err(Invalid::Field("created_ms"));
    }
    check_ext(&m.ext)
}

/// Fresh checks of a commitment at `now`: those of the attestation it stands for.
pub fn check_commitment_fresh(
    c: &Charter,
    m: &AttestationCommitment,
    now: u64,
) -> Result<(), Invalid> {
    check_chain_fresh(c, m.created_ms, m.slot_ms, now)
}

/// Archival checks of a settlement: `complete` requires the seller's and then the buyer's
/// signature; otherwise the seller's alone (the settlement as the seller proposes it).
pub fn check_settlement(
    c: &Charter,
    env: &Envelope,
    s: &Settlement,
    complete: bool,
) -> Result<(), Invalid> {
    let want = if complete { 2 } else { 1 };
    if env.signatures.len() != want {
        return Err(Invalid::Envelope(EnvelopeError::SignatureCount(
            env.signatures.len(),
        )));
    }
    if env.signatures[0].signer != s.seller || (complete && env.signatures[1].signer != s.buyer) {
        return Err(Invalid::WrongSigner);
    }
    check_slot(c, s.slot_ms)?;
    check_energy(c, s.agreed_wh)?;
    check_price(c, s.price)?;
    if !s.self_consistent() {
        return Err(Invalid::Field("amount"));
    }
    check_ext(&s.ext)
}

fn two_party(env: &Envelope, first: NodeId, second: NodeId, complete: bool) -> Result<(), Invalid> {
    let want = if complete { 2 } else { 1 };
    if env.signatures.len() != want {
        return Err(Invalid::Envelope(EnvelopeError::SignatureCount(
            env.signatures.len(),
        )));
    }
    if env.signatures[0].signer != first || (complete && env.signatures[1].signer != second) {
        return Err(Invalid::WrongSigner);
    }
    Ok(())
}

/// Archival checks of a standing agreement: `complete` requires the proposer's and then the
/// counterparty's signature; otherwise the proposer's alone.
pub fn check_agreement(
    c: &Charter,
    env: &Envelope,
    a: &Agreement,
    complete: bool,
) -> Result<(), Invalid> {
    two_party(env, a.proposer, a.counterparty, complete)?;
    ledger::check_agreement_terms(a, c.slot_ms()).map_err(Invalid::Field)?;
    check_energy(c, a.per_slot_wh)?;
    check_price(c, a.price)?;
    check_ext(&a.ext)
}

/// Archival checks of a dispute note: signed by its author alone.
pub fn check_dispute_note(env: &Envelope, n: &DisputeNote) -> Result<(), Invalid> {
    two_party(env, n.author, n.author, false)?;
    ledger::check_note(n).map_err(Invalid::Field)?;
    check_ext(&n.ext)
}

/// Archival checks of a payment: `complete` requires the payer's and then the payee's
/// signature; otherwise the payer's alone.
pub fn check_payment(env: &Envelope, p: &Payment, complete: bool) -> Result<(), Invalid> {
    two_party(env, p.payer, p.payee, complete)?;
    ledger::check_payment(p).map_err(Invalid::Field)?;
    check_ext(&p.ext)
}

/// Opens an envelope and runs the archival checks for its kind, under whichever known charter
/// it names. `partial` accepts a trade with only the maker's signature and a settlement with
/// only the seller's (the first step of each two-party signing).
pub fn validate_archival(
    bytes: &[u8],
    chain: &CharterChain,
    partial: bool,
) -> Result<Accepted, Invalid> {
    let env = Envelope::from_bytes(bytes)?;
    let kind = env.known_kind()?;
    if matches!(
        kind,
        Kind::Charter
            | Kind::Ticket
            | Kind::Membership
            | Kind::Rekey
            | Kind::Presence
            | Kind::ExportSeal
    ) {
        return Err(Invalid::KindNotAllowed(kind));
    }
    let charter = &chain
        .get(&env.charter)
        .ok_or(Invalid::UnknownCharter)?
        .charter;
    let msg = decode_and_check(&env, kind, charter, partial)?;
    env.verify_signatures()?;
    Ok(Accepted { envelope: env, msg })
}

fn decode_and_check(
    env: &Envelope,
    kind: Kind,
    c: &Charter,
    partial: bool,
) -> Result<Msg, Invalid> {
    let signer = env.signer();
    let single = |env: &Envelope| {
        if env.signatures.len() == 1 {
            Ok(())
        } else {
            Err(Invalid::Envelope(EnvelopeError::SignatureCount(
                env.signatures.len(),
            )))
        }
    };
    Ok(match kind {
        Kind::Offer => {
            single(env)?;
            let o: Offer = env.payload_as()?;
            check_offer(c, &o, &signer)?;
            Msg::Offer(o)
        }
        Kind::TradeProposal => {
            single(env)?;
            let p: TradeProposal = env.payload_as()?;
            check_proposal(c, &p, &signer)?;
            Msg::TradeProposal(p)
        }
        Kind::Trade => {
            let t: Trade = env.payload_as()?;
            check_trade(c, env, &t, !partial)?;
            Msg::Trade(t)
        }
        Kind::MeterAttestation => {
            single(env)?;
            let a: MeterAttestation = env.payload_as()?;
            check_attestation(c, &a, &signer)?;
            Msg::Attestation(a)
        }
        Kind::AttestationCommitment => {
            single(env)?;
            let m: AttestationCommitment = env.payload_as()?;
            check_commitment(c, &m, &signer)?;
            Msg::Commitment(m)
        }
        Kind::Settlement => {
            let s: Settlement = env.payload_as()?;
            check_settlement(c, env, &s, !partial)?;
            Msg::Settlement(s)
        }
        Kind::Agreement => {
            let a: Agreement = env.payload_as()?;
            check_agreement(c, env, &a, !partial)?;
            Msg::Agreement(a)
        }
        Kind::DisputeNote => {
            let n: DisputeNote = env.payload_as()?;
            check_dispute_note(env, &n)?;
            Msg::DisputeNote(n)
        }
        Kind::Payment => {
            let p: Payment = env.payload_as()?;
            check_payment(env, &p, !partial)?;
            Msg::Payment(p)
        }
        Kind::Charter
        | Kind::Ticket
        | Kind::Membership
        | Kind::Rekey
        | Kind::Presence
        | Kind::ExportSeal => {
            return Err(Invalid::KindNotAllowed(kind));
        }
    })
}

/// Limits on the stateful validator's memory.
pub const MAX_TRACKED_OFFERS: usize = 100_000;
/// The most nodes whose attestation sequence numbers are tracked.
pub const MAX_TRACKED_NODES: usize = 10_000;

/// The stateful validator for messages arriving live (gossip): archival checks, then fresh
/// checks, a replay window and spam limits.
///
/// The replay window remembers, for every offer id, the highest version seen until the offer
/// expires, and for every node the highest attestation sequence number. It outlives gossip's
/// duplicate cache (which forgets after a few heartbeats), so a replay of an old message is
/// refused however late it comes. Memory is bounded: expired entries are pruned, and at the
/// limit the entry that expires first is evicted (its messages would soon be refused as
/// expired anyway).
#[derive(Debug, Default)]
pub struct Validator {
    offers: HashMap<OfferId, OfferState>,
    by_expiry: BTreeSet<(u64, OfferId)>,
    open: HashMap<(NodeId, u64), BTreeSet<u64>>,
    attestations: BTreeMap<NodeId, u64>,
}

#[derive(Debug, Clone, Copy)]
struct OfferState {
    version: u32,
    expires_ms: u64,
    slot_ms: u64,
    open: bool,
}

impl Validator {
    /// A validator with nothing seen.
    pub fn new() -> Validator {
        Validator::default()
    }

    /// How many offers the replay window tracks.
    pub fn tracked_offers(&self) -> usize {
        self.offers.len()
    }

    /// Validates a gossiped message (offers, attestations and attestation commitments travel
    /// by gossip) at `now`.
    /// The author must be a member in `roster`.
    ///
    /// Fresh messages must be signed under the charter in effect at `now`, or at `now ± skew`
    /// (so a charter change does not split the network for nodes whose clocks differ a little).
    /// Cheap checks run first; the signatures are verified before any state changes.
    pub fn validate_gossip(
        &mut self,
        bytes: &[u8],
        chain: &CharterChain,
        roster: &Roster,
        now: u64,
    ) -> Result<Accepted, Invalid> {
        let env = Envelope::from_bytes(bytes)?;
        let kind = env.known_kind()?;
        if !matches!(
            kind,
            Kind::Offer | Kind::MeterAttestation | Kind::AttestationCommitment
        ) {
            return Err(Invalid::KindNotAllowed(kind));
        }
        let current = chain.at(now);
        let skew = current.charter.max_clock_skew_ms as u64;
        let charter: &Charter = if env.charter == current.hash {
            &current.charter
        } else {
            let signed = chain.get(&env.charter).ok_or(Invalid::UnknownCharter)?;
            let near = [
                chain.at(now.saturating_sub(skew)),
                chain.at(now.saturating_add(skew)),
            ];
            if !near.iter().any(|c| c.hash == signed.hash) {
                return Err(Invalid::CharterNotInEffect);
            }
            &signed.charter
        };
        let msg = decode_and_check(&env, kind, charter, false)?;
        match &msg {
            Msg::Offer(o) => {
                check_offer_fresh(charter, o, now)?;
                self.check_offer_state(charter, o)?;
            }
            Msg::Attestation(a) => {
                check_attestation_fresh(charter, a, now)?;
                if a.is_private() {
                    return Err(Invalid::Private);
                }
                self.check_chain_replay(&a.node, a.seq)?;
            }
            // One sequence number space per node: a node publishes either the attestation or
            // the commitment to it, never both.
            Msg::Commitment(m) => {
                check_commitment_fresh(charter, m, now)?;
                self.check_chain_replay(&m.node, m.seq)?;
            }
            _ => return Err(Invalid::KindNotAllowed(kind)),
        }
        env.verify_signatures()?;
        // After the signatures, so that a forgery is refused as one (and its forwarder
        // penalised) whoever it claims to be from.
        if !roster.is_member(&env.signer()) {
            return Err(Invalid::NotMember);
        }
        match &msg {
            Msg::Offer(o) => self.record_offer(o, now),
            Msg::Attestation(a) => self.record_attestation(a),
            Msg::Commitment(m) => self.record_chain(m.node, m.seq),
            _ => {}
        }
        Ok(Accepted { envelope: env, msg })
    }

    fn check_chain_replay(&self, node: &NodeId, seq: u64) -> Result<(), Invalid> {
        if self.attestations.get(node).is_some_and(|&s| seq <= s) {
            return Err(Invalid::Replay);
        }
        Ok(())
    }

    fn check_offer_state(&self, c: &Charter, o: &Offer) -> Result<(), Invalid> {
        if let Some(seen) = self.offers.get(&o.id()) {
            if o.version == seen.version {
                return Err(Invalid::Replay);
            }
            if o.version < seen.version {
                return Err(Invalid::Stale);
            }
            if o.slot_ms != seen.slot_ms {
                return Err(Invalid::Field("slot_ms"));
            }
            return Ok(());
        }
        let open = self
            .open
            .get(&(o.maker, o.slot_ms))
            .map(BTreeSet::len)
            .unwrap_or(0);
        if !o.is_cancelled() && open >= c.max_open_offers_per_slot as usize {
            return Err(Invalid::TooManyOpenOffers);
        }
        Ok(())
    }

    /// Records an offer version as seen (also used for the node's own offers).
    pub fn record_offer(&mut self, o: &Offer, now: u64) {
        let id = o.id();
        if let Some(old) = self.offers.get(&id) {
            self.by_expiry.remove(&(old.expires_ms, id));
        }
        let open = !o.is_cancelled();
        self.offers.insert(
            id,
            OfferState {
                version: o.version,
                expires_ms: o.expires_ms,
                slot_ms: o.slot_ms,
                open,
            },
        );
        self.by_expiry.insert((o.expires_ms, id));
        let set = self.open.entry((o.maker, o.slot_ms)).or_default();
        if open {
            set.insert(o.nonce);
        } else {
            set.remove(&o.nonce);
        }
        if self.offers.len() > MAX_TRACKED_OFFERS {
            self.prune(now);
        }
        while self.offers.len() > MAX_TRACKED_OFFERS {
            let Some(&(exp, victim)) = self.by_expiry.iter().next() else {
                break;
            };
            self.forget(exp, victim);
        }
    }

    /// Records an attestation's sequence number as seen.
    pub fn record_attestation(&mut self, a: &MeterAttestation) {
        self.record_chain(a.node, a.seq);
    }

    /// Records a sequence number of `node`'s chain (an attestation's or a commitment's) as
    /// seen.
    pub fn record_chain(&mut self, node: NodeId, seq: u64) {
        if self.attestations.len() >= MAX_TRACKED_NODES && !self.attestations.contains_key(&node) {
            // Membership bounds the real number of nodes far below this; refuse to grow.
            return;
        }
        let e = self.attestations.entry(node).or_insert(seq);
        *e = (*e).max(seq);
    }

    fn forget(&mut self, expires_ms: u64, id: OfferId) {
        self.by_expiry.remove(&(expires_ms, id));
        if let Some(st) = self.offers.remove(&id) {
            if let Some(set) = self.open.get_mut(&(id.maker, st.slot_ms)) {
                set.remove(&id.nonce);
                if set.is_empty() {
                    self.open.remove(&(id.maker, st.slot_ms));
                }
            }
        }
    }

    /// Forgets offers that expired more than an hour before `now`: by then a replay is refused
    /// by its expiry alone, whatever the sender's clock.
    pub fn prune(&mut self, now: u64) {
        let horizon = now.saturating_sub(3_600_000);
        while let Some(&(exp, id)) = self.by_expiry.iter().next() {
            if exp >= horizon {
                break;
            }
            self.forget(exp, id);
        }
    }

    /// Whether an offer id is still counted as open (for tests and the book).
    pub fn is_open(&self, id: &OfferId) -> bool {
        self.offers.get(id).is_some_and(|s| s.open)
    }

    /// The highest version seen for `id`.
    pub fn seen_version(&self, id: &OfferId) -> Option<u32> {
        self.offers.get(id).map(|s| s.version)
    }
}

/// Convenience: the hash of the charter in effect at `now`.
pub fn current_charter_hash(chain: &CharterChain, now: u64) -> Hash32 {
    chain.at(now).hash
}
