//! The hypervisor heap: a buddy allocator fed first with a bootstrap region
//! in .bss, then with frames from the frame allocator once the memory map is known.

use buddy_system_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Hands the .bss bootstrap region to the heap. Call once, first thing.
pub fn init_bootstrap() {
    let (start, end) = crate::boot::bootstrap_heap();
    // SAFETY: the bootstrap region is a .bss array reserved for this purpose
    // and referenced nowhere else; this runs once before any allocation.
    unsafe { HEAP.lock().add_to_heap(start, end) };
}

/// Adds `[start, start + len)` to the heap.
///
/// # Safety
/// The range must be identity-mapped RAM owned by the caller for good (frames
/// taken from the frame allocator and never freed or handed out again).
pub unsafe fn grow(start: u64, len: u64) {
    // SAFETY: the caller guarantees exclusive, permanent ownership.
    unsafe {
        HEAP.lock()
            .add_to_heap(start as usize, (start + len) as usize)
    };
}

/// Bytes currently allocated and total bytes managed.
pub fn usage() -> (usize, usize) {
    let h = HEAP.lock();
    (h.stats_alloc_actual(), h.stats_total_bytes())
}
