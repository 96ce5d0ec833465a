//! The `pci-*` tests (command-line word `pci`): the virtual PCI segment
//! Quercus gives a VM. Bus 0 holds the host bridge (00:00.0, 8086:29C0) and
//! the Quercus PCI test device (00:03.0, 5143:0001), reachable through
//! ports 0xCF8/0xCFC and through the ECAM window the MCFG names. The device
//! has a register BAR (BAR0: MAGIC, SCRATCH, RAISE, INTX, RAISED), an MSI-X
//! BAR (BAR1: table and PBA), an I/O BAR (BAR2: SCRATCH and MAGIC), MSI and
//! MSI-X capabilities and INTA# on GSI 19.
//!
//! Natively (no test device) the enumeration tests check only what any PC
//! has (a host bridge at 00:00.0, ECAM agreeing with 0xCF8); the device
//! tests print `SKIP native`.

use core::fmt;
use core::sync::atomic::Ordering;

use super::Outcome::{Pass, Skip};
use super::{require_quercus, tsc_bound_ms, wait_with_interrupts, TestResult};
use crate::acpi::{self, EcamWindow, Table};
use crate::msg::Msg;
use crate::pci::{
    self, Bdf, ConfigSpace, Ecam, PortIo, BAR0, CAP_ID_MSI, CAP_ID_MSIX, CMD_BUS_MASTER,
    CMD_INTX_DISABLE, CMD_IO, CMD_MEMORY, COMMAND, HEADER_TYPE, INTERRUPT_LINE, INTERRUPT_PIN,
    REVISION, STATUS, STATUS_CAP_LIST, STATUS_INTERRUPT, VENDOR_ID,
};
use crate::trap::{self, PCI_HITS, PCI_LEVEL_VECTOR, PCI_VECTOR_BASE, PCI_VECTOR_COUNT};
use crate::{cpu, ioapic, lapic, msg, out, paging, Env};

const HOST_BRIDGE: Bdf = Bdf::new(0, 0, 0);
const TEST_DEVICE: Bdf = Bdf::new(0, 3, 0);
/// Vendor and device ID as the dword at offset 0 reads them.
const HOST_BRIDGE_IDS: u32 = 0x29C0_8086;
const TEST_DEVICE_IDS: u32 = 0x0001_5143;
const HOST_BRIDGE_CLASS: u32 = 0x06_00_00;
const TEST_DEVICE_CLASS: u32 = 0xFF_00_00;
const TEST_DEVICE_REVISION: u8 = 1;
/// INTx routing: slot s, pin p (0 = INTA) -> GSI 16 + (s + p) % 4.
pub(super) const fn intx_gsi(slot: u8, pin: u8) -> u8 {
    16 + (slot + pin) % 4
}

/// BAR0 registers (dword accesses only).
const REG_MAGIC: u64 = 0x00;
const REG_SCRATCH: u64 = 0x04;
const REG_RAISE: u64 = 0x08;
const REG_INTX: u64 = 0x0C;
const REG_RAISED: u64 = 0x10;
/// Reads NOT SCRATCH, answered 200 us later by the hypervisor (a device that
/// completes its reads asynchronously): the reading vCPU waits for it.
const REG_SLOW: u64 = 0x14;
/// How late the SLOW register answers, in microseconds.
const SLOW_US: u64 = 200;
const MAGIC: u32 = 0x5154_4456;
/// BAR2 ports.
const IO_SCRATCH: u16 = 0;
const IO_MAGIC: u16 = 4;

/// The addresses the firmware assigns (BAR0..BAR5) and what each reads
/// after all ones were written (sizing).
const FIRMWARE_BARS: [u32; 6] = [0xC000_0000, 0xC000_1000, 0x0000_C001, 0, 0, 0];
const BAR_SIZE_MASKS: [u32; 6] = [0xFFFF_F000, 0xFFFF_F000, 0xFFFF_FFF1, 0, 0, 0];
/// Where `pci-bar-move` moves BAR0 and BAR2.
const MOVED_BAR0: u64 = 0xC010_0000;
const MOVED_BAR2: u16 = 0xD000;

/// MSI capability (64-bit address, per-vector masking) registers.
const MSI_CONTROL: u16 = 0x02;
const MSI_ADDRESS_LO: u16 = 0x04;
const MSI_ADDRESS_HI: u16 = 0x08;
const MSI_DATA: u16 = 0x0C;
const MSI_MASK: u16 = 0x10;
const MSI_PENDING: u16 = 0x14;
const MSI_ENABLE: u16 = 1 << 0;
const MSI_64BIT: u16 = 1 << 7;
const MSI_PER_VECTOR_MASK: u16 = 1 << 8;
/// Multiple Message Enable (bits 6:4), log2 of the vectors enabled.
const MSI_MME_SHIFT: u16 = 4;
const MSI_MME_MASK: u16 = 7 << MSI_MME_SHIFT;

/// MSI-X capability registers.
const MSIX_CONTROL: u16 = 0x02;
const MSIX_TABLE: u16 = 0x04;
const MSIX_PBA: u16 = 0x08;
const MSIX_ENABLE: u16 = 1 << 15;
const MSIX_FUNCTION_MASK: u16 = 1 << 14;
const MSIX_ENTRIES: u16 = 4;
const MSIX_BIR: u32 = 1;
const MSIX_PBA_OFFSET: u32 = 0x800;
const MSIX_ENTRY_MASKED: u32 = 1;

/// Vector slots (`PCI_VECTOR_BASE + slot`, counted in `PCI_HITS[slot]`):
/// MSI messages 0 and 1 (data must be 2-aligned for 2 messages), MSI-X
/// entries 1 and 0, and INTx (level, no EOI by the handler).
const SLOT_MSI: usize = 0;
const SLOT_MSIX_ENTRY1: usize = 2;
const SLOT_MSIX_ENTRY0: usize = 3;
pub(super) const SLOT_INTX: usize = (PCI_LEVEL_VECTOR - PCI_VECTOR_BASE) as usize;

/// How long an interrupt may take to arrive, and how long the tests wait
/// for one that must not come (or for a duplicate).
const ARRIVE_MS: u64 = 1000;
const QUIET_MS: u64 = 100;

// ---------------------------------------------------------------- enumeration

/// A list of functions, for messages.
struct BdfList<'a>(&'a [Bdf]);

impl fmt::Display for BdfList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            write!(f, "{}{b}", if i == 0 { "" } else { " " })?;
        }
        Ok(())
    }
}

/// True under Quercus (everything is checked); false natively (only what
/// every PC has); an error under another hypervisor.
fn strict(env: &Env) -> Result<bool, Msg> {
    Ok(require_quercus(env)?.is_none())
}

/// Checks a scan of bus 0 made through `cfg` (`via` names it).
fn check_bus0(
    strict: bool,
    cfg: &impl ConfigSpace,
    found: &pci::Functions,
    via: &str,
) -> Result<(), Msg> {
    ensure!(
        found.contains(HOST_BRIDGE),
        "{via}: nothing at 00:00.0 (found: {})",
        BdfList(found.as_slice())
    );
    let class = pci::class_code(cfg, HOST_BRIDGE);
    ensure!(
        class >> 8 == HOST_BRIDGE_CLASS >> 8,
        "{via}: 00:00.0 has class {class:06x}, not a host bridge (06/00)"
    );
    if !strict {
        return Ok(());
    }
    let list = found.as_slice();
    ensure!(
        list == [HOST_BRIDGE, TEST_DEVICE],
        "{via}: bus 0 has {}, expected 00:00.0 00:03.0",
        BdfList(list)
    );
    let ids = cfg.read32(HOST_BRIDGE, VENDOR_ID);
    ensure!(
        ids == HOST_BRIDGE_IDS && class == HOST_BRIDGE_CLASS,
        "{via}: 00:00.0 is {:04x}:{:04x} class {class:06x}, expected 8086:29c0 class 060000",
        ids & 0xFFFF,
        ids >> 16
    );
    let header = cfg.read8(HOST_BRIDGE, HEADER_TYPE);
    ensure!(
        header == 0,
        "{via}: 00:00.0 header type {header:#04x}, expected 0 (single function)"
    );

    let d = TEST_DEVICE;
    let ids = cfg.read32(d, VENDOR_ID);
    let class = pci::class_code(cfg, d);
    let revision = cfg.read8(d, REVISION);
    ensure!(
        ids == TEST_DEVICE_IDS && class == TEST_DEVICE_CLASS && revision == TEST_DEVICE_REVISION,
        "{via}: {d} is {:04x}:{:04x} rev {revision} class {class:06x}, expected 5143:0001 rev 1 class ff0000",
        ids & 0xFFFF,
        ids >> 16
    );
    let header = cfg.read8(d, HEADER_TYPE);
    ensure!(
        header == 0,
        "{via}: {d} header type {header:#04x}, expected 0 (type 0, single function)"
    );
    let status = cfg.read16(d, STATUS);
    ensure!(
        status & STATUS_CAP_LIST != 0,
        "{via}: {d} Status {status:#06x}: capability list bit (4) clear"
    );
    let command = cfg.read16(d, COMMAND);
    ensure!(
        command == CMD_IO | CMD_MEMORY,
        "{via}: {d} Command {command:#06x}, expected 0x0003 (I/O and memory decode)"
    );
    let pin = cfg.read8(d, INTERRUPT_PIN);
    let line = cfg.read8(d, INTERRUPT_LINE);
    let gsi = intx_gsi(d.dev, 0);
    ensure!(
        pin == 1 && line == gsi,
        "{via}: {d} Interrupt Pin {pin} Line {line}, expected pin 1 (INTA) line {gsi}"
    );
    // Every other function of bus 0 is absent, whatever the scan skipped.
    for dev in 0..32 {
        for func in 0..8 {
            let f = Bdf::new(0, dev, func);
            let vendor = cfg.read16(f, VENDOR_ID);
            ensure!(
                found.contains(f) || vendor == 0xFFFF,
                "{via}: {f} has vendor {vendor:#06x}; absent functions must read 0xffff"
            );
        }
    }
    Ok(())
}

/// `pci-cf8-enum`: bus 0 through configuration mechanism #1.
pub fn cf8_enum(env: &Env) -> TestResult {
    let strict = strict(env)?;
    let cfg = PortIo;
    let found = pci::scan_bus(&cfg, 0);
    check_bus0(strict, &cfg, &found, "0xCF8")?;
    Ok(Pass)
}

fn acpi_err(e: acpi::AcpiError) -> Msg {
    msg!("ACPI: {e}")
}

/// RSDP -> XSDT (or RSDT) -> MCFG, checksums checked: the ECAM window of
/// segment 0 that covers bus 0. None natively when the firmware has no
/// RSDP or no MCFG (Bochs's BIOS).
fn find_ecam_window(strict: bool) -> Result<Option<EcamWindow>, Msg> {
    let rsdp = match acpi::find_rsdp() {
        Ok(r) => r,
        Err(acpi::AcpiError::NoRsdp) if !strict => return Ok(None),
        Err(e) => return Err(acpi_err(e)),
    };
    if strict {
        ensure!(
            rsdp.revision >= 2 && rsdp.xsdt.is_some() && rsdp.rsdt != 0,
            "RSDP at {:#x}: revision {}, XSDT {:#x}, RSDT {:#x}: expected revision 2 with both",
            rsdp.addr,
            rsdp.revision,
            rsdp.xsdt.unwrap_or(0),
            rsdp.rsdt
        );
    }
    let in_rsdt = if rsdp.rsdt != 0 {
        let rsdt = Table::load(u64::from(rsdp.rsdt), b"RSDT").map_err(acpi_err)?;
        rsdt.find_entry(4, b"MCFG").map_err(acpi_err)?
    } else {
        None
    };
    let mcfg = match rsdp.xsdt {
        Some(addr) => {
            let xsdt = Table::load(addr, b"XSDT").map_err(acpi_err)?;
            let in_xsdt = xsdt.find_entry(8, b"MCFG").map_err(acpi_err)?;
            ensure!(
                !strict || in_xsdt == in_rsdt,
                "MCFG at {:#x} in the XSDT but at {:#x} in the RSDT (0: absent)",
                in_xsdt.unwrap_or(0),
                in_rsdt.unwrap_or(0)
            );
            in_xsdt
        }
        None => in_rsdt,
    };
    let Some(mcfg) = mcfg else {
        ensure!(!strict, "no MCFG in the XSDT");
        return Ok(None);
    };
    let mcfg = Table::load(mcfg, b"MCFG").map_err(acpi_err)?;
    let (windows, count) = acpi::mcfg_windows(&mcfg).map_err(acpi_err)?;
    let Some(w) = windows[..count.min(windows.len())]
        .iter()
        .find(|w| w.segment == 0 && w.start_bus == 0)
    else {
        fail!(
            "MCFG at {:#x}: none of its {count} entries is segment 0 from bus 0",
            mcfg.addr()
        );
    };
    ensure!(
        w.end_bus >= w.start_bus,
        "MCFG: ECAM window at {:#x} ends at bus {} before it starts",
        w.base,
        w.end_bus
    );
    out!(
        "test-guest: MCFG at {:#x}: ECAM {:#x} segment 0 buses {}..={}",
        mcfg.addr(),
        w.base,
        w.start_bus,
        w.end_bus
    );
    Ok(Some(*w))
}

/// `pci-ecam-enum`: the same bus through the MCFG's ECAM window.
pub fn ecam_enum(env: &Env) -> TestResult {
    let strict = strict(env)?;
    let Some(window) = find_ecam_window(strict)? else {
        return Ok(Skip("native firmware has no MCFG"));
    };
    let Some(ecam) = Ecam::map(window.base, 0) else {
        fail!("cannot map the ECAM window at {:#x}", window.base);
    };
    let cf8 = PortIo;
    let found = pci::scan_bus(&ecam, 0);
    let by_cf8 = pci::scan_bus(&cf8, 0);
    ensure!(
        found.as_slice() == by_cf8.as_slice(),
        "ECAM finds {}; 0xCF8 finds {}",
        BdfList(found.as_slice()),
        BdfList(by_cf8.as_slice())
    );
    check_bus0(strict, &ecam, &found, "ECAM")?;

    for &f in found.as_slice() {
        for off in (0..0x40u16).step_by(4) {
            let (e, c) = (ecam.read32(f, off), cf8.read32(f, off));
            ensure!(
                e == c,
                "{f} offset {off:#04x}: ECAM reads {e:#010x}, 0xCF8 {c:#010x}"
            );
            for i in 0..4 {
                let b = ecam.read8(f, off + i);
                ensure!(
                    b == (e >> (8 * i)) as u8,
                    "{f} offset {:#04x}: ECAM byte read {b:#04x}, dword {e:#010x}",
                    off + i
                );
            }
            for i in [0, 2] {
                let w = ecam.read16(f, off + i);
                ensure!(
                    w == (e >> (8 * i)) as u16,
                    "{f} offset {:#04x}: ECAM word read {w:#06x}, dword {e:#010x}",
                    off + i
                );
            }
        }
    }

    // Interrupt Line is read/write on every function: a write through one
    // mechanism shows through the other.
    let f = if strict { TEST_DEVICE } else { HOST_BRIDGE };
    let before = cf8.read32(f, INTERRUPT_LINE);
    ecam.write8(f, INTERRUPT_LINE, 0x5A);
    let via_cf8 = cf8.read8(f, INTERRUPT_LINE);
    cf8.write8(f, INTERRUPT_LINE, 0xA5);
    let via_ecam = ecam.read8(f, INTERRUPT_LINE);
    let rest = ecam.read32(f, INTERRUPT_LINE) >> 8;
    cf8.write8(f, INTERRUPT_LINE, before as u8);
    let after = ecam.read32(f, INTERRUPT_LINE);
    ensure!(
        via_cf8 == 0x5A,
        "{f} Interrupt Line: wrote 0x5a through ECAM, 0xCF8 reads {via_cf8:#04x}"
    );
    ensure!(
        via_ecam == 0xA5,
        "{f} Interrupt Line: wrote 0xa5 through 0xCF8, ECAM reads {via_ecam:#04x}"
    );
    ensure!(
        rest == before >> 8,
        "{f} dword 0x3c: a byte write to 0x3c changed bytes 1..3 from {:#08x} to {rest:#08x}",
        before >> 8
    );
    ensure!(
        after == before,
        "{f} dword 0x3c is {after:#010x} after restoring {before:#010x}"
    );

    if strict {
        for off in [0x100u16, 0x104, 0x800, 0xFFC] {
            let v = ecam.read32(TEST_DEVICE, off);
            ensure!(
                v == 0,
                "{TEST_DEVICE} ECAM offset {off:#x} reads {v:#010x}, expected 0"
            );
        }
        let absent = Bdf::new(0, TEST_DEVICE.dev, 1);
        let v = ecam.read32(absent, VENDOR_ID);
        ensure!(
            v == 0xFFFF_FFFF,
            "absent {absent} reads {v:#010x} through ECAM, expected 0xffffffff"
        );
    }
    Ok(Pass)
}

// ---------------------------------------------------------------- the test device

/// The test device at 00:03.0, configured through 0xCF8/0xCFC.
pub(super) struct Device {
    cfg: PortIo,
    bdf: Bdf,
}

impl Device {
    fn find() -> Result<Self, Msg> {
        Self::at(TEST_DEVICE, TEST_DEVICE_IDS, "Quercus PCI test device")
    }

    /// The function at `bdf`, which must have vendor and device `ids` (as the dword at offset
    /// 0 reads them).
    pub(super) fn at(bdf: Bdf, ids: u32, name: &str) -> Result<Self, Msg> {
        let cfg = PortIo;
        let found = cfg.read32(bdf, VENDOR_ID);
        ensure!(
            found == ids,
            "no {name} at {bdf} (vendor:device {:04x}:{:04x})",
            found & 0xFFFF,
            found >> 16
        );
        Ok(Self { cfg, bdf })
    }

    pub(super) fn r8(&self, off: u16) -> u8 {
        self.cfg.read8(self.bdf, off)
    }

    pub(super) fn r16(&self, off: u16) -> u16 {
        self.cfg.read16(self.bdf, off)
    }

    pub(super) fn r32(&self, off: u16) -> u32 {
        self.cfg.read32(self.bdf, off)
    }

    pub(super) fn w16(&self, off: u16, v: u16) {
        self.cfg.write16(self.bdf, off, v);
    }

    pub(super) fn w32(&self, off: u16, v: u32) {
        self.cfg.write32(self.bdf, off, v);
    }

    pub(super) fn command(&self) -> u16 {
        self.r16(COMMAND)
    }

    pub(super) fn set_command(&self, v: u16) {
        self.w16(COMMAND, v);
    }

    pub(super) fn status(&self) -> u16 {
        self.r16(STATUS)
    }

    pub(super) fn bar(&self, i: u16) -> u32 {
        self.r32(BAR0 + 4 * i)
    }

    /// The address of memory BAR `i`.
    pub(super) fn mem_bar(&self, i: u16) -> Result<u64, Msg> {
        let bar = self.bar(i);
        ensure!(
            bar & 1 == 0 && bar & 0x6 == 0,
            "BAR{i} {bar:#010x} is not a 32-bit memory BAR"
        );
        Ok(u64::from(bar & !0xF))
    }

    /// The first port of I/O BAR `i`.
    pub(super) fn io_bar(&self, i: u16) -> Result<u16, Msg> {
        let bar = self.bar(i);
        ensure!(
            bar & 1 == 1 && bar <= 0xFFFF,
            "BAR{i} {bar:#010x} is not an I/O BAR below 64 KiB"
        );
        Ok((bar & !0x3) as u16)
    }

    pub(super) fn capability(&self, id: u8) -> Result<Option<u16>, Msg> {
        pci::find_capability(&self.cfg, self.bdf, id)
            .map_err(|e| msg!("{} capability list: {e}", self.bdf))
    }

    pub(super) fn require_capability(&self, id: u8, name: &str) -> Result<u16, Msg> {
        match self.capability(id)? {
            Some(at) => Ok(at),
            None => fail!("{} has no {name} capability (ID {id:#04x})", self.bdf),
        }
    }

    /// Turns MSI and MSI-X off (if the device has them).
    pub(super) fn msi_off(&self) -> Result<(), Msg> {
        for (id, enable) in [(CAP_ID_MSI, MSI_ENABLE), (CAP_ID_MSIX, MSIX_ENABLE)] {
            if let Some(at) = self.capability(id)? {
                let control = self.r16(at + 2);
                self.w16(at + 2, control & !enable);
            }
        }
        Ok(())
    }
}

/// A 2 MiB uncached window onto device memory (outside RAM); lives until
/// the test ends (`run_one` removes every extra mapping).
pub(super) struct Mmio {
    page: u64,
}

impl Mmio {
    pub(super) fn map(addr: u64) -> Result<Self, Msg> {
        let page = addr - addr % paging::PAGE_2M;
        ensure!(
            paging::map_extra_2m(page),
            "cannot map {addr:#x} (inside RAM or above 4 GiB)"
        );
        Ok(Self { page })
    }

    pub(super) fn check(&self, addr: u64, width: u64) {
        assert!(
            addr >= self.page
                && addr + width <= self.page + paging::PAGE_2M
                && addr.is_multiple_of(width),
            "MMIO access at {addr:#x} outside the window {:#x} or misaligned",
            self.page
        );
    }

    pub(super) fn read32(&self, addr: u64) -> u32 {
        self.check(addr, 4);
        // SAFETY: inside the uncached window `map` made onto a non-RAM page
        // (no Rust object there); aligned. Device registers read here have
        // no read side effects.
        unsafe { cpu::mmio_read32(addr) }
    }

    pub(super) fn read16(&self, addr: u64) -> u16 {
        self.check(addr, 2);
        // SAFETY: as in read32.
        unsafe { cpu::mmio_read16(addr) }
    }

    pub(super) fn write32(&self, addr: u64, v: u32) {
        self.check(addr, 4);
        // SAFETY: as in read32; the write is one the test means.
        unsafe { cpu::mmio_write32(addr, v) };
    }
}

fn io_read32(port: u16) -> u32 {
    // SAFETY: a port of the test device's I/O BAR (or where it was before
    // a move, now unclaimed): reads have no side effects.
    unsafe { cpu::inl(port) }
}

fn io_write32(port: u16, v: u32) {
    // SAFETY: the SCRATCH port of the test device's I/O BAR.
    unsafe { cpu::outl(port, v) };
}

/// SCRATCH written through MMIO reads back through the I/O BAR and the
/// other way round.
fn scratch_both_ways(mmio: &Mmio, base: u64, port: u16, a: u32, b: u32) -> Result<(), Msg> {
    mmio.write32(base + REG_SCRATCH, a);
    let via_io = io_read32(port + IO_SCRATCH);
    io_write32(port + IO_SCRATCH, b);
    let via_mmio = mmio.read32(base + REG_SCRATCH);
    ensure!(
        via_io == a,
        "SCRATCH: wrote {a:#010x} at {:#x}, port {port:#x} reads {via_io:#010x}",
        base + REG_SCRATCH
    );
    ensure!(
        via_mmio == b,
        "SCRATCH: wrote {b:#010x} to port {port:#x}, {:#x} reads {via_mmio:#010x}",
        base + REG_SCRATCH
    );
    Ok(())
}

/// `pci-bar-size`: every BAR sized with decode off, then restored.
pub fn bar_size(env: &Env) -> TestResult {
    if let Some(skip) = require_quercus(env)? {
        return Ok(skip);
    }
    let dev = Device::find()?;
    let command = dev.command();
    dev.set_command(command & !(CMD_IO | CMD_MEMORY));
    let mut before = [0u32; 6];
    let mut sized = [0u32; 6];
    let mut after = [0u32; 6];
    for (i, ((b, s), a)) in before
        .iter_mut()
        .zip(sized.iter_mut())
        .zip(after.iter_mut())
        .enumerate()
    {
        let off = BAR0 + 4 * i as u16;
        *b = dev.r32(off);
        dev.w32(off, 0xFFFF_FFFF);
        *s = dev.r32(off);
        dev.w32(off, *b);
        *a = dev.r32(off);
    }
    dev.set_command(command);
    let restored = dev.command();
    ensure!(
        after == before,
        "BARs read {after:#x?} after sizing, {before:#x?} before"
    );
    ensure!(
        restored == command,
        "Command {restored:#06x} after restoring {command:#06x}"
    );
    for i in 0..6 {
        ensure!(
            before[i] == FIRMWARE_BARS[i],
            "BAR{i} is {:#010x}, expected {:#010x} (firmware-assigned)",
            before[i],
            FIRMWARE_BARS[i]
        );
        ensure!(
            sized[i] == BAR_SIZE_MASKS[i],
            "BAR{i} reads {:#010x} after writing all ones, expected {:#010x}",
            sized[i],
            BAR_SIZE_MASKS[i]
        );
    }
    Ok(Pass)
}

/// `pci-bar-move`: decode enables, and BAR0/BAR2 moved and restored.
pub fn bar_move(env: &Env) -> TestResult {
    if let Some(skip) = require_quercus(env)? {
        return Ok(skip);
    }
    let dev = Device::find()?;
    let command = dev.command();
    let (bar0, bar2) = (dev.bar(0), dev.bar(2));
    let r = bar_move_steps(&dev, command | CMD_IO | CMD_MEMORY);
    // Put both BARs back the way an OS would: decode off while writing.
    dev.set_command(command & !(CMD_IO | CMD_MEMORY));
    dev.w32(BAR0, bar0);
    dev.w32(BAR0 + 8, bar2);
    dev.set_command(command);
    r?;
    let (b0, b2) = (dev.bar(0), dev.bar(2));
    ensure!(
        b0 == bar0 && b2 == bar2,
        "BAR0/BAR2 read {b0:#x}/{b2:#x} after restoring {bar0:#x}/{bar2:#x}"
    );
    let base = dev.mem_bar(0)?;
    let magic = Mmio::map(base)?.read32(base + REG_MAGIC);
    ensure!(
        magic == MAGIC,
        "MAGIC at the restored BAR0 {base:#x} reads {magic:#010x}"
    );
    Ok(Pass)
}

fn bar_move_steps(dev: &Device, on: u16) -> Result<(), Msg> {
    let old = dev.mem_bar(0)?;
    let old_port = dev.io_bar(2)?;
    let new = MOVED_BAR0;
    let m_old = Mmio::map(old)?;
    let m_new = Mmio::map(new)?;
    dev.set_command(on);

    let magic = m_old.read32(old + REG_MAGIC);
    ensure!(
        magic == MAGIC,
        "MAGIC at BAR0 {old:#x} reads {magic:#010x}, expected {MAGIC:#010x}"
    );
    let word = m_old.read16(old + REG_MAGIC);
    ensure!(
        word == 0xFFFF,
        "a 16-bit read of MAGIC returned {word:#06x}, expected 0xffff (dword accesses only)"
    );
    let magic = io_read32(old_port + IO_MAGIC);
    ensure!(
        magic == MAGIC,
        "MAGIC at port {:#x} (BAR2) reads {magic:#010x}",
        old_port + IO_MAGIC
    );
    scratch_both_ways(&m_old, old, old_port, 0x1234_5678, 0x9ABC_DEF0)?;

    dev.set_command(on & !CMD_MEMORY);
    let mem_off = m_old.read32(old + REG_MAGIC);
    let io_only = io_read32(old_port + IO_MAGIC);
    dev.set_command(on);
    let mem_on = m_old.read32(old + REG_MAGIC);
    ensure!(
        mem_off == 0xFFFF_FFFF,
        "with memory decode off, MAGIC at {old:#x} reads {mem_off:#010x}, expected 0xffffffff"
    );
    ensure!(
        io_only == MAGIC,
        "with only memory decode off, the I/O MAGIC reads {io_only:#010x}"
    );
    ensure!(
        mem_on == MAGIC,
        "memory decode back on: MAGIC reads {mem_on:#010x}"
    );

    dev.set_command(on & !CMD_IO);
    let io_off = io_read32(old_port + IO_MAGIC);
    let mem_only = m_old.read32(old + REG_MAGIC);
    dev.set_command(on);
    ensure!(
        io_off == 0xFFFF_FFFF,
        "with I/O decode off, port {:#x} reads {io_off:#010x}, expected 0xffffffff",
        old_port + IO_MAGIC
    );
    ensure!(
        mem_only == MAGIC,
        "with only I/O decode off, MAGIC at {old:#x} reads {mem_only:#010x}"
    );

    dev.set_command(on & !CMD_MEMORY);
    dev.w32(BAR0, new as u32);
    let bar = dev.bar(0);
    dev.set_command(on);
    ensure!(
        u64::from(bar) == new,
        "BAR0 reads {bar:#010x} after writing {new:#x}"
    );
    let at_new = m_new.read32(new + REG_MAGIC);
    let at_old = m_old.read32(old + REG_MAGIC);
    ensure!(
        at_new == MAGIC,
        "BAR0 moved to {new:#x}: MAGIC there reads {at_new:#010x}"
    );
    ensure!(
        at_old == 0xFFFF_FFFF,
        "BAR0 moved to {new:#x}: the old {old:#x} still reads {at_old:#010x}"
    );
    scratch_both_ways(&m_new, new, old_port, 0x0BAD_F00D, 0x600D_CAFE)?;

    dev.set_command(on & !CMD_IO);
    dev.w32(BAR0 + 8, u32::from(MOVED_BAR2));
    let bar = dev.bar(2);
    dev.set_command(on);
    ensure!(
        bar == u32::from(MOVED_BAR2) | 1,
        "BAR2 reads {bar:#010x} after writing {MOVED_BAR2:#x}"
    );
    let at_new = io_read32(MOVED_BAR2 + IO_MAGIC);
    let at_old = io_read32(old_port + IO_MAGIC);
    ensure!(
        at_new == MAGIC,
        "BAR2 moved to {MOVED_BAR2:#x}: MAGIC at port {:#x} reads {at_new:#010x}",
        MOVED_BAR2 + IO_MAGIC
    );
    ensure!(
        at_old == 0xFFFF_FFFF,
        "BAR2 moved to {MOVED_BAR2:#x}: the old port {:#x} still reads {at_old:#010x}",
        old_port + IO_MAGIC
    );
    scratch_both_ways(&m_new, new, MOVED_BAR2, 0x5555_AAAA, 0xAAAA_5555)
}

// ---------------------------------------------------------------- interrupts

pub(super) fn hits() -> [u32; PCI_VECTOR_COUNT] {
    core::array::from_fn(|i| PCI_HITS[i].load(Ordering::SeqCst))
}

pub(super) fn reset_hits() {
    for h in &PCI_HITS {
        h.store(0, Ordering::SeqCst);
    }
}

/// The interrupt counts expected: `n[slot]` for the slots named.
pub(super) fn want(counts: &[(usize, u32)]) -> [u32; PCI_VECTOR_COUNT] {
    let mut w = [0; PCI_VECTOR_COUNT];
    for &(slot, n) in counts {
        w[slot] = n;
    }
    w
}

/// Waits with interrupts on until every vector has its count in `want`
/// (bounded), then a little longer for anything extra, and compares.
pub(super) fn expect_hits(env: &Env, what: &str, want: [u32; PCI_VECTOR_COUNT]) -> Result<(), Msg> {
    wait_with_interrupts(tsc_bound_ms(env, ARRIVE_MS), || {
        hits().iter().zip(want.iter()).all(|(h, w)| h >= w)
    });
    wait_with_interrupts(tsc_bound_ms(env, QUIET_MS), || false);
    let got = hits();
    ensure!(
        got == want,
        "{what}: interrupts on vectors {PCI_VECTOR_BASE:#x}.. were {got:?}, expected {want:?}"
    );
    Ok(())
}

/// Maps and enables the local APIC; returns this vCPU's APIC ID.
pub(super) fn lapic_on() -> Result<u8, Msg> {
    ensure!(lapic::map(), "cannot map the LAPIC at {:#x}", lapic::BASE);
    lapic::write(
        lapic::REG_SVR,
        lapic::SVR_ENABLE | trap::SPURIOUS_VECTOR as u32,
    );
    lapic::write(lapic::REG_TPR, 0);
    Ok((lapic::read(lapic::REG_ID) >> 24) as u8)
}

/// An MSI address for APIC ID `apic` (physical destination).
pub(super) fn msi_address(apic: u8) -> u32 {
    lapic::BASE as u32 | u32::from(apic) << 12
}

pub(super) fn vector(slot: usize) -> u32 {
    (PCI_VECTOR_BASE + slot as u64) as u32
}

pub(super) fn stray() -> u32 {
    trap::STRAY_INTERRUPTS.load(Ordering::SeqCst)
}

/// `pci-msi`: two MSI messages, per-vector masking and the pending bits.
pub fn msi(env: &Env) -> TestResult {
    if let Some(skip) = require_quercus(env)? {
        return Ok(skip);
    }
    let dev = Device::find()?;
    let cap = dev.require_capability(CAP_ID_MSI, "MSI")?;
    let apic = lapic_on()?;
    let base = dev.mem_bar(0)?;
    let mmio = Mmio::map(base)?;
    let command = dev.command();
    let strays = stray();
    dev.set_command(command | CMD_MEMORY | CMD_BUS_MASTER);
    let r = msi_steps(env, &dev, cap, apic, &mmio, base);
    let control = dev.r16(cap + MSI_CONTROL);
    dev.w16(cap + MSI_CONTROL, control & !(MSI_ENABLE | MSI_MME_MASK));
    dev.w32(cap + MSI_MASK, 0);
    dev.set_command(command);
    r?;
    let control = dev.r16(cap + MSI_CONTROL);
    ensure!(
        control & MSI_ENABLE == 0,
        "Message Control {control:#06x}: MSI still enabled after clearing bit 0"
    );
    let strays = stray() - strays;
    ensure!(strays == 0, "{strays} interrupt(s) on unexpected vectors");
    Ok(Pass)
}

fn msi_steps(
    env: &Env,
    dev: &Device,
    cap: u16,
    apic: u8,
    mmio: &Mmio,
    base: u64,
) -> Result<(), Msg> {
    let control = dev.r16(cap + MSI_CONTROL);
    let capable = (control >> 1) & 7;
    ensure!(
        control & MSI_64BIT != 0 && control & MSI_PER_VECTOR_MASK != 0 && capable == 1,
        "MSI Message Control {control:#06x}: expected 64-bit, per-vector masking, Multiple Message Capable 1 (2 vectors)"
    );
    ensure!(
        control & MSI_ENABLE == 0,
        "MSI Message Control {control:#06x}: enabled before the test"
    );
    if let Some(x) = dev.capability(CAP_ID_MSIX)? {
        let c = dev.r16(x + MSIX_CONTROL);
        ensure!(
            c & MSIX_ENABLE == 0,
            "MSI-X Message Control {c:#06x}: enabled before the test"
        );
    }
    let address = msi_address(apic);
    let data = vector(SLOT_MSI);
    dev.w32(cap + MSI_ADDRESS_LO, address);
    dev.w32(cap + MSI_ADDRESS_HI, 0);
    dev.w16(cap + MSI_DATA, data as u16);
    dev.w32(cap + MSI_MASK, 0);
    let (lo, hi, d) = (
        dev.r32(cap + MSI_ADDRESS_LO),
        dev.r32(cap + MSI_ADDRESS_HI),
        dev.r16(cap + MSI_DATA),
    );
    ensure!(
        lo == address && hi == 0 && u32::from(d) == data,
        "MSI address {hi:#x}:{lo:#010x} data {d:#06x} after writing {address:#010x} and {data:#x}"
    );
    // Two vectors (Multiple Message Enable 1): message n has data | n.
    dev.w16(
        cap + MSI_CONTROL,
        (control & !MSI_MME_MASK) | 1 << MSI_MME_SHIFT | MSI_ENABLE,
    );
    let on = dev.r16(cap + MSI_CONTROL);
    ensure!(
        on & MSI_ENABLE != 0 && (on & MSI_MME_MASK) >> MSI_MME_SHIFT == 1,
        "MSI Message Control {on:#06x} after enabling 2 vectors"
    );

    reset_hits();
    let raised = mmio.read32(base + REG_RAISED);
    mmio.write32(base + REG_RAISE, 0);
    expect_hits(env, "MSI, RAISE 0", want(&[(SLOT_MSI, 1)]))?;
    let counted = mmio.read32(base + REG_RAISED).wrapping_sub(raised);
    ensure!(
        counted == 1,
        "RAISED went up by {counted} for one MSI, expected 1"
    );
    mmio.write32(base + REG_RAISE, 1);
    expect_hits(
        env,
        "MSI, RAISE 1 (message 1: data | 1)",
        want(&[(SLOT_MSI, 1), (SLOT_MSI + 1, 1)]),
    )?;
    mmio.write32(base + REG_RAISE, 2);
    expect_hits(
        env,
        "MSI, RAISE 2 (2 messages enabled)",
        want(&[(SLOT_MSI, 1), (SLOT_MSI + 1, 1)]),
    )?;

    dev.w32(cap + MSI_MASK, 1);
    mmio.write32(base + REG_RAISE, 0);
    expect_hits(
        env,
        "MSI, RAISE 0 with vector 0 masked",
        want(&[(SLOT_MSI, 1), (SLOT_MSI + 1, 1)]),
    )?;
    let pending = dev.r32(cap + MSI_PENDING);
    ensure!(
        pending & 1 == 1,
        "MSI pending bits {pending:#x} after a masked RAISE 0: bit 0 clear"
    );
    dev.w32(cap + MSI_MASK, 0);
    expect_hits(
        env,
        "MSI, unmasking vector 0 with its message pending",
        want(&[(SLOT_MSI, 2), (SLOT_MSI + 1, 1)]),
    )?;
    let pending = dev.r32(cap + MSI_PENDING);
    ensure!(
        pending & 1 == 0,
        "MSI pending bits {pending:#x}: bit 0 still set after the message was sent"
    );
    Ok(())
}

/// The MSI-X table entry `n` and the PBA, in BAR1.
struct MsixTable<'a> {
    mmio: &'a Mmio,
    table: u64,
    pba: u64,
}

impl MsixTable<'_> {
    fn entry(&self, n: u64) -> u64 {
        self.table + 16 * n
    }

    fn program(&self, n: u64, address: u32, data: u32, control: u32) {
        let e = self.entry(n);
        self.mmio.write32(e, address);
        self.mmio.write32(e + 4, 0);
        self.mmio.write32(e + 8, data);
        self.mmio.write32(e + 12, control);
    }

    fn set_control(&self, n: u64, control: u32) {
        self.mmio.write32(self.entry(n) + 12, control);
    }

    fn pending(&self) -> u32 {
        self.mmio.read32(self.pba)
    }
}

/// `pci-msix`: MSI-X entries, entry mask, function mask and the PBA.
pub fn msix(env: &Env) -> TestResult {
    if let Some(skip) = require_quercus(env)? {
        return Ok(skip);
    }
    let dev = Device::find()?;
    let cap = dev.require_capability(CAP_ID_MSIX, "MSI-X")?;
    let control = dev.r16(cap + MSIX_CONTROL);
    let size = (control & 0x7FF) + 1;
    ensure!(
        size == MSIX_ENTRIES,
        "MSI-X table size {size} (Message Control {control:#06x}), expected {MSIX_ENTRIES}"
    );
    ensure!(
        control & MSIX_ENABLE == 0,
        "MSI-X Message Control {control:#06x}: enabled before the test"
    );
    let (table, pba) = (dev.r32(cap + MSIX_TABLE), dev.r32(cap + MSIX_PBA));
    ensure!(
        table == MSIX_BIR && pba == MSIX_BIR | MSIX_PBA_OFFSET,
        "MSI-X table {table:#x}, PBA {pba:#x}: expected BIR 1 offset 0 and BIR 1 offset 0x800"
    );
    if let Some(m) = dev.capability(CAP_ID_MSI)? {
        let c = dev.r16(m + MSI_CONTROL);
        ensure!(
            c & MSI_ENABLE == 0,
            "MSI Message Control {c:#06x}: enabled before the test"
        );
    }
    let apic = lapic_on()?;
    let base = dev.mem_bar(0)?;
    let bar1 = dev.mem_bar(1)?;
    let mmio = Mmio::map(base)?;
    let mmio1 = Mmio::map(bar1)?;
    let t = MsixTable {
        mmio: &mmio1,
        table: bar1 + u64::from(table & !7),
        pba: bar1 + u64::from(pba & !7),
    };
    let command = dev.command();
    let strays = stray();
    dev.set_command(command | CMD_MEMORY | CMD_BUS_MASTER);
    let r = msix_steps(env, &dev, cap, apic, &mmio, base, &t);
    let control = dev.r16(cap + MSIX_CONTROL);
    dev.w16(
        cap + MSIX_CONTROL,
        control & !(MSIX_ENABLE | MSIX_FUNCTION_MASK),
    );
    for n in 0..u64::from(MSIX_ENTRIES) {
        t.set_control(n, MSIX_ENTRY_MASKED);
    }
    dev.set_command(command);
    r?;
    let control = dev.r16(cap + MSIX_CONTROL);
    ensure!(
        control & MSIX_ENABLE == 0,
        "MSI-X Message Control {control:#06x}: still enabled after clearing bit 15"
    );
    let strays = stray() - strays;
    ensure!(strays == 0, "{strays} interrupt(s) on unexpected vectors");
    Ok(Pass)
}

fn msix_steps(
    env: &Env,
    dev: &Device,
    cap: u16,
    apic: u8,
    mmio: &Mmio,
    base: u64,
    t: &MsixTable<'_>,
) -> Result<(), Msg> {
    let address = msi_address(apic);
    let (v1, v0) = (vector(SLOT_MSIX_ENTRY1), vector(SLOT_MSIX_ENTRY0));
    dev.w16(cap + MSIX_CONTROL, MSIX_ENABLE | MSIX_FUNCTION_MASK);
    for n in 2..u64::from(MSIX_ENTRIES) {
        t.program(
            n,
            address,
            vector(SLOT_MSIX_ENTRY0 + n as usize),
            MSIX_ENTRY_MASKED,
        );
    }
    t.program(1, address, v1, 0);
    t.program(0, address, v0, 0);
    let e1 = t.entry(1);
    let (lo, hi, data, ctl) = (
        t.mmio.read32(e1),
        t.mmio.read32(e1 + 4),
        t.mmio.read32(e1 + 8),
        t.mmio.read32(e1 + 12),
    );
    ensure!(
        lo == address && hi == 0 && data == v1 && ctl & MSIX_ENTRY_MASKED == 0,
        "MSI-X entry 1 reads {hi:#x}:{lo:#010x} data {data:#x} control {ctl:#x} after programming {address:#010x} {v1:#x} unmasked"
    );
    reset_hits();
    dev.w16(cap + MSIX_CONTROL, MSIX_ENABLE);

    mmio.write32(base + REG_RAISE, 1);
    expect_hits(env, "MSI-X, RAISE 1", want(&[(SLOT_MSIX_ENTRY1, 1)]))?;
    mmio.write32(base + REG_RAISE, 0);
    expect_hits(
        env,
        "MSI-X, RAISE 0",
        want(&[(SLOT_MSIX_ENTRY1, 1), (SLOT_MSIX_ENTRY0, 1)]),
    )?;

    t.set_control(1, MSIX_ENTRY_MASKED);
    mmio.write32(base + REG_RAISE, 1);
    expect_hits(
        env,
        "MSI-X, RAISE 1 with entry 1 masked",
        want(&[(SLOT_MSIX_ENTRY1, 1), (SLOT_MSIX_ENTRY0, 1)]),
    )?;
    let pending = t.pending();
    ensure!(
        pending & 0b10 != 0,
        "PBA {pending:#x} after a RAISE 1 with entry 1 masked: bit 1 clear"
    );
    t.set_control(1, 0);
    expect_hits(
        env,
        "MSI-X, unmasking entry 1 with its message pending",
        want(&[(SLOT_MSIX_ENTRY1, 2), (SLOT_MSIX_ENTRY0, 1)]),
    )?;
    let pending = t.pending();
    ensure!(
        pending & 0b10 == 0,
        "PBA {pending:#x}: bit 1 still set after the message was sent"
    );

    dev.w16(cap + MSIX_CONTROL, MSIX_ENABLE | MSIX_FUNCTION_MASK);
    mmio.write32(base + REG_RAISE, 0);
    expect_hits(
        env,
        "MSI-X, RAISE 0 with the function masked",
        want(&[(SLOT_MSIX_ENTRY1, 2), (SLOT_MSIX_ENTRY0, 1)]),
    )?;
    let pending = t.pending();
    ensure!(
        pending & 0b01 != 0,
        "PBA {pending:#x} after a RAISE 0 with the function masked: bit 0 clear"
    );
    dev.w16(cap + MSIX_CONTROL, MSIX_ENABLE);
    expect_hits(
        env,
        "MSI-X, clearing the function mask with entry 0 pending",
        want(&[(SLOT_MSIX_ENTRY1, 2), (SLOT_MSIX_ENTRY0, 2)]),
    )?;
    let pending = t.pending();
    ensure!(
        pending & 0b01 == 0,
        "PBA {pending:#x}: bit 0 still set after the message was sent"
    );

    mmio.write32(base + REG_RAISE, 7);
    expect_hits(
        env,
        "MSI-X, RAISE 7 (no such entry)",
        want(&[(SLOT_MSIX_ENTRY1, 2), (SLOT_MSIX_ENTRY0, 2)]),
    )
}

/// `pci-intx`: INTA# through the IOAPIC (level, active low), the Status
/// interrupt bit and Command's INTx disable.
pub fn intx(env: &Env) -> TestResult {
    if let Some(skip) = require_quercus(env)? {
        return Ok(skip);
    }
    let dev = Device::find()?;
    dev.msi_off()?;
    let pin = dev.r8(INTERRUPT_PIN);
    let line = dev.r8(INTERRUPT_LINE);
    ensure!(pin == 1, "Interrupt Pin {pin}, expected 1 (INTA#)");
    let gsi = intx_gsi(TEST_DEVICE.dev, pin - 1);
    ensure!(
        line == gsi,
        "Interrupt Line {line}, expected GSI {gsi} (16 + (slot + pin) % 4)"
    );
    let gsi = u32::from(gsi);
    ensure!(
        ioapic::map(),
        "cannot map the IOAPIC at {:#x}",
        ioapic::BASE
    );
    let pins = ioapic::pins();
    ensure!(
        gsi < pins,
        "IOAPIC version register {:#x}: {pins} pins, GSI {gsi} is not one of them",
        ioapic::read(ioapic::REG_VERSION)
    );
    let apic = lapic_on()?;
    let base = dev.mem_bar(0)?;
    let mmio = Mmio::map(base)?;
    let command = dev.command();
    let on = (command | CMD_MEMORY) & !CMD_INTX_DISABLE;
    let strays = stray();
    dev.set_command(on);
    // Deassert whatever an earlier test may have left asserted.
    mmio.write32(base + REG_INTX, 1);
    reset_hits();
    let mut eois = 0;
    let r = intx_steps(env, &dev, on, gsi, apic, &mmio, base, &mut eois);
    let rte = vector(SLOT_INTX) | ioapic::RTE_LEVEL | ioapic::RTE_ACTIVE_LOW;
    ioapic::set_redirection(gsi, apic, rte | ioapic::RTE_MASKED);
    mmio.write32(base + REG_INTX, 1);
    // The handler leaves the EOI to the test: send the ones still owed.
    while eois < PCI_HITS[SLOT_INTX].load(Ordering::SeqCst) {
        lapic::eoi();
        eois += 1;
    }
    dev.set_command(command);
    r?;
    let strays = stray() - strays;
    ensure!(strays == 0, "{strays} interrupt(s) on unexpected vectors");
    Ok(Pass)
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the steps share the test's whole setup"
)]
fn intx_steps(
    env: &Env,
    dev: &Device,
    on: u16,
    gsi: u32,
    apic: u8,
    mmio: &Mmio,
    base: u64,
    eois: &mut u32,
) -> Result<(), Msg> {
    let asserted = mmio.read32(base + REG_INTX);
    let status = dev.status();
    ensure!(
        asserted & 1 == 0 && status & STATUS_INTERRUPT == 0,
        "before any RAISE: INTX {asserted:#x}, Status {status:#06x} (bit 3 must be clear)"
    );
    let rte = vector(SLOT_INTX) | ioapic::RTE_LEVEL | ioapic::RTE_ACTIVE_LOW;
    ioapic::set_redirection(gsi, apic, rte);
    // Bits 12 (delivery status) and 14 (remote IRR) are the IOAPIC's own.
    let back = ioapic::redirection_low(gsi) & !(1 << 12 | 1 << 14);
    ensure!(
        back == rte,
        "IOAPIC redirection entry {gsi} reads {back:#x} after writing {rte:#x}"
    );

    mmio.write32(base + REG_RAISE, 0);
    expect_hits(env, "INTx, RAISE 0", want(&[(SLOT_INTX, 1)]))?;
    let status = dev.status();
    let asserted = mmio.read32(base + REG_INTX);
    ensure!(
        status & STATUS_INTERRUPT != 0 && asserted & 1 == 1,
        "INTx interrupt taken: Status {status:#06x} (bit 3 should be set), INTX {asserted:#x} (bit 0 should be set)"
    );
    mmio.write32(base + REG_INTX, 1);
    lapic::eoi();
    *eois += 1;
    let status = dev.status();
    let asserted = mmio.read32(base + REG_INTX);
    ensure!(
        status & STATUS_INTERRUPT == 0 && asserted & 1 == 0,
        "after writing INTX=1: Status {status:#06x}, INTX {asserted:#x} (both should show the line deasserted)"
    );
    expect_hits(
        env,
        "INTx, after deasserting and EOI",
        want(&[(SLOT_INTX, 1)]),
    )?;

    dev.set_command(on | CMD_INTX_DISABLE);
    mmio.write32(base + REG_RAISE, 0);
    expect_hits(
        env,
        "INTx, RAISE 0 with Command bit 10 (INTx disable) set",
        want(&[(SLOT_INTX, 1)]),
    )?;
    let status = dev.status();
    ensure!(
        status & STATUS_INTERRUPT != 0,
        "RAISE 0 with INTx disabled: Status {status:#06x}, bit 3 clear"
    );
    dev.set_command(on);
    expect_hits(
        env,
        "INTx, clearing Command bit 10 with the interrupt pending",
        want(&[(SLOT_INTX, 2)]),
    )?;
    mmio.write32(base + REG_INTX, 1);
    lapic::eoi();
    *eois += 1;
    let status = dev.status();
    ensure!(
        status & STATUS_INTERRUPT == 0,
        "after the second deassert: Status {status:#06x}, bit 3 still set"
    );
    Ok(())
}

/// `pci-deferred`: a read the device answers later. The vCPU waits for it
/// (its instruction completes with the right value, however long it took) and
/// the wait is about as long as the device's delay; the next instruction runs
/// normally afterwards.
pub fn deferred(env: &Env) -> TestResult {
    if let Some(skip) = require_quercus(env)? {
        return Ok(skip);
    }
    let dev = Device::find()?;
    let base = dev.mem_bar(0)?;
    let mmio = Mmio::map(base)?;
    let command = dev.command();
    dev.set_command(command | CMD_MEMORY);
    let r = deferred_steps(env, &mmio, base);
    dev.set_command(command);
    r?;
    Ok(Pass)
}

fn deferred_steps(env: &Env, mmio: &Mmio, base: u64) -> Result<(), Msg> {
    for value in [0x0F0F_1234u32, 0xFFFF_FFFF, 0] {
        mmio.write32(base + REG_SCRATCH, value);
        let t0 = cpu::rdtsc_ordered();
        let slow = mmio.read32(base + REG_SLOW);
        let waited = cpu::rdtsc_ordered().wrapping_sub(t0);
        ensure!(
            slow == !value,
            "SLOW read {slow:#010x} after SCRATCH {value:#010x}, expected {:#010x}",
            !value
        );
        // At least most of the delay passed (the guest's TSC rate is the
        // hypervisor's calibration; allow a quarter for rounding).
        let min = tsc_bound_ms(env, 1) * SLOW_US * 3 / 4 / 1000;
        ensure!(
            waited >= min,
            "SLOW answered after {waited} TSC ticks, less than {min} ({SLOW_US} us less a quarter)"
        );
        let magic = mmio.read32(base + REG_MAGIC);
        ensure!(
            magic == MAGIC,
            "MAGIC after the late read reads {magic:#010x}"
        );
    }
    Ok(())
}
