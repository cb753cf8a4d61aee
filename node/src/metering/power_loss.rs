//! Power cuts at any point of the clamp meter's life: between batch writes, during a write,
//! between the forced write and the signature, right after a signature. The meter loop, the
//! clamp source on a synthetic ADC and the real redb store run together; the database is
//! closed at the cut and opened again at the restart, and nothing else survives.
//!
//! What must hold: the registers of the signed chain never go backwards, each attestation
//! follows its predecessor by the node's rule (`node/attest.rs`), the registers after a
//! restart are at least the last signed ones, the time the node was off shows as missing
//! coverage, and no energy is invented.

use super::*;
use crate::meter::MeterError;
use crate::meter::adc::{Chip, Mcp3x08};
use crate::meter::clamps::CtSource;
use crate::meter::clamps::synthetic::{SimClock, SimTime, SyntheticAdc};
use crate::meter::clamps::tests::{config, mains, power_w};
use crate::meter::registers::{RegisterStore, SavedChannel};
use crate::store::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const T0: u64 = 1_782_043_200_000; // a slot boundary
const SLOT_MS: u64 = 60_000;
const POLL_MS: u64 = 5_000;
/// One conversion every 500 µs: 1000 samples a second per input, 20 per mains cycle.
const TRANSFER_US: u64 = 500;

/// Imports for 70 s, then exports for 50 s, round and round (seconds since T0).
fn lag(t: f64) -> f64 {
    if t.rem_euclid(120.0) < 70.0 {
        30.0
    } else {
        150.0
    }
}

/// The true energy in `[from_ms, to_ms)`, Wh (import, export), from the waveform's definition.
fn truth(from_ms: u64, to_ms: u64) -> (f64, f64) {
    let (mut i, mut e) = (0.0, 0.0);
    let mut t = from_ms;
    while t < to_ms {
        let p = power_w(lag((t - T0) as f64 / 1000.0)) * 0.001 / 3600.0;
        if p > 0.0 {
            i += p
        } else {
            e -= p
        }
        t += 1;
    }
    (i, e)
}

/// The store, with a switch that cuts the power during the next write (the write is lost).
#[derive(Clone)]
struct Disk {
    store: Store,
    cut: Arc<AtomicBool>,
}

impl RegisterStore for Disk {
    fn load(&self, source: &str) -> Result<Vec<SavedChannel>, MeterError> {
        self.store.load(source)
    }
    fn save(&self, channels: &[SavedChannel]) -> Result<(), MeterError> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(MeterError::Storage("power cut during the write".into()));
        }
        self.store.save(channels)
    }
}

/// What the node signs, by the rules of `node/attest.rs`.
#[derive(Debug, Clone, Copy)]
struct Signed {
    slot_ms: u64,
    import_register_wh: u64,
    export_register_wh: u64,
    import_wh: u64,
    export_wh: u64,
    coverage_permille: u16,
}

fn sign(chain: &mut Vec<Signed>, t: SlotTotals) {
    let prev = chain.last().copied();
    if prev.is_some_and(|p| p.slot_ms >= t.slot_ms) {
        return;
    }
    let start = match prev {
        Some(p) if p.slot_ms + SLOT_MS == t.slot_ms => Registers {
            import_wh: p.import_register_wh,
            export_wh: p.export_register_wh,
        },
        _ => t.start,
    };
    let di = t.end.import_wh.checked_sub(start.import_wh);
    let de = t.end.export_wh.checked_sub(start.export_wh);
    let (Some(import_wh), Some(export_wh)) = (di, de) else {
        panic!("registers went backwards: {t:?} after {prev:?}");
    };
    if let Some(p) = prev {
        // MeterAttestation::check_follows.
        assert!(t.end.import_wh >= p.import_register_wh && t.end.export_wh >= p.export_register_wh);
    }
    chain.push(Signed {
        slot_ms: t.slot_ms,
        import_register_wh: t.end.import_wh,
        export_register_wh: t.end.export_wh,
        import_wh,
        export_wh,
        coverage_permille: t.coverage_permille,
    });
}

struct Boot {
    lp: Loop,
    time: Arc<SimTime>,
}

fn boot(disk: &Disk, at_ms: u64) -> Boot {
    let time = SimTime::new((at_ms - T0) * 1000, TRANSFER_US);
    let adc = Mcp3x08::new(
        SyntheticAdc::new(12, time.clone(), mains(lag)),
        Chip::Mcp3208,
    );
    let src = CtSource::start(
        config(),
        adc,
        SimClock(time.clone()),
        Box::new(disk.clone()),
    )
    .unwrap();
    Boot {
        lp: Loop {
            source: Box::new(src),
            grid: 0,
            simulated: false,
            slot_len: SLOT_MS,
            poll_ms: POLL_MS,
            slot: None,
            last: None,
            minute: None,
        },
        time,
    }
}

impl Boot {
    /// One poll at `t`; signs the slots it closes unless `sign_slots` is false.
    fn step(&mut self, t: u64, chain: &mut Vec<Signed>, sign_slots: bool) {
        self.time.run_until((t - T0) * 1000);
        for ev in self.lp.step(t) {
            if let (MeterEvent::Slot(s), true) = (ev, sign_slots) {
                sign(chain, s);
            }
        }
    }

    fn grid_registers(&mut self) -> Registers {
        let s = self.lp.source.poll(0).unwrap();
        s.reading(0).unwrap().registers.unwrap()
    }

    fn power_off(self) {
        self.time.shutdown();
        drop(self.lp);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cut {
    /// Just before the poll at the cut time.
    BeforePoll,
    /// The write offered at the cut time is lost (the power fails during it).
    DuringWrite,
    /// After the poll at the cut time (and its forced write, if it closed a slot), before the
    /// node signs.
    BeforeSigning,
    /// Right after the node signed what the poll at the cut time closed.
    AfterSigning,
}

/// Runs to `cut_ms`, cuts the power for `off_ms`, restarts and runs three more slots.
fn scenario(cut: Cut, cut_ms: u64, off_ms: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wattmesh.redb");
    let disk = |cut| Disk {
        store: Store::open(&path).unwrap(),
        cut: Arc::new(AtomicBool::new(cut)),
    };
    let mut chain = Vec::new();
    let d = disk(false);
    let mut b = boot(&d, T0);
    let mut t = T0;
    while t < cut_ms {
        b.step(t, &mut chain, true);
        t += POLL_MS;
    }
    // The last time the ADC ran to before the cut.
    let ran_to = if cut == Cut::BeforePoll {
        t - POLL_MS
    } else {
        t
    };
    match cut {
        Cut::BeforePoll => {}
        Cut::DuringWrite => {
            d.cut.store(true, Ordering::SeqCst);
            // Every write this poll offers fails; a forced one makes the loop skip the slot.
            b.step(t, &mut chain, true);
        }
        Cut::BeforeSigning => b.step(t, &mut chain, false),
        Cut::AfterSigning => b.step(t, &mut chain, true),
    }
    let signed_before = chain.len();
    let last_signed = chain.last().copied();
    b.power_off();
    drop(d);

    // Back on: the database is opened again; nothing else survived.
    let restart = cut_ms + off_ms;
    let d = disk(false);
    let mut b = boot(&d, restart);
    let regs = b.grid_registers();
    if let Some(p) = last_signed {
        assert!(
            regs.import_wh >= p.import_register_wh && regs.export_wh >= p.export_register_wh,
            "{cut:?} at {}: restarted at {regs:?} below the signed {p:?}",
            cut_ms - T0
        );
    }
    let end = restart - restart % SLOT_MS + 4 * SLOT_MS;
    let mut t = restart;
    while t <= end {
        b.step(t, &mut chain, true);
        t += POLL_MS;
    }
    let final_regs = b.grid_registers();
    b.power_off();

    let ctx = format!(
        "{cut:?} at +{} s, off {} s",
        (cut_ms - T0) / 1000,
        off_ms / 1000
    );
    assert!(
        chain.len() > signed_before,
        "{ctx}: nothing signed after the restart"
    );
    for w in chain.windows(2) {
        assert!(
            w[1].import_register_wh >= w[0].import_register_wh,
            "{ctx}: {w:?}"
        );
        assert!(
            w[1].export_register_wh >= w[0].export_register_wh,
            "{ctx}: {w:?}"
        );
    }
    for s in &chain {
        let slot_end = s.slot_ms + SLOT_MS;
        // No slot that the outage touched claims the outage as measured.
        if s.slot_ms < restart && slot_end > cut_ms {
            let measurable = slot_end.saturating_sub(restart.max(s.slot_ms));
            let most = measurable * 1000 / SLOT_MS;
            assert!(
                u64::from(s.coverage_permille) <= most,
                "{ctx}: slot +{} s covers {} permille, at most {most} was measured",
                (s.slot_ms - T0) / 1000,
                s.coverage_permille
            );
        }
        assert!(s.import_wh <= 8_000 && s.export_wh <= 8_000, "{ctx}: {s:?}");
    }
    // No energy invented: the registers hold at most what flowed while the meter ran (0.5 %
    // and a watt-hour of rounding), and lost at most what was counted since the last batch write
    // (persist_secs = 25, which does not divide the slot, plus a poll).
    let (ran_i1, ran_e1) = truth(T0, ran_to);
    let (ran_i2, ran_e2) = truth(restart, t - POLL_MS);
    let (ran_i, ran_e) = (ran_i1 + ran_i2, ran_e1 + ran_e2);
    let lost = power_w(30.0) * 30.0 / 3600.0;
    for (name, got, ran) in [
        ("import", final_regs.import_wh as f64, ran_i),
        ("export", final_regs.export_wh as f64, ran_e),
    ] {
        assert!(
            got <= ran * 1.005 + 1.0,
            "{ctx}: {name} {got} Wh, only {ran:.1} Wh flowed"
        );
        assert!(
            got >= (ran - lost) * 0.995 - 2.0,
            "{ctx}: {name} {got} Wh of {ran:.1} Wh"
        );
    }
}

#[test]
fn a_power_cut_between_batch_writes_never_makes_registers_go_backwards() {
    // Cuts through a slot, between and right after the 25 s batch writes (at +75 and +100 s).
    for k in [13, 15, 16, 20, 21] {
        scenario(Cut::BeforePoll, T0 + k * POLL_MS, 37_000);
    }
}

#[test]
fn a_power_cut_during_a_write_or_before_signing_never_makes_registers_go_backwards() {
    // The poll at +120 s closes the slot +60..+120 s: its forced write fails, or succeeds but
    // the node never signs; the outage is short (same slot) or spans whole slots.
    for (cut, off) in [
        (Cut::DuringWrite, 10_000),
        (Cut::DuringWrite, 95_000),
        (Cut::BeforeSigning, 10_000),
        (Cut::BeforeSigning, 130_000),
        (Cut::AfterSigning, 20_000),
    ] {
        scenario(cut, T0 + 120_000, off);
    }
    // A lost batch write in the middle of a slot.
    scenario(Cut::DuringWrite, T0 + 100_000, 7_000);
}

/// The ADC stops answering for 30 s while the node runs: the polls in that time are `Fault`,
/// and the slot's coverage says that half of it was not measured.
#[test]
fn a_silent_adc_shows_as_missing_coverage() {
    let dir = tempfile::tempdir().unwrap();
    let d = Disk {
        store: Store::open(&dir.path().join("w.redb")).unwrap(),
        cut: Arc::new(AtomicBool::new(false)),
    };
    let mut chain = Vec::new();
    let mut b = boot(&d, T0);
    let mut t = T0;
    while t <= T0 + 3 * SLOT_MS {
        let silent = (T0 + 70_000..T0 + 100_000).contains(&t);
        if silent {
            // No simulated time for the ADC: no samples, no cycles.
            for ev in b.lp.step(t) {
                if let MeterEvent::Slot(s) = ev {
                    sign(&mut chain, s);
                }
            }
        } else {
            b.step(t, &mut chain, true);
        }
        t += POLL_MS;
    }
    b.power_off();
    let full: Vec<_> = chain
        .iter()
        .map(|s| ((s.slot_ms - T0) / 1000, s.coverage_permille))
        .collect();
    // Slot +0 s was joined at its start, +120 s ran throughout; slot +60 s lost the polls at
    // +70..+95 s, so 65..95 s (30 s) is missing.
    assert_eq!(full[0], (0, 1000), "{full:?}");
    assert_eq!(full[1].0, 60);
    assert!(full[1].1 <= 500, "{full:?}");
    assert_eq!(full[2], (120, 1000), "{full:?}");
}
