//! One test per way a message can be invalid, each checking both that it is refused and
//! whether the refusal is provable (reject and penalise) or time-dependent (ignore).

use wattmesh_protocol::charter::{Charter, CharterChain, SignedCharter};
use wattmesh_protocol::codec::{self, CodecError, MAX_ENVELOPE_BYTES};
use wattmesh_protocol::envelope::{Envelope, EnvelopeError, Kind, PROTOCOL_VERSION};
use wattmesh_protocol::ext::Extension;
use wattmesh_protocol::sample::{self, NOW_MS, SLOT_MS};
use wattmesh_protocol::sign::{NodeKey, SignatureBytes, SignatureError};
use wattmesh_protocol::validate::{Invalid, Validator, validate_archival};
use wattmesh_protocol::{Hash32, Offer, slot};

fn gossip(env: &Envelope, now: u64) -> Result<(), Invalid> {
    Validator::new()
        .validate_gossip(&env.to_bytes(), &sample::chain(), &sample::roster(), now)
        .map(|_| ())
}

fn offer_with(f: impl FnOnce(&mut Offer)) -> Envelope {
    let mut o = sample::offer();
    f(&mut o);
    Envelope::seal(&o, sample::charter().hash, &sample::seller_key())
}

fn assert_provable(r: Result<(), Invalid>, want: Invalid) {
    let err = r.expect_err("must be refused");
    assert_eq!(err, want);
    assert!(err.is_provable(), "{err:?} should be provable");
}

fn assert_ignored(r: Result<(), Invalid>, want: Invalid) {
    let err = r.expect_err("must be refused");
    assert_eq!(err, want);
    assert!(!err.is_provable(), "{err:?} should only be ignored");
}

#[test]
fn a_valid_offer_is_accepted() {
    assert_eq!(gossip(&sample::offer_envelope(), NOW_MS), Ok(()));
    assert!(
        validate_archival(
            &sample::trade_envelope().to_bytes(),
            &sample::chain(),
            false
        )
        .is_ok()
    );
    assert!(
        validate_archival(
            &sample::settlement_envelope().to_bytes(),
            &sample::chain(),
            false
        )
        .is_ok()
    );
    assert_eq!(
        gossip(&sample::attestation_envelope(), SLOT_MS + 900_000 + 6_000),
        Ok(())
    );
}

#[test]
fn bad_signature() {
    let mut env = sample::offer_envelope();
    env.signatures[0].sig.s[0] ^= 1;
    let err = gossip(&env, NOW_MS).expect_err("refused");
    assert!(matches!(
        err,
        Invalid::Envelope(EnvelopeError::Signature { .. })
    ));
    assert!(err.is_provable());
}

#[test]
fn signature_by_someone_else_than_the_maker() {
    let env = Envelope::seal(
        &sample::offer(),
        sample::charter().hash,
        &sample::buyer_key(),
    );
    assert_provable(gossip(&env, NOW_MS), Invalid::WrongSigner);
}

#[test]
fn small_order_key() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut o = sample::offer();
    o.maker = wattmesh_protocol::NodeId(identity);
    let mut env = Envelope::seal(&o, sample::charter().hash, &sample::seller_key());
    env.signatures[0].signer = o.maker;
    env.signatures[0].sig = SignatureBytes {
        r: identity,
        s: [0; 32],
    };
    assert_provable(
        gossip(&env, NOW_MS),
        Invalid::Envelope(EnvelopeError::Signature {
            index: 0,
            error: SignatureError::SmallOrderKey,
        }),
    );
}

#[test]
fn non_canonical_s() {
    let mut env = sample::offer_envelope();
    // S + l: the same scalar, a second encoding.
    let l: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let s = env.signatures[0].sig.s;
    let mut carry = 0u16;
    for i in 0..32 {
        let v = s[i] as u16 + l[i] as u16 + carry;
        env.signatures[0].sig.s[i] = v as u8;
        carry = v >> 8;
    }
    assert_provable(
        gossip(&env, NOW_MS),
        Invalid::Envelope(EnvelopeError::Signature {
            index: 0,
            error: SignatureError::NonCanonicalS,
        }),
    );
}

/// A second charter version the node knows, to move signatures between domains.
fn chain_with_v2() -> (CharterChain, SignedCharter) {
    let mut chain = sample::chain();
    let mut c2: Charter = sample::charter().charter.clone();
    c2.version = 2;
    c2.retail_price = 14_000;
    c2.effective_ms = NOW_MS + 3_600_000;
    let v2 = SignedCharter::amend(&sample::charter(), c2, &sample::admin_key()).expect("v2");
    chain.push(v2.envelope.clone()).expect("push v2");
    (chain, v2)
}

#[test]
fn wrong_charter_in_the_domain() {
    let (chain, v2) = chain_with_v2();
    let mut env = sample::offer_envelope();
    env.charter = v2.hash;
    // Relabelled to another known charter: the signature no longer verifies (after the
    // switch, so the charter itself is acceptable).
    let err = Validator::new()
        .validate_gossip(
            &env.to_bytes(),
            &chain,
            &sample::roster(),
            NOW_MS + 3_600_000,
        )
        .expect_err("refused");
    assert!(
        matches!(err, Invalid::Envelope(EnvelopeError::Signature { .. })),
        "{err:?}"
    );
    // Relabelled to a charter nobody knows: ignored (it might be newer than ours).
    env.charter = Hash32([9; 32]);
    assert_ignored(gossip(&env, NOW_MS), Invalid::UnknownCharter);
}

#[test]
fn wrong_kind_in_the_domain() {
    let mut env = sample::offer_envelope();
    env.kind = Kind::TradeProposal as u8;
    assert!(
        env.verify_signatures().is_err(),
        "kind is in the signed domain"
    );
    let err = validate_archival(&env.to_bytes(), &sample::chain(), false).expect_err("refused");
    assert!(err.is_provable(), "{err:?}");
}

#[test]
fn replay_is_ignored_however_late() {
    let chain = sample::chain();
    let mut v = Validator::new();
    let bytes = sample::offer_envelope().to_bytes();
    assert!(
        v.validate_gossip(&bytes, &chain, &sample::roster(), NOW_MS)
            .is_ok()
    );
    // Long after gossip's duplicate cache would have forgotten it, but before expiry.
    let later = NOW_MS + 3_600_000;
    assert_ignored(
        v.validate_gossip(&bytes, &chain, &sample::roster(), later)
            .map(|_| ()),
        Invalid::Replay,
    );
    // An older version after a newer one is stale.
    let v2 = offer_with(|o| {
        o.version = 2;
        o.quantity_wh = 900;
    });
    assert!(
        v.validate_gossip(&v2.to_bytes(), &chain, &sample::roster(), later)
            .is_ok()
    );
    assert_ignored(
        v.validate_gossip(&bytes, &chain, &sample::roster(), later)
            .map(|_| ()),
        Invalid::Stale,
    );
}

#[test]
fn expired() {
    let env = offer_with(|o| o.expires_ms = NOW_MS + 10_000);
    assert_ignored(gossip(&env, NOW_MS + 10_001), Invalid::Expired);
}

#[test]
fn too_far_in_the_future() {
    let skew = sample::charter().charter.max_clock_skew_ms as u64;
    let env = offer_with(|o| o.created_ms = NOW_MS + skew + 1);
    assert_ignored(gossip(&env, NOW_MS), Invalid::TooFarInFuture);
    let ok = offer_with(|o| o.created_ms = NOW_MS + skew);
    assert_eq!(gossip(&ok, NOW_MS), Ok(()));
}

#[test]
fn oversized() {
    let env = offer_with(|o| {
        o.ext = vec![Extension {
            tag: 1,
            data: vec![0; 5000],
        }]
    });
    let err = gossip(&env, NOW_MS).expect_err("refused");
    assert!(
        matches!(
            err,
            Invalid::Envelope(EnvelopeError::Codec(CodecError::TooLarge { .. }))
        ),
        "{err:?}"
    );
    assert!(err.is_provable());
    assert!(env.to_bytes().len() > MAX_ENVELOPE_BYTES);
}

#[test]
fn trailing_bytes() {
    let mut bytes = sample::offer_envelope().to_bytes();
    bytes.push(0);
    let err = Validator::new()
        .validate_gossip(&bytes, &sample::chain(), &sample::roster(), NOW_MS)
        .expect_err("refused");
    assert_eq!(
        err,
        Invalid::Envelope(EnvelopeError::Codec(CodecError::TrailingBytes(1)))
    );
    assert!(err.is_provable());
}

#[test]
fn overlong_varint_even_when_signed() {
    // The maker signs a payload whose nonce (7) is written as the overlong [0x87, 0x00].
    let mut payload = codec::encode(&sample::offer());
    assert_eq!(payload[32], 7);
    payload.splice(32..33, [0x87, 0x00]);
    let mut env = Envelope {
        version: PROTOCOL_VERSION,
        charter: sample::charter().hash,
        kind: Kind::Offer as u8,
        payload,
        signatures: vec![],
    };
    env.add_signature(&sample::seller_key());
    assert!(
        env.verify_signatures().is_ok(),
        "the signature itself is fine"
    );
    assert_provable(
        gossip(&env, NOW_MS),
        Invalid::Envelope(EnvelopeError::Payload(CodecError::NonCanonical)),
    );
}

#[test]
fn price_outside_the_band() {
    let c = sample::charter().charter;
    for price in [c.feed_in_price - 1, c.retail_price + 1] {
        assert_provable(
            gossip(&offer_with(|o| o.price = price), NOW_MS),
            Invalid::PriceOutsideBand,
        );
    }
    for price in [c.feed_in_price, c.retail_price] {
        assert_eq!(gossip(&offer_with(|o| o.price = price), NOW_MS), Ok(()));
    }
}

#[test]
fn misaligned_slot() {
    let env = offer_with(|o| {
        o.slot_ms += 60_000;
        o.expires_ms = NOW_MS + 60_000;
    });
    assert_provable(gossip(&env, NOW_MS), Invalid::MisalignedSlot);
}

#[test]
fn zero_or_absurd_energy() {
    let max = sample::charter().charter.max_energy_per_slot_wh();
    assert_provable(
        gossip(
            &offer_with(|o| {
                o.quantity_wh = 0;
                o.min_fill_wh = 0;
            }),
            NOW_MS,
        ),
        Invalid::Energy,
    );
    assert_provable(
        gossip(&offer_with(|o| o.quantity_wh = max + 1), NOW_MS),
        Invalid::Energy,
    );
    assert_eq!(gossip(&offer_with(|o| o.quantity_wh = max), NOW_MS), Ok(()));
}

#[test]
fn after_gate_closure() {
    let c = sample::charter().charter;
    let gate = slot::gate_closure(&c, SLOT_MS);
    // Arriving after the gate closed: ignored (the sender's clock may differ).
    assert_ignored(gossip(&sample::offer_envelope(), gate), Invalid::GateClosed);
    // Expiring after the gate: provably wrong.
    assert_provable(
        gossip(&offer_with(|o| o.expires_ms = gate + 1), NOW_MS),
        Invalid::Field("expires_ms"),
    );
    // A trade agreed after the gate: provably wrong.
    let mut t = sample::trade();
    t.agreed_ms = gate + 1;
    let mut env = Envelope::seal(&t, sample::charter().hash, &sample::seller_key());
    env.add_signature(&sample::buyer_key());
    assert_eq!(
        validate_archival(&env.to_bytes(), &sample::chain(), false).map(|_| ()),
        Err(Invalid::GateClosed)
    );
}

#[test]
fn over_the_spam_limits() {
    let chain = sample::chain();
    let max = chain.latest().charter.max_open_offers_per_slot as u64;
    let mut v = Validator::new();
    for nonce in 0..max {
        let env = offer_with(|o| o.nonce = 100 + nonce);
        assert!(
            v.validate_gossip(&env.to_bytes(), &chain, &sample::roster(), NOW_MS)
                .is_ok()
        );
    }
    let one_more = offer_with(|o| o.nonce = 100 + max);
    assert_ignored(
        v.validate_gossip(&one_more.to_bytes(), &chain, &sample::roster(), NOW_MS)
            .map(|_| ()),
        Invalid::TooManyOpenOffers,
    );
    // Cancelling one makes room.
    let cancel = offer_with(|o| {
        o.nonce = 100;
        o.version = 2;
        o.quantity_wh = 0;
        o.min_fill_wh = 0;
    });
    assert!(
        v.validate_gossip(&cancel.to_bytes(), &chain, &sample::roster(), NOW_MS)
            .is_ok()
    );
    assert!(
        v.validate_gossip(&one_more.to_bytes(), &chain, &sample::roster(), NOW_MS)
            .is_ok()
    );
    // Versions beyond the charter's limit are provably over it.
    let too_many = offer_with(|o| o.version = chain.latest().charter.max_offer_versions + 1);
    assert_provable(gossip(&too_many, NOW_MS), Invalid::TooManyVersions);
}

#[test]
fn gossip_carries_only_offers_and_attestations() {
    assert_provable(
        gossip(&sample::trade_envelope(), NOW_MS),
        Invalid::KindNotAllowed(Kind::Trade),
    );
}

#[test]
fn a_trade_must_be_signed_by_maker_then_taker() {
    let mut env = Envelope::seal(
        &sample::trade(),
        sample::charter().hash,
        &sample::buyer_key(),
    );
    env.add_signature(&sample::seller_key());
    assert_eq!(
        validate_archival(&env.to_bytes(), &sample::chain(), false).map(|_| ()),
        Err(Invalid::WrongSigner)
    );
    // The maker's signature alone is a valid partial trade (handshake step 2), not a complete one.
    let partial = Envelope::seal(
        &sample::trade(),
        sample::charter().hash,
        &sample::seller_key(),
    );
    assert!(validate_archival(&partial.to_bytes(), &sample::chain(), true).is_ok());
    assert!(validate_archival(&partial.to_bytes(), &sample::chain(), false).is_err());
}

#[test]
fn attestation_replay_and_lateness() {
    let chain = sample::chain();
    let c = &chain.latest().charter;
    let mut v = Validator::new();
    let bytes = sample::attestation_envelope().to_bytes();
    let now = SLOT_MS + 900_000 + 6_000;
    assert!(
        v.validate_gossip(&bytes, &chain, &sample::roster(), now)
            .is_ok()
    );
    assert_ignored(
        v.validate_gossip(&bytes, &chain, &sample::roster(), now)
            .map(|_| ()),
        Invalid::Replay,
    );
    let late = slot::attestation_deadline(c, SLOT_MS) + 1;
    assert_ignored(
        Validator::new()
            .validate_gossip(&bytes, &chain, &sample::roster(), late)
            .map(|_| ()),
        Invalid::Late,
    );
}

#[test]
fn attestation_exporting_more_than_possible() {
    let c = sample::charter().charter;
    let mut a = sample::seller_attestation();
    a.export_wh = c.max_energy_per_slot_wh() + 1;
    a.export_register_wh = a.export_wh + 10;
    let env = Envelope::seal(&a, sample::charter().hash, &sample::seller_key());
    assert_provable(gossip(&env, SLOT_MS + 900_000 + 6_000), Invalid::Energy);
}

#[test]
fn a_charter_signed_by_a_non_admin_is_refused() {
    let mut c2 = sample::charter().charter.clone();
    c2.version = 2;
    let outsider = NodeKey::from_secret(&[9; 32]);
    assert!(SignedCharter::amend(&sample::charter(), c2, &outsider).is_err());
}

#[test]
fn unknown_envelope_version_is_ignored_not_punished() {
    let mut env = sample::offer_envelope();
    env.version = 2;
    let err = gossip(&env, NOW_MS).expect_err("refused");
    assert_eq!(err, Invalid::Envelope(EnvelopeError::UnsupportedVersion(2)));
    assert!(!err.is_provable());
    let mut env = sample::offer_envelope();
    env.kind = 200;
    let err = gossip(&env, NOW_MS).expect_err("refused");
    assert_eq!(err, Invalid::Envelope(EnvelopeError::UnknownKind(200)));
    assert!(!err.is_provable());
}

#[test]
fn an_offer_from_a_non_member_is_ignored_not_rejected() {
    // A node with the network key but no roster record signs a perfectly valid offer.
    let outsider = wattmesh_protocol::NodeKey::from_secret(&[0x77; 32]);
    let mut o = sample::offer();
    o.maker = outsider.node_id();
    let env = Envelope::seal(&o, sample::charter().hash, &outsider);
    let got = Validator::new().validate_gossip(
        &env.to_bytes(),
        &sample::chain(),
        &sample::roster(),
        NOW_MS,
    );
    assert_eq!(got.map(|_| ()), Err(Invalid::NotMember));
    assert!(!Invalid::NotMember.is_provable());
    // The sample seller, a member, gets the same offer accepted.
    assert!(
        Validator::new()
            .validate_gossip(
                &sample::offer_envelope().to_bytes(),
                &sample::chain(),
                &sample::roster(),
                NOW_MS
            )
            .is_ok()
    );
}

// ---- privacy mode: private attestations and commitments

/// When the sample's private attestation (the slot after `SLOT_MS`) is fresh.
const PRIVATE_NOW: u64 = SLOT_MS + 2 * 900_000 + 6_000;

fn commitment_with(f: impl FnOnce(&mut wattmesh_protocol::AttestationCommitment)) -> Envelope {
    let mut m: wattmesh_protocol::AttestationCommitment = sample::commitment_envelope()
        .payload_as()
        .expect("sample commitment");
    f(&mut m);
    Envelope::seal(&m, sample::charter().hash, &sample::seller_key())
}

#[test]
fn a_commitment_is_gossiped_and_archived_like_an_attestation() {
    assert_eq!(gossip(&sample::commitment_envelope(), PRIVATE_NOW), Ok(()));
    assert!(
        validate_archival(
            &sample::commitment_envelope().to_bytes(),
            &sample::chain(),
            false
        )
        .is_ok()
    );
    // The private attestation itself is valid, and archival checks accept it (a counterparty
    // gets it by request-response, and the seller sends it with its settlement).
    assert!(
        validate_archival(
            &sample::private_attestation_envelope().to_bytes(),
            &sample::chain(),
            false
        )
        .is_ok()
    );
}

#[test]
fn a_private_attestation_on_gossip_is_ignored_not_punished() {
    // Its node sent it only to its counterparties; whoever forwards it is not relayed.
    assert_ignored(
        gossip(&sample::private_attestation_envelope(), PRIVATE_NOW),
        Invalid::Private,
    );
}

#[test]
fn a_private_marker_of_the_wrong_length_is_provable() {
    for len in [0, 15, 33] {
        let mut a = sample::seller_private_attestation();
        a.ext[0].data = vec![7; len];
        let env = Envelope::seal(&a, sample::charter().hash, &sample::seller_key());
        assert_provable(gossip(&env, PRIVATE_NOW), Invalid::Field("ext"));
    }
}

#[test]
fn commitment_signed_by_someone_else() {
    let env = Envelope::seal(
        &sample::commitment_envelope()
            .payload_as::<wattmesh_protocol::AttestationCommitment>()
            .expect("commitment"),
        sample::charter().hash,
        &sample::buyer_key(),
    );
    assert_provable(gossip(&env, PRIVATE_NOW), Invalid::WrongSigner);
}

#[test]
fn commitment_fields_out_of_range() {
    assert_provable(
        gossip(&commitment_with(|m| m.prev = Hash32::ZERO), PRIVATE_NOW),
        Invalid::Field("prev"),
    );
    assert_provable(
        gossip(&commitment_with(|m| m.seq = 0), PRIVATE_NOW),
        Invalid::Field("prev"),
    );
    assert_provable(
        gossip(
            &commitment_with(|m| m.attestation = Hash32::ZERO),
            PRIVATE_NOW,
        ),
        Invalid::Field("attestation"),
    );
    assert_provable(
        gossip(&commitment_with(|m| m.slot_ms += 1), PRIVATE_NOW),
        Invalid::MisalignedSlot,
    );
    assert_provable(
        gossip(
            &commitment_with(|m| m.created_ms = m.slot_ms + 1_000),
            PRIVATE_NOW,
        ),
        Invalid::Field("created_ms"),
    );
}

#[test]
fn commitment_replay_lateness_and_future() {
    let chain = sample::chain();
    let c = &chain.latest().charter;
    let bytes = sample::commitment_envelope().to_bytes();
    let mut v = Validator::new();
    assert!(
        v.validate_gossip(&bytes, &chain, &sample::roster(), PRIVATE_NOW)
            .is_ok()
    );
    assert_ignored(
        v.validate_gossip(&bytes, &chain, &sample::roster(), PRIVATE_NOW)
            .map(|_| ()),
        Invalid::Replay,
    );
    // One sequence number space per node: a full attestation of an earlier seq is a replay too.
    assert_ignored(
        v.validate_gossip(
            &sample::attestation_envelope().to_bytes(),
            &chain,
            &sample::roster(),
            SLOT_MS + 900_000 + 6_000,
        )
        .map(|_| ()),
        Invalid::Replay,
    );
    let late = slot::attestation_deadline(c, SLOT_MS + 900_000) + 1;
    assert_ignored(gossip(&sample::commitment_envelope(), late), Invalid::Late);
    let early = commitment_with(|m| m.created_ms += 3_600_000);
    assert_ignored(gossip(&early, PRIVATE_NOW), Invalid::TooFarInFuture);
}

#[test]
fn a_commitment_from_a_non_member_is_ignored() {
    let outsider = NodeKey::from_secret(&[9; 32]);
    let mut m: wattmesh_protocol::AttestationCommitment = sample::commitment_envelope()
        .payload_as()
        .expect("commitment");
    m.node = outsider.node_id();
    let env = Envelope::seal(&m, sample::charter().hash, &outsider);
    assert_ignored(gossip(&env, PRIVATE_NOW), Invalid::NotMember);
}
