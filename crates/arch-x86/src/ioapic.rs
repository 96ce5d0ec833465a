//! The physical IOAPICs: their redirection tables for the shell's `dump_ioapic`, and the inputs
//! the hypervisor routes to itself (passed-through functions' INTx).

extern crate alloc;

use alloc::vec::Vec;

use x86_64::instructions::interrupts::without_interrupts;

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

/// One redirection entry at a time, machine-wide: IOREGSEL then IOWIN is a two-step access.
static LOCK: spin::Mutex<()> = spin::Mutex::new(());

fn write(base: u64, index: u32, value: u32) {
    // SAFETY: as for `read`; the caller holds LOCK, so no other pCPU moves IOREGSEL between
    // the two stores.
    unsafe {
        ((base as usize) as *mut u32).write_volatile(index);
        ((base as usize + 0x10) as *mut u32).write_volatile(value);
    }
}

/// Redirection entry bit 16: the input is masked.
const RTE_MASK: u32 = 1 << 16;

/// An input of a physical IOAPIC the hypervisor routes (a passed-through function's INTx).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoapicInput {
    base: u64,
    pin: u32,
}

impl IoapicInput {
    /// Input `pin` of the IOAPIC at `base` (from the MADT); None when the address is outside
    /// the identity map or the IOAPIC has no such input.
    pub fn new(base: u64, pin: u32) -> Option<Self> {
        if base == 0 || base >= crate::boot::IDENTITY_MAPPED_GIB << 30 {
            return None;
        }
        let entries = without_interrupts(|| {
            let _g = LOCK.lock();
            ((read(base, 1) >> 16) & 0xFF) + 1
        });
        (pin < entries).then_some(IoapicInput { base, pin })
    }

    /// Writes the whole entry (the high half first, with the input masked meanwhile).
    pub fn program(&self, rte: u64) {
        without_interrupts(|| {
            let _g = LOCK.lock();
            let lo = 0x10 + 2 * self.pin;
            write(self.base, lo, (rte as u32) | RTE_MASK);
            write(self.base, lo + 1, (rte >> 32) as u32);
            write(self.base, lo, rte as u32);
        });
    }

    /// Masks or unmasks the input.
    pub fn set_masked(&self, masked: bool) {
        without_interrupts(|| {
            let _g = LOCK.lock();
            let lo = 0x10 + 2 * self.pin;
            let v = read(self.base, lo);
            write(
                self.base,
                lo,
                if masked { v | RTE_MASK } else { v & !RTE_MASK },
            );
        });
    }
}
