//! A VM's virtual PCI segment: the functions on bus 0..=`bus_end`, their
//! configuration space through mechanism #1 (0xCF8/0xCFC) and through ECAM,
//! the BARs the guest programs (decoded inside the segment's windows), and
//! the interrupts the functions signal (INTx through the routing rule, MSI
//! and MSI-X as messages).
//!
//! The segment is the positive decoder a host bridge is: it claims its ECAM
//! window, its memory window and its I/O window on the VM's buses, and
//! routes each access inside them to the BAR that decodes it. A BAR decodes
//! only while its function's command register enables that space, its
//! address is not 0, it lies wholly inside the window of its kind and it
//! overlaps no BAR that already decodes (functions in address order, BARs in
//! index order: the first wins). Anything else is declined and counted, so
//! a guest can never place a BAR over RAM, the local APIC, the IOAPIC, the
//! ECAM window or another device: those are outside the windows.
//!
//! INTx: slot `s`, pin `p` (0 = INTA#) drives GSI `intx_gsi_base + (s + p) %
//! 4`, the rule the VM's `_PRT` states. A function's line is the OR of its
//! assertion and not Command bit 10 (INTx disable); Status bit 3 shows the
//! assertion either way (PCI 2.3). Lines sharing a GSI are wired-OR.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::any::Any;
use core::ops::Range;

use crate::access::all_ones;
use crate::msi::MsiMessage;
use crate::pci::{Bdf, PciBus, PciError, PciFunction, PCI_CONFIG_LIMIT};
use crate::pci_config::{
    Bar, ConfigSpace, BAR_COUNT, COMMAND_INTX_DISABLE, COMMAND_IO, COMMAND_MEMORY, STATUS_INTERRUPT,
};

/// The offset of BAR 0 in a type 0 header.
const BAR0: u16 = 0x10;
/// The command register's dword.
const COMMAND_DWORD: u16 = 0x04;
/// Bytes of ECAM space per bus.
pub const ECAM_BUS_SIZE: u64 = 1 << 20;

/// What an emulated PCI function is to its segment: a configuration space
/// and the registers behind its BARs.
///
/// Everything here is guest-driven: implementations never panic and treat
/// impossible offsets and widths as the hardware would.
pub trait PciDevice: Send {
    /// Its configuration space.
    fn config(&self) -> &ConfigSpace;
    /// Its configuration space, mutably (the segment applies guest writes).
    fn config_mut(&mut self) -> &mut ConfigSpace;
    /// Called after each guest write to the dword at `offset` (a capability
    /// may have been unmasked): messages to send go into `out`.
    fn config_written(&mut self, _offset: u16, _out: &mut Vec<MsiMessage>) {}
    /// A read of `size` bytes at `offset` inside BAR `bar`.
    fn bar_read(&mut self, _bar: usize, _offset: u64, size: u8, _out: &mut Vec<MsiMessage>) -> u64 {
        u64::from(all_ones(size))
    }
    /// A write of `size` bytes at `offset` inside BAR `bar`.
    fn bar_write(
        &mut self,
        _bar: usize,
        _offset: u64,
        _size: u8,
        _value: u64,
        _out: &mut Vec<MsiMessage>,
    ) {
    }
    /// Whether the function asserts its INTx pin now.
    fn intx_asserted(&self) -> bool {
        false
    }
    /// The guest ended an interrupt on the GSI the function's INTx pin drives (its EOI at the
    /// vIOAPIC, before the line is sampled again): a function that forwards a level from
    /// elsewhere (a passed-through function) lets the source assert again here.
    fn intx_eoi(&mut self) {}
    /// How long a read at `offset` of BAR `bar` takes to answer, in
    /// nanoseconds (None: at once). The value is what [`PciDevice::bar_read`]
    /// returns; the VM gets it that much later (an asynchronous backend).
    fn read_delay_ns(&self, _bar: usize, _offset: u64) -> Option<u64> {
        None
    }
    /// Serves input that arrived from outside the VM (a backend): messages
    /// to send go into `out`.
    fn poll(&mut self, _out: &mut Vec<MsiMessage>) {}
    /// Whether [`PciDevice::poll`] has something to do (cheap).
    fn has_input(&self) -> bool {
        false
    }
    /// The device as `Any`, for callers that know its type (the shell's
    /// statistics).
    fn as_any(&self) -> Option<&dyn Any> {
        None
    }
    /// Parts of memory BAR `bar` the guest may reach without an exit: each maps
    /// `[offset, offset + len)` of the BAR to host-physical `host` (page-aligned; a
    /// passed-through function's registers, less its MSI-X table and PBA).
    fn direct_ranges(&self, _bar: usize, _out: &mut Vec<DirectRange>) {}
}

/// A part of a BAR backed directly by host memory ([`PciDevice::direct_ranges`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectRange {
    pub offset: u64,
    pub len: u64,
    pub host: u64,
    /// What the host memory is (how the second-level tables map it).
    pub kind: DirectKind,
}

/// What backs a [`DirectRange`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectKind {
    /// A physical device's registers: mapped uncached, read-write.
    Mmio,
    /// Ordinary RAM the hypervisor set aside (an inter-VM shared region): mapped write-back,
    /// writable or read-only (a write then exits and reaches [`PciDevice::bar_write`]).
    Ram { writable: bool },
}

/// A change the VM's second-level tables need after the guest moved or switched a BAR with
/// direct ranges: the caller applies it (and flushes the vCPUs' TLBs after an unmap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlatOp {
    /// Map guest-physical `[gpa, gpa + len)` to host-physical `host`, uncached.
    Map { gpa: u64, len: u64, host: u64 },
    /// Map guest-physical `[gpa, gpa + len)` to host-physical RAM at `host`, write-back,
    /// writable or read-only ([`DirectKind::Ram`]).
    MapRam {
        gpa: u64,
        len: u64,
        host: u64,
        writable: bool,
    },
    /// Remove the translation of `[gpa, gpa + len)`.
    Unmap { gpa: u64, len: u64 },
}

impl PciDevice for ConfigSpace {
    fn config(&self) -> &ConfigSpace {
        self
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        self
    }
}

/// A boxed device as the mechanism-#1 bus sees it.
struct Function(Box<dyn PciDevice>);

impl PciFunction for Function {
    fn config_read(&mut self, offset: u16) -> u32 {
        self.0.config_mut().config_read(offset)
    }

    fn config_write(&mut self, offset: u16, value: u32, byte_enables: u8) {
        self.0
            .config_mut()
            .config_write(offset, value, byte_enables)
    }
}

/// Where a segment sits in the VM's address spaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentLayout {
    /// ECAM window base (1 MiB per bus, buses 0..=`bus_end`).
    pub ecam_base: u64,
    pub bus_end: u8,
    /// Guest-physical range memory BARs may decode in.
    pub mmio_window: Range<u64>,
    /// Port range I/O BARs may decode in.
    pub io_window: Range<u32>,
    /// GSI of slot 0 pin INTA#; see the module's routing rule.
    pub intx_gsi_base: u32,
}

impl SegmentLayout {
    /// The ECAM window.
    pub fn ecam(&self) -> Range<u64> {
        self.ecam_base..self.ecam_base + (u64::from(self.bus_end) + 1) * ECAM_BUS_SIZE
    }

    /// The GSI that slot `device`'s pin `pin` (1 = INTA#..4 = INTD#) drives.
    pub fn intx_gsi(&self, device: u8, pin: u8) -> u32 {
        self.intx_gsi_base + (u32::from(device) + u32::from(pin.wrapping_sub(1))) % 4
    }
}

/// A BAR that decodes now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarMapping {
    pub bdf: Bdf,
    pub bar: usize,
    pub io: bool,
    pub start: u64,
    pub len: u64,
}

impl BarMapping {
    fn contains(&self, io: bool, addr: u64) -> bool {
        self.io == io && addr >= self.start && addr - self.start < self.len
    }
}

/// An interrupt a function signalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciInterrupt {
    /// A message to the local APICs.
    Msi(MsiMessage),
    /// A GSI's level changed (wired-OR of the INTx lines routed to it).
    Intx { gsi: u32, level: bool },
}

/// What the segment ignored or declined, for the VM's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentCounters {
    /// ECAM accesses that reach no register (bad width or alignment).
    pub bad_ecam_accesses: u64,
    /// BAR placements not decoded: outside their window or overlapping.
    pub declined_bars: u64,
    /// Accesses inside a window that no BAR decodes.
    pub unclaimed_accesses: u64,
    /// Messages signalled.
    pub messages: u64,
}

/// A VM's PCI segment.
pub struct PciSegment {
    layout: SegmentLayout,
    bus: PciBus<Function>,
    /// Sorted by start within each kind.
    mappings: Vec<BarMapping>,
    /// Each function's INTx line as last seen (by the bus's order).
    lines: Vec<(Bdf, Option<u32>, bool)>,
    /// GSI levels driven, with the count of asserting lines.
    gsi_counts: Vec<(u32, u32)>,
    pending: Vec<PciInterrupt>,
    counters: SegmentCounters,
    scratch: Vec<MsiMessage>,
    /// Direct ranges mapped now (guest-physical start, length, host-physical start, kind).
    direct: Vec<(u64, u64, u64, DirectKind)>,
    /// Second-level changes not yet taken ([`PciSegment::take_slat_ops`]).
    slat_ops: Vec<SlatOp>,
}

impl PciSegment {
    /// An empty segment (add the host bridge with [`PciSegment::add`]).
    pub fn new(layout: SegmentLayout) -> Self {
        PciSegment {
            layout,
            bus: PciBus::new(),
            mappings: Vec::new(),
            lines: Vec::new(),
            gsi_counts: Vec::new(),
            pending: Vec::new(),
            counters: SegmentCounters::default(),
            scratch: Vec::new(),
            direct: Vec::new(),
            slat_ops: Vec::new(),
        }
    }

    /// Takes the second-level changes the guest's BAR programming asked for since the last
    /// call (in the order they must be applied: unmaps first).
    pub fn take_slat_ops(&mut self) -> Vec<SlatOp> {
        core::mem::take(&mut self.slat_ops)
    }

    /// Whether [`PciSegment::take_slat_ops`] has something (cheap).
    pub fn has_slat_ops(&self) -> bool {
        !self.slat_ops.is_empty()
    }

    /// The windows it claims.
    pub fn layout(&self) -> &SegmentLayout {
        &self.layout
    }

    /// Plugs `device` in at `bdf`; its interrupt line register is set to
    /// the GSI its pin routes to (what firmware does) and its BARs decode
    /// as programmed.
    pub fn add(&mut self, bdf: Bdf, mut device: Box<dyn PciDevice>) -> Result<(), PciError> {
        if self.bus.function(bdf).is_some() {
            return Err(PciError::Duplicate { bdf });
        }
        let pin = device.config().interrupt_pin();
        let gsi = (pin != 0).then(|| self.layout.intx_gsi(bdf.device(), pin));
        if let Some(gsi) = gsi {
            device.config_mut().set_interrupt_line(gsi as u8);
        }
        self.bus.add(bdf, Function(device))?;
        let at = self.lines.partition_point(|(b, _, _)| *b < bdf);
        self.lines.insert(at, (bdf, gsi, false));
        self.remap();
        self.sync_intx();
        Ok(())
    }

    /// The device at `bdf`.
    pub fn device(&self, bdf: Bdf) -> Option<&dyn PciDevice> {
        self.bus.function(bdf).map(|f| &*f.0)
    }

    /// The device at `bdf`, mutably.
    pub fn device_mut(&mut self, bdf: Bdf) -> Option<&mut (dyn PciDevice + 'static)> {
        self.bus.function_mut(bdf).map(|f| &mut *f.0)
    }

    /// The BARs that decode now.
    pub fn mappings(&self) -> &[BarMapping] {
        &self.mappings
    }

    /// What was ignored or declined so far.
    pub fn counters(&self) -> SegmentCounters {
        self.counters
    }

    /// Takes the interrupts signalled since the last call.
    pub fn take_interrupts(&mut self) -> Vec<PciInterrupt> {
        core::mem::take(&mut self.pending)
    }

    /// The guest's EOI of an interrupt on `gsi`: each function whose INTx drives it hears of it
    /// ([`PciDevice::intx_eoi`]), then the lines are sampled again (before the vIOAPIC looks
    /// at its input).
    pub fn intx_eoi(&mut self, gsi: u32) {
        for i in 0..self.lines.len() {
            let (bdf, line_gsi, _) = self.lines[i];
            if line_gsi != Some(gsi) {
                continue;
            }
            if let Some(f) = self.bus.function_mut(bdf) {
                f.0.intx_eoi();
            }
        }
        self.flush();
    }

    /// Serves backend input of every device that has some.
    pub fn poll(&mut self) {
        for i in 0..self.lines.len() {
            let bdf = self.lines[i].0;
            if let Some(f) = self.bus.function_mut(bdf) {
                if f.0.has_input() {
                    f.0.poll(&mut self.scratch);
                }
            }
        }
        self.flush();
    }

    /// Whether a device has backend input to serve.
    pub fn has_input(&self) -> bool {
        self.lines
            .iter()
            .any(|&(bdf, _, _)| self.bus.function(bdf).is_some_and(|f| f.0.has_input()))
    }

    /// The devices, in address order.
    pub fn devices(&self) -> impl Iterator<Item = (Bdf, &dyn PciDevice)> {
        self.lines
            .iter()
            .filter_map(|&(bdf, _, _)| self.bus.function(bdf).map(|f| (bdf, &*f.0)))
    }

    /// Whether the segment claims port `port` (mechanism #1 or its I/O window).
    pub fn claims_port(&self, port: u16) -> bool {
        (0xCF8..0xD00).contains(&port) || self.layout.io_window.contains(&u32::from(port))
    }

    /// Whether the segment claims guest-physical `gpa` (ECAM or its window).
    pub fn claims_mmio(&self, gpa: u64) -> bool {
        self.layout.ecam().contains(&gpa) || self.layout.mmio_window.contains(&gpa)
    }

    /// A guest port read.
    pub fn pio_read(&mut self, port: u16, size: u8) -> u32 {
        if (0xCF8..0xD00).contains(&port) {
            return self.bus.read(port, size);
        }
        match self.bar_at(true, u64::from(port)) {
            Some(m) => self.bar_read(m, u64::from(port), size) as u32,
            None => {
                self.counters.unclaimed_accesses += 1;
                all_ones(size)
            }
        }
    }

    /// A guest port write.
    pub fn pio_write(&mut self, port: u16, size: u8, value: u32) {
        if (0xCF8..0xD00).contains(&port) {
            let target = self.cf8_target(port);
            self.bus.write(port, size, value);
            if let Some((bdf, offset)) = target {
                self.after_config_write(bdf, offset);
            }
            return;
        }
        match self.bar_at(true, u64::from(port)) {
            Some(m) => self.bar_write(m, u64::from(port), size, u64::from(value)),
            None => self.counters.unclaimed_accesses += 1,
        }
    }

    /// A guest MMIO read (ECAM or a memory BAR).
    pub fn mmio_read(&mut self, gpa: u64, size: u8) -> u64 {
        if let Some((bdf, offset)) = self.ecam_target(gpa, size) {
            return u64::from(self.bus.config_read(bdf, offset, size));
        }
        if self.layout.ecam().contains(&gpa) {
            return u64::MAX >> (64 - 8 * u32::from(size.clamp(1, 8)));
        }
        match self.bar_at(false, gpa) {
            Some(m) => self.bar_read(m, gpa, size),
            None => {
                self.counters.unclaimed_accesses += 1;
                u64::MAX >> (64 - 8 * u32::from(size.clamp(1, 8)))
            }
        }
    }

    /// A guest MMIO write (ECAM or a memory BAR).
    pub fn mmio_write(&mut self, gpa: u64, size: u8, value: u64) {
        if let Some((bdf, offset)) = self.ecam_target(gpa, size) {
            self.bus.config_write(bdf, offset, size, value as u32);
            self.after_config_write(bdf, offset);
            return;
        }
        if self.layout.ecam().contains(&gpa) {
            return;
        }
        match self.bar_at(false, gpa) {
            Some(m) => self.bar_write(m, gpa, size, value),
            None => self.counters.unclaimed_accesses += 1,
        }
    }

    /// How long a memory or I/O BAR read at `addr` takes to answer (None:
    /// at once, or nothing decodes there).
    pub fn read_delay_ns(&self, io: bool, addr: u64) -> Option<u64> {
        let m = self.bar_at(io, addr)?;
        self.bus
            .function(m.bdf)?
            .0
            .read_delay_ns(m.bar, addr - m.start)
    }

    /// The function and offset of an ECAM access that reaches a register.
    fn ecam_target(&mut self, gpa: u64, size: u8) -> Option<(Bdf, u16)> {
        if !self.layout.ecam().contains(&gpa) {
            return None;
        }
        let off = gpa - self.layout.ecam_base;
        let reg = (off & 0xFFF) as u16;
        if !matches!(size, 1 | 2 | 4) || u32::from(reg % 4) + u32::from(size) > 4 {
            self.counters.bad_ecam_accesses += 1;
            return None;
        }
        debug_assert!(reg < PCI_CONFIG_LIMIT);
        Some((Bdf::from_raw((off >> 12) as u16), reg))
    }

    /// The function and offset mechanism #1 would write at `port` now.
    fn cf8_target(&self, port: u16) -> Option<(Bdf, u16)> {
        let address = self.bus.config_address();
        ((0xCFC..0xD00).contains(&port) && address & (1 << 31) != 0).then(|| {
            (
                Bdf::from_raw((address >> 8) as u16),
                (address & 0xFC) as u16 + (port - 0xCFC),
            )
        })
    }

    fn after_config_write(&mut self, bdf: Bdf, offset: u16) {
        let dword = offset & !3;
        if let Some(f) = self.bus.function_mut(bdf) {
            f.0.config_written(dword, &mut self.scratch);
        }
        if dword == COMMAND_DWORD || (BAR0..BAR0 + 4 * BAR_COUNT as u16).contains(&dword) {
            self.remap();
        }
        self.flush();
    }

    fn bar_at(&self, io: bool, addr: u64) -> Option<BarMapping> {
        self.mappings.iter().copied().find(|m| m.contains(io, addr))
    }

    fn bar_read(&mut self, m: BarMapping, addr: u64, size: u8) -> u64 {
        let v = match self.bus.function_mut(m.bdf) {
            Some(f) => f.0.bar_read(m.bar, addr - m.start, size, &mut self.scratch),
            None => u64::MAX,
        };
        self.flush();
        v
    }

    fn bar_write(&mut self, m: BarMapping, addr: u64, size: u8, value: u64) {
        if let Some(f) = self.bus.function_mut(m.bdf) {
            f.0.bar_write(m.bar, addr - m.start, size, value, &mut self.scratch);
        }
        self.flush();
    }

    /// Moves messages out of the scratch list and follows INTx changes.
    fn flush(&mut self) {
        self.counters.messages += self.scratch.len() as u64;
        self.pending
            .extend(self.scratch.drain(..).map(PciInterrupt::Msi));
        self.sync_intx();
    }

    /// Recomputes which BARs decode.
    fn remap(&mut self) {
        let mut maps: Vec<BarMapping> = Vec::new();
        let mut declined = 0u64;
        for &(bdf, _, _) in &self.lines {
            let Some(f) = self.bus.function(bdf) else {
                continue;
            };
            let cfg = f.0.config();
            let command = cfg.command();
            for bar in 0..BAR_COUNT {
                let Some(kind) = cfg.bar(bar) else { continue };
                let (io, len, decode) = match kind {
                    Bar::Io { size } => (true, u64::from(size), command & COMMAND_IO != 0),
                    Bar::Memory32 { size, .. } => {
                        (false, u64::from(size), command & COMMAND_MEMORY != 0)
                    }
                    Bar::Memory64 { size, .. } => (false, size, command & COMMAND_MEMORY != 0),
                };
                let start = cfg.bar_address(bar).unwrap_or(0);
                if !decode || start == 0 {
                    continue;
                }
                let window = if io {
                    u64::from(self.layout.io_window.start)..u64::from(self.layout.io_window.end)
                } else {
                    self.layout.mmio_window.clone()
                };
                let inside = start >= window.start
                    && start.checked_add(len).is_some_and(|end| end <= window.end);
                let overlaps = maps
                    .iter()
                    .any(|m| m.io == io && start < m.start + m.len && m.start < start + len);
                if !inside || overlaps {
                    declined += 1;
                    continue;
                }
                maps.push(BarMapping {
                    bdf,
                    bar,
                    io,
                    start,
                    len,
                });
            }
        }
        self.counters.declined_bars += declined;
        self.mappings = maps;
        self.sync_direct();
    }

    /// Works out which direct ranges the decoding BARs ask for now and queues the second-level
    /// changes from the ranges mapped before: every old range not wanted any more is unmapped,
    /// then every new one mapped.
    fn sync_direct(&mut self) {
        let mut want: Vec<(u64, u64, u64, DirectKind)> = Vec::new();
        let mut ranges = Vec::new();
        for m in self.mappings.iter().filter(|m| !m.io) {
            let Some(f) = self.bus.function(m.bdf) else {
                continue;
            };
            ranges.clear();
            f.0.direct_ranges(m.bar, &mut ranges);
            for r in &ranges {
                let page = |v: u64| v % 4096 == 0;
                let inside = r.offset.checked_add(r.len).is_some_and(|end| end <= m.len);
                if inside
                    && r.len > 0
                    && page(r.offset)
                    && page(r.len)
                    && page(r.host)
                    && page(m.start)
                {
                    want.push((m.start + r.offset, r.len, r.host, r.kind));
                }
            }
        }
        for &(gpa, len, host, kind) in &self.direct {
            if !want.contains(&(gpa, len, host, kind)) {
                self.slat_ops.push(SlatOp::Unmap { gpa, len });
            }
        }
        for &(gpa, len, host, kind) in &want {
            if !self.direct.contains(&(gpa, len, host, kind)) {
                self.slat_ops.push(match kind {
                    DirectKind::Mmio => SlatOp::Map { gpa, len, host },
                    DirectKind::Ram { writable } => SlatOp::MapRam {
                        gpa,
                        len,
                        host,
                        writable,
                    },
                });
            }
        }
        self.direct = want;
    }

    /// Updates each function's Status bit 3 and line, and the GSI levels.
    fn sync_intx(&mut self) {
        for i in 0..self.lines.len() {
            let (bdf, gsi, was) = self.lines[i];
            let Some(f) = self.bus.function_mut(bdf) else {
                continue;
            };
            let asserted = f.0.intx_asserted();
            let cfg = f.0.config_mut();
            if asserted {
                cfg.set_status_bits(STATUS_INTERRUPT);
            } else {
                cfg.clear_status_bits(STATUS_INTERRUPT);
            }
            let line = asserted && cfg.command() & COMMAND_INTX_DISABLE == 0;
            let Some(gsi) = gsi else { continue };
            if line == was {
                continue;
            }
            self.lines[i].2 = line;
            let entry = match self.gsi_counts.iter_mut().find(|(g, _)| *g == gsi) {
                Some(e) => e,
                None => {
                    self.gsi_counts.push((gsi, 0));
                    let last = self.gsi_counts.len() - 1;
                    &mut self.gsi_counts[last]
                }
            };
            let before = entry.1 > 0;
            entry.1 = if line {
                entry.1 + 1
            } else {
                entry.1.saturating_sub(1)
            };
            let after = entry.1 > 0;
            if before != after {
                self.pending.push(PciInterrupt::Intx { gsi, level: after });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::host_bridge;
    use crate::pci_testdev::{TestDevice, TEST_DEVICE_MAGIC};

    const ECAM: u64 = 0xE000_0000;

    fn layout() -> SegmentLayout {
        SegmentLayout {
            ecam_base: ECAM,
            bus_end: 0,
            mmio_window: 0xC000_0000..0xE000_0000,
            io_window: 0xC000..0x1_0000,
            intx_gsi_base: 16,
        }
    }

    fn segment() -> (PciSegment, Bdf) {
        let mut s = PciSegment::new(layout());
        s.add(Bdf::HOST_BRIDGE, Box::new(host_bridge())).unwrap();
        let bdf = Bdf::new(0, 3, 0).unwrap();
        s.add(
            bdf,
            Box::new(TestDevice::new(0xC000_0000, 0xC000_1000, 0xC000)),
        )
        .unwrap();
        (s, bdf)
    }

    fn ecam(bdf: Bdf, off: u16) -> u64 {
        ECAM + (u64::from(bdf.raw()) << 12) + u64::from(off)
    }

    fn cf8_read(s: &mut PciSegment, bdf: Bdf, off: u16) -> u32 {
        s.pio_write(
            0xCF8,
            4,
            0x8000_0000 | u32::from(bdf.raw()) << 8 | u32::from(off & 0xFC),
        );
        s.pio_read(0xCFC, 4)
    }

    #[test]
    fn ecam_and_cf8_see_the_same_functions() {
        let (mut s, bdf) = segment();
        for dev in 0..32u8 {
            let b = Bdf::new(0, dev, 0).unwrap();
            for off in (0..0x40).step_by(4) {
                assert_eq!(
                    s.mmio_read(ecam(b, off), 4) as u32,
                    cf8_read(&mut s, b, off),
                    "{b} {off:#x}"
                );
            }
        }
        assert_eq!(s.mmio_read(ecam(bdf, 0), 4), 0x0001_5143);
        assert_eq!(s.mmio_read(ecam(bdf, 2), 2), 0x0001);
        assert_eq!(
            s.mmio_read(ecam(bdf, 0x100), 4),
            0,
            "no extended capabilities"
        );
        // Interrupt line: firmware routed INTA# of slot 3 to GSI 16 + 3.
        assert_eq!(s.mmio_read(ecam(bdf, 0x3C), 1), 19);
        s.mmio_write(ecam(bdf, 0x3C), 1, 0x0B);
        assert_eq!(cf8_read(&mut s, bdf, 0x3C) & 0xFF, 0x0B);
    }

    #[test]
    fn hostile_ecam_accesses_read_all_ones() {
        let (mut s, bdf) = segment();
        for off in [1u16, 2, 3, 0xFFD, 0xFFF] {
            assert_eq!(s.mmio_read(ecam(bdf, off), 4), 0xFFFF_FFFF, "{off:#x}");
        }
        assert_eq!(s.mmio_read(ecam(bdf, 0), 8), u64::MAX);
        s.mmio_write(ecam(bdf, 0x10), 8, 0);
        assert_eq!(
            s.mmio_read(ecam(bdf, 0x10), 4),
            0xC000_0000,
            "8-byte write ignored"
        );
        assert!(s.counters().bad_ecam_accesses >= 6);
        for gpa in (ECAM..ECAM + ECAM_BUS_SIZE).step_by(0x1_7FF3) {
            for size in [0u8, 1, 2, 3, 4, 8, 16] {
                let _ = s.mmio_read(gpa, size);
                s.mmio_write(gpa, size, u64::MAX);
            }
        }
    }

    #[test]
    fn bars_decode_move_and_stop_with_the_command_register() {
        let (mut s, bdf) = segment();
        assert_eq!(s.mmio_read(0xC000_0000, 4), u64::from(TEST_DEVICE_MAGIC));
        // Memory decode off: unclaimed.
        s.mmio_write(ecam(bdf, 4), 2, 0x0001);
        assert_eq!(s.mmio_read(0xC000_0000, 4), 0xFFFF_FFFF);
        s.mmio_write(ecam(bdf, 4), 2, 0x0003);
        // Move BAR 0.
        s.mmio_write(ecam(bdf, 0x10), 4, 0xC010_0000);
        assert_eq!(s.mmio_read(0xC010_0000, 4), u64::from(TEST_DEVICE_MAGIC));
        assert_eq!(s.mmio_read(0xC000_0000, 4), 0xFFFF_FFFF);
        // The I/O BAR mirrors the scratch register.
        s.mmio_write(0xC010_0004, 4, 0x1234_5678);
        assert_eq!(s.pio_read(0xC000, 4), 0x1234_5678);
        s.pio_write(0xCF8, 4, 0x8000_0000 | u32::from(bdf.raw()) << 8 | 0x18);
        s.pio_write(0xCFC, 4, 0xD000);
        assert_eq!(s.pio_read(0xD000, 4), 0x1234_5678);
        assert_eq!(s.pio_read(0xC000, 4), 0xFFFF_FFFF);
    }

    #[test]
    fn hostile_bar_placements_are_declined() {
        let (mut s, bdf) = segment();
        // Over RAM, the local APIC, the IOAPIC, all ones, the ECAM window:
        // none decodes.
        for addr in [
            0x1000u32,
            0xFEE0_0000,
            0xFEC0_0000,
            0xFFFF_F000,
            0xE000_0000,
        ] {
            s.mmio_write(ecam(bdf, 0x10), 4, u64::from(addr));
            assert!(
                !s.mappings().iter().any(|m| m.bar == 0),
                "BAR 0 at {addr:#x} must not decode"
            );
        }
        // Onto BAR 1: BAR 0 comes first in index order and decodes, BAR 1
        // is declined while they overlap.
        s.mmio_write(ecam(bdf, 0x10), 4, 0xC000_1000);
        let bar0 = s.mappings().iter().filter(|m| m.bar == 0).count();
        let bar1 = s.mappings().iter().filter(|m| m.bar == 1).count();
        assert_eq!((bar0, bar1), (1, 0), "overlapping BARs: one decodes");
        assert!(s.counters().declined_bars >= 6);
        // Sizing reads the masks, and the BAR then sits at 0xFFFFF000: declined.
        s.mmio_write(ecam(bdf, 0x10), 4, 0xFFFF_FFFF);
        assert_eq!(s.mmio_read(ecam(bdf, 0x10), 4), 0xFFFF_F000);
        assert!(s.mappings().iter().all(|m| m.bar != 0));
        // I/O BAR outside the window.
        s.mmio_write(ecam(bdf, 0x18), 4, 0x3F8);
        assert!(s.mappings().iter().all(|m| m.bar != 2));
    }

    #[test]
    fn intx_follows_assertion_disable_and_status() {
        let (mut s, bdf) = segment();
        s.mmio_write(0xC000_0008, 4, 0); // RAISE with MSI and MSI-X off: INTx
        assert_eq!(
            s.take_interrupts(),
            [PciInterrupt::Intx {
                gsi: 19,
                level: true
            }]
        );
        assert_ne!(s.mmio_read(ecam(bdf, 6), 2) & 0x8, 0, "status: interrupt");
        // INTx disable drops the line, keeps the status.
        s.mmio_write(ecam(bdf, 4), 2, 0x0403);
        assert_eq!(
            s.take_interrupts(),
            [PciInterrupt::Intx {
                gsi: 19,
                level: false
            }]
        );
        assert_ne!(s.mmio_read(ecam(bdf, 6), 2) & 0x8, 0);
        s.mmio_write(ecam(bdf, 4), 2, 0x0003);
        assert_eq!(
            s.take_interrupts(),
            [PciInterrupt::Intx {
                gsi: 19,
                level: true
            }]
        );
        s.mmio_write(0xC000_000C, 4, 1); // deassert
        assert_eq!(
            s.take_interrupts(),
            [PciInterrupt::Intx {
                gsi: 19,
                level: false
            }]
        );
        assert_eq!(s.mmio_read(ecam(bdf, 6), 2) & 0x8, 0);
    }

    #[test]
    fn msi_and_msix_come_out_as_messages() {
        let (mut s, bdf) = segment();
        let msi = 0x40u16;
        s.mmio_write(ecam(bdf, msi + 4), 4, 0xFEE0_0000);
        s.mmio_write(ecam(bdf, msi + 0xC), 2, 0x45);
        s.mmio_write(ecam(bdf, msi + 2), 2, 1);
        s.mmio_write(0xC000_0008, 4, 0);
        assert_eq!(
            s.take_interrupts(),
            [PciInterrupt::Msi(MsiMessage {
                address: 0xFEE0_0000,
                data: 0x45
            })]
        );
        // MSI-X wins over MSI when enabled.
        let x = 0x60u16;
        s.mmio_write(0xC000_1010, 4, 0xFEE0_0000);
        s.mmio_write(0xC000_1018, 4, 0x46);
        s.mmio_write(0xC000_101C, 4, 0);
        s.mmio_write(ecam(bdf, x + 2), 2, 0x8000);
        s.mmio_write(0xC000_0008, 4, 1);
        assert_eq!(
            s.take_interrupts(),
            [PciInterrupt::Msi(MsiMessage {
                address: 0xFEE0_0000,
                data: 0x46
            })]
        );
        assert_eq!(s.counters().messages, 2);
    }

    #[test]
    fn capability_list_terminates() {
        let (mut s, bdf) = segment();
        let mut at = s.mmio_read(ecam(bdf, 0x34), 1) as u16;
        let mut ids = Vec::new();
        for _ in 0..48 {
            if at == 0 {
                break;
            }
            ids.push(s.mmio_read(ecam(bdf, at), 1) as u8);
            at = s.mmio_read(ecam(bdf, at + 1), 1) as u16;
        }
        assert_eq!(ids, [0x05, 0x11]);
    }

    #[test]
    fn duplicate_functions_are_refused() {
        let (mut s, bdf) = segment();
        assert_eq!(
            s.add(bdf, Box::new(host_bridge())),
            Err(PciError::Duplicate { bdf })
        );
    }
}
