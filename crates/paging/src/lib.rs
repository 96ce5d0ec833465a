//! Second-level page tables: the Intel EPT and AMD NPT structures that map a
//! VM's guest-physical address space onto host-physical memory, and the
//! IOMMU tables (VT-d second-level, AMD-Vi) that map the same space for the
//! VM's passed-through devices' DMA.
//!
//! [`SecondLevelTables`] builds 4-level tables in any [`Format`] through a
//! [`TableMemory`], so this crate never touches raw memory: the hypervisor
//! implements the trait over identity-mapped frames, host tests over a
//! `Vec` (see `ArenaMemory` behind the `test-utils` feature).
//!
//! Guest-physical addresses that were never mapped (holes, e.g. where a
//! device's registers sit) have no entry at all. A guest access there ends
//! the walk at a not-present entry, which exits to the hypervisor as an EPT
//! violation (VT-x) or a nested page fault (AMD-V); the hypervisor turns that
//! exit into MMIO emulation (or an injected fault if nothing claims the
//! address).
#![no_std]
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "test-utils"))]
extern crate alloc;

mod addr;
mod amdvi;
mod attrs;
mod ept;
mod format;
mod level;
mod memory;
#[cfg(any(test, feature = "test-utils"))]
mod mock;
mod npt;
mod tables;
mod vtd_sl;

pub use addr::{GuestPhysAddr, GUEST_PHYS_BITS, HOST_PHYS_BITS};
pub use attrs::{MemType, PageSizes, Perms};
pub use format::Format;
pub use level::PageSize;
pub use memory::{TableMemory, ENTRIES_PER_TABLE, TABLE_SIZE};
#[cfg(any(test, feature = "test-utils"))]
pub use mock::ArenaMemory;
pub use platform::HostPhysAddr;
pub use tables::{MapError, SecondLevelTables, Translation};
