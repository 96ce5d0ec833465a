//! Intel EPT entry bits and the EPT pointer (SDM vol. 3C, "EPT Paging
//! Structures" and "Extended-Page-Table Pointer").
//!
//! Every EPT entry: bit 0 read, bit 1 write, bit 2 execute (supervisor
//! execute when mode-based execute control is on), bits 51:12 address; an
//! entry with bits 2:0 all clear is not present. Non-leaf entries keep bits
//! 7:3 (PML4E, PDPTE) or 6:3 (PDE) zero: they are reserved there. Leaves hold
//! the memory type in bits 5:3, "ignore PAT" in bit 6 and, in a PDPTE or PDE,
//! the large-page bit 7. Bits 8/9 (accessed/dirty) are written as 0.

use platform::HostPhysAddr;

use crate::attrs::{MemType, Perms};

const READ: u64 = 1 << 0;
const WRITE: u64 = 1 << 1;
const EXEC: u64 = 1 << 2;
const MEM_TYPE_SHIFT: u32 = 3;
const MEM_TYPE_MASK: u64 = 0b111 << MEM_TYPE_SHIFT;
const LARGE: u64 = 1 << 7;

/// EPT memory type values (bits 5:3 of a leaf, bits 2:0 of the EPTP).
const TYPE_UC: u64 = 0;
const TYPE_WB: u64 = 6;

/// EPTP bits 5:3: the page-walk length minus one (four levels).
const EPTP_WALK_4: u64 = 3 << 3;
/// EPTP bit 6: the CPU sets accessed/dirty bits in the tables (only if
/// `IA32_VMX_EPT_VPID_CAP` bit 21 says it can).
const EPTP_ACCESSED_DIRTY: u64 = 1 << 6;

/// A PML4E, PDPTE or PDE pointing to `table`: read, write and execute allowed
/// (the leaf decides), reserved bits zero.
pub(crate) fn table_entry(table: HostPhysAddr) -> u64 {
    table.0 | READ | WRITE | EXEC
}

/// A leaf for the page at `hpa`, `large` in a PDPTE or PDE. "Ignore PAT"
/// stays clear so the guest's PAT still combines with the type given here.
pub(crate) fn leaf_entry(hpa: HostPhysAddr, large: bool, perms: Perms, mem_type: MemType) -> u64 {
    let mut raw = hpa.0;
    if perms.read {
        raw |= READ;
    }
    if perms.write {
        raw |= WRITE;
    }
    if perms.exec {
        raw |= EXEC;
    }
    let ty = match mem_type {
        MemType::WriteBack => TYPE_WB,
        MemType::Uncacheable => TYPE_UC,
    };
    raw |= ty << MEM_TYPE_SHIFT;
    if large {
        raw |= LARGE;
    }
    raw
}

/// Whether the entry is present (any of read, write, execute set).
pub(crate) fn is_present(raw: u64) -> bool {
    raw & (READ | WRITE | EXEC) != 0
}

/// Whether bit 7 (large page in a PDPTE or PDE) is set.
pub(crate) fn is_large(raw: u64) -> bool {
    raw & LARGE != 0
}

/// Rights and memory type of a leaf.
///
/// Precondition: the leaf was written by [`leaf_entry`], so its type is WB
/// or UC.
pub(crate) fn leaf_attrs(raw: u64) -> (Perms, MemType) {
    let perms = Perms {
        read: raw & READ != 0,
        write: raw & WRITE != 0,
        exec: raw & EXEC != 0,
    };
    let ty = (raw & MEM_TYPE_MASK) >> MEM_TYPE_SHIFT;
    debug_assert!(ty == TYPE_WB || ty == TYPE_UC, "EPT memory type {ty}");
    let mem_type = if ty == TYPE_WB {
        MemType::WriteBack
    } else {
        MemType::Uncacheable
    };
    (perms, mem_type)
}

/// The EPT pointer for tables rooted at `pml4`: the tables are accessed
/// write-back, walked in four levels, with accessed/dirty flags only if asked.
pub(crate) fn eptp(pml4: HostPhysAddr, accessed_dirty: bool) -> u64 {
    let ad = if accessed_dirty {
        EPTP_ACCESSED_DIRTY
    } else {
        0
    };
    pml4.0 | TYPE_WB | EPTP_WALK_4 | ad
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
            0x1234_5000 | 0b111 | (6 << 3)
        );
        assert_eq!(
            leaf_entry(
                HostPhysAddr(0x4020_0000),
                true,
                Perms::RW,
                MemType::Uncacheable
            ),
            0x4020_0000 | 0b011 | (1 << 7)
        );
        assert_eq!(
            leaf_entry(hpa, false, Perms::RX, MemType::WriteBack),
            0x1234_5000 | 0b101 | 0x30
        );
        assert!(!is_present(0xffff_f000));
        assert!(is_present(EXEC));
    }

    #[test]
    fn eptp_bits() {
        assert_eq!(eptp(HostPhysAddr(0x7000), false), 0x7000 | 0x1e);
        assert_eq!(eptp(HostPhysAddr(0x7000), true), 0x7000 | 0x5e);
    }
}
