//! Host physical addresses and half-open ranges of them.

use core::fmt;

/// Size of a small page and of one allocator frame.
pub const PAGE_SIZE: u64 = 4096;

/// A host physical address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPhysAddr(pub u64);

impl HostPhysAddr {
    /// The address as a plain number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Rounds up to a multiple of `align` (a power of two), or `None` if that
    /// would pass the end of the address space.
    pub const fn align_up(self, align: u64) -> Option<Self> {
        debug_assert!(align.is_power_of_two());
        let mask = align - 1;
        match self.0.checked_add(mask) {
            Some(v) => Some(Self(v & !mask)),
            None => None,
        }
    }

    /// Rounds down to a multiple of `align` (a power of two).
    pub const fn align_down(self, align: u64) -> Self {
        debug_assert!(align.is_power_of_two());
        Self(self.0 & !(align - 1))
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

impl fmt::Display for HostPhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// The half-open range of host physical addresses `start..end`.
///
/// A range with `end <= start` is empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysRange {
    /// First address in the range.
    pub start: HostPhysAddr,
    /// First address past the range.
    pub end: HostPhysAddr,
}

impl PhysRange {
    /// The range `start..end`.
    pub const fn new(start: HostPhysAddr, end: HostPhysAddr) -> Self {
        Self { start, end }
    }

    /// The range of `len` bytes at `base`, or `None` if it would wrap past
    /// the end of the address space.
    pub const fn from_base_len(base: HostPhysAddr, len: u64) -> Option<Self> {
        match base.checked_add(len) {
            Some(end) => Some(Self { start: base, end }),
            None => None,
        }
    }

    /// Number of bytes in the range (0 when empty).
    pub const fn len(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }

    /// Whether the range holds no address.
    pub const fn is_empty(&self) -> bool {
        self.end.0 <= self.start.0
    }

    /// Whether `addr` lies in the range.
    pub const fn contains(&self, addr: HostPhysAddr) -> bool {
        self.start.0 <= addr.0 && addr.0 < self.end.0
    }

    /// Whether `other` lies entirely in this range (an empty `other` is
    /// contained when its start is).
    pub const fn contains_range(&self, other: &PhysRange) -> bool {
        other.is_empty() && self.contains(other.start)
            || self.start.0 <= other.start.0 && other.end.0 <= self.end.0
    }

    /// Whether the two ranges share at least one address.
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        !self.is_empty()
            && !other.is_empty()
            && self.start.0 < other.end.0
            && other.start.0 < self.end.0
    }

    /// The addresses in both ranges, or `None` if they share none.
    pub fn intersection(&self, other: &PhysRange) -> Option<PhysRange> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start < end).then_some(PhysRange { start, end })
    }

    /// The largest range inside this one whose ends are multiples of `align`
    /// (a power of two), or `None` if no whole aligned block fits.
    pub fn align_inward(&self, align: u64) -> Option<PhysRange> {
        let start = self.start.align_up(align)?;
        let end = self.end.align_down(align);
        (start < end).then_some(PhysRange { start, end })
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start.0, self.end.0)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::*;

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange::new(HostPhysAddr(start), HostPhysAddr(end))
    }

    #[test]
    fn align() {
        let a = HostPhysAddr(0x1001);
        assert_eq!(a.align_up(PAGE_SIZE), Some(HostPhysAddr(0x2000)));
        assert_eq!(a.align_down(PAGE_SIZE), HostPhysAddr(0x1000));
        assert_eq!(
            HostPhysAddr(0x2000).align_up(PAGE_SIZE),
            Some(HostPhysAddr(0x2000))
        );
        assert_eq!(HostPhysAddr(u64::MAX).align_up(PAGE_SIZE), None);
        assert!(HostPhysAddr(0x3000).is_aligned(PAGE_SIZE));
        assert!(!a.is_aligned(2));
    }

    #[test]
    fn checked_add_and_display() {
        assert_eq!(HostPhysAddr(1).checked_add(2), Some(HostPhysAddr(3)));
        assert_eq!(HostPhysAddr(u64::MAX).checked_add(1), None);
        assert_eq!(format!("{}", HostPhysAddr(0xfee0_0000)), "0xfee00000");
        assert_eq!(format!("{}", r(0x1000, 0x2000)), "[0x1000, 0x2000)");
    }

    #[test]
    fn range_basics() {
        let a = r(0x1000, 0x3000);
        assert_eq!(a.len(), 0x2000);
        assert!(a.contains(HostPhysAddr(0x1000)));
        assert!(a.contains(HostPhysAddr(0x2fff)));
        assert!(!a.contains(HostPhysAddr(0x3000)));
        assert!(r(5, 5).is_empty());
        assert!(r(6, 5).is_empty());
        assert_eq!(r(6, 5).len(), 0);
        assert_eq!(PhysRange::from_base_len(HostPhysAddr(u64::MAX), 1), None);
        assert_eq!(PhysRange::from_base_len(HostPhysAddr(4), 4), Some(r(4, 8)));
        assert!(a.contains_range(&r(0x1000, 0x3000)));
        assert!(!a.contains_range(&r(0x1000, 0x3001)));
    }

    #[test]
    fn overlap_and_intersection() {
        let a = r(0x1000, 0x3000);
        assert!(a.overlaps(&r(0x2fff, 0x4000)));
        assert!(!a.overlaps(&r(0x3000, 0x4000)));
        assert!(!a.overlaps(&r(0x0, 0x1000)));
        assert!(!a.overlaps(&r(0x2000, 0x2000)));
        assert_eq!(a.intersection(&r(0x2000, 0x5000)), Some(r(0x2000, 0x3000)));
        assert_eq!(a.intersection(&r(0x3000, 0x5000)), None);
        assert_eq!(a.intersection(&r(0, u64::MAX)), Some(a));
    }

    #[test]
    fn align_inward() {
        assert_eq!(
            r(0x1001, 0x3fff).align_inward(PAGE_SIZE),
            Some(r(0x2000, 0x3000))
        );
        assert_eq!(r(0x1001, 0x2fff).align_inward(PAGE_SIZE), None);
        assert_eq!(r(u64::MAX - 10, u64::MAX).align_inward(PAGE_SIZE), None);
    }
}
