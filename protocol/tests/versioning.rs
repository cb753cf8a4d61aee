//! Two protocol versions side by side. A "version 1" node (this code) and a simulated "version
//! 2" node that adds an optional field to offers as extension 1 (odd: optional) and a critical
//! one as extension 2 (even), and that also speaks a future envelope version.

use wattmesh_protocol::charter::{Charter, SignedCharter};
use wattmesh_protocol::envelope::{Envelope, EnvelopeError};
use wattmesh_protocol::ext::Extension;
use wattmesh_protocol::sample::{self, NOW_MS};
use wattmesh_protocol::validate::{Invalid, Msg, Validator};
use wattmesh_protocol::{Offer, codec};

/// Version 2's new optional offer field: the price step its automatic trader uses.
const EXT_PRICE_STEP: u16 = 1;
/// Version 2's new critical field: delivery restricted to a phase (old nodes must not trade it).
const EXT_PHASE_ONLY: u16 = 2;

fn v2_offer(exts: Vec<Extension>) -> Envelope {
    let mut o = sample::offer();
    o.ext = exts;
    Envelope::seal(&o, sample::charter().hash, &sample::seller_key())
}

/// What the version-2 node reads from an offer: the price step, if present.
fn v2_price_step(o: &Offer) -> Option<u64> {
    o.ext
        .iter()
        .find(|e| e.tag == EXT_PRICE_STEP)
        .and_then(|e| codec::decode_canonical::<u64>(&e.data, 16).ok())
}

#[test]
fn an_old_node_accepts_and_forwards_an_optional_new_field_unchanged() {
    let env = v2_offer(vec![Extension {
        tag: EXT_PRICE_STEP,
        data: codec::encode(&250u64),
    }]);
    let bytes = env.to_bytes();
    let accepted = Validator::new()
        .validate_gossip(&bytes, &sample::chain(), &sample::roster(), NOW_MS)
        .expect("v1 accepts");
    // The v1 node forwards the exact bytes it received; the v2 node reads the field.
    assert_eq!(accepted.envelope.to_bytes(), bytes);
    let Msg::Offer(o) = accepted.msg else {
        panic!("an offer")
    };
    assert_eq!(v2_price_step(&o), Some(250));
    // And a v1 offer is still fine for the v2 node: no extension, no step.
    assert_eq!(v2_price_step(&sample::offer()), None);
}

#[test]
fn an_old_node_ignores_without_penalty_a_critical_field_it_does_not_know() {
    let env = v2_offer(vec![Extension {
        tag: EXT_PHASE_ONLY,
        data: vec![1],
    }]);
    let err = Validator::new()
        .validate_gossip(&env.to_bytes(), &sample::chain(), &sample::roster(), NOW_MS)
        .expect_err("v1 must not act on it");
    assert_eq!(err, Invalid::UnknownCriticalExt(EXT_PHASE_ONLY));
    assert!(!err.is_provable());
}

#[test]
fn an_old_node_ignores_a_newer_envelope_version() {
    let mut env = sample::offer_envelope();
    env.version = 2;
    env.signatures.clear();
    env.add_signature(&sample::seller_key());
    let err = Validator::new()
        .validate_gossip(&env.to_bytes(), &sample::chain(), &sample::roster(), NOW_MS)
        .expect_err("ignored");
    assert_eq!(err, Invalid::Envelope(EnvelopeError::UnsupportedVersion(2)));
    assert!(!err.is_provable());
}

#[test]
fn a_new_charter_version_takes_effect_at_its_time_and_old_messages_still_verify() {
    let mut chain = sample::chain();
    let v1 = sample::charter();
    let mut c2: Charter = v1.charter.clone();
    c2.version = 2;
    c2.retail_price = 15_000;
    c2.effective_ms = NOW_MS + 3_600_000;
    let v2 = SignedCharter::amend(&v1, c2, &sample::admin_key()).expect("admin signs v2");
    chain.push(v2.envelope.clone()).expect("follows v1");

    assert_eq!(chain.at(NOW_MS).hash, v1.hash);
    assert_eq!(chain.at(NOW_MS + 3_600_000).hash, v2.hash);

    // Before the switch, an offer at the new higher price under v1 is outside v1's band.
    let mut o = sample::offer();
    o.price = 14_500;
    let under_v1 = Envelope::seal(&o, v1.hash, &sample::seller_key());
    assert_eq!(
        Validator::new()
            .validate_gossip(&under_v1.to_bytes(), &chain, &sample::roster(), NOW_MS)
            .map(|_| ()),
        Err(Invalid::PriceOutsideBand)
    );
    // After it, the same offer made under v2 is fine.
    let under_v2 = Envelope::seal(&o, v2.hash, &sample::seller_key());
    let after = NOW_MS + 3_600_000 + 60_000;
    assert!(
        Validator::new()
            .validate_gossip(&under_v2.to_bytes(), &chain, &sample::roster(), after)
            .is_ok()
    );
    // Fresh messages under the superseded charter are not accepted live any more...
    assert_eq!(
        Validator::new()
            .validate_gossip(
                &sample::offer_envelope().to_bytes(),
                &chain,
                &sample::roster(),
                after
            )
            .map(|_| ()),
        Err(Invalid::CharterNotInEffect)
    );
    // ...but they still verify as archival records under the charter they were signed for.
    assert!(
        wattmesh_protocol::validate::validate_archival(
            &sample::trade_envelope().to_bytes(),
            &chain,
            false
        )
        .is_ok()
    );
}
