//! Property tests for every wire type: encode → decode gives the value back; decoding
//! arbitrary bytes never panics; whatever bytes are accepted re-encode to themselves.

use proptest::prelude::*;
use wattmesh_protocol::attestation::{MeterAttestation, MeterStatus};
use wattmesh_protocol::codec::{self, MAX_ENVELOPE_BYTES};
use wattmesh_protocol::envelope::{Envelope, Signed};
use wattmesh_protocol::ext::Extension;
use wattmesh_protocol::merkle::SumNode;
use wattmesh_protocol::offer::{OfferId, Side};
use wattmesh_protocol::sample;
use wattmesh_protocol::settle::Outcome;
use wattmesh_protocol::sign::SignatureBytes;
use wattmesh_protocol::sync::{SyncRequest, SyncResponse};
use wattmesh_protocol::trade::{RejectReason, TradeRequest, TradeResponse};
use wattmesh_protocol::validate::{Validator, validate_archival};
use wattmesh_protocol::{
    Charter, Hash32, NeighbourhoodId, NodeId, Offer, Settlement, Trade, TradeId, TradeProposal,
};

fn node_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 32]>().prop_map(NodeId)
}
fn hash() -> impl Strategy<Value = Hash32> {
    any::<[u8; 32]>().prop_map(Hash32)
}
fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Sell), Just(Side::Buy)]
}
fn exts() -> impl Strategy<Value = Vec<Extension>> {
    prop::collection::vec(
        (any::<u16>(), prop::collection::vec(any::<u8>(), 0..16))
            .prop_map(|(tag, data)| Extension { tag, data }),
        0..3,
    )
}
fn sum_node() -> impl Strategy<Value = SumNode> {
    (hash(), any::<u64>()).prop_map(|(hash, sum)| SumNode { hash, sum })
}
fn offer_id() -> impl Strategy<Value = OfferId> {
    (node_id(), any::<u64>()).prop_map(|(maker, nonce)| OfferId { maker, nonce })
}

prop_compose! {
    fn offer()(maker in node_id(), nonce in any::<u64>(), version in any::<u32>(), side in side(),
               slot_ms in any::<u64>(), quantity_wh in any::<u64>(), min_fill_wh in any::<u64>(),
               price in any::<u64>(), created_ms in any::<u64>(), expires_ms in any::<u64>(),
               attributes in any::<u32>(), ext in exts()) -> Offer {
        Offer { maker, nonce, version, side, slot_ms, quantity_wh, min_fill_wh, price,
                created_ms, expires_ms, attributes, ext }
    }
}

prop_compose! {
    fn proposal()(taker in node_id(), nonce in any::<u64>(), offer in offer_id(),
                  offer_version in any::<u32>(), slot_ms in any::<u64>(), energy_wh in any::<u64>(),
                  price in any::<u64>(), created_ms in any::<u64>(), ext in exts()) -> TradeProposal {
        TradeProposal { taker, nonce, offer, offer_version, slot_ms, energy_wh, price, created_ms, ext }
    }
}

prop_compose! {
    fn trade()(offer in offer_id(), offer_version in any::<u32>(), maker_side in side(),
               taker in node_id(), nonce in any::<u64>(), slot_ms in any::<u64>(),
               energy_wh in any::<u64>(), price in any::<u64>(), agreed_ms in any::<u64>(),
               ext in exts()) -> Trade {
        Trade { offer, offer_version, maker_side, taker, nonce, slot_ms, energy_wh, price, agreed_ms, ext }
    }
}

prop_compose! {
    fn attestation()(node in node_id(), seq in any::<u64>(), prev in hash(), slot_ms in any::<u64>(),
                     regs in any::<(u64, u64, u64, u64)>(), coverage_permille in any::<u16>(),
                     status in prop_oneof![Just(MeterStatus::Ok), Just(MeterStatus::Degraded),
                                           Just(MeterStatus::Fault), Just(MeterStatus::Simulated)],
                     sold in sum_node(), bought in sum_node(), created_ms in any::<u64>(),
                     ext in exts()) -> MeterAttestation {
        MeterAttestation { node, seq, prev, slot_ms, import_register_wh: regs.0,
            export_register_wh: regs.1, import_wh: regs.2, export_wh: regs.3, coverage_permille,
            status, sold, bought, created_ms, ext }
    }
}

prop_compose! {
    fn settlement()(taker in node_id(), tnonce in any::<u64>(), seller in node_id(), buyer in node_id(),
                    slot_ms in any::<u64>(), figs in any::<(u64, u64, u64, u64)>(),
                    sa in prop::option::of(hash()), ba in prop::option::of(hash()),
                    outcome in prop_oneof![Just(Outcome::Delivered), Just(Outcome::Short),
                        Just(Outcome::ShortPartialCoverage), Just(Outcome::NoSellerAttestation)],
                    created_ms in any::<u64>(), ext in exts()) -> Settlement {
        Settlement { trade: TradeId { taker, nonce: tnonce }, seller, buyer, slot_ms,
            agreed_wh: figs.0, delivered_wh: figs.1, price: figs.2, amount: figs.3,
            seller_attestation: sa, buyer_attestation: ba, outcome, created_ms, ext }
    }
}

prop_compose! {
    fn charter()(nid in any::<[u8; 16]>(), version in any::<u32>(), previous in hash(),
                 effective_ms in any::<u64>(), name in ".{0,20}", slot_minutes in any::<u8>(),
                 prices in any::<(u64, u64)>(), currency in "[A-Z]{3}", tz in "[A-Za-z/_]{1,30}",
                 admins in prop::collection::vec(node_id(), 0..4), limits in any::<(u32, u32, u32, u16, u32, u32)>(),
                 ext in exts()) -> Charter {
        Charter { neighbourhood: NeighbourhoodId(nid), version, previous, effective_ms, name,
            slot_minutes, feed_in_price: prices.0, retail_price: prices.1, currency, time_zone: tz,
            admins, gate_closure_secs: limits.0, settlement_grace_secs: limits.1,
            max_clock_skew_ms: limits.2, max_open_offers_per_slot: limits.3,
            max_offer_versions: limits.4, max_power_w: limits.5, ext }
    }
}

prop_compose! {
    fn envelope()(version in any::<u8>(), charter in hash(), kind in any::<u8>(),
                  payload in prop::collection::vec(any::<u8>(), 0..200),
                  sigs in prop::collection::vec((node_id(), any::<[u8; 32]>(), any::<[u8; 32]>()), 0..3)) -> Envelope {
        Envelope { version, charter, kind, payload, signatures: sigs.into_iter()
            .map(|(signer, r, s)| Signed { signer, sig: SignatureBytes { r, s } }).collect() }
    }
}

fn round_trip<T>(v: &T) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = codec::encode(v);
    let back: T = codec::decode_canonical(&bytes, usize::MAX)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, v);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test] fn offer_round_trips(v in offer()) { round_trip(&v)?; }
    #[test] fn proposal_round_trips(v in proposal()) { round_trip(&v)?; }
    #[test] fn trade_round_trips(v in trade()) { round_trip(&v)?; }
    #[test] fn attestation_round_trips(v in attestation()) { round_trip(&v)?; }
    #[test] fn settlement_round_trips(v in settlement()) { round_trip(&v)?; }
    #[test] fn charter_round_trips(v in charter()) { round_trip(&v)?; }
    #[test] fn envelope_round_trips(v in envelope()) { round_trip(&v)?; }

    #[test]
    fn handshake_and_sync_round_trip(e in envelope(), t in node_id(), n in any::<u64>(),
                                     items in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..5)) {
        round_trip(&TradeRequest::Propose(e.clone()))?;
        round_trip(&TradeRequest::Status(TradeId { taker: t, nonce: n }))?;
        round_trip(&TradeResponse::Status(Some(e)))?;
        round_trip(&TradeResponse::Reject(RejectReason::OverCommitted))?;
        round_trip(&SyncRequest::Attestations { node: t, from_seq: n })?;
        round_trip(&SyncResponse::Envelopes { items, more: true })?;
    }

    /// Arbitrary bytes never panic the decoders or validators, and anything accepted as an
    /// envelope is its own canonical encoding.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(env) = Envelope::from_bytes(&bytes) {
            prop_assert_eq!(env.to_bytes(), bytes.clone());
        }
        let chain = sample::chain();
        let _ = validate_archival(&bytes, &chain, true);
        let _ = Validator::new().validate_gossip(&bytes, &chain, &sample::roster(), sample::NOW_MS);
        let _ = codec::decode_canonical::<TradeRequest>(&bytes, MAX_ENVELOPE_BYTES);
        let _ = codec::decode_canonical::<SyncResponse>(&bytes, 1 << 20);
    }

    /// Valid messages with bytes flipped: never a panic; if still accepted, the bytes are
    /// unchanged from a validly signed message (a flip can only survive in a signature-free
    /// position if there is none, so acceptance implies canonical re-encoding).
    #[test]
    fn mutated_messages_never_panic(which in 0usize..6, flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let env = match which {
            0 => sample::offer_envelope(),
            1 => sample::trade_envelope(),
            2 => sample::attestation_envelope(),
            3 => sample::private_attestation_envelope(),
            4 => sample::commitment_envelope(),
            _ => sample::settlement_envelope(),
        };
        let mut bytes = env.to_bytes();
        for (i, x) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= x | 1;
        }
        let chain = sample::chain();
        if let Ok(acc) = validate_archival(&bytes, &chain, false) {
            prop_assert_eq!(acc.envelope.to_bytes(), bytes.clone());
            prop_assert!(acc.envelope.verify_signatures().is_ok());
        }
        let _ = Validator::new().validate_gossip(&bytes, &chain, &sample::roster(), sample::NOW_MS);
    }
}
