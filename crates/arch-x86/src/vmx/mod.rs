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

mod instr;
mod run;

extern crate alloc;

use alloc::boxed::Box;
use core::arch::asm;
use core::cell::Cell;
use core::fmt;

use vcpu::{Event, Gprs, Reg, SegmentState, SystemState, VcpuBackend, VmExit, GP};
use x86::vmx::vmcs::{control, guest, host, ro};

use crate::cpu::{msr, rdmsr, read_crs, wrmsr};
pub use crate::guest_state::InitialState;
use crate::vmx_bits::{
    self, basic, cr0, cr4, efer, ept_cap, interruptibility, intr, reason, CapMsrs, Controls,
    CrAccess, CrFixed, CrUpdate, ExitInfo, GuestModes,
};
pub use instr::VmFail;

/// MSRs this backend reads (beyond `cpu::msr`).
mod msrs {
    pub const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
    pub const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;
    pub const VMX_PINBASED_CTLS: u32 = 0x481;
    pub const VMX_EXIT_CTLS: u32 = 0x483;
    pub const VMX_ENTRY_CTLS: u32 = 0x484;
    pub const VMX_MISC: u32 = 0x485;
    pub const VMX_CR0_FIXED0: u32 = 0x486;
    pub const VMX_CR0_FIXED1: u32 = 0x487;
    pub const VMX_CR4_FIXED0: u32 = 0x488;
    pub const VMX_CR4_FIXED1: u32 = 0x489;
    pub const VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
    pub const VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
    pub const VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
    pub const SYSENTER_CS: u32 = 0x174;
    pub const SYSENTER_ESP: u32 = 0x175;
    pub const SYSENTER_EIP: u32 = 0x176;
    pub const PAT: u32 = 0x277;
    pub const STAR: u32 = 0xC000_0081;
    pub const LSTAR: u32 = 0xC000_0082;
    pub const CSTAR: u32 = 0xC000_0083;
    pub const SFMASK: u32 = 0xC000_0084;
    pub const FS_BASE: u32 = 0xC000_0100;
    pub const GS_BASE: u32 = 0xC000_0101;
    pub const KERNEL_GS_BASE: u32 = 0xC000_0102;
}

/// The PAT a vCPU starts with (the architectural reset value).
const GUEST_PAT: u64 = 0x0007_0406_0007_0406;
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
    DisabledByFirmware { feature_control: u64 },
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
    BadEptp { eptp: u64 },
    /// The initial state uses PAE paging and its PDPTEs cannot be loaded.
    BadPdptes { cr3: u64 },
    Vmclear(VmFail),
    Vmptrld(VmFail),
    Vmwrite { field: u32, fail: VmFail },
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

/// A zeroed page that lives for good; its address is its physical address.
fn leak_page() -> &'static mut Page {
    Box::leak(Box::new(Page([0; 4096])))
}

/// A page of all ones (an I/O or MSR bitmap that intercepts everything).
fn leak_ones_page() -> u64 {
    let page = leak_page();
    page.0.fill(0xFF);
    page as *mut Page as u64
}

/// A page holding the VMCS revision id, for VMXON or a VMCS.
fn leak_revision_page(revision: u32) -> u64 {
    let page = leak_page();
    page.0[0..4].copy_from_slice(&revision.to_le_bytes());
    page as *mut Page as u64
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
        let primary = pick(msr::IA32_VMX_PROCBASED_CTLS, msr::IA32_VMX_TRUE_PROCBASED_CTLS);
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
    vmx_bits::check_features(&caps).map_err(VmxError::MissingFeature)?;
    vmx_bits::compute_controls(&caps).map_err(VmxError::Controls)?;
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
    let region = leak_revision_page((caps.basic & basic::REVISION_MASK) as u32);
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

/// The loaded task register.
fn current_tr() -> u16 {
    let tr: u16;
    // SAFETY: STR only reads the task register.
    unsafe { asm!("str {0:x}", out(reg) tr, options(nomem, nostack, preserves_flags)) };
    tr
}

/// The running CPU's segment selectors CS, SS, DS, ES, FS, GS.
fn current_selectors() -> [u16; 6] {
    let (cs, ss, ds, es, fs, gs): (u16, u16, u16, u16, u16, u16);
    // SAFETY: reading segment registers has no side effects.
    unsafe {
        asm!(
            "mov {0:x}, cs",
            "mov {1:x}, ss",
            "mov {2:x}, ds",
            "mov {3:x}, es",
            "mov {4:x}, fs",
            "mov {5:x}, gs",
            out(reg) cs, out(reg) ss, out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs,
            options(nomem, nostack, preserves_flags)
        )
    };
    [cs, ss, ds, es, fs, gs]
}

/// The base of the TSS that `tr` selects in the loaded GDT.
fn host_tr_base(tr: u16) -> u64 {
    let gdt = x86_64::instructions::tables::sgdt();
    let index = u64::from(tr & !7);
    if tr & 4 != 0 || index + 15 > u64::from(gdt.limit) {
        return 0;
    }
    let at = gdt.base.as_u64() + index;
    // SAFETY: the loaded GDT is identity-mapped memory (the per-CPU area's
    // 'static table) and the 16-byte descriptor lies within its limit.
    let (low, high) = unsafe {
        (
            (at as *const u64).read_volatile(),
            ((at + 8) as *const u64).read_volatile(),
        )
    };
    vmx_bits::tss_base(low, high)
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

/// The guest's SYSCALL-family MSRs, which VMX does not switch.
#[derive(Clone, Copy, Debug, Default)]
struct SyscallMsrs {
    star: u64,
    lstar: u64,
    cstar: u64,
    sfmask: u64,
    kernel_gs_base: u64,
}

/// Registers in the order of the CR-access qualification's GPR field.
const GPR_ORDER: [Reg; 16] = [
    Reg::Rax,
    Reg::Rcx,
    Reg::Rdx,
    Reg::Rbx,
    Reg::Rsp,
    Reg::Rbp,
    Reg::Rsi,
    Reg::Rdi,
    Reg::R8,
    Reg::R9,
    Reg::R10,
    Reg::R11,
    Reg::R12,
    Reg::R13,
    Reg::R14,
    Reg::R15,
];

/// The guest segment-register fields, in VMCS encoding order.
struct SegFields {
    selector: u32,
    base: u32,
    limit: u32,
    access: u32,
}

const SEG_ES: SegFields = SegFields {
    selector: guest::ES_SELECTOR,
    base: guest::ES_BASE,
    limit: guest::ES_LIMIT,
    access: guest::ES_ACCESS_RIGHTS,
};
const SEG_CS: SegFields = SegFields {
    selector: guest::CS_SELECTOR,
    base: guest::CS_BASE,
    limit: guest::CS_LIMIT,
    access: guest::CS_ACCESS_RIGHTS,
};
const SEG_SS: SegFields = SegFields {
    selector: guest::SS_SELECTOR,
    base: guest::SS_BASE,
    limit: guest::SS_LIMIT,
    access: guest::SS_ACCESS_RIGHTS,
};
const SEG_DS: SegFields = SegFields {
    selector: guest::DS_SELECTOR,
    base: guest::DS_BASE,
    limit: guest::DS_LIMIT,
    access: guest::DS_ACCESS_RIGHTS,
};
const SEG_FS: SegFields = SegFields {
    selector: guest::FS_SELECTOR,
    base: guest::FS_BASE,
    limit: guest::FS_LIMIT,
    access: guest::FS_ACCESS_RIGHTS,
};
const SEG_GS: SegFields = SegFields {
    selector: guest::GS_SELECTOR,
    base: guest::GS_BASE,
    limit: guest::GS_LIMIT,
    access: guest::GS_ACCESS_RIGHTS,
};
const SEG_LDTR: SegFields = SegFields {
    selector: guest::LDTR_SELECTOR,
    base: guest::LDTR_BASE,
    limit: guest::LDTR_LIMIT,
    access: guest::LDTR_ACCESS_RIGHTS,
};
const SEG_TR: SegFields = SegFields {
    selector: guest::TR_SELECTOR,
    base: guest::TR_BASE,
    limit: guest::TR_LIMIT,
    access: guest::TR_ACCESS_RIGHTS,
};

/// One guest vCPU on VMX.
pub struct VmxVcpu {
    /// Physical address of this vCPU's VMCS.
    vmcs: u64,
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
        let vmcs = leak_revision_page((caps.basic & basic::REVISION_MASK) as u32);
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
        };
        vcpu.setup_controls(init)?;
        vcpu.setup_guest(init)?;
        Ok(vcpu)
    }

    /// VMWRITE during setup, with the failure reported.
    fn try_write(&mut self, field: u32, value: u64) -> Result<(), VmxError> {
        // SAFETY: VMX operation; this vCPU's VMCS is current (made so by
        // `new` just before setup); the values written by setup are this
        // vCPU's own bitmaps, EPT pointer and guest state.
        unsafe { instr::vmwrite(field, value) }.map_err(|fail| VmxError::Vmwrite { field, fail })
    }

    fn setup_controls(&mut self, init: &InitialState) -> Result<(), VmxError> {
        let c = self.controls;
        let io_a = leak_ones_page();
        let io_b = leak_ones_page();
        let msr_bitmap = leak_ones_page();
        let ia32e = if init.efer & efer::LMA != 0 {
            vmx_bits::ENTRY_IA32E_GUEST
        } else {
            0
        };
        let fields: [(u32, u64); 23] = [
            (control::PINBASED_EXEC_CONTROLS, c.pin.into()),
            (control::PRIMARY_PROCBASED_EXEC_CONTROLS, c.primary.into()),
            (control::SECONDARY_PROCBASED_EXEC_CONTROLS, c.secondary.into()),
            (control::VMEXIT_CONTROLS, c.exit.into()),
            (control::VMENTRY_CONTROLS, (c.entry | ia32e).into()),
            (control::EXCEPTION_BITMAP, EXCEPTION_BITMAP),
            (control::PAGE_FAULT_ERR_CODE_MASK, 0),
            (control::PAGE_FAULT_ERR_CODE_MATCH, 0),
            (control::CR3_TARGET_COUNT, 0),
            (control::VMEXIT_MSR_STORE_COUNT, 0),
            (control::VMEXIT_MSR_LOAD_COUNT, 0),
            (control::VMENTRY_MSR_LOAD_COUNT, 0),
            (control::VMENTRY_INTERRUPTION_INFO_FIELD, 0),
            (control::VMENTRY_EXCEPTION_ERR_CODE, 0),
            (control::VMENTRY_INSTRUCTION_LEN, 0),
            (control::IO_BITMAP_A_ADDR_FULL, io_a),
            (control::IO_BITMAP_B_ADDR_FULL, io_b),
            (control::MSR_BITMAPS_ADDR_FULL, msr_bitmap),
            (control::TSC_OFFSET_FULL, 0),
            (control::EPTP_FULL, self.eptp),
            (control::CR0_GUEST_HOST_MASK, self.cr0_mask),
            (control::CR4_GUEST_HOST_MASK, self.cr4_mask),
            (guest::LINK_PTR_FULL, u64::MAX),
        ];
        for (field, value) in fields {
            self.try_write(field, value)?;
        }
        self.try_write(control::CR0_READ_SHADOW, init.cr0)?;
        self.try_write(control::CR4_READ_SHADOW, init.cr4 & !cr4::VMXE)?;
        if c.vpid() {
            self.try_write(control::VPID, self.vpid.into())?;
        }
        if c.xsaves() {
            // XSAVES/XRSTORS run natively for every XSS component.
            self.try_write(control::XSS_EXITING_BITMAP_FULL, 0)?;
        }
        Ok(())
    }

    fn write_segment_fields(
        &mut self,
        f: &SegFields,
        seg: &SegmentState,
        access: u32,
    ) -> Result<(), VmxError> {
        self.try_write(f.selector, seg.selector.into())?;
        self.try_write(f.base, seg.base)?;
        self.try_write(f.limit, seg.limit.into())?;
        self.try_write(f.access, access.into())
    }

    fn setup_guest(&mut self, init: &InitialState) -> Result<(), VmxError> {
        let long_mode = init.efer & efer::LMA != 0;
        self.write_segment_fields(&SEG_CS, &init.cs, vmx_bits::access_rights(init.cs.attrib))?;
        let data_ar = vmx_bits::access_rights(init.data.attrib);
        for f in [&SEG_ES, &SEG_SS, &SEG_DS, &SEG_FS, &SEG_GS] {
            self.write_segment_fields(f, &init.data, data_ar)?;
        }
        self.write_segment_fields(
            &SEG_TR,
            &init.tr,
            vmx_bits::tr_access_rights(init.tr.attrib, long_mode),
        )?;
        self.write_segment_fields(
            &SEG_LDTR,
            &SegmentState::default(),
            vmx_bits::AR_UNUSABLE,
        )?;
        let guest_efer = init.efer & efer::INTEL_VALID;
        let guest_cr4 = init.cr4 & !cr4::VMXE;
        let fields: [(u32, u64); 20] = [
            (guest::GDTR_BASE, init.gdtr.base),
            (guest::GDTR_LIMIT, init.gdtr.limit.min(0xFFFF).into()),
            (guest::IDTR_BASE, init.idtr.base),
            (guest::IDTR_LIMIT, init.idtr.limit.min(0xFFFF).into()),
            (guest::CR0, self.fixed.real_cr0(init.cr0)),
            (guest::CR3, init.cr3),
            (guest::CR4, self.fixed.real_cr4(guest_cr4)),
            (guest::DR7, 0x400),
            (guest::RSP, init.rsp),
            (guest::RIP, init.rip),
            (guest::RFLAGS, init.rflags | 0x2),
            (guest::PENDING_DBG_EXCEPTIONS, 0),
            (guest::INTERRUPTIBILITY_STATE, 0),
            (guest::ACTIVITY_STATE, 0),
            (guest::IA32_SYSENTER_CS, 0),
            (guest::IA32_SYSENTER_ESP, 0),
            (guest::IA32_SYSENTER_EIP, 0),
            (guest::IA32_DEBUGCTL_FULL, 0),
            (guest::IA32_PAT_FULL, GUEST_PAT),
            (guest::IA32_EFER_FULL, guest_efer),
        ];
        for (field, value) in fields {
            self.try_write(field, value)?;
        }
        let pdptes = if init.cr0 & cr0::PG != 0 && guest_cr4 & cr4::PAE != 0 && !long_mode {
            self.read_pdptes(init.cr3)
                .ok_or(VmxError::BadPdptes { cr3: init.cr3 })?
        } else {
            [0; 4]
        };
        self.write_pdptes_fallible(&pdptes)
    }

    fn write_pdptes_fallible(&mut self, pdptes: &[u64; 4]) -> Result<(), VmxError> {
        for (field, value) in [
            guest::PDPTE0_FULL,
            guest::PDPTE1_FULL,
            guest::PDPTE2_FULL,
            guest::PDPTE3_FULL,
        ]
        .into_iter()
        .zip(pdptes)
        {
            self.try_write(field, *value)?;
        }
        Ok(())
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

    /// Writes this CPU's host state: control registers, selectors, descriptor
    /// table and TSS bases, GS base (the per-CPU area), SYSENTER, EFER, PAT
    /// and the exit landing address.
    fn write_host_state(&mut self) {
        let [hcr0, _, hcr3, hcr4] = read_crs();
        let [cs, ss, ds, es, fs, gs] = current_selectors();
        let tr = current_tr();
        let gdt = x86_64::instructions::tables::sgdt();
        let idt = x86_64::instructions::tables::sidt();
        // SAFETY: these MSRs exist on every x86_64 CPU; reading has no effect.
        let (fs_base, gs_base, sysenter_cs, sysenter_esp, sysenter_eip, host_efer, host_pat) = unsafe {
            (
                rdmsr(msrs::FS_BASE),
                rdmsr(msrs::GS_BASE),
                rdmsr(msrs::SYSENTER_CS),
                rdmsr(msrs::SYSENTER_ESP),
                rdmsr(msrs::SYSENTER_EIP),
                rdmsr(msr::IA32_EFER),
                rdmsr(msrs::PAT),
            )
        };
        // Selector RPL and TI must be 0 in the host-state area.
        let sel = |s: u16| u64::from(s & !7);
        let fields: [(u32, u64); 22] = [
            (host::CR0, hcr0),
            (host::CR3, hcr3),
            (host::CR4, hcr4),
            (host::CS_SELECTOR, sel(cs)),
            (host::SS_SELECTOR, sel(ss)),
            (host::DS_SELECTOR, sel(ds)),
            (host::ES_SELECTOR, sel(es)),
            (host::FS_SELECTOR, sel(fs)),
            (host::GS_SELECTOR, sel(gs)),
            (host::TR_SELECTOR, sel(tr)),
            (host::FS_BASE, fs_base),
            (host::GS_BASE, gs_base),
            (host::TR_BASE, host_tr_base(tr)),
            (host::GDTR_BASE, gdt.base.as_u64()),
            (host::IDTR_BASE, idt.base.as_u64()),
            (host::IA32_SYSENTER_CS, sysenter_cs & 0xFFFF_FFFF),
            (host::IA32_SYSENTER_ESP, sysenter_esp),
            (host::IA32_SYSENTER_EIP, sysenter_eip),
            (host::IA32_EFER_FULL, host_efer),
            (host::IA32_PAT_FULL, host_pat),
            (host::RIP, run::exit_landing()),
            (host::RSP, 0),
        ];
        for (field, value) in fields {
            self.vmwrite(field, value);
        }
    }

    /// Loads the guest values VMX does not switch into this CPU.
    fn load_unswitched_state(&self) {
        let s = &self.syscall;
        // SAFETY: the MSRs exist on every x86_64 CPU; the values were checked
        // when the guest wrote them (canonical addresses, SFMASK high half 0).
        // The host uses neither SYSCALL nor SWAPGS, so only the guest sees
        // them; CR2 is only read by page-fault handlers, which the host has
        // none of that return.
        unsafe {
            wrmsr(msrs::STAR, s.star);
            wrmsr(msrs::LSTAR, s.lstar);
            wrmsr(msrs::CSTAR, s.cstar);
            wrmsr(msrs::SFMASK, s.sfmask);
            wrmsr(msrs::KERNEL_GS_BASE, s.kernel_gs_base);
            asm!("mov cr2, {}", in(reg) self.cr2, options(nostack, preserves_flags));
        }
    }

    /// Invalidates linear and combined translations of this vCPU's VPID.
    fn flush_linear(&self) {
        if !self.controls.vpid() || self.ept_vpid_cap & ept_cap::INVVPID == 0 {
            // Without VPID every entry and exit flushes them.
            return;
        }
        let kind = if self.ept_vpid_cap & ept_cap::INVVPID_SINGLE != 0 {
            instr::SINGLE_CONTEXT
        } else {
            instr::ALL_CONTEXTS
        };
        // SAFETY: VMX operation; the CPU supports INVVPID of this type.
        let r = unsafe { instr::invvpid(kind, self.vpid) };
        debug_assert!(r.is_ok(), "INVVPID: {r:?}");
    }

    /// Invalidates everything cached from this vCPU's EPT and VPID.
    fn flush_all(&self) {
        if self.ept_vpid_cap & ept_cap::INVEPT != 0 {
            let kind = if self.ept_vpid_cap & ept_cap::INVEPT_SINGLE != 0 {
                instr::SINGLE_CONTEXT
            } else {
                instr::ALL_CONTEXTS
            };
            // SAFETY: VMX operation; the CPU supports INVEPT of this type.
            let r = unsafe { instr::invept(kind, self.eptp) };
            debug_assert!(r.is_ok(), "INVEPT: {r:?}");
        }
        self.flush_linear();
    }

    /// Reads the four PAE PDPTEs that guest CR3 points at, through the EPT;
    /// `None` if they are not in guest RAM or have reserved bits set.
    fn read_pdptes(&self, cr3: u64) -> Option<[u64; 4]> {
        let read = |pa: u64| {
            // SAFETY: `pa` is an entry of this vCPU's EPT hierarchy, which
            // lives in identity-mapped frames for as long as the vCPU (the
            // contract of `new`, the same the CPU relies on when walking it).
            unsafe { (pa as *const u64).read_volatile() }
        };
        let hpa = vmx_bits::ept_translate(self.eptp, vmx_bits::pdpt_gpa(cr3), read)?;
        let mut pdptes = [0u64; 4];
        for (i, e) in pdptes.iter_mut().enumerate() {
            // SAFETY: `hpa` is a write-back EPT leaf, i.e. the VM's own RAM,
            // identity-mapped; the 32 bytes at a 32-byte-aligned address stay
            // in its page. The guest may change them concurrently: a snapshot.
            *e = unsafe { ((hpa + 8 * i as u64) as *const u64).read_volatile() };
        }
        vmx_bits::pdptes_valid(&pdptes, self.max_phys_bits).then_some(pdptes)
    }

    /// The guest's CR0, CR3, CR4, EFER and CS.L as the guest sees them.
    fn guest_modes(&self) -> GuestModes {
        GuestModes {
            cr0: vmx_bits::guest_view(
                self.vmread(guest::CR0),
                self.vmread(control::CR0_READ_SHADOW),
                self.cr0_mask,
            ),
            cr3: self.vmread(guest::CR3),
            cr4: vmx_bits::guest_view(
                self.vmread(guest::CR4),
                self.vmread(control::CR4_READ_SHADOW),
                self.cr4_mask,
            ),
            efer: self.vmread(guest::IA32_EFER_FULL),
            cs_l: self.vmread(guest::CS_ACCESS_RIGHTS) & (1 << 13) != 0,
        }
    }

    /// Guest GPR `index` in CR-access numbering (4 = RSP, from the VMCS).
    fn gpr(&self, index: u8) -> u64 {
        match GPR_ORDER[usize::from(index & 15)] {
            Reg::Rsp => self.vmread(guest::RSP),
            r => self.gprs.get(r).unwrap_or(0),
        }
    }

    fn set_gpr(&mut self, index: u8, value: u64) {
        match GPR_ORDER[usize::from(index & 15)] {
            Reg::Rsp => self.vmwrite(guest::RSP, value),
            r => {
                self.gprs.set(r, value);
            }
        }
    }

    /// Moves RIP past the exiting instruction and ends any STI/MOV-SS shadow.
    fn skip_instruction(&mut self) {
        let len = self.vmread(ro::VMEXIT_INSTRUCTION_LEN);
        let rip = self.vmread(guest::RIP);
        self.vmwrite(guest::RIP, rip.wrapping_add(len));
        self.clear_interrupt_shadow();
    }

    fn clear_interrupt_shadow(&mut self) {
        let state = self.vmread(guest::INTERRUPTIBILITY_STATE);
        let shadow = u64::from(interruptibility::STI | interruptibility::MOV_SS);
        if state & shadow != 0 {
            self.vmwrite(guest::INTERRUPTIBILITY_STATE, state & !shadow);
        }
    }

    /// Completes a CR-access exit; `Some` only for what the backend does not
    /// handle (anything but CR0, CR3, CR4, CLTS, LMSW).
    fn complete_cr_access(&mut self, qualification: u64) -> Option<VmExit> {
        let modes = self.guest_modes();
        let operand = |v: u64| {
            if modes.in_64bit_mode() {
                v
            } else {
                v & 0xFFFF_FFFF
            }
        };
        let update = match vmx_bits::cr_access(qualification) {
            CrAccess::MovTo { cr, gpr } => {
                let value = operand(self.gpr(gpr));
                match cr {
                    0 => vmx_bits::mov_to_cr0(&modes, value),
                    3 => vmx_bits::mov_to_cr3(&modes, value, self.max_phys_bits),
                    4 => vmx_bits::mov_to_cr4(&modes, value, self.fixed.cr4_guest_allowed()),
                    _ => return Some(VmExit::CrAccess { cr, write: true }),
                }
            }
            CrAccess::MovFrom { cr: 3, gpr } => {
                self.set_gpr(gpr, operand(modes.cr3));
                self.skip_instruction();
                return None;
            }
            CrAccess::MovFrom { cr, .. } => return Some(VmExit::CrAccess { cr, write: false }),
            CrAccess::Clts => vmx_bits::mov_to_cr0(&modes, vmx_bits::clts(modes.cr0)),
            CrAccess::Lmsw { source } => {
                vmx_bits::mov_to_cr0(&modes, vmx_bits::lmsw(modes.cr0, source))
            }
        };
        match update.and_then(|u| self.apply_cr_update(&modes, &u)) {
            Some(()) => self.skip_instruction(),
            None => self.inject_now(GP),
        }
        None
    }

    /// Commits a validated control-register write; `None` (nothing changed)
    /// if the PDPTEs it needs cannot be loaded, which is #GP.
    fn apply_cr_update(&mut self, old: &GuestModes, u: &CrUpdate) -> Option<()> {
        let pdptes = if u.load_pdptes {
            Some(self.read_pdptes(u.cr3)?)
        } else {
            None
        };
        if u.cr0 != old.cr0 {
            self.vmwrite(guest::CR0, self.fixed.real_cr0(u.cr0));
            self.vmwrite(control::CR0_READ_SHADOW, u.cr0);
        }
        if u.cr4 != old.cr4 {
            self.vmwrite(guest::CR4, self.fixed.real_cr4(u.cr4));
            self.vmwrite(control::CR4_READ_SHADOW, u.cr4);
        }
        if u.cr3 != old.cr3 {
            self.vmwrite(guest::CR3, u.cr3);
        }
        if u.efer != old.efer {
            self.vmwrite(guest::IA32_EFER_FULL, u.efer);
            let entry = self.vmread(control::VMENTRY_CONTROLS);
            let ia32e = u64::from(vmx_bits::ENTRY_IA32E_GUEST);
            let entry = if u.efer & efer::LMA != 0 {
                entry | ia32e
            } else {
                entry & !ia32e
            };
            self.vmwrite(control::VMENTRY_CONTROLS, entry);
        }
        if let Some(p) = pdptes {
            for (field, value) in [
                guest::PDPTE0_FULL,
                guest::PDPTE1_FULL,
                guest::PDPTE2_FULL,
                guest::PDPTE3_FULL,
            ]
            .into_iter()
            .zip(p)
            {
                self.vmwrite(field, value);
            }
        }
        if u.flush {
            self.flush_linear();
        }
        Some(())
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
            _ => {}
        }
        Some(vmx_bits::decode_exit(&info))
    }

    /// Reads an MSR whose guest value lives in the VMCS or in this vCPU (the
    /// SYSCALL family); `None` for any other.
    pub fn vmcs_msr(&self, msr_index: u32) -> Option<u64> {
        let s = &self.syscall;
        Some(match msr_index {
            msr::IA32_EFER => self.read(guest::IA32_EFER_FULL),
            msrs::PAT => self.read(guest::IA32_PAT_FULL),
            msrs::SYSENTER_CS => self.read(guest::IA32_SYSENTER_CS),
            msrs::SYSENTER_ESP => self.read(guest::IA32_SYSENTER_ESP),
            msrs::SYSENTER_EIP => self.read(guest::IA32_SYSENTER_EIP),
            msrs::FS_BASE => self.read(guest::FS_BASE),
            msrs::GS_BASE => self.read(guest::GS_BASE),
            msrs::STAR => s.star,
            msrs::LSTAR => s.lstar,
            msrs::CSTAR => s.cstar,
            msrs::SFMASK => s.sfmask,
            msrs::KERNEL_GS_BASE => s.kernel_gs_base,
            _ => return None,
        })
    }

    /// Writes such an MSR; false if it is not one of them or the value would
    /// fault on hardware (or fail the next VM entry): EFER bits other than
    /// SCE/LME/NXE or LME changed with paging on, a reserved PAT type, a
    /// non-canonical address, SFMASK's upper half. EFER.LMA keeps its value.
    pub fn set_vmcs_msr(&mut self, msr_index: u32, value: u64) -> bool {
        let canonical = vmx_bits::canonical(value, self.linear_bits);
        let field = match msr_index {
            msr::IA32_EFER => {
                if value & !efer::INTEL_VALID != 0 {
                    return false;
                }
                let current = self.read(guest::IA32_EFER_FULL);
                let new = (value & !efer::LMA) | (current & efer::LMA);
                let paging = self.read(guest::CR0) & cr0::PG != 0;
                if paging && (new & efer::LME != 0) != (new & efer::LMA != 0) {
                    return false;
                }
                self.write(guest::IA32_EFER_FULL, new);
                return true;
            }
            msrs::PAT if vmx_bits::pat_valid(value) => guest::IA32_PAT_FULL,
            msrs::SYSENTER_CS => {
                self.write(guest::IA32_SYSENTER_CS, value & 0xFFFF_FFFF);
                return true;
            }
            msrs::SYSENTER_ESP if canonical => guest::IA32_SYSENTER_ESP,
            msrs::SYSENTER_EIP if canonical => guest::IA32_SYSENTER_EIP,
            msrs::FS_BASE if canonical => guest::FS_BASE,
            msrs::GS_BASE if canonical => guest::GS_BASE,
            msrs::STAR | msrs::LSTAR | msrs::CSTAR | msrs::SFMASK | msrs::KERNEL_GS_BASE => {
                let s = &mut self.syscall;
                let slot = match msr_index {
                    msrs::STAR => &mut s.star,
                    msrs::LSTAR if canonical => &mut s.lstar,
                    msrs::CSTAR if canonical => &mut s.cstar,
                    msrs::SFMASK if value >> 32 == 0 => &mut s.sfmask,
                    msrs::KERNEL_GS_BASE if canonical => &mut s.kernel_gs_base,
                    _ => return false,
                };
                *slot = value;
                // Loaded into the MSRs before the next entry.
                self.reload.set(true);
                return true;
            }
            _ => return false,
        };
        self.write(field, value);
        true
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
}
