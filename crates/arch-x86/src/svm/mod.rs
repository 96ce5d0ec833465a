//! The AMD-V (SVM) backend: one VMCB per vCPU, nested paging, I/O and MSR
//! permission maps that intercept everything, and a VMRUN loop.
//!
//! Without next-RIP save (QEMU TCG), exits report no instruction length except
//! for I/O (EXITINFO2 holds the next RIP); callers decode the instruction.

mod run;
pub mod vmcb;

extern crate alloc;

use alloc::boxed::Box;

use vcpu::{
    has_error_code, Event, Gprs, IoAccess, MsrAccess, Nested, NptFault, SegmentState, SystemState,
    VcpuBackend, VmExit,
};

use crate::cpu::{msr, rdmsr, wrmsr};
pub use crate::guest_state::InitialState;
use vmcb::{ctl, exit, misc1, misc2, save, Page};

const VM_HSAVE_PA: u32 = 0xC001_0117;
const EFER_SVME: u64 = 1 << 12;
const EFER_NXE: u64 = 1 << 11;

/// Pages of the I/O permission map (one bit per port, plus the spill-over bits).
const IOPM_PAGES: usize = 3;
/// Pages of the MSR permission map.
const MSRPM_PAGES: usize = 2;

/// `N` zeroed, 4 KiB-aligned pages in one heap allocation, freed on drop
/// (the heap is identity-mapped: its address is its physical address).
fn zeroed_pages<const N: usize>() -> Box<[Page; N]> {
    // SAFETY: all-zero bytes are a valid `[Page; N]` (plain bytes).
    unsafe { Box::<[Page; N]>::new_zeroed().assume_init() }
}

/// One zeroed page, freed on drop.
fn zeroed_page() -> Box<Page> {
    // SAFETY: all-zero bytes are a valid `Page` (plain bytes).
    unsafe { Box::<Page>::new_zeroed().assume_init() }
}

fn leak_page() -> &'static mut Page {
    Box::leak(zeroed_page())
}

/// Enables SVM on the running pCPU (EFER.SVME, host save area). Idempotent.
pub fn enable_on_this_cpu() {
    // SAFETY: EFER and VM_HSAVE_PA exist on every CPU with SVM; setting SVME
    // and NXE does not change how the running host code behaves.
    unsafe {
        let efer = rdmsr(msr::IA32_EFER);
        if efer & EFER_SVME == 0 {
            wrmsr(msr::IA32_EFER, efer | EFER_SVME | EFER_NXE);
            let hsave = leak_page() as *mut Page as u64;
            wrmsr(VM_HSAVE_PA, hsave);
        }
    }
}

/// Whether the CPU reports next-RIP save (CPUID 8000_000A EDX bit 3).
fn has_nrip() -> bool {
    raw_cpuid::CpuId::new()
        .get_svm_info()
        .is_some_and(|s| s.has_nrip())
}

/// One guest vCPU on SVM.
pub struct SvmVcpu {
    vmcb: Box<Page>,
    host_save: Box<Page>,
    /// The I/O and MSR permission maps the VMCB points at (kept alive here).
    _iopm: Box<[Page; IOPM_PAGES]>,
    _msrpm: Box<[Page; MSRPM_PAGES]>,
    gprs: Gprs,
    guest_fx: Box<run::FxArea>,
    host_fx: Box<run::FxArea>,
    nrip: bool,
    /// Instruction length reported by the last exit, if any.
    exit_len: Option<u8>,
    /// An injected NMI's handler runs: no other NMI until its IRET.
    nmi_masked: bool,
    /// The IRET that ends the NMI handler exited here and has not run yet.
    iret_rip: Option<u64>,
    /// An NMI waits for that IRET: the guest single-steps over it (TF set by
    /// Quercus, #DB intercepted) so that the NMI follows it at once. Holds
    /// the guest's DR6 and whether the guest had TF set itself.
    iret_step: Option<(u64, bool)>,
    /// A double fault was reinjected and its delivery has not ended: the
    /// faults that would make it a triple fault are intercepted
    /// ([`INTERCEPT_DF_GUARD`]).
    df_guard: bool,
}

/// RFLAGS.TF, DR6.BS and the #DB intercept bit.
const RFLAGS_TF: u64 = 1 << 8;
const DR6_BS: u64 = 1 << 14;
const INTERCEPT_DB: u32 = 1 << 1;

/// Exceptions always intercepted: #MC, and #DF. The #DF intercept is the
/// triple-fault containment of Bochs 2.7: its CPU resets the whole emulated
/// machine on a guest's triple fault instead of taking the SHUTDOWN
/// intercept (its `exception()` checks only VMX's triple-fault exit; fixed
/// upstream after 2.7, Bochs commit f8c94e83). Quercus intercepts the
/// #DF, reinjects it itself and intercepts, until that delivery ends, the
/// faults that would turn it into a triple fault ([`INTERCEPT_DF_GUARD`]):
/// one of them while the #DF is being delivered is the shutdown, decided by
/// Quercus. On a CPU that does take the intercept it costs nothing more: a
/// guest that never double-faults never exits for it.
const INTERCEPT_BASE: u32 = (1 << 18) | (1 << 8);
/// Test hook: without the #DF intercept (`quercus.test.svm_no_df_intercept`),
/// to show Bochs 2.7's reset of the whole machine on a guest's triple fault.
static NO_DF_INTERCEPT: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Leaves #DF alone in VMCBs made from now on (a test hook; see
/// [`INTERCEPT_BASE`]).
pub fn test_disable_df_intercept() {
    NO_DF_INTERCEPT.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// #TS, #NP, #SS, #GP, #PF: intercepted while a reinjected #DF is delivered.
const INTERCEPT_DF_GUARD: u32 = 0x1F << 10;
use crate::svm_bits::{delivering_double_fault, guarded_fault, EVENT_VALID};

impl SvmVcpu {
    /// Makes a vCPU of address space `asid` whose guest-physical memory is
    /// translated by the NPT rooted at `ncr3`. Call on the pCPU that runs it,
    /// after [`enable_on_this_cpu`].
    pub fn new(asid: u32, ncr3: u64, init: &InitialState) -> Self {
        // All ones: every port and every MSR exits.
        let mut iopm = zeroed_pages::<IOPM_PAGES>();
        let mut msrpm = zeroed_pages::<MSRPM_PAGES>();
        for page in iopm.iter_mut().chain(msrpm.iter_mut()) {
            page.0.fill(0xFF);
        }
        let mut vmcb = zeroed_page();
        let exceptions = if NO_DF_INTERCEPT.load(core::sync::atomic::Ordering::Relaxed) {
            INTERCEPT_BASE & !(1 << 8)
        } else {
            INTERCEPT_BASE
        };
        vmcb.write_u32(ctl::INTERCEPT_EXCEPTIONS, exceptions);
        vmcb.write_u32(
            ctl::INTERCEPT_MISC1,
            misc1::INTR
                | misc1::NMI
                | misc1::SMI
                | misc1::INIT
                | misc1::CPUID
                | misc1::RDPMC
                | misc1::INVD
                | misc1::HLT
                | misc1::INVLPGA
                | misc1::IOIO_PROT
                | misc1::MSR_PROT
                | misc1::SHUTDOWN,
        );
        vmcb.write_u32(
            ctl::INTERCEPT_MISC2,
            misc2::VMRUN
                | misc2::VMMCALL
                | misc2::VMLOAD
                | misc2::VMSAVE
                | misc2::STGI
                | misc2::CLGI
                | misc2::SKINIT
                | misc2::MONITOR
                | misc2::MWAIT
                | misc2::MWAIT_COND
                | misc2::XSETBV,
        );
        vmcb.write_u64(ctl::IOPM_BASE_PA, iopm.as_ptr() as u64);
        vmcb.write_u64(ctl::MSRPM_BASE_PA, msrpm.as_ptr() as u64);
        vmcb.write_u32(ctl::GUEST_ASID, asid);
        vmcb.write_u8(ctl::TLB_CONTROL, 1); // flush this ASID on the first run
        vmcb.write_u32(ctl::V_INTR, 1 << 24); // V_INTR_MASKING
        vmcb.write_u64(ctl::NP_ENABLE, 1);
        vmcb.write_u64(ctl::N_CR3, ncr3);

        vmcb.write_segment(save::CS, &init.cs);
        for off in [save::DS, save::ES, save::SS, save::FS, save::GS] {
            vmcb.write_segment(off, &init.data);
        }
        vmcb.write_segment(save::TR, &init.tr);
        vmcb.write_segment(
            save::LDTR,
            &SegmentState {
                selector: 0,
                base: 0,
                limit: 0xFFFF,
                attrib: 0x082,
            },
        );
        vmcb.write_segment(save::GDTR, &init.gdtr);
        vmcb.write_segment(save::IDTR, &init.idtr);
        vmcb.write_u64(save::CR0, init.cr0);
        vmcb.write_u64(save::CR3, init.cr3);
        vmcb.write_u64(save::CR4, init.cr4);
        vmcb.write_u64(save::EFER, init.efer | EFER_SVME);
        vmcb.write_u64(save::RFLAGS, init.rflags | 0x2);
        vmcb.write_u64(save::RIP, init.rip);
        vmcb.write_u64(save::RSP, init.rsp);
        vmcb.write_u64(save::DR6, 0xFFFF_0FF0);
        vmcb.write_u64(save::DR7, 0x400);
        vmcb.write_u64(save::G_PAT, 0x0007_0406_0007_0406);
        vmcb.write_u8(save::CPL, 0);

        let mut guest_fx = Box::new(run::FxArea::new());
        guest_fx.set_default();
        SvmVcpu {
            vmcb,
            host_save: zeroed_page(),
            _iopm: iopm,
            _msrpm: msrpm,
            gprs: init.gprs,
            guest_fx,
            host_fx: Box::new(run::FxArea::new()),
            nrip: has_nrip(),
            exit_len: None,
            nmi_masked: false,
            iret_rip: None,
            iret_step: None,
            df_guard: false,
        }
    }

    fn set_df_guard(&mut self, on: bool) {
        self.df_guard = on;
        let e = self.vmcb.read_u32(ctl::INTERCEPT_EXCEPTIONS);
        let e = if on {
            e | INTERCEPT_DF_GUARD
        } else {
            e & !INTERCEPT_DF_GUARD
        };
        self.vmcb.write_u32(ctl::INTERCEPT_EXCEPTIONS, e);
    }

    /// A guarded fault (#TS, #NP, #SS, #GP or #PF intercepted after a #DF
    /// was reinjected): `pending` (EXITINTINFO) says which event the CPU was
    /// delivering when it came, and the SDM's table decides what it
    /// becomes. An external event being delivered when the fault came is
    /// dropped (the guest is already double-faulting).
    fn guarded_fault(&mut self, vector: u8, info1: u64, info2: u64, pending: u64) -> VmExit {
        self.set_df_guard(false);
        if pending & EVENT_VALID != 0 {
            // run() queued it again: the fault replaces it.
            self.vmcb.write_u64(ctl::EVENTINJ, 0);
        }
        match guarded_fault(vector, pending) {
            Nested::TripleFault => return VmExit::Shutdown,
            Nested::DoubleFault => {
                self.set_df_guard(true);
                return VmExit::Exception {
                    vector: 8,
                    error_code: Some(0),
                };
            }
            Nested::Deliver => {}
        }
        if vector == 14 {
            // An intercepted #PF leaves CR2 alone: the injected one sets it.
            self.vmcb.write_u64(save::CR2, info2);
        }
        VmExit::Exception {
            vector,
            error_code: Some(info1 as u32),
        }
    }

    fn set_db_intercept(&mut self, on: bool) {
        let e = self.vmcb.read_u32(ctl::INTERCEPT_EXCEPTIONS);
        let e = if on {
            e | INTERCEPT_DB
        } else {
            e & !INTERCEPT_DB
        };
        self.vmcb.write_u32(ctl::INTERCEPT_EXCEPTIONS, e);
    }

    /// The #DB of the single step over the NMI handler's IRET: NMIs are
    /// unblocked if the IRET ran. The guest's own single-step #DB (it had TF
    /// set) is passed on.
    fn end_iret_step(&mut self) -> VmExit {
        let Some((dr6, guest_tf)) = self.iret_step.take() else {
            return VmExit::Exception {
                vector: 1,
                error_code: None,
            };
        };
        self.set_db_intercept(false);
        if self
            .iret_rip
            .is_some_and(|at| at != self.vmcb.read_u64(save::RIP))
        {
            self.iret_rip = None;
            self.nmi_masked = false;
        }
        if guest_tf {
            return VmExit::Exception {
                vector: 1,
                error_code: None,
            };
        }
        self.vmcb.write_u64(save::DR6, dr6);
        VmExit::InterruptWindow
    }

    fn set_iret_intercept(&mut self, on: bool) {
        let misc = self.vmcb.read_u32(ctl::INTERCEPT_MISC1);
        let misc = if on {
            misc | misc1::IRET
        } else {
            misc & !misc1::IRET
        };
        self.vmcb.write_u32(ctl::INTERCEPT_MISC1, misc);
    }

    /// The raw exit code of the last exit (for statistics and dumps).
    pub fn raw_exit_code(&self) -> u64 {
        self.vmcb.read_u64(ctl::EXITCODE)
    }

    /// `pending` is EXITINTINFO: the event whose delivery the exit
    /// interrupted, if valid.
    fn decode_exit(&mut self, pending: u64) -> VmExit {
        let code = self.vmcb.read_u64(ctl::EXITCODE);
        let info1 = self.vmcb.read_u64(ctl::EXITINFO1);
        let info2 = self.vmcb.read_u64(ctl::EXITINFO2);
        let rip = self.vmcb.read_u64(save::RIP);
        let df_guard = self.df_guard;
        let df_pending = delivering_double_fault(pending);
        // The reinjected #DF was delivered (or never started): guard off.
        if df_guard && !df_pending {
            self.set_df_guard(false);
        }
        self.exit_len = if self.nrip {
            let next = self.vmcb.read_u64(ctl::NRIP);
            u8::try_from(next.wrapping_sub(rip))
                .ok()
                .filter(|&l| (1..=15).contains(&l))
        } else {
            None
        };
        match code {
            exit::IOIO => {
                // EXITINFO2 holds the next RIP for I/O even without next-RIP save.
                self.exit_len = u8::try_from(info2.wrapping_sub(rip))
                    .ok()
                    .filter(|&l| (1..=15).contains(&l));
                let size = if info1 & (1 << 4) != 0 {
                    1
                } else if info1 & (1 << 5) != 0 {
                    2
                } else {
                    4
                };
                VmExit::Io(IoAccess {
                    port: (info1 >> 16) as u16,
                    size,
                    write: info1 & 1 == 0,
                    string: info1 & (1 << 2) != 0,
                    rep: info1 & (1 << 3) != 0,
                })
            }
            exit::CPUID => VmExit::Cpuid,
            exit::MSR => VmExit::Msr(MsrAccess {
                write: info1 & 1 != 0,
            }),
            exit::HLT => VmExit::Hlt,
            exit::VMMCALL => VmExit::Hypercall,
            exit::VINTR => {
                self.request_interrupt_window(false);
                VmExit::InterruptWindow
            }
            // The NMI handler's IRET (intercepted before it runs): NMIs are
            // unblocked once the guest is past it.
            exit::IRET => {
                self.set_iret_intercept(false);
                self.iret_rip = Some(rip);
                VmExit::InterruptWindow
            }
            exit::XSETBV => VmExit::Xsetbv,
            exit::RDPMC => VmExit::Rdpmc,
            exit::SHUTDOWN => VmExit::Shutdown,
            exit::INTR | exit::NMI | exit::SMI | exit::INIT => VmExit::ExternalInterrupt,
            exit::NPF => VmExit::Mmio(NptFault {
                gpa: info2,
                present: info1 & 1 != 0,
                write: info1 & (1 << 1) != 0,
                fetch: info1 & (1 << 4) != 0,
            }),
            exit::VMRUN
            | exit::VMLOAD
            | exit::VMSAVE
            | exit::STGI
            | exit::CLGI
            | exit::SKINIT
            | exit::INVLPGA
            | exit::INVD
            | exit::MONITOR
            | exit::MWAIT
            | exit::MWAIT_COND
            | exit::RDTSCP => VmExit::Forbidden { raw: code },
            c if c == exit::EXCP_BASE + 1 && self.iret_step.is_some() => self.end_iret_step(),
            // A double fault: reinjected, its delivery guarded.
            c if c == exit::EXCP_BASE + 8 => {
                self.set_df_guard(true);
                VmExit::Exception {
                    vector: 8,
                    error_code: Some(0),
                }
            }
            c if df_guard && (exit::EXCP_BASE + 10..=exit::EXCP_BASE + 14).contains(&c) => {
                self.guarded_fault((c - exit::EXCP_BASE) as u8, info1, info2, pending)
            }
            c if (exit::EXCP_BASE..exit::EXCP_BASE + 32).contains(&c) => {
                let vector = (c - exit::EXCP_BASE) as u8;
                VmExit::Exception {
                    vector,
                    error_code: has_error_code(vector).then_some(info1 as u32),
                }
            }
            // VMEXIT_INVALID (-1) and the other negative codes (BUSY, ...):
            // QEMU 7.2 writes them 32 bits wide (0xFFFF_FFFF), the APM and
            // Bochs 64 bits wide.
            c if exit::is_entry_failure(c) => VmExit::EntryFailed { raw: code },
            other => VmExit::Unknown { raw: other },
        }
    }

    /// Reads an MSR whose guest value lives in the VMCB; `None` if it does not.
    pub fn vmcb_msr(&self, msr_index: u32) -> Option<u64> {
        let off = vmcb_msr_offset(msr_index)?;
        let v = self.vmcb.read_u64(off);
        Some(if msr_index == msr::IA32_EFER {
            v & !EFER_SVME
        } else {
            v
        })
    }

    /// Writes an MSR held in the VMCB; false if it is not one of them.
    pub fn set_vmcb_msr(&mut self, msr_index: u32, value: u64) -> bool {
        let Some(off) = vmcb_msr_offset(msr_index) else {
            return false;
        };
        let value = if msr_index == msr::IA32_EFER {
            value | EFER_SVME
        } else {
            value
        };
        self.vmcb.write_u64(off, value);
        true
    }
}

const MSR_FS_BASE: u32 = 0xC000_0100;
const MSR_GS_BASE: u32 = 0xC000_0101;

fn vmcb_msr_offset(msr_index: u32) -> Option<usize> {
    Some(match msr_index {
        msr::IA32_EFER => save::EFER,
        0x277 => save::G_PAT,
        0x174 => save::SYSENTER_CS,
        0x175 => save::SYSENTER_ESP,
        0x176 => save::SYSENTER_EIP,
        0xC000_0081 => save::STAR,
        0xC000_0082 => save::LSTAR,
        0xC000_0083 => save::CSTAR,
        0xC000_0084 => save::SFMASK,
        0xC000_0102 => save::KERNEL_GS_BASE,
        MSR_FS_BASE => save::FS + 8,
        MSR_GS_BASE => save::GS + 8,
        _ => return None,
    })
}

impl VcpuBackend for SvmVcpu {
    fn run(&mut self) -> VmExit {
        self.vmcb.write_u64(save::RAX, self.gprs.rax);
        run::vmrun(
            &mut self.vmcb,
            &mut self.host_save,
            &mut self.gprs,
            &mut self.guest_fx,
            &mut self.host_fx,
        );
        self.gprs.rax = self.vmcb.read_u64(save::RAX);
        self.vmcb.write_u8(ctl::TLB_CONTROL, 0);
        // An event whose delivery the exit interrupted is delivered again.
        let pending = self.vmcb.read_u64(ctl::EXITINTINFO);
        self.vmcb.write_u64(
            ctl::EVENTINJ,
            if pending & EVENT_VALID != 0 {
                pending
            } else {
                0
            },
        );
        if let Some(at) = self.iret_rip {
            if self.vmcb.read_u64(save::RIP) != at {
                self.iret_rip = None;
                self.nmi_masked = false;
            }
        }
        self.decode_exit(pending)
    }

    fn gprs(&self) -> &Gprs {
        &self.gprs
    }

    fn gprs_mut(&mut self) -> &mut Gprs {
        &mut self.gprs
    }

    fn rip(&self) -> u64 {
        self.vmcb.read_u64(save::RIP)
    }

    fn set_rip(&mut self, rip: u64) {
        self.vmcb.write_u64(save::RIP, rip);
        // Moving past an instruction ends an interrupt shadow (STI; HLT).
        let shadow = self.vmcb.read_u64(ctl::INTERRUPT_SHADOW);
        self.vmcb.write_u64(ctl::INTERRUPT_SHADOW, shadow & !1);
    }

    fn rsp(&self) -> u64 {
        self.vmcb.read_u64(save::RSP)
    }

    fn rflags(&self) -> u64 {
        self.vmcb.read_u64(save::RFLAGS)
    }

    fn set_rflags(&mut self, rflags: u64) {
        self.vmcb.write_u64(save::RFLAGS, rflags | 0x2);
    }

    fn system_state(&self) -> SystemState {
        SystemState {
            cr0: self.vmcb.read_u64(save::CR0),
            cr3: self.vmcb.read_u64(save::CR3),
            cr4: self.vmcb.read_u64(save::CR4),
            efer: self.vmcb.read_u64(save::EFER) & !EFER_SVME,
            cpl: self.vmcb.read_u8(save::CPL),
            cs: self.vmcb.read_segment(save::CS),
        }
    }

    fn inject(&mut self, event: Event) {
        let (vector, kind, err) = match event {
            Event::Exception { vector, error_code } => (vector, 3u64, error_code),
            Event::Interrupt { vector } => (vector, 0, None),
            Event::Nmi => {
                self.nmi_masked = true;
                self.set_iret_intercept(true);
                (2, 2, None)
            }
        };
        let mut v = u64::from(vector) | (kind << 8) | (1 << 31);
        if let Some(e) = err {
            v |= (1 << 11) | (u64::from(e) << 32);
        }
        self.vmcb.write_u64(ctl::EVENTINJ, v);
    }

    fn exit_instruction_len(&self) -> Option<u8> {
        self.exit_len
    }

    fn break_next_entry(&mut self) -> bool {
        // APM vol. 2 15.5.1: VMRUN with the guest's EFER.SVME clear is an
        // illegal state: #VMEXIT(INVALID).
        let efer = self.vmcb.read_u64(save::EFER);
        self.vmcb.write_u64(save::EFER, efer & !EFER_SVME);
        true
    }

    fn read_state_msr(&self, msr: u32) -> Option<u64> {
        self.vmcb_msr(msr)
    }

    fn write_state_msr(&mut self, msr: u32, value: u64) -> bool {
        self.set_vmcb_msr(msr, value)
    }

    fn guest_tsc(&self, host_tsc: u64) -> u64 {
        host_tsc.wrapping_add(self.vmcb.read_u64(ctl::TSC_OFFSET))
    }

    fn interruptible(&self) -> bool {
        self.vmcb.read_u64(save::RFLAGS) & (1 << 9) != 0
            && self.vmcb.read_u64(ctl::INTERRUPT_SHADOW) & 1 == 0
            && self.vmcb.read_u64(ctl::EVENTINJ) & (1 << 31) == 0
    }

    fn request_nmi_window(&mut self, on: bool) {
        // Blocked by the handler whose IRET exited but has not run: step
        // over it (SVM has no NMI-window exit; KVM does the same).
        if on && self.nmi_masked && self.iret_rip.is_some() && self.iret_step.is_none() {
            let rflags = self.vmcb.read_u64(save::RFLAGS);
            self.iret_step = Some((self.vmcb.read_u64(save::DR6), rflags & RFLAGS_TF != 0));
            self.vmcb.write_u64(save::RFLAGS, rflags | RFLAGS_TF);
            self.set_db_intercept(true);
        }
    }

    fn nmi_blocked(&self) -> bool {
        self.nmi_masked
    }

    fn single_step_trap(&mut self) {
        let dr6 = self.vmcb.read_u64(save::DR6);
        self.vmcb.write_u64(save::DR6, dr6 | DR6_BS);
        self.inject(Event::Exception {
            vector: 1,
            error_code: None,
        });
    }

    fn hw_cr8(&self) -> Option<u8> {
        // With V_INTR_MASKING, MOV to/from CR8 use V_TPR (bits 3:0).
        Some((self.vmcb.read_u32(ctl::V_INTR) & 0xF) as u8)
    }

    fn set_hw_cr8(&mut self, cr8: u8, blocked_class: Option<u8>) {
        let mut v = (self.vmcb.read_u32(ctl::V_INTR) & !0xF) | u32::from(cr8 & 0xF);
        // An interrupt only the TPR holds back: a virtual interrupt of its
        // class exits (VINTR) once the guest lowers V_TPR below it.
        if let Some(class) = blocked_class {
            if v & (1 << 8) == 0 {
                v |= (1 << 8) | (u32::from(class & 0xF) << 16);
                let misc = self.vmcb.read_u32(ctl::INTERCEPT_MISC1);
                self.vmcb
                    .write_u32(ctl::INTERCEPT_MISC1, misc | misc1::VINTR);
            }
        }
        self.vmcb.write_u32(ctl::V_INTR, v);
    }

    fn nmi_injectable(&self) -> bool {
        !self.nmi_masked
            && self.vmcb.read_u64(ctl::INTERRUPT_SHADOW) & 1 == 0
            && self.vmcb.read_u64(ctl::EVENTINJ) & (1 << 31) == 0
    }

    fn request_interrupt_window(&mut self, on: bool) {
        // A virtual interrupt (V_IRQ) with the VINTR intercept: the CPU exits
        // when the guest could take it, and Quercus injects the real vector.
        let v_intr = self.vmcb.read_u32(ctl::V_INTR);
        let misc = self.vmcb.read_u32(ctl::INTERCEPT_MISC1);
        if on {
            self.vmcb
                .write_u32(ctl::V_INTR, v_intr | (1 << 8) | (0xF << 16));
            self.vmcb
                .write_u32(ctl::INTERCEPT_MISC1, misc | misc1::VINTR);
        } else {
            self.vmcb
                .write_u32(ctl::V_INTR, v_intr & !((1 << 8) | (0xF << 16)));
            self.vmcb
                .write_u32(ctl::INTERCEPT_MISC1, misc & !misc1::VINTR);
        }
    }

    fn flush_slat(&mut self) {
        // Without flush-by-ASID (QEMU's TCG has none) only a whole-TLB flush exists.
        self.vmcb.write_u8(ctl::TLB_CONTROL, 1);
    }
}
