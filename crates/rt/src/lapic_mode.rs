//! The LAPIC mode of a real-time VM, decided once at boot from CPUID and the backend.
//!
//! LAPIC passthrough (the guest's x2APIC is the physical one: its TSC-deadline timer, EOIs and
//! interrupts take no VM exit) needs a physical x2APIC, the TSC-deadline timer and VT-x
//! controls that let external interrupts and HLT run without exits. Where the CPU lacks any of
//! them the VM keeps the virtual LAPIC on its shortest path: its timer and its EOIs are its
//! only exits, and nothing else of the hypervisor runs on its pCPUs. The console says which,
//! and why, at boot ([`LapicMode::describe`]).

use core::fmt;

/// What the physical CPU offers, from CPUID (leaf 1 ECX bits 21 and 24) and the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuFacts {
    /// CPUID.1:ECX[21].
    pub x2apic: bool,
    /// CPUID.1:ECX[24].
    pub tsc_deadline: bool,
    /// VT-x (true) or AMD-V (false).
    pub vmx: bool,
    /// The backend's controls allow passthrough (VT-x: external-interrupt and HLT exiting may
    /// be 0, NMI-window exiting exists).
    pub controls: bool,
}

impl CpuFacts {
    /// From CPUID leaf 1's ECX and the backend.
    pub fn from_leaf1(ecx: u32, vmx: bool, controls: bool) -> Self {
        CpuFacts {
            x2apic: ecx & (1 << 21) != 0,
            tsc_deadline: ecx & (1 << 24) != 0,
            vmx,
            controls,
        }
    }
}

/// Why an `rt` VM keeps a virtual LAPIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtualReason {
    /// The CPU has no x2APIC (QEMU's TCG, Bochs `ryzen`): the xAPIC page cannot be given to
    /// one guest without giving it the ICR, nor its EOIs without its MMIO page.
    NoX2apic,
    /// The CPU has no TSC-deadline timer (AMD CPUs): the one-shot timer's bus-clock count
    /// cannot be passed through with the TSC offset the VM sees.
    NoTscDeadline,
    /// AMD-V without AVIC: no way to keep ICR writes trapped while the rest passes.
    AmdWithoutAvic,
    /// VT-x without the controls passthrough needs.
    VmxControls,
    /// The VM owns passed-through PCI functions: their interrupts come as host vectors on its
    /// pCPU, which a passed-through LAPIC would hand to the guest untranslated.
    OwnsPciFunctions,
}

/// How an `rt` VM's local APIC is provided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LapicMode {
    /// The hypervisor's virtual LAPIC, for this reason.
    Virtual(VirtualReason),
    /// The physical LAPIC once the guest is in x2APIC mode.
    Passthrough,
}

impl LapicMode {
    /// The mode for an `rt` VM on a CPU with `facts`.
    pub fn decide(facts: CpuFacts) -> Self {
        let reason = if !facts.x2apic {
            VirtualReason::NoX2apic
        } else if !facts.tsc_deadline {
            VirtualReason::NoTscDeadline
        } else if !facts.vmx {
            VirtualReason::AmdWithoutAvic
        } else if !facts.controls {
            VirtualReason::VmxControls
        } else {
            return LapicMode::Passthrough;
        };
        LapicMode::Virtual(reason)
    }

    /// The mode of one `rt` VM on a machine whose mode is `self`: a VM that owns passed-through
    /// PCI functions keeps the virtual LAPIC (their host vectors land on its pCPU).
    pub fn for_vm(self, owns_pci_functions: bool) -> Self {
        match self {
            LapicMode::Passthrough if owns_pci_functions => {
                LapicMode::Virtual(VirtualReason::OwnsPciFunctions)
            }
            mode => mode,
        }
    }

    /// The boot line's text after `vm NAME: real-time VM: `.
    pub fn describe(self) -> Describe {
        Describe(self)
    }
}

impl fmt::Display for VirtualReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VirtualReason::NoX2apic => "the CPU has no x2APIC",
            VirtualReason::NoTscDeadline => "the CPU has no TSC-deadline timer",
            VirtualReason::AmdWithoutAvic => {
                "AMD-V without AVIC cannot pass the LAPIC through and still trap ICR writes"
            }
            VirtualReason::OwnsPciFunctions => {
                "it owns passed-through PCI functions, whose interrupts the hypervisor translates on its pCPU"
            }
            VirtualReason::VmxControls => {
                "the CPU's VT-x cannot run external interrupts and HLT without exits, or has no NMI-window exiting"
            }
        })
    }
}

/// See [`LapicMode::describe`].
pub struct Describe(LapicMode);

impl fmt::Display for Describe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            LapicMode::Virtual(why) => write!(
                f,
                "keeps a virtual LAPIC ({why}): its timer and EOIs are its only exits; no other \
                 hypervisor work runs on its pCPUs (stop and reset reach them by NMI)"
            ),
            LapicMode::Passthrough => f.write_str(
                "LAPIC passthrough once it switches to x2APIC mode: its x2APIC is then the \
                 physical one (ICR writes, APIC ID/LDR reads, IA32_APIC_BASE, CPUID and I/O \
                 still exit); stop and reset reach its pCPUs by NMI",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    fn facts(x2apic: bool, tsc_deadline: bool, vmx: bool, controls: bool) -> CpuFacts {
        CpuFacts {
            x2apic,
            tsc_deadline,
            vmx,
            controls,
        }
    }

    #[test]
    fn each_missing_feature_is_named_first_come_first_said() {
        use VirtualReason::*;
        let cases = [
            (facts(false, false, false, false), NoX2apic), // QEMU TCG, Bochs ryzen
            (facts(false, true, true, true), NoX2apic),
            (facts(true, false, true, true), NoTscDeadline),
            (facts(true, true, false, true), AmdWithoutAvic),
            (facts(true, true, true, false), VmxControls),
        ];
        for (f, why) in cases {
            assert_eq!(LapicMode::decide(f), LapicMode::Virtual(why), "{f:?}");
        }
    }

    #[test]
    fn everything_present_passes_the_lapic_through() {
        // Bochs tigerlake.
        let mode = LapicMode::decide(facts(true, true, true, true));
        assert_eq!(mode, LapicMode::Passthrough);
        let s = mode.describe().to_string();
        assert!(s.starts_with("LAPIC passthrough"), "{s}");
        assert!(s.contains("ICR writes"), "{s}");
    }

    #[test]
    fn a_vm_owning_pci_functions_keeps_the_virtual_lapic() {
        let machine = LapicMode::decide(facts(true, true, true, true));
        assert_eq!(
            machine.for_vm(true),
            LapicMode::Virtual(VirtualReason::OwnsPciFunctions)
        );
        assert_eq!(machine.for_vm(false), LapicMode::Passthrough);
        let virt = LapicMode::Virtual(VirtualReason::NoX2apic);
        assert_eq!(virt.for_vm(true), virt, "the machine's reason comes first");
    }

    #[test]
    fn leaf1_bits_are_read() {
        assert_eq!(
            CpuFacts::from_leaf1(1 << 21, true, true),
            facts(true, false, true, true)
        );
        assert_eq!(
            CpuFacts::from_leaf1(1 << 24, false, false),
            facts(false, true, false, false)
        );
    }

    #[test]
    fn the_boot_line_says_virtual_and_why() {
        let s = LapicMode::decide(facts(false, false, false, false))
            .describe()
            .to_string();
        assert!(
            s.starts_with("keeps a virtual LAPIC (the CPU has no x2APIC)"),
            "{s}"
        );
        assert!(s.contains("only exits"), "{s}");
    }
}
