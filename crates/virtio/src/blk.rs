//! virtio-blk (virtio 1.x, 5.2): one request queue over a [`BlockBackend`].
//!
//! A request is a 16-byte header (type, reserved, sector) in the chain's
//! device-readable part, data in either part, and a status byte as the last
//! writable byte. Read, write, flush, get-id, discard and write-zeroes are
//! served; every request that is malformed (data not a whole number of
//! sectors, a range past the end of the disk, a write to a read-only disk,
//! too many segments) gets `VIRTIO_BLK_S_IOERR`, an unknown type
//! `VIRTIO_BLK_S_UNSUPP`, and the device goes on. A chain with no writable
//! byte for the status is returned used with length 0 and counted.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use spin::Mutex;

use vcpu::GuestMemory;

use crate::chain::{ChainReader, ChainWriter};
use crate::device::{DeviceStats, QueueIo, VirtioDevice, DEVICE_BLOCK};
use crate::queue::{Chain, QueueError};

/// Feature bits (5.2.3).
pub const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
pub const VIRTIO_BLK_F_BLK_SIZE: u64 = 1 << 6;
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
pub const VIRTIO_BLK_F_DISCARD: u64 = 1 << 13;
pub const VIRTIO_BLK_F_WRITE_ZEROES: u64 = 1 << 14;

/// Request types.
pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
pub const VIRTIO_BLK_T_DISCARD: u32 = 11;
pub const VIRTIO_BLK_T_WRITE_ZEROES: u32 = 13;

/// Status values.
pub const VIRTIO_BLK_S_OK: u8 = 0;
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Bytes per sector (the unit of `sector` and `capacity`).
pub const SECTOR: u64 = 512;
/// Bytes of a get-id answer.
pub const ID_LEN: usize = 20;
/// Queue size.
const QUEUE_SIZE: u16 = 256;
/// Discard and write-zeroes segments per request.
const MAX_SEGMENTS: u32 = 32;
/// Bytes of one discard/write-zeroes segment.
const SEGMENT_LEN: u64 = 16;
/// Bytes moved per copy step.
const CHUNK: usize = 64 * 1024;
/// Bytes of device configuration served (up to and including
/// `write_zeroes_may_unmap`).
const CONFIG_LEN: u64 = 0x3C;

/// Where a virtio-blk device's sectors live.
pub trait BlockBackend: Send {
    /// Size in bytes (a whole number of sectors).
    fn size(&self) -> u64;
    /// Whether it refuses writes.
    fn read_only(&self) -> bool;
    /// Copies `buf.len()` bytes at `offset` (inside the disk) into `buf`.
    fn read(&self, offset: u64, buf: &mut [u8]);
    /// Stores `data` at `offset` (inside the disk).
    fn write(&self, offset: u64, data: &[u8]);
    /// Zeroes `len` bytes at `offset` (discard and write-zeroes).
    fn zero(&self, offset: u64, len: u64);
    /// The disk's serial number as get-id answers it (at most 20 bytes).
    fn id(&self) -> &[u8];
}

/// A disk image in hypervisor memory, shared by the devices that use it: it
/// lives as long as the hypervisor, so a VM that reboots sees what it
/// wrote before.
#[derive(Clone)]
pub struct MemDisk {
    bytes: Arc<Mutex<Storage>>,
    len: u64,
    read_only: bool,
    id: [u8; ID_LEN],
    id_len: usize,
}

/// Where a [`MemDisk`]'s bytes live.
enum Storage {
    /// A boot module, borrowed for the life of the hypervisor.
    Borrowed(&'static mut [u8]),
    /// Heap memory (tests, images made at run time).
    Owned(Vec<u8>),
}

impl core::ops::Deref for Storage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Storage::Borrowed(b) => b,
            Storage::Owned(v) => v,
        }
    }
}

impl core::ops::DerefMut for Storage {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Storage::Borrowed(b) => b,
            Storage::Owned(v) => v,
        }
    }
}

impl MemDisk {
    /// The image `bytes` (its length rounded down to whole sectors), named
    /// `id` for get-id (truncated to 20 bytes).
    pub fn new(bytes: &'static mut [u8], id: &str) -> Self {
        Self::with_storage(Storage::Borrowed(bytes), id)
    }

    /// An image in heap memory.
    pub fn from_vec(bytes: Vec<u8>, id: &str) -> Self {
        Self::with_storage(Storage::Owned(bytes), id)
    }

    fn with_storage(bytes: Storage, id: &str) -> Self {
        let len = bytes.len() as u64 / SECTOR * SECTOR;
        let mut buf = [0u8; ID_LEN];
        let n = id.len().min(ID_LEN);
        buf[..n].copy_from_slice(&id.as_bytes()[..n]);
        MemDisk {
            bytes: Arc::new(Mutex::new(bytes)),
            len,
            read_only: false,
            id: buf,
            id_len: n,
        }
    }

    /// The same image, seen read-only through this handle.
    pub fn read_only(&self) -> Self {
        MemDisk {
            read_only: true,
            ..self.clone()
        }
    }
}

impl BlockBackend for MemDisk {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&self, offset: u64, buf: &mut [u8]) {
        let b = self.bytes.lock();
        let at = offset as usize;
        if let Some(src) = b.get(at..at + buf.len()) {
            buf.copy_from_slice(src);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if self.read_only {
            return;
        }
        let mut b = self.bytes.lock();
        let at = offset as usize;
        if let Some(dst) = b.get_mut(at..at + data.len()) {
            dst.copy_from_slice(data);
        }
    }

    fn zero(&self, offset: u64, len: u64) {
        if self.read_only {
            return;
        }
        let mut b = self.bytes.lock();
        let at = offset as usize;
        if let Some(dst) = b.get_mut(at..at + len as usize) {
            dst.fill(0);
        }
    }

    fn id(&self) -> &[u8] {
        &self.id[..self.id_len]
    }
}

/// A virtio-blk device.
pub struct Blk {
    backend: alloc::boxed::Box<dyn BlockBackend>,
    chunk: Vec<u8>,
    stats: DeviceStats,
}

impl Blk {
    pub fn new(backend: alloc::boxed::Box<dyn BlockBackend>) -> Self {
        Blk {
            backend,
            chunk: Vec::new(),
            stats: DeviceStats::default(),
        }
    }

    fn capacity_sectors(&self) -> u64 {
        self.backend.size() / SECTOR
    }

    /// The byte range `sector * 512 .. + len`, if it lies on the disk.
    fn range(&self, sector: u64, len: u64) -> Option<u64> {
        let start = sector.checked_mul(SECTOR)?;
        let end = start.checked_add(len)?;
        (end <= self.backend.size()).then_some(start)
    }

    /// Serves one request; the status to write.
    fn serve(&mut self, chain: &Chain, mem: &mut dyn GuestMemory) -> (u8, u64) {
        let mut r = ChainReader::new(chain);
        let mut w = ChainWriter::new(chain);
        let mut header = [0u8; 16];
        if r.read_exact(&*mem, &mut header).is_err() {
            return (VIRTIO_BLK_S_IOERR, 0);
        }
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes([
            header[8], header[9], header[10], header[11], header[12], header[13], header[14],
            header[15],
        ]);
        // The status byte takes the last writable byte.
        let room = w.remaining().saturating_sub(1);
        if self.chunk.is_empty() {
            self.chunk = vec![0; CHUNK];
        }
        match kind {
            VIRTIO_BLK_T_IN => {
                if room % SECTOR != 0 {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                let Some(mut at) = self.range(sector, room) else {
                    return (VIRTIO_BLK_S_IOERR, 0);
                };
                let mut left = room;
                while left > 0 {
                    let n = left.min(CHUNK as u64) as usize;
                    self.backend.read(at, &mut self.chunk[..n]);
                    if w.write_all(&mut *mem, &self.chunk[..n]).is_err() {
                        return (VIRTIO_BLK_S_IOERR, w.written());
                    }
                    at += n as u64;
                    left -= n as u64;
                }
                self.stats.bytes_in += room;
                (VIRTIO_BLK_S_OK, w.written())
            }
            VIRTIO_BLK_T_OUT => {
                let len = r.remaining();
                if self.backend.read_only() || len % SECTOR != 0 {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                let Some(mut at) = self.range(sector, len) else {
                    return (VIRTIO_BLK_S_IOERR, 0);
                };
                let backend = &self.backend;
                let copied = r.copy_out(&*mem, len, &mut self.chunk, |piece| {
                    backend.write(at, piece);
                    at += piece.len() as u64;
                    Ok(())
                });
                if copied.is_err() {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                self.stats.bytes_out += len;
                (VIRTIO_BLK_S_OK, 0)
            }
            VIRTIO_BLK_T_FLUSH => (VIRTIO_BLK_S_OK, 0),
            VIRTIO_BLK_T_GET_ID => {
                let mut id = [0u8; ID_LEN];
                let src = self.backend.id();
                id[..src.len()].copy_from_slice(src);
                let n = (room as usize).min(ID_LEN);
                if w.write_all(&mut *mem, &id[..n]).is_err() {
                    return (VIRTIO_BLK_S_IOERR, w.written());
                }
                (VIRTIO_BLK_S_OK, w.written())
            }
            VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
                let len = r.remaining();
                let count = len / SEGMENT_LEN;
                if self.backend.read_only()
                    || len % SEGMENT_LEN != 0
                    || count == 0
                    || count > u64::from(MAX_SEGMENTS)
                {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                // Check every segment before zeroing any.
                let mut segs = [(0u64, 0u64); MAX_SEGMENTS as usize];
                for seg in segs.iter_mut().take(count as usize) {
                    let mut b = [0u8; SEGMENT_LEN as usize];
                    if r.read_exact(&*mem, &mut b).is_err() {
                        return (VIRTIO_BLK_S_IOERR, 0);
                    }
                    let sector =
                        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                    let sectors = u64::from(u32::from_le_bytes([b[8], b[9], b[10], b[11]]));
                    let flags = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
                    // Only write-zeroes' unmap bit (0) is defined.
                    if flags & !1 != 0 {
                        return (VIRTIO_BLK_S_UNSUPP, 0);
                    }
                    let Some(at) = self.range(sector, sectors * SECTOR) else {
                        return (VIRTIO_BLK_S_IOERR, 0);
                    };
                    *seg = (at, sectors * SECTOR);
                }
                for &(at, n) in &segs[..count as usize] {
                    self.backend.zero(at, n);
                }
                (VIRTIO_BLK_S_OK, 0)
            }
            _ => (VIRTIO_BLK_S_UNSUPP, 0),
        }
    }
}

impl VirtioDevice for Blk {
    fn device_id(&self) -> u16 {
        DEVICE_BLOCK
    }

    fn name(&self) -> &'static str {
        "blk"
    }

    fn features(&self) -> u64 {
        let base = VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_FLUSH;
        if self.backend.read_only() {
            base | VIRTIO_BLK_F_RO
        } else {
            base | VIRTIO_BLK_F_DISCARD | VIRTIO_BLK_F_WRITE_ZEROES
        }
    }

    fn queue_count(&self) -> u16 {
        1
    }

    fn queue_max_size(&self, _q: u16) -> u16 {
        QUEUE_SIZE
    }

    fn config_len(&self) -> u64 {
        CONFIG_LEN
    }

    fn read_config(&self, offset: u64, out: &mut [u8]) {
        let mut c = [0u8; CONFIG_LEN as usize];
        c[0..8].copy_from_slice(&self.capacity_sectors().to_le_bytes());
        // size_max (0x08) unused: no VIRTIO_BLK_F_SIZE_MAX.
        c[0x0C..0x10].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
        c[0x14..0x18].copy_from_slice(&(SECTOR as u32).to_le_bytes());
        // writeback (0x20): 0, the cache is write-through (memory).
        let max_sectors = u32::MAX / SECTOR as u32;
        c[0x24..0x28].copy_from_slice(&max_sectors.to_le_bytes());
        c[0x28..0x2C].copy_from_slice(&MAX_SEGMENTS.to_le_bytes());
        c[0x2C..0x30].copy_from_slice(&1u32.to_le_bytes());
        c[0x30..0x34].copy_from_slice(&max_sectors.to_le_bytes());
        c[0x34..0x38].copy_from_slice(&MAX_SEGMENTS.to_le_bytes());
        c[0x38] = 1;
        crate::device_config(&c, offset, out);
    }

    fn notify(&mut self, q: u16, io: &mut QueueIo<'_>) -> Result<(), QueueError> {
        if q != 0 {
            return Ok(());
        }
        io.serve_all(0, |chain, mem| {
            self.stats.requests += 1;
            let mut w = ChainWriter::new(chain);
            if w.remaining() == 0 {
                // Nowhere to put a status: hand it back untouched.
                self.stats.errors += 1;
                return 0;
            }
            let (status, written) = self.serve(chain, mem);
            if status != VIRTIO_BLK_S_OK {
                self.stats.errors += 1;
            }
            let _ = w.write_last(mem, &[status]);
            (written + 1) as u32
        })
    }

    fn reset(&mut self) {}

    fn stats(&self) -> DeviceStats {
        self.stats
    }
}
