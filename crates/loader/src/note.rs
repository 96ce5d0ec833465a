//! ELF notes, the records a `PT_NOTE` segment holds: a 12-byte header
//! (`n_namesz`, `n_descsz`, `n_type`, little-endian u32s), the name, then the
//! descriptor, name and descriptor each padded to the segment's alignment
//! (4 bytes; 8 for a segment whose `p_align` is 8, as binutils reads them).
//!
//! Every record is read by offset with bounds checks: a header, name or
//! descriptor that runs past the segment, or a segment whose alignment is
//! neither 4 nor 8 or whose file offset does not keep it, is an error.

use core::fmt;

use crate::bytes::u32_at;
use crate::elf::NoteSegment;

/// Bytes of a note header.
const HEADER_LEN: u64 = 12;

/// One note.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Note<'a> {
    /// `n_namesz` bytes, the NUL terminator included when the producer
    /// wrote one.
    pub name: &'a [u8],
    pub n_type: u32,
    /// `n_descsz` bytes.
    pub desc: &'a [u8],
}

/// Why a `PT_NOTE` segment cannot be read. Offsets are from the start of the
/// segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteError {
    /// `p_align` is neither 4 nor 8 (0, 1 and 2 count as 4).
    BadAlign { align: u64 },
    /// The segment's file offset is not a multiple of its alignment.
    Misaligned { offset: u64, align: u64 },
    /// Fewer than the 12 bytes of a note header are left at `at`.
    HeaderTruncated { at: u64, len: u64 },
    /// The name of the note at `at`, padded, runs past the segment.
    NameTruncated { at: u64, namesz: u32, len: u64 },
    /// The descriptor of the note at `at`, padded, runs past the segment.
    DescTruncated { at: u64, descsz: u32, len: u64 },
}

impl fmt::Display for NoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NoteError::BadAlign { align } => {
                write!(f, "note alignment {align} is neither 4 nor 8")
            }
            NoteError::Misaligned { offset, align } => write!(
                f,
                "notes at file offset {offset:#x} are not {align}-byte aligned"
            ),
            NoteError::HeaderTruncated { at, len } => write!(
                f,
                "note header at {at:#x} runs past the {len:#x}-byte segment"
            ),
            NoteError::NameTruncated { at, namesz, len } => write!(
                f,
                "note at {at:#x}: name of {namesz:#x} bytes runs past the {len:#x}-byte segment"
            ),
            NoteError::DescTruncated { at, descsz, len } => write!(
                f,
                "note at {at:#x}: descriptor of {descsz:#x} bytes runs past the {len:#x}-byte segment"
            ),
        }
    }
}

impl core::error::Error for NoteError {}

/// The notes of one segment, in order; after the first error, nothing.
pub(crate) struct Notes<'a> {
    data: &'a [u8],
    align: u64,
    at: u64,
    failed: bool,
}

/// The notes of `segment`, once its alignment is checked.
pub(crate) fn notes<'a>(segment: &NoteSegment<'a>) -> Result<Notes<'a>, NoteError> {
    let align = match segment.align {
        0 | 1 | 2 | 4 => 4,
        8 => 8,
        align => return Err(NoteError::BadAlign { align }),
    };
    if segment.offset % align != 0 {
        return Err(NoteError::Misaligned {
            offset: segment.offset,
            align,
        });
    }
    Ok(Notes {
        data: segment.data,
        align,
        at: 0,
        failed: false,
    })
}

/// `v` rounded up to `align` (a power of two), `None` on overflow.
fn align_up(v: u64, align: u64) -> Option<u64> {
    Some(v.checked_add(align - 1)? & !(align - 1))
}

impl<'a> Notes<'a> {
    /// The note at `self.at` and the offset of the next one.
    fn read(&self) -> Result<(Note<'a>, u64), NoteError> {
        let len = self.data.len() as u64;
        let at = self.at;
        // `at <= len`, which fits in usize, so these conversions cannot fail.
        let field = |i: u64| {
            usize::try_from(at + 4 * i)
                .ok()
                .and_then(|off| u32_at(self.data, off))
        };
        let header_end = at.checked_add(HEADER_LEN).filter(|&e| e <= len);
        let (Some(header_end), Some(namesz), Some(descsz), Some(n_type)) =
            (header_end, field(0), field(1), field(2))
        else {
            return Err(NoteError::HeaderTruncated { at, len });
        };
        let name_end = header_end + u64::from(namesz);
        let desc_start = align_up(name_end, self.align)
            .filter(|&e| e <= len)
            .ok_or(NoteError::NameTruncated { at, namesz, len })?;
        let desc_end = desc_start + u64::from(descsz);
        let next = align_up(desc_end, self.align)
            .filter(|&e| e <= len)
            .ok_or(NoteError::DescTruncated { at, descsz, len })?;
        // Every range ends at or before `len`: the slices are in bounds.
        let range = |s: u64, e: u64| self.data.get(s as usize..e as usize).unwrap_or(&[]);
        Ok((
            Note {
                name: range(header_end, name_end),
                n_type,
                desc: range(desc_start, desc_end),
            },
            next,
        ))
    }
}

impl<'a> Iterator for Notes<'a> {
    type Item = Result<Note<'a>, NoteError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.data.len() as u64 {
            return None;
        }
        match self.read() {
            Ok((note, next)) => {
                // Each note takes at least its 12-byte header: `next` grows.
                debug_assert!(next > self.at);
                self.at = next;
                Some(Ok(note))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// One note as its producer lays it out, padded to `align`.
    pub(crate) fn note_bytes(name: &[u8], n_type: u32, desc: &[u8], align: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(name.len() as u32).to_le_bytes());
        b.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        b.extend_from_slice(&n_type.to_le_bytes());
        b.extend_from_slice(name);
        b.resize(b.len().next_multiple_of(align), 0);
        b.extend_from_slice(desc);
        b.resize(b.len().next_multiple_of(align), 0);
        b
    }

    fn seg(data: &[u8], offset: u64, align: u64) -> NoteSegment<'_> {
        NoteSegment {
            index: 0,
            offset,
            align,
            data,
        }
    }

    fn all(data: &[u8], align: u64) -> Result<Vec<Note<'_>>, NoteError> {
        notes(&seg(data, 0, align))?.collect()
    }

    #[test]
    fn reads_padded_records_in_order() {
        let mut data = note_bytes(b"Xen\0", 6, b"linux\0", 4);
        data.extend(note_bytes(b"GNU\0", 3, &[0xAB; 20], 4));
        data.extend(note_bytes(b"Linux\0", 0x100, &[], 4));
        data.extend(note_bytes(b"", 7, &[1, 2, 3], 4));
        let n = all(&data, 4).unwrap();
        assert_eq!(n.len(), 4);
        assert_eq!(
            n[0],
            Note {
                name: b"Xen\0",
                n_type: 6,
                desc: b"linux\0"
            }
        );
        assert_eq!((n[1].name, n[1].desc.len()), (&b"GNU\0"[..], 20));
        assert_eq!(
            (n[2].name, n[2].n_type, n[2].desc),
            (&b"Linux\0"[..], 0x100, &[][..])
        );
        assert_eq!((n[3].name, n[3].desc), (&[][..], &[1u8, 2, 3][..]));
        // 8-byte alignment pads name and descriptor to 8.
        let mut data = note_bytes(b"GNU\0", 5, &[9; 12], 8);
        data.extend(note_bytes(b"Xen\0", 18, &[1, 0, 0, 0], 8));
        assert_eq!(data.len(), 32 + 24);
        let n = all(&data, 8).unwrap();
        assert_eq!((n[1].n_type, n[1].desc), (18, &[1u8, 0, 0, 0][..]));
        assert!(all(&[], 4).unwrap().is_empty());
    }

    #[test]
    fn hostile_records_are_errors() {
        let good = note_bytes(b"Xen\0", 18, &[0, 0, 0, 1], 4);
        let with = |off: usize, v: u32| {
            let mut b = good.clone();
            b[off..off + 4].copy_from_slice(&v.to_le_bytes());
            b
        };
        assert_eq!(
            all(&good[..11], 4),
            Err(NoteError::HeaderTruncated { at: 0, len: 11 })
        );
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0; 4]);
        assert_eq!(
            all(&trailing, 4),
            Err(NoteError::HeaderTruncated { at: 20, len: 24 })
        );
        for namesz in [9, 0x1000, u32::MAX] {
            assert_eq!(
                all(&with(0, namesz), 4),
                Err(NoteError::NameTruncated {
                    at: 0,
                    namesz,
                    len: 20
                })
            );
        }
        for descsz in [5, 0x1000, u32::MAX] {
            assert_eq!(
                all(&with(4, descsz), 4),
                Err(NoteError::DescTruncated {
                    at: 0,
                    descsz,
                    len: 20
                })
            );
        }
        // The padding of the last descriptor is part of the record.
        let mut cut = note_bytes(b"Xen\0", 18, &[1, 2], 4);
        cut.truncate(18);
        assert!(matches!(
            all(&cut, 4),
            Err(NoteError::DescTruncated { descsz: 2, .. })
        ));
        assert_eq!(
            all(&good, 16).unwrap_err(),
            NoteError::BadAlign { align: 16 }
        );
        assert_eq!(all(&good, 3).unwrap_err(), NoteError::BadAlign { align: 3 });
        assert_eq!(
            notes(&seg(&good, 0x1002, 4)).err(),
            Some(NoteError::Misaligned {
                offset: 0x1002,
                align: 4
            })
        );
        assert!(notes(&seg(&good, 0x1004, 8)).is_err());
        assert!(notes(&seg(&good, 0x1004, 0)).is_ok());
        // Iteration stops after the first error.
        let mut it = notes(&seg(&trailing, 0, 4)).unwrap();
        assert!(matches!(it.next(), Some(Ok(_))));
        assert!(matches!(it.next(), Some(Err(_))));
        assert_eq!(it.next(), None);
    }
}
