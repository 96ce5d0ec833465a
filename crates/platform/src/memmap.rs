//! The physical memory map, normalized: sorted, non-overlapping, conservative.
//!
//! Firmware maps may list regions out of order, overlapping, or split into
//! pieces. [`MemoryMap::new`] turns them into one ordered list where, wherever
//! two regions overlap, the more restrictive kind wins (usable memory that is
//! also listed as anything else is not usable), and touching regions of one
//! kind are merged. [`MemoryMap::usable_ranges`] then removes what the
//! hypervisor must never hand out and returns whole 4 KiB pages.

extern crate alloc;

use alloc::vec::Vec;
use core::fmt;

use crate::addr::{HostPhysAddr, PhysRange, PAGE_SIZE};

/// Most regions accepted from the loader (a BIOS E820 map rarely has 30).
pub const MAX_RAW_REGIONS: usize = 128;
/// Most regions in a normalized map: `n` overlapping regions cut each other
/// into at most `2n - 1` pieces.
pub const MAX_REGIONS: usize = 2 * MAX_RAW_REGIONS;
/// Most usable ranges returned by [`MemoryMap::usable_ranges`].
pub const MAX_USABLE_RANGES: usize = 256;
/// End of the real-mode area (BIOS data, EBDA, option ROMs, AP trampoline),
/// never returned by [`MemoryMap::usable_ranges`].
pub const LOW_MEMORY_END: HostPhysAddr = HostPhysAddr(0x10_0000);

/// What a physical memory region may be used for.
///
/// The declaration order is the precedence on overlap: a later kind wins over
/// an earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemoryKind {
    /// RAM free for the hypervisor to use.
    Usable,
    /// ACPI tables; RAM again once the tables have been read.
    AcpiReclaimable,
    /// ACPI non-volatile storage: must be preserved.
    AcpiNvs,
    /// Reserved by firmware or hardware, or of a type this code does not know.
    Reserved,
    /// RAM the firmware found to be defective.
    Bad,
}

impl MemoryKind {
    /// The kind for an E820 / multiboot memory type number (1 usable,
    /// 3 ACPI reclaimable, 4 ACPI NVS, 5 bad; everything else is reserved).
    pub const fn from_e820(kind: u32) -> Self {
        match kind {
            1 => Self::Usable,
            3 => Self::AcpiReclaimable,
            4 => Self::AcpiNvs,
            5 => Self::Bad,
            _ => Self::Reserved,
        }
    }
}

impl fmt::Display for MemoryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Usable => "usable",
            Self::AcpiReclaimable => "ACPI reclaimable",
            Self::AcpiNvs => "ACPI NVS",
            Self::Reserved => "reserved",
            Self::Bad => "bad",
        })
    }
}

/// One region of a memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// The addresses covered.
    pub range: PhysRange,
    /// What they may be used for.
    pub kind: MemoryKind,
}

impl MemoryRegion {
    /// A region of `kind` covering `range`.
    pub const fn new(range: PhysRange, kind: MemoryKind) -> Self {
        Self { range, kind }
    }
}

impl fmt::Display for MemoryRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.range, self.kind)
    }
}

/// Why a memory map could not be built or used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemMapError {
    /// More input regions than [`MAX_RAW_REGIONS`].
    TooManyRegions {
        /// Regions given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More usable ranges than [`MAX_USABLE_RANGES`] after exclusions.
    TooManyUsableRanges {
        /// The limit.
        max: usize,
    },
    /// No whole usable page is left once the exclusions are removed.
    NothingUsable {
        /// Usable bytes before the exclusions.
        usable_bytes: u64,
        /// Number of excluded ranges (besides the first 1 MiB).
        excluded: usize,
    },
}

impl fmt::Display for MemMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyRegions { count, max } => write!(
                f,
                "the memory map has {count} regions; at most {max} are supported"
            ),
            Self::TooManyUsableRanges { max } => write!(
                f,
                "usable memory is split into more than {max} ranges after the exclusions"
            ),
            Self::NothingUsable {
                usable_bytes,
                excluded,
            } => write!(
                f,
                "no whole usable 4 KiB page is left of {usable_bytes:#x} usable bytes after \
                 removing the first 1 MiB and {excluded} reserved ranges"
            ),
        }
    }
}

/// A sorted, non-overlapping, merged memory map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryMap {
    regions: Vec<MemoryRegion>,
}

impl MemoryMap {
    /// Normalizes `raw` (any order, overlaps allowed, empty regions ignored).
    ///
    /// Where regions overlap, the kind that comes last in [`MemoryKind`]'s
    /// declaration wins, so usable memory also claimed by anything else is not
    /// usable. Adjacent regions of one kind are merged; gaps stay gaps.
    pub fn new(raw: &[MemoryRegion]) -> Result<Self, MemMapError> {
        if raw.len() > MAX_RAW_REGIONS {
            return Err(MemMapError::TooManyRegions {
                count: raw.len(),
                max: MAX_RAW_REGIONS,
            });
        }
        let live = || raw.iter().filter(|r| !r.range.is_empty());

        let mut bounds: Vec<HostPhysAddr> = Vec::with_capacity(2 * raw.len());
        for r in live() {
            bounds.push(r.range.start);
            bounds.push(r.range.end);
        }
        bounds.sort_unstable();
        bounds.dedup();

        let mut regions: Vec<MemoryRegion> = Vec::new();
        for w in bounds.windows(2) {
            let piece = PhysRange::new(w[0], w[1]);
            // Every region start and end is a bound, so a region overlapping
            // `piece` covers all of it.
            let Some(kind) = live()
                .filter(|r| r.range.overlaps(&piece))
                .map(|r| r.kind)
                .max()
            else {
                continue;
            };
            match regions.last_mut() {
                Some(last) if last.kind == kind && last.range.end == piece.start => {
                    last.range.end = piece.end;
                }
                _ => regions.push(MemoryRegion::new(piece, kind)),
            }
        }
        debug_assert!(regions.len() <= MAX_REGIONS);
        Ok(Self { regions })
    }

    /// The normalized regions, sorted by address.
    pub fn regions(&self) -> &[MemoryRegion] {
        &self.regions
    }

    /// The kind of memory at `addr`, or `None` if the map does not cover it.
    pub fn kind_at(&self, addr: HostPhysAddr) -> Option<MemoryKind> {
        self.regions
            .iter()
            .find(|r| r.range.contains(addr))
            .map(|r| r.kind)
    }

    /// Total bytes of usable memory in the map (before any exclusion).
    pub fn usable_bytes(&self) -> u64 {
        self.regions
            .iter()
            .filter(|r| r.kind == MemoryKind::Usable)
            .map(|r| r.range.len())
            .sum()
    }

    /// The usable memory the hypervisor may hand out, in whole 4 KiB pages.
    ///
    /// Removes the first 1 MiB (see [`LOW_MEMORY_END`]) and every range in
    /// `excluding` (the hypervisor image, boot modules, the multiboot info...),
    /// then shrinks each piece inward to page boundaries and drops pieces with
    /// no whole page. The result is sorted and non-overlapping.
    pub fn usable_ranges(&self, excluding: &[PhysRange]) -> Result<Vec<PhysRange>, MemMapError> {
        let low = PhysRange::new(HostPhysAddr(0), LOW_MEMORY_END);
        let mut out: Vec<PhysRange> = Vec::new();
        let mut pieces: Vec<PhysRange> = Vec::new();
        let mut next: Vec<PhysRange> = Vec::new();
        for region in self.regions.iter().filter(|r| r.kind == MemoryKind::Usable) {
            pieces.clear();
            pieces.push(region.range);
            for ex in core::iter::once(&low).chain(excluding) {
                next.clear();
                for p in &pieces {
                    let (left, right) = subtract(p, ex);
                    next.extend(left);
                    next.extend(right);
                }
                core::mem::swap(&mut pieces, &mut next);
            }
            for p in pieces.iter().filter_map(|p| p.align_inward(PAGE_SIZE)) {
                if out.len() == MAX_USABLE_RANGES {
                    return Err(MemMapError::TooManyUsableRanges {
                        max: MAX_USABLE_RANGES,
                    });
                }
                out.push(p);
            }
        }
        // Pieces of one region come out in order, and regions are sorted.
        debug_assert!(out.windows(2).all(|w| w[0].end <= w[1].start));
        if out.is_empty() {
            return Err(MemMapError::NothingUsable {
                usable_bytes: self.usable_bytes(),
                excluded: excluding.len(),
            });
        }
        Ok(out)
    }
}

/// Total bytes in `ranges`.
pub fn total_len(ranges: &[PhysRange]) -> u64 {
    ranges.iter().map(PhysRange::len).sum()
}

/// `r` minus `ex`: what is left below and above `ex`.
fn subtract(r: &PhysRange, ex: &PhysRange) -> (Option<PhysRange>, Option<PhysRange>) {
    if !r.overlaps(ex) {
        return (Some(*r), None);
    }
    let left = PhysRange::new(r.start, ex.start);
    let right = PhysRange::new(ex.end, r.end);
    (
        (!left.is_empty()).then_some(left),
        (!right.is_empty()).then_some(right),
    )
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{format, vec};

    use super::MemoryKind::*;
    use super::*;

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange::new(HostPhysAddr(start), HostPhysAddr(end))
    }

    fn reg(start: u64, end: u64, kind: MemoryKind) -> MemoryRegion {
        MemoryRegion::new(r(start, end), kind)
    }

    /// The E820 map SeaBIOS gives QEMU with 128 MiB of RAM.
    fn qemu_map() -> Vec<MemoryRegion> {
        vec![
            reg(0, 0x9fc00, Usable),
            reg(0x9fc00, 0xa0000, Reserved),
            reg(0xf0000, 0x10_0000, Reserved),
            reg(0x10_0000, 0x7fe_0000, Usable),
            reg(0x7fe_0000, 0x800_0000, Reserved),
            reg(0xb000_0000, 0xc000_0000, Reserved),
            reg(0xfffc_0000, 0x1_0000_0000, Reserved),
        ]
    }

    #[test]
    fn e820_kinds() {
        assert_eq!(MemoryKind::from_e820(1), Usable);
        assert_eq!(MemoryKind::from_e820(2), Reserved);
        assert_eq!(MemoryKind::from_e820(3), AcpiReclaimable);
        assert_eq!(MemoryKind::from_e820(4), AcpiNvs);
        assert_eq!(MemoryKind::from_e820(5), Bad);
        assert_eq!(MemoryKind::from_e820(12), Reserved);
    }

    #[test]
    fn sorted_map_is_kept() {
        let map = MemoryMap::new(&qemu_map()).unwrap();
        assert_eq!(map.regions(), &qemu_map()[..]);
        assert_eq!(map.usable_bytes(), 0x9fc00 + 0x7ee_0000);
    }

    #[test]
    fn unsorted_input_is_sorted() {
        let mut raw = qemu_map();
        raw.reverse();
        assert_eq!(MemoryMap::new(&raw).unwrap().regions(), &qemu_map()[..]);
    }

    #[test]
    fn reserved_wins_over_usable() {
        let map =
            MemoryMap::new(&[reg(0x0, 0x10000, Usable), reg(0x8000, 0x9000, Reserved)]).unwrap();
        assert_eq!(
            map.regions(),
            &[
                reg(0x0, 0x8000, Usable),
                reg(0x8000, 0x9000, Reserved),
                reg(0x9000, 0x10000, Usable),
            ]
        );
        assert_eq!(map.kind_at(HostPhysAddr(0x8fff)), Some(Reserved));
        assert_eq!(map.kind_at(HostPhysAddr(0x10000)), None);
    }

    #[test]
    fn stronger_non_usable_kind_wins() {
        let map = MemoryMap::new(&[
            reg(0x1000, 0x5000, AcpiReclaimable),
            reg(0x3000, 0x4000, Bad),
            reg(0x2000, 0x6000, Usable),
        ])
        .unwrap();
        assert_eq!(
            map.regions(),
            &[
                reg(0x1000, 0x3000, AcpiReclaimable),
                reg(0x3000, 0x4000, Bad),
                reg(0x4000, 0x5000, AcpiReclaimable),
                reg(0x5000, 0x6000, Usable),
            ]
        );
    }

    #[test]
    fn adjacent_and_duplicate_regions_merge() {
        let map = MemoryMap::new(&[
            reg(0x1000, 0x2000, Usable),
            reg(0x2000, 0x3000, Usable),
            reg(0x1800, 0x2800, Usable),
            reg(0x5000, 0x6000, Usable),
            reg(0x4000, 0x4000, Reserved),
        ])
        .unwrap();
        assert_eq!(
            map.regions(),
            &[reg(0x1000, 0x3000, Usable), reg(0x5000, 0x6000, Usable)]
        );
    }

    #[test]
    fn too_many_regions() {
        let raw = vec![reg(0, 0x1000, Usable); MAX_RAW_REGIONS + 1];
        let err = MemoryMap::new(&raw).unwrap_err();
        assert_eq!(
            format!("{err}"),
            "the memory map has 129 regions; at most 128 are supported"
        );
        let raw = vec![reg(0, 0x1000, Usable); MAX_RAW_REGIONS];
        assert!(MemoryMap::new(&raw).is_ok());
    }

    #[test]
    fn worst_case_split_fits() {
        // Nested regions alternating kinds produce 2n - 1 pieces.
        let raw: Vec<MemoryRegion> = (0..MAX_RAW_REGIONS as u64)
            .map(|i| {
                let kind = if i % 2 == 0 { Usable } else { Bad };
                reg(0x1000 * i, 0x1000 * (2 * MAX_RAW_REGIONS as u64 - i), kind)
            })
            .collect();
        let map = MemoryMap::new(&raw).unwrap();
        assert!(map.regions().len() <= MAX_REGIONS);
        assert!(map
            .regions()
            .windows(2)
            .all(|w| w[0].range.end <= w[1].range.start));
    }

    #[test]
    fn usable_ranges_drop_low_memory_and_exclusions() {
        let map = MemoryMap::new(&qemu_map()).unwrap();
        let image = r(0x20_0000, 0x28_1234);
        let module = r(0x40_0800, 0x50_0000);
        let info = r(0x9000, 0x9100);
        let usable = map.usable_ranges(&[image, module, info]).unwrap();
        assert_eq!(
            usable,
            vec![
                r(0x10_0000, 0x20_0000),
                r(0x28_2000, 0x40_0000),
                r(0x50_0000, 0x7fe_0000),
            ]
        );
        assert_eq!(total_len(&usable), 0x10_0000 + 0x17_e000 + 0x7ae_0000);
    }

    #[test]
    fn usable_ranges_align_inward() {
        let map = MemoryMap::new(&[
            reg(0x10_0800, 0x20_0800, Usable),
            reg(0x30_0000, 0x30_0fff, Usable),
        ])
        .unwrap();
        assert_eq!(
            map.usable_ranges(&[]).unwrap(),
            vec![r(0x10_1000, 0x20_0000)]
        );
    }

    #[test]
    fn exclusion_covering_everything() {
        let map = MemoryMap::new(&qemu_map()).unwrap();
        let err = map.usable_ranges(&[r(0, u64::MAX)]).unwrap_err();
        assert!(matches!(
            err,
            MemMapError::NothingUsable { excluded: 1, .. }
        ));
        assert!(format!("{err}").contains("after removing the first 1 MiB and 1 reserved"));
        let low_only = MemoryMap::new(&[reg(0, 0x9f000, Usable)]).unwrap();
        assert!(low_only.usable_ranges(&[]).is_err());
    }

    #[test]
    fn too_many_usable_ranges() {
        let map = MemoryMap::new(&[reg(0x10_0000, 0x1000_0000, Usable)]).unwrap();
        let holes: Vec<PhysRange> = (0..MAX_USABLE_RANGES as u64)
            .map(|i| r(0x20_0000 + i * 0x2000, 0x20_1000 + i * 0x2000))
            .collect();
        assert_eq!(
            map.usable_ranges(&holes),
            Err(MemMapError::TooManyUsableRanges {
                max: MAX_USABLE_RANGES
            })
        );
        assert_eq!(
            map.usable_ranges(&holes[..MAX_USABLE_RANGES - 1])
                .unwrap()
                .len(),
            MAX_USABLE_RANGES
        );
    }
}
