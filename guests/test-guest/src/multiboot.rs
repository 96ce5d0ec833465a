//! The Multiboot1 information structure: memory size, command line and
//! memory map. Every pointer in it is checked against the mapped RAM before
//! it is followed.

use crate::paging;

pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
const FLAG_MEM: u32 = 1 << 0;
const FLAG_CMDLINE: u32 = 1 << 2;
pub const FLAG_MODS: u32 = 1 << 3;
const FLAG_MMAP: u32 = 1 << 6;
/// Size of the fixed part we read (up to mmap_addr).
const INFO_LEN: u64 = 52;
const CMDLINE_MAX: usize = 256;

/// One memory map entry.
#[derive(Clone, Copy, Debug)]
pub struct MmapEntry {
    pub base: u64,
    pub len: u64,
    pub kind: u32,
}

/// What the guest uses from the boot information.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    /// EAX was 0x2BADB002 and the info block is readable.
    pub valid: bool,
    pub magic: u32,
    pub flags: u32,
    /// (mem_lower, mem_upper) in KiB.
    pub mem: Option<(u32, u32)>,
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    mmap: Option<(u64, u64)>,
    /// mods_count and mods_addr (flags bit 3).
    pub mods: Option<(u32, u32)>,
}

/// One boot module (Multiboot1 `mods_addr` entry).
#[derive(Clone, Copy, Debug)]
pub struct Module {
    pub start: u32,
    pub end: u32,
    /// Its command line (the first bytes), empty without one.
    pub cmdline: [u8; CMDLINE_MAX],
    pub cmdline_len: usize,
}

impl Module {
    pub fn cmdline(&self) -> &[u8] {
        &self.cmdline[..self.cmdline_len]
    }
}

fn readable(addr: u64, len: u64) -> bool {
    addr.checked_add(len)
        .is_some_and(|end| addr != 0 && end <= paging::mapped_ram_end())
}

fn read_u32(addr: u64) -> u32 {
    // SAFETY: callers checked `readable(addr, 4)`: identity-mapped RAM.
    unsafe { (addr as *const u32).read_unaligned() }
}

fn read_u64(addr: u64) -> u64 {
    // SAFETY: callers checked `readable(addr, 8)`.
    unsafe { (addr as *const u64).read_unaligned() }
}

impl BootInfo {
    /// Parses the info block at `info` if `magic` says there is one.
    pub fn parse(magic: u32, info: u32) -> Self {
        let mut b = BootInfo {
            valid: false,
            magic,
            flags: 0,
            mem: None,
            cmdline: [0; CMDLINE_MAX],
            cmdline_len: 0,
            mmap: None,
            mods: None,
        };
        let info = u64::from(info);
        if magic != BOOTLOADER_MAGIC || !readable(info, INFO_LEN) {
            return b;
        }
        b.valid = true;
        b.flags = read_u32(info);
        if b.flags & FLAG_MEM != 0 {
            b.mem = Some((read_u32(info + 4), read_u32(info + 8)));
        }
        if b.flags & FLAG_CMDLINE != 0 {
            let mut p = u64::from(read_u32(info + 16));
            while b.cmdline_len < CMDLINE_MAX && readable(p, 1) {
                // SAFETY: readable(p, 1) checked just above.
                let c = unsafe { (p as *const u8).read_volatile() };
                if c == 0 {
                    break;
                }
                b.cmdline[b.cmdline_len] = c;
                b.cmdline_len += 1;
                p += 1;
            }
        }
        if b.flags & FLAG_MODS != 0 {
            b.mods = Some((read_u32(info + 20), read_u32(info + 24)));
        }
        if b.flags & FLAG_MMAP != 0 {
            let len = u64::from(read_u32(info + 44));
            let addr = u64::from(read_u32(info + 48));
            if readable(addr, len) {
                b.mmap = Some((addr, len));
            }
        }
        b
    }

    /// The command line (the loader may put the kernel's path first).
    pub fn cmdline(&self) -> &[u8] {
        &self.cmdline[..self.cmdline_len]
    }

    /// True if `word` is one of the command line's space-separated words.
    pub fn has_word(&self, word: &[u8]) -> bool {
        self.cmdline()
            .split(|&c| c == b' ' || c == b'\t')
            .any(|w| w == word)
    }

    /// The value of the command line's first `key=value` word.
    pub fn word_value(&self, key: &[u8]) -> Option<&[u8]> {
        self.cmdline()
            .split(|&c| c == b' ' || c == b'\t')
            .find_map(|w| w.strip_prefix(key)?.strip_prefix(b"="))
    }

    /// The end of RAM according to mem_upper (KiB above 1 MiB).
    pub fn ram_end(&self) -> Option<u64> {
        self.mem.map(|(_, upper)| (u64::from(upper) + 1024) * 1024)
    }

    /// The memory map's entries (empty without one).
    pub fn mmap(&self) -> MmapIter {
        let (start, len) = self.mmap.unwrap_or((0, 0));
        MmapIter {
            at: start,
            end: start + len,
        }
    }

    /// Module `i` of `mods_addr`, if its entry lies in mapped RAM.
    pub fn module(&self, i: u32) -> Option<Module> {
        let (count, addr) = self.mods?;
        if i >= count {
            return None;
        }
        let entry = u64::from(addr) + 16 * u64::from(i);
        if !readable(entry, 16) {
            return None;
        }
        let mut m = Module {
            start: read_u32(entry),
            end: read_u32(entry + 4),
            cmdline: [0; CMDLINE_MAX],
            cmdline_len: 0,
        };
        let mut p = u64::from(read_u32(entry + 8));
        while m.cmdline_len < m.cmdline.len() && readable(p, 1) {
            // SAFETY: readable(p, 1) checked just above.
            let c = unsafe { (p as *const u8).read_volatile() };
            if c == 0 {
                break;
            }
            m.cmdline[m.cmdline_len] = c;
            m.cmdline_len += 1;
            p += 1;
        }
        Some(m)
    }

    /// True if `addr..addr + len` lies in the mapped RAM (module data can be read).
    pub fn is_readable(addr: u64, len: u64) -> bool {
        readable(addr, len)
    }

    pub fn has_mmap(&self) -> bool {
        self.mmap.is_some()
    }
}

/// Walks the memory map: each entry is `size: u32` then `size` bytes
/// (base: u64, length: u64, type: u32).
pub struct MmapIter {
    at: u64,
    end: u64,
}

impl Iterator for MmapIter {
    type Item = MmapEntry;

    fn next(&mut self) -> Option<MmapEntry> {
        if self.at + 24 > self.end {
            return None;
        }
        let size = u64::from(read_u32(self.at));
        let e = MmapEntry {
            base: read_u64(self.at + 4),
            len: read_u64(self.at + 12),
            kind: read_u32(self.at + 20),
        };
        // A size below 20 would not advance past the entry: stop there.
        self.at = if size >= 20 {
            self.at + 4 + size
        } else {
            self.end
        };
        Some(e)
    }
}
