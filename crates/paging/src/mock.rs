//! [`ArenaMemory`], a `Vec`-backed [`TableMemory`] for host tests (here and,
//! through the `test-utils` feature, in other crates).

use alloc::vec::Vec;

use platform::HostPhysAddr;

use crate::memory::{TableMemory, ENTRIES_PER_TABLE, TABLE_SIZE};

/// Tables numbered from a base address: table `i` sits at `base + i * 4 KiB`.
/// An optional limit makes [`TableMemory::alloc_table`] fail after that many
/// tables, to test running out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaMemory {
    base: u64,
    tables: Vec<[u64; ENTRIES_PER_TABLE]>,
    limit: usize,
}

impl ArenaMemory {
    /// An empty arena whose first table is at `base` (4 KiB aligned), with
    /// no limit.
    pub fn new(base: HostPhysAddr) -> Self {
        assert!(
            base.is_aligned(TABLE_SIZE),
            "arena base {base} is not 4 KiB aligned"
        );
        Self {
            base: base.0,
            tables: Vec::new(),
            limit: usize::MAX,
        }
    }

    /// An arena that hands out at most `limit` tables in all.
    pub fn with_limit(base: HostPhysAddr, limit: usize) -> Self {
        let mut arena = Self::new(base);
        arena.limit = limit;
        arena
    }

    /// Changes the limit on tables handed out in all.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Tables handed out so far.
    pub fn tables_allocated(&self) -> usize {
        self.tables.len()
    }

    /// The entries of the table at `table`, or `None` if the arena never
    /// handed it out.
    pub fn table(&self, table: HostPhysAddr) -> Option<&[u64; ENTRIES_PER_TABLE]> {
        let offset = table.0.checked_sub(self.base)?;
        if offset % TABLE_SIZE != 0 {
            return None;
        }
        self.tables.get(usize::try_from(offset / TABLE_SIZE).ok()?)
    }

    fn slot(&self, table: HostPhysAddr) -> usize {
        let offset = table.0.wrapping_sub(self.base);
        let slot = usize::try_from(offset / TABLE_SIZE).unwrap_or(usize::MAX);
        assert!(
            offset % TABLE_SIZE == 0 && slot < self.tables.len(),
            "table {table} was not handed out by this arena"
        );
        slot
    }
}

impl TableMemory for ArenaMemory {
    fn alloc_table(&mut self) -> Option<HostPhysAddr> {
        if self.tables.len() >= self.limit {
            return None;
        }
        let offset = u64::try_from(self.tables.len())
            .ok()?
            .checked_mul(TABLE_SIZE)?;
        let addr = self.base.checked_add(offset)?;
        self.tables.push([0; ENTRIES_PER_TABLE]);
        Some(HostPhysAddr(addr))
    }

    /// # Panics
    /// If `table` was not handed out by this arena or `index >= 512`.
    fn read_entry(&self, table: HostPhysAddr, index: usize) -> u64 {
        self.tables[self.slot(table)][index]
    }

    /// # Panics
    /// If `table` was not handed out by this arena or `index >= 512`.
    fn write_entry(&mut self, table: HostPhysAddr, index: usize, value: u64) {
        let slot = self.slot(table);
        self.tables[slot][index] = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_in_order_up_to_the_limit() {
        let mut arena = ArenaMemory::with_limit(HostPhysAddr(0x10_0000), 2);
        assert_eq!(arena.alloc_table(), Some(HostPhysAddr(0x10_0000)));
        assert_eq!(arena.alloc_table(), Some(HostPhysAddr(0x10_1000)));
        assert_eq!(arena.alloc_table(), None);
        arena.write_entry(HostPhysAddr(0x10_1000), 511, 42);
        assert_eq!(arena.read_entry(HostPhysAddr(0x10_1000), 511), 42);
        assert_eq!(
            arena.table(HostPhysAddr(0x10_1000)).map(|t| t[511]),
            Some(42)
        );
        assert_eq!(arena.table(HostPhysAddr(0x10_2000)), None);
        assert_eq!(arena.table(HostPhysAddr(0x10_0008)), None);
        assert_eq!(arena.tables_allocated(), 2);
    }

    #[test]
    #[should_panic(expected = "was not handed out")]
    fn foreign_table_panics() {
        let arena = ArenaMemory::new(HostPhysAddr(0x10_0000));
        arena.read_entry(HostPhysAddr(0x10_0000), 0);
    }
}
