//! The guest's own identity map (built by the boot stub) and the extra
//! mappings tests add: 2 MiB windows onto non-RAM addresses, and a tiny
//! user-mode alias for `hypercall-user`.
//!
//! Layout: PML4[0] -> PDPT; PDPT[0..4] -> four page directories covering
//! 0..4 GiB with 2 MiB pages, of which only the first `guest_ram_pages`
//! (the RAM) are present at boot; PDPT[4] (virtual 4 GiB) is the user alias.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::cpu::{flush_tlb, invlpg};
use crate::Global;

pub const PAGE_2M: u64 = 2 << 20;
const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const HUGE: u64 = 1 << 7;

/// Entries of the four boot page directories.
const PD_ENTRIES: u64 = 2048;

extern "C" {
    static mut guest_pdpt: [u64; 512];
    static mut guest_pd: [u64; 2048];
    static guest_ram_pages: u32;
}

/// How many 2 MiB pages of RAM the boot stub mapped (from 0).
pub fn ram_pages() -> u64 {
    // SAFETY: written once by the boot stub before any Rust code ran.
    u64::from(unsafe { core::ptr::addr_of!(guest_ram_pages).read_volatile() })
}

/// End of the identity-mapped RAM (a multiple of 2 MiB).
pub fn mapped_ram_end() -> u64 {
    ram_pages() * PAGE_2M
}

fn pd_entry(index: u64) -> *mut u64 {
    debug_assert!(index < PD_ENTRIES);
    // SAFETY: only the address is taken; index < 2048 stays inside the array.
    unsafe {
        core::ptr::addr_of_mut!(guest_pd)
            .cast::<u64>()
            .add(index as usize)
    }
}

/// Maps the 2 MiB page at `phys` 1:1, uncached. Refuses (returns false)
/// unaligned addresses, addresses at or above 4 GiB and the RAM pages, so
/// that no Rust-visible memory ever gets a second mapping.
pub fn map_extra_2m(phys: u64) -> bool {
    let index = phys / PAGE_2M;
    if !phys.is_multiple_of(PAGE_2M) || index >= PD_ENTRIES || index < ram_pages() {
        return false;
    }
    let entry = phys | PRESENT | WRITABLE | WRITE_THROUGH | CACHE_DISABLE | HUGE;
    // SAFETY: a PD entry outside the RAM range; no Rust object lives there.
    unsafe { pd_entry(index).write_volatile(entry) };
    invlpg(phys);
    true
}

/// Makes `addr..addr + len` readable through the identity map: pages of
/// the RAM mapping are already there, every other 2 MiB page of the range is
/// mapped (uncached) with [`map_extra_2m`]. False if some page cannot be
/// (at or above 4 GiB); the extra pages live until [`unmap_all_extra`].
pub fn map_phys_range(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    let mut page = addr - addr % PAGE_2M;
    while page < end {
        if page >= mapped_ram_end() && !map_extra_2m(page) {
            return false;
        }
        page += PAGE_2M;
    }
    true
}

/// Removes a mapping made by [`map_extra_2m`] (RAM pages are left alone).
pub fn unmap_extra_2m(phys: u64) {
    let index = phys / PAGE_2M;
    if !phys.is_multiple_of(PAGE_2M) || index >= PD_ENTRIES || index < ram_pages() {
        return;
    }
    // SAFETY: as in map_extra_2m.
    unsafe { pd_entry(index).write_volatile(0) };
    invlpg(phys);
}

/// Removes every extra mapping (cleanup after a test that was aborted).
pub fn unmap_all_extra() {
    for index in ram_pages()..PD_ENTRIES {
        // SAFETY: entries above the RAM range hold only extra mappings.
        unsafe { pd_entry(index).write_volatile(0) };
    }
    flush_tlb();
}

#[repr(C, align(4096))]
struct Table([u64; 512]);

#[repr(C, align(4096))]
struct Page([u8; 4096]);

static USER_PD: Global<Table> = Global::new(Table([0; 512]));
static USER_PT: Global<Table> = Global::new(Table([0; 512]));
static USER_CODE: Global<Page> = Global::new(Page([0; 4096]));
static USER_STACK: Global<Page> = Global::new(Page([0; 4096]));
static USER_MAPPED: AtomicBool = AtomicBool::new(false);

/// Virtual address of the user code page (PDPT[4]: above every RAM mapping).
pub const USER_CODE_VA: u64 = 4 << 30;
/// Virtual address of the user stack page (right after the code).
pub const USER_STACK_VA: u64 = USER_CODE_VA + 4096;

/// Copies `code` into a page and maps it user-readable/executable at
/// [`USER_CODE_VA`], with a user-writable stack page at [`USER_STACK_VA`].
/// Returns (entry RIP, initial RSP) for the user code.
pub fn map_user(code: &[u8]) -> (u64, u64) {
    assert!(code.len() <= 4096, "user code larger than a page");
    let (pd, pt) = (USER_PD.get(), USER_PT.get());
    let (code_page, stack_page) = (USER_CODE.get(), USER_STACK.get());
    // SAFETY: these statics are used only here and in unmap_user, never
    // concurrently (one CPU, not from interrupt handlers), and while the
    // user alias is unmapped (unmap_user runs after every test).
    let (code_bytes, pt_entries, pd_entries) =
        unsafe { (&mut (*code_page).0, &mut (*pt).0, &mut (*pd).0) };
    code_bytes[..code.len()].copy_from_slice(code);
    pt_entries[0] = code_page as u64 | PRESENT | USER;
    pt_entries[1] = stack_page as u64 | PRESENT | WRITABLE | USER;
    pd_entries[0] = pt as u64 | PRESENT | WRITABLE | USER;
    // SAFETY: PDPT[4] is unused by the boot map (it covers 4..5 GiB, above
    // every RAM mapping); the user alias is the only thing placed there.
    unsafe {
        let pdpt = core::ptr::addr_of_mut!(guest_pdpt).cast::<u64>();
        pdpt.add(4)
            .write_volatile(pd as u64 | PRESENT | WRITABLE | USER);
    }
    USER_MAPPED.store(true, Ordering::SeqCst);
    flush_tlb();
    (USER_CODE_VA, USER_STACK_VA + 4096)
}

/// Removes the user alias.
pub fn unmap_user() {
    if USER_MAPPED.swap(false, Ordering::SeqCst) {
        // SAFETY: PDPT[4] holds only the user alias.
        unsafe {
            let pdpt = core::ptr::addr_of_mut!(guest_pdpt).cast::<u64>();
            pdpt.add(4).write_volatile(0);
        }
        flush_tlb();
    }
}
