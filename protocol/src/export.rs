//! The signed export of a node's trades, for the utility or the subdivision's operator, who
//! reconcile them with their own meters.
//!
//! An export lists, per delivery slot, every trade the node is party to with the evidence for
//! it: the co-signed trade (or the co-signed standing agreement it was derived from) and the
//! co-signed settlement if there is one. The list is too long for one envelope, so the node
//! signs an [`ExportSeal`]: the range, the number of items and a digest of all of them
//! ([`digest`]). Anyone holding the export checks it with [`verify`], which needs nothing but
//! the export itself: every envelope's signatures, that each settlement belongs to its trade,
//! that each derived trade is what its agreement gives for the slot, and the seal.

use crate::envelope::{Envelope, Kind, Message};
use crate::ext::Extension;
use crate::ids::{Hash32, NeighbourhoodId, NodeId};
use crate::ledger::Agreement;
use crate::settlement::Settlement;
use crate::trade::Trade;
use serde::{Deserialize, Serialize};

/// The seal over an export, signed by the exporting node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSeal {
    /// The exporting node (the signer).
    pub exporter: NodeId,
    /// Its neighbourhood.
    pub neighbourhood: NeighbourhoodId,
    /// First slot covered, UTC ms.
    pub from_ms: u64,
    /// End of the covered slots, UTC ms, exclusive.
    pub to_ms: u64,
    /// How many items.
    pub items: u32,
    /// [`digest`] of the items, in order.
    pub digest: Hash32,
    /// When it was made.
    pub created_ms: u64,
    /// Extensions.
    pub ext: Vec<Extension>,
}

impl Message for ExportSeal {
    const KIND: Kind = Kind::ExportSeal;
}

/// One trade in an export: its evidence, as envelope bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportItem {
    /// The trade's slot.
    pub slot_ms: u64,
    /// The co-signed `Trade`, or the co-signed `Agreement` the trade derives from.
    pub evidence: Vec<u8>,
    /// The co-signed `Settlement`, if the trade was settled by both.
    pub settlement: Option<Vec<u8>>,
}

/// The digest the seal signs: a tagged SHA-256 over every item's encoding, in order.
pub fn digest(items: &[ExportItem]) -> Hash32 {
    let encoded: Vec<Vec<u8>> = items.iter().map(crate::codec::encode).collect();
    let parts: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
    Hash32::tagged("wattmesh/export/v1", &parts)
}

/// A trade as the export proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// The trade (derived, for agreements).
    pub trade: Trade,
    /// Whether it came from a standing agreement.
    pub from_agreement: bool,
    /// The co-signed settlement, if any.
    pub settlement: Option<Settlement>,
}

/// Why an export does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// The seal is not a valid, signed `ExportSeal`.
    #[error("the seal is invalid: {0}")]
    Seal(String),
    /// The items are not the ones sealed.
    #[error("the items do not match the seal's digest or count")]
    Digest,
    /// One item's evidence is bad.
    #[error("item {index}: {why}")]
    Item {
        /// Which item.
        index: usize,
        /// What is wrong.
        why: String,
    },
}

fn item_err(index: usize, why: impl Into<String>) -> ExportError {
    ExportError::Item {
        index,
        why: why.into(),
    }
}

/// Checks an export: the seal's signature, the digest, and every item's evidence. Returns the
/// seal and the trades it proves, in order.
pub fn verify(seal: &[u8], items: &[ExportItem]) -> Result<(ExportSeal, Vec<Proven>), ExportError> {
    let env = Envelope::from_bytes(seal).map_err(|e| ExportError::Seal(e.to_string()))?;
    let s: ExportSeal = env
        .payload_as()
        .map_err(|e| ExportError::Seal(e.to_string()))?;
    if env.signatures.len() != 1 || env.signer() != s.exporter {
        return Err(ExportError::Seal("not signed by the exporter".into()));
    }
    env.verify_signatures()
        .map_err(|e| ExportError::Seal(e.to_string()))?;
    if s.items as usize != items.len() || digest(items) != s.digest {
        return Err(ExportError::Digest);
    }
    let mut out = Vec::with_capacity(items.len());
    for (index, it) in items.iter().enumerate() {
        let ev = Envelope::from_bytes(&it.evidence).map_err(|e| item_err(index, e.to_string()))?;
        if ev.signatures.len() != 2 {
            return Err(item_err(
                index,
                "the evidence is not signed by both parties",
            ));
        }
        ev.verify_signatures()
            .map_err(|e| item_err(index, e.to_string()))?;
        let (trade, from_agreement) = match ev.known_kind() {
            Ok(Kind::Trade) => {
                let t: Trade = ev
                    .payload_as()
                    .map_err(|e| item_err(index, e.to_string()))?;
                if ev.signatures[0].signer != t.maker() || ev.signatures[1].signer != t.taker {
                    return Err(item_err(index, "the trade is not signed by its parties"));
                }
                (t, false)
            }
            Ok(Kind::Agreement) => {
                let a: Agreement = ev
                    .payload_as()
                    .map_err(|e| item_err(index, e.to_string()))?;
                if ev.signatures[0].signer != a.proposer
                    || ev.signatures[1].signer != a.counterparty
                {
                    return Err(item_err(
                        index,
                        "the agreement is not signed by its parties",
                    ));
                }
                if !a.covers(it.slot_ms) {
                    return Err(item_err(index, "the agreement does not cover the slot"));
                }
                (a.trade_for(it.slot_ms), true)
            }
            _ => {
                return Err(item_err(
                    index,
                    "the evidence is neither a trade nor an agreement",
                ));
            }
        };
        if trade.slot_ms != it.slot_ms {
            return Err(item_err(index, "the trade is for another slot"));
        }
        if trade.seller() != s.exporter && trade.buyer() != s.exporter {
            return Err(item_err(index, "the exporter is not a party to the trade"));
        }
        let settlement = match &it.settlement {
            None => None,
            Some(b) => {
                let se = Envelope::from_bytes(b).map_err(|e| item_err(index, e.to_string()))?;
                let st: Settlement = se
                    .payload_as()
                    .map_err(|e| item_err(index, e.to_string()))?;
                se.verify_signatures()
                    .map_err(|e| item_err(index, e.to_string()))?;
                let signers: Vec<NodeId> = se.signatures.iter().map(|x| x.signer).collect();
                if signers != [st.seller, st.buyer] {
                    return Err(item_err(
                        index,
                        "the settlement is not signed by both parties",
                    ));
                }
                if st.trade != trade.id()
                    || st.seller != trade.seller()
                    || st.buyer != trade.buyer()
                    || st.agreed_wh != trade.energy_wh
                    || st.price != trade.price
                    || !st.self_consistent()
                {
                    return Err(item_err(index, "the settlement does not match the trade"));
                }
                Some(st)
            }
        };
        out.push(Proven {
            trade,
            from_agreement,
            settlement,
        });
    }
    Ok((s, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    fn export() -> (Vec<u8>, Vec<ExportItem>) {
        let items = vec![ExportItem {
            slot_ms: sample::SLOT_MS,
            evidence: sample::trade_envelope().to_bytes(),
            settlement: None,
        }];
        let seller = sample::seller_key();
        let seal = ExportSeal {
            exporter: seller.node_id(),
            neighbourhood: sample::chain().neighbourhood(),
            from_ms: sample::SLOT_MS,
            to_ms: sample::SLOT_MS + 900_000,
            items: 1,
            digest: digest(&items),
            created_ms: sample::NOW_MS,
            ext: vec![],
        };
        let env = Envelope::seal(&seal, sample::chain().latest().hash, &seller);
        (env.to_bytes(), items)
    }

    #[test]
    fn a_sealed_export_verifies_and_any_change_is_caught() {
        let (seal, items) = export();
        let (s, proven) = verify(&seal, &items).expect("valid");
        assert_eq!(s.items, 1);
        assert_eq!(proven[0].trade, sample::trade());
        // A removed item.
        assert_eq!(verify(&seal, &[]), Err(ExportError::Digest));
        // An altered item (another slot claimed).
        let mut bad = items.clone();
        bad[0].slot_ms += 900_000;
        assert_eq!(verify(&seal, &bad), Err(ExportError::Digest));
        // A tampered seal signature.
        let mut s2 = seal.clone();
        let n = s2.len();
        s2[n - 5] ^= 1;
        assert!(matches!(verify(&s2, &items), Err(ExportError::Seal(_))));
    }
}
