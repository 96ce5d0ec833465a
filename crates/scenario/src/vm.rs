//! One VM's static configuration: identity, load order, type, pinned CPUs, memory, kernel, console.

use crate::console::VuartConfig;
use crate::id::VmId;
use crate::kernel::{KernelConfig, ModuleConfig};
use crate::memory::MemoryConfig;
use crate::passthrough::PassthroughConfig;
use crate::virtio::VirtioConfig;

/// When and by whom a VM is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoadOrder {
    /// Started by the hypervisor at boot; owns its CPUs and RAM, isolated from every other VM.
    PreLaunched,
    /// The privileged VM that owns every device not given to another VM and hosts the device model.
    /// At most one per scenario.
    Service,
    /// Created at run time by the Service VM through hypercalls.
    PostLaunched,
}

/// Scheduling class of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmType {
    /// Ordinary VM.
    Standard,
    /// Real-time VM: dedicated pCPUs, no VM exits in steady state, LAPIC passthrough.
    /// Only pre-launched VMs may be real-time (checked by the configurator).
    Rt,
}

/// Static configuration of one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmConfig {
    /// VM id: its index in [`Scenario::vms`](crate::Scenario::vms), in scenario file order from 0.
    pub id: u16,
    /// VM name (`[a-z0-9_-]`, at most 32 characters, unique in the scenario).
    pub name: &'static str,
    /// When the VM is started.
    pub load_order: LoadOrder,
    /// Standard or real-time.
    pub vm_type: VmType,
    /// Physical CPUs owned by this VM, by index (0 = BSP, dense numbering). Never empty, never
    /// contains 0 (the hypervisor's management CPU), never shared with another VM, no duplicates.
    /// vCPU `i` is pinned to `pcpus[i]`.
    pub pcpus: &'static [u16],
    /// Number of vCPUs; always `pcpus.len()` (one vCPU pinned per pCPU).
    pub vcpus: u16,
    /// Guest RAM.
    pub memory: MemoryConfig,
    /// The kernel boot module to load and how to boot it.
    pub kernel: KernelConfig,
    /// Name of the boot module to pass as a Linux kernel's initrd, if any.
    pub initrd: Option<&'static str>,
    /// The boot modules a Multiboot kernel finds in its Multiboot information, in order (empty
    /// for every other kernel type).
    pub modules: &'static [ModuleConfig],
    /// Virtual UART for the guest console, if any.
    pub console: Option<VuartConfig>,
    /// Whether the VM is restarted (rather than stopped) when it resets or triple-faults.
    pub restart_on_reset: bool,
    /// Whether the VM's PCI segment has the Quercus PCI test device (00:03.0).
    pub pci_test_device: bool,
    /// Virtio devices the hypervisor serves to this VM, each at its own slot.
    pub virtio: &'static [VirtioConfig],
    /// Physical PCI functions the VM owns (passthrough).
    pub pci_devices: &'static [PassthroughConfig],
}

impl VmConfig {
    /// The VM's id as every other part of the hypervisor names it.
    pub const fn vm_id(&self) -> VmId {
        VmId(self.id)
    }

    /// The vCPU index pinned to physical CPU `pcpu`, if this VM owns it.
    pub fn vcpu_for_pcpu(&self, pcpu: u16) -> Option<u16> {
        self.pcpus
            .iter()
            .position(|&p| p == pcpu)
            .and_then(|i| u16::try_from(i).ok())
    }
}
