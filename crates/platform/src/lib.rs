//! What the machine gave Quercus at boot, as checked, safe data: the
//! multiboot information, the memory map, a physical frame allocator and the
//! CPU/interrupt topology from the ACPI MADT, and the host resources handed
//! out at run time (interrupt vectors, SVM ASIDs).
#![no_std]
#![deny(unsafe_code)]

pub mod addr;
pub mod asid;
pub mod frames;
pub mod memmap;
pub mod multiboot;
pub mod phys_memory;
pub mod topology;
pub mod vectors;

pub use addr::{HostPhysAddr, PhysRange, PAGE_SIZE};
pub use asid::{AsidGrant, AsidSpace};
pub use frames::{FrameAllocator, FrameError, FrameStats};
pub use memmap::{total_len, MemMapError, MemoryKind, MemoryMap, MemoryRegion};
pub use multiboot::{BasicMemory, BootInfo, LoaderKind, Module, MultibootError, RsdpCopy};
pub use phys_memory::{PhysMemory, PhysReadError, SliceMemory};
pub use topology::{
    Cpu, InterruptOverride, IoApic, IsaRoute, LocalNmi, NmiProcessor, NmiSource, Polarity,
    Topology, TopologyError, TriggerMode,
};
pub use vectors::{Priority, VectorError, VectorTable};
