//! Identifiers: node ids (ed25519 public keys), hashes and neighbourhood ids.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// A node's identity: its ed25519 public key, as the 32 bytes of its compressed encoding.
///
/// The same key is the node's libp2p identity, so a libp2p peer id maps one to one to a node id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The short human form shown in UIs: the first 4 bytes in hex, split in two groups
    /// (`3fa2-91c0`). Not unique; never use it as a key.
    pub fn short(&self) -> String {
        let h = hex::encode(&self.0[..4]);
        format!("{}-{}", &h[..4], &h[4..])
    }

    /// The full lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the full 64-character hex form.
    pub fn from_hex(s: &str) -> Result<Self, hex::FromHexError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Self(out))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// The all-zero hash, used where there is no predecessor (first charter, first attestation).
    pub const ZERO: Hash32 = Hash32([0; 32]);

    /// SHA-256 over a domain tag, a zero byte, and the given parts in order.
    ///
    /// Every hash in the protocol is domain-separated this way so that bytes hashed for one
    /// purpose can never be confused with bytes hashed for another.
    pub fn tagged(tag: &str, parts: &[&[u8]]) -> Hash32 {
        let mut h = Sha256::new();
        h.update(tag.as_bytes());
        h.update([0u8]);
        for p in parts {
            h.update(p);
        }
        Hash32(h.finalize().into())
    }

    /// The lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({})", &self.to_hex()[..16])
    }
}

/// A neighbourhood's id: 16 random bytes chosen when it is founded.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NeighbourhoodId(pub [u8; 16]);

impl NeighbourhoodId {
    /// The lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A keyed hash of the id, for discovery records that must not reveal the id in clear.
    ///
    /// The key is the neighbourhood's pre-shared network key, so only members can compute it.
    pub fn discovery_tag(&self, network_key: &[u8; 32]) -> Hash32 {
        Hash32::tagged("wattmesh/discovery-tag/v1", &[network_key, &self.0])
    }
}

impl fmt::Debug for NeighbourhoodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NeighbourhoodId({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_form_and_hex_round_trip() {
        let id = NodeId([0xab; 32]);
        assert_eq!(id.short(), "abab-abab");
        assert_eq!(NodeId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(NodeId::from_hex("zz").is_err());
    }

    #[test]
    fn tagged_hashes_are_domain_separated() {
        assert_ne!(Hash32::tagged("a", &[b"bc"]), Hash32::tagged("ab", &[b"c"]));
    }
}
