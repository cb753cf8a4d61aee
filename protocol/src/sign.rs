//! Keys and the one signature acceptance rule.
//!
//! # The rule
//!
//! A signature `(R, S)` by public key `A` over message `M` is accepted if and only if:
//! 1. `S` is canonical: as a little-endian integer, `S < ℓ` (the group order);
//! 2. `A` is the canonical encoding of a curve point, and that point is not of small order;
//! 3. `R` is the canonical encoding of a curve point, and that point is not of small order;
//! 4. the cofactored equation `[8][S]B = [8]R + [8][k]A` holds, with
//!    `k = SHA-512(R ‖ A ‖ M) mod ℓ`.
//!
//! Steps 1 and 4 are ZIP-215 (checked with `ed25519-zebra`, whose single and batch checks
//! accept exactly the same signatures); steps 2 and 3 are checked per signature, before either,
//! with `curve25519-dalek`. Because the extra checks are per signature and the remaining
//! check agrees between single and batch, [`verify_batch`] accepts a batch exactly when
//! [`verify`] accepts every member. Signatures made by [`NodeKey::sign`] (RFC 8032, as
//! ed25519-dalek makes them) always pass.

use crate::ids::NodeId;
use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::Signer;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An ed25519 signature as its two 32-byte halves, `R` then `S` (64 bytes on the wire).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureBytes {
    /// The encoded commitment point `R`.
    pub r: [u8; 32],
    /// The scalar `S`, little-endian.
    pub s: [u8; 32],
}

impl SignatureBytes {
    /// The 64 bytes `R ‖ S`.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.r);
        out[32..].copy_from_slice(&self.s);
        out
    }

    /// Splits 64 bytes `R ‖ S`.
    pub fn from_bytes(b: &[u8; 64]) -> Self {
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        r.copy_from_slice(&b[..32]);
        s.copy_from_slice(&b[32..]);
        Self { r, s }
    }
}

impl fmt::Debug for SignatureBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sig({}…)", &hex::encode(self.r)[..12])
    }
}

/// Why a signature was not accepted. Every variant is provable misbehaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// `S` is not below the group order.
    #[error("non-canonical S")]
    NonCanonicalS,
    /// The public key is not a canonical point encoding.
    #[error("public key is not a canonical point")]
    BadKey,
    /// The public key is a point of small order.
    #[error("public key has small order")]
    SmallOrderKey,
    /// `R` is not a canonical point encoding.
    #[error("R is not a canonical point")]
    BadR,
    /// `R` is a point of small order.
    #[error("R has small order")]
    SmallOrderR,
    /// The verification equation does not hold.
    #[error("signature does not verify")]
    Invalid,
}

/// A node's secret signing key. Its bytes are zeroised on drop and never printed.
pub struct NodeKey(ed25519_dalek::SigningKey);

impl NodeKey {
    /// Makes a new random key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self(ed25519_dalek::SigningKey::generate(rng))
    }

    /// Builds a key from its 32 secret bytes (the RFC 8032 seed).
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(secret))
    }

    /// The 32 secret bytes, for writing the key file. Handle with care.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public node id.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.0.verifying_key().to_bytes())
    }

    /// Signs `msg` (RFC 8032, deterministic).
    pub fn sign(&self, msg: &[u8]) -> SignatureBytes {
        SignatureBytes::from_bytes(&self.0.sign(msg).to_bytes())
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({})", self.node_id().short())
    }
}

/// Checks that 32 bytes are the canonical encoding of a point that is not of small order.
fn check_point(bytes: &[u8; 32]) -> Result<(), (bool, bool)> {
    let compressed = CompressedEdwardsY(*bytes);
    let point = compressed.decompress().ok_or((true, false))?;
    if point.compress().as_bytes() != bytes {
        return Err((true, false));
    }
    if point.is_small_order() {
        return Err((false, true));
    }
    Ok(())
}

/// `S < ℓ`, checked on the little-endian bytes.
fn s_is_canonical(s: &[u8; 32]) -> bool {
    Option::<curve25519_dalek::Scalar>::from(curve25519_dalek::Scalar::from_canonical_bytes(*s))
        .is_some()
}

/// Steps 1 to 3 of the rule: everything but the equation.
fn precheck(key: &NodeId, sig: &SignatureBytes) -> Result<(), SignatureError> {
    if !s_is_canonical(&sig.s) {
        return Err(SignatureError::NonCanonicalS);
    }
    check_point(&key.0).map_err(|(bad, _)| {
        if bad {
            SignatureError::BadKey
        } else {
            SignatureError::SmallOrderKey
        }
    })?;
    check_point(&sig.r).map_err(|(bad, _)| {
        if bad {
            SignatureError::BadR
        } else {
            SignatureError::SmallOrderR
        }
    })?;
    Ok(())
}

/// Verifies one signature under the rule in the module documentation.
pub fn verify(key: &NodeId, msg: &[u8], sig: &SignatureBytes) -> Result<(), SignatureError> {
    precheck(key, sig)?;
    let vk = ed25519_zebra::VerificationKey::try_from(key.0).map_err(|_| SignatureError::BadKey)?;
    let signature = ed25519_zebra::Signature::from_bytes(&sig.to_bytes());
    vk.verify(&signature, msg)
        .map_err(|_| SignatureError::Invalid)
}

/// Verifies many signatures at once. Accepts exactly when [`verify`] accepts every item; on
/// failure, callers that need to know which item failed verify them one by one.
pub fn verify_batch<R: RngCore + CryptoRng>(
    items: &[(NodeId, &[u8], SignatureBytes)],
    rng: R,
) -> Result<(), SignatureError> {
    let mut batch = ed25519_zebra::batch::Verifier::new();
    for (key, msg, sig) in items {
        precheck(key, sig)?;
        let signature = ed25519_zebra::Signature::from_bytes(&sig.to_bytes());
        batch.queue((
            ed25519_zebra::VerificationKeyBytes::from(key.0),
            signature,
            msg,
        ));
    }
    batch.verify(rng).map_err(|_| SignatureError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> NodeKey {
        NodeKey::from_secret(&[seed; 32])
    }

    #[test]
    fn sign_then_verify() {
        let k = key(1);
        let sig = k.sign(b"hello");
        assert_eq!(verify(&k.node_id(), b"hello", &sig), Ok(()));
        assert_eq!(
            verify(&k.node_id(), b"hellp", &sig),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let k = key(7);
        let shown = format!("{k:?}");
        assert!(!shown.contains(&hex::encode(k.secret_bytes())));
    }
}
