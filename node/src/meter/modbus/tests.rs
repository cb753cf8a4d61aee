use super::sdm::{RawReading, decode_serial, kwh_bits_to_wh};
use super::track::Tracker;
use super::*;
use std::time::{Duration, Instant};

fn wh(kwh: f32) -> Option<u64> {
    kwh_bits_to_wh(kwh.to_bits())
}

#[test]
fn kwh_floats_become_the_nearest_watt_hour() {
    assert_eq!(wh(0.0), Some(0));
    assert_eq!(wh(-0.0), Some(0));
    assert_eq!(wh(1.0), Some(1000));
    // 1234.567 is 1234.5670166015625 as an f32: 1 234 567.0166 Wh.
    assert_eq!(wh(1234.567), Some(1_234_567));
    // 0.1 is 0.100000001490116: 100.0000015 Wh.
    assert_eq!(wh(0.1), Some(100));
    // 2.2 is 2.2000000476837158: 2200.0000477 Wh; and 2.3 is 2.2999999523162842, which
    // rounding down would read as 2299 Wh.
    assert_eq!(wh(2.2), Some(2200));
    assert_eq!(wh(2.3), Some(2300));
    // Exactly half a watt-hour rounds up: 0.0625 kWh = 62.5 Wh.
    assert_eq!(wh(0.0625), Some(63));
    // Beyond 2^24 significant bits the float itself is coarse: 65432.1 is 65432.1015625.
    assert_eq!(wh(65_432.1), Some(65_432_102));
    // The smallest subnormal rounds to zero.
    assert_eq!(kwh_bits_to_wh(1), Some(0));
    // The largest f32 (3.4e38 kWh) is far beyond u64 watt-hours.
    assert_eq!(wh(f32::MAX), None);
    assert_eq!(wh(f32::INFINITY), None);
    assert_eq!(wh(f32::NAN), None);
    assert_eq!(wh(-1.0), None);
    assert_eq!(wh(-f32::MIN_POSITIVE), None);
}

#[test]
fn kwh_conversion_matches_exact_decimal_arithmetic_and_is_monotonic() {
    // f32 · 1000 is exact in f64 (24 + 10 significant bits), and f64::round rounds halves away
    // from zero, which for non-negative values is "halves up": an independent reference.
    let reference = |bits: u32| {
        let x = f64::from(f32::from_bits(bits)) * 1000.0;
        (x < 2f64.powi(64)).then(|| x.round() as u64)
    };
    let mut last = 0u64;
    // Non-negative finite floats, in increasing order of value (their bit patterns are too).
    let mut bits = 0u32;
    while bits < 0x7F80_0000 {
        let got = kwh_bits_to_wh(bits);
        assert_eq!(got, reference(bits), "bits {bits:#010x}");
        if let Some(v) = got {
            assert!(v >= last, "not monotonic at {bits:#010x}");
            last = v;
        }
        bits = bits.saturating_add(9_973);
    }
}

#[test]
fn serial_is_two_registers_high_word_first() {
    assert_eq!(decode_serial(&[0x00BC, 0x614E]), Some(12_345_678));
    assert_eq!(decode_serial(&[0x00BC]), None);
}

/// Registers as the meter sends them: each float big-endian, most significant word first.
fn put(regs: &mut [u16], start: u16, address: u16, value: f32) {
    let i = usize::from(address - start);
    let bits = value.to_bits();
    regs[i] = (bits >> 16) as u16;
    regs[i + 1] = bits as u16;
}

struct Values {
    volts: [f32; 3],
    amps: [f32; 3],
    watts: [f32; 3],
    total_w: f32,
    hz: f32,
    import_kwh: f32,
    export_kwh: f32,
}

fn blocks(model: Model, v: &Values) -> (Vec<u16>, Vec<u16>) {
    let [a, b] = model.blocks();
    let mut first = vec![0u16; usize::from(a.len)];
    let mut second = vec![0u16; usize::from(b.len)];
    for p in 0..model.phases() {
        put(&mut first, a.start, sdm::VOLTAGE_V[p], v.volts[p]);
        put(&mut first, a.start, sdm::CURRENT_A[p], v.amps[p]);
        put(&mut first, a.start, sdm::POWER_W[p], v.watts[p]);
    }
    if model == Model::Sdm630 {
        put(&mut second, b.start, sdm::TOTAL_POWER_W, v.total_w);
    }
    put(&mut second, b.start, sdm::FREQUENCY_HZ, v.hz);
    put(&mut second, b.start, sdm::IMPORT_KWH, v.import_kwh);
    put(&mut second, b.start, sdm::EXPORT_KWH, v.export_kwh);
    (first, second)
}

fn sdm630_values() -> Values {
    Values {
        volts: [230.5, 229.0, 231.25],
        amps: [5.5, 2.0, 1.5],
        watts: [1200.0, -400.0, 300.0],
        total_w: 1100.0,
        hz: 50.0,
        import_kwh: 1234.567,
        export_kwh: 89.5,
    }
}

fn raw(model: Model, v: &Values) -> RawReading {
    let (first, second) = blocks(model, v);
    RawReading::decode(model, &first, &second).unwrap()
}

#[test]
fn the_request_blocks_cover_the_map_and_respect_eastrons_limit() {
    for model in [Model::Sdm120, Model::Sdm630] {
        let [a, b] = model.blocks();
        for block in [a, b] {
            // 30 parameters (60 registers) is the strictest limit among Eastron's models.
            assert!(block.len <= 60 && block.len % 2 == 0, "{model:?} {block:?}");
        }
        let covers = |addr: u16| {
            [a, b]
                .iter()
                .any(|k| addr >= k.start && addr + 2 <= k.start + k.len)
        };
        for p in 0..model.phases() {
            assert!(covers(sdm::VOLTAGE_V[p]) && covers(sdm::CURRENT_A[p]));
            assert!(covers(sdm::POWER_W[p]));
        }
        assert!(covers(sdm::IMPORT_KWH) && covers(sdm::EXPORT_KWH) && covers(sdm::FREQUENCY_HZ));
    }
    assert_eq!(Model::Sdm630.blocks()[1].start, sdm::TOTAL_POWER_W);
}

#[test]
fn decoding_reads_each_value_at_its_address() {
    let r = raw(Model::Sdm630, &sdm630_values());
    assert_eq!(r.voltage_v, [230.5, 229.0, 231.25]);
    assert_eq!(r.current_a, [5.5, 2.0, 1.5]);
    assert_eq!(r.power_w, [1200.0, -400.0, 300.0]);
    assert_eq!(r.total_power_w, 1100.0);
    assert_eq!(r.frequency_hz, 50.0);
    assert_eq!(f32::from_bits(r.import_kwh_bits), 1234.567);
    assert_eq!(f32::from_bits(r.export_kwh_bits), 89.5);
    // The SDM120 has no total-power register: its power is phase 1's.
    let mut v = sdm630_values();
    v.watts[0] = -750.0;
    let r = raw(Model::Sdm120, &v);
    assert_eq!(r.total_power_w, -750.0);
    assert_eq!(r.voltage_v, [230.5, 0.0, 0.0]);
    // A block of the wrong length is refused.
    let (first, second) = blocks(Model::Sdm120, &v);
    assert!(RawReading::decode(Model::Sdm120, &first[1..], &second).is_none());
}

const FRESH: Duration = Duration::from_secs(10);

#[test]
fn an_accepted_reading_is_ok_in_our_sign_convention() {
    let t0 = Instant::now();
    let mut t = Tracker::new(Model::Sdm630, 3, false, Some(7));
    assert_eq!(t.reading(0, t0, FRESH).status, ChannelStatus::Fault);
    assert_eq!(t.reading(0, t0, FRESH).registers, None, "nothing read yet");
    t.answered(t0, 7, &raw(Model::Sdm630, &sdm630_values()));
    let r = t.reading(0, t0, FRESH);
    assert_eq!(r.status, ChannelStatus::Ok);
    assert_eq!(
        r.registers,
        Some(Registers {
            import_wh: 1_234_567,
            export_wh: 89_500
        })
    );
    assert_eq!(r.power_w, 1100.0);
    assert_eq!(r.frequency_hz, Some(50.0));
    assert_eq!(r.legs.len(), 3);
    assert_eq!(r.legs[1].real_power_w, -400.0);
    assert_eq!(r.legs[1].apparent_power_va, 458.0);
    assert!((r.legs[1].power_factor + 400.0 / 458.0).abs() < 1e-12);
    assert_eq!(t.health(t0, FRESH).error, None);
}

#[test]
fn a_reversed_meter_negates_power_and_swaps_registers() {
    let t0 = Instant::now();
    let mut t = Tracker::new(Model::Sdm630, 3, true, None);
    t.answered(t0, 7, &raw(Model::Sdm630, &sdm630_values()));
    let r = t.reading(0, t0, FRESH);
    assert_eq!(r.power_w, -1100.0);
    assert_eq!(r.legs[0].real_power_w, -1200.0);
    assert_eq!(
        r.registers,
        Some(Registers {
            import_wh: 89_500,
            export_wh: 1_234_567
        })
    );
}

#[test]
fn a_split_phase_sdm630_reads_two_legs() {
    let t0 = Instant::now();
    let mut t = Tracker::new(Model::Sdm630, 2, false, None);
    t.answered(t0, 7, &raw(Model::Sdm630, &sdm630_values()));
    assert_eq!(t.reading(0, t0, FRESH).legs.len(), 2);
}

#[test]
fn another_serial_number_is_refused_and_the_old_registers_kept() {
    let t0 = Instant::now();
    let mut t = Tracker::new(Model::Sdm630, 3, false, Some(12_345_678));
    let mut v = sdm630_values();
    t.answered(t0, 12_345_678, &raw(Model::Sdm630, &v));
    v.import_kwh = 5000.0;
    t.answered(t0, 87_654_321, &raw(Model::Sdm630, &v));
    let r = t.reading(0, t0, FRESH);
    assert_eq!(r.status, ChannelStatus::Fault);
    assert_eq!(r.registers.unwrap().import_wh, 1_234_567);
    let e = t.health(t0, FRESH).error.unwrap();
    assert!(e.contains("87654321") && e.contains("12345678"), "{e}");
    // The right meter again: accepted.
    t.answered(t0, 12_345_678, &raw(Model::Sdm630, &v));
    assert_eq!(t.reading(0, t0, FRESH).status, ChannelStatus::Ok);
    assert_eq!(
        t.reading(0, t0, FRESH).registers.unwrap().import_wh,
        5_000_000
    );
}

#[test]
fn without_a_configured_serial_the_first_meter_is_held_on_to() {
    let t0 = Instant::now();
    let mut t = Tracker::new(Model::Sdm120, 1, false, None);
    let v = sdm630_values();
    t.answered(t0, 1111, &raw(Model::Sdm120, &v));
    let h = t.health(t0, FRESH);
    assert_eq!((h.serial, h.serial_learnt), (Some(1111), true));
    t.answered(t0, 2222, &raw(Model::Sdm120, &v));
    assert_eq!(t.reading(0, t0, FRESH).status, ChannelStatus::Fault);
    assert!(t.health(t0, FRESH).error.unwrap().contains("first seen"));
}

#[test]
fn registers_never_go_backwards() {
    let t0 = Instant::now();
    let mut t = Tracker::new(Model::Sdm630, 3, false, None);
    let mut v = sdm630_values();
    t.answered(t0, 1, &raw(Model::Sdm630, &v));
    v.export_kwh = 89.4;
    t.answered(t0, 1, &raw(Model::Sdm630, &v));
    let r = t.reading(0, t0, FRESH);
    assert_eq!(r.status, ChannelStatus::Fault);
    assert_eq!(r.registers.unwrap().export_wh, 89_500);
    assert_eq!(r.power_w, 0.0);
    assert!(r.legs.is_empty() && r.frequency_hz.is_none());
    assert!(
        t.health(t0, FRESH)
            .error
            .unwrap()
            .contains("export register went backwards")
    );
    // Equal is fine; so is growth.
    v.export_kwh = 89.5;
    t.answered(t0, 1, &raw(Model::Sdm630, &v));
    assert_eq!(t.reading(0, t0, FRESH).status, ChannelStatus::Ok);
}

#[test]
fn invalid_values_fault_the_channel() {
    let t0 = Instant::now();
    let mut t = Tracker::new(Model::Sdm630, 3, false, None);
    let mut v = sdm630_values();
    v.import_kwh = -1.0;
    t.answered(t0, 1, &raw(Model::Sdm630, &v));
    assert!(
        t.health(t0, FRESH)
            .error
            .unwrap()
            .contains("no energy count")
    );
    let mut v = sdm630_values();
    v.volts[2] = f32::NAN;
    t.answered(t0, 1, &raw(Model::Sdm630, &v));
    assert_eq!(t.reading(0, t0, FRESH).status, ChannelStatus::Fault);
    assert_eq!(t.reading(0, t0, FRESH).registers, None);
}

#[test]
fn silence_faults_and_an_answer_recovers() {
    let t0 = Instant::now();
    let mut t = Tracker::new(Model::Sdm630, 3, false, None);
    t.answered(t0, 1, &raw(Model::Sdm630, &sdm630_values()));
    t.failed("no answer within 300 ms".into());
    assert_eq!(t.reading(0, t0, FRESH).status, ChannelStatus::Fault);
    assert_eq!(
        t.reading(0, t0, FRESH).registers.unwrap().import_wh,
        1_234_567
    );
    let h = t.health(t0, FRESH);
    assert_eq!((h.reads_ok, h.reads_failed), (1, 1));
    t.answered(t0, 1, &raw(Model::Sdm630, &sdm630_values()));
    assert_eq!(t.reading(0, t0, FRESH).status, ChannelStatus::Ok);
    // A reading that is too old is a fault even before a failure is recorded.
    let later = t0 + FRESH + Duration::from_millis(1);
    assert_eq!(t.reading(0, later, FRESH).status, ChannelStatus::Fault);
    assert!(
        t.health(later, FRESH)
            .error
            .unwrap()
            .contains("no reading for")
    );
}

#[test]
fn config_reads_from_toml_with_defaults() {
    let c: ModbusConfig = toml::from_str(
        r#"
        model = "sdm120"
        unit_id = 3
        serial = 12345678
        [transport]
        type = "rtu"
        device = "/dev/ttyUSB1"
        baud = 2400
        parity = "even"
        "#,
    )
    .unwrap();
    assert_eq!(c.model, Model::Sdm120);
    assert_eq!(
        c.transport,
        Transport::Rtu {
            device: "/dev/ttyUSB1".into(),
            baud: 2400,
            parity: Parity::Even,
            stop_bits: 1
        }
    );
    assert_eq!(c.serial, Some(12_345_678));
    assert_eq!(c.timeout_ms, 1000);
    assert_eq!(c.kind, ChannelKind::Grid);
    assert_eq!(c.mains().connection, Connection::SinglePhase);
    c.check().unwrap();

    let c: ModbusConfig =
        toml::from_str("[transport]\ntype = \"tcp\"\nhost = \"10.0.0.5\"\n").unwrap();
    assert_eq!(
        c.transport,
        Transport::Tcp {
            host: "10.0.0.5".into(),
            port: 502
        }
    );
    assert_eq!(c.model, Model::Sdm630);
    assert_eq!(c.mains().connection.legs(), 3);
    assert!(toml::from_str::<ModbusConfig>("[transport]\ntype = \"tcp\"\nhst = \"x\"\n").is_err());
    assert!(toml::from_str::<ModbusConfig>("unit = 3\n").is_err());
    ModbusConfig::default().check().unwrap();
}

#[test]
fn bad_settings_are_refused() {
    let bad = |f: fn(&mut ModbusConfig)| {
        let mut c = ModbusConfig::default();
        f(&mut c);
        assert!(matches!(c.check(), Err(MeterError::Config(_))), "{c:?}");
        assert!(ModbusMeter::start(c).is_err());
    };
    bad(|c| c.unit_id = 0);
    bad(|c| c.unit_id = 248);
    bad(|c| c.timeout_ms = 0);
    bad(|c| c.poll_interval_ms = 10);
    bad(|c| c.name = " ".into());
    bad(|c| {
        c.transport = Transport::Tcp {
            host: String::new(),
            port: 502,
        }
    });
    bad(|c| {
        c.transport = Transport::Rtu {
            device: "/dev/ttyUSB0".into(),
            baud: 9600,
            parity: Parity::None,
            stop_bits: 3,
        }
    });
    // An SDM120 cannot meter a three-phase or split-phase supply.
    bad(|c| {
        c.model = Model::Sdm120;
        c.mains = Some(Mains::default());
    });
}

#[test]
fn a_meter_that_cannot_be_reached_starts_as_fault_without_blocking() {
    // A serial device that does not exist: start succeeds, poll answers at once with Fault.
    let mut m = ModbusMeter::start(ModbusConfig {
        transport: Transport::Rtu {
            device: "/nonexistent/wattmesh-tty".into(),
            baud: 9600,
            parity: Parity::None,
            stop_bits: 1,
        },
        ..ModbusConfig::default()
    })
    .unwrap();
    let s = m.poll(1).unwrap();
    assert_eq!(s.at_ms, 1);
    assert_eq!(s.readings[0].status, ChannelStatus::Fault);
    assert_eq!(s.readings[0].registers, None);
    assert_eq!(m.info().grid_channel(), Some(0));
    assert!(!m.info().simulated);
}

#[test]
fn the_meter_can_move_to_the_meter_loop_thread() {
    // `metering::spawn` takes a `Box<dyn MeterSource + Send>`.
    fn send<T: Send>() {}
    send::<ModbusMeter>();
}
