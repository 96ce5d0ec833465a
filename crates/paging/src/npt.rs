//! AMD nested page table entry bits (APM vol. 2, "Nested Paging" and the
//! long-mode page-table formats).
//!
//! Nested tables are ordinary long-mode page tables: bit 0 present, bit 1
//! writable, bit 2 user, bits 3/4 PWT/PCD, bit 7 large page (PDPTE: 1 GiB,
//! PDE: 2 MiB), bits 51:12 address, bit 63 no-execute. Every nested walk is
//! a user access, so each level must have U set or the guest faults. With PAT
//! index bit clear, PWT/PCD select the host PAT entry: 0 (write-back) with
//! both clear, 3 (uncacheable) with both set, as long as the host keeps the
//! power-on PAT values in those two entries. NX is a reserved bit unless the
//! host runs with `EFER.NXE` = 1, which the hypervisor sets before any VMRUN.

use platform::HostPhysAddr;

use crate::attrs::{MemType, Perms};

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const LARGE: u64 = 1 << 7;
const NO_EXEC: u64 = 1 << 63;

/// A PML4E, PDPTE or PDE pointing to `table`: present, writable, user,
/// executable, write-back (the leaf decides the rest).
pub(crate) fn table_entry(table: HostPhysAddr) -> u64 {
    table.0 | PRESENT | WRITABLE | USER
}

/// A leaf for the page at `hpa`, `large` in a PDPTE or PDE. Reads are always
/// allowed (a present entry is readable).
pub(crate) fn leaf_entry(hpa: HostPhysAddr, large: bool, perms: Perms, mem_type: MemType) -> u64 {
    debug_assert!(perms.read, "NPT cannot deny reads ({perms})");
    let mut raw = hpa.0 | PRESENT | USER;
    if perms.write {
        raw |= WRITABLE;
    }
    if !perms.exec {
        raw |= NO_EXEC;
    }
    if mem_type == MemType::Uncacheable {
        raw |= PCD | PWT;
    }
    if large {
        raw |= LARGE;
    }
    raw
}

/// Whether the entry is present.
pub(crate) fn is_present(raw: u64) -> bool {
    raw & PRESENT != 0
}

/// Whether bit 7 (large page in a PDPTE or PDE) is set.
pub(crate) fn is_large(raw: u64) -> bool {
    raw & LARGE != 0
}

/// Rights and memory type of a leaf.
///
/// Precondition: the leaf was written by [`leaf_entry`], so PCD and PWT are
/// both set or both clear.
pub(crate) fn leaf_attrs(raw: u64) -> (Perms, MemType) {
    let perms = Perms {
        read: true,
        write: raw & WRITABLE != 0,
        exec: raw & NO_EXEC == 0,
    };
    let cache = raw & (PCD | PWT);
    debug_assert!(cache == 0 || cache == PCD | PWT, "NPT PCD/PWT {cache:#x}");
    let mem_type = if cache == 0 {
        MemType::WriteBack
    } else {
        MemType::Uncacheable
    };
    (perms, mem_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_bits() {
        let hpa = HostPhysAddr(0x1234_5000);
        assert_eq!(table_entry(hpa), 0x1234_5007);
        assert_eq!(
            leaf_entry(hpa, false, Perms::RWX, MemType::WriteBack),
            0x1234_5007
        );
        assert_eq!(
            leaf_entry(
                HostPhysAddr(0x4020_0000),
                true,
                Perms::RW,
                MemType::Uncacheable
            ),
            0x8000_0000_4020_0000 | 0x7 | 0x18 | 0x80
        );
        assert_eq!(
            leaf_entry(hpa, false, Perms::R, MemType::WriteBack),
            0x8000_0000_1234_5005
        );
        assert!(!is_present(0xffff_f006));
    }
}
