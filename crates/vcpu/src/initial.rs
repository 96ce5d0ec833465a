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

impl InitialState {
    /// The state a start-up IPI with `vector` leaves an application processor
    /// in: real mode, CS = `vector << 8` (base `vector << 12`), IP = 0.
    pub fn startup_ipi(vector: u8) -> Self {
        let real = |selector: u16, attrib: u16| SegmentState {
            selector,
            base: u64::from(selector) << 4,
            limit: 0xFFFF,
            attrib,
        };
        let table = SegmentState {
            selector: 0,
            base: 0,
            limit: 0xFFFF,
            attrib: 0,
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
            // A busy 32-bit TSS, as both backends require of TR.
            tr: SegmentState {
                attrib: 0x08B,
                ..table
            },
            gdtr: table,
            idtr: table,
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
}
