//! Membership: who belongs to the neighbourhood.
//!
//! The pre-shared network key keeps strangers from completing a handshake; the roster keeps
//! key-holders from inventing identities. Nodes accept offers, trades and attestations only
//! from members.
//!
//! The roster is a set of signed [`Membership`] records, and membership is a pure function of
//! that set (not of the order the records arrived in), so every node that holds the same
//! records agrees on the same members:
//!
//! - **Add**: an admin admits a member directly (the founder admits itself this way).
//! - **Join**: a newcomer admits itself with a [`Ticket`], an admin's single-use, expiring
//!   permission carried in the invite code. The admin need not be online when the newcomer
//!   joins: the ticket is the admin's signature. Among joins with the same ticket the one with
//!   the smallest `(issued_ms, node id)` wins; the others admit nobody. A join after the
//!   ticket's expiry, or at or after the time an admin revoked it, admits nobody.
//! - **Remove**: an admin removes a member. (The admin then rotates the network key, see
//!   [`Rekey`].)
//! - **Revoke**: an admin withdraws an unused ticket.
//! - **Migrate**: a member moves to a new node key. Signed by the new key and then the old
//!   key (the owner still has it), or by an admin alone (the old key was stolen or lost).
//!
//! Each record is an event at its `issued_ms`; a node's membership is the outcome of the last
//! event about it in `(issued_ms, kind order, record id)` order, where a removal sorts after an
//! admission at the same millisecond. Charter admins are always members.
//!
//! [`Rekey`] carries a new network key sealed to every remaining member; see
//! [`seal_network_key`].

use crate::charter::CharterChain;
use crate::envelope::{Envelope, EnvelopeError, Kind, Message};
use crate::ext::{self, Extension};
use crate::ids::{Hash32, NeighbourhoodId, NodeId};
use crate::sign::NodeKey;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The longest display name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 32;
/// The longest note on a ticket, in bytes of UTF-8.
pub const MAX_NOTE_BYTES: usize = 64;
/// The most records a roster keeps. Admission needs an admin's signature, so a real
/// neighbourhood stays far below this; at the limit new records are refused.
pub const MAX_RECORDS: usize = 8192;
/// The most join records kept per ticket (only one of them admits anybody).
pub const MAX_JOINS_PER_TICKET: usize = 4;
/// The longest a ticket may be valid, in milliseconds (30 days).
pub const MAX_TICKET_MS: u64 = 30 * 24 * 3_600_000;
/// The most sealed keys in one [`Rekey`] message (it must fit an envelope).
pub const MAX_SEALED_PER_REKEY: usize = 24;
/// The length of a sealed network key: an ephemeral X25519 key, the 32-byte key and a tag.
pub const SEALED_KEY_BYTES: usize = 32 + 32 + 16;

/// What a member tells its neighbours about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The name neighbours see, 1 to [`MAX_NAME_BYTES`] bytes.
    pub name: String,
    /// Declared PV capacity in watts (peak), for plausibility checks of its offers.
    pub pv_capacity_w: u32,
}

/// An admin's single-use, expiring permission for one newcomer to join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The neighbourhood.
    pub neighbourhood: NeighbourhoodId,
    /// Random bytes that make every ticket distinct.
    pub token: [u8; 16],
    /// When the admin issued it, UTC ms.
    pub issued_ms: u64,
    /// The last moment a join may be signed with it, UTC ms.
    pub expires_ms: u64,
    /// Who it is for, for the admin's own list (at most [`MAX_NOTE_BYTES`]).
    pub note: String,
    /// Extensions.
    pub ext: Vec<Extension>,
}

impl Message for Ticket {
    const KIND: Kind = Kind::Ticket;
}

/// The id of a ticket: `SHA-256("wattmesh/ticket/v1" ‖ 0x00 ‖ payload)`.
pub fn ticket_id(env: &Envelope) -> Hash32 {
    Hash32::tagged("wattmesh/ticket/v1", &[&env.payload])
}

/// One change to the membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// An admin admits `member`.
    Add {
        /// The new member.
        member: NodeId,
        /// Its profile.
        profile: Profile,
    },
    /// The signer joins with a ticket (the ticket's envelope bytes).
    Join {
        /// The ticket envelope, exactly as the admin signed it.
        ticket: Vec<u8>,
        /// The newcomer's profile.
        profile: Profile,
    },
    /// An admin removes `member`.
    Remove {
        /// The member removed.
        member: NodeId,
    },
    /// An admin withdraws a ticket.
    Revoke {
        /// The ticket's id ([`ticket_id`]).
        ticket: Hash32,
    },
    /// A member moves from `old` to `new`.
    Migrate {
        /// The key it leaves.
        old: NodeId,
        /// The key it moves to.
        new: NodeId,
    },
}

/// A signed membership record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The neighbourhood.
    pub neighbourhood: NeighbourhoodId,
    /// When the record was made, UTC ms; its place in the roster's history.
    pub issued_ms: u64,
    /// The change.
    pub change: Change,
    /// Extensions.
    pub ext: Vec<Extension>,
}

impl Message for Membership {
    const KIND: Kind = Kind::Membership;
}

/// A new network key, sealed to each remaining member, in parts of at most
/// [`MAX_SEALED_PER_REKEY`] members. Signed by an admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rekey {
    /// The neighbourhood.
    pub neighbourhood: NeighbourhoodId,
    /// The key's epoch: 1 for the first rotation, +1 for each one after.
    pub epoch: u32,
    /// When it was made, UTC ms.
    pub issued_ms: u64,
    /// When members switch to the new key, UTC ms.
    pub effective_ms: u64,
    /// This part's index, from 0.
    pub part: u8,
    /// How many parts this epoch's key has.
    pub parts: u8,
    /// The key sealed to each member of this part.
    pub sealed: Vec<SealedKey>,
    /// Extensions.
    pub ext: Vec<Extension>,
}

impl Message for Rekey {
    const KIND: Kind = Kind::Rekey;
}

/// A network key sealed to one member (a libsodium-compatible sealed box to the X25519 form
/// of its ed25519 key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    /// The member it is for.
    pub member: NodeId,
    /// [`SEALED_KEY_BYTES`] bytes.
    pub sealed: Vec<u8>,
}

/// The most addresses in a [`Presence`].
pub const MAX_PRESENCE_ADDRS: usize = 8;
/// The longest address in a [`Presence`], in bytes.
pub const MAX_ADDR_BYTES: usize = 256;

/// Where a member can be reached: its external and relayed addresses (libp2p multiaddrs as
/// text), re-signed whenever they change. Members dial each other with these, so homes behind
/// separate routers find each other without a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// The neighbourhood.
    pub neighbourhood: NeighbourhoodId,
    /// The member.
    pub node: NodeId,
    /// When it was signed, UTC ms; a newer one replaces an older one.
    pub issued_ms: u64,
    /// Its addresses, at most [`MAX_PRESENCE_ADDRS`], each printable ASCII of at most
    /// [`MAX_ADDR_BYTES`] bytes.
    pub addrs: Vec<String>,
    /// Extensions.
    pub ext: Vec<Extension>,
}

impl Message for Presence {
    const KIND: Kind = Kind::Presence;
}

/// Signs this node's presence.
pub fn sign_presence(
    chain: &CharterChain,
    key: &NodeKey,
    issued_ms: u64,
    addrs: Vec<String>,
) -> Envelope {
    let p = Presence {
        neighbourhood: chain.neighbourhood(),
        node: key.node_id(),
        issued_ms,
        addrs: addrs
            .into_iter()
            .filter(|a| a.len() <= MAX_ADDR_BYTES)
            .take(MAX_PRESENCE_ADDRS)
            .collect(),
        ext: Vec::new(),
    };
    Envelope::seal(&p, chain.at(issued_ms).hash, key)
}

/// Opens a presence envelope: one signature by the node it describes, fields in range.
/// Whether the node is a member is the caller's business (the roster).
pub fn open_presence(bytes: &[u8], chain: &CharterChain) -> Result<Presence, RosterError> {
    let env = Envelope::from_bytes(bytes)?;
    let p: Presence = env.payload_as()?;
    chain.get(&env.charter).ok_or(RosterError::UnknownCharter)?;
    if p.neighbourhood != chain.neighbourhood() {
        return Err(RosterError::WrongNeighbourhood);
    }
    if env.signatures.len() != 1 || env.signer() != p.node {
        return Err(RosterError::NotAuthorised(
            "a presence is signed by its node",
        ));
    }
    if p.addrs.len() > MAX_PRESENCE_ADDRS
        || p.addrs.iter().any(|a| {
            a.is_empty() || a.len() > MAX_ADDR_BYTES || !a.bytes().all(|b| b.is_ascii_graphic())
        })
    {
        return Err(RosterError::Field("addrs"));
    }
    check_ext(&p.ext)?;
    env.verify_signatures()?;
    Ok(p)
}

/// Why a roster record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    /// The envelope or a signature is bad.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Signed under a charter this node does not know.
    #[error("unknown charter")]
    UnknownCharter,
    /// For another neighbourhood.
    #[error("another neighbourhood")]
    WrongNeighbourhood,
    /// The signers may not make this change.
    #[error("not authorised: {0}")]
    NotAuthorised(&'static str),
    /// A field is out of range.
    #[error("field {0} out of range")]
    Field(&'static str),
    /// The ticket is malformed, not an admin's, or the join is outside its validity.
    #[error("ticket: {0}")]
    Ticket(&'static str),
    /// Dated too far ahead of the receiver's clock.
    #[error("timestamp too far in the future")]
    Stale,
    /// The roster is full, or the ticket already has its share of joins.
    #[error("roster full")]
    Full,
}

impl RosterError {
    /// Whether the record proves its signer misbehaved (rather than depending on time or on
    /// what this node knows).
    pub fn is_provable(&self) -> bool {
        !matches!(
            self,
            RosterError::UnknownCharter
                | RosterError::Stale
                | RosterError::Full
                | RosterError::Envelope(EnvelopeError::UnsupportedVersion(_))
                | RosterError::Envelope(EnvelopeError::UnknownKind(_))
        )
    }
}

fn check_profile(p: &Profile) -> Result<(), RosterError> {
    if p.name.is_empty() || p.name.len() > MAX_NAME_BYTES || p.name.chars().any(char::is_control) {
        return Err(RosterError::Field("name"));
    }
    if p.pv_capacity_w > 1_000_000 {
        return Err(RosterError::Field("pv_capacity_w"));
    }
    Ok(())
}

fn check_ext(e: &[Extension]) -> Result<(), RosterError> {
    ext::check(e, &[]).map_err(|_| RosterError::Field("ext"))
}

/// Opens and checks a ticket envelope under `chain`: one admin signature, fields in range.
pub fn open_ticket(bytes: &[u8], chain: &CharterChain) -> Result<(Ticket, Hash32), RosterError> {
    let env = Envelope::from_bytes(bytes).map_err(|_| RosterError::Ticket("malformed"))?;
    let t: Ticket = env
        .payload_as()
        .map_err(|_| RosterError::Ticket("malformed"))?;
    if env.signatures.len() != 1 {
        return Err(RosterError::Ticket("needs exactly one signature"));
    }
    let charter = chain
        .get(&env.charter)
        .ok_or(RosterError::Ticket("unknown charter"))?;
    if !charter.charter.is_admin(&env.signer()) {
        return Err(RosterError::Ticket("not signed by an admin"));
    }
    if t.neighbourhood != chain.neighbourhood() {
        return Err(RosterError::Ticket("another neighbourhood"));
    }
    if t.expires_ms <= t.issued_ms || t.expires_ms - t.issued_ms > MAX_TICKET_MS {
        return Err(RosterError::Ticket("validity out of range"));
    }
    if t.note.len() > MAX_NOTE_BYTES {
        return Err(RosterError::Ticket("note too long"));
    }
    check_ext(&t.ext)?;
    env.verify_signatures()
        .map_err(|_| RosterError::Ticket("signature"))?;
    Ok((t, ticket_id(&env)))
}

/// Signs a ticket valid from `now_ms` for `valid_ms`.
pub fn issue_ticket(
    chain: &CharterChain,
    admin: &NodeKey,
    token: [u8; 16],
    now_ms: u64,
    valid_ms: u64,
    note: &str,
) -> Envelope {
    let t = Ticket {
        neighbourhood: chain.neighbourhood(),
        token,
        issued_ms: now_ms,
        expires_ms: now_ms.saturating_add(valid_ms.clamp(1, MAX_TICKET_MS)),
        note: note.chars().take(MAX_NOTE_BYTES / 4).collect(),
        ext: Vec::new(),
    };
    Envelope::seal(&t, chain.at(now_ms).hash, admin)
}

/// Signs a membership record under the charter in effect at `issued_ms`.
pub fn sign_change(
    chain: &CharterChain,
    key: &NodeKey,
    issued_ms: u64,
    change: Change,
) -> Envelope {
    let m = Membership {
        neighbourhood: chain.neighbourhood(),
        issued_ms,
        change,
        ext: Vec::new(),
    };
    Envelope::seal(&m, chain.at(issued_ms).hash, key)
}

/// A record the roster holds.
#[derive(Debug, Clone)]
struct Record {
    bytes: Vec<u8>,
    m: Membership,
    /// For joins: the ticket id, its expiry and the joiner.
    join: Option<(Hash32, u64, NodeId)>,
    /// For migrations: whether an admin signed it (rather than the old key).
    by_admin: bool,
}

/// A member as the roster sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Its node id.
    pub node: NodeId,
    /// Its profile.
    pub profile: Profile,
    /// When it was admitted, UTC ms.
    pub since_ms: u64,
    /// How: `added`, `joined`, `migrated`.
    pub how: &'static str,
    /// The key it migrated from, if any.
    pub previous: Option<NodeId>,
}

/// What happened to a node's membership when a record was inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// It became a member.
    Admitted(NodeId),
    /// It stopped being one.
    Expelled(NodeId),
}

/// The membership records a node holds and the members they make.
#[derive(Debug, Clone)]
pub struct Roster {
    neighbourhood: NeighbourhoodId,
    admins: BTreeSet<NodeId>,
    records: BTreeMap<Hash32, Record>,
    joins_per_ticket: BTreeMap<Hash32, usize>,
    members: BTreeMap<NodeId, Member>,
    /// Nodes that were members once and are not now (removed or migrated away), with the
    /// node they migrated to, if any.
    former: BTreeMap<NodeId, Option<NodeId>>,
}

impl Roster {
    /// An empty roster for `chain`'s neighbourhood (its admins are members).
    pub fn new(chain: &CharterChain) -> Roster {
        let mut r = Roster {
            neighbourhood: chain.neighbourhood(),
            admins: BTreeSet::new(),
            records: BTreeMap::new(),
            joins_per_ticket: BTreeMap::new(),
            members: BTreeMap::new(),
            former: BTreeMap::new(),
        };
        r.set_chain(chain);
        r
    }

    /// Updates the admins after a charter change.
    pub fn set_chain(&mut self, chain: &CharterChain) {
        self.admins = chain.latest().charter.admins.iter().copied().collect();
    }

    /// Whether `node` is a member now.
    pub fn is_member(&self, node: &NodeId) -> bool {
        self.members.contains_key(node) || self.admins.contains(node)
    }

    /// Whether `node` was a member and has been removed or has migrated away.
    pub fn is_former(&self, node: &NodeId) -> bool {
        self.former.contains_key(node) && !self.is_member(node)
    }

    /// The node `node` migrated to, following a chain of migrations.
    pub fn successor(&self, node: &NodeId) -> Option<NodeId> {
        let mut cur = *node;
        let mut seen = 0;
        while let Some(Some(next)) = self.former.get(&cur) {
            cur = *next;
            seen += 1;
            if seen > 64 {
                break;
            }
        }
        (cur != *node).then_some(cur)
    }

    /// The current members, by node id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// A member's record.
    pub fn member(&self, node: &NodeId) -> Option<&Member> {
        self.members.get(node)
    }

    /// The charter admins.
    pub fn admins(&self) -> impl Iterator<Item = &NodeId> {
        self.admins.iter()
    }

    /// Every record's envelope bytes, in record-id order (for sync and storage).
    pub fn record_bytes(&self) -> impl Iterator<Item = (&Hash32, &[u8])> {
        self.records.iter().map(|(id, r)| (id, r.bytes.as_slice()))
    }

    /// How many records the roster holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether a ticket has been used by a join that admitted somebody.
    pub fn ticket_used(&self, ticket: &Hash32) -> bool {
        self.records.values().any(|r| {
            r.join
                .is_some_and(|(t, _, n)| &t == ticket && self.is_member(&n))
        })
    }

    /// Whether an admin revoked a ticket.
    pub fn ticket_revoked(&self, ticket: &Hash32) -> bool {
        self.records
            .values()
            .any(|r| matches!(&r.m.change, Change::Revoke { ticket: t } if t == ticket))
    }

    /// Checks a record and adds it. `fresh_now` is the receiver's clock for a record that
    /// arrived live (its timestamp must not be further ahead of it than the charter's clock
    /// skew); `None` for records loaded from storage or fetched by sync. Returns the membership transitions the
    /// record caused, or `None` when the record was already known.
    pub fn insert(
        &mut self,
        bytes: &[u8],
        chain: &CharterChain,
        fresh_now: Option<u64>,
    ) -> Result<Option<Vec<Transition>>, RosterError> {
        let id = Envelope::content_id(bytes);
        if self.records.contains_key(&id) {
            return Ok(None);
        }
        let record = self.check(bytes, chain, fresh_now)?;
        if self.records.len() >= MAX_RECORDS {
            return Err(RosterError::Full);
        }
        if let Some((ticket, _, _)) = record.join {
            let n = self.joins_per_ticket.entry(ticket).or_default();
            if *n >= MAX_JOINS_PER_TICKET {
                return Err(RosterError::Full);
            }
            *n += 1;
        }
        let before: BTreeSet<NodeId> = self.members.keys().copied().collect();
        self.records.insert(id, record);
        self.derive();
        let after: BTreeSet<NodeId> = self.members.keys().copied().collect();
        let mut out: Vec<Transition> = after
            .difference(&before)
            .map(|n| Transition::Admitted(*n))
            .collect();
        out.extend(before.difference(&after).map(|n| Transition::Expelled(*n)));
        Ok(Some(out))
    }

    fn check(
        &self,
        bytes: &[u8],
        chain: &CharterChain,
        fresh_now: Option<u64>,
    ) -> Result<Record, RosterError> {
        let env = Envelope::from_bytes(bytes)?;
        let m: Membership = env.payload_as()?;
        let charter = &chain
            .get(&env.charter)
            .ok_or(RosterError::UnknownCharter)?
            .charter;
        if m.neighbourhood != self.neighbourhood {
            return Err(RosterError::WrongNeighbourhood);
        }
        check_ext(&m.ext)?;
        if let Some(now) = fresh_now {
            // Only the future is refused: records are lasting facts, relayed long after they
            // were made (a newcomer's join reaches most members by a neighbour's relay).
            if m.issued_ms > now.saturating_add(charter.max_clock_skew_ms as u64) {
                return Err(RosterError::Stale);
            }
        }
        let signer = env.signer();
        let admin = charter.is_admin(&signer);
        let one = env.signatures.len() == 1;
        let mut join = None;
        let mut by_admin = false;
        match &m.change {
            Change::Add { profile, .. } => {
                check_profile(profile)?;
                if !(one && admin) {
                    return Err(RosterError::NotAuthorised("adding needs an admin"));
                }
            }
            Change::Remove { .. } | Change::Revoke { .. } => {
                if !(one && admin) {
                    return Err(RosterError::NotAuthorised("needs an admin"));
                }
            }
            Change::Join { ticket, profile } => {
                check_profile(profile)?;
                if !one {
                    return Err(RosterError::NotAuthorised("a join has one signature"));
                }
                let (t, tid) = open_ticket(ticket, chain)?;
                if m.issued_ms < t.issued_ms || m.issued_ms > t.expires_ms {
                    return Err(RosterError::Ticket("joined outside its validity"));
                }
                join = Some((tid, t.expires_ms, signer));
            }
            Change::Migrate { old, new } => {
                if old == new {
                    return Err(RosterError::Field("new"));
                }
                if one {
                    if !admin {
                        return Err(RosterError::NotAuthorised(
                            "a migration is signed by the new and old keys, or by an admin",
                        ));
                    }
                    by_admin = true;
                } else if env.signatures[0].signer != *new || env.signatures[1].signer != *old {
                    return Err(RosterError::NotAuthorised(
                        "a migration is signed by the new key, then the old key",
                    ));
                }
            }
        }
        env.verify_signatures()?;
        Ok(Record {
            bytes: bytes.to_vec(),
            m,
            join,
            by_admin,
        })
    }

    /// Recomputes the members from the records: every record is an event at its time, and the
    /// last event about a node decides.
    fn derive(&mut self) {
        // The winning join of each ticket, and each ticket's earliest revocation.
        let mut revoked: BTreeMap<Hash32, u64> = BTreeMap::new();
        for r in self.records.values() {
            if let Change::Revoke { ticket } = &r.m.change {
                let e = revoked.entry(*ticket).or_insert(r.m.issued_ms);
                *e = (*e).min(r.m.issued_ms);
            }
        }
        let mut winners: BTreeMap<Hash32, (u64, NodeId)> = BTreeMap::new();
        for r in self.records.values() {
            if let Some((ticket, _, node)) = r.join {
                if revoked.get(&ticket).is_some_and(|&t| t <= r.m.issued_ms) {
                    continue;
                }
                let cand = (r.m.issued_ms, node);
                let e = winners.entry(ticket).or_insert(cand);
                if cand < *e {
                    *e = cand;
                }
            }
        }
        // Events in time order; admissions (0) before removals (1) at the same millisecond.
        let mut events: Vec<(u64, u8, Hash32)> = Vec::new();
        for (id, r) in &self.records {
            let order = match &r.m.change {
                Change::Add { .. } | Change::Join { .. } => 0,
                Change::Migrate { .. } | Change::Remove { .. } => 1,
                Change::Revoke { .. } => continue,
            };
            events.push((r.m.issued_ms, order, *id));
        }
        events.sort();
        let mut members: BTreeMap<NodeId, Member> = BTreeMap::new();
        let mut former: BTreeMap<NodeId, Option<NodeId>> = BTreeMap::new();
        for (t, _, id) in events {
            let r = &self.records[&id];
            match &r.m.change {
                Change::Add { member, profile } => {
                    former.remove(member);
                    members.insert(
                        *member,
                        Member {
                            node: *member,
                            profile: profile.clone(),
                            since_ms: t,
                            how: "added",
                            previous: None,
                        },
                    );
                }
                Change::Join { profile, .. } => {
                    let Some((ticket, _, node)) = r.join else {
                        continue;
                    };
                    if winners.get(&ticket) != Some(&(t, node)) {
                        continue;
                    }
                    former.remove(&node);
                    members.insert(
                        node,
                        Member {
                            node,
                            profile: profile.clone(),
                            since_ms: t,
                            how: "joined",
                            previous: None,
                        },
                    );
                }
                Change::Remove { member } => {
                    if members.remove(member).is_some() || self.admins.contains(member) {
                        former.insert(*member, None);
                    }
                }
                Change::Migrate { old, new } => {
                    let was = members.get(old).cloned();
                    let old_counts = was.is_some() || self.admins.contains(old);
                    if !r.by_admin && !old_counts {
                        continue;
                    }
                    let profile = match (&was, members.get(new)) {
                        (Some(m), _) => m.profile.clone(),
                        (None, Some(m)) => m.profile.clone(),
                        (None, None) => Profile {
                            name: new.short(),
                            pv_capacity_w: 0,
                        },
                    };
                    members.remove(old);
                    former.insert(*old, Some(*new));
                    former.remove(new);
                    members.insert(
                        *new,
                        Member {
                            node: *new,
                            profile,
                            since_ms: t,
                            how: "migrated",
                            previous: Some(*old),
                        },
                    );
                }
                Change::Revoke { .. } => {}
            }
        }
        self.members = members;
        self.former = former;
    }
}

/// The X25519 public key of a node id (the Montgomery form of its ed25519 key).
fn x25519_public(node: &NodeId) -> Option<crypto_box::PublicKey> {
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&node.0).ok()?;
    Some(crypto_box::PublicKey::from(vk.to_montgomery().to_bytes()))
}

/// Seals `psk` to each of `members` (libsodium's sealed box to the X25519 form of each
/// ed25519 key). Members whose id is not a valid curve point are skipped.
pub fn seal_network_key(
    psk: &[u8; 32],
    members: &[NodeId],
    rng: &mut impl CryptoRngCore,
) -> Vec<SealedKey> {
    members
        .iter()
        .filter_map(|m| {
            let sealed = x25519_public(m)?.seal(rng, psk).ok()?;
            Some(SealedKey { member: *m, sealed })
        })
        .collect()
}

/// Opens the network key sealed to `key`, if one of `sealed` is for it.
pub fn open_network_key(key: &NodeKey, sealed: &[SealedKey]) -> Option<[u8; 32]> {
    let me = key.node_id();
    let s = sealed.iter().find(|s| s.member == me)?;
    if s.sealed.len() != SEALED_KEY_BYTES {
        return None;
    }
    let secret = crypto_box::SecretKey::from(key.x25519_secret_bytes());
    let plain = zeroize::Zeroizing::new(secret.unseal(&s.sealed).ok()?);
    plain.as_slice().try_into().ok()
}

/// When a rotated key applies: its epoch, when the rotation is signed and when members switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyTiming {
    /// The new key's epoch.
    pub epoch: u32,
    /// When the rotation is signed, UTC ms.
    pub issued_ms: u64,
    /// When members switch, UTC ms.
    pub effective_ms: u64,
}

/// Builds the signed [`Rekey`] parts: `psk` sealed to every one of `members`.
pub fn sign_rekey(
    chain: &CharterChain,
    admin: &NodeKey,
    psk: &[u8; 32],
    members: &[NodeId],
    timing: RekeyTiming,
    rng: &mut impl CryptoRngCore,
) -> Vec<Envelope> {
    let RekeyTiming {
        epoch,
        issued_ms,
        effective_ms,
    } = timing;
    let sealed = seal_network_key(psk, members, rng);
    let chunks: Vec<&[SealedKey]> = sealed.chunks(MAX_SEALED_PER_REKEY).collect();
    let parts = chunks.len().clamp(1, u8::MAX as usize) as u8;
    chunks
        .iter()
        .take(u8::MAX as usize)
        .enumerate()
        .map(|(i, c)| {
            let r = Rekey {
                neighbourhood: chain.neighbourhood(),
                epoch,
                issued_ms,
                effective_ms,
                part: i as u8,
                parts,
                sealed: c.to_vec(),
                ext: Vec::new(),
            };
            Envelope::seal(&r, chain.at(issued_ms).hash, admin)
        })
        .collect()
}

/// Opens a rekey envelope: one signature by an admin of the charter it names, fields in
/// range. Freshness is the caller's business (an older epoch is simply not newer).
pub fn open_rekey(bytes: &[u8], chain: &CharterChain) -> Result<Rekey, RosterError> {
    let env = Envelope::from_bytes(bytes)?;
    let r: Rekey = env.payload_as()?;
    let charter = &chain
        .get(&env.charter)
        .ok_or(RosterError::UnknownCharter)?
        .charter;
    if r.neighbourhood != chain.neighbourhood() {
        return Err(RosterError::WrongNeighbourhood);
    }
    if env.signatures.len() != 1 || !charter.is_admin(&env.signer()) {
        return Err(RosterError::NotAuthorised("a rekey is signed by one admin"));
    }
    if r.epoch == 0 || r.parts == 0 || r.part >= r.parts {
        return Err(RosterError::Field("part"));
    }
    if r.sealed.len() > MAX_SEALED_PER_REKEY
        || r.sealed.iter().any(|s| s.sealed.len() != SEALED_KEY_BYTES)
    {
        return Err(RosterError::Field("sealed"));
    }
    check_ext(&r.ext)?;
    env.verify_signatures()?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    const T0: u64 = sample::NOW_MS;
    const DAY: u64 = 86_400_000;

    fn timing(epoch: u32, effective_ms: u64) -> RekeyTiming {
        RekeyTiming {
            epoch,
            issued_ms: T0,
            effective_ms,
        }
    }

    fn key(n: u8) -> NodeKey {
        NodeKey::from_secret(&[n; 32])
    }

    fn profile(name: &str) -> Profile {
        Profile {
            name: name.into(),
            pv_capacity_w: 5_000,
        }
    }

    fn ticket(token: u8, at: u64) -> Vec<u8> {
        issue_ticket(
            &sample::chain(),
            &sample::admin_key(),
            [token; 16],
            at,
            DAY,
            "x",
        )
        .to_bytes()
    }

    fn join(k: &NodeKey, ticket: &[u8], at: u64) -> Vec<u8> {
        let change = Change::Join {
            ticket: ticket.to_vec(),
            profile: profile("Newcomer"),
        };
        sign_change(&sample::chain(), k, at, change).to_bytes()
    }

    fn admin(at: u64, change: Change) -> Vec<u8> {
        sign_change(&sample::chain(), &sample::admin_key(), at, change).to_bytes()
    }

    #[test]
    fn a_ticket_admits_one_newcomer_once_and_not_after_it_expires() {
        let chain = sample::chain();
        let mut r = Roster::new(&chain);
        let t = ticket(1, T0);
        let a = key(10);
        assert!(!r.is_member(&a.node_id()));
        let rec = join(&a, &t, T0 + 5);
        let got = r.insert(&rec, &chain, Some(T0 + 5)).unwrap();
        assert_eq!(got, Some(vec![Transition::Admitted(a.node_id())]));
        assert_eq!(r.insert(&rec, &chain, None).unwrap(), None);
        assert!(r.is_member(&a.node_id()));
        // A second newcomer with the same ticket admits nobody.
        let b = key(11);
        assert_eq!(
            r.insert(&join(&b, &t, T0 + 9), &chain, None).unwrap(),
            Some(vec![])
        );
        assert!(!r.is_member(&b.node_id()));
        // After expiry the join itself is refused.
        let t2 = ticket(2, T0);
        assert!(matches!(
            r.insert(&join(&b, &t2, T0 + DAY + 1), &chain, None),
            Err(RosterError::Ticket(_))
        ));
        // Order does not matter: the same records the other way round give the same members.
        let mut r2 = Roster::new(&chain);
        r2.insert(&join(&b, &t, T0 + 9), &chain, None).unwrap();
        assert!(r2.is_member(&b.node_id()));
        let got = r2
            .insert(&join(&a, &t, T0 + 5), &chain, None)
            .unwrap()
            .unwrap();
        assert!(got.contains(&Transition::Admitted(a.node_id())));
        assert!(got.contains(&Transition::Expelled(b.node_id())));
        assert!(r2.ticket_used(&ticket_id(&Envelope::from_bytes(&t).unwrap())));
    }

    #[test]
    fn only_an_admins_ticket_admits_and_a_revoked_ticket_admits_nobody() {
        let chain = sample::chain();
        let mut r = Roster::new(&chain);
        let forged = issue_ticket(&chain, &key(50), [3; 16], T0, DAY, "x").to_bytes();
        assert!(matches!(
            r.insert(&join(&key(12), &forged, T0), &chain, None),
            Err(RosterError::Ticket(_))
        ));
        let t = ticket(4, T0);
        let tid = ticket_id(&Envelope::from_bytes(&t).unwrap());
        r.insert(
            &admin(T0 + 10, Change::Revoke { ticket: tid }),
            &chain,
            None,
        )
        .unwrap();
        r.insert(&join(&key(12), &t, T0 + 20), &chain, None)
            .unwrap();
        assert!(!r.is_member(&key(12).node_id()));
        assert!(r.ticket_revoked(&tid));
        // A non-admin cannot add, remove or revoke.
        let add = sign_change(
            &chain,
            &key(13),
            T0,
            Change::Add {
                member: key(14).node_id(),
                profile: profile("Sybil"),
            },
        );
        assert!(matches!(
            r.insert(&add.to_bytes(), &chain, None),
            Err(RosterError::NotAuthorised(_))
        ));
    }

    #[test]
    fn removal_and_readmission_follow_time_not_arrival() {
        let chain = sample::chain();
        let m = key(20).node_id();
        let add = admin(
            T0,
            Change::Add {
                member: m,
                profile: profile("Ann"),
            },
        );
        let remove = admin(T0 + 100, Change::Remove { member: m });
        let readd = admin(
            T0 + 200,
            Change::Add {
                member: m,
                profile: profile("Ann"),
            },
        );
        let mut a = Roster::new(&chain);
        let mut b = Roster::new(&chain);
        for rec in [&add, &remove] {
            a.insert(rec, &chain, None).unwrap();
        }
        for rec in [&remove, &add] {
            b.insert(rec, &chain, None).unwrap();
        }
        assert!(!a.is_member(&m) && !b.is_member(&m));
        assert!(a.is_former(&m));
        a.insert(&readd, &chain, None).unwrap();
        assert!(a.is_member(&m));
    }

    #[test]
    fn migration_needs_both_keys_or_an_admin() {
        let chain = sample::chain();
        let (old, new) = (key(30), key(31));
        let mut r = Roster::new(&chain);
        r.insert(
            &admin(
                T0,
                Change::Add {
                    member: old.node_id(),
                    profile: profile("Bo"),
                },
            ),
            &chain,
            None,
        )
        .unwrap();
        let change = Change::Migrate {
            old: old.node_id(),
            new: new.node_id(),
        };
        // The new key alone is not enough.
        let only_new = sign_change(&chain, &new, T0 + 1, change.clone());
        assert!(r.insert(&only_new.to_bytes(), &chain, None).is_err());
        let mut both = only_new.clone();
        both.add_signature(&old);
        let got = r.insert(&both.to_bytes(), &chain, None).unwrap().unwrap();
        assert!(got.contains(&Transition::Admitted(new.node_id())));
        assert!(got.contains(&Transition::Expelled(old.node_id())));
        assert_eq!(r.member(&new.node_id()).unwrap().profile.name, "Bo");
        assert_eq!(r.successor(&old.node_id()), Some(new.node_id()));
        // An admin can migrate a member whose key was stolen.
        let lost = key(32);
        let moved = key(33);
        r.insert(
            &admin(
                T0,
                Change::Add {
                    member: lost.node_id(),
                    profile: profile("Cy"),
                },
            ),
            &chain,
            None,
        )
        .unwrap();
        let by_admin = admin(
            T0 + 5,
            Change::Migrate {
                old: lost.node_id(),
                new: moved.node_id(),
            },
        );
        r.insert(&by_admin, &chain, None).unwrap();
        assert!(r.is_member(&moved.node_id()) && !r.is_member(&lost.node_id()));
    }

    #[test]
    fn live_records_may_be_old_but_not_from_the_future() {
        let chain = sample::chain();
        let mut r = Roster::new(&chain);
        let rec = admin(
            T0,
            Change::Add {
                member: key(40).node_id(),
                profile: profile("Di"),
            },
        );
        assert_eq!(
            r.insert(&rec, &chain, Some(T0 - 3_600_000)),
            Err(RosterError::Stale)
        );
        assert!(r.insert(&rec, &chain, Some(T0 + 86_400_000)).is_ok());
    }

    #[test]
    fn a_presence_is_signed_by_its_node_and_bounded() {
        let chain = sample::chain();
        let k = key(70);
        let addrs = vec!["/ip4/203.0.113.7/tcp/4100".to_string()];
        let env = sign_presence(&chain, &k, T0, addrs.clone());
        let p = open_presence(&env.to_bytes(), &chain).unwrap();
        assert_eq!((p.node, p.addrs), (k.node_id(), addrs));
        // Someone else's signature over it is refused.
        let mut forged = env.clone();
        forged.signatures.clear();
        forged.add_signature(&key(71));
        assert!(open_presence(&forged.to_bytes(), &chain).is_err());
        // Too many addresses are cut when signing and refused when received.
        let many: Vec<String> = (0..20).map(|i| format!("/ip4/10.0.0.{i}/tcp/1")).collect();
        let env = sign_presence(&chain, &k, T0, many.clone());
        assert_eq!(
            open_presence(&env.to_bytes(), &chain).unwrap().addrs.len(),
            MAX_PRESENCE_ADDRS
        );
        let p = Presence {
            neighbourhood: chain.neighbourhood(),
            node: k.node_id(),
            issued_ms: T0,
            addrs: many,
            ext: Vec::new(),
        };
        let env = Envelope::seal(&p, chain.at(T0).hash, &k);
        assert_eq!(
            open_presence(&env.to_bytes(), &chain),
            Err(RosterError::Field("addrs"))
        );
    }

    #[test]
    fn a_sealed_network_key_opens_only_for_its_member() {
        let chain = sample::chain();
        let psk = [9u8; 32];
        let (a, b, c) = (key(60), key(61), key(62));
        let mut rng = rand_core::OsRng;
        let parts = sign_rekey(
            &chain,
            &sample::admin_key(),
            &psk,
            &[a.node_id(), b.node_id()],
            timing(1, T0 + 10_000),
            &mut rng,
        );
        assert_eq!(parts.len(), 1);
        let rekey = open_rekey(&parts[0].to_bytes(), &chain).unwrap();
        assert_eq!(open_network_key(&a, &rekey.sealed), Some(psk));
        assert_eq!(open_network_key(&b, &rekey.sealed), Some(psk));
        assert_eq!(open_network_key(&c, &rekey.sealed), None);
        // Many members split into parts that each fit an envelope.
        let many: Vec<NodeId> = (100..160).map(|n| key(n).node_id()).collect();
        let parts = sign_rekey(
            &chain,
            &sample::admin_key(),
            &psk,
            &many,
            timing(2, T0),
            &mut rng,
        );
        assert_eq!(parts.len(), 3);
        for p in &parts {
            assert!(open_rekey(&p.to_bytes(), &chain).is_ok());
        }
        // Only an admin may rekey.
        let forged = sign_rekey(&chain, &a, &psk, &[a.node_id()], timing(3, T0), &mut rng);
        assert!(open_rekey(&forged[0].to_bytes(), &chain).is_err());
    }
}
