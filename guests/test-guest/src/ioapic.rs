//! The I/O APIC at its default base (0xFEC00000): the index/data register
//! window and redirection entries, for the `pci-intx` test.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::{cpu, paging};

pub const BASE: u64 = 0xFEC0_0000;
/// IOREGSEL (index) and IOWIN (data).
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
/// Register indices.
pub const REG_VERSION: u32 = 0x01;
const REG_REDIRECTION: u32 = 0x10;

/// Redirection entry bits (low dword): polarity, trigger mode, mask.
pub const RTE_ACTIVE_LOW: u32 = 1 << 13;
pub const RTE_LEVEL: u32 = 1 << 15;
pub const RTE_MASKED: u32 = 1 << 16;

static MAPPED: AtomicBool = AtomicBool::new(false);

/// Maps the IOAPIC page (uncached); false if it cannot be mapped.
pub fn map() -> bool {
    let ok = paging::map_extra_2m(BASE);
    MAPPED.store(ok, Ordering::SeqCst);
    ok
}

/// Unmaps it again (reads then give all ones, writes are dropped).
pub fn unmap() {
    if MAPPED.swap(false, Ordering::SeqCst) {
        paging::unmap_extra_2m(BASE);
    }
}

/// Reads register `reg` (all ones if the IOAPIC is not mapped).
pub fn read(reg: u32) -> u32 {
    if !MAPPED.load(Ordering::SeqCst) {
        return 0xFFFF_FFFF;
    }
    // SAFETY: the IOAPIC page is mapped uncached outside RAM; IOREGSEL and
    // IOWIN are 32-bit registers accessed as such, and no interrupt
    // handler uses the IOAPIC, so the index cannot change in between.
    unsafe {
        cpu::mmio_write32(BASE + IOREGSEL, reg);
        cpu::mmio_read32(BASE + IOWIN)
    }
}

/// Writes register `reg` (dropped if the IOAPIC is not mapped).
pub fn write(reg: u32, v: u32) {
    if !MAPPED.load(Ordering::SeqCst) {
        return;
    }
    // SAFETY: as in `read`.
    unsafe {
        cpu::mmio_write32(BASE + IOREGSEL, reg);
        cpu::mmio_write32(BASE + IOWIN, v);
    }
}

/// The number of redirection entries (the version register's maximum + 1).
pub fn pins() -> u32 {
    ((read(REG_VERSION) >> 16) & 0xFF) + 1
}

/// Programs the redirection entry of `pin`: destination APIC ID `dest`
/// (physical mode) and the low dword `low` (vector, delivery, polarity,
/// trigger, mask). The high half goes first, so that an unmasking `low`
/// takes effect with the right destination.
pub fn set_redirection(pin: u32, dest: u8, low: u32) {
    write(REG_REDIRECTION + 2 * pin + 1, u32::from(dest) << 24);
    write(REG_REDIRECTION + 2 * pin, low);
}

/// The low dword of `pin`'s redirection entry.
pub fn redirection_low(pin: u32) -> u32 {
    read(REG_REDIRECTION + 2 * pin)
}
