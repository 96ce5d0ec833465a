//! PVH boot of ELF `vmlinux` kernels: Xen's direct-boot ABI for HVM guests
//! (xen/include/public/arch-x86/hvm/start_info.h, docs/misc/pvh.pandoc),
//! which Linux implements (`CONFIG_PVH`) as do other kernels.
//!
//! The image is an ELF64 x86_64 `ET_EXEC` file. Its `PT_LOAD` segments are
//! copied to `p_paddr` exactly as for a plain ELF64 kernel (the same checks:
//! inside RAM, apart from each other and from the loader's low areas); its
//! `e_entry` is not used. The entry point is the 32-bit physical address in
//! the Xen ELF note of type [`XEN_ELFNOTE_PHYS32_ENTRY`] (name `"Xen\0"`) of
//! a `PT_NOTE` segment: a 4-byte descriptor, or an 8-byte one whose high
//! half is zero (Linux writes a pointer-sized one). Every note of every
//! `PT_NOTE` segment is read with bounds checks, and a malformed one makes
//! the image unusable ([`NoteError`]).
//!
//! Guest-physical layout (the low pieces sit where the bzImage loader puts
//! its zero page and command line, in e820 RAM below the EBDA; the kernel
//! copies what it needs before it reuses that memory):
//!
//! | range | what |
//! |---|---|
//! | [`PVH_START_INFO_GPA`] (0x7000), 56 bytes | `struct hvm_start_info`, version 1 |
//! | [`PVH_MODLIST_GPA`] (0x7040), 32 bytes | one `struct hvm_modlist_entry`: the initrd |
//! | [`PVH_MEMMAP_GPA`] (0x7080), up to 128 × 24 bytes | `struct hvm_memmap_table_entry` table |
//! | [`PVH_CMDLINE_GPA`] (0x20000), up to 64 KiB | command line, NUL-terminated |
//! | `p_paddr` of each `PT_LOAD` segment | the kernel |
//! | top of RAM below 4 GiB, 4 KiB aligned | initrd |
//!
//! The memory map is [`e820_map_of`](crate::e820_map_of) of the [`VmLayout`], the one a bzImage
//! guest of the same VM gets; `rsdp_paddr` is [`VmLayout::acpi_rsdp`] (0
//! without ACPI tables). The initrd is placed as the bzImage loader places
//! it: the highest 4 KiB-aligned range of usable RAM above 1 MiB and below
//! the end of RAM and 4 GiB that no kernel segment touches.
//!
//! Entry contract ([`PvhBoot::entry_state`]): 32-bit protected mode, paging
//! off, flat 4 GiB code and data segments, a busy 32-bit TSS in TR,
//! interrupts off, `EIP` = [`PvhBoot::entry`], `EBX` = [`PvhBoot::start_info`],
//! every other general-purpose register 0.
//!
//! Everything is checked before the first byte is written: on error guest
//! RAM is untouched.

mod start_info;

#[cfg(test)]
mod tests;

use alloc::vec::Vec;
use core::fmt;

use vcpu::{Gprs, GuestMemError, GuestMemory, InitialState};

use crate::bzimage::e820::{self, E820Error};
use crate::bzimage::{
    Placement, VmLayout, INITRD_ALIGN, LINUX_CMDLINE_GPA, LINUX_CMDLINE_SLOT, LINUX_ZERO_PAGE_GPA,
    RSDP_LEN,
};
use crate::elf64::{self, Elf64Error};
use crate::layout::{Area, HIGH_MEMORY, LOW_MEMORY_END};
use crate::note::{self, NoteError};
use crate::segment::{self, Segment, SegmentError};

use start_info::StartInfo;
pub use start_info::{
    HVM_START_INFO_VERSION, HVM_START_MAGIC, MEMMAP_ENTRY_LEN, MODLIST_ENTRY_LEN, START_INFO_LEN,
};

/// Type of the Xen ELF note that holds the 32-bit physical PVH entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Name of the Xen ELF notes, NUL included (`n_namesz` 4).
const XEN_NOTE_NAME: &[u8] = b"Xen\0";

/// `struct hvm_start_info`; EBX at entry. The page the bzImage loader uses
/// for its zero page.
pub const PVH_START_INFO_GPA: u64 = LINUX_ZERO_PAGE_GPA;
/// The module list (one entry, the initrd), after the start info.
pub const PVH_MODLIST_GPA: u64 = PVH_START_INFO_GPA + 0x40;
/// The memory map table, after the module list.
pub const PVH_MEMMAP_GPA: u64 = PVH_MODLIST_GPA + 0x40;
/// The kernel command line, where the bzImage loader puts it.
pub const PVH_CMDLINE_GPA: u64 = LINUX_CMDLINE_GPA;
/// Bytes reserved for the command line, NUL included.
pub const PVH_CMDLINE_SLOT: u64 = LINUX_CMDLINE_SLOT;
/// The initrd ends at or below 4 GiB.
const INITRD_LIMIT: u64 = 1 << 32;

/// The low areas the PVH loader writes: no kernel segment may touch them and
/// the VM layout may not reserve them.
pub const PVH_BOOT_AREAS: [Area; 2] = [
    Area {
        start: PVH_START_INFO_GPA,
        end: PVH_START_INFO_GPA + 0x1000,
        name: "PVH start info, module list and memory map",
    },
    Area {
        start: PVH_CMDLINE_GPA,
        end: PVH_CMDLINE_GPA + PVH_CMDLINE_SLOT,
        name: "kernel command line",
    },
];

// The start info, module list and a full memory map fit, in order, in the
// first area; both areas are apart and below the EBDA.
const _: () = {
    assert!(PVH_START_INFO_GPA + START_INFO_LEN as u64 <= PVH_MODLIST_GPA);
    assert!(PVH_MODLIST_GPA + MODLIST_ENTRY_LEN as u64 <= PVH_MEMMAP_GPA);
    assert!(
        PVH_MEMMAP_GPA + (crate::E820_MAX_ENTRIES * MEMMAP_ENTRY_LEN) as u64
            <= PVH_BOOT_AREAS[0].end
    );
    assert!(PVH_BOOT_AREAS[0].end <= PVH_BOOT_AREAS[1].start);
    assert!(PVH_BOOT_AREAS[1].end <= LOW_MEMORY_END);
};

/// CR0 at entry: PE and ET; paging off.
pub const PVH_CR0: u64 = 0x11;
/// RFLAGS at entry: only the reserved bit 1 (interrupts off).
pub const PVH_RFLAGS: u64 = 0x2;
/// CS selector at entry (no GDT is loaded: only the hidden state counts).
pub const PVH_CS: u16 = vcpu::FLAT_CS;
/// DS, ES, SS, FS and GS selector at entry.
pub const PVH_DS: u16 = vcpu::FLAT_DS;

/// Where a PVH kernel was put and how to start it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvhBoot {
    /// The 32-bit physical entry point from the Xen note; EIP at entry.
    pub entry: u64,
    /// The `struct hvm_start_info`; EBX at entry.
    pub start_info: u64,
    /// The command line (length without its NUL).
    pub cmdline: Placement,
    /// The initrd, if one was given (the one module of the start info).
    pub initrd: Option<Placement>,
    /// Entries in the memory map.
    pub memmap_entries: usize,
}

impl PvhBoot {
    /// The register state to start the first vCPU with.
    pub fn entry_state(&self) -> InitialState {
        InitialState::protected_flat(
            self.entry,
            Gprs {
                rbx: self.start_info,
                ..Gprs::default()
            },
        )
    }
}

/// Why a PVH kernel could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvhError {
    /// The image is not a usable ELF64 x86_64 executable.
    Elf(Elf64Error),
    /// A `PT_NOTE` segment (by program header index) holds a malformed note.
    Note { segment: u16, error: NoteError },
    /// No Xen note of type [`XEN_ELFNOTE_PHYS32_ENTRY`]: not a PVH kernel.
    NoPvhEntry,
    /// The entry note's descriptor is neither 4 nor 8 bytes.
    EntryNoteSize { descsz: usize },
    /// The entry note's 8-byte descriptor has bits set above 4 GiB.
    EntryAbove4GiB { entry: u64 },
    /// The entry point lies in no segment's file bytes.
    EntryNotLoaded { entry: u64 },
    /// The layout claims more RAM than the guest memory has.
    RamLargerThanMemory { ram_size: u64, mem_size: u64 },
    /// The VM layout gives no valid memory map.
    E820(E820Error),
    /// A reserved range of the layout covers a low area the loader writes.
    BootAreaReserved {
        area: Area,
        reserved_start: u64,
        reserved_end: u64,
    },
    /// The command line does not fit its slot.
    CmdlineTooLong { len: usize, max: usize },
    /// The command line holds a NUL byte, which would end it early.
    CmdlineHasNul { offset: usize },
    /// A kernel segment cannot go where it asks to (RAM, the loader's
    /// keep-out areas, another segment).
    Placement(SegmentError),
    /// A kernel segment covers a low area the PVH loader writes.
    KernelOverBootArea { gpa: u64, end: u64, area: Area },
    /// A kernel segment covers a reserved range of the layout.
    KernelOverReserved {
        gpa: u64,
        end: u64,
        reserved_start: u64,
        reserved_end: u64,
    },
    /// No usable RAM above 1 MiB and below `limit` (the end of RAM or
    /// 4 GiB) holds the initrd beside the kernel.
    InitrdDoesNotFit { len: u64, limit: u64 },
    /// The RSDP the layout names is not in RAM.
    RsdpOutsideRam { gpa: u64, ram_size: u64 },
    /// Guest RAM refused a write the checks had allowed.
    Memory(GuestMemError),
}

impl fmt::Display for PvhError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PvhError::Elf(e) => write!(f, "{e}"),
            PvhError::Note { segment, error } => {
                write!(f, "note segment (program header {segment}): {error}")
            }
            PvhError::NoPvhEntry => write!(
                f,
                "no Xen PHYS32_ENTRY note (type {XEN_ELFNOTE_PHYS32_ENTRY}): the kernel does not support PVH boot"
            ),
            PvhError::EntryNoteSize { descsz } => write!(
                f,
                "PHYS32_ENTRY note has a {descsz}-byte descriptor where 4 or 8 bytes were expected"
            ),
            PvhError::EntryAbove4GiB { entry } => write!(
                f,
                "PVH entry point {entry:#x} is above 4 GiB, out of reach of 32-bit protected mode"
            ),
            PvhError::EntryNotLoaded { entry } => {
                write!(f, "PVH entry point {entry:#x} lies in no loaded segment")
            }
            PvhError::RamLargerThanMemory { ram_size, mem_size } => write!(
                f,
                "VM layout has {ram_size:#x} bytes of RAM but guest memory has {mem_size:#x}"
            ),
            PvhError::E820(e) => write!(f, "memory map: {e}"),
            PvhError::BootAreaReserved {
                area,
                reserved_start,
                reserved_end,
            } => write!(
                f,
                "reserved range {reserved_start:#x}..{reserved_end:#x} covers the {area}"
            ),
            PvhError::CmdlineTooLong { len, max } => write!(
                f,
                "command line of {len} bytes is longer than the {max} its slot holds"
            ),
            PvhError::CmdlineHasNul { offset } => {
                write!(f, "command line has a NUL byte at offset {offset}")
            }
            PvhError::Placement(e) => write!(f, "kernel placement: {e}"),
            PvhError::KernelOverBootArea { gpa, end, area } => {
                write!(f, "kernel segment {gpa:#x}..{end:#x} overlaps the {area}")
            }
            PvhError::KernelOverReserved {
                gpa,
                end,
                reserved_start,
                reserved_end,
            } => write!(
                f,
                "kernel segment {gpa:#x}..{end:#x} covers reserved range {reserved_start:#x}..{reserved_end:#x}"
            ),
            PvhError::InitrdDoesNotFit { len, limit } => write!(
                f,
                "initrd of {len:#x} bytes fits nowhere in usable RAM between 1 MiB and {limit:#x} beside the kernel"
            ),
            PvhError::RsdpOutsideRam { gpa, ram_size } => write!(
                f,
                "ACPI RSDP at {gpa:#x} is not inside guest RAM of {ram_size:#x} bytes"
            ),
            PvhError::Memory(e) => write!(f, "writing the kernel failed: {e}"),
        }
    }
}

impl core::error::Error for PvhError {}

impl From<Elf64Error> for PvhError {
    fn from(e: Elf64Error) -> Self {
        PvhError::Elf(e)
    }
}

impl From<E820Error> for PvhError {
    fn from(e: E820Error) -> Self {
        PvhError::E820(e)
    }
}

impl From<GuestMemError> for PvhError {
    fn from(e: GuestMemError) -> Self {
        PvhError::Memory(e)
    }
}

/// The PVH entry point of an ELF64 kernel's segments and notes.
fn pvh_entry(image: &[u8]) -> Result<(Vec<Segment<'_>>, u64), PvhError> {
    let elf = elf64::parse(image)?;
    let segments = elf.load_segments().map_err(Elf64Error::from)?;
    let mut desc = None;
    for seg in elf.note_segments().map_err(Elf64Error::from)? {
        let note_error = |error| PvhError::Note {
            segment: seg.index,
            error,
        };
        // Every note is read, so a malformed one is found wherever it is.
        for n in note::notes(&seg).map_err(note_error)? {
            let n = n.map_err(note_error)?;
            if desc.is_none() && n.name == XEN_NOTE_NAME && n.n_type == XEN_ELFNOTE_PHYS32_ENTRY {
                desc = Some(n.desc);
            }
        }
    }
    let desc = desc.ok_or(PvhError::NoPvhEntry)?;
    let entry = match *desc {
        [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => {
            let entry = u64::from_le_bytes([a, b, c, d, e, f, g, h]);
            if entry > u64::from(u32::MAX) {
                return Err(PvhError::EntryAbove4GiB { entry });
            }
            entry
        }
        _ => return Err(PvhError::EntryNoteSize { descsz: desc.len() }),
    };
    if !segments.iter().any(|s| s.holds_code_at(entry)) {
        return Err(PvhError::EntryNotLoaded { entry });
    }
    Ok((segments, entry))
}

/// Loads the PVH kernel `image` (an ELF `vmlinux`) into `mem` for a VM laid
/// out as `layout`, with `cmdline` and an optional initrd (an empty one
/// counts as none), and writes the start info, memory map and module list
/// (see the module documentation for where each piece goes).
///
/// Everything is checked before the first byte is written: on error guest
/// RAM is untouched.
pub fn load_pvh(
    image: &[u8],
    cmdline: &str,
    initrd: Option<&[u8]>,
    layout: &VmLayout<'_>,
    mem: &mut impl GuestMemory,
) -> Result<PvhBoot, PvhError> {
    let (segments, entry) = pvh_entry(image)?;

    // All RAM must exist in guest memory; the kernel's pieces go below the
    // PCI hole (`ram_size` from here on is that low, gap-free part: a PVH
    // kernel's segments are at fixed addresses from 1 MiB up).
    let ram = layout.ram;
    if !crate::layout::ram_inside(&ram, &mem.layout()) {
        return Err(PvhError::RamLargerThanMemory {
            ram_size: ram.total(),
            mem_size: mem.layout().total(),
        });
    }
    let ram_size = ram.low();
    let map = e820::e820_map_of(&ram, layout.reserved)?;
    for area in PVH_BOOT_AREAS {
        if let Some(r) = e820::first_non_ram_overlap(&map, area.start, area.end) {
            return Err(PvhError::BootAreaReserved {
                area,
                reserved_start: r.addr,
                reserved_end: r.end(),
            });
        }
    }

    let max = PVH_CMDLINE_SLOT as usize - 1;
    if cmdline.len() > max {
        return Err(PvhError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    if let Some(offset) = cmdline.bytes().position(|b| b == 0) {
        return Err(PvhError::CmdlineHasNul { offset });
    }

    segment::check(&segments, ram_size, &crate::layout::KEEP_OUT).map_err(PvhError::Placement)?;
    // `check` accepted every range: none wraps or ends past RAM.
    let ranges: Vec<(u64, u64)> = segments
        .iter()
        .map(|s| (s.gpa, s.gpa + s.mem_size))
        .collect();
    for &(gpa, end) in &ranges {
        if let Some(area) = PVH_BOOT_AREAS.iter().find(|a| a.overlaps(gpa, end)) {
            return Err(PvhError::KernelOverBootArea {
                gpa,
                end,
                area: *area,
            });
        }
        if let Some(r) = e820::first_non_ram_overlap(&map, gpa, end) {
            return Err(PvhError::KernelOverReserved {
                gpa,
                end,
                reserved_start: r.addr,
                reserved_end: r.end(),
            });
        }
    }

    let initrd = initrd.filter(|d| !d.is_empty());
    let initrd_at = match initrd {
        Some(data) => {
            let len = data.len() as u64;
            let limit = ram_size.min(INITRD_LIMIT);
            // Starting at 1 MiB, it cannot touch the low boot areas.
            let gpa = e820::highest_fit(&map, len, HIGH_MEMORY, limit, INITRD_ALIGN, &ranges)
                .ok_or(PvhError::InitrdDoesNotFit { len, limit })?;
            Some(Placement { gpa, len })
        }
        None => None,
    };
    if let Some(gpa) = layout.acpi_rsdp {
        if gpa.checked_add(RSDP_LEN).is_none_or(|end| end > ram_size) {
            return Err(PvhError::RsdpOutsideRam { gpa, ram_size });
        }
    }

    // The map has at most E820_MAX_ENTRIES (128) entries: the cast cannot
    // truncate, and the table fits its area (checked at compile time).
    let info = StartInfo {
        nr_modules: u32::from(initrd_at.is_some()),
        modlist_paddr: initrd_at.map_or(0, |_| PVH_MODLIST_GPA),
        cmdline_paddr: PVH_CMDLINE_GPA,
        rsdp_paddr: layout.acpi_rsdp.unwrap_or(0),
        memmap_paddr: PVH_MEMMAP_GPA,
        memmap_entries: map.len() as u32,
    };

    // Every check passed: write.
    segment::copy(mem, &segments).map_err(PvhError::Placement)?;
    mem.write(PVH_START_INFO_GPA, &info.bytes())?;
    mem.write(PVH_MEMMAP_GPA, &start_info::memmap(&map))?;
    mem.write(PVH_CMDLINE_GPA, cmdline.as_bytes())?;
    mem.write(PVH_CMDLINE_GPA + cmdline.len() as u64, &[0])?;
    if let (Some(data), Some(at)) = (initrd, initrd_at) {
        mem.write(PVH_MODLIST_GPA, &start_info::module_entry(at.gpa, at.len))?;
        mem.write(at.gpa, data)?;
    }

    Ok(PvhBoot {
        entry,
        start_info: PVH_START_INFO_GPA,
        cmdline: Placement {
            gpa: PVH_CMDLINE_GPA,
            len: cmdline.len() as u64,
        },
        initrd: initrd_at,
        memmap_entries: map.len(),
    })
}
