//! Linux bzImage kernels through the 64-bit boot protocol
//! (Documentation/arch/x86/boot.rst, "64-bit Boot Protocol"): the setup
//! header is checked, the protected-mode kernel copied to its preferred
//! address, the zero page written with the e820 map, command line, initrd and
//! RSDP, and a boot GDT and identity page tables built, so that the first
//! vCPU starts directly in 64-bit mode at the kernel's 64-bit entry.
//!
//! Guest-physical layout (the low pieces are in e820 RAM below the EBDA;
//! Linux copies what it needs before it reuses that memory):
//!
//! | range | what |
//! |---|---|
//! | [`LINUX_GDT_GPA`] (0x5000), 32 bytes | boot GDT ([`build_boot_gdt`]) |
//! | 0x6000..[`LINUX_STACK_TOP`] (0x7000) | a page of stack for the first instructions |
//! | [`LINUX_ZERO_PAGE_GPA`] (0x7000), 4 KiB | zero page (`struct boot_params`) |
//! | [`LINUX_PAGE_TABLES_GPA`] (0x9000..0xF000) | PML4, PDPT, 4 PDs: 0..4 GiB identity-mapped with 2 MiB pages |
//! | [`LINUX_CMDLINE_GPA`] (0x20000), up to 64 KiB | command line, NUL-terminated |
//! | `pref_address` (16 MiB), `init_size` bytes | protected-mode kernel and its decompression space |
//! | top of RAM below 4 GiB and `initrd_addr_max`, 4 KiB aligned | initrd |
//!
//! The ACPI tables are the caller's (see the `guest-acpi` crate): it puts
//! them in RAM, lists their range in [`VmLayout::reserved`] (unless they sit
//! in the BIOS area, 0xE0000..0x100000, which the map already reserves) and
//! gives the RSDP's address in [`VmLayout::acpi_rsdp`].
//!
//! Entry contract: [`LinuxBoot::entry_state`] gives every register.

mod boot_tables;
pub(crate) mod e820;
mod header;
mod zero_page;

#[cfg(test)]
mod tests;

use core::fmt;

use vcpu::{Gprs, GuestMemError, GuestMemory, SegmentState};

use crate::layout::{Area, HIGH_MEMORY};

pub use boot_tables::{
    build_boot_gdt, build_identity_page_tables, identity_page_tables_len, BootTablesError, Gdtr,
    BOOT_CS, BOOT_DS, BOOT_GDT_LEN, MAX_IDENTITY_MAP,
};
pub use e820::{
    e820_map, e820_map_of, E820Entry, E820Error, E820Kind, ReservedKind, ReservedRange,
    E820_MAX_ENTRIES,
};
pub use header::{
    HeaderError, DEFAULT_LOAD_ADDRESS, ENTRY_64_OFFSET, HDRS_MAGIC, MAX_SETUP_SECTS, MIN_PROTOCOL,
    XLF_KERNEL_64,
};
pub use zero_page::{RSDP_PROTOCOL, ZERO_PAGE_LEN};

use header::{SetupHeader, SETUP_HEADER_START};
use zero_page::ZeroPage;

/// The boot GDT.
pub const LINUX_GDT_GPA: u64 = 0x5000;
/// Initial RSP: the top of the page below the zero page. The kernel moves to
/// its own stack within its first instructions; this one only has to exist.
pub const LINUX_STACK_TOP: u64 = 0x7000;
/// The zero page (`struct boot_params`); RSI at entry.
pub const LINUX_ZERO_PAGE_GPA: u64 = 0x7000;
/// The identity page tables; CR3 at entry.
pub const LINUX_PAGE_TABLES_GPA: u64 = 0x9000;
/// The kernel command line.
pub const LINUX_CMDLINE_GPA: u64 = 0x2_0000;
/// Bytes reserved for the command line, NUL included.
pub const LINUX_CMDLINE_SLOT: u64 = 0x1_0000;
/// What the page tables map: the protocol wants the kernel's `init_size`
/// range, the zero page and the command line identity-mapped; everything
/// this loader places is below 4 GiB.
pub const IDENTITY_MAP_BYTES: u64 = 4 << 30;
/// Alignment of the initrd.
pub const INITRD_ALIGN: u64 = 0x1000;
/// Bytes of an ACPI 2.0+ RSDP, all of which must be in RAM.
pub(crate) const RSDP_LEN: u64 = 36;

/// The low areas the loader writes besides the kernel and initrd.
pub const LINUX_BOOT_AREAS: [Area; 5] = [
    Area {
        start: LINUX_GDT_GPA,
        end: LINUX_GDT_GPA + BOOT_GDT_LEN,
        name: "boot GDT",
    },
    Area {
        start: LINUX_STACK_TOP - 0x1000,
        end: LINUX_STACK_TOP,
        name: "boot stack",
    },
    Area {
        start: LINUX_ZERO_PAGE_GPA,
        end: LINUX_ZERO_PAGE_GPA + ZERO_PAGE_LEN as u64,
        name: "zero page",
    },
    Area {
        start: LINUX_PAGE_TABLES_GPA,
        // PML4, PDPT and one PD per GiB mapped.
        end: LINUX_PAGE_TABLES_GPA + (2 + IDENTITY_MAP_BYTES.div_ceil(1 << 30)) * 0x1000,
        name: "boot page tables",
    },
    Area {
        start: LINUX_CMDLINE_GPA,
        end: LINUX_CMDLINE_GPA + LINUX_CMDLINE_SLOT,
        name: "kernel command line",
    },
];

// The low areas are in order, apart, and below the EBDA.
const _: () = {
    let mut i = 1;
    while i < LINUX_BOOT_AREAS.len() {
        assert!(LINUX_BOOT_AREAS[i - 1].end <= LINUX_BOOT_AREAS[i].start);
        i += 1;
    }
    assert!(LINUX_BOOT_AREAS[LINUX_BOOT_AREAS.len() - 1].end <= crate::layout::LOW_MEMORY_END);
};

/// The VM a kernel is loaded into, as the scenario describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmLayout<'a> {
    /// Where the VM's RAM is (every range inside the guest memory's layout):
    /// [`vcpu::RamLayout::new`] for RAM from guest-physical 0, or
    /// [`vcpu::RamLayout::identity`] for RAM at its host addresses.
    pub ram: vcpu::RamLayout,
    /// Ranges the guest must not use as RAM: the ACPI tables (as
    /// [`ReservedKind::AcpiReclaimable`]), MMIO windows. They may not
    /// overlap each other or the [`LINUX_BOOT_AREAS`].
    pub reserved: &'a [ReservedRange],
    /// Where the caller put the ACPI RSDP, if the VM has ACPI tables.
    pub acpi_rsdp: Option<u64>,
}

/// A guest-physical range the loader filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub gpa: u64,
    pub len: u64,
}

/// Where a bzImage kernel was put and how to start it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinuxBoot {
    /// The 64-bit entry point: load address + 0x200.
    pub entry_64: u64,
    /// The zero page; RSI at entry.
    pub zero_page: u64,
    /// The identity page tables; CR3 at entry.
    pub cr3: u64,
    /// The boot GDT; GDTR at entry.
    pub gdtr: Gdtr,
    /// Initial RSP.
    pub stack_top: u64,
    /// The kernel's load address and the bytes it may use from there
    /// (`max(init_size, image bytes)`).
    pub kernel: Placement,
    /// The command line (length without its NUL).
    pub cmdline: Placement,
    /// The initrd, if one was given.
    pub initrd: Option<Placement>,
    /// The kernel's boot protocol version.
    pub protocol: u16,
    /// The RSDP address was written to the zero page (`acpi_rsdp_addr`,
    /// protocol 2.14 and later). If false with an RSDP given, the kernel
    /// finds the tables only by the BIOS-area search (RSDP at 0xE0000).
    pub rsdp_in_zero_page: bool,
    /// Entries in the e820 map written to the zero page.
    pub e820_entries: usize,
}

/// CR0 at entry: PE, ET, NE, PG.
pub const LONG_MODE_CR0: u64 = 0x8000_0031;
/// CR4 at entry: PAE.
pub const LONG_MODE_CR4: u64 = 0x20;
/// EFER at entry: LME and LMA.
pub const LONG_MODE_EFER: u64 = 0x500;
/// RFLAGS at entry: only the reserved bit 1 (interrupts off).
pub const LONG_MODE_RFLAGS: u64 = 0x2;

/// The register state of the 64-bit entry (see [`LinuxBoot::entry_state`]).
pub type LongModeEntry = vcpu::InitialState;

impl LinuxBoot {
    /// The register state to start the first vCPU with.
    pub fn entry_state(&self) -> LongModeEntry {
        LongModeEntry {
            rip: self.entry_64,
            rsp: self.stack_top,
            rflags: LONG_MODE_RFLAGS,
            gprs: Gprs {
                rsi: self.zero_page,
                ..Gprs::default()
            },
            cr0: LONG_MODE_CR0,
            cr3: self.cr3,
            cr4: LONG_MODE_CR4,
            efer: LONG_MODE_EFER,
            cs: SegmentState {
                selector: BOOT_CS,
                base: 0,
                limit: 0xFFFF_FFFF,
                attrib: 0xA9B,
            },
            data: SegmentState {
                selector: BOOT_DS,
                base: 0,
                limit: 0xFFFF_FFFF,
                attrib: 0xC93,
            },
            tr: SegmentState {
                selector: 0,
                base: 0,
                limit: 0x67,
                attrib: 0x08B,
            },
            gdtr: SegmentState {
                selector: 0,
                base: self.gdtr.base,
                limit: u32::from(self.gdtr.limit),
                attrib: 0,
            },
            idtr: SegmentState {
                selector: 0,
                base: 0,
                limit: 0,
                attrib: 0,
            },
        }
    }
}

/// Why a bzImage kernel could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BzImageError {
    /// The image's setup header.
    Header(HeaderError),
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
    /// The command line is longer than the kernel or its slot accepts.
    CmdlineTooLong { len: usize, max: usize },
    /// The command line holds a NUL byte, which would end it early.
    CmdlineHasNul { offset: usize },
    /// The kernel asks to be loaded below 1 MiB.
    KernelBelow1MiB { start: u64 },
    /// The kernel (`max(init_size, image)` bytes from its load address)
    /// ends past RAM or past the 4 GiB the page tables map.
    KernelOutsideRam { start: u64, end: u64, limit: u64 },
    /// The kernel's range covers a reserved range of the layout.
    KernelOverReserved {
        start: u64,
        end: u64,
        reserved_start: u64,
        reserved_end: u64,
    },
    /// No usable RAM above 1 MiB and below `limit` (the lowest of the end of
    /// RAM, 4 GiB and `initrd_addr_max` + 1) holds the initrd beside the
    /// kernel.
    InitrdDoesNotFit { len: u64, limit: u64 },
    /// The RSDP the layout names is not in RAM.
    RsdpOutsideRam { gpa: u64, ram_size: u64 },
    /// The page tables or GDT cannot be built (internal: the fixed low
    /// areas always fit once the memory map is valid).
    BootTables(BootTablesError),
    /// Guest RAM refused a write the checks had allowed.
    Memory(GuestMemError),
}

impl fmt::Display for BzImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BzImageError::Header(e) => write!(f, "{e}"),
            BzImageError::RamLargerThanMemory { ram_size, mem_size } => write!(
                f,
                "VM layout has {ram_size:#x} bytes of RAM but guest memory has {mem_size:#x}"
            ),
            BzImageError::E820(e) => write!(f, "memory map: {e}"),
            BzImageError::BootAreaReserved {
                area,
                reserved_start,
                reserved_end,
            } => write!(
                f,
                "reserved range {reserved_start:#x}..{reserved_end:#x} covers the {area}"
            ),
            BzImageError::CmdlineTooLong { len, max } => write!(
                f,
                "command line of {len} bytes is longer than the {max} the kernel accepts"
            ),
            BzImageError::CmdlineHasNul { offset } => {
                write!(f, "command line has a NUL byte at offset {offset}")
            }
            BzImageError::KernelBelow1MiB { start } => write!(
                f,
                "kernel asks to be loaded at {start:#x}, below 1 MiB"
            ),
            BzImageError::KernelOutsideRam { start, end, limit } => write!(
                f,
                "kernel needs {start:#x}..{end:#x} (init_size from its load address) but RAM usable for it ends at {limit:#x}"
            ),
            BzImageError::KernelOverReserved {
                start,
                end,
                reserved_start,
                reserved_end,
            } => write!(
                f,
                "kernel range {start:#x}..{end:#x} covers reserved range {reserved_start:#x}..{reserved_end:#x}"
            ),
            BzImageError::InitrdDoesNotFit { len, limit } => write!(
                f,
                "initrd of {len:#x} bytes fits nowhere in usable RAM between 1 MiB and {limit:#x} beside the kernel"
            ),
            BzImageError::RsdpOutsideRam { gpa, ram_size } => write!(
                f,
                "ACPI RSDP at {gpa:#x} is not inside guest RAM of {ram_size:#x} bytes"
            ),
            BzImageError::BootTables(e) => write!(f, "boot tables: {e}"),
            BzImageError::Memory(e) => write!(f, "writing the kernel failed: {e}"),
        }
    }
}

impl core::error::Error for BzImageError {}

impl From<HeaderError> for BzImageError {
    fn from(e: HeaderError) -> Self {
        BzImageError::Header(e)
    }
}

impl From<E820Error> for BzImageError {
    fn from(e: E820Error) -> Self {
        BzImageError::E820(e)
    }
}

impl From<BootTablesError> for BzImageError {
    fn from(e: BootTablesError) -> Self {
        BzImageError::BootTables(e)
    }
}

impl From<GuestMemError> for BzImageError {
    fn from(e: GuestMemError) -> Self {
        BzImageError::Memory(e)
    }
}

/// Loads the bzImage `image` into `mem` for a VM laid out as `layout`, with
/// `cmdline` and an optional initrd (an empty one counts as none), and
/// builds everything the 64-bit entry needs (see the module documentation
/// for where each piece goes).
///
/// Everything is checked before the first byte is written: on error guest
/// RAM is untouched.
pub fn load_bzimage(
    image: &[u8],
    cmdline: &str,
    initrd: Option<&[u8]>,
    layout: &VmLayout<'_>,
    mem: &mut impl GuestMemory,
) -> Result<LinuxBoot, BzImageError> {
    let header = SetupHeader::parse(image)?;
    // All RAM must exist in guest memory; the kernel's pieces go below the
    // PCI hole, the low boot areas below 1 MiB.
    let ram = layout.ram;
    if !crate::layout::ram_inside(&ram, &mem.layout()) {
        return Err(BzImageError::RamLargerThanMemory {
            ram_size: ram.total(),
            mem_size: mem.layout().total(),
        });
    }
    let map = e820::e820_map_of(&ram, layout.reserved)?;
    for area in LINUX_BOOT_AREAS {
        if let Some(r) = e820::first_non_ram_overlap(&map, area.start, area.end) {
            return Err(BzImageError::BootAreaReserved {
                area,
                reserved_start: r.addr,
                reserved_end: r.end(),
            });
        }
    }

    let max = (header.cmdline_size as usize).min(LINUX_CMDLINE_SLOT as usize - 1);
    if cmdline.len() > max {
        return Err(BzImageError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    if let Some(offset) = cmdline.bytes().position(|b| b == 0) {
        return Err(BzImageError::CmdlineHasNul { offset });
    }

    let payload = &image[header.setup_len()..];
    let ram_end = ram.end_below_4g();
    let kernel = place_kernel(&header, payload.len() as u64, ram_end, &map)?;
    let initrd = initrd.filter(|d| !d.is_empty());
    let initrd_at = match initrd {
        Some(data) => Some(place_initrd(
            &header,
            data.len() as u64,
            ram_end,
            &map,
            kernel,
        )?),
        None => None,
    };
    if let Some(gpa) = layout.acpi_rsdp {
        if ram.locate(gpa, RSDP_LEN).is_none() {
            return Err(BzImageError::RsdpOutsideRam {
                gpa,
                ram_size: ram.total(),
            });
        }
    }
    boot_tables::check_identity_page_tables(ram.low(), LINUX_PAGE_TABLES_GPA, IDENTITY_MAP_BYTES)?;
    boot_tables::check_boot_gdt(ram.low(), LINUX_GDT_GPA)?;

    let zero_page = ZeroPage {
        header: &header,
        header_bytes: &image[SETUP_HEADER_START..header.header_end],
        kernel_gpa: kernel.gpa,
        cmdline_gpa: LINUX_CMDLINE_GPA,
        initrd: initrd_at.map(|p| (p.gpa, p.len)),
        rsdp: layout.acpi_rsdp,
        e820: &map,
    }
    .bytes();

    // Every check passed: write.
    mem.write(kernel.gpa, payload)?;
    mem.write(LINUX_ZERO_PAGE_GPA, &zero_page)?;
    mem.write(LINUX_CMDLINE_GPA, cmdline.as_bytes())?;
    mem.write(LINUX_CMDLINE_GPA + cmdline.len() as u64, &[0])?;
    if let (Some(data), Some(at)) = (initrd, initrd_at) {
        mem.write(at.gpa, data)?;
    }
    let gdtr = build_boot_gdt(mem, LINUX_GDT_GPA)?;
    let cr3 = build_identity_page_tables(mem, LINUX_PAGE_TABLES_GPA, IDENTITY_MAP_BYTES)?;

    Ok(LinuxBoot {
        entry_64: kernel.gpa + ENTRY_64_OFFSET,
        zero_page: LINUX_ZERO_PAGE_GPA,
        cr3,
        gdtr,
        stack_top: LINUX_STACK_TOP,
        kernel,
        cmdline: Placement {
            gpa: LINUX_CMDLINE_GPA,
            len: cmdline.len() as u64,
        },
        initrd: initrd_at,
        protocol: header.version,
        rsdp_in_zero_page: layout.acpi_rsdp.is_some() && header.version >= RSDP_PROTOCOL,
        e820_entries: map.len(),
    })
}

/// The kernel's range: its load address and `max(init_size, payload)`
/// bytes, inside one RAM entry of `map`, above 1 MiB and below 4 GiB. A
/// relocatable kernel whose preferred address is not RAM (a VM whose RAM
/// sits at its host addresses) goes to the lowest place above it that is,
/// at its alignment: the kernel never decompresses below its preferred
/// address.
fn place_kernel(
    header: &SetupHeader,
    payload_len: u64,
    ram_end: u64,
    map: &[E820Entry],
) -> Result<Placement, BzImageError> {
    let limit = ram_end.min(IDENTITY_MAP_BYTES);
    let len = payload_len.max(u64::from(header.init_size));
    let start = header
        .load_address()
        .ok_or(BzImageError::KernelOutsideRam {
            start: header.pref_address,
            end: u64::MAX,
            limit,
        })?;
    if start < HIGH_MEMORY {
        return Err(BzImageError::KernelBelow1MiB { start });
    }
    let start = match start.checked_add(len) {
        Some(end) if header.relocatable && !e820::ram_holds(map, start, end) => {
            e820::lowest_fit(map, len, start, limit, u64::from(header.kernel_alignment))
                .unwrap_or(start)
        }
        _ => start,
    };
    let end = start.checked_add(len).filter(|&e| e <= limit);
    let Some(end) = end else {
        return Err(BzImageError::KernelOutsideRam {
            start,
            end: start.saturating_add(len),
            limit,
        });
    };
    if let Some(r) = e820::first_non_ram_overlap(map, start, end) {
        return Err(BzImageError::KernelOverReserved {
            start,
            end,
            reserved_start: r.addr,
            reserved_end: r.end(),
        });
    }
    // Not over a reserved range, but maybe over a gap between RAM ranges.
    if !e820::ram_holds(map, start, end) {
        return Err(BzImageError::KernelOutsideRam { start, end, limit });
    }
    Ok(Placement { gpa: start, len })
}

/// The highest 4 KiB-aligned place for `len` bytes in a RAM entry of `map`,
/// at or above 1 MiB, below the lowest of the end of RAM, 4 GiB and
/// `initrd_addr_max` + 1, not over the kernel.
fn place_initrd(
    header: &SetupHeader,
    len: u64,
    ram_end: u64,
    map: &[E820Entry],
    kernel: Placement,
) -> Result<Placement, BzImageError> {
    let limit = ram_end
        .min(IDENTITY_MAP_BYTES)
        .min(u64::from(header.initrd_addr_max) + 1);
    let kernel = [(kernel.gpa, kernel.gpa + kernel.len)];
    e820::highest_fit(map, len, HIGH_MEMORY, limit, INITRD_ALIGN, &kernel)
        .map(|gpa| Placement { gpa, len })
        .ok_or(BzImageError::InitrdDoesNotFit { len, limit })
}
