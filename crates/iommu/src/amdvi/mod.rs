//! AMD-Vi: a driver for one AMD IOMMU ([`Unit`]): the device table, the
//! command buffer and event log, v1 host page tables per domain, and legacy
//! (32-bit entry) interrupt remapping.
//!
//! Register offsets, table and command formats are from the AMD I/O
//! Virtualization Technology (IOMMU) Specification #48882, chapters 2 and 3.

mod event;
mod irte;
mod regs;
mod unit;

pub use event::Event;
pub use irte::{Irte, IRTE_ENTRIES};
pub use unit::{Config, Error, Unit};

#[cfg(test)]
mod tests;
