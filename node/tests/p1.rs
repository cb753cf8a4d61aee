//! The P1 source on a serial port: a virtual serial cable made by socat (two pseudo-terminals),
//! the test writing telegrams into the meter's end as a P1 port would, the source reading the
//! other end through tokio-serial at 115200 baud.
//!
//! socat comes from `tests/modbus/setup.sh` (installed on first use, shared with the Modbus
//! tests); `WATTMESH_SKIP_MODBUS=1` skips this test on a machine that cannot have it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wattmesh_node::meter::p1::telegram::crc16;
use wattmesh_node::meter::p1::{P1Config, P1Health, P1Meter, P1Transport};
use wattmesh_node::meter::{ChannelStatus, MeterSource};

const EXAMPLE: &[u8] = include_bytes!("../src/meter/p1/dsmr5-example.txt");
const ID: &str = "4B384547303034303436333935353037";
const PATIENCE: Duration = Duration::from_secs(30);

/// Installs socat if needed; false when it is missing and skipping is allowed.
fn have_socat() -> bool {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/modbus/setup.sh");
    let ok = Command::new("bash")
        .arg(&script)
        .arg(target.join("pyenv-modbus"))
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var("WATTMESH_SKIP_MODBUS").is_ok_and(|v| v == "1") {
        eprintln!("skipping: socat is missing (WATTMESH_SKIP_MODBUS=1)");
        return false;
    }
    assert!(
        ok,
        "the P1 serial test needs socat ({} failed)",
        script.display()
    );
    true
}

struct SerialPair {
    socat: Child,
    meter_end: PathBuf,
    node_end: PathBuf,
    _dir: tempfile::TempDir,
}

impl SerialPair {
    fn new() -> SerialPair {
        let dir = tempfile::tempdir().unwrap();
        let meter_end = dir.path().join("meter");
        let node_end = dir.path().join("node");
        let socat = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", meter_end.display()))
            .arg(format!("pty,raw,echo=0,link={}", node_end.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat");
        let mut pair = SerialPair {
            socat,
            meter_end,
            node_end,
            _dir: dir,
        };
        let deadline = Instant::now() + PATIENCE;
        while !(pair.meter_end.exists() && pair.node_end.exists()) {
            assert!(pair.socat.try_wait().unwrap().is_none(), "socat exited");
            assert!(Instant::now() < deadline, "socat made no serial pair");
            std::thread::sleep(Duration::from_millis(10));
        }
        pair
    }
}

impl Drop for SerialPair {
    fn drop(&mut self) {
        let _ = self.socat.kill();
        let _ = self.socat.wait();
    }
}

fn wait_for(m: &P1Meter, done: impl Fn(&P1Health) -> bool) -> P1Health {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let h = m.health();
        if done(&h) {
            return h;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {h:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The example telegram with its text edited and its CRC made right again.
fn edited(edit: impl Fn(&str) -> String) -> Vec<u8> {
    let text = std::str::from_utf8(EXAMPLE).unwrap();
    let body = edit(&text[..=text.rfind('!').unwrap()]);
    format!("{body}{:04X}\r\n", crc16(body.as_bytes())).into_bytes()
}

#[test]
fn telegrams_on_a_serial_port_are_read_checked_and_a_swapped_meter_refused() {
    if !have_socat() {
        return;
    }
    let pair = SerialPair::new();
    let mut m = P1Meter::start(P1Config {
        transport: P1Transport::Serial {
            device: pair.node_end.display().to_string(),
            baud: 115_200,
        },
        ..P1Config::default()
    })
    .unwrap();
    // Wait until the source has the port open (it counts a failed open as a connection error
    // and tries again every second), then send a telegram every round until one is taken.
    let mut port = std::fs::OpenOptions::new()
        .write(true)
        .open(&pair.meter_end)
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while m.health().telegrams == 0 {
        assert!(Instant::now() < deadline, "{:?}", m.health());
        port.write_all(EXAMPLE).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = m.poll(1).unwrap();
    assert_eq!(r.readings[0].status, ChannelStatus::Ok);
    assert_eq!(r.readings[0].power_w, 1193.0);
    let regs = r.readings[0].registers.unwrap();
    assert_eq!((regs.import_wh, regs.export_wh), (124_691_349, 321_130));
    assert_eq!(m.health().equipment_id.as_deref(), Some(ID));

    // A bit flipped on the line: refused and counted.
    let before = m.health().crc_errors;
    let mut bad = EXAMPLE.to_vec();
    bad[150] ^= 0x01;
    port.write_all(&bad).unwrap();
    wait_for(&m, |h| h.crc_errors > before);
    assert_eq!(m.poll(2).unwrap().readings[0].status, ChannelStatus::Fault);

    // Another meter on the port (registers from zero): refused, the old registers kept.
    let swapped = edited(|s| {
        s.replace(ID, "4530303334353637383930313233343536")
            .replace("123456.789", "000001.000")
    });
    port.write_all(&swapped).unwrap();
    wait_for(&m, |h| h.wrong_meter == 1);
    let r = m.poll(3).unwrap();
    assert_eq!(r.readings[0].status, ChannelStatus::Fault);
    assert_eq!(r.readings[0].registers, Some(regs));

    // The right meter again, a little later.
    let later = edited(|s| s.replace("123456.789", "123457.001"));
    port.write_all(&later).unwrap();
    wait_for(&m, |h| {
        h.registers.is_some_and(|r| r.import_wh == 124_691_561)
    });
    let r = m.poll(4).unwrap();
    assert_eq!(r.readings[0].status, ChannelStatus::Ok);
    assert_eq!(r.readings[0].registers.unwrap().import_wh, 124_691_561);
}
