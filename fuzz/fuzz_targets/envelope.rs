//! Fuzzes everything a peer can send: envelope decoding, archival and gossip validation, and
//! the trade and sync request/response codecs. Nothing may panic, and whatever is accepted
//! must re-encode to exactly the bytes received (signed bytes have one encoding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use wattmesh_protocol::Envelope;
use wattmesh_protocol::charter::CharterChain;
use wattmesh_protocol::codec;
use wattmesh_protocol::sample;
use wattmesh_protocol::sync::{MAX_SYNC_MESSAGE_BYTES, SyncRequest, SyncResponse};
use wattmesh_protocol::trade::{MAX_TRADE_MESSAGE_BYTES, TradeRequest, TradeResponse};
use wattmesh_protocol::validate::{Invalid, Validator, validate_archival};

/// The sample chain, built once: making it signs and verifies a charter.
fn chain() -> &'static CharterChain {
    static CHAIN: OnceLock<CharterChain> = OnceLock::new();
    CHAIN.get_or_init(sample::chain)
}

/// A moment when the sample attestation is fresh (after its slot, before its deadline), so
/// the attestation branch of the gossip validator is reached too, not only the offer branch.
const ATTESTATION_NOW_MS: u64 = sample::SLOT_MS + 910_000;

/// Decodes `data` as `T`; whatever is accepted must re-encode to `data`.
/// The sample roster, built once.
fn roster() -> &'static wattmesh_protocol::roster::Roster {
    static ROSTER: OnceLock<wattmesh_protocol::roster::Roster> = OnceLock::new();
    ROSTER.get_or_init(sample::roster)
}

fn canonical<T>(data: &[u8], limit: usize)
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    if let Ok(v) = codec::decode_canonical::<T>(data, limit) {
        assert_eq!(
            codec::encode(&v),
            data,
            "accepted bytes re-encode to themselves"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let chain = chain();

    if let Ok(env) = Envelope::from_bytes(data) {
        assert_eq!(
            env.to_bytes(),
            data,
            "an accepted envelope re-encodes to itself"
        );
        let _ = env.known_kind();
        let _ = env.verify_signatures();
    }

    let mut archival_ok = false;
    for partial in [true, false] {
        if let Ok(accepted) = validate_archival(data, chain, partial) {
            assert_eq!(accepted.envelope.to_bytes(), data);
            archival_ok |= !partial;
        }
    }

    let mut v = Validator::new();
    for now in [sample::NOW_MS, ATTESTATION_NOW_MS] {
        if let Ok(accepted) = v.validate_gossip(data, chain, roster(), now) {
            assert_eq!(accepted.envelope.to_bytes(), data);
            // Gossip validation is archival validation plus fresh checks.
            assert!(archival_ok, "accepted by gossip but not as archival");
            // The replay window must refuse the same message at once.
            assert_eq!(
                v.validate_gossip(data, chain, roster(), now).map(|_| ()),
                Err(Invalid::Replay)
            );
        }
    }

    canonical::<TradeRequest>(data, MAX_TRADE_MESSAGE_BYTES);
    canonical::<TradeResponse>(data, MAX_TRADE_MESSAGE_BYTES);
    canonical::<SyncRequest>(data, MAX_SYNC_MESSAGE_BYTES);
    canonical::<SyncResponse>(data, MAX_SYNC_MESSAGE_BYTES);
});
