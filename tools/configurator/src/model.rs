//! A validated scenario as owned host-side data: what `generate` renders and what xtask reads.

use std::path::PathBuf;

use scenario::{DmaIsolation, KernelKind, LoadOrder, VmType, VuartConfig};

use crate::board::Board;
use crate::error::ConfigError;
use crate::pci::Bdf;

/// A scenario that passed every check, with the board it was checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    /// The scenario file.
    pub file: PathBuf,
    /// Scenario name (the `name` field, or the file stem).
    pub name: String,
    /// The board.
    pub board: Board,
    /// The VMs in file order; `vms[i].id == i`.
    pub vms: Vec<Vm>,
    /// The virtual switches the VMs' net devices name, in order of first appearance (VM file
    /// order, then `virtio` list order); [`VirtioDevice::Net::switch`] indexes this list.
    pub switches: Vec<String>,
    /// How passed-through devices' DMA is isolated (`dma_isolation`, default `iommu`).
    pub dma_isolation: DmaIsolation,
    /// Things that are allowed but probably not meant (e.g. DMA isolation off on a board with an
    /// IOMMU): tools print them as warnings.
    pub warnings: Vec<ConfigError>,
    /// The files the scenario names (kernels, initrds, disks), each with the boot-module name
    /// the hypervisor finds it by; [`Validated::modules`] lists these names too.
    pub files: Vec<crate::files::FileModule>,
    /// The cache allocation planned from the VMs' `cache_mask` (empty when none asked).
    pub cache: crate::cache_checks::CachePlan,
    /// Shared-memory regions (`[[shm]]`), in file order, each VM's device placed.
    pub shm: Vec<crate::shm_checks::Shm>,
    /// Wires between VMs' UARTs (`[[vuart_link]]`), in file order.
    pub vuart_links: Vec<crate::vuart_checks::Link>,
}

impl Validated {
    /// The boot modules the scenario uses (kernels, then initrds, then Multiboot modules, then
    /// virtio-blk disks, in VM order), without repeats.
    /// The image must carry a module under each of these names.
    pub fn modules(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        let used = self
            .vms
            .iter()
            .map(|vm| vm.kernel.module.as_str())
            .chain(self.vms.iter().filter_map(|vm| vm.initrd.as_deref()))
            .chain(
                self.vms
                    .iter()
                    .flat_map(|vm| vm.modules.iter().map(|m| m.name.as_str())),
            )
            .chain(self.vms.iter().flat_map(|vm| {
                vm.virtio.iter().filter_map(|device| match &device.kind {
                    VirtioDevice::Blk { module, .. } => Some(module.as_str()),
                    _ => None,
                })
            }));
        for name in used {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// The file behind boot module `name`, when the scenario named a file.
    pub fn file(&self, name: &str) -> Option<&crate::files::FileModule> {
        self.files.iter().find(|f| f.name == name)
    }

    /// The VM with this name, if any.
    pub fn vm_by_name(&self, name: &str) -> Option<&Vm> {
        self.vms.iter().find(|vm| vm.name == name)
    }
}

/// One validated VM (the owned counterpart of [`scenario::VmConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// Index in file order from 0.
    pub id: u16,
    /// Unique name.
    pub name: String,
    /// When it starts.
    pub load_order: LoadOrder,
    /// Standard or real-time.
    pub vm_type: VmType,
    /// Owned pCPUs in the order given (vCPU `i` runs on `pcpus[i]`).
    pub pcpus: Vec<u16>,
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    /// Fixed host-physical base of guest RAM, if any.
    pub host_base: Option<u64>,
    /// The kernel.
    pub kernel: Kernel,
    /// Initrd module name, if any (Linux kernels only).
    pub initrd: Option<String>,
    /// Boot modules of a Multiboot kernel, in order.
    pub modules: Vec<Module>,
    /// Console vUART, if any.
    pub console: Option<VuartConfig>,
    /// Restart instead of stop on reset.
    pub restart_on_reset: bool,
    /// The Quercus PCI test device at 00:03.0.
    pub pci_test_device: bool,
    /// Virtio devices, in list order.
    pub virtio: Vec<Virtio>,
    /// Physical PCI functions it owns, in list order.
    pub pci_devices: Vec<Passthrough>,
}

/// A validated passed-through function (the owned counterpart of
/// [`scenario::PassthroughConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passthrough {
    /// The function on the host.
    pub host: Bdf,
    /// Device number on the VM's bus 0 (the function number stays the host's).
    pub guest_slot: u8,
    /// Vendor ID from the board file.
    pub vendor: u16,
    /// Device ID from the board file.
    pub device: u16,
    /// The GSI its INTx drives, from the board file.
    pub gsi: Option<u8>,
}

/// A validated kernel (the owned counterpart of [`scenario::KernelConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// Boot module name.
    pub module: String,
    /// Format.
    pub kind: KernelKind,
    /// Command line.
    pub cmdline: String,
}

/// A validated Multiboot boot module (the owned counterpart of [`scenario::ModuleConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Boot module name: the first word of `cmdline`.
    pub name: String,
    /// The module's string as written (name, then arguments).
    pub cmdline: String,
}

/// A validated virtio device (the owned counterpart of [`scenario::VirtioConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Virtio {
    /// What it is and what backs it.
    pub kind: VirtioDevice,
    /// PCI device number: [`scenario::VIRTIO_FIRST_SLOT`] plus the index in the VM's list.
    pub slot: u8,
}

/// What a validated virtio device is (the owned counterpart of [`scenario::VirtioKind`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtioDevice {
    /// A disk on a boot module.
    Blk {
        /// The boot module.
        module: String,
        /// Read-only for the guest.
        readonly: bool,
    },
    /// A port on a switch.
    Net {
        /// Index in [`Validated::switches`].
        switch: u16,
        /// The MAC address, given or derived (`02:51:00:VV:VV:PP`: VM id, then the port's index
        /// among the VM's net devices).
        mac: [u8; 6],
    },
    /// A console.
    Console,
    /// An entropy source.
    Rng,
}
