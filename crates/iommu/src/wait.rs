//! Bounded polling: every wait for a unit's status is an iteration budget,
//! so a unit that never answers becomes an error, never a hung pCPU.

/// Polls a wait makes before giving up. One poll is one uncached MMIO read
/// (hundreds of nanoseconds on real hardware, microseconds under QEMU), so
/// this is well over the milliseconds real units need and well under a
/// human-noticeable hang.
pub const DEFAULT_WAIT_BUDGET: u32 = 1_000_000;

/// Calls `done` up to `budget` times (at least once) until it returns
/// `Some`; `None` if it never did.
pub(crate) fn poll<T>(budget: u32, mut done: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..budget.max(1) {
        if let Some(value) = done() {
            return Some(value);
        }
        core::hint::spin_loop();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_after_the_budget() {
        let mut calls = 0;
        assert_eq!(
            poll(5, || {
                calls += 1;
                None::<()>
            }),
            None
        );
        assert_eq!(calls, 5);
        let mut calls = 0;
        assert_eq!(
            poll(0, || {
                calls += 1;
                (calls == 1).then_some(7)
            }),
            Some(7)
        );
    }
}
