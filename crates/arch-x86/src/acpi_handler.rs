//! An [`acpi::AcpiHandler`] for identity-mapped physical memory.
//!
//! The hypervisor maps all of low physical memory 1:1, so a "mapping" is just
//! the physical address reinterpreted as a pointer. Host tests use the same
//! handler by handing the ACPI crate the addresses of tables built in a buffer.

use core::ptr::NonNull;

use acpi::{AcpiHandler, PhysicalMapping};

/// Identity mapping: virtual address == physical address.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdentityMapped;

impl AcpiHandler for IdentityMapped {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let ptr = NonNull::new(physical_address as *mut T)
            .expect("ACPI asked to map physical address 0");
        // SAFETY: the caller (the acpi crate) guarantees `physical_address`
        // holds a `T` of `size` bytes; identity mapping makes that address
        // directly dereferenceable for the life of the hypervisor.
        unsafe { PhysicalMapping::new(physical_address, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}
