//! The unsafe tier of Quercus: everything that touches privileged CPU state.
#![no_std]

pub mod acpi_handler;
