//! Filling a new VMCS: controls, guest state from the InitialState, and the
//! host state of the CPU that runs it.

use core::arch::asm;

use vcpu::SegmentState;
use x86::vmx::vmcs::{control, guest, host};

use super::state_msr::msrs;
use super::{
    instr, ones_page, page_pa, run, InitialState, VmxError, VmxVcpu, EXCEPTION_BITMAP, GUEST_PAT,
};
use crate::cpu::{msr, rdmsr, read_crs};
use crate::vmx_bits::{self, cr0, cr4, efer};

/// The loaded task register.
pub(super) fn current_tr() -> u16 {
    let tr: u16;
    // SAFETY: STR only reads the task register.
    unsafe { asm!("str {0:x}", out(reg) tr, options(nomem, nostack, preserves_flags)) };
    tr
}

/// The running CPU's segment selectors CS, SS, DS, ES, FS, GS.
pub(super) fn current_selectors() -> [u16; 6] {
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

impl VmxVcpu {
    /// VMWRITE during setup, with the failure reported.
    fn try_write(&mut self, field: u32, value: u64) -> Result<(), VmxError> {
        // SAFETY: VMX operation; this vCPU's VMCS is current (made so by
        // `new` just before setup); the values written by setup are this
        // vCPU's own bitmaps, EPT pointer and guest state.
        unsafe { instr::vmwrite(field, value) }.map_err(|fail| VmxError::Vmwrite { field, fail })
    }

    /// Writes the execution, exit and entry controls, the bitmaps, the EPT
    /// pointer, VPID and the CR0/CR4 guest/host masks and read shadows.
    pub(super) fn setup_controls(&mut self, init: &InitialState) -> Result<(), VmxError> {
        let c = self.controls;
        let [io_a, io_b, msr_bitmap] = [ones_page(), ones_page(), ones_page()].map(|page| {
            let pa = page_pa(&page);
            self.pages.push(page);
            pa
        });
        self.msr_bitmap = self.pages.len() - 1;
        let ia32e = if init.efer & efer::LMA != 0 {
            vmx_bits::ENTRY_IA32E_GUEST
        } else {
            0
        };
        let fields: [(u32, u64); 23] = [
            (control::PINBASED_EXEC_CONTROLS, c.pin.into()),
            (control::PRIMARY_PROCBASED_EXEC_CONTROLS, c.primary.into()),
            (
                control::SECONDARY_PROCBASED_EXEC_CONTROLS,
                c.secondary.into(),
            ),
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

    /// Writes one guest segment register (VMX access rights given).
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

    /// Writes the guest-state area from `init` (segments converted to VMX
    /// access rights, LDTR unusable, TR a busy TSS, CR0/CR4 with the fixed
    /// bits forced, PAT at its reset value, DR7 0x400, no blocking).
    pub(super) fn setup_guest(&mut self, init: &InitialState) -> Result<(), VmxError> {
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
        self.write_segment_fields(&SEG_LDTR, &SegmentState::default(), vmx_bits::AR_UNUSABLE)?;
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

    /// Writes the guest PDPTE fields (used by PAE paging with EPT).
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

    /// Writes this CPU's host state: control registers, selectors, descriptor
    /// table and TSS bases, GS base (the per-CPU area), SYSENTER, EFER, PAT
    /// and the exit landing address.
    pub(super) fn write_host_state(&mut self) {
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
}
