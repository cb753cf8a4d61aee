//! The neighbourhood this node belongs to: its charter chain and its private network key,
//! and the invite codes that carry both to a newcomer.
//!
//! The network key lives in `network.psk` in the data directory (libp2p's pre-shared key file
//! format, mode 0600); the charters live in the database.

use crate::identity;
use crate::store::Store;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use wattmesh_protocol::charter::{Charter, CharterChain, SignedCharter};
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::{NeighbourhoodId, NodeKey};
use zeroize::Zeroizing;

/// What the node knows of its neighbourhood.
#[derive(Debug, Clone)]
pub struct Neighbourhood {
    /// The charter versions.
    pub chain: CharterChain,
    /// The private network's pre-shared key.
    pub psk: [u8; 32],
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
        Neighbourhood::found_with(data_dir, store, founder, charter, psk)
    }

    /// Founds a neighbourhood with a charter of the caller's choosing (a testnet scenario's
    /// slot length and tariffs) and the given network key, and saves it.
    pub fn found_with(
        data_dir: &Path,
        store: &Store,
        founder: &NodeKey,
        charter: Charter,
        psk: [u8; 32],
    ) -> anyhow::Result<Neighbourhood> {
        let signed = SignedCharter::found(charter, founder).context("the founding charter")?;
        let n = Neighbourhood {
            chain: CharterChain::new(signed)?,
            psk,
        };
        n.save(data_dir, store)?;
        Ok(n)
    }

    /// Saves the key file (if absent) and every charter version.
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
        Ok(Some(Neighbourhood { chain, psk }))
    }
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

/// What an invite code carries: everything a newcomer needs to connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// The private network key.
    pub psk: [u8; 32],
    /// The charter envelopes, oldest first.
    pub charters: Vec<Vec<u8>>,
    /// Addresses of members to dial (multiaddrs with `/p2p/`).
    pub bootstrap: Vec<String>,
}

const INVITE_PREFIX: &str = "wm1-";

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
            .context("not a wattmesh invite code (it should start with wm1-)")?;
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .context("the invite code is garbled")?;
        if bytes.len() > 64 * 1024 {
            bail!("the invite code is too long");
        }
        let invite: Invite = postcard::from_bytes(&bytes).context("the invite code is garbled")?;
        let chain = chain_from(&invite.charters).context("the invite's charter is invalid")?;
        Ok((invite, chain))
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
        let invite = Invite {
            psk: n.psk,
            charters: store.charters().unwrap(),
            bootstrap: vec!["/ip4/127.0.0.1/tcp/4100".into()],
        };
        let (back, chain) = Invite::from_code(&invite.to_code()).unwrap();
        assert_eq!(back, invite);
        assert_eq!(chain.neighbourhood(), n.id());
        assert!(Invite::from_code("wm1-!!!").is_err());
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
