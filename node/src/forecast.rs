//! The automatic trader's forecast of a home's surplus or deficit per upcoming slot, from the
//! home's own history: the same slot on the last few days (solar and household habits repeat
//! daily) blended with the last minutes (today's weather). Pure; the node feeds it its
//! per-minute readings.

use std::collections::{HashMap, VecDeque};

const DAY_MS: u64 = 86_400_000;
/// How many past days of each slot are kept.
pub const DAYS: usize = 7;

/// Mean grid power per time-of-day slot over the last [`DAYS`] days.
#[derive(Debug, Clone, Default)]
pub struct SlotProfile {
    slot_ms: u64,
    /// Per slot of the (UTC) day: (day number, sum of minute means in W, minutes).
    buckets: HashMap<u64, VecDeque<(u64, f64, u32)>>,
}

impl SlotProfile {
    /// An empty profile for slots of `slot_ms`.
    pub fn new(slot_ms: u64) -> SlotProfile {
        SlotProfile {
            slot_ms: slot_ms.max(60_000),
            buckets: HashMap::new(),
        }
    }

    /// Records one minute's mean grid power (W, positive import).
    pub fn record(&mut self, minute_ms: u64, grid_w: f64) {
        if !grid_w.is_finite() {
            return;
        }
        let day = minute_ms / DAY_MS;
        let bucket = (minute_ms % DAY_MS) / self.slot_ms;
        let q = self.buckets.entry(bucket).or_default();
        match q.back_mut() {
            Some((d, sum, n)) if *d == day => {
                *sum += grid_w;
                *n += 1;
            }
            Some((d, _, _)) if *d > day => {} // older than what we hold: ignore
            _ => {
                q.push_back((day, grid_w, 1));
                while q.len() > DAYS + 1 {
                    q.pop_front();
                }
            }
        }
    }

    /// The mean grid power in the slot starting at `slot_ms` on each of the previous days
    /// held (not the slot's own day), newest first.
    pub fn history(&self, slot_ms: u64) -> Vec<f64> {
        let day = slot_ms / DAY_MS;
        let bucket = (slot_ms % DAY_MS) / self.slot_ms;
        self.buckets
            .get(&bucket)
            .map(|q| {
                q.iter()
                    .rev()
                    .filter(|(d, _, n)| *d < day && *n > 0)
                    .take(DAYS)
                    .map(|(_, sum, n)| sum / f64::from(*n))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Expected net export (Wh, positive: surplus) in a slot `ahead` slots from now, from the
/// recent mean grid power and the same slot's history (W, positive import).
///
/// The nearer the slot, the more the last minutes count (the weather now); further ahead the
/// daily pattern takes over. With no history, the recent mean stands for every slot; with
/// neither, nothing is expected.
pub fn expected_export_wh(
    recent_w: Option<f64>,
    history_w: &[f64],
    ahead: u64,
    slot_minutes: u64,
) -> i64 {
    let hist =
        (!history_w.is_empty()).then(|| history_w.iter().sum::<f64>() / history_w.len() as f64);
    let w = match (recent_w, hist) {
        (Some(r), Some(h)) => {
            let alpha = 0.7 / (1.0 + ahead as f64);
            alpha * r + (1.0 - alpha) * h
        }
        (Some(r), None) => r,
        (None, Some(h)) => h,
        (None, None) => 0.0,
    };
    (-w * slot_minutes as f64 / 60.0).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOT: u64 = 900_000;

    #[test]
    fn the_profile_keeps_each_slot_per_day_and_forgets_old_days() {
        let mut p = SlotProfile::new(SLOT);
        // Ten days of noon exports of -2000 W (day d exports -2000 - d).
        for d in 0..10u64 {
            for m in 0..15 {
                p.record(d * DAY_MS + 12 * 3_600_000 + m * 60_000, -2000.0 - d as f64);
            }
        }
        let h = p.history(10 * DAY_MS + 12 * 3_600_000);
        assert_eq!(h.len(), DAYS);
        assert_eq!(h[0], -2009.0, "yesterday first");
        assert_eq!(h[DAYS - 1], -2003.0);
        // Another slot of the day has no history.
        assert!(p.history(10 * DAY_MS).is_empty());
        // The slot's own day is not history.
        assert_eq!(p.history(9 * DAY_MS + 12 * 3_600_000)[0], -2008.0);
    }

    #[test]
    fn near_slots_follow_the_weather_now_and_far_slots_the_daily_pattern() {
        // Yesterday at this time: 2 kW export. Now: clouds, 500 W import.
        let h = [-2000.0];
        let near = expected_export_wh(Some(500.0), &h, 0, 15);
        let far = expected_export_wh(Some(500.0), &h, 8, 15);
        assert!(near < far, "{near} {far}");
        assert!(far > 0 && far <= 500, "{far}");
        assert_eq!(expected_export_wh(Some(-1000.0), &[], 3, 15), 250);
        assert_eq!(expected_export_wh(None, &h, 0, 15), 500);
        assert_eq!(expected_export_wh(None, &[], 0, 15), 0);
    }
}
