//! The scenario data model: which VMs a board runs and what each owns, as `&'static` data.
//!
//! A scenario is written as TOML under `configs/`, checked on the host by `tools/configurator`
//! (`quercus-config`), and turned into a Rust file defining `pub static SCENARIO: Scenario`.
//! The hypervisor includes that file; it never parses configuration at run time, so every value
//! here has already been validated (see the configurator for the rules).

#![no_std]
#![forbid(unsafe_code)]

mod cache;
mod console;
mod id;
mod kernel;
mod memory;
mod passthrough;
mod scenario;
mod shm;
mod virtio;
mod vm;

pub use cache::{CacheAllocation, PcpuClos};
pub use console::{VuartConfig, VuartLinkConfig, VuartLinkEnd};
pub use id::VmId;
pub use kernel::{KernelConfig, KernelKind, ModuleConfig, MAX_MODULES, MODULE_CMDLINE_MAX};
pub use memory::MemoryConfig;
pub use passthrough::{DmaIsolation, PassthroughConfig, MAX_PASSTHROUGH_DEVICES};
pub use scenario::Scenario;
pub use shm::{
    ShmConfig, ShmPeer, MAX_SHM_PEERS, MAX_SHM_PER_VM, SHM_BAR2_BASE, SHM_FIRST_SLOT, SHM_MAX_SIZE,
    SHM_MIN_SIZE,
};
pub use virtio::{SwitchConfig, VirtioConfig, VirtioKind, MAX_VIRTIO_DEVICES, VIRTIO_FIRST_SLOT};
pub use vm::{LoadOrder, VmConfig, VmType};
