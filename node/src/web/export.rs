//! Pure helpers behind the dashboard, statements and CSV downloads: aggregating per-minute
//! readings, a day's energy summary, CSV rendering (statements are in [`crate::ledger`]).

use crate::metering::{Minute, MinuteSum};
use crate::node::TradeView;
use serde::Serialize;

/// One aggregated step of readings: mean powers, registers at the step's end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// The step's start, UTC ms.
    pub t: u64,
    /// Mean grid power, W (positive import).
    pub grid_w: i64,
    /// Mean consumption, W.
    pub load_w: i64,
    /// Mean solar production, W.
    pub solar_w: i64,
    /// Mean battery power, W (positive charging).
    pub battery_w: i64,
    /// Import register at the step's end, Wh.
    pub import_wh: u64,
    /// Export register at the step's end, Wh.
    pub export_wh: u64,
}

/// Averages minutes into steps of `step_ms` aligned to `origin_ms` (a local midnight for
/// days, so days are the owner's days).
pub fn aggregate(minutes: &[Minute], step_ms: u64, origin_ms: u64) -> Vec<Step> {
    aggregate_sums(minutes.iter().map(MinuteSum::from), step_ms, origin_ms)
}

/// [`aggregate`] from sums of minutes in time order (single minutes, or the store's blocks
/// where each block lies within one step): the same steps as from the minutes themselves.
pub fn aggregate_sums(
    sums: impl IntoIterator<Item = MinuteSum>,
    step_ms: u64,
    origin_ms: u64,
) -> Vec<Step> {
    let step_ms = step_ms.max(60_000);
    let mut out: Vec<(Step, i64)> = Vec::new();
    for m in sums {
        if m.minutes == 0 {
            continue;
        }
        let start = m.start_ms - (m.start_ms.wrapping_sub(origin_ms) % step_ms);
        match out.last_mut() {
            Some((s, n)) if s.t == start => {
                s.grid_w += m.grid_w;
                s.load_w += m.load_w;
                s.solar_w += m.solar_w;
                s.battery_w += m.battery_w;
                s.import_wh = m.import_wh;
                s.export_wh = m.export_wh;
                *n += i64::from(m.minutes);
            }
            _ => out.push((
                Step {
                    t: start,
                    grid_w: m.grid_w,
                    load_w: m.load_w,
                    solar_w: m.solar_w,
                    battery_w: m.battery_w,
                    import_wh: m.import_wh,
                    export_wh: m.export_wh,
                },
                i64::from(m.minutes),
            )),
        }
    }
    out.into_iter()
        .map(|(mut s, n)| {
            s.grid_w /= n;
            s.load_w /= n;
            s.solar_w /= n;
            s.battery_w /= n;
            s
        })
        .collect()
}

/// A day's energy, from its minutes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DayEnergy {
    /// Imported from the grid, Wh.
    pub import_wh: u64,
    /// Exported to the grid, Wh.
    pub export_wh: u64,
    /// Produced by the panels, Wh.
    pub solar_wh: u64,
    /// Consumed by the home, Wh.
    pub load_wh: u64,
    /// The share of consumption not imported from the grid, 0 to 1.
    pub self_sufficiency: f64,
}

/// Sums a span of minutes: registers by difference (from the minute before the span when
/// given), production and consumption from the minute means.
pub fn day_energy(before: Option<&Minute>, minutes: &[Minute]) -> DayEnergy {
    let (Some(first), Some(last)) = (minutes.first(), minutes.last()) else {
        return DayEnergy::default();
    };
    let base = before.unwrap_or(first);
    let wh = |w: i64| -> u64 { u64::try_from(w.max(0)).unwrap_or(0) / 60 };
    let solar_wh = wh(minutes.iter().map(|m| i64::from(m.solar_w.max(0))).sum());
    let load_wh = wh(minutes.iter().map(|m| i64::from(m.load_w.max(0))).sum());
    let import_wh = last.import_wh.saturating_sub(base.import_wh);
    let export_wh = last.export_wh.saturating_sub(base.export_wh);
    let self_sufficiency = if load_wh == 0 {
        0.0
    } else {
        1.0 - (import_wh.min(load_wh) as f64 / load_wh as f64)
    };
    DayEnergy {
        import_wh,
        export_wh,
        solar_wh,
        load_wh,
        self_sufficiency,
    }
}

/// The value of a trade in milli-minor units: the settled amount when there is one, else the
/// agreed energy at the agreed price (`Wh × price per kWh / 1000`, rounded down).
pub fn trade_value(t: &TradeView) -> i64 {
    match t.amount {
        Some(a) => a.abs(),
        None => {
            i64::try_from(u128::from(t.energy_wh) * u128::from(t.price) / 1000).unwrap_or(i64::MAX)
        }
    }
}

/// What trading with neighbours saved compared with buying all from the utility at retail
/// and selling all to it at the feed-in tariff, in milli-minor units.
pub fn savings(trades: &[&TradeView], retail: u64, feed_in: u64) -> i64 {
    trades
        .iter()
        .map(|t| {
            let energy = t.delivered_wh.unwrap_or(t.energy_wh);
            let utility = if t.side == "sell" { feed_in } else { retail };
            let vs_utility =
                i64::try_from(u128::from(energy) * u128::from(utility) / 1000).unwrap_or(i64::MAX);
            let paid = trade_value(t);
            if t.side == "sell" {
                paid - vs_utility
            } else {
                vs_utility - paid
            }
        })
        .sum()
}

/// Quotes a CSV field when it needs it (RFC 4180), and defuses spreadsheet formulas.
fn field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) && s.parse::<f64>().is_err() {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Renders rows as CSV with a header line.
pub fn csv(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut out = header.join(",");
    out.push('\n');
    for r in rows {
        out.push_str(&r.iter().map(|f| field(f)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(t: u64, grid: i32, load: i32, solar: i32, imp: u64, exp: u64) -> Minute {
        Minute {
            minute_ms: t,
            grid_w: grid,
            load_w: load,
            solar_w: solar,
            battery_w: 0,
            import_wh: imp,
            export_wh: exp,
        }
    }

    #[test]
    fn minutes_aggregate_into_aligned_steps() {
        let m: Vec<Minute> = (0..30)
            .map(|i| minute(i * 60_000, 600, 600 + i as i32, 0, 1000 + i * 10, 5))
            .collect();
        let steps = aggregate(&m, 15 * 60_000, 0);
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].t, 0);
        assert_eq!(steps[1].t, 900_000);
        assert_eq!(steps[0].grid_w, 600);
        assert_eq!(steps[0].load_w, 607);
        assert_eq!(steps[1].import_wh, 1290);
    }

    #[test]
    fn a_days_energy_and_self_sufficiency() {
        // An hour of 1200 W load, 600 W of it from the panels, 600 W imported.
        let m: Vec<Minute> = (0..60)
            .map(|i| minute(i * 60_000, 600, 1200, 600, 10 * (i + 1), 0))
            .collect();
        let d = day_energy(Some(&minute(0, 0, 0, 0, 0, 0)), &m);
        assert_eq!(d.load_wh, 1200);
        assert_eq!(d.solar_wh, 600);
        assert_eq!(d.import_wh, 600);
        assert!((d.self_sufficiency - 0.5).abs() < 1e-9);
        assert_eq!(day_energy(None, &[]), DayEnergy::default());
    }

    fn trade(side: &'static str, cp: &str, slot_ms: u64, wh: u64, price: u64) -> TradeView {
        TradeView {
            taker: String::new(),
            nonce: 1,
            role: "maker",
            side,
            counterparty: cp[..4].to_owned(),
            counterparty_id: cp.to_owned(),
            slot_ms,
            energy_wh: wh,
            price,
            state: crate::market::TradeState::Agreed,
            settlement: None,
            delivered_wh: None,
            amount: None,
            signatures_verified: true,
            from_agreement: false,
            dispute: None,
            offer_maker: String::new(),
            offer_nonce: 1,
        }
    }

    #[test]
    fn savings_compare_with_the_utility_tariffs() {
        let ts = [trade("sell", "aaaa01", 1_782_043_200_000, 1000, 9_000)];
        // Selling 1 kWh at 9 ¢ instead of 4 ¢ feed-in saves 5 ¢ (5000 milli-cents).
        assert_eq!(savings(&[&ts[0]], 13_500, 4_000), 5_000);
        let bought = [trade("buy", "aaaa01", 1_782_043_200_000, 1000, 9_000)];
        // Buying it at 9 ¢ instead of 13.5 ¢ retail saves 4.5 ¢.
        assert_eq!(savings(&[&bought[0]], 13_500, 4_000), 4_500);
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let out = csv(
            &["a", "b"],
            vec![
                vec!["x,y".into(), "=cmd()".into()],
                vec!["-5".into(), "plain".into()],
            ],
        );
        assert_eq!(out, "a,b\n\"x,y\",'=cmd()\n-5,plain\n");
    }
}
