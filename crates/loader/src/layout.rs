//! The fixed low-memory layout the loader uses: where the boot information
//! goes and which low ranges no kernel piece may occupy.

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

/// The Multiboot1 information structure (116 bytes used).
pub const INFO_GPA: u64 = 0x9000;
/// The kernel command line, NUL-terminated.
pub const CMDLINE_GPA: u64 = 0x9400;
/// Longest command line in bytes, without its NUL (the slot is 1 KiB).
pub const CMDLINE_MAX: usize = (MMAP_GPA - CMDLINE_GPA) as usize - 1;
/// The memory map entries.
pub const MMAP_GPA: u64 = 0x9800;
/// Everything the loader writes besides the kernel: `INFO_GPA..0xA000`.
pub const BOOT_INFO_AREA: Area = Area {
    start: INFO_GPA,
    end: 0xA000,
    name: "boot information area",
};
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

/// The low areas no kernel piece may touch.
pub(crate) const KEEP_OUT: [Area; 2] = [BOOT_INFO_AREA, LOW_RESERVED_AREA];

// The boot information pieces sit in order inside their area, below the
// reserved EBDA.
const _: () = assert!(INFO_GPA + crate::info::INFO_SIZE as u64 <= CMDLINE_GPA);
const _: () = assert!(CMDLINE_GPA < MMAP_GPA);
const _: () = assert!(MMAP_GPA + crate::info::MMAP_BYTES as u64 <= BOOT_INFO_AREA.end);
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
