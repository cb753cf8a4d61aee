//! The attestation chain makes removal, insertion and alteration evident.

use wattmesh_protocol::attestation::{ChainError, MeterAttestation, MeterStatus, chain_hash};
use wattmesh_protocol::{Hash32, NodeId, codec, merkle};

const SLOT: u64 = 900_000;
const T0: u64 = 1_782_043_200_000;

fn chain(n: usize) -> Vec<(MeterAttestation, Hash32)> {
    let mut out: Vec<(MeterAttestation, Hash32)> = Vec::new();
    let (mut imp, mut exp) = (1_000u64, 2_000u64);
    for i in 0..n {
        let (di, de) = (100 + i as u64, 50 * i as u64);
        imp += di;
        exp += de;
        let a = MeterAttestation {
            node: NodeId([9; 32]),
            seq: i as u64,
            prev: out.last().map(|(_, h)| *h).unwrap_or(Hash32::ZERO),
            slot_ms: T0 + i as u64 * SLOT,
            import_register_wh: imp,
            export_register_wh: exp,
            import_wh: di,
            export_wh: de,
            coverage_permille: 1000,
            status: MeterStatus::Ok,
            sold: merkle::empty_root(),
            bought: merkle::empty_root(),
            created_ms: T0 + (i as u64 + 1) * SLOT,
            ext: vec![],
        };
        let h = chain_hash(&codec::encode(&a));
        out.push((a, h));
    }
    out
}

fn verify(c: &[(MeterAttestation, Hash32)]) -> Result<(), ChainError> {
    for w in c.windows(2) {
        let (prev, h) = &w[0];
        w[1].0.check_follows(prev, h, SLOT)?;
    }
    Ok(())
}

#[test]
fn an_intact_chain_verifies() {
    assert_eq!(verify(&chain(5)), Ok(()));
}

#[test]
fn a_removed_attestation_is_evident() {
    let mut c = chain(5);
    c.remove(2);
    assert_eq!(verify(&c), Err(ChainError::Sequence));
}

#[test]
fn an_inserted_attestation_is_evident() {
    let c = chain(5);
    let mut forged = c[2].0.clone();
    forged.export_wh += 10;
    let mut with = c.clone();
    let h = chain_hash(&codec::encode(&forged));
    with.insert(3, (forged, h));
    assert!(verify(&with).is_err());
}

#[test]
fn an_altered_attestation_is_evident() {
    let mut c = chain(5);
    // Claiming more export in slot 2 changes its hash, so slot 3 no longer follows it; and
    // its registers no longer add up with slot 1's.
    c[2].0.export_wh += 100;
    c[2].1 = chain_hash(&codec::encode(&c[2].0));
    let r = verify(&c);
    assert!(
        matches!(r, Err(ChainError::Registers) | Err(ChainError::PrevHash)),
        "{r:?}"
    );
    // Even with the registers patched to match, the next one's prev hash gives it away.
    let mut d = chain(5);
    d[2].0.export_wh += 100;
    d[2].0.export_register_wh += 100;
    d[2].1 = chain_hash(&codec::encode(&d[2].0));
    assert_eq!(verify(&d), Err(ChainError::PrevHash));
}

#[test]
fn registers_never_go_backwards() {
    let mut c = chain(3);
    c[2].0.import_register_wh = c[1].0.import_register_wh - 1;
    assert_eq!(verify(&c), Err(ChainError::Registers));
}

// ---- privacy mode: the same chain checked through commitments

use proptest::prelude::*;
use wattmesh_protocol::attestation::{AttestationCommitment, Link, check_chain, check_link};

/// What a verifier holds for one sequence number: the commitment (everyone, in privacy mode),
/// the full attestation (a counterparty, or everyone for an attestation that is not private),
/// or both.
#[derive(Debug, Clone)]
struct Held {
    full: Option<(MeterAttestation, Hash32)>,
    commitment: Option<AttestationCommitment>,
}

fn commitment_of(a: &MeterAttestation) -> AttestationCommitment {
    AttestationCommitment::of(a, &codec::encode(a))
}

/// The verifier's view of `chain(n)`: everything committed, and the full attestation where
/// `full[i]` says so; with `committed[i]` false the node published the full attestation
/// itself (privacy mode off for that slot), so there is no commitment.
fn view(n: usize, full: &[bool], committed: &[bool]) -> Vec<Held> {
    chain(n)
        .into_iter()
        .enumerate()
        .map(|(i, (a, h))| {
            let has_commitment = committed[i];
            Held {
                commitment: has_commitment.then(|| commitment_of(&a)),
                full: (full[i] || !has_commitment).then_some((a, h)),
            }
        })
        .collect()
}

/// Checks a view: the chain through full attestations where held and commitments elsewhere,
/// and every full attestation against its commitment.
fn verify_view(v: &[Held]) -> Result<(), ChainError> {
    let mut links = Vec::new();
    for h in v {
        if let (Some((a, hash)), Some(c)) = (&h.full, &h.commitment) {
            c.opens(a, hash)?;
        }
        links.push(match (&h.full, &h.commitment) {
            (Some((a, hash)), _) => Link::Full(a, *hash),
            (None, Some(c)) => Link::Committed(c),
            (None, None) => unreachable!("a view holds something for every seq"),
        });
    }
    check_chain(&links, SLOT).map_err(|(_, e)| e)
}

#[test]
fn a_chain_of_commitments_alone_verifies() {
    let v = view(6, &[false; 6], &[true; 6]);
    assert_eq!(verify_view(&v), Ok(()));
}

#[test]
fn a_removed_attestation_is_evident_through_commitments() {
    let mut v = view(6, &[false; 6], &[true; 6]);
    v.remove(3);
    assert_eq!(verify_view(&v), Err(ChainError::Sequence));
}

#[test]
fn an_inserted_attestation_is_evident_through_commitments() {
    let c = chain(6);
    // A commitment for an invented attestation that claims seq 3 after the real seq 2.
    let mut forged = c[3].0.clone();
    forged.export_wh += 10;
    forged.export_register_wh += 10;
    let mut v = view(6, &[false; 6], &[true; 6]);
    v.insert(
        3,
        Held {
            full: None,
            commitment: Some(commitment_of(&forged)),
        },
    );
    // The real seq 3 now follows a seq 3.
    assert_eq!(verify_view(&v), Err(ChainError::Sequence));
    // Renumbered to look like seq 4, the real seq 4's prev still names the real seq 3.
    let mut renumbered = view(6, &[false; 6], &[true; 6]);
    let mut m = commitment_of(&forged);
    m.prev = renumbered[2].commitment.as_ref().unwrap().attestation;
    renumbered[3].commitment = Some(m);
    assert_eq!(verify_view(&renumbered), Err(ChainError::PrevHash));
}

#[test]
fn an_altered_attestation_is_evident_through_commitments() {
    // A commitment to different figures for seq 2 (the node re-signing history): seq 3's prev
    // names the original.
    let mut v = view(6, &[false; 6], &[true; 6]);
    let mut a = chain(6)[2].0.clone();
    a.export_wh += 100;
    a.export_register_wh += 100;
    v[2].commitment = Some(commitment_of(&a));
    assert_eq!(verify_view(&v), Err(ChainError::PrevHash));
    // A counterparty holding the full attestation of seq 2 sees it is not the one committed.
    let mut w = view(6, &[false, false, true, false, false, false], &[true; 6]);
    let (full, _) = w[2].full.clone().unwrap();
    let mut altered = full.clone();
    altered.import_wh += 1;
    altered.import_register_wh += 1;
    let h = chain_hash(&codec::encode(&altered));
    w[2].full = Some((altered, h));
    assert_eq!(verify_view(&w), Err(ChainError::Commitment));
    // Even the newest one, which has no successor yet.
    let mut x = view(6, &[true; 6], &[true; 6]);
    let (mut last, _) = x[5].full.clone().unwrap();
    last.coverage_permille -= 1;
    let h = chain_hash(&codec::encode(&last));
    x[5].full = Some((last, h));
    assert_eq!(verify_view(&x), Err(ChainError::Commitment));
}

#[test]
fn every_mix_of_full_attestations_and_commitments_verifies() {
    for mask in 0u32..64 {
        for committed in [0u32, 0b111111, 0b101101, mask ^ 0b010110] {
            let full: Vec<bool> = (0..6).map(|i| mask & (1 << i) != 0).collect();
            let comm: Vec<bool> = (0..6).map(|i| committed & (1 << i) != 0).collect();
            let v = view(6, &full, &comm);
            assert_eq!(
                verify_view(&v),
                Ok(()),
                "full {mask:06b} committed {committed:06b}"
            );
        }
    }
}

#[test]
fn a_commitment_opens_only_to_its_own_attestation() {
    let c = chain(3);
    let m = commitment_of(&c[1].0);
    assert_eq!(m.opens(&c[1].0, &c[1].1), Ok(()));
    assert_eq!(m.opens(&c[2].0, &c[2].1), Err(ChainError::Commitment));
    // Same figures, but another node.
    let mut other = c[1].0.clone();
    other.node = NodeId([8; 32]);
    let h = chain_hash(&codec::encode(&other));
    assert_eq!(m.opens(&other, &h), Err(ChainError::Node));
    // The commitment's hash is the chain hash: the successor's prev.
    assert_eq!(m.attestation, c[2].0.prev);
}

#[test]
fn links_check_node_sequence_hash_and_slot() {
    let c = chain(3);
    let (m0, m1) = (commitment_of(&c[0].0), commitment_of(&c[1].0));
    let ok = check_link(&Link::Committed(&m0), &Link::Committed(&m1), SLOT);
    assert_eq!(ok, Ok(()));
    let mut bad = m1.clone();
    bad.slot_ms = m0.slot_ms;
    assert_eq!(
        check_link(&Link::Committed(&m0), &Link::Committed(&bad), SLOT),
        Err(ChainError::Slot)
    );
    let mut bad = m1.clone();
    bad.node = NodeId([8; 32]);
    assert_eq!(
        check_link(&Link::Committed(&m0), &Link::Committed(&bad), SLOT),
        Err(ChainError::Node)
    );
    // Full then committed, committed then full.
    assert_eq!(
        check_link(&Link::Full(&c[0].0, c[0].1), &Link::Committed(&m1), SLOT),
        Ok(())
    );
    assert_eq!(
        check_link(&Link::Committed(&m0), &Link::Full(&c[1].0, c[1].1), SLOT),
        Ok(())
    );
    // Two full attestations still have their registers checked.
    let mut reg = c[1].0.clone();
    reg.import_register_wh += 1;
    assert_eq!(
        check_link(
            &Link::Full(&c[0].0, c[0].1),
            &Link::Full(&reg, c[1].1),
            SLOT
        ),
        Err(ChainError::Registers)
    );
}

#[derive(Debug, Clone, Copy)]
enum Tamper {
    Remove,
    InsertCommitment,
    InsertFull,
    AlterFull,
    AlterCommitment,
}

proptest! {
    /// Whatever a verifier holds (full attestations for some slots, commitments for others, or
    /// both), removing, inserting or altering an attestation anywhere before the newest one is
    /// detected. (Removing the newest is indistinguishable from not having attested yet; the
    /// settlement rule treats a missing attestation as no delivery.)
    #[test]
    fn tampering_with_a_mixed_chain_is_detected(
        n in 3usize..12,
        full_bits in any::<u16>(),
        commit_bits in any::<u16>(),
        at in any::<prop::sample::Index>(),
        tamper in prop_oneof![
            Just(Tamper::Remove),
            Just(Tamper::InsertCommitment),
            Just(Tamper::InsertFull),
            Just(Tamper::AlterFull),
            Just(Tamper::AlterCommitment),
        ],
        delta in 1u64..500,
    ) {
        let full: Vec<bool> = (0..n).map(|i| full_bits & (1 << i) != 0).collect();
        let committed: Vec<bool> = (0..n).map(|i| commit_bits & (1 << i) != 0).collect();
        let mut v = view(n, &full, &committed);
        prop_assert_eq!(verify_view(&v), Ok(()));
        // An interior position: it has a successor.
        let i = 1 + at.index(n - 2);
        let original = chain(n)[i].0.clone();
        let mut forged = original.clone();
        forged.export_wh += delta;
        forged.export_register_wh += delta;
        let forged_hash = chain_hash(&codec::encode(&forged));
        match tamper {
            Tamper::Remove => {
                v.remove(i);
            }
            Tamper::InsertCommitment => v.insert(
                i,
                Held { full: None, commitment: Some(commitment_of(&forged)) },
            ),
            Tamper::InsertFull => v.insert(
                i,
                Held { full: Some((forged, forged_hash)), commitment: None },
            ),
            Tamper::AlterFull => {
                v[i].full = Some((forged, forged_hash));
            }
            Tamper::AlterCommitment => {
                // The node re-signs a commitment to other figures; a verifier holding only
                // commitments there sees the next link's prev disagree.
                v[i].full = None;
                v[i].commitment = Some(commitment_of(&forged));
            }
        }
        prop_assert!(verify_view(&v).is_err(), "{:?} at {} went unnoticed", tamper, i);
    }
}
