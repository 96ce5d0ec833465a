//! Quercus's bare-metal test guest.
//!
//! A Multiboot1 kernel (linked at 1 MiB) that runs a fixed list of tests
//! and prints machine-checked lines on COM1:
//! `TEST <name> PASS`, `TEST <name> FAIL <why>`, `TEST <name> SKIP native`,
//! then `TESTS DONE <passed> passed <failed> failed`, then powers off
//! (Quercus hypercall 3, else QEMU's isa-debug-exit at 0xF4, else halts).
//! Command-line words: `console` (stay up after the tests: heartbeat and echo),
//! `bench` (exit round-trip benchmarks: `BENCH` lines), `smp` (start the second vCPU),
//! `pci` (the virtual PCI segment and Quercus's PCI test device), `arch`
//! (only the architecture-conformance `arch-*` tests), `crash`
//! (triple-fault on purpose after the tests, announced by
//! `TEST triple-fault ARMED`), `pic-only` (a legacy guest: only the `pic-*`
//! tests, with the local APIC globally disabled), `kbd-reset` (with
//! `pic-only`: reset the machine through the 8042 after the tests,
//! announced by `TEST kbd-reset ARMED`), `virtio` (only the `virtio-*`
//! tests: the `virtio-drivers` crate against the VM's virtio-pci devices),
//! `virtio-net-peer` (with `self-id=M peer-id=N`: a frame exchange with a
//! second VM on the same virtual switch), `virtio-hostile` (only the
//! `virtio-hostile-*` tests: the guest's own driver breaks the rings of its
//! virtio devices on purpose), `virtio-soak` (with `seconds=N`: the
//! `virtio-drivers` crate keeps the VM's disk and two NICs busy). See `tests.rs` for what each test
//! checks. `net-responder` (with `ip=A.B.C.D`: no tests, but answer ARP
//! and ping on the VM's virtio-net devices forever; `tests/responder.rs`).
//! `hostile` (no tests: every abuse of the hypervisor, phase by phase,
//! ending in every reset path and a triple fault; `tests/hostile.rs`),
//! `heartbeat` (no tests: `heartbeat N work=W` every 200 ms, W its pace).
//! `rt-latency` (only the timer-interrupt latency test, `RT` lines; `tests/rt.rs`).
//! `ivshmem` (with `role=writer|reader|outsider`: only the `ivshmem-*` tests, inter-VM shared
//! memory and doorbells between three VMs; `tests/ivshmem.rs`). `vuart-link` (with
//! `role=left|right`: only the `vuart-link-*` tests, two VMs talking through a vUART link;
//! `tests/vuart_link.rs`).

#![no_std]
#![no_main]
#![allow(
    clippy::result_large_err,
    reason = "failure reasons are fixed stack buffers: there is no heap to box them in"
)]

mod acpi;
mod boot;
mod cpu;
mod hypercall;
mod ioapic;
mod lapic;
mod mem;
mod msg;
mod multiboot;
mod paging;
mod pci;
mod serial;
mod tests;
mod trap;
mod virtio;
mod vpci;

use core::cell::UnsafeCell;

use msg::Ascii;
use multiboot::BootInfo;

/// A static the guest mutates through raw pointers.
pub struct Global<T>(UnsafeCell<T>);

// SAFETY: the guest runs on one CPU and every user of a `Global` states why
// its accesses never overlap (interrupt handlers touch only atomics).
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    pub const fn new(v: T) -> Self {
        Self(UnsafeCell::new(v))
    }

    pub fn get(&self) -> *mut T {
        self.0.get()
    }
}

/// The hypervisor signature in CPUID 0x40000000 EBX, ECX, EDX.
pub const QUERCUS_SIGNATURE: [u8; 12] = *b"QuercusHV\0\0\0";
/// The highest hypervisor leaf Quercus must report at least.
pub const QUERCUS_MIN_LEAF: u32 = 0x4000_0010;

/// What the guest learned about where it runs.
pub struct Env {
    pub boot: BootInfo,
    /// CPUID 0 vendor (EBX, EDX, ECX).
    pub vendor: [u8; 12],
    /// CPUID.1:ECX[31].
    pub hv_bit: bool,
    /// CPUID 0x40000000 EAX and EBX, ECX, EDX.
    pub hv_max_leaf: u32,
    pub hv_signature: [u8; 12],
    /// The hypervisor signature is Quercus's.
    pub quercus: bool,
    /// Not under Quercus: no hypervisor bit, or the signature of a known
    /// other hypervisor or emulator (QEMU's TCG sets the bit and says
    /// "TCGTCGTCGTCG"). Hypervisor-only tests print `SKIP native`. A set
    /// bit with an unknown signature is neither: those tests then fail.
    pub native: bool,
    /// TSC frequency from CPUID 0x40000010 (0: unknown).
    pub tsc_khz: u32,
    pub bench: bool,
    pub crash: bool,
    /// After the tests, stay up: print a heartbeat and echo console input
    /// (the shell tests attach to it, pause it, stop it).
    pub console: bool,
    /// Also run the guest's own `selftest-*` checks of its fault handling.
    pub selftest: bool,
    /// Also start the second CPU and exchange IPIs with it (`smp-*` tests).
    pub smp: bool,
    /// Also enumerate PCI and exercise the PCI test device (`pci-*` tests).
    pub pci: bool,
    /// Only the 8259/8254/RTC tests (`pic-*`), with the local APIC off.
    pub pic_only: bool,
    /// After the tests, reset the machine through the 8042 keyboard controller.
    pub kbd_reset: bool,
    /// Run only the architecture-conformance `arch-*` tests.
    pub arch: bool,
    /// Run only the `virtio-*` tests (the guest-side `virtio-drivers` crate
    /// against the VM's virtio-pci devices).
    pub virtio: bool,
    /// Run only `virtio-enum` and `virtio-net-peer` (two VMs on one switch;
    /// `self-id=M peer-id=N` on the command line).
    pub virtio_net_peer: bool,
    /// Run only the `virtio-hostile-*` tests: the guest's own driver breaks
    /// the rings of its virtio-blk and virtio-net devices on purpose.
    pub virtio_hostile: bool,
    /// Run only `virtio-enum` and `virtio-soak` (`seconds=N`): the
    /// `virtio-drivers` crate keeps using the VM's devices for N seconds.
    pub virtio_soak: bool,
    /// Run no tests: answer ARP and ICMP echo for `ip=A.B.C.D` on the VM's
    /// virtio-net devices until the VM is stopped.
    pub net_responder: bool,
    /// Run no tests: the hostile guest (`tests/hostile.rs`).
    pub hostile: bool,
    /// Run no tests: a heartbeat with its pace, the hostile guest's
    /// well-behaved neighbour.
    pub heartbeat: bool,
    /// Run only the `edu-*` tests of a passed-through QEMU edu device.
    pub passthrough_edu: bool,
    /// Run only the `ivshmem-*` tests (`role=writer|reader|outsider`; scenario `ipc-ivshmem`).
    pub ivshmem: bool,
    /// Run only the `vuart-link-*` tests (`role=left|right`; scenario `ipc-vuart-link`).
    pub vuart_link: bool,
    /// Run only the `msgchan-*` tests (the bare-metal end of the message channel; scenario
    /// `ipc-channel`).
    pub msgchan: bool,
    /// Run only the `ipc-bench` measurements (`role=ping|pong`; scenario `bench-ipc`).
    pub ipc_bench: bool,
    /// Run no tests: write a pattern into RAM and check it every second (the DMA-isolation
    /// tests aim at it from another VM).
    pub victim: bool,
}

/// Signatures of hypervisors that are not Quercus (the "native" baselines).
const OTHER_HYPERVISORS: &[&[u8; 12]] = &[
    b"TCGTCGTCGTCG",
    b"KVMKVMKVM\0\0\0",
    b"Microsoft Hv",
    b"VMwareVMware",
    b"XenVMMXenVMM",
    b"VBoxVBoxVBox",
    b"bhyve bhyve ",
    b"ACRNACRNACRN",
];

impl Env {
    fn detect(boot: BootInfo) -> Self {
        let leaf0 = cpu::cpuid(0, 0);
        let mut vendor = [0u8; 12];
        vendor[0..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
        vendor[8..12].copy_from_slice(&leaf0.ecx.to_le_bytes());
        let hv_bit = cpu::cpuid(1, 0).ecx & (1 << 31) != 0;
        let hv = cpu::cpuid(0x4000_0000, 0);
        let hv_signature = cpu::signature_bcd(hv);
        let quercus = hv_signature == QUERCUS_SIGNATURE;
        let tsc_khz = if quercus && hv.eax >= QUERCUS_MIN_LEAF {
            cpu::cpuid(0x4000_0010, 0).eax
        } else {
            0
        };
        Env {
            vendor,
            hv_bit,
            hv_max_leaf: hv.eax,
            hv_signature,
            quercus,
            native: !quercus && (!hv_bit || OTHER_HYPERVISORS.contains(&&hv_signature)),
            tsc_khz,
            bench: boot.has_word(b"bench"),
            crash: boot.has_word(b"crash"),
            console: boot.has_word(b"console"),
            selftest: boot.has_word(b"selftest"),
            smp: boot.has_word(b"smp"),
            pci: boot.has_word(b"pci"),
            pic_only: boot.has_word(b"pic-only"),
            kbd_reset: boot.has_word(b"kbd-reset"),
            arch: boot.has_word(b"arch"),
            virtio: boot.has_word(b"virtio"),
            virtio_net_peer: boot.has_word(b"virtio-net-peer"),
            virtio_hostile: boot.has_word(b"virtio-hostile"),
            virtio_soak: boot.has_word(b"virtio-soak"),
            net_responder: boot.has_word(b"net-responder"),
            hostile: boot.has_word(b"hostile"),
            heartbeat: boot.has_word(b"heartbeat"),
            passthrough_edu: boot.has_word(b"passthrough-edu"),
            ivshmem: boot.has_word(b"ivshmem"),
            vuart_link: boot.has_word(b"vuart-link"),
            msgchan: boot.has_word(b"msgchan"),
            ipc_bench: boot.has_word(b"ipc-bench"),
            victim: boot.has_word(b"victim"),
            boot,
        }
    }

    pub fn is_intel(&self) -> bool {
        self.vendor == *b"GenuineIntel"
    }

    pub fn is_amd(&self) -> bool {
        self.vendor == *b"AuthenticAMD"
    }
}

#[no_mangle]
extern "C" fn guest_main(magic: u32, info: u32) -> ! {
    serial::init();
    trap::init();
    cpu::quiesce_pic();
    let boot = BootInfo::parse(magic, info);
    let env = Env::detect(boot);
    if env.quercus {
        if env.is_intel() {
            hypercall::enable(hypercall::Insn::Vmcall);
        } else if env.is_amd() {
            hypercall::enable(hypercall::Insn::Vmmcall);
        }
    }

    out!(
        "test-guest: vendor={} hypervisor-bit={} hv-signature=\"{}\" hv-max-leaf={:#x} quercus={} native={} tsc-khz={} ram-mapped={}MiB cmdline=\"{}\"",
        Ascii(&env.vendor),
        u8::from(env.hv_bit),
        Ascii(&env.hv_signature),
        env.hv_max_leaf,
        if env.quercus { "yes" } else { "no" },
        if env.native { "yes" } else { "no" },
        env.tsc_khz,
        paging::mapped_ram_end() >> 20,
        Ascii(env.boot.cmdline())
    );
    if !env.boot.valid {
        out!(
            "test-guest: no multiboot information (eax={:#x}): RAM size unknown, only 2 MiB mapped",
            env.boot.magic
        );
    }

    if env.net_responder {
        tests::responder::run(&env);
    }
    if env.heartbeat {
        heartbeat_loop(&env);
    }
    if env.hostile {
        tests::hostile::run(&env);
    }
    if env.victim {
        tests::victim(&env);
    }
    let tally = tests::run_all(&env);
    out!("TESTS DONE {} passed {} failed", tally.passed, tally.failed);
    if env.crash {
        triple_fault();
    }
    if env.kbd_reset {
        tests::pic_only::kbd_reset(&env);
    }
    if env.console {
        console_loop(&env);
    }
    power_off(tally.failed == 0)
}

/// Prints `tick N` about every 200 ms and echoes each line typed on the
/// console as `got: <line>`; never returns.
fn console_loop(env: &Env) -> ! {
    let khz = if env.tsc_khz == 0 {
        1_000_000
    } else {
        env.tsc_khz
    };
    let ticks_per_period = u64::from(khz) * 200;
    let mut next = cpu::rdtsc() + ticks_per_period;
    let mut tick = 0u64;
    let mut line = [0u8; 64];
    let mut len = 0usize;
    loop {
        if serial::read(serial::LSR) & 1 != 0 {
            let b = serial::read(0);
            match b {
                b'\r' | b'\n' if len > 0 => {
                    out!("got: {}", Ascii(&line[..len]));
                    len = 0;
                }
                b'\r' | b'\n' => {}
                _ if len < line.len() => {
                    line[len] = b;
                    len += 1;
                }
                _ => {}
            }
        }
        if cpu::rdtsc() >= next {
            tick += 1;
            out!("tick {tick}");
            next += ticks_per_period;
        }
        core::hint::spin_loop();
    }
}

/// The well-behaved neighbour of the `hostile-*` cases: no tests, a fixed
/// piece of work in a loop and every 200 ms (TSC) `heartbeat N work=W`, W
/// the rounds done in that period: its pace. A period the hypervisor took
/// from it shows a smaller W (the next deadline does not move).
fn heartbeat_loop(env: &Env) -> ! {
    // `x2apic`: switch the LAPIC to x2APIC mode first (a real-time VM's LAPIC is then passed
    // through: the lifecycle cases stop and reset it in that state).
    if env.boot.has_word(b"x2apic") && cpu::cpuid(1, 0).ecx & (1 << 21) != 0 {
        lapic::enter_x2apic();
        out!("heartbeat: x2APIC mode");
    }
    let khz = if env.tsc_khz == 0 {
        1_000_000
    } else {
        env.tsc_khz
    };
    let period = u64::from(khz) * 200;
    let mut next = cpu::rdtsc() + period;
    let (mut beat, mut work, mut x) = (0u64, 0u64, 1u64);
    loop {
        for _ in 0..64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        x = core::hint::black_box(x);
        work += 1;
        if cpu::rdtsc() >= next {
            beat += 1;
            out!("heartbeat {beat} work={work}");
            work = 0;
            next += period;
        }
    }
}

/// Waits (bounded) until COM1 has sent everything.
pub fn drain_serial() {
    serial::wait_lsr(serial::LSR_THRE | serial::LSR_TEMT, 1_000_000);
}

/// Powers the VM off: Quercus hypercall 3 if there is one; else QEMU's
/// isa-debug-exit (exit status 1 if `ok`, 3 if not); else Bochs's shutdown
/// port (the string "Shutdown" to 0x8900); else halts for good.
pub fn power_off(ok: bool) -> ! {
    drain_serial();
    if hypercall::insn().is_some() {
        let _ = hypercall::call(hypercall::POWER_OFF, 0, 0, 0);
    }
    // SAFETY: 0xF4 is QEMU's isa-debug-exit when present; elsewhere an
    // unclaimed port whose writes are ignored.
    unsafe { cpu::outl(0xF4, if ok { 0 } else { 1 }) };
    for b in *b"Shutdown" {
        // SAFETY: Bochs's power-off port; unclaimed (ignored) elsewhere.
        unsafe { cpu::outb(0x8900, b) };
    }
    cpu::halt_forever()
}

/// Loads an empty IDT and raises #BP: #BP -> #GP -> #DF -> triple fault.
pub fn triple_fault() -> ! {
    out!("TEST triple-fault ARMED");
    drain_serial();
    cpu::cli();
    trap::load_idt(0, 0);
    // SAFETY: deliberately fatal: with a zero-limit IDT no vector can be
    // delivered, so the CPU (or the hypervisor) shuts this VM down.
    unsafe { core::arch::asm!("int3", options(nostack, nomem)) };
    cpu::halt_forever()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let m = match info.location() {
        Some(l) => msg!("panic at {}:{}: {}", l.file(), l.line(), info.message()),
        None => msg!("panic: {}", info.message()),
    };
    trap::abort_to_guard(m);
    out!("test-guest: FATAL {}", m.as_str());
    power_off(false)
}
