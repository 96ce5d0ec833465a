//! [`Caps`]: the version, capability and extended capability registers,
//! decoded.

use core::fmt;

/// What a unit reports about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// VER: major version (bits 7:4).
    pub major: u8,
    /// VER: minor version (bits 3:0).
    pub minor: u8,
    /// The raw capability register.
    pub cap: u64,
    /// The raw extended capability register.
    pub ecap: u64,
}

impl Caps {
    /// Decodes the raw registers.
    pub fn new(ver: u32, cap: u64, ecap: u64) -> Self {
        Self {
            major: ((ver >> 4) & 0xf) as u8,
            minor: (ver & 0xf) as u8,
            cap,
            ecap,
        }
    }

    /// CAP.ND: domain ids the unit supports (2^(4 + 2·ND)).
    pub fn domains(&self) -> u32 {
        let nd = (self.cap & 7) as u32;
        1 << (4 + 2 * nd.min(6))
    }

    /// CAP.RWBF: writes to tables must be flushed with GCMD.WBF.
    pub fn required_write_buffer_flush(&self) -> bool {
        self.cap & (1 << 4) != 0
    }

    /// CAP.CM: not-present and erroneous entries may be cached (virtual
    /// units): every entry made present needs an invalidation, and domain
    /// id 0 is reserved.
    pub fn caching_mode(&self) -> bool {
        self.cap & (1 << 7) != 0
    }

    /// CAP.SAGAW: bit 1 = 39-bit (3-level), bit 2 = 48-bit (4-level), bit 3
    /// = 57-bit (5-level) tables supported.
    pub fn sagaw(&self) -> u8 {
        ((self.cap >> 8) & 0x1f) as u8
    }

    /// Whether `levels`-level tables (3, 4 or 5) are supported.
    pub fn supports_levels(&self, levels: u8) -> bool {
        (3..=5).contains(&levels) && self.sagaw() & (1 << (levels - 2)) != 0
    }

    /// CAP.MGAW + 1: the widest guest (DMA) address in bits.
    pub fn mgaw(&self) -> u8 {
        (((self.cap >> 16) & 0x3f) + 1) as u8
    }

    /// CAP.FRO: byte offset of the first fault recording register.
    pub fn fault_offset(&self) -> usize {
        (((self.cap >> 24) & 0x3ff) as usize) * 16
    }

    /// CAP.SLLPS: bit 0 = 2 MiB, bit 1 = 1 GiB second-level leaves.
    pub fn large_pages(&self) -> u8 {
        ((self.cap >> 34) & 0xf) as u8
    }

    /// CAP.NFR + 1: fault recording registers.
    pub fn fault_records(&self) -> usize {
        (((self.cap >> 40) & 0xff) as usize) + 1
    }

    /// CAP.DWD and CAP.DRD: IOTLB invalidations may drain writes / reads.
    pub fn drain(&self) -> (bool, bool) {
        (self.cap & (1 << 54) != 0, self.cap & (1 << 55) != 0)
    }

    /// ECAP.C: table walks snoop the CPU caches. If not, every table write
    /// is followed by [`DmaMemory::flush`](crate::DmaMemory::flush).
    pub fn coherent(&self) -> bool {
        self.ecap & 1 != 0
    }

    /// ECAP.QI: queued invalidation.
    pub fn queued_invalidation(&self) -> bool {
        self.ecap & (1 << 1) != 0
    }

    /// ECAP.IR: interrupt remapping.
    pub fn interrupt_remapping(&self) -> bool {
        self.ecap & (1 << 3) != 0
    }

    /// ECAP.EIM: x2APIC (32-bit) destinations in remapping entries.
    pub fn extended_interrupt_mode(&self) -> bool {
        self.ecap & (1 << 4) != 0
    }

    /// ECAP.PT: pass-through translation type.
    pub fn pass_through(&self) -> bool {
        self.ecap & (1 << 6) != 0
    }

    /// ECAP.IRO: byte offset of the IOTLB registers (IVA; IOTLB at +8).
    pub fn iotlb_offset(&self) -> usize {
        (((self.ecap >> 8) & 0x3ff) as usize) * 16
    }
}

impl fmt::Display for Caps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "VT-d {}.{}: SAGAW {:#x}, MGAW {}, {} domains, large pages {:#x}, \
             {} fault records at {:#x}, IOTLB registers at {:#x}, coherent {}, \
             caching mode {}, QI {}, IR {}, EIM {}",
            self.major,
            self.minor,
            self.sagaw(),
            self.mgaw(),
            self.domains(),
            self.large_pages(),
            self.fault_records(),
            self.fault_offset(),
            self.iotlb_offset(),
            on(self.coherent()),
            on(self.caching_mode()),
            on(self.queued_invalidation()),
            on(self.interrupt_remapping()),
            on(self.extended_interrupt_mode()),
        )
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::*;

    #[test]
    fn qemu_defaults_decode() {
        // QEMU 7.2 intel-iommu, aw-bits=39, intremap=on: ND 6, SAGAW 39-bit,
        // MGAW 39, FRO 0x220, 1 record, SLLPS 2M|1G, PSI, DRD|DWD; ECAP QI,
        // IR, EIM, MHMV, IRO 0xf0.
        let cap = 6 | (0x2 << 8) | (38 << 16) | (0x22 << 24) | (3 << 34) | (1 << 39) | (3 << 54);
        let ecap = (1 << 1) | (1 << 3) | (1 << 4) | (15 << 20) | (0xf << 8);
        let caps = Caps::new(0x10, cap, ecap);
        assert_eq!((caps.major, caps.minor), (1, 0));
        assert_eq!(caps.domains(), 65536);
        assert!(caps.supports_levels(3) && !caps.supports_levels(4));
        assert!(!caps.supports_levels(2) && !caps.supports_levels(9));
        assert_eq!(caps.mgaw(), 39);
        assert_eq!(caps.fault_offset(), 0x220);
        assert_eq!(caps.fault_records(), 1);
        assert_eq!(caps.iotlb_offset(), 0xf0);
        assert_eq!(caps.large_pages(), 3);
        assert_eq!(caps.drain(), (true, true));
        assert!(caps.queued_invalidation() && caps.interrupt_remapping());
        assert!(!caps.coherent() && !caps.caching_mode());
        let text = format!("{caps}");
        assert!(
            text.starts_with("VT-d 1.0: SAGAW 0x2, MGAW 39, 65536 domains"),
            "{text}"
        );
        assert!(text.contains("1 fault records at 0x220"), "{text}");
    }
}
