//! The IDT, the 256 entry stubs, and dispatch: exceptions are fatal for the
//! CPU that takes them (a register dump names the CPU and the vector);
//! interrupts go to registered handlers and are acknowledged at the LAPIC.
//!
//! Every vector but #DB runs on an IST stack: the prebuilt `core` uses the
//! red zone, so the CPU must never push an interrupt frame onto the
//! interrupted stack. #DB has no IST: the host never single-steps or sets
//! breakpoints, and the one #DB it can take is a stray single-step trap some
//! emulated CPUs (Bochs's SVM) raise right after VMRUN when the guest ran an
//! intercepted instruction with RFLAGS.TF set. At that point TR is still the
//! guest's (VMLOAD), so an IST lookup would read the guest's TSS; the stack
//! is the world switch's own, with nothing in a red zone. Such a trap is
//! counted and dismissed.

extern crate alloc;

use core::sync::atomic::{AtomicUsize, Ordering};

use platform::{Priority, VectorError, VectorTable};
use spin::Once;

use crate::percpu::ist;

/// Registers saved by the entry stubs, lowest address first.
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

/// A handler for an interrupt vector (32..=254).
pub type Handler = fn(&mut TrapFrame);

static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];
/// Interrupts taken per vector, all CPUs together.
static COUNTS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

/// (vector, times taken) for every interrupt vector (32..=255).
pub fn vector_counts() -> alloc::vec::Vec<(u8, u64)> {
    (32..=255u8)
        .map(|v| (v, COUNTS[usize::from(v)].load(Ordering::Relaxed) as u64))
        .collect()
}

/// Who owns each vector: every user asks [`allocate`] instead of picking a
/// constant. The 8259A's remapped range and the spurious vector are fixed by
/// the hardware setup and reserved first.
static VECTORS: spin::Mutex<Option<VectorTable>> = spin::Mutex::new(None);

fn with_vectors<R>(f: impl FnOnce(&mut VectorTable) -> R) -> R {
    let mut guard = VECTORS.lock();
    let table = guard.get_or_insert_with(|| {
        let mut t = VectorTable::new();
        let pic = crate::pic::PIC_VECTOR_BASE;
        for v in pic..pic + 16 {
            // A fresh table holds only the exceptions: these cannot collide.
            let _ = t.reserve(v, "8259A (masked; spurious IRQ 7/15)");
        }
        let _ = t.reserve(crate::lapic::SPURIOUS_VECTOR, "LAPIC spurious");
        t
    });
    f(table)
}

/// A free vector for `owner` with `handler` installed on it.
pub fn allocate(
    owner: &'static str,
    priority: Priority,
    handler: Handler,
) -> Result<u8, VectorError> {
    let v = with_vectors(|t| t.allocate(owner, priority))?;
    set_handler(v, handler);
    Ok(v)
}

/// Who owns `vector` (None: free).
pub fn vector_owner(vector: u8) -> Option<&'static str> {
    with_vectors(|t| t.owner(vector))
}

/// Installs `handler` for interrupt `vector` (must be >= 32 and allocated).
fn set_handler(vector: u8, handler: Handler) {
    debug_assert!(vector >= 32, "exceptions are not routable");
    HANDLERS[usize::from(vector)].store(handler as usize, Ordering::Release);
}

// Each stub is at most 16 bytes: [push $0] push $vector; jmp trap_common.
// The CPU pushes an error code itself for 8, 10-14, 17, 21, 29 and 30.
core::arch::global_asm!(
    r#"
    .section .text.trap, "ax"
    .balign 16
    .global trap_stubs
trap_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    push $0
    .endif
    push $vec
    jmp trap_common
    .set vec, vec + 1
    .endr

trap_common:
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
    call trap_dispatch
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
"#,
    options(att_syntax)
);

extern "C" {
    static trap_stubs: u8;
}

#[repr(C, align(16))]
struct Idt([u64; 512]);

static IDT: Once<Idt> = Once::new();

fn build_idt() -> Idt {
    // The address of an assembly label; nothing is read through it.
    let base = core::ptr::addr_of!(trap_stubs) as u64;
    let mut idt = Idt([0; 512]);
    for v in 0..256u64 {
        let handler = base + v * 16;
        let ist_slot = match v {
            1 => 0,
            2 => ist::NMI,
            8 => ist::DOUBLE_FAULT,
            18 => ist::MACHINE_CHECK,
            0..=31 => ist::EXCEPTION,
            _ => ist::IRQ,
        };
        // 64-bit interrupt gate: present, DPL 0, type 0xE, selector 0x08.
        let low = (handler & 0xFFFF)
            | (0x08 << 16)
            | (u64::from(ist_slot) << 32)
            | (0x8E << 40)
            | ((handler >> 16) & 0xFFFF) << 48;
        idt.0[(v * 2) as usize] = low;
        idt.0[(v * 2 + 1) as usize] = handler >> 32;
    }
    idt
}

/// Loads the shared IDT on this CPU (built on first use).
pub fn load_idt() {
    let idt = IDT.call_once(build_idt);
    let ptr = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::new(idt as *const Idt as u64),
    };
    // SAFETY: the IDT is 'static and every gate points at a stub above.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
}

const EXCEPTION_NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved 15",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD error",
    "#VE virtualization exception",
    "#CP control protection",
    "reserved 22",
    "reserved 23",
    "reserved 24",
    "reserved 25",
    "reserved 26",
    "reserved 27",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved 31",
];

/// The name of exception `vector` (or "interrupt").
pub fn vector_name(vector: u64) -> &'static str {
    EXCEPTION_NAMES
        .get(vector as usize)
        .copied()
        .unwrap_or("interrupt")
}

/// Prints a full register dump for `frame`, naming the CPU and the vector.
pub fn dump(frame: &TrapFrame) {
    let [cr0, cr2, cr3, cr4] = crate::cpu::read_crs();
    let cpu = crate::lapic::current_cpu_label();
    let f = frame;
    crate::println!(
        "\nquercus: fatal: exception {} ({}) on cpu{} error code {:#x}\n\
         RIP {:#018x} CS {:#06x} RFLAGS {:#018x} RSP {:#018x} SS {:#06x}\n\
         RAX {:#018x} RBX {:#018x} RCX {:#018x} RDX {:#018x}\n\
         RSI {:#018x} RDI {:#018x} RBP {:#018x} R8  {:#018x}\n\
         R9  {:#018x} R10 {:#018x} R11 {:#018x} R12 {:#018x}\n\
         R13 {:#018x} R14 {:#018x} R15 {:#018x}\n\
         CR0 {:#018x} CR2 {:#018x} CR3 {:#018x} CR4 {:#018x}",
        f.vector,
        vector_name(f.vector),
        cpu,
        f.error_code,
        f.rip,
        f.cs,
        f.rflags,
        f.rsp,
        f.ss,
        f.rax,
        f.rbx,
        f.rcx,
        f.rdx,
        f.rsi,
        f.rdi,
        f.rbp,
        f.r8,
        f.r9,
        f.r10,
        f.r11,
        f.r12,
        f.r13,
        f.r14,
        f.r15,
        cr0,
        cr2,
        cr3,
        cr4
    );
}

/// A single-step #DB the host did not ask for (its own TF is clear): a
/// guest's, leaked past VMRUN by the emulated CPU. Counted and cleared.
fn stray_single_step(frame: &TrapFrame) -> bool {
    const RFLAGS_TF: u64 = 1 << 8;
    if crate::cpu::read_dr6() & crate::cpu::DR6_BS == 0 || frame.rflags & RFLAGS_TF != 0 {
        return false;
    }
    crate::cpu::clear_dr6();
    if let Some(c) = COUNTS.get(1) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    true
}

/// The vector an NMI is turned into (0: none; see [`set_nmi_kick_vector`]).
static NMI_KICK_VECTOR: AtomicUsize = AtomicUsize::new(0);

/// Makes every NMI that reaches the host's IDT a kick: the handler sends `vector` to its own
/// CPU, which stays pending while interrupts are off and so ends the next guest run at once
/// (an NMI that arrives between the run loop's last look at its requests and the VM entry is
/// not lost). NMIs are how the hypervisor reaches a real-time VM's pCPU; an NMI that arrives
/// in the guest exits (NMI exiting) and never gets here on VMX; on SVM it is taken here after
/// the #VMEXIT. Without a vector an NMI is counted and ignored.
pub fn set_nmi_kick_vector(vector: u8) {
    NMI_KICK_VECTOR.store(usize::from(vector), Ordering::Relaxed);
}

#[no_mangle]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let vector = frame.vector;
    if vector == 2 {
        // No lock, no log (the NMI may have interrupted either): count, and kick.
        if let Some(c) = COUNTS.get(2) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        // A pCPU whose LAPIC a guest owns must not raise a vector: it would reach the guest.
        if let Some(pc) =
            crate::percpu::current().filter(|p| p.lapic_passthrough.load(Ordering::Relaxed))
        {
            crate::vmx::nmi_kick_passthrough(pc);
            return;
        }
        let kick = NMI_KICK_VECTOR.load(Ordering::Relaxed);
        if let Ok(v @ 32..=255) = u8::try_from(kick) {
            crate::lapic::self_ipi(v);
        }
        return;
    }
    if vector == 13 {
        if let Some(resume) = crate::safe_msr::fixup(frame.rip) {
            frame.rip = resume;
            return;
        }
    }
    if vector == 1 && stray_single_step(frame) {
        return;
    }
    if vector < 32 {
        dump(frame);
        crate::println!("quercus: cpu{} stopped", crate::lapic::current_cpu_label());
        crate::cpu::halt_forever();
    }
    if let Some(c) = COUNTS.get(vector as usize) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    if vector == u64::from(crate::lapic::SPURIOUS_VECTOR) {
        return;
    }
    let pic = u64::from(crate::pic::PIC_VECTOR_BASE);
    if (pic..pic + 16).contains(&vector) {
        // Every 8259 line is masked: only spurious IRQ 7/15 arrive here, and
        // those must not be acknowledged anywhere.
        return;
    }
    let h = HANDLERS
        .get(vector as usize)
        .map_or(0, |h| h.load(Ordering::Acquire));
    if h != 0 {
        // SAFETY: only `set_handler` stores into HANDLERS, always a `Handler`.
        let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(h) };
        handler(frame);
    } else {
        log::warn!("unexpected interrupt vector {vector:#x}");
    }
    crate::lapic::eoi();
}
