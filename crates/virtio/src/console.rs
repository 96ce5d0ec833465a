//! virtio-console (virtio 1.x, 5.3) with one port and no multiport: queue 0
//! carries input to the guest (`hvc0` reads), queue 1 its output.
//!
//! Both directions go through a [`ConsolePipe`] the device shares with the
//! hypervisor's console: output the guest writes is appended there (bounded:
//! what does not fit is dropped and counted), input the operator types
//! waits there (bounded likewise) until the guest posts receive buffers.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;

use spin::Mutex;

use crate::chain::{ChainReader, ChainWriter};
use crate::device::{DeviceStats, QueueIo, VirtioDevice, DEVICE_CONSOLE};
use crate::queue::QueueError;

const RX: u16 = 0;
const TX: u16 = 1;
const QUEUE_SIZE: u16 = 128;
/// Bytes of output kept for the hypervisor's console before dropping.
pub const OUTPUT_LIMIT: usize = 64 * 1024;
/// Bytes of input kept for the guest before dropping.
pub const INPUT_LIMIT: usize = 4096;

/// Bytes in both directions between a virtio console and the hypervisor.
#[derive(Default)]
pub struct ConsolePipe {
    input: VecDeque<u8>,
    output: Vec<u8>,
    /// Bytes dropped for want of room: input, output.
    pub dropped_input: u64,
    pub dropped_output: u64,
}

impl ConsolePipe {
    pub fn new() -> Arc<Mutex<ConsolePipe>> {
        Arc::new(Mutex::new(ConsolePipe::default()))
    }

    /// The operator typed `bytes`; false if some were dropped.
    pub fn push_input(&mut self, bytes: &[u8]) -> bool {
        let room = INPUT_LIMIT - self.input.len().min(INPUT_LIMIT);
        let n = bytes.len().min(room);
        self.input.extend(&bytes[..n]);
        self.dropped_input += (bytes.len() - n) as u64;
        n == bytes.len()
    }

    /// Takes what the guest wrote.
    pub fn take_output(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.output);
    }

    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }
}

/// A virtio console.
pub struct Console {
    pipe: Arc<Mutex<ConsolePipe>>,
    buf: Vec<u8>,
    stats: DeviceStats,
}

impl Console {
    pub fn new(pipe: Arc<Mutex<ConsolePipe>>) -> Self {
        Console {
            pipe,
            buf: Vec::new(),
            stats: DeviceStats::default(),
        }
    }

    fn transmit(&mut self, io: &mut QueueIo<'_>) -> Result<(), QueueError> {
        io.serve_all(TX, |chain, mem| {
            self.stats.requests += 1;
            let mut r = ChainReader::new(chain);
            let len = r.remaining().min(OUTPUT_LIMIT as u64) as usize;
            self.buf.resize(len, 0);
            if r.read_exact(&*mem, &mut self.buf).is_ok() {
                let mut pipe = self.pipe.lock();
                let room = OUTPUT_LIMIT - pipe.output.len().min(OUTPUT_LIMIT);
                let n = len.min(room);
                pipe.output.extend_from_slice(&self.buf[..n]);
                pipe.dropped_output += (len - n) as u64;
                self.stats.bytes_out += n as u64;
                self.stats.dropped += (len - n) as u64;
            } else {
                self.stats.errors += 1;
            }
            0
        })
    }

    fn receive(&mut self, io: &mut QueueIo<'_>) -> Result<(), QueueError> {
        loop {
            if self.pipe.lock().input.is_empty() {
                return Ok(());
            }
            let Some(chain) = io.pop(RX)? else {
                io.arm(RX)?;
                if io.has_available(RX)? {
                    continue;
                }
                return Ok(());
            };
            let mut w = ChainWriter::new(&chain);
            let bytes: Vec<u8> = {
                let mut pipe = self.pipe.lock();
                let n = (w.remaining() as usize).min(pipe.input.len());
                pipe.input.drain(..n).collect()
            };
            if w.write_all(&mut *io.mem, &bytes).is_err() {
                self.stats.errors += 1;
            }
            self.stats.requests += 1;
            self.stats.bytes_in += bytes.len() as u64;
            io.push_used(RX, chain.head, w.written() as u32)?;
        }
    }
}

impl VirtioDevice for Console {
    fn device_id(&self) -> u16 {
        DEVICE_CONSOLE
    }

    fn name(&self) -> &'static str {
        "console"
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_count(&self) -> u16 {
        2
    }

    fn queue_max_size(&self, _q: u16) -> u16 {
        QUEUE_SIZE
    }

    fn config_len(&self) -> u64 {
        // cols, rows, max_nr_ports, emerg_wr: none of their features offered.
        12
    }

    fn read_config(&self, offset: u64, out: &mut [u8]) {
        crate::device_config(&[0u8; 12], offset, out);
    }

    fn notify(&mut self, q: u16, io: &mut QueueIo<'_>) -> Result<(), QueueError> {
        match q {
            TX => self.transmit(io),
            RX => self.receive(io),
            _ => Ok(()),
        }
    }

    fn poll(&mut self, io: &mut QueueIo<'_>) -> Result<(), QueueError> {
        self.receive(io)
    }

    fn has_input(&self) -> bool {
        !self.pipe.lock().input.is_empty()
    }

    fn reset(&mut self) {}

    fn stats(&self) -> DeviceStats {
        self.stats
    }
}
