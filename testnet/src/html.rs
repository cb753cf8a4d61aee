//! `report.html`: the run's figures and charts in one self-contained file (SVG drawn with
//! plotters; no scripts, nothing fetched), so it opens anywhere, offline.

use crate::run::Summary;
use plotters::prelude::*;
use std::fmt::Write as _;

const W: u32 = 760;
const H: u32 = 300;

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Hours of simulated time since the first minute.
fn hours(ms: u64, from: u64) -> f64 {
    ms.saturating_sub(from) as f64 / 3_600_000.0
}

type Drawn = Result<(), Box<dyn std::error::Error>>;

/// One of a minute's power figures.
type PowerOf = fn(&crate::run::PowerRow) -> i64;

fn power_chart(s: &Summary, out: &mut String) -> Drawn {
    let from = s.power.first().map(|p| p.minute_ms).unwrap_or(0);
    let x_end = s
        .power
        .last()
        .map(|p| hours(p.minute_ms, from))
        .unwrap_or(1.0)
        .max(0.1);
    let y_max = s
        .power
        .iter()
        .map(|p| p.import_w.max(p.export_w).max(p.solar_w).max(p.load_w))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        / 1000.0;
    let root = SVGBackend::with_string(out, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Neighbourhood power", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..x_end, 0.0..y_max * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("simulated hours")
        .y_desc("kW")
        .draw()?;
    let series: [(&str, RGBColor, PowerOf); 4] = [
        ("consumption", RGBColor(90, 90, 90), |p| p.load_w),
        ("solar", RGBColor(230, 160, 0), |p| p.solar_w),
        ("grid import", RGBColor(200, 40, 40), |p| p.import_w),
        ("grid export", RGBColor(30, 130, 60), |p| p.export_w),
    ];
    for (label, color, f) in series {
        chart
            .draw_series(LineSeries::new(
                s.power
                    .iter()
                    .map(|p| (hours(p.minute_ms, from), f(p) as f64 / 1000.0)),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn trades_chart(s: &Summary, out: &mut String) -> Drawn {
    let from = s
        .power
        .first()
        .map(|p| p.minute_ms)
        .unwrap_or_else(|| s.trades_list.first().map(|t| t.slot_ms).unwrap_or(0));
    let mut per_slot: std::collections::BTreeMap<u64, u64> = Default::default();
    for t in &s.trades_list {
        *per_slot.entry(t.slot_ms).or_default() += t.energy_wh;
    }
    let x_end = per_slot
        .keys()
        .last()
        .map(|&k| hours(k, from))
        .unwrap_or(1.0)
        .max(0.1)
        * 1.05;
    let y_max = per_slot.values().copied().max().unwrap_or(1).max(1) as f64;
    let root = SVGBackend::with_string(out, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Energy traded per slot", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..x_end, 0.0..y_max * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("slot start, simulated hours")
        .y_desc("Wh")
        .draw()?;
    let blue = RGBColor(40, 90, 200);
    chart.draw_series(per_slot.iter().map(|(&slot, &wh)| {
        let x = hours(slot, from);
        Rectangle::new([(x, 0.0), (x + x_end / 80.0, wh as f64)], blue.filled())
    }))?;
    root.present()?;
    Ok(())
}

fn prices_chart(s: &Summary, out: &mut String) -> Drawn {
    let from = s
        .power
        .first()
        .map(|p| p.minute_ms)
        .unwrap_or_else(|| s.trades_list.first().map(|t| t.slot_ms).unwrap_or(0));
    let x_end = s
        .trades_list
        .iter()
        .map(|t| hours(t.slot_ms, from))
        .fold(0.1, f64::max)
        * 1.05;
    let cents = |m: u64| m as f64 / 1000.0;
    let lo = cents(s.tariffs.feed_in_millicents_per_kwh);
    let hi = cents(s.tariffs.retail_millicents_per_kwh);
    let root = SVGBackend::with_string(out, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Trade prices against the band", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..x_end, (lo - 1.0).max(0.0)..hi + 1.0)?;
    chart
        .configure_mesh()
        .x_desc("slot start, simulated hours")
        .y_desc("cents per kWh")
        .draw()?;
    for (label, y, color) in [
        ("retail tariff", hi, RGBColor(200, 40, 40)),
        ("feed-in tariff", lo, RGBColor(30, 130, 60)),
    ] {
        chart
            .draw_series(LineSeries::new(vec![(0.0, y), (x_end, y)], color))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    let blue = RGBColor(40, 90, 200);
    chart
        .draw_series(s.trades_list.iter().map(|t| {
            Circle::new(
                (hours(t.slot_ms, from), cents(t.price_millicents_per_kwh)),
                3,
                blue.filled(),
            )
        }))?
        .label("trade")
        .legend(move |(x, y)| Circle::new((x + 9, y), 3, blue.filled()));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn latency_chart(s: &Summary, out: &mut String) -> Drawn {
    let l = &s.latency_ms;
    let x_max = l
        .offer_propagation
        .samples_us
        .iter()
        .chain(&l.trade_agreement.samples_us)
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64
        / 1000.0;
    let root = SVGBackend::with_string(out, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency distributions (wall clock)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..x_max * 1.05, 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("ms")
        .y_desc("share at or below")
        .draw()?;
    for (label, samples, color) in [
        (
            "offer propagation",
            &l.offer_propagation.samples_us,
            RGBColor(40, 90, 200),
        ),
        (
            "trade agreement",
            &l.trade_agreement.samples_us,
            RGBColor(200, 110, 0),
        ),
    ] {
        let n = samples.len().max(1) as f64;
        chart
            .draw_series(LineSeries::new(
                samples
                    .iter()
                    .enumerate()
                    .map(|(k, &v)| (v as f64 / 1000.0, (k + 1) as f64 / n)),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

fn chart(out: &mut String, draw: fn(&Summary, &mut String) -> Drawn, s: &Summary) {
    let mut svg = String::new();
    match draw(s, &mut svg) {
        Ok(()) => out.push_str(&svg),
        Err(e) => {
            let _ = write!(out, "<p>(chart not drawn: {})</p>", esc(&e.to_string()));
        }
    }
}

fn row(out: &mut String, k: &str, v: impl std::fmt::Display) {
    let _ = write!(
        out,
        "<tr><th>{}</th><td>{}</td></tr>",
        esc(k),
        esc(&v.to_string())
    );
}

/// The report as one HTML page.
pub fn render(s: &Summary) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width\"><title>wattmesh testnet: {name}</title><style>\
         body{{font:15px/1.4 system-ui,sans-serif;max-width:800px;margin:1em auto;padding:0 1em;color:#222}}\
         table{{border-collapse:collapse;margin:.5em 0}}th,td{{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}}\
         td{{font-variant-numeric:tabular-nums}}.bad{{color:#b00}}.ok{{color:#070}}svg{{max-width:100%;height:auto}}\
         </style><h1>wattmesh testnet: {name}</h1>",
        name = esc(&s.scenario)
    );
    if s.check_failures.is_empty() {
        h.push_str("<p class=\"ok\">Every invariant holds.</p>");
    } else {
        h.push_str("<p class=\"bad\">Invariants broken:</p><ul class=\"bad\">");
        for f in &s.check_failures {
            let _ = write!(h, "<li>{}</li>", esc(f));
        }
        h.push_str("</ul>");
    }
    h.push_str("<h2>Run</h2><table>");
    row(&mut h, "homes", s.homes);
    row(&mut h, "network", &s.network);
    row(&mut h, "speed (simulated s per s)", s.speed);
    row(
        &mut h,
        "simulated / wall seconds",
        format!("{} / {}", s.simulated_seconds, s.wall_seconds),
    );
    row(&mut h, "slots", s.slots);
    row(
        &mut h,
        "trades (settled, disputed)",
        format!("{} ({}, {})", s.trades, s.settled_trades, s.disputed_trades),
    );
    row(
        &mut h,
        "energy agreed / delivered, Wh",
        format!("{} / {}", s.energy_traded_wh, s.energy_delivered_wh),
    );
    row(&mut h, "oversold offers", s.oversold_offers);
    row(&mut h, "mismatched trades", s.mismatched_trades);
    row(&mut h, "unsettled trades", s.unsettled_trades);
    row(&mut h, "crashed homes", s.crashed_homes.join(", "));
    h.push_str("</table><h2>Key figures</h2><table>");
    let k = &s.kpis;
    row(
        &mut h,
        "self-sufficiency",
        format!("{:.1} %", k.self_sufficiency * 100.0),
    );
    row(
        &mut h,
        "local energy share of imports",
        format!("{:.1} %", k.local_energy_share * 100.0),
    );
    row(
        &mut h,
        "savings against the grid",
        format!("${:.2}", k.savings_vs_grid as f64 / 100_000.0),
    );
    row(
        &mut h,
        "market efficiency (realised / central clearing)",
        match k.market_efficiency {
            Some(e) => format!("{:.3}", e),
            None => "n/a".into(),
        },
    );
    let l = &s.latency_ms;
    row(
        &mut h,
        "offer propagation p50 / p99, ms",
        format!(
            "{} / {} ({} offers, {} incomplete)",
            l.offer_propagation.p50,
            l.offer_propagation.p99,
            l.offer_propagation.count,
            l.offer_propagation.incomplete
        ),
    );
    row(
        &mut h,
        "trade agreement p50 / p99, ms",
        format!(
            "{:.2} / {:.2} ({} trades)",
            l.trade_agreement.p50_us as f64 / 1000.0,
            l.trade_agreement.p99_us as f64 / 1000.0,
            l.trade_agreement.count
        ),
    );
    h.push_str("</table><h2>Charts</h2>");
    chart(&mut h, power_chart, s);
    chart(&mut h, trades_chart, s);
    chart(&mut h, prices_chart, s);
    chart(&mut h, latency_chart, s);
    h.push_str("<h2>Faults</h2><table><tr><th>kind</th><th>home</th><th>detail</th><th>at (wall s)</th><th>for (s)</th></tr>");
    for f in &s.faults {
        let _ = write!(
            h,
            "<tr><td>{:?}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{}</td></tr>",
            f.kind,
            esc(&f.home),
            esc(&f.detail),
            f.at_wall_s,
            f.for_s
        );
    }
    let _ = write!(
        h,
        "</table><p>Hostile home: {} messages sent, {} accepted by a healthy home, {} rejected in total.</p>",
        s.hostile.sent, s.hostile.accepted, s.hostile.rejected_by_homes
    );
    h.push_str("<h2>Homes</h2><table><tr><th>home</th><th>peak RSS, MB</th><th>CPU, s</th></tr>");
    for n in &s.nodes {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            esc(&n.home),
            n.rss_kb_max as f64 / 1024.0,
            n.cpu_seconds
        );
    }
    h.push_str(
        "</table><p>Every figure, every order and every trade are in report.json.</p></html>\n",
    );
    h
}
