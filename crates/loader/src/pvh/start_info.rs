//! The structures of Xen's PVH boot ABI (xen/include/public/arch-x86/hvm/
//! start_info.h, version 1) assembled in local buffers, little-endian,
//! packed at the offsets that header gives: `struct hvm_start_info`,
//! `struct hvm_modlist_entry` and `struct hvm_memmap_table_entry`.

use alloc::vec::Vec;

use crate::bzimage::E820Entry;

/// `hvm_start_info.magic` ("xEn3" with the top bit of the last byte clear).
pub const HVM_START_MAGIC: u32 = 0x336E_C578;
/// The start info version written: 1, the first with the memory map fields.
pub const HVM_START_INFO_VERSION: u32 = 1;
/// Bytes of `struct hvm_start_info` (version 1).
pub const START_INFO_LEN: usize = 56;
/// Bytes of `struct hvm_modlist_entry`.
pub const MODLIST_ENTRY_LEN: usize = 32;
/// Bytes of `struct hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_LEN: usize = 24;

// hvm_start_info fields.
const MAGIC: usize = 0;
const VERSION: usize = 4;
const FLAGS: usize = 8;
const NR_MODULES: usize = 12;
const MODLIST_PADDR: usize = 16;
const CMDLINE_PADDR: usize = 24;
const RSDP_PADDR: usize = 32;
const MEMMAP_PADDR: usize = 40;
const MEMMAP_ENTRIES: usize = 48;
// `reserved` (u32 at 52) stays zero.

/// What the start info tells the kernel; 0 means "none" for every address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StartInfo {
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
}

fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

impl StartInfo {
    /// `struct hvm_start_info`, flags 0.
    pub(crate) fn bytes(&self) -> [u8; START_INFO_LEN] {
        let mut b = [0u8; START_INFO_LEN];
        put(&mut b, MAGIC, &HVM_START_MAGIC.to_le_bytes());
        put(&mut b, VERSION, &HVM_START_INFO_VERSION.to_le_bytes());
        put(&mut b, FLAGS, &0u32.to_le_bytes());
        put(&mut b, NR_MODULES, &self.nr_modules.to_le_bytes());
        put(&mut b, MODLIST_PADDR, &self.modlist_paddr.to_le_bytes());
        put(&mut b, CMDLINE_PADDR, &self.cmdline_paddr.to_le_bytes());
        put(&mut b, RSDP_PADDR, &self.rsdp_paddr.to_le_bytes());
        put(&mut b, MEMMAP_PADDR, &self.memmap_paddr.to_le_bytes());
        put(&mut b, MEMMAP_ENTRIES, &self.memmap_entries.to_le_bytes());
        b
    }
}

/// `struct hvm_modlist_entry` of a module at `paddr` of `size` bytes,
/// without a command line.
pub(crate) fn module_entry(paddr: u64, size: u64) -> [u8; MODLIST_ENTRY_LEN] {
    let mut b = [0u8; MODLIST_ENTRY_LEN];
    put(&mut b, 0, &paddr.to_le_bytes());
    put(&mut b, 8, &size.to_le_bytes());
    // cmdline_paddr (16) and reserved (24) stay zero.
    b
}

/// The memory map table: one `struct hvm_memmap_table_entry` per e820
/// entry, with the e820 type numbers.
pub(crate) fn memmap(map: &[E820Entry]) -> Vec<u8> {
    let mut b = Vec::with_capacity(map.len() * MEMMAP_ENTRY_LEN);
    for e in map {
        b.extend_from_slice(&e.addr.to_le_bytes());
        b.extend_from_slice(&e.size.to_le_bytes());
        b.extend_from_slice(&(e.kind as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bzimage::E820Kind;

    #[test]
    fn start_info_fields_sit_at_the_header_offsets() {
        let b = StartInfo {
            nr_modules: 1,
            modlist_paddr: 0x1122_3344_5566_7788,
            cmdline_paddr: 0x2_0000,
            rsdp_paddr: 0xE_0000,
            memmap_paddr: 0x7080,
            memmap_entries: 3,
        }
        .bytes();
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        assert_eq!(&b[..4], &[0x78, 0xC5, 0x6E, 0x33]);
        assert_eq!((u32_at(4), u32_at(8), u32_at(12)), (1, 0, 1));
        assert_eq!(u64_at(16), 0x1122_3344_5566_7788);
        assert_eq!(
            (u64_at(24), u64_at(32), u64_at(40)),
            (0x2_0000, 0xE_0000, 0x7080)
        );
        assert_eq!((u32_at(48), u32_at(52)), (3, 0));
    }

    #[test]
    fn module_and_memmap_entries() {
        let m = module_entry(0xFFF0_0000, 0x1234);
        assert_eq!(&m[..8], &0xFFF0_0000u64.to_le_bytes());
        assert_eq!(&m[8..16], &0x1234u64.to_le_bytes());
        assert!(m[16..].iter().all(|&x| x == 0));
        let map = [
            E820Entry {
                addr: 0,
                size: 0x9_FC00,
                kind: E820Kind::Ram,
            },
            E820Entry {
                addr: 0x9_FC00,
                size: 0x6_0400,
                kind: E820Kind::Acpi,
            },
        ];
        let t = memmap(&map);
        assert_eq!(t.len(), 2 * MEMMAP_ENTRY_LEN);
        assert_eq!(&t[8..16], &0x9_FC00u64.to_le_bytes());
        assert_eq!(&t[16..24], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&t[24..32], &0x9_FC00u64.to_le_bytes());
        assert_eq!(&t[40..48], &[3, 0, 0, 0, 0, 0, 0, 0]);
    }
}
