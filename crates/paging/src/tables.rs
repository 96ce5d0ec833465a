//! [`SecondLevelTables`]: builds, walks and tears down one VM's EPT or NPT.
//!
//! A mapping uses the largest page that fits at each step: 1 GiB where the
//! guest- and host-physical addresses are both 1 GiB aligned, at least 1 GiB
//! remains and the CPU has 1 GiB pages; 2 MiB likewise; 4 KiB elsewhere.
//! Where an earlier mapping left a table under an entry, the new mapping
//! goes into that table with smaller pages rather than replacing it.
//!
//! Nothing here invalidates TLBs or paging-structure caches: after
//! [`unmap`](SecondLevelTables::unmap) (or before reusing its frames) the
//! caller flushes with INVEPT (EPT), a VMCB TLB flush (NPT) or the IOMMU
//! driver's domain flush (VT-d second-level, AMD-Vi; after a `map` too,
//! since a unit may cache not-present entries). A
//! [`map`](SecondLevelTables::map) while the VM runs needs no flush, but a
//! vCPU touching the range during the call may exit once for an address that
//! is mapped by the time the exit is handled; the handler re-checks with
//! [`translate`](SecondLevelTables::translate) and resumes the guest.

use core::fmt;

use platform::HostPhysAddr;

use crate::addr::{GuestPhysAddr, GUEST_PHYS_BITS, HOST_PHYS_BITS};
use crate::attrs::{MemType, PageSizes, Perms};
use crate::ept;
use crate::format::{Entry, Format, Leaf, ADDR_MASK};
use crate::level::{Level, PageSize};
use crate::memory::{TableMemory, ENTRIES_PER_TABLE, TABLE_SIZE};

/// First guest-physical address the tables cannot map.
const GPA_LIMIT: u64 = 1 << GUEST_PHYS_BITS;
/// First host-physical address an entry cannot hold.
const HPA_LIMIT: u64 = 1 << HOST_PHYS_BITS;
/// First guest-physical address a 3-level IOMMU walk cannot reach (512 GiB).
const DMA3_LIMIT: u64 = 1 << 39;

/// Why tables could not be created, or a range mapped or unmapped.
///
/// Except for [`OutOfTables`](Self::OutOfTables), nothing in the tables has
/// changed when an error is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The table memory had no frame for the root table.
    NoRootTable,
    /// The range is empty.
    EmptyRange {
        /// Start of the range.
        gpa: GuestPhysAddr,
    },
    /// The guest-physical start or the length is not a multiple of 4 KiB.
    GpaMisaligned {
        /// Start of the range.
        gpa: GuestPhysAddr,
        /// Length of the range.
        len: u64,
    },
    /// The host-physical start is not a multiple of 4 KiB.
    HpaMisaligned {
        /// Start of the host-physical range.
        hpa: HostPhysAddr,
    },
    /// The guest-physical range wraps or passes [`GUEST_PHYS_BITS`].
    GpaOutOfRange {
        /// Start of the range.
        gpa: GuestPhysAddr,
        /// Length of the range.
        len: u64,
    },
    /// The host-physical range wraps or passes [`HOST_PHYS_BITS`].
    HpaOutOfRange {
        /// Start of the host-physical range.
        hpa: HostPhysAddr,
        /// Length of the range.
        len: u64,
    },
    /// The rights lack `read`, which neither format can express (see [`Perms`]).
    NoRead {
        /// The rights asked for.
        perms: Perms,
    },
    /// Part of the range is mapped already.
    AlreadyMapped {
        /// First guest-physical address in the range that is mapped.
        gpa: GuestPhysAddr,
    },
    /// The table memory ran out while building the tables for the range.
    ///
    /// No address of the range is mapped, but the (empty) tables linked in
    /// before the memory ran out stay; later mappings reuse them.
    OutOfTables {
        /// Guest-physical address that needed one more table.
        gpa: GuestPhysAddr,
    },
    /// Unmapping the range would split a large page, which is not done.
    SplitsLargePage {
        /// Guest-physical base of the large page.
        gpa: GuestPhysAddr,
        /// Its size.
        page_size: PageSize,
    },
    /// An IOMMU walk of this many levels is not offered (3 and 4 are).
    UnsupportedDmaLevels {
        /// The levels asked for.
        levels: u8,
    },
    /// The address lies beyond what a 3-level IOMMU walk reaches (512 GiB):
    /// either it is mapped already when the 3-level root is asked for, or a
    /// mapping for it is asked after.
    BeyondDmaReach {
        /// The first guest-physical address out of reach.
        gpa: GuestPhysAddr,
        /// The IOMMU's walk depth.
        levels: u8,
    },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRootTable => f.write_str("no frame left for the root page table"),
            Self::EmptyRange { gpa } => {
                write!(f, "guest-physical range at {gpa} has length 0")
            }
            Self::GpaMisaligned { gpa, len } => write!(
                f,
                "guest-physical range {gpa} + {len:#x} is not 4 KiB aligned"
            ),
            Self::HpaMisaligned { hpa } => {
                write!(f, "host-physical address {hpa} is not 4 KiB aligned")
            }
            Self::GpaOutOfRange { gpa, len } => write!(
                f,
                "guest-physical range {gpa} + {len:#x} wraps or passes {GPA_LIMIT:#x} \
                 ({GUEST_PHYS_BITS}-bit guest-physical addresses)"
            ),
            Self::HpaOutOfRange { hpa, len } => write!(
                f,
                "host-physical range {hpa} + {len:#x} wraps or passes {HPA_LIMIT:#x} \
                 ({HOST_PHYS_BITS}-bit physical addresses)"
            ),
            Self::NoRead { perms } => write!(
                f,
                "rights {perms} lack read, which EPT and NPT cannot leave out"
            ),
            Self::AlreadyMapped { gpa } => {
                write!(f, "guest-physical address {gpa} is already mapped")
            }
            Self::OutOfTables { gpa } => write!(
                f,
                "no frame left for a page table while mapping guest-physical address {gpa}"
            ),
            Self::SplitsLargePage { gpa, page_size } => write!(
                f,
                "the {page_size} page at guest-physical {gpa} lies partly outside the \
                 range to unmap, and large pages are not split"
            ),
            Self::UnsupportedDmaLevels { levels } => write!(
                f,
                "an IOMMU walk of {levels} levels is not supported (3 or 4 are)"
            ),
            Self::BeyondDmaReach { gpa, levels } => write!(
                f,
                "guest-physical address {gpa} is beyond the {:#x} bytes a {levels}-level \
                 IOMMU walk reaches",
                DMA3_LIMIT
            ),
        }
    }
}

/// Where a guest-physical address leads, as [`SecondLevelTables::translate`]
/// finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The host-physical address the guest-physical address maps to.
    pub hpa: HostPhysAddr,
    /// Size of the page that maps it.
    pub page_size: PageSize,
    /// The guest's rights to the page.
    pub perms: Perms,
    /// The host's memory type for the page.
    pub mem_type: MemType,
}

impl Translation {
    /// Bytes from [`hpa`](Self::hpa) to the end of its page: how far a copy
    /// may run before translating again.
    pub const fn bytes_to_page_end(&self) -> u64 {
        let size = self.page_size.bytes();
        size - (self.hpa.0 & (size - 1))
    }
}

/// Where a walk for one guest-physical address stopped: at a not-present
/// entry or a leaf.
#[derive(Clone, Copy, Debug)]
struct Stop {
    table: HostPhysAddr,
    index: usize,
    level: Level,
    entry: Entry,
}

/// One VM's second-level page tables (EPT or NPT), kept in `M`.
///
/// Guest-physical addresses that were never mapped have no entry, so a guest
/// access to them exits (EPT violation / nested page fault) and the
/// hypervisor emulates the access as MMIO.
#[derive(Debug)]
pub struct SecondLevelTables<M: TableMemory> {
    format: Format,
    page_sizes: PageSizes,
    root: HostPhysAddr,
    /// Set once an IOMMU walks the tables from below the root (3 levels):
    /// mappings must then stay below [`DMA3_LIMIT`].
    three_level_dma: bool,
    mem: M,
}

impl<M: TableMemory> SecondLevelTables<M> {
    /// Empty tables in `format`, using the large pages in `page_sizes`, built
    /// in `mem`. Allocates the root table; on failure `mem` is dropped (lend
    /// it as `&mut` to keep it).
    pub fn new(format: Format, page_sizes: PageSizes, mut mem: M) -> Result<Self, MapError> {
        let root = mem.alloc_table().ok_or(MapError::NoRootTable)?;
        check_new_table(&mem, root);
        Ok(Self {
            format,
            page_sizes,
            root,
            three_level_dma: false,
            mem,
        })
    }

    /// The table an IOMMU walking `levels` levels starts from, for the
    /// VT-d context entry (address width 39 bits for 3 levels, 48 for 4) or
    /// the AMD-Vi device table entry (Mode = `levels`).
    ///
    /// With 4 levels that is the root (PML4). With 3 levels (a VT-d unit
    /// whose `CAP.SAGAW` offers only 39-bit widths, like QEMU's default
    /// `aw-bits=39`) it is the table under the root's first entry, linked in
    /// here if missing: the IOMMU then reaches only guest-physical addresses
    /// below 512 GiB, so the VM's RAM must lie there. Refused if anything is
    /// mapped above; once asked, later [`map`](Self::map) calls above
    /// 512 GiB are refused too. Any format may be asked (the walk is the
    /// same), but only [`Format::VtdSl`] and [`Format::AmdVi`] tables are
    /// meant for an IOMMU.
    pub fn dma_root(&mut self, levels: u8) -> Result<HostPhysAddr, MapError> {
        match levels {
            4 => Ok(self.root),
            3 => {
                if let Some((base, _, _)) = self.next_leaf(DMA3_LIMIT, GPA_LIMIT) {
                    return Err(MapError::BeyondDmaReach {
                        gpa: GuestPhysAddr(base.max(DMA3_LIMIT)),
                        levels,
                    });
                }
                let raw = self.mem.read_entry(self.root, 0);
                let table = match self.format.decode(Level::Pml4, raw) {
                    Entry::Table(table) => table,
                    Entry::Empty | Entry::Leaf(_) => {
                        let table = self.mem.alloc_table().ok_or(MapError::OutOfTables {
                            gpa: GuestPhysAddr(0),
                        })?;
                        check_new_table(&self.mem, table);
                        let raw = self.format.table_entry(Level::Pml4, table);
                        self.mem.write_entry(self.root, 0, raw);
                        table
                    }
                };
                self.three_level_dma = true;
                Ok(table)
            }
            _ => Err(MapError::UnsupportedDmaLevels { levels }),
        }
    }

    /// The tables' format.
    pub const fn format(&self) -> Format {
        self.format
    }

    /// The large page sizes the tables may use.
    pub const fn page_sizes(&self) -> PageSizes {
        self.page_sizes
    }

    /// Host-physical address of the root (PML4) table.
    pub const fn root(&self) -> HostPhysAddr {
        self.root
    }

    /// The EPT pointer for the VMCS (write-back table accesses, 4-level
    /// walk, the root), with bit 6 set when `accessed_dirty` asks the CPU to
    /// maintain accessed/dirty flags (only if `IA32_VMX_EPT_VPID_CAP` bit 21
    /// allows it). `None` for NPT tables.
    pub fn eptp(&self, accessed_dirty: bool) -> Option<u64> {
        (self.format == Format::Ept).then(|| ept::eptp(self.root, accessed_dirty))
    }

    /// The nested CR3 for the VMCB: the root, with PWT and PCD clear so the
    /// tables are read write-back. `None` for EPT tables.
    pub fn ncr3(&self) -> Option<u64> {
        (self.format == Format::Npt).then_some(self.root.0)
    }

    /// The memory the tables live in.
    pub const fn memory(&self) -> &M {
        &self.mem
    }

    /// Gives back the memory, e.g. to free the tables' frames (listed by
    /// [`visit_tables`](Self::visit_tables)) once no CPU uses them.
    pub fn into_memory(self) -> M {
        self.mem
    }

    /// Maps `len` bytes of guest-physical space at `gpa` to host-physical
    /// memory at `hpa` with `perms` and `mem_type`.
    ///
    /// All three numbers must be 4 KiB aligned, both ranges must fit their
    /// address widths without wrapping, `perms` must include read, and no
    /// address in the range may be mapped already. The checks and the search
    /// for an existing mapping happen before anything is written; then every
    /// table the range needs is linked in, and only then are the leaves
    /// written, so running out of tables leaves no address of the range
    /// mapped (see [`MapError::OutOfTables`]).
    pub fn map(
        &mut self,
        gpa: GuestPhysAddr,
        hpa: HostPhysAddr,
        len: u64,
        perms: Perms,
        mem_type: MemType,
    ) -> Result<(), MapError> {
        let end = check_gpa_range(gpa, len)?;
        if self.three_level_dma && end > DMA3_LIMIT {
            return Err(MapError::BeyondDmaReach {
                gpa: GuestPhysAddr(gpa.0.max(DMA3_LIMIT)),
                levels: 3,
            });
        }
        if !hpa.is_aligned(TABLE_SIZE) {
            return Err(MapError::HpaMisaligned { hpa });
        }
        if hpa.0.checked_add(len).is_none_or(|end| end > HPA_LIMIT) {
            return Err(MapError::HpaOutOfRange { hpa, len });
        }
        if !perms.read {
            return Err(MapError::NoRead { perms });
        }
        if let Some((base, _, _)) = self.next_leaf(gpa.0, end) {
            let first = base.max(gpa.0);
            return Err(MapError::AlreadyMapped {
                gpa: GuestPhysAddr(first),
            });
        }
        self.build(gpa.0, hpa.0, len, None)?;
        self.build(gpa.0, hpa.0, len, Some((perms, mem_type)))
    }

    /// Removes every mapping in the `len` bytes at `gpa` (both 4 KiB
    /// aligned) and returns how many bytes were mapped. Unmapped parts are
    /// skipped. A large page that lies only partly in the range is refused
    /// before anything changes. Tables stay linked (empty), for later
    /// mappings or [`visit_tables`](Self::visit_tables). The caller flushes
    /// the TLBs afterwards (see the module documentation).
    pub fn unmap(&mut self, gpa: GuestPhysAddr, len: u64) -> Result<u64, MapError> {
        let end = check_gpa_range(gpa, len)?;
        let mut cursor = gpa.0;
        while let Some((base, _, leaf)) = self.next_leaf(cursor, end) {
            let page_end = base + leaf.size.bytes();
            if base < gpa.0 || page_end > end {
                return Err(MapError::SplitsLargePage {
                    gpa: GuestPhysAddr(base),
                    page_size: leaf.size,
                });
            }
            cursor = page_end;
        }
        let mut cleared = 0;
        cursor = gpa.0;
        while let Some((base, stop, leaf)) = self.next_leaf(cursor, end) {
            self.mem.write_entry(stop.table, stop.index, 0);
            cleared += leaf.size.bytes();
            cursor = base + leaf.size.bytes();
        }
        Ok(cleared)
    }

    /// Where `gpa` leads, or `None` if it is not mapped (or beyond
    /// [`GUEST_PHYS_BITS`]).
    pub fn translate(&self, gpa: GuestPhysAddr) -> Option<Translation> {
        if gpa.0 >= GPA_LIMIT {
            return None;
        }
        let Entry::Leaf(leaf) = self.walk(gpa.0).entry else {
            return None;
        };
        let offset = gpa.0 & (leaf.size.bytes() - 1);
        Some(Translation {
            hpa: HostPhysAddr(leaf.hpa.0 | offset),
            page_size: leaf.size,
            perms: leaf.perms,
            mem_type: leaf.mem_type,
        })
    }

    /// Calls `f` with every table's address, the root first and each table
    /// before the tables below it: the frames to free when the VM is gone.
    pub fn visit_tables(&self, mut f: impl FnMut(HostPhysAddr)) {
        f(self.root);
        self.visit_below(self.root, Level::Pml4, &mut f);
    }

    fn visit_below(&self, table: HostPhysAddr, level: Level, f: &mut impl FnMut(HostPhysAddr)) {
        let next_level = match level {
            Level::Pml4 => Level::Pdpt,
            Level::Pdpt => Level::Pd,
            Level::Pd => Level::Pt,
            Level::Pt => return,
        };
        for index in 0..ENTRIES_PER_TABLE {
            let raw = self.mem.read_entry(table, index);
            if let Entry::Table(next) = self.format.decode(level, raw) {
                f(next);
                self.visit_below(next, next_level, f);
            }
        }
    }

    /// Walks from the root towards `gpa` (below [`GPA_LIMIT`]) and stops at
    /// the first entry that is not present or maps a page.
    fn walk(&self, gpa: u64) -> Stop {
        let mut table = self.root;
        for level in Level::UPPER {
            let index = level.index(gpa);
            let entry = self.format.decode(level, self.mem.read_entry(table, index));
            match entry {
                Entry::Table(next) => table = next,
                Entry::Empty | Entry::Leaf(_) => {
                    return Stop {
                        table,
                        index,
                        level,
                        entry,
                    }
                }
            }
        }
        let index = Level::Pt.index(gpa);
        let entry = self
            .format
            .decode(Level::Pt, self.mem.read_entry(table, index));
        Stop {
            table,
            index,
            level: Level::Pt,
            entry,
        }
    }

    /// The first leaf that maps an address in `cursor..end` (below
    /// [`GPA_LIMIT`]): its guest-physical base (which may lie before
    /// `cursor`), where the walk stopped, and the leaf. Skips unmapped space
    /// a whole entry at a time.
    fn next_leaf(&self, mut cursor: u64, end: u64) -> Option<(u64, Stop, Leaf)> {
        while cursor < end {
            let stop = self.walk(cursor);
            let span = stop.level.entry_span();
            let base = cursor & !(span - 1);
            if let Entry::Leaf(leaf) = stop.entry {
                return Some((base, stop, leaf));
            }
            cursor = base + span;
        }
        None
    }

    /// One pass over a checked, unmapped range: links in every missing
    /// table, and with `leaf` also writes the leaves. The second pass (with
    /// `leaf`) finds every table the first one made and takes the same page
    /// sizes, so it allocates nothing and cannot fail.
    fn build(
        &mut self,
        gpa: u64,
        hpa: u64,
        len: u64,
        leaf: Option<(Perms, MemType)>,
    ) -> Result<(), MapError> {
        let mut done = 0;
        while done < len {
            let size = self.place(gpa + done, hpa + done, len - done, leaf)?;
            done += size.bytes();
        }
        Ok(())
    }

    /// Walks towards `gpa`, linking in missing tables, down to the level
    /// where the largest fitting page goes; writes that leaf if `leaf` is
    /// given and returns the page size.
    ///
    /// Preconditions: `gpa`, `hpa` and `remaining` are 4 KiB aligned,
    /// `remaining > 0`, and nothing in `gpa..gpa + remaining` is mapped.
    fn place(
        &mut self,
        gpa: u64,
        hpa: u64,
        remaining: u64,
        leaf: Option<(Perms, MemType)>,
    ) -> Result<PageSize, MapError> {
        debug_assert!(gpa % TABLE_SIZE == 0 && hpa % TABLE_SIZE == 0);
        debug_assert!(remaining >= TABLE_SIZE && remaining % TABLE_SIZE == 0);
        let mut table = self.root;
        for level in Level::UPPER {
            let index = level.index(gpa);
            let entry = self.format.decode(level, self.mem.read_entry(table, index));
            match (entry, self.fitting_page(level, gpa, hpa, remaining)) {
                (Entry::Empty, Some(size)) => {
                    self.write_leaf(table, index, size, hpa, leaf);
                    return Ok(size);
                }
                (Entry::Empty, None) => {
                    let next = self.mem.alloc_table().ok_or(MapError::OutOfTables {
                        gpa: GuestPhysAddr(gpa),
                    })?;
                    check_new_table(&self.mem, next);
                    let raw = self.format.table_entry(level, next);
                    self.mem.write_entry(table, index, raw);
                    table = next;
                }
                (Entry::Table(next), _) => table = next,
                (Entry::Leaf(_), _) => {
                    return Err(MapError::AlreadyMapped {
                        gpa: GuestPhysAddr(gpa),
                    })
                }
            }
        }
        let index = Level::Pt.index(gpa);
        match self
            .format
            .decode(Level::Pt, self.mem.read_entry(table, index))
        {
            Entry::Empty => {
                self.write_leaf(table, index, PageSize::Size4K, hpa, leaf);
                Ok(PageSize::Size4K)
            }
            Entry::Table(_) | Entry::Leaf(_) => Err(MapError::AlreadyMapped {
                gpa: GuestPhysAddr(gpa),
            }),
        }
    }

    /// The page a leaf at `level` would map for `gpa`, if the CPU has that
    /// size, both addresses are aligned to it and the rest of the range
    /// covers it.
    fn fitting_page(&self, level: Level, gpa: u64, hpa: u64, remaining: u64) -> Option<PageSize> {
        let size = level.leaf_size()?;
        if size == PageSize::Size1G && !self.page_sizes.huge_1g {
            return None;
        }
        let bytes = size.bytes();
        (gpa % bytes == 0 && hpa % bytes == 0 && remaining >= bytes).then_some(size)
    }

    fn write_leaf(
        &mut self,
        table: HostPhysAddr,
        index: usize,
        size: PageSize,
        hpa: u64,
        leaf: Option<(Perms, MemType)>,
    ) {
        if let Some((perms, mem_type)) = leaf {
            let raw = self
                .format
                .leaf_entry(size, HostPhysAddr(hpa), perms, mem_type);
            self.mem.write_entry(table, index, raw);
        }
    }
}

/// Checks a guest-physical range and returns its end.
fn check_gpa_range(gpa: GuestPhysAddr, len: u64) -> Result<u64, MapError> {
    if len == 0 {
        return Err(MapError::EmptyRange { gpa });
    }
    if !gpa.is_aligned(TABLE_SIZE) || len % TABLE_SIZE != 0 {
        return Err(MapError::GpaMisaligned { gpa, len });
    }
    match gpa.0.checked_add(len) {
        Some(end) if end <= GPA_LIMIT => Ok(end),
        _ => Err(MapError::GpaOutOfRange { gpa, len }),
    }
}

/// Debug check of the [`TableMemory`] contract for a table just handed out.
fn check_new_table(mem: &impl TableMemory, table: HostPhysAddr) {
    debug_assert_eq!(
        table.0 & !ADDR_MASK,
        0,
        "table {table} unaligned or too high"
    );
    debug_assert!(
        (0..ENTRIES_PER_TABLE).all(|i| mem.read_entry(table, i) == 0),
        "table {table} is not zeroed"
    );
}

#[cfg(test)]
mod tests;
