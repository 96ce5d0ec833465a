//! Virtio device-side logic, with no arch code and guest memory behind
//! [`vcpu::GuestMemory`], so that the same queue and device logic can serve
//! devices in the hypervisor and, later, in a Service VM's device model.
//!
//! So far: the split virtqueue ([`queue`]) as the virtio 1.x specification
//! (section 2.7) describes it, with indirect descriptors and the event index,
//! walking chains the guest owns without trusting any of it.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod queue;

pub use queue::{Chain, Descriptor, Queue, QueueError};
