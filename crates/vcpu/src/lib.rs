//! The one backend interface of Quercus: everything above the arch tier sees
//! a vCPU through [`VcpuBackend`] and its exits as [`VmExit`]; nothing above
//! it names VMX or SVM.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "test-utils"))]
extern crate alloc;

mod exit;
mod fault;
mod initial;
mod layout;
mod memory;
mod regs;

pub use exit::{ExitKind, IoAccess, MsrAccess, NptFault, VmExit, EXIT_KINDS};
pub use fault::{exception_class, has_error_code, nested_exception, ExceptionClass, Nested};
pub use initial::{InitialState, FLAT_CS, FLAT_DS};
pub use layout::{
    GuestPhysAddr, RamLayout, RamRange, HIGH_RAM_BASE, MAX_RAM_RANGES, PCI_HOLE_START,
};
pub use memory::{check_range, GuestMemError, GuestMemory};
#[cfg(any(test, feature = "test-utils"))]
pub use memory::{CountingMemory, VecMemory};
pub use regs::{Gprs, Reg, SegmentState, SystemState};

/// A virtual LAPIC's guest-visible state, handed to the physical LAPIC when a real-time guest's
/// LAPIC is passed through (it switched to x2APIC mode): the physical one starts where the
/// virtual one was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LapicHandover {
    /// Spurious-interrupt vector register (software enable in bit 8).
    pub svr: u32,
    pub tpr: u32,
    /// LVT timer (vector, mask, mode) and LVT error.
    pub lvt_timer: u32,
    pub lvt_error: u32,
    pub timer_divide: u32,
    /// The one-shot or periodic count to start (0: none).
    pub timer_initial: u32,
    /// The armed TSC deadline in host TSC ticks (0: none).
    pub tsc_deadline: u64,
    /// Interrupts requested and not yet delivered (IRR), a bit per vector.
    pub pending: [u32; 8],
}

impl LapicHandover {
    /// The pending vectors, lowest first.
    pub fn pending_vectors(&self) -> impl Iterator<Item = u8> + '_ {
        (16..=255u8).filter(|v| self.pending[usize::from(v / 32)] & (1 << (v % 32)) != 0)
    }
}

/// An event to deliver to the guest on the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A hardware exception, with its error code where the vector has one.
    Exception {
        vector: u8,
        error_code: Option<u32>,
    },
    /// An external (maskable) interrupt.
    Interrupt {
        vector: u8,
    },
    Nmi,
}

/// #GP, the answer to most bad guest requests.
pub const GP: Event = Event::Exception {
    vector: 13,
    error_code: Some(0),
};
/// #UD.
pub const UD: Event = Event::Exception {
    vector: 6,
    error_code: None,
};

/// What every backend (VMX, SVM) offers for one vCPU.
pub trait VcpuBackend {
    /// Enters the guest and returns at the next exit.
    fn run(&mut self) -> VmExit;
    /// The guest's general-purpose registers (RSP excluded).
    fn gprs(&self) -> &Gprs;
    /// The guest's general-purpose registers, writable.
    fn gprs_mut(&mut self) -> &mut Gprs;
    /// Guest RIP.
    fn rip(&self) -> u64;
    /// Sets guest RIP.
    fn set_rip(&mut self, rip: u64);
    /// Guest RSP.
    fn rsp(&self) -> u64;
    /// Guest RFLAGS.
    fn rflags(&self) -> u64;
    /// Sets guest RFLAGS (bit 1 is forced on).
    fn set_rflags(&mut self, rflags: u64);
    /// Control registers, EFER and the current privilege level.
    fn system_state(&self) -> SystemState;
    /// Queues an event for the next entry (replaces an earlier one).
    fn inject(&mut self, event: Event);
    /// The length of the instruction that caused the current exit when the
    /// hardware reports it (VMX always, SVM with next-RIP save); `None` means
    /// the caller must decode the instruction.
    fn exit_instruction_len(&self) -> Option<u8>;
    /// Reads an MSR whose guest value the hardware switches on entry and exit
    /// (EFER, PAT, FS/GS base, SYSCALL/SYSENTER MSRs); `None` for any other.
    fn read_state_msr(&self, msr: u32) -> Option<u64>;
    /// Writes such an MSR (the caller validated the value); false for any other.
    fn write_state_msr(&mut self, msr: u32, value: u64) -> bool;
    /// The guest's TSC: the host TSC plus the vCPU's offset.
    fn guest_tsc(&self, host_tsc: u64) -> u64;
    /// Whether a maskable interrupt can be injected now: RFLAGS.IF set, no
    /// STI/MOV-SS shadow, no event already queued.
    fn interruptible(&self) -> bool;
    /// Asks for a [`VmExit::InterruptWindow`] as soon as the guest can take a
    /// maskable interrupt (or stops asking).
    fn request_interrupt_window(&mut self, on: bool);
    /// Whether an NMI can be injected now: no event already queued, no
    /// STI/MOV-SS shadow, and the guest not inside an NMI handler (NMIs stay
    /// blocked from an NMI's delivery until the guest's next IRET). A blocked
    /// NMI waits for a later entry.
    fn nmi_injectable(&self) -> bool;
    /// Asks for a [`VmExit::InterruptWindow`] as soon as the guest can take an
    /// NMI, where the hardware offers that (VMX's NMI-window exiting); without
    /// it the NMI waits for the next exit.
    fn request_nmi_window(&mut self, _on: bool) {}
    /// Whether the guest is inside an NMI handler (NMIs blocked until its
    /// IRET): while it is, one more NMI can be latched, not two.
    fn nmi_blocked(&self) -> bool {
        false
    }
    /// Raises the single-step trap before the next guest instruction: a #DB
    /// with DR6.BS set, as the CPU does after an instruction that ran with
    /// RFLAGS.TF (the caller completed such an instruction for the guest).
    fn single_step_trap(&mut self) {
        self.inject(Event::Exception {
            vector: 1,
            error_code: None,
        });
    }
    /// The guest's CR8 (TPR bits 7:4) where the hardware keeps it without an
    /// exit on each MOV to CR8 (SVM's V_TPR); `None` where CR8 accesses exit.
    fn hw_cr8(&self) -> Option<u8> {
        None
    }
    /// Before an entry: the vLAPIC's CR8, and the priority class of an
    /// interrupt only the TPR holds back, so that the guest lowering CR8
    /// below it exits ([`VmExit::InterruptWindow`]).
    fn set_hw_cr8(&mut self, _cr8: u8, _blocked_class: Option<u8>) {}
    /// Fault injection (a test hook, never reached by a guest): corrupts the
    /// guest state so that the next entry fails ([`VmExit::EntryFailed`]).
    /// False where the backend cannot.
    fn break_next_entry(&mut self) -> bool {
        false
    }
    /// The second-level tables lost a translation (a passed-through BAR moved): whatever this
    /// vCPU's TLBs cached of them is dropped before the next entry.
    fn flush_slat(&mut self) {}
    /// LAPIC passthrough for a guest in x2APIC mode: its timer, TPR, EOI and SELF IPI MSRs and
    /// IA32_TSC_DEADLINE stop exiting, external interrupts go straight to it, HLT no longer
    /// exits; ICR writes, APIC ID/LDR reads, IA32_APIC_BASE and the LINT/thermal/perf LVT
    /// writes still exit. False where the backend cannot (nothing changed).
    fn set_lapic_passthrough(&mut self) -> bool {
        false
    }
    /// With LAPIC passthrough: makes x2APIC EOI writes exit (`true`, an emulated
    /// level-triggered interrupt is in service and its EOI must reach the virtual IOAPIC) or
    /// pass (`false`).
    fn intercept_lapic_eoi(&mut self, _on: bool) {}
}
