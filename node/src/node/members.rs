//! Membership in the running node: the roster, invites, removal with a network key rotation,
//! charter amendments, and which peers may stay connected.
//!
//! Every membership message, whether this node made it, fetched it by sync or received it by
//! gossip, goes through the validation worker, which puts it in the shared roster (or on the
//! charter chain) and hands it back here to be stored, acted on and, unless it came by gossip
//! (which forwards it by itself), published.

use super::Core;
use crate::neighbourhood::{self, Invite};
use crate::net::{self, behaviour::TopicKind};
use crate::worker::Work;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use wattmesh_protocol::charter::{Charter, SignedCharter};
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::roster::{self, Change, Rekey, Transition};
use wattmesh_protocol::sync::{MAX_SYNC_ITEMS, SyncRequest, SyncResponse};
use wattmesh_protocol::{Hash32, NodeId};

/// How long a peer that is not (yet) a member may stay connected: long enough for a newcomer's
/// join record to reach the node by sync.
pub const PROBATION: Duration = Duration::from_secs(30);
/// How long after a rotation is signed members switch to the new key (application time):
/// enough for the rotation to spread by gossip over connections that stay up.
pub const REKEY_DELAY_MS: u64 = 10_000;
/// The default validity of an invite.
pub const DEFAULT_INVITE_SECS: u64 = 7 * 86_400;

/// What the owner asks for when issuing an invite.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InviteArgs {
    /// Addresses to put in it (the node's own if empty).
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Who it is for (kept in the admin's list).
    #[serde(default)]
    pub note: String,
    /// How long it stays valid, seconds (a week if 0).
    #[serde(default)]
    pub valid_secs: u64,
}

/// An issued invite.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InviteOut {
    /// The code to give the newcomer.
    pub code: String,
    /// The ticket's id (to revoke it).
    pub ticket_id: String,
    /// When it expires, UTC ms.
    pub expires_ms: u64,
}

/// A member as the owner sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberView {
    /// Full node id (hex).
    pub node_id: String,
    /// Short id.
    pub short_id: String,
    /// The name it chose.
    pub name: String,
    /// Declared PV capacity, W.
    pub pv_capacity_w: u32,
    /// Member since, UTC ms (0 for an admin named only by the charter).
    pub since_ms: u64,
    /// `added`, `joined`, `migrated` or `charter` (an admin).
    pub how: String,
    /// Whether it is a charter admin.
    pub admin: bool,
    /// Whether it is this node.
    pub me: bool,
    /// Whether it is connected now.
    pub online: bool,
    /// The key it migrated from, if any (hex).
    pub previous: Option<String>,
    /// The addresses it last shared (its signed presence).
    #[serde(default)]
    pub addrs: Vec<String>,
}

/// A ticket this node issued, and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketView {
    /// Its id (hex).
    pub id: String,
    /// Who it was for.
    pub note: String,
    /// Issued, UTC ms.
    pub issued_ms: u64,
    /// Expires, UTC ms.
    pub expires_ms: u64,
    /// `open`, `used`, `expired` or `revoked`.
    pub status: String,
}

/// A change to the charter, by an admin. Absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Amendment {
    /// Delivery slot length, minutes.
    #[serde(default)]
    pub slot_minutes: Option<u8>,
    /// Feed-in tariff, thousandths of a minor unit per kWh.
    #[serde(default)]
    pub feed_in_price: Option<u64>,
    /// Retail tariff, thousandths of a minor unit per kWh.
    #[serde(default)]
    pub retail_price: Option<u64>,
    /// Gate closure, seconds before the slot.
    #[serde(default)]
    pub gate_closure_secs: Option<u32>,
    /// Settlement grace, seconds after the slot.
    #[serde(default)]
    pub settlement_grace_secs: Option<u32>,
    /// A node to make an admin too (hex id).
    #[serde(default)]
    pub add_admin: Option<String>,
    /// When the new version takes effect, UTC ms (now + 1 hour if absent).
    #[serde(default)]
    pub effective_ms: Option<u64>,
}

/// Fetches a peer's charter versions from `from_version` on and its whole roster, and queues
/// them for the worker. False when the worker has stopped.
async fn sync_members(
    net: &net::NetHandle,
    work: &tokio::sync::mpsc::Sender<Work>,
    peer: PeerId,
    from_version: u32,
) -> bool {
    let req = SyncRequest::Charters { from_version };
    if let Ok(Ok(SyncResponse::Envelopes { items, .. })) = net.sync(peer, req).await {
        for item in items.into_iter().take(MAX_SYNC_ITEMS) {
            if work.send(Work::Members(item)).await.is_err() {
                return false;
            }
        }
    }
    let mut skip = 0u32;
    for _ in 0..64 {
        let req = SyncRequest::Roster { skip };
        let Ok(Ok(SyncResponse::Envelopes { items, more })) = net.sync(peer, req).await else {
            break;
        };
        let n = items.len().min(MAX_SYNC_ITEMS);
        for item in items.into_iter().take(MAX_SYNC_ITEMS) {
            if work.send(Work::Members(item)).await.is_err() {
                return false;
            }
        }
        if !more || n == 0 {
            break;
        }
        skip += n as u32;
    }
    true
}

/// Finds the one member or former member whose hex id starts with `prefix` (at least 8
/// characters, or the short form `abcd-ef01`).
fn resolve(candidates: impl Iterator<Item = NodeId>, prefix: &str) -> Result<NodeId, String> {
    let p: String = prefix
        .trim()
        .chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    if p.len() < 8 {
        return Err("give at least 8 hex digits of the node id".into());
    }
    let found: Vec<NodeId> = candidates.filter(|n| n.to_hex().starts_with(&p)).collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("no member's id starts with {prefix}")),
        _ => Err(format!(
            "{prefix} matches several members; give more digits"
        )),
    }
}

impl Core {
    /// Whether `node` is a member now.
    pub(super) fn is_member(&self, node: &NodeId) -> bool {
        neighbourhood::read(&self.n.roster).is_member(node)
    }

    fn am_admin(&self) -> bool {
        let now = self.clock.now_ms();
        self.n.chain.at(now).charter.is_admin(&self.key.node_id())
            || self.n.chain.latest().charter.is_admin(&self.key.node_id())
    }

    /// Hands a membership message this node made to the worker, which checks it like any
    /// other and sends it back to be stored and published.
    async fn submit(&self, bytes: Vec<u8>) -> Result<(), String> {
        self.work
            .send(Work::Members(bytes))
            .await
            .map_err(|_| "the validation worker stopped".to_string())
    }

    async fn publish_member_msg(&self, bytes: Vec<u8>) {
        if let Ok(Err(e)) = self.net.publish(TopicKind::Members, bytes).await {
            // Without mesh peers yet; sync carries it when peers connect.
            debug!("membership message not published now: {e}");
        }
    }

    /// A membership record new to this node (already in the shared roster).
    pub(super) async fn on_roster(
        &mut self,
        bytes: Vec<u8>,
        transitions: Vec<Transition>,
        publish: bool,
    ) {
        let id = Envelope::content_id(&bytes).0;
        let store = self.store.clone();
        let record = bytes.clone();
        match tokio::task::spawn_blocking(move || store.put_roster(&[(id, record)])).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!("storing a membership record failed: {e}"),
            Err(e) => warn!("storing a membership record panicked: {e}"),
        }
        let me = self.key.node_id();
        for t in transitions {
            match t {
                Transition::Admitted(n) => {
                    info!(member = %n.short(), "admitted to the neighbourhood");
                    if let Some(p) = net::peer_id_of(&n) {
                        // Offers it gossiped before we knew it were ignored; fetch them now.
                        if self.probation.remove(&p).is_some() {
                            self.catch_up(p);
                        }
                    }
                }
                Transition::Expelled(n) if n == me => {
                    warn!("this node is no longer a member of the neighbourhood");
                }
                Transition::Expelled(n) => {
                    self.presence.remove(&n);
                    info!(member = %n.short(), "no longer a member; disconnecting it");
                    if let Some(p) = net::peer_id_of(&n) {
                        self.net.disconnect(p, true);
                    }
                }
            }
        }
        if publish {
            self.publish_member_msg(bytes).await;
        }
    }

    /// A charter version new to this node (already on the worker's chain).
    pub(super) async fn on_charter(&mut self, bytes: Vec<u8>, publish: bool) {
        let Ok(env) = Envelope::from_bytes(&bytes) else {
            return;
        };
        let mut chain = self.n.chain.clone();
        let version = match chain.push(env) {
            Ok(c) => c.charter.version,
            Err(e) => {
                debug!("charter version not adopted: {e}");
                return;
            }
        };
        let store = self.store.clone();
        let record = bytes.clone();
        match tokio::task::spawn_blocking(move || store.put_charter(version, &record)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!("storing a charter failed: {e}"),
            Err(e) => warn!("storing a charter panicked: {e}"),
        }
        info!(
            version,
            effective_ms = chain.latest().charter.effective_ms,
            "new charter version"
        );
        neighbourhood::write(&self.n.roster).set_chain(&chain);
        self.market.set_chain(chain.clone());
        self.n.chain = chain;
        if publish {
            self.publish_member_msg(bytes).await;
        }
    }

    /// A key rotation part: if it is newer than our key and carries a key sealed to us, we
    /// switch at its effective time.
    pub(super) async fn on_rekey(&mut self, bytes: Vec<u8>, rekey: Rekey, publish: bool) {
        let store = self.store.clone();
        let (epoch, part) = (rekey.epoch, rekey.part);
        let record = bytes.clone();
        match tokio::task::spawn_blocking(move || store.put_rekey(epoch, part, &record)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!("storing a key rotation failed: {e}"),
            Err(e) => warn!("storing a key rotation panicked: {e}"),
        }
        if rekey.epoch > self.n.epoch
            && self
                .pending_rekey
                .as_ref()
                .is_none_or(|p| p.0 < rekey.epoch)
        {
            if let Some(psk) = roster::open_network_key(&self.key, &rekey.sealed) {
                info!(
                    epoch = rekey.epoch,
                    effective_ms = rekey.effective_ms,
                    "received a new network key"
                );
                self.pending_rekey = Some((rekey.epoch, rekey.effective_ms, psk));
            }
        }
        if publish {
            self.publish_member_msg(bytes).await;
        }
    }

    /// A member's addresses: the newest per member is kept, handed to the network's address
    /// book (so dialling the member by id tries them) and served by roster sync.
    pub(super) async fn on_presence(&mut self, bytes: Vec<u8>, p: roster::Presence, publish: bool) {
        if self
            .presence
            .get(&p.node)
            .is_some_and(|(t, _)| *t >= p.issued_ms)
        {
            return;
        }
        if p.node != self.key.node_id() {
            if let Some(peer) = net::peer_id_of(&p.node) {
                let addrs: Vec<libp2p::Multiaddr> =
                    p.addrs.iter().filter_map(|a| a.parse().ok()).collect();
                let _ = self.net.add_addresses(peer, addrs).await;
            }
        }
        // Bounded by the roster: only members' presence gets here.
        self.presence.insert(p.node, (p.issued_ms, bytes.clone()));
        if publish {
            self.publish_member_msg(bytes).await;
        }
    }

    /// Signs and shares this node's addresses (when they change, and every ten minutes so
    /// that members who missed one learn them).
    pub(super) async fn share_presence(&mut self, addrs: Vec<libp2p::Multiaddr>) {
        if addrs.is_empty() {
            return;
        }
        self.presence_shared = Some(Instant::now());
        let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        let env = roster::sign_presence(&self.n.chain, &self.key, self.clock.now_ms(), addrs);
        let _ = self.submit(env.to_bytes()).await;
    }

    /// Re-shares this node's addresses if it has not for ten minutes.
    pub(super) async fn refresh_presence(&mut self) {
        if self
            .presence_shared
            .is_some_and(|t| t.elapsed() < Duration::from_secs(600))
        {
            return;
        }
        let addrs = self.net.external_addresses().await.unwrap_or_default();
        self.share_presence(addrs).await;
    }

    /// Switches to a received network key once its time has come.
    pub(super) async fn apply_rekey(&mut self) {
        let Some((epoch, at, psk)) = self.pending_rekey else {
            return;
        };
        if self.clock.now_ms() < at {
            return;
        }
        self.pending_rekey = None;
        let (dir, store) = (self.data_dir.clone(), self.store.clone());
        let saved = tokio::task::spawn_blocking(move || {
            crate::neighbourhood::Neighbourhood::replace_psk(&dir, &psk)?;
            store.put_meta("psk_epoch", &epoch.to_le_bytes())?;
            anyhow::Ok(())
        })
        .await;
        match saved {
            Ok(Ok(())) => {
                self.net.set_network_key(psk);
                self.n.psk = psk;
                self.n.epoch = epoch;
                info!(epoch, "switched to the rotated network key");
            }
            Ok(Err(e)) => warn!("saving the rotated network key failed: {e:#}"),
            Err(e) => warn!("saving the rotated network key panicked: {e}"),
        }
    }

    /// A peer connected: fetch its roster (a newcomer brings its own join record) and any
    /// charter versions we lack, and start its probation if it is not a member.
    pub(super) fn on_connected(&mut self, peer: PeerId) {
        match net::node_id_of(&peer) {
            Some(n) if self.is_member(&n) => {}
            Some(n) if neighbourhood::read(&self.n.roster).is_former(&n) => {
                info!(peer = %n.short(), "a removed member connected; refusing it");
                self.net.disconnect(peer, true);
                return;
            }
            _ => {
                self.probation.insert(peer, Instant::now());
            }
        }
        let (net, work, done) = (self.net.clone(), self.work.clone(), self.synced_tx.clone());
        let from_version = self.n.chain.latest().charter.version + 1;
        tokio::spawn(async move {
            if sync_members(&net, &work, peer, from_version).await {
                // The worker takes its queue in order: everything fetched after this is
                // judged with the roster just fetched.
                let _ = done.send(peer).await;
            }
        });
    }

    /// Disconnects peers whose probation ran out before they became members.
    pub(super) fn end_probations(&mut self) {
        let expired: Vec<PeerId> = self
            .probation
            .iter()
            .filter(|(_, since)| since.elapsed() >= PROBATION)
            .map(|(p, _)| *p)
            .collect();
        for p in expired {
            self.probation.remove(&p);
            let member = net::node_id_of(&p).is_some_and(|n| self.is_member(&n));
            if !member {
                info!(%p, "not a member after its probation; disconnecting");
                self.net.disconnect(p, false);
            }
        }
    }

    /// One page of the roster and the key rotations, for sync.
    pub(super) async fn roster_page(&self, skip: u32) -> SyncResponse {
        let mut all: Vec<Vec<u8>> = neighbourhood::read(&self.n.roster)
            .record_bytes()
            .map(|(_, b)| b.to_vec())
            .collect();
        let store = self.store.clone();
        if let Ok(Ok(rekeys)) = tokio::task::spawn_blocking(move || store.rekeys()).await {
            all.extend(rekeys);
        }
        all.extend(self.presence.values().map(|(_, b)| b.clone()));
        let start = (skip as usize).min(all.len());
        let items: Vec<Vec<u8>> = all[start..].iter().take(MAX_SYNC_ITEMS).cloned().collect();
        let more = start + items.len() < all.len();
        SyncResponse::Envelopes { items, more }
    }

    /// Issues an invite: a ticket signed by this node (an admin) in a code with the network
    /// key, the charters and addresses to dial.
    pub(super) async fn invite(&mut self, args: InviteArgs) -> Result<InviteOut, String> {
        if !self.am_admin() {
            return Err("only an admin of the neighbourhood can issue invites; \
                        `wattmesh members` shows who the admins are"
                .into());
        }
        let bootstrap = if args.bootstrap.is_empty() {
            self.dialable_addrs().await
        } else {
            args.bootstrap
        };
        let now = self.clock.now_ms();
        let valid_ms = if args.valid_secs == 0 {
            DEFAULT_INVITE_SECS
        } else {
            args.valid_secs
        }
        .saturating_mul(1000);
        let mut token = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut token);
        let env = roster::issue_ticket(&self.n.chain, &self.key, token, now, valid_ms, &args.note);
        let id = roster::ticket_id(&env);
        let ticket = env.to_bytes();
        let store = self.store.clone();
        let record = ticket.clone();
        tokio::task::spawn_blocking(move || store.put_ticket(&id.0, &record))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("storing the ticket: {e}"))?;
        let expires_ms = roster::open_ticket(&ticket, &self.n.chain)
            .map(|(t, _)| t.expires_ms)
            .map_err(|e| e.to_string())?;
        let invite = Invite {
            psk: self.n.psk,
            epoch: self.n.epoch,
            charters: self
                .n
                .chain
                .versions()
                .iter()
                .map(|c| c.envelope.to_bytes())
                .collect(),
            bootstrap,
            ticket,
        };
        Ok(InviteOut {
            code: invite.to_code(),
            ticket_id: id.to_hex(),
            expires_ms,
        })
    }

    /// The members, as the owner sees them.
    pub(super) async fn member_list(&self) -> Vec<MemberView> {
        let online: std::collections::HashSet<String> = self
            .net
            .peers()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.peer_id)
            .collect();
        let me = self.key.node_id();
        let charter = &self.n.chain.latest().charter;
        let r = neighbourhood::read(&self.n.roster);
        let is_online = |n: &NodeId| {
            n == &me || net::peer_id_of(n).is_some_and(|p| online.contains(&p.to_string()))
        };
        let mut out: Vec<MemberView> = r
            .members()
            .map(|m| MemberView {
                node_id: m.node.to_hex(),
                short_id: m.node.short(),
                name: m.profile.name.clone(),
                pv_capacity_w: m.profile.pv_capacity_w,
                since_ms: m.since_ms,
                how: m.how.to_string(),
                admin: charter.is_admin(&m.node),
                me: m.node == me,
                online: is_online(&m.node),
                previous: m.previous.map(|p| p.to_hex()),
                addrs: self.shared_addrs(&m.node),
            })
            .collect();
        for a in &charter.admins {
            if r.member(a).is_none() {
                out.push(MemberView {
                    node_id: a.to_hex(),
                    short_id: a.short(),
                    name: format!("admin {}", a.short()),
                    pv_capacity_w: 0,
                    since_ms: 0,
                    how: "charter".into(),
                    admin: true,
                    me: *a == me,
                    online: is_online(a),
                    previous: None,
                    addrs: self.shared_addrs(a),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.node_id.cmp(&b.node_id)));
        out
    }

    /// The addresses `node` last shared.
    fn shared_addrs(&self, node: &NodeId) -> Vec<String> {
        self.presence
            .get(node)
            .and_then(|(_, b)| Envelope::from_bytes(b).ok())
            .and_then(|e| e.payload_as::<roster::Presence>().ok())
            .map(|p| p.addrs)
            .unwrap_or_default()
    }

    /// The tickets this node issued.
    pub(super) async fn ticket_list(&self) -> Result<Vec<TicketView>, String> {
        let store = self.store.clone();
        let raw = tokio::task::spawn_blocking(move || store.tickets())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let now = self.clock.now_ms();
        let r = neighbourhood::read(&self.n.roster);
        let mut out: Vec<TicketView> = raw
            .iter()
            .filter_map(|bytes| {
                let (t, id) = roster::open_ticket(bytes, &self.n.chain).ok()?;
                let status = if r.ticket_used(&id) {
                    "used"
                } else if r.ticket_revoked(&id) {
                    "revoked"
                } else if now > t.expires_ms {
                    "expired"
                } else {
                    "open"
                };
                Some(TicketView {
                    id: id.to_hex(),
                    note: t.note,
                    issued_ms: t.issued_ms,
                    expires_ms: t.expires_ms,
                    status: status.into(),
                })
            })
            .collect();
        out.sort_by_key(|t| std::cmp::Reverse(t.issued_ms));
        Ok(out)
    }

    /// Revokes a ticket this node issued, by id prefix.
    pub(super) async fn revoke(&mut self, prefix: &str) -> Result<String, String> {
        if !self.am_admin() {
            return Err("only an admin can revoke invites".into());
        }
        let p = prefix.trim().to_ascii_lowercase();
        if p.len() < 8 {
            return Err("give at least 8 hex digits of the ticket id".into());
        }
        let tickets = self.ticket_list().await?;
        let found: Vec<&TicketView> = tickets.iter().filter(|t| t.id.starts_with(&p)).collect();
        let t = match found.as_slice() {
            [one] => *one,
            [] => return Err(format!("no ticket of this node starts with {prefix}")),
            _ => return Err(format!("{prefix} matches several tickets")),
        };
        if t.status == "used" {
            return Err("that invite was already used; remove the member instead".into());
        }
        let mut id = [0u8; 32];
        hex::decode_to_slice(&t.id, &mut id).map_err(|e| e.to_string())?;
        let change = Change::Revoke { ticket: Hash32(id) };
        let env = roster::sign_change(&self.n.chain, &self.key, self.clock.now_ms(), change);
        self.submit(env.to_bytes()).await?;
        Ok(format!("revoked invite {}", &t.id[..16]))
    }

    /// Removes a member and rotates the network key to every remaining member. With
    /// `moved_to`, the member lost its key: its membership moves to the new node id (a
    /// migration signed by this admin) and the old key is shut out the same way.
    pub(super) async fn remove(
        &mut self,
        prefix: &str,
        moved_to: Option<&str>,
    ) -> Result<String, String> {
        if !self.am_admin() {
            return Err("only an admin can remove members".into());
        }
        let new = moved_to
            .map(|h| NodeId::from_hex(h.trim()).map_err(|_| "moved_to: give the full node id"))
            .transpose()?;
        let (member, remaining) = {
            let r = neighbourhood::read(&self.n.roster);
            let member = resolve(r.members().map(|m| m.node), prefix)?;
            let mut remaining: Vec<NodeId> = r
                .members()
                .map(|m| m.node)
                .chain(r.admins().copied())
                .chain(new)
                .filter(|n| *n != member)
                .collect();
            remaining.sort();
            remaining.dedup();
            (member, remaining)
        };
        if self.n.chain.latest().charter.is_admin(&member) {
            return Err("an admin is removed by a charter amendment, not here".into());
        }
        let now = self.clock.now_ms();
        let change = match new {
            Some(new) => Change::Migrate { old: member, new },
            None => Change::Remove { member },
        };
        let env = roster::sign_change(&self.n.chain, &self.key, now, change);
        self.submit(env.to_bytes()).await?;
        let mut psk = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut psk);
        let epoch = self.n.epoch.max(self.pending_rekey.map_or(0, |p| p.0)) + 1;
        let parts = roster::sign_rekey(
            &self.n.chain,
            &self.key,
            &psk,
            &remaining,
            roster::RekeyTiming {
                epoch,
                issued_ms: now,
                effective_ms: now + REKEY_DELAY_MS,
            },
            &mut rand_core::OsRng,
        );
        for p in parts {
            self.submit(p.to_bytes()).await?;
        }
        Ok(format!(
            "removed {}; {} remaining members move to a new network key (epoch {epoch}) in {} s",
            member.short(),
            remaining.len(),
            REKEY_DELAY_MS / 1000
        ))
    }

    /// Signs a new charter version with the changes asked for.
    pub(super) async fn amend(&mut self, a: Amendment) -> Result<String, String> {
        if !self.am_admin() {
            return Err("only an admin can amend the charter".into());
        }
        let now = self.clock.now_ms();
        let prev: SignedCharter = self.n.chain.latest().clone();
        let mut c: Charter = prev.charter.clone();
        c.version += 1;
        c.effective_ms = a.effective_ms.unwrap_or(now + 3_600_000).max(now);
        if let Some(v) = a.slot_minutes {
            c.slot_minutes = v;
        }
        if let Some(v) = a.feed_in_price {
            c.feed_in_price = v;
        }
        if let Some(v) = a.retail_price {
            c.retail_price = v;
        }
        if let Some(v) = a.gate_closure_secs {
            c.gate_closure_secs = v;
        }
        if let Some(v) = a.settlement_grace_secs {
            c.settlement_grace_secs = v;
        }
        if let Some(id) = &a.add_admin {
            let n = NodeId::from_hex(id.trim()).map_err(|_| "add_admin: not a node id")?;
            if !c.admins.contains(&n) {
                c.admins.push(n);
                c.admins.sort();
            }
        }
        let signed = SignedCharter::amend(&prev, c, &self.key).map_err(|e| e.to_string())?;
        let version = signed.charter.version;
        let at = signed.charter.effective_ms;
        self.submit(signed.envelope.to_bytes()).await?;
        Ok(format!(
            "signed charter version {version}, effective at {at} (UTC ms)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resolve_by_prefix_or_short_form() {
        let a = NodeId([0xab; 32]);
        let b = NodeId([0xac; 32]);
        let all = [a, b];
        assert_eq!(resolve(all.iter().copied(), "abababab"), Ok(a));
        assert_eq!(resolve(all.iter().copied(), "acac-acac"), Ok(b));
        assert!(resolve(all.iter().copied(), "abab").is_err());
        assert!(resolve(all.iter().copied(), "ffffffff").is_err());
    }
}
