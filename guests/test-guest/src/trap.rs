//! GDT/TSS, the IDT and its 256 entry stubs, exception bookkeeping, and the
//! guard that turns a fault or panic inside a test into a test failure.
//!
//! Every gate runs on an IST stack: the prebuilt `core` uses the red zone, so
//! the CPU must never push an interrupt frame onto the interrupted stack.
//! Exceptions are *recorded* (vector, error code, RIP, CS), then either:
//! - a #GP on RDMSR/WRMSR while [`rdmsr_checked`]/[`wrmsr_checked`] expect
//!   one: the 2-byte instruction is skipped and execution continues;
//! - inside [`guarded`]: execution resumes where `guarded` was called, at
//!   CPL 0, which returns `Err(Abort::Exception)`;
//! - otherwise: fatal, the guest reports it and powers off.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::cpu;
use crate::msg::Msg;
use crate::Global;

/// Selectors of the GDT built in `boot.rs`.
pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_SS: u16 = 0x10;
pub const USER_DS: u16 = 0x18 | 3;
pub const USER_CS: u16 = 0x20 | 3;
const TSS_SEL: u16 = 0x28;

/// The LAPIC timer's vector and the LAPIC spurious vector.
pub const TIMER_VECTOR: u64 = 0x40;
pub const SPURIOUS_VECTOR: u64 = 0xFF;
/// The fixed IPI the second CPU sends the first in the `smp-*` tests.
pub const IPI_VECTOR: u64 = 0x41;
/// The vectors the `pci-*` tests program into MSI, MSI-X and the IOAPIC:
/// `PCI_VECTOR_BASE + i` is counted in `PCI_HITS[i]`.
pub const PCI_VECTOR_BASE: u64 = 0x50;
pub const PCI_VECTOR_COUNT: usize = 8;
/// The level-triggered one (INTx through the IOAPIC): its handler only
/// counts and does not EOI, because the line is still asserted; the test
/// deasserts it at the device first, then EOIs.
pub const PCI_LEVEL_VECTOR: u64 = PCI_VECTOR_BASE + 7;
/// Where the legacy PICs were moved (`cpu::quiesce_pic`).
const PIC_VECTORS: core::ops::RangeInclusive<u64> = 0x20..=0x2F;

/// #GP.
pub const GP: u64 = 13;
/// DR6 with no condition recorded (its reserved bits read 1).
pub const DR6_INIT: u64 = 0xFFFF_0FF0;
/// The NMI vector.
pub const NMI: u64 = 2;

/// Registers saved by the entry stubs, lowest address first (FXSAVE area below).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// Stub n sits at guest_trap_stubs + 16 * n: [push $0] push $n; jmp common.
// The CPU pushes an error code itself for 8, 10-14, 17, 21, 29 and 30.
// guard_call(f, arg) saves the callee-saved registers and the previous guard
// on the stack, records that stack position in GUARD_RSP and calls f(arg);
// it returns 0 when f returns, 1 when the trap handler aborted f (it
// resumes at guard_exception_resume on that stack) and 2 on a panic
// (guard_panic_abort switches to that stack itself).
core::arch::global_asm!(
    r#"
    .section .text.traps, "ax"
    .balign 16
    .global guest_trap_stubs
guest_trap_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp guest_trap_common
    .set vec, vec + 1
    .endr

guest_trap_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    sub $512, %rsp
    fxsave (%rsp)
    lea 512(%rsp), %rdi
    cld
    call guest_trap
    fxrstor (%rsp)
    add $512, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq

    .global guard_call
guard_call:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    pushq GUARD_RSP(%rip)
    mov %rsp, GUARD_RSP(%rip)
    mov %rdi, %rax
    mov %rsi, %rdi
    call *%rax
    xor %eax, %eax
guard_unwind:
    popq GUARD_RSP(%rip)
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret

    .global guard_exception_resume
guard_exception_resume:
    mov $1, %eax
    jmp guard_unwind

    .global guard_panic_abort
guard_panic_abort:
    mov GUARD_RSP(%rip), %rsp
    mov $2, %eax
    jmp guard_unwind
"#,
    options(att_syntax)
);

extern "C" {
    static guest_trap_stubs: u8;
    static mut guest_gdt: [u64; 7];
    fn guard_call(f: extern "C" fn(*mut u8), arg: *mut u8) -> u64;
    static guard_exception_resume: u8;
    fn guard_panic_abort() -> !;
}

/// The stack position of the innermost active guard (0: none). Written by
/// `guard_call` (assembly) and read by the trap handler.
#[no_mangle]
static GUARD_RSP: AtomicU64 = AtomicU64::new(0);

/// An IST stack.
#[repr(C, align(16))]
struct Stack([u8; 16 * 1024]);

static EXCEPTION_STACK: Global<Stack> = Global::new(Stack([0; 16 * 1024]));
static CRITICAL_STACK: Global<Stack> = Global::new(Stack([0; 16 * 1024]));
static IRQ_STACK: Global<Stack> = Global::new(Stack([0; 16 * 1024]));

/// The 64-bit TSS: only RSP0 and the IST slots matter.
#[repr(C, align(16))]
struct Tss([u8; 104]);

static TSS: Global<Tss> = Global::new(Tss([0; 104]));

#[repr(C, align(16))]
struct Idt([u64; 512]);

static IDT: Global<Idt> = Global::new(Idt([0; 512]));

fn stack_top(s: &Global<Stack>) -> u64 {
    s.get() as u64 + core::mem::size_of::<Stack>() as u64
}

/// Loads the TSS and the IDT (the GDT is already live from the boot stub).
pub fn init() {
    const IST_EXCEPTION: u64 = 1;
    const IST_CRITICAL: u64 = 2;
    const IST_IRQ: u64 = 3;

    // SAFETY: init runs once, before the TSS is loaded; nothing else
    // references it (the CPU reads it only after `ltr` below).
    let tss = unsafe { &mut *TSS.get() };
    let mut put = |off: usize, v: u64| tss.0[off..off + 8].copy_from_slice(&v.to_le_bytes());
    put(4, stack_top(&EXCEPTION_STACK)); // RSP0
    put(0x24, stack_top(&EXCEPTION_STACK)); // IST1
    put(0x2C, stack_top(&CRITICAL_STACK)); // IST2
    put(0x34, stack_top(&IRQ_STACK)); // IST3
                                      // I/O map base = 104 = the TSS limit + 1: no I/O permission bitmap.
    tss.0[102..104].copy_from_slice(&104u16.to_le_bytes());

    let base = TSS.get() as u64;
    let limit = 103u64;
    let low = (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (0x89 << 40) // present, 64-bit TSS (available)
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    // SAFETY: slots 5 and 6 of the boot GDT are reserved for this TSS
    // descriptor and are not in use yet; LTR then marks it busy.
    unsafe {
        let gdt = core::ptr::addr_of_mut!(guest_gdt).cast::<u64>();
        gdt.add(5).write_volatile(low);
        gdt.add(6).write_volatile(base >> 32);
        core::arch::asm!("ltr {0:x}", in(reg) TSS_SEL, options(nostack, preserves_flags));
    }

    let stubs = core::ptr::addr_of!(guest_trap_stubs) as u64;
    // SAFETY: the IDT is not loaded yet and nothing else references it.
    let idt = unsafe { &mut *IDT.get() };
    for v in 0..256u64 {
        let handler = stubs + 16 * v;
        let ist = match v {
            2 | 8 | 18 => IST_CRITICAL,
            0..=31 => IST_EXCEPTION,
            _ => IST_IRQ,
        };
        let low = (handler & 0xFFFF)
            | (u64::from(KERNEL_CS) << 16)
            | (ist << 32)
            | (0x8E << 40) // present, DPL 0, 64-bit interrupt gate
            | (((handler >> 16) & 0xFFFF) << 48);
        idt.0[(2 * v) as usize] = low;
        idt.0[(2 * v + 1) as usize] = handler >> 32;
    }
    load_idt(IDT.get() as u64, (core::mem::size_of::<Idt>() - 1) as u16);
}

/// LIDT with the given base and limit.
pub fn load_idt(base: u64, limit: u16) {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let p = Pointer { limit, base };
    // SAFETY: the guest's IDT is static and every gate points at a stub; the
    // only other caller loads an empty IDT on purpose (the triple fault).
    unsafe {
        core::arch::asm!("lidt [{}]", in(reg) &p, options(nostack, readonly, preserves_flags))
    };
}

/// What was recorded about the last exception.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fault {
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rax: u64,
    pub cr2: u64,
}

static LAST_VECTOR: AtomicU64 = AtomicU64::new(0);
static LAST_ERROR: AtomicU64 = AtomicU64::new(0);
static LAST_RIP: AtomicU64 = AtomicU64::new(0);
static LAST_CS: AtomicU64 = AtomicU64::new(0);
static LAST_RAX: AtomicU64 = AtomicU64::new(0);
static LAST_CR2: AtomicU64 = AtomicU64::new(0);

fn last_fault() -> Fault {
    Fault {
        vector: LAST_VECTOR.load(Ordering::SeqCst),
        error_code: LAST_ERROR.load(Ordering::SeqCst),
        rip: LAST_RIP.load(Ordering::SeqCst),
        cs: LAST_CS.load(Ordering::SeqCst),
        rax: LAST_RAX.load(Ordering::SeqCst),
        cr2: LAST_CR2.load(Ordering::SeqCst),
    }
}

/// Set while an RDMSR/WRMSR that may #GP runs; counts the #GPs skipped.
static EXPECT_MSR_GP: AtomicBool = AtomicBool::new(false);
static MSR_GP_SKIPPED: AtomicU32 = AtomicU32::new(0);

/// LAPIC timer interrupts taken, and the RIP the last one interrupted.
pub static TIMER_HITS: AtomicU32 = AtomicU32::new(0);
pub static TIMER_RIP: AtomicU64 = AtomicU64::new(0);
/// The TSC read first thing in the last timer interrupt's handler (the `rt-latency` test).
pub static TIMER_TSC: AtomicU64 = AtomicU64::new(0);
/// IPIs taken on [`IPI_VECTOR`].
pub static IPI_HITS: AtomicU32 = AtomicU32::new(0);
/// NMIs taken.
pub static NMI_HITS: AtomicU32 = AtomicU32::new(0);
/// Interrupts taken on each of the `pci-*` tests' vectors.
pub static PCI_HITS: [AtomicU32; PCI_VECTOR_COUNT] =
    [const { AtomicU32::new(0) }; PCI_VECTOR_COUNT];
/// Interrupts on vectors nobody asked for.
pub static STRAY_INTERRUPTS: AtomicU32 = AtomicU32::new(0);

/// #DB.
pub const DB: u64 = 1;
/// EFLAGS.TF.
pub const RFLAGS_TF: u64 = 1 << 8;
/// Set while a test single-steps: a #DB at CPL 0 is then counted
/// ([`STEP_HITS`], with the saved RIP and DR6 of the last one), DR6 is
/// cleared and TF is cleared in the saved RFLAGS, so each stepped
/// instruction traps at most once.
pub static STEP_ARMED: AtomicBool = AtomicBool::new(false);
pub static STEP_HITS: AtomicU32 = AtomicU32::new(0);
pub static STEP_RIP: AtomicU64 = AtomicU64::new(0);
pub static STEP_DR6: AtomicU64 = AtomicU64::new(0);
/// Non-zero: the next NMI handler sends one more NMI (ICR low word 0x4400)
/// to the APIC ID in [`NMI_RESEND_DEST`] from inside the handler, once.
pub static NMI_RESEND: AtomicBool = AtomicBool::new(false);
pub static NMI_RESEND_DEST: AtomicU32 = AtomicU32::new(0);
/// NMI handlers entered while another one was still running (NMI blocking broken).
pub static NMI_NESTED: AtomicU32 = AtomicU32::new(0);
static NMI_ACTIVE: AtomicBool = AtomicBool::new(false);

/// Entered from `guest_trap_common` with interrupts off, on an IST stack.
#[no_mangle]
extern "C" fn guest_trap(frame: &mut TrapFrame) {
    match frame.vector {
        NMI => {
            if NMI_ACTIVE.swap(true, Ordering::SeqCst) {
                NMI_NESTED.fetch_add(1, Ordering::SeqCst);
            }
            NMI_HITS.fetch_add(1, Ordering::SeqCst);
            if NMI_RESEND.swap(false, Ordering::SeqCst) {
                let dest = NMI_RESEND_DEST.load(Ordering::SeqCst) as u8;
                crate::lapic::send_ipi(dest, 0x4400);
            }
            NMI_ACTIVE.store(false, Ordering::SeqCst);
        }
        DB if STEP_ARMED.load(Ordering::SeqCst) && frame.cs == u64::from(KERNEL_CS) => {
            STEP_HITS.fetch_add(1, Ordering::SeqCst);
            STEP_RIP.store(frame.rip, Ordering::SeqCst);
            STEP_DR6.store(cpu::dr6(), Ordering::SeqCst);
            cpu::set_dr6(DR6_INIT);
            frame.rflags &= !RFLAGS_TF;
        }
        0..=31 => exception(frame),
        TIMER_VECTOR => {
            TIMER_TSC.store(cpu::rdtsc(), Ordering::SeqCst);
            TIMER_HITS.fetch_add(1, Ordering::SeqCst);
            TIMER_RIP.store(frame.rip, Ordering::SeqCst);
            crate::lapic::eoi();
        }
        SPURIOUS_VECTOR => {}
        IPI_VECTOR => {
            IPI_HITS.fetch_add(1, Ordering::SeqCst);
            crate::lapic::eoi();
        }
        v if (PCI_VECTOR_BASE..PCI_VECTOR_BASE + PCI_VECTOR_COUNT as u64).contains(&v) => {
            PCI_HITS[(v - PCI_VECTOR_BASE) as usize].fetch_add(1, Ordering::SeqCst);
            if v != PCI_LEVEL_VECTOR {
                crate::lapic::eoi();
            }
        }
        v if PIC_VECTORS.contains(&v) && crate::tests::pic_only::irq(v) => {}
        v if PIC_VECTORS.contains(&v) => {
            STRAY_INTERRUPTS.fetch_add(1, Ordering::SeqCst);
            // SAFETY: non-specific EOI to both 8259s.
            unsafe {
                cpu::outb(0xA0, 0x20);
                cpu::outb(0x20, 0x20);
            }
        }
        _ => {
            STRAY_INTERRUPTS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// True if `rip` (kernel code) is a 2-byte RDMSR (0F 32) or WRMSR (0F 30).
fn is_msr_insn(rip: u64) -> bool {
    extern "C" {
        static __guest_start: u8;
        static __guest_bss_end: u8;
    }
    let start = core::ptr::addr_of!(__guest_start) as u64;
    let end = core::ptr::addr_of!(__guest_bss_end) as u64;
    if rip < start || rip + 2 > end {
        return false;
    }
    // SAFETY: rip..rip+2 lies inside the guest image, which is mapped.
    let (a, b) = unsafe {
        let p = rip as *const u8;
        (p.read_volatile(), p.add(1).read_volatile())
    };
    a == 0x0F && (b == 0x30 || b == 0x32)
}

fn exception(frame: &mut TrapFrame) {
    LAST_VECTOR.store(frame.vector, Ordering::SeqCst);
    LAST_ERROR.store(frame.error_code, Ordering::SeqCst);
    LAST_RIP.store(frame.rip, Ordering::SeqCst);
    LAST_CS.store(frame.cs, Ordering::SeqCst);
    LAST_RAX.store(frame.rax, Ordering::SeqCst);
    LAST_CR2.store(cpu::cr2(), Ordering::SeqCst);

    if frame.vector == GP
        && frame.cs == u64::from(KERNEL_CS)
        && EXPECT_MSR_GP.load(Ordering::SeqCst)
        && is_msr_insn(frame.rip)
    {
        MSR_GP_SKIPPED.fetch_add(1, Ordering::SeqCst);
        frame.rip += 2;
        return;
    }

    let guard = GUARD_RSP.load(Ordering::SeqCst);
    if guard != 0 {
        frame.rip = core::ptr::addr_of!(guard_exception_resume) as u64;
        frame.cs = u64::from(KERNEL_CS);
        frame.rflags = 0x2; // IF and DF clear
        frame.rsp = guard;
        frame.ss = u64::from(KERNEL_SS);
        return;
    }

    crate::out!(
        "test-guest: FATAL unexpected exception {} ({}) error={:#x} rip={:#x} cs={:#x} cr2={:#x}",
        frame.vector,
        vector_name(frame.vector),
        frame.error_code,
        frame.rip,
        frame.cs,
        cpu::cr2()
    );
    crate::power_off(false)
}

/// Why a guarded call did not return normally.
#[derive(Clone, Copy)]
pub enum Abort {
    Exception(Fault),
    Panic(Msg),
}

/// The message of a panic inside a guarded call.
static PANIC_MSG: Global<Msg> = Global::new(Msg::new());

/// Runs `f`; a fault or panic inside it returns here as `Err` (at CPL 0,
/// interrupts off). Guards nest. Frames abandoned this way are not dropped,
/// so `f` must not own anything whose destructor matters (nothing here does).
pub fn guarded<F: FnMut()>(mut f: F) -> Result<(), Abort> {
    extern "C" fn trampoline<F: FnMut()>(p: *mut u8) {
        // SAFETY: `p` is the `&mut F` passed to guard_call just below,
        // alive for the whole call.
        let f = unsafe { &mut *p.cast::<F>() };
        f();
    }
    // SAFETY: guard_call follows the C ABI: it preserves the callee-saved
    // registers on every path out and calls `trampoline::<F>` with `&mut f`.
    let r = unsafe { guard_call(trampoline::<F>, (&mut f as *mut F).cast()) };
    match r {
        0 => Ok(()),
        1 => Err(Abort::Exception(last_fault())),
        // SAFETY: the panic handler wrote the message before aborting; no
        // one else touches it.
        _ => Err(Abort::Panic(unsafe { *PANIC_MSG.get() })),
    }
}

/// Called by the panic handler: if a guard is active, abort to it.
pub fn abort_to_guard(message: Msg) {
    if GUARD_RSP.load(Ordering::SeqCst) != 0 {
        // SAFETY: single CPU, interrupts do not touch PANIC_MSG.
        unsafe { *PANIC_MSG.get() = message };
        // SAFETY: a guard is active, so GUARD_RSP is the stack position
        // guard_call saved; guard_panic_abort unwinds to it.
        unsafe { guard_panic_abort() }
    }
}

/// RDMSR that reports a #GP instead of dying of it.
pub fn rdmsr_checked(msr: u32) -> Result<u64, Fault> {
    MSR_GP_SKIPPED.store(0, Ordering::SeqCst);
    EXPECT_MSR_GP.store(true, Ordering::SeqCst);
    // SAFETY: a #GP is expected and skipped by the handler; a successful
    // read has no side effects.
    let v = unsafe { cpu::rdmsr(msr) };
    EXPECT_MSR_GP.store(false, Ordering::SeqCst);
    if MSR_GP_SKIPPED.load(Ordering::SeqCst) != 0 {
        Err(last_fault())
    } else {
        Ok(v)
    }
}

/// WRMSR that reports a #GP instead of dying of it.
///
/// # Safety
/// If the write succeeds it must not break the guest.
pub unsafe fn wrmsr_checked(msr: u32, value: u64) -> Result<(), Fault> {
    MSR_GP_SKIPPED.store(0, Ordering::SeqCst);
    EXPECT_MSR_GP.store(true, Ordering::SeqCst);
    // SAFETY: a #GP is expected and skipped; a successful write is the
    // caller's responsibility.
    unsafe { cpu::wrmsr(msr, value) };
    EXPECT_MSR_GP.store(false, Ordering::SeqCst);
    if MSR_GP_SKIPPED.load(Ordering::SeqCst) != 0 {
        Err(last_fault())
    } else {
        Ok(())
    }
}

/// A short name for exception `vector`.
pub fn vector_name(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS",
        "#GP", "#PF", "rsvd15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "rsvd22", "rsvd23",
        "rsvd24", "rsvd25", "rsvd26", "rsvd27", "#HV", "#VC", "#SX", "rsvd31",
    ];
    NAMES.get(vector as usize).copied().unwrap_or("interrupt")
}
