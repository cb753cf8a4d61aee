//! P1 telegrams: the DSMR 5.0.2 example telegram (its structure and objects, with distinct
//! register values; the CRC was computed outside this code), corrupted and partial ones, and a
//! swapped meter, through the parser, the framer, the tracker and a real TCP socket.

use super::telegram::{Framer, MAX_TELEGRAM, Telegram, TelegramError, crc16};
use super::*;
use std::io::Write;

/// The DSMR 5.0.2 example telegram (P1 Companion Standard, section 6.12), CR LF lines.
const EXAMPLE: &[u8] = include_bytes!("dsmr5-example.txt");
const ID: &str = "4B384547303034303436333935353037";

/// `EXAMPLE` with `edit` applied to its text and its CRC made right again.
fn telegram_with(edit: impl Fn(String) -> String) -> Vec<u8> {
    let text = std::str::from_utf8(EXAMPLE).unwrap();
    let body = &text[..=text.rfind('!').unwrap()];
    let body = edit(body.to_owned());
    format!("{body}{:04X}\r\n", crc16(body.as_bytes())).into_bytes()
}

#[test]
fn crc16_is_arc() {
    // The CRC catalogue's check value for CRC-16/ARC.
    assert_eq!(crc16(b"123456789"), 0xBB3D);
    assert!(EXAMPLE.ends_with(b"!7919\r\n"));
}

#[test]
fn the_dsmr5_example_parses_to_exact_watt_hours() {
    let t = Telegram::parse(EXAMPLE).unwrap();
    assert_eq!(t.ident, "ISk5\\2MT382-1000");
    assert_eq!(t.version.as_deref(), Some("50"));
    assert_eq!(t.equipment_id.as_deref(), Some(ID));
    assert_eq!(t.import_wh, [123_456_789, 1_234_560]);
    assert_eq!(t.export_wh, [321_007, 123]);
    assert_eq!(t.total_import_wh(), Some(124_691_349));
    assert_eq!((t.import_w, t.export_w), (1193, 0));
    // Without the trailing CR LF too.
    assert_eq!(Telegram::parse(&EXAMPLE[..EXAMPLE.len() - 2]).unwrap(), t);
}

#[test]
fn a_bad_crc_is_refused_never_read() {
    // One digit of a register changed: the CRC no longer matches.
    let mut bad = EXAMPLE.to_vec();
    let at = bad.windows(9).position(|w| w == b"123456.78").unwrap();
    bad[at] = b'9';
    assert!(matches!(
        Telegram::parse(&bad),
        Err(TelegramError::Crc { sent: 0x7919, .. })
    ));
    // The CRC itself damaged.
    let mut bad = EXAMPLE.to_vec();
    let n = bad.len();
    bad[n - 3] = if bad[n - 3] == b'0' { b'1' } else { b'0' };
    assert!(matches!(
        Telegram::parse(&bad),
        Err(TelegramError::Crc { .. })
    ));
    // No CRC at all (DSMR 2/3 style).
    let text = std::str::from_utf8(EXAMPLE).unwrap();
    let no_crc = format!("{}\r\n", &text[..=text.rfind('!').unwrap()]);
    assert_eq!(
        Telegram::parse(no_crc.as_bytes()),
        Err(TelegramError::NoCrc)
    );
}

#[test]
fn malformed_values_and_missing_registers_are_refused() {
    for (what, edit) in [
        (
            "a unit",
            ("1-0:1.8.1(123456.789*kWh)", "1-0:1.8.1(123456.789*Wh)"),
        ),
        (
            "decimals",
            ("1-0:1.8.1(123456.789*kWh)", "1-0:1.8.1(123456.7891*kWh)"),
        ),
        ("a sign", ("1-0:2.7.0(00.000*kW)", "1-0:2.7.0(-0.001*kW)")),
        ("a register", ("1-0:2.8.2(000000.123*kWh)\r\n", "")),
        (
            "a twice",
            (
                "1-0:1.7.0(01.193*kW)",
                "1-0:1.7.0(01.193*kW)\r\n1-0:1.7.0(01.193*kW)",
            ),
        ),
    ] {
        let t = telegram_with(|s| s.replace(edit.0, edit.1));
        assert!(
            matches!(Telegram::parse(&t), Err(TelegramError::Malformed(_))),
            "{what}: {:?}",
            Telegram::parse(&t)
        );
    }
}

#[test]
fn the_framer_cuts_a_stream_into_telegrams_and_reports_partial_ones() {
    let mut f = Framer::new();
    // Opened in the middle of a telegram: its tail is skipped silently.
    let mut out = f.push(&EXAMPLE[500..]);
    assert!(out.is_empty(), "{out:?}");
    // A whole telegram, one byte at a time.
    for b in EXAMPLE {
        out.extend(f.push(&[*b]));
    }
    assert_eq!(out.len(), 1);
    assert_eq!(
        Telegram::parse(out[0].as_ref().unwrap()).unwrap().import_w,
        1193
    );
    // A telegram broken off by the next one's start: Partial, then the next one whole.
    let mut stream = EXAMPLE[..300].to_vec();
    stream.extend_from_slice(EXAMPLE);
    let out = f.push(&stream);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0], Err(TelegramError::Partial));
    assert!(Telegram::parse(out[1].as_ref().unwrap()).is_ok());
    // A telegram in progress when the connection drops.
    assert!(f.push(&EXAMPLE[..100]).is_empty());
    assert!(f.reset());
    // Noise without end.
    let mut noise = vec![b'/'];
    noise.extend(std::iter::repeat_n(b'x', MAX_TELEGRAM + 1));
    assert_eq!(f.push(&noise), vec![Err(TelegramError::TooLong)]);
}

fn at(base: Instant, s: u64) -> Instant {
    base + Duration::from_secs(s)
}

#[test]
fn the_tracker_takes_good_telegrams_and_counts_refused_ones() {
    let base = Instant::now();
    let stale = Duration::from_secs(30);
    let mut t = Tracker::new(None);
    assert_eq!(t.reading(base, stale).status, ChannelStatus::Fault);
    t.frame(at(base, 1), Ok(EXAMPLE.to_vec()));
    let r = t.reading(at(base, 1), stale);
    assert_eq!(r.status, ChannelStatus::Ok);
    assert_eq!(r.power_w, 1193.0);
    let regs = r.registers.unwrap();
    assert_eq!((regs.import_wh, regs.export_wh), (124_691_349, 321_130));
    // A corrupted telegram: counted, Fault, the last good registers kept, no power.
    let mut bad = EXAMPLE.to_vec();
    bad[40] ^= 1;
    t.frame(at(base, 2), Ok(bad));
    let r = t.reading(at(base, 2), stale);
    assert_eq!(
        (r.status, r.power_w, r.registers),
        (ChannelStatus::Fault, 0.0, Some(regs))
    );
    t.frame(at(base, 3), Err(TelegramError::Partial));
    let h = t.health(at(base, 3), stale);
    assert_eq!((h.crc_errors, h.malformed, h.telegrams), (1, 1, 1));
    // The next good telegram, exporting now.
    let later = telegram_with(|s| {
        s.replace("1-0:2.8.1(000321.007", "1-0:2.8.1(000321.507")
            .replace("1-0:1.7.0(01.193", "1-0:1.7.0(00.000")
            .replace("1-0:2.7.0(00.000", "1-0:2.7.0(02.500")
    });
    t.frame(at(base, 4), Ok(later));
    let r = t.reading(at(base, 4), stale);
    assert_eq!(r.status, ChannelStatus::Ok);
    assert_eq!(r.power_w, -2500.0);
    assert_eq!(r.registers.unwrap().export_wh, 321_630);
    // Silence: stale after 30 s.
    assert_eq!(t.reading(at(base, 40), stale).status, ChannelStatus::Fault);
}

#[test]
fn a_swapped_meter_is_refused_and_registers_never_go_backwards() {
    let base = Instant::now();
    let stale = Duration::from_secs(30);
    // No equipment id configured: the first meter seen is held on to.
    let mut t = Tracker::new(None);
    t.frame(base, Ok(EXAMPLE.to_vec()));
    let good = t.reading(base, stale).registers;
    // Another meter (new id, registers from zero) on the same port.
    let other = telegram_with(|s| {
        s.replace(ID, "4530303334353637383930313233343536")
            .replace("123456.789", "000012.000")
    });
    t.frame(at(base, 1), Ok(other.clone()));
    let r = t.reading(at(base, 1), stale);
    assert_eq!((r.status, r.registers), (ChannelStatus::Fault, good));
    let h = t.health(at(base, 1), stale);
    assert_eq!(h.wrong_meter, 1);
    assert!(h.error.unwrap().contains("wrong meter"));
    assert_eq!(h.equipment_id.as_deref(), Some(ID));
    // Configured for the new meter: the old one is refused instead.
    let mut t = Tracker::new(Some("4530303334353637383930313233343536".into()));
    t.frame(base, Ok(EXAMPLE.to_vec()));
    assert_eq!(t.reading(base, stale).status, ChannelStatus::Fault);
    t.frame(base, Ok(other));
    assert_eq!(t.reading(base, stale).status, ChannelStatus::Ok);
    // The same meter whose register went backwards (reset): refused, last good kept.
    let mut t = Tracker::new(None);
    t.frame(base, Ok(EXAMPLE.to_vec()));
    let back = telegram_with(|s| s.replace("123456.789", "123456.788"));
    t.frame(at(base, 1), Ok(back));
    let r = t.reading(at(base, 1), stale);
    assert_eq!((r.status, r.registers), (ChannelStatus::Fault, good));
    assert_eq!(t.health(at(base, 1), stale).backwards, 1);
}

#[test]
fn config_is_checked() {
    P1Config::default().check().unwrap();
    let bad = P1Config {
        transport: P1Transport::Tcp {
            host: String::new(),
            port: 2001,
        },
        ..P1Config::default()
    };
    assert!(bad.check().unwrap_err().to_string().contains("[meter.p1]"));
    let toml_cfg: P1Config = toml::from_str(
        "equipment_id = \"4B38\"\n[transport]\ntype = \"tcp\"\nhost = \"127.0.0.1\"\nport = 2001\n",
    )
    .unwrap();
    assert_eq!(toml_cfg.stale_after_ms, 30_000);
}

/// Waits (polling the source; no timed assertion) until `done` holds.
fn wait_for(m: &P1Meter, done: impl Fn(&P1Health) -> bool) -> P1Health {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = m.health();
        if done(&h) {
            return h;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {h:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The source over a real TCP socket (a ser2net-style bridge on loopback), telegrams split
/// across writes, a corrupted one among them, and the bridge going away.
#[test]
fn the_p1_source_reads_telegrams_from_a_tcp_socket() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut m = P1Meter::start(P1Config {
        transport: P1Transport::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
        equipment_id: Some(ID.into()),
        ..P1Config::default()
    })
    .unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    // Half a telegram first (the bridge was started mid-telegram), then a whole one in two
    // writes.
    conn.write_all(&EXAMPLE[EXAMPLE.len() / 2..]).unwrap();
    conn.write_all(&EXAMPLE[..200]).unwrap();
    conn.flush().unwrap();
    conn.write_all(&EXAMPLE[200..]).unwrap();
    let h = wait_for(&m, |h| h.telegrams == 1);
    assert_eq!(h.crc_errors + h.malformed, 0, "{h:?}");
    let s = m.poll(1).unwrap();
    assert_eq!(s.readings[0].status, ChannelStatus::Ok);
    assert_eq!(s.readings[0].registers.unwrap().import_wh, 124_691_349);
    // A corrupted telegram is counted and faults the channel.
    let mut bad = EXAMPLE.to_vec();
    bad[60] ^= 0x02;
    conn.write_all(&bad).unwrap();
    wait_for(&m, |h| h.crc_errors == 1);
    assert_eq!(m.poll(2).unwrap().readings[0].status, ChannelStatus::Fault);
    // The bridge closes mid-telegram: a partial telegram and a lost connection are counted;
    // the source connects again and reads on.
    conn.write_all(&EXAMPLE[..300]).unwrap();
    drop(conn);
    let h = wait_for(&m, |h| h.connection_errors >= 1 && h.malformed >= 1);
    assert_eq!(h.telegrams, 1);
    let (mut conn, _) = listener.accept().unwrap();
    conn.write_all(EXAMPLE).unwrap();
    wait_for(&m, |h| h.telegrams == 2);
    let r = m.poll(3).unwrap();
    assert_eq!(r.readings[0].status, ChannelStatus::Ok);
    assert_eq!(m.info().grid_channel(), Some(0));
}
