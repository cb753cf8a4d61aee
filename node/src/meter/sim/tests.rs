//! Tests of the simulated meter: energy at named places and dates, consumption totals, and
//! that every value depends on (seed, home, time) alone.

use super::calendar::{DAY_MS, Date, DstRule, TimeZone};
use super::weather::{Climate, Regime, WeatherMode};
use super::*;

const MINUTE_MS: i64 = 60_000;

fn date(y: i32, m: u32, d: u32) -> Date {
    Date::new(y, m, d).unwrap()
}

/// A clear-sky home with the default 6 kWp array (south, 30°) at a place.
fn place(lat: f64, lon: f64, elevation_m: f64, tz: TimeZone, climate: Climate) -> SimConfig {
    SimConfig {
        location: Location {
            latitude_deg: lat,
            longitude_deg: lon,
            elevation_m,
            time_zone: tz,
        },
        climate,
        weather: WeatherMode::ClearSky,
        ..SimConfig::default()
    }
}

fn ames() -> SimConfig {
    place(
        42.03,
        -93.62,
        290.0,
        TimeZone::AMERICA_CHICAGO,
        Climate::default(),
    )
}

/// Phoenix, Arizona: no daylight saving; NOAA normals about 13 °C in January, 35 °C in July.
fn phoenix() -> SimConfig {
    let tz = TimeZone {
        standard_offset_minutes: -420,
        dst: DstRule::None,
    };
    let climate = Climate {
        annual_mean_c: 24.0,
        annual_amplitude_c: 10.5,
        diurnal_amplitude_c: 7.0,
        ..Climate::default()
    };
    place(33.45, -112.07, 340.0, tz, climate)
}

/// Seattle, Washington: NOAA normals about 5 °C in January, 19 °C in July.
fn seattle() -> SimConfig {
    let tz = TimeZone {
        standard_offset_minutes: -480,
        dst: DstRule::UnitedStates,
    };
    let climate = Climate {
        annual_mean_c: 11.5,
        annual_amplitude_c: 7.0,
        diurnal_amplitude_c: 5.0,
        ..Climate::default()
    };
    place(47.61, -122.33, 50.0, tz, climate)
}

fn day_bounds(cfg: &SimConfig, d: Date) -> (i64, i64) {
    let tz = cfg.location.time_zone;
    let day = d.days_since_epoch();
    (tz.midnight_utc_ms(day), tz.midnight_utc_ms(day + 1))
}

/// The array's energy over the local day, kWh, from one-minute midpoint samples.
fn daily_pv_kwh(cfg: &SimConfig, d: Date) -> f64 {
    let home = SimHome::new(cfg.clone(), 1).unwrap();
    let (start, end) = day_bounds(cfg, d);
    (start..end)
        .step_by(MINUTE_MS as usize)
        .map(|t| home.instant(t + MINUTE_MS / 2).production_w)
        .sum::<f64>()
        / 60.0
        / 1000.0
}

/// The household's consumption over the local day, kWh.
fn daily_load_kwh(home: &SimHome, d: Date) -> f64 {
    let (start, end) = day_bounds(home.config(), d);
    (start..end)
        .step_by(MINUTE_MS as usize)
        .map(|t| home.instant(t + MINUTE_MS / 2).load_w)
        .sum::<f64>()
        / 60.0
        / 1000.0
}

/// Clear-day energy of a 6 kWp array, south, 30° tilt, 0.86 system derate, −0.4 %/°C.
///
/// The ranges come from an independent model: pvlib 0.16.1 (Sandia's Python library), with
/// the Ineichen–Perez clear sky and its Linke-turbidity climatology, isotropic transposition
/// and the same derate and cell-temperature model, gives (`sim/pvlib_crosscheck.py`):
///
/// | place | 21 Dec | 20 Mar | 21 Jun |
/// | --- | --- | --- | --- |
/// | Ames | 22.1 | 34.8 | 35.0 |
/// | Phoenix | 26.8 | 34.8 | 32.6 |
/// | Seattle | 16.9 | 31.3 | 37.1 |
///
/// (pvlib's Haurwitz sky with the Erbs split gives 20.0 / 35.1 / 38.2 for Ames.) We accept ±15 % around the
/// Ineichen figures for Ames, and require the orderings that geometry and climate dictate:
/// in December, Phoenix's noon sun stands 33° high and Seattle's 19° over a day 1.5 hours
/// shorter, so Phoenix yields at least 40 % more; at the equinox Phoenix still wins; at the
/// June solstice Seattle's 16-hour day and cool cells beat Phoenix's heat. A clear December
/// day is well above the 8–20 kWh one might guess: a 30° tilt faces the low winter sun almost
/// squarely, and cold cells gain a few per cent.
#[test]
fn clear_day_pv_energy_at_named_places() {
    let june = daily_pv_kwh(&ames(), date(2025, 6, 21));
    let december = daily_pv_kwh(&ames(), date(2025, 12, 21));
    let march = daily_pv_kwh(&ames(), date(2025, 3, 20));
    eprintln!(
        "Ames clear-sky PV, 6 kWp south 30°: 21 Jun {june:.1} kWh, 20 Mar {march:.1} kWh, 21 Dec {december:.1} kWh"
    );
    assert!((29.8..=40.2).contains(&june), "Ames 21 June: {june:.1} kWh");
    assert!(
        (29.5..=40.0).contains(&march),
        "Ames 20 March: {march:.1} kWh"
    );
    assert!(
        (18.8..=25.4).contains(&december),
        "Ames 21 December: {december:.1} kWh"
    );

    let mut table = Vec::new();
    for d in [date(2025, 12, 21), date(2025, 3, 20), date(2025, 6, 21)] {
        let phx = daily_pv_kwh(&phoenix(), d);
        let sea = daily_pv_kwh(&seattle(), d);
        eprintln!("{d}: Phoenix {phx:.1} kWh, Seattle {sea:.1} kWh");
        table.push((phx, sea));
    }
    let (phx_dec, sea_dec) = table[0];
    assert!(
        phx_dec > 1.4 * sea_dec,
        "December: Phoenix {phx_dec:.1}, Seattle {sea_dec:.1}"
    );
    let (phx_mar, sea_mar) = table[1];
    assert!(
        phx_mar > sea_mar,
        "March: Phoenix {phx_mar:.1}, Seattle {sea_mar:.1}"
    );
    let (phx_jun, sea_jun) = table[2];
    assert!(
        sea_jun > phx_jun,
        "June: Phoenix {phx_jun:.1}, Seattle {sea_jun:.1}"
    );
}

#[test]
fn no_sun_no_power_and_peak_near_rating() {
    let cfg = ames();
    let home = SimHome::new(cfg.clone(), 1).unwrap();
    let (start, end) = day_bounds(&cfg, date(2025, 6, 21));
    let mut peak: f64 = 0.0;
    for t in (start..end).step_by(MINUTE_MS as usize) {
        let p = home.instant(t).production_w;
        let sun = solar::sun_position(t, 42.03, -93.62);
        if sun.zenith_deg >= 90.0 {
            assert_eq!(p, 0.0);
        }
        peak = peak.max(p);
    }
    // A 6 kWp array peaks near 1 kW/m² times its derates: well under 6 kW, well over 4 kW.
    assert!(peak > 4_000.0 && peak < 6_000.0, "peak {peak:.0} W");
}

/// Household consumption: the seeded total of a week is within ±10 % of what the settings
/// say for that week (the configured annual mean times that week's heating, cooling and
/// weekend factors), in every season. In the weeks whose seasonal factor is within 5 % of one
/// (early June, early December for Ames), that is within ±10 % of the configured daily total
/// itself; and over a year the mean day is within ±3 % of it. (Spring and autumn weeks sit
/// about 10 % below the annual mean, July's about 20 % above, as Iowa's monthly bills do.)
#[test]
fn a_week_of_consumption_averages_its_configured_daily_total() {
    let cfg = SimConfig::default();
    let configured = cfg.load.daily_kwh;
    for home_id in [1u64, 2, 3] {
        let home = SimHome::new(cfg.clone(), home_id).unwrap();
        // Mondays through the seasons of 2025.
        for monday in [
            date(2025, 1, 13),
            date(2025, 4, 14),
            date(2025, 6, 9),
            date(2025, 7, 14),
            date(2025, 10, 13),
            date(2025, 12, 8),
        ] {
            let days: Vec<Date> = (0..7)
                .map(|k| Date::from_days_since_epoch(monday.days_since_epoch() + k))
                .collect();
            let measured = days.iter().map(|d| daily_load_kwh(&home, *d)).sum::<f64>() / 7.0;
            let expected = days
                .iter()
                .map(|d| home.household().expected_daily_kwh(*d))
                .sum::<f64>()
                / 7.0;
            eprintln!(
                "home {home_id}, week of {monday}: {measured:.2} kWh/day, expected {expected:.2}, configured {configured}"
            );
            assert!(
                (measured / expected - 1.0).abs() < 0.10,
                "home {home_id} week of {monday}: {measured:.2} vs {expected:.2}"
            );
            if monday.month == 6 || monday.month == 12 {
                assert!(
                    (expected / configured - 1.0).abs() < 0.05,
                    "{monday}: {expected:.2}"
                );
                assert!(
                    (measured / configured - 1.0).abs() < 0.10,
                    "home {home_id} week of {monday}: {measured:.2} vs configured {configured}"
                );
            }
        }
    }
    let home = SimHome::new(cfg.clone(), 1).unwrap();
    let jan1 = date(2025, 1, 1).days_since_epoch();
    let year: f64 = (0..365)
        .map(|k| daily_load_kwh(&home, Date::from_days_since_epoch(jan1 + k)))
        .sum::<f64>()
        / 365.0;
    eprintln!("home 1, 2025: {year:.2} kWh/day, configured {configured}");
    assert!(
        (year / configured - 1.0).abs() < 0.03,
        "year mean {year:.2}"
    );
    // Summer air conditioning makes July the heaviest month in Iowa.
    let july = home.household().expected_daily_kwh(date(2025, 7, 20));
    let april = home.household().expected_daily_kwh(date(2025, 4, 20));
    assert!(july > 1.15 * april, "July {july:.1}, April {april:.1}");
}

/// Hourly means over the spring's weekdays and weekend days: the evening peak stands well
/// above the night, the morning bump above the night, and weekends are busier at late morning.
#[test]
fn daily_shape_has_peaks_and_weekends_differ() {
    let cfg = SimConfig::default();
    let home = SimHome::new(cfg.clone(), 4).unwrap();
    let tz = cfg.location.time_zone;
    // Per hour of the day: total watts over all minutes, and how many minutes.
    let mut weekday = [(0.0f64, 0u32); 24];
    let mut weekend = [(0.0f64, 0u32); 24];
    let first = date(2025, 4, 1).days_since_epoch();
    for day in first..first + 56 {
        let d = Date::from_days_since_epoch(day);
        let start = tz.midnight_utc_ms(day);
        let hours = if d.is_weekend() {
            &mut weekend
        } else {
            &mut weekday
        };
        for m in 0..24 * 60 {
            let p = home.instant(start + m * MINUTE_MS).load_w;
            let slot = &mut hours[(m / 60) as usize];
            slot.0 += p;
            slot.1 += 1;
        }
    }
    let mean = |a: &[(f64, u32); 24], hours: std::ops::Range<usize>| {
        let (sum, n) = a[hours]
            .iter()
            .fold((0.0, 0), |(s, n), (x, k)| (s + x, n + k));
        sum / f64::from(n)
    };
    let night = mean(&weekday, 2..5);
    let morning = mean(&weekday, 6..8);
    let evening = mean(&weekday, 18..21);
    let wd_late_morning = mean(&weekday, 10..12);
    let we_late_morning = mean(&weekend, 10..12);
    eprintln!(
        "April–May weekdays (W): 02–05 {night:.0}, 06–08 {morning:.0}, 18–21 {evening:.0}, 10–12 {wd_late_morning:.0}; weekends 10–12 {we_late_morning:.0}"
    );
    assert!(evening > 2.0 * night);
    assert!(morning > 1.3 * night);
    assert!(we_late_morning > 1.2 * wd_late_morning);
}

/// A home with a battery and seeded clouds, over a few days.
fn busy_home() -> SimConfig {
    SimConfig {
        seed: 42,
        battery: Some(BatteryConfig::default()),
        registers_from: date(2025, 6, 1),
        ..SimConfig::default()
    }
}

/// The same (seed, home, time) gives the same state however the home was run: polled in
/// order, polled backwards, or started fresh at a late time (a restart after a crash, or after
/// being frozen for days).
#[test]
fn same_seed_home_and_time_give_the_same_value_in_any_order_and_after_restart() {
    let cfg = busy_home();
    let (start, _) = day_bounds(&cfg, date(2025, 6, 3));
    let times: Vec<i64> = (0..300)
        .map(|k| start + k * 17 * MINUTE_MS + 1234)
        .collect();

    let mut forward = SimHome::new(cfg.clone(), 7).unwrap();
    let in_order: Vec<HomeState> = times.iter().map(|t| forward.state_at(*t)).collect();

    let mut backward = SimHome::new(cfg.clone(), 7).unwrap();
    let mut reversed: Vec<HomeState> = times.iter().rev().map(|t| backward.state_at(*t)).collect();
    reversed.reverse();
    assert_eq!(in_order, reversed);

    // Interleaved with other homes' and far-away times, from another instance.
    let mut scattered = SimHome::new(cfg.clone(), 7).unwrap();
    let mut other = SimHome::new(cfg.clone(), 8).unwrap();
    for (k, t) in times.iter().enumerate().step_by(7) {
        let _ = scattered.state_at(start + 20 * DAY_MS);
        let _ = other.state_at(*t);
        assert_eq!(scattered.state_at(*t), in_order[k], "at {t}");
    }

    // A restart: a new instance asked only about the last time.
    let last = *times.last().unwrap();
    let mut restarted = SimHome::new(cfg.clone(), 7).unwrap();
    assert_eq!(restarted.state_at(last), *in_order.last().unwrap());

    // Frozen for two months: a home polled every hour all along and a home restarted only
    // at the end agree to the bit (battery charge and registers carried over 60 days).
    let mut walked = SimHome::new(cfg.clone(), 7).unwrap();
    let later = start + 60 * DAY_MS + 5 * 3_600_000 + 17;
    for t in (start..later).step_by(3_600_000) {
        let _ = walked.state_at(t);
    }
    let mut thawed = SimHome::new(cfg.clone(), 7).unwrap();
    let fresh = thawed.state_at(later);
    assert_eq!(fresh, walked.state_at(later));
    assert!(fresh.registers[GRID].import_wh > 0 && fresh.battery_soc_wh.is_some());

    // The meter source says the same as the model.
    let mut meter = SimMeter::new(cfg, 7).unwrap();
    let sample = meter.poll(last as u64).unwrap();
    let grid = meter.info().grid_channel().unwrap();
    let reading = sample.reading(grid).unwrap();
    assert_eq!(reading.power_w, in_order.last().unwrap().power.grid_w);
    assert_eq!(
        reading.registers,
        Some(in_order.last().unwrap().registers[GRID])
    );
}

#[test]
fn different_homes_differ_but_share_the_weather() {
    let cfg = SimConfig {
        seed: 42,
        ..SimConfig::default()
    };
    let a = SimHome::new(cfg.clone(), home_id("home-01")).unwrap();
    let b = SimHome::new(cfg.clone(), home_id("home-02")).unwrap();
    let c = SimHome::new(
        SimConfig {
            seed: 43,
            ..cfg.clone()
        },
        home_id("home-01"),
    )
    .unwrap();
    let (start, end) = day_bounds(&cfg, date(2025, 5, 6));
    let minutes: Vec<i64> = (start..end).step_by(MINUTE_MS as usize).collect();
    let differ = |x: &SimHome, y: &SimHome| {
        minutes
            .iter()
            .filter(|t| x.instant(**t).load_w != y.instant(**t).load_w)
            .count()
    };
    assert!(differ(&a, &b) > minutes.len() * 9 / 10);
    assert!(
        differ(&a, &c) > minutes.len() * 9 / 10,
        "another seed, another series"
    );
    // The same clouds, up to two minutes apart: the day's solar energy differs by little.
    let pv = |h: &SimHome| {
        minutes
            .iter()
            .map(|t| h.instant(*t).production_w)
            .sum::<f64>()
            / 60_000.0
    };
    let (pa, pb) = (pv(&a), pv(&b));
    assert!(
        pa > 0.0 && (pa / pb - 1.0).abs() < 0.05,
        "{pa:.2} vs {pb:.2} kWh"
    );
}

/// Registers are the integral of power: over two days the grid's import minus export equals
/// the sum of its step energies to the watt-hour, the solar channel only exports, and no
/// register ever decreases from one minute to the next. The channels balance at every step.
#[test]
fn registers_integrate_power_and_never_decrease() {
    let cfg = busy_home();
    let mut home = SimHome::new(cfg.clone(), 3).unwrap();
    let (start, _) = day_bounds(&cfg, date(2025, 6, 1));
    let end = start + 2 * DAY_MS;
    let mut prev = home.state_at(start);
    assert_eq!(
        prev.registers,
        [Registers::default(); 4],
        "zero at the origin"
    );
    let mut grid_net_wh = 0.0;
    let mut solar_wh = 0.0;
    for t in (start..end).step_by(MINUTE_MS as usize) {
        let s = home.state_at(t);
        let p = s.power;
        assert!((p.grid_w - (p.load_w + p.solar_w + p.battery_w)).abs() < 1e-6);
        for ch in 0..4 {
            assert!(s.registers[ch].import_wh >= prev.registers[ch].import_wh);
            assert!(s.registers[ch].export_wh >= prev.registers[ch].export_wh);
        }
        grid_net_wh += p.grid_w / 60.0;
        solar_wh -= p.solar_w / 60.0;
        prev = s;
    }
    let fin = home.state_at(end);
    let g = fin.registers[GRID];
    let net = g.import_wh as f64 - g.export_wh as f64;
    assert!(
        (net - grid_net_wh).abs() <= 2.0,
        "registers {net}, integral {grid_net_wh:.1}"
    );
    assert!(
        g.import_wh > 0 && g.export_wh > 0,
        "{g:?}: a June day both imports and exports"
    );
    let s = fin.registers[SOLAR];
    assert_eq!(s.import_wh, 0);
    assert!(
        (s.export_wh as f64 - solar_wh).abs() <= 1.0,
        "{s:?} vs {solar_wh:.1}"
    );
    eprintln!("two June days with a battery: grid {g:?}, solar {s:?}");
}

/// The battery absorbs surplus and covers deficit, within its power limits, its capacity and
/// its reserve, and so cuts both export and import.
#[test]
fn battery_absorbs_surplus_and_covers_deficit_within_limits() {
    let small = BatteryConfig {
        capacity_wh: 5_000.0,
        max_charge_w: 2_000.0,
        max_discharge_w: 1_500.0,
        ..BatteryConfig::default()
    };
    let with = SimConfig {
        battery: Some(small.clone()),
        weather: WeatherMode::ClearSky,
        registers_from: date(2025, 6, 20),
        ..SimConfig::default()
    };
    let without = SimConfig {
        battery: None,
        ..with.clone()
    };
    let mut a = SimHome::new(with.clone(), 5).unwrap();
    let mut b = SimHome::new(without, 5).unwrap();
    let (start, end) = day_bounds(&with, date(2025, 6, 21));
    let (mut full, mut at_reserve, mut capped) = (false, false, false);
    for t in (start..end).step_by(MINUTE_MS as usize) {
        let s = a.state_at(t);
        let soc = s.battery_soc_wh.unwrap();
        assert!(
            soc >= small.capacity_wh * small.reserve_fraction - 1e-6
                && soc <= small.capacity_wh + 1e-6
        );
        let p = s.power;
        assert!(
            p.battery_w <= small.max_charge_w + 1e-9
                && p.battery_w >= -small.max_discharge_w - 1e-9
        );
        let surplus = -p.solar_w - p.load_w;
        if p.battery_w > 0.0 {
            assert!(surplus > 0.0, "charges only from surplus");
            assert!(p.grid_w <= 1e-9, "never imports to charge");
        }
        if p.battery_w < 0.0 {
            assert!(p.grid_w >= -1e-9, "never discharges into the grid");
        }
        full |= soc > small.capacity_wh - 1.0;
        at_reserve |= soc < small.capacity_wh * small.reserve_fraction + 1.0;
        capped |= p.battery_w == small.max_charge_w;
    }
    assert!(
        full && capped,
        "a clear June day fills a 5 kWh battery at its 2 kW limit"
    );
    assert!(at_reserve, "the night empties it down to the reserve");
    let ra = a.state_at(end).registers[GRID];
    let rb = b.state_at(end).registers[GRID];
    eprintln!("21 June, grid with a 5 kWh battery {ra:?}, without {rb:?}");
    assert!(ra.export_wh < rb.export_wh && ra.import_wh < rb.import_wh);
}

/// Seeded clouds: changes from one minute to the next stay small (clouds pass over minutes,
/// not in a step), cloudy days produce less, and a June's total falls between a half and nine
/// tenths of its clear-sky total (Ames' June clearness is set to 0.72).
#[test]
fn clouds_are_smooth_and_cost_energy() {
    let cfg = SimConfig {
        seed: 11,
        ..SimConfig::default()
    };
    let clear = SimConfig {
        weather: WeatherMode::ClearSky,
        ..cfg.clone()
    };
    let home = SimHome::new(cfg.clone(), 1).unwrap();
    let mut cloudy_total = 0.0;
    let mut clear_total = 0.0;
    let mut regimes = [0usize; 3];
    let kwp_w = cfg.pv.as_ref().unwrap().kwp * 1000.0;
    for day in 1..=30 {
        let d = date(2025, 6, day);
        let (start, end) = day_bounds(&cfg, d);
        let regime = home.regime(start + DAY_MS / 2);
        regimes[regime as usize] += 1;
        let mut prev = home.instant(start).production_w;
        for t in (start..end).step_by(MINUTE_MS as usize).skip(1) {
            let p = home.instant(t).production_w;
            assert!(
                (p - prev).abs() < 0.2 * kwp_w,
                "{d} {t}: {prev:.0} -> {p:.0} W"
            );
            prev = p;
        }
        let cloudy = daily_pv_kwh(&cfg, d);
        let sunny = daily_pv_kwh(&clear, d);
        if regime != Regime::Clear {
            assert!(
                cloudy < 0.8 * sunny,
                "{d} {regime:?}: {cloudy:.1} vs {sunny:.1}"
            );
        }
        cloudy_total += cloudy;
        clear_total += sunny;
    }
    let ratio = cloudy_total / clear_total;
    eprintln!(
        "June 2025, seed 11: {cloudy_total:.0} kWh of {clear_total:.0} clear-sky ({ratio:.2}); clear/partly/overcast days {regimes:?}"
    );
    assert!((0.5..=0.9).contains(&ratio));
    assert!(regimes.iter().all(|n| *n > 0), "{regimes:?}");
}

#[test]
fn default_settings_round_trip_through_toml_and_bad_ones_are_refused() {
    let cfg = SimConfig {
        battery: Some(BatteryConfig::default()),
        ..SimConfig::default()
    };
    let text = toml::to_string(&cfg).unwrap();
    assert!(text.contains("registers_from = \"2025-01-01\""), "{text}");
    let back: SimConfig = toml::from_str(&text).unwrap();
    assert_eq!(back, cfg);
    let partial: SimConfig = toml::from_str("seed = 9\n[load]\ndaily_kwh = 30.0\n").unwrap();
    assert_eq!(partial.load.daily_kwh, 30.0);
    assert_eq!(partial.location, Location::default());

    let bad_step = SimConfig {
        step_secs: 7,
        ..SimConfig::default()
    };
    assert!(matches!(
        SimHome::new(bad_step, 1),
        Err(MeterError::Config(_))
    ));
    let tiny = SimConfig {
        load: LoadConfig {
            daily_kwh: 3.0,
            ..LoadConfig::default()
        },
        ..SimConfig::default()
    };
    assert!(matches!(SimHome::new(tiny, 1), Err(MeterError::Config(_))));
}

#[test]
fn the_sim_meter_is_a_meter_source_with_a_bidirectional_grid_channel() {
    let mut meter = SimMeter::new(busy_home(), 2).unwrap();
    let info = meter.info().clone();
    assert!(info.simulated);
    assert_eq!(info.check(), Ok(()));
    let kinds: Vec<ChannelKind> = info.channels.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            ChannelKind::Grid,
            ChannelKind::Load,
            ChannelKind::Solar,
            ChannelKind::Battery
        ]
    );
    let (start, _) = day_bounds(&busy_home(), date(2025, 6, 2));
    let noon = start + 13 * 3_600_000;
    let s = meter.poll(noon as u64).unwrap();
    assert_eq!(s.at_ms, noon as u64);
    let sum: f64 = s.readings[1..].iter().map(|r| r.power_w).sum();
    assert!(
        (s.readings[0].power_w - sum).abs() < 1e-6,
        "grid = load + solar + battery"
    );
    assert!(s.readings[2].power_w <= 0.0, "solar produces: negative");
    assert!(
        s.readings
            .iter()
            .all(|r| r.registers.is_some() && r.status == ChannelStatus::Ok)
    );
}
