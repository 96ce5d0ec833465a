//! The geometry of 4-level tables: which bits of a guest-physical address
//! index each level, and the page size a leaf at each level maps.

use core::fmt;

/// The size of the page one leaf entry maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// 4 KiB, mapped by a page-table entry.
    Size4K,
    /// 2 MiB, mapped by a page-directory entry with the large-page bit.
    Size2M,
    /// 1 GiB, mapped by a page-directory-pointer-table entry with the
    /// large-page bit.
    Size1G,
}

impl PageSize {
    /// The page size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size4K => 1 << 12,
            Self::Size2M => 1 << 21,
            Self::Size1G => 1 << 30,
        }
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Size4K => "4 KiB",
            Self::Size2M => "2 MiB",
            Self::Size1G => "1 GiB",
        })
    }
}

/// One of the four table levels, from the root down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// PML4: the root, indexed by address bits 47:39; never holds a leaf.
    Pml4,
    /// Page-directory-pointer table, bits 38:30; may hold 1 GiB leaves.
    Pdpt,
    /// Page directory, bits 29:21; may hold 2 MiB leaves.
    Pd,
    /// Page table, bits 20:12; holds only 4 KiB leaves.
    Pt,
}

impl Level {
    /// The levels above the page table, root first.
    pub(crate) const UPPER: [Self; 3] = [Self::Pml4, Self::Pdpt, Self::Pd];

    /// Lowest address bit this level's index uses.
    const fn shift(self) -> u32 {
        match self {
            Self::Pml4 => 39,
            Self::Pdpt => 30,
            Self::Pd => 21,
            Self::Pt => 12,
        }
    }

    /// The index into a table of this level for `addr`.
    pub(crate) const fn index(self, addr: u64) -> usize {
        // Nine bits: the cast cannot truncate.
        ((addr >> self.shift()) & 0x1ff) as usize
    }

    /// Bytes of guest-physical space one entry of this level covers.
    pub(crate) const fn entry_span(self) -> u64 {
        1 << self.shift()
    }

    /// The level's number in the hardware's counting: 4 for the PML4 down
    /// to 1 for the page table.
    pub(crate) const fn number(self) -> u8 {
        match self {
            Self::Pml4 => 4,
            Self::Pdpt => 3,
            Self::Pd => 2,
            Self::Pt => 1,
        }
    }

    /// The page a leaf at this level maps, or `None` for the root.
    pub(crate) const fn leaf_size(self) -> Option<PageSize> {
        match self {
            Self::Pml4 => None,
            Self::Pdpt => Some(PageSize::Size1G),
            Self::Pd => Some(PageSize::Size2M),
            Self::Pt => Some(PageSize::Size4K),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_and_spans() {
        let addr = (3 << 39) | (5 << 30) | (7 << 21) | (9 << 12) | 0xabc;
        assert_eq!(Level::Pml4.index(addr), 3);
        assert_eq!(Level::Pdpt.index(addr), 5);
        assert_eq!(Level::Pd.index(addr), 7);
        assert_eq!(Level::Pt.index(addr), 9);
        assert_eq!(Level::Pml4.index(u64::MAX), 511);
        assert_eq!(Level::Pdpt.entry_span(), PageSize::Size1G.bytes());
        assert_eq!(Level::Pd.entry_span(), PageSize::Size2M.bytes());
        assert_eq!(Level::Pt.entry_span(), PageSize::Size4K.bytes());
        assert_eq!(Level::Pml4.entry_span(), 512 << 30);
        assert_eq!(Level::Pml4.leaf_size(), None);
        assert_eq!(Level::Pd.leaf_size(), Some(PageSize::Size2M));
    }
}
