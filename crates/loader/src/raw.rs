//! Raw binaries: the whole image copied to one guest-physical address, with
//! an entry point inside it.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::segment::Segment;

/// Why a raw image cannot be loaded as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawError {
    /// The image has no bytes.
    Empty,
    /// The entry point is outside the copied image.
    EntryOutsideImage { entry: u64, start: u64, len: usize },
    /// The entry point cannot be reached from 32-bit protected mode.
    EntryAbove4GiB { entry: u64 },
}

impl fmt::Display for RawError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawError::Empty => write!(f, "raw kernel image is empty"),
            RawError::EntryOutsideImage { entry, start, len } => write!(
                f,
                "entry {entry:#x} is outside the {len}-byte image loaded at {start:#x}"
            ),
            RawError::EntryAbove4GiB { entry } => write!(
                f,
                "entry {entry:#x} is above 4 GiB, out of reach of 32-bit protected mode"
            ),
        }
    }
}

impl core::error::Error for RawError {}

/// The one piece of a raw image and its entry point.
pub(crate) fn plan(
    image: &[u8],
    load_gpa: u64,
    entry_gpa: u64,
) -> Result<(Vec<Segment<'_>>, u64), RawError> {
    if image.is_empty() {
        return Err(RawError::Empty);
    }
    let segment = Segment {
        gpa: load_gpa,
        data: image,
        mem_size: image.len() as u64,
    };
    if !segment.holds_code_at(entry_gpa) {
        return Err(RawError::EntryOutsideImage {
            entry: entry_gpa,
            start: load_gpa,
            len: image.len(),
        });
    }
    if entry_gpa > u64::from(u32::MAX) {
        return Err(RawError::EntryAbove4GiB { entry: entry_gpa });
    }
    Ok((vec![segment], entry_gpa))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_must_be_inside_and_reachable() {
        let img = [0x90u8; 16];
        assert!(plan(&img, 0x10_0000, 0x10_000F).is_ok());
        assert!(matches!(
            plan(&img, 0x10_0000, 0x10_0010),
            Err(RawError::EntryOutsideImage { .. })
        ));
        assert!(matches!(
            plan(&img, 0x10_0000, 0xF_FFFF),
            Err(RawError::EntryOutsideImage { .. })
        ));
        assert_eq!(plan(&[], 0x10_0000, 0x10_0000), Err(RawError::Empty));
        assert_eq!(
            plan(&img, 0x1_0000_0000, 0x1_0000_0000),
            Err(RawError::EntryAbove4GiB {
                entry: 0x1_0000_0000
            })
        );
        // A load address near the top: the placement check catches the wrap later.
        assert!(plan(&img, u64::MAX - 3, u64::MAX - 3).is_err());
    }
}
