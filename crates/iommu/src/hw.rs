//! The two traits a driver reaches hardware through, and the MSI message a
//! device is programmed with once its interrupts are remapped.

use platform::HostPhysAddr;

/// Bytes in one frame of [`DmaMemory`].
pub const FRAME_SIZE: u64 = 4096;

/// A remapping unit's MMIO registers, addressed by byte offset from the
/// unit's base.
///
/// The hypervisor implements it with volatile accesses to the (uncached)
/// register page; the simulated units of the `sim` module model the side
/// effects. 64-bit registers are accessed with one 64-bit access (both
/// vendors allow it in 64-bit mode, and QEMU acts on 64-bit writes to the
/// VT-d command registers at once).
pub trait Regs {
    /// The 32-bit register at `offset`.
    fn read32(&mut self, offset: usize) -> u32;
    /// The 64-bit register at `offset`.
    fn read64(&mut self, offset: usize) -> u64;
    /// Writes the 32-bit register at `offset`.
    fn write32(&mut self, offset: usize, value: u32);
    /// Writes the 64-bit register at `offset`.
    fn write64(&mut self, offset: usize, value: u64);
}

impl<T: Regs + ?Sized> Regs for &mut T {
    fn read32(&mut self, offset: usize) -> u32 {
        (**self).read32(offset)
    }
    fn read64(&mut self, offset: usize) -> u64 {
        (**self).read64(offset)
    }
    fn write32(&mut self, offset: usize, value: u32) {
        (**self).write32(offset, value);
    }
    fn write64(&mut self, offset: usize, value: u64) {
        (**self).write64(offset, value);
    }
}

/// Memory for the structures a unit reads and writes by DMA: root and
/// context tables, device tables, command and invalidation queues, event
/// logs, interrupt remapping tables, completion words.
///
/// Implementations must uphold:
/// - [`alloc_frames`](Self::alloc_frames) returns `frames` physically
///   contiguous 4 KiB frames, zeroed, starting at a multiple of `align`
///   (a power of two, at least 4096), below the unit's address width, never
///   handed out again while the driver lives (the unit may walk them at any
///   time);
/// - reads and writes are single, naturally aligned accesses that the
///   compiler does not merge, split or elide (the unit writes completion
///   words and event entries behind the CPU's back: read them volatile).
///
/// The drivers only access addresses inside frames they allocated.
pub trait DmaMemory {
    /// `frames` zeroed contiguous frames aligned to `align` bytes, or `None`
    /// when memory ran out.
    fn alloc_frames(&mut self, frames: usize, align: u64) -> Option<HostPhysAddr>;
    /// The 32-bit word at `addr` (4-byte aligned).
    fn read_u32(&mut self, addr: HostPhysAddr) -> u32;
    /// Writes the 32-bit word at `addr` (4-byte aligned).
    fn write_u32(&mut self, addr: HostPhysAddr, value: u32);
    /// The 64-bit word at `addr` (8-byte aligned).
    fn read_u64(&mut self, addr: HostPhysAddr) -> u64;
    /// Writes the 64-bit word at `addr` (8-byte aligned) in one store.
    fn write_u64(&mut self, addr: HostPhysAddr, value: u64);
    /// Makes the CPU's writes to `len` bytes at `addr` visible to a unit
    /// whose table walks do not snoop the CPU caches (VT-d `ECAP.C` = 0):
    /// `clflush` each line, then a fence. The drivers call it after every
    /// table update when the unit is not coherent; the default does nothing.
    fn flush(&mut self, addr: HostPhysAddr, len: u64) {
        let _ = (addr, len);
    }
}

impl<T: DmaMemory + ?Sized> DmaMemory for &mut T {
    fn alloc_frames(&mut self, frames: usize, align: u64) -> Option<HostPhysAddr> {
        (**self).alloc_frames(frames, align)
    }
    fn read_u32(&mut self, addr: HostPhysAddr) -> u32 {
        (**self).read_u32(addr)
    }
    fn write_u32(&mut self, addr: HostPhysAddr, value: u32) {
        (**self).write_u32(addr, value);
    }
    fn read_u64(&mut self, addr: HostPhysAddr) -> u64 {
        (**self).read_u64(addr)
    }
    fn write_u64(&mut self, addr: HostPhysAddr, value: u64) {
        (**self).write_u64(addr, value);
    }
    fn flush(&mut self, addr: HostPhysAddr, len: u64) {
        (**self).flush(addr, len);
    }
}

/// The MSI address and data a device (its MSI or MSI-X capability) must be
/// programmed with so that its interrupt goes through a remapping entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    /// Message address (the upper 32 bits are 0 on both vendors).
    pub address: u64,
    /// Message data.
    pub data: u32,
}
