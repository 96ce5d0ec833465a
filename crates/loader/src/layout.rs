//! The low-memory layout the loader uses: the shape of the boot information
//! area, where it may go, and which low ranges no kernel piece may occupy.

use core::fmt;

/// A half-open guest-physical range `start..end` with a name for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Area {
    pub start: u64,
    pub end: u64,
    pub name: &'static str,
}

impl Area {
    /// Whether `start..end` shares at least one byte with this area.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        start < self.end && self.start < end
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#x}..{:#x})", self.name, self.start, self.end)
    }
}

/// Where the boot information goes when the kernel leaves it free: the
/// Multiboot1 information structure (116 bytes used) at the start of the area.
pub const INFO_GPA: u64 = 0x9000;
/// The kernel command line, NUL-terminated, this far into the area.
pub const CMDLINE_OFFSET: u64 = 0x400;
/// Longest command line in bytes, without its NUL (the slot is 1 KiB).
pub const CMDLINE_MAX: usize = (MMAP_OFFSET - CMDLINE_OFFSET) as usize - 1;
/// The memory map entries, this far into the area.
pub const MMAP_OFFSET: u64 = 0x800;
/// The module list (16 bytes per module), then the modules' NUL-terminated
/// strings, this far into the area.
pub const MODS_OFFSET: u64 = 0x1000;
/// The boot information area of a VM without modules at its preferred place:
/// `INFO_GPA..INFO_GPA + MODS_OFFSET`. Modules make the area longer; a kernel
/// over it moves it (see [`INFO_CANDIDATES`]).
pub const BOOT_INFO_AREA: Area = Area {
    start: INFO_GPA,
    end: INFO_GPA + MODS_OFFSET,
    name: "boot information area",
};
/// Where the boot information area may start, in order of preference: each
/// low candidate must leave the whole area below [`LOW_MEMORY_END`] and off
/// every kernel piece; failing all of them, the area goes on the first page
/// above the kernel and the modules.
pub const INFO_CANDIDATES: [u64; 3] = [INFO_GPA, 0x1000, 0x9_0000];
/// Where conventional memory ends and the reserved EBDA starts (639 KiB).
pub const LOW_MEMORY_END: u64 = 0x9_FC00;
/// First byte of high memory (1 MiB).
pub const HIGH_MEMORY: u64 = 0x10_0000;
/// EBDA, VGA window and BIOS ROM as the memory map reports them: not usable,
/// so no kernel piece may land there.
pub const LOW_RESERVED_AREA: Area = Area {
    start: LOW_MEMORY_END,
    end: HIGH_MEMORY,
    name: "EBDA/VGA/BIOS area",
};
/// The smallest guest RAM the loader accepts: 1 MiB of low memory plus at
/// least one page above it.
pub const MIN_RAM: u64 = HIGH_MEMORY + 0x1000;

/// Whether every range of `ram` lies inside one range of `mem` (the guest
/// memory the loader writes through).
pub(crate) fn ram_inside(ram: &vcpu::RamLayout, mem: &vcpu::RamLayout) -> bool {
    ram.ranges()
        .iter()
        .all(|r| mem.locate(r.gpa.0, r.len).is_some())
}

/// The low areas no PVH kernel piece may touch (the PVH loader keeps the
/// Multiboot1 area free as it always did).
pub(crate) const KEEP_OUT: [Area; 2] = [BOOT_INFO_AREA, LOW_RESERVED_AREA];
/// The low areas no Multiboot1, ELF64 or raw kernel piece may touch: the boot
/// information moves out of the kernel's way instead.
pub(crate) const KERNEL_KEEP_OUT: [Area; 1] = [LOW_RESERVED_AREA];

// The boot information pieces sit in order inside their area, below the
// reserved EBDA.
const _: () = assert!(crate::info::INFO_SIZE as u64 <= CMDLINE_OFFSET);
const _: () = assert!(CMDLINE_OFFSET < MMAP_OFFSET);
const _: () = assert!(MMAP_OFFSET + crate::info::MMAP_BYTES as u64 <= MODS_OFFSET);
const _: () = assert!(BOOT_INFO_AREA.end <= LOW_RESERVED_AREA.start);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_half_open() {
        assert!(BOOT_INFO_AREA.overlaps(0x8000, 0x9001));
        assert!(!BOOT_INFO_AREA.overlaps(0x8000, 0x9000));
        assert!(!BOOT_INFO_AREA.overlaps(0xA000, 0xB000));
        assert!(BOOT_INFO_AREA.overlaps(0x9FFF, 0xB000));
        assert!(BOOT_INFO_AREA.overlaps(0, u64::MAX));
        assert_eq!(CMDLINE_MAX, 1023);
    }
}
