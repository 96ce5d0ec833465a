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

    /// `size` bytes of RAM whose guest-physical addresses above 1 MiB equal
    /// their host-physical ones, for a VM whose RAM is backed at `host_base`
    /// and which drives a device without an IOMMU (the device uses the
    /// guest's physical addresses as host ones). The guest's first 1 MiB (real
    /// mode, boot data, BIOS area) is backed by the first MiB of the backing;
    /// the rest sits at `host_base + 1 MiB .. host_base + size`, backed at the
    /// same offset, so guest `host_base + x` is host `host_base + x`.
    /// Guest-physical `1 MiB .. host_base + 1 MiB` is not RAM.
    ///
    /// `None` unless `host_base` is at least 1 MiB and 2 MiB aligned, `size`
    /// is over 1 MiB, and all of it ends below the PCI hole.
    pub const fn identity(host_base: u64, size: u64) -> Option<Self> {
        const MIB: u64 = 1 << 20;
        let end = match host_base.checked_add(size) {
            Some(e) => e,
            None => return None,
        };
        if host_base < MIB
            || !host_base.is_multiple_of(2 * MIB)
            || size <= MIB
            || end > PCI_HOLE_START
        {
            return None;
        }
        let low = RamRange {
            gpa: GuestPhysAddr(0),
            len: MIB,
            offset: 0,
        };
        let high = RamRange {
            gpa: GuestPhysAddr(host_base + MIB),
            len: size - MIB,
            offset: MIB,
        };
        Some(RamLayout {
            ranges: [low, high],
            count: 2,
        })
    }

    /// Whether guest-physical addresses of RAM above 1 MiB are host-physical
    /// ones (see [`RamLayout::identity`]) for backing at `host_base`.
    pub fn is_identity_at(&self, host_base: u64) -> bool {
        self.ranges()
            .iter()
            .all(|r| r.end() <= 1 << 20 || r.gpa.0 == host_base + r.offset)
    }

    /// One past the last byte of RAM below 4 GiB (what a 32-bit boot
    /// protocol's identity map and limits must cover).
    pub fn end_below_4g(&self) -> u64 {
        self.ranges()
            .iter()
            .filter(|r| r.gpa.0 < HIGH_RAM_BASE)
            .map(|r| r.end())
            .max()
            .unwrap_or(0)
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
    fn identity_layouts_put_ram_at_its_host_address() {
        const MIB: u64 = 1 << 20;
        let l = RamLayout::identity(256 * MIB, 256 * MIB).unwrap();
        assert_eq!(l.ranges().len(), 2);
        assert_eq!((l.low(), l.total()), (MIB, 256 * MIB));
        // The low MiB is backed by the first MiB of the backing.
        assert_eq!(l.locate(0x7000, 4096), Some(0x7000));
        assert_eq!(l.locate(MIB - 4, 8), None, "runs into the gap");
        // Guest 1 MiB .. host_base + 1 MiB is no RAM.
        assert_eq!(l.locate(MIB, 4), None);
        assert_eq!(l.locate(256 * MIB, 4), None);
        assert_eq!(l.bytes_from(16 * MIB), 0);
        // Above it, guest address = host address: backing offset = gpa - host_base.
        assert_eq!(l.locate(257 * MIB, 4), Some(MIB));
        assert_eq!(l.locate(512 * MIB - 8, 8), Some(256 * MIB - 8));
        assert_eq!(l.locate(512 * MIB - 4, 8), None);
        assert_eq!(l.end_below_4g(), 512 * MIB);
        assert!(l.is_identity_at(256 * MIB));
        assert!(!l.is_identity_at(128 * MIB));
        assert!(!RamLayout::new(256 * MIB).is_identity_at(256 * MIB));
        assert!(
            RamLayout::new(MIB).is_identity_at(256 * MIB),
            "only low RAM"
        );
    }

    #[test]
    fn identity_layouts_refuse_what_cannot_be_identity() {
        const MIB: u64 = 1 << 20;
        assert_eq!(RamLayout::identity(0, 64 * MIB), None, "over the low MiB");
        assert_eq!(
            RamLayout::identity(MIB, 64 * MIB),
            None,
            "not 2 MiB aligned"
        );
        assert_eq!(RamLayout::identity(3 * MIB, 64 * MIB), None);
        assert_eq!(
            RamLayout::identity(64 * MIB, MIB),
            None,
            "nothing above 1 MiB"
        );
        assert_eq!(
            RamLayout::identity(PCI_HOLE_START - 64 * MIB, 128 * MIB),
            None,
            "into the PCI hole"
        );
        assert_eq!(RamLayout::identity(u64::MAX - MIB + 1, 4 * MIB), None);
        assert!(RamLayout::identity(PCI_HOLE_START - 64 * MIB, 64 * MIB).is_some());
    }

    #[test]
    fn empty_layouts_hold_nothing() {
        let l = RamLayout::new(0);
        assert_eq!(l.total(), 0);
        assert_eq!(l.locate(0, 1), None);
        assert_eq!(l.locate(0, 0), Some(0));
    }
}
