//! End-to-end tests of [`load_pvh`] on synthetic `vmlinux` images: an ELF64
//! executable from `elf::tests::build` with two `PT_LOAD` segments and a
//! `PT_NOTE` segment of notes from `note::tests::note_bytes`.

use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use vcpu::{CountingMemory, GuestMemory, SegmentState};

use super::*;
use crate::bzimage::e820_map;
use crate::bzimage::{E820Entry, E820Kind, ReservedKind, ReservedRange, E820_MAX_ENTRIES};
use crate::elf::tests::{build, Ph};
use crate::elf::{Class, ElfError, PT_NOTE};
use crate::note::tests::note_bytes;

const MIB: u64 = 1 << 20;
const RAM: u64 = 32 * MIB;
/// Where the synthetic kernel's text goes, as Linux's does.
const TEXT: u64 = 16 * MIB;
const ENTRY: u64 = TEXT + 0x40;
const DATA: u64 = TEXT + 2 * MIB;
/// File offset of the notes.
const NOTES_AT: u64 = 0x200;
/// File offsets and sizes of the loaded bytes.
const TEXT_AT: u64 = 0x1000;
const TEXT_LEN: u64 = 0x100;
const DATA_AT: u64 = 0x1100;
const DATA_LEN: u64 = 0x80;
const BSS_LEN: u64 = 0x2000;
const IMAGE_LEN: usize = 0x1180;

/// Guest RAM that counts writes, so tests can prove none happened.
type Counting = CountingMemory;

/// `size` bytes of RAM filled with 0xCC, so zeroing is visible.
fn counting(size: u64) -> Counting {
    CountingMemory::new(size as usize, 0xCC)
}

fn layout(ram_size: u64) -> VmLayout<'static> {
    VmLayout {
        ram: vcpu::RamLayout::new(ram_size),
        reserved: &[],
        acpi_rsdp: None,
    }
}

fn entry_note(desc: &[u8]) -> Vec<u8> {
    note_bytes(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, desc, 4)
}

/// Notes like Linux's: other Xen notes, a GNU build ID, a Linux note, and
/// the entry note (8-byte descriptor, as Linux writes it) among them.
fn linux_notes() -> Vec<u8> {
    let mut n = note_bytes(b"Xen\0", 6, b"linux\0", 4);
    n.extend(note_bytes(b"Xen\0", 10, b"!writable_page_tables", 4));
    n.extend(note_bytes(b"GNU\0", 3, &[0x5A; 20], 4));
    n.extend(entry_note(&ENTRY.to_le_bytes()));
    n.extend(note_bytes(b"Linux\0", 0x100, &[0; 4], 4));
    n
}

/// A `vmlinux` with `notes` in its `PT_NOTE` segment at `notes_at`, the
/// text and data segments at `text` and `data`, and numbered contents.
fn image_at(notes: &[u8], notes_at: u64, text: u64, data: u64) -> Vec<u8> {
    let phdrs: [Ph; 3] = [
        (1, TEXT_AT, 0xFFFF_FFFF_8100_0000, text, TEXT_LEN, TEXT_LEN),
        (1, DATA_AT, 0xFFFF_FFFF_8300_0000, data, DATA_LEN, BSS_LEN),
        (
            PT_NOTE,
            notes_at,
            0,
            0,
            notes.len() as u64,
            notes.len() as u64,
        ),
    ];
    let mut img = build(Class::Elf64, text, &phdrs, IMAGE_LEN);
    for (i, b) in img[TEXT_AT as usize..].iter_mut().enumerate() {
        *b = (i % 253) as u8 | 1;
    }
    let at = notes_at as usize;
    img[at..at + notes.len()].copy_from_slice(notes);
    img
}

fn image(notes: &[u8]) -> Vec<u8> {
    image_at(notes, NOTES_AT, TEXT, DATA)
}

fn initrd_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Loads and expects an error with RAM left untouched.
fn load_err(image: &[u8], cmdline: &str, initrd: Option<&[u8]>, l: &VmLayout<'_>) -> PvhError {
    let mut mem = counting(RAM);
    let err = load_pvh(image, cmdline, initrd, l, &mut mem).unwrap_err();
    assert_eq!(
        mem.writes, 0,
        "{err}: RAM written before the checks finished"
    );
    assert!(!err.to_string().is_empty());
    err
}

fn u32_at(mem: &Counting, gpa: u64) -> u32 {
    mem.read_u32(gpa).unwrap()
}

fn u64_at(mem: &Counting, gpa: u64) -> u64 {
    mem.read_u64(gpa).unwrap()
}

#[test]
fn linux_like_vmlinux_with_initrd_and_acpi() {
    let img = image(&linux_notes());
    let reserved = [
        ReservedRange {
            start: 0xE_0000,
            len: 0x1_0000,
            kind: ReservedKind::AcpiReclaimable,
        },
        ReservedRange {
            start: 30 * MIB,
            len: 0x1_0000,
            kind: ReservedKind::AcpiReclaimable,
        },
    ];
    let l = VmLayout {
        ram: vcpu::RamLayout::new(RAM),
        reserved: &reserved,
        acpi_rsdp: Some(0xE_0000),
    };
    let initrd = initrd_bytes(0x2345);
    let cmdline = "console=ttyS0 root=/dev/ram0";
    let mut mem = counting(RAM);
    let boot = load_pvh(&img, cmdline, Some(&initrd), &l, &mut mem).unwrap();
    let map = e820_map(RAM, &reserved).unwrap();
    let initrd_at = Placement {
        gpa: RAM - 0x3000,
        len: 0x2345,
    };
    assert_eq!(
        boot,
        PvhBoot {
            entry: ENTRY,
            start_info: 0x7000,
            cmdline: Placement {
                gpa: 0x2_0000,
                len: cmdline.len() as u64
            },
            initrd: Some(initrd_at),
            memmap_entries: map.len(),
        }
    );

    // The kernel, its bss zeroed, nothing past it.
    let t = TEXT_AT as usize;
    assert_eq!(mem.bytes(TEXT, TEXT_LEN), &img[t..t + TEXT_LEN as usize]);
    assert_eq!(mem.bytes(TEXT + TEXT_LEN, 1), &[0xCC]);
    let d = DATA_AT as usize;
    assert_eq!(mem.bytes(DATA, DATA_LEN), &img[d..d + DATA_LEN as usize]);
    assert!(mem
        .bytes(DATA + DATA_LEN, BSS_LEN - DATA_LEN)
        .iter()
        .all(|&b| b == 0));
    assert_eq!(mem.bytes(DATA + BSS_LEN, 1), &[0xCC]);

    // The start info.
    let si = PVH_START_INFO_GPA;
    assert_eq!(u32_at(&mem, si), 0x336E_C578);
    assert_eq!(u32_at(&mem, si + 4), 1, "version");
    assert_eq!(u32_at(&mem, si + 8), 0, "flags");
    assert_eq!(u32_at(&mem, si + 12), 1, "nr_modules");
    assert_eq!(u64_at(&mem, si + 16), PVH_MODLIST_GPA);
    assert_eq!(u64_at(&mem, si + 24), PVH_CMDLINE_GPA);
    assert_eq!(u64_at(&mem, si + 32), 0xE_0000, "rsdp_paddr");
    assert_eq!(u64_at(&mem, si + 40), PVH_MEMMAP_GPA);
    assert_eq!(u32_at(&mem, si + 48) as usize, map.len());
    assert_eq!(u32_at(&mem, si + 52), 0, "reserved");

    // The memory map is the bzImage guest's e820 map.
    assert_eq!(map.len(), 7);
    for (i, e) in map.iter().enumerate() {
        let at = PVH_MEMMAP_GPA + (i * MEMMAP_ENTRY_LEN) as u64;
        let kind = match u32_at(&mem, at + 16) {
            1 => E820Kind::Ram,
            2 => E820Kind::Reserved,
            3 => E820Kind::Acpi,
            4 => E820Kind::Nvs,
            t => panic!("type {t}"),
        };
        let got = E820Entry {
            addr: u64_at(&mem, at),
            size: u64_at(&mem, at + 8),
            kind,
        };
        assert_eq!(got, *e);
        assert_eq!(u32_at(&mem, at + 20), 0);
    }
    let map_end = PVH_MEMMAP_GPA + (map.len() * MEMMAP_ENTRY_LEN) as u64;
    assert_eq!(mem.bytes(map_end, 1), &[0xCC]);

    // The command line with its NUL; the module; the initrd.
    let c = mem.bytes(PVH_CMDLINE_GPA, cmdline.len() as u64 + 2);
    assert_eq!(&c[..cmdline.len()], cmdline.as_bytes());
    assert_eq!(&c[cmdline.len()..], &[0, 0xCC]);
    assert_eq!(u64_at(&mem, PVH_MODLIST_GPA), initrd_at.gpa);
    assert_eq!(u64_at(&mem, PVH_MODLIST_GPA + 8), 0x2345);
    assert_eq!(
        u64_at(&mem, PVH_MODLIST_GPA + 16),
        0,
        "module cmdline_paddr"
    );
    assert_eq!(u64_at(&mem, PVH_MODLIST_GPA + 24), 0, "reserved");
    assert_eq!(mem.bytes(initrd_at.gpa, initrd_at.len), &initrd[..]);
    assert_eq!(mem.bytes(initrd_at.gpa + initrd_at.len, 1), &[0xCC]);
}

#[test]
fn four_byte_entry_note_no_initrd_no_acpi() {
    let mut notes = entry_note(&(ENTRY as u32 + 4).to_le_bytes());
    notes.extend(note_bytes(b"Xen\0", 6, b"linux\0", 4));
    let img = image(&notes);
    for initrd in [None, Some(&[][..])] {
        let mut mem = counting(RAM);
        let boot = load_pvh(&img, "", initrd, &layout(RAM), &mut mem).unwrap();
        assert_eq!(boot.entry, ENTRY + 4);
        assert_eq!(boot.initrd, None, "an empty initrd is none");
        assert_eq!(boot.memmap_entries, 3);
        let si = PVH_START_INFO_GPA;
        assert_eq!(u32_at(&mem, si + 12), 0, "nr_modules");
        assert_eq!(u64_at(&mem, si + 16), 0, "modlist_paddr");
        assert_eq!(u64_at(&mem, si + 32), 0, "rsdp_paddr");
        assert_eq!(mem.bytes(PVH_MODLIST_GPA, 1), &[0xCC], "no module list");
        assert_eq!(mem.bytes(PVH_CMDLINE_GPA, 2), &[0, 0xCC]);
    }
}

#[test]
fn first_entry_note_wins_and_eight_byte_aligned_notes_are_read() {
    let mut notes = entry_note(&(ENTRY as u32).to_le_bytes());
    notes.extend(entry_note(&(ENTRY as u32 + 8).to_le_bytes()));
    let boot = load_pvh(&image(&notes), "", None, &layout(RAM), &mut counting(RAM));
    assert_eq!(boot.unwrap().entry, ENTRY);

    // A PT_NOTE segment with p_align 8: name and descriptor padded to 8.
    let mut notes = note_bytes(b"GNU\0", 5, &[1; 12], 8);
    notes.extend(note_bytes(
        b"Xen\0",
        XEN_ELFNOTE_PHYS32_ENTRY,
        &(ENTRY as u32 + 0x10).to_le_bytes(),
        8,
    ));
    let mut img = image(&notes);
    let p_align = 0x40 + 2 * 56 + 48;
    img[p_align..p_align + 8].copy_from_slice(&8u64.to_le_bytes());
    let boot = load_pvh(&img, "", None, &layout(RAM), &mut counting(RAM)).unwrap();
    assert_eq!(boot.entry, ENTRY + 0x10);
}

#[test]
fn entry_state_is_the_pvh_contract() {
    let mut mem = counting(RAM);
    let boot = load_pvh(&image(&linux_notes()), "", None, &layout(RAM), &mut mem).unwrap();
    let s = boot.entry_state();
    assert_eq!((s.rip, s.rsp, s.rflags), (ENTRY, 0, 0x2));
    assert_eq!(
        s.gprs,
        Gprs {
            rbx: 0x7000,
            ..Gprs::default()
        }
    );
    assert_eq!((s.cr0, s.cr3, s.cr4, s.efer), (0x11, 0, 0, 0));
    let flat = |selector, attrib| SegmentState {
        selector,
        base: 0,
        limit: 0xFFFF_FFFF,
        attrib,
    };
    assert_eq!(s.cs, flat(0x10, 0xC9B), "32-bit code");
    assert_eq!(s.data, flat(0x18, 0xC93), "32-bit data");
    assert_eq!(
        s.tr,
        SegmentState {
            selector: 0,
            base: 0,
            limit: 0x67,
            attrib: 0x08B
        }
    );
    let table = SegmentState {
        selector: 0,
        base: 0,
        limit: 0xFFFF,
        attrib: 0,
    };
    assert_eq!((s.gdtr, s.idtr), (table, table));
}

#[test]
fn images_without_a_usable_entry_note() {
    let l = layout(RAM);
    let err = |notes: &[u8]| load_err(&image(notes), "", None, &l);
    // No note at all, or only others.
    assert_eq!(err(&[]), PvhError::NoPvhEntry);
    assert_eq!(
        err(&note_bytes(b"Xen\0", 6, b"linux\0", 4)),
        PvhError::NoPvhEntry
    );
    // Type 18 under other names.
    let desc = (ENTRY as u32).to_le_bytes();
    for name in [&b"XEN\0"[..], b"Xen", b"Xen\0\0", b"Xe\0", b"GNU\0"] {
        assert_eq!(
            err(&note_bytes(name, XEN_ELFNOTE_PHYS32_ENTRY, &desc, 4)),
            PvhError::NoPvhEntry,
            "{name:?}"
        );
    }
    // Descriptors of the wrong size, or above 4 GiB.
    for desc in [&[][..], &[1, 2], &[1, 2, 3], &[0; 5], &[0; 16]] {
        assert_eq!(
            err(&entry_note(desc)),
            PvhError::EntryNoteSize { descsz: desc.len() }
        );
    }
    assert_eq!(
        err(&entry_note(&(ENTRY | 1 << 32).to_le_bytes())),
        PvhError::EntryAbove4GiB {
            entry: ENTRY | 1 << 32
        }
    );
    // An entry point outside the loaded bytes (in the bss, or nowhere).
    for entry in [DATA + DATA_LEN, 0x10_0000, 0] {
        assert_eq!(
            err(&entry_note(&(entry as u32).to_le_bytes())),
            PvhError::EntryNotLoaded { entry }
        );
    }
    // ELF32 and non-ELF images.
    let elf32 = build(Class::Elf32, TEXT, &[(1, 0x100, 0, TEXT, 4, 4)], 0x200);
    assert_eq!(
        load_err(&elf32, "", None, &l),
        PvhError::Elf(Elf64Error::NotElf64)
    );
    assert!(matches!(
        load_err(b"MZ", "", None, &l),
        PvhError::Elf(Elf64Error::Elf(ElfError::TooShort { .. }))
    ));
}

#[test]
fn hostile_notes_are_errors() {
    let l = layout(RAM);
    let good = entry_note(&(ENTRY as u32).to_le_bytes());
    let note_err = |notes: &[u8]| match load_err(&image(notes), "", None, &l) {
        PvhError::Note { segment: 2, error } => error,
        e => panic!("{e}"),
    };
    let with = |off: usize, v: u32| {
        let mut n = linux_notes();
        n.extend_from_slice(&good);
        let at = n.len() - good.len() + off;
        n[at..at + 4].copy_from_slice(&v.to_le_bytes());
        n
    };
    let before = linux_notes().len() as u64;
    for namesz in [9, 0x1000, 0x7FFF_FFFF, u32::MAX] {
        assert_eq!(
            note_err(&with(0, namesz)),
            NoteError::NameTruncated {
                at: before,
                namesz,
                len: before + 20
            }
        );
    }
    for descsz in [5, 0x1000, u32::MAX - 3, u32::MAX] {
        assert_eq!(
            note_err(&with(4, descsz)),
            NoteError::DescTruncated {
                at: before,
                descsz,
                len: before + 20
            }
        );
    }
    // Cut inside the header, inside the descriptor, inside its padding.
    assert_eq!(
        note_err(&good[..8]),
        NoteError::HeaderTruncated { at: 0, len: 8 }
    );
    assert!(matches!(
        note_err(&good[..18]),
        NoteError::DescTruncated { .. }
    ));
    let two = entry_note(&[1, 2]);
    assert!(matches!(
        note_err(&two[..18]),
        NoteError::DescTruncated { descsz: 2, .. }
    ));
    // A malformed note after the entry note still spoils the image.
    let mut bad_tail = good.clone();
    bad_tail.extend_from_slice(&[0xFF; 12]);
    assert!(matches!(
        note_err(&bad_tail),
        NoteError::NameTruncated { at: 20, .. }
    ));
    // Notes at an offset that breaks their alignment, or with an alignment
    // that is neither 4 nor 8.
    let misaligned = image_at(&good, NOTES_AT + 2, TEXT, DATA);
    assert_eq!(
        load_err(&misaligned, "", None, &l),
        PvhError::Note {
            segment: 2,
            error: NoteError::Misaligned {
                offset: NOTES_AT + 2,
                align: 4
            }
        }
    );
    let mut odd_align = image(&good);
    let p_align = 0x40 + 2 * 56 + 48;
    odd_align[p_align..p_align + 8].copy_from_slice(&16u64.to_le_bytes());
    assert_eq!(
        load_err(&odd_align, "", None, &l),
        PvhError::Note {
            segment: 2,
            error: NoteError::BadAlign { align: 16 }
        }
    );
    // A PT_NOTE segment past the end of the file, or wrapping.
    for (offset, filesz) in [
        (IMAGE_LEN as u64 - 4, 20),
        (u64::MAX - 3, 20),
        (0x200, u64::MAX),
    ] {
        let mut img = image(&good);
        let ph = 0x40 + 2 * 56;
        img[ph + 8..ph + 16].copy_from_slice(&offset.to_le_bytes());
        img[ph + 32..ph + 40].copy_from_slice(&filesz.to_le_bytes());
        assert!(
            matches!(
                load_err(&img, "", None, &l),
                PvhError::Elf(Elf64Error::Elf(ElfError::SegmentOutsideFile {
                    index: 2,
                    ..
                }))
            ),
            "{offset:#x}+{filesz:#x}"
        );
    }
}

#[test]
fn segments_that_do_not_fit() {
    let l = layout(RAM);
    let notes = linux_notes();
    // The data segment over each low area the PVH loader writes.
    for (data, area) in [(0x6000, 0), (0x6F00, 0), (0x1_F000, 1), (0x2_FFFF, 1)] {
        assert_eq!(
            load_err(&image_at(&notes, NOTES_AT, TEXT, data), "", None, &l),
            PvhError::KernelOverBootArea {
                gpa: data,
                end: data + BSS_LEN,
                area: PVH_BOOT_AREAS[area]
            },
            "{data:#x}"
        );
    }
    // Over the loader's other keep-out areas, past RAM, over the text.
    for data in [
        0x9000,
        0xA_0000,
        RAM - 0x1000,
        TEXT + 0x80,
        u64::MAX - 0x100,
    ] {
        assert!(
            matches!(
                load_err(&image_at(&notes, NOTES_AT, TEXT, data), "", None, &l),
                PvhError::Placement(_)
            ),
            "{data:#x}"
        );
    }
    // Over a reserved range inside RAM.
    let reserved = [ReservedRange {
        start: DATA + 0x1000,
        len: 0x1000,
        kind: ReservedKind::AcpiNvs,
    }];
    let over = VmLayout {
        reserved: &reserved,
        ..l
    };
    assert_eq!(
        load_err(&image(&notes), "", None, &over),
        PvhError::KernelOverReserved {
            gpa: DATA,
            end: DATA + BSS_LEN,
            reserved_start: DATA + 0x1000,
            reserved_end: DATA + 0x2000
        }
    );
}

#[test]
fn initrd_placement_and_limits() {
    let img = image(&linux_notes());
    // RAM ends right after the data segment: the initrd goes below the
    // kernel, under the text.
    let ram = DATA + BSS_LEN;
    let initrd = initrd_bytes(3 * MIB as usize);
    let mut mem = counting(RAM);
    let boot = load_pvh(&img, "", Some(&initrd), &layout(ram), &mut mem).unwrap();
    assert_eq!(
        boot.initrd,
        Some(Placement {
            gpa: TEXT - 3 * MIB,
            len: 3 * MIB
        })
    );
    // Between text and data, where it fits.
    let small = initrd_bytes(0x1000);
    let boot = load_pvh(&img, "", Some(&small), &layout(ram), &mut counting(RAM));
    assert_eq!(boot.unwrap().initrd.unwrap().gpa, DATA - 0x1000);
    // Too big for RAM, or for what the kernel leaves of it.
    let huge = vec![1u8; RAM as usize];
    assert_eq!(
        load_err(&img, "", Some(&huge), &layout(RAM)),
        PvhError::InitrdDoesNotFit {
            len: RAM,
            limit: RAM
        }
    );
    let big = vec![1u8; 15 * MIB as usize + 1];
    assert_eq!(
        load_err(&img, "", Some(&big), &layout(ram)),
        PvhError::InitrdDoesNotFit {
            len: 15 * MIB + 1,
            limit: ram
        }
    );
}

#[test]
fn bad_layouts_and_command_lines() {
    let img = image(&linux_notes());
    let l = layout(RAM);
    let mut small = counting(RAM / 2);
    assert_eq!(
        load_pvh(&img, "", None, &l, &mut small),
        Err(PvhError::RamLargerThanMemory {
            ram_size: RAM,
            mem_size: RAM / 2
        })
    );
    assert_eq!(small.writes, 0);
    assert!(matches!(
        load_err(&img, "", None, &layout(MIB)),
        PvhError::E820(E820Error::RamTooSmall { .. })
    ));
    for (start, area) in [(0x7000, 0), (0x2_8000, 1)] {
        let reserved = [ReservedRange {
            start,
            len: 0x100,
            kind: ReservedKind::Reserved,
        }];
        let over = VmLayout {
            reserved: &reserved,
            ..l
        };
        assert_eq!(
            load_err(&img, "", None, &over),
            PvhError::BootAreaReserved {
                area: PVH_BOOT_AREAS[area],
                reserved_start: start,
                reserved_end: start + 0x100
            }
        );
    }
    for gpa in [RAM - 35, RAM, u64::MAX - 10] {
        let rsdp = VmLayout {
            acpi_rsdp: Some(gpa),
            ..l
        };
        assert_eq!(
            load_err(&img, "", None, &rsdp),
            PvhError::RsdpOutsideRam { gpa, ram_size: RAM }
        );
    }
    let long = "x".repeat(0x1_0000);
    assert_eq!(
        load_err(&img, &long, None, &l),
        PvhError::CmdlineTooLong {
            len: 0x1_0000,
            max: 0xFFFF
        }
    );
    let mut mem = counting(RAM);
    load_pvh(&img, &long[1..], None, &l, &mut mem).unwrap();
    assert_eq!(mem.bytes(PVH_CMDLINE_GPA + 0xFFFF, 1), &[0]);
    assert_eq!(
        load_err(&img, "ro\0quiet", None, &l),
        PvhError::CmdlineHasNul { offset: 2 }
    );
}

#[test]
fn boot_areas_hold_what_is_written_there() {
    assert_eq!(
        (PVH_START_INFO_GPA, PVH_MODLIST_GPA, PVH_MEMMAP_GPA),
        (0x7000, 0x7040, 0x7080)
    );
    assert!(PVH_MEMMAP_GPA + (E820_MAX_ENTRIES * MEMMAP_ENTRY_LEN) as u64 <= 0x8000);
    // The bzImage loader's zero page and command line: the same low RAM.
    assert_eq!(PVH_START_INFO_GPA, crate::LINUX_ZERO_PAGE_GPA);
    assert_eq!(PVH_CMDLINE_GPA, crate::LINUX_CMDLINE_GPA);
    // Nothing is written outside the areas but the kernel and initrd.
    let mut mem = counting(RAM);
    let initrd = initrd_bytes(0x100);
    let boot = load_pvh(
        &image(&linux_notes()),
        "ro",
        Some(&initrd),
        &layout(RAM),
        &mut mem,
    );
    let boot = boot.unwrap();
    let initrd_at = boot.initrd.unwrap();
    let written = |gpa: u64| {
        PVH_BOOT_AREAS.iter().any(|a| a.start <= gpa && gpa < a.end)
            || (TEXT..TEXT + TEXT_LEN).contains(&gpa)
            || (DATA..DATA + BSS_LEN).contains(&gpa)
            || (initrd_at.gpa..initrd_at.gpa + initrd_at.len).contains(&gpa)
    };
    for (gpa, &b) in mem.mem.0.iter().enumerate() {
        if b != 0xCC {
            assert!(written(gpa as u64), "{gpa:#x} written");
        }
    }
}

/// A xorshift generator: the same corruptions on every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn corrupted_images_never_panic() {
    let base = image(&linux_notes());
    let initrd = [7u8; 0x100];
    let l = VmLayout {
        ram: vcpu::RamLayout::new(20 * MIB),
        reserved: &[],
        acpi_rsdp: Some(0xE_0000),
    };
    let mut mem = counting(20 * MIB);
    let mut try_load = |img: &[u8], what: &dyn core::fmt::Display| {
        let before = mem.writes;
        match load_pvh(img, "console=ttyS0", Some(&initrd), &l, &mut mem) {
            Ok(boot) => {
                assert!(boot.entry < 1 << 32, "{what}");
                assert!(boot.initrd.unwrap().gpa >= MIB, "{what}");
            }
            Err(e) => assert_eq!(mem.writes, before, "{what}: {e}"),
        }
    };
    // Every truncation.
    for len in 0..base.len() {
        try_load(&base[..len], &len);
    }
    // Every byte of the headers and notes set to edge values.
    let notes_end = NOTES_AT as usize + linux_notes().len();
    let positions = (0..0x40 + 3 * 56).chain(NOTES_AT as usize..notes_end);
    for pos in positions {
        for val in [0x00, 0x01, 0x04, 0x7F, 0x80, 0xFF] {
            let mut bad = base.clone();
            bad[pos] = val;
            try_load(&bad, &pos);
        }
    }
    // Many random flips of one to four bits anywhere before the segment
    // contents.
    let mut state = 0x9E37_79B9_7F4A_7C15;
    for round in 0..20_000 {
        let mut bad = base.clone();
        for _ in 0..1 + next(&mut state) % 4 {
            let r = next(&mut state);
            let pos = (r as usize >> 8) % notes_end;
            bad[pos] ^= 1 << (r % 8);
        }
        try_load(&bad, &round);
    }
}
