//! Per-VM logic that sits above the vendor-neutral backend ([`vcpu`]): what
//! the guest sees through CPUID and MSRs, the Quercus hypercall ABI, the
//! virtual 16550A UART, the device interface and the port-I/O and MMIO
//! buses that route to devices, the PC platform, and per-vCPU exit
//! statistics.
//!
//! Everything here is driven by guest input and therefore never panics: a bad
//! request becomes what the hardware would do (#GP, an ignored write, an
//! all-ones read), reported to the caller to inject and count.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod bus;
mod cpuid;
mod device;
mod dispatch;
pub mod hypercall;
mod msr;
pub mod pc;
pub mod smp;
mod stats;
mod uart16550;
mod uart_wire;
mod vlapic;

pub use bus::{unmapped_read, Bus, BusError, MMIO_SPACE, PORT_SPACE};
pub use cpuid::{CpuidPolicy, HV_MAX_LEAF, HV_SIGNATURE};
pub use device::{gsi_of_isa, Device, DeviceCx, IrqChip, IrqCounters, PioEffect, Space};
pub use dispatch::{Flow, IoReply, Passthrough, StopReason, VcpuExits, VmHost};
pub use hypercall::{HypercallError, HypercallOutcome};
pub use msr::{numbers as msr_numbers, MsrPolicy, MsrRead, MsrWrite, EFER_GUEST_BITS};
pub use pc::{PcPlatform, PlatformConfig, UartPlace};
pub use smp::{Signals, VcpuInbox};
pub use stats::ExitStats;
pub use uart16550::{Uart16550, UartCounters, OUTPUT_CAPACITY, RX_FIFO_SIZE, TX_FIFO_SIZE};
pub use uart_wire::UartWire;
pub use vdev::Delivery;
pub use vlapic::{divisor as lapic_divisor, Handover, LapicAction, VLapic, BUS_HZ, XAPIC_BASE};
