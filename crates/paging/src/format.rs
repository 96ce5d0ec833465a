//! The two entry formats behind one enum, chosen once per VM at boot, and the
//! decoded view of an entry the table walker works with.

use core::fmt;

use platform::HostPhysAddr;

use crate::attrs::{MemType, Perms};
use crate::level::{Level, PageSize};
use crate::{ept, npt};

/// Address bits 51:12 of an entry, the same in both formats.
pub(crate) const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Which hardware walks the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Intel VT-x extended page tables (SDM vol. 3C, "EPT Paging Structures").
    Ept,
    /// AMD-V nested page tables: long-mode page tables walked as user
    /// accesses (APM vol. 2, "Nested Paging").
    Npt,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ept => "EPT",
            Self::Npt => "NPT",
        })
    }
}

/// A leaf entry, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Leaf {
    /// Host-physical base of the page.
    pub(crate) hpa: HostPhysAddr,
    /// The page's size.
    pub(crate) size: PageSize,
    /// The guest's rights to the page.
    pub(crate) perms: Perms,
    /// The host's memory type for the page.
    pub(crate) mem_type: MemType,
}

/// One entry, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Not present: nothing below it is mapped.
    Empty,
    /// Points to the next-level table at this address.
    Table(HostPhysAddr),
    /// Maps a page.
    Leaf(Leaf),
}

impl Format {
    /// The entry that points to the next-level `table`: every right granted
    /// (the leaf decides) and, where the format has one, no memory type.
    pub(crate) fn table_entry(self, table: HostPhysAddr) -> u64 {
        debug_assert_eq!(
            table.0 & !ADDR_MASK,
            0,
            "table {table} unaligned or too high"
        );
        match self {
            Self::Ept => ept::table_entry(table),
            Self::Npt => npt::table_entry(table),
        }
    }

    /// The leaf entry that maps the `size` page at `hpa`.
    pub(crate) fn leaf_entry(
        self,
        size: PageSize,
        hpa: HostPhysAddr,
        perms: Perms,
        mem_type: MemType,
    ) -> u64 {
        debug_assert_eq!(hpa.0 & !ADDR_MASK, 0, "page {hpa} unaligned or too high");
        debug_assert!(hpa.is_aligned(size.bytes()));
        let large = size != PageSize::Size4K;
        match self {
            Self::Ept => ept::leaf_entry(hpa, large, perms, mem_type),
            Self::Npt => npt::leaf_entry(hpa, large, perms, mem_type),
        }
    }

    /// Decodes `raw`, an entry of a `level` table.
    pub(crate) fn decode(self, level: Level, raw: u64) -> Entry {
        let (present, large) = match self {
            Self::Ept => (ept::is_present(raw), ept::is_large(raw)),
            Self::Npt => (npt::is_present(raw), npt::is_large(raw)),
        };
        if !present {
            return Entry::Empty;
        }
        // The root has no large-page bit, and a page-table entry always maps.
        let size = match level {
            Level::Pml4 => None,
            Level::Pdpt | Level::Pd if !large => None,
            _ => level.leaf_size(),
        };
        let Some(size) = size else {
            return Entry::Table(HostPhysAddr(raw & ADDR_MASK));
        };
        let (perms, mem_type) = match self {
            Self::Ept => ept::leaf_attrs(raw),
            Self::Npt => npt::leaf_attrs(raw),
        };
        // Below the page size a large leaf holds flags (NPT: PAT at bit 12)
        // or reserved zeros, not address bits.
        let hpa = HostPhysAddr(raw & ADDR_MASK & !(size.bytes() - 1));
        Entry::Leaf(Leaf {
            hpa,
            size,
            perms,
            mem_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_formats() {
        for format in [Format::Ept, Format::Npt] {
            assert_eq!(format.decode(Level::Pd, 0), Entry::Empty);
            let table = HostPhysAddr(0x000f_ffff_ffff_f000);
            let raw = format.table_entry(table);
            for level in Level::UPPER {
                assert_eq!(format.decode(level, raw), Entry::Table(table));
            }
            for (level, size) in [
                (Level::Pdpt, PageSize::Size1G),
                (Level::Pd, PageSize::Size2M),
                (Level::Pt, PageSize::Size4K),
            ] {
                for perms in [Perms::R, Perms::RW, Perms::RX, Perms::RWX] {
                    for mem_type in [MemType::WriteBack, MemType::Uncacheable] {
                        let hpa = HostPhysAddr(0x000f_ffff_c000_0000);
                        let raw = format.leaf_entry(size, hpa, perms, mem_type);
                        let want = Leaf {
                            hpa,
                            size,
                            perms,
                            mem_type,
                        };
                        assert_eq!(format.decode(level, raw), Entry::Leaf(want));
                    }
                }
            }
        }
    }

    #[test]
    fn large_bit_ignored_in_root() {
        for format in [Format::Ept, Format::Npt] {
            let raw = format.leaf_entry(
                PageSize::Size2M,
                HostPhysAddr(0x20_0000),
                Perms::RWX,
                MemType::WriteBack,
            );
            assert_eq!(
                format.decode(Level::Pml4, raw),
                Entry::Table(HostPhysAddr(0x20_0000))
            );
        }
    }
}
