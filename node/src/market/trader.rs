//! The automatic trader (the original design's "transaction matchmaker"): within limits the
//! owner sets, it sells forecast surplus and buys for forecast deficit, slot by slot, with a
//! price ramp inside each slot's trading window: sellers step down from near the retail tariff
//! toward their floor, buyers step up from near the feed-in tariff toward their ceiling. It
//! both takes matching offers from the book and posts its own. It is pure: it looks at the
//! book, our trades and the forecast, and returns actions, each with the reason it was taken.

pub mod text;

use crate::book::Book;
use serde::{Deserialize, Serialize};
use wattmesh_protocol::charter::Charter;
use wattmesh_protocol::offer::{OfferId, Side};
use wattmesh_protocol::{NodeId, Trade, slot};

/// How many price steps a ramp has.
pub const RAMP_STEPS: u64 = 10;

/// The owner's limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Whether the trader acts at all.
    pub enabled: bool,
    /// Sell forecast surplus.
    pub sell: bool,
    /// The lowest price to sell at (thousandths of a minor unit per kWh).
    pub min_sell_price: u64,
    /// Keep this much of each slot's surplus unsold (a safety margin against a poor forecast), Wh.
    pub sell_above_wh: u64,
    /// Sell at most this much per slot, Wh.
    pub max_sell_wh: u64,
    /// Buy for forecast deficit.
    pub buy: bool,
    /// The highest price to buy at.
    pub max_buy_price: u64,
    /// Buy at most this much per slot, Wh.
    pub max_buy_wh: u64,
    /// Trade only for slots starting in these local hours, `[from, to)` (0 and 24: all day).
    pub from_hour: u8,
    /// See `from_hour`.
    pub to_hour: u8,
    /// Trade this many slots ahead.
    pub lead_slots: u32,
    /// The trading window before each slot's gate closure, minutes, over which prices ramp.
    pub ramp_minutes: u32,
    /// The owner's time zone as minutes from UTC, for `from_hour`/`to_hour` (US Central
    /// Standard Time by default).
    pub utc_offset_minutes: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            enabled: false,
            sell: true,
            min_sell_price: 7_000,
            sell_above_wh: 50,
            max_sell_wh: 5_000,
            buy: true,
            max_buy_price: 11_000,
            max_buy_wh: 5_000,
            from_hour: 0,
            to_hour: 24,
            lead_slots: 2,
            ramp_minutes: 20,
            utc_offset_minutes: -360,
        }
    }
}

/// What the trader wants done, or what it decided not to do, with the figures behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Post a new offer.
    Post {
        /// Sell or buy.
        side: Side,
        /// The slot.
        slot_ms: u64,
        /// Energy, Wh.
        quantity_wh: u64,
        /// Price.
        price: u64,
        /// Why.
        why: Why,
    },
    /// Give one of our offers a new quantity and price (the ramp, or energy moved to a take);
    /// quantity 0 withdraws it.
    Resize {
        /// The offer's nonce.
        nonce: u64,
        /// Sell or buy (the offer's side).
        side: Side,
        /// The offer's slot.
        slot_ms: u64,
        /// The quantity before, Wh.
        was_wh: u64,
        /// The price before.
        was_price: u64,
        /// The new quantity, Wh.
        quantity_wh: u64,
        /// The new price.
        price: u64,
        /// Why.
        why: Why,
    },
    /// Take (part of) an offer from the book.
    Take {
        /// The offer.
        offer: OfferId,
        /// Our side: `Sell` takes a neighbour's bid, `Buy` a neighbour's sell offer.
        side: Side,
        /// The slot.
        slot_ms: u64,
        /// Energy, Wh.
        energy_wh: u64,
        /// The offer's price (what the trade is at).
        price: u64,
        /// Why.
        why: Why,
    },
    /// Nothing to do for a slot, and why. Only logged; nothing is signed or sent.
    Hold {
        /// The slot.
        slot_ms: u64,
        /// Why nothing.
        why: Hold,
    },
}

impl Action {
    /// Whether the trader actually did something (not a [`Action::Hold`]).
    pub fn acts(&self) -> bool {
        !matches!(self, Action::Hold { .. })
    }

    /// The slot the action is about.
    pub fn slot_ms(&self) -> u64 {
        match self {
            Action::Post { slot_ms, .. }
            | Action::Resize { slot_ms, .. }
            | Action::Take { slot_ms, .. }
            | Action::Hold { slot_ms, .. } => *slot_ms,
        }
    }
}

/// The figures behind an action, for the owner's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Why {
    /// The forecast net export for the slot, Wh (negative: a deficit).
    pub forecast_wh: i64,
    /// The energy kept back from selling (`Limits::sell_above_wh`), Wh.
    pub keep_back_wh: u64,
    /// The most per slot for this side (`max_sell_wh` or `max_buy_wh`), Wh.
    pub max_wh: u64,
    /// The energy the trader wants to trade in the slot (forecast within the limits), Wh.
    pub wanted_wh: u64,
    /// Already traded or being agreed in the slot, Wh.
    pub done_wh: u64,
    /// Going to takes at this step, Wh.
    pub taking_wh: u64,
    /// The owner's floor (selling) or ceiling (buying), clamped to the charter's band.
    pub limit_price: u64,
    /// Where the price ramp stands now.
    pub ramp_price: u64,
    /// When trading for the slot closes (gate closure), UTC ms.
    pub gate_ms: u64,
    /// The resize removes a second offer of ours for the same slot and side.
    pub duplicate: bool,
}

/// Why the trader did nothing for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Hold {
    /// The slot starts outside the owner's hours.
    OutsideHours {
        /// `Limits::from_hour`.
        from_hour: u8,
        /// `Limits::to_hour`.
        to_hour: u8,
        /// `Limits::utc_offset_minutes` then.
        utc_offset_minutes: i64,
    },
    /// No surplus above what is kept back, and no deficit.
    NoSurplus {
        /// Forecast net export, Wh.
        forecast_wh: i64,
        /// Kept back, Wh.
        keep_back_wh: u64,
    },
    /// A surplus, but selling is off.
    SellingOff {
        /// Forecast net export, Wh.
        forecast_wh: i64,
    },
    /// A deficit, but buying is off.
    BuyingOff {
        /// Forecast net export, Wh.
        forecast_wh: i64,
    },
    /// Everything wanted is traded or being agreed.
    LimitReached {
        /// Sell or buy.
        side: Side,
        /// Forecast net export, Wh.
        forecast_wh: i64,
        /// Traded or being agreed, Wh.
        done_wh: u64,
        /// Wanted for the slot, Wh.
        wanted_wh: u64,
        /// The most per slot, Wh.
        max_wh: u64,
        /// Kept back, Wh.
        keep_back_wh: u64,
    },
    /// Our offer stands unchanged; no offer in the book meets our price.
    Waiting {
        /// Sell or buy.
        side: Side,
        /// Our offer's quantity, Wh.
        offer_wh: u64,
        /// Our offer's price (the ramp's now).
        price: u64,
        /// The owner's floor or ceiling.
        limit_price: u64,
        /// The best opposite offer in the book for the slot: its price and maker.
        best: Option<(u64, NodeId)>,
        /// When trading for the slot closes, UTC ms.
        gate_ms: u64,
    },
}

impl Hold {
    /// What makes two holds "the same" for the log: the kind, the side and, while waiting,
    /// whether any counter-offer exists and whether it is beyond the owner's limit.
    pub fn key(&self) -> (u8, u8) {
        let side = |s: &Side| if *s == Side::Sell { 1 } else { 2 };
        match self {
            Hold::OutsideHours { .. } => (0, 0),
            Hold::NoSurplus { .. } => (1, 0),
            Hold::SellingOff { .. } => (2, 0),
            Hold::BuyingOff { .. } => (3, 0),
            Hold::LimitReached { side: s, .. } => (4, side(s)),
            Hold::Waiting {
                side: s,
                best,
                limit_price,
                ..
            } => {
                let sub = match best {
                    None => 0,
                    Some((p, _)) => {
                        let beyond = match s {
                            Side::Sell => p < limit_price,
                            Side::Buy => p > limit_price,
                        };
                        if beyond { 1 } else { 2 }
                    }
                };
                (5, side(s) * 4 + sub)
            }
        }
    }
}

/// The ramped price at `now` for a slot: sellers from retail down to their floor, buyers from
/// feed-in up to their ceiling, linearly over the window, clamped to the charter's band.
pub fn ramp_price(c: &Charter, limits: &Limits, side: Side, slot_ms: u64, now: u64) -> u64 {
    let gate = slot::gate_closure(c, slot_ms);
    let window = u64::from(limits.ramp_minutes.max(1)) * 60_000;
    let open = gate.saturating_sub(window);
    // The price moves in RAMP_STEPS steps, so an offer gets a handful of versions, not one
    // per tick.
    let step_len = (window / RAMP_STEPS).max(1);
    let done = (now.saturating_sub(open) / step_len * step_len).min(window);
    let (from, to) = match side {
        Side::Sell => (
            c.retail_price,
            limits.min_sell_price.clamp(c.feed_in_price, c.retail_price),
        ),
        Side::Buy => (
            c.feed_in_price,
            limits.max_buy_price.clamp(c.feed_in_price, c.retail_price),
        ),
    };
    let span = from.abs_diff(to);
    let step = (u128::from(span) * u128::from(done) / u128::from(window)) as u64;
    if from >= to { from - step } else { from + step }
}

/// Local hour of a UTC time, for the owner's window, with a fixed UTC offset in minutes.
fn local_hour(utc_ms: u64, utc_offset_min: i64) -> u8 {
    let local = utc_ms as i64 / 60_000 + utc_offset_min;
    (local.rem_euclid(24 * 60) / 60) as u8
}

/// What the trader works with for one slot and side: its limit price and the energy it
/// wants to trade there (from the forecast, within the owner's limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The slot.
    pub slot_ms: u64,
    /// Sell or buy.
    pub side: Side,
    /// The owner's limit (floor for selling, ceiling for buying), clamped to the charter's band.
    pub limit_price: u64,
    /// Energy wanted, Wh.
    pub quantity_wh: u64,
}

/// The slots whose trading window is open at `now`, each with whether it starts within the
/// owner's hours.
fn open_slots(now: u64, c: &Charter, limits: &Limits, utc_offset_min: i64) -> Vec<(u64, bool)> {
    let first = slot::first_open_slot(c, now);
    (0..u64::from(limits.lead_slots))
        .map(|k| first + k * c.slot_ms())
        .filter(|&s| {
            let gate = slot::gate_closure(c, s);
            let window = u64::from(limits.ramp_minutes.max(1)) * 60_000;
            now >= gate.saturating_sub(window) && now < gate
        })
        .map(|s| {
            let h = local_hour(s, utc_offset_min);
            let in_hours = if limits.from_hour <= limits.to_hour {
                h >= limits.from_hour && h < limits.to_hour
            } else {
                h >= limits.from_hour || h < limits.to_hour
            };
            (s, in_hours)
        })
        .collect()
}

/// For each slot whose trading window is open at `now`: the order the forecast
/// `forecast(slot)` (expected net export, Wh) calls for within the owner's limits, or why there
/// is none.
pub fn plan(
    now: u64,
    c: &Charter,
    limits: &Limits,
    utc_offset_min: i64,
    forecast: &dyn Fn(u64) -> i64,
) -> Vec<(u64, Result<Order, Hold>)> {
    if !limits.enabled {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (s, in_hours) in open_slots(now, c, limits, utc_offset_min) {
        if !in_hours {
            out.push((
                s,
                Err(Hold::OutsideHours {
                    from_hour: limits.from_hour,
                    to_hour: limits.to_hour,
                    utc_offset_minutes: utc_offset_min,
                }),
            ));
            continue;
        }
        let f = forecast(s);
        let (side, quantity_wh) = if f > limits.sell_above_wh as i64 {
            if !limits.sell {
                out.push((s, Err(Hold::SellingOff { forecast_wh: f })));
                continue;
            }
            (
                Side::Sell,
                (f as u64 - limits.sell_above_wh).min(limits.max_sell_wh),
            )
        } else if f < 0 {
            if !limits.buy {
                out.push((s, Err(Hold::BuyingOff { forecast_wh: f })));
                continue;
            }
            (Side::Buy, f.unsigned_abs().min(limits.max_buy_wh))
        } else {
            out.push((
                s,
                Err(Hold::NoSurplus {
                    forecast_wh: f,
                    keep_back_wh: limits.sell_above_wh,
                }),
            ));
            continue;
        };
        let limit_price = match side {
            Side::Sell => limits.min_sell_price,
            Side::Buy => limits.max_buy_price,
        }
        .clamp(c.feed_in_price, c.retail_price);
        out.push((
            s,
            Ok(Order {
                slot_ms: s,
                side,
                limit_price,
                quantity_wh,
            }),
        ));
    }
    out
}

/// The orders the trader works with at `now`: for each open slot, the side the forecast
/// `forecast(slot)` (expected net export, Wh) calls for, the owner's limit and the quantity.
pub fn orders(
    now: u64,
    c: &Charter,
    limits: &Limits,
    utc_offset_min: i64,
    forecast: &dyn Fn(u64) -> i64,
) -> Vec<Order> {
    plan(now, c, limits, utc_offset_min, forecast)
        .into_iter()
        .filter_map(|(_, o)| o.ok())
        .collect()
}

/// Decides what to do at `now`. `forecast(slot)` is the expected net export of our home in
/// that slot, Wh (negative: a deficit). `pending(slot, side)` is energy in proposals still in
/// flight. Returns the actions, each with its reason, and a [`Action::Hold`] for each open
/// slot where it does nothing.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    now: u64,
    c: &Charter,
    limits: &Limits,
    utc_offset_min: i64,
    me: NodeId,
    book: &Book,
    trades: &[Trade],
    forecast: &dyn Fn(u64) -> i64,
    pending: &dyn Fn(u64, Side) -> u64,
) -> Vec<Action> {
    let mut out = Vec::new();
    for (s, planned) in plan(now, c, limits, utc_offset_min, forecast) {
        let order = match planned {
            Ok(o) => o,
            Err(why) => {
                out.push(Action::Hold { slot_ms: s, why });
                continue;
            }
        };
        let (side, wanted) = (order.side, order.quantity_wh);
        let f = forecast(s);
        let entries = book.sorted_from(s);
        let in_slot: Vec<_> = entries.iter().filter(|e| e.offer.slot_ms == s).collect();
        let done: u64 = trades
            .iter()
            .filter(|t| t.slot_ms == s)
            .filter(|t| match side {
                Side::Sell => t.seller() == me,
                Side::Buy => t.buyer() == me,
            })
            .map(|t| t.energy_wh)
            .sum::<u64>()
            + pending(s, side);
        let ours: Vec<_> = in_slot
            .iter()
            .filter(|e| e.offer.maker == me && e.offer.side == side)
            .collect();
        let mut left = wanted.saturating_sub(done);
        let price = ramp_price(c, limits, side, s, now);
        let mut why = Why {
            forecast_wh: f,
            keep_back_wh: limits.sell_above_wh,
            max_wh: match side {
                Side::Sell => limits.max_sell_wh,
                Side::Buy => limits.max_buy_wh,
            },
            wanted_wh: wanted,
            done_wh: done,
            taking_wh: 0,
            limit_price: order.limit_price,
            ramp_price: price,
            gate_ms: slot::gate_closure(c, s),
            duplicate: false,
        };
        // The opposite offers in the slot, best first.
        let mut theirs: Vec<_> = in_slot
            .iter()
            .filter(|e| {
                e.offer.maker != me && e.offer.side == side.opposite() && e.offer.quantity_wh > 0
            })
            .collect();
        theirs.sort_by_key(|e| match side {
            Side::Sell => u64::MAX - e.offer.price,
            Side::Buy => e.offer.price,
        });
        let best = theirs.first().map(|e| (e.offer.price, e.offer.maker));
        // Take what the book already offers at our price or better, best first.
        let mut takes = Vec::new();
        for e in theirs.iter().filter(|e| match side {
            Side::Sell => e.offer.price >= price,
            Side::Buy => e.offer.price <= price,
        }) {
            let q = left.min(e.offer.quantity_wh);
            if q == 0 || q < e.offer.min_fill_wh.min(e.offer.quantity_wh) {
                continue;
            }
            takes.push((e.offer.id(), q, e.offer.price));
            left -= q;
        }
        why.taking_wh = takes.iter().map(|t| t.1).sum();
        let acted = out.len();
        // Our own offer holds exactly what is still wanted after the takes, at the ramp's
        // price. It is resized before the takes go out, so the same energy is never both
        // in our offer and in a take.
        let mut first = true;
        for e in &ours {
            let q = if first { left } else { 0 };
            let duplicate = !first;
            first = false;
            if e.offer.quantity_wh != q || (q > 0 && e.offer.price != price) {
                out.push(Action::Resize {
                    nonce: e.offer.nonce,
                    side,
                    slot_ms: s,
                    was_wh: e.offer.quantity_wh,
                    was_price: e.offer.price,
                    quantity_wh: q,
                    price: if q > 0 { price } else { e.offer.price },
                    why: Why { duplicate, ..why },
                });
            }
        }
        out.extend(takes.into_iter().map(|(offer, energy_wh, p)| Action::Take {
            offer,
            side,
            slot_ms: s,
            energy_wh,
            price: p,
            why,
        }));
        if left > 0 && ours.is_empty() {
            out.push(Action::Post {
                side,
                slot_ms: s,
                quantity_wh: left,
                price,
                why,
            });
        }
        if out.len() == acted {
            let why = match ours.first() {
                Some(e) if left > 0 => Hold::Waiting {
                    side,
                    offer_wh: e.offer.quantity_wh,
                    price: e.offer.price,
                    limit_price: order.limit_price,
                    best,
                    gate_ms: slot::gate_closure(c, s),
                },
                _ => Hold::LimitReached {
                    side,
                    forecast_wh: f,
                    done_wh: done,
                    wanted_wh: wanted,
                    max_wh: why.max_wh,
                    keep_back_wh: limits.sell_above_wh,
                },
            };
            out.push(Action::Hold { slot_ms: s, why });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattmesh_protocol::ids::NeighbourhoodId;

    fn charter() -> Charter {
        Charter::founding(NeighbourhoodId([0; 16]), "t", NodeId([1; 32]), 0)
    }

    #[test]
    fn the_ramp_stays_inside_the_owners_limits_and_the_band() {
        let c = charter();
        let l = Limits {
            enabled: true,
            ..Limits::default()
        };
        let s = 1_782_064_800_000;
        let gate = slot::gate_closure(&c, s);
        let window = u64::from(l.ramp_minutes) * 60_000;
        let mut last_sell = u64::MAX;
        let mut last_buy = 0;
        for t in (gate - window..=gate).step_by(10_000) {
            let ask = ramp_price(&c, &l, Side::Sell, s, t);
            let bid = ramp_price(&c, &l, Side::Buy, s, t);
            assert!(ask >= l.min_sell_price && ask <= c.retail_price && ask <= last_sell);
            assert!(bid <= l.max_buy_price && bid >= c.feed_in_price && bid >= last_buy);
            last_sell = ask;
            last_buy = bid;
        }
        assert_eq!(last_sell, l.min_sell_price);
        assert_eq!(last_buy, l.max_buy_price);
        assert_eq!(
            ramp_price(&c, &l, Side::Sell, s, gate - window),
            c.retail_price
        );
    }
}
