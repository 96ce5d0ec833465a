//! The Quercus hypercall ABI: VMCALL on Intel, VMMCALL on AMD; RAX = number,
//! RDI/RSI/RDX = arguments, RAX = signed result (negative errno on error).

use core::sync::atomic::{AtomicU8, Ordering};

pub const VERSION: u64 = 0;
pub const VM_ID: u64 = 1;
pub const CONSOLE_WRITE: u64 = 2;
pub const POWER_OFF: u64 = 3;

/// The API version this guest expects (1.0).
pub const API_1_0: i64 = 0x0001_0000;
/// Console write limit.
pub const CONSOLE_MAX: u64 = 4096;

pub const EFAULT: i64 = -14;
pub const EINVAL: i64 = -22;
pub const ENOSYS: i64 = -38;

/// Which instruction makes a hypercall on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insn {
    Vmcall,
    Vmmcall,
}

impl Insn {
    pub fn bytes(self) -> [u8; 3] {
        match self {
            Insn::Vmcall => [0x0F, 0x01, 0xC1],
            Insn::Vmmcall => [0x0F, 0x01, 0xD9],
        }
    }
}

/// 0: no hypercall interface; 1: VMCALL; 2: VMMCALL.
static INSN: AtomicU8 = AtomicU8::new(0);

/// Enables hypercalls with `insn` (once Quercus has been detected).
pub fn enable(insn: Insn) {
    INSN.store(
        match insn {
            Insn::Vmcall => 1,
            Insn::Vmmcall => 2,
        },
        Ordering::SeqCst,
    );
}

/// The hypercall instruction, if a Quercus hypercall interface was found.
pub fn insn() -> Option<Insn> {
    match INSN.load(Ordering::SeqCst) {
        1 => Some(Insn::Vmcall),
        2 => Some(Insn::Vmmcall),
        _ => None,
    }
}

/// Makes hypercall `nr`; `None` when there is no hypercall interface.
/// Only RAX is assumed to carry a result; RDI/RSI/RDX are treated as
/// clobbered, every other register must be preserved by the hypervisor.
pub fn call(nr: u64, a0: u64, a1: u64, a2: u64) -> Option<i64> {
    let insn = insn()?;
    let ret: u64;
    match insn {
        // SAFETY: under Quercus (detected by CPUID) VMCALL traps to the
        // hypervisor, which only reads guest memory the arguments name;
        // a fault would be caught by the test guard.
        Insn::Vmcall => unsafe {
            core::arch::asm!("vmcall", inout("rax") nr => ret, inout("rdi") a0 => _,
                inout("rsi") a1 => _, inout("rdx") a2 => _, options(nostack));
        },
        // SAFETY: as above, with VMMCALL on AMD.
        Insn::Vmmcall => unsafe {
            core::arch::asm!("vmmcall", inout("rax") nr => ret, inout("rdi") a0 => _,
                inout("rsi") a1 => _, inout("rdx") a2 => _, options(nostack));
        },
    }
    Some(ret as i64)
}
