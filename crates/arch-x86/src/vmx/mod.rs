//! The Intel VT-x (VMX) backend: VMXON once per pCPU, one VMCS per vCPU with
//! EPT, VPID and unrestricted guest, I/O and MSR bitmaps that intercept
//! everything, and a VMLAUNCH/VMRESUME loop. It mirrors `svm/`: the same
//! [`VcpuBackend`] semantics, the same [`InitialState`].
//!
//! Order of use, all on the pCPU that will run the vCPU: [`PerCpu::install`]
//! (a TSS must be loaded), [`enable_on_this_cpu`], [`VmxVcpu::new`], then
//! [`VcpuBackend::run`] in a loop. A `VmxVcpu` never moves to another pCPU
//! (its VMCS stays active on this one); several may share a pCPU.
//!
//! What the backend does by itself rather than surfacing an exit:
//! - CR0.NE (required by VMX) and CR4.VMXE are host-owned bits: the real
//!   registers hold NE = 1 and VMXE = 1, the read shadows show the guest's own
//!   values. A guest write that changes an owned bit exits (reason 28); MOV to
//!   CR0/CR3/CR4, CLTS and LMSW are completed here with the architectural
//!   checks (#GP(0) injected where the CPU would raise it), long-mode
//!   activation (EFER.LMA and the "IA-32e mode guest" entry control), PAE PDPTE
//!   loading through the EPT, and a TLB flush; RIP then moves past the
//!   instruction and the guest resumes. Only an access to another control
//!   register (CR8) surfaces as [`VmExit::CrAccess`].
//! - An event whose delivery an exit interrupted (IDT-vectoring information)
//!   is queued again for the next entry; [`VcpuBackend::inject`] replaces it.
//! - An NMI that arrives in the guest exits (NMI exiting) and is reported as
//!   [`VmExit::ExternalInterrupt`]; the host's NMI blocking that the exit left
//!   behind is ended with an IRET to self.
//! - External interrupts are not acknowledged on exit: they stay pending in
//!   the LAPIC and the host takes them through its IDT once RFLAGS.IF allows
//!   (the world switch restores the caller's RFLAGS).
//!
//! State VMX does not switch: STAR, LSTAR, CSTAR, SFMASK and KERNEL_GS_BASE
//! (the host does not use SYSCALL or SWAPGS, so the guest's values are loaded
//! into the MSRs before an entry and left there; KERNEL_GS_BASE is read back
//! after every exit because SWAPGS changes it), CR2 (likewise), XCR0, DR0-DR3
//! and DR6 (not virtualized: the guest cannot write XCR0, the host uses no
//! debug registers). The guest's x87/SSE state is switched with FXSAVE/FXRSTOR.
//!
//! Memory: the VMXON region, VMCSs and bitmaps are zeroed 4 KiB heap pages
//! kept for good (identity map: virtual = physical).
//!
//! [`PerCpu::install`]: crate::percpu::PerCpu::install

mod cr;
mod instr;
mod run;
mod setup;
mod state_msr;

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::arch::asm;
use core::cell::Cell;
use core::fmt;

use vcpu::{Event, Gprs, SegmentState, SystemState, VcpuBackend, VmExit};
use x86::vmx::vmcs::{control, guest, ro};

use crate::cpu::{msr, rdmsr, read_crs, wrmsr};
pub use crate::guest_state::InitialState;
use crate::vmx_bits::{
    self, basic, cr0, cr4, interruptibility, intr, reason, CapMsrs, Controls, CrFixed, ExitInfo,
};
pub use instr::VmFail;
use setup::{current_selectors, current_tr};
use state_msr::{msrs, SyscallMsrs};

/// The PAT a vCPU starts with (the architectural reset value).
const GUEST_PAT: u64 = 0x0007_0406_0007_0406;
/// Single-step (BS) in the guest's pending debug exceptions field.
const PENDING_DBG_BS: u64 = 1 << 14;
/// Intercepted exceptions: #MC only.
const EXCEPTION_BITMAP: u64 = 1 << 18;
/// `EntryFailed { raw }` for VMLAUNCH/VMRESUME that did not enter: bit 63
/// plus the VM-instruction error number, or plus bit 62 for VMfailInvalid.
pub const ENTRY_INSTRUCTION_FAILED: u64 = 1 << 63;
pub const ENTRY_NO_CURRENT_VMCS: u64 = 1 << 62;

/// Why VMX cannot be used on this CPU, or why a vCPU cannot be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxError {
    /// CPUID.1:ECX.VMX is clear.
    NotSupported,
    /// IA32_FEATURE_CONTROL is locked with VMX outside SMX off.
    DisabledByFirmware {
        feature_control: u64,
    },
    /// A capability outside the control fields is missing.
    MissingFeature(&'static str),
    /// A required control bit is not allowed.
    Controls(vmx_bits::ControlError),
    /// VMXON failed.
    Vmxon(VmFail),
    /// [`VmxVcpu::new`] before [`enable_on_this_cpu`] on this CPU.
    NotEnabled,
    /// No TSS is loaded (TR = 0): VM exits need a host TR.
    NoHostTss,
    /// VPID 0 belongs to the host.
    ZeroVpid,
    /// The CPU does not accept this EPT pointer.
    BadEptp {
        eptp: u64,
    },
    /// The initial state uses PAE paging and its PDPTEs cannot be loaded.
    BadPdptes {
        cr3: u64,
    },
    Vmclear(VmFail),
    Vmptrld(VmFail),
    Vmwrite {
        field: u32,
        fail: VmFail,
    },
}

impl fmt::Display for VmFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmFail::Invalid => write!(f, "VMfailInvalid"),
            VmFail::Valid(n) => write!(f, "VMfailValid, VM-instruction error {n}"),
        }
    }
}

impl fmt::Display for VmxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmxError::NotSupported => write!(f, "the CPU has no VMX (CPUID.1:ECX bit 5 is clear)"),
            VmxError::DisabledByFirmware { feature_control } => write!(
                f,
                "VMX is locked off by firmware: IA32_FEATURE_CONTROL = {feature_control:#x} \
                 (locked, VMX outside SMX disabled); enable VT-x in the firmware setup"
            ),
            VmxError::MissingFeature(what) => {
                write!(f, "the CPU's VMX lacks a feature Quercus needs: {what}")
            }
            VmxError::Controls(e) => write!(f, "{e}"),
            VmxError::Vmxon(e) => write!(f, "VMXON failed ({e})"),
            VmxError::NotEnabled => write!(
                f,
                "VMX is not enabled on this CPU: call vmx::enable_on_this_cpu first"
            ),
            VmxError::NoHostTss => write!(
                f,
                "no TSS is loaded on this CPU (TR = 0), which VM exits need: install the per-CPU area first"
            ),
            VmxError::ZeroVpid => write!(f, "VPID 0 is reserved for the host"),
            VmxError::BadEptp { eptp } => write!(
                f,
                "EPT pointer {eptp:#x} uses a memory type, walk length or A/D setting this CPU does not support"
            ),
            VmxError::BadPdptes { cr3 } => write!(
                f,
                "the initial state uses PAE paging but the PDPT at CR3 {cr3:#x} is not valid guest RAM"
            ),
            VmxError::Vmclear(e) => write!(f, "VMCLEAR of a new VMCS failed ({e})"),
            VmxError::Vmptrld(e) => write!(f, "VMPTRLD of a new VMCS failed ({e})"),
            VmxError::Vmwrite { field, fail } => {
                write!(f, "VMWRITE of VMCS field {field:#x} failed ({fail})")
            }
        }
    }
}

/// One 4 KiB, 4 KiB-aligned page: VMXON region, VMCS or bitmap.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// A zeroed page, freed on drop; its address is its physical address (the
/// heap is identity-mapped).
fn zeroed_page() -> Box<Page> {
    // SAFETY: all-zero bytes are a valid `Page` (plain bytes).
    unsafe { Box::<Page>::new_zeroed().assume_init() }
}

/// The physical address of `page`.
fn page_pa(page: &Page) -> u64 {
    page as *const Page as u64
}

/// A page of all ones (an I/O or MSR bitmap that intercepts everything).
fn ones_page() -> Box<Page> {
    let mut page = zeroed_page();
    page.0.fill(0xFF);
    page
}

/// A page holding the VMCS revision id, for VMXON or a VMCS.
fn revision_page(revision: u32) -> Box<Page> {
    let mut page = zeroed_page();
    page.0[0..4].copy_from_slice(&revision.to_le_bytes());
    page
}

fn has_vmx() -> bool {
    raw_cpuid::CpuId::new()
        .get_feature_info()
        .is_some_and(|f| f.has_vmx())
}

/// Reads the VMX capability MSRs (TRUE_* variants when they exist).
///
/// # Safety
/// The CPU must report VMX in CPUID.
unsafe fn read_caps() -> CapMsrs {
    // SAFETY: every MSR read here exists when CPUID reports VMX, the TRUE_*
    // ones when IA32_VMX_BASIC bit 55 is set, PROCBASED_CTLS2 when secondary
    // controls may be 1, EPT_VPID_CAP when EPT or VPID may be 1.
    unsafe {
        let basic_msr = rdmsr(msr::IA32_VMX_BASIC);
        let t = basic_msr & basic::TRUE_CTLS != 0;
        let pick = |plain, true_ctl| if t { rdmsr(true_ctl) } else { rdmsr(plain) };
        let primary = pick(
            msr::IA32_VMX_PROCBASED_CTLS,
            msr::IA32_VMX_TRUE_PROCBASED_CTLS,
        );
        let secondary = if primary >> 63 != 0 {
            rdmsr(msr::IA32_VMX_PROCBASED_CTLS2)
        } else {
            0
        };
        let ept_vpid = if (secondary >> 32) & ((1 << 1) | (1 << 5)) != 0 {
            rdmsr(msr::IA32_VMX_EPT_VPID_CAP)
        } else {
            0
        };
        CapMsrs {
            basic: basic_msr,
            pin: pick(msrs::VMX_PINBASED_CTLS, msrs::VMX_TRUE_PINBASED_CTLS),
            primary,
            secondary,
            exit: pick(msrs::VMX_EXIT_CTLS, msrs::VMX_TRUE_EXIT_CTLS),
            entry: pick(msrs::VMX_ENTRY_CTLS, msrs::VMX_TRUE_ENTRY_CTLS),
            misc: rdmsr(msrs::VMX_MISC),
            cr0_fixed0: rdmsr(msrs::VMX_CR0_FIXED0),
            cr0_fixed1: rdmsr(msrs::VMX_CR0_FIXED1),
            cr4_fixed0: rdmsr(msrs::VMX_CR4_FIXED0),
            cr4_fixed1: rdmsr(msrs::VMX_CR4_FIXED1),
            ept_vpid,
        }
    }
}

/// Whether this CPU's VMX has the controls LAPIC passthrough needs (external-interrupt and HLT
/// exiting may be 0, NMI-window exiting exists).
pub fn lapic_passthrough_capable() -> bool {
    if !has_vmx() {
        return false;
    }
    // SAFETY: CPUID reports VMX (checked above).
    let caps = unsafe { read_caps() };
    vmx_bits::compute_controls(&caps).is_ok_and(|c| c.passthrough.is_some())
}

/// Enters VMX operation on the running pCPU: checks the firmware lock and the
/// features Quercus needs, sets the CR0/CR4 fixed bits (CR0.NE, CR4.VMXE) and
/// executes VMXON. Idempotent (CR4.VMXE is only left set after a successful
/// VMXON). Call on every pCPU that runs VMX vCPUs, after the per-CPU area is
/// installed.
pub fn enable_on_this_cpu() -> Result<(), VmxError> {
    if !has_vmx() {
        return Err(VmxError::NotSupported);
    }
    let [cr0_now, _, _, cr4_now] = read_crs();
    if cr4_now & cr4::VMXE != 0 {
        return Ok(());
    }
    // SAFETY: IA32_FEATURE_CONTROL exists on every CPU that reports VMX.
    let fc = unsafe { rdmsr(msr::IA32_FEATURE_CONTROL) };
    if fc & msrs::FEATURE_CONTROL_LOCK == 0 {
        // SAFETY: the MSR is unlocked: enabling VMX outside SMX and locking
        // is what firmware should have done; it changes nothing else.
        unsafe {
            wrmsr(
                msr::IA32_FEATURE_CONTROL,
                fc | msrs::FEATURE_CONTROL_LOCK | msrs::FEATURE_CONTROL_VMX_OUTSIDE_SMX,
            )
        };
    } else if fc & msrs::FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
        return Err(VmxError::DisabledByFirmware {
            feature_control: fc,
        });
    }
    // SAFETY: CPUID reports VMX (checked above).
    let caps = unsafe { read_caps() };
    vmx_bits::compute_controls(&caps).map_err(VmxError::Controls)?;
    vmx_bits::check_features(&caps).map_err(VmxError::MissingFeature)?;
    let fixed = CrFixed::from_caps(&caps);
    let new_cr0 = fixed.host_cr0(cr0_now);
    let new_cr4 = fixed.host_cr4(cr4_now);
    // SAFETY: the fixed-0 bits of CR0 are PE, PG (already set: the host runs
    // paged in long mode) and NE (native x87 error reporting, which the host
    // does not rely on); CR4.VMXE only permits VMXON.
    unsafe {
        if new_cr0 != cr0_now {
            asm!("mov cr0, {}", in(reg) new_cr0, options(nostack, preserves_flags));
        }
        asm!("mov cr4, {}", in(reg) new_cr4, options(nostack, preserves_flags));
    }
    // The VMXON region belongs to this pCPU for as long as it runs.
    let region = page_pa(Box::leak(revision_page(
        (caps.basic & basic::REVISION_MASK) as u32,
    )));
    // SAFETY: CR4.VMXE and the fixed bits are set; the region is a fresh
    // page with the revision id, kept for good (this CPU stays in VMX
    // operation).
    match unsafe { instr::vmxon(region) } {
        Ok(()) => Ok(()),
        Err(e) => {
            // SAFETY: restores the CR4 this function found (VMXE clear).
            unsafe { asm!("mov cr4, {}", in(reg) cr4_now, options(nostack, preserves_flags)) };
            Err(VmxError::Vmxon(e))
        }
    }
}

fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Ends the NMI blocking that a VM exit caused by an NMI leaves behind: an
/// IRETQ to the next instruction with the current CS, SS, RSP and RFLAGS.
fn unblock_nmis() {
    let [cs, ss, ..] = current_selectors();
    // SAFETY: the frame returns to the label right after IRETQ at the same
    // privilege level with the same stack pointer and flags; IRETQ's only
    // other effect is ending NMI blocking. The stack is usable (no
    // `nostack`) and the red zone is disabled for this crate.
    unsafe {
        asm!(
            "mov {tmp}, rsp",
            "push {ss}",
            "push {tmp}",
            "pushfq",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "iretq",
            "2:",
            tmp = out(reg) _,
            ss = in(reg) u64::from(ss),
            cs = in(reg) u64::from(cs),
        )
    };
}

/// One guest vCPU on VMX.
pub struct VmxVcpu {
    /// Physical address of this vCPU's VMCS.
    vmcs: u64,
    /// The VMCS and the bitmaps it points at, freed (after a VMCLEAR) with the vCPU.
    pages: Vec<Box<Page>>,
    gprs: Gprs,
    guest_fx: Box<run::FxArea>,
    host_fx: Box<run::FxArea>,
    /// VMLAUNCH succeeded once: VMRESUME from now on.
    launched: bool,
    host_state_written: bool,
    /// This VMCS was made current again after another one: the guest values
    /// VMX does not switch (SYSCALL MSRs, CR2) must be loaded before entry.
    reload: Cell<bool>,
    /// Invalidate EPT and VPID translations before the next entry.
    flush_pending: bool,
    fixed: CrFixed,
    cr0_mask: u64,
    cr4_mask: u64,
    controls: Controls,
    eptp: u64,
    vpid: u16,
    ept_vpid_cap: u64,
    max_phys_bits: u8,
    linear_bits: u8,
    syscall: SyscallMsrs,
    cr2: u64,
    /// The full exit-reason field of the last exit.
    exit_reason: u32,
    /// Instruction length reported by the last exit, if any.
    exit_len: Option<u8>,
    /// The guest's CR8 (MOV to/from CR8 exit and are completed here).
    cr8: u8,
    /// The MSR bitmap's index in `pages`.
    msr_bitmap: usize,
    /// The guest owns this pCPU's LAPIC ([`VcpuBackend::set_lapic_passthrough`]).
    lapic_passthrough: bool,
}

/// x2APIC MSRs a passthrough guest reads without an exit: everything but the APIC ID, the LDR
/// (both virtual) and the ICR (its destination names physical APIC IDs).
const PASSTHROUGH_READS_EXIT: [u32; 3] = [0x802, 0x80D, 0x830];
/// x2APIC MSRs a passthrough guest writes without an exit: TPR, EOI, SVR, ESR, the LVT timer and
/// error entries, the timer's initial count and divide, SELF IPI; and IA32_TSC_DEADLINE.
const PASSTHROUGH_WRITES: [u32; 10] = [
    0x808, 0x80B, 0x80F, 0x828, 0x832, 0x837, 0x838, 0x83E, 0x83F, 0x6E0,
];
const X2APIC_EOI: u32 = 0x80B;

/// In the NMI handler of a pCPU whose LAPIC a guest owns: makes sure the guest does not run on
/// without the hypervisor seeing the kick. The flag stops the next entry if the run loop has not
/// reached it yet; NMI-window exiting ends the run at once if the entry is already under way
/// (between the flag check and VMRESUME nothing else writes the controls).
pub fn nmi_kick_passthrough(pc: &crate::percpu::PerCpu) {
    pc.nmi_kick
        .store(true, core::sync::atomic::Ordering::SeqCst);
    // SAFETY: VMX operation on this pCPU (passthrough is only set while a VMX vCPU runs here);
    // VMREAD/VMWRITE of the current VMCS's primary controls fail harmlessly if none is current.
    unsafe {
        if let Ok(primary) = instr::vmread(control::PRIMARY_PROCBASED_EXEC_CONTROLS) {
            let _ = instr::vmwrite(
                control::PRIMARY_PROCBASED_EXEC_CONTROLS,
                primary | u64::from(vmx_bits::NMI_WINDOW_EXITING),
            );
        }
    }
}

impl VmxVcpu {
    /// Makes a vCPU tagged `vpid` (non-zero) whose guest-physical memory is
    /// translated by the EPT `eptp` (4-level, write-back, as
    /// `paging::Tables::eptp` makes it), starting in `init`. Call on the pCPU
    /// that runs it, after [`enable_on_this_cpu`]; it leaves the new VMCS
    /// current there.
    ///
    /// The EPT tables must live in identity-mapped frames that stay valid as
    /// long as the vCPU: the CPU walks them, and so does this backend when it
    /// loads PAE PDPTEs for the guest.
    pub fn new(vpid: u16, eptp: u64, init: &InitialState) -> Result<Self, VmxError> {
        if !has_vmx() || read_crs()[3] & cr4::VMXE == 0 {
            return Err(VmxError::NotEnabled);
        }
        if vpid == 0 {
            return Err(VmxError::ZeroVpid);
        }
        if current_tr() == 0 {
            return Err(VmxError::NoHostTss);
        }
        // SAFETY: CPUID reports VMX (checked above).
        let caps = unsafe { read_caps() };
        let controls = vmx_bits::compute_controls(&caps).map_err(VmxError::Controls)?;
        if !vmx_bits::eptp_supported(eptp, caps.ept_vpid) {
            return Err(VmxError::BadEptp { eptp });
        }
        let vmcs_page = revision_page((caps.basic & basic::REVISION_MASK) as u32);
        let vmcs = page_pa(&vmcs_page);
        // SAFETY: this CPU is in VMX operation (CR4.VMXE is only left set by a
        // successful VMXON); the VMCS is a fresh page owned by this vCPU.
        unsafe {
            instr::vmclear(vmcs).map_err(VmxError::Vmclear)?;
            instr::vmptrld(vmcs).map_err(VmxError::Vmptrld)?;
        }
        let address_bits = crate::cpu::cpuid(0x8000_0008, 0)[0];
        let fixed = CrFixed::from_caps(&caps);
        let mut guest_fx = Box::new(run::FxArea::new());
        guest_fx.set_default();
        let mut vcpu = VmxVcpu {
            vmcs,
            pages: alloc::vec![vmcs_page],
            gprs: init.gprs,
            guest_fx,
            host_fx: Box::new(run::FxArea::new()),
            launched: false,
            host_state_written: false,
            reload: Cell::new(true),
            flush_pending: true,
            fixed,
            cr0_mask: fixed.cr0_mask(),
            cr4_mask: fixed.cr4_mask(),
            controls,
            eptp,
            vpid,
            ept_vpid_cap: caps.ept_vpid,
            max_phys_bits: (address_bits & 0xFF).clamp(32, 52) as u8,
            linear_bits: ((address_bits >> 8) & 0xFF).clamp(48, 57) as u8,
            syscall: SyscallMsrs::default(),
            cr2: 0,
            exit_reason: 0,
            exit_len: None,
            cr8: 0,
            msr_bitmap: 0,
            lapic_passthrough: false,
        };
        vcpu.setup_controls(init)?;
        vcpu.setup_guest(init)?;
        Ok(vcpu)
    }

    /// Makes this vCPU's VMCS current on the CPU if another one is.
    fn make_current(&self) {
        // SAFETY: VMX operation: the vCPU was made on this CPU after VMXON
        // and never moves; its VMCS is active on this CPU only.
        unsafe {
            if instr::vmptrst() != self.vmcs {
                let r = instr::vmptrld(self.vmcs);
                debug_assert!(r.is_ok(), "VMPTRLD of a live VMCS: {r:?}");
                self.reload.set(true);
            }
        }
    }

    /// VMREAD of the current VMCS, which must be this vCPU's.
    fn vmread(&self, field: u32) -> u64 {
        // SAFETY: VMX operation (see `make_current`); VMREAD has no side effects.
        let r = unsafe { instr::vmread(field) };
        debug_assert!(r.is_ok(), "VMREAD {field:#x}: {r:?}");
        r.unwrap_or(0)
    }

    /// VMWRITE to the current VMCS, which must be this vCPU's.
    fn vmwrite(&mut self, field: u32, value: u64) {
        // SAFETY: VMX operation; the current VMCS is this vCPU's (callers run
        // `make_current` first) and the fields written after setup are guest
        // state, event injection and exiting controls.
        let r = unsafe { instr::vmwrite(field, value) };
        debug_assert!(r.is_ok(), "VMWRITE {field:#x}: {r:?}");
    }

    /// VMREAD for the trait's accessors.
    fn read(&self, field: u32) -> u64 {
        self.make_current();
        self.vmread(field)
    }

    /// VMWRITE for the trait's mutators.
    fn write(&mut self, field: u32, value: u64) {
        self.make_current();
        self.vmwrite(field, value);
    }

    /// The full exit-reason field of the last exit (statistics, dumps).
    pub fn raw_exit_reason(&self) -> u32 {
        self.exit_reason
    }

    /// The exit qualification of the last exit.
    pub fn exit_qualification(&self) -> u64 {
        self.read(ro::EXIT_QUALIFICATION)
    }

    /// The guest-physical address of the last EPT exit.
    pub fn exit_guest_physical(&self) -> u64 {
        self.read(ro::GUEST_PHYSICAL_ADDR_FULL)
    }

    /// Invalidates the vCPU's EPT and VPID translations before the next entry
    /// (after the caller changed its EPT tables).
    pub fn flush_tlb(&mut self) {
        self.flush_pending = true;
    }

    /// Writes the VM-entry event fields for `event` (current VMCS is ours).
    fn inject_now(&mut self, event: Event) {
        let protected = self.vmread(guest::CR0) & cr0::PE != 0;
        let (info, error) = vmx_bits::entry_event(event, protected);
        if let Some(e) = error {
            self.vmwrite(control::VMENTRY_EXCEPTION_ERR_CODE, e.into());
        }
        self.vmwrite(control::VMENTRY_INTERRUPTION_INFO_FIELD, info.into());
    }

    /// Queues again an event whose delivery the exit interrupted.
    fn requeue_interrupted_event(&mut self) {
        let vectoring = self.vmread(ro::IDT_VECTORING_INFO) as u32;
        let Some(r) = vmx_bits::requeue(vectoring) else {
            return;
        };
        if r.error_code {
            let e = self.vmread(ro::IDT_VECTORING_ERR_CODE);
            self.vmwrite(control::VMENTRY_EXCEPTION_ERR_CODE, e);
        }
        if r.needs_instruction_len {
            let len = self.vmread(ro::VMEXIT_INSTRUCTION_LEN);
            self.vmwrite(control::VMENTRY_INSTRUCTION_LEN, len);
        }
        if intr::kind(r.info) == intr::TYPE_NMI {
            // The NMI is delivered anew; blocking starts with that delivery.
            let state = self.vmread(guest::INTERRUPTIBILITY_STATE);
            self.vmwrite(
                guest::INTERRUPTIBILITY_STATE,
                state & !u64::from(interruptibility::NMI),
            );
        }
        self.vmwrite(control::VMENTRY_INTERRUPTION_INFO_FIELD, r.info.into());
    }

    /// Sets whether RDMSR (`write` false) or WRMSR of `msr` (below 0x2000) exits.
    fn msr_exits(&mut self, msr: u32, write: bool, exits: bool) {
        let Some(page) = self.pages.get_mut(self.msr_bitmap) else {
            return;
        };
        let msr = (msr & 0x1FFF) as usize;
        let byte = if write { 2048 } else { 0 } + msr / 8;
        let bit = 1u8 << (msr % 8);
        if exits {
            page.0[byte] |= bit;
        } else {
            page.0[byte] &= !bit;
        }
    }

    fn set_primary_bits(&mut self, bits: u32, on: bool) {
        let primary = self.read(control::PRIMARY_PROCBASED_EXEC_CONTROLS);
        let value = if on {
            primary | u64::from(bits)
        } else {
            primary & !u64::from(bits)
        };
        if value != primary {
            self.vmwrite(control::PRIMARY_PROCBASED_EXEC_CONTROLS, value);
        }
    }

    /// One entry and the handling of its exit; `None` when the backend
    /// completed the exit itself and the guest should simply resume.
    fn run_once(&mut self) -> Option<VmExit> {
        self.make_current();
        if !self.host_state_written {
            self.write_host_state();
            self.host_state_written = true;
        }
        if self.reload.replace(false) {
            self.load_unswitched_state();
        }
        if self.flush_pending {
            self.flush_all();
            self.flush_pending = false;
        }
        if self.lapic_passthrough {
            let pc = crate::percpu::current();
            if pc.is_some_and(|p| p.nmi_kick.swap(false, core::sync::atomic::Ordering::SeqCst)) {
                // Kicked since the run loop last looked (or during the last exit's handling,
                // which the run loop saw anyway: one extra look, harmless): it looks again.
                self.set_primary_bits(vmx_bits::NMI_WINDOW_EXITING, false);
                return Some(VmExit::ExternalInterrupt);
            }
        }
        // SAFETY: VMX operation with this vCPU's VMCS current; its host state
        // describes this CPU (written above, once: the vCPU never moves), and
        // its controls confine the guest to its EPT and intercept every port,
        // MSR and VMX instruction.
        let entry = unsafe {
            run::enter(
                &mut self.gprs,
                self.launched,
                &mut self.guest_fx,
                &mut self.host_fx,
            )
        };
        // The guest values VMX leaves in the CPU.
        self.cr2 = read_cr2();
        // SAFETY: KERNEL_GS_BASE exists on every x86_64 CPU.
        self.syscall.kernel_gs_base = unsafe { rdmsr(msrs::KERNEL_GS_BASE) };
        self.exit_len = None;
        match entry {
            run::Entry::Exited => {}
            run::Entry::FailInvalid => {
                return Some(VmExit::EntryFailed {
                    raw: ENTRY_INSTRUCTION_FAILED | ENTRY_NO_CURRENT_VMCS,
                })
            }
            run::Entry::FailValid => {
                let error = self.vmread(ro::VM_INSTRUCTION_ERROR);
                return Some(VmExit::EntryFailed {
                    raw: ENTRY_INSTRUCTION_FAILED | error,
                });
            }
        }
        let exit_reason = self.vmread(ro::EXIT_REASON) as u32;
        self.exit_reason = exit_reason;
        if exit_reason & reason::ENTRY_FAILURE != 0 {
            return Some(VmExit::EntryFailed {
                raw: exit_reason.into(),
            });
        }
        self.launched = true;
        // An exit clears the injection's valid bit; anything interrupted
        // mid-delivery is queued again.
        self.vmwrite(control::VMENTRY_INTERRUPTION_INFO_FIELD, 0);
        self.requeue_interrupted_event();
        let basic_reason = exit_reason & 0xFFFF;
        if vmx_bits::reports_instruction_len(basic_reason) {
            self.exit_len = u8::try_from(self.vmread(ro::VMEXIT_INSTRUCTION_LEN))
                .ok()
                .filter(|l| (1..=15).contains(l));
        }
        let mut info = ExitInfo {
            reason: exit_reason,
            ..ExitInfo::default()
        };
        match basic_reason {
            reason::CR_ACCESS => {
                let qualification = self.vmread(ro::EXIT_QUALIFICATION);
                return self.complete_cr_access(qualification);
            }
            reason::EXCEPTION_NMI => {
                info.interruption = self.vmread(ro::VMEXIT_INTERRUPTION_INFO) as u32;
                if info.interruption & intr::ERROR_CODE != 0 {
                    info.interruption_error = self.vmread(ro::VMEXIT_INTERRUPTION_ERR_CODE) as u32;
                }
                if vmx_bits::is_nmi(info.interruption) {
                    unblock_nmis();
                }
            }
            reason::IO => info.qualification = self.vmread(ro::EXIT_QUALIFICATION),
            reason::EPT_VIOLATION => {
                info.qualification = self.vmread(ro::EXIT_QUALIFICATION);
                info.guest_physical = self.vmread(ro::GUEST_PHYSICAL_ADDR_FULL);
            }
            reason::INTERRUPT_WINDOW => {
                self.set_primary_bits(vmx_bits::INTERRUPT_WINDOW_EXITING, false)
            }
            reason::NMI_WINDOW => self.set_primary_bits(vmx_bits::NMI_WINDOW_EXITING, false),
            _ => {}
        }
        Some(vmx_bits::decode_exit(&info))
    }
}

impl VcpuBackend for VmxVcpu {
    fn run(&mut self) -> VmExit {
        loop {
            if let Some(exit) = self.run_once() {
                return exit;
            }
        }
    }

    fn gprs(&self) -> &Gprs {
        &self.gprs
    }

    fn gprs_mut(&mut self) -> &mut Gprs {
        &mut self.gprs
    }

    fn rip(&self) -> u64 {
        self.read(guest::RIP)
    }

    fn set_rip(&mut self, rip: u64) {
        self.write(guest::RIP, rip);
        // Moving past an instruction ends an interrupt shadow (STI; HLT).
        self.clear_interrupt_shadow();
    }

    fn rsp(&self) -> u64 {
        self.read(guest::RSP)
    }

    fn break_next_entry(&mut self) -> bool {
        // SDM vol. 3 27.3.1.5: an activity state other than 0-3 fails the
        // guest-state checks: a VM-entry failure (exit reason 33, bit 31).
        self.write(guest::ACTIVITY_STATE, 0x7F);
        true
    }

    fn rflags(&self) -> u64 {
        self.read(guest::RFLAGS)
    }

    fn set_rflags(&mut self, rflags: u64) {
        self.write(guest::RFLAGS, rflags | 0x2);
    }

    fn system_state(&self) -> SystemState {
        self.make_current();
        let modes = self.guest_modes();
        let ss_access = self.vmread(guest::SS_ACCESS_RIGHTS) as u32;
        SystemState {
            cr0: modes.cr0,
            cr3: modes.cr3,
            cr4: modes.cr4,
            efer: modes.efer,
            cpl: ((ss_access >> 5) & 3) as u8,
            cs: SegmentState {
                selector: self.vmread(guest::CS_SELECTOR) as u16,
                base: self.vmread(guest::CS_BASE),
                limit: self.vmread(guest::CS_LIMIT) as u32,
                attrib: vmx_bits::packed_attrib(self.vmread(guest::CS_ACCESS_RIGHTS) as u32),
            },
        }
    }

    fn inject(&mut self, event: Event) {
        self.make_current();
        self.inject_now(event);
    }

    fn exit_instruction_len(&self) -> Option<u8> {
        self.exit_len
    }

    fn read_state_msr(&self, msr: u32) -> Option<u64> {
        self.vmcs_msr(msr)
    }

    fn write_state_msr(&mut self, msr: u32, value: u64) -> bool {
        self.set_vmcs_msr(msr, value)
    }

    fn guest_tsc(&self, host_tsc: u64) -> u64 {
        // "Use TSC offsetting" is off: the guest reads the host's TSC.
        host_tsc
    }

    fn interruptible(&self) -> bool {
        self.make_current();
        self.vmread(guest::RFLAGS) & (1 << 9) != 0
            && self.vmread(guest::INTERRUPTIBILITY_STATE)
                & u64::from(interruptibility::STI | interruptibility::MOV_SS)
                == 0
            && self.vmread(control::VMENTRY_INTERRUPTION_INFO_FIELD) & u64::from(intr::VALID) == 0
    }

    fn request_interrupt_window(&mut self, on: bool) {
        self.set_primary_bits(vmx_bits::INTERRUPT_WINDOW_EXITING, on);
    }

    fn request_nmi_window(&mut self, on: bool) {
        if self.controls.nmi_window {
            self.set_primary_bits(vmx_bits::NMI_WINDOW_EXITING, on);
        }
    }

    fn nmi_blocked(&self) -> bool {
        self.make_current();
        self.vmread(guest::INTERRUPTIBILITY_STATE) & u64::from(interruptibility::NMI) != 0
    }

    fn single_step_trap(&mut self) {
        // A pending single-step trap (BS) in the guest's pending debug
        // exceptions: the CPU delivers the #DB, DR6 included, after entry.
        self.make_current();
        let pending = self.vmread(guest::PENDING_DBG_EXCEPTIONS);
        self.vmwrite(guest::PENDING_DBG_EXCEPTIONS, pending | PENDING_DBG_BS);
    }

    fn hw_cr8(&self) -> Option<u8> {
        Some(self.cr8)
    }

    fn set_hw_cr8(&mut self, cr8: u8, _blocked_class: Option<u8>) {
        // Every MOV to CR8 exits: nothing to arm for a lowered TPR.
        self.cr8 = cr8 & 0xF;
    }

    fn nmi_injectable(&self) -> bool {
        if !self.controls.virtual_nmis() {
            return false;
        }
        self.make_current();
        let blocking = interruptibility::STI | interruptibility::MOV_SS | interruptibility::NMI;
        self.vmread(guest::INTERRUPTIBILITY_STATE) & u64::from(blocking) == 0
            && self.vmread(control::VMENTRY_INTERRUPTION_INFO_FIELD) & u64::from(intr::VALID) == 0
    }

    fn flush_slat(&mut self) {
        self.flush_tlb();
    }

    fn set_lapic_passthrough(&mut self) -> bool {
        let Some((pin, primary)) = self.controls.passthrough else {
            return false;
        };
        if self.lapic_passthrough {
            return true;
        }
        for msr in 0x800..=0x8FF {
            let read_exits = PASSTHROUGH_READS_EXIT.contains(&msr);
            self.msr_exits(msr, false, read_exits);
        }
        self.msr_exits(0x6E0, false, false);
        for msr in PASSTHROUGH_WRITES {
            self.msr_exits(msr, true, false);
        }
        self.make_current();
        let window = self.vmread(control::PRIMARY_PROCBASED_EXEC_CONTROLS) as u32
            & (vmx_bits::NMI_WINDOW_EXITING | vmx_bits::INTERRUPT_WINDOW_EXITING);
        self.vmwrite(control::PINBASED_EXEC_CONTROLS, pin.into());
        // Interrupt-window exiting is of no use any more: the guest takes its interrupts.
        let window = window & !vmx_bits::INTERRUPT_WINDOW_EXITING;
        self.vmwrite(
            control::PRIMARY_PROCBASED_EXEC_CONTROLS,
            (primary | window).into(),
        );
        self.lapic_passthrough = true;
        true
    }

    fn intercept_lapic_eoi(&mut self, on: bool) {
        if self.lapic_passthrough {
            self.msr_exits(X2APIC_EOI, true, on);
        }
    }
}

impl Drop for VmxVcpu {
    fn drop(&mut self) {
        // The CPU may hold parts of the VMCS in its own storage until VMCLEAR
        // writes them back: only then may the page be freed.
        // SAFETY: a vCPU is dropped on the pCPU that made it, still in VMX
        // operation; `vmcs` is this vCPU's VMCS, a page it owns until now.
        let r = unsafe { instr::vmclear(self.vmcs) };
        debug_assert!(r.is_ok(), "VMCLEAR on drop: {r:?}");
    }
}
