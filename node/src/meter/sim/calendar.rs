//! Civil dates and local time for the simulation: households live by the local clock (breakfast
//! at 7 in winter and in summer), the sun by UTC. A small rule-based time zone avoids a time
//! zone database: a standard offset and one of the daylight-saving rules in force today.

use serde::{Deserialize, Serialize};

/// Milliseconds in a day of 24 hours.
pub const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// A civil (proleptic Gregorian) date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Date {
    /// Year, e.g. 2025.
    pub year: i32,
    /// Month, 1 to 12.
    pub month: u32,
    /// Day of the month, 1 to 31.
    pub day: u32,
}

impl Date {
    /// A date, if it exists.
    pub fn new(year: i32, month: u32, day: u32) -> Option<Date> {
        let d = Date { year, month, day };
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        Some(d)
    }

    /// Days since 1970-01-01.
    pub fn days_since_epoch(self) -> i64 {
        // Shift the year to start in March, so the leap day is the year's last day; then count
        // 400-year eras of 146 097 days.
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let mp = (m + 9) % 12; // March = 0
        let doy = (153 * mp + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` days after 1970-01-01.
    pub fn from_days_since_epoch(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// Day of the year, 1 for 1 January.
    pub fn day_of_year(self) -> u32 {
        let jan1 = Date {
            year: self.year,
            month: 1,
            day: 1,
        };
        (self.days_since_epoch() - jan1.days_since_epoch() + 1) as u32
    }

    /// Day of the week, 0 for Monday to 6 for Sunday.
    pub fn weekday(self) -> u32 {
        // 1970-01-01 was a Thursday (3).
        (self.days_since_epoch() + 3).rem_euclid(7) as u32
    }

    /// Saturday or Sunday.
    pub fn is_weekend(self) -> bool {
        self.weekday() >= 5
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl From<Date> for String {
    fn from(d: Date) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for Date {
    type Error = String;
    fn try_from(s: String) -> Result<Date, String> {
        let bad = || format!("not a date (YYYY-MM-DD): {s:?}");
        let mut parts = s.splitn(3, '-');
        let year = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let month = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let day = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        Date::new(year, month, day).ok_or_else(bad)
    }
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// The `n`th (1-based) given weekday (0 = Monday) of a month.
fn nth_weekday(year: i32, month: u32, weekday: u32, n: u32) -> Date {
    let first = Date {
        year,
        month,
        day: 1,
    };
    let shift = (weekday + 7 - first.weekday()) % 7;
    Date {
        year,
        month,
        day: 1 + shift + 7 * (n - 1),
    }
}

/// The last given weekday (0 = Monday) of a month.
fn last_weekday(year: i32, month: u32, weekday: u32) -> Date {
    let last = Date {
        year,
        month,
        day: days_in_month(year, month),
    };
    let back = (last.weekday() + 7 - weekday) % 7;
    Date {
        day: last.day - back,
        ..last
    }
}

/// Daylight-saving rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DstRule {
    /// No daylight-saving time (Arizona, Hawaii, most of the tropics).
    None,
    /// United States and Canada since 2007: from the second Sunday in March at 02:00 local
    /// standard time to the first Sunday in November at 02:00 local daylight time.
    UnitedStates,
    /// European Union: from the last Sunday in March to the last Sunday in October, both at
    /// 01:00 UTC.
    EuropeanUnion,
}

/// A time zone as a rule: a standard offset from UTC and a daylight-saving rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeZone {
    /// Standard time's offset from UTC, minutes (America/Chicago: -360).
    pub standard_offset_minutes: i32,
    /// Daylight-saving rule (one hour ahead while in force).
    pub dst: DstRule,
}

impl TimeZone {
    /// America/Chicago (Ames, Iowa): UTC-6, US daylight saving.
    pub const AMERICA_CHICAGO: TimeZone = TimeZone {
        standard_offset_minutes: -360,
        dst: DstRule::UnitedStates,
    };

    fn standard_ms(&self) -> i64 {
        i64::from(self.standard_offset_minutes) * 60_000
    }

    /// The offset from UTC in force at `utc_ms`, milliseconds.
    pub fn offset_ms(&self, utc_ms: i64) -> i64 {
        let std = self.standard_ms();
        let year = Date::from_days_since_epoch((utc_ms + std).div_euclid(DAY_MS)).year;
        let (start_utc, end_utc) = match self.dst {
            DstRule::None => return std,
            DstRule::UnitedStates => {
                let start = nth_weekday(year, 3, 6, 2).days_since_epoch() * DAY_MS + 2 * HOUR_MS;
                let end = nth_weekday(year, 11, 6, 1).days_since_epoch() * DAY_MS + 2 * HOUR_MS;
                (start - std, end - (std + HOUR_MS))
            }
            DstRule::EuropeanUnion => {
                let start = last_weekday(year, 3, 6).days_since_epoch() * DAY_MS + HOUR_MS;
                let end = last_weekday(year, 10, 6).days_since_epoch() * DAY_MS + HOUR_MS;
                (start, end)
            }
        };
        if (start_utc..end_utc).contains(&utc_ms) {
            std + HOUR_MS
        } else {
            std
        }
    }

    /// The local day number (days since 1970-01-01 on the local calendar) at `utc_ms`, and the
    /// milliseconds since local midnight.
    pub fn local_day(&self, utc_ms: i64) -> (i64, i64) {
        let local = utc_ms + self.offset_ms(utc_ms);
        (local.div_euclid(DAY_MS), local.rem_euclid(DAY_MS))
    }

    /// The UTC instant of local midnight starting local day `day`. Midnight is never inside a
    /// daylight-saving change for the rules above, so it always exists and is unique.
    pub fn midnight_utc_ms(&self, day: i64) -> i64 {
        let local = day * DAY_MS;
        // Guess with the standard offset, then correct with the offset in force there: at
        // midnight the offset is the same as at the guess (changes happen at 01:00 or 02:00).
        let guess = local - self.standard_ms();
        local - self.offset_ms(guess)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_known_weekdays() {
        for days in [
            -800_000, -1, 0, 1, 59, 365, 11_016, 19_000, 20_000, 2_000_000,
        ] {
            let d = Date::from_days_since_epoch(days);
            assert_eq!(d.days_since_epoch(), days, "{d}");
        }
        let d = Date::new(2025, 6, 21).unwrap();
        assert_eq!(d.weekday(), 5, "21 June 2025 was a Saturday");
        assert!(d.is_weekend());
        assert_eq!(d.day_of_year(), 172);
        assert_eq!(Date::new(2024, 12, 31).unwrap().day_of_year(), 366);
        assert_eq!(Date::new(2000, 3, 1).unwrap().days_since_epoch(), 11_017);
        assert!(Date::new(2025, 2, 29).is_none());
        assert_eq!(
            Date::try_from("2025-01-01".to_string()),
            Ok(Date::new(2025, 1, 1).unwrap())
        );
        assert!(Date::try_from("2025-13-01".to_string()).is_err());
    }

    #[test]
    fn chicago_daylight_saving_2025() {
        let tz = TimeZone::AMERICA_CHICAGO;
        // DST 2025: 9 March 08:00 UTC to 2 November 07:00 UTC.
        let start = Date::new(2025, 3, 9).unwrap().days_since_epoch() * DAY_MS + 8 * HOUR_MS;
        let end = Date::new(2025, 11, 2).unwrap().days_since_epoch() * DAY_MS + 7 * HOUR_MS;
        assert_eq!(tz.offset_ms(start - 1), -6 * HOUR_MS);
        assert_eq!(tz.offset_ms(start), -5 * HOUR_MS);
        assert_eq!(tz.offset_ms(end - 1), -5 * HOUR_MS);
        assert_eq!(tz.offset_ms(end), -6 * HOUR_MS);
        // Local days around the changes are 23 and 25 hours long.
        let mar9 = Date::new(2025, 3, 9).unwrap().days_since_epoch();
        let nov2 = Date::new(2025, 11, 2).unwrap().days_since_epoch();
        assert_eq!(
            tz.midnight_utc_ms(mar9 + 1) - tz.midnight_utc_ms(mar9),
            23 * HOUR_MS
        );
        assert_eq!(
            tz.midnight_utc_ms(nov2 + 1) - tz.midnight_utc_ms(nov2),
            25 * HOUR_MS
        );
        // Midnight is midnight on the local clock.
        for day in [mar9, mar9 + 1, nov2, nov2 + 1, mar9 + 100] {
            assert_eq!(tz.local_day(tz.midnight_utc_ms(day)), (day, 0));
        }
    }

    #[test]
    fn european_rule() {
        let tz = TimeZone {
            standard_offset_minutes: 60,
            dst: DstRule::EuropeanUnion,
        };
        // EU DST 2025: 30 March 01:00 UTC to 26 October 01:00 UTC.
        let start = Date::new(2025, 3, 30).unwrap().days_since_epoch() * DAY_MS + HOUR_MS;
        let end = Date::new(2025, 10, 26).unwrap().days_since_epoch() * DAY_MS + HOUR_MS;
        assert_eq!(tz.offset_ms(start - 1), HOUR_MS);
        assert_eq!(tz.offset_ms(start), 2 * HOUR_MS);
        assert_eq!(tz.offset_ms(end), HOUR_MS);
    }
}
