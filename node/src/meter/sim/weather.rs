//! The simulated climate and weather: air temperature (for heating, cooling and panel
//! temperature) and clouds (a clearness index that scales the clear-sky output).
//!
//! Weather belongs to the neighbourhood, not to a home: the day's regime and the passing clouds
//! are drawn from the seed alone, and each home sees the same clouds shifted by up to two
//! minutes (where it sits under them), so neighbours' panels rise and fall together as they do
//! in a real subdivision.

use super::noise::{self, Purpose};
use serde::{Deserialize, Serialize};
use std::f64::consts::TAU;

/// A place's climate, as a few numbers. The default is Ames, Iowa.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Climate {
    /// Annual mean air temperature, °C (Ames: about 8.5).
    pub annual_mean_c: f64,
    /// Half the difference between the warmest and the coldest month's mean, °C (Ames: about
    /// 15.5, from −7 °C in January to 24 °C in July).
    pub annual_amplitude_c: f64,
    /// Day of the year with the warmest mean (about 200, mid-July, in the northern mid-latitudes).
    pub warmest_day_of_year: f64,
    /// Half the daily swing between the night's low and the afternoon's high, °C.
    pub diurnal_amplitude_c: f64,
    /// Mean clearness by month (January first): the month's insolation over its clear-sky
    /// insolation. Ames: from about 0.55 in December to 0.75 in July.
    pub monthly_clearness: [f64; 12],
}

impl Default for Climate {
    fn default() -> Climate {
        Climate {
            annual_mean_c: 8.5,
            annual_amplitude_c: 15.5,
            warmest_day_of_year: 200.0,
            diurnal_amplitude_c: 6.0,
            monthly_clearness: [
                0.60, 0.62, 0.62, 0.65, 0.68, 0.72, 0.75, 0.74, 0.72, 0.68, 0.58, 0.55,
            ],
        }
    }
}

impl Climate {
    /// The day's mean air temperature on day `day_of_year`, °C.
    pub fn daily_mean_c(&self, day_of_year: u32) -> f64 {
        let phase = TAU * (f64::from(day_of_year) - self.warmest_day_of_year) / 365.25;
        self.annual_mean_c + self.annual_amplitude_c * phase.cos()
    }

    /// Air temperature at `local_hour` (0–24) on day `day_of_year`, °C: lowest before dawn,
    /// highest at 15:00.
    pub fn air_c(&self, day_of_year: u32, local_hour: f64) -> f64 {
        self.daily_mean_c(day_of_year)
            + self.diurnal_amplitude_c * (TAU * (local_hour - 15.0) / 24.0).cos()
    }
}

/// Whether clouds are simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeatherMode {
    /// Seeded clouds following the climate's monthly clearness.
    Seeded,
    /// Every day is clear (for tests and for sizing an array).
    ClearSky,
}

/// A day's weather regime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    /// Clear: at most a few per cent below clear sky.
    Clear,
    /// Broken clouds: output swings between a tenth and slightly above clear sky (edges of
    /// clouds focus light).
    PartlyCloudy,
    /// Overcast: a tenth to a third of clear sky.
    Overcast,
}

/// The regimes' mean clearness: clear 0.97; partly cloudy and overcast together 0.41.
const CLEAR_MEAN: f64 = 0.97;
const CLOUDY_MEAN: f64 = (0.60 + 0.22) / 2.0;

/// The regime of local day `day` (days since 1970 on the local calendar) in month `month`.
///
/// A day is clear with probability `p` chosen so that the expected clearness equals the month's
/// mean: `0.97 p + 0.41 (1 − p) = mean`; the other days split evenly between partly cloudy and
/// overcast. A month whose mean is below 0.41 has no clear days and a mean of 0.41.
pub fn regime(climate: &Climate, seed: u64, day: i64, month: u32) -> Regime {
    let idx = (month.clamp(1, 12) - 1) as usize;
    let mean = climate.monthly_clearness.get(idx).copied().unwrap_or(0.65);
    let p_clear = ((mean - CLOUDY_MEAN) / (CLEAR_MEAN - CLOUDY_MEAN)).clamp(0.0, 1.0);
    let u = noise::uniform(seed, 0, Purpose::Weather, day);
    if u < p_clear {
        Regime::Clear
    } else if u < p_clear + (1.0 - p_clear) / 2.0 {
        Regime::PartlyCloudy
    } else {
        Regime::Overcast
    }
}

/// How far clouds shift in time between homes, at most, milliseconds.
const MAX_CLOUD_SHIFT_MS: f64 = 120_000.0;

/// The clearness index (output over clear-sky output) at `utc_ms` for `home` on a day of
/// `regime`. Smooth over minutes: three octaves of smooth noise with knots 30, 8 and 2 minutes
/// apart.
pub fn clearness(seed: u64, home: u64, regime: Regime, utc_ms: i64) -> f64 {
    let shift = (noise::uniform(seed, home, Purpose::CloudShift, 0) * MAX_CLOUD_SHIFT_MS) as i64;
    let t = utc_ms.saturating_add(shift);
    let octave =
        |o: i64, minutes: i64| noise::smooth(seed, 0, Purpose::Cloud, o, t, minutes * 60_000);
    match regime {
        Regime::Clear => 0.97 + 0.03 * octave(2, 8),
        Regime::PartlyCloudy => {
            let n = 0.6 * octave(0, 30) + 0.3 * octave(1, 8) + 0.1 * octave(2, 2);
            0.60 + 0.50 * n
        }
        Regime::Overcast => {
            let n = 0.7 * octave(0, 30) + 0.3 * octave(1, 8);
            0.22 + 0.12 * n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ames_temperatures_are_plausible() {
        let c = Climate::default();
        // NOAA 1991–2020 normals for Ames: January about −7 °C, July about 23 °C.
        assert!((c.daily_mean_c(15) + 6.5).abs() < 2.0);
        assert!((c.daily_mean_c(200) - 24.0).abs() < 1.5);
        assert!(c.air_c(200, 15.0) > c.air_c(200, 4.0) + 10.0);
    }

    #[test]
    fn regimes_follow_the_monthly_clearness() {
        let c = Climate::default();
        let days = 3000;
        let clear_july = (0..days)
            .filter(|d| regime(&c, 9, *d, 7) == Regime::Clear)
            .count() as f64
            / f64::from(days as u32);
        let clear_dec = (0..days)
            .filter(|d| regime(&c, 9, *d, 12) == Regime::Clear)
            .count() as f64
            / f64::from(days as u32);
        // p = (mean − 0.41) / 0.56: July 0.61, December 0.25.
        assert!((clear_july - 0.61).abs() < 0.04, "{clear_july}");
        assert!((clear_dec - 0.25).abs() < 0.04, "{clear_dec}");
    }

    #[test]
    fn clouds_are_shared_by_neighbours_with_a_small_shift() {
        let t0 = 1_750_000_000_000;
        let mut diff = 0.0f64;
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for k in 0..600 {
            let t = t0 + k * 60_000;
            let a = clearness(5, 1, Regime::PartlyCloudy, t);
            let b = clearness(5, 2, Regime::PartlyCloudy, t);
            assert!((0.05..=1.11).contains(&a));
            diff = diff.max((a - b).abs());
            lo = lo.min(a);
            hi = hi.max(a);
        }
        let swing = hi - lo;
        // Two homes differ by no more than two minutes of cloud movement (at most
        // 0.5 · (0.6·π/30 + 0.3·π/8 + 0.1·π/2) ≈ 0.17 per minute), while over ten hours the
        // clouds swing much more.
        eprintln!(
            "partly cloudy: neighbours differ by at most {diff:.3}, one home swings {swing:.3}"
        );
        assert!(diff > 0.0);
        assert!(diff < 0.35, "neighbour difference {diff}");
        assert!(swing > 0.5, "swing {swing}");
    }
}
