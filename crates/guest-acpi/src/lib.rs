//! A VM's ACPI tables, built as one contiguous byte buffer for a given
//! guest-physical address: RSDP (revision 2), XSDT and RSDT, a legacy-PC
//! FADT (not hardware-reduced: the VM has a PIC, a PIT and an I/O-port PM1
//! block), FACS, MADT and a DSDT whose AML declares `\_S5_`; with a PCI
//! segment ([`PciHost`]) also an MCFG, and in the DSDT the host bridge with
//! its windows and INTx routing.
//!
//! Layout of the buffer (see [`build`]): the RSDP first, at `base_gpa`,
//! which must be 16-byte aligned so that the same bytes may sit at 0xE0000
//! for the BIOS-area RSDP search; then the XSDT, RSDT, FADT, FACS (64-byte
//! aligned), DSDT, MADT and, with a PCI segment, MCFG. Every table's
//! checksum is computed last.
//!
//! What the hypervisor's devices must do to match the tables is written on
//! [`AcpiConfig`].
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod aml;
mod build;
mod config;
mod dsdt;
mod facs;
mod fadt;
mod madt;
mod mcfg;
mod resource;
mod root;
mod rsdp;
mod sdt;

pub use build::{build, AcpiBuildError, AcpiTables, ACPI_TABLES_GPA, ACPI_TABLES_MAX_LEN};
pub use config::{
    AcpiConfig, ConfigError, PciHost, DEFAULT_PCI_HOST, DEFAULT_PM1A_CNT, DEFAULT_PM1A_EVT,
    DEFAULT_PM_TMR, DEFAULT_S5_SLP_TYP, DEFAULT_SCI_IRQ, ECAM_BUS_SIZE, INTX_PINS, IOAPIC_ADDR,
    IOAPIC_PINS, ISA_GSIS, LOCAL_APIC_ADDR, MAX_VCPUS, PM1_CNT_LEN, PM1_EVT_LEN, PM_TMR_LEN,
    RESET_PORT, RESET_VALUE,
};
pub use sdt::{CREATOR_ID, OEM_ID, OEM_TABLE_ID};
