//! The physical local APIC (xAPIC MMIO mode) of each CPU.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use raw_cpuid::CpuId;

use crate::cpu::{msr, rdmsr};

/// Vector the LAPIC uses for spurious interrupts.
pub const SPURIOUS_VECTOR: u8 = 0xFF;

const REG_ID: usize = 0x20;
const REG_TPR: usize = 0x80;
const REG_EOI: usize = 0xB0;
const REG_SVR: usize = 0xF0;
const REG_ESR: usize = 0x280;
const REG_ICR_LO: usize = 0x300;
const REG_ICR_HI: usize = 0x310;
const REG_LVT_LINT0: usize = 0x350;
const REG_LVT_LINT1: usize = 0x360;

const ICR_DELIVERY_PENDING: u32 = 1 << 12;

/// Physical (= virtual, identity-mapped) base of the xAPIC registers.
static BASE: AtomicU64 = AtomicU64::new(0xFEE0_0000);

/// APIC ID -> CPU index + 1 (0 = unknown), for log labels and dumps.
static INDEX_OF_APIC: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];

fn reg(offset: usize) -> *mut u32 {
    (BASE.load(Ordering::Relaxed) as usize + offset) as *mut u32
}

fn read(offset: usize) -> u32 {
    // SAFETY: the xAPIC page is identity-mapped uncached by the boot page
    // tables and `offset` is one of the architectural register offsets.
    unsafe { reg(offset).read_volatile() }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as for `read`.
    unsafe { reg(offset).write_volatile(value) }
}

/// The initial APIC ID of the running CPU, from CPUID (valid before any setup).
pub fn cpuid_apic_id() -> u32 {
    CpuId::new()
        .get_feature_info()
        .map_or(0, |f| u32::from(f.initial_local_apic_id()))
}

/// Records which CPU index owns an APIC ID.
pub fn register_cpu(apic_id: u32, index: u32) {
    if let Some(slot) = INDEX_OF_APIC.get(apic_id as usize) {
        slot.store(index + 1, Ordering::Relaxed);
    }
}

/// The running CPU's index if registered, else its APIC ID marked with `a`.
pub fn current_cpu_label() -> CpuLabel {
    let apic = cpuid_apic_id();
    match INDEX_OF_APIC
        .get(apic as usize)
        .map(|s| s.load(Ordering::Relaxed))
    {
        Some(i) if i > 0 => CpuLabel::Index(i - 1),
        _ => CpuLabel::Apic(apic),
    }
}

/// How a CPU is named in log lines.
#[derive(Clone, Copy, Debug)]
pub enum CpuLabel {
    Index(u32),
    Apic(u32),
}

impl core::fmt::Display for CpuLabel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CpuLabel::Index(i) => write!(f, "{i}"),
            CpuLabel::Apic(a) => write!(f, "?(apic {a})"),
        }
    }
}

/// Enables this CPU's LAPIC in xAPIC mode: software-enabled, spurious vector
/// set, all priorities accepted, LINT0/LINT1 masked.
pub fn init_this_cpu() {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU.
    let base = unsafe { rdmsr(msr::IA32_APIC_BASE) };
    BASE.store(base & 0xF_FFFF_F000, Ordering::Relaxed);
    if base & (1 << 11) == 0 {
        // SAFETY: setting the global enable bit keeps the same base; x2APIC stays off.
        unsafe { crate::cpu::wrmsr(msr::IA32_APIC_BASE, base | (1 << 11)) };
    }
    write(REG_SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    write(REG_TPR, 0);
    write(REG_LVT_LINT0, 1 << 16);
    write(REG_LVT_LINT1, 1 << 16);
    write(REG_ESR, 0);
}

/// The running CPU's APIC ID from the LAPIC ID register.
pub fn id() -> u32 {
    read(REG_ID) >> 24
}

const REG_LVT_TIMER: usize = 0x320;
const REG_TIMER_INITIAL: usize = 0x380;
const REG_TIMER_DIVIDE: usize = 0x3E0;

const REG_TIMER_CURRENT: usize = 0x390;

/// LAPIC timer ticks (divide by 16) per 2^20 TSC ticks, measured once.
static TIMER_PER_TSC_Q20: AtomicU64 = AtomicU64::new(0);

/// Measures the LAPIC timer rate against the TSC (call once, on any CPU:
/// all LAPIC timers share the bus clock).
pub fn calibrate_timer() {
    write(REG_TIMER_DIVIDE, 0b0011);
    write(REG_LVT_TIMER, 1 << 16); // masked, one-shot
    write(REG_TIMER_INITIAL, u32::MAX);
    let start = crate::cpu::rdtsc();
    crate::time::delay_us(10_000);
    let ticks = u64::from(u32::MAX - read(REG_TIMER_CURRENT));
    let tsc = crate::cpu::rdtsc().wrapping_sub(start).max(1);
    write(REG_TIMER_INITIAL, 0);
    TIMER_PER_TSC_Q20.store(
        ((u128::from(ticks) << 20) / u128::from(tsc)) as u64,
        Ordering::Relaxed,
    );
}

/// Puts this CPU's LAPIC timer in one-shot mode on `vector`, divide by 16,
/// for [`arm_oneshot_count`].
pub fn set_oneshot_vector(vector: u8) {
    write(REG_TIMER_DIVIDE, 0b0011);
    write(REG_LVT_TIMER, u32::from(vector));
}

/// Starts the one-shot timer [`set_oneshot_vector`] set up to fire after
/// `tsc_delta` TSC ticks; `None` stops it. One register write: this runs
/// before every guest entry.
pub fn arm_oneshot_count(tsc_delta: Option<u64>) {
    let Some(delta) = tsc_delta else {
        write(REG_TIMER_INITIAL, 0);
        return;
    };
    let rate = TIMER_PER_TSC_Q20.load(Ordering::Relaxed).max(1);
    let count =
        ((u128::from(delta) * u128::from(rate)) >> 20).clamp(1, u128::from(u32::MAX)) as u32;
    write(REG_TIMER_INITIAL, count);
}

/// Starts this CPU's LAPIC timer in periodic mode: `vector` every
/// `count` bus ticks divided by 16 (used to poll the console).
pub fn start_periodic_timer(vector: u8, count: u32) {
    write(REG_TIMER_DIVIDE, 0b0011);
    write(REG_LVT_TIMER, (1 << 17) | u32::from(vector));
    write(REG_TIMER_INITIAL, count);
}

/// Signals end of interrupt.
pub fn eoi() {
    write(REG_EOI, 0);
}

fn wait_icr_idle() -> bool {
    let deadline = crate::time::deadline_after_us(100_000);
    while read(REG_ICR_LO) & ICR_DELIVERY_PENDING != 0 {
        if crate::time::passed(deadline) {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

fn send_icr(apic_id: u32, low: u32) -> bool {
    write(REG_ICR_HI, apic_id << 24);
    write(REG_ICR_LO, low);
    wait_icr_idle()
}

/// Sends INIT (level assert) to `apic_id`. Returns false if the ICR never went idle.
pub fn send_init(apic_id: u32) -> bool {
    send_icr(apic_id, 0x0000_4500)
}

/// Sends a STARTUP IPI with the 4 KiB page number `page` (the AP starts at page << 12).
pub fn send_sipi(apic_id: u32, page: u8) -> bool {
    send_icr(apic_id, 0x0000_4600 | u32::from(page))
}

/// Sends a fixed-delivery IPI with `vector` to `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) -> bool {
    send_icr(apic_id, 0x0000_4000 | u32::from(vector))
}

/// Sends an NMI to `apic_id` (how a real-time VM's pCPU is reached: see `trap`'s NMI path).
pub fn send_nmi(apic_id: u32) -> bool {
    send_icr(apic_id, 0x0000_4400)
}

/// Sends `vector` to this CPU (destination shorthand "self"): only the low ICR word is
/// written, so a sender this interrupts (between its two ICR writes) keeps its destination.
pub fn self_ipi(vector: u8) -> bool {
    if !wait_icr_idle() {
        return false;
    }
    write(REG_ICR_LO, 0x0004_4000 | u32::from(vector));
    wait_icr_idle()
}
