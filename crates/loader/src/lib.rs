//! Guest kernel loaders: put a boot module (Multiboot1 kernel, ELF64 kernel or
//! raw binary) and the VM's other boot modules into its RAM, write the
//! Multiboot1 boot information (with the module list) where the kernel leaves
//! room, and say where and how the first vCPU starts. Linux bzImage kernels go
//! through [`load_bzimage`] instead: the Linux boot protocol's zero page, e820
//! map, initrd and a 64-bit entry state ([`LinuxBoot`]). ELF `vmlinux` kernels
//! with a Xen PVH entry note go through [`load_pvh`]: the PVH start info,
//! memory map, initrd module and a 32-bit entry state ([`PvhBoot`]).
//!
//! Every loader checks the image before it writes anything: headers, program
//! headers and segment ranges are read by offset with bounds checks, and each
//! piece must fit in guest RAM without wrapping, without overlapping another
//! piece and without touching the low areas the loader keeps for itself
//! ([`LOW_RESERVED_AREA`]; for PVH kernels also [`BOOT_INFO_AREA`]).
//!
//! The vCPU contract ([`BootSetup`]): 32-bit protected mode, paging off, flat
//! 4 GiB code and data segments, `EAX` = [`BOOTLOADER_MAGIC`],
//! `EBX` = [`BootSetup::info_gpa`], `EIP` = [`BootSetup::entry`], whatever the
//! [`KernelKind`] (except [`KernelKind::BzImage`]: see
//! [`LinuxBoot::entry_state`]; PVH kernels: see [`PvhBoot::entry_state`]).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod bytes;
mod bzimage;
mod elf;
mod elf64;
mod info;
mod layout;
mod load;
mod modules;
mod multiboot1;
mod note;
mod pvh;
mod raw;
mod segment;

pub use bzimage::{
    build_boot_gdt, build_identity_page_tables, e820_map, e820_map_of, identity_page_tables_len,
    load_bzimage, BootTablesError, BzImageError, E820Entry, E820Error, E820Kind, Gdtr, HeaderError,
    LinuxBoot, LongModeEntry, Placement, ReservedKind, ReservedRange, VmLayout, BOOT_CS, BOOT_DS,
    BOOT_GDT_LEN, DEFAULT_LOAD_ADDRESS, E820_MAX_ENTRIES, ENTRY_64_OFFSET, HDRS_MAGIC,
    IDENTITY_MAP_BYTES, INITRD_ALIGN, LINUX_BOOT_AREAS, LINUX_CMDLINE_GPA, LINUX_CMDLINE_SLOT,
    LINUX_GDT_GPA, LINUX_PAGE_TABLES_GPA, LINUX_STACK_TOP, LINUX_ZERO_PAGE_GPA, LONG_MODE_CR0,
    LONG_MODE_CR4, LONG_MODE_EFER, LONG_MODE_RFLAGS, MAX_IDENTITY_MAP, MAX_SETUP_SECTS,
    MIN_PROTOCOL, RSDP_PROTOCOL, XLF_KERNEL_64, ZERO_PAGE_LEN,
};
pub use elf::ElfError;
pub use elf64::Elf64Error;
pub use info::{InfoError, MMAP_AVAILABLE, MMAP_RESERVED};
pub use layout::{
    Area, BOOT_INFO_AREA, CMDLINE_MAX, CMDLINE_OFFSET, INFO_CANDIDATES, INFO_GPA, LOW_MEMORY_END,
    LOW_RESERVED_AREA, MIN_RAM, MMAP_OFFSET, MODS_OFFSET,
};
pub use load::{load, BootSetup, EntryKind, KernelKind, LoadError};
pub use modules::{
    Module, ModuleError, MAX_MODULES, MODULE_ALIGN, MODULE_CMDLINE_MAX, MODULE_LIMIT,
};
pub use multiboot1::{Multiboot1Error, BOOTLOADER_MAGIC, HEADER_MAGIC, HEADER_SEARCH_LIMIT};
pub use note::NoteError;
pub use pvh::{
    load_pvh, PvhBoot, PvhError, HVM_START_INFO_VERSION, HVM_START_MAGIC, MEMMAP_ENTRY_LEN,
    MODLIST_ENTRY_LEN, PVH_BOOT_AREAS, PVH_CMDLINE_GPA, PVH_CMDLINE_SLOT, PVH_CR0, PVH_CS, PVH_DS,
    PVH_MEMMAP_GPA, PVH_MODLIST_GPA, PVH_RFLAGS, PVH_START_INFO_GPA, START_INFO_LEN,
    XEN_ELFNOTE_PHYS32_ENTRY,
};
pub use raw::RawError;
pub use segment::SegmentError;
