//! The signed export file (`wattmesh export signed`, `/api/export/signed.json`) and its
//! checking and reconciliation across homes (`wattmesh verify-export`), on top of the
//! protocol's [`wattmesh_protocol::export`].
//!
//! The file is JSON: the seal and the items as hex envelope bytes (what is verified), and a
//! readable table of the trades (checked against the items, so it cannot say anything else).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use wattmesh_protocol::export::{self, ExportItem, ExportSeal, Proven};
use wattmesh_protocol::{NodeId, TradeId};

/// The format tag in every file.
pub const FORMAT: &str = "wattmesh-export/1";

/// One item as stored in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileItem {
    /// The slot.
    pub slot_ms: u64,
    /// The co-signed trade or agreement, hex envelope bytes.
    pub evidence: String,
    /// The co-signed settlement, hex envelope bytes.
    pub settlement: Option<String>,
}

/// A trade as the readable table shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// The slot.
    pub slot_ms: u64,
    /// The seller (hex).
    pub seller: String,
    /// The buyer (hex).
    pub buyer: String,
    /// Energy agreed, Wh.
    pub energy_wh: u64,
    /// Price per kWh, milli-minor units.
    pub price: u64,
    /// Energy counted as delivered by the co-signed settlement.
    pub delivered_wh: Option<u64>,
    /// Money due from the buyer by the settlement, milli-minor units.
    pub amount: Option<u64>,
    /// Whether it is a slot of a standing agreement.
    pub from_agreement: bool,
}

/// The export file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportFile {
    /// [`FORMAT`].
    pub format: String,
    /// The exporting node (hex).
    pub exporter: String,
    /// The seal, hex envelope bytes.
    pub seal: String,
    /// The evidence.
    pub items: Vec<FileItem>,
    /// The readable table (one row per item).
    pub trades: Vec<Row>,
}

fn row(p: &Proven) -> Row {
    Row {
        slot_ms: p.trade.slot_ms,
        seller: p.trade.seller().to_hex(),
        buyer: p.trade.buyer().to_hex(),
        energy_wh: p.trade.energy_wh,
        price: p.trade.price,
        delivered_wh: p.settlement.as_ref().map(|s| s.delivered_wh),
        amount: p.settlement.as_ref().map(|s| s.amount),
        from_agreement: p.from_agreement,
    }
}

/// Builds the file from a sealed export (the node signs the seal).
pub fn build(seal: &[u8], items: &[ExportItem]) -> Result<ExportFile, String> {
    let (s, proven) = export::verify(seal, items).map_err(|e| e.to_string())?;
    Ok(ExportFile {
        format: FORMAT.into(),
        exporter: s.exporter.to_hex(),
        seal: hex::encode(seal),
        items: items
            .iter()
            .map(|i| FileItem {
                slot_ms: i.slot_ms,
                evidence: hex::encode(&i.evidence),
                settlement: i.settlement.as_ref().map(hex::encode),
            })
            .collect(),
        trades: proven.iter().map(row).collect(),
    })
}

/// Checks one file: the seal, every item, and that the readable table says what the items
/// prove.
pub fn check(f: &ExportFile) -> Result<(ExportSeal, Vec<Proven>), String> {
    if f.format != FORMAT {
        return Err(format!("not a wattmesh export (format {:?})", f.format));
    }
    let unhex = |s: &str| hex::decode(s).map_err(|_| "an item is not hex".to_string());
    let items = f
        .items
        .iter()
        .map(|i| {
            Ok(ExportItem {
                slot_ms: i.slot_ms,
                evidence: unhex(&i.evidence)?,
                settlement: i.settlement.as_deref().map(unhex).transpose()?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let (seal, proven) = export::verify(&unhex(&f.seal)?, &items).map_err(|e| e.to_string())?;
    if seal.exporter.to_hex() != f.exporter {
        return Err("the exporter named in the file is not the one who sealed it".into());
    }
    let rows: Vec<Row> = proven.iter().map(row).collect();
    if rows != f.trades {
        return Err("the readable table does not match the signed items".into());
    }
    Ok((seal, proven))
}

/// One home's totals in one slot, from all the exports checked together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SlotTotal {
    /// Energy it sold, agreed, Wh.
    pub sold_wh: u64,
    /// Energy it bought, agreed, Wh.
    pub bought_wh: u64,
    /// Energy it sold as counted delivered by co-signed settlements.
    pub sold_delivered_wh: u64,
    /// Energy it bought as counted delivered.
    pub bought_delivered_wh: u64,
}

/// What checking several homes' exports together found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reconciliation {
    /// Distinct trades.
    pub trades: usize,
    /// Trades exported by both parties (the two copies were compared).
    pub confirmed_by_both: usize,
    /// Trades whose two parties' copies disagree (settled differently), with why.
    pub conflicts: Vec<String>,
    /// Per slot, per home: the totals to compare with the operator's own meters.
    pub per_slot: BTreeMap<u64, BTreeMap<String, SlotTotal>>,
}

/// Checks every file and reconciles them: a trade both parties exported must be the same
/// trade with the same settlement in both.
pub fn reconcile(files: &[ExportFile]) -> Result<Reconciliation, String> {
    let mut seen: BTreeMap<TradeId, (Proven, NodeId, usize)> = BTreeMap::new();
    let mut r = Reconciliation::default();
    for (n, f) in files.iter().enumerate() {
        let (seal, proven) = check(f).map_err(|e| format!("file {}: {e}", n + 1))?;
        for p in proven {
            let id = p.trade.id();
            match seen.get_mut(&id) {
                None => {
                    seen.insert(id, (p, seal.exporter, 1));
                }
                Some((first, by, count)) => {
                    if *by == seal.exporter {
                        continue;
                    }
                    *count += 1;
                    if first.trade != p.trade {
                        r.conflicts
                            .push(format!("trade {id:?}: the parties hold different terms"));
                    } else if first.settlement.is_some()
                        && p.settlement.is_some()
                        && first.settlement != p.settlement
                    {
                        r.conflicts.push(format!(
                            "trade {id:?}: the parties hold different settlements"
                        ));
                    } else if first.settlement.is_none() {
                        first.settlement = p.settlement;
                    }
                }
            }
        }
    }
    r.trades = seen.len();
    r.confirmed_by_both = seen.values().filter(|(_, _, c)| *c >= 2).count();
    for (p, _, _) in seen.values() {
        let slot = r.per_slot.entry(p.trade.slot_ms).or_default();
        let delivered = p.settlement.as_ref().map_or(0, |s| s.delivered_wh);
        let s = slot.entry(p.trade.seller().to_hex()).or_default();
        s.sold_wh += p.trade.energy_wh;
        s.sold_delivered_wh += delivered;
        let b = slot.entry(p.trade.buyer().to_hex()).or_default();
        b.bought_wh += p.trade.energy_wh;
        b.bought_delivered_wh += delivered;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattmesh_protocol::envelope::Envelope;
    use wattmesh_protocol::export::digest;
    use wattmesh_protocol::sample;

    fn file(key: &wattmesh_protocol::NodeKey, settled: bool) -> ExportFile {
        let items = vec![ExportItem {
            slot_ms: sample::SLOT_MS,
            evidence: sample::trade_envelope().to_bytes(),
            settlement: settled.then(|| sample::settlement_envelope().to_bytes()),
        }];
        let seal = ExportSeal {
            exporter: key.node_id(),
            neighbourhood: sample::chain().neighbourhood(),
            from_ms: 0,
            to_ms: u64::MAX,
            items: 1,
            digest: digest(&items),
            created_ms: sample::NOW_MS,
            ext: vec![],
        };
        let env = Envelope::seal(&seal, sample::chain().latest().hash, key);
        build(&env.to_bytes(), &items).expect("valid export")
    }

    #[test]
    fn both_parties_exports_reconcile_into_per_slot_totals() {
        let a = file(&sample::seller_key(), true);
        let b = file(&sample::buyer_key(), false);
        let r = reconcile(&[a, b]).expect("both check");
        assert_eq!((r.trades, r.confirmed_by_both), (1, 1));
        assert!(r.conflicts.is_empty());
        let slot = &r.per_slot[&sample::SLOT_MS];
        let t = sample::trade();
        assert_eq!(slot[&t.seller().to_hex()].sold_wh, t.energy_wh);
        assert_eq!(slot[&t.buyer().to_hex()].bought_wh, t.energy_wh);
    }

    #[test]
    fn an_edited_readable_table_is_caught() {
        let mut f = file(&sample::seller_key(), true);
        f.trades[0].energy_wh += 1;
        assert!(check(&f).unwrap_err().contains("readable table"));
        let mut f = file(&sample::seller_key(), true);
        f.exporter = sample::buyer_key().node_id().to_hex();
        assert!(check(&f).is_err());
    }
}
