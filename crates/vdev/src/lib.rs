//! Virtual PC platform devices as register state machines: the I/O APIC,
//! the 8259A PIC pair with its ELCR, the 8254 PIT with port 0x61, the
//! MC146818 RTC with CMOS RAM, and a PCI segment (configuration mechanism
//! #1 and ECAM, a host bridge, BARs decoded in windows, MSI, MSI-X and
//! INTx, and a test device), which together are what an unmodified Linux
//! kernel expects of a PC.
//!
//! Every device takes guest accesses as `read(where, size)` /
//! `write(where, size, value)`: MMIO offsets from the device's base for the
//! I/O APIC, absolute port numbers for the rest (each of those devices
//! answers at fixed ISA ports, some at more than one range). Time-driven
//! devices also take `now_ns`, a monotonic nanosecond count from the caller.
//! No device calls out: interrupt output is what calls return, in one shape
//! per kind of wire:
//! - [`Ioapic`]: the [`Delivery`] messages for the local APICs, returned by
//!   `set_irq`, `eoi` and `write`.
//! - [`Pic8259`]: the INT pin as [`Pic8259::pending_vector`], the INTA cycle
//!   as [`Pic8259::acknowledge`].
//! - [`Pit8254`]: IRQ 0 rising edges counted by [`Pit8254::poll`], the next
//!   one announced by [`Pit8254::next_deadline`].
//! - [`RtcCmos`]: the IRQ 8 level from [`RtcCmos::poll`], its next rise from
//!   [`RtcCmos::next_deadline`].
//!
//! Guest input never panics: impossible widths (0, 3, 8...), undecoded
//! offsets and ports read all ones and ignore writes, read-only and reserved
//! bits keep their value, out-of-range interrupt lines are ignored, and each
//! device counts what it ignored for the VM's statistics.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod access;
mod ioapic;
mod msi;
mod pci;
mod pci_config;
mod pci_segment;
mod pci_testdev;
mod pic8259;
mod pit8254;
mod rtc_cmos;

pub use access::all_ones;
pub use ioapic::{
    Deliveries, Delivery, DeliveryMode, DestinationMode, Ioapic, IoapicCounters, IOAPIC_BASE,
    IOAPIC_MMIO_SIZE, IOAPIC_PINS,
};
pub use msi::{
    Msi, MsiError, MsiMessage, MsiX, MsixRegion, CAP_ID_MSI, CAP_ID_MSIX, MSIX_ENTRY_SIZE,
    MSIX_MAX_ENTRIES, MSI_PIN,
};
pub use pci::{
    host_bridge, Bdf, PciBus, PciCounters, PciError, PciFunction, CONFIG_ADDRESS_PORT,
    CONFIG_DATA_PORT, HOST_BRIDGE_IDS, PCI_CONFIG_LIMIT,
};
pub use pci_config::{
    Bar, ConfigError, ConfigSpace, PciIds, BAR_COUNT, COMMAND_BUS_MASTER, COMMAND_INTX_DISABLE,
    COMMAND_IO, COMMAND_MEMORY, COMMAND_WRITABLE, CONFIG_SPACE_SIZE, HEADER_MULTI_FUNCTION,
    STATUS_CAPABILITIES, STATUS_INTERRUPT,
};
pub use pci_segment::{
    BarMapping, DirectKind, DirectRange, PciDevice, PciInterrupt, PciSegment, SegmentCounters,
    SegmentLayout, SlatOp, ECAM_BUS_SIZE,
};
pub use pci_testdev::{
    TestDevice, TEST_DEVICE_IDS, TEST_DEVICE_MAGIC, TEST_DEVICE_MSIX_ENTRIES, TEST_DEVICE_SLOW_NS,
};
pub use pic8259::{
    Pic8259, PicCounters, ELCR_MASTER, ELCR_SLAVE, PIC_MASTER_COMMAND, PIC_MASTER_DATA,
    PIC_SLAVE_COMMAND, PIC_SLAVE_DATA,
};
pub use pit8254::{Pit8254, PitCounters, PIT_CHANNEL0, PIT_CONTROL, PIT_HZ, PORT_B};
pub use rtc_cmos::{
    RtcCmos, RtcCounters, CENTURY_REGISTER, CMOS_SIZE, RTC_DATA_PORT, RTC_INDEX_PORT,
};
