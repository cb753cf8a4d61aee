//! Modbus energy meters against a real Modbus server that shares no code with the client:
//! pymodbus (Python) serving the Eastron SDM120/SDM630 register map
//! (`tests/modbus/sdm_server.py`), over Modbus TCP on 127.0.0.1 and over Modbus RTU on a
//! virtual serial pair made by socat.
//!
//! The prerequisites (a venv with pymodbus and pyserial under the target directory, and socat)
//! are installed by `tests/modbus/setup.sh` on first use. If they cannot be installed the tests
//! fail, unless `WATTMESH_SKIP_MODBUS=1` is set.
//!
//! Every poll in these tests goes through [`Probe`], which asserts that the registers never go
//! backwards, whatever the meter does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wattmesh_node::meter::modbus::{
    ModbusConfig, ModbusHealth, ModbusMeter, Model, Parity, Transport,
};
use wattmesh_node::meter::{
    ChannelKind, ChannelStatus, Connection, MeterSource, Reading, Registers,
};

/// How long any awaited condition may take before the test fails. Conditions are reached in
/// well under a second; the margin is for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

fn skip_allowed() -> bool {
    std::env::var("WATTMESH_SKIP_MODBUS").is_ok_and(|v| v == "1")
}

/// The venv's Python, after installing the prerequisites (once per process; `setup.sh` locks
/// against other processes). `None` when they are missing and skipping is allowed.
fn python() -> Option<PathBuf> {
    static SETUP: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let setup = SETUP.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
        let venv = target.join("pyenv-modbus");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/modbus/setup.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&venv)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run bash {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}):\n{}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(venv.join("bin/python"))
    });
    match setup {
        Ok(python) => Some(python.clone()),
        Err(e) if skip_allowed() => {
            eprintln!(
                "skipping: the Modbus test prerequisites are missing (WATTMESH_SKIP_MODBUS=1): {e}"
            );
            None
        }
        Err(e) => panic!(
            "the Modbus tests need pymodbus and socat, which could not be installed:\n{e}\n\
             Set WATTMESH_SKIP_MODBUS=1 to skip these tests on a machine that cannot have them."
        ),
    }
}

/// Where the stand-in meter listens.
enum Listen<'a> {
    Tcp,
    Rtu {
        device: &'a Path,
        baud: u32,
        parity: &'a str,
        stop_bits: u8,
    },
}

/// A running `sdm_server.py`: a pymodbus server with the SDM register map, driven by JSON
/// commands on its stdin.
struct Meter {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    port: u16,
}

impl Meter {
    fn start(python: &Path, model: &str, unit: u8, listen: Listen<'_>, state: &str) -> Meter {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/modbus/sdm_server.py");
        let mut cmd = Command::new(python);
        cmd.arg(&script).args([
            "--model",
            model,
            "--unit",
            &unit.to_string(),
            "--state",
            state,
        ]);
        match listen {
            Listen::Tcp => {
                cmd.args(["--tcp", "0"]);
            }
            Listen::Rtu {
                device,
                baud,
                parity,
                stop_bits,
            } => {
                cmd.arg("--rtu").arg(device).args([
                    "--baud",
                    &baud.to_string(),
                    "--parity",
                    parity,
                    "--stopbits",
                    &stop_bits.to_string(),
                ]);
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sdm_server.py");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut meter = Meter {
            child,
            stdin,
            lines,
            stderr,
            port: 0,
        };
        let ready = meter.line("ready");
        meter.port = ready
            .strip_prefix("ready port=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {ready:?}"));
        meter
    }

    fn line(&mut self, waiting_for: &str) -> String {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!(
                "the meter server said nothing while we waited for {waiting_for:?}; stderr:\n{}",
                self.stderr.lock().unwrap()
            ),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "the meter server exited while we waited for {waiting_for:?} ({:?}); stderr:\n{}",
                self.child.try_wait(),
                self.stderr.lock().unwrap()
            ),
        }
    }

    /// Sends a command and waits until the server has applied it.
    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let answer = self.line(command);
        assert_eq!(answer, "ok", "command {command}");
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A virtual serial cable: two pseudo-terminals joined by socat.
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
            .arg("-d")
            .arg("-d")
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
            assert!(
                pair.socat.try_wait().unwrap().is_none(),
                "socat exited before making the serial pair"
            );
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A `ModbusMeter` under test: every poll checks that the registers never go backwards.
struct Probe {
    meter: ModbusMeter,
    last: Option<Registers>,
}

impl Probe {
    fn start(cfg: ModbusConfig) -> Probe {
        Probe {
            meter: ModbusMeter::start(cfg).unwrap(),
            last: None,
        }
    }

    fn poll(&mut self) -> Reading {
        let at = now_ms();
        let sample = self.meter.poll(at).unwrap();
        assert_eq!(sample.at_ms, at);
        assert_eq!(sample.readings.len(), 1);
        let r = sample.readings.into_iter().next().unwrap();
        if let (Some(before), Some(now)) = (self.last, r.registers) {
            assert!(
                now.import_wh >= before.import_wh && now.export_wh >= before.export_wh,
                "registers went backwards: {before:?} then {now:?}"
            );
        }
        if r.registers.is_some() {
            self.last = r.registers;
        }
        r
    }

    fn health(&self) -> ModbusHealth {
        self.meter.health()
    }

    /// Polls until `done` holds (a condition, not a delay), and returns that reading.
    fn until(&mut self, what: &str, done: impl Fn(&Reading) -> bool) -> Reading {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let r = self.poll();
            if done(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "waited {PATIENCE:?} for {what}; last reading {r:?}; health {:?}",
                self.health()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Polls until the health's error mentions `needle`, and returns the error.
    fn until_error(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let r = self.poll();
            if let Some(e) = self.health().error.filter(|e| e.contains(needle)) {
                assert!(fault(&r), "an error without a fault: {e}");
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "waited {PATIENCE:?} for an error with {needle:?}; health {:?}",
                self.health()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the meter has finished `n` more read cycles (failed or refused).
    fn until_failures(&mut self, n: u64) {
        let start = self.health().reads_failed;
        let deadline = Instant::now() + PATIENCE;
        while self.health().reads_failed < start + n {
            self.poll();
            assert!(Instant::now() < deadline, "no failed read cycles");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn ok(r: &Reading) -> bool {
    r.status == ChannelStatus::Ok
}

fn fault(r: &Reading) -> bool {
    r.status == ChannelStatus::Fault
}

fn regs(import_wh: u64, export_wh: u64) -> Option<Registers> {
    Some(Registers {
        import_wh,
        export_wh,
    })
}

fn tcp_config(model: Model, port: u16, unit: u8, serial: u32) -> ModbusConfig {
    ModbusConfig {
        model,
        transport: Transport::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
        unit_id: unit,
        serial: Some(serial),
        timeout_ms: 300,
        poll_interval_ms: 100,
        ..ModbusConfig::default()
    }
}

const SERIAL: u32 = 12_345_678;

const SDM630_STATE: &str = r#"{"serial": 12345678,
    "voltage_v": [230.5, 229.0, 231.25], "current_a": [5.5, 2.0, 1.5],
    "power_w": [1200.0, -400.0, 300.0], "total_power_w": 1100.0, "frequency_hz": 49.98,
    "import_kwh": 1234.567, "export_kwh": 89.5}"#;

#[test]
fn tcp_sdm630_readings_and_registers() {
    let Some(py) = python() else { return };
    let mut server = Meter::start(&py, "sdm630", 3, Listen::Tcp, SDM630_STATE);
    let mut m = Probe::start(tcp_config(Model::Sdm630, server.port, 3, SERIAL));
    let info = m.meter.info().clone();
    assert_eq!(info.channels.len(), 1);
    assert_eq!(info.grid_channel(), Some(0));
    assert_eq!(info.channels[0].kind, ChannelKind::Grid);
    assert_eq!(info.mains.connection, Connection::ThreePhase);
    assert!(!info.simulated);

    let r = m.until("a first reading", ok);
    // 1234.567 kWh travels as the f32 1234.5670166…: 1 234 567 Wh. 89.5 kWh is exact.
    assert_eq!(r.registers, regs(1_234_567, 89_500));
    // Import: positive power, into the home.
    assert_eq!(r.power_w, 1100.0);
    assert_eq!(r.legs.len(), 3);
    let volts: Vec<f64> = r.legs.iter().map(|l| l.vrms_v).collect();
    let amps: Vec<f64> = r.legs.iter().map(|l| l.irms_a).collect();
    let watts: Vec<f64> = r.legs.iter().map(|l| l.real_power_w).collect();
    assert_eq!(volts, [230.5, 229.0, 231.25]);
    assert_eq!(amps, [5.5, 2.0, 1.5]);
    assert_eq!(watts, [1200.0, -400.0, 300.0]);
    assert_eq!(r.frequency_hz, Some(f64::from(49.98f32)));
    let h = m.health();
    assert_eq!(h.serial, Some(SERIAL));
    assert!(!h.serial_learnt);
    assert_eq!(h.error, None);

    // The sun comes out: the home exports; the export register grows, import stays.
    server.send(
        r#"{"power_w": [-2000.0, -1500.0, -500.0], "total_power_w": -4000.0, "export_kwh": 89.75}"#,
    );
    // (A cycle's two register blocks are separate requests, so one cycle may straddle the
    // change: wait for a reading that has it everywhere.)
    let r = m.until("export", |r| {
        r.power_w < 0.0 && r.legs.iter().all(|l| l.real_power_w < 0.0)
    });
    assert_eq!(r.power_w, -4000.0);
    assert_eq!(r.registers, regs(1_234_567, 89_750));
    assert!(
        r.legs
            .iter()
            .all(|l| l.real_power_w < 0.0 && l.power_factor < 0.0)
    );
    server.send(r#"{"export_kwh": 90.0}"#);
    let r = m.until("more export", |r| r.registers == regs(1_234_567, 90_000));
    assert!(ok(&r));
}

#[test]
fn tcp_sdm120_export_and_a_reversed_meter() {
    let Some(py) = python() else { return };
    // A single-phase meter during export, with a register large enough that the f32 itself is
    // coarse: 65432.1 kWh travels as 65432.1015625 kWh, which is 65 432 102 Wh.
    let state = r#"{"serial": 4000001, "voltage_v": [240.0], "current_a": [4.25],
        "power_w": [-1000.5], "frequency_hz": 60.0, "import_kwh": 3.2, "export_kwh": 65432.1}"#;
    let server = Meter::start(&py, "sdm120", 7, Listen::Tcp, state);
    let mut m = Probe::start(tcp_config(Model::Sdm120, server.port, 7, 4_000_001));
    assert_eq!(m.meter.info().mains.connection, Connection::SinglePhase);
    let r = m.until("a first reading", ok);
    assert_eq!(r.registers, regs(3_200, 65_432_102));
    assert_eq!(r.power_w, -1000.5);
    assert_eq!(r.legs.len(), 1);
    assert_eq!(r.legs[0].apparent_power_va, 1020.0);
    assert_eq!(r.legs[0].power_factor, -1000.5 / 1020.0);
    assert_eq!(r.frequency_hz, Some(60.0));

    // The same meter mounted the other way round: power negated, registers swapped.
    let mut cfg = tcp_config(Model::Sdm120, server.port, 7, 4_000_001);
    cfg.reversed = true;
    let mut reversed = Probe::start(cfg);
    let r = reversed.until("a first reading", ok);
    assert_eq!(r.registers, regs(65_432_102, 3_200));
    assert_eq!(r.power_w, 1000.5);
    assert_eq!(r.legs[0].real_power_w, 1000.5);
}

#[test]
fn tcp_meter_that_stops_answering_faults_and_recovers() {
    let Some(py) = python() else { return };
    let mut server = Meter::start(&py, "sdm630", 1, Listen::Tcp, SDM630_STATE);
    let mut m = Probe::start(tcp_config(Model::Sdm630, server.port, 1, SERIAL));
    m.until("a first reading", ok);

    server.send(r#"{"silent": true}"#);
    m.until_error("no answer within 300 ms");
    // The last good registers are kept; no power is invented.
    let r = m.poll();
    assert!(fault(&r));
    assert_eq!(r.registers, regs(1_234_567, 89_500));
    assert_eq!(r.power_w, 0.0);
    assert!(r.legs.is_empty() && r.frequency_hz.is_none());

    // The meter counts on while we cannot read it; we report nothing new meanwhile.
    server.send(r#"{"import_kwh": 1235.0}"#);
    m.until_failures(2);
    let r = m.poll();
    assert!(fault(&r));
    assert_eq!(r.registers, regs(1_234_567, 89_500));

    server.send(r#"{"silent": false}"#);
    let r = m.until("recovery", ok);
    assert_eq!(r.registers, regs(1_235_000, 89_500));
    assert_eq!(r.power_w, 1100.0);
    assert_eq!(m.health().error, None);
}

#[test]
fn tcp_meter_whose_serial_changes_is_refused() {
    let Some(py) = python() else { return };
    let mut server = Meter::start(&py, "sdm630", 1, Listen::Tcp, SDM630_STATE);
    let mut m = Probe::start(tcp_config(Model::Sdm630, server.port, 1, SERIAL));
    m.until("a first reading", ok);

    // Another meter at the same address, with larger (plausible) registers.
    server.send(r#"{"serial": 87654321, "import_kwh": 1300.0}"#);
    // (A cycle that straddles the swap is refused for that: the serial number changed under
    // it. The next ones see the new meter throughout.)
    let e = m.until_error("wrong meter");
    assert!(e.contains("87654321") && e.contains("12345678"), "{e}");
    assert_eq!(
        m.poll().registers,
        regs(1_234_567, 89_500),
        "the new meter's values are not taken"
    );
    m.until_failures(2);
    assert_eq!(m.poll().registers, regs(1_234_567, 89_500));

    // The right meter back.
    server.send(r#"{"serial": 12345678}"#);
    let r = m.until("recovery", ok);
    assert_eq!(r.registers, regs(1_300_000, 89_500));

    // A node configured for another meter never takes this one's values at all.
    let mut other = Probe::start(tcp_config(Model::Sdm630, server.port, 1, 999));
    other.until_failures(1);
    let r = other.poll();
    assert!(fault(&r));
    assert_eq!(r.registers, None);
    let e = other.health().error.unwrap();
    assert!(
        e.contains("serial number 12345678 answers, expected 999"),
        "{e}"
    );
}

#[test]
fn tcp_registers_never_go_backwards() {
    let Some(py) = python() else { return };
    let mut server = Meter::start(&py, "sdm630", 1, Listen::Tcp, SDM630_STATE);
    let mut m = Probe::start(tcp_config(Model::Sdm630, server.port, 1, SERIAL));
    m.until("a first reading", |r| {
        r.registers == regs(1_234_567, 89_500)
    });

    // The meter's import register drops (a reset, a faulty meter): refused, the last good
    // value stays.
    server.send(r#"{"import_kwh": 1000.0}"#);
    let e = m.until_error("import register went backwards");
    assert!(e.contains("1000000 Wh after 1234567 Wh"), "{e}");
    assert_eq!(m.poll().registers, regs(1_234_567, 89_500));
    m.until_failures(2);

    // Growing again but still below the last good value: still refused.
    server.send(r#"{"import_kwh": 1234.0}"#);
    m.until_failures(2);
    assert!(fault(&m.poll()));
    // Past it: accepted.
    server.send(r#"{"import_kwh": 1234.6}"#);
    let r = m.until("recovery", ok);
    assert_eq!(r.registers, regs(1_234_600, 89_500));

    // The export register too.
    server.send(r#"{"export_kwh": 89.4}"#);
    m.until_error("export register went backwards");
    assert_eq!(m.poll().registers, regs(1_234_600, 89_500));
}

/// RTU settings on the node's end of `pair`. Parity is always none: Linux pseudo-terminals
/// refuse to set a parity bit (`tcsetattr` fails with EINVAL), so a parity setting could not
/// be tested on them anyway.
fn rtu_config(
    model: Model,
    pair: &SerialPair,
    unit: u8,
    serial: u32,
    stop_bits: u8,
) -> ModbusConfig {
    ModbusConfig {
        model,
        transport: Transport::Rtu {
            device: pair.node_end.display().to_string(),
            baud: 9600,
            parity: Parity::None,
            stop_bits,
        },
        unit_id: unit,
        serial: Some(serial),
        timeout_ms: 300,
        poll_interval_ms: 100,
        ..ModbusConfig::default()
    }
}

#[test]
fn rtu_sdm120_readings_silence_and_a_swapped_meter() {
    let Some(py) = python() else { return };
    let pair = SerialPair::new();
    let state = r#"{"serial": 20250001, "voltage_v": [229.5], "current_a": [10.0],
        "power_w": [2290.0], "frequency_hz": 50.0, "import_kwh": 512.25, "export_kwh": 7.125}"#;
    let rtu = Listen::Rtu {
        device: &pair.meter_end,
        baud: 9600,
        parity: "N",
        stop_bits: 1,
    };
    let mut server = Meter::start(&py, "sdm120", 5, rtu, state);
    let mut m = Probe::start(rtu_config(Model::Sdm120, &pair, 5, 20_250_001, 1));

    let r = m.until("a first reading", ok);
    assert_eq!(r.registers, regs(512_250, 7_125));
    assert_eq!(r.power_w, 2290.0);
    assert_eq!(r.legs[0].vrms_v, 229.5);
    assert_eq!(r.legs[0].irms_a, 10.0);
    assert_eq!(r.legs[0].power_factor, 2290.0 / 2295.0);

    // Energy flows: both registers follow the meter.
    server.send(r#"{"import_kwh": 512.5, "export_kwh": 7.25, "power_w": [-50.0]}"#);
    let r = m.until("new registers", |r| {
        r.registers == regs(512_500, 7_250) && r.power_w < 0.0
    });
    assert_eq!(r.power_w, -50.0);

    // Silent on the bus: fault, registers kept; then back.
    server.send(r#"{"silent": true}"#);
    m.until_error("no answer within 300 ms");
    assert_eq!(m.poll().registers, regs(512_500, 7_250));
    server.send(r#"{"silent": false, "import_kwh": 513.0}"#);
    let r = m.until("recovery", ok);
    assert_eq!(r.registers, regs(513_000, 7_250));

    // Another meter at unit 5.
    server.send(r#"{"serial": 20250002}"#);
    let e = m.until_error("wrong meter");
    assert!(e.contains("20250002") && e.contains("20250001"), "{e}");
    assert_eq!(m.poll().registers, regs(513_000, 7_250));
    server.send(r#"{"serial": 20250001}"#);
    m.until("recovery", ok);
}

#[test]
fn rtu_sdm630_readings_and_backwards_register() {
    let Some(py) = python() else { return };
    let pair = SerialPair::new();
    let rtu = Listen::Rtu {
        device: &pair.meter_end,
        baud: 9600,
        parity: "N",
        stop_bits: 2,
    };
    let mut server = Meter::start(&py, "sdm630", 2, rtu, SDM630_STATE);
    let mut m = Probe::start(rtu_config(Model::Sdm630, &pair, 2, SERIAL, 2));
    let r = m.until("a first reading", ok);
    assert_eq!(r.registers, regs(1_234_567, 89_500));
    assert_eq!(r.power_w, 1100.0);
    let watts: Vec<f64> = r.legs.iter().map(|l| l.real_power_w).collect();
    assert_eq!(watts, [1200.0, -400.0, 300.0]);

    server.send(r#"{"export_kwh": 80.0}"#);
    m.until_error("export register went backwards");
    assert_eq!(m.poll().registers, regs(1_234_567, 89_500));
    server.send(r#"{"export_kwh": 90.0}"#);
    let r = m.until("recovery", ok);
    assert_eq!(r.registers, regs(1_234_567, 90_000));
}
