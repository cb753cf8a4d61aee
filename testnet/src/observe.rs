//! Reads every home's timeline and trader orders while the run goes on (a home keeps only its
//! recent events, and a killed home loses them), so the report can measure latency and market
//! efficiency afterwards.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use wattmesh_node::control::ControlRequest;
use wattmesh_node::market::trader::Order;
use wattmesh_node::node::Observations;
use wattmesh_node::node::timeline::{Event, EventKind};
use wattmesh_protocol::offer::Side;

/// What was observed of all homes.
#[derive(Debug, Default)]
pub struct Observed {
    /// Per home: the events read so far.
    pub events: Vec<Vec<Event>>,
    /// Per home: the last sequence number read (a restarted home starts again from 1).
    last: Vec<u64>,
    /// Per home: the orders its trader worked with, by (slot, side), with the most it wanted.
    pub orders: Vec<BTreeMap<(u64, Side), Order>>,
}

impl Observed {
    /// For `homes` homes.
    pub fn new(homes: usize) -> Observed {
        Observed {
            events: vec![Vec::new(); homes],
            last: vec![0; homes],
            orders: vec![BTreeMap::new(); homes],
        }
    }

    /// How many trades some home has reported durably stored so far (as read from the
    /// timelines: for the progress line, without asking every home for its trades).
    pub fn trades_stored(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        for e in self.events.iter().flatten() {
            if let EventKind::TradeStored { taker, nonce } = &e.kind {
                seen.insert((taker.as_str(), *nonce));
            }
        }
        seen.len()
    }

    /// Reads what is new at home `i`.
    pub async fn poll(&mut self, i: usize, dir: &Path) {
        // A home's timeline gives a page at a time; a few pages catch up after a busy spell.
        for _ in 0..8 {
            let Ok(v) = crate::run::call(
                dir,
                &ControlRequest::Observations {
                    after: self.last[i],
                },
            )
            .await
            else {
                return;
            };
            let Ok(o) = serde_json::from_value::<Observations>(v["observations"].clone()) else {
                return;
            };
            if o.timeline.last < self.last[i] {
                // Restarted: its numbering begins again.
                self.last[i] = 0;
                continue;
            }
            for ord in o.orders {
                let e = self.orders[i].entry((ord.slot_ms, ord.side)).or_insert(ord);
                e.quantity_wh = e.quantity_wh.max(ord.quantity_wh);
            }
            let n = o.timeline.events.len();
            if let Some(e) = o.timeline.events.last() {
                self.last[i] = e.seq;
            }
            self.events[i].extend(o.timeline.events);
            if n < wattmesh_node::node::timeline::PAGE {
                return;
            }
        }
    }
}

/// Latency figures: milliseconds (rounded to the nearest), and the percentiles also in
/// microseconds, for figures of a few milliseconds where rounding would hide the difference.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Latency {
    /// Median, ms.
    pub p50: u64,
    /// 90th percentile, ms.
    pub p90: u64,
    /// 99th percentile, ms.
    pub p99: u64,
    /// The largest, ms.
    pub max: u64,
    /// Median, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// How many were measured.
    pub count: usize,
    /// How many could not be measured (some home never saw the offer, or a side never stored
    /// the trade, within the run).
    pub incomplete: usize,
    /// Every measurement, µs, sorted (for the report's distributions).
    #[serde(skip)]
    pub samples_us: Vec<u64>,
}

/// The nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Microseconds to the nearest millisecond.
fn ms_of(us: u64) -> u64 {
    us.saturating_add(500) / 1000
}

impl Latency {
    /// Percentiles of `samples_us` (µs, any order), `incomplete` more not measured.
    pub fn from_samples_us(mut samples_us: Vec<u64>, incomplete: usize) -> Latency {
        samples_us.sort_unstable();
        let (p50_us, p90_us, p99_us) = (
            percentile(&samples_us, 50.0),
            percentile(&samples_us, 90.0),
            percentile(&samples_us, 99.0),
        );
        Latency {
            p50: ms_of(p50_us),
            p90: ms_of(p90_us),
            p99: ms_of(p99_us),
            max: ms_of(samples_us.last().copied().unwrap_or(0)),
            p50_us,
            p90_us,
            p99_us,
            count: samples_us.len(),
            incomplete,
            samples_us,
        }
    }
}

/// Offer propagation: from the maker publishing an offer version (stored and signed) to the
/// last other home having it in its book. `excluded(home, wall_ms)` says a home was down or
/// frozen around that time, UTC ms (it is then left out of that offer's measurement).
pub fn offer_propagation(
    o: &Observed,
    node_ids: &[String],
    excluded: &dyn Fn(usize, u64) -> bool,
) -> Latency {
    let home_of: HashMap<&str, usize> = node_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    // (maker, nonce, version) -> when the maker signed it, µs.
    let mut published: HashMap<(usize, u64, u32), u64> = HashMap::new();
    // (maker, nonce, version) -> per home, when it first had it.
    let mut seen: HashMap<(usize, u64, u32), HashMap<usize, u64>> = HashMap::new();
    for (i, events) in o.events.iter().enumerate() {
        for e in events {
            if let EventKind::Offer {
                maker,
                nonce,
                version,
                own,
                ..
            } = &e.kind
            {
                let Some(&m) = home_of.get(maker.as_str()) else {
                    continue;
                };
                let key = (m, *nonce, *version);
                if *own {
                    published.entry(key).or_insert(e.wall_us);
                } else {
                    let w = seen.entry(key).or_default().entry(i).or_insert(e.wall_us);
                    *w = (*w).min(e.wall_us);
                }
            }
        }
    }
    let mut samples = Vec::new();
    let mut incomplete = 0;
    for (key, at) in &published {
        let others = (0..node_ids.len()).filter(|&h| h != key.0 && !excluded(h, *at / 1000));
        let seen_by = seen.get(key);
        let mut worst = Some(0u64);
        for h in others {
            match seen_by.and_then(|m| m.get(&h)) {
                Some(&w) => worst = worst.map(|x| x.max(w.saturating_sub(*at))),
                None => worst = None,
            }
        }
        match worst {
            Some(w) => samples.push(w),
            None => incomplete += 1,
        }
    }
    Latency::from_samples_us(samples, incomplete)
}

/// Trade agreement: from the taker sending its proposal to the co-signed trade durably stored
/// on both sides. `maker_of(taker, nonce)` finds the trade's maker home.
pub fn trade_agreement(
    o: &Observed,
    node_ids: &[String],
    maker_of: &dyn Fn(&str, u64) -> Option<usize>,
) -> Latency {
    let home_of: HashMap<&str, usize> = node_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut proposed: HashMap<(String, u64), u64> = HashMap::new();
    let mut stored: HashMap<(String, u64), HashMap<usize, u64>> = HashMap::new();
    for (i, events) in o.events.iter().enumerate() {
        for e in events {
            match &e.kind {
                EventKind::Proposed { taker, nonce } => {
                    let w = proposed.entry((taker.clone(), *nonce)).or_insert(e.wall_us);
                    *w = (*w).min(e.wall_us);
                }
                EventKind::TradeStored { taker, nonce } => {
                    let w = stored
                        .entry((taker.clone(), *nonce))
                        .or_default()
                        .entry(i)
                        .or_insert(e.wall_us);
                    *w = (*w).min(e.wall_us);
                }
                EventKind::Offer { .. } => {}
            }
        }
    }
    let mut samples = Vec::new();
    let mut incomplete = 0;
    for ((taker, nonce), at) in &proposed {
        let Some(sides) = stored.get(&(taker.clone(), *nonce)) else {
            // Refused or lost proposals are not agreements.
            continue;
        };
        let (Some(&t), Some(m)) = (home_of.get(taker.as_str()), maker_of(taker, *nonce)) else {
            continue;
        };
        match (sides.get(&t), sides.get(&m)) {
            (Some(a), Some(b)) => samples.push((*a).max(*b).saturating_sub(*at)),
            _ => incomplete += 1,
        }
    }
    Latency::from_samples_us(samples, incomplete)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, wall_us: u64, kind: EventKind) -> Event {
        Event { seq, wall_us, kind }
    }

    fn offer(maker: &str, own: bool) -> EventKind {
        EventKind::Offer {
            maker: maker.into(),
            nonce: 7,
            version: 1,
            quantity_wh: 100,
            own,
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[5], 99.0), 5);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn propagation_is_to_the_last_home_and_skips_excluded_ones() {
        let ids = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let mut o = Observed::new(3);
        o.events[0].push(ev(1, 1_000_000, offer("a", true)));
        o.events[1].push(ev(1, 1_012_400, offer("a", false)));
        o.events[2].push(ev(1, 1_039_600, offer("a", false)));
        let l = offer_propagation(&o, &ids, &|_, _| false);
        assert_eq!((l.count, l.p50_us, l.p50, l.incomplete), (1, 39_600, 40, 0));
        // Home c never saw it: incomplete, unless c was down at the time.
        o.events[2].clear();
        assert_eq!(offer_propagation(&o, &ids, &|_, _| false).incomplete, 1);
        // The exclusion is asked in ms.
        let l = offer_propagation(&o, &ids, &|h, at_ms| h == 2 && at_ms == 1_000);
        assert_eq!((l.count, l.p50_us, l.p50), (1, 12_400, 12));
    }

    #[test]
    fn agreement_waits_for_both_sides() {
        let ids = vec!["a".to_string(), "b".to_string()];
        let mut o = Observed::new(2);
        let stored = || EventKind::TradeStored {
            taker: "b".into(),
            nonce: 3,
        };
        o.events[1].push(ev(
            1,
            500_000,
            EventKind::Proposed {
                taker: "b".into(),
                nonce: 3,
            },
        ));
        o.events[0].push(ev(1, 503_100, stored()));
        o.events[1].push(ev(2, 504_700, stored()));
        let l = trade_agreement(&o, &ids, &|_, _| Some(0));
        // The later side, to the microsecond.
        assert_eq!((l.count, l.p50_us, l.p50), (1, 4_700, 5));
    }
}
