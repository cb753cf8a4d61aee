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
