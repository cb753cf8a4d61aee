//! The short summary a home owner glances at: power now, today's energy and trades, and whether
//! the node is trading. `wattmesh status` prints it as a block of text and the optional OLED on
//! the meter (`display`) draws the same figures. [`build`] is pure; [`fetch`] asks the running
//! node for its inputs.

use crate::clock::ClockState;
use crate::market::TradeState;
use crate::node::{NodeHandle, Status, Stopped, TradeView};
use serde::{Deserialize, Serialize};

const DAY_MS: i64 = 86_400_000;

/// Whether and how the node trades right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TradingState {
    /// The clock is not synchronised: the node signs no offers or attestations.
    ClockUnsynced,
    /// No neighbour is connected.
    Offline,
    /// Connected, and the automatic trader is on.
    Auto,
    /// Connected; the automatic trader is off (trades are made by hand).
    Manual,
}

impl TradingState {
    /// A short label (fits the display's line).
    pub fn label(self) -> &'static str {
        match self {
            TradingState::ClockUnsynced => "CLOCK NOT SYNCED",
            TradingState::Offline => "OFFLINE",
            TradingState::Auto => "AUTO TRADING",
            TradingState::Manual => "MANUAL",
        }
    }
}

/// The summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// When, UTC ms (the node's clock).
    pub now_ms: u64,
    /// The owner's time zone, minutes from UTC (the trader's `utc_offset_minutes`): "today"
    /// starts at local midnight.
    pub utc_offset_minutes: i64,
    /// Whether a meter is configured.
    pub metered: bool,
    /// Grid power now, W: positive imports, negative exports.
    pub grid_w: i64,
    /// Solar production now, W.
    pub solar_w: i64,
    /// Grid energy imported since local midnight (or since the first reading today), Wh.
    pub today_import_wh: u64,
    /// Grid energy exported since local midnight, Wh.
    pub today_export_wh: u64,
    /// Energy sold in agreed trades for today's slots, Wh.
    pub today_sold_wh: u64,
    /// Energy bought in agreed trades for today's slots, Wh.
    pub today_bought_wh: u64,
    /// Agreed trades for today's slots.
    pub today_trades: usize,
    /// Connected neighbours.
    pub peers: usize,
    /// Offers in the book.
    pub offers: usize,
    /// Trading state.
    pub state: TradingState,
}

/// The UTC ms of local midnight at or before `now_ms`.
pub fn day_start_ms(now_ms: u64, utc_offset_minutes: i64) -> u64 {
    let off = utc_offset_minutes.saturating_mul(60_000);
    let local = (now_ms as i64).saturating_add(off);
    (local.div_euclid(DAY_MS) * DAY_MS - off).max(0) as u64
}

/// Builds the summary from the node's status, whether its trader is on, its first grid
/// registers today (import, export; `None` before the first reading of the day) and its trades.
pub fn build(
    status: &Status,
    trader_enabled: bool,
    utc_offset_minutes: i64,
    first_today: Option<(u64, u64)>,
    trades: &[TradeView],
) -> Summary {
    let m = &status.meter;
    let day = day_start_ms(status.now_ms, utc_offset_minutes);
    let (today_import_wh, today_export_wh) = match first_today {
        Some((i, e)) if m.enabled => (m.import_wh.saturating_sub(i), m.export_wh.saturating_sub(e)),
        _ => (0, 0),
    };
    let today: Vec<&TradeView> = trades
        .iter()
        .filter(|t| t.state == TradeState::Agreed && t.slot_ms >= day)
        .filter(|t| t.slot_ms < day + DAY_MS as u64)
        .collect();
    let sum = |side: &str| {
        today
            .iter()
            .filter(|t| t.side == side)
            .map(|t| t.energy_wh)
            .sum::<u64>()
    };
    let state = if status.clock != ClockState::Synced {
        TradingState::ClockUnsynced
    } else if status.peers.is_empty() {
        TradingState::Offline
    } else if trader_enabled {
        TradingState::Auto
    } else {
        TradingState::Manual
    };
    Summary {
        now_ms: status.now_ms,
        utc_offset_minutes,
        metered: m.enabled,
        grid_w: m.grid_w.round() as i64,
        solar_w: m.solar_w.round() as i64,
        today_import_wh,
        today_export_wh,
        today_sold_wh: sum("sell"),
        today_bought_wh: sum("buy"),
        today_trades: today.len(),
        peers: status.peers.len(),
        offers: status.offers,
        state,
    }
}

/// Asks the running node for everything [`build`] needs.
pub async fn fetch(node: &NodeHandle) -> Result<Summary, Stopped> {
    let status = node.status().await?;
    let trader = node.trader().await?;
    let offset = trader.limits.utc_offset_minutes;
    let day = day_start_ms(status.now_ms, offset);
    // The first reading of the day; an hour is plenty to find one after midnight or a start.
    let first = node
        .readings(day, status.now_ms.saturating_add(1))
        .await?
        .first()
        .map(|r| (r.import_wh, r.export_wh));
    let trades = node.trades().await?;
    Ok(build(
        &status,
        trader.limits.enabled,
        offset,
        first,
        &trades,
    ))
}

/// Watts as kilowatts with two decimals, without floating point ("1.23 kW").
pub fn kw(w: i64) -> String {
    let a = w.unsigned_abs();
    let hundredths = (a + 5) / 10;
    format!(
        "{}{}.{:02} kW",
        if w < 0 { "-" } else { "" },
        hundredths / 100,
        hundredths % 100
    )
}

/// Watt-hours as kilowatt-hours with one decimal ("12.3").
pub fn kwh(wh: u64) -> String {
    let tenths = (wh + 50) / 100;
    format!("{}.{}", tenths / 10, tenths % 10)
}

/// The local time of day, "HH:MM".
pub fn local_hhmm(now_ms: u64, utc_offset_minutes: i64) -> String {
    let local = (now_ms as i64).saturating_add(utc_offset_minutes.saturating_mul(60_000));
    let min = local.div_euclid(60_000).rem_euclid(24 * 60);
    format!("{:02}:{:02}", min / 60, min % 60)
}

/// The lines the display shows (at most 21 characters each, for a 6-pixel font on 128 pixels).
pub fn display_lines(s: &Summary) -> Vec<String> {
    let mut out = Vec::new();
    if s.metered {
        let (word, w) = if s.grid_w < 0 {
            ("EXPORT", -s.grid_w)
        } else {
            ("IMPORT", s.grid_w)
        };
        out.push(format!("{word} {:>14}", kw(w)));
        out.push(format!("Solar  {:>14}", kw(s.solar_w)));
        out.push(format!(
            "Today in {} out {}",
            kwh(s.today_import_wh),
            kwh(s.today_export_wh)
        ));
    } else {
        out.push("No meter".into());
        out.push(String::new());
        out.push(String::new());
    }
    out.push(format!(
        "Sold {} Bought {}",
        kwh(s.today_sold_wh),
        kwh(s.today_bought_wh)
    ));
    out.push(s.state.label().to_owned());
    out.push(format!(
        "{} {}p {}t {}o",
        local_hhmm(s.now_ms, s.utc_offset_minutes),
        s.peers,
        s.today_trades,
        s.offers
    ));
    out.into_iter()
        .map(|l| l.chars().take(LINE_CHARS).collect())
        .collect()
}

/// Characters per display line.
pub const LINE_CHARS: usize = 21;

/// The block `wattmesh status` prints first.
pub fn text_block(s: &Summary) -> String {
    let mut out = String::new();
    let now = local_hhmm(s.now_ms, s.utc_offset_minutes);
    if s.metered {
        let flow = if s.grid_w < 0 {
            format!("exporting {}", kw(-s.grid_w))
        } else {
            format!("importing {}", kw(s.grid_w))
        };
        out.push_str(&format!(
            "now          {flow}, solar {} ({now} local)\n",
            kw(s.solar_w)
        ));
        out.push_str(&format!(
            "today        imported {} kWh, exported {} kWh\n",
            kwh(s.today_import_wh),
            kwh(s.today_export_wh)
        ));
    } else {
        out.push_str(&format!("now          no meter ({now} local)\n"));
    }
    out.push_str(&format!(
        "traded today sold {} kWh, bought {} kWh in {} trades\n",
        kwh(s.today_sold_wh),
        kwh(s.today_bought_wh),
        s.today_trades
    ));
    let state = match s.state {
        TradingState::ClockUnsynced => {
            "NOT TRADING: the clock is not synchronised (no offers or attestations are signed)"
        }
        TradingState::Offline => "NOT TRADING: no neighbour connected",
        TradingState::Auto => "trading automatically",
        TradingState::Manual => "connected; the automatic trader is off (trade by hand)",
    };
    out.push_str(&format!(
        "trading      {state}; {} peers, {} offers in the book\n",
        s.peers, s.offers
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_start_at_local_midnight() {
        // 2026-06-01 05:59:00 UTC is 23:59 the day before in US Central (UTC-6).
        let t = 1_780_293_540_000;
        assert_eq!(local_hhmm(t, -360), "23:59");
        let start = day_start_ms(t, -360);
        assert_eq!(local_hhmm(start, -360), "00:00");
        assert!(t - start < DAY_MS as u64 && t >= start);
        assert_eq!(day_start_ms(t + 60_000, -360), t + 60_000);
        assert_eq!(day_start_ms(t, 0) % DAY_MS as u64, 0);
    }

    #[test]
    fn units_round_without_floats() {
        assert_eq!(kw(1234), "1.23 kW");
        assert_eq!(kw(1235), "1.24 kW");
        assert_eq!(kw(-40), "-0.04 kW");
        assert_eq!(kw(0), "0.00 kW");
        assert_eq!(kwh(12_349), "12.3");
        assert_eq!(kwh(12_350), "12.4");
        assert_eq!(kwh(0), "0.0");
    }
}
