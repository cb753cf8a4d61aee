//! The published test vectors (`tests/vectors/vectors.json`): sample keys, one message of every
//! kind with its exact bytes and signatures, and signature-rule cases. This test rebuilds them
//! from the code and requires the file to match byte for byte, so any change to the wire
//! format shows up as a diff. Regenerate deliberately with `WATTMESH_REGEN_VECTORS=1`.
//! `scripts/check-vectors` checks the same file with an independent Python encoder.

use curve25519_dalek::{Scalar, edwards::CompressedEdwardsY};
use serde_json::{Value, json};
use sha2::{Digest, Sha512};
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::sample;
use wattmesh_protocol::sign::{self, NodeKey, SignatureBytes, SignatureError};
use wattmesh_protocol::trade::{TradeRequest, TradeResponse};
use wattmesh_protocol::{
    AttestationCommitment, Charter, MeterAttestation, Offer, Settlement, Trade, TradeProposal,
    codec,
};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/vectors.json");

fn message(name: &str, env: &Envelope, fields: Value) -> Value {
    json!({
        "name": name,
        "kind": env.kind,
        "charter_hash": hex::encode(env.charter.0),
        "fields": fields,
        "payload": hex::encode(&env.payload),
        "signing_input": hex::encode(env.signing_input()),
        "signatures": env.signatures.iter().map(|s| json!({
            "signer": hex::encode(s.signer.0),
            "signature": hex::encode(s.sig.to_bytes()),
        })).collect::<Vec<_>>(),
        "envelope": hex::encode(env.to_bytes()),
    })
}

fn fields<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("samples serialise")
}

/// The secret scalar of an RFC 8032 key, to build edge-case signatures by hand.
fn secret_scalar(seed: &[u8; 32]) -> Scalar {
    let h = Sha512::digest(seed);
    let mut a = [0u8; 32];
    a.copy_from_slice(&h[..32]);
    a[0] &= 248;
    a[31] &= 127;
    a[31] |= 64;
    Scalar::from_bytes_mod_order(a)
}

fn challenge(r: &[u8; 32], a: &[u8; 32], m: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(r);
    h.update(a);
    h.update(m);
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

/// `S + ℓ`, the same scalar with a non-canonical encoding.
fn add_order(s: &[u8; 32]) -> [u8; 32] {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let v = s[i] as u16 + L[i] as u16 + carry;
        out[i] = v as u8;
        carry = v >> 8;
    }
    out
}

fn sig_case(name: &str, key: [u8; 32], msg: &[u8], sig: SignatureBytes) -> Value {
    let result = sign::verify(&wattmesh_protocol::NodeId(key), msg, &sig);
    json!({
        "name": name,
        "public": hex::encode(key),
        "message": hex::encode(msg),
        "signature": hex::encode(sig.to_bytes()),
        "accept": result.is_ok(),
        "reason": result.err().map(|e: SignatureError| e.to_string()),
    })
}

fn signature_rule_cases() -> Vec<Value> {
    let msg = b"wattmesh signature rule";
    let seed = [2u8; 32];
    let key = NodeKey::from_secret(&seed);
    let a = key.node_id().0;
    let valid = key.sign(msg);
    let mut cases = vec![sig_case("valid", a, msg, valid)];
    cases.push(sig_case(
        "wrong message",
        a,
        b"wattmesh signature rulf",
        valid,
    ));
    cases.push(sig_case(
        "non-canonical S (S + l)",
        a,
        msg,
        SignatureBytes {
            r: valid.r,
            s: add_order(&valid.s),
        },
    ));
    // The identity as public key with R = identity and S = 0 satisfies the cofactored
    // equation for every message: ZIP-215 alone would accept it.
    let identity = CompressedEdwardsY::default().0;
    let mut identity_enc = [0u8; 32];
    identity_enc[0] = 1;
    assert_eq!(identity, identity_enc);
    cases.push(sig_case(
        "small-order public key (identity), R = identity, S = 0",
        identity,
        msg,
        SignatureBytes {
            r: identity,
            s: [0; 32],
        },
    ));
    // r = 0 gives R = identity; S = k·a makes the equation hold exactly.
    let s = challenge(&identity, &a, msg) * secret_scalar(&seed);
    cases.push(sig_case(
        "small-order R (identity) with a valid equation",
        a,
        msg,
        SignatureBytes {
            r: identity,
            s: s.to_bytes(),
        },
    ));
    // y = p + 1 encodes the identity non-canonically.
    let mut non_canonical = [0xffu8; 32];
    non_canonical[0] = 0xee;
    non_canonical[31] = 0x7f;
    cases.push(sig_case(
        "non-canonical public key encoding (y = p + 1)",
        non_canonical,
        msg,
        valid,
    ));
    cases
}

fn build() -> String {
    let keys = [
        ("admin", sample::admin_key()),
        ("seller", sample::seller_key()),
        ("buyer", sample::buyer_key()),
    ];
    let charter = sample::charter();
    let offer = sample::offer_envelope();
    let proposal_env = Envelope::seal(&sample::proposal(), charter.hash, &sample::buyer_key());
    let trade = sample::trade_envelope();
    let att = sample::attestation_envelope();
    let settlement = sample::settlement_envelope();
    let private = sample::private_attestation_envelope();
    let commitment = sample::commitment_envelope();
    let request = TradeRequest::Propose(proposal_env.clone());
    // Handshake step 2: the trade signed by the maker alone.
    let maker_signed = Envelope::seal(&sample::trade(), charter.hash, &sample::seller_key());
    let response = TradeResponse::Accept(maker_signed);
    // A buy offer carrying an optional extension (tag 1) and both attribute bits.
    let mut buy = sample::offer();
    buy.maker = sample::buyer_key().node_id();
    buy.nonce = 300;
    buy.version = 3;
    buy.side = wattmesh_protocol::Side::Buy;
    buy.attributes = 3;
    buy.ext = vec![wattmesh_protocol::ext::Extension {
        tag: 1,
        data: vec![0xca, 0xfe],
    }];
    let buy_env = Envelope::seal(&buy, charter.hash, &sample::buyer_key());
    // A Merkle sum tree over three trades, with the ids as 40-byte hex.
    let leaves: Vec<_> = (1u8..=3)
        .map(|i| {
            (
                wattmesh_protocol::TradeId {
                    taker: wattmesh_protocol::NodeId([i * 0x11; 32]),
                    nonce: 1000 - i as u64,
                },
                i as u64 * 250,
            )
        })
        .collect();
    let tree = wattmesh_protocol::merkle::root(&leaves).expect("small sums");
    let doc = json!({
        "description": "wattmesh protocol test vectors; see docs/PROTOCOL.md",
        "protocol_version": wattmesh_protocol::PROTOCOL_VERSION,
        "keys": keys.iter().map(|(n, k)| json!({
            "name": n,
            "secret": hex::encode(k.secret_bytes()),
            "public": hex::encode(k.node_id().0),
        })).collect::<Vec<_>>(),
        "charter_hash": hex::encode(charter.hash.0),
        "messages": [
            message("charter", &charter.envelope, fields(&charter.envelope.payload_as::<Charter>().expect("charter"))),
            message("offer", &offer, fields(&offer.payload_as::<Offer>().expect("offer"))),
            message("offer_buy_with_extension", &buy_env, fields(&buy_env.payload_as::<Offer>().expect("offer"))),
            message("trade_proposal", &proposal_env, fields(&proposal_env.payload_as::<TradeProposal>().expect("proposal"))),
            message("trade", &trade, fields(&trade.payload_as::<Trade>().expect("trade"))),
            message("meter_attestation", &att, fields(&att.payload_as::<MeterAttestation>().expect("att"))),
            message("settlement", &settlement, fields(&settlement.payload_as::<Settlement>().expect("settlement"))),
            message("meter_attestation_private", &private, fields(&private.payload_as::<MeterAttestation>().expect("att"))),
            message("attestation_commitment", &commitment, fields(&commitment.payload_as::<AttestationCommitment>().expect("commitment"))),
        ],
        "handshake": [
            {"name": "trade_request_propose", "bytes": hex::encode(codec::encode(&request))},
            {"name": "trade_response_accept", "bytes": hex::encode(codec::encode(&response))},
        ],
        "merkle": {
            "leaves": leaves.iter().map(|(id, e)| json!({"trade_id": hex::encode(id.to_bytes()), "energy_wh": e})).collect::<Vec<_>>(),
            "root": hex::encode(tree.hash.0),
            "sum": tree.sum,
        },
        "message_id": {
            "envelope": "offer",
            "id": hex::encode(Envelope::content_id(&offer.to_bytes()).0),
        },
        "signature_rule": signature_rule_cases(),
    });
    let mut s = serde_json::to_string_pretty(&doc).expect("json");
    s.push('\n');
    s
}

#[test]
fn vectors_match_the_published_file() {
    let built = build();
    if std::env::var_os("WATTMESH_REGEN_VECTORS").is_some() {
        std::fs::write(PATH, &built).expect("write vectors");
    }
    let stored = std::fs::read_to_string(PATH).expect("vectors file present");
    assert!(
        stored == built,
        "the wire format changed: tests/vectors/vectors.json no longer matches the code. \
         If the change is deliberate, regenerate with WATTMESH_REGEN_VECTORS=1 and say why in \
         docs/PROTOCOL.md's change log."
    );
}

#[test]
fn stored_envelopes_decode_verify_and_reencode() {
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(PATH).expect("vectors")).expect("json");
    for m in stored["messages"].as_array().expect("messages") {
        let bytes = hex::decode(m["envelope"].as_str().expect("hex")).expect("hex");
        let env = Envelope::from_bytes(&bytes).expect("canonical envelope");
        env.verify_signatures().expect("signatures verify");
        assert_eq!(env.to_bytes(), bytes);
        assert_eq!(
            hex::encode(&env.payload),
            m["payload"].as_str().expect("payload")
        );
    }
    let expected = [true, false, false, false, false, false];
    let cases = stored["signature_rule"].as_array().expect("cases");
    assert_eq!(cases.len(), expected.len());
    for (c, want) in cases.iter().zip(expected) {
        assert_eq!(c["accept"].as_bool(), Some(want), "{}", c["name"]);
    }
}

/// ZIP-215 alone accepts the small-order case: the extra checks in our rule are what refuse it.
#[test]
fn zip215_alone_would_accept_a_small_order_key() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let vk = ed25519_zebra::VerificationKey::try_from(identity).expect("identity decodes");
    let sig = ed25519_zebra::Signature::from_bytes(&{
        let mut b = [0u8; 64];
        b[..32].copy_from_slice(&identity);
        b
    });
    assert!(vk.verify(&sig, b"anything at all").is_ok());
    assert_eq!(
        sign::verify(
            &wattmesh_protocol::NodeId(identity),
            b"anything at all",
            &SignatureBytes {
                r: identity,
                s: [0; 32]
            }
        ),
        Err(SignatureError::SmallOrderKey)
    );
}
