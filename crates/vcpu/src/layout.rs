//! Where a VM's RAM sits in its guest-physical space: the one list every
//! consumer derives from (the second-level tables, the e820, PVH and
//! Multiboot memory maps, the bounds checks of guest-memory access).
//!
//! RAM starts at 0 and runs up to the 32-bit PCI hole at
//! [`PCI_HOLE_START`] (3 GiB, where the VM's PCI window, ECAM, IOAPIC and
//! local APIC live); what does not fit continues at 4 GiB. The backing is
//! one contiguous host range: range `i` is backed at its `offset` in it.

use core::fmt;

/// Where guest RAM below 4 GiB ends at the latest: the VM's PCI window,
/// ECAM, IOAPIC and local APIC occupy `PCI_HOLE_START..4 GiB`.
pub const PCI_HOLE_START: u64 = 0xC000_0000;
/// Where RAM that does not fit below the hole continues.
pub const HIGH_RAM_BASE: u64 = 1 << 32;
/// Most RAM ranges a layout holds (low and high RAM; shared and device
/// regions will add more).
pub const MAX_RAM_RANGES: usize = 2;

/// An address in a VM's guest-physical address space (the workspace's one
/// guest-physical address type; `paging` re-exports it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestPhysAddr(pub u64);

impl GuestPhysAddr {
    /// The address as a plain number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Whether the address is a multiple of `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        debug_assert!(align.is_power_of_two());
        self.0 & (align - 1) == 0
    }

    /// `self + offset`, or `None` if it would pass the end of the address space.
    pub const fn checked_add(self, offset: u64) -> Option<Self> {
        match self.0.checked_add(offset) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }
}

impl fmt::Display for GuestPhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// One range of guest RAM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RamRange {
    /// First guest-physical byte.
    pub gpa: GuestPhysAddr,
    pub len: u64,
    /// Where it starts in the VM's contiguous host backing.
    pub offset: u64,
}

impl RamRange {
    /// One past the last guest-physical byte.
    pub fn end(&self) -> u64 {
        self.gpa.0 + self.len
    }
}

/// A VM's RAM ranges, sorted and disjoint (a small `Copy` value: every
/// vCPU holds its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamLayout {
    ranges: [RamRange; MAX_RAM_RANGES],
    count: u8,
}

impl RamLayout {
    /// `size` bytes of RAM: below the PCI hole, the rest from 4 GiB.
    pub const fn new(size: u64) -> Self {
        let low = if size < PCI_HOLE_START {
            size
        } else {
            PCI_HOLE_START
        };
        let mut ranges = [RamRange {
            gpa: GuestPhysAddr(0),
            len: low,
            offset: 0,
        }; MAX_RAM_RANGES];
        let count = if size > low {
            ranges[1] = RamRange {
                gpa: GuestPhysAddr(HIGH_RAM_BASE),
                len: size - low,
                offset: low,
            };
            2
        } else {
            1
        };
        RamLayout { ranges, count }
    }

    /// The ranges, lowest first.
    pub fn ranges(&self) -> &[RamRange] {
        &self.ranges[..usize::from(self.count)]
    }

    /// All RAM, in bytes.
    pub fn total(&self) -> u64 {
        self.ranges().iter().map(|r| r.len).sum()
    }

    /// Bytes of RAM from guest-physical 0 without a gap (the low range).
    pub fn low(&self) -> u64 {
        self.ranges[0].len
    }

    /// Bytes of RAM from `gpa` to the end of its range (0 outside RAM).
    pub fn bytes_from(&self, gpa: u64) -> u64 {
        self.ranges()
            .iter()
            .find(|r| gpa >= r.gpa.0 && gpa < r.end())
            .map_or(0, |r| r.end() - gpa)
    }

    /// The backing offset of `gpa..gpa + len` if it lies wholly inside one
    /// range (an access never straddles the hole).
    pub fn locate(&self, gpa: u64, len: u64) -> Option<u64> {
        let end = gpa.checked_add(len)?;
        self.ranges()
            .iter()
            .find(|r| gpa >= r.gpa.0 && end <= r.end())
            .map(|r| r.offset + (gpa - r.gpa.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_vms_have_one_range_from_zero() {
        let l = RamLayout::new(128 << 20);
        assert_eq!(l.ranges().len(), 1);
        assert_eq!((l.low(), l.total()), (128 << 20, 128 << 20));
        assert_eq!(l.locate(0, 4096), Some(0));
        assert_eq!(l.locate((128 << 20) - 8, 8), Some((128 << 20) - 8));
        assert_eq!(l.locate((128 << 20) - 4, 8), None, "runs past the end");
        assert_eq!(l.locate(u64::MAX - 3, 8), None, "wraps");
        assert_eq!(RamLayout::new(PCI_HOLE_START).ranges().len(), 1);
    }

    #[test]
    fn large_vms_continue_above_4_gib() {
        let l = RamLayout::new(4 << 30);
        assert_eq!(
            l.ranges(),
            [
                RamRange {
                    gpa: GuestPhysAddr(0),
                    len: PCI_HOLE_START,
                    offset: 0
                },
                RamRange {
                    gpa: GuestPhysAddr(HIGH_RAM_BASE),
                    len: 1 << 30,
                    offset: PCI_HOLE_START
                }
            ]
        );
        assert_eq!(l.total(), 4 << 30);
        assert_eq!(l.low(), PCI_HOLE_START);
        // The hole is not RAM; an access across its start is refused whole.
        assert_eq!(l.locate(PCI_HOLE_START, 4), None);
        assert_eq!(l.locate(0xFEE0_0000, 4), None);
        assert_eq!(l.locate(PCI_HOLE_START - 2, 4), None);
        assert_eq!(l.locate(HIGH_RAM_BASE, 4), Some(PCI_HOLE_START));
        assert_eq!(
            l.locate(HIGH_RAM_BASE + (1 << 30) - 4, 4),
            Some((4 << 30) - 4)
        );
        assert_eq!(l.locate(HIGH_RAM_BASE + (1 << 30) - 2, 4), None);
        assert_eq!(l.bytes_from(PCI_HOLE_START - 16), 16);
        assert_eq!(l.bytes_from(PCI_HOLE_START), 0);
        assert_eq!(l.bytes_from(HIGH_RAM_BASE + 8), (1 << 30) - 8);
    }

    #[test]
    fn empty_layouts_hold_nothing() {
        let l = RamLayout::new(0);
        assert_eq!(l.total(), 0);
        assert_eq!(l.locate(0, 1), None);
        assert_eq!(l.locate(0, 0), Some(0));
    }
}
