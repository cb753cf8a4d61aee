//! The node's clock: the current time (with the testnet's optional offset) and whether the
//! system clock is synchronised. A node whose clock is not synchronised refuses to sign offers
//! and attestations, since neighbours would judge their times against their own clocks.

use crate::config::{ClockCheck, ClockConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// What the node knows about its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockState {
    /// Synchronised (NTP says so, or configured to trust).
    Synced,
    /// Not synchronised, or unknown.
    Unsynced,
}

/// The node's view of time. Clones share the offset, so a skew reaches every part of the node.
#[derive(Debug, Clone)]
pub struct Clock {
    check: ClockCheck,
    offset_ms: Arc<AtomicI64>,
    /// Simulated milliseconds per real millisecond (the testnet's accelerated clock); 1 on a
    /// real node.
    speed: u64,
    /// The real time from which simulated time runs `speed` times faster (the configured
    /// origin, or when the clock was made). Nodes sharing an origin, offset and speed agree.
    origin_ms: i64,
}

fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Clock {
    /// A clock as configured.
    pub fn new(cfg: &ClockConfig) -> Clock {
        Clock {
            check: cfg.check,
            offset_ms: Arc::new(AtomicI64::new(cfg.offset_ms)),
            speed: u64::from(cfg.speed.max(1)),
            origin_ms: if cfg.origin_ms > 0 {
                cfg.origin_ms as i64
            } else {
                system_ms()
            },
        }
    }

    /// Now, in UTC milliseconds: the system clock, run `speed` times faster from when the
    /// clock was made, plus the configured offset.
    pub fn now_ms(&self) -> u64 {
        let elapsed = system_ms().saturating_sub(self.origin_ms).max(0);
        let sim = self
            .origin_ms
            .saturating_add(elapsed.saturating_mul(self.speed as i64));
        sim.saturating_add(self.offset_ms.load(Ordering::Relaxed))
            .max(0) as u64
    }

    /// Moves this clock (and its clones) by `delta_ms`: the testnet's clock skew, which the
    /// kernel cannot apply to one process.
    pub fn skew_by(&self, delta_ms: i64) {
        self.offset_ms.fetch_add(delta_ms, Ordering::Relaxed);
    }

    /// The offset from the (accelerated) system clock, ms.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// How long to wait, in real time, until the clock shows `at_ms`.
    pub fn real_until(&self, at_ms: u64) -> std::time::Duration {
        std::time::Duration::from_millis(at_ms.saturating_sub(self.now_ms()) / self.speed)
    }

    /// Simulated milliseconds per real millisecond.
    pub fn speed(&self) -> u64 {
        self.speed
    }

    /// Whether the clock is synchronised right now.
    pub fn state(&self) -> ClockState {
        match self.check {
            ClockCheck::Trust => ClockState::Synced,
            ClockCheck::Unsynced => ClockState::Unsynced,
            ClockCheck::Auto => {
                if kernel_synced() || timesyncd_synced() {
                    ClockState::Synced
                } else {
                    ClockState::Unsynced
                }
            }
        }
    }

    /// Whether the node may sign time-sensitive messages.
    pub fn may_sign(&self) -> bool {
        self.state() == ClockState::Synced
    }
}

/// What each source says about the system clock (`wattmesh clock`): the kernel's NTP status
/// and systemd-timesyncd's flag file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// The kernel's answer (adjtimex, read only), or why it could not be asked: a sandbox that
    /// filters the clock system calls (systemd's `ProtectClock=`) makes it fail.
    pub kernel: Result<bool, String>,
    /// Whether `/run/systemd/timesync/synchronized` exists.
    pub timesyncd: bool,
}

impl SyncReport {
    /// Asks both sources now.
    pub fn now() -> SyncReport {
        SyncReport {
            kernel: kernel_sync_status().map_err(|e| e.to_string()),
            timesyncd: timesyncd_synced(),
        }
    }

    /// Synchronised by either source (what `check = "auto"` uses).
    pub fn synced(&self) -> bool {
        self.kernel == Ok(true) || self.timesyncd
    }
}

/// systemd-timesyncd creates this file once it has synchronised the clock.
fn timesyncd_synced() -> bool {
    std::path::Path::new(TIMESYNCD_FLAG).exists()
}

/// The flag file systemd-timesyncd creates once it has synchronised the clock.
pub const TIMESYNCD_FLAG: &str = "/run/systemd/timesync/synchronized";

fn kernel_synced() -> bool {
    kernel_sync_status().unwrap_or(false)
}

/// Asks the kernel (adjtimex with no modes: read only) whether NTP discipline is in effect.
/// The kernel clears `STA_UNSYNC` and returns something other than `TIME_ERROR` while an NTP
/// daemon (chrony, ntpd, systemd-timesyncd) keeps the clock synchronised. Needs no privilege;
/// glibc makes it the `clock_adjtime` system call (`adjtimex` on older systems), which a
/// seccomp filter such as systemd's `ProtectClock=yes` refuses even with no modes set.
#[allow(unsafe_code)]
fn kernel_sync_status() -> std::io::Result<bool> {
    // SAFETY: `timex` is a plain C struct for which all-zero bytes are valid; with `modes == 0`
    // adjtimex only reads the kernel's state into it.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, exclusively borrowed `timex` for the duration of the call.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_states_and_offset() {
        let c = Clock::new(&ClockConfig {
            check: ClockCheck::Unsynced,
            offset_ms: 0,
            speed: 1,
            origin_ms: 0,
        });
        assert!(!c.may_sign());
        let t = Clock::new(&ClockConfig {
            check: ClockCheck::Trust,
            offset_ms: 3_600_000,
            speed: 1,
            origin_ms: 0,
        });
        assert!(t.may_sign());
        let plain = Clock::new(&ClockConfig::default());
        let d = t.now_ms() as i64 - plain.now_ms() as i64;
        assert!((3_590_000..=3_610_000).contains(&d), "{d}");
    }

    #[test]
    fn the_kernel_answers_without_privilege() {
        // Read-only adjtimex needs no capability; outside a sandbox it always answers.
        let r = SyncReport::now();
        assert!(r.kernel.is_ok(), "{r:?}");
        assert_eq!(r.synced(), r.kernel == Ok(true) || r.timesyncd);
    }

    #[test]
    fn an_accelerated_clock_runs_faster() {
        let fast = Clock::new(&ClockConfig {
            check: ClockCheck::Trust,
            offset_ms: 0,
            speed: 100,
            origin_ms: 0,
        });
        let a = fast.now_ms();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let b = fast.now_ms();
        // At least 50 real ms passed, so at least 5 simulated seconds.
        assert!(b - a >= 5_000, "{}", b - a);
        assert!(fast.real_until(b + 10_000) <= std::time::Duration::from_millis(100));
    }
}
