//! The clamp source end to end: a synthetic ADC on the embedded-hal SPI trait, the sampling
//! thread, the DSP, the registers, and their storage.

use super::synthetic::{SimClock, SimTime, SyntheticAdc, Waveform};
use super::*;
use crate::meter::adc::{Chip, Mcp3x08};
use crate::meter::ct::{CtChannelConfig, CtInput, FixedFlow, VoltageInput};
use crate::meter::registers::MemoryRegisters;
use crate::meter::{ChannelStatus, Connection, Mains};
use std::f64::consts::{SQRT_2, TAU};

/// Mains: 230 V, 50 Hz, with a 5 % third harmonic in the voltage.
pub(crate) const VRMS: f64 = 230.0;
/// Grid current, fundamental, A RMS; a 7 % fifth harmonic rides on it.
pub(crate) const IRMS: f64 = 40.0;
const V_PIN_PK: f64 = 1.0;
const I_PIN_PK: f64 = 0.8;
const BIAS: f64 = 1.65;

/// The pins of a 12-bit converter: input 0 the voltage reference, input 1 the grid clamp.
/// The current lags the voltage by `lag_deg(t)`: 30° imports, 150° exports.
pub(crate) fn mains(lag_deg: fn(f64) -> f64) -> Waveform {
    Arc::new(move |input, t| {
        let w = TAU * 50.0 * t;
        match input {
            0 => BIAS + V_PIN_PK * (w.sin() + 0.05 * (3.0 * w).sin()),
            1 => {
                let phi = lag_deg(t).to_radians();
                BIAS + I_PIN_PK * ((w - phi).sin() + 0.07 * (5.0 * w + 1.0).sin())
            }
            _ => 0.0,
        }
    })
}

/// Real power at lag `lag_deg`: only the fundamentals share a frequency.
pub(crate) fn power_w(lag_deg: f64) -> f64 {
    VRMS * IRMS * lag_deg.to_radians().cos()
}

pub(crate) fn config() -> CtConfig {
    let cpv = 4096.0 / 3.3;
    CtConfig {
        mains: Mains {
            connection: Connection::SinglePhase,
            nominal_v: 230.0,
            nominal_hz: 50.0,
        },
        adc_bits: 12,
        voltage: Some(VoltageInput {
            adc_input: 0,
            volts_per_count: VRMS * SQRT_2 / (V_PIN_PK * cpv),
        }),
        channels: vec![CtChannelConfig {
            name: "grid".into(),
            kind: ChannelKind::Grid,
            legs: vec![CtInput {
                adc_input: 1,
                amps_per_count: IRMS * SQRT_2 / (I_PIN_PK * cpv),
                phase_lead_deg: 0.0,
                invert_voltage: false,
                spans_both_legs: false,
                noise_floor_a: 0.2,
            }],
            direction: Direction::Measured,
        }],
        persist_secs: 25,
        ..CtConfig::default()
    }
}

/// A source on a synthetic MCP3208 whose time starts at `start_us`, one conversion per
/// `transfer_us`.
pub(crate) fn source(
    start_us: u64,
    transfer_us: u64,
    pins: Waveform,
    store: Box<dyn RegisterStore>,
) -> (CtSource, Arc<SimTime>) {
    let time = SimTime::new(start_us, transfer_us);
    let adc = Mcp3x08::new(SyntheticAdc::new(12, time.clone(), pins), Chip::Mcp3208);
    let src = CtSource::start(config(), adc, SimClock(time.clone()), store).unwrap();
    (src, time)
}

fn import_then_export(t: f64) -> f64 {
    if t < 60.0 { 30.0 } else { 150.0 }
}

#[test]
fn the_sampling_thread_counts_import_then_export_through_the_spi_trait() {
    let (mut src, time) = source(
        0,
        100,
        mains(import_then_export),
        Box::new(MemoryRegisters::default()),
    );
    assert_eq!(src.info().grid_channel(), Some(0));
    let mut polls = Vec::new();
    for s in (10..=120).step_by(10) {
        time.run_until(s * 1_000_000);
        polls.push(src.poll(s * 1000).unwrap());
    }
    // Every ten seconds: power and power factor of the waveforms, status Ok (the first poll
    // includes the start-up, where the bias is learnt).
    for (k, p) in polls.iter().enumerate().skip(1) {
        let r = p.reading(0).unwrap();
        let lag = if k < 5 {
            30.0
        } else if k > 5 {
            150.0
        } else {
            continue;
        };
        let expected = power_w(lag);
        assert!(
            (r.power_w / expected - 1.0).abs() < 0.005,
            "poll {k}: {} W, expected {expected} W",
            r.power_w
        );
        assert!((r.legs[0].power_factor - lag.to_radians().cos()).abs() < 0.01);
        assert_eq!(r.status, ChannelStatus::Ok);
        assert!((r.frequency_hz.unwrap() - 50.0).abs() < 0.01);
    }
    // 60 s each way, within 0.5 %.
    let (import_mwh, export_mwh) = src.registers_mwh(0).unwrap();
    let expected_mwh = power_w(30.0) * 60.0 / 3.6;
    for (name, got) in [("import", import_mwh), ("export", export_mwh)] {
        assert!(
            (got as f64 / expected_mwh - 1.0).abs() < 0.005,
            "{name}: {got} mWh, expected {expected_mwh:.0} mWh"
        );
    }
    let regs = polls.last().unwrap().reading(0).unwrap().registers.unwrap();
    assert_eq!(regs.import_wh, import_mwh / 1000);
    assert_eq!(src.adc_errors().0, 0);
    time.shutdown();
}

#[test]
fn registers_are_written_in_batches_and_continue_after_a_restart() {
    let disk = MemoryRegisters::default();
    let writes = |d: &MemoryRegisters| d.load("ct").unwrap();
    let (mut src, time) = source(0, 200, mains(|_| 30.0), Box::new(disk.clone()));
    time.run_until(5_000_000);
    src.poll(5_000).unwrap();
    src.persist(5_000, false).unwrap();
    let first = writes(&disk);
    assert_eq!(first.len(), 1, "the first offer is written");
    // Offers within persist_secs (25 s) are declined: nothing new on disk.
    for s in [10u64, 15, 20, 25] {
        time.run_until(s * 1_000_000);
        src.poll(s * 1000).unwrap();
        src.persist(s * 1000, false).unwrap();
        assert_eq!(writes(&disk), first, "at {s} s");
    }
    time.run_until(30_000_000);
    src.persist(30_000, false).unwrap();
    let second = writes(&disk);
    assert!(second[0].import_mwh > first[0].import_mwh);
    // A forced write happens at once.
    time.run_until(32_000_000);
    src.persist(32_000, true).unwrap();
    let forced = writes(&disk)[0].clone();
    assert!(forced.import_mwh > second[0].import_mwh);
    assert_eq!(forced.saved_ms, 32_000);
    // Power cut: whatever was counted after the forced write is gone; a new source continues
    // from the stored registers.
    time.run_until(34_000_000);
    time.shutdown();
    drop(src);
    let (src, time) = source(40_000_000, 200, mains(|_| 30.0), Box::new(disk.clone()));
    assert_eq!(
        src.registers_mwh(0),
        Some((forced.import_mwh, forced.export_mwh))
    );
    time.run_until(45_000_000);
    assert!(src.registers_mwh(0).unwrap().0 > forced.import_mwh);
    time.shutdown();
}

#[test]
fn the_registers_are_stored_durably_in_the_database_and_never_lowered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.redb");
    let row = |import_mwh, export_mwh| SavedChannel {
        source: "ct".into(),
        name: "grid".into(),
        kind: ChannelKind::Grid,
        import_mwh,
        export_mwh,
        saved_ms: 1,
    };
    {
        let store = crate::store::Store::open(&path).unwrap();
        RegisterStore::save(&store, &[row(5_000, 70)]).unwrap();
        // A lower value (a confused caller) never lowers a stored register.
        RegisterStore::save(&store, &[row(4_000, 90)]).unwrap();
    }
    let store = crate::store::Store::open(&path).unwrap();
    let back = RegisterStore::load(&store, "ct").unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!((back[0].import_mwh, back[0].export_mwh), (5_000, 90));
    assert!(RegisterStore::load(&store, "other").unwrap().is_empty());
    // A renamed grid channel continues the grid registers (found by kind).
    drop(store);
    let store = crate::store::Store::open(&path).unwrap();
    let mut cfg = config();
    cfg.channels[0].name = "mains".into();
    let time = SimTime::new(0, 200);
    let adc = Mcp3x08::new(
        SyntheticAdc::new(12, time.clone(), mains(|_| 30.0)),
        Chip::Mcp3208,
    );
    let src = CtSource::start(cfg, adc, SimClock(time.clone()), Box::new(store)).unwrap();
    assert_eq!(src.registers_mwh(0), Some((5_000, 90)));
    time.shutdown();
}

#[test]
fn a_grid_channel_without_voltage_reference_is_refused_with_a_clear_error() {
    let mut cfg = config();
    cfg.voltage = None;
    let err = check(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("voltage reference") && err.contains("grid"),
        "{err}"
    );
    // Also when the grid channel is set to a fixed direction.
    let mut cfg = config();
    cfg.channels[0].direction = Direction::Fixed {
        flow: FixedFlow::Import,
        power_factor: 1.0,
    };
    let err = check(&cfg).unwrap_err().to_string();
    assert!(err.contains("voltage reference"), "{err}");
    // No grid channel at all.
    let mut cfg = config();
    cfg.channels[0].kind = ChannelKind::Solar;
    assert!(check(&cfg).unwrap_err().to_string().contains("grid"));
    // An ADC whose chip does not match adc_bits.
    let time = SimTime::new(0, 200);
    let adc = Mcp3x08::new(
        SyntheticAdc::new(10, time.clone(), mains(|_| 30.0)),
        Chip::Mcp3008,
    );
    let err = CtSource::start(
        config(),
        adc,
        SimClock(time),
        Box::new(MemoryRegisters::default()),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("adc_bits"), "{err}");
    // Through the node's config: the same error from `metering::open`.
    let mut meter = crate::metering::MeterConfig {
        source: crate::metering::SourceKind::Ct,
        ..Default::default()
    };
    meter.ct.voltage = None;
    let err = crate::metering::open(&meter, "x", None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("voltage reference"), "{err}");
}

#[cfg(not(feature = "pi"))]
#[test]
fn without_the_pi_feature_the_ct_source_says_so() {
    let meter = crate::metering::MeterConfig {
        source: crate::metering::SourceKind::Ct,
        ..Default::default()
    };
    let err = crate::metering::open(&meter, "x", None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("`pi` feature"), "{err}");
}

#[test]
fn a_silent_adc_reads_as_fault_and_is_counted() {
    let (mut src, time) = source(
        0,
        200,
        mains(|_| 30.0),
        Box::new(MemoryRegisters::default()),
    );
    time.run_until(2_000_000);
    assert_eq!(
        src.poll(2_000).unwrap().readings[0].status,
        ChannelStatus::Ok
    );
    // The chip stops answering: the next poll sees no cycle.
    time.shutdown();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while src.adc_errors().0 == 0 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::yield_now();
    }
    let r = src.poll(3_000).unwrap();
    assert_eq!(r.readings[0].status, ChannelStatus::Fault);
    assert!(src.adc_errors().1.unwrap().contains("SPI"));
}

/// The owner calibrates while the meter runs: a clamp's gain doubled doubles its power from
/// the next cycle on, a phase correction moves the power factor, the registers keep what they
/// had, and a calibration that does not fit is refused with nothing changed.
#[test]
fn a_calibration_takes_effect_while_the_meter_runs() {
    use crate::meter::ct::Calibration;
    let (mut src, time) = source(
        0,
        100,
        mains(|_| 30.0),
        Box::new(MemoryRegisters::default()),
    );
    let calibrate = src.calibrator().expect("the clamps can be calibrated");
    for s in [10, 20] {
        time.run_until(s * 1_000_000);
        src.poll(s * 1000).unwrap();
    }
    let before = src.registers_mwh(0).unwrap();
    let mut cal = Calibration::of(&config());
    cal.channels[0].legs[0].amps_per_count *= 2.0;
    cal.channels[0].legs[0].phase_lead_deg = 10.0;
    calibrate(&cal).unwrap();
    time.run_until(30 * 1_000_000);
    src.poll(30_000).unwrap();
    time.run_until(40 * 1_000_000);
    let r = src.poll(40_000).unwrap().reading(0).unwrap().clone();
    // The clamp is taken to lead by 10°, so the true current lags by 30° + 10°.
    let expected = 2.0 * VRMS * IRMS * 40f64.to_radians().cos();
    assert!(
        (r.power_w / expected - 1.0).abs() < 0.01,
        "{} W, expected {expected} W",
        r.power_w
    );
    assert!((r.legs[0].irms_a / (2.0 * IRMS) - 1.0).abs() < 0.01);
    assert!(src.registers_mwh(0).unwrap().0 > before.0);
    // Refused: a negative gain, a phase beyond ±20°, a clamp too many; nothing changes.
    let mut neg = cal.clone();
    neg.channels[0].legs[0].amps_per_count = -1.0;
    let e = calibrate(&neg).unwrap_err().to_string();
    assert!(e.contains("amps_per_count -1 is not a gain"), "{e}");
    let mut far = cal.clone();
    far.channels[0].legs[0].phase_lead_deg = 25.0;
    assert!(
        calibrate(&far)
            .unwrap_err()
            .to_string()
            .contains("beyond ±20°")
    );
    let mut more = cal.clone();
    let leg = more.channels[0].legs[0];
    more.channels[0].legs.push(leg);
    assert!(
        calibrate(&more)
            .unwrap_err()
            .to_string()
            .contains("has 1 clamps")
    );
    assert_eq!(Calibration::of(&src.current_config()), cal);
    time.shutdown();
}
