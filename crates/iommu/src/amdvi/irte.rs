//! Legacy interrupt remapping table entries (32 bits, GA mode off): bit 0
//! RemapEn, 1 SupIOPF, 4:2 IntType, 5 RqEoi, 6 DM (1 = logical), 7
//! GuestMode (0), 15:8 destination (xAPIC id), 23:16 vector.

/// Entries in each device's interrupt remapping table. A device's MSI data
/// bits 10:0 select the entry, and the unit takes bits 10:8 as the message
/// type (fixed = 0, arbitrated = 1): 256 entries keep every index a fixed
/// interrupt (Linux uses the same size for legacy entries).
pub const IRTE_ENTRIES: u32 = 256;

/// What an interrupt remapping entry delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Irte {
    /// Host vector.
    pub vector: u8,
    /// Destination APIC id (8 bits in this format).
    pub dest: u8,
    /// Logical destination mode.
    pub logical: bool,
    /// Lowest-priority (arbitrated, IntType 001) rather than fixed (000).
    pub lowest_priority: bool,
}

impl Irte {
    /// A fixed, physical-destination entry.
    pub fn fixed(vector: u8, dest: u8) -> Self {
        Self {
            vector,
            dest,
            logical: false,
            lowest_priority: false,
        }
    }

    /// The 32-bit entry, enabled, faults reported.
    pub fn encode(&self) -> u32 {
        1 | (u32::from(self.lowest_priority) << 2)
            | (u32::from(self.logical) << 6)
            | (u32::from(self.dest) << 8)
            | (u32::from(self.vector) << 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_bits() {
        assert_eq!(Irte::fixed(0x41, 2).encode(), 0x0041_0201);
        let lp = Irte {
            logical: true,
            lowest_priority: true,
            ..Irte::fixed(0x30, 0xff)
        };
        assert_eq!(lp.encode(), 0x0030_ff45);
    }
}
