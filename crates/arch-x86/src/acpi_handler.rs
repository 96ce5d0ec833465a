//! An [`acpi::AcpiHandler`] for identity-mapped physical memory.
//!
//! The hypervisor maps all of low physical memory 1:1, so a "mapping" is just
//! the physical address reinterpreted as a pointer. Host tests use the same
//! handler by handing the ACPI crate the addresses of tables built in a buffer.

extern crate alloc;

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
        let ptr =
            NonNull::new(physical_address as *mut T).expect("ACPI asked to map physical address 0");
        // SAFETY: the caller (the acpi crate) guarantees `physical_address`
        // holds a `T` of `size` bytes; identity mapping makes that address
        // directly dereferenceable for the life of the hypervisor.
        unsafe { PhysicalMapping::new(physical_address, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// Why the ACPI tables could not be found.
#[derive(Debug)]
pub enum AcpiFindError {
    /// The loader gave an RSDP, but it is not a valid one.
    BadRsdp { addr: u64, err: acpi::AcpiError },
    /// No RSDP in the EBDA or 0xE0000..0xFFFFF (legacy BIOS search).
    NotFound(acpi::AcpiError),
}

impl core::fmt::Display for AcpiFindError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AcpiFindError::BadRsdp { addr, err } => {
                write!(
                    f,
                    "the RSDP the boot loader gave at {addr:#x} is invalid ({err:?})"
                )
            }
            AcpiFindError::NotFound(err) => write!(
                f,
                "no RSDP from the boot loader and none in the EBDA or 0xE0000-0xFFFFF ({err:?})"
            ),
        }
    }
}

/// Finds the ACPI tables: at the RSDP the loader passed, else by the BIOS search.
#[cfg(feature = "bare-metal")]
pub fn find_tables(rsdp: Option<u64>) -> Result<acpi::AcpiTables<IdentityMapped>, AcpiFindError> {
    match rsdp {
        // SAFETY: physical memory is identity-mapped; the acpi crate checks the
        // RSDP signature and checksums before trusting anything it points to.
        Some(addr) => unsafe { acpi::AcpiTables::from_rsdp(IdentityMapped, addr as usize) }
            .map_err(|err| AcpiFindError::BadRsdp { addr, err }),
        // SAFETY: as above; the search reads only the EBDA and the BIOS area,
        // both inside the identity map.
        None => unsafe { acpi::AcpiTables::search_for_rsdp_bios(IdentityMapped) }
            .map_err(AcpiFindError::NotFound),
    }
}

/// Test hook for the boot-input tests: breaks the signature of the firmware's
/// MADT in memory, so that the real lookup finds no MADT. Returns false if
/// there was no MADT to break.
#[cfg(feature = "bare-metal")]
pub fn corrupt_madt_signature(tables: &acpi::AcpiTables<IdentityMapped>) -> bool {
    let Ok(madt) = tables.find_table::<acpi::madt::Madt>() else {
        return false;
    };
    let addr = madt.physical_start();
    drop(madt);
    // SAFETY: ACPI tables live in identity-mapped RAM (the MADT was just read
    // there); overwriting one signature byte only affects later lookups.
    unsafe { (addr as *mut u8).write_volatile(b'X') };
    true
}

/// A table the acpi crate knows only by signature, read as its header.
macro_rules! raw_table {
    ($name:ident, $sig:ident) => {
        #[cfg(feature = "bare-metal")]
        #[repr(transparent)]
        struct $name {
            header: acpi::sdt::SdtHeader,
        }

        // SAFETY: the type is exactly the table's header, which every ACPI table starts with;
        // the body is read as bytes through `phys::read`, never through this type.
        #[cfg(feature = "bare-metal")]
        unsafe impl acpi::AcpiTable for $name {
            const SIGNATURE: acpi::sdt::Signature = acpi::sdt::Signature::$sig;

            fn header(&self) -> &acpi::sdt::SdtHeader {
                &self.header
            }
        }
    };
}

raw_table!(RawDmar, DMAR);
raw_table!(RawIvrs, IVRS);

/// Which whole tables [`table_bytes`] can copy out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawTable {
    /// Intel's DMA Remapping table (VT-d units).
    Dmar,
    /// AMD's I/O Virtualization Reporting Structure (AMD-Vi units).
    Ivrs,
}

/// A copy of the whole table (header included, as long as its length field says, at most
/// 64 KiB), or None when the firmware has none.
#[cfg(feature = "bare-metal")]
pub fn table_bytes(
    tables: &acpi::AcpiTables<IdentityMapped>,
    which: RawTable,
) -> Option<alloc::vec::Vec<u8>> {
    let (addr, len) = match which {
        RawTable::Dmar => {
            let t = tables.find_table::<RawDmar>().ok()?;
            (t.physical_start() as u64, t.header.length)
        }
        RawTable::Ivrs => {
            let t = tables.find_table::<RawIvrs>().ok()?;
            (t.physical_start() as u64, t.header.length)
        }
    };
    let mut buf = alloc::vec![0u8; (len as usize).min(64 << 10)];
    crate::phys::read(addr, &mut buf).then_some(buf)
}

/// The ECAM window of PCI segment 0 from the MCFG: (base of bus 0, last bus).
pub fn ecam_window(tables: &acpi::AcpiTables<IdentityMapped>) -> Option<(u64, u8)> {
    let mcfg = tables.find_table::<acpi::mcfg::Mcfg>().ok()?;
    mcfg.entries().iter().find_map(|e| {
        let (segment, start, end, base) = (
            e.pci_segment_group,
            e.bus_number_start,
            e.bus_number_end,
            e.base_address,
        );
        (segment == 0 && start == 0).then_some((base, end))
    })
}
