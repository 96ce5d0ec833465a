//! Cache allocation (Intel CAT / AMD L3 QoS) as the configurator planned it: which class of
//! service (CLOS) each pCPU of a VM with a `cache_mask` runs in, and each CLOS's way mask.

/// One pCPU's class of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcpuClos {
    /// The pCPU.
    pub pcpu: u16,
    /// The VM that owns it (scenario id).
    pub vm: u16,
    /// Its CLOS (1 or more: CLOS 0 is the default class).
    pub clos: u16,
    /// The CLOS's way mask (contiguous, non-zero, within [`CacheAllocation::ways`]).
    pub mask: u64,
}

/// The scenario's cache allocation; `pcpus` is empty when no VM asked for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheAllocation {
    /// The board's L3 ways (0 when no VM asked for cache allocation).
    pub ways: u8,
    /// CLOS 0's mask: the ways no VM asked for (every way if the VMs took them all).
    pub default_mask: u64,
    /// Each pCPU of a VM with a mask, by pCPU.
    pub pcpus: &'static [PcpuClos],
}

impl CacheAllocation {
    /// No cache allocation.
    pub const NONE: CacheAllocation = CacheAllocation {
        ways: 0,
        default_mask: 0,
        pcpus: &[],
    };

    /// Whether any VM asked for cache allocation.
    pub fn is_used(&self) -> bool {
        !self.pcpus.is_empty()
    }

    /// The class of service of `pcpu`, if its VM has a mask.
    pub fn for_pcpu(&self, pcpu: u16) -> Option<&PcpuClos> {
        self.pcpus.iter().find(|p| p.pcpu == pcpu)
    }

    /// Whether VM `vm` has a mask.
    pub fn vm_has_mask(&self, vm: u16) -> bool {
        self.pcpus.iter().any(|p| p.vm == vm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_by_pcpu_and_vm() {
        static PCPUS: [PcpuClos; 2] = [
            PcpuClos {
                pcpu: 2,
                vm: 1,
                clos: 1,
                mask: 0xF0,
            },
            PcpuClos {
                pcpu: 3,
                vm: 1,
                clos: 2,
                mask: 0x0F,
            },
        ];
        let c = CacheAllocation {
            ways: 12,
            default_mask: 0xF00,
            pcpus: &PCPUS,
        };
        assert!(c.is_used() && !CacheAllocation::NONE.is_used());
        assert_eq!(c.for_pcpu(3).map(|p| p.mask), Some(0x0F));
        assert!(c.for_pcpu(1).is_none());
        assert!(c.vm_has_mask(1) && !c.vm_has_mask(0));
    }
}
