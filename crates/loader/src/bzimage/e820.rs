//! The e820 memory map a Linux guest reads from its zero page: RAM below the
//! EBDA, the EBDA/VGA/BIOS hole, RAM from 1 MiB to the end of the VM's RAM,
//! with the VM layout's reserved ranges (ACPI tables, MMIO windows) cut out.
//! The result is sorted, its entries never overlap, and neighbours of the
//! same kind are merged.

use alloc::vec::Vec;
use core::fmt;

use crate::layout::{HIGH_MEMORY, LOW_MEMORY_END, MIN_RAM};

/// Most entries the zero page's `e820_table` holds.
pub const E820_MAX_ENTRIES: usize = 128;

/// An e820 entry type, as Linux numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Kind {
    /// Usable RAM (1).
    Ram = 1,
    /// Reserved: not RAM the guest may use (2).
    Reserved = 2,
    /// ACPI tables; reclaimable once the OS has read them (3).
    Acpi = 3,
    /// ACPI non-volatile storage, to be preserved (4).
    Nvs = 4,
}

/// What a reserved range of the VM layout holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservedKind {
    /// MMIO windows, firmware areas: e820 type 2.
    Reserved,
    /// The VM's ACPI tables: e820 type 3 (Linux keeps them mapped; it never
    /// hands type 3 memory to its allocator).
    AcpiReclaimable,
    /// ACPI NVS: e820 type 4.
    AcpiNvs,
}

impl ReservedKind {
    fn e820(self) -> E820Kind {
        match self {
            ReservedKind::Reserved => E820Kind::Reserved,
            ReservedKind::AcpiReclaimable => E820Kind::Acpi,
            ReservedKind::AcpiNvs => E820Kind::Nvs,
        }
    }
}

/// A guest-physical range the guest must not use as RAM. It may lie inside
/// the VM's RAM (then it is cut out of it) or above it (an MMIO window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservedRange {
    pub start: u64,
    pub len: u64,
    pub kind: ReservedKind,
}

/// One entry of the map, as the zero page holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: E820Kind,
}

impl E820Entry {
    /// Exclusive end (never wraps: every entry is checked on the way in).
    pub fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// Why the VM layout gives no valid memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E820Error {
    /// Less RAM than 1 MiB of low memory plus a page.
    RamTooSmall { ram_size: u64, min: u64 },
    /// A reserved range of no bytes.
    EmptyRange { start: u64 },
    /// A reserved range past the end of the address space.
    RangeWraps { start: u64, len: u64 },
    /// Two reserved ranges share bytes.
    RangesOverlap { first: u64, second: u64 },
    /// More entries than the zero page holds.
    TooManyEntries { count: usize, max: usize },
}

impl fmt::Display for E820Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            E820Error::RamTooSmall { ram_size, min } => write!(
                f,
                "guest RAM of {ram_size:#x} bytes is smaller than the {min:#x} the memory map needs"
            ),
            E820Error::EmptyRange { start } => {
                write!(f, "reserved range at {start:#x} has length 0")
            }
            E820Error::RangeWraps { start, len } => write!(
                f,
                "reserved range at {start:#x} of {len:#x} bytes wraps the address space"
            ),
            E820Error::RangesOverlap { first, second } => {
                write!(f, "reserved ranges at {first:#x} and {second:#x} overlap")
            }
            E820Error::TooManyEntries { count, max } => write!(
                f,
                "the memory map needs {count} entries; the zero page holds {max}"
            ),
        }
    }
}

impl core::error::Error for E820Error {}

/// The e820 map of a VM with `ram_size` bytes of RAM at guest-physical 0 and
/// the given reserved ranges.
pub fn e820_map(ram_size: u64, reserved: &[ReservedRange]) -> Result<Vec<E820Entry>, E820Error> {
    e820_map_of(&vcpu::RamLayout::new(ram_size), reserved)
}

/// The e820 map of a VM whose RAM is `ram` (its first range starts at
/// guest-physical 0), with the given reserved ranges.
pub fn e820_map_of(
    ram: &vcpu::RamLayout,
    reserved: &[ReservedRange],
) -> Result<Vec<E820Entry>, E820Error> {
    let low = ram.low();
    if ram.total() < MIN_RAM || low < HIGH_MEMORY {
        return Err(E820Error::RamTooSmall {
            ram_size: ram.total(),
            min: MIN_RAM,
        });
    }
    let mut ranges: Vec<(u64, u64, E820Kind)> = Vec::with_capacity(reserved.len());
    for r in reserved {
        if r.len == 0 {
            return Err(E820Error::EmptyRange { start: r.start });
        }
        let end = r.start.checked_add(r.len).ok_or(E820Error::RangeWraps {
            start: r.start,
            len: r.len,
        })?;
        ranges.push((r.start, end, r.kind.e820()));
    }
    ranges.sort_unstable_by_key(|r| r.0);
    for pair in ranges.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(E820Error::RangesOverlap {
                first: pair[0].0,
                second: pair[1].0,
            });
        }
    }

    // The RAM ranges come from the VM's layout: the low one from 0 (with the
    // EBDA/BIOS area reserved), the others where they are.
    let mut map = Vec::with_capacity(3 + ram.ranges().len() + 2 * ranges.len());
    map.push((0, LOW_MEMORY_END, E820Kind::Ram));
    map.push((LOW_MEMORY_END, HIGH_MEMORY, E820Kind::Reserved));
    if low > HIGH_MEMORY {
        map.push((HIGH_MEMORY, low, E820Kind::Ram));
    }
    for r in &ram.ranges()[1..] {
        map.push((r.gpa.0, r.end(), E820Kind::Ram));
    }
    for &(start, end, kind) in &ranges {
        carve(&mut map, start, end);
        let at = map.partition_point(|e| e.0 < start);
        map.insert(at, (start, end, kind));
    }

    let mut merged: Vec<E820Entry> = Vec::with_capacity(map.len());
    for (start, end, kind) in map {
        match merged.last_mut() {
            Some(last) if last.kind == kind && last.end() == start => last.size = end - last.addr,
            _ => merged.push(E820Entry {
                addr: start,
                size: end - start,
                kind,
            }),
        }
    }
    if merged.len() > E820_MAX_ENTRIES {
        return Err(E820Error::TooManyEntries {
            count: merged.len(),
            max: E820_MAX_ENTRIES,
        });
    }
    Ok(merged)
}

/// Removes `start..end` from every entry of the sorted, disjoint `map`,
/// splitting the entries it falls inside.
fn carve(map: &mut Vec<(u64, u64, E820Kind)>, start: u64, end: u64) {
    let mut out = Vec::with_capacity(map.len() + 1);
    for &(s, e, kind) in map.iter() {
        if e <= start || end <= s {
            out.push((s, e, kind));
            continue;
        }
        if s < start {
            out.push((s, start, kind));
        }
        if end < e {
            out.push((end, e, kind));
        }
    }
    *map = out;
}

/// Whether `start..end` lies inside one RAM entry of `map`.
pub(crate) fn ram_holds(map: &[E820Entry], start: u64, end: u64) -> bool {
    map.iter()
        .any(|e| e.kind == E820Kind::Ram && e.addr <= start && end <= e.end())
}

/// The first entry of `map` that is not RAM and shares bytes with
/// `start..end`.
pub(crate) fn first_non_ram_overlap(map: &[E820Entry], start: u64, end: u64) -> Option<E820Entry> {
    map.iter()
        .find(|e| e.kind != E820Kind::Ram && e.addr < end && start < e.end())
        .copied()
}

/// The lowest `align`-aligned start (`align` a power of two) of `len > 0`
/// bytes inside one RAM entry of `map`, at or above `low`, ending at or
/// below `limit`; `None` if there is none.
pub(crate) fn lowest_fit(
    map: &[E820Entry],
    len: u64,
    low: u64,
    limit: u64,
    align: u64,
) -> Option<u64> {
    debug_assert!(len > 0 && align.is_power_of_two());
    map.iter()
        .filter(|e| e.kind == E820Kind::Ram)
        .find_map(|e| {
            let start = e.addr.max(low).checked_next_multiple_of(align)?;
            let end = start.checked_add(len)?;
            (end <= e.end().min(limit)).then_some(start)
        })
}

/// The highest `align`-aligned start (`align` a power of two) of `len > 0`
/// bytes that lie inside one RAM entry of `map`, at or above `low`, end at
/// or below `limit`, and share no byte with any of the half-open ranges in
/// `avoid`; `None` if there is no such place.
pub(crate) fn highest_fit(
    map: &[E820Entry],
    len: u64,
    low: u64,
    limit: u64,
    align: u64,
    avoid: &[(u64, u64)],
) -> Option<u64> {
    debug_assert!(len > 0 && align.is_power_of_two());
    for entry in map.iter().rev().filter(|e| e.kind == E820Kind::Ram) {
        let low = entry.addr.max(low);
        let mut top = entry.end().min(limit);
        while top >= low && top - low >= len {
            let start = (top - len) & !(align - 1);
            if start < low {
                break;
            }
            let end = start + len;
            // Every range in the way starts below `top`: try again under
            // the lowest of them.
            match avoid
                .iter()
                .filter(|&&(s, e)| s < end && start < e)
                .map(|&(s, _)| s)
                .min()
            {
                Some(blocker) => top = blocker,
                None => return Some(start),
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn e(addr: u64, end: u64, kind: E820Kind) -> E820Entry {
        E820Entry {
            addr,
            size: end - addr,
            kind,
        }
    }

    #[test]
    fn ram_past_the_pci_hole_continues_at_4_gib() {
        const GIB: u64 = 1 << 30;
        let ecam = r(0xE000_0000, 1 << 20, ReservedKind::Reserved);
        let map = e820_map(5 * GIB, &[ecam]).unwrap();
        assert_eq!(
            map,
            vec![
                e(0, LOW_MEMORY_END, E820Kind::Ram),
                e(LOW_MEMORY_END, HIGH_MEMORY, E820Kind::Reserved),
                e(HIGH_MEMORY, 3 * GIB, E820Kind::Ram),
                e(0xE000_0000, 0xE010_0000, E820Kind::Reserved),
                e(4 * GIB, 6 * GIB, E820Kind::Ram),
            ]
        );
        // Exactly 3 GiB needs no high range.
        assert_eq!(e820_map(3 * GIB, &[]).unwrap().len(), 3);
    }

    fn r(start: u64, len: u64, kind: ReservedKind) -> ReservedRange {
        ReservedRange { start, len, kind }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn plain_ram() {
        assert_eq!(
            e820_map(64 * MIB, &[]).unwrap(),
            vec![
                e(0, 0x9_FC00, E820Kind::Ram),
                e(0x9_FC00, 0x10_0000, E820Kind::Reserved),
                e(0x10_0000, 64 * MIB, E820Kind::Ram),
            ]
        );
    }

    #[test]
    fn acpi_area_and_mmio_windows_are_cut_out_and_sorted() {
        let reserved = [
            r(0xFEC0_0000, 0x1000, ReservedKind::Reserved), // above RAM
            r(60 * MIB, 0x10_000, ReservedKind::AcpiReclaimable),
            r(8 * MIB, MIB, ReservedKind::AcpiNvs),
        ];
        assert_eq!(
            e820_map(64 * MIB, &reserved).unwrap(),
            vec![
                e(0, 0x9_FC00, E820Kind::Ram),
                e(0x9_FC00, 0x10_0000, E820Kind::Reserved),
                e(0x10_0000, 8 * MIB, E820Kind::Ram),
                e(8 * MIB, 9 * MIB, E820Kind::Nvs),
                e(9 * MIB, 60 * MIB, E820Kind::Ram),
                e(60 * MIB, 60 * MIB + 0x10_000, E820Kind::Acpi),
                e(60 * MIB + 0x10_000, 64 * MIB, E820Kind::Ram),
                e(0xFEC0_0000, 0xFEC0_1000, E820Kind::Reserved),
            ]
        );
    }

    #[test]
    fn ranges_in_the_bios_area_and_at_the_edges() {
        // ACPI tables at 0xE0000 split the BIOS hole; a reserved range
        // touching the hole merges with it; one across the end of RAM keeps
        // its full length.
        let reserved = [
            r(0xE_0000, 0x1000, ReservedKind::AcpiReclaimable),
            r(0x10_0000, 0x1000, ReservedKind::Reserved),
            r(63 * MIB, 2 * MIB, ReservedKind::Reserved),
        ];
        assert_eq!(
            e820_map(64 * MIB, &reserved).unwrap(),
            vec![
                e(0, 0x9_FC00, E820Kind::Ram),
                e(0x9_FC00, 0xE_0000, E820Kind::Reserved),
                e(0xE_0000, 0xE_1000, E820Kind::Acpi),
                e(0xE_1000, 0x10_1000, E820Kind::Reserved),
                e(0x10_1000, 63 * MIB, E820Kind::Ram),
                e(63 * MIB, 65 * MIB, E820Kind::Reserved),
            ]
        );
    }

    #[test]
    fn every_map_is_sorted_and_disjoint() {
        let reserved = [
            r(0, 0x1000, ReservedKind::Reserved),
            r(0x9_F000, 0x2000, ReservedKind::AcpiNvs),
            r(32 * MIB - 1, 1, ReservedKind::Reserved),
            r(32 * MIB, 1, ReservedKind::AcpiReclaimable),
        ];
        let map = e820_map(32 * MIB, &reserved).unwrap();
        for pair in map.windows(2) {
            assert!(pair[0].end() <= pair[1].addr, "{map:?}");
            assert!(pair[0].kind != pair[1].kind || pair[0].end() != pair[1].addr);
        }
        assert!(map.iter().all(|e| e.size > 0));
        assert!(ram_holds(&map, 0x1000, 0x9_F000));
        assert!(!ram_holds(&map, 0x1000, 0x9_F001));
        assert_eq!(
            first_non_ram_overlap(&map, 0x9_EFFF, 0x9_F001).map(|e| e.kind),
            Some(E820Kind::Nvs)
        );
        assert_eq!(first_non_ram_overlap(&map, 0x10_0000, 0x20_0000), None);
    }

    #[test]
    fn highest_fit_steps_under_what_is_in_the_way() {
        let map = e820_map(64 * MIB, &[r(60 * MIB, MIB, ReservedKind::AcpiReclaimable)]).unwrap();
        let fit =
            |len, limit, avoid: &[(u64, u64)]| highest_fit(&map, len, MIB, limit, 0x1000, avoid);
        // Top of RAM, aligned down.
        assert_eq!(fit(0x1800, u64::MAX, &[]), Some(64 * MIB - 0x2000));
        // Under two ranges in the way, then under the ACPI hole.
        assert_eq!(
            fit(
                2 * MIB,
                u64::MAX,
                &[(63 * MIB, 64 * MIB), (62 * MIB + 0x1000, 62 * MIB + 0x2000)]
            ),
            Some(60 * MIB - 2 * MIB)
        );
        assert_eq!(fit(MIB, 40 * MIB + 1, &[]), Some(39 * MIB));
        // Never below `low` or into low memory.
        assert_eq!(fit(0x1000, MIB + 0xFFF, &[]), None);
        assert_eq!(fit(59 * MIB, u64::MAX, &[(2 * MIB, 3 * MIB)]), None);
        assert_eq!(fit(59 * MIB, u64::MAX, &[]), Some(MIB));
    }

    #[test]
    fn bad_layouts() {
        assert_eq!(
            e820_map(0x10_0000, &[]),
            Err(E820Error::RamTooSmall {
                ram_size: 0x10_0000,
                min: MIN_RAM
            })
        );
        assert_eq!(
            e820_map(64 * MIB, &[r(5 * MIB, 0, ReservedKind::Reserved)]),
            Err(E820Error::EmptyRange { start: 5 * MIB })
        );
        assert_eq!(
            e820_map(64 * MIB, &[r(u64::MAX, 2, ReservedKind::Reserved)]),
            Err(E820Error::RangeWraps {
                start: u64::MAX,
                len: 2
            })
        );
        assert_eq!(
            e820_map(
                64 * MIB,
                &[
                    r(6 * MIB, MIB, ReservedKind::Reserved),
                    r(5 * MIB, MIB + 1, ReservedKind::AcpiReclaimable)
                ]
            ),
            Err(E820Error::RangesOverlap {
                first: 5 * MIB,
                second: 6 * MIB
            })
        );
        // 130 separate holes in RAM need more than 128 entries.
        let many: Vec<ReservedRange> = (0..130)
            .map(|i| r(2 * MIB + i * 0x2000, 0x1000, ReservedKind::Reserved))
            .collect();
        assert!(matches!(
            e820_map(64 * MIB, &many),
            Err(E820Error::TooManyEntries { max: 128, .. })
        ));
    }
}
