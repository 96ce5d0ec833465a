//! A VM's RAM as the hypervisor reaches it: one contiguous host-physical
//! backing, identity mapped, laid out in guest-physical space by a
//! [`RamLayout`] (below the PCI hole, the rest above 4 GiB), accessed only
//! through bounds-checked volatile copies; and the memory that holds the
//! VM's second-level page tables.
//!
//! A [`GuestRam`] is a handle (`Copy`): each vCPU holds its own, so guest
//! memory is reached without a VM-wide lock. The guest writes the same
//! memory concurrently; every copy is volatile, so the compiler never
//! assumes the bytes stay put between two reads.

use vcpu::{GuestMemError, GuestMemory, RamLayout};

/// The VM's RAM: `layout` backed by host-physical `hpa..hpa + layout.total()`.
#[derive(Clone, Copy, Debug)]
pub struct GuestRam {
    hpa: u64,
    layout: RamLayout,
}

/// Copies `data` to guest memory at `dst` with volatile stores (aligned
/// 8-byte stores where it can).
///
/// # Safety
/// `dst..dst + data.len()` must be identity-mapped memory of this VM.
unsafe fn store_volatile(dst: *mut u8, data: &[u8]) {
    let mut i = 0;
    while i < data.len() && !(dst as usize + i).is_multiple_of(8) {
        // SAFETY: inside the range (caller's contract).
        unsafe { dst.add(i).write_volatile(data[i]) };
        i += 1;
    }
    while i + 8 <= data.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&data[i..i + 8]);
        // SAFETY: inside the range and 8-byte aligned (the loop above).
        unsafe { (dst.add(i) as *mut u64).write_volatile(u64::from_ne_bytes(word)) };
        i += 8;
    }
    while i < data.len() {
        // SAFETY: inside the range.
        unsafe { dst.add(i).write_volatile(data[i]) };
        i += 1;
    }
}

/// Copies guest memory at `src` into `buf` with volatile loads.
///
/// # Safety
/// `src..src + buf.len()` must be identity-mapped memory of this VM.
unsafe fn load_volatile(src: *const u8, buf: &mut [u8]) {
    let mut i = 0;
    while i < buf.len() && !(src as usize + i).is_multiple_of(8) {
        // SAFETY: inside the range (caller's contract).
        buf[i] = unsafe { src.add(i).read_volatile() };
        i += 1;
    }
    while i + 8 <= buf.len() {
        // SAFETY: inside the range and 8-byte aligned.
        let word = unsafe { (src.add(i) as *const u64).read_volatile() };
        buf[i..i + 8].copy_from_slice(&word.to_ne_bytes());
        i += 8;
    }
    while i < buf.len() {
        // SAFETY: inside the range.
        buf[i] = unsafe { src.add(i).read_volatile() };
        i += 1;
    }
}

impl GuestRam {
    /// # Safety
    /// `hpa..hpa + layout.total()` must be identity-mapped RAM that belongs
    /// to this VM alone (taken from the frame allocator, never handed to
    /// anyone else) for as long as any copy of the handle is used.
    pub unsafe fn new(hpa: u64, layout: RamLayout) -> Self {
        Self { hpa, layout }
    }

    /// Host-physical base of the backing.
    pub fn hpa(&self) -> u64 {
        self.hpa
    }

    /// Zeroes all of it (the VM is not running).
    pub fn zero(&self) {
        // SAFETY: the backing is owned by this VM (constructor contract).
        unsafe { core::ptr::write_bytes(self.hpa as *mut u8, 0, self.layout.total() as usize) };
    }

    fn locate(&self, gpa: u64, len: usize) -> Result<usize, GuestMemError> {
        let err = GuestMemError { gpa, len };
        let off = self.layout.locate(gpa, len as u64).ok_or(err)?;
        let at = self.hpa.checked_add(off).ok_or(err)?;
        usize::try_from(at).map_err(|_| err)
    }
}

impl GuestMemory for GuestRam {
    fn size(&self) -> u64 {
        self.layout.low()
    }

    fn layout(&self) -> RamLayout {
        self.layout
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemError> {
        let at = self.locate(gpa, buf.len())?;
        // SAFETY: `at..at + len` lies inside the VM's own backing (the layout
        // checked it). The bytes are a snapshot, as for a DMA read by a device.
        unsafe { load_volatile(at as *const u8, buf) };
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), GuestMemError> {
        let at = self.locate(gpa, data.len())?;
        // SAFETY: as for `read`; the backing belongs to this VM only.
        unsafe { store_volatile(at as *mut u8, data) };
        Ok(())
    }
}

/// Page-table memory for [`paging`] tables: frames handed out by a closure,
/// entries read and written in place (identity-mapped).
pub struct FrameTables<F: FnMut() -> Option<u64>> {
    alloc: F,
    /// Write back each entry written (for an IOMMU whose walks do not snoop).
    flush: bool,
}

impl<F: FnMut() -> Option<u64>> FrameTables<F> {
    /// # Safety
    /// Every address `alloc` returns must be a 4 KiB-aligned, identity-mapped
    /// frame owned by the tables for as long as they are in use.
    pub unsafe fn new(alloc: F) -> Self {
        Self {
            alloc,
            flush: false,
        }
    }

    /// Like [`FrameTables::new`], for tables an IOMMU walks: every entry
    /// written is flushed from the CPU caches.
    ///
    /// # Safety
    /// As for [`FrameTables::new`].
    #[cfg(feature = "bare-metal")]
    pub unsafe fn for_iommu(alloc: F) -> Self {
        Self { alloc, flush: true }
    }
}

impl<F: FnMut() -> Option<u64>> paging::TableMemory for FrameTables<F> {
    fn alloc_table(&mut self) -> Option<platform::HostPhysAddr> {
        let frame = (self.alloc)()?;
        // SAFETY: the frame is owned by these tables (constructor contract).
        unsafe { core::ptr::write_bytes(frame as *mut u8, 0, 4096) };
        #[cfg(feature = "bare-metal")]
        if self.flush {
            crate::dma::flush_lines(frame, 4096);
        }
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
        #[cfg(feature = "bare-metal")]
        if self.flush {
            crate::dma::flush_lines(table.0 + 8 * (index % 512) as u64, 8);
        }
    }
}
