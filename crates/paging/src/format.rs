//! The entry formats behind one enum (the CPU's EPT or NPT, chosen once per
//! VM at boot, and the IOMMUs' VT-d second-level or AMD-Vi tables), and the
//! decoded view of an entry the table walker works with.

use core::fmt;

use platform::HostPhysAddr;

use crate::attrs::{MemType, Perms};
use crate::level::{Level, PageSize};
use crate::{amdvi, ept, npt, vtd_sl};

/// Address bits 51:12 of an entry, the same in every format.
pub(crate) const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Which hardware walks the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Intel VT-x extended page tables (SDM vol. 3C, "EPT Paging Structures").
    Ept,
    /// AMD-V nested page tables: long-mode page tables walked as user
    /// accesses (APM vol. 2, "Nested Paging").
    Npt,
    /// Intel VT-d second-level tables for DMA remapping (read/write bits,
    /// PS for large leaves; no execute or memory type; see `vtd_sl`).
    VtdSl,
    /// AMD-Vi v1 I/O page tables for DMA remapping (PR, NextLevel, IR/IW;
    /// no execute or memory type; see `amdvi`).
    AmdVi,
}

impl Format {
    /// Whether an IOMMU walks the tables (for device DMA) rather than the CPU.
    /// Such tables ignore [`Perms::exec`] and the memory type: a leaf
    /// decodes as not executable and write-back.
    pub const fn is_iommu(self) -> bool {
        matches!(self, Self::VtdSl | Self::AmdVi)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ept => "EPT",
            Self::Npt => "NPT",
            Self::VtdSl => "VT-d second-level",
            Self::AmdVi => "AMD-Vi",
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
    /// The entry of a `level` table that points to the next-level `table`:
    /// every right granted (the leaf decides) and, where the format has one,
    /// no memory type.
    pub(crate) fn table_entry(self, level: Level, table: HostPhysAddr) -> u64 {
        debug_assert_eq!(
            table.0 & !ADDR_MASK,
            0,
            "table {table} unaligned or too high"
        );
        match self {
            Self::Ept => ept::table_entry(table),
            Self::Npt => npt::table_entry(table),
            Self::VtdSl => vtd_sl::table_entry(table),
            Self::AmdVi => amdvi::table_entry(level.number(), table),
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
            Self::VtdSl => vtd_sl::leaf_entry(hpa, large, perms),
            Self::AmdVi => amdvi::leaf_entry(hpa, perms),
        }
    }

    /// Decodes `raw`, an entry of a `level` table.
    pub(crate) fn decode(self, level: Level, raw: u64) -> Entry {
        let (present, large) = match self {
            Self::Ept => (ept::is_present(raw), ept::is_large(raw)),
            Self::Npt => (npt::is_present(raw), npt::is_large(raw)),
            Self::VtdSl => (vtd_sl::is_present(raw), vtd_sl::is_large(raw)),
            Self::AmdVi => (amdvi::is_present(raw), amdvi::is_large(raw)),
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
            Self::VtdSl => vtd_sl::leaf_attrs(raw),
            Self::AmdVi => amdvi::leaf_attrs(raw),
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
            for level in Level::UPPER {
                let raw = format.table_entry(level, table);
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
    fn round_trip_iommu_formats() {
        for format in [Format::VtdSl, Format::AmdVi] {
            assert!(format.is_iommu());
            assert_eq!(format.decode(Level::Pd, 0), Entry::Empty);
            let table = HostPhysAddr(0x000f_ffff_ffff_f000);
            for level in Level::UPPER {
                let raw = format.table_entry(level, table);
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
                        // No execute, no memory type: DMA is snooped.
                        let want = Leaf {
                            hpa,
                            size,
                            perms: Perms {
                                exec: false,
                                ..perms
                            },
                            mem_type: MemType::WriteBack,
                        };
                        assert_eq!(format.decode(level, raw), Entry::Leaf(want), "{format}");
                    }
                }
            }
        }
        assert!(!Format::Ept.is_iommu() && !Format::Npt.is_iommu());
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
