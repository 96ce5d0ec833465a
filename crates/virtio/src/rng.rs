//! virtio-rng (virtio 1.x, 5.4): one request queue whose device-writable
//! buffers the device fills with entropy from an [`EntropySource`].
//!
//! A request gets at most [`MAX_REQUEST`] bytes (the used length says how
//! many). A source that fails (the CPU's generator ran dry) answers with
//! what it had: a used length of 0 is legal and the driver asks again.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::chain::ChainWriter;
use crate::device::{DeviceStats, QueueIo, VirtioDevice, DEVICE_ENTROPY};
use crate::queue::QueueError;

/// Bytes served per request at most.
pub const MAX_REQUEST: usize = 4096;

/// Where entropy comes from (RDSEED/RDRAND in the hypervisor).
pub trait EntropySource: Send {
    /// Fills `buf`; the number of bytes it could fill (from the start).
    fn fill(&mut self, buf: &mut [u8]) -> usize;
}

/// A virtio entropy device.
pub struct Rng {
    source: Box<dyn EntropySource>,
    buf: Vec<u8>,
    stats: DeviceStats,
}

impl Rng {
    pub fn new(source: Box<dyn EntropySource>) -> Self {
        Rng {
            source,
            buf: Vec::new(),
            stats: DeviceStats::default(),
        }
    }
}

impl VirtioDevice for Rng {
    fn device_id(&self) -> u16 {
        DEVICE_ENTROPY
    }

    fn name(&self) -> &'static str {
        "rng"
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_count(&self) -> u16 {
        1
    }

    fn config_len(&self) -> u64 {
        0
    }

    fn read_config(&self, offset: u64, out: &mut [u8]) {
        crate::device_config(&[], offset, out);
    }

    fn notify(&mut self, q: u16, io: &mut QueueIo<'_>) -> Result<(), QueueError> {
        if q != 0 {
            return Ok(());
        }
        io.serve_all(0, |chain, mem| {
            self.stats.requests += 1;
            let mut w = ChainWriter::new(chain);
            let want = (w.remaining() as usize).min(MAX_REQUEST);
            self.buf.resize(want, 0);
            let got = self.source.fill(&mut self.buf);
            if got < want {
                self.stats.errors += 1;
            }
            if w.write_all(&mut *mem, &self.buf[..got]).is_ok() {
                self.stats.bytes_in += got as u64;
            }
            w.written() as u32
        })
    }

    fn reset(&mut self) {}

    fn stats(&self) -> DeviceStats {
        self.stats
    }
}
