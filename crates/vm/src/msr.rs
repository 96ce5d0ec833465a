//! The guest MSR allow-list: for each RDMSR/WRMSR, whether the backend holds
//! the MSR, Quercus answers it, or the guest gets #GP.
//!
//! Anything not listed here raises #GP, as a CPU without that MSR would: the
//! VMX capability MSRs (0x480..=0x491), IA32_FEATURE_CONTROL, AMD's VM_CR and
//! VM_HSAVE_PA, IA32_ARCH_CAPABILITIES, the MTRR ranges (IA32_MTRRCAP says
//! there are none) and every MSR this file does not name.
//!
//! | MSR | Read | Write |
//! |---|---|---|
//! | IA32_TSC 0x10 | [`MsrRead::Tsc`] | ignored (the guest's TSC offset is fixed by the hypervisor) |
//! | IA32_PLATFORM_ID 0x17 | 0 | #GP (read-only on hardware) |
//! | IA32_APIC_BASE 0x1B | [`MsrRead::Lapic`] | [`MsrWrite::Lapic`]: the SDM's transitions (disable, re-enable, x2APIC, a new base); illegal ones and reserved bits #GP |
//! | IA32_BIOS_SIGN_ID 0x8B | 0 (no microcode revision) | ignored (the "clear before CPUID" idiom) |
//! | IA32_MTRRCAP 0xFE | 0 (no MTRRs) | #GP (read-only) |
//! | IA32_SYSENTER_CS 0x174 | backend | backend |
//! | IA32_SYSENTER_ESP/EIP 0x175/0x176 | backend | backend; #GP if not canonical |
//! | IA32_MISC_ENABLE 0x1A0 | 1 (fast strings) | ignored |
//! | IA32_TSC_DEADLINE 0x6E0 | [`MsrRead::Lapic`] | [`MsrWrite::Lapic`] |
//! | x2APIC registers 0x800..=0x8FF | [`MsrRead::Lapic`] (#GP outside x2APIC mode) | [`MsrWrite::Lapic`] |
//! | IA32_PAT 0x277 | backend | backend; #GP if any entry is a reserved memory type |
//! | IA32_MTRR_DEF_TYPE 0x2FF | 0 (MTRRs off: the guest's PAT decides) | ignored |
//! | IA32_EFER 0xC000_0080 | backend | backend; #GP on any bit but SCE, LME, LMA, NXE, FFXSR (SVME included) |
//! | STAR, SFMASK 0xC000_0081/84 | backend | backend |
//! | LSTAR, CSTAR 0xC000_0082/83 | backend | backend; #GP if not canonical |
//! | FS_BASE, GS_BASE, KERNEL_GS_BASE 0xC000_0100..=0xC000_0102 | backend | backend; #GP if not canonical |
//! | IA32_TSC_AUX 0xC000_0103 | the pCPU's | the pCPU's (RDTSCP/RDPID read it there) |
//! | AMD HWCR 0xC001_0015 | TscFreqSel (bit 24) | ignored |
//! | AMD OSVW_ID_LENGTH, OSVW_STATUS 0xC001_0140/0141 | 0 (no OS-visible workarounds) | ignored |
//! | AMD NB_CFG 0xC001_001F | 0 | ignored |
//! | AMD PERF_CTL0-3, PERF_CTR0-3 0xC001_0000..=0xC001_0007 | [`MsrRead::AmdPerf`]: what was written (the counters do not count) | [`MsrWrite::AmdPerf`]; both #GP on Intel CPUs, which have no such MSRs |
//!
//! The canonical check covers the MSRs for which Intel's WRMSR raises #GP on a
//! non-canonical address (and CSTAR, which AMD uses the same way); several of
//! them are also VM-entry checks, so letting a bad value through would make
//! the next entry fail. It assumes 48-bit linear addresses: the CPUID policy
//! hides LA57. Mode-dependent EFER rules (changing LME with paging on) are
//! the caller's, which knows CR0.

/// The architectural numbers of the MSRs this policy names.
pub mod numbers {
    pub const IA32_TSC: u32 = 0x10;
    /// Speculation control (IBRS, STIBP, SSBD).
    pub const IA32_SPEC_CTRL: u32 = 0x48;
    /// Prediction command (IBPB), write-only.
    pub const IA32_PRED_CMD: u32 = 0x49;
    /// L1D flush command, write-only.
    pub const IA32_FLUSH_CMD: u32 = 0x10B;
    pub const IA32_PLATFORM_ID: u32 = 0x17;
    pub const IA32_APIC_BASE: u32 = 0x1B;
    pub const IA32_TSC_DEADLINE: u32 = 0x6E0;
    pub const X2APIC_FIRST: u32 = 0x800;
    pub const X2APIC_LAST: u32 = 0x8FF;
    pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
    pub const IA32_BIOS_SIGN_ID: u32 = 0x8B;
    pub const IA32_MTRRCAP: u32 = 0xFE;
    pub const IA32_ARCH_CAPABILITIES: u32 = 0x10A;
    pub const IA32_SYSENTER_CS: u32 = 0x174;
    pub const IA32_SYSENTER_ESP: u32 = 0x175;
    pub const IA32_SYSENTER_EIP: u32 = 0x176;
    pub const IA32_MISC_ENABLE: u32 = 0x1A0;
    pub const IA32_PAT: u32 = 0x277;
    pub const IA32_MTRR_DEF_TYPE: u32 = 0x2FF;
    pub const IA32_EFER: u32 = 0xC000_0080;
    pub const IA32_STAR: u32 = 0xC000_0081;
    pub const IA32_LSTAR: u32 = 0xC000_0082;
    pub const IA32_CSTAR: u32 = 0xC000_0083;
    pub const IA32_SFMASK: u32 = 0xC000_0084;
    pub const IA32_FS_BASE: u32 = 0xC000_0100;
    pub const IA32_GS_BASE: u32 = 0xC000_0101;
    pub const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;
    /// What RDTSCP and RDPID return (Linux keeps the CPU number there).
    pub const IA32_TSC_AUX: u32 = 0xC000_0103;
    pub const AMD_HWCR: u32 = 0xC001_0015;
    /// OS-visible workarounds: length of the status bits, and the status bits.
    pub const AMD_OSVW_ID_LENGTH: u32 = 0xC001_0140;
    /// Northbridge configuration (Linux reads it on AMD CPUs).
    pub const AMD_NB_CFG: u32 = 0xC001_001F;
    pub const AMD_OSVW_STATUS: u32 = 0xC001_0141;
    pub const AMD_VM_CR: u32 = 0xC001_0114;
    pub const AMD_VM_HSAVE_PA: u32 = 0xC001_0117;
    /// AMD's legacy performance event selects (4) and counters (4).
    pub const AMD_PERF_CTL0: u32 = 0xC001_0000;
    pub const AMD_PERF_CTR3: u32 = 0xC001_0007;
}

use numbers::*;

/// EFER bits a guest may set: SCE (0), LME (8), LMA (10), NXE (11), FFXSR (14).
/// SVME (12) is absent: no nested AMD-V.
pub const EFER_GUEST_BITS: u64 = (1 << 0) | (1 << 8) | (1 << 10) | (1 << 11) | (1 << 14);

/// AMD HWCR bit 24 (TscFreqSel): the TSC runs at the P0 frequency, as the
/// guest's TSC does (Linux warns of a firmware bug when it reads 0).
const HWCR_TSC_FREQ_SEL: u64 = 1 << 24;

/// IA32_MISC_ENABLE as the guest reads it: fast-string operations enabled.
const MISC_ENABLE_FAST_STRINGS: u64 = 1;

/// How to answer an RDMSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrRead {
    /// The MSR lives in the VMCS/VMCB (or its save area): read it through the
    /// backend.
    Backend,
    /// The guest TSC: the host TSC plus the vCPU's offset, which the backend
    /// knows.
    Tsc,
    /// Return this value in EDX:EAX.
    Value(u64),
    /// Read the MSR of the pCPU itself (the vCPU owns it); #GP if the pCPU
    /// has no such MSR.
    Host,
    /// The vCPU's local APIC answers (it may still refuse: #GP).
    Lapic,
    /// AMD legacy performance MSR `n` (0-3 PERF_CTL, 4-7 PERF_CTR), kept per
    /// vCPU on AMD CPUs; #GP on others.
    AmdPerf(u8),
    /// Inject #GP(0); the read has no other effect.
    Gp,
}

/// How to carry out a WRMSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrWrite {
    /// The value is valid: store it through the backend.
    Backend,
    /// Accept the instruction and drop the value.
    Ignore,
    /// Write the MSR of the pCPU itself (speculation controls, which act on the
    /// pCPU the vCPU owns); #GP if the pCPU refuses.
    Host,
    /// The vCPU's local APIC takes it (it may still refuse: #GP).
    Lapic,
    /// AMD legacy performance MSR `n` (see [`MsrRead::AmdPerf`]).
    AmdPerf(u8),
    /// Inject #GP(0); nothing is written.
    Gp,
}

/// The MSR policy of one VM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsrPolicy;

impl MsrPolicy {
    /// How to answer RDMSR of `msr`. Total over all `u32`.
    pub fn read(&self, msr: u32) -> MsrRead {
        match msr {
            IA32_SPEC_CTRL | IA32_TSC_AUX => MsrRead::Host,
            IA32_TSC => MsrRead::Tsc,
            IA32_APIC_BASE | IA32_TSC_DEADLINE | X2APIC_FIRST..=X2APIC_LAST => MsrRead::Lapic,
            IA32_MISC_ENABLE => MsrRead::Value(MISC_ENABLE_FAST_STRINGS),
            // HWCR.TscFreqSel: the TSC counts at the P0 frequency.
            AMD_HWCR => MsrRead::Value(HWCR_TSC_FREQ_SEL),
            IA32_PLATFORM_ID | IA32_BIOS_SIGN_ID | IA32_MTRRCAP | IA32_MTRR_DEF_TYPE
            | AMD_OSVW_ID_LENGTH | AMD_OSVW_STATUS | AMD_NB_CFG => MsrRead::Value(0),
            AMD_PERF_CTL0..=AMD_PERF_CTR3 => MsrRead::AmdPerf((msr - AMD_PERF_CTL0) as u8),
            m if is_backend_msr(m) => MsrRead::Backend,
            _ => MsrRead::Gp,
        }
    }

    /// How to carry out WRMSR of `value` to `msr`. Total over all inputs.
    pub fn write(&self, msr: u32, value: u64) -> MsrWrite {
        match msr {
            // Speculation controls the CPU advertises (CPUID 7.0 EDX): the
            // pCPU belongs to this vCPU, so the guest's mitigations act on it.
            IA32_SPEC_CTRL | IA32_PRED_CMD | IA32_FLUSH_CMD => MsrWrite::Host,
            // RDTSCP/RDPID read the pCPU's own TSC_AUX, which belongs to this
            // vCPU (the hypervisor does not use it); reserved bits #GP there.
            IA32_TSC_AUX => MsrWrite::Host,
            IA32_TSC | IA32_BIOS_SIGN_ID | IA32_MISC_ENABLE | IA32_MTRR_DEF_TYPE | AMD_HWCR
            | AMD_OSVW_ID_LENGTH | AMD_OSVW_STATUS | AMD_NB_CFG => MsrWrite::Ignore,
            IA32_APIC_BASE | IA32_TSC_DEADLINE | X2APIC_FIRST..=X2APIC_LAST => MsrWrite::Lapic,
            IA32_EFER => backend_if(value & !EFER_GUEST_BITS == 0),
            IA32_PAT => backend_if(pat_valid(value)),
            IA32_SYSENTER_ESP | IA32_SYSENTER_EIP | IA32_LSTAR | IA32_CSTAR | IA32_FS_BASE
            | IA32_GS_BASE | IA32_KERNEL_GS_BASE => backend_if(is_canonical(value)),
            IA32_SYSENTER_CS | IA32_STAR | IA32_SFMASK => MsrWrite::Backend,
            AMD_PERF_CTL0..=AMD_PERF_CTR3 => MsrWrite::AmdPerf((msr - AMD_PERF_CTL0) as u8),
            _ => MsrWrite::Gp,
        }
    }
}

/// MSRs held in the VMCS/VMCB whatever the value.
fn is_backend_msr(msr: u32) -> bool {
    matches!(
        msr,
        IA32_EFER
            | IA32_PAT
            | IA32_SYSENTER_CS
            | IA32_SYSENTER_ESP
            | IA32_SYSENTER_EIP
            | IA32_STAR
            | IA32_LSTAR
            | IA32_CSTAR
            | IA32_SFMASK
            | IA32_FS_BASE
            | IA32_GS_BASE
            | IA32_KERNEL_GS_BASE
    )
}

fn backend_if(valid: bool) -> MsrWrite {
    if valid {
        MsrWrite::Backend
    } else {
        MsrWrite::Gp
    }
}

/// Every PAT entry is one of UC (0), WC (1), WT (4), WP (5), WB (6), UC- (7).
fn pat_valid(value: u64) -> bool {
    value
        .to_le_bytes()
        .iter()
        .all(|&t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
}

/// Bits 63:47 all equal (48-bit linear addresses).
fn is_canonical(addr: u64) -> bool {
    let top = addr >> 47;
    top == 0 || top == (1 << 17) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: MsrPolicy = MsrPolicy;

    const HOSTILE: [u64; 8] = [
        0,
        1,
        u64::MAX,
        0x8000_0000_0000_0000,
        0x0000_8000_0000_0000,
        0xFFFF_7FFF_FFFF_FFFF,
        0x5555_5555_5555_5555,
        0xAAAA_AAAA_AAAA_AAAA,
    ];

    #[test]
    fn speculation_controls_go_to_the_pcpu() {
        let p = MsrPolicy;
        assert_eq!(p.read(numbers::IA32_SPEC_CTRL), MsrRead::Host);
        for msr in [
            numbers::IA32_SPEC_CTRL,
            numbers::IA32_PRED_CMD,
            numbers::IA32_FLUSH_CMD,
        ] {
            assert_eq!(p.write(msr, 1), MsrWrite::Host, "{msr:#x}");
        }
        assert_eq!(p.read(numbers::IA32_PRED_CMD), MsrRead::Gp, "write-only");
        // TSC_AUX (Linux's AP bring-up writes it before it has an IDT).
        assert_eq!(p.read(numbers::IA32_TSC_AUX), MsrRead::Host);
        assert_eq!(p.write(numbers::IA32_TSC_AUX, 1), MsrWrite::Host);
    }

    #[test]
    fn numbers_match_the_architecture() {
        assert_eq!(
            [
                IA32_TSC,
                IA32_PLATFORM_ID,
                IA32_APIC_BASE,
                IA32_BIOS_SIGN_ID,
                IA32_MTRRCAP
            ],
            [0x10, 0x17, 0x1B, 0x8B, 0xFE]
        );
        assert_eq!(
            [
                IA32_SYSENTER_CS,
                IA32_SYSENTER_ESP,
                IA32_SYSENTER_EIP,
                IA32_MISC_ENABLE
            ],
            [0x174, 0x175, 0x176, 0x1A0]
        );
        assert_eq!([IA32_PAT, IA32_MTRR_DEF_TYPE], [0x277, 0x2FF]);
        assert_eq!(
            [IA32_EFER, IA32_STAR, IA32_LSTAR, IA32_CSTAR, IA32_SFMASK],
            [
                0xC000_0080,
                0xC000_0081,
                0xC000_0082,
                0xC000_0083,
                0xC000_0084
            ]
        );
        assert_eq!(
            [IA32_FS_BASE, IA32_GS_BASE, IA32_KERNEL_GS_BASE],
            [0xC000_0100, 0xC000_0101, 0xC000_0102]
        );
        assert_eq!(
            [AMD_HWCR, AMD_VM_CR, AMD_VM_HSAVE_PA],
            [0xC001_0015, 0xC001_0114, 0xC001_0117]
        );
    }

    #[test]
    fn backend_msrs_read_through_backend() {
        for msr in [
            IA32_EFER,
            IA32_PAT,
            IA32_SYSENTER_CS,
            IA32_SYSENTER_ESP,
            IA32_SYSENTER_EIP,
            IA32_STAR,
            IA32_LSTAR,
            IA32_CSTAR,
            IA32_SFMASK,
            IA32_FS_BASE,
            IA32_GS_BASE,
            IA32_KERNEL_GS_BASE,
        ] {
            assert_eq!(P.read(msr), MsrRead::Backend, "{msr:#x}");
        }
    }

    #[test]
    fn software_msrs_read_fixed_values() {
        assert_eq!(P.read(IA32_TSC), MsrRead::Tsc);
        assert_eq!(P.read(IA32_MISC_ENABLE), MsrRead::Value(1));
        for msr in [
            IA32_PLATFORM_ID,
            IA32_BIOS_SIGN_ID,
            IA32_MTRRCAP,
            IA32_MTRR_DEF_TYPE,
            AMD_OSVW_ID_LENGTH,
            AMD_OSVW_STATUS,
            AMD_NB_CFG,
        ] {
            assert_eq!(P.read(msr), MsrRead::Value(0), "{msr:#x}");
        }
        assert_eq!(P.read(AMD_HWCR), MsrRead::Value(1 << 24), "TscFreqSel");
        assert_eq!(P.write(AMD_OSVW_STATUS, u64::MAX), MsrWrite::Ignore);
    }

    #[test]
    fn forbidden_and_unknown_msrs_gp_both_ways() {
        let mut forbidden = alloc::vec![
            IA32_FEATURE_CONTROL,
            IA32_ARCH_CAPABILITIES,
            AMD_VM_CR,
            AMD_VM_HSAVE_PA,
            0x3B,        // TSC_ADJUST
            0x200,       // MTRR_PHYSBASE0
            0x250,       // MTRR_FIX64K
            0xC001_0008, // past the legacy performance MSRs
            0x4000_0000,
            0xFFFF_FFFF,
        ];
        forbidden.extend(0x480..=0x491);
        for msr in forbidden {
            assert_eq!(P.read(msr), MsrRead::Gp, "{msr:#x}");
            for v in HOSTILE {
                assert_eq!(P.write(msr, v), MsrWrite::Gp, "{msr:#x} <- {v:#x}");
            }
        }
    }

    #[test]
    fn ignored_writes() {
        for msr in [
            IA32_TSC,
            IA32_BIOS_SIGN_ID,
            IA32_MISC_ENABLE,
            IA32_MTRR_DEF_TYPE,
            AMD_HWCR,
        ] {
            for v in HOSTILE {
                assert_eq!(P.write(msr, v), MsrWrite::Ignore, "{msr:#x} <- {v:#x}");
            }
        }
    }

    #[test]
    fn read_only_software_msrs_gp_on_write() {
        for msr in [IA32_PLATFORM_ID, IA32_MTRRCAP] {
            for v in HOSTILE {
                assert_eq!(P.write(msr, v), MsrWrite::Gp, "{msr:#x} <- {v:#x}");
            }
        }
    }

    #[test]
    fn apic_msrs_go_to_the_lapic() {
        for msr in [IA32_APIC_BASE, IA32_TSC_DEADLINE, 0x800, 0x830, 0x8FF] {
            assert_eq!(P.read(msr), MsrRead::Lapic, "{msr:#x}");
            for v in HOSTILE {
                assert_eq!(P.write(msr, v), MsrWrite::Lapic, "{msr:#x}");
            }
        }
        assert_eq!(P.read(0x7FF), MsrRead::Gp);
        assert_eq!(P.read(0x900), MsrRead::Gp);
    }

    #[test]
    fn efer_accepts_only_guest_bits() {
        for v in [0, 1, 0x100, 0x500, 0xD01, 0x4D01, EFER_GUEST_BITS] {
            assert_eq!(P.write(IA32_EFER, v), MsrWrite::Backend, "{v:#x}");
        }
        // SVME, LMSLE, TCE, reserved bits, all bits.
        for v in [
            1 << 12,
            0xD01 | 1 << 12,
            1 << 13,
            1 << 15,
            1 << 1,
            1 << 63,
            u64::MAX,
        ] {
            assert_eq!(P.write(IA32_EFER, v), MsrWrite::Gp, "{v:#x}");
        }
    }

    #[test]
    fn pat_entries_must_be_valid_memory_types() {
        // Power-on value and Linux's.
        assert_eq!(P.write(IA32_PAT, 0x0007_0406_0007_0406), MsrWrite::Backend);
        assert_eq!(P.write(IA32_PAT, 0x0007_0106_0007_0406), MsrWrite::Backend);
        assert_eq!(P.write(IA32_PAT, 0), MsrWrite::Backend);
        assert_eq!(P.write(IA32_PAT, 0x0706_0504_0100_0706), MsrWrite::Backend);
        for (i, bad) in [2u64, 3, 8, 0x10, 0xFF].into_iter().enumerate() {
            let v = 0x0606_0606_0606_0606 & !(0xFF << (8 * i)) | bad << (8 * i);
            assert_eq!(P.write(IA32_PAT, v), MsrWrite::Gp, "{v:#x}");
        }
        assert_eq!(P.write(IA32_PAT, 0x0206_0606_0606_0606), MsrWrite::Gp);
        assert_eq!(P.write(IA32_PAT, u64::MAX), MsrWrite::Gp);
    }

    #[test]
    fn address_msrs_must_be_canonical() {
        for msr in [
            IA32_SYSENTER_ESP,
            IA32_SYSENTER_EIP,
            IA32_LSTAR,
            IA32_CSTAR,
            IA32_FS_BASE,
            IA32_GS_BASE,
            IA32_KERNEL_GS_BASE,
        ] {
            for v in [0, 0x7FFF_FFFF_FFFF, 0xFFFF_8000_0000_0000, u64::MAX] {
                assert_eq!(P.write(msr, v), MsrWrite::Backend, "{msr:#x} <- {v:#x}");
            }
            for v in [
                0x8000_0000_0000,
                0xFFFF_7FFF_FFFF_FFFF,
                1 << 63,
                0x00FF_8000_0000_0000,
            ] {
                assert_eq!(P.write(msr, v), MsrWrite::Gp, "{msr:#x} <- {v:#x}");
            }
        }
    }

    #[test]
    fn unchecked_backend_msrs_take_any_value() {
        for msr in [IA32_SYSENTER_CS, IA32_STAR, IA32_SFMASK] {
            for v in HOSTILE {
                assert_eq!(P.write(msr, v), MsrWrite::Backend, "{msr:#x} <- {v:#x}");
            }
        }
    }

    #[test]
    fn amd_legacy_performance_msrs_are_named() {
        for (i, msr) in (AMD_PERF_CTL0..=AMD_PERF_CTR3).enumerate() {
            assert_eq!(P.read(msr), MsrRead::AmdPerf(i as u8));
            assert_eq!(P.write(msr, u64::MAX), MsrWrite::AmdPerf(i as u8));
        }
        assert_eq!(P.read(AMD_PERF_CTR3 + 1), MsrRead::Gp);
        assert_eq!(P.read(AMD_PERF_CTL0 - 1), MsrRead::Gp);
    }
}
