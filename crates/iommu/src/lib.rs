//! DMA and interrupt remapping for passthrough devices: the firmware tables
//! that describe the IOMMUs (ACPI DMAR for Intel VT-d, IVRS for AMD-Vi) and a
//! driver for each vendor's remapping unit.
//!
//! Nothing here touches hardware directly: a unit's registers are reached
//! through [`Regs`] and the memory its tables live in through [`DmaMemory`],
//! so the hypervisor implements both over its identity map and host tests
//! over simulated units (the `sim` module, behind the `test-utils` feature)
//! that model the status bits the drivers wait on and walk the drivers'
//! tables to decide what a device's DMA would do.
//!
//! The DMA page tables themselves are built by the `paging` crate in its
//! `VtdSl` and `AmdVi` formats; a driver only points a device at their root.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod amdvi;
mod bdf;
pub mod dmar;
mod hw;
pub mod ivrs;
mod sdt;
#[cfg(any(test, feature = "test-utils"))]
pub mod sim;
pub mod vtd;
mod wait;

pub use bdf::Bdf;
pub use hw::{DmaMemory, MsiMessage, Regs, FRAME_SIZE};
pub use platform::HostPhysAddr;
pub use sdt::TableError;
pub use wait::DEFAULT_WAIT_BUDGET;
