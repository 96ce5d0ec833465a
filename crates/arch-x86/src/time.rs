//! Time from the TSC, calibrated once against the PIT.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::cpu::rdtsc;
use crate::io::{inb, outb};

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSC_AT_BOOT: AtomicU64 = AtomicU64::new(0);

const PIT_HZ: u64 = 1_193_182;
/// Calibration window: 10 ms of PIT channel 2.
const PIT_TICKS: u16 = 11_932;

/// How the TSC frequency was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TscSource {
    Pit,
    /// The PIT never counted down: an assumed value is in use.
    Assumed,
}

/// Marks the boot epoch for timestamps; call first thing on the BSP.
pub fn mark_boot() {
    TSC_AT_BOOT.store(rdtsc(), Ordering::Relaxed);
}

/// Measures the TSC rate against PIT channel 2 (gate through port 0x61, mode 0).
pub fn calibrate() -> TscSource {
    let gate = inb(0x61);
    outb(0x61, (gate & !0x02) | 0x01); // gate on, speaker off
    outb(0x43, 0xB0); // channel 2, lobyte/hibyte, mode 0, binary
    outb(0x42, PIT_TICKS as u8);
    outb(0x42, (PIT_TICKS >> 8) as u8);
    let start = rdtsc();
    let mut done = false;
    // Bounded: a board without a PIT must not hang the boot.
    for _ in 0..50_000_000u32 {
        if inb(0x61) & 0x20 != 0 {
            done = true;
            break;
        }
    }
    let end = rdtsc();
    outb(0x61, gate);
    if done && end > start {
        let hz = (end - start) * PIT_HZ / u64::from(PIT_TICKS);
        TSC_HZ.store(hz, Ordering::Relaxed);
        TscSource::Pit
    } else {
        TSC_HZ.store(1_000_000_000, Ordering::Relaxed);
        TscSource::Assumed
    }
}

/// The TSC frequency in Hz (0 before calibration).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Microseconds since [`mark_boot`].
pub fn uptime_us() -> u64 {
    let hz = tsc_hz();
    if hz == 0 {
        return 0;
    }
    let ticks = rdtsc().wrapping_sub(TSC_AT_BOOT.load(Ordering::Relaxed));
    (u128::from(ticks) * 1_000_000 / u128::from(hz)) as u64
}

/// Busy-waits for at least `us` microseconds.
pub fn delay_us(us: u64) {
    let hz = tsc_hz().max(1_000_000);
    let ticks = us.saturating_mul(hz / 1_000_000);
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

/// A deadline `us` microseconds from now, for bounded waits.
pub fn deadline_after_us(us: u64) -> u64 {
    rdtsc().saturating_add(us.saturating_mul(tsc_hz().max(1_000_000) / 1_000_000))
}

/// Whether a deadline from [`deadline_after_us`] has passed.
pub fn passed(deadline: u64) -> bool {
    rdtsc() >= deadline
}
