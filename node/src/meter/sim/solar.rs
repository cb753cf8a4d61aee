//! The sun and a rooftop array: solar position, clear-sky irradiance, the irradiance on a tilted
//! panel, and the array's output.
//!
//! Models, chosen for being short, documented and good to a few per cent on clear days:
//!
//! - **Solar position**: declination and equation of time from Spencer's Fourier series (J. W.
//!   Spencer, "Fourier series representation of the position of the sun", Search 2(5), 1971), in
//!   the fractional-year form NOAA's solar calculator documents; hour angle from true solar
//!   time; zenith and azimuth by spherical trigonometry. Atmospheric refraction is ignored
//!   (it matters only within a degree of the horizon).
//! - **Clear sky**: Meinel's direct-beam model (A. B. and M. P. Meinel, *Applied Solar Energy*,
//!   1976) with Laue's altitude correction,
//!   `DNI = 1353 W/m² · E0 · ((1 − a·h) · 0.7^(AM^0.678) + a·h)`, with a = 0.14 per km of
//!   elevation h and E0 the Earth–Sun distance factor; the air mass from Kasten and Young
//!   (1989); diffuse horizontal irradiance taken as 10 % of the beam, the usual companion of
//!   Meinel's formula. pvlib's Ineichen–Perez clear sky gives daily totals close to this
//!   one at the places and dates the tests check, 10 % at worst (see `sim/tests.rs`).
//! - **Plane of array**: beam times the cosine of the angle of incidence, isotropic sky diffuse
//!   `DHI · (1 + cos β)/2`, ground-reflected `GHI · albedo · (1 - cos β)/2` (Liu and Jordan).
//! - **Array output**: `P = kWp · POA / 1000 W/m² · (1 + γ (T_cell − 25 °C)) · derate`, with the
//!   cell temperature from the NOCT model `T_cell = T_air + (NOCT − 20 °C) · POA / 800 W/m²`.

use serde::{Deserialize, Serialize};
use std::f64::consts::TAU;

/// The sun's position at one time and place, degrees (minutes for the equation of time).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SunPosition {
    /// Declination, degrees north.
    pub declination_deg: f64,
    /// Equation of time: true solar time minus mean solar time, minutes.
    pub equation_of_time_min: f64,
    /// Hour angle, degrees: 0 at solar noon, positive in the afternoon (15° per hour).
    pub hour_angle_deg: f64,
    /// Zenith angle, degrees (90° at the horizon).
    pub zenith_deg: f64,
    /// Azimuth, degrees clockwise from north (180° = due south).
    pub azimuth_deg: f64,
}

/// The day-of-year angle NOAA calls the fractional year, radians, for a UTC time.
fn fractional_year(utc_ms: i64) -> f64 {
    let days = utc_ms.div_euclid(super::calendar::DAY_MS);
    let date = super::calendar::Date::from_days_since_epoch(days);
    let year_len = if super::calendar::Date::new(date.year, 2, 29).is_some() {
        366.0
    } else {
        365.0
    };
    let hour = utc_ms.rem_euclid(super::calendar::DAY_MS) as f64 / 3_600_000.0;
    TAU / year_len * (f64::from(date.day_of_year()) - 1.0 + (hour - 12.0) / 24.0)
}

/// Where the sun is at `utc_ms` seen from `latitude_deg` (north positive), `longitude_deg`
/// (east positive).
pub fn sun_position(utc_ms: i64, latitude_deg: f64, longitude_deg: f64) -> SunPosition {
    let g = fractional_year(utc_ms);
    let decl = 0.006_918 - 0.399_912 * g.cos() + 0.070_257 * g.sin() - 0.006_758 * (2.0 * g).cos()
        + 0.000_907 * (2.0 * g).sin()
        - 0.002_697 * (3.0 * g).cos()
        + 0.001_48 * (3.0 * g).sin();
    let eot_min = 229.18
        * (0.000_075 + 0.001_868 * g.cos()
            - 0.032_077 * g.sin()
            - 0.014_615 * (2.0 * g).cos()
            - 0.040_849 * (2.0 * g).sin());
    let utc_min = utc_ms.rem_euclid(super::calendar::DAY_MS) as f64 / 60_000.0;
    // True solar time: UTC, plus 4 minutes per degree of longitude east, plus the equation.
    let solar_min = utc_min + eot_min + 4.0 * longitude_deg;
    let hour_angle_deg = solar_min / 4.0 - 180.0;
    // Bring the hour angle into (-180, 180].
    let hour_angle_deg = (hour_angle_deg + 180.0).rem_euclid(360.0) - 180.0;
    let h = hour_angle_deg.to_radians();
    let phi = latitude_deg.to_radians();
    let cos_z = (phi.sin() * decl.sin() + phi.cos() * decl.cos() * h.cos()).clamp(-1.0, 1.0);
    let zenith = cos_z.acos();
    // Azimuth measured from south, positive to the west, then turned to "from north".
    let from_south = h.sin().atan2(h.cos() * phi.sin() - decl.tan() * phi.cos());
    SunPosition {
        declination_deg: decl.to_degrees(),
        equation_of_time_min: eot_min,
        hour_angle_deg,
        zenith_deg: zenith.to_degrees(),
        azimuth_deg: (from_south.to_degrees() + 180.0).rem_euclid(360.0),
    }
}

/// Irradiance components, W/m².
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Irradiance {
    /// Direct normal irradiance.
    pub dni: f64,
    /// Diffuse horizontal irradiance.
    pub dhi: f64,
    /// Global horizontal irradiance (`dni · cos zenith + dhi`).
    pub ghi: f64,
}

/// Relative optical air mass (Kasten and Young, 1989), for zenith angles below 90°.
pub fn air_mass(zenith_deg: f64) -> f64 {
    1.0 / (zenith_deg.to_radians().cos() + 0.505_72 * (96.079_95 - zenith_deg).powf(-1.636_4))
}

/// Clear-sky irradiance (Meinel with Laue's altitude correction; diffuse 10 % of the beam) for
/// a sun at `zenith_deg` on day `day_of_year`, at `elevation_m` above sea level. Zero once the
/// sun is below the horizon.
pub fn clear_sky(zenith_deg: f64, day_of_year: u32, elevation_m: f64) -> Irradiance {
    if zenith_deg >= 90.0 {
        return Irradiance::default();
    }
    let e0 = 1.0 + 0.033 * (TAU * f64::from(day_of_year) / 365.0).cos();
    let am = air_mass(zenith_deg);
    let ah = 0.14 * (elevation_m / 1000.0).clamp(0.0, 3.0);
    let dni = 1353.0 * e0 * ((1.0 - ah) * 0.7f64.powf(am.powf(0.678)) + ah);
    let dhi = 0.1 * dni;
    let ghi = dni * zenith_deg.to_radians().cos() + dhi;
    Irradiance { dni, dhi, ghi }
}

/// The cosine of the angle between the sun's rays and the normal of a panel tilted `tilt_deg`
/// from horizontal, facing `azimuth_deg` (clockwise from north). Negative when the sun is
/// behind the panel.
pub fn cos_incidence(sun: &SunPosition, tilt_deg: f64, azimuth_deg: f64) -> f64 {
    let z = sun.zenith_deg.to_radians();
    let b = tilt_deg.to_radians();
    z.cos() * b.cos() + z.sin() * b.sin() * (sun.azimuth_deg - azimuth_deg).to_radians().cos()
}

/// Irradiance on the plane of the array, W/m²: beam (when the sun is in front of the panel),
/// isotropic sky diffuse and ground-reflected light.
pub fn plane_of_array(
    sun: &SunPosition,
    irr: &Irradiance,
    tilt_deg: f64,
    azimuth_deg: f64,
    albedo: f64,
) -> f64 {
    if sun.zenith_deg >= 90.0 {
        return 0.0;
    }
    let cos_b = tilt_deg.to_radians().cos();
    let beam = irr.dni * cos_incidence(sun, tilt_deg, azimuth_deg).max(0.0);
    let sky = irr.dhi * (1.0 + cos_b) / 2.0;
    let ground = irr.ghi * albedo * (1.0 - cos_b) / 2.0;
    beam + sky + ground
}

/// A rooftop array. The default is a typical US residential system: 6 kWp facing due south at a
/// 30° tilt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PvConfig {
    /// Peak power under standard test conditions (1000 W/m², 25 °C cells), kW.
    pub kwp: f64,
    /// Tilt from horizontal, degrees.
    pub tilt_deg: f64,
    /// Facing, degrees clockwise from north (180 = south).
    pub azimuth_deg: f64,
    /// System losses other than temperature: inverter, wiring, soiling, mismatch. 0.86 is
    /// PVWatts' default 14 % of losses; with summer cell temperatures the total is near 0.8.
    pub system_derate: f64,
    /// Power temperature coefficient, per °C (crystalline silicon: about -0.004).
    pub temp_coeff_per_c: f64,
    /// Nominal operating cell temperature, °C.
    pub noct_c: f64,
    /// Ground reflectance (0.2 for grass; fresh snow is near 0.8).
    pub albedo: f64,
    /// The inverter's AC limit, kW; `None` for no clipping.
    pub inverter_kw: Option<f64>,
}

impl Default for PvConfig {
    fn default() -> PvConfig {
        PvConfig {
            kwp: 6.0,
            tilt_deg: 30.0,
            azimuth_deg: 180.0,
            system_derate: 0.86,
            temp_coeff_per_c: -0.004,
            noct_c: 45.0,
            albedo: 0.2,
            inverter_kw: None,
        }
    }
}

impl PvConfig {
    /// The array's AC output, watts (a positive number), for `poa` W/m² on the panels at air
    /// temperature `air_c`.
    pub fn output_w(&self, poa: f64, air_c: f64) -> f64 {
        if poa <= 0.0 {
            return 0.0;
        }
        let cell_c = air_c + (self.noct_c - 20.0) * poa / 800.0;
        let temp_factor = (1.0 + self.temp_coeff_per_c * (cell_c - 25.0)).max(0.0);
        let p = self.kwp * 1000.0 * poa / 1000.0 * temp_factor * self.system_derate;
        match self.inverter_kw {
            Some(limit) => p.min(limit * 1000.0),
            None => p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::sim::calendar::{DAY_MS, Date};

    fn utc(y: i32, m: u32, d: u32, hour: f64) -> i64 {
        Date::new(y, m, d).unwrap().days_since_epoch() * DAY_MS + (hour * 3_600_000.0) as i64
    }

    /// Reference values from the NOAA solar calculator's published tables (declination and
    /// equation of time at the solstices and equinoxes, within Spencer's ~0.5° / ~1 min).
    #[test]
    fn declination_and_equation_of_time_at_known_dates() {
        let s = sun_position(utc(2025, 6, 21, 12.0), 0.0, 0.0);
        assert!((s.declination_deg - 23.44).abs() < 0.3, "{s:?}");
        let s = sun_position(utc(2025, 12, 21, 12.0), 0.0, 0.0);
        assert!((s.declination_deg + 23.44).abs() < 0.3, "{s:?}");
        let s = sun_position(utc(2025, 3, 20, 12.0), 0.0, 0.0);
        assert!(s.declination_deg.abs() < 0.6, "{s:?}");
        // The equation of time peaks near +16.4 min in early November and dips to about
        // -14.2 min in mid-February.
        let s = sun_position(utc(2025, 11, 3, 12.0), 0.0, 0.0);
        assert!((s.equation_of_time_min - 16.4).abs() < 0.7, "{s:?}");
        let s = sun_position(utc(2025, 2, 11, 12.0), 0.0, 0.0);
        assert!((s.equation_of_time_min + 14.2).abs() < 0.7, "{s:?}");
    }

    #[test]
    fn ames_noon_and_afternoon() {
        let (lat, lon) = (42.03, -93.62);
        // Solar noon in Ames on 21 June: 12:00 + 93.62·4 min − EoT(≈ −1.7 min) ≈ 18:16 UTC.
        let noon = sun_position(utc(2025, 6, 21, 18.0 + 16.0 / 60.0), lat, lon);
        assert!((noon.zenith_deg - (lat - 23.44)).abs() < 0.4, "{noon:?}");
        assert!(noon.hour_angle_deg.abs() < 0.5, "{noon:?}");
        // Three hours later the sun is in the south-west.
        let pm = sun_position(utc(2025, 6, 21, 21.0 + 16.0 / 60.0), lat, lon);
        assert!((pm.hour_angle_deg - 45.0).abs() < 0.5);
        assert!(pm.azimuth_deg > 225.0 && pm.azimuth_deg < 275.0, "{pm:?}");
        // Midnight: below the horizon.
        let night = sun_position(utc(2025, 6, 21, 6.0), lat, lon);
        assert!(night.zenith_deg > 90.0);
    }

    #[test]
    fn clear_sky_is_near_a_thousand_at_high_sun_and_falls_with_air_mass() {
        let high = clear_sky(15.0, 172, 300.0);
        assert!(high.ghi > 900.0 && high.ghi < 1100.0, "{high:?}");
        let low = clear_sky(75.0, 172, 300.0);
        assert!(low.dni < high.dni * 0.8);
        assert!(low.ghi < 0.3 * high.ghi);
        assert_eq!(clear_sky(95.0, 172, 300.0), Irradiance::default());
        assert!((air_mass(60.0) - 2.0).abs() < 0.01);
    }

    #[test]
    fn a_panel_facing_the_sun_gets_the_beam() {
        let sun = SunPosition {
            declination_deg: 0.0,
            equation_of_time_min: 0.0,
            hour_angle_deg: 0.0,
            zenith_deg: 40.0,
            azimuth_deg: 180.0,
        };
        assert!((cos_incidence(&sun, 40.0, 180.0) - 1.0).abs() < 1e-12);
        assert!(
            cos_incidence(&sun, 90.0, 0.0) < 0.0,
            "a north wall sees no beam"
        );
        let irr = clear_sky(40.0, 80, 0.0);
        let poa = plane_of_array(&sun, &irr, 40.0, 180.0, 0.2);
        assert!(poa > irr.dni, "beam plus diffuse");
    }
}
