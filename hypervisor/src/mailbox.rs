//! Requests one pCPU runs for another: the shell on pCPU 0 asks a pCPU for
//! CPUID/MSR values or a paused vCPU's registers. The asker posts a request,
//! kicks the target with an IPI and waits (bounded) for the reply; the target
//! answers from its idle loop, its vCPU's exit path or its pause loop.

use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;
use vcpu::{Gprs, SystemState, VcpuBackend};

use crate::boot::MAX_CPUS;

/// What a pCPU is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Cpuid {
        leaf: u32,
        subleaf: u32,
    },
    Rdmsr(u32),
    Wrmsr(u32, u64),
    /// The registers of the vCPU this pCPU runs (answered only while it is
    /// outside the guest: paused, or between exits).
    Regs,
}

/// A vCPU's registers at a moment it was not running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub gprs: Gprs,
    pub rsp: u64,
    pub rip: u64,
    pub rflags: u64,
    pub system: SystemState,
}

/// The answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    Cpuid([u32; 4]),
    /// `None`: the MSR raised #GP.
    Msr(Option<u64>),
    /// false: the WRMSR raised #GP.
    Wrote(bool),
    /// `None`: no vCPU on this pCPU.
    Regs(Option<Regs>),
}

struct Slot {
    pending: AtomicBool,
    request: Mutex<Option<Request>>,
    reply: Mutex<Option<Reply>>,
}

static SLOTS: [Slot; MAX_CPUS] = [const {
    Slot {
        pending: AtomicBool::new(false),
        request: Mutex::new(None),
        reply: Mutex::new(None),
    }
}; MAX_CPUS];

/// Serializes askers (only the shell asks today).
static ASKER: Mutex<()> = Mutex::new(());

/// Runs `request` on `pcpu` and returns the reply, or `None` if the pCPU did
/// not answer within `timeout_us` (or does not exist).
pub fn call(pcpu: usize, request: Request, timeout_us: u64, here: usize) -> Option<Reply> {
    let slot = SLOTS.get(pcpu)?;
    let _one = ASKER.lock();
    *slot.reply.lock() = None;
    *slot.request.lock() = Some(request);
    slot.pending.store(true, Ordering::Release);
    if pcpu == here {
        service(pcpu, None);
    } else {
        crate::vmm::kick(pcpu);
    }
    let deadline = arch_x86::time::deadline_after_us(timeout_us);
    loop {
        if let Some(reply) = slot.reply.lock().take() {
            return Some(reply);
        }
        if arch_x86::time::passed(deadline) {
            // Withdraw the request if it was not taken yet.
            slot.pending.store(false, Ordering::Release);
            *slot.request.lock() = None;
            return None;
        }
        core::hint::spin_loop();
    }
}

/// Whether a request waits for `pcpu`.
pub fn pending(pcpu: usize) -> bool {
    SLOTS
        .get(pcpu)
        .is_some_and(|s| s.pending.load(Ordering::Acquire))
}

/// Answers a pending request for `pcpu` (call on that pCPU). `vcpu` is the
/// vCPU it runs, when it is outside the guest.
pub fn service(pcpu: usize, vcpu: Option<&dyn VcpuBackend>) {
    let Some(slot) = SLOTS.get(pcpu) else { return };
    if !slot.pending.swap(false, Ordering::AcqRel) {
        return;
    }
    let Some(request) = slot.request.lock().take() else {
        return;
    };
    let reply = match request {
        Request::Cpuid { leaf, subleaf } => Reply::Cpuid(arch_x86::cpu::cpuid(leaf, subleaf)),
        Request::Rdmsr(msr) => Reply::Msr(arch_x86::safe_msr::rdmsr(msr)),
        Request::Wrmsr(msr, value) => Reply::Wrote(arch_x86::safe_msr::wrmsr(msr, value)),
        Request::Regs => Reply::Regs(vcpu.map(|v| Regs {
            gprs: *v.gprs(),
            rsp: v.rsp(),
            rip: v.rip(),
            rflags: v.rflags(),
            system: v.system_state(),
        })),
    };
    *slot.reply.lock() = Some(reply);
}
