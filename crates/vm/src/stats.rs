//! VM exit counters, one per [`ExitKind`], for the shell and the benchmarks.

use core::fmt;

use vcpu::{ExitKind, VmExit, EXIT_KINDS};

/// How many exits of each kind one vCPU (or, summed, one VM) has taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStats {
    counts: [u64; EXIT_KINDS.len()],
}

impl Default for ExitStats {
    fn default() -> Self {
        Self::new()
    }
}

impl ExitStats {
    /// All counters at zero.
    pub const fn new() -> Self {
        ExitStats {
            counts: [0; EXIT_KINDS.len()],
        }
    }

    /// Counts one exit. Counters saturate rather than wrap.
    pub fn record(&mut self, exit: &VmExit) {
        if let Some(c) = self.counts.get_mut(exit.kind() as usize) {
            *c = c.saturating_add(1);
        }
    }

    /// Exits of `kind` so far.
    pub fn get(&self, kind: ExitKind) -> u64 {
        self.counts.get(kind as usize).copied().unwrap_or(0)
    }

    /// Exits of every kind together.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }

    /// Adds `other`'s counts to these (e.g. a vCPU's to its VM's).
    pub fn add(&mut self, other: &ExitStats) {
        for (c, o) in self.counts.iter_mut().zip(other.counts) {
            *c = c.saturating_add(o);
        }
    }

    /// Sets every counter back to zero.
    pub fn reset(&mut self) {
        *self = Self::new();
    }
}

/// `io=12 cpuid=3 ...`: the non-zero counters in [`EXIT_KINDS`] order,
/// separated by single spaces; nothing at all when every counter is zero.
impl fmt::Display for ExitStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for ((_, name), &count) in EXIT_KINDS.iter().zip(&self.counts) {
            if count == 0 {
                continue;
            }
            if !first {
                f.write_str(" ")?;
            }
            write!(f, "{name}={count}")?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use vcpu::{IoAccess, MsrAccess, NptFault};

    fn every_exit() -> [VmExit; 16] {
        [
            VmExit::Io(IoAccess {
                port: 0xFFFF,
                size: 3,
                write: true,
                string: true,
                rep: true,
            }),
            VmExit::Mmio(NptFault {
                gpa: u64::MAX,
                write: true,
                fetch: true,
                present: true,
            }),
            VmExit::Cpuid,
            VmExit::Msr(MsrAccess { write: false }),
            VmExit::Hlt,
            VmExit::CrAccess {
                cr: 255,
                write: true,
            },
            VmExit::Xsetbv,
            VmExit::Rdpmc,
            VmExit::Exception {
                vector: 255,
                error_code: Some(u32::MAX),
            },
            VmExit::ExternalInterrupt,
            VmExit::Hypercall,
            VmExit::InterruptWindow,
            VmExit::Shutdown,
            VmExit::Forbidden { raw: u64::MAX },
            VmExit::EntryFailed { raw: 0 },
            VmExit::Unknown { raw: u64::MAX },
        ]
    }

    #[test]
    fn records_each_kind_in_its_own_counter() {
        let mut s = ExitStats::new();
        for (i, e) in every_exit().iter().enumerate() {
            for _ in 0..=i {
                s.record(e);
            }
        }
        for (i, (kind, _)) in EXIT_KINDS.iter().enumerate() {
            assert_eq!(s.get(*kind), i as u64 + 1);
        }
        assert_eq!(every_exit().len(), EXIT_KINDS.len());
        assert_eq!(s.total(), (1..=EXIT_KINDS.len() as u64).sum::<u64>());
    }

    #[test]
    fn display_lists_non_zero_counters_in_table_order() {
        let mut s = ExitStats::default();
        assert_eq!(s.to_string(), "");
        for _ in 0..3 {
            s.record(&VmExit::Cpuid);
        }
        for _ in 0..12 {
            s.record(&VmExit::Io(IoAccess {
                port: 0x3F8,
                size: 1,
                write: true,
                string: false,
                rep: false,
            }));
        }
        s.record(&VmExit::Unknown { raw: 7 });
        assert_eq!(s.to_string(), "io=12 cpuid=3 unknown=1");
        s.reset();
        assert_eq!(s.total(), 0);
        assert_eq!(s.to_string(), "");
    }

    #[test]
    fn counters_saturate() {
        let mut s = ExitStats::new();
        s.counts = [u64::MAX; EXIT_KINDS.len()];
        s.record(&VmExit::Hlt);
        assert_eq!(s.get(ExitKind::Hlt), u64::MAX);
        assert_eq!(s.total(), u64::MAX);
        let mut t = ExitStats::new();
        t.record(&VmExit::Hlt);
        s.add(&t);
        assert_eq!(s.get(ExitKind::Hlt), u64::MAX);
    }

    #[test]
    fn add_sums_per_kind() {
        let mut a = ExitStats::new();
        let mut b = ExitStats::new();
        a.record(&VmExit::Hlt);
        b.record(&VmExit::Hlt);
        b.record(&VmExit::Hypercall);
        a.add(&b);
        assert_eq!(a.get(ExitKind::Hlt), 2);
        assert_eq!(a.get(ExitKind::Hypercall), 1);
        assert_eq!(a.to_string(), "hlt=2 hypercall=1");
    }
}
