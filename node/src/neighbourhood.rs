//! The neighbourhood this node belongs to: its charter chain, its roster of members and its
//! private network key, and the invite codes that carry what a newcomer needs.
//!
//! The network key lives in `network.psk` in the data directory (libp2p's pre-shared key file
//! format, mode 0600); the charters, the roster and the key rotations live in the database.

use crate::identity;
use crate::store::Store;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use wattmesh_protocol::charter::{Charter, CharterChain, SignedCharter};
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::roster::{self, Change, Profile, Roster};
use wattmesh_protocol::{NeighbourhoodId, NodeId, NodeKey};
use zeroize::Zeroizing;

/// The roster, shared by the node task (trade requests, connections) and the validation
/// worker (gossip).
pub type SharedRoster = Arc<RwLock<Roster>>;

/// Reads the shared roster (a poisoned lock still holds a consistent roster: every write is a
/// single `insert`).
pub fn read(r: &SharedRoster) -> std::sync::RwLockReadGuard<'_, Roster> {
    r.read().unwrap_or_else(|e| e.into_inner())
}

/// Writes the shared roster.
pub fn write(r: &SharedRoster) -> std::sync::RwLockWriteGuard<'_, Roster> {
    r.write().unwrap_or_else(|e| e.into_inner())
}

/// What the node knows of its neighbourhood.
#[derive(Debug, Clone)]
pub struct Neighbourhood {
    /// The charter versions.
    pub chain: CharterChain,
    /// The private network's pre-shared key.
    pub psk: [u8; 32],
    /// The network key's epoch: 0 until the first rotation.
    pub epoch: u32,
    /// The members.
    pub roster: SharedRoster,
}

/// The default profile of a node that gives no name: `home <short id>`.
pub fn default_profile(node: &NodeId) -> Profile {
    Profile {
        name: format!("home {}", node.short()),
        pv_capacity_w: 0,
    }
}

/// The network key file's path.
pub fn psk_path(data_dir: &Path) -> PathBuf {
    data_dir.join("network.psk")
}

fn render_psk(psk: &[u8; 32]) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "/key/swarm/psk/1.0.0/\n/base16/\n{}\n",
        hex::encode(psk)
    ))
}

fn parse_psk(text: &str) -> Option<[u8; 32]> {
    let mut lines = text.lines();
    if lines.next()? != "/key/swarm/psk/1.0.0/" || lines.next()? != "/base16/" {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(lines.next()?.trim(), &mut out).ok()?;
    Some(out)
}

impl Neighbourhood {
    /// The neighbourhood id.
    pub fn id(&self) -> NeighbourhoodId {
        self.chain.neighbourhood()
    }

    /// Founds a new neighbourhood with `founder` as its first admin, and saves it.
    pub fn found(
        data_dir: &Path,
        store: &Store,
        founder: &NodeKey,
        name: &str,
        now_ms: u64,
    ) -> anyhow::Result<Neighbourhood> {
        let mut id = [0u8; 16];
        let mut psk = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut psk);
        let charter = Charter::founding(NeighbourhoodId(id), name, founder.node_id(), now_ms);
        let profile = default_profile(&founder.node_id());
        Neighbourhood::found_with(data_dir, store, founder, charter, psk, profile)
    }

    /// Founds a neighbourhood with a charter of the caller's choosing (a testnet scenario's
    /// slot length and tariffs) and the given network key, and saves it. The founder, its
    /// first admin, adds itself to the roster with `profile`.
    pub fn found_with(
        data_dir: &Path,
        store: &Store,
        founder: &NodeKey,
        charter: Charter,
        psk: [u8; 32],
        profile: Profile,
    ) -> anyhow::Result<Neighbourhood> {
        let effective = charter.effective_ms;
        let signed = SignedCharter::found(charter, founder).context("the founding charter")?;
        let chain = CharterChain::new(signed)?;
        let n = Neighbourhood {
            roster: Arc::new(RwLock::new(Roster::new(&chain))),
            chain,
            psk,
            epoch: 0,
        };
        n.save(data_dir, store)?;
        let add = Change::Add {
            member: founder.node_id(),
            profile,
        };
        n.record(
            store,
            &roster::sign_change(&n.chain, founder, effective, add).to_bytes(),
        )?;
        Ok(n)
    }

    /// Checks a membership record, adds it to the roster and stores it.
    pub fn record(&self, store: &Store, bytes: &[u8]) -> anyhow::Result<()> {
        write(&self.roster)
            .insert(bytes, &self.chain, None)
            .context("the membership record")?;
        let id = Envelope::content_id(bytes).0;
        store.put_roster(&[(id, bytes.to_vec())])?;
        Ok(())
    }

    /// An admin adds `member` directly (for setting up a testnet; neighbours join with
    /// invites), at `at_ms`.
    pub fn add_member(
        &self,
        store: &Store,
        admin: &NodeKey,
        member: NodeId,
        profile: Profile,
        at_ms: u64,
    ) -> anyhow::Result<()> {
        let add = Change::Add { member, profile };
        self.record(
            store,
            &roster::sign_change(&self.chain, admin, at_ms, add).to_bytes(),
        )
    }

    /// Moves this node to a new key (a leaked key, a new Pi restored from a backup): signs a
    /// migration with the new key and then the old one, stores it (neighbours fetch it when
    /// the node next connects), keeps the old key as `node.key.retired-<short id>` and writes
    /// the new one as `node.key`. The node's database, with its history, stays as it is.
    ///
    /// Trades agreed under the old key are settled with the old key's signature, which the
    /// node no longer uses: unless `force`, this refuses while any trade of this node awaits
    /// its settlement.
    pub fn migrate_key(
        &self,
        data_dir: &Path,
        store: &Store,
        old: &NodeKey,
        now_ms: u64,
        force: bool,
    ) -> anyhow::Result<NodeKey> {
        if !read(&self.roster).is_member(&old.node_id()) {
            bail!("this node is not a member, so it has no membership to move");
        }
        let open = unsettled_trades(store)?;
        if open > 0 && !force {
            bail!(
                "{open} trade(s) of this node are not settled yet; they are settled with the \
                 current key. Turn the automatic trader off, wait until they settle (see \
                 `wattmesh trades`), or pass --force to leave them unsettled"
            );
        }
        let new = NodeKey::generate(&mut rand_core::OsRng);
        let change = Change::Migrate {
            old: old.node_id(),
            new: new.node_id(),
        };
        let mut env = roster::sign_change(&self.chain, &new, now_ms, change);
        env.add_signature(old);
        self.record(store, &env.to_bytes())?;
        let key_path = crate::dirs::key_path(data_dir);
        let retired = data_dir.join(format!("node.key.retired-{}", old.node_id().short()));
        std::fs::rename(&key_path, &retired)
            .with_context(|| format!("moving the old key to {}", retired.display()))?;
        identity::write_new(&key_path, &identity::render(&new))?;
        Ok(new)
    }

    /// Saves the key file (if absent), every charter version and every roster record.
    pub fn save(&self, data_dir: &Path, store: &Store) -> anyhow::Result<()> {
        let path = psk_path(data_dir);
        if path.exists() {
            let existing = Neighbourhood::read_psk(data_dir)?;
            if existing != self.psk {
                bail!(
                    "{} holds a different network key; this node already belongs to a \
                     neighbourhood. Use a fresh data directory to join another",
                    path.display()
                );
            }
        } else {
            identity::write_new(&path, &render_psk(&self.psk))?;
        }
        for c in self.chain.versions() {
            store.put_charter(c.charter.version, &c.envelope.to_bytes())?;
        }
        let records: Vec<([u8; 32], Vec<u8>)> = read(&self.roster)
            .record_bytes()
            .map(|(id, b)| (id.0, b.to_vec()))
            .collect();
        store.put_roster(&records)?;
        Ok(())
    }

    /// Replaces the network key file with a rotated key (written to a temporary file, synced
    /// and renamed over the old one, so a crash leaves one key or the other).
    pub fn replace_psk(data_dir: &Path, psk: &[u8; 32]) -> anyhow::Result<()> {
        let path = psk_path(data_dir);
        let tmp = data_dir.join("network.psk.new");
        let _ = std::fs::remove_file(&tmp);
        identity::write_new(&tmp, &render_psk(psk))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("replacing the network key {}", path.display()))?;
        std::fs::File::open(data_dir).and_then(|d| d.sync_all())?;
        Ok(())
    }

    fn read_psk(data_dir: &Path) -> anyhow::Result<[u8; 32]> {
        let path = psk_path(data_dir);
        let text = Zeroizing::new(
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read the network key {}", path.display()))?,
        );
        parse_psk(&text).with_context(|| {
            format!(
                "the network key {} is corrupt; ask a neighbour for a new invite",
                path.display()
            )
        })
    }

    /// Loads the neighbourhood, or `None` if the node has not founded or joined one.
    pub fn load(data_dir: &Path, store: &Store) -> anyhow::Result<Option<Neighbourhood>> {
        let envelopes = store.charters()?;
        if envelopes.is_empty() {
            return Ok(None);
        }
        let chain = chain_from(&envelopes)?;
        let psk = Neighbourhood::read_psk(data_dir)?;
        let mut roster = Roster::new(&chain);
        for bytes in store.roster()? {
            // Records were checked before they were stored; one that no longer passes (a
            // charter lost with a damaged database) is skipped rather than fatal.
            if let Err(e) = roster.insert(&bytes, &chain, None) {
                tracing::warn!("a stored membership record is invalid: {e}");
            }
        }
        let epoch = store
            .meta("psk_epoch")?
            .and_then(|b| Some(u32::from_le_bytes(b.try_into().ok()?)))
            .unwrap_or(0);
        Ok(Some(Neighbourhood {
            chain,
            psk,
            epoch,
            roster: Arc::new(RwLock::new(roster)),
        }))
    }
}

/// How many of this node's trades have no final settlement yet.
pub fn unsettled_trades(store: &Store) -> anyhow::Result<usize> {
    use crate::market::{Record, SettleState};
    let records = store.records()?;
    let done: std::collections::HashSet<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Settlement { id, state, .. } if *state != SettleState::Proposed => Some(*id),
            _ => None,
        })
        .collect();
    Ok(records
        .iter()
        .filter(|r| matches!(r, Record::Trade { id, .. } if !done.contains(id)))
        .count())
}

/// Rebuilds and checks a charter chain from envelope bytes, oldest first.
pub fn chain_from(envelopes: &[Vec<u8>]) -> anyhow::Result<CharterChain> {
    let mut iter = envelopes.iter();
    let first = iter.next().context("no charter")?;
    let env = Envelope::from_bytes(first).context("the founding charter does not decode")?;
    let mut chain = CharterChain::new(SignedCharter::open(env, None)?)?;
    for bytes in iter {
        chain.push(Envelope::from_bytes(bytes)?)?;
    }
    Ok(chain)
}

/// What an invite code carries: everything a newcomer needs to connect and to be admitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// The private network key.
    pub psk: [u8; 32],
    /// The network key's epoch.
    pub epoch: u32,
    /// The charter envelopes, oldest first.
    pub charters: Vec<Vec<u8>>,
    /// Addresses of members to dial (multiaddrs with `/p2p/`).
    pub bootstrap: Vec<String>,
    /// The admin's single-use ticket (a signed envelope), which the newcomer's join record
    /// carries. Its id is the one-time token members check.
    pub ticket: Vec<u8>,
}

const INVITE_PREFIX: &str = "wm2-";

impl Invite {
    /// The code: `wm1-` then the postcard bytes in unpadded base32 (easy to read out or type,
    /// and QR-friendly).
    pub fn to_code(&self) -> String {
        let bytes = postcard::to_allocvec(self).expect("invite encoding is infallible");
        format!(
            "{INVITE_PREFIX}{}",
            data_encoding::BASE32_NOPAD.encode(&bytes)
        )
    }

    /// Parses a code, checking the charters.
    pub fn from_code(code: &str) -> anyhow::Result<(Invite, CharterChain)> {
        let body = code
            .trim()
            .strip_prefix(INVITE_PREFIX)
            .context("not a wattmesh invite code (it should start with wm2-)")?;
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .context("the invite code is garbled")?;
        if bytes.len() > 64 * 1024 {
            bail!("the invite code is too long");
        }
        let invite: Invite = postcard::from_bytes(&bytes).context("the invite code is garbled")?;
        let chain = chain_from(&invite.charters).context("the invite's charter is invalid")?;
        roster::open_ticket(&invite.ticket, &chain).context("the invite's ticket is invalid")?;
        Ok((invite, chain))
    }

    /// Joins with this invite: saves the network key, the charters and a join record signed by
    /// `key` at `now_ms` with `profile`. Members admit the node when they receive the record
    /// (by sync when it first connects, then by gossip); the inviting admin need not be online.
    pub fn join(
        &self,
        data_dir: &Path,
        store: &Store,
        key: &NodeKey,
        profile: Profile,
        now_ms: u64,
    ) -> anyhow::Result<Neighbourhood> {
        let chain = chain_from(&self.charters).context("the invite's charter is invalid")?;
        let (ticket, _) = roster::open_ticket(&self.ticket, &chain)?;
        if now_ms > ticket.expires_ms {
            bail!(
                "this invite expired {} minutes ago; ask the neighbour for a new one",
                (now_ms - ticket.expires_ms) / 60_000
            );
        }
        let n = Neighbourhood {
            roster: Arc::new(RwLock::new(Roster::new(&chain))),
            chain,
            psk: self.psk,
            epoch: self.epoch,
        };
        n.save(data_dir, store)?;
        store.put_meta("psk_epoch", &self.epoch.to_le_bytes())?;
        let change = Change::Join {
            ticket: self.ticket.clone(),
            profile,
        };
        let at = now_ms.max(ticket.issued_ms);
        n.record(
            store,
            &roster::sign_change(&n.chain, key, at, change).to_bytes(),
        )?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_save_load_and_invite_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let key = NodeKey::from_secret(&[4; 32]);
        let n = Neighbourhood::found(dir.path(), &store, &key, "Elm Court", 1_000).unwrap();
        let loaded = Neighbourhood::load(dir.path(), &store).unwrap().unwrap();
        assert_eq!(loaded.psk, n.psk);
        assert_eq!(loaded.id(), n.id());
        assert!(read(&loaded.roster).is_member(&key.node_id()));
        let ticket =
            roster::issue_ticket(&n.chain, &key, [1; 16], 1_000, 60_000, "for Bo").to_bytes();
        let invite = Invite {
            psk: n.psk,
            epoch: 0,
            charters: store.charters().unwrap(),
            bootstrap: vec!["/ip4/127.0.0.1/tcp/4100".into()],
            ticket,
        };
        let (back, chain) = Invite::from_code(&invite.to_code()).unwrap();
        assert_eq!(back, invite);
        assert_eq!(chain.neighbourhood(), n.id());
        // The newcomer joins; its roster admits it at once (the admin's ticket suffices).
        let dir2 = tempfile::tempdir().unwrap();
        let store2 = Store::open(&dir2.path().join("db.redb")).unwrap();
        let bo = NodeKey::from_secret(&[5; 32]);
        let joined = back
            .join(
                dir2.path(),
                &store2,
                &bo,
                default_profile(&bo.node_id()),
                2_000,
            )
            .unwrap();
        assert!(read(&joined.roster).is_member(&bo.node_id()));
        let reloaded = Neighbourhood::load(dir2.path(), &store2).unwrap().unwrap();
        assert!(read(&reloaded.roster).is_member(&bo.node_id()));
        // Too late: the ticket expired.
        let dir3 = tempfile::tempdir().unwrap();
        let store3 = Store::open(&dir3.path().join("db.redb")).unwrap();
        let late = back.join(
            dir3.path(),
            &store3,
            &bo,
            default_profile(&bo.node_id()),
            70_000,
        );
        assert!(late.unwrap_err().to_string().contains("expired"));
        assert!(Invite::from_code("wm2-!!!").is_err());
        assert!(Invite::from_code("hello").is_err());
    }

    #[test]
    fn the_network_key_uses_libp2ps_file_format() {
        let psk = [7u8; 32];
        let text = render_psk(&psk);
        assert_eq!(parse_psk(&text), Some(psk));
        assert!(text.starts_with("/key/swarm/psk/1.0.0/\n/base16/\n"));
        assert_eq!(parse_psk("/key/swarm/psk/1.0.0/\n/base16/\nzz\n"), None);
    }
}
