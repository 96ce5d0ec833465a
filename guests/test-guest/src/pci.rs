//! PCI configuration space for the `pci-*` tests: mechanism #1 (ports
//! 0xCF8/0xCFC) and ECAM (memory-mapped, its window found in ACPI's MCFG),
//! the bus scan an OS does, and the capability-list walk.

use core::fmt;

use crate::{cpu, paging};

/// A function's address: bus, device (0..32), function (0..8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bdf {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

impl Bdf {
    pub const fn new(bus: u8, dev: u8, func: u8) -> Self {
        Self { bus, dev, func }
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.dev, self.func)
    }
}

/// Registers of the type-0 header (byte offsets).
pub const VENDOR_ID: u16 = 0x00;
pub const COMMAND: u16 = 0x04;
pub const STATUS: u16 = 0x06;
pub const REVISION: u16 = 0x08;
pub const HEADER_TYPE: u16 = 0x0E;
pub const BAR0: u16 = 0x10;
pub const CAP_PTR: u16 = 0x34;
pub const INTERRUPT_LINE: u16 = 0x3C;
pub const INTERRUPT_PIN: u16 = 0x3D;

/// Command register bits.
pub const CMD_IO: u16 = 1 << 0;
pub const CMD_MEMORY: u16 = 1 << 1;
pub const CMD_BUS_MASTER: u16 = 1 << 2;
pub const CMD_INTX_DISABLE: u16 = 1 << 10;
/// Status register bits.
pub const STATUS_INTERRUPT: u16 = 1 << 3;
pub const STATUS_CAP_LIST: u16 = 1 << 4;
/// Header type bit 7: the device has functions 1..7.
pub const HEADER_MULTI_FUNCTION: u8 = 0x80;

/// Capability IDs.
pub const CAP_ID_MSI: u8 = 0x05;
pub const CAP_ID_MSIX: u8 = 0x11;
/// At most this many capabilities are followed (a longer chain is a loop:
/// 192 bytes of capability space hold at most 48 dword-sized entries).
pub const CAP_WALK_LIMIT: usize = 48;

/// Config accesses through one mechanism. Misaligned or unreachable
/// offsets read all ones and ignore writes, like a missing function.
pub trait ConfigSpace {
    fn read8(&self, f: Bdf, off: u16) -> u8;
    fn read16(&self, f: Bdf, off: u16) -> u16;
    fn read32(&self, f: Bdf, off: u16) -> u32;
    fn write8(&self, f: Bdf, off: u16, v: u8);
    fn write16(&self, f: Bdf, off: u16, v: u16);
    fn write32(&self, f: Bdf, off: u16, v: u32);
}

/// Configuration mechanism #1: the address goes to 0xCF8, the data moves
/// through 0xCFC..0xCFF. Reaches offsets 0..0x100 only.
pub struct PortIo;

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;

impl PortIo {
    /// Selects the dword holding `off`; the data port for `off` (None if
    /// the access is misaligned or past 0xFF).
    fn select(f: Bdf, off: u16, width: u16) -> Option<u16> {
        if off >= 0x100 || !off.is_multiple_of(width) || f.dev >= 32 || f.func >= 8 {
            return None;
        }
        let address = 0x8000_0000
            | u32::from(f.bus) << 16
            | u32::from(f.dev) << 11
            | u32::from(f.func) << 8
            | u32::from(off & 0xFC);
        // SAFETY: CONFIG_ADDRESS only selects a register for the next data
        // access; nothing else in the guest (no interrupt handler) uses it.
        unsafe { cpu::outl(CONFIG_ADDRESS, address) };
        Some(CONFIG_DATA + (off & 3))
    }
}

impl ConfigSpace for PortIo {
    fn read8(&self, f: Bdf, off: u16) -> u8 {
        match Self::select(f, off, 1) {
            // SAFETY: a config read; the tests only read registers without
            // read side effects.
            Some(port) => unsafe { cpu::inb(port) },
            None => 0xFF,
        }
    }

    fn read16(&self, f: Bdf, off: u16) -> u16 {
        match Self::select(f, off, 2) {
            // SAFETY: as in read8.
            Some(port) => unsafe { cpu::inw(port) },
            None => 0xFFFF,
        }
    }

    fn read32(&self, f: Bdf, off: u16) -> u32 {
        match Self::select(f, off, 4) {
            // SAFETY: as in read8.
            Some(port) => unsafe { cpu::inl(port) },
            None => 0xFFFF_FFFF,
        }
    }

    fn write8(&self, f: Bdf, off: u16, v: u8) {
        if let Some(port) = Self::select(f, off, 1) {
            // SAFETY: a config write the calling test means (and undoes).
            unsafe { cpu::outb(port, v) };
        }
    }

    fn write16(&self, f: Bdf, off: u16, v: u16) {
        if let Some(port) = Self::select(f, off, 2) {
            // SAFETY: as in write8.
            unsafe { cpu::outw(port, v) };
        }
    }

    fn write32(&self, f: Bdf, off: u16, v: u32) {
        if let Some(port) = Self::select(f, off, 4) {
            // SAFETY: as in write8.
            unsafe { cpu::outl(port, v) };
        }
    }
}

/// One ECAM window, mapped for its first bus only (the tests scan bus 0):
/// byte `off` of bus b, device d, function f is at
/// `base + (b << 20 | d << 15 | f << 12 | off)`.
pub struct Ecam {
    base: u64,
    bus: u8,
}

/// Config space of one bus in an ECAM window.
const ECAM_BUS_SIZE: u64 = 1 << 20;

impl Ecam {
    /// Maps the window's part for `bus` (uncached); None if it cannot be
    /// mapped (at or above 4 GiB, or overlapping the guest's RAM).
    pub fn map(base: u64, bus: u8) -> Option<Self> {
        let start = base.checked_add(u64::from(bus) * ECAM_BUS_SIZE)?;
        if start < paging::mapped_ram_end() || !paging::map_phys_range(start, ECAM_BUS_SIZE) {
            return None;
        }
        Some(Self { base, bus })
    }

    /// The address of `off` in `f`'s config space (None: not mapped, or
    /// misaligned for `width`).
    fn address(&self, f: Bdf, off: u16, width: u16) -> Option<u64> {
        if f.bus != self.bus
            || f.dev >= 32
            || f.func >= 8
            || off >= 0x1000
            || !off.is_multiple_of(width)
        {
            return None;
        }
        Some(
            self.base
                + (u64::from(f.bus) << 20
                    | u64::from(f.dev) << 15
                    | u64::from(f.func) << 12
                    | u64::from(off)),
        )
    }
}

impl ConfigSpace for Ecam {
    fn read8(&self, f: Bdf, off: u16) -> u8 {
        match self.address(f, off, 1) {
            // SAFETY: inside the bus's 1 MiB that `map` mapped uncached,
            // outside RAM (no Rust object there); aligned.
            Some(a) => unsafe { cpu::mmio_read8(a) },
            None => 0xFF,
        }
    }

    fn read16(&self, f: Bdf, off: u16) -> u16 {
        match self.address(f, off, 2) {
            // SAFETY: as in read8.
            Some(a) => unsafe { cpu::mmio_read16(a) },
            None => 0xFFFF,
        }
    }

    fn read32(&self, f: Bdf, off: u16) -> u32 {
        match self.address(f, off, 4) {
            // SAFETY: as in read8.
            Some(a) => unsafe { cpu::mmio_read32(a) },
            None => 0xFFFF_FFFF,
        }
    }

    fn write8(&self, f: Bdf, off: u16, v: u8) {
        if let Some(a) = self.address(f, off, 1) {
            // SAFETY: as in read8; a config write the calling test means.
            unsafe { cpu::mmio_write8(a, v) };
        }
    }

    fn write16(&self, f: Bdf, off: u16, v: u16) {
        if let Some(a) = self.address(f, off, 2) {
            // SAFETY: as in write8.
            unsafe { cpu::mmio_write16(a, v) };
        }
    }

    fn write32(&self, f: Bdf, off: u16, v: u32) {
        if let Some(a) = self.address(f, off, 4) {
            // SAFETY: as in write8.
            unsafe { cpu::mmio_write32(a, v) };
        }
    }
}

/// The functions a scan found, in bus order.
pub struct Functions {
    list: [Bdf; 256],
    len: usize,
}

impl Functions {
    pub fn as_slice(&self) -> &[Bdf] {
        &self.list[..self.len]
    }

    pub fn contains(&self, f: Bdf) -> bool {
        self.as_slice().contains(&f)
    }
}

/// Scans `bus` as an OS does: function 0 of each device, and functions
/// 1..7 only where function 0's header type has the multi-function bit.
pub fn scan_bus(cfg: &impl ConfigSpace, bus: u8) -> Functions {
    let mut found = Functions {
        list: [Bdf::default(); 256],
        len: 0,
    };
    for dev in 0..32 {
        let f0 = Bdf::new(bus, dev, 0);
        if cfg.read16(f0, VENDOR_ID) == 0xFFFF {
            continue;
        }
        let functions = if cfg.read8(f0, HEADER_TYPE) & HEADER_MULTI_FUNCTION != 0 {
            8
        } else {
            1
        };
        for func in 0..functions {
            let f = Bdf::new(bus, dev, func);
            if cfg.read16(f, VENDOR_ID) != 0xFFFF {
                found.list[found.len] = f;
                found.len += 1;
            }
        }
    }
    found
}

/// Class code, subclass and programming interface as 0xCCSSPP.
pub fn class_code(cfg: &impl ConfigSpace, f: Bdf) -> u32 {
    cfg.read32(f, REVISION) >> 8
}

/// What went wrong walking a capability list.
#[derive(Clone, Copy, Debug)]
pub enum CapError {
    /// Status bit 4 is clear: the function has no list.
    NoList,
    /// A pointer into the header (below 0x40) or past 0xFF.
    BadPointer { at: u16, ptr: u8 },
    /// More than [`CAP_WALK_LIMIT`] entries: the list loops.
    Loop,
}

impl fmt::Display for CapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CapError::NoList => write!(f, "Status bit 4 (capability list) clear"),
            CapError::BadPointer { at, ptr } => {
                write!(
                    f,
                    "capability pointer {ptr:#04x} at {at:#04x} points into the header"
                )
            }
            CapError::Loop => write!(
                f,
                "capability list longer than {CAP_WALK_LIMIT} entries (a loop)"
            ),
        }
    }
}

/// The offset of the first capability with ID `id` (None: not in the list).
pub fn find_capability(cfg: &impl ConfigSpace, f: Bdf, id: u8) -> Result<Option<u16>, CapError> {
    if cfg.read16(f, STATUS) & STATUS_CAP_LIST == 0 {
        return Err(CapError::NoList);
    }
    let mut at = CAP_PTR;
    let mut ptr = cfg.read8(f, CAP_PTR) & 0xFC;
    for _ in 0..CAP_WALK_LIMIT {
        if ptr == 0 {
            return Ok(None);
        }
        if ptr < 0x40 {
            return Err(CapError::BadPointer { at, ptr });
        }
        let cap = u16::from(ptr);
        if cfg.read8(f, cap) == id {
            return Ok(Some(cap));
        }
        at = cap + 1;
        ptr = cfg.read8(f, at) & 0xFC;
    }
    Err(CapError::Loop)
}
