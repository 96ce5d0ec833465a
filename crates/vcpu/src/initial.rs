//! The architectural state a vCPU starts in, common to both backends and every loader.

use crate::{Gprs, SegmentState};

/// Where and how a vCPU starts.
#[derive(Clone, Copy, Debug)]
pub struct InitialState {
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub gprs: Gprs,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cs: SegmentState,
    /// DS, ES, SS, FS, GS.
    pub data: SegmentState,
    pub tr: SegmentState,
    pub gdtr: SegmentState,
    pub idtr: SegmentState,
}

/// GDTR/IDTR at reset: base 0, limit 0xFFFF.
const RESET_TABLE: SegmentState = SegmentState {
    selector: 0,
    base: 0,
    limit: 0xFFFF,
    attrib: 0,
};

/// A busy 32-bit TSS at 0, as both backends require of TR.
const BUSY_TSS: SegmentState = SegmentState {
    selector: 0,
    base: 0,
    limit: 0x67,
    attrib: 0x08B,
};

/// Code and data selectors of [`InitialState::protected_flat`].
pub const FLAT_CS: u16 = 0x10;
pub const FLAT_DS: u16 = 0x18;

impl InitialState {
    /// 32-bit protected mode with paging off and flat 4 GiB segments (CS
    /// [`FLAT_CS`] execute/read, the data segments [`FLAT_DS`] read/write), at
    /// `entry` with `gprs`: how Multiboot and PVH kernels are entered.
    pub fn protected_flat(entry: u64, gprs: Gprs) -> Self {
        let flat = |selector, attrib| SegmentState {
            selector,
            base: 0,
            limit: 0xFFFF_FFFF,
            attrib,
        };
        InitialState {
            rip: entry,
            rsp: 0,
            rflags: 0x2,
            gprs,
            // PE and ET.
            cr0: 0x11,
            cr3: 0,
            cr4: 0,
            efer: 0,
            // 32-bit, granularity 4 KiB, present, accessed.
            cs: flat(FLAT_CS, 0xC9B),
            data: flat(FLAT_DS, 0xC93),
            tr: BUSY_TSS,
            gdtr: RESET_TABLE,
            idtr: RESET_TABLE,
        }
    }

    /// The state a start-up IPI with `vector` leaves an application processor
    /// in: real mode, CS = `vector << 8` (base `vector << 12`), IP = 0.
    pub fn startup_ipi(vector: u8) -> Self {
        let real = |selector: u16, attrib: u16| SegmentState {
            selector,
            base: u64::from(selector) << 4,
            limit: 0xFFFF,
            attrib,
        };
        InitialState {
            rip: 0,
            rsp: 0,
            rflags: 0x2,
            gprs: Gprs::default(),
            // ET; caches on (CD/NW clear) so no backend has to special-case them.
            cr0: 0x10,
            cr3: 0,
            cr4: 0,
            efer: 0,
            cs: real(u16::from(vector) << 8, 0x09B),
            data: real(0, 0x093),
            tr: BUSY_TSS,
            gdtr: RESET_TABLE,
            idtr: RESET_TABLE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_state_is_real_mode_at_the_vector_page() {
        let s = InitialState::startup_ipi(0x9A);
        assert_eq!((s.cs.selector, s.cs.base, s.rip), (0x9A00, 0x9A000, 0));
        assert_eq!(s.cr0 & 1, 0, "real mode");
        assert_eq!(s.cs.attrib & 0x80, 0x80, "present");
        assert_eq!(s.cs.attrib & (1 << 10), 0, "16-bit");
        let top = InitialState::startup_ipi(0xFF);
        assert_eq!(top.cs.base + top.rip, 0xFF000);
    }

    #[test]
    fn protected_flat_is_32_bit_without_paging() {
        let s = InitialState::protected_flat(0x10_0000, Gprs::default());
        assert_eq!((s.rip, s.cr0 & 0x8000_0001, s.efer), (0x10_0000, 1, 0));
        assert_ne!(s.cs.attrib & (1 << 10), 0, "CS.D: 32-bit");
        assert_eq!(s.cs.attrib & (1 << 9), 0, "not 64-bit");
        assert_eq!(s.data.limit, 0xFFFF_FFFF);
    }
}
