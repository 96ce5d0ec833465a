//! The bzImage setup header (Linux boot protocol 2.12 and later), read by
//! offset from the image and checked before anything is placed.
//!
//! Offsets and meanings are those of Documentation/arch/x86/boot.rst ("The
//! Real-Mode Kernel Header"): every field is at the same offset in the image
//! and in the zero page, which is why the whole header is copied across.

use core::fmt;

use crate::bytes::{u16_at, u32_at, u64_at};

/// Where the setup header starts, in the image and in the zero page.
pub(crate) const SETUP_HEADER_START: usize = 0x1F1;
/// "HdrS", little-endian at 0x202.
pub const HDRS_MAGIC: u32 = 0x5372_6448;
/// Oldest boot protocol accepted: 2.12 is the first with `xloadflags`, the
/// only place a kernel advertises its 64-bit entry point.
pub const MIN_PROTOCOL: u16 = 0x020C;
/// `xloadflags` bit 0: the kernel has the 64-bit entry at load address + 0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// `loadflags` bit 0: the protected-mode kernel is loaded high (a bzImage).
pub const LOADED_HIGH: u8 = 1 << 0;
/// `loadflags` bit 7: `heap_end_ptr` is valid (set by the loader).
pub const CAN_USE_HEAP: u8 = 1 << 7;
/// Most setup sectors accepted: the real-mode code (boot sector + setup) is
/// at most 32 KiB by the protocol.
pub const MAX_SETUP_SECTS: u8 = 63;
/// Load address when the header has no `pref_address` (16 MiB, the x86_64
/// kernel's default `LOAD_PHYSICAL_ADDR`).
pub const DEFAULT_LOAD_ADDRESS: u64 = 0x100_0000;
/// Offset of the 64-bit entry point from the load address.
pub const ENTRY_64_OFFSET: u64 = 0x200;

const SETUP_SECTS: usize = 0x1F1;
const JUMP_OFFSET: usize = 0x201;
const HEADER: usize = 0x202;
const VERSION: usize = 0x206;
const LOADFLAGS: usize = 0x211;
const INITRD_ADDR_MAX: usize = 0x22C;
const KERNEL_ALIGNMENT: usize = 0x230;
const RELOCATABLE_KERNEL: usize = 0x234;
const XLOADFLAGS: usize = 0x236;
const CMDLINE_SIZE: usize = 0x238;
const PREF_ADDRESS: usize = 0x258;
const INIT_SIZE: usize = 0x260;
/// End of the last field read (`init_size`): the header must reach it.
pub(crate) const HEADER_END_MIN: usize = INIT_SIZE + 4;
/// Bytes per setup sector.
const SECTOR: usize = 512;

/// Why an image is not a bzImage this loader can start in 64-bit mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The image ends before a field the loader needs.
    ImageTooShort { len: usize, min: usize },
    /// No "HdrS" at 0x202: not a Linux kernel, or older than protocol 2.00.
    BadMagic { found: u32 },
    /// The boot protocol predates the 64-bit entry advertisement.
    ProtocolTooOld { version: u16, min: u16 },
    /// The jump at 0x200, which also gives the header's length, ends it
    /// before `init_size` or jumps backwards.
    BadHeaderEnd { jump: u8 },
    /// `loadflags` lacks LOADED_HIGH: a zImage, not a bzImage.
    NotBzImage { loadflags: u8 },
    /// `xloadflags` lacks XLF_KERNEL_64: no 64-bit entry point.
    No64BitEntry { xloadflags: u16 },
    /// More setup sectors than the 32 KiB real-mode limit.
    SetupTooLarge { setup_sects: u8, max: u8 },
    /// A relocatable kernel whose `kernel_alignment` is not a power of two.
    BadAlignment { kernel_alignment: u32 },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HeaderError::ImageTooShort { len, min } => write!(
                f,
                "image of {len:#x} bytes is too short: a bzImage with this header needs at least {min:#x}"
            ),
            HeaderError::BadMagic { found } => write!(
                f,
                "no \"HdrS\" setup header at offset 0x202 (found {found:#010x}): not a bzImage"
            ),
            HeaderError::ProtocolTooOld { version, min } => write!(
                f,
                "boot protocol {}.{:02} is older than {}.{:02}, the first that can announce a 64-bit entry",
                version >> 8,
                version & 0xFF,
                min >> 8,
                min & 0xFF
            ),
            HeaderError::BadHeaderEnd { jump } => write!(
                f,
                "the jump at 0x200 (offset {jump:#04x}) ends the setup header before {HEADER_END_MIN:#x} or jumps backwards"
            ),
            HeaderError::NotBzImage { loadflags } => write!(
                f,
                "loadflags {loadflags:#04x} lacks LOADED_HIGH: a zImage, which is not supported"
            ),
            HeaderError::No64BitEntry { xloadflags } => write!(
                f,
                "xloadflags {xloadflags:#06x} lacks XLF_KERNEL_64: the kernel has no 64-bit entry point"
            ),
            HeaderError::SetupTooLarge { setup_sects, max } => write!(
                f,
                "setup_sects {setup_sects} is above {max} (the real-mode code is at most 32 KiB)"
            ),
            HeaderError::BadAlignment { kernel_alignment } => write!(
                f,
                "relocatable kernel with kernel_alignment {kernel_alignment:#x}, not a power of two"
            ),
        }
    }
}

impl core::error::Error for HeaderError {}

/// The header fields the loader uses, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SetupHeader {
    /// Boot protocol, `major << 8 | minor`.
    pub version: u16,
    /// Exclusive end offset of the setup header (`0x202 + jump`).
    pub header_end: usize,
    /// Setup sectors after the boot sector (0 in the image already read as 4).
    pub setup_sects: u8,
    pub loadflags: u8,
    /// Highest address the initrd's last byte may occupy.
    pub initrd_addr_max: u32,
    pub kernel_alignment: u32,
    pub relocatable: bool,
    pub xloadflags: u16,
    /// Longest command line, without its NUL.
    pub cmdline_size: u32,
    /// Preferred load address; 0 if the kernel gives none.
    pub pref_address: u64,
    /// Bytes from the load address the kernel needs during decompression.
    pub init_size: u32,
}

impl SetupHeader {
    /// Reads and checks the header of `image`, including that the image
    /// holds the protected-mode kernel up to and past its 64-bit entry.
    pub(crate) fn parse(image: &[u8]) -> Result<Self, HeaderError> {
        let too_short = |min: usize| HeaderError::ImageTooShort {
            len: image.len(),
            min,
        };
        if image.len() < HEADER_END_MIN {
            return Err(too_short(HEADER_END_MIN));
        }
        // The length check above makes every read below in bounds; the
        // `ok_or` arms are never taken.
        let u8_at = |off: usize| image.get(off).copied().ok_or(too_short(off + 1));
        let u16f = |off: usize| u16_at(image, off).ok_or(too_short(off + 2));
        let u32f = |off: usize| u32_at(image, off).ok_or(too_short(off + 4));

        let magic = u32f(HEADER)?;
        if magic != HDRS_MAGIC {
            return Err(HeaderError::BadMagic { found: magic });
        }
        let version = u16f(VERSION)?;
        if version < MIN_PROTOCOL {
            return Err(HeaderError::ProtocolTooOld {
                version,
                min: MIN_PROTOCOL,
            });
        }
        let jump = u8_at(JUMP_OFFSET)?;
        let header_end = HEADER + usize::from(jump);
        if jump >= 0x80 || header_end < HEADER_END_MIN {
            return Err(HeaderError::BadHeaderEnd { jump });
        }
        let loadflags = u8_at(LOADFLAGS)?;
        if loadflags & LOADED_HIGH == 0 {
            return Err(HeaderError::NotBzImage { loadflags });
        }
        let xloadflags = u16f(XLOADFLAGS)?;
        if xloadflags & XLF_KERNEL_64 == 0 {
            return Err(HeaderError::No64BitEntry { xloadflags });
        }
        let setup_sects = match u8_at(SETUP_SECTS)? {
            0 => 4,
            n => n,
        };
        if setup_sects > MAX_SETUP_SECTS {
            return Err(HeaderError::SetupTooLarge {
                setup_sects,
                max: MAX_SETUP_SECTS,
            });
        }
        let relocatable = u8_at(RELOCATABLE_KERNEL)? != 0;
        let kernel_alignment = u32f(KERNEL_ALIGNMENT)?;
        if relocatable && !kernel_alignment.is_power_of_two() {
            return Err(HeaderError::BadAlignment { kernel_alignment });
        }
        let header = SetupHeader {
            version,
            header_end,
            setup_sects,
            loadflags,
            initrd_addr_max: u32f(INITRD_ADDR_MAX)?,
            kernel_alignment,
            relocatable,
            xloadflags,
            cmdline_size: u32f(CMDLINE_SIZE)?,
            pref_address: u64_at(image, PREF_ADDRESS).ok_or(too_short(PREF_ADDRESS + 8))?,
            init_size: u32f(INIT_SIZE)?,
        };
        // The protected-mode kernel must hold its 64-bit entry point.
        let min = header.setup_len() + ENTRY_64_OFFSET as usize + 1;
        if image.len() < min {
            return Err(too_short(min));
        }
        Ok(header)
    }

    /// Bytes of real-mode code (boot sector + setup) before the
    /// protected-mode kernel in the file.
    pub(crate) fn setup_len(&self) -> usize {
        (usize::from(self.setup_sects) + 1) * SECTOR
    }

    /// Where the protected-mode kernel goes: `pref_address` (or 16 MiB if
    /// none), rounded up to `kernel_alignment` for a relocatable kernel. A
    /// non-relocatable kernel runs at `pref_address` whatever the loader
    /// does, so it is put exactly there. `None` if rounding overflows.
    pub(crate) fn load_address(&self) -> Option<u64> {
        let pref = match self.pref_address {
            0 => DEFAULT_LOAD_ADDRESS,
            p => p,
        };
        if self.relocatable {
            pref.checked_next_multiple_of(u64::from(self.kernel_alignment))
        } else {
            Some(pref)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Fields of a synthetic bzImage header; [`Fields::image`] lays them out
    /// at the protocol's offsets.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Fields {
        pub setup_sects: u8,
        pub version: u16,
        pub jump: u8,
        pub loadflags: u8,
        pub initrd_addr_max: u32,
        pub kernel_alignment: u32,
        pub relocatable: u8,
        pub xloadflags: u16,
        pub cmdline_size: u32,
        pub pref_address: u64,
        pub init_size: u32,
        /// Bytes of protected-mode kernel after the setup sectors.
        pub payload_len: usize,
    }

    impl Default for Fields {
        /// What a current x86_64 distribution kernel's header says.
        fn default() -> Self {
            Fields {
                setup_sects: 3,
                version: 0x020F,
                jump: 0x6A, // header ends at 0x26C, as in Linux 6.x
                loadflags: LOADED_HIGH,
                initrd_addr_max: 0x7FFF_FFFF,
                kernel_alignment: 0x20_0000,
                relocatable: 1,
                xloadflags: 0x7F & !0x2, // 64-bit entry, EFI bits; not "above 4G"
                cmdline_size: 2047,
                pref_address: 0x100_0000,
                init_size: 0x40_0000,
                payload_len: 0x3000,
            }
        }
    }

    impl Fields {
        /// The image: boot sector with the header, setup sectors, then a
        /// patterned protected-mode kernel (its first byte is 0xF4 and the
        /// byte at the 64-bit entry 0xE9).
        pub(crate) fn image(&self) -> Vec<u8> {
            let sects = if self.setup_sects == 0 {
                4
            } else {
                self.setup_sects
            };
            let setup_len = (usize::from(sects) + 1) * SECTOR;
            let mut img = vec![0u8; setup_len + self.payload_len];
            let mut put = |off: usize, bytes: &[u8]| {
                if let Some(dst) = img.get_mut(off..off + bytes.len()) {
                    dst.copy_from_slice(bytes);
                }
            };
            put(SETUP_SECTS, &[self.setup_sects]);
            put(0x1FE, &0xAA55u16.to_le_bytes());
            put(0x200, &[0xEB, self.jump]);
            put(HEADER, &HDRS_MAGIC.to_le_bytes());
            put(VERSION, &self.version.to_le_bytes());
            put(LOADFLAGS, &[self.loadflags]);
            put(INITRD_ADDR_MAX, &self.initrd_addr_max.to_le_bytes());
            put(KERNEL_ALIGNMENT, &self.kernel_alignment.to_le_bytes());
            put(RELOCATABLE_KERNEL, &[self.relocatable]);
            put(0x235, &[21]); // min_alignment
            put(XLOADFLAGS, &self.xloadflags.to_le_bytes());
            put(CMDLINE_SIZE, &self.cmdline_size.to_le_bytes());
            put(PREF_ADDRESS, &self.pref_address.to_le_bytes());
            put(INIT_SIZE, &self.init_size.to_le_bytes());
            // A stale setup_data pointer the loader must clear.
            put(0x250, &0xDEAD_BEEF_0000u64.to_le_bytes());
            for (i, b) in img[setup_len..].iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(7) | 1;
            }
            if let Some(b) = img.get_mut(setup_len) {
                *b = 0xF4;
            }
            if let Some(b) = img.get_mut(setup_len + ENTRY_64_OFFSET as usize) {
                *b = 0xE9;
            }
            img
        }
    }

    #[test]
    fn distribution_like_header() {
        let h = SetupHeader::parse(&Fields::default().image()).unwrap();
        assert_eq!(h.version, 0x020F);
        assert_eq!(h.header_end, 0x26C);
        assert_eq!(h.setup_len(), 0x800);
        assert_eq!(h.cmdline_size, 2047);
        assert_eq!(h.initrd_addr_max, 0x7FFF_FFFF);
        assert_eq!(h.init_size, 0x40_0000);
        assert_eq!(h.load_address(), Some(0x100_0000));
    }

    #[test]
    fn setup_sects_zero_means_four() {
        let f = Fields {
            setup_sects: 0,
            ..Fields::default()
        };
        let h = SetupHeader::parse(&f.image()).unwrap();
        assert_eq!(h.setup_sects, 4);
        assert_eq!(h.setup_len(), 5 * 512);
    }

    #[test]
    fn load_address_honours_alignment_and_relocatability() {
        let base = SetupHeader::parse(&Fields::default().image()).unwrap();
        let at = |pref_address, kernel_alignment, relocatable| {
            SetupHeader {
                pref_address,
                kernel_alignment,
                relocatable,
                ..base
            }
            .load_address()
        };
        assert_eq!(at(0, 0x20_0000, true), Some(0x100_0000));
        assert_eq!(at(0x100_1000, 0x20_0000, true), Some(0x120_0000));
        assert_eq!(at(0x100_1000, 0x20_0000, false), Some(0x100_1000));
        assert_eq!(at(0x200_0000, 0x1000, true), Some(0x200_0000));
        assert_eq!(at(u64::MAX - 5, 0x1000, true), None);
    }

    fn parse_with(f: Fields) -> Result<SetupHeader, HeaderError> {
        SetupHeader::parse(&f.image())
    }

    #[test]
    fn hostile_headers_are_named() {
        let d = Fields::default();
        let mut img = d.image();
        img[HEADER] = b'X';
        assert!(matches!(
            SetupHeader::parse(&img),
            Err(HeaderError::BadMagic { found }) if found & 0xFF == u32::from(b'X')
        ));
        assert_eq!(
            parse_with(Fields {
                version: 0x0206,
                ..d
            }),
            Err(HeaderError::ProtocolTooOld {
                version: 0x0206,
                min: 0x020C
            })
        );
        assert_eq!(
            parse_with(Fields { jump: 0x61, ..d }),
            Err(HeaderError::BadHeaderEnd { jump: 0x61 })
        );
        assert_eq!(
            parse_with(Fields { jump: 0xF0, ..d }),
            Err(HeaderError::BadHeaderEnd { jump: 0xF0 })
        );
        assert_eq!(
            parse_with(Fields { loadflags: 0, ..d }),
            Err(HeaderError::NotBzImage { loadflags: 0 })
        );
        assert_eq!(
            parse_with(Fields {
                xloadflags: 0x2,
                ..d
            }),
            Err(HeaderError::No64BitEntry { xloadflags: 0x2 })
        );
        assert_eq!(
            parse_with(Fields {
                setup_sects: 64,
                ..d
            }),
            Err(HeaderError::SetupTooLarge {
                setup_sects: 64,
                max: 63
            })
        );
        assert_eq!(
            parse_with(Fields {
                kernel_alignment: 0x30_0000,
                ..d
            }),
            Err(HeaderError::BadAlignment {
                kernel_alignment: 0x30_0000
            })
        );
        assert_eq!(
            parse_with(Fields {
                kernel_alignment: 0,
                ..d
            }),
            Err(HeaderError::BadAlignment {
                kernel_alignment: 0
            })
        );
        // A non-relocatable kernel's alignment is not used.
        assert!(parse_with(Fields {
            kernel_alignment: 0,
            relocatable: 0,
            ..d
        })
        .is_ok());
    }

    #[test]
    fn image_must_hold_header_and_entry() {
        let img = Fields::default().image();
        assert_eq!(
            SetupHeader::parse(&img[..0x200]),
            Err(HeaderError::ImageTooShort {
                len: 0x200,
                min: HEADER_END_MIN
            })
        );
        // Setup (0x800 bytes) plus the entry byte at +0x200.
        assert_eq!(
            SetupHeader::parse(&img[..0xA00]),
            Err(HeaderError::ImageTooShort {
                len: 0xA00,
                min: 0xA01
            })
        );
        assert!(SetupHeader::parse(&img[..0xA01]).is_ok());
        // 63 setup sectors but a short file.
        let f = Fields {
            setup_sects: 63,
            payload_len: 0,
            ..Fields::default()
        };
        assert_eq!(
            parse_with(f),
            Err(HeaderError::ImageTooShort {
                len: 64 * 512,
                min: 64 * 512 + 0x201
            })
        );
    }

    #[test]
    fn messages_name_the_values() {
        use alloc::string::ToString;
        assert_eq!(
            HeaderError::ProtocolTooOld {
                version: 0x0206,
                min: MIN_PROTOCOL
            }
            .to_string(),
            "boot protocol 2.06 is older than 2.12, the first that can announce a 64-bit entry"
        );
        assert_eq!(
            HeaderError::BadMagic { found: 0 }.to_string(),
            "no \"HdrS\" setup header at offset 0x202 (found 0x00000000): not a bzImage"
        );
    }
}
