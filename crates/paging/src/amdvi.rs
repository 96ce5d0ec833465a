//! AMD-Vi I/O page-table entries, the v1 ("host") page-table format (AMD
//! IOMMU specification #48882, "I/O Page Tables for Host Translations").
//!
//! Every entry: bit 0 PR (present), bits 11:9 NextLevel, bits 51:12
//! address, bit 61 IR (read allowed), bit 62 IW (write allowed). A table
//! entry's NextLevel is the level of the table it points to (its own level
//! minus one: 3 in a PML4-level entry, 2 in a PDPT-level entry, 1 in a
//! PD-level entry). A leaf has NextLevel 0: at level 1 it maps 4 KiB, at
//! level 2 2 MiB, at level 3 1 GiB. Permissions are ANDed along the walk
//! (the device table entry's IR/IW included), so table entries grant both
//! and the leaf decides. Bits 59 (U) and 60 (FC) stay clear: no ATS, and
//! the coherence of the request is kept. NextLevel 7 (a run of equal
//! entries encoding a larger page) is never written.

use platform::HostPhysAddr;

use crate::attrs::{MemType, Perms};

const PRESENT: u64 = 1 << 0;
const NEXT_LEVEL_SHIFT: u32 = 9;
const NEXT_LEVEL_MASK: u64 = 0b111 << NEXT_LEVEL_SHIFT;
const READ: u64 = 1 << 61;
const WRITE: u64 = 1 << 62;

/// The entry at `level` (4 = PML4 ... 2 = PD) pointing to `table`.
pub(crate) fn table_entry(level: u8, table: HostPhysAddr) -> u64 {
    debug_assert!((2..=4).contains(&level));
    table.0 | PRESENT | READ | WRITE | (u64::from(level - 1) << NEXT_LEVEL_SHIFT)
}

/// A leaf (NextLevel 0) for the page at `hpa`.
pub(crate) fn leaf_entry(hpa: HostPhysAddr, perms: Perms) -> u64 {
    let mut raw = hpa.0 | PRESENT;
    if perms.read {
        raw |= READ;
    }
    if perms.write {
        raw |= WRITE;
    }
    raw
}

/// Whether PR is set.
pub(crate) fn is_present(raw: u64) -> bool {
    raw & PRESENT != 0
}

/// Whether the entry maps a page rather than pointing to a table
/// (NextLevel 0); meaningful above level 1 only.
pub(crate) fn is_large(raw: u64) -> bool {
    raw & NEXT_LEVEL_MASK == 0
}

/// Rights of a leaf (never execute) and the memory type DMA gets, reported
/// as write-back.
pub(crate) fn leaf_attrs(raw: u64) -> (Perms, MemType) {
    let perms = Perms {
        read: raw & READ != 0,
        write: raw & WRITE != 0,
        exec: false,
    };
    (perms, MemType::WriteBack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_bits() {
        let t = HostPhysAddr(0x1234_5000);
        assert_eq!(table_entry(4, t), 0x6000_0000_1234_5601);
        assert_eq!(table_entry(3, t), 0x6000_0000_1234_5401);
        assert_eq!(table_entry(2, t), 0x6000_0000_1234_5201);
        assert_eq!(leaf_entry(t, Perms::RWX), 0x6000_0000_1234_5001);
        assert_eq!(leaf_entry(t, Perms::R), 0x2000_0000_1234_5001);
        assert!(is_large(leaf_entry(t, Perms::R)));
        assert!(!is_large(table_entry(2, t)));
        assert!(!is_present(READ | WRITE));
        assert_eq!(
            leaf_attrs(0x4000_0000_0000_0001),
            (
                Perms {
                    read: false,
                    write: true,
                    exec: false
                },
                MemType::WriteBack
            )
        );
    }
}
