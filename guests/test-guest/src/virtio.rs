//! Glue for the `virtio-drivers` crate (the guest-side drivers of the
//! `virtio-*` tests): PCI configuration access through mechanism #1
//! (0xCF8/0xCFC), a `Hal` whose DMA pages come from a static pool in the
//! identity-mapped RAM (physical == virtual), a tiny heap for the one driver
//! that allocates (the console's receive buffer), and the bus-0 scan for
//! modern virtio-pci functions.
//!
//! The drivers poll their used rings: no interrupt is needed, and whether
//! the device has MSI-X enabled or falls back to INTx does not matter (the
//! guest keeps interrupts off while the tests run).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{PciTransport, VirtioPciError};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

use crate::pci::{
    self, Bdf, ConfigSpace, PortIo, CMD_BUS_MASTER, CMD_MEMORY, COMMAND, REVISION, VENDOR_ID,
};
use crate::{paging, Global};

/// The virtio PCI vendor.
pub const VENDOR: u16 = 0x1AF4;
/// Modern (virtio 1.x) device IDs are 0x1040 + the virtio device ID.
pub const MODERN_ID_BASE: u16 = 0x1040;

// ---------------------------------------------------------------- config access

/// `virtio-drivers`' configuration access over ports 0xCF8/0xCFC.
pub struct Cf8;

fn bdf(f: DeviceFunction) -> Bdf {
    Bdf::new(f.bus, f.device, f.function)
}

impl ConfigurationAccess for Cf8 {
    fn read_word(&self, f: DeviceFunction, register_offset: u8) -> u32 {
        PortIo.read32(bdf(f), u16::from(register_offset))
    }

    fn write_word(&mut self, f: DeviceFunction, register_offset: u8, data: u32) {
        PortIo.write32(bdf(f), u16::from(register_offset), data);
    }

    // SAFETY (the trait's contract): the clone shares no state with the
    // original; both only issue configuration cycles through 0xCF8/0xCFC.
    unsafe fn unsafe_clone(&self) -> Self {
        Cf8
    }
}

// ---------------------------------------------------------------- DMA pool

/// Pages the devices may read and write: virtqueues (a page for the
/// descriptor table with the available ring, a page for the used ring, per
/// queue). The most one test uses is 8 (two virtio-net devices).
const DMA_PAGES: usize = 16;

#[repr(C, align(4096))]
struct DmaPool {
    pages: [[u8; PAGE_SIZE]; DMA_PAGES],
}

static DMA_POOL: Global<DmaPool> = Global::new(DmaPool {
    pages: [[0; PAGE_SIZE]; DMA_PAGES],
});
/// Bit i set: page i of the pool is allocated.
static DMA_USED: Global<u64> = Global::new(0);

const _: () = assert!(DMA_PAGES <= 64, "the allocation bitmap is one u64");

fn run_mask(first: usize, pages: usize) -> u64 {
    let bits = if pages >= 64 {
        u64::MAX
    } else {
        (1u64 << pages) - 1
    };
    bits << first
}

/// The guest's `Hal`: identity-mapped RAM, so a buffer's physical address
/// is its virtual address and nothing needs bouncing.
pub struct GuestHal;

// SAFETY: dma_alloc hands out page-aligned, zeroed, otherwise unused pages
// of a static (physical == virtual: the guest runs on its identity map) and
// keeps them until dma_dealloc; mmio_phys_to_virt maps the region it
// returns; share returns the physical address of memory the caller keeps
// alive, and x86 DMA is cache-coherent, so nothing is copied.
unsafe impl Hal for GuestHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let used = DMA_USED.get();
        // SAFETY: one CPU; the pool is used only from test code, never from
        // interrupt handlers, so nothing else touches the bitmap meanwhile.
        let bitmap = unsafe { *used };
        if pages == 0 || pages > DMA_PAGES {
            return (0, NonNull::dangling());
        }
        for first in 0..=DMA_PAGES - pages {
            let mask = run_mask(first, pages);
            if bitmap & mask == 0 {
                // SAFETY: as above.
                unsafe { *used = bitmap | mask };
                // SAFETY: first + pages <= DMA_PAGES: the run lies inside the
                // pool, and its pages were free (nothing refers to them).
                let start =
                    unsafe { core::ptr::addr_of_mut!((*DMA_POOL.get()).pages[first]) }.cast::<u8>();
                // SAFETY: the run is `pages` whole pages inside the pool.
                unsafe { core::ptr::write_bytes(start, 0, pages * PAGE_SIZE) };
                let virt = NonNull::new(start).expect("the pool is not at address 0");
                return (start as PhysAddr, virt);
            }
        }
        (0, NonNull::dangling())
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        let base = DMA_POOL.get() as u64;
        let end = base + (DMA_PAGES * PAGE_SIZE) as u64;
        if paddr < base || !(paddr - base).is_multiple_of(PAGE_SIZE as u64) || paddr >= end {
            return -1;
        }
        let first = ((paddr - base) / PAGE_SIZE as u64) as usize;
        if pages == 0 || first + pages > DMA_PAGES {
            return -1;
        }
        let mask = run_mask(first, pages);
        let used = DMA_USED.get();
        // SAFETY: as in dma_alloc.
        unsafe {
            if *used & mask != mask {
                return -1;
            }
            *used &= !mask;
        }
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        assert!(
            paddr >= paging::mapped_ram_end() && paging::map_phys_range(paddr, size as u64),
            "virtio: cannot map MMIO region {paddr:#x}+{size:#x} (RAM, or at or above 4 GiB)"
        );
        NonNull::new(paddr as *mut u8).expect("a BAR region at address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// Pages of the DMA pool in use (a leak check for the tests).
pub fn dma_pages_in_use() -> u32 {
    // SAFETY: a plain read of the bitmap, as in dma_alloc.
    unsafe { *DMA_USED.get() }.count_ones()
}

// ---------------------------------------------------------------- heap

/// A bump allocator over a static arena for what `virtio-drivers`
/// allocates: the console driver's receive buffer (a `Box` as long as the
/// driver lives) and each indirect descriptor table (one per request while
/// it is in flight, with `VIRTIO_F_INDIRECT_DESC`). Freed memory comes back
/// when no allocation is live any more (the bump pointer then starts over)
/// and when the arena is reset between tests.
struct Heap;

const HEAP_SIZE: usize = 16 * 1024;

#[repr(C, align(4096))]
struct Arena([u8; HEAP_SIZE]);

static ARENA: Global<Arena> = Global::new(Arena([0; HEAP_SIZE]));
static HEAP_NEXT: Global<usize> = Global::new(0);
/// Allocations not freed yet.
static HEAP_LIVE: Global<usize> = Global::new(0);

// SAFETY: alloc returns a block of the requested size and alignment inside
// the arena that no live allocation overlaps (the bump pointer only grows
// while any allocation is live; it starts over only when none is, in
// dealloc or in `fresh_start`), or null.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = ARENA.get() as usize;
        let next = HEAP_NEXT.get();
        // SAFETY: one CPU, never from interrupt handlers.
        let offset = unsafe { *next };
        let start = (base + offset).next_multiple_of(layout.align());
        let Some(end) = start.checked_add(layout.size()) else {
            return core::ptr::null_mut();
        };
        if end > base + HEAP_SIZE {
            return core::ptr::null_mut();
        }
        // SAFETY: as above.
        unsafe {
            *next = end - base;
            *HEAP_LIVE.get() += 1;
        }
        start as *mut u8
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {
        // SAFETY: one CPU, never from interrupt handlers; the caller frees a
        // block alloc returned, so the count is at least 1.
        unsafe {
            let live = HEAP_LIVE.get();
            *live = (*live).saturating_sub(1);
            if *live == 0 {
                *HEAP_NEXT.get() = 0;
            }
        }
    }
}

#[global_allocator]
static HEAP: Heap = Heap;

// ---------------------------------------------------------------- devices

/// A modern virtio-pci function found on bus 0.
#[derive(Clone, Copy, Debug)]
pub struct Found {
    pub bdf: Bdf,
    pub device_id: u16,
    pub revision: u8,
    /// None: a device ID that names no virtio device type.
    pub kind: Option<DeviceType>,
}

impl Found {
    /// Short name of the device type, as the tests print it.
    pub fn kind_name(&self) -> &'static str {
        kind_name(self.kind)
    }
}

pub fn kind_name(kind: Option<DeviceType>) -> &'static str {
    match kind {
        Some(DeviceType::Network) => "net",
        Some(DeviceType::Block) => "blk",
        Some(DeviceType::Console) => "console",
        Some(DeviceType::EntropySource) => "rng",
        Some(_) => "other",
        None => "unknown",
    }
}

/// Every function on bus 0 with the virtio vendor ID, in slot order (at
/// most 32). `revision` and `device_id` are reported as read: the caller
/// judges whether each is a modern device.
pub fn scan() -> ([Option<Found>; 32], usize) {
    let mut found = [None; 32];
    let mut n = 0;
    for f in pci::scan_bus(&PortIo, 0).as_slice() {
        let ids = PortIo.read32(*f, VENDOR_ID);
        if ids as u16 != VENDOR || n == found.len() {
            continue;
        }
        let device_id = (ids >> 16) as u16;
        let kind = device_id
            .checked_sub(MODERN_ID_BASE)
            .and_then(|id| DeviceType::try_from(u32::from(id)).ok());
        found[n] = Some(Found {
            bdf: *f,
            device_id,
            revision: PortIo.read8(*f, REVISION),
            kind,
        });
        n += 1;
    }
    (found, n)
}

/// The modern virtio functions of type `kind`, in slot order.
pub fn devices_of(kind: DeviceType) -> ([Bdf; 32], usize) {
    let mut out = [Bdf::default(); 32];
    let mut n = 0;
    let (found, count) = scan();
    for f in found[..count].iter().flatten() {
        if f.kind == Some(kind) && f.revision >= 1 {
            out[n] = f.bdf;
            n += 1;
        }
    }
    (out, n)
}

/// Stops every virtio function's DMA (bus mastering off) and frees the DMA
/// pool and the heap: a test that was aborted half-way (a fault) leaves
/// devices running and memory allocated, the next test starts clean.
pub fn fresh_start() {
    let (found, count) = scan();
    for f in found[..count].iter().flatten() {
        let cmd = PortIo.read16(f.bdf, COMMAND);
        PortIo.write16(f.bdf, COMMAND, cmd & !CMD_BUS_MASTER);
    }
    // SAFETY: no driver is alive between tests (they are per test), and a
    // leaked one of an aborted test can no longer reach its DMA pages: its
    // device's bus mastering is off until a new driver resets it.
    unsafe {
        *DMA_USED.get() = 0;
        *HEAP_NEXT.get() = 0;
        *HEAP_LIVE.get() = 0;
    }
}

/// The virtio-pci transport of `f`, with memory decode and bus mastering on
/// (the firmware enables decode; nobody else enables DMA).
pub fn transport(f: Bdf) -> Result<PciTransport, VirtioPciError> {
    let cmd = PortIo.read16(f, COMMAND);
    PortIo.write16(f, COMMAND, cmd | CMD_MEMORY | CMD_BUS_MASTER);
    let mut root = PciRoot::new(Cf8);
    PciTransport::new::<GuestHal, _>(
        &mut root,
        DeviceFunction {
            bus: f.bus,
            device: f.dev,
            function: f.func,
        },
    )
}
