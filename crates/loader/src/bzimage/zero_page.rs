//! The zero page (`struct boot_params`, Documentation/arch/x86/zero-page.rst)
//! assembled in a local 4 KiB buffer: all zero, the kernel's setup header
//! copied in at 0x1F1, the loader's fields of that header filled, then the
//! RSDP, the high halves of the 32-bit pointers, and the e820 table.

use alloc::vec;
use alloc::vec::Vec;

use super::e820::E820Entry;
use super::header::{SetupHeader, CAN_USE_HEAP, SETUP_HEADER_START};

/// Size of `struct boot_params`.
pub const ZERO_PAGE_LEN: usize = 0x1000;

// boot_params fields outside the setup header.
const ACPI_RSDP_ADDR: usize = 0x070;
const EXT_RAMDISK_IMAGE: usize = 0x0C0;
const EXT_RAMDISK_SIZE: usize = 0x0C4;
const EXT_CMD_LINE_PTR: usize = 0x0C8;
const E820_ENTRIES: usize = 0x1E8;
const E820_TABLE: usize = 0x2D0;
const E820_ENTRY_LEN: usize = 20;

// Setup header fields the loader writes (same offsets as in the image).
const VID_MODE: usize = 0x1FA;
const TYPE_OF_LOADER: usize = 0x210;
const LOADFLAGS: usize = 0x211;
const CODE32_START: usize = 0x214;
const RAMDISK_IMAGE: usize = 0x218;
const RAMDISK_SIZE: usize = 0x21C;
const HEAP_END_PTR: usize = 0x224;
const EXT_LOADER_VER: usize = 0x226;
const EXT_LOADER_TYPE: usize = 0x227;
const CMD_LINE_PTR: usize = 0x228;
const HARDWARE_SUBARCH: usize = 0x23C;
const SETUP_DATA: usize = 0x250;

/// `vid_mode`: "normal" text mode (the real-mode setup that reads it does
/// not run on the 64-bit path).
const VID_MODE_NORMAL: u16 = 0xFFFF;
/// `type_of_loader`: a loader without an assigned ID.
const LOADER_UNDEFINED: u8 = 0xFF;
/// `heap_end_ptr`: the setup heap would end 64 KiB into the real-mode
/// segment (0xFE00 + 0x200). Set with CAN_USE_HEAP as the protocol asks of
/// every loader, though the setup code does not run here.
const HEAP_END: u16 = 0xFE00;
/// Protocol version from which the kernel reads `acpi_rsdp_addr`.
pub const RSDP_PROTOCOL: u16 = 0x020E;

/// What the loader tells the kernel.
pub(crate) struct ZeroPage<'a> {
    pub header: &'a SetupHeader,
    /// The image's header bytes `0x1F1..header.header_end`.
    pub header_bytes: &'a [u8],
    pub kernel_gpa: u64,
    pub cmdline_gpa: u64,
    /// Guest-physical address and length of the initrd.
    pub initrd: Option<(u64, u64)>,
    pub rsdp: Option<u64>,
    pub e820: &'a [E820Entry],
}

fn put(page: &mut [u8], off: usize, bytes: &[u8]) {
    page[off..off + bytes.len()].copy_from_slice(bytes);
}

fn low(v: u64) -> [u8; 4] {
    (v as u32).to_le_bytes()
}

fn high(v: u64) -> [u8; 4] {
    ((v >> 32) as u32).to_le_bytes()
}

impl ZeroPage<'_> {
    /// The 4 KiB page. Preconditions (checked by the caller): the header
    /// bytes end at or before 0x290 (the hole `struct boot_params` leaves
    /// for them) and the e820 table has at most 128 entries.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        debug_assert!(SETUP_HEADER_START + self.header_bytes.len() <= 0x290);
        debug_assert!(self.e820.len() <= super::e820::E820_MAX_ENTRIES);
        let mut page = vec![0u8; ZERO_PAGE_LEN];
        put(&mut page, SETUP_HEADER_START, self.header_bytes);

        put(&mut page, VID_MODE, &VID_MODE_NORMAL.to_le_bytes());
        page[TYPE_OF_LOADER] = LOADER_UNDEFINED;
        page[EXT_LOADER_VER] = 0;
        page[EXT_LOADER_TYPE] = 0;
        page[LOADFLAGS] = self.header.loadflags | CAN_USE_HEAP;
        put(&mut page, HEAP_END_PTR, &HEAP_END.to_le_bytes());
        put(&mut page, CODE32_START, &low(self.kernel_gpa));
        put(&mut page, CMD_LINE_PTR, &low(self.cmdline_gpa));
        put(&mut page, EXT_CMD_LINE_PTR, &high(self.cmdline_gpa));
        let (initrd_gpa, initrd_len) = self.initrd.unwrap_or((0, 0));
        put(&mut page, RAMDISK_IMAGE, &low(initrd_gpa));
        put(&mut page, RAMDISK_SIZE, &low(initrd_len));
        put(&mut page, EXT_RAMDISK_IMAGE, &high(initrd_gpa));
        put(&mut page, EXT_RAMDISK_SIZE, &high(initrd_len));
        // A plain PC, and no setup_data list whatever the image held there.
        put(&mut page, HARDWARE_SUBARCH, &0u32.to_le_bytes());
        put(&mut page, SETUP_DATA, &0u64.to_le_bytes());
        if let Some(rsdp) = self.rsdp {
            if self.header.version >= RSDP_PROTOCOL {
                put(&mut page, ACPI_RSDP_ADDR, &rsdp.to_le_bytes());
            }
        }

        // At most 128 entries: the cast cannot truncate.
        page[E820_ENTRIES] = self.e820.len() as u8;
        for (i, e) in self.e820.iter().enumerate() {
            let off = E820_TABLE + i * E820_ENTRY_LEN;
            put(&mut page, off, &e.addr.to_le_bytes());
            put(&mut page, off + 8, &e.size.to_le_bytes());
            put(&mut page, off + 16, &(e.kind as u32).to_le_bytes());
        }
        page
    }
}

#[cfg(test)]
mod tests {
    use super::super::e820::{e820_map, E820Kind};
    use super::super::header::tests::Fields;
    use super::*;
    use crate::bytes::{u16_at, u32_at, u64_at};

    #[test]
    fn fields_land_at_their_offsets() {
        let image = Fields::default().image();
        let header = SetupHeader::parse(&image).unwrap();
        let e820 = e820_map(256 << 20, &[]).unwrap();
        let zp = ZeroPage {
            header: &header,
            header_bytes: &image[SETUP_HEADER_START..header.header_end],
            kernel_gpa: 0x100_0000,
            cmdline_gpa: 0x2_0000,
            initrd: Some((0x7F00_0000, 0x12_3456)),
            rsdp: Some(0xE_0000),
            e820: &e820,
        };
        let page = zp.bytes();
        assert_eq!(page.len(), 4096);
        // Untouched header fields come from the image.
        assert_eq!(&page[0x202..0x206], b"HdrS");
        assert_eq!(u16_at(&page, 0x206), Some(0x020F));
        assert_eq!(u32_at(&page, 0x260), Some(0x40_0000));
        // Past the header: zero.
        assert!(page[0x26C..0x290].iter().all(|&b| b == 0));
        assert_eq!(page[0x1EF], 0, "sentinel");
        assert_eq!(page[TYPE_OF_LOADER], 0xFF);
        assert_eq!(page[LOADFLAGS], 0x81);
        assert_eq!(u16_at(&page, HEAP_END_PTR), Some(0xFE00));
        assert_eq!(u16_at(&page, VID_MODE), Some(0xFFFF));
        assert_eq!(u32_at(&page, CODE32_START), Some(0x100_0000));
        assert_eq!(u32_at(&page, CMD_LINE_PTR), Some(0x2_0000));
        assert_eq!(u32_at(&page, RAMDISK_IMAGE), Some(0x7F00_0000));
        assert_eq!(u32_at(&page, RAMDISK_SIZE), Some(0x12_3456));
        assert_eq!(u32_at(&page, EXT_RAMDISK_IMAGE), Some(0));
        assert_eq!(u64_at(&page, SETUP_DATA), Some(0), "stale pointer cleared");
        assert_eq!(u64_at(&page, ACPI_RSDP_ADDR), Some(0xE_0000));
        assert_eq!(page[E820_ENTRIES], 3);
        let entry = |i: usize| {
            let off = E820_TABLE + i * 20;
            (
                u64_at(&page, off).unwrap(),
                u64_at(&page, off + 8).unwrap(),
                u32_at(&page, off + 16).unwrap(),
            )
        };
        assert_eq!(entry(0), (0, 0x9_FC00, 1));
        assert_eq!(entry(1), (0x9_FC00, 0x6_0400, 2));
        assert_eq!(
            entry(2),
            (0x10_0000, (256 << 20) - 0x10_0000, E820Kind::Ram as u32)
        );
        assert_eq!(entry(3), (0, 0, 0));
    }

    #[test]
    fn high_halves_and_old_protocols() {
        let image = Fields {
            version: 0x020D,
            ..Fields::default()
        }
        .image();
        let header = SetupHeader::parse(&image).unwrap();
        let zp = ZeroPage {
            header: &header,
            header_bytes: &image[SETUP_HEADER_START..header.header_end],
            kernel_gpa: 0x100_0000,
            cmdline_gpa: 0x1_0002_0000,
            initrd: Some((0x2_0000_1000, 0x3_0000_0000)),
            rsdp: Some(0xE_0000),
            e820: &[],
        };
        let page = zp.bytes();
        assert_eq!(u32_at(&page, CMD_LINE_PTR), Some(0x2_0000));
        assert_eq!(u32_at(&page, EXT_CMD_LINE_PTR), Some(1));
        assert_eq!(u32_at(&page, RAMDISK_IMAGE), Some(0x1000));
        assert_eq!(u32_at(&page, EXT_RAMDISK_IMAGE), Some(2));
        assert_eq!(u32_at(&page, RAMDISK_SIZE), Some(0));
        assert_eq!(u32_at(&page, EXT_RAMDISK_SIZE), Some(3));
        // Protocol 2.13 predates acpi_rsdp_addr: the field stays zero.
        assert_eq!(u64_at(&page, ACPI_RSDP_ADDR), Some(0));
        assert_eq!(page[E820_ENTRIES], 0);
    }
}
