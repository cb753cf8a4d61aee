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
//! Steps 1 and 4 are ZIP-215; steps 2 and 3 are added per signature. [`verify`] computes the
//! ZIP-215 equation itself with `curve25519-dalek` on points decoded once; [`verify_batch`]
//! uses `ed25519-zebra`'s ZIP-215 batch equation, which accepts exactly what the single
//! equation accepts. Because the extra checks are per signature, [`verify_batch`] accepts a
//! batch exactly when [`verify`] accepts every member (a property test checks our single
//! equation against ed25519-zebra's on valid and corrupted signatures). Signatures made by [`NodeKey::sign`] (RFC 8032, as
//! ed25519-dalek makes them) always pass.

use crate::ids::NodeId;
use curve25519_dalek::Scalar;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::traits::IsIdentity;
use ed25519_dalek::Signer;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};
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

    /// The X25519 secret that pairs with the Montgomery form of this key's public half (the
    /// first half of SHA-512 of the seed, as libsodium's `crypto_sign_ed25519_sk_to_curve25519`;
    /// X25519 clamps it). Used only to open network keys sealed to this node.
    pub fn x25519_secret_bytes(&self) -> [u8; 32] {
        self.0.to_scalar_bytes()
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

/// Whether the 255-bit `y` in an encoding is below `p = 2^255 - 19` (the sign bit aside).
///
/// For a point that is not of small order this is exactly "the encoding is canonical": the
/// only other non-canonical encodings have `x = 0`, and those points are of small order.
/// Checking the bytes saves a compression per point (profiled: 14 % of offer ingest).
fn y_is_canonical(bytes: &[u8; 32]) -> bool {
    let top = bytes[31] & 0x7f;
    !(top == 0x7f && bytes[1..31].iter().all(|&b| b == 0xff) && bytes[0] >= 0xed)
}

/// Decodes 32 bytes as a canonically encoded point that is not of small order.
/// The error says which: `(not a canonical point, small order)`.
fn decode_point(bytes: &[u8; 32]) -> Result<EdwardsPoint, (bool, bool)> {
    if !y_is_canonical(bytes) {
        return Err((true, false));
    }
    let point = CompressedEdwardsY(*bytes)
        .decompress()
        .ok_or((true, false))?;
    if point.is_small_order() {
        return Err((false, true));
    }
    Ok(point)
}

/// `S < ℓ`, checked on the little-endian bytes.
fn canonical_s(s: &[u8; 32]) -> Option<Scalar> {
    Option::<Scalar>::from(Scalar::from_canonical_bytes(*s))
}

/// Steps 1 to 3 of the rule: everything but the equation. Returns `S`, `A` and `R`, each
/// decoded once.
fn precheck(
    key: &NodeId,
    sig: &SignatureBytes,
) -> Result<(Scalar, EdwardsPoint, EdwardsPoint), SignatureError> {
    let s = canonical_s(&sig.s).ok_or(SignatureError::NonCanonicalS)?;
    let a = decode_point(&key.0).map_err(|(bad, _)| {
        if bad {
            SignatureError::BadKey
        } else {
            SignatureError::SmallOrderKey
        }
    })?;
    let r = decode_point(&sig.r).map_err(|(bad, _)| {
        if bad {
            SignatureError::BadR
        } else {
            SignatureError::SmallOrderR
        }
    })?;
    Ok((s, a, r))
}

/// Verifies one signature under the rule in the module documentation.
///
/// The equation is ZIP-215's cofactored one, `[8]([S]B − [k]A − R) = 0`, computed on the
/// points decoded once by the precheck (ed25519-zebra's single check is the same equation; a
/// property test keeps the two in agreement).
pub fn verify(key: &NodeId, msg: &[u8], sig: &SignatureBytes) -> Result<(), SignatureError> {
    let (s, a, r) = precheck(key, sig)?;
    let k = Scalar::from_hash(
        Sha512::new()
            .chain_update(sig.r)
            .chain_update(key.0)
            .chain_update(msg),
    );
    let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &(-a), &s);
    if (sb_minus_ka - r).mul_by_cofactor().is_identity() {
        Ok(())
    } else {
        Err(SignatureError::Invalid)
    }
}

/// Verifies many signatures at once. Accepts exactly when [`verify`] accepts every item; on
/// failure, callers that need to know which item failed verify them one by one.
pub fn verify_batch<R: RngCore + CryptoRng>(
    items: &[(NodeId, &[u8], SignatureBytes)],
    rng: R,
) -> Result<(), SignatureError> {
    let mut batch = ed25519_zebra::batch::Verifier::new();
    for (key, msg, sig) in items {
        // Only the per-signature checks here; zebra's batch equation decodes A and R again.
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
