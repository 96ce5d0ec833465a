//! Guest MSRs held in the VMCS or, for the SYSCALL family that VMX does not
//! switch, in the vCPU and loaded into the CPU before entry.

use core::arch::asm;

use x86::vmx::vmcs::guest;

use super::VmxVcpu;
use crate::cpu::{msr, wrmsr};
use crate::vmx_bits::{self, cr0, efer};

/// MSRs this backend reads (beyond `cpu::msr`).
pub(super) mod msrs {
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

/// The guest's SYSCALL-family MSRs, which VMX does not switch.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SyscallMsrs {
    pub(super) star: u64,
    pub(super) lstar: u64,
    pub(super) cstar: u64,
    pub(super) sfmask: u64,
    pub(super) kernel_gs_base: u64,
}

impl VmxVcpu {
    /// Loads the guest values VMX does not switch into this CPU.
    pub(super) fn load_unswitched_state(&self) {
        let s = &self.syscall;
        // SAFETY: the MSRs exist on every x86_64 CPU; the values were checked
        // when the guest wrote them (canonical addresses, SFMASK high half 0).
        // The host uses neither SYSCALL nor SWAPGS, so only the guest sees
        // them; nothing in the host reads CR2 (its page-fault handler only
        // reports and stops the CPU).
        unsafe {
            wrmsr(msrs::STAR, s.star);
            wrmsr(msrs::LSTAR, s.lstar);
            wrmsr(msrs::CSTAR, s.cstar);
            wrmsr(msrs::SFMASK, s.sfmask);
            wrmsr(msrs::KERNEL_GS_BASE, s.kernel_gs_base);
            asm!("mov cr2, {}", in(reg) self.cr2, options(nostack, preserves_flags));
        }
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
