//! Intel VT-d second-level page-table entries (VT-d specification, "Second-
//! Stage Paging Entries"; legacy-mode second-level translation).
//!
//! Every entry: bit 0 read, bit 1 write, bits (HAW-1):12 address; an entry
//! with read and write clear is not present. Bit 7 (PS) in a PDPTE or PDE
//! makes it a 1 GiB or 2 MiB leaf (the unit must report the size in
//! `CAP.SLLPS`); bit 7 of a PML4E is reserved. Nothing else is set: bit 2
//! (execute) is only meaningful for requests with execute permission, which
//! passthrough devices do not make; bits 6:3 (memory type, ignore PAT) apply
//! only with snoop/memory-type support, bit 11 (SNP) is reserved unless
//! `ECAP.SC`, bit 62 (TM) unless `ECAP.DT`. QEMU 7.2's emulation faults on
//! bit 11, on bit 7 of a PML4E, on bit 62, on address bits at or above its
//! `aw-bits` (39 by default: the tables and the memory they map must then
//! lie below 512 GiB) and on bits 20:12 of a 2 MiB leaf (29:12 of 1 GiB).

use platform::HostPhysAddr;

use crate::attrs::{MemType, Perms};

const READ: u64 = 1 << 0;
const WRITE: u64 = 1 << 1;
const PAGE_SIZE: u64 = 1 << 7;

/// A PML4E, PDPTE or PDE pointing to `table`: read and write allowed (the
/// leaf decides).
pub(crate) fn table_entry(table: HostPhysAddr) -> u64 {
    table.0 | READ | WRITE
}

/// A leaf for the page at `hpa`, `large` in a PDPTE or PDE. Execute and the
/// memory type have no bits here (see the module documentation).
pub(crate) fn leaf_entry(hpa: HostPhysAddr, large: bool, perms: Perms) -> u64 {
    let mut raw = hpa.0;
    if perms.read {
        raw |= READ;
    }
    if perms.write {
        raw |= WRITE;
    }
    if large {
        raw |= PAGE_SIZE;
    }
    raw
}

/// Whether the entry is present (read or write set).
pub(crate) fn is_present(raw: u64) -> bool {
    raw & (READ | WRITE) != 0
}

/// Whether bit 7 (PS) is set.
pub(crate) fn is_large(raw: u64) -> bool {
    raw & PAGE_SIZE != 0
}

/// Rights of a leaf (never execute) and the memory type DMA gets: the
/// unit's snooped access, reported as write-back.
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
        let hpa = HostPhysAddr(0x1234_5000);
        assert_eq!(table_entry(hpa), 0x1234_5003);
        assert_eq!(leaf_entry(hpa, false, Perms::RWX), 0x1234_5003);
        assert_eq!(leaf_entry(hpa, false, Perms::R), 0x1234_5001);
        assert_eq!(
            leaf_entry(HostPhysAddr(0x4020_0000), true, Perms::RW),
            0x4020_0083
        );
        assert!(!is_present(0xffff_f000 | PAGE_SIZE));
        assert!(is_present(WRITE));
        assert_eq!(leaf_attrs(0x83), (Perms::RW, MemType::WriteBack));
    }
}
