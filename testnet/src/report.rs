//! Turns what a run collected (every home's trades, timelines, trader orders and readings)
//! into the report's figures.

use crate::observe::{self, Observed};
use crate::run::{
    Collected, Energy, Kpis, Latencies, Options, OrderRow, PowerRow, Summary, Tariffs, TradeRow,
};
use std::collections::{BTreeMap, HashMap};
use wattmesh_node::market::clearing;
use wattmesh_node::metering::Minute;
use wattmesh_node::node::timeline::EventKind;
use wattmesh_protocol::offer::Side;

/// What the report is made from.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// How the run was made.
    pub options: &'a Options,
    /// The healthy homes' names.
    pub names: Vec<String>,
    /// The healthy homes' node ids (hex), in the same order.
    pub node_ids: &'a [String],
    /// Every trade as its parties see it.
    pub trades: &'a Collected,
    /// Timelines and orders.
    pub observed: &'a Observed,
    /// Each healthy home's per-minute readings over the run.
    pub readings: &'a [Vec<Minute>],
    /// Per home: wall-clock windows (UTC ms) when it was down or frozen.
    pub outages: &'a [Vec<(u64, u64)>],
    /// The neighbourhood's simulated time at the end.
    pub now_ms: u64,
    /// Real seconds run.
    pub wall_seconds: u64,
}

/// How long after an outage a home is still left out of propagation figures: it catches up
/// by sync, which is not propagation.
const OUTAGE_TAIL_MS: u64 = 15_000;

/// Computes the report (all but the parts only the run itself knows: faults, crashes, hostile
/// figures, resource use and the check).
pub fn summarise(i: &Inputs<'_>) -> Summary {
    let o = i.options;
    let c = crate::run::charter_for(wattmesh_protocol::NodeId([0; 32]), &o.scenario);
    let slot_ms = c.slot_ms();
    let grace_ms = u64::from(c.settlement_grace_secs) * 1000;
    let home_of: HashMap<&str, usize> = i
        .node_ids
        .iter()
        .enumerate()
        .map(|(k, id)| (id.as_str(), k))
        .collect();
    let name = |id: &str| {
        home_of
            .get(id)
            .map(|&k| i.names[k].clone())
            .unwrap_or_else(|| format!("other {}", &id[..id.len().min(8)]))
    };
    let simulated_seconds = i.wall_seconds * u64::from(o.speed);
    let mut s = Summary {
        scenario: o.scenario.name.clone(),
        homes: o.homes,
        speed: o.speed,
        simulated_seconds,
        wall_seconds: i.wall_seconds,
        slots: simulated_seconds * 1000 / slot_ms,
        tariffs: Tariffs {
            feed_in_millicents_per_kwh: c.feed_in_price,
            retail_millicents_per_kwh: c.retail_price,
        },
        ..Summary::default()
    };
    let mut fills = Vec::new();
    // Energy sold per offer (maker, nonce), for the oversold check.
    let mut sold_on: HashMap<(String, u64), u64> = HashMap::new();
    for views in i.trades.values() {
        let v0 = &views[0].1;
        s.trades += 1;
        let energy = v0["energy_wh"].as_u64().unwrap_or(0);
        s.energy_traded_wh += energy;
        let gain =
            i128::from(energy) * i128::from(c.retail_price.saturating_sub(c.feed_in_price)) / 1000;
        s.kpis.savings_vs_grid += i64::try_from(gain).unwrap_or(0);
        let settled = views
            .iter()
            .filter(|(_, v)| v["settlement"] == "settled")
            .count();
        let delivered =
            (views.len() == 2 && settled == 2).then(|| v0["delivered_wh"].as_u64().unwrap_or(0));
        if let Some(d) = delivered {
            s.settled_trades += 1;
            s.energy_delivered_wh += d;
        }
        let disputed = views
            .iter()
            .any(|(_, v)| v["settlement"] == "disputed" || v["settlement"] == "unilateral");
        if disputed {
            s.disputed_trades += 1;
        }
        let slot = v0["slot_ms"].as_u64().unwrap_or(0);
        if slot + slot_ms + 2 * grace_ms < i.now_ms && settled < 2 && !disputed {
            s.unsettled_trades += 1;
        }
        let same = views.len() == 2
            && views[0].1["energy_wh"] == views[1].1["energy_wh"]
            && views[0].1["price"] == views[1].1["price"]
            && views[0].1["slot_ms"] == views[1].1["slot_ms"]
            && views[0].1["state"] == views[1].1["state"];
        let mismatched = !same && views.iter().all(|(_, v)| v["state"] == "agreed");
        if mismatched {
            s.mismatched_trades += 1;
        }
        // Seller and buyer, from any party's view: its side and its counterparty.
        let me = &i.node_ids[views[0].0];
        let other = v0["counterparty_id"].as_str().unwrap_or("").to_owned();
        let (seller, buyer) = if v0["side"] == "sell" {
            (me.clone(), other)
        } else {
            (other, me.clone())
        };
        if let (Some(&a), Some(&b)) = (home_of.get(seller.as_str()), home_of.get(buyer.as_str())) {
            fills.push(clearing::Fill {
                slot_ms: slot,
                seller: a,
                buyer: b,
                energy_wh: energy,
            });
        }
        if v0["from_agreement"] != true {
            let key = (
                v0["offer_maker"].as_str().unwrap_or("").to_owned(),
                v0["offer_nonce"].as_u64().unwrap_or(0),
            );
            *sold_on.entry(key).or_default() += energy;
        }
        s.trades_list.push(TradeRow {
            slot_ms: slot,
            seller: name(&seller),
            buyer: name(&buyer),
            energy_wh: energy,
            price_millicents_per_kwh: v0["price"].as_u64().unwrap_or(0),
            delivered_wh: delivered,
            outcome: if mismatched {
                "mismatched"
            } else if disputed {
                "disputed"
            } else if delivered.is_some() {
                "settled"
            } else {
                "pending"
            }
            .into(),
        });
    }
    s.oversold_offers = oversold(i.observed, i.node_ids, &sold_on);
    // Orders and market efficiency.
    let mut orders = Vec::new();
    for (home, by_slot) in i.observed.orders.iter().enumerate() {
        for ord in by_slot.values() {
            orders.push(clearing::Order {
                home,
                slot_ms: ord.slot_ms,
                side: ord.side,
                limit_price: ord.limit_price,
                quantity_wh: ord.quantity_wh,
            });
            s.orders.push(OrderRow {
                slot_ms: ord.slot_ms,
                home: i.names[home].clone(),
                side: if ord.side == Side::Sell {
                    "sell"
                } else {
                    "buy"
                }
                .into(),
                limit_price_millicents_per_kwh: ord.limit_price,
                quantity_wh: ord.quantity_wh,
            });
        }
    }
    s.orders
        .sort_by(|a, b| (a.slot_ms, &a.home).cmp(&(b.slot_ms, &b.home)));
    s.trades_list
        .sort_by(|a, b| (a.slot_ms, &a.seller).cmp(&(b.slot_ms, &b.seller)));
    let g = clearing::gains(&orders, &fills);
    let eff = g.efficiency();
    s.kpis = Kpis {
        market_efficiency: eff.is_finite().then_some(eff),
        gains_realised_millicents: g.realised,
        gains_central_millicents: g.central,
        ..s.kpis
    };
    // Latency.
    let outages = i.outages;
    let excluded = |h: usize, at: u64| {
        outages.get(h).is_some_and(|w| {
            w.iter()
                .any(|&(a, b)| at + 5_000 >= a && at <= b + OUTAGE_TAIL_MS)
        })
    };
    let maker_of = |taker: &str, nonce: u64| {
        i.trades
            .get(&(taker.to_owned(), nonce))?
            .iter()
            .find(|(_, v)| v["role"] == "maker")
            .map(|(h, _)| *h)
    };
    s.latency_ms = Latencies {
        offer_propagation: observe::offer_propagation(i.observed, i.node_ids, &excluded),
        trade_agreement: observe::trade_agreement(i.observed, i.node_ids, &maker_of),
    };
    // Energy and power.
    let (energy, power) = energy(i.readings);
    s.kpis.self_sufficiency = if energy.consumption_wh > 0 {
        let from_utility = energy.import_wh.saturating_sub(s.energy_delivered_wh);
        (1.0 - from_utility as f64 / energy.consumption_wh as f64).clamp(0.0, 1.0)
    } else {
        0.0
    };
    s.kpis.local_energy_share = if energy.import_wh > 0 {
        (s.energy_delivered_wh as f64 / energy.import_wh as f64).min(1.0)
    } else {
        0.0
    };
    s.energy = energy;
    s.power = power;
    s
}

/// The report's JSON Schema (`testnet/report.schema.json`).
pub const SCHEMA: &str = include_str!("../report.schema.json");

/// Where a report does not follow [`SCHEMA`] (empty when it does).
pub fn schema_errors(s: &Summary) -> Vec<String> {
    let schema: serde_json::Value = match serde_json::from_str(SCHEMA) {
        Ok(v) => v,
        Err(e) => return vec![format!("the report schema is not JSON: {e}")],
    };
    let validator = match jsonschema::validator_for(&schema) {
        Ok(v) => v,
        Err(e) => return vec![format!("the report schema is invalid: {e}")],
    };
    let value = match serde_json::to_value(s) {
        Ok(v) => v,
        Err(e) => return vec![format!("the report cannot be written as JSON: {e}")],
    };
    validator
        .iter_errors(&value)
        .map(|e| format!("report.json at {}: {e}", e.instance_path()))
        .collect()
}

/// Offers on which the trades sold more than the maker ever offered: the first version's
/// quantity plus every later increase (a trader resizes its offer up as its forecast grows;
/// energy sold moves out of the offer as it goes).
fn oversold(o: &Observed, node_ids: &[String], sold_on: &HashMap<(String, u64), u64>) -> usize {
    // (maker, nonce) -> quantity per version, from the maker's own timeline.
    let mut versions: HashMap<(String, u64), BTreeMap<u32, u64>> = HashMap::new();
    for (home, events) in o.events.iter().enumerate() {
        for e in events {
            if let EventKind::Offer {
                maker,
                nonce,
                version,
                quantity_wh,
                own: true,
            } = &e.kind
            {
                if node_ids.get(home) == Some(maker) {
                    versions
                        .entry((maker.clone(), *nonce))
                        .or_default()
                        .insert(*version, *quantity_wh);
                }
            }
        }
    }
    sold_on
        .iter()
        .filter(|(key, sold)| {
            let Some(v) = versions.get(*key) else {
                // The maker's timeline was lost (killed before it was read): not judged.
                return false;
            };
            let mut q = v.values();
            let first = q.next().copied().unwrap_or(0);
            let mut most = first;
            let mut last = first;
            for &x in q {
                most += x.saturating_sub(last);
                last = x;
            }
            **sold > most
        })
        .count()
}

/// The neighbourhood's energy over the run and its power per minute.
fn energy(readings: &[Vec<Minute>]) -> (Energy, Vec<PowerRow>) {
    let mut e = Energy::default();
    let mut per_minute: BTreeMap<u64, PowerRow> = BTreeMap::new();
    let (mut load_wmin, mut solar_wmin) = (0i64, 0i64);
    for list in readings {
        if let (Some(first), Some(last)) = (list.first(), list.last()) {
            e.import_wh += last.import_wh.saturating_sub(first.import_wh);
            e.export_wh += last.export_wh.saturating_sub(first.export_wh);
        }
        for m in list {
            load_wmin += i64::from(m.load_w.max(0));
            solar_wmin += i64::from(m.solar_w.max(0));
            let row = per_minute.entry(m.minute_ms).or_default();
            row.minute_ms = m.minute_ms;
            row.import_w += i64::from(m.grid_w.max(0));
            row.export_w += i64::from((-m.grid_w).max(0));
            row.solar_w += i64::from(m.solar_w.max(0));
            row.load_w += i64::from(m.load_w.max(0));
        }
    }
    e.consumption_wh = (load_wmin / 60) as u64;
    e.production_wh = (solar_wmin / 60) as u64;
    (e, per_minute.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattmesh_node::node::timeline::Event;

    #[test]
    fn oversold_counts_increases_but_not_decreases() {
        let ids = vec!["m".to_string()];
        let mut o = Observed::new(1);
        for (seq, (version, q)) in [(1, 100), (2, 60), (3, 90)].into_iter().enumerate() {
            o.events[0].push(Event {
                seq: seq as u64 + 1,
                wall_us: 0,
                kind: EventKind::Offer {
                    maker: "m".into(),
                    nonce: 1,
                    version,
                    quantity_wh: q,
                    own: true,
                },
            });
        }
        // Offered at most 100 + (90 - 60) = 130 Wh.
        let sold = |wh| HashMap::from([(("m".to_string(), 1), wh)]);
        assert_eq!(oversold(&o, &ids, &sold(130)), 0);
        assert_eq!(oversold(&o, &ids, &sold(131)), 1);
        // An offer whose maker's timeline is unknown is not judged.
        let other = HashMap::from([(("x".to_string(), 1), 10_000)]);
        assert_eq!(oversold(&o, &ids, &other), 0);
    }

    #[test]
    fn reports_follow_the_schema_and_drift_is_caught() {
        let mut s = Summary {
            scenario: "t".into(),
            network: "loopback".into(),
            ..Summary::default()
        };
        s.orders.push(OrderRow {
            slot_ms: 1,
            home: "home-00".into(),
            side: "sell".into(),
            limit_price_millicents_per_kwh: 5_000,
            quantity_wh: 10,
        });
        s.trades_list.push(TradeRow {
            slot_ms: 1,
            seller: "home-00".into(),
            buyer: "home-01".into(),
            energy_wh: 10,
            price_millicents_per_kwh: 6_000,
            delivered_wh: None,
            outcome: "pending".into(),
        });
        s.kpis.market_efficiency = Some(0.9);
        assert_eq!(schema_errors(&s), Vec::<String>::new());
        s.kpis.self_sufficiency = 1.5;
        s.network = "carrier pigeon".into();
        let errors = schema_errors(&s);
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn energy_sums_registers_and_power() {
        let m = |minute_ms, grid_w, import_wh| Minute {
            minute_ms,
            grid_w,
            load_w: 600,
            solar_w: 0,
            battery_w: 0,
            import_wh,
            export_wh: 0,
        };
        let (e, p) = energy(&[vec![m(0, 600, 1_000), m(60_000, 600, 1_010)]]);
        assert_eq!((e.import_wh, e.consumption_wh), (10, 20));
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].import_w, 600);
    }
}
