//! The ledger: who owes whom, from the market's records alone (pure; the web API and the
//! `wattmesh ledger` command show it).
//!
//! A trade counts in the balance once both parties signed its settlement (at the delivered
//! energy), or once a dispute about it was resolved (at the amount both resolutions name).
//! Trades not settled yet, settled by the seller alone, or disputed and unresolved are shown
//! as *pending*, never hidden and never counted as owed. Payments count once the payee
//! confirmed them (both signed). Balances are netted per neighbour: only the difference
//! changes hands.

use crate::market::{DisputeStatus, DocState, Market, SettleState, TradeState, docs::Doc};
use serde::Serialize;
use std::collections::BTreeMap;
use wattmesh_protocol::{NodeId, units::cost};

/// One neighbour's line in one month (or over all time, with `month` empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Line {
    /// `YYYY-MM` in the owner's time zone; empty for the all-time total.
    pub month: String,
    /// The neighbour (hex).
    pub counterparty: String,
    /// Energy sold to it, Wh (delivered, for settled trades).
    pub sold_wh: u64,
    /// Energy bought from it, Wh.
    pub bought_wh: u64,
    /// What it owes us for settled trades, milli-minor units.
    pub receivable: i64,
    /// What we owe it for settled trades.
    pub payable: i64,
    /// `receivable − payable`.
    pub net: i64,
    /// Payments it made to us that we confirmed.
    pub payments_received: i64,
    /// Payments we made to it that it confirmed.
    pub payments_made: i64,
    /// Balance before the month (positive: it owes us).
    pub opening: i64,
    /// Balance after the month: opening + net − received + made.
    pub closing: i64,
    /// Value of trades not yet counted (unsettled, one-sided or disputed), at the agreed
    /// energy; positive for sales.
    pub pending: i64,
    /// Trades with a dispute that is not resolved.
    pub open_disputes: u32,
}

/// A neighbour's delivery record as a seller to us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reputation {
    /// The neighbour (hex).
    pub peer: String,
    /// Energy it promised us in settled trades, Wh.
    pub promised_wh: u64,
    /// Energy the settlements counted as delivered, Wh.
    pub delivered_wh: u64,
    /// Delivered share, thousandths (absent while nothing was promised).
    pub delivered_permille: Option<u32>,
    /// Trades with it that ended disputed or one-sided.
    pub disputed: u32,
}

/// `YYYY-MM` of a UTC ms instant shifted by `offset_minutes`.
pub fn month_of(ms: u64, offset_minutes: i64) -> String {
    let secs = ms as i64 / 1000 + offset_minutes * 60;
    let days = secs.div_euclid(86_400);
    let d = crate::meter::sim::calendar::Date::from_days_since_epoch(days);
    format!("{:04}-{:02}", d.year, d.month)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Monthly statements per neighbour, with opening and closing balances, oldest month first.
pub fn statements(m: &Market, offset_minutes: i64) -> Vec<Line> {
    let me = m.me();
    let mut lines: BTreeMap<(String, NodeId), Line> = BTreeMap::new();
    let settlements: BTreeMap<_, _> = m.settlements().map(|(id, s)| (*id, s)).collect();
    for rec in m.trades() {
        if rec.state != TradeState::Agreed {
            continue;
        }
        let t = &rec.trade;
        let selling = t.seller() == me;
        let peer = if selling { t.buyer() } else { t.seller() };
        let line = lines
            .entry((month_of(t.slot_ms, offset_minutes), peer))
            .or_default();
        let settled = settlements
            .get(&t.id())
            .filter(|s| s.state == SettleState::Settled)
            .and_then(|s| s.settlement.as_ref());
        let dispute = m.dispute_status(&t.id());
        let counted = match (settled, dispute) {
            (_, Some((DisputeStatus::Resolved, Some(amount)))) => {
                Some((settled.map_or(t.energy_wh, |s| s.delivered_wh), i(amount)))
            }
            (Some(s), None) => Some((s.delivered_wh, i(s.amount))),
            _ => None,
        };
        if matches!(
            dispute,
            Some((DisputeStatus::Open | DisputeStatus::Answered, _))
        ) {
            line.open_disputes += 1;
        }
        match counted {
            Some((wh, amount)) if selling => {
                line.sold_wh += wh;
                line.receivable += amount;
            }
            Some((wh, amount)) => {
                line.bought_wh += wh;
                line.payable += amount;
            }
            None => {
                let v = i(cost(t.energy_wh, t.price));
                line.pending += if selling { v } else { -v };
            }
        }
    }
    for (_, d) in m.documents() {
        let (Doc::Payment(p), DocState::Signed) = (&d.doc, d.state) else {
            continue;
        };
        let month = month_of(p.created_ms, offset_minutes);
        if p.payee == me {
            lines.entry((month, p.payer)).or_default().payments_received += i(p.amount);
        } else if p.payer == me {
            lines.entry((month, p.payee)).or_default().payments_made += i(p.amount);
        }
    }
    // Running balances per neighbour, month by month (keys sort by month first).
    let mut running: BTreeMap<NodeId, i64> = BTreeMap::new();
    let mut out = Vec::with_capacity(lines.len());
    for ((month, peer), mut l) in lines {
        l.month = month;
        l.counterparty = peer.to_hex();
        l.net = l.receivable - l.payable;
        let bal = running.entry(peer).or_default();
        l.opening = *bal;
        l.closing = l.opening + l.net - l.payments_received + l.payments_made;
        *bal = l.closing;
        out.push(l);
    }
    out
}

/// Each neighbour's balance over all time (the last month's closing balance and the totals).
pub fn balances(m: &Market, offset_minutes: i64) -> Vec<Line> {
    let mut by_peer: BTreeMap<String, Line> = BTreeMap::new();
    for l in statements(m, offset_minutes) {
        let t = by_peer
            .entry(l.counterparty.clone())
            .or_insert_with(|| Line {
                counterparty: l.counterparty.clone(),
                ..Line::default()
            });
        t.sold_wh += l.sold_wh;
        t.bought_wh += l.bought_wh;
        t.receivable += l.receivable;
        t.payable += l.payable;
        t.net += l.net;
        t.payments_received += l.payments_received;
        t.payments_made += l.payments_made;
        t.pending += l.pending;
        t.open_disputes += l.open_disputes;
        t.closing = l.closing;
    }
    by_peer.into_values().collect()
}

/// How much of the energy each neighbour promised us as a seller it delivered, by the
/// co-signed settlements.
pub fn reputation(m: &Market) -> Vec<Reputation> {
    let me = m.me();
    let mut by: BTreeMap<NodeId, Reputation> = BTreeMap::new();
    let trades: BTreeMap<_, _> = m.trades().map(|t| (t.trade.id(), &t.trade)).collect();
    for (id, s) in m.settlements() {
        let Some(t) = trades.get(id) else { continue };
        let peer = if t.seller() == me {
            t.buyer()
        } else {
            t.seller()
        };
        let r = by.entry(peer).or_insert_with(|| Reputation {
            peer: peer.to_hex(),
            promised_wh: 0,
            delivered_wh: 0,
            delivered_permille: None,
            disputed: 0,
        });
        match (s.state, &s.settlement) {
            (SettleState::Settled, Some(x)) if t.buyer() == me => {
                r.promised_wh += x.agreed_wh;
                r.delivered_wh += x.delivered_wh;
            }
            (SettleState::Disputed | SettleState::Unilateral, _) => r.disputed += 1,
            _ => {}
        }
    }
    by.into_values()
        .map(|mut r| {
            r.delivered_permille = (r.promised_wh > 0)
                .then(|| (r.delivered_wh.saturating_mul(1000) / r.promised_wh) as u32);
            r
        })
        .collect()
}
