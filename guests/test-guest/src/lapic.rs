//! The local APIC in xAPIC mode at its default base, used for the timer test.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::paging;

pub const BASE: u64 = 0xFEE0_0000;
pub const REG_TPR: u32 = 0x80;
pub const REG_EOI: u32 = 0xB0;
pub const REG_SVR: u32 = 0xF0;
pub const REG_ICR_LO: u32 = 0x300;
pub const REG_ICR_HI: u32 = 0x310;
pub const REG_LVT_TIMER: u32 = 0x320;
pub const REG_TIMER_INITIAL: u32 = 0x380;
pub const REG_TIMER_CURRENT: u32 = 0x390;
pub const REG_TIMER_DIVIDE: u32 = 0x3E0;
/// LVT mask bit.
pub const LVT_MASKED: u32 = 1 << 16;
/// SVR: APIC software enable.
pub const SVR_ENABLE: u32 = 1 << 8;

static MAPPED: AtomicBool = AtomicBool::new(false);
/// Set once the LAPIC is in x2APIC mode: registers are MSRs from then on
/// (there is no way back short of a reset).
static X2APIC: AtomicBool = AtomicBool::new(false);

/// IA32_APIC_BASE and its x2APIC-enable bit.
pub const MSR_APIC_BASE: u32 = 0x1B;
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// The x2APIC MSR of xAPIC register `reg`.
pub const fn x2apic_msr(reg: u32) -> u32 {
    0x800 + (reg >> 4)
}
pub const REG_LDR: u32 = 0xD0;
pub const REG_ID: u32 = 0x20;
/// x2APIC only: SELF IPI.
pub const REG_SELF_IPI: u32 = 0x3F0;

/// Switches the LAPIC to x2APIC mode (for the rest of this boot).
pub fn enter_x2apic() {
    // SAFETY: the caller checked CPUID.1:ECX[21]; setting EXTD with EN set is
    // the architectural switch, and every later access goes through MSRs.
    unsafe {
        let base = crate::cpu::rdmsr(MSR_APIC_BASE);
        crate::cpu::wrmsr(MSR_APIC_BASE, base | APIC_BASE_EXTD);
    }
    X2APIC.store(true, Ordering::SeqCst);
}

/// Whether the LAPIC is in x2APIC mode.
pub fn is_x2apic() -> bool {
    X2APIC.load(Ordering::SeqCst)
}

/// Maps the LAPIC page (uncached); false if it cannot be mapped.
pub fn map() -> bool {
    let ok = paging::map_extra_2m(BASE);
    MAPPED.store(ok, Ordering::SeqCst);
    ok
}

/// Reads a LAPIC register (0 if the LAPIC is not mapped).
pub fn read(reg: u32) -> u32 {
    if is_x2apic() {
        // SAFETY: x2APIC mode; `reg` names a readable register.
        return unsafe { crate::cpu::rdmsr(x2apic_msr(reg)) } as u32;
    }
    if !MAPPED.load(Ordering::SeqCst) {
        return 0;
    }
    // SAFETY: the LAPIC page is mapped uncached; reg is a register offset
    // below 4 KiB, 16-byte aligned, read as the 32-bit access it requires.
    unsafe { ((BASE + u64::from(reg)) as *const u32).read_volatile() }
}

/// Writes a LAPIC register (ignored if the LAPIC is not mapped).
pub fn write(reg: u32, v: u32) {
    if is_x2apic() {
        // SAFETY: x2APIC mode; `reg` names a writable register.
        unsafe { crate::cpu::wrmsr(x2apic_msr(reg), u64::from(v)) };
        return;
    }
    if !MAPPED.load(Ordering::SeqCst) {
        return;
    }
    // SAFETY: as in `read`.
    unsafe { ((BASE + u64::from(reg)) as *mut u32).write_volatile(v) };
}

/// Sends an IPI: `icr_lo` (vector, delivery mode, level...) to APIC ID `dest`.
pub fn send_ipi(dest: u8, icr_lo: u32) {
    write(REG_ICR_HI, u32::from(dest) << 24);
    write(REG_ICR_LO, icr_lo);
}

/// Ends the current interrupt.
pub fn eoi() {
    write(REG_EOI, 0);
}

/// Stops the timer and unmaps the LAPIC.
pub fn shutdown() {
    if is_x2apic() {
        write(REG_TIMER_INITIAL, 0);
        write(REG_LVT_TIMER, LVT_MASKED | crate::trap::TIMER_VECTOR as u32);
    }
    if MAPPED.load(Ordering::SeqCst) {
        write(REG_TIMER_INITIAL, 0);
        write(REG_LVT_TIMER, LVT_MASKED | crate::trap::TIMER_VECTOR as u32);
        MAPPED.store(false, Ordering::SeqCst);
        paging::unmap_extra_2m(BASE);
    }
}
