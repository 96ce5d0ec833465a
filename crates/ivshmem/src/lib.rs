//! Inter-VM shared memory (issue 14), with no arch code:
//!
//! - [`region`]: a [`Region`] is memory the hypervisor set aside for a fixed list of VMs (its
//!   peers, numbered by their place in the list) plus the doorbells between them. A peer rings
//!   another by id and vector; the ring sets a pending bit at the target and wakes whoever serves
//!   it (a [`Waker`]: the target VM's backend flag and a kick of its pCPU), the same pattern as
//!   the virtual switch's ports. Rings are rate-limited per sender and everything is counted.
//! - [`device`]: [`Ivshmem`], the PCI function a peer VM sees (a [`vdev::PciDevice`]):
//!   vendor 1af4, device 1110, revision 1, class 05/00 (QEMU's and ACRN's ivshmem v1 register
//!   layout), BAR 0 registers, BAR 1 MSI-X, BAR 2 the region (mapped straight into the VM's
//!   second-level tables, read-only for a read-only peer), and INTx with PCI 2.3 interrupt
//!   status and disable so that Linux's stock `uio_pci_generic` gets the doorbells.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod device;
pub mod region;

pub use device::{DeviceCounters, Ivshmem, IVSHMEM_IDS, IVSHMEM_VECTORS};
pub use region::{
    PeerCounters, PeerInfo, PeerPort, Region, RingError, Waker, DOORBELL_BURST, DOORBELL_RATE,
};
