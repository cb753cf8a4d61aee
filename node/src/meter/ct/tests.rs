//! Tests of the CT computation on synthetic mains waveforms.
//!
//! The waveforms are built here from first principles, not from the computation's formulas:
//! voltage and current are sums of a fundamental and 3rd and 5th harmonics with their own
//! amplitudes and phase angles, on a mains phase that drifts (the frequency wanders around 50
//! or 60 Hz), plus a DC bias on both, Gaussian noise from a seeded generator, and quantisation
//! to 10 or 12 bits. The two inputs are sampled in turn, with a skew between them and a
//! non-integer number of samples per cycle. The expected real power comes from the harmonic
//! amplitudes alone: for peak amplitudes `V_h`, `I_h` and the current lagging by `φ_h`,
//! `P = Σ V_h · I_h · cos φ_h / 2` (harmonics of different order contribute nothing on
//! average), `Vrms = √(Σ V_h² / 2)`, `Irms = √(Σ I_h² / 2)`, `PF = P / (Vrms · Irms)`.

use super::*;
use std::f64::consts::TAU;

/// xorshift64* (Vigna), with Box–Muller for Gaussian noise. Test-only.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn gaussian(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }
}

/// One harmonic: peak amplitudes in counts, the voltage's phase, and how far the current
/// lags the voltage at this harmonic, radians.
#[derive(Clone, Copy)]
struct Harmonic {
    order: f64,
    v_peak: f64,
    i_peak: f64,
    v_phase: f64,
    lag: f64,
}

/// A mains frequency `centre ± swing` Hz, wandering sinusoidally with period `period_s`.
#[derive(Clone, Copy)]
struct Mainsfreq {
    centre: f64,
    swing: f64,
    period_s: f64,
}

impl Mainsfreq {
    /// The mains phase angle at `t`: 2π times the integral of the frequency.
    fn phase(&self, t: f64) -> f64 {
        TAU * (self.centre * t - self.swing * self.period_s / TAU * (TAU * t / self.period_s).cos())
    }
}

#[derive(Clone)]
struct Signal {
    harmonics: Vec<Harmonic>,
    /// A second current on another input (a split-phase leg), if any.
    harmonics_b: Option<Vec<Harmonic>>,
    v_dc: f64,
    i_dc: f64,
    noise: f64,
    bits: u32,
    mains: Mainsfreq,
    /// Frames (one sample of each input) per second.
    frames_per_s: f64,
    /// Delay between one input's sample and the next input's, microseconds.
    skew_us: f64,
    /// A time lead of the current path over the true current, seconds (a CT's phase error).
    ct_lead_s: f64,
}

impl Signal {
    fn at(&self, h: &[Harmonic], t: f64, current: bool) -> f64 {
        let theta = self.mains.phase(t);
        let dc = if current { self.i_dc } else { self.v_dc };
        dc + h
            .iter()
            .map(|h| {
                if current {
                    h.i_peak * (h.order * theta + h.v_phase - h.lag).sin()
                } else {
                    h.v_peak * (h.order * theta + h.v_phase).sin()
                }
            })
            .sum::<f64>()
    }

    fn quantise(&self, x: f64, rng: &mut Rng) -> u16 {
        let max = f64::from((1u32 << self.bits) - 1);
        (x + self.noise * rng.gaussian()).round().clamp(0.0, max) as u16
    }

    /// Feeds `seconds` of samples into `meter` (voltage on input 0, currents on 1 and 2) and
    /// returns the cycles it reported.
    fn run(
        &self,
        meter: &mut CtMeter,
        from_s: f64,
        seconds: f64,
        rng: &mut Rng,
    ) -> Vec<CycleReport> {
        let mut reports = Vec::new();
        let first = (from_s * self.frames_per_s).ceil() as u64;
        let frames = (seconds * self.frames_per_s) as u64;
        for k in first..first + frames {
            let t = k as f64 / self.frames_per_s;
            let mut push = |input: u8, ts: f64, x: f64, rng: &mut Rng| {
                let raw = self.quantise(x, rng);
                if let Some(r) = meter.push(input, (ts * 1e6).round() as u64, raw) {
                    reports.push(r);
                }
            };
            push(0, t, self.at(&self.harmonics, t, false), rng);
            let ti = t + self.skew_us / 1e6;
            push(
                1,
                ti,
                self.at(&self.harmonics, ti + self.ct_lead_s, true),
                rng,
            );
            if let Some(hb) = &self.harmonics_b {
                let tb = ti + self.skew_us / 1e6;
                push(2, tb, self.at(hb, tb + self.ct_lead_s, true), rng);
            }
        }
        reports
    }

    fn expected_p_counts(h: &[Harmonic]) -> f64 {
        h.iter()
            .map(|h| h.v_peak * h.i_peak * h.lag.cos() / 2.0)
            .sum()
    }
    fn vrms_counts(h: &[Harmonic]) -> f64 {
        (h.iter().map(|h| h.v_peak * h.v_peak).sum::<f64>() / 2.0).sqrt()
    }
    fn irms_counts(h: &[Harmonic]) -> f64 {
        (h.iter().map(|h| h.i_peak * h.i_peak).sum::<f64>() / 2.0).sqrt()
    }
}

/// A distorted load: voltage with 4 % third and 3 % fifth harmonic, current with 30 % and 15 %
/// (a household's rectifiers), fundamental lag `lag1_deg`. Amplitudes are for 10 bits and
/// scaled by `scale`.
fn harmonics(lag1_deg: f64, scale: f64) -> Vec<Harmonic> {
    let h = |order, v, i, v_phase, lag_deg: f64| Harmonic {
        order,
        v_peak: v * scale,
        i_peak: i * scale,
        v_phase,
        lag: lag_deg.to_radians(),
    };
    vec![
        h(1.0, 300.0, 280.0, 0.0, lag1_deg),
        h(3.0, 12.0, 84.0, 0.3, lag1_deg + 25.0),
        h(5.0, 9.0, 42.0, -0.7, lag1_deg - 55.0),
    ]
}

const V_SCALE: f64 = 170.0 / 300.0;
const I_SCALE: f64 = 0.1;

fn config(bits: u8, nominal_hz: f64, legs: Vec<CtInput>) -> CtConfig {
    CtConfig {
        mains: Mains {
            connection: if legs.len() == 2 {
                super::super::Connection::SplitPhase
            } else {
                super::super::Connection::SinglePhase
            },
            nominal_v: 120.0,
            nominal_hz,
        },
        adc_bits: bits,
        voltage: Some(VoltageInput {
            adc_input: 0,
            volts_per_count: V_SCALE,
        }),
        channels: vec![CtChannelConfig {
            name: "grid".into(),
            kind: ChannelKind::Grid,
            legs,
            direction: Direction::Measured,
        }],
        min_hz: 40.0,
        max_hz: 70.0,
        ..CtConfig::default()
    }
}

fn leg(adc_input: u8, amps_per_count: f64) -> CtInput {
    CtInput {
        adc_input,
        amps_per_count,
        phase_lead_deg: 0.0,
        invert_voltage: false,
        spans_both_legs: false,
        noise_floor_a: 0.05,
    }
}

fn signal(bits: u32, mains: Mainsfreq, lag1_deg: f64, frames_per_s: f64, skew_us: f64) -> Signal {
    let scale = f64::from(1u32 << (bits - 10));
    Signal {
        harmonics: harmonics(lag1_deg, scale),
        harmonics_b: None,
        v_dc: 519.0 * scale,
        i_dc: 505.0 * scale,
        noise: 1.0 * scale.sqrt(),
        bits,
        mains,
        frames_per_s,
        skew_us,
        ct_lead_s: 0.0,
    }
}

const DRIFT_50: Mainsfreq = Mainsfreq {
    centre: 50.0,
    swing: 0.2,
    period_s: 1.7,
};
const DRIFT_60: Mainsfreq = Mainsfreq {
    centre: 60.0,
    swing: 0.3,
    period_s: 1.3,
};

/// Energy-weighted mean power of the cycles, and the worst per-cycle power factor error.
fn summarise(reports: &[CycleReport], pf_expected: f64) -> (f64, f64, f64, f64) {
    let dur: f64 = reports.iter().map(|r| r.duration_s).sum();
    let p = reports
        .iter()
        .map(|r| r.channels[0].power_w * r.duration_s)
        .sum::<f64>()
        / dur;
    let pf_err = reports
        .iter()
        .map(|r| (r.channels[0].legs[0].power_factor - pf_expected).abs())
        .fold(0.0, f64::max);
    let v = reports
        .iter()
        .map(|r| r.channels[0].legs[0].vrms_v * r.duration_s)
        .sum::<f64>()
        / dur;
    let i = reports
        .iter()
        .map(|r| r.channels[0].legs[0].irms_a * r.duration_s)
        .sum::<f64>()
        / dur;
    (p, pf_err, v, i)
}

/// The required accuracy: real power within 0.5 %, power factor within 0.01, and the energy in
/// the right register, for 10 and 12 bits, at 50 and 60 Hz with drifting frequency, with power
/// flowing in (current lagging 25°) and out (lagging 160°, i.e. leading the reversed voltage
/// by 20°), at two sampling rates that give non-integer samples per cycle.
#[test]
fn real_power_and_power_factor_on_distorted_drifting_quantised_signals() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut worst_p: f64 = 0.0;
    let mut worst_pf: f64 = 0.0;
    for bits in [10u32, 12] {
        for (mains, nominal) in [(DRIFT_50, 50.0), (DRIFT_60, 60.0)] {
            for (frames_per_s, skew_us) in [(3917.3, 83.0), (1411.7, 310.0)] {
                for lag1 in [25.0, 160.0] {
                    let sig = signal(bits, mains, lag1, frames_per_s, skew_us);
                    let cfg = config(
                        bits as u8,
                        nominal,
                        vec![leg(1, I_SCALE / sig.harmonics[0].i_peak * 280.0)],
                    );
                    let mut meter = CtMeter::new(cfg).unwrap();
                    let seconds = 4.0;
                    let reports = sig.run(&mut meter, 0.0, seconds, &mut rng);
                    let h = &sig.harmonics;
                    let i_scale = I_SCALE * 280.0 / h[0].i_peak;
                    let p_expected = Signal::expected_p_counts(h) * V_SCALE * i_scale;
                    let v_expected = Signal::vrms_counts(h) * V_SCALE;
                    let i_expected = Signal::irms_counts(h) * i_scale;
                    let pf_expected = p_expected / (v_expected * i_expected);
                    let (p, pf_err, v, i) = summarise(&reports, pf_expected);
                    let p_err = (p / p_expected - 1.0).abs();
                    eprintln!(
                        "{bits} bit, {nominal} Hz ±{}, {frames_per_s} frames/s ({:.1}/cycle), lag {lag1}°: P {p:.1} W vs {p_expected:.1} W ({:.3} %), worst cycle PF error {pf_err:.4} (PF {pf_expected:.3}), Vrms {v:.2}/{v_expected:.2}, Irms {i:.3}/{i_expected:.3}, {} cycles",
                        mains.swing,
                        frames_per_s / nominal,
                        p_err * 100.0,
                        reports.len()
                    );
                    assert!(p_err < 0.005, "real power off by {:.3} %", p_err * 100.0);
                    assert!(pf_err < 0.01, "power factor off by {pf_err}");
                    assert!((v / v_expected - 1.0).abs() < 0.005);
                    assert!((i / i_expected - 1.0).abs() < 0.005);
                    // Every cycle but the partial first one is measured.
                    let (used, discarded) = meter.cycle_counts();
                    let cycles = seconds * nominal;
                    assert!(
                        used as f64 >= cycles - 3.0 && discarded <= 1,
                        "{used} used, {discarded} discarded"
                    );
                    // Each cycle's frequency is the drifting mains frequency, give or take the
                    // crossing-time jitter that noise causes (about 10 µs in 20 ms).
                    for r in &reports {
                        let f = r.frequency_hz.unwrap();
                        assert!((f - nominal).abs() <= mains.swing + 0.1, "{f} Hz");
                    }
                    // The energy is in the register of its direction, and only there.
                    let (imp, exp) = meter.registers_mwh(0).unwrap();
                    let dur: f64 = reports.iter().map(|r| r.duration_s).sum();
                    let e_mwh = p_expected.abs() * dur / 3.6;
                    let (filled, empty) = if lag1 < 90.0 { (imp, exp) } else { (exp, imp) };
                    assert_eq!(empty, 0, "lag {lag1}°: the other register stays empty");
                    assert!(
                        (filled as f64 / e_mwh - 1.0).abs() < 0.005,
                        "{filled} mWh vs {e_mwh:.0}"
                    );
                    worst_p = worst_p.max(p_err);
                    worst_pf = worst_pf.max(pf_err);
                }
            }
        }
    }
    eprintln!(
        "worst real power error {:.3} %, worst per-cycle PF error {worst_pf:.4}",
        worst_p * 100.0
    );
}

/// A CT whose signal leads the true current by 4° makes a 0.5-power-factor load read wrong by
/// several per cent; calibrating `phase_lead_deg = 4` brings it back within 0.5 %.
#[test]
fn phase_correction_cancels_a_clamp_phase_lead() {
    let lead_deg: f64 = 4.0;
    let mut sig = signal(12, DRIFT_60, 60.0, 3917.3, 83.0);
    sig.ct_lead_s = lead_deg / 360.0 / 60.0;
    let i_scale = I_SCALE / 4.0;
    let h = sig.harmonics.clone();
    // The CT's lead is a time shift, so it shifts harmonic n by n·4°; the expected power is
    // that of the true current.
    let p_expected = Signal::expected_p_counts(&h) * V_SCALE * i_scale;
    let measure = |phase_lead_deg: f64| {
        let mut l = leg(1, i_scale);
        l.phase_lead_deg = phase_lead_deg;
        let mut meter = CtMeter::new(config(12, 60.0, vec![l])).unwrap();
        let reports = sig.run(&mut meter, 0.0, 3.0, &mut Rng(7));
        summarise(&reports, 0.5).0
    };
    let uncorrected = measure(0.0);
    let corrected = measure(lead_deg);
    let err_u = (uncorrected / p_expected - 1.0).abs();
    let err_c = (corrected / p_expected - 1.0).abs();
    eprintln!(
        "4° CT lead at PF 0.5: uncorrected {:.2} %, corrected {:.3} %",
        err_u * 100.0,
        err_c * 100.0
    );
    assert!(
        err_u > 0.05,
        "an uncorrected 4° lead at PF 0.5 errs by about 12 %"
    );
    assert!(err_c < 0.005);
}

/// Split phase: one voltage reference, two clamps. A 240 V load draws the same current
/// through both legs, which on leg 2 is in phase with the *inverted* reference. With
/// `invert_voltage` on leg 2, both legs read import; if leg 2's circuit exports (solar on that
/// leg), the channel nets the legs the way the utility's meter does.
#[test]
fn split_phase_legs_net_like_a_utility_meter() {
    let mut sig = signal(12, DRIFT_60, 10.0, 3917.3, 60.0);
    // Leg 2's current (half of leg 1's) is in phase with −V: its lag relative to the
    // reference is 180° + 10°, so leg 2 imports, seen against the inverted voltage. The
    // voltage amplitudes are the reference's, for the expected power.
    let b_for_power: Vec<Harmonic> = harmonics(190.0, 2.0)
        .into_iter()
        .zip(sig.harmonics.iter())
        .map(|(mut hb, ha)| {
            hb.v_peak = ha.v_peak;
            hb
        })
        .collect();
    sig.harmonics_b = Some(b_for_power.clone());
    let i_scale = I_SCALE / 4.0;
    let mut leg2 = leg(2, i_scale);
    leg2.invert_voltage = true;
    let mut meter = CtMeter::new(config(12, 60.0, vec![leg(1, i_scale), leg2])).unwrap();
    let reports = sig.run(&mut meter, 0.0, 3.0, &mut Rng(11));
    let dur: f64 = reports.iter().map(|r| r.duration_s).sum();
    let mean = |f: &dyn Fn(&CycleReport) -> f64| {
        reports.iter().map(|r| f(r) * r.duration_s).sum::<f64>() / dur
    };
    let p1 = mean(&|r| r.channels[0].legs[0].real_power_w);
    let p2 = mean(&|r| r.channels[0].legs[1].real_power_w);
    let total = mean(&|r| r.channels[0].power_w);
    let p1_expected = Signal::expected_p_counts(&sig.harmonics) * V_SCALE * i_scale;
    // Against the inverted voltage, leg 2's current lags by 190° − 180° = 10°.
    let p2_expected = -Signal::expected_p_counts(&b_for_power) * V_SCALE * i_scale;
    eprintln!(
        "split phase: leg 1 {p1:.1} W ({p1_expected:.1}), leg 2 {p2:.1} W ({p2_expected:.1}), total {total:.1} W"
    );
    assert!(p2_expected > 0.0);
    assert!((p1 / p1_expected - 1.0).abs() < 0.005);
    assert!((p2 / p2_expected - 1.0).abs() < 0.005);
    assert!((total - (p1 + p2)).abs() < 1e-6 * total.abs());

    // Leg 2 exporting (current in phase with +V, i.e. lag 170° against the inverted one)
    // while leg 1 imports less: the channel's single flow goes to the export register.
    let mut sig2 = signal(12, DRIFT_60, 0.0, 3917.3, 60.0);
    for h in &mut sig2.harmonics {
        h.i_peak *= 0.3;
    }
    let export_b: Vec<Harmonic> = harmonics(0.0, 4.0)
        .into_iter()
        .zip(sig2.harmonics.iter())
        .map(|(mut hb, ha)| {
            hb.v_peak = ha.v_peak;
            hb
        })
        .collect();
    sig2.harmonics_b = Some(export_b.clone());
    let mut leg2 = leg(2, i_scale);
    leg2.invert_voltage = true;
    let mut meter = CtMeter::new(config(12, 60.0, vec![leg(1, i_scale), leg2])).unwrap();
    let reports = sig2.run(&mut meter, 0.0, 3.0, &mut Rng(12));
    let dur: f64 = reports.iter().map(|r| r.duration_s).sum();
    let total = reports
        .iter()
        .map(|r| r.channels[0].power_w * r.duration_s)
        .sum::<f64>()
        / dur;
    let expected = (Signal::expected_p_counts(&sig2.harmonics)
        - Signal::expected_p_counts(&export_b))
        * V_SCALE
        * i_scale;
    eprintln!("split phase, leg 2 exporting: net {total:.1} W ({expected:.1})");
    assert!(expected < 0.0);
    assert!((total / expected - 1.0).abs() < 0.005);
    let (imp, exp) = meter.registers_mwh(0).unwrap();
    assert_eq!(imp, 0);
    assert!(exp > 0);
}

/// Power that changes direction (a cloud passes over a home with solar) fills the import
/// register while importing and the export register while exporting.
#[test]
fn power_flowing_both_ways_fills_both_registers() {
    let mut rng = Rng(99);
    let import = signal(10, DRIFT_50, 20.0, 3917.3, 83.0);
    let export = signal(10, DRIFT_50, 170.0, 3917.3, 83.0);
    let mut meter = CtMeter::new(config(10, 50.0, vec![leg(1, I_SCALE)])).unwrap();
    let r1 = import.run(&mut meter, 0.0, 3.0, &mut rng);
    let (imp1, exp1) = meter.registers_mwh(0).unwrap();
    let r2 = export.run(&mut meter, 3.0, 3.0, &mut rng);
    let (imp2, exp2) = meter.registers_mwh(0).unwrap();
    let p_in = Signal::expected_p_counts(&import.harmonics) * V_SCALE * I_SCALE;
    let p_out = Signal::expected_p_counts(&export.harmonics) * V_SCALE * I_SCALE;
    let d1: f64 = r1.iter().map(|r| r.duration_s).sum();
    assert_eq!(exp1, 0);
    assert!((imp1 as f64 / (p_in * d1 / 3.6) - 1.0).abs() < 0.005);
    // At the change the waveform jumps inside one cycle; that cycle goes wherever its net
    // power points, so allow it.
    let cycle_mwh = p_in.abs().max(p_out.abs()) / 50.0 / 3.6;
    assert!(imp2 as f64 - imp1 as f64 <= cycle_mwh + 1.0);
    let d2: f64 = r2.iter().map(|r| r.duration_s).sum();
    let exported = exp2 as f64;
    assert!(
        (exported / (p_out.abs() * d2 / 3.6) - 1.0).abs() < 0.01,
        "{exported} mWh"
    );
    // Registers in whole Wh, never going back.
    let regs = meter.registers(0).unwrap();
    assert_eq!(regs.import_wh, imp2 / 1000);
    assert_eq!(regs.export_wh, exp2 / 1000);
}

/// A current under the noise floor reads as zero and adds nothing to either register.
#[test]
fn tiny_currents_below_the_noise_floor_read_zero() {
    let mut sig = signal(10, DRIFT_60, 30.0, 3917.3, 83.0);
    for h in &mut sig.harmonics {
        h.i_peak = 0.0;
    }
    sig.noise = 1.5;
    let mut l = leg(1, 0.293);
    l.noise_floor_a = 0.8;
    let mut meter = CtMeter::new(config(10, 60.0, vec![l.clone()])).unwrap();
    let reports = sig.run(&mut meter, 0.0, 2.0, &mut Rng(3));
    assert!(!reports.is_empty());
    for r in &reports {
        assert_eq!(r.channels[0].legs[0].irms_a, 0.0);
        assert_eq!(r.channels[0].power_w, 0.0);
        assert_eq!(r.channels[0].legs[0].power_factor, 0.0);
    }
    assert_eq!(meter.registers_mwh(0), Some((0, 0)));
    // Without the floor, the same noise reads as about 1.5 counts of current.
    l.noise_floor_a = 0.0;
    let mut meter = CtMeter::new(config(10, 60.0, vec![l])).unwrap();
    let reports = sig.run(&mut meter, 0.0, 2.0, &mut Rng(3));
    let irms = reports[5].channels[0].legs[0].irms_a;
    assert!(irms > 0.2 && irms < 0.8, "{irms} A of pure noise");
}

/// Without a voltage reference, a channel only knows the size of the current: a solar
/// inverter's output clamp reads nominal voltage × Irms × its power factor, always as export,
/// in windows of ten nominal cycles. Its type says so.
#[test]
fn a_channel_without_voltage_reference_counts_one_way_and_says_so() {
    let mut sig = signal(12, DRIFT_60, 0.0, 3917.3, 83.0);
    sig.harmonics.truncate(1);
    let cfg = CtConfig {
        mains: Mains {
            connection: super::super::Connection::SplitPhase,
            nominal_v: 240.0,
            nominal_hz: 60.0,
        },
        adc_bits: 12,
        voltage: None,
        channels: vec![CtChannelConfig {
            name: "grid".into(),
            kind: ChannelKind::Grid,
            legs: vec![leg(2, 0.025)],
            direction: Direction::Fixed {
                flow: FixedFlow::Import,
                power_factor: 1.0,
            },
        }],
        min_hz: 40.0,
        max_hz: 70.0,
        ..CtConfig::default()
    };
    // The grid channel must tell import from export: refused.
    assert_eq!(
        CtMeter::new(cfg.clone()).err(),
        Some(MeterError::GridNeedsVoltage)
    );
    // A measured channel needs the reference that is not there: refused.
    let mut measured = cfg.clone();
    measured.channels[0].direction = Direction::Measured;
    assert!(matches!(CtMeter::new(measured), Err(MeterError::Config(_))));

    // A measured grid channel elsewhere, and the inverter clamp on input 1, fixed export.
    let mut cfg = cfg;
    cfg.voltage = Some(VoltageInput {
        adc_input: 0,
        volts_per_count: V_SCALE,
    });
    cfg.channels[0].direction = Direction::Measured;
    cfg.channels[0].legs[0].adc_input = 2;
    cfg.channels.push(CtChannelConfig {
        name: "solar".into(),
        kind: ChannelKind::Solar,
        legs: vec![leg(1, 0.025)],
        direction: Direction::Fixed {
            flow: FixedFlow::Export,
            power_factor: 1.0,
        },
    });
    let meter = CtMeter::new(cfg.clone()).unwrap();
    assert_eq!(meter.info().channels[1].flow, Flow::ExportOnly);
    assert_eq!(meter.info().channels[0].flow, Flow::Bidirectional);

    // With no voltage input at all, only fixed channels can be measured: the solar clamp
    // alone, in fixed windows (its home's grid channel comes from another source).
    let solar_only = CtConfig {
        voltage: None,
        channels: vec![cfg.channels[1].clone()],
        ..cfg
    };
    let mut engine = CtMeter::new(solar_only).unwrap();
    assert_eq!(engine.info().grid_channel(), None);
    assert_eq!(engine.inputs(), [1]);
    let reports = sig.run(&mut engine, 0.0, 3.0, &mut Rng(5));
    assert!(reports.len() >= 15, "{} windows", reports.len());
    let irms_expected = sig.harmonics[0].i_peak / 2f64.sqrt() * 0.025;
    for r in reports.iter().skip(1) {
        let l = r.channels[0].legs[0];
        assert!(
            (l.irms_a / irms_expected - 1.0).abs() < 0.01,
            "{} vs {irms_expected}",
            l.irms_a
        );
        assert!(
            (r.channels[0].power_w + 240.0 * l.irms_a).abs() < 1e-9,
            "export, V nominal, PF 1"
        );
        assert_eq!(l.vrms_v, 240.0);
    }
    let (imp, exp) = engine.registers_mwh(0).unwrap();
    assert_eq!(imp, 0);
    assert!(exp > 0);
}

/// Polling averages the cycles since the last poll; a voltage reference that goes silent turns
/// the status to `Fault`, and registers keep their values.
#[test]
fn polling_averages_and_reports_a_silent_reference_as_fault() {
    let sig = signal(10, DRIFT_60, 30.0, 3917.3, 83.0);
    let mut meter = CtMeter::new(config(10, 60.0, vec![leg(1, I_SCALE)])).unwrap();
    let reports = sig.run(&mut meter, 0.0, 2.0, &mut Rng(1));
    let s = meter.poll(1_000).unwrap();
    let r = &s.readings[0];
    assert_eq!(r.status, ChannelStatus::Ok);
    let dur: f64 = reports.iter().map(|r| r.duration_s).sum();
    let p = reports
        .iter()
        .map(|r| r.channels[0].power_w * r.duration_s)
        .sum::<f64>()
        / dur;
    assert!((r.power_w - p).abs() < 1e-6 * p.abs());
    assert!((r.frequency_hz.unwrap() - 60.0).abs() < 0.3);
    assert!((r.legs[0].power_factor - reports[10].channels[0].legs[0].power_factor).abs() < 0.01);
    let before = r.registers.unwrap();

    // The voltage input reads a constant: no cycle closes.
    let mut flat = sig.clone();
    for h in &mut flat.harmonics {
        h.v_peak = 0.0;
    }
    flat.run(&mut meter, 2.0, 1.0, &mut Rng(2));
    let s = meter.poll(2_000).unwrap();
    assert_eq!(s.readings[0].status, ChannelStatus::Fault);
    assert_eq!(s.readings[0].power_w, 0.0);
    assert_eq!(s.readings[0].registers.unwrap(), before);
}

#[test]
fn integration_and_interpolation_are_exact_for_low_order_polynomials() {
    // Uneven sample times; the integral of a straight line by trapezoids is exact, also with
    // boundaries between samples.
    let pts: Vec<Point> = [0.0, 0.7, 1.1, 2.9, 3.0, 4.4]
        .iter()
        .map(|t| (*t, 2.0 * t + 1.0))
        .collect();
    let [s] = integrate(&pts, 0.3, 4.1, |_, y| [y]).unwrap();
    let exact = (4.1f64 * 4.1 + 4.1) - (0.3 * 0.3 + 0.3);
    assert!((s - exact).abs() < 1e-12);
    assert!(
        integrate(&pts, -1.0, 2.0, |_, y| [y]).is_none(),
        "must reach both ends"
    );
    // Cubic Lagrange reproduces a cubic exactly.
    let cubic = |t: f64| t * t * t - 2.0 * t + 0.5;
    let pts: Vec<Point> = [0.0, 0.4, 1.3, 1.9, 2.2, 3.5]
        .iter()
        .map(|t| (*t, cubic(*t)))
        .collect();
    for t in [0.2, 1.0, 1.5, 2.0, 3.0] {
        assert!((interpolate(&pts, t) - cubic(t)).abs() < 1e-9, "at {t}");
    }
}

#[test]
fn an_adc_input_used_twice_is_refused() {
    let cfg = config(10, 60.0, vec![leg(0, 0.1)]);
    assert!(matches!(CtMeter::new(cfg), Err(MeterError::Config(_))));
    let default = CtMeter::new(CtConfig::default()).unwrap();
    assert_eq!(default.inputs(), [0, 1, 2, 3]);
}

/// A 240 V inverter on a split-phase supply, one clamp on one of its two conductors: its
/// voltage is twice the 120 V reference, so with `spans_both_legs` the power is doubled, both
/// measured against the reference and assumed (fixed direction, measured voltage).
#[test]
fn one_clamp_on_a_240_v_circuit_counts_both_legs() {
    let sig = signal(12, DRIFT_60, 175.0, 3917.3, 83.0);
    let i_scale = I_SCALE / 4.0;
    let mut l = leg(1, i_scale);
    l.spans_both_legs = true;
    let mut cfg = config(12, 60.0, vec![leg(2, i_scale)]);
    cfg.channels.push(CtChannelConfig {
        name: "inverter".into(),
        kind: ChannelKind::Solar,
        legs: vec![l.clone()],
        direction: Direction::Measured,
    });
    cfg.channels.push(CtChannelConfig {
        name: "inverter, no direction".into(),
        kind: ChannelKind::Solar,
        legs: vec![CtInput { adc_input: 3, ..l }],
        direction: Direction::Fixed {
            flow: FixedFlow::Export,
            power_factor: 1.0,
        },
    });
    let mut meter = CtMeter::new(cfg).unwrap();
    // Inputs 2 and 3 carry nothing; the run feeds inputs 0 and 1, so feed 3 by hand too.
    let mut rng = Rng(21);
    let mut reports = Vec::new();
    for k in 0..(2.0 * sig.frames_per_s) as u64 {
        let t = k as f64 / sig.frames_per_s;
        let us = |t: f64| (t * 1e6).round() as u64;
        let v = sig.quantise(sig.at(&sig.harmonics, t, false), &mut rng);
        let ti = t + sig.skew_us / 1e6;
        let i = sig.quantise(sig.at(&sig.harmonics, ti, true), &mut rng);
        for (input, ts, raw) in [(0, t, v), (1, ti, i), (2, ti + 1e-5, 2048), (3, ti, i)] {
            if let Some(r) = meter.push(input, us(ts), raw) {
                reports.push(r);
            }
        }
    }
    let dur: f64 = reports.iter().map(|r| r.duration_s).sum();
    let mean = |c: usize| {
        reports
            .iter()
            .map(|r| r.channels[c].power_w * r.duration_s)
            .sum::<f64>()
            / dur
    };
    let expected = 2.0 * Signal::expected_p_counts(&sig.harmonics) * V_SCALE * i_scale;
    let vrms = Signal::vrms_counts(&sig.harmonics) * V_SCALE;
    let irms = Signal::irms_counts(&sig.harmonics) * i_scale;
    eprintln!(
        "240 V inverter, one clamp: measured {:.1} W, fixed {:.1} W, expected {expected:.1} W",
        mean(1),
        mean(2)
    );
    assert!(expected < 0.0);
    assert!((mean(1) / expected - 1.0).abs() < 0.005);
    assert!((mean(2) / -(2.0 * vrms * irms) - 1.0).abs() < 0.005);
    assert!((reports[3].channels[1].legs[0].vrms_v / (2.0 * vrms) - 1.0).abs() < 0.005);
    assert_eq!(mean(0), 0.0, "a clamp on nothing reads nothing");
}

/// The settings are TOML, every field has its documented default, and a config that gives only
/// what differs from the default is complete.
#[test]
fn settings_round_trip_through_toml() {
    let cfg = CtConfig::default();
    let text = toml::to_string(&cfg).unwrap();
    let back: CtConfig = toml::from_str(&text).unwrap();
    assert_eq!(back, cfg);
    let short: CtConfig = toml::from_str(
        "adc_bits = 12\n[voltage]\nadc_input = 0\nvolts_per_count = 0.1\n\
         [[channels]]\nname = \"grid\"\nkind = \"grid\"\ndirection = \"measured\"\n\
         [[channels.legs]]\nadc_input = 1\namps_per_count = 0.07\n",
    )
    .unwrap();
    assert_eq!(short.channels[0].legs[0].noise_floor_a, 0.4);
    assert!(!short.channels[0].legs[0].invert_voltage);
    assert_eq!(short.mains, Mains::default());
    CtMeter::new(short).unwrap();

    // The example in docs/HARDWARE.md is a valid configuration, and it is the default.
    let doc = include_str!("../../../../docs/HARDWARE.md");
    let start = doc.find("```toml\n").expect("a TOML example") + "```toml\n".len();
    let len = doc[start..].find("```").expect("the example's end");
    let documented: CtConfig = toml::from_str(&doc[start..start + len]).unwrap();
    assert_eq!(documented.channels.len(), 2);
    assert!(documented.channels[0].legs[1].invert_voltage);
    assert!(documented.channels[1].legs[0].spans_both_legs);
    let meter = CtMeter::new(documented.clone()).unwrap();
    assert_eq!(meter.inputs(), [0, 1, 2, 3]);
    assert_eq!(meter.info().channels[1].flow, Flow::ExportOnly);
    let mut default = CtConfig::default();
    // The document rounds the calibration constants.
    for leg in default.channels.iter_mut().flat_map(|c| c.legs.iter_mut()) {
        leg.amps_per_count = 0.293;
    }
    assert_eq!(documented, default);
}
