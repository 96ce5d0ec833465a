//! A VM's RAM as the hypervisor reaches it: one host-physical range, identity
//! mapped, accessed only through bounds-checked copies; and the memory that
//! holds the VM's second-level page tables.

use vcpu::{check_range, GuestMemError, GuestMemory};

/// Guest-physical `0..size` backed by host-physical `hpa..hpa+size`.
#[derive(Debug)]
pub struct GuestRam {
    hpa: u64,
    size: u64,
}

impl GuestRam {
    /// # Safety
    /// `hpa..hpa+size` must be identity-mapped RAM that belongs to this VM
    /// alone (taken from the frame allocator, never handed to anyone else).
    pub unsafe fn new(hpa: u64, size: u64) -> Self {
        Self { hpa, size }
    }

    /// Host-physical base.
    pub fn hpa(&self) -> u64 {
        self.hpa
    }

    /// Zeroes all of it.
    pub fn zero(&mut self) {
        // SAFETY: the range is owned by this VM (constructor contract).
        unsafe { core::ptr::write_bytes(self.hpa as *mut u8, 0, self.size as usize) };
    }
}

impl GuestMemory for GuestRam {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemError> {
        let off = check_range(self.size, gpa, buf.len())?;
        // SAFETY: `off..off+len` lies inside the VM's own RAM (checked above).
        // The guest may write it concurrently: the bytes are a snapshot, as
        // for a DMA read by a device.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (self.hpa as usize + off) as *const u8,
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), GuestMemError> {
        let off = check_range(self.size, gpa, data.len())?;
        // SAFETY: as for `read`; the range belongs to this VM only.
        unsafe {
            core::ptr::copy_nonoverlapping(
                data.as_ptr(),
                (self.hpa as usize + off) as *mut u8,
                data.len(),
            )
        };
        Ok(())
    }
}

/// Page-table memory for [`paging`] tables: frames handed out by a closure,
/// entries read and written in place (identity-mapped).
pub struct FrameTables<F: FnMut() -> Option<u64>> {
    alloc: F,
}

impl<F: FnMut() -> Option<u64>> FrameTables<F> {
    /// # Safety
    /// Every address `alloc` returns must be a 4 KiB-aligned, identity-mapped
    /// frame owned by the tables for as long as they are in use.
    pub unsafe fn new(alloc: F) -> Self {
        Self { alloc }
    }
}

impl<F: FnMut() -> Option<u64>> paging::TableMemory for FrameTables<F> {
    fn alloc_table(&mut self) -> Option<platform::HostPhysAddr> {
        let frame = (self.alloc)()?;
        // SAFETY: the frame is owned by these tables (constructor contract).
        unsafe { core::ptr::write_bytes(frame as *mut u8, 0, 4096) };
        Some(platform::HostPhysAddr(frame))
    }

    fn read_entry(&self, table: platform::HostPhysAddr, index: usize) -> u64 {
        debug_assert!(index < 512);
        // SAFETY: `table` came from `alloc_table` (an owned frame) and index < 512.
        unsafe { ((table.0 as *const u64).add(index % 512)).read_volatile() }
    }

    fn write_entry(&mut self, table: platform::HostPhysAddr, index: usize, value: u64) {
        debug_assert!(index < 512);
        // SAFETY: as for `read_entry`.
        unsafe { ((table.0 as *mut u64).add(index % 512)).write_volatile(value) }
    }
}
