//! Reading and writing a chain's buffers as byte streams: a request header
//! split over several descriptors reads the same as one in a single buffer.
//!
//! The buffers were checked to lie in guest RAM when the chain was popped;
//! the guest can still change its RAM map only through the hypervisor, so a
//! failing copy here means a buffer the guest described badly (it is
//! reported, never trusted).

use vcpu::GuestMemory;

use crate::queue::{Chain, Descriptor};

/// A chain's buffers could not be read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// Fewer bytes than needed in the device-readable (or writable) part.
    Short,
    /// A buffer is not guest RAM.
    Memory,
}

/// Reads a chain's device-readable buffers in order.
pub struct ChainReader<'a> {
    descs: &'a [Descriptor],
    /// Index into `descs` and offset inside it.
    at: usize,
    off: u32,
    remaining: u64,
}

impl<'a> ChainReader<'a> {
    pub fn new(chain: &'a Chain) -> Self {
        let end = chain
            .descriptors
            .iter()
            .position(|d| d.writable)
            .unwrap_or(chain.descriptors.len());
        let descs = &chain.descriptors[..end];
        ChainReader {
            descs,
            at: 0,
            off: 0,
            remaining: descs.iter().map(|d| u64::from(d.len)).sum(),
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Fills `buf` from the stream.
    pub fn read_exact(
        &mut self,
        mem: &(impl GuestMemory + ?Sized),
        buf: &mut [u8],
    ) -> Result<(), ChainError> {
        if (buf.len() as u64) > self.remaining {
            return Err(ChainError::Short);
        }
        let mut done = 0;
        while done < buf.len() {
            let d = self.descs[self.at];
            let n = ((d.len - self.off) as usize).min(buf.len() - done);
            mem.read(d.addr + u64::from(self.off), &mut buf[done..done + n])
                .map_err(|_| ChainError::Memory)?;
            done += n;
            self.advance(n as u32);
        }
        Ok(())
    }

    /// Hands the next `len` bytes to `sink` in pieces (at most one buffer
    /// each, never more than `chunk.len()`), through `chunk`.
    pub fn copy_out(
        &mut self,
        mem: &(impl GuestMemory + ?Sized),
        mut len: u64,
        chunk: &mut [u8],
        mut sink: impl FnMut(&[u8]) -> Result<(), ChainError>,
    ) -> Result<(), ChainError> {
        if len > self.remaining {
            return Err(ChainError::Short);
        }
        while len > 0 {
            let n = (len.min(chunk.len() as u64)) as usize;
            self.read_exact(mem, &mut chunk[..n])?;
            sink(&chunk[..n])?;
            len -= n as u64;
        }
        Ok(())
    }

    fn advance(&mut self, n: u32) {
        self.remaining -= u64::from(n);
        self.off += n;
        while self.at < self.descs.len() && self.off == self.descs[self.at].len {
            self.at += 1;
            self.off = 0;
        }
    }
}

/// Writes a chain's device-writable buffers in order.
pub struct ChainWriter<'a> {
    descs: &'a [Descriptor],
    at: usize,
    off: u32,
    remaining: u64,
    written: u64,
}

impl<'a> ChainWriter<'a> {
    pub fn new(chain: &'a Chain) -> Self {
        let start = chain
            .descriptors
            .iter()
            .position(|d| d.writable)
            .unwrap_or(chain.descriptors.len());
        let descs = &chain.descriptors[start..];
        ChainWriter {
            descs,
            at: 0,
            off: 0,
            remaining: descs.iter().map(|d| u64::from(d.len)).sum(),
            written: 0,
        }
    }

    /// Room left.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Bytes written so far (what the used ring reports).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `data`.
    pub fn write_all(
        &mut self,
        mem: &mut (impl GuestMemory + ?Sized),
        data: &[u8],
    ) -> Result<(), ChainError> {
        if (data.len() as u64) > self.remaining {
            return Err(ChainError::Short);
        }
        let mut done = 0;
        while done < data.len() {
            while self.off == self.descs[self.at].len {
                self.at += 1;
                self.off = 0;
            }
            let d = self.descs[self.at];
            let n = ((d.len - self.off) as usize).min(data.len() - done);
            mem.write(d.addr + u64::from(self.off), &data[done..done + n])
                .map_err(|_| ChainError::Memory)?;
            done += n;
            self.off += n as u32;
            self.remaining -= n as u64;
            self.written += n as u64;
        }
        Ok(())
    }

    /// Writes `data` at the very end of the writable part (a status byte),
    /// wherever the stream is now; counts it as written.
    pub fn write_last(
        &mut self,
        mem: &mut (impl GuestMemory + ?Sized),
        data: &[u8],
    ) -> Result<(), ChainError> {
        let last = self.descs.iter().rev().find(|d| d.len > 0);
        let Some(d) = last else {
            return Err(ChainError::Short);
        };
        if (d.len as usize) < data.len() {
            return Err(ChainError::Short);
        }
        mem.write(d.addr + u64::from(d.len) - data.len() as u64, data)
            .map_err(|_| ChainError::Memory)?;
        self.written += data.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use vcpu::VecMemory;

    fn chain(d: &[(u64, u32, bool)]) -> Chain {
        Chain {
            head: 0,
            descriptors: d
                .iter()
                .map(|&(addr, len, writable)| Descriptor {
                    addr,
                    len,
                    writable,
                })
                .collect(),
        }
    }

    #[test]
    fn a_header_split_over_buffers_reads_as_one() {
        let mut m = VecMemory(vec![0; 0x1000]);
        m.write(0x100, &[1, 2, 3]).unwrap();
        m.write(0x200, &[]).unwrap();
        m.write(0x300, &[4, 5, 6, 7]).unwrap();
        let c = chain(&[
            (0x100, 3, false),
            (0x200, 0, false),
            (0x300, 4, false),
            (0x400, 8, true),
        ]);
        let mut r = ChainReader::new(&c);
        assert_eq!(r.remaining(), 7);
        let mut b = [0u8; 5];
        r.read_exact(&m, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4, 5]);
        let mut b = [0u8; 3];
        assert_eq!(r.read_exact(&m, &mut b), Err(ChainError::Short));
        let mut b = [0u8; 2];
        r.read_exact(&m, &mut b).unwrap();
        assert_eq!(b, [6, 7]);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn writes_fill_buffers_in_order_and_the_status_goes_last() {
        let mut m = VecMemory(vec![0; 0x1000]);
        let c = chain(&[(0x100, 4, false), (0x200, 2, true), (0x300, 3, true)]);
        let mut w = ChainWriter::new(&c);
        assert_eq!(w.remaining(), 5);
        w.write_all(&mut m, &[9, 8, 7]).unwrap();
        assert_eq!(w.write_all(&mut m, &[1, 1, 1]), Err(ChainError::Short));
        w.write_last(&mut m, &[0xEE]).unwrap();
        assert_eq!(w.written(), 4);
        assert_eq!(&m.0[0x200..0x202], &[9, 8]);
        assert_eq!(&m.0[0x300..0x303], &[7, 0, 0xEE]);
    }

    #[test]
    fn no_writable_buffer_takes_no_status() {
        let mut m = VecMemory(vec![0; 0x100]);
        let c = chain(&[(0x10, 4, false)]);
        let mut w = ChainWriter::new(&c);
        assert_eq!(w.write_last(&mut m, &[0]), Err(ChainError::Short));
        let c = chain(&[(0x10, 0, true)]);
        let mut w = ChainWriter::new(&c);
        assert_eq!(w.write_last(&mut m, &[0]), Err(ChainError::Short));
    }
}
