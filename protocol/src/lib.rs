//! The wattmesh wire protocol: every message two nodes exchange and every rule they must agree on.
//!
//! This crate is pure: no IO, no clocks, no randomness of its own. Callers pass the current time
//! and, where batch verification needs it, a random number generator. Everything here is
//! specified in `docs/PROTOCOL.md`; the test vectors under `tests/vectors/` pin the bytes.
//!
//! The layers, from the bottom:
//! - [`codec`]: canonical postcard encoding (re-encode equality, no trailing bytes, size limits);
//! - [`sign`]: keys and the one signature acceptance rule;
//! - [`envelope`]: the signed envelope with its domain (version, charter hash, kind);
//! - the messages: [`charter`], [`offer`], [`trade`], [`attestation`], [`settlement`],
//!   [`ledger`] (standing agreements, dispute notes, payments), [`export`] (the signed export);
//! - [`roster`]: membership records, tickets and network key rotation;
//! - [`validate`]: fresh and archival validation, the replay window and spam limits;
//! - [`slot`]: slot arithmetic, gate closure and deadlines; [`settle`]: the settlement rule.
#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod attestation;
pub mod charter;
pub mod codec;
pub mod envelope;
pub mod export;
pub mod ext;
pub mod ids;
pub mod ledger;
pub mod merkle;
pub mod offer;
pub mod roster;
pub mod sample;
pub mod settle;
pub mod settlement;
pub mod sign;
pub mod slot;
pub mod sync;
pub mod trade;
pub mod units;
pub mod validate;

pub use attestation::{AttestationCommitment, MeterAttestation, MeterStatus};
pub use charter::Charter;
pub use envelope::{Envelope, Kind, PROTOCOL_VERSION};
pub use ids::{Hash32, NeighbourhoodId, NodeId};
pub use offer::{Offer, Side};
pub use settlement::Settlement;
pub use sign::{NodeKey, SignatureBytes};
pub use trade::{Trade, TradeId, TradeProposal};
pub use units::{EnergyWh, MilliMinor, PricePerKwh};
