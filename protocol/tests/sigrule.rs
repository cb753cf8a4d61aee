//! The signature rule's single check agrees with ed25519-zebra's ZIP-215 check wherever the
//! per-signature prechecks pass, and batch verification agrees with one-by-one verification.

use proptest::prelude::*;
use wattmesh_protocol::NodeId;
use wattmesh_protocol::sign::{self, NodeKey, SignatureBytes, SignatureError};

fn zebra(key: &NodeId, msg: &[u8], sig: &SignatureBytes) -> bool {
    let Ok(vk) = ed25519_zebra::VerificationKey::try_from(key.0) else {
        return false;
    };
    vk.verify(&ed25519_zebra::Signature::from_bytes(&sig.to_bytes()), msg)
        .is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn single_check_agrees_with_zip215(
        seed in any::<[u8; 32]>(),
        msg in prop::collection::vec(any::<u8>(), 0..64),
        flip in prop::option::of((0usize..3, any::<prop::sample::Index>(), 1u8..=255)),
    ) {
        let key = NodeKey::from_secret(&seed);
        let mut id = key.node_id();
        let mut m = msg.clone();
        let mut sig = key.sign(&msg);
        if let Some((what, at, x)) = flip {
            match what {
                0 => { let i = at.index(32); id.0[i] ^= x; }
                1 => { let i = at.index(64); let mut b = sig.to_bytes(); b[i] ^= x; sig = SignatureBytes::from_bytes(&b); }
                _ => { if m.is_empty() { m.push(x) } else { let i = at.index(m.len()); m[i] ^= x; } }
            }
        }
        let ours = sign::verify(&id, &m, &sig);
        match ours {
            // Our prechecks are stricter than ZIP-215; where they pass, the equation must agree.
            Ok(()) => prop_assert!(zebra(&id, &m, &sig)),
            Err(SignatureError::Invalid) => prop_assert!(!zebra(&id, &m, &sig)),
            Err(_) => {}
        }
        if flip.is_none() {
            prop_assert_eq!(ours, Ok(()));
        }
    }

    #[test]
    fn batch_agrees_with_one_by_one(
        seeds in prop::collection::vec(any::<[u8; 32]>(), 1..12),
        corrupt in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let keys: Vec<NodeKey> = seeds.iter().map(NodeKey::from_secret).collect();
        let msgs: Vec<Vec<u8>> = (0..keys.len()).map(|i| vec![i as u8; 10]).collect();
        let mut items: Vec<(NodeId, &[u8], SignatureBytes)> = keys
            .iter()
            .zip(&msgs)
            .map(|(k, m)| (k.node_id(), m.as_slice(), k.sign(m)))
            .collect();
        if let Some(i) = corrupt {
            let i = i.index(items.len());
            items[i].2.s[0] ^= 1;
        }
        let each = items.iter().all(|(k, m, s)| sign::verify(k, m, s).is_ok());
        let batch = sign::verify_batch(&items, rand_core::OsRng).is_ok();
        prop_assert_eq!(each, batch);
        prop_assert_eq!(each, corrupt.is_none());
    }
}
