//! What hardware virtualization this CPU offers, read from CPUID and the capability MSRs.

use core::fmt;

use raw_cpuid::CpuId;

use crate::cpu::{msr, rdmsr};

/// Intel VT-x capabilities that Quercus's VMX backend needs or uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmxCaps {
    /// Locked off by firmware (IA32_FEATURE_CONTROL).
    pub disabled_by_firmware: bool,
    pub true_ctls: bool,
    pub secondary_ctls: bool,
    pub ept: bool,
    pub vpid: bool,
    pub unrestricted_guest: bool,
    pub ept_2m: bool,
    pub ept_1g: bool,
}

/// AMD-V capabilities that Quercus's SVM backend needs or uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvmCaps {
    /// VM_CR.SVMDIS set by firmware.
    pub disabled_by_firmware: bool,
    pub revision: u8,
    pub asids: u32,
    pub npt: bool,
    pub nrip_save: bool,
    pub flush_by_asid: bool,
    pub decode_assists: bool,
    pub vmcb_clean: bool,
}

/// The virtualization extension present, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtCaps {
    Vmx(VmxCaps),
    Svm(SvmCaps),
    None,
}

/// The CPU vendor string ("GenuineIntel", "AuthenticAMD", ...), NUL-padded.
pub fn vendor() -> [u8; 12] {
    let mut out = [0u8; 12];
    if let Some(v) = CpuId::new().get_vendor_info() {
        let s = v.as_str().as_bytes();
        let n = s.len().min(12);
        out[..n].copy_from_slice(&s[..n]);
    }
    out
}

/// Probes the virtualization support of the running CPU.
pub fn probe() -> VirtCaps {
    let cpuid = CpuId::new();
    if cpuid.get_feature_info().is_some_and(|f| f.has_vmx()) {
        return VirtCaps::Vmx(probe_vmx());
    }
    if cpuid
        .get_extended_processor_and_feature_identifiers()
        .is_some_and(|f| f.has_svm())
    {
        let mut caps = SvmCaps::default();
        if let Some(svm) = cpuid.get_svm_info() {
            caps.revision = svm.revision();
            caps.asids = svm.supported_asids();
            caps.npt = svm.has_nested_paging();
            caps.nrip_save = svm.has_nrip();
            caps.flush_by_asid = svm.has_flush_by_asid();
            caps.decode_assists = svm.has_decode_assists();
            caps.vmcb_clean = svm.has_vmcb_clean_bits();
        }
        // SAFETY: VM_CR exists on every CPU that reports SVM.
        caps.disabled_by_firmware = unsafe { rdmsr(msr::AMD_VM_CR) } & (1 << 4) != 0;
        return VirtCaps::Svm(caps);
    }
    VirtCaps::None
}

fn probe_vmx() -> VmxCaps {
    let mut caps = VmxCaps::default();
    // SAFETY: these MSRs exist on every CPU that reports VMX in CPUID.1:ECX.
    let (fc, basic) = unsafe { (rdmsr(msr::IA32_FEATURE_CONTROL), rdmsr(msr::IA32_VMX_BASIC)) };
    caps.disabled_by_firmware = fc & 1 != 0 && fc & (1 << 2) == 0;
    caps.true_ctls = basic & (1 << 55) != 0;
    let proc_msr = if caps.true_ctls {
        msr::IA32_VMX_TRUE_PROCBASED_CTLS
    } else {
        msr::IA32_VMX_PROCBASED_CTLS
    };
    // SAFETY: the primary controls MSR exists with VMX; TRUE only when BASIC bit 55 says so.
    let procbased = unsafe { rdmsr(proc_msr) };
    caps.secondary_ctls = (procbased >> 32) & (1 << 31) != 0;
    if caps.secondary_ctls {
        // SAFETY: PROCBASED_CTLS2 exists when secondary controls may be 1.
        let allowed1 = unsafe { rdmsr(msr::IA32_VMX_PROCBASED_CTLS2) } >> 32;
        caps.ept = allowed1 & (1 << 1) != 0;
        caps.vpid = allowed1 & (1 << 5) != 0;
        caps.unrestricted_guest = allowed1 & (1 << 7) != 0;
        if caps.ept || caps.vpid {
            // SAFETY: EPT_VPID_CAP exists when EPT or VPID may be enabled.
            let ev = unsafe { rdmsr(msr::IA32_VMX_EPT_VPID_CAP) };
            caps.ept_2m = ev & (1 << 16) != 0;
            caps.ept_1g = ev & (1 << 17) != 0;
        }
    }
    caps
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for VirtCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VirtCaps::Vmx(c) => write!(
                f,
                "VMX (Intel VT-x){}: EPT {} (2M {}, 1G {}), unrestricted guest {}, VPID {}, true controls {}",
                if c.disabled_by_firmware { " DISABLED by firmware" } else { "" },
                yes(c.ept), yes(c.ept_2m), yes(c.ept_1g), yes(c.unrestricted_guest), yes(c.vpid), yes(c.true_ctls)
            ),
            VirtCaps::Svm(c) => write!(
                f,
                "SVM (AMD-V){} rev {}: NPT {}, ASIDs {}, next-RIP save {}, flush-by-ASID {}, decode assists {}, VMCB clean bits {}",
                if c.disabled_by_firmware { " DISABLED by firmware" } else { "" },
                c.revision, yes(c.npt), c.asids, yes(c.nrip_save), yes(c.flush_by_asid), yes(c.decode_assists), yes(c.vmcb_clean)
            ),
            VirtCaps::None => write!(f, "none (no VMX or SVM in CPUID)"),
        }
    }
}
