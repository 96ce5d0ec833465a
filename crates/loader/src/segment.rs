//! Pieces of a kernel image bound for guest RAM: where they may go, and the
//! copy (file bytes, then zeros up to the in-memory size).

use alloc::vec::Vec;
use core::fmt;

use vcpu::{GuestMemError, GuestMemory};

use crate::layout::Area;

/// One contiguous piece of guest RAM the loader fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment<'a> {
    pub gpa: u64,
    /// Bytes copied from the image to `gpa`.
    pub data: &'a [u8],
    /// Bytes the piece takes in guest RAM (`>= data.len()`); the tail past
    /// `data` is zeroed.
    pub mem_size: u64,
}

impl Segment<'_> {
    /// Exclusive end of the in-memory range, `None` if it wraps.
    fn end(&self) -> Option<u64> {
        self.gpa.checked_add(self.mem_size)
    }

    /// Whether `addr` lies in the part of the piece filled from the image.
    pub(crate) fn holds_code_at(&self, addr: u64) -> bool {
        addr >= self.gpa && addr - self.gpa < self.data.len() as u64
    }
}

/// Why a piece of the image cannot go where it asks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentError {
    /// More file bytes than in-memory bytes.
    FileLargerThanMemory {
        gpa: u64,
        file_size: u64,
        mem_size: u64,
    },
    /// `gpa + mem_size` does not fit in 64 bits.
    Wraps { gpa: u64, mem_size: u64 },
    /// The piece ends past the guest's RAM.
    OutsideRam { gpa: u64, end: u64, ram_size: u64 },
    /// The piece touches a low area the loader keeps for itself.
    KeepOut { gpa: u64, end: u64, area: Area },
    /// Two pieces share bytes.
    Overlap { first: u64, second: u64 },
    /// Guest RAM refused a write the checks had allowed.
    Memory(GuestMemError),
}

impl fmt::Display for SegmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SegmentError::FileLargerThanMemory {
                gpa,
                file_size,
                mem_size,
            } => write!(
                f,
                "piece at {gpa:#x} has {file_size:#x} file bytes but only {mem_size:#x} bytes in memory"
            ),
            SegmentError::Wraps { gpa, mem_size } => {
                write!(f, "piece at {gpa:#x} of {mem_size:#x} bytes wraps the address space")
            }
            SegmentError::OutsideRam { gpa, end, ram_size } => write!(
                f,
                "piece {gpa:#x}..{end:#x} ends past guest RAM ({ram_size:#x} bytes)"
            ),
            SegmentError::KeepOut { gpa, end, area } => {
                write!(f, "piece {gpa:#x}..{end:#x} overlaps the {area}")
            }
            SegmentError::Overlap { first, second } => {
                write!(f, "pieces at {first:#x} and {second:#x} overlap")
            }
            SegmentError::Memory(e) => write!(f, "writing the kernel failed: {e}"),
        }
    }
}

impl core::error::Error for SegmentError {}

/// Checks every piece against `ram_size`, the `keep_out` areas and each
/// other. Empty pieces are allowed and ignored.
pub(crate) fn check(
    segments: &[Segment<'_>],
    ram_size: u64,
    keep_out: &[Area],
) -> Result<(), SegmentError> {
    let mut ranges = Vec::with_capacity(segments.len());
    for s in segments {
        let file_size = s.data.len() as u64;
        if file_size > s.mem_size {
            return Err(SegmentError::FileLargerThanMemory {
                gpa: s.gpa,
                file_size,
                mem_size: s.mem_size,
            });
        }
        let end = s.end().ok_or(SegmentError::Wraps {
            gpa: s.gpa,
            mem_size: s.mem_size,
        })?;
        if s.mem_size == 0 {
            continue;
        }
        if end > ram_size {
            return Err(SegmentError::OutsideRam {
                gpa: s.gpa,
                end,
                ram_size,
            });
        }
        if let Some(area) = keep_out.iter().find(|a| a.overlaps(s.gpa, end)) {
            return Err(SegmentError::KeepOut {
                gpa: s.gpa,
                end,
                area: *area,
            });
        }
        ranges.push((s.gpa, end));
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(SegmentError::Overlap {
                first: pair[0].0,
                second: pair[1].0,
            });
        }
    }
    Ok(())
}

/// The end of the highest non-empty piece, 0 when there is none.
///
/// Precondition: [`check`] accepted `segments` (no end wraps).
pub(crate) fn highest_end(segments: &[Segment<'_>]) -> u64 {
    segments
        .iter()
        .filter(|s| s.mem_size > 0)
        .filter_map(Segment::end)
        .max()
        .unwrap_or(0)
}

/// The in-memory ranges `start..end` of the non-empty pieces.
///
/// Precondition: [`check`] accepted `segments` (no end wraps).
pub(crate) fn ranges(segments: &[Segment<'_>]) -> Vec<(u64, u64)> {
    segments
        .iter()
        .filter(|s| s.mem_size > 0)
        .filter_map(|s| Some((s.gpa, s.end()?)))
        .collect()
}

/// Copies every piece into guest RAM and zeroes its tail.
///
/// Precondition: [`check`] accepted `segments` for this memory's size.
pub(crate) fn copy(
    mem: &mut impl GuestMemory,
    segments: &[Segment<'_>],
) -> Result<(), SegmentError> {
    for s in segments.iter().filter(|s| s.mem_size > 0) {
        mem.write(s.gpa, s.data).map_err(SegmentError::Memory)?;
        let tail_start = s.gpa + s.data.len() as u64;
        zero(mem, tail_start, s.mem_size - s.data.len() as u64).map_err(SegmentError::Memory)?;
    }
    Ok(())
}

/// Writes `len` zero bytes at `gpa`.
pub(crate) fn zero(mem: &mut impl GuestMemory, gpa: u64, len: u64) -> Result<(), GuestMemError> {
    const ZEROS: [u8; 4096] = [0; 4096];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(ZEROS.len() as u64);
        // n <= 4096, so the cast cannot truncate.
        mem.write(gpa + done, &ZEROS[..n as usize])?;
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::KEEP_OUT;
    use vcpu::VecMemory;

    fn seg(gpa: u64, data: &[u8], mem_size: u64) -> Segment<'_> {
        Segment {
            gpa,
            data,
            mem_size,
        }
    }

    #[test]
    fn accepts_disjoint_pieces_and_copies_with_zeroed_tail() {
        let mut mem = VecMemory::new(0x20_0000);
        mem.0[0x10_0000..0x10_0010].fill(0xAA);
        let segs = [seg(0x10_0000, &[1, 2, 3], 16), seg(0x10_0010, &[4], 1)];
        check(&segs, mem.size(), &KEEP_OUT).unwrap();
        copy(&mut mem, &segs).unwrap();
        assert_eq!(&mem.0[0x10_0000..0x10_0004], &[1, 2, 3, 0]);
        assert!(mem.0[0x10_0003..0x10_0010].iter().all(|&b| b == 0));
        assert_eq!(mem.0[0x10_0010], 4);
    }

    #[test]
    fn rejects_bad_placements() {
        let ram = 0x20_0000;
        assert!(matches!(
            check(&[seg(0x10_0000, &[0; 4], 2)], ram, &KEEP_OUT),
            Err(SegmentError::FileLargerThanMemory { .. })
        ));
        assert!(matches!(
            check(&[seg(u64::MAX - 1, &[], 4)], ram, &KEEP_OUT),
            Err(SegmentError::Wraps { .. })
        ));
        assert_eq!(
            check(&[seg(0x1F_F000, &[], 0x1001)], ram, &KEEP_OUT),
            Err(SegmentError::OutsideRam {
                gpa: 0x1F_F000,
                end: 0x20_0001,
                ram_size: ram
            })
        );
        assert!(matches!(
            check(&[seg(0x8000, &[], 0x1001)], ram, &KEEP_OUT),
            Err(SegmentError::KeepOut { area, .. }) if area.start == 0x9000
        ));
        assert!(matches!(
            check(&[seg(0xA_0000, &[], 0x10)], ram, &KEEP_OUT),
            Err(SegmentError::KeepOut { area, .. }) if area.start == 0x9_FC00
        ));
        assert_eq!(
            check(
                &[seg(0x10_1000, &[], 0x10), seg(0x10_0000, &[], 0x1001)],
                ram,
                &KEEP_OUT
            ),
            Err(SegmentError::Overlap {
                first: 0x10_0000,
                second: 0x10_1000
            })
        );
        // Empty pieces are ignored even where a real one could not go.
        check(&[seg(0x9000, &[], 0)], ram, &KEEP_OUT).unwrap();
    }
}
