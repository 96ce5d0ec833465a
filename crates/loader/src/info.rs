//! The Multiboot1 boot information the kernel finds through `EBX`: the
//! information structure, the command line and an e820-style memory map, all
//! at fixed low addresses (see the layout constants).
//!
//! A command line that does not fit its slot, or that holds a NUL byte, is an
//! error rather than silently cut: it comes from the scenario, where the user
//! can fix it.

use core::fmt;

use vcpu::{GuestMemError, GuestMemory};

use crate::layout::{
    BOOT_INFO_AREA, CMDLINE_GPA, CMDLINE_MAX, HIGH_MEMORY, INFO_GPA, LOW_MEMORY_END, MIN_RAM,
    MMAP_GPA,
};
use crate::segment::zero;

/// Bytes of the Multiboot1 information structure (through the framebuffer
/// fields).
pub(crate) const INFO_SIZE: usize = 116;
/// Memory map type: usable RAM.
pub const MMAP_AVAILABLE: u32 = 1;
/// Memory map type: reserved.
pub const MMAP_RESERVED: u32 = 2;
/// Bytes of one map entry, counting its leading `size` field.
const MMAP_ENTRY_BYTES: usize = 24;
/// Entries the map has at most: four below 4 GiB, one per further RAM range.
const MMAP_ENTRIES: usize = 3 + vcpu::MAX_RAM_RANGES;
/// Bytes the map takes at most.
pub(crate) const MMAP_BYTES: usize = MMAP_ENTRY_BYTES * MMAP_ENTRIES;

/// `flags` bits: mem_lower/mem_upper, cmdline, mmap_length/mmap_addr.
const FLAG_MEM: u32 = 1 << 0;
const FLAG_CMDLINE: u32 = 1 << 2;
const FLAG_MMAP: u32 = 1 << 6;

/// Why the boot information cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InfoError {
    /// Guest RAM is smaller than [`MIN_RAM`].
    RamTooSmall { ram_size: u64, min: u64 },
    /// The command line does not fit its slot.
    CmdlineTooLong { len: usize, max: usize },
    /// The command line holds a NUL byte, which would end it early.
    CmdlineHasNul { offset: usize },
    /// Guest RAM refused a write.
    Memory(GuestMemError),
}

impl fmt::Display for InfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InfoError::RamTooSmall { ram_size, min } => write!(
                f,
                "guest RAM of {ram_size:#x} bytes is smaller than the {min:#x} a kernel needs"
            ),
            InfoError::CmdlineTooLong { len, max } => {
                write!(
                    f,
                    "command line of {len} bytes is longer than the {max} allowed"
                )
            }
            InfoError::CmdlineHasNul { offset } => {
                write!(f, "command line has a NUL byte at offset {offset}")
            }
            InfoError::Memory(e) => write!(f, "writing the boot information failed: {e}"),
        }
    }
}

impl core::error::Error for InfoError {}

/// Checks what [`write`] would reject, without writing.
pub(crate) fn check(ram_size: u64, cmdline: &str) -> Result<(), InfoError> {
    if ram_size < MIN_RAM {
        return Err(InfoError::RamTooSmall {
            ram_size,
            min: MIN_RAM,
        });
    }
    if cmdline.len() > CMDLINE_MAX {
        return Err(InfoError::CmdlineTooLong {
            len: cmdline.len(),
            max: CMDLINE_MAX,
        });
    }
    if let Some(offset) = cmdline.bytes().position(|b| b == 0) {
        return Err(InfoError::CmdlineHasNul { offset });
    }
    Ok(())
}

/// The memory map for `ram_size` bytes of RAM: `(base, length, type)`.
fn memory_map(ram_size: u64) -> [(u64, u64, u32); 4] {
    [
        (0, LOW_MEMORY_END, MMAP_AVAILABLE),
        (LOW_MEMORY_END, 0xA_0000 - LOW_MEMORY_END, MMAP_RESERVED),
        (0xF_0000, HIGH_MEMORY - 0xF_0000, MMAP_RESERVED),
        (HIGH_MEMORY, ram_size - HIGH_MEMORY, MMAP_AVAILABLE),
    ]
}

/// Writes the whole boot information area and returns the structure's
/// guest-physical address (the kernel's `EBX`).
pub(crate) fn write(mem: &mut impl GuestMemory, cmdline: &str) -> Result<u64, InfoError> {
    let ram_size = mem.size();
    check(ram_size, cmdline)?;
    let area_len = BOOT_INFO_AREA.end - BOOT_INFO_AREA.start;
    zero(mem, BOOT_INFO_AREA.start, area_len).map_err(InfoError::Memory)?;

    // Command line, NUL-terminated (the zeroed area supplies the NUL).
    mem.write(CMDLINE_GPA, cmdline.as_bytes())
        .map_err(InfoError::Memory)?;

    // The low map, then every RAM range of the VM's layout above the first.
    let layout = mem.layout();
    let high = layout.ranges()[1..]
        .iter()
        .map(|r| (r.gpa.0, r.len, MMAP_AVAILABLE));
    let entries = 4 + layout.ranges().len() - 1;
    let mut map = [0u8; MMAP_BYTES];
    for (entry, (base, len, kind)) in map
        .chunks_exact_mut(MMAP_ENTRY_BYTES)
        .zip(memory_map(ram_size).into_iter().chain(high))
    {
        // `size` counts the bytes after itself.
        entry[0..4].copy_from_slice(&(MMAP_ENTRY_BYTES as u32 - 4).to_le_bytes());
        entry[4..12].copy_from_slice(&base.to_le_bytes());
        entry[12..20].copy_from_slice(&len.to_le_bytes());
        entry[20..24].copy_from_slice(&kind.to_le_bytes());
    }
    mem.write(MMAP_GPA, &map).map_err(InfoError::Memory)?;

    let mem_lower = (LOW_MEMORY_END / 1024) as u32;
    let mem_upper = u32::try_from((ram_size - HIGH_MEMORY) / 1024).unwrap_or(u32::MAX);
    let mut info = [0u8; INFO_SIZE];
    let mut put =
        |offset: usize, v: u32| info[offset..offset + 4].copy_from_slice(&v.to_le_bytes());
    put(0, FLAG_MEM | FLAG_CMDLINE | FLAG_MMAP);
    put(4, mem_lower);
    put(8, mem_upper);
    put(16, CMDLINE_GPA as u32);
    put(44, (entries * MMAP_ENTRY_BYTES) as u32);
    put(48, MMAP_GPA as u32);
    mem.write(INFO_GPA, &info).map_err(InfoError::Memory)?;
    Ok(INFO_GPA)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcpu::{GuestMemError, RamLayout, VecMemory};

    /// A VM of 5 GiB as its layout says; only the first MiB is backed here.
    struct FiveGib(VecMemory);

    impl GuestMemory for FiveGib {
        fn size(&self) -> u64 {
            RamLayout::new(5 << 30).low()
        }
        fn layout(&self) -> RamLayout {
            RamLayout::new(5 << 30)
        }
        fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemError> {
            self.0.read(gpa, buf)
        }
        fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), GuestMemError> {
            self.0.write(gpa, data)
        }
    }

    #[test]
    fn ram_above_4_gib_gets_its_own_map_entry() {
        let mut mem = FiveGib(VecMemory::new(0x10_0000));
        let info = write(&mut mem, "").unwrap();
        let len = mem.0.read_u32(info + 44).unwrap() as u64;
        assert_eq!(len, 5 * MMAP_ENTRY_BYTES as u64);
        let last = MMAP_GPA + 4 * MMAP_ENTRY_BYTES as u64;
        assert_eq!(mem.0.read_u64(last + 4).unwrap(), 1 << 32, "base");
        assert_eq!(mem.0.read_u64(last + 12).unwrap(), 2 << 30, "length");
        assert_eq!(mem.0.read_u32(last + 20).unwrap(), MMAP_AVAILABLE);
        // The low RAM entry ends at the PCI hole.
        let low = MMAP_GPA + 3 * MMAP_ENTRY_BYTES as u64;
        assert_eq!(mem.0.read_u64(low + 12).unwrap(), (3 << 30) - HIGH_MEMORY);
    }

    fn u32_at(mem: &VecMemory, gpa: u64) -> u32 {
        mem.read_u32(gpa).unwrap()
    }

    #[test]
    fn writes_structure_cmdline_and_map() {
        let ram = 64 << 20;
        let mut mem = VecMemory::new(ram);
        mem.0[0x9000..0xA000].fill(0xEE);
        assert_eq!(write(&mut mem, "console=ttyS0 quiet"), Ok(0x9000));

        assert_eq!(u32_at(&mem, 0x9000), 0b100_0101);
        assert_eq!(u32_at(&mem, 0x9004), 639);
        assert_eq!(u32_at(&mem, 0x9008), (64 << 10) - 1024);
        assert_eq!(u32_at(&mem, 0x900C), 0, "boot_device unset");
        assert_eq!(u32_at(&mem, 0x9010), 0x9400);
        assert_eq!(u32_at(&mem, 0x9014), 0, "no modules");
        assert_eq!(u32_at(&mem, 0x902C), 96);
        assert_eq!(u32_at(&mem, 0x9030), 0x9800);
        assert!(mem.0[0x9034..0x9074].iter().all(|&b| b == 0));

        assert_eq!(&mem.0[0x9400..0x9414], b"console=ttyS0 quiet\0");

        let expect: [(u64, u64, u32); 4] = [
            (0, 0x9_FC00, 1),
            (0x9_FC00, 0x400, 2),
            (0xF_0000, 0x1_0000, 2),
            (0x10_0000, (64 << 20) - 0x10_0000, 1),
        ];
        for (i, (base, len, kind)) in expect.iter().enumerate() {
            let e = 0x9800 + 24 * i as u64;
            assert_eq!(u32_at(&mem, e), 20, "entry {i} size");
            assert_eq!(mem.read_u64(e + 4).unwrap(), *base, "entry {i} base");
            assert_eq!(mem.read_u64(e + 12).unwrap(), *len, "entry {i} length");
            assert_eq!(u32_at(&mem, e + 20), *kind, "entry {i} type");
        }
        assert!(
            mem.0[0x9860..0xA000].iter().all(|&b| b == 0),
            "rest of area zeroed"
        );
    }

    #[test]
    fn cmdline_limits() {
        let mut mem = VecMemory::new(2 << 20);
        let longest = "x".repeat(CMDLINE_MAX);
        write(&mut mem, &longest).unwrap();
        assert_eq!(
            mem.0[0x9400 + CMDLINE_MAX],
            0,
            "NUL right after the longest line"
        );
        assert_eq!(
            write(&mut mem, &"x".repeat(CMDLINE_MAX + 1)),
            Err(InfoError::CmdlineTooLong {
                len: 1024,
                max: 1023
            })
        );
        assert_eq!(
            write(&mut mem, "a\0b"),
            Err(InfoError::CmdlineHasNul { offset: 1 })
        );
        write(&mut mem, "").unwrap();
        assert_eq!(mem.0[0x9400], 0);
    }

    #[test]
    fn small_ram_is_refused_and_huge_ram_saturates() {
        let mut mem = VecMemory::new(0x10_0000);
        assert_eq!(
            write(&mut mem, ""),
            Err(InfoError::RamTooSmall {
                ram_size: 0x10_0000,
                min: MIN_RAM
            })
        );
        let map = memory_map(u64::MAX);
        assert_eq!(map[3], (0x10_0000, u64::MAX - 0x10_0000, 1));
    }
}
