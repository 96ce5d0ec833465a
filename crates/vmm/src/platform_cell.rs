//! A VM's PC platform behind its lock, with what every guest entry asks of it
//! published outside the lock: the earliest device deadline, whether
//! interrupt messages or late answers wait, and the 8259's INT line. An exit
//! that touches no device then takes no lock at all.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Mutex;

/// "No deadline" in [`PlatformCell::deadline_ns`].
const NONE: u64 = u64::MAX;

/// The platform and its published summary.
pub(crate) struct PlatformCell {
    inner: Mutex<vm::PcPlatform>,
    deadline_ns: AtomicU64,
    news: AtomicBool,
    pic_int: AtomicBool,
}

impl PlatformCell {
    pub fn new(p: vm::PcPlatform) -> Self {
        let cell = PlatformCell {
            inner: Mutex::new(p),
            deadline_ns: AtomicU64::new(NONE),
            news: AtomicBool::new(false),
            pic_int: AtomicBool::new(false),
        };
        cell.with(|_| ());
        cell
    }

    /// Runs `f` on the platform, then publishes its summary (every change
    /// goes through here, so the summary is never older than the last
    /// change).
    pub fn with<R>(&self, f: impl FnOnce(&mut vm::PcPlatform) -> R) -> R {
        let mut p = self.inner.lock();
        let r = f(&mut p);
        self.deadline_ns
            .store(p.next_deadline().unwrap_or(NONE), Ordering::Relaxed);
        self.pic_int.store(p.pic_interrupt(), Ordering::Relaxed);
        self.news.store(p.has_news(), Ordering::Release);
        r
    }

    /// Replaces the platform (a VM load).
    pub fn replace(&self, p: vm::PcPlatform) {
        self.with(|old| *old = p);
    }

    /// The earliest device deadline in ns.
    pub fn deadline_ns(&self) -> Option<u64> {
        let d = self.deadline_ns.load(Ordering::Relaxed);
        (d != NONE).then_some(d)
    }

    /// Whether [`PlatformCell::with`] has something to hand out or a timer
    /// to run at `now_ns`.
    pub fn needs_poll(&self, now_ns: u64) -> bool {
        self.news.load(Ordering::Acquire) || self.deadline_ns.load(Ordering::Relaxed) <= now_ns
    }

    /// The 8259 pair's INT output as last published.
    pub fn pic_interrupt(&self) -> bool {
        self.pic_int.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_follows_every_change() {
        let cfg = vm::PlatformConfig {
            now_ns: 0,
            unix_secs: 0,
            ioapic_id: 0,
            uart: None,
            pci_test_device: false,
        };
        let cell = PlatformCell::new(vm::PcPlatform::new(&cfg));
        assert!(!cell.pic_interrupt());
        assert!(!cell.needs_poll(0) || cell.deadline_ns() == Some(0));
        // Program the 8259 master (ICW1-4), unmask IRQ 0 and start the PIT:
        // a deadline appears, and at it the PIC's INT line rises.
        cell.with(|p| {
            for (port, v) in [
                (0x20, 0x11),
                (0x21, 0x20),
                (0x21, 0x04),
                (0x21, 0x01),
                (0x21, 0xFE),
            ] {
                p.pio_write(port, 1, v, 0);
            }
            p.pio_write(0x43, 1, 0x34, 0);
            p.pio_write(0x40, 1, 0x00, 0);
            p.pio_write(0x40, 1, 0x10, 0);
        });
        let due = cell.deadline_ns().expect("the PIT is running");
        assert!(!cell.needs_poll(due - 1));
        assert!(cell.needs_poll(due));
        cell.with(|p| p.poll(due));
        assert!(cell.pic_interrupt(), "IRQ 0 raised INT");
        cell.with(|p| {
            p.pic_acknowledge();
        });
        assert!(!cell.pic_interrupt());
    }
}
