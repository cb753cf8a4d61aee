//! The household load model: what a home consumes, minute by minute.
//!
//! A day's consumption has three parts:
//!
//! - **base load**: always-on devices (refrigerator, router, standby), a constant;
//! - **behaviour**: people at home, shaped by the local clock — low at night, a morning peak,
//!   a midday plateau, the evening peak (cooking, lighting, laundry) — with a later, broader
//!   morning and a busier midday at weekends. Each home has its own personality (its peaks up to
//!   45 minutes earlier or later, their heights ±20 %). Appliances (oven, dryer, kettle) switch
//!   on in short bursts drawn per quarter hour;
//! - **heating and cooling**: proportional to the day's heating or cooling degree-days from the
//!   climate's temperature, cooling mostly in the afternoon, heating mostly morning and evening.
//!
//! `daily_kwh` is the home's *annual mean*: the behaviour part is scaled so that over a year the
//! three parts average to it. A week's mean is then near `daily_kwh` times that week's seasonal
//! factor ([`HouseholdLoad::expected_daily_kwh`]). All randomness is mean-preserving (noise
//! centred on zero, multiplicative factors with mean one), so the expectation is exact and the
//! realised total only wanders by the day-to-day variation.

use super::calendar::Date;
use super::noise::{self, Purpose};
use super::weather::Climate;
use serde::{Deserialize, Serialize};

/// The household's consumption settings. The default fits a US household in Ames, Iowa: the
/// EIA puts Iowa's residential mean near 900 kWh a month, about 27–30 kWh a day, with gas heat
/// and electric air conditioning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadConfig {
    /// Mean daily consumption over a year, kWh.
    pub daily_kwh: f64,
    /// Always-on consumption, W.
    pub base_load_w: f64,
    /// Behaviour energy on a Saturday or Sunday relative to the week's mean day (weekdays get
    /// `(7 − 2·f)/5`, so the week's mean is unchanged).
    pub weekend_factor: f64,
    /// Electric heating energy per heating degree-day, kWh/(°C·day) (gas furnace blowers and
    /// space heaters: small; a heat pump home: 1 or more).
    pub heating_kwh_per_degree_day: f64,
    /// Cooling energy per cooling degree-day, kWh/(°C·day).
    pub cooling_kwh_per_degree_day: f64,
    /// Degree-day base temperature, °C (18.3 °C = 65 °F, the US convention).
    pub degree_day_base_c: f64,
    /// Standard deviation of a day's behaviour energy relative to its expectation.
    pub daily_variation: f64,
    /// Share of behaviour energy that comes in appliance bursts.
    pub appliance_share: f64,
}

impl Default for LoadConfig {
    fn default() -> LoadConfig {
        LoadConfig {
            daily_kwh: 27.0,
            base_load_w: 200.0,
            weekend_factor: 1.1,
            heating_kwh_per_degree_day: 0.25,
            cooling_kwh_per_degree_day: 2.0,
            degree_day_base_c: 18.3,
            daily_variation: 0.08,
            appliance_share: 0.35,
        }
    }
}

/// A Gaussian bump of height 1 centred on `mu` hours, width `sigma` hours, on a 24-hour circle.
fn bump(hour: f64, mu: f64, sigma: f64) -> f64 {
    let d = (hour - mu + 12.0).rem_euclid(24.0) - 12.0;
    (-0.5 * (d / sigma).powi(2)).exp()
}

/// Mean of `f` over the 24 hours, sampled each minute.
fn daily_mean(f: impl Fn(f64) -> f64) -> f64 {
    (0..1440).map(|m| f(f64::from(m) / 60.0)).sum::<f64>() / 1440.0
}

fn cooling_shape(hour: f64) -> f64 {
    0.25 + bump(hour, 16.5, 3.5)
}

fn heating_shape(hour: f64) -> f64 {
    1.0 + 0.5 * bump(hour, 6.5, 1.5) + 0.3 * bump(hour, 18.0, 2.5) - 0.3 * bump(hour, 14.0, 3.0)
}

/// Appliance bursts: in each quarter hour, with this probability, one appliance runs.
const APPLIANCE_BUCKET_MS: i64 = 15 * 60_000;
const APPLIANCE_PROBABILITY: f64 = 0.35;
/// Burst length is uniform between 3 and 12 minutes (mean 7.5).
const APPLIANCE_MIN_MS: f64 = 3.0 * 60_000.0;
const APPLIANCE_SPAN_MS: f64 = 9.0 * 60_000.0;
/// The expected fraction of time an appliance runs: 0.35 × 7.5 / 15.
const APPLIANCE_DUTY: f64 = APPLIANCE_PROBABILITY * 7.5 / 15.0;

/// One home's load model: the settings with the home's personality drawn.
#[derive(Debug, Clone)]
pub struct HouseholdLoad {
    cfg: LoadConfig,
    climate: Climate,
    seed: u64,
    home: u64,
    shift_h: f64,
    morning: f64,
    evening: f64,
    weekday_mean: f64,
    weekend_mean: f64,
    cooling_mean: f64,
    heating_mean: f64,
    /// Behaviour plus base load on a mean day, kWh: `daily_kwh` less the year's mean heating
    /// and cooling.
    behaviour_kwh: f64,
}

impl HouseholdLoad {
    /// The model for `home`. Fails when heating and cooling alone would exceed `daily_kwh`, or
    /// when the base load alone would.
    pub fn new(cfg: &LoadConfig, climate: &Climate, seed: u64, home: u64) -> Result<Self, String> {
        let p = |k: i64| noise::uniform(seed, home, Purpose::Personality, k);
        let mut load = HouseholdLoad {
            cfg: cfg.clone(),
            climate: climate.clone(),
            seed,
            home,
            shift_h: (p(0) - 0.5) * 1.5,
            morning: 0.8 + 0.4 * p(1),
            evening: 0.8 + 0.4 * p(2),
            weekday_mean: 1.0,
            weekend_mean: 1.0,
            cooling_mean: daily_mean(cooling_shape),
            heating_mean: daily_mean(heating_shape),
            behaviour_kwh: 0.0,
        };
        load.weekday_mean = daily_mean(|h| load.behaviour_shape(h, false));
        load.weekend_mean = daily_mean(|h| load.behaviour_shape(h, true));
        let hvac_mean = (1..=365u32)
            .map(|doy| {
                let (heat, cool) = load.hvac_kwh(doy);
                heat + cool
            })
            .sum::<f64>()
            / 365.0;
        load.behaviour_kwh = cfg.daily_kwh - hvac_mean;
        if load.behaviour_kwh < cfg.base_load_w * 24.0 / 1000.0 {
            return Err(format!(
                "daily_kwh {} is less than the base load ({} W) plus the year's mean heating and cooling ({hvac_mean:.1} kWh)",
                cfg.daily_kwh, cfg.base_load_w
            ));
        }
        if !(0.0..=2.0).contains(&cfg.weekend_factor) || !(0.0..1.0).contains(&cfg.appliance_share)
        {
            return Err(
                "weekend_factor must be within 0..=2 and appliance_share within 0..1".into(),
            );
        }
        Ok(load)
    }

    /// The behaviour shape (unnormalised) at `hour`.
    fn behaviour_shape(&self, hour: f64, weekend: bool) -> f64 {
        let s = self.shift_h;
        if weekend {
            0.25 + 0.7 * self.morning * bump(hour, 9.0 + s, 1.6)
                + 0.6 * bump(hour, 13.0 + s, 3.0)
                + 1.3 * self.evening * bump(hour, 18.5 + s, 2.2)
                + 0.3 * bump(hour, 22.5 + s, 1.2)
        } else {
            0.25 + 0.9 * self.morning * bump(hour, 7.0 + s, 1.0)
                + 0.25 * bump(hour, 12.5 + s, 2.5)
                + 1.4 * self.evening * bump(hour, 19.0 + s, 2.0)
                + 0.3 * bump(hour, 22.0 + s, 1.2)
        }
    }

    /// The day's electric heating and cooling energy, kWh, on day `day_of_year`.
    fn hvac_kwh(&self, day_of_year: u32) -> (f64, f64) {
        let t = self.climate.daily_mean_c(day_of_year);
        let base = self.cfg.degree_day_base_c;
        (
            (base - t).max(0.0) * self.cfg.heating_kwh_per_degree_day,
            (t - base).max(0.0) * self.cfg.cooling_kwh_per_degree_day,
        )
    }

    /// The weekday factor of behaviour energy.
    fn week_factor(&self, date: Date) -> f64 {
        if date.is_weekend() {
            self.cfg.weekend_factor
        } else {
            (7.0 - 2.0 * self.cfg.weekend_factor) / 5.0
        }
    }

    /// The expected consumption on `date`, kWh (before the day's random variation): behaviour
    /// with its weekday factor plus that day's heating and cooling.
    pub fn expected_daily_kwh(&self, date: Date) -> f64 {
        let (heat, cool) = self.hvac_kwh(date.day_of_year());
        self.behaviour_kwh * self.week_factor(date) + heat + cool
    }

    /// Consumption, W, at `utc_ms`, which is `local_ms` into local day `day`.
    pub fn power_w(&self, utc_ms: i64, day: i64, local_ms: i64) -> f64 {
        let date = Date::from_days_since_epoch(day);
        let hour = local_ms as f64 / 3_600_000.0;
        let (seed, home) = (self.seed, self.home);
        let base_kwh = self.cfg.base_load_w * 24.0 / 1000.0;
        // Mean one, clamped symmetrically so the mean stays one.
        let v = self.cfg.daily_variation;
        let day_factor = (1.0 + v * noise::normal(seed, home, Purpose::DailyLoad, day))
            .clamp(1.0 - 3.0 * v, 1.0 + 3.0 * v)
            .max(0.0);
        let flexible_kwh =
            (self.behaviour_kwh * self.week_factor(date) * day_factor - base_kwh).max(0.0);
        let weekend = date.is_weekend();
        let mean = if weekend {
            self.weekend_mean
        } else {
            self.weekday_mean
        };
        let shape = self.behaviour_shape(hour, weekend) / mean;
        let wander =
            1.0 + 0.15 * noise::smooth(seed, home, Purpose::LoadWander, 0, utc_ms, 20 * 60_000);
        let a = self.cfg.appliance_share;
        let appliance =
            (1.0 - a) + a * f64::from(u8::from(self.appliance_on(utc_ms))) / APPLIANCE_DUTY;
        let behaviour_w = flexible_kwh * 1000.0 / 24.0 * shape * wander * appliance;

        let (heat_kwh, cool_kwh) = self.hvac_kwh(date.day_of_year());
        let cycling = 1.0 + 0.5 * noise::smooth(seed, home, Purpose::Hvac, 0, utc_ms, 10 * 60_000);
        let hvac_w = (heat_kwh * heating_shape(hour) / self.heating_mean
            + cool_kwh * cooling_shape(hour) / self.cooling_mean)
            * 1000.0
            / 24.0
            * cycling;
        self.cfg.base_load_w + behaviour_w + hvac_w
    }

    /// Whether an appliance burst is running at `utc_ms`.
    fn appliance_on(&self, utc_ms: i64) -> bool {
        let bucket = utc_ms.div_euclid(APPLIANCE_BUCKET_MS);
        let w = noise::hash(self.seed, self.home, Purpose::Appliance, bucket);
        if noise::unit(w) >= APPLIANCE_PROBABILITY {
            return false;
        }
        let len = APPLIANCE_MIN_MS + APPLIANCE_SPAN_MS * noise::unit(noise::mix64(w ^ 1));
        let start = (APPLIANCE_BUCKET_MS as f64 - len) * noise::unit(noise::mix64(w ^ 2));
        let into = utc_ms.rem_euclid(APPLIANCE_BUCKET_MS) as f64;
        into >= start && into < start + len
    }
}
