//! The physical IOAPICs, read-only for now (the shell's `dump_ioapic`).

extern crate alloc;

use alloc::vec::Vec;

fn read(base: u64, index: u32) -> u32 {
    // SAFETY: `base` is an IOAPIC address from the MADT, identity-mapped by
    // the boot page tables; IOREGSEL (offset 0) then IOWIN (offset 0x10) is
    // the architectural access sequence, and reads have no side effects.
    unsafe {
        ((base as usize) as *mut u32).write_volatile(index);
        ((base as usize + 0x10) as *const u32).read_volatile()
    }
}

/// The redirection table entries of the IOAPIC at `base` (empty if the
/// address lies outside the identity map).
pub fn redirection_table(base: u64) -> Vec<u64> {
    if base == 0 || base >= crate::boot::IDENTITY_MAPPED_GIB << 30 {
        return Vec::new();
    }
    let entries = ((read(base, 1) >> 16) & 0xFF) + 1;
    (0..entries)
        .map(|i| u64::from(read(base, 0x10 + 2 * i)) | (u64::from(read(base, 0x11 + 2 * i)) << 32))
        .collect()
}
