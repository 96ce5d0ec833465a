//! Multiboot1 kernels: find and check the header in the first 8 KiB, then
//! load either by the header's address fields (the "a.out kludge", flags bit
//! 16) or as an ELF executable (32- or 64-bit, by physical address).
//!
//! Of the required flags (bits 0-15) the loader honours bit 0 (page-aligned
//! modules: every module starts on a page), bit 1 (memory information: always given) and
//! ignores bit 2 (video mode: there is no display; reported back in
//! [`crate::BootSetup::video_mode_ignored`]). Any other required bit is an
//! error. Optional bits 17-31 are ignored, as the specification allows.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::bytes::{slice, u32_at};
use crate::elf::{is_elf, ElfError, ElfFile};
use crate::segment::Segment;

/// The magic that opens a Multiboot1 header.
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// The value a Multiboot1 kernel finds in `EAX`.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie entirely within this many leading bytes.
pub const HEADER_SEARCH_LIMIT: usize = 8192;

/// Required flags the loader can honour: page-aligned modules, memory
/// information, video mode (ignored).
const FLAG_VIDEO: u32 = 1 << 2;
const HONOURED_REQUIRED: u32 = 0b111;
const REQUIRED_MASK: u32 = 0xFFFF;
/// The header carries load addresses (the a.out kludge).
const FLAG_ADDRESSES: u32 = 1 << 16;
/// Bytes of the header with and without the address fields.
const HEADER_BYTES: usize = 12;
const HEADER_WITH_ADDRESSES: usize = 32;

/// Why an image is not a loadable Multiboot1 kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Multiboot1Error {
    /// No header magic in the first 8 KiB.
    NoHeader,
    /// Header magic found, but magic + flags + checksum is not zero.
    BadChecksum {
        offset: usize,
        flags: u32,
        checksum: u32,
    },
    /// A required flag the loader cannot honour.
    UnsupportedFlags { flags: u32, unsupported: u32 },
    /// The address fields run past the image or the first 8 KiB.
    HeaderTruncated {
        offset: usize,
        need: usize,
        available: usize,
    },
    /// `header_addr` is below `load_addr`.
    HeaderBelowLoadAddr { header_addr: u32, load_addr: u32 },
    /// `load_addr` would lie before the start of the file.
    LoadBeforeFileStart {
        header_offset: usize,
        header_addr: u32,
        load_addr: u32,
    },
    /// `load_end_addr` is below `load_addr`.
    LoadEndBeforeLoadAddr { load_addr: u32, load_end_addr: u32 },
    /// `load_end_addr - load_addr` bytes are not in the file.
    LoadPastEndOfFile {
        file_offset: u64,
        len: u64,
        file_len: usize,
    },
    /// `bss_end_addr` is below the end of the loaded bytes.
    BssEndBeforeLoadEnd { load_end: u64, bss_end_addr: u32 },
    /// `entry_addr` is outside the loaded bytes.
    EntryNotLoaded {
        entry: u32,
        load_addr: u32,
        load_end: u64,
    },
    /// Without address fields the image must be ELF.
    NotElf,
    /// The ELF image is unusable.
    Elf(ElfError),
}

impl fmt::Display for Multiboot1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Multiboot1Error as E;
        match self {
            E::NoHeader => write!(
                f,
                "no Multiboot1 header (magic {HEADER_MAGIC:#x}) in the first {HEADER_SEARCH_LIMIT} bytes"
            ),
            E::BadChecksum {
                offset,
                flags,
                checksum,
            } => write!(
                f,
                "Multiboot1 header at offset {offset:#x}: checksum {checksum:#x} does not cancel magic and flags {flags:#x}"
            ),
            E::UnsupportedFlags { flags, unsupported } => write!(
                f,
                "Multiboot1 flags {flags:#x} require features {unsupported:#x} this loader does not offer"
            ),
            E::HeaderTruncated {
                offset,
                need,
                available,
            } => write!(
                f,
                "Multiboot1 header at offset {offset:#x} needs {need} bytes, only {available} are within the image's first {HEADER_SEARCH_LIMIT}"
            ),
            E::HeaderBelowLoadAddr {
                header_addr,
                load_addr,
            } => write!(f, "header_addr {header_addr:#x} is below load_addr {load_addr:#x}"),
            E::LoadBeforeFileStart {
                header_offset,
                header_addr,
                load_addr,
            } => write!(
                f,
                "load_addr {load_addr:#x} lies before the file start (header_addr {header_addr:#x} at offset {header_offset:#x})"
            ),
            E::LoadEndBeforeLoadAddr {
                load_addr,
                load_end_addr,
            } => write!(
                f,
                "load_end_addr {load_end_addr:#x} is below load_addr {load_addr:#x}"
            ),
            E::LoadPastEndOfFile {
                file_offset,
                len,
                file_len,
            } => write!(
                f,
                "{len:#x} bytes to load at file offset {file_offset:#x} run past the {file_len}-byte file"
            ),
            E::BssEndBeforeLoadEnd {
                load_end,
                bss_end_addr,
            } => write!(
                f,
                "bss_end_addr {bss_end_addr:#x} is below the end of the loaded bytes {load_end:#x}"
            ),
            E::EntryNotLoaded {
                entry,
                load_addr,
                load_end,
            } => write!(
                f,
                "entry_addr {entry:#x} is outside the loaded bytes {load_addr:#x}..{load_end:#x}"
            ),
            E::NotElf => write!(
                f,
                "Multiboot1 header has no address fields (flag 16) and the image is not ELF"
            ),
            E::Elf(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for Multiboot1Error {}

impl From<ElfError> for Multiboot1Error {
    fn from(e: ElfError) -> Self {
        Multiboot1Error::Elf(e)
    }
}

/// A found, checksummed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    offset: usize,
    flags: u32,
}

/// What [`plan`] decided: the pieces, the entry point and whether a video
/// mode request was dropped.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    pub segments: Vec<Segment<'a>>,
    pub entry: u64,
    pub video_mode_ignored: bool,
}

/// The first 4-byte-aligned header with a valid checksum in the first 8 KiB.
fn find_header(image: &[u8]) -> Result<Header, Multiboot1Error> {
    let limit = image.len().min(HEADER_SEARCH_LIMIT);
    let mut bad = None;
    let mut offset = 0;
    while offset + HEADER_BYTES <= limit {
        if u32_at(image, offset) == Some(HEADER_MAGIC) {
            let flags = u32_at(image, offset + 4).unwrap_or(0);
            let checksum = u32_at(image, offset + 8).unwrap_or(0);
            if HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) == 0 {
                return Ok(Header { offset, flags });
            }
            bad.get_or_insert(Multiboot1Error::BadChecksum {
                offset,
                flags,
                checksum,
            });
        }
        offset += 4;
    }
    Err(bad.unwrap_or(Multiboot1Error::NoHeader))
}

/// Finds the header, checks it and works out what to load where.
pub(crate) fn plan(image: &[u8]) -> Result<Plan<'_>, Multiboot1Error> {
    let header = find_header(image)?;
    let unsupported = header.flags & REQUIRED_MASK & !HONOURED_REQUIRED;
    if unsupported != 0 {
        return Err(Multiboot1Error::UnsupportedFlags {
            flags: header.flags,
            unsupported,
        });
    }
    let video_mode_ignored = header.flags & FLAG_VIDEO != 0;
    let (segments, entry) = if header.flags & FLAG_ADDRESSES != 0 {
        plan_addresses(image, header.offset)?
    } else if is_elf(image) {
        ElfFile::parse(image)?.plan()?
    } else {
        return Err(Multiboot1Error::NotElf);
    };
    Ok(Plan {
        segments,
        entry,
        video_mode_ignored,
    })
}

/// The a.out kludge: one piece described by the header's address fields.
fn plan_addresses(image: &[u8], offset: usize) -> Result<(Vec<Segment<'_>>, u64), Multiboot1Error> {
    let available = image.len().min(HEADER_SEARCH_LIMIT) - offset;
    if available < HEADER_WITH_ADDRESSES {
        return Err(Multiboot1Error::HeaderTruncated {
            offset,
            need: HEADER_WITH_ADDRESSES,
            available,
        });
    }
    let field = |i: usize| u32_at(image, offset + HEADER_BYTES + 4 * i).unwrap_or(0);
    let (header_addr, load_addr, load_end_addr, bss_end_addr, entry) =
        (field(0), field(1), field(2), field(3), field(4));

    let before_header =
        header_addr
            .checked_sub(load_addr)
            .ok_or(Multiboot1Error::HeaderBelowLoadAddr {
                header_addr,
                load_addr,
            })?;
    let file_offset = (offset as u64)
        .checked_sub(u64::from(before_header))
        .ok_or(Multiboot1Error::LoadBeforeFileStart {
            header_offset: offset,
            header_addr,
            load_addr,
        })?;
    let len = if load_end_addr == 0 {
        image.len() as u64 - file_offset
    } else {
        u64::from(load_end_addr.checked_sub(load_addr).ok_or(
            Multiboot1Error::LoadEndBeforeLoadAddr {
                load_addr,
                load_end_addr,
            },
        )?)
    };
    let data = slice(image, file_offset, len).ok_or(Multiboot1Error::LoadPastEndOfFile {
        file_offset,
        len,
        file_len: image.len(),
    })?;
    let load_end = u64::from(load_addr) + len;
    let mem_size = if bss_end_addr == 0 {
        len
    } else if u64::from(bss_end_addr) < load_end {
        return Err(Multiboot1Error::BssEndBeforeLoadEnd {
            load_end,
            bss_end_addr,
        });
    } else {
        u64::from(bss_end_addr - load_addr)
    };
    let segment = Segment {
        gpa: u64::from(load_addr),
        data,
        mem_size,
    };
    if !segment.holds_code_at(u64::from(entry)) {
        return Err(Multiboot1Error::EntryNotLoaded {
            entry,
            load_addr,
            load_end,
        });
    }
    Ok((vec![segment], u64::from(entry)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header at `offset` of an image of `len` bytes; address fields
    /// written when `flags` has bit 16.
    pub(crate) fn image_with_header(
        len: usize,
        offset: usize,
        flags: u32,
        addrs: [u32; 5],
    ) -> Vec<u8> {
        let mut img = vec![0u8; len];
        let checksum = 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags);
        let mut words = vec![HEADER_MAGIC, flags, checksum];
        if flags & FLAG_ADDRESSES != 0 {
            words.extend_from_slice(&addrs);
        }
        for (i, w) in words.iter().enumerate() {
            img[offset + 4 * i..offset + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        img
    }

    #[test]
    fn finds_aligned_header_with_valid_checksum_only() {
        let img = image_with_header(0x100, 0x40, 0x3, [0; 5]);
        assert_eq!(
            find_header(&img),
            Ok(Header {
                offset: 0x40,
                flags: 3
            })
        );
        // Unaligned magic is not a header.
        let mut img = vec![0u8; 0x100];
        img[0x42..0x46].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        assert_eq!(find_header(&img), Err(Multiboot1Error::NoHeader));
        // A bad header earlier does not hide a good one later.
        let mut img = image_with_header(0x100, 0x40, 0x3, [0; 5]);
        img[0x10..0x14].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        assert_eq!(find_header(&img).unwrap().offset, 0x40);
    }

    #[test]
    fn header_must_be_inside_first_8k() {
        let img = image_with_header(0x3000, HEADER_SEARCH_LIMIT - 12, 0, [0; 5]);
        assert_eq!(find_header(&img).unwrap().offset, HEADER_SEARCH_LIMIT - 12);
        let img = image_with_header(0x3000, HEADER_SEARCH_LIMIT - 8, 0, [0; 5]);
        assert_eq!(find_header(&img), Err(Multiboot1Error::NoHeader));
        let img = image_with_header(0x3000, HEADER_SEARCH_LIMIT, 0, [0; 5]);
        assert_eq!(find_header(&img), Err(Multiboot1Error::NoHeader));
        // Magic at the very end of a short image, cut mid-header.
        let img = image_with_header(0x20, 0x10, 0, [0; 5]);
        assert_eq!(find_header(&img[..0x18]), Err(Multiboot1Error::NoHeader));
    }

    #[test]
    fn bad_checksum_is_reported() {
        let mut img = image_with_header(0x100, 0x8, 0x3, [0; 5]);
        img[0x10] ^= 1;
        assert!(matches!(
            plan(&img),
            Err(Multiboot1Error::BadChecksum {
                offset: 8,
                flags: 3,
                ..
            })
        ));
    }

    #[test]
    fn required_flags() {
        let img = image_with_header(0x100, 0, 1 << 3, [0; 5]);
        assert_eq!(
            plan(&img).unwrap_err(),
            Multiboot1Error::UnsupportedFlags {
                flags: 8,
                unsupported: 8
            }
        );
        let img = image_with_header(0x100, 0, 0x8001, [0; 5]);
        assert_eq!(
            plan(&img).unwrap_err(),
            Multiboot1Error::UnsupportedFlags {
                flags: 0x8001,
                unsupported: 0x8000
            }
        );
        // Video mode (and optional high bits) pass; this image is not ELF.
        let img = image_with_header(0x100, 0, 0x8000_0004, [0; 5]);
        assert_eq!(plan(&img).unwrap_err(), Multiboot1Error::NotElf);
    }

    #[test]
    fn address_fields() {
        // Header at file offset 0x20 says it sits at 0x100020: the file loads
        // from offset 0 at 0x100000.
        let f = FLAG_ADDRESSES;
        let a = |load: u32, end: u32, bss: u32, entry: u32| [0x10_0020, load, end, bss, entry];
        let img = image_with_header(
            0x400,
            0x20,
            f,
            a(0x10_0000, 0x10_0200, 0x10_1000, 0x10_0040),
        );
        let p = plan(&img).unwrap();
        assert_eq!(p.entry, 0x10_0040);
        assert_eq!(p.segments[0].gpa, 0x10_0000);
        assert_eq!(p.segments[0].data.len(), 0x200);
        assert_eq!(p.segments[0].mem_size, 0x1000);
        assert!(!p.video_mode_ignored);
        // load_end 0 = to the end of the file, bss 0 = none.
        let img = image_with_header(0x400, 0x20, f, a(0x10_0000, 0, 0, 0x10_0040));
        let p = plan(&img).unwrap();
        assert_eq!(
            (p.segments[0].data.len(), p.segments[0].mem_size),
            (0x400, 0x400)
        );
        // Loading starts partway into the file.
        let img = image_with_header(0x400, 0x20, f, [0x10_0020, 0x10_0010, 0, 0, 0x10_0010]);
        let p = plan(&img).unwrap();
        assert_eq!(p.segments[0].data.len(), 0x3F0);

        let err = |addrs| plan(&image_with_header(0x400, 0x20, f, addrs)).unwrap_err();
        assert!(matches!(
            err(a(0x10_0040, 0, 0, 0x10_0040)),
            Multiboot1Error::HeaderBelowLoadAddr { .. }
        ));
        assert!(matches!(
            err(a(0x10_0000 - 0x100, 0, 0, 0x10_0000)),
            Multiboot1Error::LoadBeforeFileStart { .. }
        ));
        assert!(matches!(
            err(a(0x10_0000, 0xF_0000, 0, 0x10_0000)),
            Multiboot1Error::LoadEndBeforeLoadAddr { .. }
        ));
        assert!(matches!(
            err(a(0x10_0000, 0x10_0401, 0, 0x10_0000)),
            Multiboot1Error::LoadPastEndOfFile { .. }
        ));
        assert!(matches!(
            err(a(0x10_0000, 0x10_0200, 0x10_0100, 0x10_0000)),
            Multiboot1Error::BssEndBeforeLoadEnd { .. }
        ));
        assert!(matches!(
            err(a(0x10_0000, 0x10_0200, 0x10_1000, 0x10_0200)),
            Multiboot1Error::EntryNotLoaded { .. }
        ));
        assert!(matches!(
            err(a(0x10_0000, 0x10_0200, 0, 0xFFFF_FFFF)),
            Multiboot1Error::EntryNotLoaded { .. }
        ));
        // Address fields cut by the end of the image.
        let img = image_with_header(0x40, 0x20, f, a(0x10_0000, 0, 0, 0x10_0000));
        assert_eq!(
            plan(&img[..0x30]).unwrap_err(),
            Multiboot1Error::HeaderTruncated {
                offset: 0x20,
                need: 32,
                available: 0x10
            }
        );
    }
}
