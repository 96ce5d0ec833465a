//! CPUID virtualization: which native CPUID bits a guest sees, which are hidden
//! and which Quercus answers itself.
//!
//! The policy starts from what the physical CPU reports for the same
//! leaf/subleaf and edits it, so every feature the hypervisor does not
//! virtualize or forbid passes through unchanged. Each rule below is one
//! `match` arm in [`CpuidPolicy::virtualize`]:
//!
//! | Leaf | Rule | Why |
//! |---|---|---|
//! | 1 | ECX.VMX (5) cleared | no nested VT-x |
//! | 1 | ECX.MONITOR (3) cleared | MWAIT would idle the pCPU under the guest; guests HLT instead |
//! | 1 | ECX.x2APIC (21) set | the virtual LAPIC has x2APIC mode, whatever the host has |
//! | 1 | ECX.TSC-deadline (24) set | the virtual LAPIC timer has TSC-deadline mode |
//! | 1 | ECX.hypervisor (31) set | tells the guest to look at leaf 0x4000_0000 |
//! | 1 | EBX\[31:24\] = vCPU id, EBX\[23:16\] = vCPU count | the guest's own topology, not the host's |
//! | 5 | all zero | MONITOR/MWAIT is hidden (see leaf 1) |
//! | 6 | all zero | thermal and power management belong to the host |
//! | 1 | ECX: DTES64 (2), DS-CPL (4), EST (7), TM2 (8), xTPR (14), PDCM (15) cleared; EDX: DS (21), ACPI (22), TM (29), PBE (31) cleared | their MSRs (debug store, thermal, perf capabilities, misc) #GP: a feature shown must have its MSRs |
//! | 7.0 | EBX: TSC_ADJUST (1), SGX (2), RDT-M (12), RDT-A (15), Intel PT (25) cleared; ECX: WAITPKG (5), CET-SS (7), LA57 (16), SGX-LC (30), PKS (31) cleared; EDX: arch LBR (19), CET-IBT (20), ARCH_CAPABILITIES (29), CORE_CAPABILITIES (30) cleared | keeps CPUID consistent with the MSR policy: those MSRs #GP, and canonical checks assume 4-level paging |
//! | 0xA, 0xF, 0x10, 0x12, 0x14 | all zero | no virtual PMU, RDT, SGX or processor trace: their MSRs #GP |
//! | 0x8000_0001 | ECX: IBS (10), LWP (15), NodeId (19), PerfCtrExtCore (23), PerfCtrExtNB (24), PerfCtrExtLLC (28) cleared | their MSRs #GP (the four legacy AMD counters 0xC001_0000..7 exist: see msr.rs) |
//! | 0x8000_0007 | EDX: only invariant TSC (8) kept | P-state and boost MSRs belong to the host |
//! | 0x8000_0008 | EBX.VIRT_SSBD (25) cleared | VIRT_SPEC_CTRL #GPs |
//! | 0xB, 0x1F | native, EDX = vCPU id | the x2APIC id of the level is this vCPU's |
//! | 0xD.1 | EAX.XSAVES (3) cleared | IA32_XSS is not virtualized (it #GPs); guests use XSAVEC/XSAVEOPT |
//! | 0x15 | EBX/EAX = TSC kHz / 100,000 (EAX the largest power of ten that keeps 100,000 * EBX below 2^32: Linux multiplies them in 32 bits), ECX = 100 MHz | the TSC as the hypervisor calibrated it, over a "crystal" that is the vLAPIC timer's clock: a guest needs no calibration (the host's own leaf may be wrong: Bochs claims 2.4 GHz, its TSC runs at 200 MHz) |
//! | 0x16 | EAX = EBX = TSC MHz, ECX = 100 (bus MHz) | the same frequencies for guests that read this leaf |
//! | 0x4000_0000 | EAX = 0x4000_0010, signature "QuercusHV" | hypervisor identification |
//! | 0x4000_0001 | EAX:EBX = this vCPU's VM exits so far (this one included), ECX:EDX = TSC (filled in by the dispatcher) | statistics for benchmarks in the guest, readable from user space through Linux's /dev/cpu/N/cpuid |
//! | 0x4000_0002..=0x4000_000F | all zero | reserved for future Quercus interfaces |
//! | 1, 0x8000_0001 | EDX: MCE and MCA cleared | no virtual machine-check architecture |
//! | 0x4000_0010 | EAX = TSC kHz, EBX = LAPIC bus kHz | timing leaf (VMware/KVM convention) |
//! | other 0x4000_0000..=0x4FFF_FFFF | all zero | the software-reserved range; hides an outer hypervisor's leaves when Quercus itself runs nested |
//! | 0x8000_0001 | ECX.SVM (2) cleared | no nested AMD-V |
//! | 0x8000_0001 | ECX.MONITORX (29) cleared | MONITORX/MWAITX exit with MONITOR/MWAIT (#UD); Linux would use them for delays |
//! | 0x8000_000A | all zero | SVM features: none without SVM |
//! | 0x8000_001F | all zero | AMD memory encryption (SME/SEV): the guest has none, and a guest that sees it reads MSRs (SYSCFG, SEV_STATUS) that #GP before it has an IDT |

/// Highest leaf of the Quercus hypervisor range (EAX of leaf 0x4000_0000).
pub const HV_MAX_LEAF: u32 = 0x4000_0010;

/// The vendor signature of leaf 0x4000_0000, in EBX, ECX, EDX order.
pub const HV_SIGNATURE: [u8; 12] = *b"QuercusHV\0\0\0";

const LEAF_FEATURES: u32 = 0x1;
const LEAF_MONITOR: u32 = 0x5;
const LEAF_THERMAL_POWER: u32 = 0x6;
const LEAF_EXT_FEATURES: u32 = 0x7;
const LEAF_TOPOLOGY: u32 = 0xB;
const LEAF_TOPOLOGY_V2: u32 = 0x1F;
const LEAF_XSAVE: u32 = 0xD;
/// Leaf 0xD.1 EAX: XSAVES/XRSTORS and IA32_XSS (not virtualized: the MSR #GPs).
const XSAVES: u32 = 1 << 3;
const LEAF_TSC_CRYSTAL: u32 = 0x15;
const LEAF_FREQUENCY: u32 = 0x16;
const LEAF_HV_BASE: u32 = 0x4000_0000;
/// The statistics leaf: exits of the vCPU and the TSC (see the module table).
pub const LEAF_HV_STATS: u32 = 0x4000_0001;
const LEAF_HV_TIMING: u32 = 0x4000_0010;
const LEAF_HV_RANGE_END: u32 = 0x4FFF_FFFF;
const LEAF_AMD_FEATURES: u32 = 0x8000_0001;
/// Machine-check exception and architecture (leaf 1 and 0x8000_0001 EDX).
const EDX_MCE: u32 = 1 << 7;
const EDX_MCA: u32 = 1 << 14;
const LEAF_SVM: u32 = 0x8000_000A;
const LEAF_AMD_MEM_ENCRYPT: u32 = 0x8000_001F;
const LEAF_AMD_POWER: u32 = 0x8000_0007;
const LEAF_AMD_ADDRESS: u32 = 0x8000_0008;
/// Leaves of features without virtual MSRs: PMU, RDT monitoring and
/// allocation, SGX, processor trace.
const LEAF_PMU: u32 = 0xA;
const LEAF_RDT_MON: u32 = 0xF;
const LEAF_RDT_ALLOC: u32 = 0x10;
const LEAF_SGX: u32 = 0x12;
const LEAF_PT: u32 = 0x14;
/// Leaf 1: features whose MSRs #GP.
const LEAF1_ECX_HIDDEN: u32 = (1 << 2) | (1 << 4) | (1 << 7) | (1 << 8) | (1 << 14) | (1 << 15);
const LEAF1_EDX_HIDDEN: u32 = (1 << 21) | (1 << 22) | (1 << 29) | (1 << 31);
/// Leaf 7.0: features whose MSRs #GP.
const LEAF7_EBX_HIDDEN: u32 = (1 << 1) | (1 << 2) | (1 << 12) | (1 << 15) | (1 << 25);
const LEAF7_ECX_HIDDEN: u32 = (1 << 5) | (1 << 7) | (1 << 16) | (1 << 30) | (1 << 31);
const LEAF7_EDX_HIDDEN: u32 = (1 << 19) | (1 << 20) | (1 << 29) | (1 << 30);
/// Leaf 0x8000_0001 ECX: IBS, LWP, NodeId, the extended counter sets.
const AMD_ECX_HIDDEN: u32 = (1 << 10) | (1 << 15) | (1 << 19) | (1 << 23) | (1 << 24) | (1 << 28);
/// Leaf 0x8000_0007 EDX: invariant TSC.
const AMD_INVARIANT_TSC: u32 = 1 << 8;
/// Leaf 0x8000_0008 EBX: VIRT_SSBD.
const AMD_VIRT_SSBD: u32 = 1 << 25;

const EAX: usize = 0;
const EBX: usize = 1;
const ECX: usize = 2;
const EDX: usize = 3;

// Leaf 1 ECX.
const MONITOR: u32 = 1 << 3;
const VMX: u32 = 1 << 5;
const X2APIC: u32 = 1 << 21;
const TSC_DEADLINE: u32 = 1 << 24;
const HYPERVISOR: u32 = 1 << 31;

// Leaf 7 subleaf 0.
const EBX_TSC_ADJUST: u32 = 1 << 1;
const ECX_LA57: u32 = 1 << 16;
const EDX_ARCH_CAPABILITIES: u32 = 1 << 29;

// Leaf 0x8000_0001 ECX.
const SVM: u32 = 1 << 2;
/// MONITORX/MWAITX: intercepted with MONITOR/MWAIT, so hidden like them.
const MWAITX: u32 = 1 << 29;

/// What one vCPU of one VM is told about itself through CPUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidPolicy {
    /// This vCPU's index in its VM; also its (initial) APIC id.
    pub vcpu_id: u32,
    /// How many vCPUs the VM has.
    pub vcpu_count: u32,
    /// The guest TSC frequency in kHz, reported in leaf 0x4000_0010.
    pub tsc_khz: u32,
}

impl CpuidPolicy {
    /// Whether `leaf` has bits [`CpuidPolicy::reflect_guest_cr4`] sets.
    pub fn mirrors_cr4(leaf: u32) -> bool {
        matches!(leaf, LEAF_FEATURES | LEAF_EXT_FEATURES)
    }

    /// Sets the bits of CPUID that mirror the calling CPU's CR4 from the
    /// guest's CR4, not the host's: OSXSAVE (leaf 1 ECX bit 27) and OSPKE
    /// (leaf 7.0 ECX bit 4). A guest that has not enabled XSAVE must not be told
    /// it did (glibc would run XGETBV and take #UD).
    pub fn reflect_guest_cr4(leaf: u32, subleaf: u32, regs: &mut [u32; 4], guest_cr4: u64) {
        let set = |reg: &mut u32, bit: u32, on: bool| {
            if on {
                *reg |= 1 << bit;
            } else {
                *reg &= !(1 << bit);
            }
        };
        match (leaf, subleaf) {
            (LEAF_FEATURES, _) => set(&mut regs[ECX], 27, guest_cr4 & (1 << 18) != 0),
            (LEAF_EXT_FEATURES, 0) => set(&mut regs[ECX], 4, guest_cr4 & (1 << 22) != 0),
            _ => {}
        }
    }

    /// The guest's CPUID answer for `leaf`/`subleaf`, given the physical
    /// CPU's answer `native` for the same input; `[EAX, EBX, ECX, EDX]`.
    ///
    /// Total for every input: leaves without a rule return `native`
    /// unchanged (the hardware's own answer for out-of-range leaves included).
    pub fn virtualize(&self, leaf: u32, subleaf: u32, native: [u32; 4]) -> [u32; 4] {
        let mut r = native;
        match leaf {
            LEAF_FEATURES => {
                // The vLAPIC provides x2APIC mode and the TSC-deadline timer
                // whatever the host has.
                r[ECX] &= !(VMX | MONITOR | LEAF1_ECX_HIDDEN);
                r[ECX] |= HYPERVISOR | X2APIC | TSC_DEADLINE;
                // No virtual machine-check architecture: its MSRs #GP.
                r[EDX] &= !(EDX_MCE | EDX_MCA | LEAF1_EDX_HIDDEN);
                // The initial APIC id and the logical-processor count are 8-bit
                // fields: an id above 255 is only in leaf 0xB (x2APIC), so keep
                // its low byte here; a count above 255 saturates.
                let apic_id = self.vcpu_id & 0xFF;
                let count = self.vcpu_count.min(0xFF);
                r[EBX] = (r[EBX] & 0x0000_FFFF) | (apic_id << 24) | (count << 16);
            }
            LEAF_MONITOR | LEAF_THERMAL_POWER | LEAF_SVM | LEAF_AMD_MEM_ENCRYPT | LEAF_PMU
            | LEAF_RDT_MON | LEAF_RDT_ALLOC | LEAF_SGX | LEAF_PT => r = [0; 4],
            LEAF_EXT_FEATURES if subleaf == 0 => {
                r[EBX] &= !(EBX_TSC_ADJUST | LEAF7_EBX_HIDDEN);
                r[ECX] &= !(ECX_LA57 | LEAF7_ECX_HIDDEN);
                r[EDX] &= !(EDX_ARCH_CAPABILITIES | LEAF7_EDX_HIDDEN);
            }
            LEAF_AMD_POWER => r[EDX] &= AMD_INVARIANT_TSC,
            LEAF_AMD_ADDRESS => r[EBX] &= !AMD_VIRT_SSBD,
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => r[EDX] = self.vcpu_id,
            LEAF_XSAVE if subleaf == 1 => r[EAX] &= !XSAVES,
            // TSC = crystal * EBX / EAX: the crystal is the vLAPIC's bus clock.
            LEAF_TSC_CRYSTAL if self.tsc_khz != 0 => {
                let (den, num) = tsc_ratio(self.tsc_khz);
                r = [den, num, crate::vlapic::BUS_HZ as u32, 0];
            }
            LEAF_FREQUENCY if self.tsc_khz != 0 => {
                let mhz = (self.tsc_khz / 1000).min(0xFFFF);
                r = [mhz, mhz, (crate::vlapic::BUS_HZ / 1_000_000) as u32, 0];
            }
            LEAF_HV_BASE => {
                r = [HV_MAX_LEAF, sig_word(0), sig_word(1), sig_word(2)];
            }
            LEAF_HV_TIMING => {
                r = [0; 4];
                r[EAX] = self.tsc_khz;
                r[EBX] = (crate::vlapic::BUS_HZ / 1000) as u32;
            }
            // Everything else in the software-reserved range, including
            // 0x4000_0001..=0x4000_000F.
            l if (LEAF_HV_BASE..=LEAF_HV_RANGE_END).contains(&l) => r = [0; 4],
            LEAF_AMD_FEATURES => {
                r[ECX] &= !(SVM | MWAITX | AMD_ECX_HIDDEN);
                r[EDX] &= !(EDX_MCE | EDX_MCA);
            }
            _ => {}
        }
        r
    }
}

/// Leaf 0x15's EAX (denominator) and EBX (numerator) for a TSC of `tsc_khz`
/// over the vLAPIC's crystal. Linux computes `crystal_khz * EBX / EAX` in 32
/// bits (`native_calibrate_tsc`), so `crystal_khz * EBX` must stay below
/// 2^32: the denominator is the largest power of ten for which it does
/// (a 200 MHz TSC is 20,000 / 10,000; 2.4 GHz is 24,000 / 1,000).
fn tsc_ratio(tsc_khz: u32) -> (u32, u32) {
    let crystal_khz = crate::vlapic::BUS_HZ / 1000;
    let max_num = u64::from(u32::MAX) / crystal_khz;
    let mut den = crystal_khz;
    loop {
        // EBX / EAX = tsc_khz / crystal_khz, rounded to the nearest.
        let num = (u64::from(tsc_khz) * den + crystal_khz / 2) / crystal_khz;
        if num <= max_num || den == 1 {
            return (den as u32, num.min(max_num) as u32);
        }
        den /= 10;
    }
}

/// Word `i` (0..3) of [`HV_SIGNATURE`], little-endian as CPUID returns it.
fn sig_word(i: usize) -> u32 {
    let b = &HV_SIGNATURE;
    u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [u32; 4] = [u32::MAX; 4];
    const POLICY: CpuidPolicy = CpuidPolicy {
        vcpu_id: 3,
        vcpu_count: 4,
        tsc_khz: 2_400_000,
    };

    fn regs_to_bytes(r: [u32; 3]) -> [u8; 12] {
        let mut out = [0u8; 12];
        for (i, w) in r.iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    #[test]
    fn leaf1_hides_vmx_monitor_and_offers_hypervisor_x2apic_tsc_deadline() {
        let r = POLICY.virtualize(1, 0, [0x000A_0655, 0xFFFF_1234, 0x7FFF_FFFF, 0xDEAD_BEEF]);
        assert_eq!(r[EAX], 0x000A_0655);
        assert_eq!(r[ECX] & (VMX | MONITOR), 0);
        let offered = HYPERVISOR | X2APIC | TSC_DEADLINE;
        assert_eq!(r[ECX] & offered, offered);
        assert_eq!(r[ECX] | VMX | MONITOR | LEAF1_ECX_HIDDEN, u32::MAX);
        assert_eq!(r[ECX] & (1 << 15), 0, "PDCM: IA32_PERF_CAPABILITIES #GPs");
        let bare = POLICY.virtualize(1, 0, [0; 4]);
        assert_eq!(bare[ECX], offered, "offered even when the host lacks them");
        assert_eq!(
            r[EDX],
            0xDEAD_BEEF & !(EDX_MCE | EDX_MCA | LEAF1_EDX_HIDDEN),
            "no virtual MCA, debug store or thermal MSRs"
        );
        assert_eq!(r[EBX], 0x0304_1234);
    }

    #[test]
    fn leaf1_clamps_huge_ids_and_counts() {
        let p = CpuidPolicy {
            vcpu_id: u32::MAX,
            vcpu_count: u32::MAX,
            tsc_khz: 0,
        };
        let r = p.virtualize(1, u32::MAX, [0; 4]);
        assert_eq!(r[EBX], 0xFFFF_0000);
        let p = CpuidPolicy {
            vcpu_id: 0x100,
            vcpu_count: 0,
            tsc_khz: 0,
        };
        assert_eq!(p.virtualize(1, 0, ALL)[EBX], 0x0000_FFFF);
    }

    #[test]
    fn osxsave_and_ospke_follow_the_guests_cr4() {
        let mut r = [0, 0, 1 << 27, 0];
        CpuidPolicy::reflect_guest_cr4(1, 0, &mut r, 0);
        assert_eq!(r[ECX] & (1 << 27), 0, "host OSXSAVE must not leak");
        CpuidPolicy::reflect_guest_cr4(1, 0, &mut r, 1 << 18);
        assert_ne!(r[ECX] & (1 << 27), 0);
        let mut r7 = [0, 0, 0, 0];
        CpuidPolicy::reflect_guest_cr4(7, 0, &mut r7, 1 << 22);
        assert_eq!(r7[ECX], 1 << 4);
        let mut other = [1, 2, 3, 4];
        CpuidPolicy::reflect_guest_cr4(7, 1, &mut other, u64::MAX);
        assert_eq!(other, [1, 2, 3, 4]);
    }

    #[test]
    fn leaf1_ignores_subleaf() {
        assert_eq!(
            POLICY.virtualize(1, 0, ALL),
            POLICY.virtualize(1, 0xFFFF_FFFF, ALL)
        );
    }

    #[test]
    fn monitor_thermal_and_svm_leaves_are_zero() {
        for leaf in [5, 6, 0x8000_000A, 0x8000_001F] {
            for sub in [0, 1, u32::MAX] {
                assert_eq!(POLICY.virtualize(leaf, sub, ALL), [0; 4], "leaf {leaf:#x}");
            }
        }
    }

    #[test]
    fn leaf7_subleaf0_hides_msrs_the_policy_refuses() {
        let r = POLICY.virtualize(7, 0, ALL);
        assert_eq!(r[EAX], u32::MAX);
        assert_eq!(r[EBX], !(EBX_TSC_ADJUST | LEAF7_EBX_HIDDEN));
        assert_eq!(r[ECX], !(ECX_LA57 | LEAF7_ECX_HIDDEN));
        assert_eq!(r[ECX] & (1 << 31), 0, "PKS: IA32_PKRS #GPs");
        assert_eq!(r[EDX], !(EDX_ARCH_CAPABILITIES | LEAF7_EDX_HIDDEN));
        // Other subleaves are not feature flags of the same layout.
        assert_eq!(POLICY.virtualize(7, 1, ALL), ALL);
    }

    #[test]
    fn topology_leaves_keep_native_but_report_own_x2apic_id() {
        for leaf in [0xB, 0x1F] {
            for sub in [0, 1, 2, u32::MAX] {
                let r = POLICY.virtualize(leaf, sub, [1, 2, 3, 99]);
                assert_eq!(r, [1, 2, 3, 3]);
            }
        }
        let p = CpuidPolicy {
            vcpu_id: u32::MAX,
            ..POLICY
        };
        assert_eq!(p.virtualize(0xB, 0, [0; 4])[EDX], u32::MAX);
    }

    #[test]
    fn hypervisor_base_leaf_has_signature_and_max_leaf() {
        let r = POLICY.virtualize(0x4000_0000, 7, ALL);
        assert_eq!(r[EAX], 0x4000_0010);
        assert_eq!(&regs_to_bytes([r[EBX], r[ECX], r[EDX]]), b"QuercusHV\0\0\0");
        assert_eq!(r[EBX], u32::from_le_bytes(*b"Quer"));
        assert_eq!(r[ECX], u32::from_le_bytes(*b"cusH"));
        assert_eq!(r[EDX], u32::from_le_bytes(*b"V\0\0\0"));
    }

    #[test]
    fn hypervisor_reserved_leaves_are_zero() {
        for leaf in 0x4000_0001..=0x4000_000F {
            assert_eq!(POLICY.virtualize(leaf, 0, ALL), [0; 4], "leaf {leaf:#x}");
        }
        for leaf in [
            0x4000_0011,
            0x4000_0100,
            0x4000_FFFF,
            0x4001_0000,
            0x4FFF_FFFF,
        ] {
            assert_eq!(
                POLICY.virtualize(leaf, u32::MAX, ALL),
                [0; 4],
                "leaf {leaf:#x}"
            );
        }
    }

    #[test]
    fn xsave_leaf_hides_xsaves_only() {
        assert_eq!(
            POLICY.virtualize(0xD, 1, ALL),
            [!XSAVES, u32::MAX, u32::MAX, u32::MAX]
        );
        assert_eq!(POLICY.virtualize(0xD, 0, ALL), ALL);
    }

    #[test]
    fn tsc_leaves_report_the_calibrated_frequency_over_the_lapic_clock() {
        let [den, num, crystal, _] = POLICY.virtualize(0x15, 0, ALL);
        let tsc_hz = u64::from(crystal) * u64::from(num) / u64::from(den);
        assert_eq!(tsc_hz, 2_400_000_000);
        assert_eq!(u64::from(crystal), crate::vlapic::BUS_HZ);
        assert_eq!(POLICY.virtualize(0x16, 0, ALL), [2400, 2400, 100, 0]);
        // Linux computes crystal kHz * EBX / EAX in 32 bits: no overflow, and
        // the rate within 0.01% (Bochs's 200.004 MHz TSC came out as 28.2 MHz
        // when EAX was 100,000).
        for khz in [200_004u32, 1_000_000, 2_400_000, 3_999_999, 5_200_000, 1] {
            let p = CpuidPolicy {
                tsc_khz: khz,
                ..POLICY
            };
            let [den, num, crystal, _] = p.virtualize(0x15, 0, ALL);
            let crystal_khz = crystal / 1000;
            let linux = crystal_khz.checked_mul(num).map(|x| x / den);
            let linux = linux.expect("crystal_khz * EBX fits in 32 bits");
            let err = (f64::from(linux) - f64::from(khz)).abs() / f64::from(khz);
            assert!(err < 1e-4 || khz == 1, "{khz} kHz read as {linux} kHz");
        }
        // Unknown TSC rate: the host's leaves pass through.
        let unknown = CpuidPolicy {
            tsc_khz: 0,
            ..POLICY
        };
        assert_eq!(unknown.virtualize(0x15, 0, ALL), ALL);
    }

    #[test]
    fn timing_leaf_reports_tsc_khz_only() {
        assert_eq!(
            POLICY.virtualize(0x4000_0010, 0, ALL),
            [2_400_000, 100_000, 0, 0]
        );
        let p = CpuidPolicy {
            tsc_khz: u32::MAX,
            ..POLICY
        };
        assert_eq!(p.virtualize(0x4000_0010, 5, ALL), [u32::MAX, 100_000, 0, 0]);
    }

    #[test]
    fn amd_feature_leaf_hides_svm_mwaitx_and_mca() {
        let r = POLICY.virtualize(0x8000_0001, 0, ALL);
        assert_eq!(
            r,
            [
                u32::MAX,
                u32::MAX,
                !(SVM | MWAITX | AMD_ECX_HIDDEN),
                !(EDX_MCE | EDX_MCA)
            ]
        );
        assert_eq!(
            POLICY.virtualize(0x8000_0007, 0, ALL)[EDX],
            AMD_INVARIANT_TSC
        );
        assert_eq!(POLICY.virtualize(0x8000_0008, 0, ALL)[EBX], !AMD_VIRT_SSBD);
        for leaf in [LEAF_PMU, LEAF_RDT_MON, LEAF_RDT_ALLOC, LEAF_SGX, LEAF_PT] {
            assert_eq!(POLICY.virtualize(leaf, 0, ALL), [0; 4], "leaf {leaf:#x}");
        }
    }

    #[test]
    fn other_leaves_pass_through() {
        for leaf in [
            0,
            2,
            4,
            0xD,
            0x3FFF_FFFF,
            0x5000_0000,
            0x8000_0000,
            u32::MAX,
        ] {
            assert_eq!(
                POLICY.virtualize(leaf, 0, [1, 2, 3, 4]),
                [1, 2, 3, 4],
                "leaf {leaf:#x}"
            );
        }
    }
}
