//! Reads and writes of identity-mapped physical memory, bounds-checked
//! against what the boot page tables map.

use crate::boot::IDENTITY_MAPPED_GIB;

const MAPPED_END: u64 = IDENTITY_MAPPED_GIB << 30;

fn checked(addr: u64, len: usize) -> Option<usize> {
    let end = addr.checked_add(len as u64)?;
    (addr != 0 && end <= MAPPED_END).then_some(addr as usize)
}

/// Copies `buf.len()` bytes of physical memory at `addr` into `buf`.
/// Returns false (and reads nothing) outside the identity-mapped range or at 0.
///
/// Physical memory that is not RAM reads as whatever the platform returns; the
/// callers (multiboot and ACPI parsers) only read what firmware pointed them at.
pub fn read(addr: u64, buf: &mut [u8]) -> bool {
    let Some(src) = checked(addr, buf.len()) else {
        return false;
    };
    // SAFETY: the range lies inside the identity map built by the boot stub,
    // and byte reads of RAM or MMIO have no Rust-visible aliasing effects.
    unsafe { core::ptr::copy_nonoverlapping(src as *const u8, buf.as_mut_ptr(), buf.len()) };
    true
}

/// The physical range `[start, end)` of the hypervisor image, including .bss.
pub fn image_range() -> (u64, u64) {
    extern "C" {
        static __image_start: u8;
        static __bss_end: u8;
    }
    (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__bss_end) as u64,
    )
}

/// Turns a physical range the frame allocator handed out into a byte slice.
///
/// # Safety
/// `[addr, addr + len)` must be RAM owned exclusively by the caller for
/// `'static` (e.g. frames allocated once and never freed).
pub unsafe fn owned_slice(addr: u64, len: usize) -> &'static mut [u8] {
    debug_assert!(checked(addr, len).is_some());
    // SAFETY: the caller guarantees exclusive, 'static ownership of the range.
    unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len) }
}

/// Test hook for the boot-input tests: moves the first entry of a Multiboot1
/// memory map so that it wraps past the end of the address space, so that the
/// real parser meets a malformed map in real loader memory.
pub fn corrupt_mb1_memory_map(info: u64) -> bool {
    let mut hdr = [0u8; 52];
    if !read(info, &mut hdr) || hdr[0] & (1 << 6) == 0 {
        return false;
    }
    let mmap = u64::from(u32::from_le_bytes([hdr[48], hdr[49], hdr[50], hdr[51]]));
    // Entry: size u32, base u64, len u64, type u32. Overwrite base.
    let Some(at) = checked(mmap + 4, 8) else {
        return false;
    };
    // SAFETY: the loader's memory map lies in identity-mapped low memory that
    // nothing else uses yet (this runs before any allocation).
    unsafe { (at as *mut u64).write_unaligned(0xFFFF_FFFF_FFFF_F000) };
    true
}

/// Borrows `[addr, addr + len)` (a boot module) as bytes for good.
///
/// # Safety
/// The range must be identity-mapped memory that nothing writes while the
/// slice lives: boot modules are kept out of the frame allocator for this.
pub unsafe fn borrow(addr: u64, len: usize) -> Option<&'static [u8]> {
    let start = checked(addr, len)?;
    // SAFETY: in the identity map (checked) and not written (caller's contract).
    Some(unsafe { core::slice::from_raw_parts(start as *const u8, len) })
}

/// Borrows `[addr, addr + len)` (a boot module holding a disk image) as
/// writable bytes for good.
///
/// # Safety
/// The range must be identity-mapped memory that nothing else reads or
/// writes while the slice lives, and it may be borrowed only once: a disk
/// module is kept out of the frame allocator and never borrowed by
/// [`borrow`] (the configurator forbids using it as a kernel or initrd).
pub unsafe fn borrow_mut(addr: u64, len: usize) -> Option<&'static mut [u8]> {
    let start = checked(addr, len)?;
    // SAFETY: in the identity map (checked), borrowed once and used by no
    // one else (caller's contract).
    Some(unsafe { core::slice::from_raw_parts_mut(start as *mut u8, len) })
}
