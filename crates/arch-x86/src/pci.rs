//! Physical PCI configuration space (mechanism #1 at 0xCF8/0xCFC, or ECAM when the MCFG gives
//! one) and device register windows (BAR memory), for the functions the hypervisor enumerates
//! and hands to VMs.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::io::{inl, outl};

/// ECAM base for buses 0..=`ECAM_LAST_BUS` (0: none, use 0xCF8).
static ECAM_BASE: AtomicU64 = AtomicU64::new(0);
static ECAM_LAST_BUS: AtomicU64 = AtomicU64::new(0);
/// Mechanism #1 is a two-step protocol: one pCPU at a time.
static CF8: spin::Mutex<()> = spin::Mutex::new(());

/// Uses the ECAM window at `base` for buses `0..=last_bus` from now on (the MCFG's segment-0
/// entry). The window must lie in the identity map.
pub fn set_ecam(base: u64, last_bus: u8) {
    if base != 0
        && base + (u64::from(last_bus) + 1) * (1 << 20) <= crate::boot::IDENTITY_MAPPED_GIB << 30
    {
        ECAM_LAST_BUS.store(u64::from(last_bus), Ordering::Relaxed);
        ECAM_BASE.store(base, Ordering::Release);
    }
}

/// Which mechanism is in use: Some(ECAM base) or None (0xCF8).
pub fn ecam() -> Option<u64> {
    let base = ECAM_BASE.load(Ordering::Acquire);
    (base != 0).then_some(base)
}

fn ecam_addr(bdf: u16, offset: u16) -> Option<u64> {
    let base = ecam()?;
    let bus = u64::from(bdf >> 8);
    (bus <= ECAM_LAST_BUS.load(Ordering::Relaxed))
        .then(|| base + (u64::from(bdf) << 12) + u64::from(offset & 0xFFC))
}

/// The configuration dword at `offset` of function `bdf` (bus << 8 | dev << 3 | fn). Offsets
/// past 255 read all ones without ECAM.
pub fn config_read32(bdf: u16, offset: u16) -> u32 {
    if let Some(addr) = ecam_addr(bdf, offset) {
        // SAFETY: `addr` is inside the ECAM window `set_ecam` checked to be in the identity
        // map; an aligned dword read of configuration space has no effect on Rust state.
        return unsafe { core::ptr::read_volatile(addr as *const u32) };
    }
    if offset >= 256 {
        return u32::MAX;
    }
    let _g = CF8.lock();
    outl(
        0xCF8,
        0x8000_0000 | u32::from(bdf) << 8 | u32::from(offset & 0xFC),
    );
    inl(0xCFC)
}

/// Writes the configuration dword at `offset` of function `bdf`.
pub fn config_write32(bdf: u16, offset: u16, value: u32) {
    if let Some(addr) = ecam_addr(bdf, offset) {
        // SAFETY: as in `config_read32`; configuration space is not RAM.
        unsafe { core::ptr::write_volatile(addr as *mut u32, value) };
        return;
    }
    if offset >= 256 {
        return;
    }
    let _g = CF8.lock();
    outl(
        0xCF8,
        0x8000_0000 | u32::from(bdf) << 8 | u32::from(offset & 0xFC),
    );
    outl(0xCFC, value);
}

/// A window of device registers in physical memory (a BAR, an IOMMU's registers), reached
/// through the identity map with uncached volatile accesses of 1, 2, 4 or 8 bytes, each checked
/// against the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioRegion {
    base: u64,
    len: u64,
}

impl MmioRegion {
    /// The registers at `[base, base + len)`.
    ///
    /// # Safety
    /// The range must be device memory (never RAM the hypervisor or a VM uses), inside the
    /// identity map, and its registers' side effects must be the caller's to cause.
    pub const unsafe fn new(base: u64, len: u64) -> Self {
        MmioRegion { base, len }
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn at(&self, offset: u64, size: u8) -> Option<u64> {
        let end = offset.checked_add(u64::from(size))?;
        (matches!(size, 1 | 2 | 4 | 8) && end <= self.len && offset.is_multiple_of(u64::from(size)))
            .then(|| self.base + offset)
    }

    /// Reads `size` bytes at `offset` (all ones when outside the window or misaligned).
    pub fn read(&self, offset: u64, size: u8) -> u64 {
        let Some(a) = self.at(offset, size) else {
            return u64::MAX >> (64 - 8 * u32::from(size.clamp(1, 8)));
        };
        // SAFETY: `a` is an aligned address inside device memory the constructor's caller
        // vouched for; a volatile read of it touches no Rust-visible memory.
        unsafe {
            match size {
                1 => u64::from(core::ptr::read_volatile(a as *const u8)),
                2 => u64::from(core::ptr::read_volatile(a as *const u16)),
                4 => u64::from(core::ptr::read_volatile(a as *const u32)),
                _ => core::ptr::read_volatile(a as *const u64),
            }
        }
    }

    /// Writes `size` bytes at `offset` (dropped when outside the window or misaligned).
    pub fn write(&self, offset: u64, size: u8, value: u64) {
        let Some(a) = self.at(offset, size) else {
            return;
        };
        // SAFETY: as in `read`: device memory, aligned, inside the window.
        unsafe {
            match size {
                1 => core::ptr::write_volatile(a as *mut u8, value as u8),
                2 => core::ptr::write_volatile(a as *mut u16, value as u16),
                4 => core::ptr::write_volatile(a as *mut u32, value as u32),
                _ => core::ptr::write_volatile(a as *mut u64, value),
            }
        }
    }
}

/// Reads `size` (1, 2 or 4) bytes from I/O port `port`.
pub fn port_read(port: u16, size: u8) -> u32 {
    match size {
        1 => u32::from(crate::io::inb(port)),
        2 => u32::from(crate::io::inw(port)),
        _ => inl(port),
    }
}

/// Writes `size` (1, 2 or 4) bytes to I/O port `port`.
pub fn port_write(port: u16, size: u8, value: u32) {
    match size {
        1 => crate::io::outb(port, value as u8),
        2 => crate::io::outw(port, value as u16),
        _ => outl(port, value),
    }
}
