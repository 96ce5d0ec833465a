//! Bounds-checked reads of physical memory, so parsers never touch raw pointers.
//!
//! The hypervisor implements [`PhysMemory`] over identity-mapped RAM; tests and
//! anything that already holds the bytes use [`SliceMemory`].

use core::fmt;

use crate::addr::HostPhysAddr;

/// A read that [`PhysMemory`] could not satisfy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysReadError {
    /// First address asked for.
    pub addr: HostPhysAddr,
    /// Number of bytes asked for.
    pub len: usize,
}

impl fmt::Display for PhysReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot read {:#x} bytes of physical memory at {}",
            self.len, self.addr
        )
    }
}

/// Read access to physical memory.
pub trait PhysMemory {
    /// Fills `buf` with the bytes at `addr..addr + buf.len()`, or fails
    /// without a partial guarantee if any of them cannot be read.
    fn read(&self, addr: HostPhysAddr, buf: &mut [u8]) -> Result<(), PhysReadError>;
}

/// A window of physical memory held in a byte slice: `bytes[0]` is at `base`.
#[derive(Clone, Copy, Debug)]
pub struct SliceMemory<'a> {
    base: HostPhysAddr,
    bytes: &'a [u8],
}

impl<'a> SliceMemory<'a> {
    /// Physical memory where `bytes[0]` sits at `base`; nothing else is readable.
    pub const fn new(base: HostPhysAddr, bytes: &'a [u8]) -> Self {
        Self { base, bytes }
    }
}

impl PhysMemory for SliceMemory<'_> {
    fn read(&self, addr: HostPhysAddr, buf: &mut [u8]) -> Result<(), PhysReadError> {
        let err = PhysReadError {
            addr,
            len: buf.len(),
        };
        let offset = addr.0.checked_sub(self.base.0).ok_or(err)?;
        let offset = usize::try_from(offset).map_err(|_| err)?;
        let end = offset.checked_add(buf.len()).ok_or(err)?;
        let src = self.bytes.get(offset..end).ok_or(err)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Little-endian readers over a byte slice, `None` when out of bounds.
pub(crate) trait LeBytes {
    fn u8_at(&self, offset: usize) -> Option<u8>;
    fn u16_at(&self, offset: usize) -> Option<u16>;
    fn u32_at(&self, offset: usize) -> Option<u32>;
    fn u64_at(&self, offset: usize) -> Option<u64>;
}

impl LeBytes for [u8] {
    fn u8_at(&self, offset: usize) -> Option<u8> {
        self.get(offset).copied()
    }

    fn u16_at(&self, offset: usize) -> Option<u16> {
        let b = self.get(offset..offset.checked_add(2)?)?;
        Some(u16::from_le_bytes(b.try_into().ok()?))
    }

    fn u32_at(&self, offset: usize) -> Option<u32> {
        let b = self.get(offset..offset.checked_add(4)?)?;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }

    fn u64_at(&self, offset: usize) -> Option<u64> {
        let b = self.get(offset..offset.checked_add(8)?)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_memory_bounds() {
        let bytes = [1u8, 2, 3, 4];
        let mem = SliceMemory::new(HostPhysAddr(0x1000), &bytes);
        let mut buf = [0u8; 2];
        mem.read(HostPhysAddr(0x1002), &mut buf).unwrap();
        assert_eq!(buf, [3, 4]);
        assert!(mem.read(HostPhysAddr(0x1003), &mut buf).is_err());
        assert!(mem.read(HostPhysAddr(0xfff), &mut buf).is_err());
        assert!(mem.read(HostPhysAddr(u64::MAX), &mut buf).is_err());
        let mut empty = [0u8; 0];
        assert!(mem.read(HostPhysAddr(0x1004), &mut empty).is_ok());
    }

    #[test]
    fn le_readers() {
        let b: &[u8] = &[0x78, 0x56, 0x34, 0x12, 0, 0, 0, 0x80];
        assert_eq!(b.u16_at(0), Some(0x5678));
        assert_eq!(b.u32_at(0), Some(0x1234_5678));
        assert_eq!(b.u64_at(0), Some(0x8000_0000_1234_5678));
        assert_eq!(b.u32_at(5), None);
        assert_eq!(b.u8_at(8), None);
        assert_eq!(b.u32_at(usize::MAX), None);
    }
}
