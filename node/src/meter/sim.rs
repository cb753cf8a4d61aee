//! The simulated meter, the default source and the testnet's: a household's load, a rooftop
//! array under seeded clouds and, optionally, a home battery, metered at the grid connection.
//!
//! # Every value is a function of (seed, home, time)
//!
//! A home can be killed, frozen or restarted without its series changing: no value depends on
//! when or how often the meter was polled. Randomness is a hash of (seed, home, purpose, time
//! bucket) ([`noise`]), never a stream. The battery and the registers are path dependent, so
//! they are computed by integrating in fixed steps from a fixed origin:
//!
//! - time is cut into steps of `step_secs` (default 60 s) aligned to local midnight; each step's
//!   power is the model evaluated at the step's midpoint and is held for the whole step, so a
//!   reading is the power of the step that contains it;
//! - the battery's state of charge starts at `initial_fraction` at local midnight of
//!   `registers_from` and is carried from step to step and from day to day; before that day the
//!   battery stands idle;
//! - registers start at zero at the same midnight.
//!
//! A fresh instance asked about a time far from the origin integrates every day since the origin
//! once (2.3 ms per simulated day measured in an unoptimised test build, so a year costs under
//! a second) and keeps each day's end totals, so later polls are cheap. Move `registers_from`
//! forward for long-running simulations. The results are bit-for-bit the same in any order on one
//! build; across CPUs and math libraries the last bits of `exp` and `sin` may differ, which
//! matters for the testnet's reproducibility only, never for a signed value.
//!
//! # Rounding
//!
//! Each step's energy per channel is its power times the step length, rounded to the nearest
//! whole milliwatt-hour: this is where floating-point power becomes integer energy. Positive
//! step energies add to the import register, negative ones to the export register. A register
//! read inside a step adds the elapsed share of that step's energy, rounded down. Registers are
//! kept in mWh and reported in Wh rounded down, so they never decrease.

pub mod calendar;
pub mod load;
mod noise;
pub mod solar;
pub mod weather;

use self::calendar::{Date, TimeZone};
use self::load::{HouseholdLoad, LoadConfig};
use self::solar::PvConfig;
use self::weather::{Climate, Regime, WeatherMode};
use super::{
    ChannelInfo, ChannelKind, ChannelStatus, Flow, Mains, MeterError, MeterSource, Reading,
    Registers, Sample, SourceInfo,
};
use serde::{Deserialize, Serialize};

/// Where the home is. The default is Ames, Iowa.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Location {
    /// Latitude, degrees north.
    pub latitude_deg: f64,
    /// Longitude, degrees east (west is negative).
    pub longitude_deg: f64,
    /// Height above sea level, metres (thinner air, more sun).
    pub elevation_m: f64,
    /// The local time zone, which sets the household's daily rhythm.
    pub time_zone: TimeZone,
}

impl Default for Location {
    fn default() -> Location {
        Location {
            latitude_deg: 42.03,
            longitude_deg: -93.62,
            elevation_m: 290.0,
            time_zone: TimeZone::AMERICA_CHICAGO,
        }
    }
}

/// A home battery. The default is about one Tesla Powerwall 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatteryConfig {
    /// Usable capacity, Wh.
    pub capacity_wh: f64,
    /// Most charging power, W.
    pub max_charge_w: f64,
    /// Most discharging power, W.
    pub max_discharge_w: f64,
    /// Energy out over energy in, for a full cycle; split evenly (square root) between
    /// charging and discharging.
    pub round_trip_efficiency: f64,
    /// Share of the capacity kept in reserve for outages: never discharged below.
    pub reserve_fraction: f64,
    /// State of charge at the origin, as a share of the capacity.
    pub initial_fraction: f64,
}

impl Default for BatteryConfig {
    fn default() -> BatteryConfig {
        BatteryConfig {
            capacity_wh: 13_500.0,
            max_charge_w: 5_000.0,
            max_discharge_w: 5_000.0,
            round_trip_efficiency: 0.9,
            reserve_fraction: 0.1,
            initial_fraction: 0.5,
        }
    }
}

/// The simulated meter's settings. Every home of a neighbourhood shares `seed` (so they share
/// the weather); each home has its own id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// The neighbourhood's seed: weather, and with the home id, each household's behaviour.
    pub seed: u64,
    /// Where the homes are.
    pub location: Location,
    /// The place's climate.
    pub climate: Climate,
    /// Seeded clouds or clear sky.
    pub weather: WeatherMode,
    /// The household's consumption.
    pub load: LoadConfig,
    /// The rooftop array, if any.
    pub pv: Option<PvConfig>,
    /// The home battery, if any.
    pub battery: Option<BatteryConfig>,
    /// The mains supply the readings claim.
    pub mains: Mains,
    /// The integration step, seconds; must divide an hour (so steps stay aligned to local
    /// midnight across daylight-saving changes).
    pub step_secs: u32,
    /// The local date at whose midnight registers start at zero and the battery starts at its
    /// initial charge.
    pub registers_from: Date,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            seed: 1,
            location: Location::default(),
            climate: Climate::default(),
            weather: WeatherMode::Seeded,
            load: LoadConfig::default(),
            pv: Some(PvConfig::default()),
            battery: None,
            mains: Mains::default(),
            step_secs: 60,
            registers_from: Date {
                year: 2025,
                month: 1,
                day: 1,
            },
        }
    }
}

/// A home id from a name (for testnet homes named `home-07` and the like): a stable hash.
pub fn home_id(name: &str) -> u64 {
    name.bytes()
        .fold(0x6a09_e667_f3bc_c908, |h, b| noise::mix64(h ^ u64::from(b)))
}

/// What the home's model says at one instant, before any battery: household consumption and
/// array output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Instant {
    /// Household consumption, W (positive).
    pub load_w: f64,
    /// Array output, W (positive; the solar channel reports it negative).
    pub production_w: f64,
    /// Clearness index used (1 for clear sky).
    pub clearness: f64,
}

/// The powers of one step, W, signed as [`crate::meter`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HomePower {
    /// Grid connection: positive import, negative export.
    pub grid_w: f64,
    /// Household consumption (positive).
    pub load_w: f64,
    /// Solar: negative while producing.
    pub solar_w: f64,
    /// Battery: positive charging, negative discharging.
    pub battery_w: f64,
}

/// Everything the simulated home says at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HomeState {
    /// The powers of the step containing the time.
    pub power: HomePower,
    /// Registers of the grid, load, solar and battery channels, in that order.
    pub registers: [Registers; 4],
    /// The battery's state of charge at the start of the step, Wh (`None` without a battery).
    pub battery_soc_wh: Option<f64>,
}

const GRID: usize = 0;
const LOAD: usize = 1;
const SOLAR: usize = 2;
const BATTERY: usize = 3;
const CHANNELS: usize = 4;

/// Totals at the end of one local day.
#[derive(Debug, Clone, Copy, Default)]
struct DayEnd {
    import_mwh: [u64; CHANNELS],
    export_mwh: [u64; CHANNELS],
    soc_wh: f64,
}

/// One step of a computed day.
#[derive(Debug, Clone, Copy)]
struct Step {
    power: HomePower,
    soc_wh: f64,
    /// Signed energy of the step per channel, mWh.
    mwh: [i64; CHANNELS],
    /// Register totals within the day at the step's start, mWh.
    import_before: [u64; CHANNELS],
    export_before: [u64; CHANNELS],
}

/// One computed local day.
#[derive(Debug, Clone)]
struct Day {
    day: i64,
    start_ms: i64,
    steps: Vec<Step>,
    end: DayEnd,
}

/// One simulated home: the model plus caches of the days it has integrated. The caches never
/// change an answer, only how fast it comes.
#[derive(Debug, Clone)]
pub struct SimHome {
    cfg: SimConfig,
    home: u64,
    load: HouseholdLoad,
    step_ms: i64,
    origin_day: i64,
    /// `ends[i]`: totals at the end of local day `origin_day + i`.
    ends: Vec<DayEnd>,
    /// The most recently computed days (at most two).
    days: Vec<Day>,
}

impl SimHome {
    /// The home `home` under `cfg`.
    pub fn new(cfg: SimConfig, home: u64) -> Result<SimHome, MeterError> {
        if cfg.step_secs == 0 || 3600 % cfg.step_secs != 0 {
            return Err(MeterError::Config(format!(
                "step_secs must divide 3600, got {}",
                cfg.step_secs
            )));
        }
        if let Some(b) = &cfg.battery {
            let ok = b.capacity_wh > 0.0
                && b.max_charge_w >= 0.0
                && b.max_discharge_w >= 0.0
                && b.round_trip_efficiency > 0.0
                && b.round_trip_efficiency <= 1.0
                && (0.0..1.0).contains(&b.reserve_fraction)
                && (0.0..=1.0).contains(&b.initial_fraction);
            if !ok {
                return Err(MeterError::Config(format!(
                    "battery settings out of range: {b:?}"
                )));
            }
        }
        if let Some(pv) = &cfg.pv {
            if !(pv.kwp >= 0.0 && (0.0..=90.0).contains(&pv.tilt_deg)) {
                return Err(MeterError::Config(format!(
                    "PV settings out of range: {pv:?}"
                )));
            }
        }
        let load = HouseholdLoad::new(&cfg.load, &cfg.climate, cfg.seed, home)
            .map_err(MeterError::Config)?;
        Ok(SimHome {
            step_ms: i64::from(cfg.step_secs) * 1000,
            origin_day: cfg.registers_from.days_since_epoch(),
            cfg,
            home,
            load,
            ends: Vec::new(),
            days: Vec::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The household model (for its expected daily energy).
    pub fn household(&self) -> &HouseholdLoad {
        &self.load
    }

    /// Consumption and array output at exactly `utc_ms`, without any battery. A pure function
    /// of (seed, home, time).
    pub fn instant(&self, utc_ms: i64) -> Instant {
        let tz = self.cfg.location.time_zone;
        let (day, local_ms) = tz.local_day(utc_ms);
        let load_w = self.load.power_w(utc_ms, day, local_ms);
        let Some(pv) = &self.cfg.pv else {
            return Instant {
                load_w,
                production_w: 0.0,
                clearness: 1.0,
            };
        };
        let loc = &self.cfg.location;
        let sun = solar::sun_position(utc_ms, loc.latitude_deg, loc.longitude_deg);
        if sun.zenith_deg >= 90.0 {
            return Instant {
                load_w,
                production_w: 0.0,
                clearness: 1.0,
            };
        }
        let date = Date::from_days_since_epoch(day);
        let doy = date.day_of_year();
        let irr = solar::clear_sky(sun.zenith_deg, doy, loc.elevation_m);
        let poa = solar::plane_of_array(&sun, &irr, pv.tilt_deg, pv.azimuth_deg, pv.albedo);
        let clearness = match self.cfg.weather {
            WeatherMode::ClearSky => 1.0,
            WeatherMode::Seeded => {
                let regime = weather::regime(&self.cfg.climate, self.cfg.seed, day, date.month);
                weather::clearness(self.cfg.seed, self.home, regime, utc_ms)
            }
        };
        let air_c = self.cfg.climate.air_c(doy, local_ms as f64 / 3_600_000.0);
        Instant {
            load_w,
            production_w: pv.output_w(poa * clearness, air_c),
            clearness,
        }
    }

    /// The weather regime of the local day containing `utc_ms` (always clear with
    /// [`WeatherMode::ClearSky`]).
    pub fn regime(&self, utc_ms: i64) -> Regime {
        match self.cfg.weather {
            WeatherMode::ClearSky => Regime::Clear,
            WeatherMode::Seeded => {
                let (day, _) = self.cfg.location.time_zone.local_day(utc_ms);
                let month = Date::from_days_since_epoch(day).month;
                weather::regime(&self.cfg.climate, self.cfg.seed, day, month)
            }
        }
    }

    /// The state at `utc_ms`: the powers of the step containing it, the registers and the
    /// battery's charge. Depends only on (settings, home, time).
    pub fn state_at(&mut self, utc_ms: i64) -> HomeState {
        let (day, _) = self.cfg.location.time_zone.local_day(utc_ms);
        let step_ms = self.step_ms;
        let has_battery = self.cfg.battery.is_some();
        let in_service = day >= self.origin_day;
        let base = self.end_before(day);
        let d = self.day(day, base.soc_wh);
        let into = (utc_ms - d.start_ms).max(0);
        let idx = usize::try_from(into / step_ms).unwrap_or(0);
        // `idx` is within the day by construction; the fallback only guards the arithmetic.
        let Some(step) = d.steps.get(idx).or(d.steps.last()) else {
            return HomeState {
                power: HomePower::default(),
                registers: [Registers::default(); 4],
                battery_soc_wh: None,
            };
        };
        let elapsed = into - (idx as i64) * step_ms;
        let mut registers = [Registers::default(); 4];
        for (ch, reg) in registers.iter_mut().enumerate() {
            let part = (u128::from(step.mwh[ch].unsigned_abs()) * elapsed.clamp(0, step_ms) as u128
                / step_ms as u128) as u64;
            let (imp_part, exp_part) = if step.mwh[ch] >= 0 {
                (part, 0)
            } else {
                (0, part)
            };
            let imp = base.import_mwh[ch] + step.import_before[ch] + imp_part;
            let exp = base.export_mwh[ch] + step.export_before[ch] + exp_part;
            *reg = Registers {
                import_wh: imp / 1000,
                export_wh: exp / 1000,
            };
        }
        HomeState {
            power: step.power,
            registers: if in_service {
                registers
            } else {
                [Registers::default(); 4]
            },
            battery_soc_wh: has_battery.then_some(step.soc_wh),
        }
    }

    /// Totals at the start of local day `day` (all zero, initial charge, up to the origin).
    fn end_before(&mut self, day: i64) -> DayEnd {
        let initial = DayEnd {
            soc_wh: self
                .cfg
                .battery
                .as_ref()
                .map(|b| b.capacity_wh * b.initial_fraction)
                .unwrap_or(0.0),
            ..DayEnd::default()
        };
        if day <= self.origin_day {
            return initial;
        }
        let wanted = usize::try_from(day - self.origin_day).unwrap_or(0);
        while self.ends.len() < wanted {
            let d = self.origin_day + self.ends.len() as i64;
            let start = self.ends.last().copied().unwrap_or(initial);
            let end = self.day(d, start.soc_wh).end;
            let mut total = end;
            for ch in 0..CHANNELS {
                total.import_mwh[ch] += start.import_mwh[ch];
                total.export_mwh[ch] += start.export_mwh[ch];
            }
            self.ends.push(total);
        }
        self.ends.get(wanted - 1).copied().unwrap_or(initial)
    }

    /// Local day `day` computed from a start-of-day charge, from the cache if there.
    fn day(&mut self, day: i64, start_soc_wh: f64) -> &Day {
        if let Some(pos) = self.days.iter().position(|d| d.day == day) {
            return &self.days[pos];
        }
        let computed = self.compute_day(day, start_soc_wh);
        if self.days.len() >= 2 {
            self.days.remove(0);
        }
        self.days.push(computed);
        self.days.last().expect("a day was just pushed")
    }

    /// Integrates one local day in fixed steps.
    fn compute_day(&self, day: i64, start_soc_wh: f64) -> Day {
        let tz = self.cfg.location.time_zone;
        let start_ms = tz.midnight_utc_ms(day);
        let end_ms = tz.midnight_utc_ms(day + 1);
        let n = ((end_ms - start_ms) / self.step_ms).max(0);
        let step_h = self.step_ms as f64 / 3_600_000.0;
        let battery = self.cfg.battery.as_ref().filter(|_| day >= self.origin_day);
        let mut soc = start_soc_wh;
        let mut import = [0u64; CHANNELS];
        let mut export = [0u64; CHANNELS];
        let mut steps = Vec::with_capacity(n as usize);
        for s in 0..n {
            let mid = start_ms + s * self.step_ms + self.step_ms / 2;
            let inst = self.instant(mid);
            let soc_before = soc;
            let battery_w = match battery {
                Some(b) => dispatch(b, inst.production_w - inst.load_w, step_h, &mut soc),
                None => 0.0,
            };
            let power = HomePower {
                grid_w: inst.load_w - inst.production_w + battery_w,
                load_w: inst.load_w,
                solar_w: -inst.production_w,
                battery_w,
            };
            let mut mwh = [0i64; CHANNELS];
            for (ch, p) in [
                (GRID, power.grid_w),
                (LOAD, power.load_w),
                (SOLAR, power.solar_w),
                (BATTERY, power.battery_w),
            ] {
                // W × h = Wh; × 1000 = mWh. Rounded to the nearest mWh: the conversion point.
                mwh[ch] = (p * step_h * 1000.0).round() as i64;
            }
            steps.push(Step {
                power,
                soc_wh: soc_before,
                mwh,
                import_before: import,
                export_before: export,
            });
            for ch in 0..CHANNELS {
                if mwh[ch] >= 0 {
                    import[ch] += mwh[ch].unsigned_abs();
                } else {
                    export[ch] += mwh[ch].unsigned_abs();
                }
            }
        }
        Day {
            day,
            start_ms,
            steps,
            end: DayEnd {
                import_mwh: import,
                export_mwh: export,
                soc_wh: soc,
            },
        }
    }
}

/// The battery's power for one step (positive charging, negative discharging) given the
/// home's `surplus_w` (array output less consumption), updating the charge `soc_wh`. It
/// absorbs surplus and covers deficit within its power limits, its capacity and its reserve.
fn dispatch(b: &BatteryConfig, surplus_w: f64, step_h: f64, soc_wh: &mut f64) -> f64 {
    let eta = b.round_trip_efficiency.sqrt();
    if surplus_w > 0.0 {
        let room_wh = (b.capacity_wh - *soc_wh).max(0.0);
        let charge_w = surplus_w.min(b.max_charge_w).min(room_wh / (step_h * eta));
        *soc_wh += charge_w * step_h * eta;
        charge_w
    } else {
        let floor_wh = b.capacity_wh * b.reserve_fraction;
        let available_wh = (*soc_wh - floor_wh).max(0.0);
        let discharge_w = (-surplus_w)
            .min(b.max_discharge_w)
            .min(available_wh * eta / step_h);
        *soc_wh -= discharge_w * step_h / eta;
        -discharge_w
    }
}

/// The simulated meter as a [`MeterSource`]: grid, load and, where configured, solar and
/// battery channels.
#[derive(Debug, Clone)]
pub struct SimMeter {
    home: SimHome,
    info: SourceInfo,
    /// For each channel of `info`, the internal channel index.
    map: Vec<usize>,
}

impl SimMeter {
    /// The simulated meter of `home` under `cfg`.
    pub fn new(cfg: SimConfig, home: u64) -> Result<SimMeter, MeterError> {
        let mut channels = vec![
            (GRID, "grid", ChannelKind::Grid),
            (LOAD, "load", ChannelKind::Load),
        ];
        if cfg.pv.is_some() {
            channels.push((SOLAR, "solar", ChannelKind::Solar));
        }
        if cfg.battery.is_some() {
            channels.push((BATTERY, "battery", ChannelKind::Battery));
        }
        let info = SourceInfo {
            channels: channels
                .iter()
                .map(|(_, name, kind)| ChannelInfo {
                    name: (*name).to_string(),
                    kind: *kind,
                    flow: Flow::Bidirectional,
                })
                .collect(),
            mains: cfg.mains,
            simulated: true,
        };
        info.check()?;
        Ok(SimMeter {
            home: SimHome::new(cfg, home)?,
            info,
            map: channels.iter().map(|(i, _, _)| *i).collect(),
        })
    }

    /// The simulated home behind the meter.
    pub fn home(&mut self) -> &mut SimHome {
        &mut self.home
    }
}

impl MeterSource for SimMeter {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn poll(&mut self, now_ms: u64) -> Result<Sample, MeterError> {
        let t = i64::try_from(now_ms)
            .map_err(|_| MeterError::Config(format!("time out of range: {now_ms}")))?;
        let state = self.home.state_at(t);
        let p = state.power;
        let powers = [p.grid_w, p.load_w, p.solar_w, p.battery_w];
        let readings = self
            .map
            .iter()
            .enumerate()
            .map(|(i, &ch)| Reading {
                channel: i,
                power_w: powers.get(ch).copied().unwrap_or(0.0),
                registers: state.registers.get(ch).copied(),
                status: ChannelStatus::Ok,
                legs: Vec::new(),
                frequency_hz: None,
            })
            .collect();
        Ok(Sample {
            at_ms: now_ms,
            readings,
        })
    }
}

#[cfg(test)]
mod tests;
