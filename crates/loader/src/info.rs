//! The Multiboot1 boot information the kernel finds through `EBX`: the
//! information structure, the command line, an e820-style memory map and the
//! module list with the modules' strings, in one area at fixed offsets (see
//! the layout constants). The area goes at [`INFO_GPA`] when the kernel
//! leaves it free, else at the first free candidate ([`place`]).
//!
//! A command line that does not fit its slot, or that holds a NUL byte, is an
//! error rather than silently cut: it comes from the scenario, where the user
//! can fix it.

use core::fmt;

use vcpu::{GuestMemError, GuestMemory};

use alloc::vec::Vec;

#[cfg(doc)]
use crate::layout::INFO_GPA;
use crate::layout::{
    CMDLINE_MAX, CMDLINE_OFFSET, HIGH_MEMORY, INFO_CANDIDATES, LOW_MEMORY_END, MIN_RAM,
    MMAP_OFFSET, MODS_OFFSET,
};
use crate::modules::{page_up, Module};
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

/// Bytes of one module list entry: mod_start, mod_end, string, reserved.
pub(crate) const MODULE_ENTRY_BYTES: u64 = 16;

/// `flags` bits: mem_lower/mem_upper, cmdline, mods_count/mods_addr,
/// mmap_length/mmap_addr.
const FLAG_MEM: u32 = 1 << 0;
const FLAG_CMDLINE: u32 = 1 << 2;
const FLAG_MODS: u32 = 1 << 3;
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
    /// The kernel covers every low candidate for the `len`-byte area, and
    /// there is no room for it from `above` (the first page past the kernel
    /// and the modules) to `limit`.
    NoRoom { len: u64, above: u64, limit: u64 },
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
            InfoError::NoRoom { len, above, limit } => write!(
                f,
                "no room for the {len:#x}-byte boot information: the kernel covers {INFO_CANDIDATES:#x?} and there is no room between {above:#x} (past the kernel and modules) and {limit:#x}"
            ),
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

/// Bytes of the boot information area for `modules`: the fixed part, then
/// one list entry and one NUL-terminated string per module.
pub(crate) fn area_len(modules: &[Module<'_>]) -> u64 {
    let per_module: u64 = modules
        .iter()
        .map(|m| MODULE_ENTRY_BYTES + m.cmdline.len() as u64 + 1)
        .sum();
    MODS_OFFSET + per_module
}

/// Where the `len`-byte area starts: the first of [`INFO_CANDIDATES`] that
/// keeps it below [`LOW_MEMORY_END`] and off every `taken` range (the
/// kernel's pieces, the modules), else the first page at or above `above`
/// and 1 MiB when the area ends there at or below `limit`.
pub(crate) fn place(
    len: u64,
    taken: &[(u64, u64)],
    above: u64,
    limit: u64,
) -> Result<u64, InfoError> {
    let free = |start: u64, end: u64| !taken.iter().any(|&(s, e)| start < e && s < end);
    for start in INFO_CANDIDATES {
        if let Some(end) = start.checked_add(len) {
            if end <= LOW_MEMORY_END && free(start, end) {
                return Ok(start);
            }
        }
    }
    let high = page_up(above.max(HIGH_MEMORY));
    if let Some((start, end)) = high.and_then(|s| Some((s, s.checked_add(len)?))) {
        if end <= limit && free(start, end) {
            return Ok(start);
        }
    }
    Err(InfoError::NoRoom {
        len,
        above: high.unwrap_or(u64::MAX),
        limit,
    })
}

/// A guest-physical address for a 32-bit field. [`place`] and
/// [`crate::modules::place`] keep everything below 4 GiB, so this never
/// saturates.
fn field32(gpa: u64) -> u32 {
    u32::try_from(gpa).unwrap_or(u32::MAX)
}

/// Writes the whole boot information area at `base` (from [`place`]), with
/// `modules` at `placed` (from [`crate::modules::place`]), and returns the
/// structure's guest-physical address (the kernel's `EBX`).
pub(crate) fn write(
    mem: &mut impl GuestMemory,
    base: u64,
    cmdline: &str,
    modules: &[Module<'_>],
    placed: &[(u64, u64)],
) -> Result<u64, InfoError> {
    let ram_size = mem.size();
    check(ram_size, cmdline)?;
    zero(mem, base, area_len(modules)).map_err(InfoError::Memory)?;

    // Command line, NUL-terminated (the zeroed area supplies the NUL).
    mem.write(base + CMDLINE_OFFSET, cmdline.as_bytes())
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
    mem.write(base + MMAP_OFFSET, &map)
        .map_err(InfoError::Memory)?;

    // The module list, then the strings it points at (the area is zeroed,
    // and each string is followed by a zero byte left in place).
    let mods_gpa = base + MODS_OFFSET;
    if !modules.is_empty() {
        let list_len = MODULE_ENTRY_BYTES * modules.len() as u64;
        let mut list = Vec::with_capacity((area_len(modules) - MODS_OFFSET) as usize);
        let mut string_gpa = mods_gpa + list_len;
        for (m, &(start, end)) in modules.iter().zip(placed) {
            for field in [start, end, string_gpa, 0] {
                list.extend_from_slice(&field32(field).to_le_bytes());
            }
            string_gpa += m.cmdline.len() as u64 + 1;
        }
        for m in modules {
            list.extend_from_slice(m.cmdline.as_bytes());
            list.push(0);
        }
        mem.write(mods_gpa, &list).map_err(InfoError::Memory)?;
    }

    let mem_lower = (LOW_MEMORY_END / 1024) as u32;
    let mem_upper = u32::try_from((ram_size - HIGH_MEMORY) / 1024).unwrap_or(u32::MAX);
    let mut info = [0u8; INFO_SIZE];
    let mut put =
        |offset: usize, v: u32| info[offset..offset + 4].copy_from_slice(&v.to_le_bytes());
    let mods_flag = if modules.is_empty() { 0 } else { FLAG_MODS };
    put(0, FLAG_MEM | FLAG_CMDLINE | mods_flag | FLAG_MMAP);
    put(4, mem_lower);
    put(8, mem_upper);
    put(16, field32(base + CMDLINE_OFFSET));
    if !modules.is_empty() {
        // At most MAX_MODULES, checked before.
        put(20, modules.len() as u32);
        put(24, field32(mods_gpa));
    }
    put(44, (entries * MMAP_ENTRY_BYTES) as u32);
    put(48, field32(base + MMAP_OFFSET));
    mem.write(base, &info).map_err(InfoError::Memory)?;
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{INFO_GPA, MMAP_OFFSET};
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
        let info = write(&mut mem, INFO_GPA, "", &[], &[]).unwrap();
        let len = mem.0.read_u32(info + 44).unwrap() as u64;
        assert_eq!(len, 5 * MMAP_ENTRY_BYTES as u64);
        let last = INFO_GPA + MMAP_OFFSET + 4 * MMAP_ENTRY_BYTES as u64;
        assert_eq!(mem.0.read_u64(last + 4).unwrap(), 1 << 32, "base");
        assert_eq!(mem.0.read_u64(last + 12).unwrap(), 2 << 30, "length");
        assert_eq!(mem.0.read_u32(last + 20).unwrap(), MMAP_AVAILABLE);
        // The low RAM entry ends at the PCI hole.
        let low = INFO_GPA + MMAP_OFFSET + 3 * MMAP_ENTRY_BYTES as u64;
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
        assert_eq!(
            write(&mut mem, INFO_GPA, "console=ttyS0 quiet", &[], &[]),
            Ok(0x9000)
        );

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
        write(&mut mem, INFO_GPA, &longest, &[], &[]).unwrap();
        assert_eq!(
            mem.0[0x9400 + CMDLINE_MAX],
            0,
            "NUL right after the longest line"
        );
        assert_eq!(
            write(&mut mem, INFO_GPA, &"x".repeat(CMDLINE_MAX + 1), &[], &[]),
            Err(InfoError::CmdlineTooLong {
                len: 1024,
                max: 1023
            })
        );
        assert_eq!(
            write(&mut mem, INFO_GPA, "a\0b", &[], &[]),
            Err(InfoError::CmdlineHasNul { offset: 1 })
        );
        write(&mut mem, INFO_GPA, "", &[], &[]).unwrap();
        assert_eq!(mem.0[0x9400], 0);
    }

    #[test]
    fn small_ram_is_refused_and_huge_ram_saturates() {
        let mut mem = VecMemory::new(0x10_0000);
        assert_eq!(
            write(&mut mem, INFO_GPA, "", &[], &[]),
            Err(InfoError::RamTooSmall {
                ram_size: 0x10_0000,
                min: MIN_RAM
            })
        );
        let map = memory_map(u64::MAX);
        assert_eq!(map[3], (0x10_0000, u64::MAX - 0x10_0000, 1));
    }

    #[test]
    fn module_list_and_strings() {
        let mut mem = VecMemory::new(4 << 20);
        mem.0.fill(0xEE);
        let (a, b) = ([1u8; 4], [2u8; 2]);
        let mods = [
            Module {
                data: &a,
                cmdline: "testdata one two",
            },
            Module {
                data: &b,
                cmdline: "",
            },
        ];
        let placed = [(0x10_0000, 0x10_0004), (0x10_1000, 0x10_1002)];
        let base = 0x1000;
        assert_eq!(write(&mut mem, base, "k", &mods, &placed), Ok(base));
        assert_eq!(u32_at(&mem, base), 0b100_1101, "flags with bit 3");
        assert_eq!(
            u32_at(&mem, base + 16),
            0x1400,
            "cmdline moved with the area"
        );
        assert_eq!(u32_at(&mem, base + 20), 2, "mods_count");
        assert_eq!(u32_at(&mem, base + 24), 0x2000, "mods_addr");
        assert_eq!(u32_at(&mem, base + 48), 0x1800, "mmap_addr");
        let strings = 0x2000 + 2 * 16;
        let expect = [
            [0x10_0000, 0x10_0004, strings, 0],
            [0x10_1000, 0x10_1002, strings + 17, 0],
        ];
        for (i, fields) in expect.iter().enumerate() {
            for (j, want) in fields.iter().enumerate() {
                let at = 0x2000 + 16 * i as u64 + 4 * j as u64;
                assert_eq!(u32_at(&mem, at), *want, "module {i} field {j}");
            }
        }
        let s = strings as usize;
        assert_eq!(&mem.0[s..s + 18], b"testdata one two\0\0");
        let end = (base + area_len(&mods)) as usize;
        assert_eq!(end, s + 18);
        assert_eq!(mem.0[end], 0xEE, "nothing written past the area");
        assert_eq!(mem.0[0xFFF], 0xEE, "nothing written before it");
    }

    #[test]
    fn area_placement() {
        let len = area_len(&[]);
        assert_eq!(len, 0x1000);
        let limit = 64 << 20;
        assert_eq!(place(len, &[], 0, limit), Ok(0x9000));
        // A kernel at 0x8000 pushes it to 0x1000, one over 0x1000 too to
        // 0x90000, one over that as well past the modules.
        assert_eq!(place(len, &[(0x8000, 0x9001)], 0, limit), Ok(0x1000));
        let low = [(0x1800, 0x1801), (0x9FFF, 0xA000)];
        assert_eq!(place(len, &low, 0, limit), Ok(0x9_0000));
        let all = [(0, 0x9_0001), (0x10_0000, 0x20_0000)];
        assert_eq!(place(len, &all, 0x30_0001, limit), Ok(0x30_1000));
        // Past 0x9FC00 is not a low candidate.
        assert_eq!(place(0xFC01, &[(0, 0x9_0000)], 0, limit), Ok(0x10_0000));
        // The kernel covers everything low and RAM ends right after it.
        assert_eq!(
            place(len, &[(0, 0x9_FC00)], limit - 0xFFF, limit),
            Err(InfoError::NoRoom {
                len,
                above: limit,
                limit
            })
        );
        assert_eq!(
            place(len, &[(0, 0x9_FC00)], u64::MAX, limit),
            Err(InfoError::NoRoom {
                len,
                above: u64::MAX,
                limit
            })
        );
        assert!(place(u64::MAX, &[], 0, u64::MAX).is_err(), "huge area");
    }
}
