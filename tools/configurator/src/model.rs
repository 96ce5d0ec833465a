//! A validated scenario as owned host-side data: what `generate` renders and what xtask reads.

use std::path::PathBuf;

use scenario::{KernelKind, LoadOrder, VmType, VuartConfig};

use crate::board::Board;

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
}

impl Validated {
    /// The boot modules the scenario uses (kernels, then initrds, then Multiboot modules, in VM
    /// order), without repeats.
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
            );
        for name in used {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
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
