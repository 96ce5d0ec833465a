//! The physical local APIC of each CPU: xAPIC MMIO mode for the host, x2APIC mode (MSRs) on a
//! pCPU whose LAPIC a real-time guest owns (LAPIC passthrough, see [`enter_passthrough`]).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

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

/// Some pCPU's LAPIC is in x2APIC mode (it was given to a guest once): register accesses look at the
/// running CPU's mode first. False on machines without real-time VMs: their accesses pay nothing.
static ANY_X2APIC: AtomicBool = AtomicBool::new(false);

/// The per-CPU LAPIC flags.
#[derive(Clone, Copy)]
enum Flag {
    X2apic,
    Passthrough,
}

/// A per-CPU LAPIC flag of the running CPU; false (without a look) while no pCPU ever passed
/// its LAPIC through.
fn flag_here(flag: Flag) -> bool {
    if !ANY_X2APIC.load(Ordering::Relaxed) {
        return false;
    }
    #[cfg(feature = "bare-metal")]
    {
        crate::percpu::current().is_some_and(|p| {
            match flag {
                Flag::X2apic => &p.x2apic,
                Flag::Passthrough => &p.lapic_passthrough,
            }
            .load(Ordering::Relaxed)
        })
    }
    #[cfg(not(feature = "bare-metal"))]
    {
        let _ = flag;
        false
    }
}

/// Whether the running CPU's LAPIC is in x2APIC mode (a passthrough guest owns it, or did).
pub fn x2apic_here() -> bool {
    flag_here(Flag::X2apic)
}

/// Whether a guest owns the running CPU's LAPIC (LAPIC passthrough).
pub fn passthrough_here() -> bool {
    flag_here(Flag::Passthrough)
}

/// The x2APIC MSR of the xAPIC register at `offset`.
const fn x2_msr(offset: usize) -> u32 {
    0x800 + (offset as u32 >> 4)
}

fn read(offset: usize) -> u32 {
    if x2apic_here() {
        // SAFETY: the LAPIC is in x2APIC mode (the flag is set only by `enter_passthrough`
        // after the switch) and `offset` is a readable architectural register.
        return unsafe { rdmsr(x2_msr(offset)) } as u32;
    }
    // SAFETY: the xAPIC page is identity-mapped uncached by the boot page
    // tables and `offset` is one of the architectural register offsets.
    unsafe { reg(offset).read_volatile() }
}

fn write(offset: usize, value: u32) {
    if x2apic_here() {
        // SAFETY: as in `read`; the ICR goes through `send_icr`, never here.
        unsafe { crate::cpu::wrmsr(x2_msr(offset), u64::from(value)) };
        return;
    }
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
    if base & (1 << 11) == 0 && !x2apic_here() {
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
    if x2apic_here() {
        return read(REG_ID);
    }
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
    if x2apic_here() {
        // An x2APIC ICR write completes before the WRMSR retires.
        return true;
    }
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
    if x2apic_here() {
        // SAFETY: x2APIC mode (see `read`); one 64-bit ICR write with a 32-bit destination.
        unsafe {
            crate::cpu::wrmsr(
                x2_msr(REG_ICR_LO),
                u64::from(apic_id) << 32 | u64::from(low),
            )
        };
        return true;
    }
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
    if x2apic_here() {
        // SAFETY: x2APIC mode (see `read`); the SELF IPI register takes a vector.
        unsafe { crate::cpu::wrmsr(X2_SELF_IPI, u64::from(vector)) };
        return true;
    }
    if !wait_icr_idle() {
        return false;
    }
    write(REG_ICR_LO, 0x0004_4000 | u32::from(vector));
    wait_icr_idle()
}

/// x2APIC registers used by LAPIC passthrough.
const X2_SELF_IPI: u32 = 0x83F;
const X2_EOI: u32 = 0x80B;
const X2_ISR0: u32 = 0x810;
#[cfg(feature = "bare-metal")]
const IA32_TSC_DEADLINE: u32 = 0x6E0;
#[cfg(feature = "bare-metal")]
const APIC_BASE_EN: u64 = 1 << 11;
#[cfg(feature = "bare-metal")]
const APIC_BASE_EXTD: u64 = 1 << 10;
#[cfg(feature = "bare-metal")]
const LVT_MASKED: u32 = 1 << 16;

/// The guest-visible LAPIC state a passthrough guest had in its virtual LAPIC when it switched
/// to x2APIC mode: programmed into the physical one, so that the switch loses nothing.
pub use vcpu::LapicHandover;

#[cfg(feature = "bare-metal")]
/// EOIs whatever this LAPIC has in service (x2APIC or xAPIC registers, by the current mode).
fn retire_in_service() {
    for _ in 0..256 {
        let busy = (0..8).any(|i| {
            if x2apic_here() {
                // SAFETY: x2APIC mode; ISR0-7 are readable.
                let bits = unsafe { rdmsr(X2_ISR0 + i) };
                bits != 0
            } else {
                read(0x100 + 0x10 * i as usize) != 0
            }
        });
        if !busy {
            return;
        }
        eoi();
    }
}

#[cfg(feature = "bare-metal")]
/// Gives this pCPU's LAPIC to the guest about to run on it (interrupts are off): the host's timer
/// stops, host interrupts still pending are taken first, the LAPIC switches to x2APIC mode (it
/// stays there: Bochs, like the SDM's older CPUs, cannot enable a LAPIC again once disabled, so
/// the host keeps using it in x2APIC mode afterwards), and the guest's registers from `h` are
/// programmed; interrupts it had pending are raised again through SELF IPI and reach it after
/// the next entry (external interrupts do not exit in passthrough).
pub fn enter_passthrough(h: &LapicHandover) {
    let Some(pc) = crate::percpu::current() else {
        return;
    };
    arm_oneshot_count(None);
    // Host interrupts that arrived (a kick's wake vector) must not reach the guest.
    crate::cpu::wait_for_interrupt_pending();
    crate::cpu::wait_for_interrupt_pending();
    retire_in_service();
    if !pc.x2apic.load(Ordering::Relaxed) {
        // SAFETY: IA32_APIC_BASE exists; xAPIC -> x2APIC is the SDM's legal switch (EN stays
        // set, the base stays); interrupts are off.
        unsafe {
            let base = rdmsr(msr::IA32_APIC_BASE);
            crate::cpu::wrmsr(msr::IA32_APIC_BASE, base | APIC_BASE_EN | APIC_BASE_EXTD);
        }
        ANY_X2APIC.store(true, Ordering::SeqCst);
        pc.x2apic.store(true, Ordering::SeqCst);
    }
    pc.lapic_passthrough.store(true, Ordering::SeqCst);
    write(REG_SVR, h.svr);
    write(REG_TPR, h.tpr);
    write(REG_LVT_LINT0, LVT_MASKED);
    write(REG_LVT_LINT1, LVT_MASKED);
    write(REG_ESR, 0);
    write(0x370, h.lvt_error);
    write(REG_TIMER_DIVIDE, h.timer_divide);
    write(REG_LVT_TIMER, h.lvt_timer);
    if h.tsc_deadline != 0 {
        // SAFETY: the CPU has the TSC-deadline timer (passthrough is only chosen where CPUID
        // says so); the LVT timer is in TSC-deadline mode when the guest armed it.
        unsafe { crate::cpu::wrmsr(IA32_TSC_DEADLINE, h.tsc_deadline) };
    } else if h.timer_initial != 0 {
        write(REG_TIMER_INITIAL, h.timer_initial);
    }
    for v in h.pending_vectors() {
        self_ipi(v);
    }
}

#[cfg(feature = "bare-metal")]
/// Takes this pCPU's LAPIC back from a passthrough guest (its vCPU left for good, or waits for
/// a start-up IPI): the guest's timer is stopped, what it left in service retired, and the
/// host's setup written again (the LAPIC stays in x2APIC mode). Interrupts the guest had
/// pending may still reach the host once (counted as stray vectors).
pub fn leave_passthrough() {
    let Some(pc) = crate::percpu::current() else {
        return;
    };
    if !pc.lapic_passthrough.swap(false, Ordering::SeqCst) {
        return;
    }
    write(REG_LVT_TIMER, LVT_MASKED);
    write(REG_TIMER_INITIAL, 0);
    // SAFETY: x2APIC mode with the TSC-deadline timer (see `enter_passthrough`).
    unsafe { crate::cpu::wrmsr(IA32_TSC_DEADLINE, 0) };
    retire_in_service();
    init_this_cpu();
}

/// In passthrough (x2APIC) mode: the vector in service with the highest priority, retired by
/// an EOI on the guest's behalf (a level-triggered interrupt's EOI the hypervisor must see).
pub fn passthrough_eoi() -> Option<u8> {
    if !passthrough_here() {
        return None;
    }
    let top = (0..8u32).rev().find_map(|i| {
        // SAFETY: x2APIC mode; ISR0-7 are readable.
        let bits = unsafe { rdmsr(X2_ISR0 + i) } as u32;
        (bits != 0).then(|| (i * 32 + 31 - bits.leading_zeros()) as u8)
    });
    // SAFETY: x2APIC mode; EOI takes 0.
    unsafe { crate::cpu::wrmsr(X2_EOI, 0) };
    top
}
