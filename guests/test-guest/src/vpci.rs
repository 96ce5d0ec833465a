//! A minimal modern virtio-pci driver (virtio 1.x, 4.1) of the guest's own,
//! for the `virtio-hostile` tests: unlike the `virtio-drivers` crate it lets
//! the caller choose every register write and every byte of the split
//! rings, so that a test can break them on purpose.
//!
//! [`Transport`] finds the vendor capabilities of a function (common,
//! notify, ISR and device configuration), maps the BARs they live in
//! (uncached) and reads and writes the registers with single MOVs. [`Dma`]
//! is a page-aligned static area of guest RAM for rings and buffers, read
//! and written only with volatile accesses (the device writes it behind
//! the compiler's back); [`Ring`] lays a split virtqueue out in one.

use crate::msg::Msg;
use crate::pci::{
    find_capability, Bdf, ConfigSpace, PortIo, BAR0, CAP_ID_MSIX, CAP_PTR, CMD_BUS_MASTER,
    CMD_MEMORY, COMMAND,
};
use crate::{cpu, msg, paging, Global};

/// Device status bits (virtio 1.x, 2.1).
pub const S_ACKNOWLEDGE: u8 = 1;
pub const S_DRIVER: u8 = 2;
pub const S_DRIVER_OK: u8 = 4;
pub const S_FEATURES_OK: u8 = 8;
pub const S_NEEDS_RESET: u8 = 64;

/// ISR bit: a configuration change.
pub const ISR_CONFIG: u8 = 2;

/// Feature bits.
pub const F_INDIRECT_DESC: u64 = 1 << 28;
pub const F_VERSION_1: u64 = 1 << 32;

/// Descriptor flags.
pub const D_NEXT: u16 = 1;
pub const D_WRITE: u16 = 2;
pub const D_INDIRECT: u16 = 4;

/// Common configuration registers (4.1.4.3).
const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0C;
const CONFIG_MSIX_VECTOR: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1A;
const QUEUE_ENABLE: u64 = 0x1C;
const QUEUE_NOTIFY_OFF: u64 = 0x1E;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;

/// The vendor-specific capability and its `cfg_type`s (4.1.4).
const CAP_VENDOR: u8 = 0x09;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;

/// One modern virtio-pci function, its registers mapped.
pub struct Transport {
    pub bdf: Bdf,
    /// BAR 0's address (the hostile tests point buffers at it).
    pub bar0: u64,
    common: u64,
    isr: u64,
    device: u64,
    notify: u64,
    notify_mul: u32,
}

/// A structure a vendor capability points at: its BAR, offset and length.
#[derive(Clone, Copy)]
struct Region {
    bar: u8,
    offset: u32,
    len: u32,
}

/// The memory address BAR `bar` of `f` decodes (64-bit BARs too); None
/// for an I/O BAR or one not assigned.
fn bar_address(f: Bdf, bar: u8) -> Option<u64> {
    if bar > 5 {
        return None;
    }
    let reg = BAR0 + 4 * u16::from(bar);
    let lo = PortIo.read32(f, reg);
    if lo & 1 != 0 {
        return None;
    }
    let mut addr = u64::from(lo & !0xF);
    if (lo >> 1) & 3 == 2 && bar < 5 {
        addr |= u64::from(PortIo.read32(f, reg + 4)) << 32;
    }
    (addr != 0).then_some(addr)
}

impl Transport {
    /// Opens function `f`: memory decode and bus mastering on, the four
    /// structures found through its vendor capabilities and mapped.
    pub fn open(f: Bdf) -> Result<Self, Msg> {
        let cmd = PortIo.read16(f, COMMAND);
        PortIo.write16(f, COMMAND, cmd | CMD_MEMORY | CMD_BUS_MASTER);
        // The list exists (Status bit 4): find_capability checks it.
        if let Err(e) = find_capability(&PortIo, f, CAP_VENDOR) {
            return Err(msg!("{f}: capability list: {e}"));
        }
        let mut found: [Option<Region>; 5] = [None; 5];
        let mut notify_mul = 0;
        let mut ptr = PortIo.read8(f, CAP_PTR) & 0xFC;
        for _ in 0..crate::pci::CAP_WALK_LIMIT {
            if ptr < 0x40 {
                break;
            }
            let at = u16::from(ptr);
            if PortIo.read8(f, at) == CAP_VENDOR {
                let kind = PortIo.read8(f, at + 3);
                let region = Region {
                    bar: PortIo.read8(f, at + 4),
                    offset: PortIo.read32(f, at + 8),
                    len: PortIo.read32(f, at + 12),
                };
                if (1..=4).contains(&kind) && found[usize::from(kind)].is_none() {
                    found[usize::from(kind)] = Some(region);
                    if kind == CFG_NOTIFY {
                        notify_mul = PortIo.read32(f, at + 16);
                    }
                }
            }
            ptr = PortIo.read8(f, at + 1) & 0xFC;
        }
        let map = |kind: u8, what: &str| -> Result<u64, Msg> {
            let Some(r) = found[usize::from(kind)] else {
                return Err(msg!("{f}: no {what} capability"));
            };
            let Some(base) = bar_address(f, r.bar) else {
                return Err(msg!(
                    "{f}: {what}: BAR {} is not an assigned memory BAR",
                    r.bar
                ));
            };
            let addr = base + u64::from(r.offset);
            if addr < paging::mapped_ram_end()
                || !paging::map_phys_range(addr, u64::from(r.len.max(4)))
            {
                return Err(msg!("{f}: {what} at {addr:#x} cannot be mapped"));
            }
            Ok(addr)
        };
        let common = map(CFG_COMMON, "common configuration")?;
        let isr = map(CFG_ISR, "ISR")?;
        let device = map(CFG_DEVICE, "device configuration")?;
        let notify = map(CFG_NOTIFY, "notification")?;
        let bar0 = bar_address(f, 0).ok_or_else(|| msg!("{f}: BAR 0 not assigned"))?;
        Ok(Transport {
            bdf: f,
            bar0,
            common,
            isr,
            device,
            notify,
            notify_mul,
        })
    }

    fn r8(&self, off: u64) -> u8 {
        // SAFETY: inside the common configuration `open` mapped (uncached,
        // outside RAM); registers without read side effects.
        unsafe { cpu::mmio_read8(self.common + off) }
    }

    fn r16(&self, off: u64) -> u16 {
        // SAFETY: as in r8; the field is 2-byte aligned.
        unsafe { cpu::mmio_read16(self.common + off) }
    }

    fn r32(&self, off: u64) -> u32 {
        // SAFETY: as in r8; the field is 4-byte aligned.
        unsafe { cpu::mmio_read32(self.common + off) }
    }

    fn w8(&self, off: u64, v: u8) {
        // SAFETY: a register of the mapped common configuration; what the
        // device does with the value is the test's business, it touches no
        // guest memory but the rings the test laid out.
        unsafe { cpu::mmio_write8(self.common + off, v) }
    }

    fn w16(&self, off: u64, v: u16) {
        // SAFETY: as in w8; the field is 2-byte aligned.
        unsafe { cpu::mmio_write16(self.common + off, v) }
    }

    fn w32(&self, off: u64, v: u32) {
        // SAFETY: as in w8; the field is 4-byte aligned.
        unsafe { cpu::mmio_write32(self.common + off, v) }
    }

    pub fn status(&self) -> u8 {
        self.r8(DEVICE_STATUS)
    }

    pub fn set_status(&self, s: u8) {
        self.w8(DEVICE_STATUS, s);
    }

    pub fn generation(&self) -> u8 {
        self.r8(CONFIG_GENERATION)
    }

    pub fn num_queues(&self) -> u16 {
        self.r16(NUM_QUEUES)
    }

    /// Reads (and so clears) the ISR.
    pub fn take_isr(&self) -> u8 {
        // SAFETY: the mapped ISR byte; the read clears it, which is what the
        // caller wants.
        unsafe { cpu::mmio_read8(self.isr) }
    }

    /// A 32-bit field of the device configuration.
    pub fn config32(&self, off: u64) -> u32 {
        // SAFETY: inside the mapped device configuration, 4-byte aligned.
        unsafe { cpu::mmio_read32(self.device + off) }
    }

    pub fn device_features(&self) -> u64 {
        self.w32(DEVICE_FEATURE_SELECT, 0);
        let lo = self.r32(DEVICE_FEATURE);
        self.w32(DEVICE_FEATURE_SELECT, 1);
        let hi = self.r32(DEVICE_FEATURE);
        u64::from(lo) | u64::from(hi) << 32
    }

    pub fn set_driver_features(&self, f: u64) {
        self.w32(DRIVER_FEATURE_SELECT, 0);
        self.w32(DRIVER_FEATURE, f as u32);
        self.w32(DRIVER_FEATURE_SELECT, 1);
        self.w32(DRIVER_FEATURE, (f >> 32) as u32);
    }

    pub fn driver_features(&self) -> u64 {
        self.w32(DRIVER_FEATURE_SELECT, 0);
        let lo = self.r32(DRIVER_FEATURE);
        self.w32(DRIVER_FEATURE_SELECT, 1);
        let hi = self.r32(DRIVER_FEATURE);
        u64::from(lo) | u64::from(hi) << 32
    }

    pub fn select(&self, q: u16) {
        self.w16(QUEUE_SELECT, q);
    }

    /// Size of the selected queue (its maximum until the driver writes it).
    pub fn queue_size(&self) -> u16 {
        self.r16(QUEUE_SIZE)
    }

    pub fn set_queue_size(&self, n: u16) {
        self.w16(QUEUE_SIZE, n);
    }

    /// The selected queue's descriptor table, driver (available) and device
    /// (used) areas, each as two 32-bit writes.
    pub fn set_queue_addrs(&self, desc: u64, driver: u64, device: u64) {
        for (off, v) in [
            (QUEUE_DESC, desc),
            (QUEUE_DRIVER, driver),
            (QUEUE_DEVICE, device),
        ] {
            self.w32(off, v as u32);
            self.w32(off + 4, (v >> 32) as u32);
        }
    }

    pub fn enable_queue(&self) {
        self.w16(QUEUE_ENABLE, 1);
    }

    pub fn queue_enabled(&self) -> bool {
        self.r16(QUEUE_ENABLE) == 1
    }

    /// Notifies queue `q` (at its notify offset times the multiplier).
    pub fn notify(&self, q: u16) {
        self.select(q);
        let off = u64::from(self.r16(QUEUE_NOTIFY_OFF)) * u64::from(self.notify_mul);
        // SAFETY: inside the mapped notification structure (the device
        // gives each of its queues a slot there); a write only wakes the
        // device.
        unsafe { cpu::mmio_write16(self.notify + off, q) };
    }

    /// Writes status 0 and waits (up to `bound` TSC ticks) until it reads
    /// 0: the reset is complete (4.1.4.3.2).
    pub fn reset(&self, bound: u64) -> Result<(), Msg> {
        self.set_status(0);
        let t0 = cpu::rdtsc();
        loop {
            let s = self.status();
            if s == 0 {
                return Ok(());
            }
            if cpu::rdtsc().wrapping_sub(t0) > bound {
                return Err(msg!(
                    "{}: status still {s:#04x} after writing 0 (no reset)",
                    self.bdf
                ));
            }
            core::hint::spin_loop();
        }
    }

    /// Resets the device, then ACKNOWLEDGE, DRIVER, the device's features
    /// masked with `accept`, FEATURES_OK: whether FEATURES_OK stuck.
    pub fn negotiate(&self, bound: u64, accept: u64) -> Result<bool, Msg> {
        self.reset(bound)?;
        self.set_status(S_ACKNOWLEDGE);
        self.set_status(S_ACKNOWLEDGE | S_DRIVER);
        let offered = self.device_features();
        self.set_driver_features(offered & accept);
        self.set_status(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
        Ok(self.status() & S_FEATURES_OK != 0)
    }

    /// Configures queue `q` on `ring` and enables it; false if the device
    /// did not take it (its max size is smaller, or the enable did not
    /// stick).
    pub fn setup_queue(&self, q: u16, ring: &Ring) -> bool {
        self.select(q);
        let max = self.queue_size();
        if max < ring.size {
            return false;
        }
        self.set_queue_size(ring.size);
        self.set_queue_addrs(ring.desc, ring.avail, ring.used);
        self.enable_queue();
        self.queue_enabled()
    }

    /// The configuration-change MSI-X vector (what the device took).
    pub fn set_config_vector(&self, v: u16) -> u16 {
        self.w16(CONFIG_MSIX_VECTOR, v);
        self.r16(CONFIG_MSIX_VECTOR)
    }

    /// Queue `q`'s MSI-X vector (what the device took).
    pub fn set_queue_vector(&self, q: u16, v: u16) -> u16 {
        self.select(q);
        self.w16(QUEUE_MSIX_VECTOR, v);
        self.r16(QUEUE_MSIX_VECTOR)
    }

    /// The MSI-X capability's offset and its table's address, mapped.
    pub fn msix(&self) -> Result<Msix, Msg> {
        let f = self.bdf;
        let cap = match find_capability(&PortIo, f, CAP_ID_MSIX) {
            Ok(Some(cap)) => cap,
            Ok(None) => return Err(msg!("{f}: no MSI-X capability")),
            Err(e) => return Err(msg!("{f}: capability list: {e}")),
        };
        let table = PortIo.read32(f, cap + 4);
        let entries = (PortIo.read16(f, cap + 2) & 0x7FF) + 1;
        let base = bar_address(f, (table & 7) as u8)
            .ok_or_else(|| msg!("{f}: MSI-X table BAR {} not assigned", table & 7))?;
        let addr = base + u64::from(table & !7);
        let len = 16 * u64::from(entries);
        if addr < paging::mapped_ram_end() || !paging::map_phys_range(addr, len) {
            return Err(msg!("{f}: MSI-X table at {addr:#x} cannot be mapped"));
        }
        Ok(Msix {
            bdf: f,
            cap,
            table: addr,
            entries,
        })
    }

    /// Sets DRIVER_OK on top of the current status.
    pub fn driver_ok(&self) {
        self.set_status(self.status() | S_DRIVER_OK);
    }
}

/// A function's MSI-X capability and table.
pub struct Msix {
    bdf: Bdf,
    cap: u16,
    table: u64,
    pub entries: u16,
}

impl Msix {
    /// Writes table entry `i` (address, data), unmasked.
    pub fn set_entry(&self, i: u16, address: u64, data: u32) {
        assert!(i < self.entries, "MSI-X entry {i} of {}", self.entries);
        let at = self.table + 16 * u64::from(i);
        for (off, v) in [
            (0, address as u32),
            (4, (address >> 32) as u32),
            (8, data),
            (12, 0),
        ] {
            // SAFETY: inside the table `Transport::msix` mapped (uncached,
            // outside RAM); an entry only says where the device's messages go.
            unsafe { cpu::mmio_write32(at + off, v) };
        }
    }

    /// MSI-X on or off (Message Control bit 15; the function mask clear).
    pub fn enable(&self, on: bool) {
        let ctl = PortIo.read16(self.bdf, self.cap + 2) & !(3 << 14);
        PortIo.write16(self.bdf, self.cap + 2, ctl | if on { 1 << 15 } else { 0 });
    }
}

// ---------------------------------------------------------------- DMA memory

/// Bytes of one [`Dma`] area.
pub const AREA_SIZE: usize = 0x10000;

#[repr(C, align(4096))]
pub struct Area([u8; AREA_SIZE]);

impl Area {
    pub const fn new() -> Self {
        Area([0; AREA_SIZE])
    }
}

/// A static area of guest RAM the device reads and writes: every access
/// is volatile and bounds-checked (a test builds broken rings in it, never
/// broken Rust).
#[derive(Clone, Copy)]
pub struct Dma {
    base: u64,
}

impl Dma {
    /// The area of `area`. Each area must have one user at a time (the
    /// tests run one after the other and reset their devices).
    pub fn of(area: &'static Global<Area>) -> Self {
        Dma {
            base: area.get() as u64,
        }
    }

    /// The guest-physical (== virtual) address of byte `off`.
    pub fn addr(&self, off: u64) -> u64 {
        assert!(
            off <= AREA_SIZE as u64,
            "DMA offset {off:#x} outside the area"
        );
        self.base + off
    }

    fn ptr(&self, off: u64, len: u64) -> *mut u8 {
        assert!(
            off.checked_add(len).is_some_and(|e| e <= AREA_SIZE as u64),
            "DMA access {off:#x}+{len} outside the area"
        );
        (self.base + off) as *mut u8
    }

    pub fn w8(&self, off: u64, v: u8) {
        // SAFETY: inside the static area (checked); no Rust reference to it
        // exists (only these volatile accesses), the device may write it at
        // any time, which volatile tolerates.
        unsafe { self.ptr(off, 1).write_volatile(v) }
    }

    pub fn w16(&self, off: u64, v: u16) {
        // SAFETY: as in w8; the area is page-aligned and callers use aligned
        // offsets (unaligned would still be fine on x86: write_unaligned).
        unsafe { self.ptr(off, 2).cast::<u16>().write_unaligned(v) }
    }

    pub fn w32(&self, off: u64, v: u32) {
        // SAFETY: as in w16.
        unsafe { self.ptr(off, 4).cast::<u32>().write_unaligned(v) }
    }

    pub fn w64(&self, off: u64, v: u64) {
        // SAFETY: as in w16.
        unsafe { self.ptr(off, 8).cast::<u64>().write_unaligned(v) }
    }

    pub fn r8(&self, off: u64) -> u8 {
        // SAFETY: as in w8.
        unsafe { self.ptr(off, 1).read_volatile() }
    }

    pub fn r16(&self, off: u64) -> u16 {
        // SAFETY: as in w16.
        unsafe { self.ptr(off, 2).cast::<u16>().read_unaligned() }
    }

    pub fn r32(&self, off: u64) -> u32 {
        // SAFETY: as in w16.
        unsafe { self.ptr(off, 4).cast::<u32>().read_unaligned() }
    }

    /// Fills `len` bytes at `off` with `b`.
    pub fn fill(&self, off: u64, len: u64, b: u8) {
        let p = self.ptr(off, len);
        for i in 0..len as usize {
            // SAFETY: inside the checked range.
            unsafe { p.add(i).write_volatile(b) };
        }
    }

    /// Copies `out.len()` bytes at `off` into `out`.
    pub fn read(&self, off: u64, out: &mut [u8]) {
        let p = self.ptr(off, out.len() as u64);
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: inside the checked range.
            *b = unsafe { p.add(i).read_volatile() };
        }
    }

    /// Copies `data` to `off`.
    pub fn write(&self, off: u64, data: &[u8]) {
        let p = self.ptr(off, data.len() as u64);
        for (i, &b) in data.iter().enumerate() {
            // SAFETY: inside the checked range.
            unsafe { p.add(i).write_volatile(b) };
        }
    }
}

// ---------------------------------------------------------------- split ring

/// Where a ring lives inside its [`Dma`] area: the descriptor table (a
/// page: room for 256 descriptors whatever the queue size), the available
/// ring and the used ring (a page each).
#[derive(Clone, Copy)]
pub struct Ring {
    pub dma: Dma,
    /// Offsets of the three parts inside the area.
    desc_off: u64,
    avail_off: u64,
    used_off: u64,
    /// Their guest-physical addresses (what the device is told).
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub size: u16,
}

/// Bytes of the three parts of a ring in its area.
pub const RING_BYTES: u64 = 0x3000;

impl Ring {
    /// A ring of `size` entries at offset `off` of `dma` (three pages),
    /// zeroed.
    pub fn new(dma: Dma, off: u64, size: u16) -> Self {
        let r = Ring {
            dma,
            desc_off: off,
            avail_off: off + 0x1000,
            used_off: off + 0x2000,
            desc: dma.addr(off),
            avail: dma.addr(off + 0x1000),
            used: dma.addr(off + 0x2000),
            size,
        };
        dma.fill(off, RING_BYTES, 0);
        r
    }

    /// Writes descriptor `i` (any index the table page holds, even past
    /// the queue size).
    pub fn set_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        write_desc(
            &self.dma,
            self.desc_off + 16 * u64::from(i),
            addr,
            len,
            flags,
            next,
        );
    }

    pub fn avail_idx(&self) -> u16 {
        self.dma.r16(self.avail_off + 2)
    }

    pub fn set_avail_idx(&self, v: u16) {
        self.dma.w16(self.avail_off + 2, v);
    }

    /// Puts `head` in the next available slot and publishes it.
    pub fn push_avail(&self, head: u16) {
        let idx = self.avail_idx();
        let slot = u64::from(idx % self.size.max(1));
        self.dma.w16(self.avail_off + 4 + 2 * slot, head);
        self.set_avail_idx(idx.wrapping_add(1));
    }

    pub fn used_idx(&self) -> u16 {
        self.dma.r16(self.used_off + 2)
    }

    /// Used element `i` (modulo the size): (head, length).
    pub fn used_elem(&self, i: u16) -> (u32, u32) {
        let at = self.used_off + 4 + 8 * u64::from(i % self.size.max(1));
        (self.dma.r32(at), self.dma.r32(at + 4))
    }
}

/// Writes one descriptor at `off` of `dma` (a table entry or an indirect
/// table's entry).
pub fn write_desc(dma: &Dma, off: u64, addr: u64, len: u32, flags: u16, next: u16) {
    dma.w64(off, addr);
    dma.w32(off + 8, len);
    dma.w16(off + 12, flags);
    dma.w16(off + 14, next);
}
