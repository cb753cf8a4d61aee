//! Protocol micro-benchmarks: signing, the signature acceptance rule (single and batch),
//! canonical encoding and decoding of every message kind, and the gossip ingest path
//! (decode + validate + verify + record) that bounds how fast a node can take in offers.
//!
//! Run with `cargo bench -p wattmesh-protocol --bench protocol`. Results, with the machine they
//! were taken on, are in docs/BENCHMARKS.md. Every figure is kept short (2 s of measurement per
//! benchmark) so the whole suite finishes in well under two minutes on a 2-core machine.

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rand_core::OsRng;
use serde::{Serialize, de::DeserializeOwned};
use std::hint::black_box;
use std::time::{Duration, Instant};
use wattmesh_protocol::attestation::MeterAttestation;
use wattmesh_protocol::charter::CharterChain;
use wattmesh_protocol::codec::{self, MAX_PAYLOAD_BYTES};
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::roster::{Change, Profile, Roster, sign_change};
use wattmesh_protocol::sign::{self, NodeKey, SignatureBytes};
use wattmesh_protocol::validate::Validator;
use wattmesh_protocol::{Charter, NodeId, Offer, Settlement, Trade, TradeProposal, sample, slot};

/// How many distinct signed offers the ingest benchmark cycles through before it starts again
/// with a fresh validator (a replayed offer would be refused, so each is used once).
const INGEST_OFFERS: usize = 4096;
/// Distinct maker keys among the ingest offers.
const INGEST_MAKERS: usize = 64;
/// Distinct slots per maker; with the sample charter's 8 open offers per maker and slot,
/// 64 makers × 8 slots × 8 offers = 4096.
const INGEST_SLOTS: u64 = 8;
/// Signatures in one batch verification.
const BATCH: usize = 64;

/// A deterministic key that is not one of the sample keys.
fn maker_key(i: usize) -> NodeKey {
    let mut secret = [0x5a; 32];
    secret[..8].copy_from_slice(&(i as u64).to_le_bytes());
    NodeKey::from_secret(&secret)
}

/// `INGEST_OFFERS` distinct valid offer envelopes, as bytes, ordered so that consecutive
/// offers come from different makers (as a busy gossip topic would deliver them).
/// A roster in which the sample admin added every ingest maker.
fn ingest_roster(chain: &CharterChain) -> Roster {
    let mut r = Roster::new(chain);
    for m in 0..INGEST_MAKERS {
        let change = Change::Add {
            member: maker_key(m).node_id(),
            profile: Profile {
                name: format!("maker {m}"),
                pv_capacity_w: 6_000,
            },
        };
        let rec = sign_change(chain, &sample::admin_key(), 0, change).to_bytes();
        r.insert(&rec, chain, None).expect("valid roster record");
    }
    r
}

fn ingest_offers(chain: &CharterChain) -> Vec<Vec<u8>> {
    let current = chain.at(sample::NOW_MS);
    let c = &current.charter;
    let per_slot = c.max_open_offers_per_slot as usize;
    assert_eq!(
        INGEST_MAKERS * INGEST_SLOTS as usize * per_slot,
        INGEST_OFFERS
    );
    let keys: Vec<NodeKey> = (0..INGEST_MAKERS).map(maker_key).collect();
    let template = sample::offer();
    let mut out = Vec::with_capacity(INGEST_OFFERS);
    for s in 0..INGEST_SLOTS {
        let slot_ms = sample::SLOT_MS + s * c.slot_ms();
        for n in 0..per_slot as u64 {
            for (m, key) in keys.iter().enumerate() {
                let offer = Offer {
                    maker: key.node_id(),
                    nonce: s * 1_000 + n,
                    slot_ms,
                    quantity_wh: 500 + 10 * m as u64,
                    price: template.price + n,
                    expires_ms: slot::gate_closure(c, slot_ms),
                    ..template.clone()
                };
                out.push(Envelope::seal(&offer, current.hash, key).to_bytes());
            }
        }
    }
    out
}

fn criterion_config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

fn signatures(c: &mut Criterion) {
    let key = sample::seller_key();
    let env = sample::offer_envelope();
    let input = env.signing_input();
    let id = key.node_id();
    let sig = key.sign(&input);
    assert_eq!(sign::verify(&id, &input, &sig), Ok(()));

    let mut g = c.benchmark_group("signature");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign", |b| {
        b.iter(|| black_box(&key).sign(black_box(&input)))
    });
    g.bench_function("verify", |b| {
        b.iter(|| sign::verify(black_box(&id), black_box(&input), black_box(&sig)))
    });

    // For comparison, raw checks without the rule's per-signature prechecks, with the public key
    // already parsed (as a cache of decoded keys would have it) unless the name says otherwise.
    let dalek_key = ed25519_dalek::VerifyingKey::from_bytes(&id.0).expect("sample key is valid");
    let dalek_sig = ed25519_dalek::Signature::from_bytes(&sig.to_bytes());
    g.bench_function("dalek_verify_strict", |b| {
        b.iter(|| black_box(&dalek_key).verify_strict(black_box(&input), black_box(&dalek_sig)))
    });
    // The same check with the key parsed each time, as `sign::verify` must without a key cache.
    g.bench_function("dalek_verify_strict_parse_key", |b| {
        b.iter(|| {
            ed25519_dalek::VerifyingKey::from_bytes(black_box(&id.0))
                .expect("sample key is valid")
                .verify_strict(black_box(&input), black_box(&dalek_sig))
        })
    });
    let zebra_key =
        ed25519_zebra::VerificationKey::try_from(id.0).expect("sample key is a valid point");
    let zebra_sig = ed25519_zebra::Signature::from_bytes(&sig.to_bytes());
    g.bench_function("zebra_verify", |b| {
        b.iter(|| black_box(&zebra_key).verify(black_box(&zebra_sig), black_box(&input)))
    });
    g.finish();

    // 64 signatures by 64 different keys over 64 different messages.
    let items: Vec<(NodeId, Vec<u8>, SignatureBytes)> = (0..BATCH)
        .map(|i| {
            let k = maker_key(i);
            let offer = Offer {
                maker: k.node_id(),
                nonce: i as u64,
                ..sample::offer()
            };
            let env = Envelope::seal(&offer, sample::charter().hash, &k);
            let input = env.signing_input();
            (k.node_id(), input, env.signatures[0].sig)
        })
        .collect();
    let borrowed: Vec<(NodeId, &[u8], SignatureBytes)> = items
        .iter()
        .map(|(k, m, s)| (*k, m.as_slice(), *s))
        .collect();
    assert_eq!(sign::verify_batch(&borrowed, OsRng), Ok(()));
    let mut g = c.benchmark_group("signature_batch");
    g.throughput(Throughput::Elements(BATCH as u64));
    // A batch takes milliseconds; flat sampling fits 30 samples into the 2 s budget.
    g.sampling_mode(SamplingMode::Flat);
    g.bench_function("verify_batch_64", |b| {
        b.iter(|| sign::verify_batch(black_box(&borrowed), OsRng))
    });
    g.bench_function("verify_64_singly", |b| {
        b.iter(|| {
            for (k, m, s) in black_box(&borrowed) {
                sign::verify(k, m, s).expect("valid");
            }
        })
    });
    g.finish();
}

/// Benchmarks encoding and canonical decoding of one payload type and its envelope.
fn codec_pair<M>(c: &mut Criterion, name: &str, payload: &M, env: &Envelope)
where
    M: Serialize + DeserializeOwned,
{
    let payload_bytes = codec::encode(payload);
    let env_bytes = env.to_bytes();
    assert!(codec::decode_canonical::<M>(&payload_bytes, MAX_PAYLOAD_BYTES).is_ok());
    assert_eq!(
        Envelope::from_bytes(&env_bytes).as_ref(),
        Ok(env),
        "{name} envelope round-trips"
    );

    let mut g = c.benchmark_group(format!("codec/{name}"));
    g.bench_function("encode_payload", |b| {
        b.iter(|| codec::encode(black_box(payload)))
    });
    g.bench_function("decode_payload", |b| {
        b.iter(|| {
            codec::decode_canonical::<M>(black_box(&payload_bytes), MAX_PAYLOAD_BYTES)
                .expect("canonical")
        })
    });
    g.bench_function("encode_envelope", |b| b.iter(|| black_box(env).to_bytes()));
    g.bench_function("decode_envelope", |b| {
        b.iter(|| Envelope::from_bytes(black_box(&env_bytes)).expect("canonical"))
    });
    g.finish();
}

fn codecs(c: &mut Criterion) {
    let charter = sample::charter();
    codec_pair::<Charter>(c, "charter", &charter.charter, &charter.envelope);
    codec_pair::<Offer>(c, "offer", &sample::offer(), &sample::offer_envelope());
    let proposal = sample::proposal();
    let proposal_env = Envelope::seal(&proposal, charter.hash, &sample::buyer_key());
    codec_pair::<TradeProposal>(c, "trade_proposal", &proposal, &proposal_env);
    codec_pair::<Trade>(c, "trade", &sample::trade(), &sample::trade_envelope());
    codec_pair::<MeterAttestation>(
        c,
        "attestation",
        &sample::seller_attestation(),
        &sample::attestation_envelope(),
    );
    let settlement_env = sample::settlement_envelope();
    let settlement: Settlement = settlement_env.payload_as().expect("sample settlement");
    codec_pair::<Settlement>(c, "settlement", &settlement, &settlement_env);
}

fn ingest(c: &mut Criterion) {
    let chain = sample::chain();
    let offers = ingest_offers(&chain);
    let roster = ingest_roster(&chain);
    // Every offer must be accepted by a fresh validator, or the benchmark measures refusals.
    let mut v = Validator::new();
    for bytes in &offers {
        v.validate_gossip(bytes, &chain, &roster, sample::NOW_MS)
            .expect("every ingest offer is valid and distinct");
    }
    assert_eq!(v.tracked_offers(), INGEST_OFFERS);

    let mut g = c.benchmark_group("offer_ingest");
    g.throughput(Throughput::Elements(1));
    g.sampling_mode(SamplingMode::Flat);
    // One iteration is one offer through `validate_gossip`. A replay is refused, so the stream
    // is cut into runs of at most INGEST_OFFERS, each against a fresh validator; making and
    // dropping validators is outside the timed region.
    g.bench_function("validate_gossip", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut remaining = iters as usize;
            while remaining > 0 {
                let n = remaining.min(INGEST_OFFERS);
                let mut v = Validator::new();
                let start = Instant::now();
                for bytes in &offers[..n] {
                    black_box(
                        v.validate_gossip(black_box(bytes), &chain, &roster, sample::NOW_MS)
                            .expect("valid"),
                    );
                }
                total += start.elapsed();
                drop(black_box(v));
                remaining -= n;
            }
            total
        })
    });

    // The signature checks alone, over the same stream and measured next to the full path,
    // so that "ingest rate as a share of the raw signature rate" compares like with like.
    let opened: Vec<Envelope> = offers
        .iter()
        .map(|b| Envelope::from_bytes(b).expect("valid"))
        .collect();
    let rule_items: Vec<(NodeId, Vec<u8>, SignatureBytes)> = opened
        .iter()
        .map(|e| (e.signer(), e.signing_input(), e.signatures[0].sig))
        .collect();
    g.bench_function("rule_verify_only", |b| {
        let mut i = 0;
        b.iter(|| {
            let (k, m, s) = &rule_items[i % INGEST_OFFERS];
            i += 1;
            sign::verify(black_box(k), black_box(m), black_box(s))
        })
    });
    // dalek's strict check with every maker's key parsed in advance: the bare cost of one
    // signature check, the baseline of the ingest target.
    let dalek_items: Vec<(ed25519_dalek::VerifyingKey, &[u8], ed25519_dalek::Signature)> =
        rule_items
            .iter()
            .map(|(k, m, s)| {
                (
                    ed25519_dalek::VerifyingKey::from_bytes(&k.0).expect("valid key"),
                    m.as_slice(),
                    ed25519_dalek::Signature::from_bytes(&s.to_bytes()),
                )
            })
            .collect();
    g.bench_function("dalek_verify_strict_only", |b| {
        let mut i = 0;
        b.iter(|| {
            let (k, m, s) = &dalek_items[i % INGEST_OFFERS];
            i += 1;
            k.verify_strict(black_box(m), black_box(s))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = criterion_config();
    targets = signatures, codecs, ingest
}
criterion_main!(benches);
