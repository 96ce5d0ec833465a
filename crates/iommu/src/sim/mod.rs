//! Simulated hardware for host tests: [`SimMemory`], a sparse physical
//! memory that is both the drivers' [`DmaMemory`] and the page tables'
//! `paging::TableMemory`, and simulated VT-d and AMD-Vi units that model the
//! register side effects the drivers wait on, walk the drivers' tables the
//! way the hardware (and QEMU 7.2's emulation, reserved-bit checks
//! included) does, cache what they walked until invalidated, and record
//! faults, so a test can ask what a device's DMA or interrupt would do.

mod amdvi;
mod vtd;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use core::cell::RefCell;

use platform::HostPhysAddr;

pub use amdvi::SimAmdVi;
pub use vtd::SimVtd;

use crate::hw::{DmaMemory, FRAME_SIZE};

/// Frames by number, and the bump pointer new frames come from.
#[derive(Debug, Default)]
struct Frames {
    frames: BTreeMap<u64, Box<[u8; 4096]>>,
    next: u64,
    limit: Option<usize>,
    flushes: usize,
}

/// Sparse physical memory shared by the driver, the page tables and the
/// simulated unit (clones share the same frames). Frames are handed out
/// upwards from the base given to [`new`](Self::new); reads of memory never
/// written return 0.
#[derive(Clone, Debug)]
pub struct SimMemory(Rc<RefCell<Frames>>);

impl SimMemory {
    /// Memory whose first frame is at `base` (4 KiB aligned).
    pub fn new(base: u64) -> Self {
        Self(Rc::new(RefCell::new(Frames {
            next: base & !0xfff,
            ..Frames::default()
        })))
    }

    /// Fails every allocation after `frames` more frames.
    pub fn set_limit(&self, frames: usize) {
        self.0.borrow_mut().limit = Some(frames);
    }

    /// Calls to [`DmaMemory::flush`] so far.
    pub fn flushes(&self) -> usize {
        self.0.borrow().flushes
    }

    /// The byte at `addr`.
    pub fn read_u8(&self, addr: u64) -> u8 {
        let f = self.0.borrow();
        f.frames
            .get(&(addr >> 12))
            .map_or(0, |frame| frame[(addr & 0xfff) as usize])
    }

    /// Writes the byte at `addr`.
    pub fn write_u8(&self, addr: u64, value: u8) {
        let mut f = self.0.borrow_mut();
        let frame = f
            .frames
            .entry(addr >> 12)
            .or_insert_with(|| Box::new([0; 4096]));
        frame[(addr & 0xfff) as usize] = value;
    }

    /// The little-endian quadword at `addr`.
    pub fn load(&self, addr: u64) -> u64 {
        (0..8).fold(0, |acc, i| {
            acc | (u64::from(self.read_u8(addr + i)) << (8 * i))
        })
    }

    /// Writes the little-endian quadword at `addr`.
    pub fn store(&self, addr: u64, value: u64) {
        for i in 0..8 {
            self.write_u8(addr + i, (value >> (8 * i)) as u8);
        }
    }

    /// The little-endian dword at `addr`.
    pub fn load32(&self, addr: u64) -> u32 {
        (0..4).fold(0, |acc, i| {
            acc | (u32::from(self.read_u8(addr + i)) << (8 * i))
        })
    }

    /// Writes the little-endian dword at `addr`.
    pub fn store32(&self, addr: u64, value: u32) {
        for i in 0..4 {
            self.write_u8(addr + i, (value >> (8 * i)) as u8);
        }
    }
}

impl DmaMemory for SimMemory {
    fn alloc_frames(&mut self, frames: usize, align: u64) -> Option<HostPhysAddr> {
        let mut f = self.0.borrow_mut();
        if let Some(limit) = f.limit {
            if frames > limit {
                return None;
            }
            f.limit = Some(limit - frames);
        }
        let align = align.max(FRAME_SIZE);
        let base = f.next.checked_add(align - 1)? & !(align - 1);
        let len = u64::try_from(frames).ok()?.checked_mul(FRAME_SIZE)?;
        f.next = base.checked_add(len)?;
        for i in 0..frames as u64 {
            f.frames.insert((base >> 12) + i, Box::new([0; 4096]));
        }
        Some(HostPhysAddr(base))
    }

    fn read_u32(&mut self, addr: HostPhysAddr) -> u32 {
        assert_eq!(addr.0 % 4, 0, "unaligned dword read at {addr}");
        self.load32(addr.0)
    }

    fn write_u32(&mut self, addr: HostPhysAddr, value: u32) {
        assert_eq!(addr.0 % 4, 0, "unaligned dword write at {addr}");
        self.store32(addr.0, value);
    }

    fn read_u64(&mut self, addr: HostPhysAddr) -> u64 {
        assert_eq!(addr.0 % 8, 0, "unaligned quadword read at {addr}");
        self.load(addr.0)
    }

    fn write_u64(&mut self, addr: HostPhysAddr, value: u64) {
        assert_eq!(addr.0 % 8, 0, "unaligned quadword write at {addr}");
        self.store(addr.0, value);
    }

    fn flush(&mut self, _addr: HostPhysAddr, _len: u64) {
        self.0.borrow_mut().flushes += 1;
    }
}

impl paging::TableMemory for SimMemory {
    fn alloc_table(&mut self) -> Option<HostPhysAddr> {
        self.alloc_frames(1, FRAME_SIZE)
    }

    fn read_entry(&self, table: HostPhysAddr, index: usize) -> u64 {
        self.load(table.0 + 8 * index as u64)
    }

    fn write_entry(&mut self, table: HostPhysAddr, index: usize, value: u64) {
        self.store(table.0 + 8 * index as u64, value);
    }
}

/// What a simulated DMA did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dma {
    /// Reached this host-physical address.
    Ok(u64),
    /// Passed untranslated (translation off, or AMD-Vi DTE V = 0).
    Untranslated(u64),
    /// Blocked, with the unit's reason (VT-d fault reason; AMD-Vi event code).
    Blocked(u8),
}

/// What a simulated interrupt request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// Delivered as this vector to this destination.
    Delivered {
        /// Vector.
        vector: u8,
        /// Destination APIC id.
        dest: u32,
    },
    /// Passed through as sent (remapping off for the source).
    Unmapped,
    /// Blocked, with the unit's reason.
    Blocked(u8),
}

#[cfg(test)]
mod tests {
    use super::*;
    use paging::TableMemory;

    #[test]
    fn memory_is_shared_aligned_and_limited() {
        let mut m = SimMemory::new(0x10_0000);
        let a = m.alloc_frames(1, 4096).unwrap();
        let b = m.alloc_frames(2, 0x1_0000).unwrap();
        assert_eq!(a, HostPhysAddr(0x10_0000));
        assert_eq!(b, HostPhysAddr(0x11_0000));
        let mut clone = m.clone();
        clone.write_u64(HostPhysAddr(0x11_0008), 0x1122_3344_5566_7788);
        assert_eq!(m.read_u32(HostPhysAddr(0x11_000c)), 0x1122_3344);
        assert_eq!(m.read_entry(b, 1), 0x1122_3344_5566_7788);
        m.set_limit(1);
        assert!(m.alloc_frames(2, 4096).is_none());
        assert!(m.alloc_table().is_some());
        assert!(m.alloc_table().is_none());
    }
}
