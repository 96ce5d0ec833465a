//! Control-register accesses the backend completes itself (MOV to CR0/CR3/CR4,
//! MOV from CR3, CLTS, LMSW), PAE PDPTE loading, and TLB invalidation.

use vcpu::{Reg, VmExit, GP};
use x86::vmx::vmcs::{control, guest, ro};

use super::{instr, VmxVcpu};
use crate::vmx_bits::{self, efer, ept_cap, interruptibility, CrAccess, CrUpdate, GuestModes};

impl VmxVcpu {
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
    pub(super) fn flush_all(&self) {
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
    pub(super) fn read_pdptes(&self, cr3: u64) -> Option<[u64; 4]> {
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
    pub(super) fn guest_modes(&self) -> GuestModes {
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
        match Reg::from_encoding(index) {
            Reg::Rsp => self.vmread(guest::RSP),
            r => self.gprs.get(r).unwrap_or(0),
        }
    }

    fn set_gpr(&mut self, index: u8, value: u64) {
        match Reg::from_encoding(index) {
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

    pub(super) fn clear_interrupt_shadow(&mut self) {
        let state = self.vmread(guest::INTERRUPTIBILITY_STATE);
        let shadow = u64::from(interruptibility::STI | interruptibility::MOV_SS);
        if state & shadow != 0 {
            self.vmwrite(guest::INTERRUPTIBILITY_STATE, state & !shadow);
        }
    }

    /// Completes a CR-access exit; `Some` only for what the backend does not
    /// handle (anything but CR0, CR3, CR4, CLTS, LMSW).
    pub(super) fn complete_cr_access(&mut self, qualification: u64) -> Option<VmExit> {
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
                    8 => {
                        // CR8 is the vLAPIC's TPR class: kept here, synced by
                        // the caller; bits 63:4 are reserved (#GP).
                        if value & !0xF != 0 {
                            self.inject_now(GP);
                            return None;
                        }
                        self.cr8 = value as u8;
                        self.skip_instruction();
                        // A lower TPR may unblock an interrupt: let the caller look.
                        return Some(VmExit::InterruptWindow);
                    }
                    _ => return Some(VmExit::CrAccess { cr, write: true }),
                }
            }
            CrAccess::MovFrom { cr: 3, gpr } => {
                self.set_gpr(gpr, operand(modes.cr3));
                self.skip_instruction();
                return None;
            }
            CrAccess::MovFrom { cr: 8, gpr } => {
                self.set_gpr(gpr, u64::from(self.cr8));
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
}
