//! SVM address-space IDs per physical CPU. A TLB entry is tagged with the
//! ASID it was filled under and a TLB belongs to one core, so an ASID only
//! needs to be unique among the vCPUs that run on the same pCPU. Each pCPU
//! therefore hands out its own ASIDs 1..count (0 is the host's) in order;
//! when they run out it starts a new generation from 1 and asks for a full
//! TLB flush on the next VMRUN, so no translation of an earlier holder of
//! the same number survives (the scheme KVM uses). A vCPU whose grant is of
//! an older generation must be given a new one before it runs again
//! ([`AsidSpace::is_current`]); a vCPU always flushes its ASID's entries on
//! its first run, so a number reused from a destroyed vCPU is clean too.
//!
//! QEMU's SVM offers 16 ASIDs and Bochs's `ryzen` 32768; `count` comes from
//! CPUID 0x8000_000A EBX.

/// One grant: the ASID to put in the VMCB and whether the TLB must be
/// flushed whole before the next VMRUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsidGrant {
    pub asid: u32,
    pub generation: u64,
    /// The space wrapped: flush every ASID's entries (TLB_CONTROL = 1).
    pub flush_all: bool,
}

/// The ASIDs of one pCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsidSpace {
    /// ASIDs the CPU supports (CPUID 0x8000_000A EBX), 0 included.
    count: u32,
    next: u32,
    generation: u64,
}

impl AsidSpace {
    /// The space of a CPU with `count` ASIDs (fewer than 2 is treated as 2:
    /// the guest always gets ASID 1 and a full flush on every grant).
    pub const fn new(count: u32) -> Self {
        AsidSpace {
            count: if count < 2 { 2 } else { count },
            next: 1,
            generation: 0,
        }
    }

    /// The next ASID for a vCPU that is about to run on this pCPU.
    pub fn assign(&mut self) -> AsidGrant {
        let mut flush_all = false;
        if self.next >= self.count {
            self.generation = self.generation.wrapping_add(1);
            self.next = 1;
            flush_all = true;
        }
        let asid = self.next;
        self.next += 1;
        AsidGrant {
            asid,
            generation: self.generation,
            flush_all,
        }
    }

    /// Whether `grant` is still valid here (no wrap since it was given).
    pub fn is_current(&self, grant: &AsidGrant) -> bool {
        grant.generation == self.generation
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn asids_run_from_one_and_wrap_with_a_flush() {
        let mut s = AsidSpace::new(16);
        let first: std::vec::Vec<u32> = (0..15).map(|_| s.assign().asid).collect();
        assert_eq!(first, (1..16).collect::<std::vec::Vec<_>>());
        let old = AsidGrant {
            asid: 15,
            generation: 0,
            flush_all: false,
        };
        assert!(s.is_current(&old));
        let wrapped = s.assign();
        assert_eq!(
            wrapped,
            AsidGrant {
                asid: 1,
                generation: 1,
                flush_all: true
            }
        );
        assert!(!s.is_current(&old), "an old generation must be reassigned");
        assert!(!s.assign().flush_all);
    }

    #[test]
    fn tiny_spaces_still_work() {
        for count in [0, 1, 2] {
            let mut s = AsidSpace::new(count);
            let a = s.assign();
            let b = s.assign();
            assert_eq!((a.asid, b.asid), (1, 1), "count {count}");
            assert!(b.flush_all, "every reuse flushes");
        }
    }

    #[test]
    fn zero_is_never_granted() {
        let mut s = AsidSpace::new(32768);
        for _ in 0..100_000 {
            assert_ne!(s.assign().asid, 0);
        }
    }
}
