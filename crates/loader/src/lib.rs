//! Guest kernel loaders: put a boot module (Multiboot1 kernel, ELF64 kernel or
//! raw binary) into a VM's RAM, write the Multiboot1 boot information next to
//! it, and say where and how the first vCPU starts.
//!
//! Every loader checks the image before it writes anything: headers, program
//! headers and segment ranges are read by offset with bounds checks, and each
//! piece must fit in guest RAM without wrapping, without overlapping another
//! piece and without touching the low areas the loader keeps for itself
//! ([`BOOT_INFO_AREA`], [`LOW_RESERVED_AREA`]).
//!
//! The vCPU contract ([`BootSetup`]): 32-bit protected mode, paging off, flat
//! 4 GiB code and data segments, `EAX` = [`BOOTLOADER_MAGIC`],
//! `EBX` = [`BootSetup::info_gpa`], `EIP` = [`BootSetup::entry`], whatever the
//! [`KernelKind`].
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod bytes;
mod elf;
mod elf64;
mod info;
mod layout;
mod load;
mod multiboot1;
mod raw;
mod segment;

pub use elf::ElfError;
pub use elf64::Elf64Error;
pub use info::{InfoError, MMAP_AVAILABLE, MMAP_RESERVED};
pub use layout::{
    Area, BOOT_INFO_AREA, CMDLINE_GPA, CMDLINE_MAX, INFO_GPA, LOW_MEMORY_END, LOW_RESERVED_AREA,
    MIN_RAM, MMAP_GPA,
};
pub use load::{load, BootSetup, EntryKind, KernelKind, LoadError};
pub use multiboot1::{Multiboot1Error, BOOTLOADER_MAGIC, HEADER_MAGIC, HEADER_SEARCH_LIMIT};
pub use raw::RawError;
pub use segment::SegmentError;
