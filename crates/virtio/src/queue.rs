//! The split virtqueue, device side (virtio 1.x, 2.7): the descriptor table,
//! the available ring the driver fills and the used ring the device fills,
//! with indirect descriptors (`VIRTIO_F_INDIRECT_DESC`) and the event index
//! (`VIRTIO_F_EVENT_IDX`).
//!
//! Everything in the rings belongs to the guest and is read again on every
//! use, never trusted: a head or `next` index outside the table, a chain
//! longer than the queue (which is how a loop shows), an indirect table that
//! is empty, not a multiple of 16 bytes, longer than the queue, nested, or
//! not negotiated, a device-readable buffer after a device-writable one, a
//! buffer outside guest RAM, and an available index that moves by more than
//! the queue size are each a [`QueueError`]. The caller then marks the device
//! DEVICE_NEEDS_RESET (or fails the request); nothing outside the guest's
//! RAM is ever touched.

use alloc::vec::Vec;
use core::fmt;

use vcpu::GuestMemory;

/// Descriptor flags.
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// Available-ring flag: the driver does not want interrupts (no event index).
pub const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Used-ring flag: the device does not want notifications (no event index).
pub const VIRTQ_USED_F_NO_NOTIFY: u16 = 1;
/// Feature bits this module implements.
pub const VIRTIO_F_INDIRECT_DESC: u64 = 1 << 28;
pub const VIRTIO_F_EVENT_IDX: u64 = 1 << 29;
/// The largest queue a split ring can have.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Bytes of one descriptor.
const DESC_LEN: u64 = 16;
/// Bytes of one used-ring element.
const USED_ELEM_LEN: u64 = 8;

/// One buffer of a chain, as the guest described it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Guest-physical address.
    pub addr: u64,
    pub len: u32,
    /// The device writes it (else it reads it).
    pub writable: bool,
}

/// A chain the driver made available: its head (what goes back in the used
/// ring) and its buffers in order, device-readable ones first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub descriptors: Vec<Descriptor>,
}

impl Chain {
    /// The device-readable buffers.
    pub fn readable(&self) -> impl Iterator<Item = &Descriptor> {
        self.descriptors.iter().filter(|d| !d.writable)
    }

    /// The device-writable buffers.
    pub fn writable(&self) -> impl Iterator<Item = &Descriptor> {
        self.descriptors.iter().filter(|d| d.writable)
    }
}

/// What the guest did wrong (or where its rings are unreadable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The queue size is 0, not a power of two, or above 32768.
    BadSize(u16),
    /// The queue size is above what the device offers.
    TooBig { size: u16, max: u16 },
    /// A ring, table or buffer lies (partly) outside guest RAM.
    OutsideRam { gpa: u64, len: u64 },
    /// The available index moved by more than the queue size.
    IndexJump { avail_idx: u16, last_seen: u16 },
    /// A head or `next` index outside the descriptor table.
    IndexOutOfRange { index: u16, size: u16 },
    /// More descriptors than the queue (or indirect table) has: a loop.
    ChainTooLong,
    /// An indirect descriptor without `VIRTIO_F_INDIRECT_DESC`.
    IndirectNotNegotiated,
    /// An indirect descriptor with NEXT set, or inside an indirect table.
    BadIndirect,
    /// An indirect table of this length (bytes): 0, not a multiple of 16,
    /// or more entries than the queue.
    BadIndirectLength(u32),
    /// A device-readable buffer after a device-writable one.
    ReadableAfterWritable,
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            QueueError::BadSize(s) => {
                write!(f, "queue size {s} is not a power of two in 1..=32768")
            }
            QueueError::TooBig { size, max } => {
                write!(f, "queue size {size} is above the device's maximum {max}")
            }
            QueueError::OutsideRam { gpa, len } => {
                write!(f, "{len} bytes at {gpa:#x} are not all guest RAM")
            }
            QueueError::IndexJump {
                avail_idx,
                last_seen,
            } => write!(
                f,
                "available index jumped from {last_seen} to {avail_idx}, more than the queue size"
            ),
            QueueError::IndexOutOfRange { index, size } => {
                write!(f, "descriptor index {index} outside a table of {size}")
            }
            QueueError::ChainTooLong => {
                write!(f, "descriptor chain longer than its table (a loop)")
            }
            QueueError::IndirectNotNegotiated => {
                write!(f, "indirect descriptor without VIRTIO_F_INDIRECT_DESC")
            }
            QueueError::BadIndirect => {
                write!(
                    f,
                    "indirect descriptor with NEXT set or inside an indirect table"
                )
            }
            QueueError::BadIndirectLength(l) => write!(f, "indirect table of {l} bytes"),
            QueueError::ReadableAfterWritable => {
                write!(f, "device-readable buffer after a device-writable one")
            }
        }
    }
}

impl core::error::Error for QueueError {}

/// `vring_need_event`: whether moving the used index from `old` to `new`
/// crosses the driver's `event` index (all modulo 2^16).
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// One split virtqueue as the driver configured it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queue {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    indirect: bool,
    event_idx: bool,
    /// The next available-ring slot the device will look at.
    last_avail: u16,
    /// The device's used index.
    used_idx: u16,
    /// The used index when the driver was last interrupted.
    signalled: u16,
}

impl Queue {
    /// A queue of `size` entries whose descriptor table, available ring and
    /// used ring are at `desc`, `avail` and `used`, with the negotiated
    /// `features` (only the indirect and event-index bits matter here).
    pub fn new(
        size: u16,
        desc: u64,
        avail: u64,
        used: u64,
        features: u64,
    ) -> Result<Self, QueueError> {
        if size == 0 || !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(QueueError::BadSize(size));
        }
        Ok(Queue {
            size,
            desc,
            avail,
            used,
            indirect: features & VIRTIO_F_INDIRECT_DESC != 0,
            event_idx: features & VIRTIO_F_EVENT_IDX != 0,
            last_avail: 0,
            used_idx: 0,
            signalled: 0,
        })
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// Whether the descriptor table, the available ring and the used ring
    /// (with their event fields) each lie in one range of guest RAM.
    pub fn check_rings(&self, mem: &(impl GuestMemory + ?Sized)) -> Result<(), QueueError> {
        let n = u64::from(self.size);
        check_ram(mem, self.desc, DESC_LEN * n)?;
        check_ram(mem, self.avail, 6 + 2 * n)?;
        check_ram(mem, self.used, 6 + USED_ELEM_LEN * n)
    }

    /// The device's used index.
    pub fn used_idx(&self) -> u16 {
        self.used_idx
    }

    /// Chains taken so far (the next available-ring slot, modulo 2^16).
    pub fn last_avail(&self) -> u16 {
        self.last_avail
    }

    /// Whether the driver has made chains available that were not taken yet.
    pub fn has_available(&self, mem: &(impl GuestMemory + ?Sized)) -> Result<bool, QueueError> {
        Ok(read_u16(mem, self.avail + 2)? != self.last_avail)
    }

    /// With the event index: asks the driver to notify as soon as it makes
    /// the next chain available (after the device found the ring empty).
    pub fn arm_notification(
        &mut self,
        mem: &mut (impl GuestMemory + ?Sized),
    ) -> Result<(), QueueError> {
        if self.event_idx {
            let at = self.used + 4 + USED_ELEM_LEN * u64::from(self.size);
            write(mem, at, &self.last_avail.to_le_bytes())?;
        }
        Ok(())
    }

    /// Takes the next chain the driver made available, if any.
    pub fn pop(&mut self, mem: &(impl GuestMemory + ?Sized)) -> Result<Option<Chain>, QueueError> {
        let avail_idx = read_u16(mem, self.avail + 2)?;
        let pending = avail_idx.wrapping_sub(self.last_avail);
        if pending == 0 {
            return Ok(None);
        }
        if pending > self.size {
            return Err(QueueError::IndexJump {
                avail_idx,
                last_seen: self.last_avail,
            });
        }
        let slot = u64::from(self.last_avail % self.size);
        let head = read_u16(mem, self.avail + 4 + 2 * slot)?;
        let descriptors = self.walk(mem, head)?;
        self.last_avail = self.last_avail.wrapping_add(1);
        Ok(Some(Chain { head, descriptors }))
    }

    /// Returns chain `head` to the driver with `len` bytes written into its
    /// device-writable buffers.
    pub fn push_used(
        &mut self,
        mem: &mut (impl GuestMemory + ?Sized),
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        let slot = u64::from(self.used_idx % self.size);
        let at = self.used + 4 + USED_ELEM_LEN * slot;
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        write(mem, at, &elem)?;
        // The element is in place before the index that publishes it (x86
        // keeps stores in order; a Service VM on another architecture needs
        // a release fence here).
        self.used_idx = self.used_idx.wrapping_add(1);
        write(mem, self.used + 2, &self.used_idx.to_le_bytes())?;
        if self.event_idx {
            // avail_event: notify the device again once the driver passes
            // the slot it will look at next.
            let at = self.used + 4 + USED_ELEM_LEN * u64::from(self.size);
            write(mem, at, &self.last_avail.to_le_bytes())?;
        }
        Ok(())
    }

    /// Whether the driver wants an interrupt for the used entries added since
    /// the last time this said yes.
    pub fn needs_interrupt(
        &mut self,
        mem: &(impl GuestMemory + ?Sized),
    ) -> Result<bool, QueueError> {
        let (old, new) = (self.signalled, self.used_idx);
        if old == new {
            return Ok(false);
        }
        let yes = if self.event_idx {
            let used_event = read_u16(mem, self.avail + 4 + 2 * u64::from(self.size))?;
            need_event(used_event, new, old)
        } else {
            read_u16(mem, self.avail)? & VIRTQ_AVAIL_F_NO_INTERRUPT == 0
        };
        if yes {
            self.signalled = new;
        }
        Ok(yes)
    }

    /// The descriptors of the chain starting at `head`.
    fn walk(
        &self,
        mem: &(impl GuestMemory + ?Sized),
        head: u16,
    ) -> Result<Vec<Descriptor>, QueueError> {
        let mut out = Vec::new();
        let mut index = head;
        let mut seen = 0u32;
        loop {
            if index >= self.size {
                return Err(QueueError::IndexOutOfRange {
                    index,
                    size: self.size,
                });
            }
            seen += 1;
            if seen > u32::from(self.size) {
                return Err(QueueError::ChainTooLong);
            }
            let raw = read_desc(mem, self.desc + DESC_LEN * u64::from(index))?;
            if raw.flags & VIRTQ_DESC_F_INDIRECT != 0 {
                if !self.indirect {
                    return Err(QueueError::IndirectNotNegotiated);
                }
                if raw.flags & VIRTQ_DESC_F_NEXT != 0 {
                    return Err(QueueError::BadIndirect);
                }
                self.walk_indirect(mem, &raw, &mut out)?;
                return Ok(out);
            }
            push(mem, &mut out, &raw)?;
            if raw.flags & VIRTQ_DESC_F_NEXT == 0 {
                return Ok(out);
            }
            index = raw.next;
        }
    }

    /// The chain inside the indirect table `table` describes.
    fn walk_indirect(
        &self,
        mem: &(impl GuestMemory + ?Sized),
        table: &RawDesc,
        out: &mut Vec<Descriptor>,
    ) -> Result<(), QueueError> {
        let entries = u64::from(table.len) / DESC_LEN;
        if table.len == 0 || u64::from(table.len) % DESC_LEN != 0 || entries > u64::from(self.size)
        {
            return Err(QueueError::BadIndirectLength(table.len));
        }
        check_ram(mem, table.addr, u64::from(table.len))?;
        let mut index = 0u64;
        let mut seen = 0u64;
        loop {
            if index >= entries {
                return Err(QueueError::IndexOutOfRange {
                    index: index as u16,
                    size: entries as u16,
                });
            }
            seen += 1;
            if seen > entries {
                return Err(QueueError::ChainTooLong);
            }
            let raw = read_desc(mem, table.addr + DESC_LEN * index)?;
            if raw.flags & VIRTQ_DESC_F_INDIRECT != 0 {
                return Err(QueueError::BadIndirect);
            }
            push(mem, out, &raw)?;
            if raw.flags & VIRTQ_DESC_F_NEXT == 0 {
                return Ok(());
            }
            index = u64::from(raw.next);
        }
    }
}

/// A descriptor as it sits in guest memory.
struct RawDesc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

fn read_desc(mem: &(impl GuestMemory + ?Sized), gpa: u64) -> Result<RawDesc, QueueError> {
    let mut b = [0u8; DESC_LEN as usize];
    mem.read(gpa, &mut b)
        .map_err(|_| QueueError::OutsideRam { gpa, len: DESC_LEN })?;
    Ok(RawDesc {
        addr: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        flags: u16::from_le_bytes([b[12], b[13]]),
        next: u16::from_le_bytes([b[14], b[15]]),
    })
}

/// Appends a direct descriptor after checking its buffer and its order.
fn push(
    mem: &(impl GuestMemory + ?Sized),
    out: &mut Vec<Descriptor>,
    raw: &RawDesc,
) -> Result<(), QueueError> {
    let writable = raw.flags & VIRTQ_DESC_F_WRITE != 0;
    if !writable && out.last().is_some_and(|d| d.writable) {
        return Err(QueueError::ReadableAfterWritable);
    }
    check_ram(mem, raw.addr, u64::from(raw.len))?;
    out.push(Descriptor {
        addr: raw.addr,
        len: raw.len,
        writable,
    });
    Ok(())
}

/// `len` bytes at `gpa` are all in one RAM range of the guest.
fn check_ram(mem: &(impl GuestMemory + ?Sized), gpa: u64, len: u64) -> Result<(), QueueError> {
    mem.layout()
        .locate(gpa, len)
        .map(|_| ())
        .ok_or(QueueError::OutsideRam { gpa, len })
}

fn read_u16(mem: &(impl GuestMemory + ?Sized), gpa: u64) -> Result<u16, QueueError> {
    let mut b = [0u8; 2];
    mem.read(gpa, &mut b)
        .map_err(|_| QueueError::OutsideRam { gpa, len: 2 })?;
    Ok(u16::from_le_bytes(b))
}

fn write(mem: &mut (impl GuestMemory + ?Sized), gpa: u64, data: &[u8]) -> Result<(), QueueError> {
    mem.write(gpa, data).map_err(|_| QueueError::OutsideRam {
        gpa,
        len: data.len() as u64,
    })
}

#[cfg(test)]
mod tests;
