//! Guest-physical memory as the hypervisor's logic reaches it: bounds-checked
//! reads and writes by guest-physical address, never raw pointers.

use core::fmt;

use crate::layout::RamLayout;

/// A guest-physical address range the guest does not have as RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMemError {
    pub gpa: u64,
    pub len: usize,
}

impl fmt::Display for GuestMemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guest-physical range {:#x}+{:#x} is not guest RAM",
            self.gpa, self.len
        )
    }
}

/// A VM's RAM, addressed by guest-physical address.
pub trait GuestMemory {
    /// Bytes of RAM starting at guest-physical 0 without a gap (the RAM below
    /// the PCI hole; [`GuestMemory::layout`] has all of it).
    fn size(&self) -> u64;
    /// Where all of the VM's RAM is: the list memory maps are made from. By
    /// default one range of [`GuestMemory::size`] bytes from 0.
    fn layout(&self) -> RamLayout {
        RamLayout::new(self.size())
    }
    /// Copies guest RAM at `gpa` into `buf`; fails without copying anything
    /// if any byte lies outside RAM.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemError>;
    /// Copies `data` into guest RAM at `gpa`; same all-or-nothing rule.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), GuestMemError>;

    /// Reads a little-endian u64.
    fn read_u64(&self, gpa: u64) -> Result<u64, GuestMemError> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a little-endian u32.
    fn read_u32(&self, gpa: u64) -> Result<u32, GuestMemError> {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a little-endian u32.
    fn write_u32(&mut self, gpa: u64, v: u32) -> Result<(), GuestMemError> {
        self.write(gpa, &v.to_le_bytes())
    }

    /// Writes a little-endian u64.
    fn write_u64(&mut self, gpa: u64, v: u64) -> Result<(), GuestMemError> {
        self.write(gpa, &v.to_le_bytes())
    }
}

/// Checks `gpa..gpa+len` against a RAM of `size` bytes; returns the start offset.
pub fn check_range(size: u64, gpa: u64, len: usize) -> Result<usize, GuestMemError> {
    let err = GuestMemError { gpa, len };
    let end = gpa.checked_add(len as u64).ok_or(err)?;
    if end > size {
        return Err(err);
    }
    usize::try_from(gpa).map_err(|_| err)
}

/// Guest RAM held in a byte vector: for host tests of everything that touches
/// guest memory (loaders, hypercalls, device DMA).
#[cfg(any(test, feature = "test-utils"))]
pub struct VecMemory(pub alloc::vec::Vec<u8>);

#[cfg(any(test, feature = "test-utils"))]
impl VecMemory {
    /// `size` bytes of zeroed RAM.
    pub fn new(size: usize) -> Self {
        VecMemory(alloc::vec![0; size])
    }
}

#[cfg(any(test, feature = "test-utils"))]
impl GuestMemory for VecMemory {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemError> {
        let off = check_range(self.size(), gpa, buf.len())?;
        buf.copy_from_slice(&self.0[off..off + buf.len()]);
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), GuestMemError> {
        let off = check_range(self.size(), gpa, data.len())?;
        self.0[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// A [`VecMemory`] that counts writes, so a test can prove that nothing was written.
#[cfg(any(test, feature = "test-utils"))]
pub struct CountingMemory {
    pub mem: VecMemory,
    pub writes: usize,
}

#[cfg(any(test, feature = "test-utils"))]
impl CountingMemory {
    /// `size` bytes, every one `fill`.
    pub fn new(size: usize, fill: u8) -> Self {
        let mut mem = VecMemory::new(size);
        mem.0.fill(fill);
        CountingMemory { mem, writes: 0 }
    }

    /// The bytes at `gpa..gpa + len` (panics outside the memory: tests only).
    pub fn bytes(&self, gpa: u64, len: u64) -> &[u8] {
        &self.mem.0[gpa as usize..(gpa + len) as usize]
    }
}

#[cfg(any(test, feature = "test-utils"))]
impl GuestMemory for CountingMemory {
    fn size(&self) -> u64 {
        self.mem.size()
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemError> {
        self.mem.read(gpa, buf)
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), GuestMemError> {
        self.writes += 1;
        self.mem.write(gpa, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_and_wrapping_accesses_fail_whole() {
        let mut m = VecMemory::new(4096);
        assert!(m.write(4090, &[1; 6]).is_ok());
        assert_eq!(
            m.write(4091, &[1; 6]),
            Err(GuestMemError { gpa: 4091, len: 6 })
        );
        assert!(m.read(u64::MAX - 2, &mut [0; 8]).is_err());
        assert_eq!(m.read_u32(4092).unwrap(), 0x0101_0101);
        assert!(m.read_u64(4092).is_err());
    }
}
