//! Interrupt remapping entries (IRTE, 128 bits, VT-d specification 9.10),
//! the remappable MSI message format (5.1.2.2) and the remappable I/O APIC
//! redirection entry (5.1.5.1).
//!
//! IRTE low quadword: bit 0 P, 1 FPD, 2 DM (1 = logical), 3 RH, 4 TM
//! (1 = level), 7:5 delivery mode, 15 IM (0 = remapped), 23:16 vector,
//! 63:32 destination (xAPIC mode: the APIC id in bits 47:40). High
//! quadword: 15:0 SID, 17:16 SQ, 19:18 SVT.

use crate::bdf::Bdf;
use crate::hw::MsiMessage;

/// How a remapped interrupt is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Fixed (000).
    Fixed,
    /// Lowest priority (001).
    LowestPriority,
    /// NMI (100).
    Nmi,
}

/// Which requesters may use an entry (source-id validation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceCheck {
    /// Any requester (SVT 00): only for sources whose id is unknown.
    None,
    /// Exactly this requester id (SVT 01, SQ 00).
    Exact(Bdf),
    /// Any requester on buses `first..=last` (SVT 10): devices behind a
    /// PCIe-to-PCI bridge that takes over their ids.
    Buses {
        /// First bus.
        first: u8,
        /// Last bus.
        last: u8,
    },
}

/// What an interrupt remapping entry delivers, and from whom it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Irte {
    /// Host vector.
    pub vector: u8,
    /// Destination APIC id (xAPIC: 8 bits; x2APIC mode: 32 bits).
    pub dest: u32,
    /// Logical destination mode.
    pub logical: bool,
    /// Level-triggered (I/O APIC level interrupts).
    pub level: bool,
    /// Delivery mode.
    pub delivery: Delivery,
    /// Source-id validation.
    pub source: SourceCheck,
}

impl Irte {
    /// A fixed, edge, physical-destination entry for `vector` on the CPU
    /// with APIC id `dest`, accepted only from `source`.
    pub fn fixed(vector: u8, dest: u32, source: Bdf) -> Self {
        Self {
            vector,
            dest,
            logical: false,
            level: false,
            delivery: Delivery::Fixed,
            source: SourceCheck::Exact(source),
        }
    }

    /// The entry's two quadwords (present), for xAPIC or x2APIC
    /// destinations.
    pub fn encode(&self, x2apic: bool) -> [u64; 2] {
        let dlm: u64 = match self.delivery {
            Delivery::Fixed => 0,
            Delivery::LowestPriority => 1,
            Delivery::Nmi => 4,
        };
        let dest = if x2apic {
            u64::from(self.dest) << 32
        } else {
            u64::from(self.dest & 0xff) << 40
        };
        let lo = 1
            | (u64::from(self.logical) << 2)
            | (u64::from(self.level) << 4)
            | (dlm << 5)
            | (u64::from(self.vector) << 16)
            | dest;
        let hi = match self.source {
            SourceCheck::None => 0,
            SourceCheck::Exact(bdf) => (1 << 18) | u64::from(bdf.0),
            SourceCheck::Buses { first, last } => {
                (2 << 18) | (u64::from(first) << 8) | u64::from(last)
            }
        };
        [lo, hi]
    }
}

/// The MSI message that makes a device's interrupt use entry `handle`:
/// address 0xfee0_0000 with the handle's bits 14:0 in 19:5, bit 15 in bit
/// 2, bit 4 set (remappable format), SHV (bit 3) clear; data 0.
pub fn remapped_msi(handle: u16) -> MsiMessage {
    let h = u64::from(handle);
    MsiMessage {
        address: 0xfee0_0000 | ((h & 0x7fff) << 5) | (1 << 4) | (((h >> 15) & 1) << 2),
        data: 0,
    }
}

/// A remappable-format I/O APIC redirection entry using entry `handle`:
/// bits 63:49 handle 14:0, bit 48 format, bit 11 handle bit 15, bit 16
/// mask, 15 trigger (1 = level), 13 polarity (1 = active low), 7:0 the
/// vector (which must equal the entry's, for EOI broadcasts to match).
pub fn ioapic_rte(handle: u16, vector: u8, level: bool, active_low: bool, masked: bool) -> u64 {
    let h = u64::from(handle);
    ((h & 0x7fff) << 49)
        | (1 << 48)
        | (u64::from(masked) << 16)
        | (u64::from(level) << 15)
        | (u64::from(active_low) << 13)
        | (((h >> 15) & 1) << 11)
        | u64::from(vector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_bits() {
        let e = Irte::fixed(0x41, 3, Bdf::new(0, 3, 0));
        assert_eq!(e.encode(false), [0x0000_0300_0041_0001, 0x4_0018]);
        assert_eq!(e.encode(true), [0x0000_0003_0041_0001, 0x4_0018]);
        let l = Irte {
            logical: true,
            level: true,
            delivery: Delivery::LowestPriority,
            source: SourceCheck::Buses { first: 2, last: 4 },
            ..e
        };
        assert_eq!(l.encode(false), [0x0000_0300_0041_0035, 0x8_0204]);
        let n = Irte {
            delivery: Delivery::Nmi,
            source: SourceCheck::None,
            ..e
        };
        assert_eq!(n.encode(false)[0] & 0xe0, 0x80);
        assert_eq!(n.encode(false)[1], 0);
    }

    #[test]
    fn msi_and_rte_formats() {
        assert_eq!(remapped_msi(0).address, 0xfee0_0010);
        assert_eq!(remapped_msi(5).address, 0xfee0_00b0);
        assert_eq!(remapped_msi(0x8001).address, 0xfee0_0034);
        assert_eq!(remapped_msi(5).data, 0);
        assert_eq!(
            ioapic_rte(5, 0x30, false, false, true),
            (5 << 49) | (1 << 48) | (1 << 16) | 0x30
        );
        assert_eq!(
            ioapic_rte(0x8000, 0x31, true, true, false),
            (1 << 48) | (1 << 15) | (1 << 13) | (1 << 11) | 0x31
        );
    }
}
