//! Memory an IOMMU walks (its root/context/device tables, queues, logs, interrupt remapping
//! tables, and the DMA page tables), reached through the identity map, with cache-line flushes
//! for units whose walks do not snoop the CPU's caches; and an IOMMU's registers.

use crate::pci::MmioRegion;
use iommu::{DmaMemory, HostPhysAddr, Regs};

/// Frames from an allocator closure `(frames, align) -> base`, read and written in place.
pub struct DmaFrames<F: FnMut(usize, u64) -> Option<u64>> {
    alloc: F,
}

impl<F: FnMut(usize, u64) -> Option<u64>> DmaFrames<F> {
    /// # Safety
    /// Every range `alloc` returns must be identity-mapped RAM owned by the IOMMU driver for as
    /// long as the unit may walk it (never freed while the hypervisor runs).
    pub unsafe fn new(alloc: F) -> Self {
        DmaFrames { alloc }
    }
}

/// Writes back the cache lines of `[addr, addr + len)` so a non-snooping walker sees them.
pub fn flush_lines(addr: u64, len: u64) {
    let mut line = addr & !63;
    while line < addr + len {
        // SAFETY: `clflush` of an identity-mapped address only writes back and invalidates a
        // cache line; it changes no memory contents.
        unsafe {
            core::arch::asm!("clflush [{}]", in(reg) line, options(nostack, preserves_flags))
        };
        line += 64;
    }
    // SAFETY: a fence has no memory-safety effect.
    unsafe { core::arch::asm!("mfence", options(nostack, preserves_flags)) };
}

impl<F: FnMut(usize, u64) -> Option<u64>> DmaMemory for DmaFrames<F> {
    fn alloc_frames(&mut self, frames: usize, align: u64) -> Option<HostPhysAddr> {
        let base = (self.alloc)(frames, align)?;
        // SAFETY: the range was just handed to this driver (constructor contract).
        unsafe { core::ptr::write_bytes(base as *mut u8, 0, frames * 4096) };
        flush_lines(base, frames as u64 * 4096);
        Some(HostPhysAddr(base))
    }

    fn read_u32(&mut self, addr: HostPhysAddr) -> u32 {
        // SAFETY: the driver only reads inside frames it allocated (trait contract), aligned.
        unsafe { (addr.0 as *const u32).read_volatile() }
    }

    fn write_u32(&mut self, addr: HostPhysAddr, value: u32) {
        // SAFETY: as for `read_u32`.
        unsafe { (addr.0 as *mut u32).write_volatile(value) }
    }

    fn read_u64(&mut self, addr: HostPhysAddr) -> u64 {
        // SAFETY: as for `read_u32`.
        unsafe { (addr.0 as *const u64).read_volatile() }
    }

    fn write_u64(&mut self, addr: HostPhysAddr, value: u64) {
        // SAFETY: as for `read_u32`; one aligned 64-bit store.
        unsafe { (addr.0 as *mut u64).write_volatile(value) }
    }

    fn flush(&mut self, addr: HostPhysAddr, len: u64) {
        flush_lines(addr.0, len);
    }
}

impl Regs for MmioRegion {
    fn read32(&mut self, offset: usize) -> u32 {
        self.read(offset as u64, 4) as u32
    }

    fn read64(&mut self, offset: usize) -> u64 {
        self.read(offset as u64, 8)
    }

    fn write32(&mut self, offset: usize, value: u32) {
        self.write(offset as u64, 4, u64::from(value));
    }

    fn write64(&mut self, offset: usize, value: u64) {
        self.write(offset as u64, 8, value);
    }
}
