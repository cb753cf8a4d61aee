//! A Merkle sum tree over one node's trades in one slot on one side (sold or bought).
//!
//! The root commits both to the set of trades and to their total energy, so a seller's
//! attestation can say "I sold 3 000 Wh in this slot, to this set of trades" and each buyer,
//! given an inclusion proof for its own trade, can check that its trade is counted in that
//! total, without seeing the other buyers' trades. With the total and its own trade, a buyer
//! can then compute its share of a short delivery ([`crate::settle`]).
//!
//! - leaf: `H("wattmesh/merkle-leaf/v1" ‖ 0 ‖ trade id (40) ‖ energy u64 BE)`, sum = energy;
//! - inner: `H("wattmesh/merkle-node/v1" ‖ 0 ‖ left ‖ left sum BE ‖ right ‖ right sum BE)`;
//! - leaves sorted by trade id; an odd node at the end of a level moves up unchanged;
//! - the empty tree: `H("wattmesh/merkle-empty/v1" ‖ 0)` with sum 0.

use crate::ids::Hash32;
use crate::trade::TradeId;
use crate::units::EnergyWh;
use serde::{Deserialize, Serialize};

/// A node of the tree: its hash and the energy summed below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SumNode {
    /// The hash.
    pub hash: Hash32,
    /// The sum of the leaves' energy below.
    pub sum: EnergyWh,
}

fn leaf(id: &TradeId, energy: EnergyWh) -> SumNode {
    SumNode {
        hash: Hash32::tagged(
            "wattmesh/merkle-leaf/v1",
            &[&id.to_bytes(), &energy.to_be_bytes()],
        ),
        sum: energy,
    }
}

fn inner(l: &SumNode, r: &SumNode) -> Option<SumNode> {
    Some(SumNode {
        hash: Hash32::tagged(
            "wattmesh/merkle-node/v1",
            &[
                &l.hash.0,
                &l.sum.to_be_bytes(),
                &r.hash.0,
                &r.sum.to_be_bytes(),
            ],
        ),
        sum: l.sum.checked_add(r.sum)?,
    })
}

/// The root of the empty tree.
pub fn empty_root() -> SumNode {
    SumNode {
        hash: Hash32::tagged("wattmesh/merkle-empty/v1", &[]),
        sum: 0,
    }
}

/// One step of an inclusion proof: the sibling, and whether it sits on the left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofStep {
    /// The sibling node.
    pub sibling: SumNode,
    /// True when the sibling is the left child.
    pub sibling_is_left: bool,
}

fn levels(mut trades: Vec<(TradeId, EnergyWh)>) -> Option<Vec<Vec<SumNode>>> {
    trades.sort_by_key(|t| t.0);
    let mut levels = vec![
        trades
            .iter()
            .map(|(id, e)| leaf(id, *e))
            .collect::<Vec<_>>(),
    ];
    while levels.last().map(Vec::len).unwrap_or(0) > 1 {
        let cur = levels.last()?;
        let mut next = Vec::with_capacity(cur.len().div_ceil(2));
        for pair in cur.chunks(2) {
            next.push(match pair {
                [l, r] => inner(l, r)?,
                [only] => *only,
                _ => unreachable!("chunks(2) yields one or two"),
            });
        }
        levels.push(next);
    }
    Some(levels)
}

/// The root over `trades` (any order; duplicates are the caller's error). `None` if the sum
/// overflows.
pub fn root(trades: &[(TradeId, EnergyWh)]) -> Option<SumNode> {
    if trades.is_empty() {
        return Some(empty_root());
    }
    levels(trades.to_vec())?.last()?.first().copied()
}

/// An inclusion proof for trade `id` in the tree over `trades`.
pub fn prove(trades: &[(TradeId, EnergyWh)], id: &TradeId) -> Option<Vec<ProofStep>> {
    let levels = levels(trades.to_vec())?;
    let mut sorted: Vec<_> = trades.iter().map(|t| t.0).collect();
    sorted.sort();
    let mut idx = sorted.binary_search(id).ok()?;
    let mut proof = Vec::new();
    for level in &levels[..levels.len() - 1] {
        let sibling = idx ^ 1;
        if sibling < level.len() {
            proof.push(ProofStep {
                sibling: level[sibling],
                sibling_is_left: sibling < idx,
            });
        }
        idx /= 2;
    }
    Some(proof)
}

/// Checks that the trade `(id, energy)` is counted in the tree whose root is `root`.
pub fn verify(root: &SumNode, id: &TradeId, energy: EnergyWh, proof: &[ProofStep]) -> bool {
    if proof.len() > 64 {
        return false;
    }
    let mut node = leaf(id, energy);
    for step in proof {
        let next = if step.sibling_is_left {
            inner(&step.sibling, &node)
        } else {
            inner(&node, &step.sibling)
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    node == *root
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;

    fn tid(n: u8) -> TradeId {
        TradeId {
            taker: NodeId([n; 32]),
            nonce: n as u64,
        }
    }

    #[test]
    fn every_leaf_proves_and_sum_is_total() {
        for n in 1..=9u8 {
            let trades: Vec<_> = (1..=n).map(|i| (tid(i), i as u64 * 100)).collect();
            let r = root(&trades).unwrap();
            assert_eq!(r.sum, trades.iter().map(|t| t.1).sum::<u64>());
            for (id, e) in &trades {
                let p = prove(&trades, id).unwrap();
                assert!(verify(&r, id, *e, &p), "n={n} id={id:?}");
                assert!(
                    !verify(&r, id, e + 1, &p),
                    "a changed amount must not verify"
                );
            }
        }
    }

    #[test]
    fn order_does_not_matter_and_absent_ids_do_not_prove() {
        let a = [(tid(1), 5), (tid(2), 7), (tid(3), 9)];
        let b = [(tid(3), 9), (tid(1), 5), (tid(2), 7)];
        assert_eq!(root(&a), root(&b));
        assert!(prove(&a, &tid(4)).is_none());
        assert_eq!(root(&[]).unwrap(), empty_root());
    }
}
