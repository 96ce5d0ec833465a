//! The exit benchmarks (command-line word `bench`): the round trip of each
//! kind of VM exit, timed by the guest with its TSC, printed one line per row
//! as `BENCH <row> median=N min=N max=N`. Natively the same rows time the
//! same instructions on the bare (emulated) machine: the baselines.
//!
//! Rows: `pio-claimed-*` (COM1's scratch register, a device both Quercus and
//! the emulators have), `pio-unclaimed-*` (port 0x2E0: no device there under
//! Quercus, Bochs or QEMU), `mmio-device-*` (the IOAPIC's IOREGSEL),
//! `mmio-unbacked-*` (0xD0000000, mapped uncached), `msr-apic-base-read`,
//! `hlt-wake-tsc-deadline` and `hlt-wake-oneshot` (see [`hlt_wake`]) and
//! `ipi-round-trip` (see [`ipi`]). Every sample includes the fenced RDTSC
//! pair around it (the `rdtsc-overhead` row of `cpuid-bench`).

use core::sync::atomic::{AtomicU32, Ordering};

use super::Outcome::{Pass, Skip};
use super::{
    poke, spin_ticks, TestFn, TestResult, AP_GDT, AP_GDTR, AP_REAL_MODE, AP_VECTOR, ICR_FIXED,
    ICR_INIT, ICR_INIT_DEASSERT, ICR_STARTUP, UNBACKED_ADDR,
};
use crate::cpu::{self, cpuid, rdtsc_ordered};
use crate::trap::{IPI_HITS, SPURIOUS_VECTOR, TIMER_HITS, TIMER_VECTOR};
use crate::{ioapic, lapic, msg, out, paging, Env, Global};

/// The benchmark "tests", run after `cpuid-bench` when `bench` is given.
pub const TESTS: &[(&str, TestFn)] = &[
    ("bench-pio", pio),
    ("bench-mmio", mmio),
    ("bench-msr", msr),
    ("bench-hlt-wake", hlt_wake),
    ("bench-ipi", ipi),
];

/// Rounds of the cheap rows (as `cpuid-bench`).
const ROUNDS: usize = 1000;
/// Rounds of the rows that wait for an interrupt.
const WAIT_ROUNDS: usize = 200;

static SAMPLES: Global<[u64; ROUNDS]> = Global::new([0; ROUNDS]);

/// Times `op` `rounds` times (after 16 warm-up calls) between two fenced
/// RDTSCs and prints the row. `op` may return its own sample instead
/// (`Some`), for rows whose interval is not the call itself.
fn series(row: &str, rounds: usize, mut op: impl FnMut() -> Option<u64>) {
    let rounds = rounds.clamp(2, ROUNDS);
    let mut once = || {
        let t0 = rdtsc_ordered();
        let own = op();
        let t1 = rdtsc_ordered();
        own.unwrap_or(t1.wrapping_sub(t0))
    };
    for _ in 0..16 {
        once();
    }
    // SAFETY: SAMPLES is used by this function only, which never runs in an
    // interrupt handler nor twice at once (one CPU runs the tests).
    let samples = &mut unsafe { &mut *SAMPLES.get() }[..rounds];
    for s in samples.iter_mut() {
        *s = once();
    }
    samples.sort_unstable();
    let n = samples.len();
    let median = (samples[n / 2 - 1] + samples[n / 2]) / 2;
    out!(
        "BENCH {row} median={median} min={} max={}",
        samples[0],
        samples[n - 1]
    );
}

// ---------------------------------------------------------------- port I/O

/// COM1's scratch register: claimed by Quercus's vUART, present natively.
const CLAIMED_PORT: u16 = 0x3FF;
/// No device answers here under Quercus (see `vm::pc`), Bochs or QEMU.
const UNCLAIMED_PORT: u16 = 0x2E0;

fn pio(_env: &Env) -> TestResult {
    // SAFETY: reading COM1's scratch register has no effect.
    let scratch = unsafe { cpu::inb(CLAIMED_PORT) };
    // SAFETY: as above.
    series("pio-claimed-read", ROUNDS, || unsafe {
        cpu::inb(CLAIMED_PORT);
        None
    });
    // SAFETY: writes back the scratch register's own value.
    series("pio-claimed-write", ROUNDS, || unsafe {
        cpu::outb(CLAIMED_PORT, scratch);
        None
    });
    // SAFETY: nothing decodes this port: reads float, writes are dropped.
    series("pio-unclaimed-read", ROUNDS, || unsafe {
        cpu::inb(UNCLAIMED_PORT);
        None
    });
    // SAFETY: as above.
    series("pio-unclaimed-write", ROUNDS, || unsafe {
        cpu::outb(UNCLAIMED_PORT, 0);
        None
    });
    Ok(Pass)
}

// ---------------------------------------------------------------- MMIO

fn mmio(_env: &Env) -> TestResult {
    ensure!(
        ioapic::map(),
        "cannot map the IOAPIC at {:#x}",
        ioapic::BASE
    );
    // IOREGSEL: reading it has no effect, writing back its value neither
    // (no interrupt handler uses the IOAPIC).
    // SAFETY: the IOAPIC page is mapped uncached outside RAM.
    let sel = unsafe { cpu::mmio_read32(ioapic::BASE) };
    // SAFETY: as above.
    series("mmio-device-read", ROUNDS, || unsafe {
        cpu::mmio_read32(ioapic::BASE);
        None
    });
    // SAFETY: as above; the same index is written back.
    series("mmio-device-write", ROUNDS, || unsafe {
        cpu::mmio_write32(ioapic::BASE, sel);
        None
    });
    ioapic::unmap();
    ensure!(
        paging::map_extra_2m(UNBACKED_ADDR),
        "{UNBACKED_ADDR:#x} is inside the guest's RAM mapping"
    );
    // SAFETY: mapped uncached just above, outside RAM: no Rust object lives
    // there, and nothing (or an unused window) decodes it.
    series("mmio-unbacked-read", ROUNDS, || unsafe {
        cpu::mmio_read32(UNBACKED_ADDR);
        None
    });
    // SAFETY: as above.
    series("mmio-unbacked-write", ROUNDS, || unsafe {
        cpu::mmio_write32(UNBACKED_ADDR, 0);
        None
    });
    paging::unmap_extra_2m(UNBACKED_ADDR);
    Ok(Pass)
}

// ---------------------------------------------------------------- MSR

fn msr(_env: &Env) -> TestResult {
    // SAFETY: IA32_APIC_BASE exists on every CPU with a local APIC; reading
    // it has no effect. Quercus intercepts it (the APIC is virtual).
    series("msr-apic-base-read", ROUNDS, || unsafe {
        cpu::rdmsr(lapic::MSR_APIC_BASE);
        None
    });
    Ok(Pass)
}

// ---------------------------------------------------------------- HLT to wake

const TSC_DEADLINE_MSR: u32 = 0x6E0;
const LVT_TSC_DEADLINE: u32 = 2 << 17;
/// How far ahead each timer is armed, in TSC ticks: long enough that the
/// guest is halted before it fires, even under a hypervisor.
const WAKE_DELAY: u64 = 50_000;
/// Divide configuration 0b1011: divide by 1.
const TIMER_DIVIDE_1: u32 = 0xB;

/// Halts (interrupts on) until the timer handler ran once more than `hits`,
/// or `bound` ticks passed; returns the TSC read right after, or `None`.
fn halt_until_timer(hits: u32, bound: u64) -> Option<u64> {
    let t0 = cpu::rdtsc();
    while TIMER_HITS.load(Ordering::SeqCst) == hits {
        if cpu::rdtsc().wrapping_sub(t0) > bound {
            return None;
        }
        // SAFETY: STI's shadow makes STI;HLT atomic (an interrupt pending
        // now wakes the HLT); the handler runs on its IST stack.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nostack)) };
    }
    Some(rdtsc_ordered())
}

/// HLT to wake: a timer is armed `WAKE_DELAY` ticks ahead, the CPU halts,
/// and a sample is the time from the moment the timer was due to the
/// instruction after HLT, i.e. the timer's delivery latency plus one
/// interrupt entry (the guest's handler: register save, FXSAVE, EOI) and
/// IRETQ. Under Quercus that is the exit on HLT, the hypervisor noticing
/// the due virtual timer, the injection and the VM entry, minus whatever
/// of it happens before the deadline.
///
/// `hlt-wake-tsc-deadline` (when CPUID.1:ECX[24]): the deadline is the
/// value written to IA32_TSC_DEADLINE. `hlt-wake-oneshot` (always): the
/// LAPIC one-shot timer, divider 1; the deadline is the TSC before the
/// initial-count write plus the count converted to TSC ticks by a rate
/// measured first, so its samples also hold part of that write's exit.
fn hlt_wake(env: &Env) -> TestResult {
    ensure!(lapic::map(), "cannot map the LAPIC at {:#x}", lapic::BASE);
    cpu::cli();
    lapic::write(lapic::REG_SVR, lapic::SVR_ENABLE | SPURIOUS_VECTOR as u32);
    lapic::write(lapic::REG_TPR, 0);
    let bound = super::tsc_bound_ms(env, 2000);
    let mut failed = None;

    if cpuid(1, 0).ecx & (1 << 24) != 0 {
        lapic::write(lapic::REG_LVT_TIMER, LVT_TSC_DEADLINE | TIMER_VECTOR as u32);
        series("hlt-wake-tsc-deadline", WAIT_ROUNDS, || {
            let hits = TIMER_HITS.load(Ordering::SeqCst);
            let deadline = rdtsc_ordered() + WAKE_DELAY;
            // SAFETY: the CPU has the TSC-deadline MSR (CPUID above); it
            // only raises the timer vector, which the guest handles.
            unsafe { cpu::wrmsr(TSC_DEADLINE_MSR, deadline) };
            let Some(woke) = halt_until_timer(hits, bound) else {
                failed = Some("tsc-deadline");
                return Some(0);
            };
            Some(woke.saturating_sub(deadline))
        });
        lapic::write(lapic::REG_LVT_TIMER, lapic::LVT_MASKED);
        // SAFETY: as above; 0 disarms.
        unsafe { cpu::wrmsr(TSC_DEADLINE_MSR, 0) };
    }

    // The one-shot timer's rate in TSC ticks: count down freely for a while.
    lapic::write(lapic::REG_TIMER_DIVIDE, TIMER_DIVIDE_1);
    lapic::write(
        lapic::REG_LVT_TIMER,
        lapic::LVT_MASKED | TIMER_VECTOR as u32,
    );
    lapic::write(lapic::REG_TIMER_INITIAL, u32::MAX);
    let (ta, ca) = (rdtsc_ordered(), lapic::read(lapic::REG_TIMER_CURRENT));
    spin_ticks(40 * WAKE_DELAY);
    let (tb, cb) = (rdtsc_ordered(), lapic::read(lapic::REG_TIMER_CURRENT));
    lapic::write(lapic::REG_TIMER_INITIAL, 0);
    let (counts, ticks) = (u64::from(ca.saturating_sub(cb)), tb.wrapping_sub(ta));
    ensure!(
        counts > 0 && ticks > 0,
        "LAPIC timer does not count ({ca:#x} then {cb:#x} over {ticks} TSC ticks)"
    );
    let count = (WAKE_DELAY * counts / ticks).clamp(1, u64::from(u32::MAX));
    let delay = count * ticks / counts;
    lapic::write(lapic::REG_LVT_TIMER, TIMER_VECTOR as u32); // one-shot, unmasked
    series("hlt-wake-oneshot", WAIT_ROUNDS, || {
        let hits = TIMER_HITS.load(Ordering::SeqCst);
        let armed = rdtsc_ordered();
        lapic::write(lapic::REG_TIMER_INITIAL, count as u32);
        let Some(woke) = halt_until_timer(hits, bound) else {
            failed = Some("one-shot");
            return Some(0);
        };
        Some(woke.saturating_sub(armed + delay))
    });
    lapic::shutdown();
    if let Some(which) = failed {
        fail!("the {which} timer did not fire within {bound} TSC ticks");
    }
    Ok(Pass)
}

// ---------------------------------------------------------------- IPI ping-pong

/// The vector the BSP pings the AP with; the AP answers on `IPI_VECTOR`,
/// which the BSP's handler counts in `IPI_HITS`.
const PING_VECTOR: u32 = 0x42;
// The AP's handler hard-codes the answer's vector.
const _: () = assert!(crate::trap::IPI_VECTOR == 0x41);
/// Where the start-up code jumps in protected mode (`AP_REAL_MODE`'s far jump).
const AP_PROTECTED_ENTRY: u64 = super::AP_CODE + 0x40;

/// The AP's 32-bit IDT: interrupt gates to `bench_ap_ping` (PING_VECTOR)
/// and `bench_ap_ignore` (every other vector).
#[repr(C, align(8))]
struct Idt32([u64; 256]);

static AP_IDT: Global<Idt32> = Global::new(Idt32([0; 256]));

/// The AP's IDTR: limit, then the 32-bit base.
#[repr(C, packed)]
struct Idtr32 {
    limit: u16,
    base: u32,
}

#[no_mangle]
static BENCH_AP_IDTR: Global<Idtr32> = Global::new(Idtr32 { limit: 0, base: 0 });

/// The AP's stack (its handler pushes a few words).
#[repr(C, align(16))]
struct ApStack([u8; 4096]);

#[no_mangle]
static BENCH_AP_STACK: Global<ApStack> = Global::new(ApStack([0; 4096]));

/// Set by the AP once its IDT and LAPIC are live; pings it answered.
#[no_mangle]
static BENCH_AP_READY: AtomicU32 = AtomicU32::new(0);
#[no_mangle]
static BENCH_AP_PINGS: AtomicU32 = AtomicU32::new(0);

// The AP in 32-bit protected mode without paging (flat segments from the
// start-up GDT: code 0x08, data 0x10), entered from the start-up page.
// It loads its own IDT, enables its LAPIC and halts with interrupts on;
// its ping handler sends a fixed IPI (IPI_VECTOR 0x41) to APIC 0, then EOIs.
core::arch::global_asm!(
    r#"
    .section .text.bench_ap, "ax"
    .code32
    .global bench_ap_entry32
bench_ap_entry32:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov $(BENCH_AP_STACK + 4096), %esp
    lidt BENCH_AP_IDTR
    movl $0x1FF, 0xFEE000F0
    movl $0, 0xFEE00080
    lock incl BENCH_AP_READY
1:
    sti
    hlt
    jmp 1b

    .balign 16
    .global bench_ap_ping
bench_ap_ping:
    movl $0, 0xFEE00310
    movl $0x4041, 0xFEE00300
    lock incl BENCH_AP_PINGS
    movl $0, 0xFEE000B0
    iret

    .balign 16
    .global bench_ap_ignore
bench_ap_ignore:
    iret
    .code64
"#,
    options(att_syntax)
);

extern "C" {
    static bench_ap_entry32: u8;
    static bench_ap_ping: u8;
    static bench_ap_ignore: u8;
}

/// A 32-bit interrupt gate (present, DPL 0) to `handler` in segment 0x08.
fn gate32(handler: u32) -> u64 {
    let h = u64::from(handler);
    (h & 0xFFFF) | (0x08 << 16) | (0x8E << 40) | ((h >> 16) << 48)
}

/// Address of a symbol in the guest image (linked below 4 GiB).
fn addr32(sym: &u8) -> u32 {
    let a = core::ptr::from_ref(sym) as u64;
    u32::try_from(a).expect("the guest is linked below 4 GiB")
}

/// Starts the AP (INIT, INIT de-assert, two start-up IPIs) into
/// `bench_ap_entry32`; true once it says it is ready.
fn start_ping_ap(bound: u64) -> bool {
    // SAFETY: addresses of code in the guest image.
    let (entry, ping, ignore) = unsafe {
        (
            addr32(&bench_ap_entry32),
            addr32(&bench_ap_ping),
            addr32(&bench_ap_ignore),
        )
    };
    // SAFETY: the AP is not running (it waits for a start-up IPI or sits in
    // `cli; hlt` after the smp tests, and INIT below resets it before it
    // can read its IDT); nothing else uses AP_IDT or the IDTR.
    unsafe {
        let idt = &mut *AP_IDT.get();
        for (v, g) in idt.0.iter_mut().enumerate() {
            *g = gate32(if v == PING_VECTOR as usize {
                ping
            } else {
                ignore
            });
        }
        *BENCH_AP_IDTR.get() = Idtr32 {
            limit: (core::mem::size_of::<Idt32>() - 1) as u16,
            base: u32::try_from(AP_IDT.get() as u64).expect("the guest is linked below 4 GiB"),
        };
    }
    poke(super::AP_CODE, &AP_REAL_MODE);
    // mov eax, entry; jmp eax
    let mut jump = [0xB8, 0, 0, 0, 0, 0xFF, 0xE0];
    jump[1..5].copy_from_slice(&entry.to_le_bytes());
    poke(AP_PROTECTED_ENTRY, &jump);
    poke(AP_GDTR, &[0x17, 0x00, 0x20, 0x7F, 0x00, 0x00]);
    let gdt: [u64; 3] = [0, 0x00CF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF];
    for (i, d) in gdt.iter().enumerate() {
        poke(AP_GDT + 8 * i as u64, &d.to_le_bytes());
    }
    BENCH_AP_READY.store(0, Ordering::SeqCst);
    lapic::send_ipi(super::AP_APIC_ID, ICR_INIT);
    lapic::send_ipi(super::AP_APIC_ID, ICR_INIT_DEASSERT);
    spin_ticks(bound / 300);
    lapic::send_ipi(super::AP_APIC_ID, ICR_STARTUP | AP_VECTOR);
    spin_ticks(bound / 3000);
    lapic::send_ipi(super::AP_APIC_ID, ICR_STARTUP | AP_VECTOR);
    let t0 = cpu::rdtsc();
    while BENCH_AP_READY.load(Ordering::SeqCst) == 0 && cpu::rdtsc().wrapping_sub(t0) < bound {
        core::hint::spin_loop();
    }
    BENCH_AP_READY.load(Ordering::SeqCst) != 0
}

/// IPI round trip between two CPUs: the BSP sends the AP a fixed IPI
/// (ICR high and low: two LAPIC writes), the AP's handler answers with a
/// fixed IPI back and EOIs, and a sample ends when the BSP's handler has
/// counted the answer (the BSP spins with interrupts on, it does not halt).
/// Under Quercus: the ICR write exits on the BSP's vCPU, the AP's vCPU is
/// woken from HLT and injected, its ICR writes exit, and the BSP's vCPU is
/// kicked out of the guest to be injected in turn.
///
/// Whether there is a second CPU is not read from CPUID.1:EBX[23:16]: Bochs
/// reports 1 there with two single-core processors (`cpu: count=2`). The
/// AP is started; natively, silence means no second CPU (a skip), under
/// Quercus a failure (the bench VM has two vCPUs).
fn ipi(env: &Env) -> TestResult {
    ensure!(lapic::map(), "cannot map the LAPIC at {:#x}", lapic::BASE);
    cpu::cli();
    lapic::write(lapic::REG_SVR, lapic::SVR_ENABLE | SPURIOUS_VECTOR as u32);
    lapic::write(lapic::REG_TPR, 0);
    let bound = super::tsc_bound_ms(env, 3000);
    if !start_ping_ap(bound) {
        if env.native {
            return Ok(Skip("no second CPU answered INIT/SIPI"));
        }
        fail!("the AP did not come up within {bound} TSC ticks");
    }
    BENCH_AP_PINGS.store(0, Ordering::SeqCst);
    let mut lost = 0u32;
    series("ipi-round-trip", WAIT_ROUNDS, || {
        let before = IPI_HITS.load(Ordering::SeqCst);
        let t0 = rdtsc_ordered();
        lapic::send_ipi(super::AP_APIC_ID, ICR_FIXED | PING_VECTOR);
        cpu::sti();
        while IPI_HITS.load(Ordering::SeqCst) == before
            && cpu::rdtsc().wrapping_sub(t0) < bound / 10
        {
            core::hint::spin_loop();
        }
        cpu::cli();
        let t1 = rdtsc_ordered();
        if IPI_HITS.load(Ordering::SeqCst) == before {
            lost += 1;
        }
        Some(t1.wrapping_sub(t0))
    });
    let pings = BENCH_AP_PINGS.load(Ordering::SeqCst);
    // Park the AP again (INIT: wait for a start-up IPI).
    lapic::send_ipi(super::AP_APIC_ID, ICR_INIT);
    lapic::send_ipi(super::AP_APIC_ID, ICR_INIT_DEASSERT);
    ensure!(lost == 0, "{lost} pings got no answer");
    let sent = (16 + WAIT_ROUNDS) as u32;
    ensure!(pings == sent, "the AP answered {pings} of {sent} pings");
    Ok(Pass)
}
