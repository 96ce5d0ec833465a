//! The whole scenario: its name, the board it was validated for, and its VMs.

use crate::console::VuartLinkConfig;
use crate::passthrough::DmaIsolation;
use crate::shm::ShmConfig;
use crate::virtio::SwitchConfig;
use crate::vm::VmConfig;

/// A validated scenario: the static plan of VMs for one board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// Scenario name (`[a-z0-9_-]`, at most 32 characters).
    pub name: &'static str,
    /// Name of the board the scenario was validated against (e.g. `"qemu"`, `"bochs"`).
    pub board: &'static str,
    /// The VMs, indexed by id: `vms[i].id == i`.
    pub vms: &'static [VmConfig],
    /// The virtual switches the VMs' virtio-net ports name, indexed as
    /// [`VirtioKind::Net::switch`](crate::VirtioKind::Net) refers to them.
    pub switches: &'static [SwitchConfig],
    /// Whether passed-through devices need an IOMMU ([`DmaIsolation::Iommu`], the default).
    pub dma_isolation: DmaIsolation,
    /// Shared-memory regions between VMs (ivshmem devices).
    pub shm: &'static [ShmConfig],
    /// Wires between VMs' UARTs.
    pub vuart_links: &'static [VuartLinkConfig],
}

impl Scenario {
    /// The VM with this name, if any.
    pub fn vm_by_name(&self, name: &str) -> Option<&'static VmConfig> {
        self.vms.iter().find(|vm| vm.name == name)
    }

    /// The VM with this id, if any.
    pub fn vm_by_id(&self, id: u16) -> Option<&'static VmConfig> {
        self.vms.get(usize::from(id))
    }

    /// The VM that owns physical CPU `pcpu`, if any (pCPUs are never shared between VMs).
    pub fn vm_for_pcpu(&self, pcpu: u16) -> Option<&'static VmConfig> {
        self.vms.iter().find(|vm| vm.pcpus.contains(&pcpu))
    }

    /// Whether `vm`'s RAM sits at its host-physical addresses (guest-physical = host-physical
    /// above 1 MiB): a VM that drives passed-through devices without an IOMMU, whose DMA uses
    /// the guest's physical addresses as host ones. The configurator makes such a VM give its
    /// `host_base` (the hypervisor needs the range before it loads the kernel, the loader's
    /// checks need it on the host).
    pub fn ram_at_host_addresses(&self, vm: &VmConfig) -> bool {
        self.dma_isolation == DmaIsolation::Off && !vm.pci_devices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KernelConfig, KernelKind, LoadOrder, MemoryConfig, VmType};

    const fn vm(id: u16, name: &'static str, pcpus: &'static [u16]) -> VmConfig {
        VmConfig {
            id,
            name,
            load_order: LoadOrder::PreLaunched,
            vm_type: VmType::Standard,
            pcpus,
            vcpus: pcpus.len() as u16,
            memory: MemoryConfig {
                size: 32 << 20,
                host_base: None,
            },
            kernel: KernelConfig {
                module: "test-guest",
                kind: KernelKind::Multiboot1,
                cmdline: "",
            },
            initrd: None,
            modules: &[],
            console: None,
            restart_on_reset: false,
            pci_test_device: false,
            virtio: &[],
            pci_devices: &[],
        }
    }

    static TWO: Scenario = Scenario {
        name: "two",
        board: "qemu",
        vms: &[vm(0, "a", &[1]), vm(1, "b", &[2, 3])],
        switches: &[],
        dma_isolation: crate::DmaIsolation::Iommu,
        shm: &[],
        vuart_links: &[],
    };

    #[test]
    fn lookups() {
        assert_eq!(TWO.vm_by_name("b").map(|v| v.id), Some(1));
        assert_eq!(
            TWO.vm_by_name("b").map(VmConfig::vm_id),
            Some(crate::VmId(1))
        );
        assert!(TWO.vm_by_name("c").is_none());
        assert_eq!(TWO.vm_by_id(0).map(|v| v.name), Some("a"));
        assert!(TWO.vm_by_id(2).is_none());
        assert_eq!(TWO.vm_for_pcpu(3).map(|v| v.name), Some("b"));
        assert!(TWO.vm_for_pcpu(0).is_none());
    }

    #[test]
    fn vcpu_index_follows_pcpu_order() {
        let b = TWO.vm_by_name("b").unwrap();
        assert_eq!(b.vcpu_for_pcpu(3), Some(1));
        assert_eq!(b.vcpu_for_pcpu(1), None);
    }
}
