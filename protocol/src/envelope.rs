//! The signed envelope: the exact payload bytes, the domain they were signed in, and the
//! signatures.
//!
//! The signature domain is the protocol version, the hash of the charter the message was made
//! under, and the message kind, so a signature made for one neighbourhood, rule set or kind of
//! message can never be replayed as another. The payload is kept as the exact bytes that were
//! signed; it is decoded only after the signatures verify.

use crate::codec::{self, CodecError, MAX_ENVELOPE_BYTES, MAX_PAYLOAD_BYTES};
use crate::ids::{Hash32, NodeId};
use crate::sign::{self, NodeKey, SignatureBytes, SignatureError};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The envelope version this code writes and accepts.
pub const PROTOCOL_VERSION: u8 = 1;
/// The domain tag at the start of every signing input.
pub const SIGNING_TAG: &[u8] = b"wattmesh/sig/v1";
/// At most this many signatures on one envelope (co-signed messages have two).
pub const MAX_SIGNATURES: usize = 2;

/// The kinds of signed message. The number is what goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// A neighbourhood charter version, signed by an admin.
    Charter = 1,
    /// A sell or buy offer, signed by its maker.
    Offer = 2,
    /// A taker's proposal to trade against an offer, signed by the taker.
    TradeProposal = 3,
    /// An agreed trade, signed by the maker and then the taker.
    Trade = 4,
    /// A per-slot meter attestation, signed by the metered node.
    MeterAttestation = 5,
    /// A settlement of one trade, signed by the seller and the buyer.
    Settlement = 6,
    /// An admin's single-use permission to join, carried in an invite.
    Ticket = 7,
    /// A change to the membership (add, join, remove, revoke, migrate).
    Membership = 8,
    /// A new network key sealed to each remaining member, signed by an admin.
    Rekey = 9,
    /// The addresses a member can be reached at, signed by the member.
    Presence = 10,
    /// A standing agreement, signed by the proposer and then the counterparty.
    Agreement = 11,
    /// A step of a dispute about one trade, signed by its author.
    DisputeNote = 12,
    /// A payment, signed by the payer and then the payee.
    Payment = 13,
    /// The seal over a node's signed export of its trades.
    ExportSeal = 14,
    /// A commitment to a meter attestation kept private (privacy mode), signed by the metered
    /// node.
    AttestationCommitment = 15,
}

impl Kind {
    /// The kind for a wire number, if this version knows it.
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Charter,
            2 => Kind::Offer,
            3 => Kind::TradeProposal,
            4 => Kind::Trade,
            5 => Kind::MeterAttestation,
            6 => Kind::Settlement,
            7 => Kind::Ticket,
            8 => Kind::Membership,
            9 => Kind::Rekey,
            10 => Kind::Presence,
            11 => Kind::Agreement,
            12 => Kind::DisputeNote,
            13 => Kind::Payment,
            14 => Kind::ExportSeal,
            15 => Kind::AttestationCommitment,
            _ => return None,
        })
    }

    /// How many signatures a complete message of this kind carries.
    pub fn signatures_required(self) -> usize {
        match self {
            Kind::Trade | Kind::Settlement | Kind::Agreement | Kind::Payment => 2,
            _ => 1,
        }
    }
}

/// A payload type that travels in an envelope.
pub trait Message: Serialize + DeserializeOwned {
    /// Its kind.
    const KIND: Kind;
}

/// One signature and who made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// The signer's node id (public key).
    pub signer: NodeId,
    /// The signature over [`Envelope::signing_input`].
    pub sig: SignatureBytes,
}

/// A signed message as it travels and as it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The envelope version ([`PROTOCOL_VERSION`]).
    pub version: u8,
    /// The hash of the charter the message was made under (for a charter: of its predecessor,
    /// or zero for a neighbourhood's first charter).
    pub charter: Hash32,
    /// The message kind's wire number ([`Kind`]); unknown numbers are kept, not rejected.
    pub kind: u8,
    /// The exact payload bytes that were signed.
    pub payload: Vec<u8>,
    /// The signatures, in the order the kind defines (trade: maker then taker; settlement:
    /// seller then buyer).
    pub signatures: Vec<Signed>,
}

/// Why an envelope could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The bytes are not a canonical envelope.
    #[error("envelope: {0}")]
    Codec(#[from] CodecError),
    /// The payload is not a canonical encoding of its kind's type.
    #[error("payload: {0}")]
    Payload(CodecError),
    /// A newer envelope version than this node understands.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// A kind this node does not know.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The kind is not the one expected here.
    #[error("expected kind {expected:?}, got {got}")]
    WrongKind {
        /// Expected kind.
        expected: Kind,
        /// The wire number found.
        got: u8,
    },
    /// Too many or too few signatures, or the same signer twice.
    #[error("wrong number of signatures: {0}")]
    SignatureCount(usize),
    /// A signature failed the acceptance rule.
    #[error("signature {index}: {error}")]
    Signature {
        /// Which signature.
        index: usize,
        /// What was wrong with it.
        error: SignatureError,
    },
}

impl Envelope {
    /// Signs `msg` under `charter` with `key`, as the envelope's first signature.
    pub fn seal<M: Message>(msg: &M, charter: Hash32, key: &NodeKey) -> Envelope {
        let mut env = Envelope {
            version: PROTOCOL_VERSION,
            charter,
            kind: M::KIND as u8,
            payload: codec::encode(msg),
            signatures: Vec::new(),
        };
        env.add_signature(key);
        env
    }

    /// Adds a signature by `key` (a co-signature for trades and settlements).
    pub fn add_signature(&mut self, key: &NodeKey) {
        let sig = key.sign(&self.signing_input());
        self.signatures.push(Signed {
            signer: key.node_id(),
            sig,
        });
    }

    /// The bytes every signature covers:
    /// `"wattmesh/sig/v1" ‖ 0x00 ‖ version ‖ charter (32) ‖ kind ‖ len(payload) as u32 BE ‖ payload`.
    pub fn signing_input(&self) -> Vec<u8> {
        signing_input(self.version, &self.charter, self.kind, &self.payload)
    }

    /// The canonical bytes of the whole envelope.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes canonical envelope bytes. Checks structure only, not signatures or kind.
    pub fn from_bytes(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let env: Envelope = codec::decode_canonical(bytes, MAX_ENVELOPE_BYTES)?;
        if env.version != PROTOCOL_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(env.version));
        }
        if env.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(EnvelopeError::Codec(CodecError::TooLarge {
                len: env.payload.len(),
                limit: MAX_PAYLOAD_BYTES,
            }));
        }
        if env.signatures.is_empty() || env.signatures.len() > MAX_SIGNATURES {
            return Err(EnvelopeError::SignatureCount(env.signatures.len()));
        }
        Ok(env)
    }

    /// The known kind of this envelope.
    pub fn known_kind(&self) -> Result<Kind, EnvelopeError> {
        Kind::from_u8(self.kind).ok_or(EnvelopeError::UnknownKind(self.kind))
    }

    /// Verifies every signature one by one, and that the signers are distinct.
    pub fn verify_signatures(&self) -> Result<(), EnvelopeError> {
        let input = self.signing_input();
        for (index, s) in self.signatures.iter().enumerate() {
            sign::verify(&s.signer, &input, &s.sig)
                .map_err(|error| EnvelopeError::Signature { index, error })?;
        }
        if self.signatures.len() == 2 && self.signatures[0].signer == self.signatures[1].signer {
            return Err(EnvelopeError::SignatureCount(2));
        }
        Ok(())
    }

    /// Decodes the payload as `M`, after checking the kind. Does not verify signatures.
    pub fn payload_as<M: Message>(&self) -> Result<M, EnvelopeError> {
        if self.kind != M::KIND as u8 {
            return Err(EnvelopeError::WrongKind {
                expected: M::KIND,
                got: self.kind,
            });
        }
        codec::decode_canonical(&self.payload, MAX_PAYLOAD_BYTES).map_err(EnvelopeError::Payload)
    }

    /// The first signer (the author for single-signed kinds).
    pub fn signer(&self) -> NodeId {
        self.signatures[0].signer
    }

    /// A content hash of the whole envelope, used as the gossip message id.
    pub fn content_id(bytes: &[u8]) -> Hash32 {
        Hash32::tagged("wattmesh/msg-id/v1", &[bytes])
    }
}

/// See [`Envelope::signing_input`].
pub fn signing_input(version: u8, charter: &Hash32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNING_TAG.len() + 39 + payload.len());
    out.extend_from_slice(SIGNING_TAG);
    out.push(0);
    out.push(version);
    out.extend_from_slice(&charter.0);
    out.push(kind);
    // The payload is at most MAX_PAYLOAD_BYTES, far below u32::MAX.
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}
