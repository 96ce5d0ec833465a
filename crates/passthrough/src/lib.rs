//! PCI passthrough without hardware: what the hypervisor knows of the physical PCI functions
//! and the virtualized function a VM drives in place of the real one.
//!
//! - [`scan`]: enumeration of segment 0 through a [`ConfigAccess`] (0xCF8/0xCFC or ECAM, the
//!   hypervisor's choice): identities, BARs sized, capabilities found, bridges followed.
//! - [`device`]: [`PassthroughDevice`], a [`vdev::PciDevice`] a VM's segment holds. Its
//!   configuration space is virtual (identity copied, BARs of the real sizes at the guest's
//!   addresses, MSI and MSI-X capabilities emulated, the expansion ROM and every other
//!   capability hidden); register accesses inside BARs go to the real function through a
//!   [`HostFunction`]; the real function's MSI/MSI-X messages are the hypervisor's (host vectors
//!   on the pCPU of the VM's vCPU 0), and each host interrupt becomes the guest's message as the
//!   guest programmed it (masking and pending bits included).
//!
//! No arch code: the hypervisor implements [`ConfigAccess`] and [`HostFunction`] over port I/O
//! and its identity map, the tests over a simulated function.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod device;
pub mod placement;
pub mod scan;
#[cfg(any(test, feature = "test-utils"))]
pub mod sim;
pub mod storm;

pub use device::{HostFunction, IrqPending, PassthroughDevice, PassthroughStats};
pub use placement::{place_bars, Placement, PlacementError};
pub use scan::{scan, BarInfo, BarKind, Capabilities, ConfigAccess, PhysFunction};
pub use storm::StormGuard;
