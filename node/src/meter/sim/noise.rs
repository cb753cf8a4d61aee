//! Randomness without a stream: every random number the simulation uses is a hash of
//! (seed, home, purpose, time bucket), so any value can be computed on its own, in any order,
//! after any restart, and always comes out the same.
//!
//! The mixing function is the finaliser of SplitMix64 (Steele, Lea and Flood, 2014), whose
//! constants are published with the algorithm; it is not cryptographic and needs not be.

/// What a random number is for. Each purpose gets its own independent stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The household's personality (peak times, amplitudes): one draw per home.
    Personality = 1,
    /// The day's consumption relative to the expected.
    DailyLoad = 2,
    /// Slow wander of the household load.
    LoadWander = 3,
    /// Appliance events (oven, dryer, kettle).
    Appliance = 4,
    /// Air-conditioner and furnace cycling.
    Hvac = 5,
    /// The day's weather regime (clear, partly cloudy, overcast).
    Weather = 6,
    /// Clouds passing: coarse, medium and fine octaves.
    Cloud = 7,
    /// Where a home sits under the passing clouds (a small time shift).
    CloudShift = 8,
}

/// SplitMix64's finaliser: a bijection on `u64` with good avalanche.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The random word for (seed, home, purpose, bucket).
pub(crate) fn hash(seed: u64, home: u64, purpose: Purpose, bucket: i64) -> u64 {
    let mut h = mix64(seed ^ 0x7761_7474_6d65_7368); // "wattmesh"
    h = mix64(h ^ home);
    h = mix64(h ^ (purpose as u64));
    mix64(h ^ bucket as u64)
}

/// A uniform number in [0, 1) from a random word (its top 53 bits).
pub(crate) fn unit(word: u64) -> f64 {
    (word >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform number in [0, 1) for (seed, home, purpose, bucket).
pub(crate) fn uniform(seed: u64, home: u64, purpose: Purpose, bucket: i64) -> f64 {
    unit(hash(seed, home, purpose, bucket))
}

/// A standard normal number for (seed, home, purpose, bucket), by the Box–Muller transform of
/// two uniforms drawn from one word each.
pub(crate) fn normal(seed: u64, home: u64, purpose: Purpose, bucket: i64) -> f64 {
    let w = hash(seed, home, purpose, bucket);
    // 1 - u lies in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - unit(w);
    let u2 = unit(mix64(w ^ 0x5851_f42d_4c95_7f2d));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Smooth noise in [-1, 1]: uniform values at knots `bucket_ms` apart, joined by cosine
/// interpolation, so the value is continuous in time and has no jumps at knots. Its mean over
/// time is 0.
pub(crate) fn smooth(
    seed: u64,
    home: u64,
    purpose: Purpose,
    octave: i64,
    t_ms: i64,
    bucket_ms: i64,
) -> f64 {
    let k = t_ms.div_euclid(bucket_ms);
    let frac = t_ms.rem_euclid(bucket_ms) as f64 / bucket_ms as f64;
    // Each octave has its own knots: bucket numbers are offset by the octave in the top bits.
    let knot =
        |k: i64| 2.0 * uniform(seed, home, purpose, k.wrapping_add(octave.wrapping_shl(48))) - 1.0;
    let a = knot(k);
    let b = knot(k + 1);
    let w = (1.0 - (std::f64::consts::PI * frac).cos()) / 2.0;
    a + (b - a) * w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_number_and_inputs_matter() {
        let a = uniform(1, 2, Purpose::Cloud, 3);
        assert_eq!(a, uniform(1, 2, Purpose::Cloud, 3));
        assert_ne!(a, uniform(2, 2, Purpose::Cloud, 3));
        assert_ne!(a, uniform(1, 3, Purpose::Cloud, 3));
        assert_ne!(a, uniform(1, 2, Purpose::Weather, 3));
        assert_ne!(a, uniform(1, 2, Purpose::Cloud, 4));
    }

    #[test]
    fn uniform_and_normal_have_the_right_moments() {
        let n = 20_000;
        let us: Vec<f64> = (0..n)
            .map(|k| uniform(7, 1, Purpose::Appliance, k))
            .collect();
        let mean = us.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "uniform mean {mean}");
        assert!(us.iter().all(|u| (0.0..1.0).contains(u)));
        let zs: Vec<f64> = (0..n)
            .map(|k| normal(7, 1, Purpose::DailyLoad, k))
            .collect();
        let zm = zs.iter().sum::<f64>() / n as f64;
        let zv = zs.iter().map(|z| (z - zm).powi(2)).sum::<f64>() / n as f64;
        assert!(zm.abs() < 0.03, "normal mean {zm}");
        assert!((zv - 1.0).abs() < 0.05, "normal variance {zv}");
    }

    #[test]
    fn smooth_noise_is_continuous_and_bounded() {
        let bucket = 60_000;
        let mut prev = smooth(3, 4, Purpose::Cloud, 0, -5 * bucket, bucket);
        for t in (-5 * bucket..5 * bucket).step_by(1000).skip(1) {
            let v = smooth(3, 4, Purpose::Cloud, 0, t, bucket);
            assert!((-1.0..=1.0).contains(&v));
            // The steepest cosine join (a swing of 2 over one bucket) moves at most pi/60 in a
            // sixtieth of a bucket.
            assert!((v - prev).abs() < 0.053, "jump at {t}: {prev} -> {v}");
            prev = v;
        }
    }
}
