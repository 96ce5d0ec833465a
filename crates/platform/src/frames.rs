//! The physical frame allocator: 4 KiB frames from a buddy system, with every
//! live allocation recorded so bad frees are refused instead of corrupting it.
//!
//! Wraps [`buddy_system_allocator::FrameAllocator`], which works on frame
//! numbers (physical address / 4 KiB) and trusts its caller completely: a
//! double free or a free of the wrong size silently corrupts its free lists.
//! This wrapper keeps the added ranges and a map of live allocations and checks
//! every free against them first.

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use crate::addr::{HostPhysAddr, PhysRange, PAGE_SIZE};

/// Size of one frame.
pub const FRAME_SIZE: u64 = PAGE_SIZE;
/// Most ranges [`FrameAllocator::add_range`] accepts (one per usable range).
pub const MAX_RANGES: usize = crate::memmap::MAX_USABLE_RANGES;
/// Buddy orders: blocks of up to 2^(ORDER - 1) frames (8 TiB).
const ORDER: usize = 32;
/// Largest block, in frames.
const MAX_BLOCK_FRAMES: usize = 1 << (ORDER - 1);

// Frame numbers are `usize` in the buddy allocator; the hypervisor and its
// host tests are 64-bit, so every u64 frame number converts losslessly.
const _: () = assert!(usize::BITS == u64::BITS);

/// Frame counts, in 4 KiB frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames ever added.
    pub total_frames: u64,
    /// Frames not allocated.
    pub free_frames: u64,
    /// Frames allocated, counting the rounding of each request up to a power
    /// of two (and to its alignment).
    pub allocated_frames: u64,
}

/// Why a range could not be added or a free was refused. Nothing changes in
/// the allocator when an error is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// More than [`MAX_RANGES`] ranges added.
    TooManyRanges {
        /// The limit.
        max: usize,
    },
    /// A range overlaps one added before (its frames would be handed out twice).
    Overlap {
        /// The range being added (page-aligned inward).
        range: PhysRange,
        /// The range already present.
        existing: PhysRange,
    },
    /// A freed address is not 4 KiB aligned.
    Misaligned {
        /// The address.
        addr: HostPhysAddr,
    },
    /// A freed address is in no range ever added.
    NotManaged {
        /// The address.
        addr: HostPhysAddr,
    },
    /// A freed address is not allocated: a double free, or a free of a
    /// frame that was never handed out.
    DoubleFree {
        /// The address.
        addr: HostPhysAddr,
    },
    /// A freed address lies inside an allocation that starts elsewhere.
    InsideAllocation {
        /// The address.
        addr: HostPhysAddr,
        /// Where the allocation starts.
        start: HostPhysAddr,
    },
    /// A free names a different frame count than the allocation had.
    CountMismatch {
        /// The address.
        addr: HostPhysAddr,
        /// Frames the free named.
        count: usize,
        /// Frames the allocation asked for.
        allocated: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyRanges { max } => {
                write!(
                    f,
                    "more than {max} physical ranges added to the frame allocator"
                )
            }
            Self::Overlap { range, existing } => write!(
                f,
                "frame range {range} overlaps {existing}, which was already added"
            ),
            Self::Misaligned { addr } => {
                write!(f, "freed frame address {addr} is not 4 KiB aligned")
            }
            Self::NotManaged { addr } => write!(
                f,
                "freed frame {addr} was never added to the frame allocator"
            ),
            Self::DoubleFree { addr } => write!(
                f,
                "freed frame {addr} is not allocated (double free, or never allocated)"
            ),
            Self::InsideAllocation { addr, start } => write!(
                f,
                "freed frame {addr} lies inside the allocation at {start}, not at its start"
            ),
            Self::CountMismatch {
                addr,
                count,
                allocated,
            } => write!(
                f,
                "free of {count} frames at {addr}, but {allocated} frames were allocated there"
            ),
        }
    }
}

/// One live allocation.
#[derive(Clone, Copy, Debug)]
struct Allocation {
    /// Frames the caller asked for.
    count: usize,
    /// Frames taken from the buddy allocator (a power of two >= `count`).
    block: usize,
}

/// A physical frame allocator with exact accounting and checked frees.
///
/// Memory use beyond the buddy lists: one map entry per live allocation.
pub struct FrameAllocator {
    buddy: buddy_system_allocator::FrameAllocator<ORDER>,
    /// Added ranges, page-aligned, sorted, disjoint.
    ranges: Vec<PhysRange>,
    /// Live allocations by first frame number.
    live: BTreeMap<usize, Allocation>,
    total_frames: u64,
    allocated_frames: u64,
}

impl Default for FrameAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FrameAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameAllocator")
            .field("ranges", &self.ranges)
            .field("live_allocations", &self.live.len())
            .field("stats", &self.stats())
            .finish()
    }
}

impl FrameAllocator {
    /// An allocator with no frames.
    pub const fn new() -> Self {
        Self {
            buddy: buddy_system_allocator::FrameAllocator::new(),
            ranges: Vec::new(),
            live: BTreeMap::new(),
            total_frames: 0,
            allocated_frames: 0,
        }
    }

    /// Adds the whole frames inside `range` (shrunk inward to 4 KiB
    /// boundaries) and returns how many were added (0 if no whole frame fits).
    pub fn add_range(&mut self, range: PhysRange) -> Result<u64, FrameError> {
        let Some(range) = range.align_inward(FRAME_SIZE) else {
            return Ok(0);
        };
        if let Some(existing) = self.ranges.iter().find(|r| r.overlaps(&range)) {
            return Err(FrameError::Overlap {
                range,
                existing: *existing,
            });
        }
        if self.ranges.len() == MAX_RANGES {
            return Err(FrameError::TooManyRanges { max: MAX_RANGES });
        }
        let at = self.ranges.partition_point(|r| r.start < range.start);
        self.ranges.insert(at, range);
        self.buddy.add_frame(pfn(range.start), pfn(range.end));
        let frames = range.len() / FRAME_SIZE;
        self.total_frames += frames;
        Ok(frames)
    }

    /// Allocates `count` contiguous frames, aligned to `count` rounded up to a
    /// power of two (which is also what it costs). `None` when `count` is 0 or
    /// no such block is free.
    pub fn alloc(&mut self, count: usize) -> Option<HostPhysAddr> {
        self.alloc_aligned(count, FRAME_SIZE)
    }

    /// Allocates `count` contiguous frames starting at a multiple of `align`
    /// bytes (a power of two; anything below 4 KiB means 4 KiB). The block
    /// taken is the larger of `count` rounded up to a power of two and
    /// `align / 4 KiB`. `None` when `count` is 0, `align` is not a power of
    /// two, or no such block is free. Free it with [`FrameAllocator::free`]
    /// and the same `count`.
    pub fn alloc_aligned(&mut self, count: usize, align: u64) -> Option<HostPhysAddr> {
        if count == 0 || count > MAX_BLOCK_FRAMES || !align.is_power_of_two() {
            return None;
        }
        let align_frames = usize::try_from(align / FRAME_SIZE).ok()?;
        if align_frames > MAX_BLOCK_FRAMES {
            return None;
        }
        let block = count.next_power_of_two().max(align_frames);
        let first = self.buddy.alloc(block)?;
        debug_assert_eq!(first % block, 0);
        self.live.insert(first, Allocation { count, block });
        self.allocated_frames += block as u64;
        Some(HostPhysAddr(first as u64 * FRAME_SIZE))
    }

    /// Frees the `count` frames allocated at `addr`.
    ///
    /// Refused, with nothing changed, unless `addr` is the start of a live
    /// allocation of exactly `count` frames.
    pub fn free(&mut self, addr: HostPhysAddr, count: usize) -> Result<(), FrameError> {
        if !addr.is_aligned(FRAME_SIZE) {
            return Err(FrameError::Misaligned { addr });
        }
        if !self.ranges.iter().any(|r| r.contains(addr)) {
            return Err(FrameError::NotManaged { addr });
        }
        let frame = pfn(addr);
        let (&first, &allocation) = self
            .live
            .range(..=frame)
            .next_back()
            .ok_or(FrameError::DoubleFree { addr })?;
        if first != frame {
            return if frame - first < allocation.block {
                Err(FrameError::InsideAllocation {
                    addr,
                    start: HostPhysAddr(first as u64 * FRAME_SIZE),
                })
            } else {
                Err(FrameError::DoubleFree { addr })
            };
        }
        if allocation.count != count {
            return Err(FrameError::CountMismatch {
                addr,
                count,
                allocated: allocation.count,
            });
        }
        self.live.remove(&first);
        self.buddy.dealloc(first, allocation.block);
        self.allocated_frames -= allocation.block as u64;
        Ok(())
    }

    /// Current frame counts.
    pub fn stats(&self) -> FrameStats {
        FrameStats {
            total_frames: self.total_frames,
            free_frames: self.total_frames - self.allocated_frames,
            allocated_frames: self.allocated_frames,
        }
    }

    /// The ranges added so far, sorted.
    pub fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }
}

/// Frame number of a page-aligned address.
fn pfn(addr: HostPhysAddr) -> usize {
    (addr.0 / FRAME_SIZE) as usize
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::BTreeSet;
    use std::string::ToString;
    use std::vec::Vec;

    use super::*;

    const MIB: u64 = 1 << 20;

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange::new(HostPhysAddr(start), HostPhysAddr(end))
    }

    fn allocator(start: u64, end: u64) -> FrameAllocator {
        let mut fa = FrameAllocator::new();
        fa.add_range(r(start, end)).unwrap();
        fa
    }

    #[test]
    fn add_range_aligns_inward_and_counts() {
        let mut fa = FrameAllocator::new();
        assert_eq!(fa.add_range(r(0x10_0800, 0x20_0800)).unwrap(), 255);
        assert_eq!(fa.add_range(r(0x30_0001, 0x30_0fff)).unwrap(), 0);
        assert_eq!(fa.ranges(), &[r(0x10_1000, 0x20_0000)]);
        assert_eq!(
            fa.stats(),
            FrameStats {
                total_frames: 255,
                free_frames: 255,
                allocated_frames: 0
            }
        );
    }

    #[test]
    fn overlapping_range_is_refused() {
        let mut fa = allocator(MIB, 2 * MIB);
        let err = fa.add_range(r(2 * MIB - 0x1000, 3 * MIB)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "frame range [0x1ff000, 0x300000) overlaps [0x100000, 0x200000), which was already \
             added"
        );
        assert_eq!(fa.stats().total_frames, 256);
        // Touching is fine.
        fa.add_range(r(2 * MIB, 3 * MIB)).unwrap();
        fa.add_range(r(0, MIB)).unwrap();
        assert_eq!(
            fa.ranges(),
            &[r(0, MIB), r(MIB, 2 * MIB), r(2 * MIB, 3 * MIB)]
        );
    }

    #[test]
    fn too_many_ranges() {
        let mut fa = FrameAllocator::new();
        for i in 0..MAX_RANGES as u64 {
            fa.add_range(r(i * 0x2000, i * 0x2000 + 0x1000)).unwrap();
        }
        let last = MAX_RANGES as u64 * 0x2000;
        assert_eq!(
            fa.add_range(r(last, last + 0x1000)),
            Err(FrameError::TooManyRanges { max: MAX_RANGES })
        );
    }

    #[test]
    fn alloc_is_naturally_aligned() {
        let mut fa = allocator(MIB + 0x3000, 64 * MIB);
        for count in [1usize, 2, 3, 4, 5, 8, 13, 16, 100, 256] {
            let addr = fa.alloc(count).unwrap();
            let size = count.next_power_of_two() as u64 * FRAME_SIZE;
            assert!(addr.is_aligned(size), "{count} frames at {addr}");
            assert!(fa.ranges()[0].contains_range(&r(addr.0, addr.0 + size)));
        }
    }

    #[test]
    fn alloc_aligned_honours_alignment() {
        let mut fa = allocator(MIB + 0x1000, 64 * MIB);
        let a = fa.alloc_aligned(1, 2 * MIB).unwrap();
        assert!(a.is_aligned(2 * MIB));
        assert_eq!(fa.stats().allocated_frames, 512);
        let b = fa.alloc_aligned(3, 0x10).unwrap();
        assert!(b.is_aligned(4 * FRAME_SIZE));
        assert_eq!(fa.alloc_aligned(1, 3 * FRAME_SIZE), None);
        assert_eq!(
            fa.free(a, 512),
            Err(FrameError::CountMismatch {
                addr: a,
                count: 512,
                allocated: 1
            })
        );
        fa.free(a, 1).unwrap();
        fa.free(b, 3).unwrap();
        assert_eq!(fa.stats().allocated_frames, 0);
    }

    #[test]
    fn zero_and_huge_counts() {
        let mut fa = allocator(MIB, 2 * MIB);
        assert_eq!(fa.alloc(0), None);
        assert_eq!(fa.alloc(usize::MAX), None);
        assert_eq!(fa.alloc_aligned(1, 1 << 63), None);
        assert_eq!(fa.stats().allocated_frames, 0);
    }

    #[test]
    fn exhaustion_returns_none() {
        let mut fa = allocator(MIB, MIB + 16 * FRAME_SIZE);
        let frames: Vec<HostPhysAddr> = (0..16).map(|_| fa.alloc(1).unwrap()).collect();
        assert_eq!(fa.alloc(1), None);
        assert_eq!(fa.stats().free_frames, 0);
        let distinct: BTreeSet<u64> = frames.iter().map(|a| a.0).collect();
        assert_eq!(distinct.len(), 16);
        fa.free(frames[7], 1).unwrap();
        assert_eq!(fa.alloc(1), Some(frames[7]));
        assert_eq!(fa.alloc(1), None);
    }

    #[test]
    fn double_free_is_refused() {
        let mut fa = allocator(MIB, 2 * MIB);
        let a = fa.alloc(4).unwrap();
        fa.free(a, 4).unwrap();
        let before = fa.stats();
        let err = fa.free(a, 4).unwrap_err();
        assert_eq!(err, FrameError::DoubleFree { addr: a });
        assert!(err.to_string().contains("double free"));
        assert_eq!(fa.stats(), before);
        // The buddy lists are intact: everything can be allocated once.
        assert!(fa.alloc(256).is_some());
        assert_eq!(fa.alloc(1), None);
    }

    #[test]
    fn bad_frees_are_refused() {
        let mut fa = allocator(MIB, 2 * MIB);
        let a = fa.alloc(4).unwrap();
        let inner = HostPhysAddr(a.0 + FRAME_SIZE);
        assert_eq!(
            fa.free(inner, 1),
            Err(FrameError::InsideAllocation {
                addr: inner,
                start: a
            })
        );
        assert_eq!(
            fa.free(HostPhysAddr(a.0 + 1), 4),
            Err(FrameError::Misaligned {
                addr: HostPhysAddr(a.0 + 1)
            })
        );
        let outside = HostPhysAddr(4 * MIB);
        let err = fa.free(outside, 1).unwrap_err();
        assert_eq!(err, FrameError::NotManaged { addr: outside });
        assert_eq!(
            err.to_string(),
            "freed frame 0x400000 was never added to the frame allocator"
        );
        // Free but never allocated, past an allocation's end.
        let past = HostPhysAddr(a.0 + 4 * FRAME_SIZE);
        assert_eq!(fa.free(past, 1), Err(FrameError::DoubleFree { addr: past }));
        assert_eq!(
            fa.free(a, 3),
            Err(FrameError::CountMismatch {
                addr: a,
                count: 3,
                allocated: 4
            })
        );
        assert_eq!(fa.stats().allocated_frames, 4);
        fa.free(a, 4).unwrap();
        assert_eq!(fa.stats().allocated_frames, 0);
    }

    #[test]
    fn accounting_through_many_allocs_and_frees() {
        let mut fa = allocator(MIB, 33 * MIB);
        fa.add_range(r(40 * MIB, 41 * MIB + 0x5000)).unwrap();
        let total = fa.stats().total_frames;
        assert_eq!(total, 32 * 256 + 256 + 5);

        let mut live: Vec<(HostPhysAddr, usize)> = Vec::new();
        let mut owned: BTreeSet<u64> = BTreeSet::new();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..4000 {
            if live.is_empty() || next() % 3 != 0 {
                let count = (next() % 40 + 1) as usize;
                if let Some(addr) = fa.alloc(count) {
                    let block = count.next_power_of_two() as u64;
                    for f in 0..block {
                        assert!(
                            owned.insert(addr.0 / FRAME_SIZE + f),
                            "frame handed out twice"
                        );
                    }
                    live.push((addr, count));
                }
            } else {
                let i = (next() % live.len() as u64) as usize;
                let (addr, count) = live.swap_remove(i);
                fa.free(addr, count).unwrap();
                for f in 0..count.next_power_of_two() as u64 {
                    owned.remove(&(addr.0 / FRAME_SIZE + f));
                }
            }
            let s = fa.stats();
            assert_eq!(s.allocated_frames, owned.len() as u64);
            assert_eq!(s.free_frames + s.allocated_frames, total);
        }
        for (addr, count) in live.drain(..) {
            fa.free(addr, count).unwrap();
        }
        assert_eq!(fa.stats().allocated_frames, 0);
        assert_eq!(fa.stats().free_frames, total);
    }

    #[test]
    fn fragmentation_and_coalescing() {
        let mut fa = allocator(MIB, MIB + 64 * FRAME_SIZE);
        let frames: Vec<HostPhysAddr> = (0..64).map(|_| fa.alloc(1).unwrap()).collect();
        // Free every other frame: half the memory is free, but no two
        // adjacent frames are.
        for a in frames.iter().step_by(2) {
            fa.free(*a, 1).unwrap();
        }
        assert_eq!(fa.stats().free_frames, 32);
        assert_eq!(fa.alloc(2), None);
        // Freeing the rest merges buddies back into one 64-frame block.
        for a in frames.iter().skip(1).step_by(2) {
            fa.free(*a, 1).unwrap();
        }
        assert_eq!(fa.alloc(64), Some(HostPhysAddr(MIB)));
    }
}
