//! The unsafe tier of Quercus: everything that touches privileged CPU state.
//!
//! Boot stub and descriptor tables, per-CPU areas, port and MSR access, the
//! physical LAPIC, SMP start, and (later) the VMX and SVM backends. Everything
//! above this crate is safe code.
#![no_std]

pub mod acpi_handler;
#[cfg(feature = "bare-metal")]
pub mod boot;
#[cfg(feature = "bare-metal")]
pub mod cat;
pub mod console;
pub mod cpu;
#[cfg(feature = "bare-metal")]
pub mod dma;
#[cfg(feature = "bare-metal")]
pub mod guest_ram;
pub mod guest_state;
#[cfg(feature = "bare-metal")]
pub mod heap;
pub mod io;
#[cfg(feature = "bare-metal")]
pub mod ioapic;
pub mod lapic;
#[cfg(feature = "bare-metal")]
pub mod mem;
#[cfg(feature = "bare-metal")]
pub mod pci;
#[cfg(feature = "bare-metal")]
pub mod percpu;
#[cfg(feature = "bare-metal")]
pub mod phys;
pub mod pic;
#[cfg(feature = "bare-metal")]
pub mod safe_msr;
pub mod serial;
#[cfg(feature = "bare-metal")]
pub mod smp;
#[cfg(feature = "bare-metal")]
pub mod svm;
pub mod svm_bits;
pub mod time;
#[cfg(feature = "bare-metal")]
pub mod trap;
pub mod virt_caps;
#[cfg(feature = "bare-metal")]
pub mod vmx;
pub mod vmx_bits;
