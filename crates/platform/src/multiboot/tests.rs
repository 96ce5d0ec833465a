//! Tests for the multiboot parsers, on info structures built byte by byte.

extern crate std;

use std::string::ToString;
use std::vec::Vec;
use std::{format, vec};

use super::*;
use crate::phys_memory::SliceMemory;

const MB2_BASE: u64 = 0x9000;
const MB1_BASE: u64 = 0x1_0000;

fn region(base: u64, len: u64, kind: MemoryKind) -> MemoryRegion {
    MemoryRegion::new(
        PhysRange::from_base_len(HostPhysAddr(base), len).unwrap(),
        kind,
    )
}

/// An E820-style entry as both protocols lay it out (reserved word included).
fn mmap_entry(base: u64, len: u64, kind: u32) -> Vec<u8> {
    let mut e = Vec::new();
    e.extend_from_slice(&base.to_le_bytes());
    e.extend_from_slice(&len.to_le_bytes());
    e.extend_from_slice(&kind.to_le_bytes());
    e.extend_from_slice(&0u32.to_le_bytes());
    e
}

fn qemu_entries() -> Vec<(u64, u64, u32)> {
    vec![
        (0, 0x9fc00, 1),
        (0x9fc00, 0x400, 2),
        (0xf0000, 0x10000, 2),
        (0x10_0000, 0x7ee_0000, 1),
        (0x7fe_0000, 0x2_0000, 2),
        (0xfffc_0000, 0x4_0000, 2),
    ]
}

fn rsdp_v1() -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(b"RSD PTR ");
    r.push(0);
    r.extend_from_slice(b"BOCHS ");
    r.push(0);
    r.extend_from_slice(&0x7fe_1234u32.to_le_bytes());
    r[8] = 0u8.wrapping_sub(checksum(&r));
    r
}

fn rsdp_v2() -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(b"RSD PTR ");
    r.push(0);
    r.extend_from_slice(b"BOCHS ");
    r.push(2);
    r.extend_from_slice(&0x7fe_1234u32.to_le_bytes());
    r.extend_from_slice(&36u32.to_le_bytes());
    r.extend_from_slice(&0x7fe_5678u64.to_le_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r[8] = 0u8.wrapping_sub(checksum(&r[..20]));
    r[32] = 0u8.wrapping_sub(checksum(&r));
    r
}

/// Builds a multiboot2 info block tag by tag.
struct Mb2 {
    bytes: Vec<u8>,
}

impl Mb2 {
    fn new() -> Self {
        Self { bytes: vec![0; 8] }
    }

    fn raw_tag(mut self, tag_type: u32, size: u32, body: &[u8]) -> Self {
        self.bytes.extend_from_slice(&tag_type.to_le_bytes());
        self.bytes.extend_from_slice(&size.to_le_bytes());
        self.bytes.extend_from_slice(body);
        while self.bytes.len() % 8 != 0 {
            self.bytes.push(0);
        }
        self
    }

    fn tag(self, tag_type: u32, body: &[u8]) -> Self {
        let size = 8 + body.len() as u32;
        self.raw_tag(tag_type, size, body)
    }

    fn string(self, tag_type: u32, s: &str) -> Self {
        let mut body = s.as_bytes().to_vec();
        body.push(0);
        self.tag(tag_type, &body)
    }

    fn module(self, start: u32, end: u32, cmdline: &str) -> Self {
        let mut body = Vec::new();
        body.extend_from_slice(&start.to_le_bytes());
        body.extend_from_slice(&end.to_le_bytes());
        body.extend_from_slice(cmdline.as_bytes());
        body.push(0);
        self.tag(3, &body)
    }

    fn mmap_sized(self, entry_size: u32, entries: &[(u64, u64, u32)]) -> Self {
        let mut body = Vec::new();
        body.extend_from_slice(&entry_size.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        for &(base, len, kind) in entries {
            let mut e = mmap_entry(base, len, kind);
            e.resize(entry_size as usize, 0xee);
            body.extend_from_slice(&e);
        }
        self.tag(6, &body)
    }

    fn mmap(self, entries: &[(u64, u64, u32)]) -> Self {
        self.mmap_sized(24, entries)
    }

    /// Appends the end tag and fills in `total_size`.
    fn finish(self) -> Vec<u8> {
        let mut b = self.tag(0, &[]).bytes;
        let total = b.len() as u32;
        b[..4].copy_from_slice(&total.to_le_bytes());
        b
    }

    /// Fills in `total_size` without an end tag.
    fn finish_without_end(self) -> Vec<u8> {
        let mut b = self.bytes;
        let total = b.len() as u32;
        b[..4].copy_from_slice(&total.to_le_bytes());
        b
    }
}

fn parse_mb2(bytes: &[u8]) -> Result<BootInfo, MultibootError> {
    BootInfo::parse_mb2(
        HostPhysAddr(MB2_BASE),
        &SliceMemory::new(HostPhysAddr(MB2_BASE), bytes),
    )
}

fn minimal_mb2() -> Mb2 {
    Mb2::new().mmap(&qemu_entries())
}

#[test]
fn mb2_full() {
    let bytes = Mb2::new()
        .string(1, "console=com1 loglevel=debug")
        .string(2, "GRUB 2.06")
        .module(0x20_0000, 0x28_0000, "linux console=ttyS0")
        .module(0x30_0000, 0x30_1000, "")
        .tag(4, &[0x7f, 0x02, 0, 0, 0x80, 0xfb, 0x01, 0])
        .mmap(&qemu_entries())
        .tag(8, &[0u8; 24]) // framebuffer: ignored
        .tag(14, &rsdp_v1())
        .tag(15, &rsdp_v2())
        .finish();
    let info = parse_mb2(&bytes).unwrap();
    assert_eq!(info.loader, LoaderKind::Multiboot2);
    assert_eq!(info.cmdline.as_deref(), Some("console=com1 loglevel=debug"));
    assert_eq!(info.loader_name.as_deref(), Some("GRUB 2.06"));
    assert_eq!(
        info.basic_memory,
        Some(BasicMemory {
            lower_kib: 639,
            upper_kib: 129_920
        })
    );
    assert_eq!(info.modules.len(), 2);
    assert_eq!(
        info.modules[0].range,
        PhysRange::new(HostPhysAddr(0x20_0000), HostPhysAddr(0x28_0000))
    );
    assert_eq!(info.modules[0].cmdline, "linux console=ttyS0");
    assert_eq!(info.modules[1].cmdline, "");
    let expected: Vec<MemoryRegion> = qemu_entries()
        .into_iter()
        .map(|(b, l, k)| region(b, l, MemoryKind::from_e820(k)))
        .collect();
    assert_eq!(info.memory_map, expected);
    let rsdp = info.rsdp.unwrap();
    assert_eq!(rsdp.revision(), 2);
    assert_eq!(rsdp.bytes(), &rsdp_v2()[..]);
    assert_eq!(rsdp.rsdt_address(), 0x7fe_1234);
    assert_eq!(rsdp.xsdt_address(), Some(0x7fe_5678));
    // The copy sits right after the tag 15 header in the block.
    let off = (rsdp.addr.0 - MB2_BASE) as usize;
    assert_eq!(&bytes[off..off + 36], &rsdp_v2()[..]);
    assert_eq!(
        info.info_range,
        PhysRange::from_base_len(HostPhysAddr(MB2_BASE), bytes.len() as u64).unwrap()
    );
    assert_eq!(
        info.reserved_ranges(),
        vec![
            info.info_range,
            info.modules[0].range,
            info.modules[1].range
        ]
    );
}

#[test]
fn mb2_rsdp_v2_preferred_in_either_order() {
    let bytes = minimal_mb2()
        .tag(15, &rsdp_v2())
        .tag(14, &rsdp_v1())
        .finish();
    assert_eq!(parse_mb2(&bytes).unwrap().rsdp.unwrap().revision(), 2);
    let bytes = minimal_mb2().tag(14, &rsdp_v1()).finish();
    let rsdp = parse_mb2(&bytes).unwrap().rsdp.unwrap();
    assert_eq!(rsdp.revision(), 0);
    assert_eq!(rsdp.bytes().len(), 20);
    assert_eq!(rsdp.xsdt_address(), None);
}

#[test]
fn mb2_minimal_has_no_optional_fields() {
    let info = parse_mb2(&minimal_mb2().finish()).unwrap();
    assert_eq!(info.cmdline, None);
    assert_eq!(info.loader_name, None);
    assert_eq!(info.basic_memory, None);
    assert!(info.modules.is_empty());
    assert_eq!(info.rsdp, None);
}

#[test]
fn dispatch_on_magic() {
    let bytes = minimal_mb2().finish();
    let mem = SliceMemory::new(HostPhysAddr(MB2_BASE), &bytes);
    let info = BootInfo::parse(MB2_MAGIC, HostPhysAddr(MB2_BASE), &mem).unwrap();
    assert_eq!(info.loader, LoaderKind::Multiboot2);
    let err = BootInfo::parse(0x1234_5678, HostPhysAddr(MB2_BASE), &mem).unwrap_err();
    assert_eq!(
        err.to_string(),
        "boot magic 0x12345678 is neither multiboot1 (0x2badb002) nor multiboot2 (0x36d76289)"
    );
}

#[test]
fn mb2_total_size_bounds() {
    let mut bytes = minimal_mb2().finish();
    bytes[..4].copy_from_slice(&8u32.to_le_bytes());
    assert_eq!(
        parse_mb2(&bytes),
        Err(MultibootError::InfoSizeInvalid { total_size: 8 })
    );
    bytes[..4].copy_from_slice(&(MAX_MB2_INFO_SIZE + 1).to_le_bytes());
    assert!(matches!(
        parse_mb2(&bytes),
        Err(MultibootError::InfoSizeInvalid { .. })
    ));
}

#[test]
fn mb2_total_size_past_readable_memory() {
    let mut bytes = minimal_mb2().finish();
    let total = bytes.len() as u32 + 64;
    bytes[..4].copy_from_slice(&total.to_le_bytes());
    // The tags end properly, so the parser never reads past them.
    assert!(parse_mb2(&bytes).is_ok());
    // Without the end tag it walks into memory it cannot read.
    let mut bytes = minimal_mb2().finish_without_end();
    bytes[..4].copy_from_slice(&total.to_le_bytes());
    assert!(matches!(
        parse_mb2(&bytes),
        Err(MultibootError::Read { .. })
    ));
}

#[test]
fn mb2_unreadable_header() {
    let err = BootInfo::parse_mb2(
        HostPhysAddr(0x100),
        &SliceMemory::new(HostPhysAddr(0), &[0; 8]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "reading the multiboot2 info header: cannot read 0x8 bytes of physical memory at 0x100"
    );
}

#[test]
fn mb2_missing_end_tag() {
    let bytes = minimal_mb2().string(1, "x").finish_without_end();
    let err = parse_mb2(&bytes).unwrap_err();
    assert_eq!(
        err,
        MultibootError::MissingEndTag {
            total_size: bytes.len() as u32
        }
    );
    assert!(err.to_string().contains("has no end tag"));
}

#[test]
fn mb2_tag_overrun() {
    // A command line tag whose size claims 0x100 bytes in a short block.
    let bytes = Mb2::new().raw_tag(1, 0x100, b"abc\0").finish_without_end();
    let err = parse_mb2(&bytes).unwrap_err();
    assert_eq!(
        err,
        MultibootError::TagOverrun {
            offset: 8,
            tag_type: 1,
            size: 0x100,
            total_size: 24
        }
    );
    assert_eq!(
        err.to_string(),
        "multiboot2 tag type 1 at offset 0x8 has size 0x100, which runs past the end of the \
         info block (0x18 bytes)"
    );
}

#[test]
fn mb2_tag_too_small() {
    let bytes = minimal_mb2().raw_tag(3, 12, &[0; 4]).finish();
    assert!(matches!(
        parse_mb2(&bytes),
        Err(MultibootError::TagTooSmall {
            tag_type: 3,
            size: 12,
            min: 17,
            ..
        })
    ));
    // A size below the header itself would loop forever if accepted.
    let bytes = minimal_mb2().raw_tag(99, 4, &[]).finish();
    assert!(matches!(
        parse_mb2(&bytes),
        Err(MultibootError::TagTooSmall {
            size: 4,
            min: 8,
            ..
        })
    ));
}

#[test]
fn mb2_unterminated_string() {
    let bytes = minimal_mb2().tag(1, b"no nul here").finish();
    let err = parse_mb2(&bytes).unwrap_err();
    assert!(matches!(
        err,
        MultibootError::UnterminatedString {
            what: "command line",
            ..
        }
    ));
}

#[test]
fn mb2_string_too_long() {
    let long = "x".repeat(MAX_LOADER_NAME_LEN + 1);
    let err = parse_mb2(&minimal_mb2().string(2, &long).finish()).unwrap_err();
    assert!(matches!(
        err,
        MultibootError::StringTooLong {
            what: "boot loader name",
            max: MAX_LOADER_NAME_LEN,
            ..
        }
    ));
    let just_fits = "y".repeat(MAX_LOADER_NAME_LEN);
    let info = parse_mb2(&minimal_mb2().string(2, &just_fits).finish()).unwrap();
    assert_eq!(info.loader_name.unwrap(), just_fits);
    // Padding NULs after the string inside an oversized tag are fine.
    let mut body = b"short".to_vec();
    body.resize(MAX_LOADER_NAME_LEN + 40, 0);
    let info = parse_mb2(&minimal_mb2().tag(2, &body).finish()).unwrap();
    assert_eq!(info.loader_name.as_deref(), Some("short"));
}

#[test]
fn mb2_non_utf8_string_is_replaced() {
    let bytes = minimal_mb2().tag(1, b"a\xffb\0").finish();
    assert_eq!(
        parse_mb2(&bytes).unwrap().cmdline.as_deref(),
        Some("a\u{fffd}b")
    );
}

#[test]
fn mb2_duplicate_tags() {
    let bytes = minimal_mb2().string(1, "a").string(1, "b").finish();
    assert!(matches!(
        parse_mb2(&bytes),
        Err(MultibootError::DuplicateTag { tag_type: 1, .. })
    ));
    let bytes = minimal_mb2().mmap(&qemu_entries()).finish();
    assert!(matches!(
        parse_mb2(&bytes),
        Err(MultibootError::DuplicateTag { tag_type: 6, .. })
    ));
    let bytes = minimal_mb2()
        .tag(15, &rsdp_v2())
        .tag(15, &rsdp_v2())
        .finish();
    assert!(matches!(
        parse_mb2(&bytes),
        Err(MultibootError::DuplicateTag { tag_type: 15, .. })
    ));
}

#[test]
fn mb2_mmap_entry_size_checks() {
    for bad in [0, 16, 20, 28] {
        let bytes = Mb2::new().mmap_sized(bad.max(20), &qemu_entries());
        // Rewrite entry_size in place so the tag body length stays as built.
        let mut bytes = bytes.finish();
        bytes[16..20].copy_from_slice(&bad.to_le_bytes());
        let err = parse_mb2(&bytes).unwrap_err();
        assert_eq!(
            err,
            MultibootError::MemoryMapEntrySize { entry_size: bad },
            "{bad}"
        );
    }
    let err = MultibootError::MemoryMapEntrySize { entry_size: 20 };
    assert_eq!(
        err.to_string(),
        "memory map entry_size 20 is not a multiple of 8 of at least 24"
    );
    // Larger entries (a future entry_version) are read by their first 24 bytes.
    let info = parse_mb2(&Mb2::new().mmap_sized(32, &qemu_entries()).finish()).unwrap();
    assert_eq!(info.memory_map.len(), qemu_entries().len());
}

#[test]
fn mb2_mmap_partial_entry() {
    let mut body = Vec::new();
    body.extend_from_slice(&24u32.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&mmap_entry(0x10_0000, 0x100_0000, 1));
    body.extend_from_slice(&[0; 8]);
    let err = parse_mb2(&Mb2::new().tag(6, &body).finish()).unwrap_err();
    assert_eq!(
        err,
        MultibootError::MemoryMapTagLength {
            size: 8 + 8 + 24 + 8,
            entry_size: 24
        }
    );
}

#[test]
fn mb2_zero_length_entries_are_dropped() {
    let bytes = Mb2::new()
        .mmap(&[
            (0, 0x9fc00, 1),
            (0x5000_0000, 0, 1),
            (0x10_0000, 0x100_0000, 1),
        ])
        .finish();
    let info = parse_mb2(&bytes).unwrap();
    assert_eq!(
        info.memory_map,
        vec![
            region(0, 0x9fc00, MemoryKind::Usable),
            region(0x10_0000, 0x100_0000, MemoryKind::Usable)
        ]
    );
}

#[test]
fn mb2_entry_wrapping_past_2_pow_64() {
    let mut entries = qemu_entries();
    entries.insert(3, (0xffff_ffff_ffff_f000, 0x2000, 2));
    let err = parse_mb2(&Mb2::new().mmap(&entries).finish()).unwrap_err();
    assert_eq!(
        err,
        MultibootError::MemoryMapEntryOverflow {
            index: 3,
            base: 0xffff_ffff_ffff_f000,
            len: 0x2000
        }
    );
    assert_eq!(
        err.to_string(),
        "memory map entry 3 (base 0xfffffffffffff000, len 0x2000) wraps past the end of the \
         address space"
    );
}

#[test]
fn mb2_too_many_entries() {
    let entries: Vec<(u64, u64, u32)> = (0..MAX_MMAP_ENTRIES as u64 + 1)
        .map(|i| (i * 0x1000, 0x1000, 1))
        .collect();
    let err = parse_mb2(&Mb2::new().mmap(&entries).finish()).unwrap_err();
    assert_eq!(
        err,
        MultibootError::TooManyMemoryMapEntries {
            max: MAX_MMAP_ENTRIES
        }
    );
    let ok = parse_mb2(&Mb2::new().mmap(&entries[1..]).finish()).unwrap();
    assert_eq!(ok.memory_map.len(), MAX_MMAP_ENTRIES);
}

#[test]
fn mb2_no_memory_map_or_no_usable_memory() {
    let err = parse_mb2(&Mb2::new().string(1, "x").finish()).unwrap_err();
    assert_eq!(err, MultibootError::NoMemoryMap);
    assert_eq!(err.to_string(), "the boot loader gave no memory map");
    let bytes = Mb2::new()
        .mmap(&[(0, 0x1000, 2), (0x1000, 0x1000, 3), (0x2000, 0x1000, 5)])
        .finish();
    let err = parse_mb2(&bytes).unwrap_err();
    assert_eq!(err, MultibootError::NoUsableMemory { entries: 3 });
    assert_eq!(
        err.to_string(),
        "the memory map (3 entries) has no usable memory"
    );
    assert_eq!(
        parse_mb2(&Mb2::new().mmap(&[]).finish()),
        Err(MultibootError::NoUsableMemory { entries: 0 })
    );
}

#[test]
fn mb2_modules() {
    let mut b = minimal_mb2();
    for i in 0..MAX_MODULES as u32 {
        b = b.module(0x100_0000 + i * 0x1000, 0x100_1000 + i * 0x1000, "m");
    }
    assert_eq!(parse_mb2(&b.finish()).unwrap().modules.len(), MAX_MODULES);

    let mut b = minimal_mb2();
    for _ in 0..=MAX_MODULES {
        b = b.module(0x100_0000, 0x100_1000, "");
    }
    assert!(matches!(
        parse_mb2(&b.finish()),
        Err(MultibootError::TooManyModules {
            max: MAX_MODULES,
            ..
        })
    ));

    let err = parse_mb2(&minimal_mb2().module(0x5000, 0x4000, "").finish()).unwrap_err();
    assert_eq!(
        err,
        MultibootError::ModuleInvalid {
            index: 0,
            start: 0x5000,
            end: 0x4000
        }
    );
    assert_eq!(
        err.to_string(),
        "module 0 ends (0x4000) before it starts (0x5000)"
    );
}

#[test]
fn mb2_bad_rsdp() {
    let mut bad = rsdp_v2();
    bad[32] = bad[32].wrapping_add(1);
    let err = parse_mb2(&minimal_mb2().tag(15, &bad).finish()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the ACPI RSDP copy in multiboot2 tag 15 has a bad extended checksum"
    );
    let mut bad = rsdp_v1();
    bad[0] = b'X';
    let err = parse_mb2(&minimal_mb2().tag(14, &bad).finish()).unwrap_err();
    assert!(matches!(
        err,
        MultibootError::RsdpInvalid { tag_type: 14, .. }
    ));
    let err = parse_mb2(&minimal_mb2().tag(15, &rsdp_v1()).finish()).unwrap_err();
    assert!(matches!(
        err,
        MultibootError::TagTooSmall { tag_type: 15, .. }
    ));
}

/// A multiboot1 machine image: info at `MB1_BASE`, everything it points to after.
struct Mb1 {
    mem: Vec<u8>,
    flags: u32,
}

const MB1_STRINGS: u64 = MB1_BASE + 0x100;
const MB1_MMAP: u64 = MB1_BASE + 0x1000;
const MB1_MODS: u64 = MB1_BASE + 0x1800;

impl Mb1 {
    fn new() -> Self {
        Self {
            mem: vec![0; 0x2000],
            flags: 0,
        }
    }

    fn put(&mut self, addr: u64, bytes: &[u8]) {
        let off = (addr - MB1_BASE) as usize;
        self.mem[off..off + bytes.len()].copy_from_slice(bytes);
    }

    fn field(&mut self, offset: u64, value: u32) {
        self.put(MB1_BASE + offset, &value.to_le_bytes());
    }

    fn string_at(&mut self, addr: u64, s: &str) -> u32 {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.put(addr, &b);
        addr as u32
    }

    fn mmap_raw(mut self, raw: &[u8], length: u32) -> Self {
        self.put(MB1_MMAP, raw);
        self.flags |= 1 << 6;
        self.field(44, length);
        self.field(48, MB1_MMAP as u32);
        self
    }

    fn mmap(self, entries: &[(u64, u64, u32)]) -> Self {
        let mut raw = Vec::new();
        for &(base, len, kind) in entries {
            raw.extend_from_slice(&20u32.to_le_bytes());
            raw.extend_from_slice(&mmap_entry(base, len, kind)[..20]);
        }
        let len = raw.len() as u32;
        self.mmap_raw(&raw, len)
    }

    fn finish(mut self) -> Vec<u8> {
        let flags = self.flags;
        self.field(0, flags);
        self.mem
    }
}

fn parse_mb1(mem: &[u8]) -> Result<BootInfo, MultibootError> {
    BootInfo::parse_mb1(
        HostPhysAddr(MB1_BASE),
        &SliceMemory::new(HostPhysAddr(MB1_BASE), mem),
    )
}

#[test]
fn mb1_full() {
    let mut b = Mb1::new().mmap(&qemu_entries());
    b.flags |= 1 | 1 << 2 | 1 << 3 | 1 << 9;
    b.field(4, 639);
    b.field(8, 129_920);
    let cmd = b.string_at(MB1_STRINGS, "quercus serial=com1");
    b.field(16, cmd);
    let name = b.string_at(MB1_STRINGS + 0x40, "GRUB 0.97");
    b.field(64, name);
    let m0 = b.string_at(MB1_STRINGS + 0x80, "bzImage root=/dev/vda");
    for (i, (start, end, s)) in [(0x20_0000u32, 0x28_0000u32, m0), (0x30_0000, 0x30_0400, 0)]
        .into_iter()
        .enumerate()
    {
        let mut e = Vec::new();
        for v in [start, end, s, 0] {
            e.extend_from_slice(&v.to_le_bytes());
        }
        b.put(MB1_MODS + 16 * i as u64, &e);
    }
    b.field(20, 2);
    b.field(24, MB1_MODS as u32);
    let info = parse_mb1(&b.finish()).unwrap();

    assert_eq!(info.loader, LoaderKind::Multiboot1);
    assert_eq!(info.cmdline.as_deref(), Some("quercus serial=com1"));
    assert_eq!(info.loader_name.as_deref(), Some("GRUB 0.97"));
    assert_eq!(info.basic_memory.unwrap().upper_kib, 129_920);
    assert_eq!(info.modules.len(), 2);
    assert_eq!(info.modules[0].cmdline, "bzImage root=/dev/vda");
    assert_eq!(info.modules[1].cmdline, "");
    assert_eq!(info.modules[1].range.len(), 0x400);
    assert_eq!(info.memory_map.len(), qemu_entries().len());
    assert_eq!(
        info.memory_map[3],
        region(0x10_0000, 0x7ee_0000, MemoryKind::Usable)
    );
    assert_eq!(info.rsdp, None);
    assert_eq!(info.info_range.start, HostPhysAddr(MB1_BASE));
}

#[test]
fn mb1_through_parse() {
    let mem = Mb1::new().mmap(&qemu_entries()).finish();
    let info = BootInfo::parse(
        MB1_MAGIC,
        HostPhysAddr(MB1_BASE),
        &SliceMemory::new(HostPhysAddr(MB1_BASE), &mem),
    )
    .unwrap();
    assert_eq!(info.loader, LoaderKind::Multiboot1);
    assert_eq!(info.cmdline, None);
}

#[test]
fn mb1_larger_entries_use_their_size() {
    let mut raw = Vec::new();
    for &(base, len, kind) in &qemu_entries() {
        raw.extend_from_slice(&24u32.to_le_bytes());
        raw.extend_from_slice(&mmap_entry(base, len, kind));
    }
    let len = raw.len() as u32;
    let info = parse_mb1(&Mb1::new().mmap_raw(&raw, len).finish()).unwrap();
    assert_eq!(info.memory_map.len(), qemu_entries().len());
}

#[test]
fn mb1_no_memory_map() {
    assert_eq!(
        parse_mb1(&Mb1::new().finish()),
        Err(MultibootError::NoMemoryMap)
    );
}

#[test]
fn mb1_entry_too_small() {
    let mut raw = Vec::new();
    raw.extend_from_slice(&20u32.to_le_bytes());
    raw.extend_from_slice(&mmap_entry(0x10_0000, 0x100_0000, 1)[..20]);
    raw.extend_from_slice(&12u32.to_le_bytes());
    raw.extend_from_slice(&[0; 12]);
    let err = parse_mb1(&Mb1::new().mmap_raw(&raw, 40).finish()).unwrap_err();
    assert_eq!(
        err,
        MultibootError::MemoryMapEntryTooSmall { index: 1, size: 12 }
    );
    assert_eq!(
        err.to_string(),
        "memory map entry 1 has size 12; at least 20 needed"
    );
}

#[test]
fn mb1_entry_overrun() {
    let mut raw = Vec::new();
    for &(base, len, kind) in &qemu_entries()[..2] {
        raw.extend_from_slice(&20u32.to_le_bytes());
        raw.extend_from_slice(&mmap_entry(base, len, kind)[..20]);
    }
    // mmap_length cuts the second entry short.
    let err = parse_mb1(&Mb1::new().mmap_raw(&raw, 30).finish()).unwrap_err();
    assert_eq!(
        err,
        MultibootError::MemoryMapEntryOverrun {
            index: 1,
            offset: 24,
            mmap_length: 30
        }
    );
    // ...or leaves fewer than 4 bytes for its size field.
    let err = parse_mb1(&Mb1::new().mmap_raw(&raw, 26).finish()).unwrap_err();
    assert!(matches!(
        err,
        MultibootError::MemoryMapEntryOverrun { index: 1, .. }
    ));
}

#[test]
fn mb1_entry_overflow_and_no_usable() {
    let err = parse_mb1(&Mb1::new().mmap(&[(u64::MAX, 2, 1)]).finish()).unwrap_err();
    assert_eq!(
        err,
        MultibootError::MemoryMapEntryOverflow {
            index: 0,
            base: u64::MAX,
            len: 2
        }
    );
    let err = parse_mb1(&Mb1::new().mmap(&[(0, 0x1000, 2)]).finish()).unwrap_err();
    assert_eq!(err, MultibootError::NoUsableMemory { entries: 1 });
}

#[test]
fn mb1_mmap_unreadable() {
    let mut b = Mb1::new().mmap(&qemu_entries());
    b.field(48, 0x40_0000);
    let err = parse_mb1(&b.finish()).unwrap_err();
    assert!(matches!(
        err,
        MultibootError::Read {
            what: "memory map",
            ..
        }
    ));
}

#[test]
fn mb1_too_many_modules() {
    let mut b = Mb1::new().mmap(&qemu_entries());
    b.flags |= 1 << 3;
    b.field(20, MAX_MODULES as u32 + 1);
    b.field(24, MB1_MODS as u32);
    let err = parse_mb1(&b.finish()).unwrap_err();
    assert_eq!(
        err,
        MultibootError::TooManyModules {
            count: 33,
            max: MAX_MODULES
        }
    );
    assert_eq!(
        err.to_string(),
        "33 boot modules given; at most 32 are supported"
    );
}

#[test]
fn mb1_module_list_wraps() {
    let mut b = Mb1::new().mmap(&qemu_entries());
    b.flags |= 1 << 3;
    b.field(20, 2);
    b.field(24, 0xffff_fff0);
    // A 32-bit address cannot wrap a 64-bit space: the read fails instead.
    assert!(matches!(
        parse_mb1(&b.finish()),
        Err(MultibootError::Read {
            what: "module list",
            ..
        })
    ));
}

#[test]
fn mb1_cmdline_without_nul() {
    let mut b = Mb1::new().mmap(&qemu_entries());
    b.flags |= 1 << 2;
    // The string runs to the end of readable memory.
    let addr = MB1_BASE + 0x2000 - 4;
    b.put(addr, b"abcd");
    b.field(16, addr as u32);
    let err = parse_mb1(&b.finish()).unwrap_err();
    assert!(matches!(
        err,
        MultibootError::Read {
            what: "command line",
            ..
        }
    ));

    let mut b = Mb1::new().mmap(&qemu_entries());
    b.flags |= 1 << 9;
    let long = "n".repeat(MAX_LOADER_NAME_LEN + 10);
    let name = b.string_at(MB1_STRINGS, &long);
    b.field(64, name);
    let err = parse_mb1(&b.finish()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("the boot loader name at {MB1_STRINGS:#x} has no NUL within 256 bytes")
    );
}

#[test]
fn mb1_info_unreadable() {
    let err = BootInfo::parse_mb1(
        HostPhysAddr(0),
        &SliceMemory::new(HostPhysAddr(0), &[0; 16]),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        MultibootError::Read {
            what: "multiboot1 info structure",
            ..
        }
    ));
}
