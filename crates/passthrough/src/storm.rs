//! Interrupt storm detection for a passed-through function: more than a limit of host
//! interrupts inside a time window means the function floods (broken, or driven into it by its
//! guest); the hypervisor then silences it until its VM restarts. Lock-free: called from the
//! interrupt handler.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Counts one function's interrupts per window.
#[derive(Debug, Default)]
pub struct StormGuard {
    window_start: AtomicU64,
    count: AtomicU32,
    tripped: AtomicBool,
}

impl StormGuard {
    /// A guard with nothing counted.
    pub const fn new() -> Self {
        StormGuard {
            window_start: AtomicU64::new(0),
            count: AtomicU32::new(0),
            tripped: AtomicBool::new(false),
        }
    }

    /// Counts an interrupt at time `now` (any monotonic unit, `window` in the same): true
    /// exactly once, for the interrupt that makes more than `limit` in one window.
    pub fn note(&self, now: u64, window: u64, limit: u32) -> bool {
        if self.tripped.load(Ordering::Relaxed) {
            return false;
        }
        let start = self.window_start.load(Ordering::Relaxed);
        if now.wrapping_sub(start) > window {
            self.window_start.store(now, Ordering::Relaxed);
            self.count.store(1, Ordering::Relaxed);
            return false;
        }
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        n > limit && !self.tripped.swap(true, Ordering::AcqRel)
    }

    /// Whether the function was found flooding.
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::Acquire)
    }

    /// Forgets the storm (the function was reset with its VM).
    pub fn reset(&self) {
        self.count.store(0, Ordering::Relaxed);
        self.tripped.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn trips_once_above_the_limit_within_a_window() {
        let g = StormGuard::new();
        // A steady rate below the limit never trips, across many windows.
        for t in 0..10_000u64 {
            assert!(!g.note(t * 10, 1_000, 150));
        }
        // 200 in one window with a limit of 150: the 151st trips, once.
        let base = 1_000_000;
        let trips: Vec<u64> = (0..200).filter(|i| g.note(base + i, 1_000, 150)).collect();
        assert_eq!(trips, [150]);
        assert!(g.tripped());
        assert!(!g.note(base + 300, 1_000, 150));
        g.reset();
        assert!(!g.tripped());
        assert!(!g.note(base + 5_000, 1_000, 150));
    }

    #[test]
    fn time_going_backwards_or_wrapping_is_a_new_window() {
        let g = StormGuard::new();
        for i in 0..100 {
            assert!(!g.note((u64::MAX - 50).wrapping_add(i), 1_000, 200));
        }
        assert!(!g.note(5, 1_000, 200));
        assert!(!g.tripped());
    }
}
