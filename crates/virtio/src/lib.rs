//! Virtio device-side logic, with no arch code: guest memory behind
//! [`vcpu::GuestMemory`] and every backend behind a trait, so that the same
//! queue and device code serves devices in the hypervisor (pre-launched VMs)
//! and, later, in a device model in a Service VM's userspace.
//!
//! - [`queue`]: the split virtqueue (virtio 1.x, 2.7) with indirect
//!   descriptors and the event index, walking chains the guest owns without
//!   trusting any of it; [`chain`] reads and writes their buffers as streams.
//! - [`pci`]: the modern virtio-pci transport, a [`vdev::PciDevice`].
//! - Devices: [`blk`] (over a [`blk::BlockBackend`], e.g. a disk image in
//!   hypervisor memory), [`net`] (over a [`switch::NetBackend`], e.g. a port
//!   of a learning [`switch::Switch`]), [`console`] and [`rng`].

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod blk;
pub mod chain;
pub mod console;
pub mod device;
pub mod net;
pub mod pci;
pub mod queue;
pub mod rng;
pub mod switch;

pub use device::{DeviceStats, QueueIo, VirtioDevice};
pub use pci::VirtioPci;
pub use queue::{Chain, Descriptor, Queue, QueueError};

/// Copies device configuration `config` at `offset` into `out`; bytes past
/// its end read 0.
pub(crate) fn device_config(config: &[u8], offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|at| config.get(at))
            .copied()
            .unwrap_or(0);
    }
}
