//! The memory the tables live in, reached only through [`TableMemory`].

use platform::HostPhysAddr;

/// Bytes in one table (one 4 KiB frame).
pub const TABLE_SIZE: u64 = 4096;
/// 64-bit entries in one table.
pub const ENTRIES_PER_TABLE: usize = 512;

/// Frames for page tables and access to their entries.
///
/// The hypervisor implements this over identity-mapped frames from its frame
/// allocator; tests over a `Vec`. Implementations must uphold:
/// - [`alloc_table`](Self::alloc_table) returns a 4 KiB-aligned frame below
///   `1 << 52` whose 512 entries all read as 0, not shared with anything else,
///   for as long as the tables are in use (the hardware walks it);
/// - an entry written is read back unchanged.
///
/// This crate calls `read_entry` and `write_entry` only with tables it got
/// from `alloc_table` and with `index < 512`.
pub trait TableMemory {
    /// A fresh zeroed table, or `None` when no frame is left.
    fn alloc_table(&mut self) -> Option<HostPhysAddr>;
    /// Entry `index` of `table`.
    fn read_entry(&self, table: HostPhysAddr, index: usize) -> u64;
    /// Sets entry `index` of `table` to `value` (one 64-bit store, so the
    /// hardware never sees half an entry).
    fn write_entry(&mut self, table: HostPhysAddr, index: usize, value: u64);
}

/// Lets a caller lend its memory to [`SecondLevelTables`](crate::SecondLevelTables)
/// and keep it.
impl<T: TableMemory + ?Sized> TableMemory for &mut T {
    fn alloc_table(&mut self) -> Option<HostPhysAddr> {
        (**self).alloc_table()
    }

    fn read_entry(&self, table: HostPhysAddr, index: usize) -> u64 {
        (**self).read_entry(table, index)
    }

    fn write_entry(&mut self, table: HostPhysAddr, index: usize, value: u64) {
        (**self).write_entry(table, index, value);
    }
}
