//! The Modbus worker: one thread with a single-threaded tokio runtime that owns the connection
//! (a TCP stream or a serial port) and reads the meter every poll interval.

use super::sdm::{self, Block, RawReading};
use super::track::Tracker;
use super::{ModbusConfig, Parity, Transport, lock};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};
use tokio_modbus::client::{Client, Context, rtu, tcp};
use tokio_modbus::{ExceptionCode, Request, Response, Slave};
use tokio_serial::SerialPort as _;
use tracing::{debug, info, warn};

/// Starts the worker. The runtime is built here so that a failure is reported by `start`.
pub(super) fn spawn(
    cfg: ModbusConfig,
    tracker: Arc<Mutex<Tracker>>,
    stop: oneshot::Receiver<()>,
) -> std::io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("wattmesh-modbus".into())
        .spawn(move || runtime.block_on(run(cfg, tracker, stop)))
}

/// Why a read cycle failed, and whether the connection must be made again.
struct Failure {
    reason: String,
    reconnect: bool,
}

impl Failure {
    /// The connection is in an unknown state (a reply may still be on its way): drop it.
    fn broken(reason: String) -> Failure {
        Failure {
            reason,
            reconnect: true,
        }
    }
}

async fn run(cfg: ModbusConfig, tracker: Arc<Mutex<Tracker>>, mut stop: oneshot::Receiver<()>) {
    let mut ctx: Option<Context> = None;
    let mut logged: Option<Option<String>> = None;
    let mut next = Instant::now();
    loop {
        let result = tokio::select! {
            _ = &mut stop => break,
            r = cycle(&cfg, &mut ctx) => r,
        };
        match result {
            Ok((serial, raw)) => lock(&tracker).answered(std::time::Instant::now(), serial, &raw),
            Err(failure) => {
                if failure.reconnect {
                    ctx = None;
                }
                lock(&tracker).failed(failure.reason);
            }
        }
        // Log changes only: a dead meter polled every second must not flood the log.
        let error = lock(&tracker)
            .health(std::time::Instant::now(), Duration::MAX)
            .error;
        if logged.as_ref() != Some(&error) {
            match &error {
                None => info!(meter = %cfg.transport, unit = cfg.unit_id, "Modbus meter answers"),
                Some(e) => warn!(meter = %cfg.transport, unit = cfg.unit_id, "Modbus meter: {e}"),
            }
            logged = Some(error);
        }
        // Fixed rate; after a long stall, start again from now instead of catching up.
        next += cfg.poll_interval();
        let now = Instant::now();
        if next < now {
            next = now;
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep_until(next) => {}
        }
    }
    if let Some(mut c) = ctx {
        // Best effort; the port or socket is closed when `c` drops anyway.
        let _ = timeout(cfg.timeout(), c.disconnect()).await;
    }
    debug!(meter = %cfg.transport, "Modbus thread stopped");
}

/// One read: connect if needed, then the serial number, the input-register blocks, and the
/// serial number again. A reading is not atomic across requests; reading the serial number on
/// both sides means values are only ever attributed to a meter that answered before and after
/// them, so a swap in the middle of a cycle cannot slip the new meter's values in.
async fn cycle(
    cfg: &ModbusConfig,
    ctx: &mut Option<Context>,
) -> Result<(u32, RawReading), Failure> {
    let c = match ctx {
        Some(c) => c,
        None => ctx.insert(connect(cfg).await.map_err(Failure::broken)?),
    };
    let before = read_serial(cfg, c).await?;
    let [a, b] = cfg.model.blocks();
    let first = read_block(cfg, c, a).await?;
    let second = read_block(cfg, c, b).await?;
    let after = read_serial(cfg, c).await?;
    if before != after {
        return Err(Failure {
            reason: format!(
                "the serial number changed during a read ({before}, then {after}): another \
                 meter answers at unit {}",
                cfg.unit_id
            ),
            reconnect: false,
        });
    }
    let raw = RawReading::decode(cfg.model, &first, &second)
        .ok_or_else(|| Failure::broken("a reply has the wrong length".into()))?;
    Ok((before, raw))
}

async fn read_serial(cfg: &ModbusConfig, c: &mut Context) -> Result<u32, Failure> {
    let words = request(cfg, c, Kind::Holding, sdm::SERIAL_ADDRESS, 2).await?;
    sdm::decode_serial(&words)
        .ok_or_else(|| Failure::broken("the serial number reply has the wrong length".into()))
}

async fn read_block(
    cfg: &ModbusConfig,
    c: &mut Context,
    block: Block,
) -> Result<Vec<u16>, Failure> {
    request(cfg, c, Kind::Input, block.start, block.len).await
}

#[derive(Clone, Copy)]
enum Kind {
    Holding,
    Input,
}

/// One request, bounded by the timeout. A Modbus exception leaves the connection usable; a
/// timeout or a transport or protocol error does not.
async fn request(
    cfg: &ModbusConfig,
    c: &mut Context,
    kind: Kind,
    start: u16,
    len: u16,
) -> Result<Vec<u16>, Failure> {
    let last = start.saturating_add(len.saturating_sub(1));
    let what = match kind {
        Kind::Holding => format!("holding registers {start:#06x}-{last:#06x}"),
        Kind::Input => format!("input registers {start:#06x}-{last:#06x}"),
    };
    let at = format!("unit {} at {}", cfg.unit_id, cfg.transport);
    // `call` rather than the `Reader` helpers: they assert (in debug builds) that a reply has
    // the requested length, and a late reply to an earlier request must be an error, not a
    // panic.
    let request = match kind {
        Kind::Holding => Request::ReadHoldingRegisters(start, len),
        Kind::Input => Request::ReadInputRegisters(start, len),
    };
    match timeout(cfg.timeout(), c.call(request)).await {
        Err(_) => Err(Failure::broken(format!(
            "no answer within {} ms from {at} (reading {what})",
            cfg.timeout_ms
        ))),
        Ok(Err(e)) => Err(Failure::broken(format!(
            "reading {what} from {at} failed: {e}"
        ))),
        Ok(Ok(Err(code))) => Err(Failure {
            reason: exception_reason(code, &what, &at),
            reconnect: false,
        }),
        Ok(Ok(Ok(Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words))))
            if words.len() == usize::from(len) =>
        {
            Ok(words)
        }
        Ok(Ok(Ok(other))) => Err(Failure::broken(format!(
            "{at} answered {other:?} when asked for {what}"
        ))),
    }
}

fn exception_reason(code: ExceptionCode, what: &str, at: &str) -> String {
    let hint = match code {
        ExceptionCode::IllegalDataAddress | ExceptionCode::IllegalFunction => {
            " (is the configured model right?)"
        }
        _ => "",
    };
    format!("{at} refused to read {what}: Modbus exception \"{code}\"{hint}")
}

async fn connect(cfg: &ModbusConfig) -> Result<Context, String> {
    let slave = Slave(cfg.unit_id);
    match &cfg.transport {
        Transport::Tcp { host, port } => {
            let stream =
                match timeout(cfg.timeout(), TcpStream::connect((host.as_str(), *port))).await {
                    Err(_) => {
                        return Err(format!(
                            "no TCP connection to {host}:{port} within {} ms",
                            cfg.timeout_ms
                        ));
                    }
                    Ok(Err(e)) => return Err(format!("cannot connect to {host}:{port}: {e}")),
                    Ok(Ok(s)) => s,
                };
            // Requests are small and strictly one at a time: send each at once.
            let _ = stream.set_nodelay(true);
            Ok(tcp::attach_slave(stream, slave))
        }
        Transport::Rtu {
            device,
            baud,
            parity,
            stop_bits,
        } => {
            let builder = tokio_serial::new(device, *baud)
                .data_bits(tokio_serial::DataBits::Eight)
                .parity(match parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Even => tokio_serial::Parity::Even,
                    Parity::Odd => tokio_serial::Parity::Odd,
                })
                .stop_bits(if *stop_bits == 2 {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                })
                .flow_control(tokio_serial::FlowControl::None);
            // Opening is a few quick system calls; serialport opens the port exclusively, so a
            // second program on the same adapter is refused instead of garbling the bus.
            let port = tokio_serial::SerialStream::open(&builder)
                .map_err(|e| format!("cannot open serial port {device}: {e}"))?;
            // A reply that arrived after its request timed out may still wait in the input
            // buffer; it would be taken for the answer to the next request.
            port.clear(tokio_serial::ClearBuffer::Input)
                .map_err(|e| format!("cannot clear serial port {device}: {e}"))?;
            Ok(rtu::attach_slave(port, slave))
        }
    }
}
