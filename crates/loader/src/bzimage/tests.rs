//! End-to-end tests of [`load_bzimage`] on synthetic bzImages (headers built
//! byte by byte, see `header::tests::Fields`) in sparse guest memories of up
//! to several GiB.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use vcpu::{check_range, GuestMemError, GuestMemory};

use super::boot_tables::tests::translate;
use super::header::tests::Fields;
use super::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const PAGE: u64 = 0x1000;

/// Guest RAM of any size, pages allocated on first write (unwritten bytes
/// read as zero), counting writes so tests can prove none happened.
struct SparseMemory {
    size: u64,
    pages: BTreeMap<u64, Box<[u8; PAGE as usize]>>,
    writes: usize,
}

impl SparseMemory {
    fn new(size: u64) -> Self {
        SparseMemory {
            size,
            pages: BTreeMap::new(),
            writes: 0,
        }
    }

    fn bytes(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        self.read(gpa, &mut b).unwrap();
        b
    }
}

impl GuestMemory for SparseMemory {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemError> {
        check_range(self.size, gpa, buf.len())?;
        let mut done = 0;
        while done < buf.len() {
            let a = gpa + done as u64;
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            match self.pages.get(&(a / PAGE)) {
                Some(p) => dst.copy_from_slice(&p[off..off + n]),
                None => dst.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), GuestMemError> {
        check_range(self.size, gpa, data.len())?;
        self.writes += 1;
        let mut done = 0;
        while done < data.len() {
            let a = gpa + done as u64;
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(data.len() - done);
            let page = self
                .pages
                .entry(a / PAGE)
                .or_insert_with(|| Box::new([0; PAGE as usize]));
            page[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }
}

fn layout(ram_size: u64) -> VmLayout<'static> {
    VmLayout {
        ram: vcpu::RamLayout::new(ram_size),
        reserved: &[],
        acpi_rsdp: None,
    }
}

fn initrd_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Loads and expects an error with RAM left untouched.
fn load_err(
    f: &Fields,
    cmdline: &str,
    initrd: Option<&[u8]>,
    layout: &VmLayout<'_>,
) -> BzImageError {
    let mut mem = SparseMemory::new(layout.ram.total().max(layout.ram.end_below_4g()).max(MIB));
    let err = load_bzimage(&f.image(), cmdline, initrd, layout, &mut mem).unwrap_err();
    assert_eq!(
        mem.writes, 0,
        "{err}: RAM written before the checks finished"
    );
    err
}

#[test]
fn distribution_like_kernel_with_initrd_and_acpi() {
    let f = Fields::default();
    let image = f.image();
    let reserved = [
        ReservedRange {
            start: 0xE_0000,
            len: 0x1000,
            kind: ReservedKind::AcpiReclaimable,
        },
        ReservedRange {
            start: 0xFEC0_0000,
            len: 0x1000,
            kind: ReservedKind::Reserved,
        },
    ];
    let layout = VmLayout {
        ram: vcpu::RamLayout::new(256 * MIB),
        reserved: &reserved,
        acpi_rsdp: Some(0xE_0000),
    };
    let initrd = initrd_bytes(0x2345);
    let cmdline = "console=ttyS0 earlyprintk=serial quiet";
    let mut mem = SparseMemory::new(256 * MIB);
    let boot = load_bzimage(&image, cmdline, Some(&initrd), &layout, &mut mem).unwrap();

    assert_eq!(
        boot,
        LinuxBoot {
            entry_64: 0x100_0200,
            zero_page: 0x7000,
            cr3: 0x9000,
            gdtr: Gdtr {
                base: 0x5000,
                limit: 31
            },
            stack_top: 0x7000,
            kernel: Placement {
                gpa: 0x100_0000,
                len: 0x40_0000
            },
            cmdline: Placement {
                gpa: 0x2_0000,
                len: cmdline.len() as u64
            },
            initrd: Some(Placement {
                gpa: 256 * MIB - 0x3000,
                len: 0x2345
            }),
            protocol: 0x020F,
            rsdp_in_zero_page: true,
            e820_entries: 6,
        }
    );

    // The protected-mode kernel, from the byte after the setup sectors.
    assert_eq!(mem.bytes(0x100_0000, 0x3000), image[0x800..]);
    assert_eq!(mem.bytes(boot.entry_64, 1), [0xE9]);
    // Command line with its NUL; initrd.
    let c = mem.bytes(0x2_0000, cmdline.len() + 1);
    assert_eq!(&c[..cmdline.len()], cmdline.as_bytes());
    assert_eq!(c[cmdline.len()], 0);
    assert_eq!(mem.bytes(256 * MIB - 0x3000, 0x2345), initrd);

    // Zero page: header copied, loader fields, RSDP, e820.
    let zp = mem.bytes(0x7000, 0x1000);
    let u32_at = |off: usize| u32::from_le_bytes(zp[off..off + 4].try_into().unwrap());
    let u64_at = |off: usize| u64::from_le_bytes(zp[off..off + 8].try_into().unwrap());
    assert_eq!(
        &zp[0x1F1..0x26C],
        &image[0x1F1..0x26C]
            .iter()
            .enumerate()
            .map(|(i, &b)| match i + 0x1F1 {
                // Fields the loader writes differ from the image; checked below.
                0x1FA..=0x1FB | 0x210..=0x211 | 0x214..=0x21F | 0x224..=0x22B | 0x250..=0x257 => {
                    zp[i + 0x1F1]
                }
                _ => b,
            })
            .collect::<Vec<u8>>()[..]
    );
    assert_eq!(zp[0x210], 0xFF);
    assert_eq!(zp[0x211], 0x81);
    assert_eq!(u32_at(0x214), 0x100_0000);
    assert_eq!(u32_at(0x218), (256 * MIB - 0x3000) as u32);
    assert_eq!(u32_at(0x21C), 0x2345);
    assert_eq!(u32_at(0x228), 0x2_0000);
    assert_eq!(u64_at(0x250), 0);
    assert_eq!(u64_at(0x070), 0xE_0000);
    let map = e820_map(256 * MIB, &reserved).unwrap();
    assert_eq!(usize::from(zp[0x1E8]), map.len());
    for (i, e) in map.iter().enumerate() {
        let off = 0x2D0 + 20 * i;
        assert_eq!(
            (u64_at(off), u64_at(off + 8), u32_at(off + 16)),
            (e.addr, e.size, e.kind as u32)
        );
    }
    assert_eq!(map[2].kind, E820Kind::Acpi);
    assert_eq!(map[5].addr, 0xFEC0_0000);

    // The tables map everything the kernel touches first.
    for a in [
        boot.entry_64,
        boot.zero_page,
        boot.cmdline.gpa,
        boot.stack_top - 8,
        boot.kernel.gpa + boot.kernel.len - 1,
        boot.initrd.unwrap().gpa,
        4 * GIB - 1,
    ] {
        assert_eq!(translate(&mem, boot.cr3, a), Some(a), "{a:#x}");
    }
    assert_eq!(
        mem.bytes(0x5000 + 0x10, 8),
        0x00AF_9B00_0000_FFFFu64.to_le_bytes()
    );
}

#[test]
fn entry_state_is_the_64_bit_protocol() {
    let mut mem = SparseMemory::new(64 * MIB);
    let boot = load_bzimage(
        &Fields::default().image(),
        "",
        None,
        &layout(64 * MIB),
        &mut mem,
    )
    .unwrap();
    let s = boot.entry_state();
    assert_eq!(s.rip, 0x100_0200);
    assert_eq!(s.gprs.rsi, 0x7000);
    assert_eq!(
        s.gprs,
        Gprs {
            rsi: 0x7000,
            ..Gprs::default()
        }
    );
    assert_eq!(s.rflags & (1 << 9), 0, "interrupts off");
    assert_eq!(s.cr0 & 0x8000_0001, 0x8000_0001, "PG and PE");
    assert_eq!(s.cr4 & 0x20, 0x20, "PAE");
    assert_eq!(s.efer & 0x500, 0x500, "LME and LMA");
    assert_eq!(s.cr3, 0x9000);
    assert_eq!((s.cs.selector, s.data.selector), (0x10, 0x18));
    // CS: present, code, L=1, D=0; data: present, writable, D/B=1.
    assert_eq!(s.cs.attrib & 0x0F9F, 0x0A9B);
    assert_eq!(s.data.attrib & 0x0F9F, 0x0C93);
    assert_eq!((s.gdtr.base, s.gdtr.limit), (0x5000, 31));
    assert_eq!(s.idtr.limit, 0);
    assert_eq!(s.tr.attrib & 0x8F, 0x8B, "busy TSS, present");
    // The hidden segment state matches the descriptors in the GDT.
    let code = u64::from_le_bytes(mem.bytes(0x5010, 8).try_into().unwrap());
    let data = u64::from_le_bytes(mem.bytes(0x5018, 8).try_into().unwrap());
    let packed = |d: u64| (((d >> 40) & 0xFF) | (((d >> 52) & 0xF) << 8)) as u16;
    assert_eq!(packed(code), s.cs.attrib);
    assert_eq!(packed(data), s.data.attrib);
}

#[test]
fn alignment_and_setup_size_move_the_entry() {
    let f = Fields {
        pref_address: 0x100_1000,
        setup_sects: 0, // means 4
        ..Fields::default()
    };
    let image = f.image();
    let mut mem = SparseMemory::new(64 * MIB);
    let boot = load_bzimage(&image, "", None, &layout(64 * MIB), &mut mem).unwrap();
    assert_eq!(boot.kernel.gpa, 0x120_0000);
    assert_eq!(boot.entry_64, 0x120_0200);
    assert_eq!(mem.bytes(0x120_0000, 0x3000), image[5 * 512..]);
    assert_eq!(mem.bytes(0x120_0200, 1), [0xE9]);
    // Without pref_address: 16 MiB.
    let f = Fields {
        pref_address: 0,
        ..Fields::default()
    };
    let boot = load_bzimage(
        &f.image(),
        "",
        None,
        &layout(64 * MIB),
        &mut SparseMemory::new(64 * MIB),
    )
    .unwrap();
    assert_eq!(boot.entry_64, 0x100_0200);
    // A payload larger than init_size claims its own length.
    let f = Fields {
        init_size: 0x1000,
        ..Fields::default()
    };
    let boot = load_bzimage(
        &f.image(),
        "",
        None,
        &layout(64 * MIB),
        &mut SparseMemory::new(64 * MIB),
    )
    .unwrap();
    assert_eq!(boot.kernel.len, 0x3000);
}

#[test]
fn initrd_goes_below_4_gib_mmio_hole_and_initrd_addr_max() {
    // 5 GiB of RAM with a reserved hole 3..4 GiB: the initrd goes under it.
    let hole = [ReservedRange {
        start: 3 * GIB,
        len: GIB,
        kind: ReservedKind::Reserved,
    }];
    let f = Fields {
        initrd_addr_max: 0xFFFF_FFFF,
        ..Fields::default()
    };
    let l = VmLayout {
        ram: vcpu::RamLayout::new(5 * GIB),
        reserved: &hole,
        acpi_rsdp: None,
    };
    let initrd = initrd_bytes(0x1800);
    let mut mem = SparseMemory::new(5 * GIB);
    let boot = load_bzimage(&f.image(), "", Some(&initrd), &l, &mut mem).unwrap();
    assert_eq!(
        boot.initrd,
        Some(Placement {
            gpa: 3 * GIB - 0x2000,
            len: 0x1800
        })
    );
    assert_eq!(mem.bytes(3 * GIB - 0x2000, 0x1800), initrd);

    // The usual 64-bit kernel's initrd_addr_max (2 GiB - 1): last byte at
    // most there.
    let mut mem = SparseMemory::new(5 * GIB);
    let boot = load_bzimage(&Fields::default().image(), "", Some(&initrd), &l, &mut mem).unwrap();
    let at = boot.initrd.unwrap();
    assert_eq!(at.gpa, 2 * GIB - 0x2000);
    assert!(at.gpa + at.len - 1 <= 0x7FFF_FFFF);
}

#[test]
fn initrd_steps_around_the_kernel() {
    // RAM ends 2 MiB after the kernel's init_size: a 3 MiB initrd goes
    // below the kernel.
    let ram = 0x100_0000 + 0x40_0000 + 2 * MIB;
    let initrd = initrd_bytes(3 * MIB as usize);
    let boot = load_bzimage(
        &Fields::default().image(),
        "",
        Some(&initrd),
        &layout(ram),
        &mut SparseMemory::new(ram),
    )
    .unwrap();
    assert_eq!(
        boot.initrd,
        Some(Placement {
            gpa: 0x100_0000 - 3 * MIB,
            len: 3 * MIB
        })
    );
    // A 1 MiB one still fits above it.
    let initrd = initrd_bytes(MIB as usize);
    let boot = load_bzimage(
        &Fields::default().image(),
        "",
        Some(&initrd),
        &layout(ram),
        &mut SparseMemory::new(ram),
    )
    .unwrap();
    assert_eq!(boot.initrd.unwrap().gpa, ram - MIB);
    // An empty initrd is no initrd.
    let boot = load_bzimage(
        &Fields::default().image(),
        "",
        Some(&[]),
        &layout(ram),
        &mut SparseMemory::new(ram),
    )
    .unwrap();
    assert_eq!(boot.initrd, None);
}

#[test]
fn initrd_that_fits_nowhere() {
    let ram = 64 * MIB;
    // Larger than all RAM above 1 MiB beside the kernel.
    let big = vec![0u8; 50 * MIB as usize];
    assert_eq!(
        load_err(&Fields::default(), "", Some(&big), &layout(ram)),
        BzImageError::InitrdDoesNotFit {
            len: 50 * MIB,
            limit: ram
        }
    );
    // initrd_addr_max below the only room: 1 MiB..16 MiB is too small for
    // 16 MiB, and everything above is past initrd_addr_max.
    let f = Fields {
        initrd_addr_max: 0x1FF_FFFF,
        ..Fields::default()
    };
    let initrd = vec![1u8; 16 * MIB as usize];
    assert_eq!(
        load_err(&f, "", Some(&initrd), &layout(ram)),
        BzImageError::InitrdDoesNotFit {
            len: 16 * MIB,
            limit: 0x200_0000
        }
    );
    // A small one fits under that limit, above the kernel's end (20 MiB)...
    let f = Fields {
        initrd_addr_max: 0x17F_FFFF,
        ..Fields::default()
    };
    let small = initrd_bytes(0x1000);
    let boot = load_bzimage(
        &f.image(),
        "",
        Some(&small),
        &layout(ram),
        &mut SparseMemory::new(ram),
    )
    .unwrap();
    assert_eq!(boot.initrd.unwrap().gpa, 0x180_0000 - 0x1000);
    // ...or below the kernel when the limit falls inside it.
    let f = Fields {
        initrd_addr_max: 0x11F_FFFF,
        ..Fields::default()
    };
    let boot = load_bzimage(
        &f.image(),
        "",
        Some(&small),
        &layout(ram),
        &mut SparseMemory::new(ram),
    )
    .unwrap();
    assert_eq!(boot.initrd.unwrap().gpa, 0x100_0000 - 0x1000);
}

#[test]
fn kernel_that_does_not_fit() {
    let d = Fields::default();
    // RAM ends inside init_size.
    assert_eq!(
        load_err(&d, "", None, &layout(18 * MIB)),
        BzImageError::KernelOutsideRam {
            start: 0x100_0000,
            end: 0x140_0000,
            limit: 18 * MIB
        }
    );
    // Into the PCI hole: RAM below 4 GiB ends at 3 GiB however much RAM there
    // is (the rest continues above 4 GiB, where the kernel cannot go).
    let f = Fields {
        pref_address: 4 * GIB - 2 * MIB,
        ..d
    };
    assert_eq!(
        load_err(&f, "", None, &layout(8 * GIB)),
        BzImageError::KernelOutsideRam {
            start: 4 * GIB - 2 * MIB,
            end: 4 * GIB + 2 * MIB,
            limit: 3 * GIB
        }
    );
    // Alignment rounding past 2^64.
    let f = Fields {
        pref_address: u64::MAX - 0x1000,
        ..d
    };
    assert!(matches!(
        load_err(&f, "", None, &layout(64 * MIB)),
        BzImageError::KernelOutsideRam { end: u64::MAX, .. }
    ));
    // A non-relocatable kernel that wants low memory.
    let f = Fields {
        pref_address: 0x9_0000,
        relocatable: 0,
        ..d
    };
    assert_eq!(
        load_err(&f, "", None, &layout(64 * MIB)),
        BzImageError::KernelBelow1MiB { start: 0x9_0000 }
    );
    // Over a reserved range.
    let acpi = [ReservedRange {
        start: 0x120_0000,
        len: 0x1_0000,
        kind: ReservedKind::AcpiReclaimable,
    }];
    let l = VmLayout {
        ram: vcpu::RamLayout::new(64 * MIB),
        reserved: &acpi,
        acpi_rsdp: Some(0x120_0000),
    };
    // A relocatable kernel moves above it, at its alignment; a fixed one cannot.
    let mut mem = SparseMemory::new(64 * MIB);
    let boot = load_bzimage(&d.image(), "", None, &l, &mut mem).unwrap();
    assert_eq!(boot.kernel.gpa, 0x140_0000);
    let fixed = Fields {
        relocatable: 0,
        ..d
    };
    assert_eq!(
        load_err(&fixed, "", None, &l),
        BzImageError::KernelOverReserved {
            start: 0x100_0000,
            end: 0x140_0000,
            reserved_start: 0x120_0000,
            reserved_end: 0x121_0000
        }
    );
}

#[test]
fn identity_mapped_ram_moves_kernel_and_initrd_to_the_vms_host_range() {
    let d = Fields::default();
    // 64 MiB backed at host 256 MiB: guest RAM is 0..1 MiB and 257..320 MiB.
    let l = VmLayout {
        ram: vcpu::RamLayout::identity(256 * MIB, 64 * MIB).unwrap(),
        reserved: &[],
        acpi_rsdp: Some(0xE_0000),
    };
    let mut mem = SparseMemory::new(320 * MIB);
    let initrd = initrd_bytes(0x2345);
    let boot = load_bzimage(&d.image(), "console=ttyS0", Some(&initrd), &l, &mut mem).unwrap();
    // The preferred 16 MiB is no RAM: the lowest 2 MiB-aligned place in RAM above it.
    assert_eq!(boot.kernel.gpa, 258 * MIB);
    assert_eq!(boot.entry_64, 258 * MIB + 0x200);
    let at = boot.initrd.unwrap();
    assert_eq!(at.gpa + at.len, 320 * MIB - 0xCBB);
    assert_eq!(mem.bytes(at.gpa, 4), initrd[..4]);
    // The e820 map says exactly that.
    let e820 = mem.bytes(LINUX_ZERO_PAGE_GPA + 0x2D0, 20 * 3);
    let entry = |i: usize| {
        let b = &e820[i * 20..];
        (
            u64::from_le_bytes(b[..8].try_into().unwrap()),
            u64::from_le_bytes(b[8..16].try_into().unwrap()),
            u32::from_le_bytes(b[16..20].try_into().unwrap()),
        )
    };
    assert_eq!(entry(0), (0, 0x9_FC00, 1));
    assert_eq!(entry(1), (0x9_FC00, 0x6_0400, 2));
    assert_eq!(entry(2), (257 * MIB, 63 * MIB, 1));
    assert_eq!(boot.e820_entries, 3);
    // A fixed kernel at 16 MiB does not fit.
    let fixed = Fields {
        relocatable: 0,
        ..d
    };
    assert_eq!(
        load_err(&fixed, "", None, &l),
        BzImageError::KernelOutsideRam {
            start: 16 * MIB,
            end: 20 * MIB,
            limit: 320 * MIB
        }
    );
    // Nor does a relocatable one larger than the RAM above its preferred address.
    let small = VmLayout {
        ram: vcpu::RamLayout::identity(256 * MIB, 4 * MIB).unwrap(),
        ..l
    };
    assert!(matches!(
        load_err(&d, "", None, &small),
        BzImageError::KernelOutsideRam { start, .. } if start == 16 * MIB
    ));
}

#[test]
fn command_line_limits() {
    let d = Fields::default();
    let l = layout(64 * MIB);
    let long = "x".repeat(2048);
    assert_eq!(
        load_err(&d, &long, None, &l),
        BzImageError::CmdlineTooLong {
            len: 2048,
            max: 2047
        }
    );
    let ok = "x".repeat(2047);
    let mut mem = SparseMemory::new(64 * MIB);
    load_bzimage(&d.image(), &ok, None, &l, &mut mem).unwrap();
    assert_eq!(mem.bytes(0x2_0000 + 2047, 1), [0]);
    // A kernel accepting more than the slot is bounded by the slot.
    let f = Fields {
        cmdline_size: u32::MAX,
        ..d
    };
    let huge = "x".repeat(0x1_0000);
    assert_eq!(
        load_err(&f, &huge, None, &l),
        BzImageError::CmdlineTooLong {
            len: 0x1_0000,
            max: 0xFFFF
        }
    );
    assert_eq!(
        load_err(&d, "root=/dev/vda\0init=/bin/sh", None, &l),
        BzImageError::CmdlineHasNul { offset: 13 }
    );
}

#[test]
fn bad_layouts() {
    let d = Fields::default();
    let mut mem = SparseMemory::new(32 * MIB);
    assert_eq!(
        load_bzimage(&d.image(), "", None, &layout(64 * MIB), &mut mem),
        Err(BzImageError::RamLargerThanMemory {
            ram_size: 64 * MIB,
            mem_size: 32 * MIB
        })
    );
    let over_zero_page = [ReservedRange {
        start: 0x7800,
        len: 0x10,
        kind: ReservedKind::Reserved,
    }];
    let l = VmLayout {
        reserved: &over_zero_page,
        ..layout(64 * MIB)
    };
    let err = load_err(&d, "", None, &l);
    assert_eq!(
        err,
        BzImageError::BootAreaReserved {
            area: LINUX_BOOT_AREAS[2],
            reserved_start: 0x7800,
            reserved_end: 0x7810
        }
    );
    assert_eq!(
        err.to_string(),
        "reserved range 0x7800..0x7810 covers the zero page (0x7000..0x8000)"
    );
    let overlapping = [
        ReservedRange {
            start: 0x200_0000,
            len: 0x2000,
            kind: ReservedKind::Reserved,
        },
        ReservedRange {
            start: 0x200_1000,
            len: 0x1000,
            kind: ReservedKind::AcpiNvs,
        },
    ];
    let l = VmLayout {
        reserved: &overlapping,
        ..layout(64 * MIB)
    };
    assert_eq!(
        load_err(&d, "", None, &l),
        BzImageError::E820(E820Error::RangesOverlap {
            first: 0x200_0000,
            second: 0x200_1000
        })
    );
    assert!(matches!(
        load_err(&d, "", None, &layout(0x8_0000)),
        BzImageError::E820(E820Error::RamTooSmall { .. })
    ));
    let l = VmLayout {
        acpi_rsdp: Some(64 * MIB - 35),
        ..layout(64 * MIB)
    };
    assert_eq!(
        load_err(&d, "", None, &l),
        BzImageError::RsdpOutsideRam {
            gpa: 64 * MIB - 35,
            ram_size: 64 * MIB
        }
    );
    let l = VmLayout {
        acpi_rsdp: Some(u64::MAX - 3),
        ..layout(64 * MIB)
    };
    assert!(matches!(
        load_err(&d, "", None, &l),
        BzImageError::RsdpOutsideRam { .. }
    ));
}

#[test]
fn old_protocol_gets_no_rsdp_field() {
    let f = Fields {
        version: 0x020C,
        ..Fields::default()
    };
    let l = VmLayout {
        acpi_rsdp: Some(0xE_0000),
        ..layout(64 * MIB)
    };
    let mut mem = SparseMemory::new(64 * MIB);
    let boot = load_bzimage(&f.image(), "", None, &l, &mut mem).unwrap();
    assert_eq!(boot.protocol, 0x020C);
    assert!(!boot.rsdp_in_zero_page);
    assert_eq!(mem.bytes(0x7070, 8), [0; 8]);
}

#[test]
fn header_errors_come_first_and_write_nothing() {
    let l = layout(64 * MIB);
    assert_eq!(
        load_err(
            &Fields {
                xloadflags: 0,
                ..Fields::default()
            },
            "",
            None,
            &l
        ),
        BzImageError::Header(HeaderError::No64BitEntry { xloadflags: 0 })
    );
    let mut mem = SparseMemory::new(64 * MIB);
    assert!(matches!(
        load_bzimage(&[0u8; 16], "", None, &l, &mut mem),
        Err(BzImageError::Header(HeaderError::ImageTooShort {
            len: 16,
            ..
        }))
    ));
    assert_eq!(mem.writes, 0);
}

#[test]
fn hostile_images_never_panic() {
    let l = VmLayout {
        ram: vcpu::RamLayout::new(64 * MIB),
        reserved: &[],
        acpi_rsdp: Some(0xE_0000),
    };
    let base = Fields {
        payload_len: 0x400,
        ..Fields::default()
    }
    .image();
    let initrd = [7u8; 0x100];
    let mut mem = SparseMemory::new(64 * MIB);
    for len in 0..base.len() {
        let before = mem.writes;
        if load_bzimage(&base[..len], "x", Some(&initrd), &l, &mut mem).is_err() {
            assert_eq!(mem.writes, before, "truncated to {len:#x}");
        }
    }
    // Every single-byte corruption of the boot sector and setup header.
    for pos in 0x1F0..0x270 {
        for val in [0x00, 0x01, 0x7F, 0x80, 0xFF] {
            let mut bad = base.clone();
            bad[pos] = val;
            let before = mem.writes;
            match load_bzimage(&bad, "x", Some(&initrd), &l, &mut mem) {
                Ok(boot) => assert!(boot.kernel.gpa >= MIB && boot.entry_64 < 4 * GIB),
                Err(_) => assert_eq!(mem.writes, before, "byte {pos:#x} = {val:#x}"),
            }
        }
    }
    // Every 32-bit field set to extremes.
    for pos in (0x1F0..0x270).step_by(2) {
        for val in [u32::MAX, 0x8000_0000, 0x1000_0000] {
            let mut bad = base.clone();
            bad[pos..pos + 4].copy_from_slice(&val.to_le_bytes());
            let _ = load_bzimage(&bad, "x", Some(&initrd), &l, &mut mem);
        }
    }
}

#[test]
fn boot_areas_hold_what_is_written_there() {
    let tables = LINUX_BOOT_AREAS[3];
    assert_eq!(
        identity_page_tables_len(IDENTITY_MAP_BYTES),
        Ok(tables.end - tables.start)
    );
    assert_eq!(
        LINUX_BOOT_AREAS[0].end - LINUX_BOOT_AREAS[0].start,
        BOOT_GDT_LEN
    );
    assert_eq!(LINUX_BOOT_AREAS[2].start, LINUX_ZERO_PAGE_GPA);
    // Every area is written by a full load, nothing of the slot past the
    // command line's NUL.
    let mut mem = SparseMemory::new(64 * MIB);
    load_bzimage(
        &Fields::default().image(),
        "ro",
        None,
        &layout(64 * MIB),
        &mut mem,
    )
    .unwrap();
    assert_eq!(mem.bytes(LINUX_CMDLINE_GPA, 4), *b"ro\0\0");
    assert!(mem.pages.contains_key(&(LINUX_PAGE_TABLES_GPA / PAGE + 5)));
    assert!(!mem.pages.contains_key(&(LINUX_PAGE_TABLES_GPA / PAGE + 6)));
}
