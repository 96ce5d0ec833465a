//! Intel VT-d: a driver for one DMA remapping unit ([`Unit`]), legacy-mode
//! (root and context tables) second-level translation, register-based or
//! queued invalidation, fault recording, and interrupt remapping.
//!
//! Register offsets and bits are from the Intel Virtualization Technology
//! for Directed I/O specification (rev. 3.x/4.x), chapter 11; the table
//! formats from chapter 9.

mod caps;
mod fault;
mod irte;
mod regs;
mod unit;

pub use caps::Caps;
pub use fault::{reason_name, FaultRecord};
pub use irte::{ioapic_rte, remapped_msi, Delivery, Irte, SourceCheck};
pub use unit::{Config, Error, Unit};

#[cfg(test)]
mod tests;
