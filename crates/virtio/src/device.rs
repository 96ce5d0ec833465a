//! What a virtio device is to its transport: an id, feature bits, a
//! device-specific configuration space and queues it serves when the driver
//! notifies (or when input arrives from its backend).
//!
//! A device never sees the transport, the PCI plane or interrupts: it takes
//! chains from its queues and returns them used through [`QueueIo`], and the
//! transport decides whether the driver gets an interrupt. An error from the
//! rings themselves ([`QueueError`]) makes the transport mark the device
//! DEVICE_NEEDS_RESET; a request that is merely wrong is answered with the
//! device's error status and the device goes on.

use alloc::vec::Vec;

use vcpu::GuestMemory;

use crate::queue::{Chain, Queue, QueueError};

/// Device ids (virtio 1.x, 5).
pub const DEVICE_NET: u16 = 1;
pub const DEVICE_BLOCK: u16 = 2;
pub const DEVICE_CONSOLE: u16 = 3;
pub const DEVICE_ENTROPY: u16 = 4;

/// What a device counts, for the shell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Requests (chains) served.
    pub requests: u64,
    /// Requests answered with an error status, or dropped as malformed.
    pub errors: u64,
    /// Bytes from the guest (written to the disk, frames sent, console output).
    pub bytes_out: u64,
    /// Bytes to the guest (read from the disk, frames received, entropy).
    pub bytes_in: u64,
    /// Input lost for want of room (frames or console bytes with no buffer).
    pub dropped: u64,
}

/// One virtio device's logic.
pub trait VirtioDevice: Send {
    /// Its device id ([`DEVICE_NET`]...).
    fn device_id(&self) -> u16;
    /// Short name for the shell ("blk", "net"...).
    fn name(&self) -> &'static str;
    /// Device-specific feature bits it offers (the transport adds
    /// VERSION_1, INDIRECT_DESC and EVENT_IDX).
    fn features(&self) -> u64;
    /// Its queues.
    fn queue_count(&self) -> u16;
    /// The largest size queue `q` may have.
    fn queue_max_size(&self, _q: u16) -> u16 {
        256
    }
    /// Bytes of device-specific configuration.
    fn config_len(&self) -> u64;
    /// Reads configuration bytes at `offset` into `out` (bytes past the end
    /// read 0).
    fn read_config(&self, offset: u64, out: &mut [u8]);
    /// A driver write to configuration bytes (most are read only).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The features the driver accepted (at FEATURES_OK).
    fn set_features(&mut self, _features: u64) {}
    /// The driver notified queue `q`: serve what it made available.
    fn notify(&mut self, q: u16, io: &mut QueueIo<'_>) -> Result<(), QueueError>;
    /// Serves input that arrived from the backend (frames, console bytes).
    fn poll(&mut self, _io: &mut QueueIo<'_>) -> Result<(), QueueError> {
        Ok(())
    }
    /// Whether [`VirtioDevice::poll`] has input to serve (cheap).
    fn has_input(&self) -> bool {
        false
    }
    /// Back to the state after power-up (a driver reset or a VM reset);
    /// what the backend keeps (disk contents) stays.
    fn reset(&mut self);
    /// What it counted.
    fn stats(&self) -> DeviceStats;
}

/// A queue slot of the transport: the driver's configuration and, once
/// enabled, the live queue.
#[derive(Clone, Debug, Default)]
pub struct QueueSlot {
    pub queue: Option<Queue>,
    /// Chains returned used since the last interrupt decision.
    pub(crate) pushed: bool,
    /// Notifications from the driver, chains served.
    pub notifies: u64,
    pub served: u64,
}

/// A device's access to its queues and the guest's memory during one
/// notification or poll.
pub struct QueueIo<'a> {
    pub mem: &'a mut dyn GuestMemory,
    slots: &'a mut [QueueSlot],
}

impl<'a> QueueIo<'a> {
    pub fn new(mem: &'a mut dyn GuestMemory, slots: &'a mut [QueueSlot]) -> Self {
        QueueIo { mem, slots }
    }

    /// Whether queue `q` is enabled.
    pub fn enabled(&self, q: u16) -> bool {
        self.slots
            .get(usize::from(q))
            .is_some_and(|s| s.queue.is_some())
    }

    /// The next chain on queue `q` (None: empty or not enabled).
    pub fn pop(&mut self, q: u16) -> Result<Option<Chain>, QueueError> {
        let Some(queue) = self
            .slots
            .get_mut(usize::from(q))
            .and_then(|s| s.queue.as_mut())
        else {
            return Ok(None);
        };
        queue.pop(&*self.mem)
    }

    /// Whether queue `q` has chains to take.
    pub fn has_available(&mut self, q: u16) -> Result<bool, QueueError> {
        match self
            .slots
            .get(usize::from(q))
            .and_then(|s| s.queue.as_ref())
        {
            Some(queue) => queue.has_available(&*self.mem),
            None => Ok(false),
        }
    }

    /// Returns chain `head` of queue `q` with `len` bytes written.
    pub fn push_used(&mut self, q: u16, head: u16, len: u32) -> Result<(), QueueError> {
        let Some(slot) = self.slots.get_mut(usize::from(q)) else {
            return Ok(());
        };
        let Some(queue) = slot.queue.as_mut() else {
            return Ok(());
        };
        queue.push_used(&mut *self.mem, head, len)?;
        slot.pushed = true;
        slot.served += 1;
        Ok(())
    }

    /// Serves every chain on queue `q`: `f` handles one and says how many
    /// bytes it wrote into its writable buffers, and the chain goes back
    /// used. Once the queue is empty the device asks for the next
    /// notification and looks once more, so that a chain added meanwhile
    /// does not wait without one (with the event index this makes one
    /// notification serve a whole batch).
    pub fn serve_all(
        &mut self,
        q: u16,
        mut f: impl FnMut(&Chain, &mut dyn GuestMemory) -> u32,
    ) -> Result<(), QueueError> {
        loop {
            while let Some(chain) = self.pop(q)? {
                let len = f(&chain, &mut *self.mem);
                self.push_used(q, chain.head, len)?;
            }
            self.arm(q)?;
            if !self.has_available(q)? {
                return Ok(());
            }
        }
    }

    /// Asks for a notification when the driver adds to queue `q` (after the
    /// device emptied it).
    pub fn arm(&mut self, q: u16) -> Result<(), QueueError> {
        match self
            .slots
            .get_mut(usize::from(q))
            .and_then(|s| s.queue.as_mut())
        {
            Some(queue) => queue.arm_notification(&mut *self.mem),
            None => Ok(()),
        }
    }
}

/// Queues that were given used chains, as a list of indices.
pub(crate) fn pushed(slots: &[QueueSlot]) -> Vec<u16> {
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.pushed)
        .map(|(i, _)| i as u16)
        .collect()
}
