//! Tests of [`SecondLevelTables`] that walk the built tables with their own
//! bit-level reader, independent of the crate's decoder.

extern crate std;

use std::collections::BTreeSet;
use std::format;
use std::vec::Vec;

use super::*;
use crate::mock::ArenaMemory;

const KIB4: u64 = 0x1000;
const MIB2: u64 = 0x20_0000;
const GIB1: u64 = 0x4000_0000;
/// Address bits 51:12.
const ADDR: u64 = 0x000f_ffff_ffff_f000;
/// Where the test arena puts its tables: high, to exercise the top address bits.
const ARENA: u64 = 0x000f_ff00_0000_0000;

const FORMATS: [Format; 2] = [Format::Ept, Format::Npt];

type Tables = SecondLevelTables<ArenaMemory>;

fn tables(format: Format, huge_1g: bool) -> Tables {
    let mem = ArenaMemory::new(HostPhysAddr(ARENA));
    SecondLevelTables::new(format, PageSizes { huge_1g }, mem).unwrap()
}

fn g(addr: u64) -> GuestPhysAddr {
    GuestPhysAddr(addr)
}

fn h(addr: u64) -> HostPhysAddr {
    HostPhysAddr(addr)
}

/// A leaf found by [`walk_all`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RawLeaf {
    gpa: u64,
    size: u64,
    raw: u64,
}

/// Everything [`walk_all`] found.
#[derive(Debug, Default)]
struct Walk {
    leaves: Vec<RawLeaf>,
    /// Raw non-leaf entries.
    pointers: Vec<u64>,
    tables: usize,
}

fn present(format: Format, raw: u64) -> bool {
    match format {
        Format::Ept => raw & 0b111 != 0,
        Format::Npt | Format::AmdVi => raw & 1 != 0,
        Format::VtdSl => raw & 0b11 != 0,
    }
}

/// Reads every table reachable from the root, from the raw bits alone.
fn walk_all(t: &Tables) -> Walk {
    let mut walk = Walk::default();
    walk_table(t.memory(), t.format(), t.root().0, 4, 0, &mut walk);
    walk
}

fn walk_table(
    mem: &ArenaMemory,
    format: Format,
    table: u64,
    level: u32,
    base: u64,
    out: &mut Walk,
) {
    out.tables += 1;
    let entries = mem.table(h(table)).expect("entry points outside the arena");
    let span = 1u64 << (12 + 9 * (level - 1));
    for (i, &raw) in entries.iter().enumerate() {
        if !present(format, raw) {
            assert_eq!(raw, 0, "stray bits in a not-present entry");
            continue;
        }
        let gpa = base + i as u64 * span;
        let large = match format {
            // NextLevel 0 marks an AMD-Vi leaf.
            Format::AmdVi => raw & (0b111 << 9) == 0,
            _ => raw & (1 << 7) != 0,
        };
        let leaf = level == 1 || (level < 4 && large);
        if leaf {
            out.leaves.push(RawLeaf {
                gpa,
                size: span,
                raw,
            });
        } else {
            out.pointers.push(raw);
            walk_table(mem, format, raw & ADDR, level - 1, gpa, out);
        }
    }
}

/// The (gpa, size) of each leaf, in address order.
fn layout(walk: &Walk) -> Vec<(u64, u64)> {
    walk.leaves.iter().map(|l| (l.gpa, l.size)).collect()
}

/// Checks that every leaf maps its gpa to `gpa + delta`.
fn assert_offset(walk: &Walk, delta: u64) {
    for leaf in &walk.leaves {
        let addr = leaf.raw & ADDR & !(leaf.size - 1);
        assert_eq!(addr, leaf.gpa + delta, "leaf at {:#x}", leaf.gpa);
    }
}

#[test]
fn sixty_four_mib_is_32_two_mib_leaves() {
    for format in FORMATS {
        let mut t = tables(format, true);
        t.map(
            g(0),
            h(0x8000_0000),
            64 << 20,
            Perms::RWX,
            MemType::WriteBack,
        )
        .unwrap();
        let walk = walk_all(&t);
        let want: Vec<_> = (0..32).map(|i| (i * MIB2, MIB2)).collect();
        assert_eq!(layout(&walk), want, "{format}");
        assert_offset(&walk, 0x8000_0000);
        // Root, one PDPT, one PD.
        assert_eq!(walk.tables, 3);
        assert_eq!(t.memory().tables_allocated(), 3);
    }
}

#[test]
fn two_gib_with_and_without_one_gib_pages() {
    for format in FORMATS {
        let mut t = tables(format, true);
        t.map(
            g(GIB1),
            h(4 * GIB1),
            2 * GIB1,
            Perms::RWX,
            MemType::WriteBack,
        )
        .unwrap();
        let walk = walk_all(&t);
        assert_eq!(layout(&walk), [(GIB1, GIB1), (2 * GIB1, GIB1)]);
        assert_offset(&walk, 3 * GIB1);
        assert_eq!(walk.tables, 2);

        let mut t = tables(format, false);
        t.map(
            g(GIB1),
            h(4 * GIB1),
            2 * GIB1,
            Perms::RWX,
            MemType::WriteBack,
        )
        .unwrap();
        let walk = walk_all(&t);
        assert_eq!(walk.leaves.len(), 1024);
        assert!(walk.leaves.iter().all(|l| l.size == MIB2));
        assert_eq!(walk.leaves[0].gpa, GIB1);
        assert_offset(&walk, 3 * GIB1);
        // Root, PDPT, two PDs.
        assert_eq!(walk.tables, 4);

        // 1 GiB pages allowed, but the host side is only 2 MiB aligned.
        let mut t = tables(format, true);
        t.map(
            g(GIB1),
            h(GIB1 + MIB2),
            GIB1,
            Perms::RWX,
            MemType::WriteBack,
        )
        .unwrap();
        let walk = walk_all(&t);
        assert_eq!(walk.leaves.len(), 512);
        assert!(walk.leaves.iter().all(|l| l.size == MIB2));
    }
}

#[test]
fn unaligned_start_uses_4k_up_to_the_2m_boundary() {
    for format in FORMATS {
        let mut t = tables(format, false);
        t.map(
            g(0x1000),
            h(0x4000_1000),
            0x3f_f000,
            Perms::RWX,
            MemType::WriteBack,
        )
        .unwrap();
        let walk = walk_all(&t);
        let mut want: Vec<_> = (1..512).map(|i| (i * KIB4, KIB4)).collect();
        want.push((MIB2, MIB2));
        assert_eq!(layout(&walk), want, "{format}");
        assert_offset(&walk, 0x4000_0000);
        // Root, PDPT, PD, one PT.
        assert_eq!(walk.tables, 4);
    }
}

#[test]
fn host_address_off_the_2m_grid_uses_4k_pages() {
    for format in FORMATS {
        let mut t = tables(format, true);
        t.map(g(0), h(0x1000), 4 << 20, Perms::RWX, MemType::WriteBack)
            .unwrap();
        let walk = walk_all(&t);
        assert_eq!(walk.leaves.len(), 1024);
        assert!(walk.leaves.iter().all(|l| l.size == KIB4));
        assert_offset(&walk, 0x1000);
        assert_eq!(walk.tables, 5);
    }
}

/// One 4 KiB RW WB page, one 2 MiB RX UC page and one 1 GiB RWX WB page at
/// the top of the physical address space.
fn map_three_kinds(format: Format) -> Tables {
    let mut t = tables(format, true);
    t.map(g(0x1000), h(0x5000), KIB4, Perms::RW, MemType::WriteBack)
        .unwrap();
    t.map(g(MIB2), h(0x40_0000), MIB2, Perms::RX, MemType::Uncacheable)
        .unwrap();
    t.map(
        g(GIB1),
        h(0x000f_ffc0_0000_0000),
        GIB1,
        Perms::RWX,
        MemType::WriteBack,
    )
    .unwrap();
    t
}

#[test]
fn ept_bits_exact() {
    let t = map_three_kinds(Format::Ept);
    let walk = walk_all(&t);
    assert_eq!(
        walk.leaves,
        [
            // R|W, WB (6) in bits 5:3, no large bit, ignore-PAT/A/D clear.
            RawLeaf {
                gpa: 0x1000,
                size: KIB4,
                raw: 0x5000 | 0b011 | (6 << 3),
            },
            // R|X, UC (0), large.
            RawLeaf {
                gpa: MIB2,
                size: MIB2,
                raw: 0x40_0000 | 0b101 | (1 << 7),
            },
            // R|W|X, WB, large.
            RawLeaf {
                gpa: GIB1,
                size: GIB1,
                raw: 0x000f_ffc0_0000_0000 | 0b111 | (6 << 3) | (1 << 7),
            },
        ]
    );
    // Root->PDPT, PDPT->PD, PD->PT: R|W|X and nothing else (bits 7:3 reserved).
    assert_eq!(walk.pointers.len(), 3);
    for raw in &walk.pointers {
        assert_eq!(raw & !ADDR, 0b111, "{raw:#x}");
        assert!(t.memory().table(h(raw & ADDR)).is_some());
    }
    let root = t.root().0;
    assert_eq!(root, ARENA);
    assert_eq!(t.eptp(false), Some(root | 6 | (3 << 3)));
    assert_eq!(t.eptp(true), Some(root | 6 | (3 << 3) | (1 << 6)));
    assert_eq!(t.ncr3(), None);
}

#[test]
fn npt_bits_exact() {
    let t = map_three_kinds(Format::Npt);
    let walk = walk_all(&t);
    const P: u64 = 1;
    const RW: u64 = 1 << 1;
    const US: u64 = 1 << 2;
    const PWT: u64 = 1 << 3;
    const PCD: u64 = 1 << 4;
    const PS: u64 = 1 << 7;
    const NX: u64 = 1 << 63;
    assert_eq!(
        walk.leaves,
        [
            RawLeaf {
                gpa: 0x1000,
                size: KIB4,
                raw: 0x5000 | P | RW | US | NX,
            },
            RawLeaf {
                gpa: MIB2,
                size: MIB2,
                raw: 0x40_0000 | P | US | PCD | PWT | PS,
            },
            RawLeaf {
                gpa: GIB1,
                size: GIB1,
                raw: 0x000f_ffc0_0000_0000 | P | RW | US | PS,
            },
        ]
    );
    assert_eq!(walk.pointers.len(), 3);
    for raw in &walk.pointers {
        assert_eq!(raw & !ADDR, P | RW | US, "{raw:#x}");
    }
    assert_eq!(t.ncr3(), Some(ARENA));
    assert_eq!(t.eptp(false), None);
}

#[test]
fn overlap_is_rejected_and_changes_nothing() {
    for format in FORMATS {
        let mut t = tables(format, true);
        t.map(g(MIB2), h(MIB2), 2 * MIB2, Perms::RWX, MemType::WriteBack)
            .unwrap();
        t.map(
            g(0x1000),
            h(0x1000),
            2 * KIB4,
            Perms::RWX,
            MemType::WriteBack,
        )
        .unwrap();
        let before = t.memory().clone();
        let cases = [
            (MIB2, 2 * MIB2, MIB2),
            (0, 2 * MIB2, 0x1000),
            (0x2000, 3 * MIB2, 0x2000),
            (0x3000, 4 * MIB2, MIB2),
            (5 << 20, 3 << 20, 5 << 20),
            (0x30_0000, KIB4, 0x30_0000),
            (0, GIB1, 0x1000),
        ];
        for (gpa, len, first) in cases {
            assert_eq!(
                t.map(g(gpa), h(GIB1), len, Perms::RWX, MemType::WriteBack),
                Err(MapError::AlreadyMapped { gpa: g(first) }),
                "{format} {gpa:#x}+{len:#x}"
            );
        }
        assert_eq!(*t.memory(), before);
        // Neighbours on both sides are fine.
        t.map(g(0), h(GIB1), KIB4, Perms::RWX, MemType::WriteBack)
            .unwrap();
        t.map(
            g(0x3000),
            h(GIB1),
            MIB2 - 0x3000,
            Perms::RWX,
            MemType::WriteBack,
        )
        .unwrap();
        t.map(g(3 * MIB2), h(GIB1), MIB2, Perms::RWX, MemType::WriteBack)
            .unwrap();
    }
}

#[test]
fn running_out_of_tables_maps_nothing() {
    for format in FORMATS {
        // Root, PDPT, PD: the page table for the 4 KiB head is missing.
        let mut t = SecondLevelTables::new(
            format,
            PageSizes::default(),
            ArenaMemory::with_limit(h(ARENA), 3),
        )
        .unwrap();
        let err = t.map(
            g(0x1000),
            h(0x1000),
            0x3f_f000,
            Perms::RWX,
            MemType::WriteBack,
        );
        assert_eq!(err, Err(MapError::OutOfTables { gpa: g(0x1000) }));
        assert!(walk_all(&t).leaves.is_empty());

        // Two GiB need a second PD: it is missing, so the first GiB (whose
        // tables are all there) is not mapped either.
        let err = t.map(g(0), h(0), 2 * GIB1, Perms::RWX, MemType::WriteBack);
        assert_eq!(err, Err(MapError::OutOfTables { gpa: g(GIB1) }));
        assert!(walk_all(&t).leaves.is_empty());
        for page in (0..3 * GIB1).step_by(MIB2 as usize) {
            assert_eq!(t.translate(g(page)), None);
        }

        // With more memory the same call succeeds, reusing the tables there.
        let mut mem = t.into_memory();
        mem.set_limit(4);
        let mut t = SecondLevelTables {
            format,
            page_sizes: PageSizes::default(),
            root: h(ARENA),
            three_level_dma: false,
            mem,
        };
        t.map(g(0), h(0), 2 * GIB1, Perms::RWX, MemType::WriteBack)
            .unwrap();
        let walk = walk_all(&t);
        assert_eq!(walk.leaves.len(), 1024);
        assert_eq!(walk.tables, 4);
        assert_eq!(t.memory().tables_allocated(), 4);
    }
}

#[test]
fn no_memory_for_the_root() {
    let mem = ArenaMemory::with_limit(h(ARENA), 0);
    let err = SecondLevelTables::new(Format::Ept, PageSizes::default(), mem).unwrap_err();
    assert_eq!(err, MapError::NoRootTable);
}

#[test]
fn ranges_are_checked() {
    const TOP_G: u64 = 1 << 48;
    const TOP_H: u64 = 1 << 52;
    let wb = MemType::WriteBack;
    for format in FORMATS {
        let mut t = tables(format, true);
        let cases = [
            (0x1000, 0x1000, 0, MapError::EmptyRange { gpa: g(0x1000) }),
            (
                0x1001,
                0,
                KIB4,
                MapError::GpaMisaligned {
                    gpa: g(0x1001),
                    len: KIB4,
                },
            ),
            (
                0,
                0,
                0x1800,
                MapError::GpaMisaligned {
                    gpa: g(0),
                    len: 0x1800,
                },
            ),
            (0, 0x1800, KIB4, MapError::HpaMisaligned { hpa: h(0x1800) }),
            (
                TOP_G - KIB4,
                0,
                2 * KIB4,
                MapError::GpaOutOfRange {
                    gpa: g(TOP_G - KIB4),
                    len: 2 * KIB4,
                },
            ),
            (
                TOP_G,
                0,
                KIB4,
                MapError::GpaOutOfRange {
                    gpa: g(TOP_G),
                    len: KIB4,
                },
            ),
            (
                u64::MAX - 0xfff,
                0,
                2 * KIB4,
                MapError::GpaOutOfRange {
                    gpa: g(u64::MAX - 0xfff),
                    len: 2 * KIB4,
                },
            ),
            (
                0,
                TOP_H - KIB4,
                2 * KIB4,
                MapError::HpaOutOfRange {
                    hpa: h(TOP_H - KIB4),
                    len: 2 * KIB4,
                },
            ),
            (
                0,
                u64::MAX - 0xfff,
                2 * KIB4,
                MapError::HpaOutOfRange {
                    hpa: h(u64::MAX - 0xfff),
                    len: 2 * KIB4,
                },
            ),
        ];
        for (gpa, hpa, len, want) in cases {
            assert_eq!(
                t.map(g(gpa), h(hpa), len, Perms::RWX, wb),
                Err(want),
                "{format}"
            );
        }
        for perms in [
            Perms::default(),
            Perms {
                write: true,
                ..Perms::default()
            },
            Perms {
                exec: true,
                ..Perms::default()
            },
            Perms {
                write: true,
                exec: true,
                ..Perms::default()
            },
        ] {
            assert_eq!(
                t.map(g(0), h(0), KIB4, perms, wb),
                Err(MapError::NoRead { perms })
            );
        }
        assert_eq!(t.memory().tables_allocated(), 1);

        // The very last page of both spaces is fine.
        t.map(g(TOP_G - KIB4), h(TOP_H - KIB4), KIB4, Perms::RWX, wb)
            .unwrap();
        let last = t.translate(g(TOP_G - 1)).unwrap();
        assert_eq!(last.hpa, h(TOP_H - 1));
        assert_eq!(t.translate(g(TOP_G)), None);
        assert_eq!(t.translate(g(u64::MAX)), None);
        t.map(
            g(TOP_G - GIB1),
            h(TOP_H - GIB1),
            GIB1 - KIB4,
            Perms::RWX,
            wb,
        )
        .unwrap();
    }
}

#[test]
fn mmio_hole_between_ram_ranges_stays_unmapped() {
    for format in FORMATS {
        let mut t = tables(format, true);
        let low_ram = (0, 0x1_0000_0000, 0xc000_0000);
        let high_ram = (0x1_0000_0000, 0x1_c000_0000, 0x4000_0000);
        let bar = (0xfe00_0000, 0x3_fe00_0000, 0x4000);
        for (gpa, hpa, len) in [low_ram, high_ram] {
            t.map(g(gpa), h(hpa), len, Perms::RWX, MemType::WriteBack)
                .unwrap();
        }
        t.map(g(bar.0), h(bar.1), bar.2, Perms::RW, MemType::Uncacheable)
            .unwrap();

        let holes = [(0xc000_0000, 0xfe00_0000), (0xfe00_4000, 0x1_0000_0000)];
        let walk = walk_all(&t);
        for leaf in &walk.leaves {
            for (start, end) in holes {
                assert!(
                    leaf.gpa + leaf.size <= start || leaf.gpa >= end,
                    "{format}: leaf {:#x}+{:#x} covers the hole",
                    leaf.gpa,
                    leaf.size
                );
            }
        }
        for (start, end) in holes {
            for gpa in [start, start + KIB4, end - KIB4, end - 1] {
                assert_eq!(t.translate(g(gpa)), None, "{format} {gpa:#x}");
            }
        }
        // 1 GiB pages for the low RAM's first 3 GiB, 1 for the high RAM.
        let big = walk.leaves.iter().filter(|l| l.size == GIB1).count();
        assert_eq!(big, 4);
        let edge = t.translate(g(0xbfff_ffff)).unwrap();
        assert_eq!(edge.hpa, h(0x1_bfff_ffff));
        let reg = t.translate(g(0xfe00_3ffc)).unwrap();
        assert_eq!(reg.hpa, h(0x3_fe00_3ffc));
        assert_eq!(
            (reg.page_size, reg.perms, reg.mem_type),
            (PageSize::Size4K, Perms::RW, MemType::Uncacheable)
        );
        assert_eq!(t.translate(g(0x1_0000_0000)).unwrap().hpa, h(0x1_c000_0000));
    }
}

#[test]
fn translate_at_every_page_boundary_of_a_mixed_mapping() {
    let start = GIB1 - MIB2 - 2 * KIB4;
    let pieces = [
        (start, KIB4),
        (start + KIB4, KIB4),
        (GIB1 - MIB2, MIB2),
        (GIB1, GIB1),
        (2 * GIB1, MIB2),
        (2 * GIB1 + MIB2, KIB4),
    ];
    let end = 2 * GIB1 + MIB2 + KIB4;
    let delta = 4 * GIB1;
    for format in FORMATS {
        let mut t = tables(format, true);
        t.map(
            g(start),
            h(start + delta),
            end - start,
            Perms::RX,
            MemType::WriteBack,
        )
        .unwrap();
        let walk = walk_all(&t);
        assert_eq!(layout(&walk), pieces, "{format}");
        assert_offset(&walk, delta);

        let size_of = |bytes| match bytes {
            KIB4 => PageSize::Size4K,
            MIB2 => PageSize::Size2M,
            _ => PageSize::Size1G,
        };
        for (base, size) in pieces {
            for page in (base..base + size).step_by(KIB4 as usize) {
                for gpa in [page, page + KIB4 - 1] {
                    let got = t.translate(g(gpa)).unwrap();
                    let want = Translation {
                        hpa: h(gpa + delta),
                        page_size: size_of(size),
                        perms: Perms::RX,
                        mem_type: MemType::WriteBack,
                    };
                    assert_eq!(got, want, "{format} {gpa:#x}");
                    assert_eq!(got.bytes_to_page_end(), base + size - gpa);
                }
            }
        }
        assert_eq!(t.translate(g(start - 1)), None);
        assert_eq!(t.translate(g(end)), None);
    }
}

#[test]
fn unmap_clears_whole_pages_only() {
    for format in FORMATS {
        let mut t = tables(format, false);
        t.map(
            g(0x1000),
            h(0x1000),
            0x3f_f000,
            Perms::RWX,
            MemType::WriteBack,
        )
        .unwrap();
        assert_eq!(t.unmap(g(0x5000), KIB4), Ok(KIB4));
        assert_eq!(t.translate(g(0x5000)), None);
        assert!(t.translate(g(0x4fff)).is_some());
        assert!(t.translate(g(0x6000)).is_some());

        let before = t.memory().clone();
        let split = MapError::SplitsLargePage {
            gpa: g(MIB2),
            page_size: PageSize::Size2M,
        };
        assert_eq!(t.unmap(g(0x30_0000), KIB4), Err(split));
        assert_eq!(t.unmap(g(0), 0x30_0000), Err(split));
        assert_eq!(t.unmap(g(0), 0), Err(MapError::EmptyRange { gpa: g(0) }));
        assert_eq!(
            t.unmap(g(0x800), KIB4),
            Err(MapError::GpaMisaligned {
                gpa: g(0x800),
                len: KIB4
            })
        );
        assert_eq!(
            t.unmap(g(1 << 48), KIB4),
            Err(MapError::GpaOutOfRange {
                gpa: g(1 << 48),
                len: KIB4
            })
        );
        assert_eq!(*t.memory(), before);

        // Everything else (the holes at 0 and 0x5000 are skipped).
        assert_eq!(t.unmap(g(0), GIB1), Ok(0x3f_f000 - KIB4));
        let walk = walk_all(&t);
        assert!(walk.leaves.is_empty());
        assert_eq!(walk.tables, 4);

        // Mapping again reuses the page table left under the first 2 MiB, so
        // that part gets 4 KiB pages; the second 2 MiB is a large page again.
        t.map(g(0), h(GIB1), 4 << 20, Perms::RW, MemType::WriteBack)
            .unwrap();
        let walk = walk_all(&t);
        let mut want: Vec<_> = (0..512).map(|i| (i * KIB4, KIB4)).collect();
        want.push((MIB2, MIB2));
        assert_eq!(layout(&walk), want);
        assert_offset(&walk, GIB1);
        assert_eq!(t.memory().tables_allocated(), 4);
    }
}

#[test]
fn visit_tables_lists_every_table_once() {
    let t = map_three_kinds(Format::Npt);
    let mut seen = Vec::new();
    t.visit_tables(|table| seen.push(table.0));
    assert_eq!(seen[0], ARENA);
    let unique: BTreeSet<_> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len());
    let all: BTreeSet<_> = (0..t.memory().tables_allocated() as u64)
        .map(|i| ARENA + i * KIB4)
        .collect();
    assert_eq!(unique, all);
    assert_eq!(seen.len(), walk_all(&t).tables);
}

#[test]
fn memory_can_be_lent() {
    let mut arena = ArenaMemory::new(h(ARENA));
    {
        let mut t = SecondLevelTables::new(Format::Ept, PageSizes::default(), &mut arena).unwrap();
        t.map(g(0), h(0), KIB4, Perms::RWX, MemType::WriteBack)
            .unwrap();
    }
    // Root, PDPT, PD, PT stay with the owner.
    assert_eq!(arena.tables_allocated(), 4);
}

#[test]
fn error_messages_name_the_values() {
    let cases = [
        (
            MapError::AlreadyMapped { gpa: g(0x20_0000) },
            ["0x200000", "already mapped"],
        ),
        (
            MapError::GpaOutOfRange {
                gpa: g(0xffff_ffff_f000),
                len: 0x2000,
            },
            ["0xfffffffff000", "0x2000"],
        ),
        (
            MapError::HpaOutOfRange {
                hpa: h(0xf_ffff_ffff_f000),
                len: 0x3000,
            },
            ["0xffffffffff000", "52-bit"],
        ),
        (
            MapError::GpaMisaligned {
                gpa: g(0x1001),
                len: 0x1000,
            },
            ["0x1001", "0x1000"],
        ),
        (
            MapError::HpaMisaligned { hpa: h(0x1800) },
            ["0x1800", "4 KiB"],
        ),
        (
            MapError::OutOfTables {
                gpa: g(0x4000_0000),
            },
            ["0x40000000", "page table"],
        ),
        (
            MapError::NoRead {
                perms: Perms {
                    write: true,
                    ..Perms::default()
                },
            },
            ["-w-", "read"],
        ),
        (
            MapError::SplitsLargePage {
                gpa: g(0x20_0000),
                page_size: PageSize::Size2M,
            },
            ["2 MiB", "0x200000"],
        ),
        (
            MapError::EmptyRange { gpa: g(0x7000) },
            ["0x7000", "length 0"],
        ),
    ];
    for (err, words) in cases {
        let text = format!("{err}");
        for word in words {
            assert!(text.contains(word), "{text:?} lacks {word:?}");
        }
    }
}

const IOMMU_FORMATS: [Format; 2] = [Format::VtdSl, Format::AmdVi];

#[test]
fn iommu_formats_map_and_translate() {
    for format in IOMMU_FORMATS {
        let mut t = tables(format, false);
        // 4 KiB, 2 MiB and 4 KiB again; RW device memory, R firmware.
        t.map(g(0x1000), h(0x5000), KIB4, Perms::RW, MemType::WriteBack)
            .unwrap();
        t.map(
            g(MIB2),
            h(0x40_0000),
            MIB2,
            Perms::RWX,
            MemType::Uncacheable,
        )
        .unwrap();
        t.map(g(2 * MIB2), h(0x9000), KIB4, Perms::R, MemType::WriteBack)
            .unwrap();
        let walk = walk_all(&t);
        assert_eq!(
            layout(&walk),
            [(0x1000, KIB4), (MIB2, MIB2), (2 * MIB2, KIB4)],
            "{format}"
        );
        let rw_no_exec = Perms::RW;
        let got = t.translate(g(MIB2 + 0x1234)).unwrap();
        assert_eq!(got.hpa, h(0x40_1234));
        assert_eq!(
            (got.page_size, got.perms, got.mem_type),
            (PageSize::Size2M, rw_no_exec, MemType::WriteBack)
        );
        assert_eq!(t.translate(g(2 * MIB2 + 8)).unwrap().perms, Perms::R);
        assert_eq!(t.translate(g(0)), None);
        assert_eq!(t.translate(g(0x2000)), None);
        assert_eq!(t.unmap(g(0x1000), KIB4), Ok(KIB4));
        assert_eq!(t.translate(g(0x1000)), None);
        // What the entries are, bit for bit.
        let leaf_2m = walk.leaves[1].raw;
        let leaf_4k_ro = walk.leaves[2].raw;
        match format {
            Format::VtdSl => {
                assert_eq!(leaf_2m, 0x40_0000 | 0x83);
                assert_eq!(leaf_4k_ro, 0x9001);
                // Table entries: R|W only, nothing QEMU calls reserved.
                for p in &walk.pointers {
                    assert_eq!(p & !ADDR, 0b11, "{p:#x}");
                }
            }
            _ => {
                assert_eq!(leaf_2m, 0x6000_0000_0040_0001);
                assert_eq!(leaf_4k_ro, 0x2000_0000_0000_9001);
                // PML4E NextLevel 3, PDPTE 2, two PDEs 1, all with IR|IW.
                let levels: Vec<u64> = walk.pointers.iter().map(|p| (p >> 9) & 7).collect();
                assert_eq!(levels, [3, 2, 1, 1], "{levels:?}");
                for p in &walk.pointers {
                    assert_eq!(p & !ADDR, 0x6000_0000_0000_0001 | ((p >> 9) & 7) << 9);
                }
            }
        }
    }
}

#[test]
fn iommu_formats_use_1g_pages_when_allowed() {
    for format in IOMMU_FORMATS {
        let mut t = tables(format, true);
        t.map(g(0), h(GIB1), 2 * GIB1, Perms::RW, MemType::WriteBack)
            .unwrap();
        let walk = walk_all(&t);
        assert_eq!(layout(&walk), [(0, GIB1), (GIB1, GIB1)], "{format}");
        assert_offset(&walk, GIB1);
        assert_eq!(
            t.translate(g(GIB1 + 5)).map(|x| (x.hpa, x.page_size)),
            Some((h(2 * GIB1 + 5), PageSize::Size1G))
        );
    }
}

#[test]
fn dma_root_for_three_and_four_levels() {
    for format in IOMMU_FORMATS {
        let mut t = tables(format, false);
        assert_eq!(t.dma_root(4), Ok(t.root()));
        assert_eq!(
            t.dma_root(5),
            Err(MapError::UnsupportedDmaLevels { levels: 5 })
        );
        // Nothing mapped yet: the 3-level root is created under PML4[0].
        let before = t.memory().tables_allocated();
        let root3 = t.dma_root(3).unwrap();
        assert_eq!(t.memory().tables_allocated(), before + 1);
        let pml4e = t.memory().read_entry(t.root(), 0);
        assert_eq!(pml4e & ADDR, root3.0);
        assert_eq!(t.dma_root(3), Ok(root3), "asked twice, the same table");
        // Mapping goes through it.
        t.map(g(0), h(0x20_0000), MIB2, Perms::RW, MemType::WriteBack)
            .unwrap();
        let pdpte = t.memory().read_entry(root3, 0);
        assert_ne!(pdpte, 0);
        // Beyond 512 GiB is refused from now on.
        assert_eq!(
            t.map(g(1 << 39), h(0), KIB4, Perms::RW, MemType::WriteBack),
            Err(MapError::BeyondDmaReach {
                gpa: g(1 << 39),
                levels: 3
            })
        );
        // Tables with a mapping above 512 GiB cannot be walked in 3 levels.
        let mut high = tables(format, false);
        high.map(g(3 << 39), h(0), KIB4, Perms::RW, MemType::WriteBack)
            .unwrap();
        assert_eq!(
            high.dma_root(3),
            Err(MapError::BeyondDmaReach {
                gpa: g(3 << 39),
                levels: 3
            })
        );
        let text = format!("{}", high.dma_root(3).unwrap_err());
        assert!(
            text.contains("0x8000000000") && text.contains("3-level"),
            "{text}"
        );
    }
}
