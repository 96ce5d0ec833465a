//! The real-time latency test (command-line word `rt-latency`, run alone): periodic timer
//! interrupts, each armed `period` TSC ticks after the previous handler ran, and for each the
//! time from its deadline to the first instruction of its handler, in TSC ticks.
//!
//! The timer is the TSC-deadline timer where CPUID.1:ECX[24] says the CPU has it, the LAPIC
//! one-shot timer (divide by 1) otherwise; the LAPIC is switched to x2APIC mode first where
//! CPUID.1:ECX[21] allows (its EOI is then an MSR write, not an MMIO access). Between timers the
//! CPU halts with interrupts on (`spin` on the command line: it spins instead), as a real-time
//! task that sleeps until its next period does.
//!
//! Options: `samples=N` (default 2000, at most [`MAX_SAMPLES`]), `period=T` (TSC ticks between
//! the handler and the next deadline, default 100000), `spin`, `wait-go` (after the warm-up, print
//! `RT waiting for go` and measure only once a line `go` arrives on COM1: the interference test
//! starts its load first). `RT measuring` is printed as the measurement starts.
//!
//! Output, machine-readable (the harness parses these lines):
//! ```text
//! RT config timer=tsc-deadline|oneshot apic=x2apic|xapic wait=hlt|spin samples=N period=T
//! RT latency samples=N min=A mean=B p99.9=C max=D exits=E overruns=O
//! RT hist lo=L hi=H count=K          one line per non-empty bucket [L, H)
//! ```
//! `exits` is the vCPU's VM exits over the measurement (Quercus's statistics leaf
//! 0x4000_0001, read before and after; the second read's own exit not counted), `-` natively. `overruns` counts the timers whose deadline
//! had passed before the guest got to halt for them (the CPU was taken away for longer than a
//! period: under a hypervisor such a timer costs an exit or two more). The buckets are powers of two (ticks
//! 0 and 1 form the first). The one-shot timer's deadline is the TSC read before its
//! initial-count write plus the count converted to TSC ticks at a rate measured first: its
//! samples include that write (an exit under a virtual LAPIC).

use core::sync::atomic::Ordering;

use super::Outcome::Pass;
use super::{spin_ticks, tsc_bound_ms, TestFn, TestResult};
use crate::cpu::{self, cpuid, rdtsc_ordered};
use crate::trap::{SPURIOUS_VECTOR, TIMER_HITS, TIMER_TSC, TIMER_VECTOR};
use crate::{lapic, msg, out, Env, Global};

/// The test, alone in its mode.
pub const TESTS: &[(&str, TestFn)] = &[("rt-latency", rt_latency)];

/// The most samples one run keeps.
pub const MAX_SAMPLES: usize = 20_000;
const DEFAULT_SAMPLES: usize = 2000;
const DEFAULT_PERIOD: u64 = 100_000;
/// Power-of-two histogram buckets: up to 2^40 ticks.
const BUCKETS: usize = 41;

const TSC_DEADLINE_MSR: u32 = 0x6E0;
const LVT_TSC_DEADLINE: u32 = 2 << 17;
/// Divide configuration 0b1011: divide by 1.
const TIMER_DIVIDE_1: u32 = 0xB;

static SAMPLES: Global<[u64; MAX_SAMPLES]> = Global::new([0; MAX_SAMPLES]);

/// A decimal number on the command line (`key=N`).
fn number(env: &Env, key: &[u8]) -> Option<u64> {
    let v = env.boot.word_value(key)?;
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    (!v.is_empty()).then_some(n)
}

/// The statistics leaf's exit count under Quercus.
fn exits(env: &Env) -> Option<u64> {
    env.quercus.then(|| {
        let r = cpuid(0x4000_0001, 0);
        u64::from(r.eax) | u64::from(r.ebx) << 32
    })
}

/// How the next timer is armed.
enum Timer {
    Deadline,
    /// One-shot: the initial count for `period` ticks, and the ticks it really stands for.
    OneShot {
        count: u32,
        ticks: u64,
    },
}

impl Timer {
    /// Arms the timer `period` ticks from now; returns its deadline (TSC).
    fn arm(&self, period: u64) -> u64 {
        match *self {
            Timer::Deadline => {
                let deadline = rdtsc_ordered() + period;
                // SAFETY: the CPU has the TSC-deadline MSR (CPUID checked); it raises only the
                // timer vector, which the guest handles.
                unsafe { cpu::wrmsr(TSC_DEADLINE_MSR, deadline) };
                deadline
            }
            Timer::OneShot { count, ticks } => {
                let armed = rdtsc_ordered();
                lapic::write(lapic::REG_TIMER_INITIAL, count);
                armed + ticks
            }
        }
    }
}

/// Waits (halting or spinning) until the timer handler ran once more than `hits`, at most
/// `bound` ticks; false if it did not.
fn wait_timer(hits: u32, bound: u64, spin: bool) -> bool {
    let t0 = cpu::rdtsc();
    while TIMER_HITS.load(Ordering::SeqCst) == hits {
        if cpu::rdtsc().wrapping_sub(t0) > bound {
            return false;
        }
        if spin {
            cpu::sti();
            core::hint::spin_loop();
            cpu::cli();
        } else {
            // SAFETY: STI's shadow makes STI;HLT atomic (an interrupt pending now wakes the
            // HLT); the handler runs on its IST stack.
            unsafe { core::arch::asm!("sti", "hlt", "cli", options(nostack)) };
        }
    }
    true
}

/// The bytes of the line being typed at COM1 (the `wait-go` option).
static GO_LINE: Global<([u8; 8], usize)> = Global::new(([0; 8], 0));

/// Takes what COM1 received; true once a line that is exactly `go` arrived.
fn go_arrived() -> bool {
    // SAFETY: used by `rt_latency` only, on the one CPU that runs the tests, never by a handler.
    let (line, len) = unsafe { &mut *GO_LINE.get() };
    while crate::serial::read(crate::serial::LSR) & 1 != 0 {
        match crate::serial::read(0) {
            b'\r' | b'\n' => {
                if &line[..*len] == b"go" {
                    return true;
                }
                *len = 0;
            }
            b if *len < line.len() => {
                line[*len] = b;
                *len += 1;
            }
            _ => *len = line.len(),
        }
    }
    false
}

/// The one-shot timer's count for `period` TSC ticks, and the ticks that count really takes.
fn oneshot_rate(period: u64) -> Result<Timer, crate::msg::Msg> {
    lapic::write(lapic::REG_TIMER_DIVIDE, TIMER_DIVIDE_1);
    lapic::write(
        lapic::REG_LVT_TIMER,
        lapic::LVT_MASKED | TIMER_VECTOR as u32,
    );
    lapic::write(lapic::REG_TIMER_INITIAL, u32::MAX);
    let (ta, ca) = (rdtsc_ordered(), lapic::read(lapic::REG_TIMER_CURRENT));
    spin_ticks(20 * period);
    let (tb, cb) = (rdtsc_ordered(), lapic::read(lapic::REG_TIMER_CURRENT));
    lapic::write(lapic::REG_TIMER_INITIAL, 0);
    let (counts, ticks) = (u64::from(ca.saturating_sub(cb)), tb.wrapping_sub(ta));
    ensure!(
        counts > 0 && ticks > 0,
        "LAPIC timer does not count ({ca:#x} then {cb:#x} over {ticks} TSC ticks)"
    );
    let count = (period * counts / ticks).clamp(1, u64::from(u32::MAX));
    Ok(Timer::OneShot {
        count: count as u32,
        ticks: count * ticks / counts,
    })
}

/// Figures of a sorted, non-empty sample list.
pub struct Figures {
    pub min: u64,
    pub mean: u64,
    pub p999: u64,
    pub max: u64,
}

/// min, mean, 99.9th percentile (nearest rank) and max of `sorted` (ascending, non-empty).
pub fn figures(sorted: &[u64]) -> Figures {
    let n = sorted.len();
    let sum: u128 = sorted.iter().map(|&s| u128::from(s)).sum();
    // Nearest rank: the smallest sample with at least 99.9% of them at or below it.
    let rank = (n * 999).div_ceil(1000).clamp(1, n);
    Figures {
        min: sorted[0],
        mean: (sum / n as u128) as u64,
        p999: sorted[rank - 1],
        max: sorted[n - 1],
    }
}

/// The power-of-two bucket of `ticks`.
fn bucket(ticks: u64) -> usize {
    ((63 - (ticks | 1).leading_zeros()) as usize).min(BUCKETS - 1)
}

/// Under Quercus, before measuring: what a real-time guest must not do is refused and leaves it
/// running. A class-of-service write (IA32_PQR_ASSOC) and, in x2APIC mode, leaving x2APIC mode
/// get #GP; IPIs to APIC IDs this one-vCPU VM does not have (a fixed one, an NMI, INIT, SIPI) and
/// an NMI to all but itself reach nobody: no interrupt and no NMI comes back. The hypervisor
/// counts them (its console says so; the harness checks).
fn hostile_probes(x2apic: bool) -> Result<(), crate::msg::Msg> {
    use crate::trap::{self, IPI_HITS, NMI_HITS, STRAY_INTERRUPTS};
    const PQR_ASSOC: u32 = 0xC8F;
    const APIC_BASE: u32 = 0x1B;
    const X2APIC_ICR: u32 = 0x830;
    let mut why = crate::msg::Msg::new();
    // SAFETY: a #GP is expected; were it accepted, CLOS 1 only changes cache ways.
    let r = unsafe { trap::wrmsr_checked(PQR_ASSOC, 1 << 32) }.map(|()| None);
    super::expect_gp(&mut why, "WRMSR", PQR_ASSOC, r);
    if x2apic {
        let before = (
            IPI_HITS.load(Ordering::SeqCst),
            NMI_HITS.load(Ordering::SeqCst),
            STRAY_INTERRUPTS.load(Ordering::SeqCst),
        );
        // SAFETY: reading IA32_APIC_BASE has no side effect.
        let base = unsafe { cpu::rdmsr(APIC_BASE) };
        // SAFETY: #GP expected (x2APIC -> xAPIC is illegal); were it accepted the test fails.
        let r = unsafe { trap::wrmsr_checked(APIC_BASE, base & !(1 << 10)) }.map(|()| None);
        super::expect_gp(&mut why, "WRMSR (x2APIC -> xAPIC)", APIC_BASE, r);
        for icr in [
            (0x55u64 << 32) | 0xE0, // fixed, another VM's (or no) APIC ID
            (7 << 32) | 0x400,      // NMI
            (1 << 32) | 0x4500,     // INIT
            (2 << 32) | 0x4610,     // SIPI
            (3 << 18) | 0x400,      // NMI to all but itself
        ] {
            // SAFETY: x2APIC mode; the ICR write sends an IPI that names nobody here.
            unsafe { cpu::wrmsr(X2APIC_ICR, icr) };
        }
        cpu::sti();
        spin_ticks(100_000);
        cpu::cli();
        let after = (
            IPI_HITS.load(Ordering::SeqCst),
            NMI_HITS.load(Ordering::SeqCst),
            STRAY_INTERRUPTS.load(Ordering::SeqCst),
        );
        if after != before {
            use core::fmt::Write as _;
            let _ = write!(
                why,
                "; IPIs naming nobody came back: (IPIs, NMIs, stray) {before:?} -> {after:?}"
            );
        }
    }
    if !why.as_str().is_empty() {
        return Err(why);
    }
    out!("RT hostile probes refused");
    Ok(())
}

fn rt_latency(env: &Env) -> TestResult {
    let samples = number(env, b"samples")
        .map_or(DEFAULT_SAMPLES, |n| n as usize)
        .clamp(1, MAX_SAMPLES);
    let period = number(env, b"period").unwrap_or(DEFAULT_PERIOD).max(1000);
    let spin = env.boot.has_word(b"spin");
    let features = cpuid(1, 0).ecx;
    let (has_x2apic, has_deadline) = (features & (1 << 21) != 0, features & (1 << 24) != 0);

    cpu::cli();
    if has_x2apic {
        lapic::enter_x2apic();
    } else {
        ensure!(lapic::map(), "cannot map the LAPIC at {:#x}", lapic::BASE);
    }
    if env.quercus {
        hostile_probes(has_x2apic)?;
    }
    lapic::write(lapic::REG_SVR, lapic::SVR_ENABLE | SPURIOUS_VECTOR as u32);
    lapic::write(lapic::REG_TPR, 0);
    let timer = if has_deadline {
        lapic::write(lapic::REG_LVT_TIMER, LVT_TSC_DEADLINE | TIMER_VECTOR as u32);
        Timer::Deadline
    } else {
        let t = oneshot_rate(period)?;
        lapic::write(lapic::REG_LVT_TIMER, TIMER_VECTOR as u32); // one-shot, unmasked
        t
    };
    out!(
        "RT config timer={} apic={} wait={} samples={samples} period={period}",
        if has_deadline {
            "tsc-deadline"
        } else {
            "oneshot"
        },
        if has_x2apic { "x2apic" } else { "xapic" },
        if spin { "spin" } else { "hlt" },
    );
    // A timer that does not fire within a second or 1000 periods (whichever is longer) fails.
    let bound = tsc_bound_ms(env, 1000).max(period.saturating_mul(1000));

    // SAFETY: SAMPLES is used by this function only, which never runs in an interrupt handler
    // nor twice at once (one CPU runs the tests).
    let list = &mut unsafe { &mut *SAMPLES.get() }[..samples];
    // A few warm-up rounds (code and data into the caches and TLBs), not kept.
    for _ in 0..8 {
        let hits = TIMER_HITS.load(Ordering::SeqCst);
        timer.arm(period);
        ensure!(
            wait_timer(hits, bound, spin),
            "the timer did not fire within {bound} TSC ticks (warm-up)"
        );
    }
    if env.boot.has_word(b"wait-go") {
        out!("RT waiting for go");
        // Between looks at COM1 the CPU sleeps a period (a poll loop would be an exit storm
        // under a hypervisor, slowing the VMs beside it on an emulator).
        let mut seen = false;
        while !seen {
            seen = go_arrived();
            let hits = TIMER_HITS.load(Ordering::SeqCst);
            timer.arm(period);
            ensure!(
                wait_timer(hits, bound, false),
                "the timer did not fire within {bound} TSC ticks (waiting for go)"
            );
        }
    }
    out!("RT measuring");
    let exits0 = exits(env);
    let mut overruns = 0u64;
    for (i, s) in list.iter_mut().enumerate() {
        let hits = TIMER_HITS.load(Ordering::SeqCst);
        let deadline = timer.arm(period);
        if cpu::rdtsc() >= deadline {
            overruns += 1;
        }
        ensure!(
            wait_timer(hits, bound, spin),
            "timer {i} did not fire within {bound} TSC ticks"
        );
        *s = TIMER_TSC.load(Ordering::SeqCst).saturating_sub(deadline);
    }
    let exits1 = exits(env);
    lapic::write(
        lapic::REG_LVT_TIMER,
        lapic::LVT_MASKED | TIMER_VECTOR as u32,
    );
    if has_deadline {
        // SAFETY: as in `Timer::arm`; 0 disarms.
        unsafe { cpu::wrmsr(TSC_DEADLINE_MSR, 0) };
    }

    let mut hist = [0u32; BUCKETS];
    for &s in list.iter() {
        hist[bucket(s)] += 1;
    }
    list.sort_unstable();
    let f = figures(list);
    match (exits0, exits1) {
        // The second read counts its own exit: not the measurement's.
        (Some(a), Some(b)) => out!(
            "RT latency samples={samples} min={} mean={} p99.9={} max={} exits={} overruns={overruns}",
            f.min,
            f.mean,
            f.p999,
            f.max,
            b.saturating_sub(a).saturating_sub(1)
        ),
        _ => out!(
            "RT latency samples={samples} min={} mean={} p99.9={} max={} exits=- overruns={overruns}",
            f.min,
            f.mean,
            f.p999,
            f.max
        ),
    }
    for (k, &count) in hist.iter().enumerate() {
        if count != 0 {
            let lo = if k == 0 { 0 } else { 1u64 << k };
            out!("RT hist lo={lo} hi={} count={count}", 1u64 << (k + 1));
        }
    }
    Ok(Pass)
}
