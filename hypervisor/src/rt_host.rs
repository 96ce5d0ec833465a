//! Real-time VMs on this machine: the boot line that says how an `rt` VM's LAPIC is provided
//! (and why it stays virtual), and cache allocation (CAT): CPUID leaf 0x10 checked once at
//! boot, CLOS 0's mask set on pCPU 0, each masked VM's CLOS mask and IA32_PQR_ASSOC set on its
//! pCPUs when they take up its vCPUs. The rules are in the `rt` crate, the WRMSRs in
//! `arch_x86::cat`.

use alloc::string::String;

use arch_x86::cat::{self, PhysMsrs};
use log::{error, info};
use rt::cat::L3Cat;
use rt::lapic_mode::{CpuFacts, LapicMode};
use scenario::{VmConfig, VmType};
use spin::Once;

use crate::vmm::{CACHE, SCENARIO};

/// The CPU's L3 allocation when the scenario uses it and the CPU has it (set by [`init`]).
static CAT: Once<Option<L3Cat>> = Once::new();

/// Boot (pCPU 0, before any VM): checks the CPU against the scenario's cache allocation and sets
/// CLOS 0's mask. Returns why masked VMs must not start, if they must not.
pub fn init() -> Option<String> {
    use alloc::format;
    if !CACHE.is_used() {
        CAT.call_once(|| None);
        return None;
    }
    let refusal = match cat::l3_cat() {
        Err(why) => Some(format!("{why}")),
        Ok(c) if c.ways < CACHE.ways => Some(format!(
            "the CPU's L3 has {} ways, the scenario's board file says {}",
            c.ways, CACHE.ways
        )),
        Ok(c) => match rt::cat::set_mask(&mut PhysMsrs, &c, 0, CACHE.default_mask) {
            Ok(()) => {
                info!(
                    "cache allocation: L3 {} ways, {} classes of service; CLOS 0 (hypervisor, VMs without a mask) ways {:#x}",
                    c.ways, c.clos, CACHE.default_mask
                );
                CAT.call_once(|| Some(c));
                None
            }
            Err(e) => Some(format!("CLOS 0: {e}")),
        },
    };
    if refusal.is_some() {
        CAT.call_once(|| None);
    }
    refusal
}

/// Why VM `cfg` must not start (it has a way mask the CPU cannot enforce), if so.
pub fn refused(cfg: &VmConfig, why: &Option<String>) -> Option<String> {
    match why {
        Some(why) if CACHE.vm_has_mask(cfg.id) => Some(alloc::format!(
            "its cache_mask asks for cache allocation, and {why}: refused (the scenario's board file claims CAT this CPU does not have)"
        )),
        _ => None,
    }
}

/// On the pCPU about to run a vCPU: its class of service, if its VM has a mask.
pub fn program_this_pcpu() {
    let Some(Some(c)) = CAT.get() else {
        return;
    };
    let Some(pcpu) = arch_x86::percpu::current().and_then(|p| u16::try_from(p.index).ok()) else {
        return;
    };
    let Some(entry) = CACHE.for_pcpu(pcpu) else {
        return;
    };
    let vm = SCENARIO.vm_by_id(entry.vm).map_or("?", |v| v.name);
    match rt::cat::program_pcpu(&mut PhysMsrs, c, entry.clos, entry.mask) {
        Ok(()) => info!(
            "vm {vm}: pCPU {pcpu}: CLOS {}, L3 ways {:#x}",
            entry.clos, entry.mask
        ),
        Err(e) => error!("vm {vm}: pCPU {pcpu}: cache allocation not set: {e}"),
    }
}

/// The pCPUs of real-time VMs, a bit each (pCPUs 0-255; fixed by the scenario, derived once:
/// every kick asks).
static RT_PCPUS: Once<[u64; 4]> = Once::new();

/// Whether `pcpu` belongs to a real-time VM (pCPUs are never shared, so this is fixed).
pub fn is_rt_pcpu(pcpu: usize) -> bool {
    let bits = RT_PCPUS.call_once(|| {
        let mut bits = [0u64; 4];
        for vm in SCENARIO.vms.iter().filter(|vm| vm.vm_type == VmType::Rt) {
            for &p in vm.pcpus.iter().filter(|&&p| p < 256) {
                bits[usize::from(p / 64)] |= 1 << (p % 64);
            }
        }
        bits
    });
    bits.get(pcpu / 64)
        .is_some_and(|word| word & (1 << (pcpu % 64)) != 0)
}

/// How real-time VMs get their LAPIC on this machine (the same for all: every pCPU is alike),
/// decided once.
fn machine_lapic_mode(vmx: bool) -> LapicMode {
    static MODE: Once<LapicMode> = Once::new();
    *MODE.call_once(|| {
        let controls = vmx && arch_x86::vmx::lapic_passthrough_capable();
        let facts = CpuFacts::from_leaf1(arch_x86::cpu::cpuid(1, 0)[2], vmx, controls);
        LapicMode::decide(facts)
    })
}

/// How real-time VM `cfg` gets its LAPIC: the machine's mode, unless the VM owns PCI functions.
pub fn lapic_mode(cfg: &VmConfig, vmx: bool) -> LapicMode {
    machine_lapic_mode(vmx).for_vm(!cfg.pci_devices.is_empty())
}

/// The boot line of an `rt` VM: how its LAPIC is provided and why.
pub fn announce(cfg: &VmConfig, vmx: bool) {
    if cfg.vm_type != VmType::Rt {
        return;
    }
    info!(
        "vm {}: real-time VM: {}",
        cfg.name,
        lapic_mode(cfg, vmx).describe()
    );
}
