//! The automatic trader's log in plain words: what it did for a slot and why, with the
//! figures (energy, prices, times in the owner's time zone) it decided on.

use super::{Action, Hold, Why};
use wattmesh_protocol::offer::Side;

/// What the words depend on besides the action.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// ISO 4217 currency (prices are shown in its minor unit per kWh).
    pub currency: String,
    /// The owner's time zone as minutes from UTC (the trader's own setting).
    pub utc_offset_minutes: i64,
    /// The slot length, minutes.
    pub slot_minutes: u64,
}

/// One log entry in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// What it did: "Offered 300 Wh for sale at 12.0 ¢/kWh for 14:00–14:15".
    pub what: String,
    /// Why, with the figures.
    pub why: String,
}

/// The minor unit's symbol for a currency (as the web UI shows it).
pub fn minor_unit(currency: &str) -> &'static str {
    match currency {
        "EUR" | "AUD" | "NZD" | "ZAR" => "c",
        "GBP" => "p",
        "CHF" => "Rp",
        _ => "¢",
    }
}

/// Thousandths to a decimal string with at least one decimal: 9000 -> "9.0", 9250 -> "9.25".
fn milli(n: u64) -> String {
    let mut frac = format!("{:03}", n % 1000);
    while frac.len() > 1 && frac.ends_with('0') {
        frac.pop();
    }
    format!("{}.{frac}", n / 1000)
}

/// An energy: "300 Wh", "1.25 kWh".
pub fn energy(wh: u64) -> String {
    if wh < 1000 {
        format!("{wh} Wh")
    } else {
        format!("{} kWh", milli(wh))
    }
}

impl Ctx {
    /// A price per kWh: "9.0 ¢/kWh".
    pub fn price(&self, p: u64) -> String {
        format!("{} {}/kWh", milli(p), minor_unit(&self.currency))
    }

    /// A price where "per kWh" is understood: "9.0 ¢".
    fn short_price(&self, p: u64) -> String {
        format!("{} {}", milli(p), minor_unit(&self.currency))
    }

    /// A time of day in the owner's time zone: "14:00".
    pub fn clock(&self, utc_ms: u64) -> String {
        let min = (utc_ms / 60_000) as i64 + self.utc_offset_minutes;
        let m = min.rem_euclid(24 * 60);
        format!("{:02}:{:02}", m / 60, m % 60)
    }

    /// A slot: "14:00–14:15".
    pub fn slot(&self, slot_ms: u64) -> String {
        self.span(slot_ms, slot_ms)
    }

    /// From the start of one slot to the end of another: "02:00–03:15".
    pub fn span(&self, first_ms: u64, last_ms: u64) -> String {
        format!(
            "{}–{}",
            self.clock(first_ms),
            self.clock(last_ms + self.slot_minutes * 60_000)
        )
    }
}

fn offer_word(side: Side) -> &'static str {
    match side {
        Side::Sell => "sell offer",
        Side::Buy => "bid",
    }
}

/// "forecast surplus 420 Wh, keeping 50 Wh back, 100 Wh already sold or being agreed".
fn need(side: Side, w: &Why) -> String {
    let mut s = match side {
        Side::Sell => {
            let mut s = format!("forecast surplus {}", energy(w.forecast_wh.max(0) as u64));
            if w.keep_back_wh > 0 {
                s += &format!(", keeping {} back", energy(w.keep_back_wh));
            }
            let surplus = (w.forecast_wh.max(0) as u64).saturating_sub(w.keep_back_wh);
            if surplus > w.max_wh {
                s += &format!(", selling at most {} per slot", energy(w.max_wh));
            }
            s
        }
        Side::Buy => {
            let mut s = format!("forecast deficit {}", energy(w.forecast_wh.unsigned_abs()));
            if w.forecast_wh.unsigned_abs() > w.max_wh {
                s += &format!(", buying at most {} per slot", energy(w.max_wh));
            }
            s
        }
    };
    if w.done_wh > 0 {
        s += &format!(
            ", {} already {} or being agreed",
            energy(w.done_wh),
            if side == Side::Sell { "sold" } else { "bought" }
        );
    }
    s
}

/// "asking 12.0 ¢ now, stepping down to your floor of 8.0 ¢ by 13:59".
fn ramp(side: Side, w: &Why, t: &Ctx) -> String {
    let (verb, dir, limit) = match side {
        Side::Sell => ("asking", "down", "floor"),
        Side::Buy => ("bidding", "up", "ceiling"),
    };
    if w.ramp_price == w.limit_price {
        format!(
            "{verb} your {limit} of {} until trading closes at {}",
            t.short_price(w.limit_price),
            t.clock(w.gate_ms)
        )
    } else {
        format!(
            "{verb} {} now, stepping {dir} to your {limit} of {} by {}",
            t.short_price(w.ramp_price),
            t.short_price(w.limit_price),
            t.clock(w.gate_ms)
        )
    }
}

/// The log entry for one action (`slots` > 1: a hold repeated for that many consecutive
/// slots, from `first_slot_ms` to the action's slot).
pub fn describe(a: &Action, t: &Ctx, slots: u32, first_slot_ms: u64) -> Text {
    match a {
        Action::Post {
            side,
            slot_ms,
            quantity_wh,
            price,
            why,
        } => {
            let what = match side {
                Side::Sell => format!(
                    "Offered {} for sale at {} for {}",
                    energy(*quantity_wh),
                    t.price(*price),
                    t.slot(*slot_ms)
                ),
                Side::Buy => format!(
                    "Bid for {} at {} for {}",
                    energy(*quantity_wh),
                    t.price(*price),
                    t.slot(*slot_ms)
                ),
            };
            Text {
                what,
                why: format!("{}; {}", need(*side, why), ramp(*side, why, t)),
            }
        }
        Action::Resize {
            side,
            slot_ms,
            was_wh,
            was_price,
            quantity_wh,
            price,
            why,
            ..
        } => {
            let word = offer_word(*side);
            let slot = t.slot(*slot_ms);
            let was = format!("{} at {}", energy(*was_wh), t.price(*was_price));
            if *quantity_wh == 0 {
                let what = if why.duplicate {
                    format!("Withdrew a second {word} for {slot} ({was})")
                } else {
                    format!("Withdrew the {word} for {slot} ({was})")
                };
                let reason = if why.duplicate {
                    "one offer per slot is enough".to_owned()
                } else if why.taking_wh > 0 {
                    format!(
                        "its energy goes to a neighbour's {} taken at a better price instead; {}",
                        if *side == Side::Sell { "bid" } else { "offer" },
                        need(*side, why)
                    )
                } else {
                    format!("nothing is left to trade: {}", need(*side, why))
                };
                return Text { what, why: reason };
            }
            if quantity_wh == was_wh {
                let verb = if price < was_price {
                    "Lowered"
                } else {
                    "Raised"
                };
                let none = match side {
                    Side::Sell => "no bid has met the asking price yet",
                    Side::Buy => "no sell offer has met the bid yet",
                };
                return Text {
                    what: format!(
                        "{verb} the {word} of {} for {slot} to {} (was {})",
                        energy(*quantity_wh),
                        t.price(*price),
                        t.short_price(*was_price)
                    ),
                    why: format!("{none}; {}", ramp(*side, why, t)),
                };
            }
            Text {
                what: format!(
                    "Changed the {word} for {slot} to {} at {} (was {was})",
                    energy(*quantity_wh),
                    t.price(*price)
                ),
                why: format!("{}; {}", need(*side, why), ramp(*side, why, t)),
            }
        }
        Action::Take {
            offer,
            side,
            slot_ms,
            energy_wh,
            price,
            why,
        } => {
            let who = offer.maker.short();
            let (what, meets) = match side {
                Side::Sell => (
                    format!(
                        "Took {who}'s bid: selling {} at {} for {}",
                        energy(*energy_wh),
                        t.price(*price),
                        t.slot(*slot_ms)
                    ),
                    format!(
                        "their {} meets the asking price now, {} (your floor is {})",
                        t.short_price(*price),
                        t.short_price(why.ramp_price),
                        t.short_price(why.limit_price)
                    ),
                ),
                Side::Buy => (
                    format!(
                        "Took {who}'s offer: buying {} at {} for {}",
                        energy(*energy_wh),
                        t.price(*price),
                        t.slot(*slot_ms)
                    ),
                    format!(
                        "their {} is within the bid now, {} (your ceiling is {})",
                        t.short_price(*price),
                        t.short_price(why.ramp_price),
                        t.short_price(why.limit_price)
                    ),
                ),
            };
            Text {
                what,
                why: format!(
                    "{}; {meets}; agreed once they countersign",
                    need(*side, why)
                ),
            }
        }
        Action::Hold { slot_ms, why } => hold(*slot_ms, why, t, slots, first_slot_ms),
    }
}

fn hold(slot_ms: u64, h: &Hold, t: &Ctx, slots: u32, first_slot_ms: u64) -> Text {
    let nothing = if slots > 1 {
        format!(
            "Did nothing for {slots} slots, {}",
            t.span(first_slot_ms, slot_ms)
        )
    } else {
        format!("Did nothing for {}", t.slot(slot_ms))
    };
    match h {
        Hold::OutsideHours {
            from_hour, to_hour, ..
        } => Text {
            what: nothing,
            why: format!("outside your trading hours, {from_hour:02}:00–{to_hour:02}:00"),
        },
        Hold::NoSurplus {
            forecast_wh,
            keep_back_wh,
        } => Text {
            what: nothing,
            why: if *forecast_wh <= 0 {
                "no forecast surplus or deficit".to_owned()
            } else {
                format!(
                    "forecast surplus {} is no more than the {} you keep back",
                    energy(*forecast_wh as u64),
                    energy(*keep_back_wh)
                )
            },
        },
        Hold::SellingOff { forecast_wh } => Text {
            what: nothing,
            why: format!(
                "forecast surplus {}, but selling is switched off",
                energy(forecast_wh.max(&0).unsigned_abs())
            ),
        },
        Hold::BuyingOff { forecast_wh } => Text {
            what: nothing,
            why: format!(
                "forecast deficit {}, but buying is switched off",
                energy(forecast_wh.unsigned_abs())
            ),
        },
        Hold::LimitReached {
            side,
            forecast_wh,
            done_wh,
            wanted_wh,
            max_wh,
            keep_back_wh,
        } => {
            let (verb, what_word) = match side {
                Side::Sell => ("sold", "surplus"),
                Side::Buy => ("bought", "deficit"),
            };
            let need = match side {
                Side::Sell => (forecast_wh.max(&0).unsigned_abs()).saturating_sub(*keep_back_wh),
                Side::Buy => forecast_wh.unsigned_abs(),
            };
            let why = if *max_wh == 0 {
                format!(
                    "your most to {} per slot is 0 Wh",
                    if *side == Side::Sell { "sell" } else { "buy" }
                )
            } else if need > *max_wh && wanted_wh == max_wh {
                format!(
                    "{} already {verb} or being agreed, your most per slot (forecast {what_word} {})",
                    energy(*done_wh),
                    energy(forecast_wh.unsigned_abs())
                )
            } else if *side == Side::Sell && *keep_back_wh > 0 {
                format!(
                    "{} already {verb} or being agreed: all of the forecast surplus {} less the {} you keep back",
                    energy(*done_wh),
                    energy(forecast_wh.unsigned_abs()),
                    energy(*keep_back_wh)
                )
            } else {
                format!(
                    "{} already {verb} or being agreed: all of the forecast {what_word} {}",
                    energy(*done_wh),
                    energy(forecast_wh.unsigned_abs())
                )
            };
            Text { what: nothing, why }
        }
        Hold::Waiting {
            side,
            offer_wh,
            price,
            limit_price,
            best,
            gate_ms,
        } => {
            let what = format!(
                "Kept the {} of {} at {} for {}",
                offer_word(*side),
                energy(*offer_wh),
                t.price(*price),
                t.slot(slot_ms)
            );
            let (best_word, limit_word, dir) = match side {
                Side::Sell => ("the best bid", "floor", "down"),
                Side::Buy => ("the cheapest sell offer", "ceiling", "up"),
            };
            let why = match best {
                None => match side {
                    Side::Sell => "no neighbour is bidding for this slot yet".to_owned(),
                    Side::Buy => "no neighbour is selling for this slot yet".to_owned(),
                },
                Some((p, who)) => {
                    let beyond_limit = match side {
                        Side::Sell => p < limit_price,
                        Side::Buy => p > limit_price,
                    };
                    let beyond_now = match side {
                        Side::Sell => p < price,
                        Side::Buy => p > price,
                    };
                    let theirs = format!("{best_word}, {} from {}", t.short_price(*p), who.short());
                    if beyond_limit {
                        format!(
                            "{theirs}, is {} your {limit_word} of {}",
                            if *side == Side::Sell {
                                "below"
                            } else {
                                "above"
                            },
                            t.short_price(*limit_price)
                        )
                    } else if beyond_now {
                        format!(
                            "{theirs}, is {} the price now; the price steps {dir} to your {limit_word} of {} by {}",
                            if *side == Side::Sell {
                                "below"
                            } else {
                                "above"
                            },
                            t.short_price(*limit_price),
                            t.clock(*gate_ms)
                        )
                    } else {
                        format!("{theirs}, needs a larger fill than is left to trade")
                    }
                }
            };
            Text { what, why }
        }
    }
}

#[cfg(test)]
mod tests;
