//! Deterministic sample keys and messages, for tests, benchmarks, fuzzing and the published
//! test vectors. Nothing here is used by a running node.

use crate::attestation::{AttestationCommitment, EXT_PRIVATE, MeterAttestation, MeterStatus};
use crate::charter::{Charter, CharterChain, SignedCharter};
use crate::envelope::Envelope;
use crate::ids::{Hash32, NeighbourhoodId};
use crate::merkle;
use crate::offer::{ATTR_GREEN, Offer, OfferId, Side};
use crate::settle;
use crate::settlement::Settlement;
use crate::sign::NodeKey;
use crate::trade::{Trade, TradeProposal};

/// The sample admin's key (secret `[1; 32]`).
pub fn admin_key() -> NodeKey {
    NodeKey::from_secret(&[1; 32])
}

/// The sample seller's key (secret `[2; 32]`); it makes the sample sell offer.
pub fn seller_key() -> NodeKey {
    NodeKey::from_secret(&[2; 32])
}

/// The sample buyer's key (secret `[3; 32]`); it takes the sample offer.
pub fn buyer_key() -> NodeKey {
    NodeKey::from_secret(&[3; 32])
}

/// 2026-06-21 12:00:00 UTC: midsummer noon (07:00 in Ames, Iowa), the sample "now".
pub const NOW_MS: u64 = 1_782_043_200_000;
/// The sample delivery slot: 18:00 UTC that day (13:00 in Ames), a 15-minute slot.
pub const SLOT_MS: u64 = 1_782_064_800_000;

/// The sample neighbourhood's founding charter (Ames defaults), effective from the epoch.
pub fn charter() -> SignedCharter {
    let admin = admin_key();
    let c = Charter::founding(
        NeighbourhoodId(*b"ames-sunset-lane"),
        "Sunset Lane, Ames",
        admin.node_id(),
        0,
    );
    SignedCharter::found(c, &admin).expect("the sample charter is valid")
}

/// A chain holding just [`charter`].
pub fn chain() -> CharterChain {
    CharterChain::new(charter()).expect("founding charter")
}

/// A roster of the sample neighbourhood: the admin (by the charter), and the seller and the
/// buyer, whom the admin added at the epoch.
pub fn roster() -> crate::roster::Roster {
    use crate::roster::{Change, Profile, Roster, sign_change};
    let chain = chain();
    let mut r = Roster::new(&chain);
    for (key, name) in [(seller_key(), "Seller"), (buyer_key(), "Buyer")] {
        let change = Change::Add {
            member: key.node_id(),
            profile: Profile {
                name: name.into(),
                pv_capacity_w: 6_000,
            },
        };
        let rec = sign_change(&chain, &admin_key(), 0, change).to_bytes();
        r.insert(&rec, &chain, None)
            .expect("the sample roster is valid");
    }
    r
}

/// The sample sell offer: 1.5 kWh in [`SLOT_MS`] at 9.5 ¢/kWh, green.
pub fn offer() -> Offer {
    let c = charter();
    Offer {
        maker: seller_key().node_id(),
        nonce: 7,
        version: 1,
        side: Side::Sell,
        slot_ms: SLOT_MS,
        quantity_wh: 1_500,
        min_fill_wh: 100,
        price: 9_500,
        created_ms: NOW_MS,
        expires_ms: crate::slot::gate_closure(&c.charter, SLOT_MS),
        attributes: ATTR_GREEN,
        ext: Vec::new(),
    }
}

/// The sample offer, signed.
pub fn offer_envelope() -> Envelope {
    Envelope::seal(&offer(), charter().hash, &seller_key())
}

/// The buyer's proposal for 1 kWh of the sample offer at its price.
pub fn proposal() -> TradeProposal {
    TradeProposal {
        taker: buyer_key().node_id(),
        nonce: 42,
        offer: OfferId {
            maker: seller_key().node_id(),
            nonce: 7,
        },
        offer_version: 1,
        slot_ms: SLOT_MS,
        energy_wh: 1_000,
        price: 9_500,
        created_ms: NOW_MS + 1_000,
        ext: Vec::new(),
    }
}

/// The trade the seller signs for [`proposal`].
pub fn trade() -> Trade {
    Trade::from_proposal(&offer(), &proposal(), NOW_MS + 1_200)
}

/// The trade, signed by the maker (seller) and countersigned by the taker (buyer).
pub fn trade_envelope() -> Envelope {
    let mut env = Envelope::seal(&trade(), charter().hash, &seller_key());
    env.add_signature(&buyer_key());
    env
}

/// The seller's attestation for [`SLOT_MS`]: exported 800 Wh against 1 000 Wh sold (short).
pub fn seller_attestation() -> MeterAttestation {
    let t = trade();
    let sold = merkle::root(&[(t.id(), t.energy_wh)]).expect("small sum");
    MeterAttestation {
        node: seller_key().node_id(),
        seq: 0,
        prev: Hash32::ZERO,
        slot_ms: SLOT_MS,
        import_register_wh: 120_000,
        export_register_wh: 95_800,
        import_wh: 0,
        export_wh: 800,
        coverage_permille: 1000,
        status: MeterStatus::Simulated,
        sold,
        bought: merkle::empty_root(),
        created_ms: SLOT_MS + 900_000 + 5_000,
        ext: Vec::new(),
    }
}

/// The attestation, signed.
pub fn attestation_envelope() -> Envelope {
    Envelope::seal(&seller_attestation(), charter().hash, &seller_key())
}

/// The seller's next attestation, for the slot after [`SLOT_MS`], made in privacy mode: marked
/// private ([`EXT_PRIVATE`] with 16 blinding bytes), chained to [`seller_attestation`]. It
/// exported 600 Wh and traded nothing.
pub fn seller_private_attestation() -> MeterAttestation {
    let first = seller_attestation();
    let slot_ms = SLOT_MS + 900_000;
    MeterAttestation {
        node: seller_key().node_id(),
        seq: 1,
        prev: crate::attestation::chain_hash(&crate::codec::encode(&first)),
        slot_ms,
        import_register_wh: first.import_register_wh + 20,
        export_register_wh: first.export_register_wh + 600,
        import_wh: 20,
        export_wh: 600,
        coverage_permille: 1000,
        status: MeterStatus::Simulated,
        sold: merkle::empty_root(),
        bought: merkle::empty_root(),
        created_ms: slot_ms + 900_000 + 4_000,
        ext: vec![crate::ext::Extension {
            tag: EXT_PRIVATE,
            data: vec![0x5a; 16],
        }],
    }
}

/// [`seller_private_attestation`], signed.
pub fn private_attestation_envelope() -> Envelope {
    Envelope::seal(&seller_private_attestation(), charter().hash, &seller_key())
}

/// The commitment the seller publishes for [`seller_private_attestation`], signed.
pub fn commitment_envelope() -> Envelope {
    let env = private_attestation_envelope();
    let c = AttestationCommitment::of(&seller_private_attestation(), &env.payload);
    Envelope::seal(&c, charter().hash, &seller_key())
}

/// The settlement of [`trade`] against [`seller_attestation`] (no buyer attestation), signed
/// by the seller and the buyer.
pub fn settlement_envelope() -> Envelope {
    let t = trade();
    let att = seller_attestation();
    let proof = merkle::prove(&[(t.id(), t.energy_wh)], &t.id()).expect("in tree");
    let settled = settle::settle(&t, Some((&att, &proof)), None).expect("sample settles");
    let att_hash = crate::attestation::chain_hash(&crate::codec::encode(&att));
    let s = Settlement::new(
        &t,
        &settled,
        Some(att_hash),
        None,
        SLOT_MS + 900_000 + 60_000,
    );
    let mut env = Envelope::seal(&s, charter().hash, &seller_key());
    env.add_signature(&buyer_key());
    env
}
