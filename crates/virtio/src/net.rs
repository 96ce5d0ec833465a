//! virtio-net (virtio 1.x, 5.1): a receive queue (0) and a transmit queue
//! (1) over a [`NetBackend`], with a fixed MAC address and the link up.
//!
//! Every buffer starts with the 12-byte `virtio_net_hdr` (VERSION_1 always
//! has `num_buffers`). No offloads are offered, so a transmitted header is
//! read and ignored and a received one is all zero with `num_buffers = 1`.
//! A transmitted frame that is too short or too long, or a receive buffer
//! too small for the frame waiting, is counted and dropped; the device goes
//! on. Frames wait in the backend (bounded) until the driver posts receive
//! buffers.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use crate::chain::{ChainReader, ChainWriter};
use crate::device::{DeviceStats, QueueIo, VirtioDevice, DEVICE_NET};
use crate::queue::QueueError;
use crate::switch::{NetBackend, MAX_FRAME, MIN_FRAME};

/// Feature bits (5.1.3).
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
pub const VIRTIO_NET_F_STATUS: u64 = 1 << 16;
/// Status: link up.
pub const VIRTIO_NET_S_LINK_UP: u16 = 1;
/// Bytes of the header in front of every frame.
pub const NET_HDR_LEN: usize = 12;

const RX: u16 = 0;
const TX: u16 = 1;
const QUEUE_SIZE: u16 = 256;

/// A virtio-net interface.
pub struct Net {
    mac: [u8; 6],
    backend: Box<dyn NetBackend>,
    buf: Vec<u8>,
    stats: DeviceStats,
}

impl Net {
    pub fn new(mac: [u8; 6], backend: Box<dyn NetBackend>) -> Self {
        Net {
            mac,
            backend,
            buf: Vec::new(),
            stats: DeviceStats::default(),
        }
    }

    fn transmit(&mut self, io: &mut QueueIo<'_>) -> Result<(), QueueError> {
        io.serve_all(TX, |chain, mem| {
            self.stats.requests += 1;
            let mut r = ChainReader::new(chain);
            let len = r.remaining();
            let frame_len = len.saturating_sub(NET_HDR_LEN as u64);
            if len < NET_HDR_LEN as u64
                || !(MIN_FRAME as u64..=MAX_FRAME as u64).contains(&frame_len)
            {
                self.stats.errors += 1;
            } else {
                self.buf.resize(len as usize, 0);
                if r.read_exact(&*mem, &mut self.buf).is_ok() {
                    self.backend.send(&self.buf[NET_HDR_LEN..]);
                    self.stats.bytes_out += frame_len;
                } else {
                    self.stats.errors += 1;
                }
            }
            0
        })
    }

    fn receive(&mut self, io: &mut QueueIo<'_>) -> Result<(), QueueError> {
        while self.backend.has_frames() {
            let Some(chain) = io.pop(RX)? else {
                // No buffer: ask to be told when the driver posts one, and
                // look again in case it just did.
                io.arm(RX)?;
                if io.has_available(RX)? {
                    continue;
                }
                return Ok(());
            };
            let Some(frame) = self.backend.recv() else {
                // Cannot happen (one consumer), but never lose the buffer.
                io.push_used(RX, chain.head, 0)?;
                return Ok(());
            };
            let mut w = ChainWriter::new(&chain);
            let mut hdr = [0u8; NET_HDR_LEN];
            hdr[10] = 1; // num_buffers
            let fits = w.remaining() >= (NET_HDR_LEN + frame.len()) as u64;
            let ok = fits
                && w.write_all(&mut *io.mem, &hdr).is_ok()
                && w.write_all(&mut *io.mem, &frame).is_ok();
            if ok {
                self.stats.requests += 1;
                self.stats.bytes_in += frame.len() as u64;
                io.push_used(RX, chain.head, w.written() as u32)?;
            } else {
                self.stats.dropped += 1;
                io.push_used(RX, chain.head, 0)?;
            }
        }
        Ok(())
    }
}

impl VirtioDevice for Net {
    fn device_id(&self) -> u16 {
        DEVICE_NET
    }

    fn name(&self) -> &'static str {
        "net"
    }

    fn features(&self) -> u64 {
        VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS
    }

    fn queue_count(&self) -> u16 {
        2
    }

    fn queue_max_size(&self, _q: u16) -> u16 {
        QUEUE_SIZE
    }

    fn config_len(&self) -> u64 {
        8
    }

    fn read_config(&self, offset: u64, out: &mut [u8]) {
        let mut c = [0u8; 8];
        c[..6].copy_from_slice(&self.mac);
        c[6..8].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        crate::device_config(&c, offset, out);
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
        self.backend.has_frames()
    }

    fn reset(&mut self) {
        // Frames queued for a driver that went away are stale.
        while self.backend.recv().is_some() {}
        self.buf = vec![];
    }

    fn stats(&self) -> DeviceStats {
        self.stats
    }
}
