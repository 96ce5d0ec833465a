//! The boot information a multiboot1 or multiboot2 loader hands over, checked
//! and copied into one loader-independent [`BootInfo`].
//!
//! Every byte is read through [`PhysMemory`], so a malformed structure yields a
//! [`MultibootError`] naming the bad field and value, never an out-of-bounds
//! access. Strings are copied, so once parsed only the boot modules and (for
//! multiboot2) the info block holding the RSDP copy need to stay untouched:
//! [`BootInfo::reserved_ranges`] lists them.
//!
//! Layouts follow the Multiboot Specification 0.6.96 (section 3.3, "Boot
//! information format") and the Multiboot2 Specification 2.0 (section 3.6).

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::addr::{HostPhysAddr, PhysRange};
use crate::memmap::{MemoryKind, MemoryRegion, MAX_RAW_REGIONS};
use crate::phys_memory::{LeBytes, PhysMemory, PhysReadError};

/// EAX value from a multiboot1 loader.
pub const MB1_MAGIC: u32 = 0x2BAD_B002;
/// EAX value from a multiboot2 loader.
pub const MB2_MAGIC: u32 = 0x36D7_6289;
/// Most memory map entries accepted.
pub const MAX_MMAP_ENTRIES: usize = MAX_RAW_REGIONS;
/// Most boot modules accepted.
pub const MAX_MODULES: usize = 32;
/// Longest command line (kernel or module) accepted, without its NUL.
pub const MAX_CMDLINE_LEN: usize = 4096;
/// Longest boot loader name accepted, without its NUL.
pub const MAX_LOADER_NAME_LEN: usize = 256;
/// Largest multiboot2 info block accepted (GRUB's is a few KiB).
pub const MAX_MB2_INFO_SIZE: u32 = 1 << 20;

/// Size of the multiboot1 info structure up to the framebuffer fields' end.
const MB1_INFO_SIZE: u64 = 116;
/// The part of the multiboot1 info structure this parser reads (through
/// `boot_loader_name`).
const MB1_INFO_READ: usize = 68;
const MB1_FLAG_MEM: u32 = 1 << 0;
const MB1_FLAG_CMDLINE: u32 = 1 << 2;
const MB1_FLAG_MODS: u32 = 1 << 3;
const MB1_FLAG_MMAP: u32 = 1 << 6;
const MB1_FLAG_LOADER_NAME: u32 = 1 << 9;
/// A multiboot1 mmap entry after its `size` field: base, length, type.
const MB1_MMAP_ENTRY_MIN: u32 = 20;
/// A multiboot1 module entry: start, end, string, reserved.
const MB1_MODULE_SIZE: u64 = 16;

const MB2_TAG_END: u32 = 0;
const MB2_TAG_CMDLINE: u32 = 1;
const MB2_TAG_LOADER_NAME: u32 = 2;
const MB2_TAG_MODULE: u32 = 3;
const MB2_TAG_BASIC_MEMINFO: u32 = 4;
const MB2_TAG_MMAP: u32 = 6;
const MB2_TAG_ACPI_OLD: u32 = 14;
const MB2_TAG_ACPI_NEW: u32 = 15;
/// A multiboot2 mmap entry: base, length, type, reserved.
const MB2_MMAP_ENTRY_MIN: u32 = 24;

const RSDP_SIGNATURE: &[u8; 8] = b"RSD PTR ";
const RSDP_V1_LEN: usize = 20;
const RSDP_V2_LEN: usize = 36;

/// Which protocol the loader used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoaderKind {
    /// Multiboot 0.6.96.
    Multiboot1,
    /// Multiboot2.
    Multiboot2,
}

impl fmt::Display for LoaderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Multiboot1 => "multiboot1",
            Self::Multiboot2 => "multiboot2",
        })
    }
}

/// The BIOS's conventional and extended memory sizes, in KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BasicMemory {
    /// Memory below 1 MiB.
    pub lower_kib: u32,
    /// Memory from 1 MiB to the first hole.
    pub upper_kib: u32,
}

/// A boot module (a guest kernel, initrd, scenario blob...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// Where the loader put it (end exclusive).
    pub range: PhysRange,
    /// Its command line, empty if none.
    pub cmdline: String,
}

/// A copy of the ACPI RSDP from a multiboot2 tag 14 (ACPI 1.0) or 15 (2.0+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RsdpCopy {
    /// Physical address of the copy inside the info block: a valid argument
    /// for `acpi::AcpiTables::from_rsdp` while the info block is preserved.
    pub addr: HostPhysAddr,
    bytes: [u8; RSDP_V2_LEN],
    len: usize,
}

impl RsdpCopy {
    /// The RSDP bytes: 20 for revision 0, 36 for revision 2 and later.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The ACPI revision field (0 for ACPI 1.0, 2 for 2.0 and later).
    pub fn revision(&self) -> u8 {
        self.bytes[15]
    }

    /// Physical address of the RSDT.
    pub fn rsdt_address(&self) -> u32 {
        self.bytes.u32_at(16).unwrap_or(0)
    }

    /// Physical address of the XSDT, if this is an ACPI 2.0+ RSDP.
    pub fn xsdt_address(&self) -> Option<u64> {
        (self.len == RSDP_V2_LEN)
            .then(|| self.bytes.u64_at(24))
            .flatten()
    }
}

/// The boot information, checked and normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// Protocol used.
    pub loader: LoaderKind,
    /// Where the info structure itself sits (for multiboot1, only the fixed
    /// structure; the arrays and strings it points to are copied and may be
    /// reused).
    pub info_range: PhysRange,
    /// The loader's name, if it gave one.
    pub loader_name: Option<String>,
    /// The hypervisor's command line, if the loader gave one.
    pub cmdline: Option<String>,
    /// Legacy memory sizes, if given.
    pub basic_memory: Option<BasicMemory>,
    /// The memory map in loader order, zero-length entries dropped; never
    /// empty and holding at least one usable entry. Feed it to
    /// [`crate::MemoryMap::new`].
    pub memory_map: Vec<MemoryRegion>,
    /// Boot modules in loader order.
    pub modules: Vec<Module>,
    /// The RSDP copy (multiboot2 only; a multiboot1 loader passes none, so the
    /// RSDP must be searched for in the BIOS areas).
    pub rsdp: Option<RsdpCopy>,
}

/// Why the boot information is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultibootError {
    /// The loader's magic number is neither multiboot1's nor multiboot2's.
    BadMagic {
        /// EAX at entry.
        magic: u32,
    },
    /// A read through [`PhysMemory`] failed.
    Read {
        /// What was being read.
        what: &'static str,
        /// The failed read.
        source: PhysReadError,
    },
    /// A structure would wrap past the end of the address space.
    AddressOverflow {
        /// What was being located.
        what: &'static str,
        /// Its start.
        addr: u64,
        /// Its length.
        len: u64,
    },
    /// The multiboot2 `total_size` is too small for the header and end tag,
    /// or larger than [`MAX_MB2_INFO_SIZE`].
    InfoSizeInvalid {
        /// The value found.
        total_size: u32,
    },
    /// A multiboot2 tag runs past `total_size`.
    TagOverrun {
        /// Offset of the tag in the info block.
        offset: u32,
        /// Its type.
        tag_type: u32,
        /// Its size field.
        size: u32,
        /// The info block's size.
        total_size: u32,
    },
    /// A multiboot2 tag is smaller than its type requires.
    TagTooSmall {
        /// Offset of the tag in the info block.
        offset: u32,
        /// Its type.
        tag_type: u32,
        /// Its size field.
        size: u32,
        /// The smallest valid size.
        min: u32,
    },
    /// A multiboot2 tag that may appear once appears again.
    DuplicateTag {
        /// Offset of the second copy.
        offset: u32,
        /// Its type.
        tag_type: u32,
    },
    /// The multiboot2 tags end without an end tag (type 0).
    MissingEndTag {
        /// The info block's size.
        total_size: u32,
    },
    /// A multiboot2 memory map `entry_size` is below 24 or not a multiple of 8.
    MemoryMapEntrySize {
        /// The value found.
        entry_size: u32,
    },
    /// A multiboot2 memory map tag's entries are not a whole number of
    /// `entry_size` entries.
    MemoryMapTagLength {
        /// The tag's size field.
        size: u32,
        /// Its entry size.
        entry_size: u32,
    },
    /// A multiboot1 memory map entry's `size` field is below 20.
    MemoryMapEntryTooSmall {
        /// Entry index.
        index: usize,
        /// The value found.
        size: u32,
    },
    /// A multiboot1 memory map entry runs past `mmap_length`.
    MemoryMapEntryOverrun {
        /// Entry index.
        index: usize,
        /// Its offset from `mmap_addr`.
        offset: u32,
        /// The declared `mmap_length`.
        mmap_length: u32,
    },
    /// A memory map entry's `base + len` passes 2^64.
    MemoryMapEntryOverflow {
        /// Entry index.
        index: usize,
        /// Its base.
        base: u64,
        /// Its length.
        len: u64,
    },
    /// More memory map entries than [`MAX_MMAP_ENTRIES`].
    TooManyMemoryMapEntries {
        /// The limit.
        max: usize,
    },
    /// The loader gave no memory map.
    NoMemoryMap,
    /// The memory map has no usable region.
    NoUsableMemory {
        /// Entries in the map.
        entries: usize,
    },
    /// More modules than [`MAX_MODULES`].
    TooManyModules {
        /// Modules declared (multiboot1) or seen so far (multiboot2).
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A module ends before it starts.
    ModuleInvalid {
        /// Module index.
        index: usize,
        /// Its start.
        start: u32,
        /// Its end.
        end: u32,
    },
    /// A string has no NUL within its length limit.
    StringTooLong {
        /// Which string.
        what: &'static str,
        /// Where it starts.
        addr: u64,
        /// The limit, without the NUL.
        max: usize,
    },
    /// A multiboot2 string tag has no NUL inside the tag.
    UnterminatedString {
        /// Which string.
        what: &'static str,
        /// Offset of the tag in the info block.
        offset: u32,
    },
    /// A multiboot2 RSDP copy is malformed.
    RsdpInvalid {
        /// Tag type (14 or 15).
        tag_type: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for MultibootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadMagic { magic } => write!(
                f,
                "boot magic {magic:#010x} is neither multiboot1 ({MB1_MAGIC:#010x}) nor \
                 multiboot2 ({MB2_MAGIC:#010x})"
            ),
            Self::Read { what, source } => write!(f, "reading the {what}: {source}"),
            Self::AddressOverflow { what, addr, len } => write!(
                f,
                "the {what} (address {addr:#x}, length {len:#x}) wraps past the end of the \
                 address space"
            ),
            Self::InfoSizeInvalid { total_size } => write!(
                f,
                "multiboot2 info total_size {total_size:#x} is outside 0x10..={MAX_MB2_INFO_SIZE:#x}"
            ),
            Self::TagOverrun {
                offset,
                tag_type,
                size,
                total_size,
            } => write!(
                f,
                "multiboot2 tag type {tag_type} at offset {offset:#x} has size {size:#x}, which \
                 runs past the end of the info block ({total_size:#x} bytes)"
            ),
            Self::TagTooSmall {
                offset,
                tag_type,
                size,
                min,
            } => write!(
                f,
                "multiboot2 tag type {tag_type} at offset {offset:#x} has size {size:#x}; it \
                 needs at least {min:#x}"
            ),
            Self::DuplicateTag { offset, tag_type } => write!(
                f,
                "multiboot2 tag type {tag_type} appears a second time, at offset {offset:#x}"
            ),
            Self::MissingEndTag { total_size } => write!(
                f,
                "multiboot2 info block ({total_size:#x} bytes) has no end tag"
            ),
            Self::MemoryMapEntrySize { entry_size } => write!(
                f,
                "memory map entry_size {entry_size} is not a multiple of 8 of at least \
                 {MB2_MMAP_ENTRY_MIN}"
            ),
            Self::MemoryMapTagLength { size, entry_size } => write!(
                f,
                "memory map tag size {size:#x} is not 16 plus a whole number of {entry_size}-byte \
                 entries"
            ),
            Self::MemoryMapEntryTooSmall { index, size } => write!(
                f,
                "memory map entry {index} has size {size}; at least {MB1_MMAP_ENTRY_MIN} needed"
            ),
            Self::MemoryMapEntryOverrun {
                index,
                offset,
                mmap_length,
            } => write!(
                f,
                "memory map entry {index} at offset {offset:#x} runs past mmap_length \
                 {mmap_length:#x}"
            ),
            Self::MemoryMapEntryOverflow { index, base, len } => write!(
                f,
                "memory map entry {index} (base {base:#x}, len {len:#x}) wraps past the end of \
                 the address space"
            ),
            Self::TooManyMemoryMapEntries { max } => {
                write!(f, "the memory map has more than {max} entries")
            }
            Self::NoMemoryMap => f.write_str("the boot loader gave no memory map"),
            Self::NoUsableMemory { entries } => write!(
                f,
                "the memory map ({entries} entries) has no usable memory"
            ),
            Self::TooManyModules { count, max } => write!(
                f,
                "{count} boot modules given; at most {max} are supported"
            ),
            Self::ModuleInvalid { index, start, end } => write!(
                f,
                "module {index} ends ({end:#x}) before it starts ({start:#x})"
            ),
            Self::StringTooLong { what, addr, max } => write!(
                f,
                "the {what} at {addr:#x} has no NUL within {max} bytes"
            ),
            Self::UnterminatedString { what, offset } => write!(
                f,
                "the {what} in the multiboot2 tag at offset {offset:#x} has no terminating NUL"
            ),
            Self::RsdpInvalid { tag_type, reason } => {
                write!(f, "the ACPI RSDP copy in multiboot2 tag {tag_type} {reason}")
            }
        }
    }
}

impl BootInfo {
    /// Parses the boot information after checking the loader's `magic` (EAX
    /// at entry); `info_addr` is EBX at entry.
    pub fn parse(
        magic: u32,
        info_addr: HostPhysAddr,
        mem: &impl PhysMemory,
    ) -> Result<Self, MultibootError> {
        match magic {
            MB1_MAGIC => Self::parse_mb1(info_addr, mem),
            MB2_MAGIC => Self::parse_mb2(info_addr, mem),
            _ => Err(MultibootError::BadMagic { magic }),
        }
    }

    /// Parses a multiboot1 info structure at `info_addr`.
    pub fn parse_mb1(
        info_addr: HostPhysAddr,
        mem: &impl PhysMemory,
    ) -> Result<Self, MultibootError> {
        let info_range = checked_range("multiboot1 info structure", info_addr.0, MB1_INFO_SIZE)?;
        let mut raw = [0u8; MB1_INFO_READ];
        read(mem, "multiboot1 info structure", info_addr.0, &mut raw)?;
        let field = |offset: usize| raw.u32_at(offset).unwrap_or(0);
        let flags = field(0);

        let basic_memory = (flags & MB1_FLAG_MEM != 0).then(|| BasicMemory {
            lower_kib: field(4),
            upper_kib: field(8),
        });
        let cmdline = if flags & MB1_FLAG_CMDLINE != 0 {
            Some(read_c_string(
                mem,
                "command line",
                field(16),
                MAX_CMDLINE_LEN,
            )?)
        } else {
            None
        };
        let loader_name = if flags & MB1_FLAG_LOADER_NAME != 0 {
            Some(read_c_string(
                mem,
                "boot loader name",
                field(64),
                MAX_LOADER_NAME_LEN,
            )?)
        } else {
            None
        };

        let mut modules = Vec::new();
        if flags & MB1_FLAG_MODS != 0 {
            let (count, addr) = (field(20), field(24));
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            if count > MAX_MODULES {
                return Err(MultibootError::TooManyModules {
                    count,
                    max: MAX_MODULES,
                });
            }
            // `count` is at most MAX_MODULES, so the product is small.
            checked_range(
                "module list",
                u64::from(addr),
                count as u64 * MB1_MODULE_SIZE,
            )?;
            for index in 0..count {
                let mut entry = [0u8; MB1_MODULE_SIZE as usize];
                let entry_addr = u64::from(addr) + index as u64 * MB1_MODULE_SIZE;
                read(mem, "module list", entry_addr, &mut entry)?;
                let start = entry.u32_at(0).unwrap_or(0);
                let end = entry.u32_at(4).unwrap_or(0);
                let string = entry.u32_at(8).unwrap_or(0);
                let cmdline = if string == 0 {
                    String::new()
                } else {
                    read_c_string(mem, "module command line", string, MAX_CMDLINE_LEN)?
                };
                modules.push(module(index, start, end, cmdline)?);
            }
        }

        if flags & MB1_FLAG_MMAP == 0 {
            return Err(MultibootError::NoMemoryMap);
        }
        let memory_map = parse_mb1_mmap(mem, field(48), field(44))?;

        Ok(Self {
            loader: LoaderKind::Multiboot1,
            info_range,
            loader_name,
            cmdline,
            basic_memory,
            memory_map,
            modules,
            rsdp: None,
        })
    }

    /// Parses a multiboot2 info block at `info_addr`.
    pub fn parse_mb2(
        info_addr: HostPhysAddr,
        mem: &impl PhysMemory,
    ) -> Result<Self, MultibootError> {
        let mut header = [0u8; 8];
        read(mem, "multiboot2 info header", info_addr.0, &mut header)?;
        let total_size = header.u32_at(0).unwrap_or(0);
        if !(16..=MAX_MB2_INFO_SIZE).contains(&total_size) {
            return Err(MultibootError::InfoSizeInvalid { total_size });
        }
        let info_range =
            checked_range("multiboot2 info block", info_addr.0, u64::from(total_size))?;

        let mut info = Self {
            loader: LoaderKind::Multiboot2,
            info_range,
            loader_name: None,
            cmdline: None,
            basic_memory: None,
            memory_map: Vec::new(),
            modules: Vec::new(),
            rsdp: None,
        };
        let mut seen_mmap = false;
        let mut offset: u32 = 8;
        loop {
            // `offset` stays below MAX_MB2_INFO_SIZE + 8, so none of this wraps.
            if offset + 8 > total_size {
                return Err(MultibootError::MissingEndTag { total_size });
            }
            let tag = Tag::read(mem, info_addr, offset, total_size)?;
            match tag.tag_type {
                MB2_TAG_END => break,
                MB2_TAG_CMDLINE => {
                    tag.check_once(info.cmdline.is_some())?;
                    info.cmdline = Some(tag.string(mem, "command line", 0, MAX_CMDLINE_LEN)?);
                }
                MB2_TAG_LOADER_NAME => {
                    tag.check_once(info.loader_name.is_some())?;
                    info.loader_name =
                        Some(tag.string(mem, "boot loader name", 0, MAX_LOADER_NAME_LEN)?);
                }
                MB2_TAG_MODULE => {
                    if info.modules.len() == MAX_MODULES {
                        return Err(MultibootError::TooManyModules {
                            count: MAX_MODULES + 1,
                            max: MAX_MODULES,
                        });
                    }
                    let mut body = [0u8; 8];
                    tag.read_body(mem, 0, &mut body)?;
                    let (start, end) = (body.u32_at(0).unwrap_or(0), body.u32_at(4).unwrap_or(0));
                    let cmdline = tag.string(mem, "module command line", 8, MAX_CMDLINE_LEN)?;
                    info.modules
                        .push(module(info.modules.len(), start, end, cmdline)?);
                }
                MB2_TAG_BASIC_MEMINFO => {
                    tag.check_once(info.basic_memory.is_some())?;
                    let mut body = [0u8; 8];
                    tag.read_body(mem, 0, &mut body)?;
                    info.basic_memory = Some(BasicMemory {
                        lower_kib: body.u32_at(0).unwrap_or(0),
                        upper_kib: body.u32_at(4).unwrap_or(0),
                    });
                }
                MB2_TAG_MMAP => {
                    tag.check_once(seen_mmap)?;
                    seen_mmap = true;
                    info.memory_map = parse_mb2_mmap(mem, &tag)?;
                }
                MB2_TAG_ACPI_OLD | MB2_TAG_ACPI_NEW => {
                    let rsdp = tag.rsdp(mem)?;
                    // Prefer the ACPI 2.0+ copy; a second copy of one kind is
                    // a loader bug.
                    match info.rsdp {
                        Some(old) if old.len == rsdp.len => tag.check_once(true)?,
                        Some(old) if old.len > rsdp.len => {}
                        _ => info.rsdp = Some(rsdp),
                    }
                }
                _ => {}
            }
            // Tags start 8-byte aligned; `size` excludes the padding.
            offset = (offset + tag.size + 7) & !7;
        }

        if !seen_mmap {
            return Err(MultibootError::NoMemoryMap);
        }
        check_usable(&info.memory_map)?;
        Ok(info)
    }

    /// The physical ranges that must not be reused while this `BootInfo` is
    /// live: the info structure (which holds the RSDP copy for multiboot2) and
    /// every boot module.
    pub fn reserved_ranges(&self) -> Vec<PhysRange> {
        core::iter::once(self.info_range)
            .chain(self.modules.iter().map(|m| m.range))
            .collect()
    }
}

/// One multiboot2 tag's header, located and bounds-checked.
struct Tag {
    /// Physical address of the tag.
    addr: u64,
    offset: u32,
    tag_type: u32,
    size: u32,
}

impl Tag {
    fn read(
        mem: &impl PhysMemory,
        info_addr: HostPhysAddr,
        offset: u32,
        total_size: u32,
    ) -> Result<Self, MultibootError> {
        // Inside the info block, whose range was checked not to wrap.
        let addr = info_addr.0 + u64::from(offset);
        let mut header = [0u8; 8];
        read(mem, "multiboot2 tag header", addr, &mut header)?;
        let tag_type = header.u32_at(0).unwrap_or(0);
        let size = header.u32_at(4).unwrap_or(0);
        let min = match tag_type {
            MB2_TAG_CMDLINE | MB2_TAG_LOADER_NAME => 9,
            MB2_TAG_MODULE => 17,
            MB2_TAG_BASIC_MEMINFO | MB2_TAG_MMAP => 16,
            MB2_TAG_ACPI_OLD => 8 + RSDP_V1_LEN as u32,
            MB2_TAG_ACPI_NEW => 8 + RSDP_V2_LEN as u32,
            _ => 8,
        };
        if size < min {
            return Err(MultibootError::TagTooSmall {
                offset,
                tag_type,
                size,
                min,
            });
        }
        if size > total_size - offset {
            return Err(MultibootError::TagOverrun {
                offset,
                tag_type,
                size,
                total_size,
            });
        }
        Ok(Self {
            addr,
            offset,
            tag_type,
            size,
        })
    }

    fn check_once(&self, already_seen: bool) -> Result<(), MultibootError> {
        if already_seen {
            Err(MultibootError::DuplicateTag {
                offset: self.offset,
                tag_type: self.tag_type,
            })
        } else {
            Ok(())
        }
    }

    /// Reads `buf.len()` bytes at `at` past the tag header; the caller keeps
    /// them inside the tag (the minimum sizes above guarantee it).
    fn read_body(
        &self,
        mem: &impl PhysMemory,
        at: u32,
        buf: &mut [u8],
    ) -> Result<(), MultibootError> {
        debug_assert!(8 + at as usize + buf.len() <= self.size as usize);
        read(mem, "multiboot2 tag", self.addr + 8 + u64::from(at), buf)
    }

    /// The NUL-terminated string at `at` past the header, which must end
    /// inside the tag.
    fn string(
        &self,
        mem: &impl PhysMemory,
        what: &'static str,
        at: u32,
        max: usize,
    ) -> Result<String, MultibootError> {
        let len = (self.size - 8 - at) as usize;
        if len > max + 1 {
            // Only the first max + 1 bytes are read; no NUL there is too long.
            let mut buf = alloc::vec![0u8; max + 1];
            self.read_body(mem, at, &mut buf)?;
            return match buf.iter().position(|&b| b == 0) {
                Some(n) => Ok(bytes_to_string(&buf[..n])),
                None => Err(MultibootError::StringTooLong {
                    what,
                    addr: self.addr + 8 + u64::from(at),
                    max,
                }),
            };
        }
        let mut buf = alloc::vec![0u8; len];
        self.read_body(mem, at, &mut buf)?;
        match buf.iter().position(|&b| b == 0) {
            Some(n) => Ok(bytes_to_string(&buf[..n])),
            None => Err(MultibootError::UnterminatedString {
                what,
                offset: self.offset,
            }),
        }
    }

    fn rsdp(&self, mem: &impl PhysMemory) -> Result<RsdpCopy, MultibootError> {
        let invalid = |reason| MultibootError::RsdpInvalid {
            tag_type: self.tag_type,
            reason,
        };
        let mut bytes = [0u8; RSDP_V2_LEN];
        let len = if self.tag_type == MB2_TAG_ACPI_NEW {
            RSDP_V2_LEN
        } else {
            RSDP_V1_LEN
        };
        self.read_body(mem, 0, &mut bytes[..len])?;
        if &bytes[..8] != RSDP_SIGNATURE {
            return Err(invalid("does not start with \"RSD PTR \""));
        }
        if checksum(&bytes[..RSDP_V1_LEN]) != 0 {
            return Err(invalid("has a bad checksum over its first 20 bytes"));
        }
        if len == RSDP_V2_LEN {
            if bytes[15] < 2 {
                return Err(invalid("has revision below 2 in an ACPI 2.0+ tag"));
            }
            if bytes.u32_at(20).unwrap_or(0) < RSDP_V2_LEN as u32 {
                return Err(invalid("declares a length below 36"));
            }
            if checksum(&bytes) != 0 {
                return Err(invalid("has a bad extended checksum"));
            }
        }
        Ok(RsdpCopy {
            addr: HostPhysAddr(self.addr + 8),
            bytes,
            len,
        })
    }
}

fn parse_mb1_mmap(
    mem: &impl PhysMemory,
    mmap_addr: u32,
    mmap_length: u32,
) -> Result<Vec<MemoryRegion>, MultibootError> {
    checked_range("memory map", u64::from(mmap_addr), u64::from(mmap_length))?;
    let mut map = Vec::new();
    let mut offset: u32 = 0;
    let mut index = 0;
    while offset < mmap_length {
        let overrun = MultibootError::MemoryMapEntryOverrun {
            index,
            offset,
            mmap_length,
        };
        if mmap_length - offset < 4 {
            return Err(overrun);
        }
        let addr = u64::from(mmap_addr) + u64::from(offset);
        let mut size = [0u8; 4];
        read(mem, "memory map", addr, &mut size)?;
        let size = u32::from_le_bytes(size);
        if size < MB1_MMAP_ENTRY_MIN {
            return Err(MultibootError::MemoryMapEntryTooSmall { index, size });
        }
        if size > mmap_length - offset - 4 {
            return Err(overrun);
        }
        let mut entry = [0u8; MB1_MMAP_ENTRY_MIN as usize];
        read(mem, "memory map", addr + 4, &mut entry)?;
        push_entry(&mut map, index, &entry)?;
        // Checked above to stay within mmap_length.
        offset += 4 + size;
        index += 1;
    }
    check_usable(&map)?;
    Ok(map)
}

fn parse_mb2_mmap(mem: &impl PhysMemory, tag: &Tag) -> Result<Vec<MemoryRegion>, MultibootError> {
    let mut head = [0u8; 8];
    tag.read_body(mem, 0, &mut head)?;
    let entry_size = head.u32_at(0).unwrap_or(0);
    let entry_version = head.u32_at(4).unwrap_or(0);
    if entry_size < MB2_MMAP_ENTRY_MIN || entry_size % 8 != 0 {
        return Err(MultibootError::MemoryMapEntrySize { entry_size });
    }
    if entry_version != 0 {
        log::warn!("multiboot2 memory map entry_version is {entry_version}, expected 0");
    }
    let entries_len = tag.size - 16;
    if entries_len % entry_size != 0 {
        return Err(MultibootError::MemoryMapTagLength {
            size: tag.size,
            entry_size,
        });
    }
    let count = (entries_len / entry_size) as usize;
    if count > MAX_MMAP_ENTRIES {
        return Err(MultibootError::TooManyMemoryMapEntries {
            max: MAX_MMAP_ENTRIES,
        });
    }
    let mut map = Vec::with_capacity(count);
    for index in 0..count {
        let mut entry = [0u8; MB2_MMAP_ENTRY_MIN as usize];
        // index < count, so this stays inside the tag.
        tag.read_body(mem, 8 + index as u32 * entry_size, &mut entry)?;
        push_entry(&mut map, index, &entry[..20])?;
    }
    Ok(map)
}

/// Appends the entry `base: u64, len: u64, type: u32` (both protocols share
/// this layout), dropping it if empty.
fn push_entry(
    map: &mut Vec<MemoryRegion>,
    index: usize,
    entry: &[u8],
) -> Result<(), MultibootError> {
    let base = entry.u64_at(0).unwrap_or(0);
    let len = entry.u64_at(8).unwrap_or(0);
    let kind = MemoryKind::from_e820(entry.u32_at(16).unwrap_or(0));
    if len == 0 {
        log::warn!("memory map entry {index} (base {base:#x}) is empty; ignored");
        return Ok(());
    }
    let range = PhysRange::from_base_len(HostPhysAddr(base), len)
        .ok_or(MultibootError::MemoryMapEntryOverflow { index, base, len })?;
    if map.len() == MAX_MMAP_ENTRIES {
        return Err(MultibootError::TooManyMemoryMapEntries {
            max: MAX_MMAP_ENTRIES,
        });
    }
    map.push(MemoryRegion::new(range, kind));
    Ok(())
}

fn check_usable(map: &[MemoryRegion]) -> Result<(), MultibootError> {
    if map.iter().any(|r| r.kind == MemoryKind::Usable) {
        Ok(())
    } else {
        Err(MultibootError::NoUsableMemory { entries: map.len() })
    }
}

fn module(index: usize, start: u32, end: u32, cmdline: String) -> Result<Module, MultibootError> {
    if end < start {
        return Err(MultibootError::ModuleInvalid { index, start, end });
    }
    Ok(Module {
        range: PhysRange::new(HostPhysAddr(start.into()), HostPhysAddr(end.into())),
        cmdline,
    })
}

fn read(
    mem: &impl PhysMemory,
    what: &'static str,
    addr: u64,
    buf: &mut [u8],
) -> Result<(), MultibootError> {
    mem.read(HostPhysAddr(addr), buf)
        .map_err(|source| MultibootError::Read { what, source })
}

fn checked_range(what: &'static str, addr: u64, len: u64) -> Result<PhysRange, MultibootError> {
    PhysRange::from_base_len(HostPhysAddr(addr), len).ok_or(MultibootError::AddressOverflow {
        what,
        addr,
        len,
    })
}

/// Reads the NUL-terminated string at `addr`, at most `max` bytes before the NUL.
fn read_c_string(
    mem: &impl PhysMemory,
    what: &'static str,
    addr: u32,
    max: usize,
) -> Result<String, MultibootError> {
    let addr = u64::from(addr);
    let mut bytes = Vec::new();
    // Byte by byte: the string may end right before unreadable memory.
    for i in 0..=max as u64 {
        let mut b = [0u8];
        read(mem, what, addr + i, &mut b)?;
        if b[0] == 0 {
            return Ok(bytes_to_string(&bytes));
        }
        bytes.push(b[0]);
    }
    Err(MultibootError::StringTooLong { what, addr, max })
}

/// Loader strings are bytes; anything that is not UTF-8 becomes U+FFFD.
fn bytes_to_string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b))
}

#[cfg(test)]
mod tests;
