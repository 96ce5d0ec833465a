//! The function a VM sees in place of a physical one it owns.
//!
//! Configuration space is virtual: the identity registers are the real ones; the BARs have the
//! real kinds and sizes but the guest's addresses (the segment decodes them in the VM's
//! windows, so a guest cannot place one over RAM or another device); the command register's
//! decode, bus-master and INTx-disable bits are mirrored to the real function; MSI and MSI-X
//! are emulated capabilities; the expansion ROM, the PCI Express, power-management and every
//! other capability and the extended space are hidden (a guest cannot start a reset, change
//! link or power state, or reach anything outside its function).
//!
//! Interrupts are remapped: the real function's MSI or MSI-X entries hold the hypervisor's
//! messages (one host vector per message, on the pCPU of the VM's vCPU 0), programmed when the
//! guest enables the capability, never the guest's. A host interrupt raises a bit in the
//! device's [`IrqPending`]; the VM's next device poll turns each bit into the guest's message
//! as the guest programmed it now, through the emulated capability, so the guest's masks and
//! pending bits behave as the hardware's would and no message the guest did not program ever
//! reaches a vCPU.
//!
//! Register accesses inside BARs are forwarded to the real function (offset and width as the
//! guest made them), except the MSI-X table and PBA, which are the emulated ones.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use vdev::{
    Bar, ConfigError, ConfigSpace, DirectKind, DirectRange, Msi, MsiMessage, MsiX, PciDevice,
    PciIds, COMMAND_BUS_MASTER, COMMAND_INTX_DISABLE, COMMAND_IO, COMMAND_MEMORY, MSIX_ENTRY_SIZE,
};

use crate::scan::{BarKind, PhysFunction};

/// The real function, as the hypervisor reaches it.
pub trait HostFunction: Send {
    /// The function's configuration dword at `offset`.
    fn config_read(&mut self, offset: u16) -> u32;
    /// Writes the function's configuration dword at `offset`.
    fn config_write(&mut self, offset: u16, value: u32);
    /// A register read of `size` bytes at `offset` inside BAR `bar` (the caller keeps the
    /// access inside the BAR's size; the implementation checks again).
    fn bar_read(&mut self, bar: u8, offset: u64, size: u8) -> u64;
    /// A register write of `size` bytes at `offset` inside BAR `bar`.
    fn bar_write(&mut self, bar: u8, offset: u64, size: u8, value: u64);
    /// Lets the real function's INTx interrupt again: the hypervisor masked its I/O APIC input
    /// when it fired ([`IrqPending::raise_intx`]) and unmasks it once the guest ended the
    /// interrupt (a level that is still asserted fires again at once).
    fn intx_unmask(&mut self) {}
}

/// Host interrupts of one function not yet turned into guest messages: bit `n` for message `n`.
/// Raised by the hypervisor's interrupt handler, taken by the VM's device poll. Also tells the
/// hypervisor which interrupt mode the guest has on (for the shell).
#[derive(Debug, Default)]
pub struct IrqPending {
    bits: AtomicU64,
    intx: AtomicBool,
    mode: AtomicU8,
}

impl IrqPending {
    /// Message `n` (below 64) fired.
    pub fn raise(&self, n: u32) {
        if n < 64 {
            self.bits.fetch_or(1 << n, Ordering::Release);
        }
    }

    /// The real function's INTx fired (its I/O APIC input is masked until the guest's EOI).
    pub fn raise_intx(&self) {
        self.intx.store(true, Ordering::Release);
    }

    /// Whether anything fired since the last [`IrqPending::take`].
    pub fn any(&self) -> bool {
        self.bits.load(Ordering::Relaxed) != 0 || self.intx.load(Ordering::Relaxed)
    }

    /// Takes the bits raised so far.
    pub fn take(&self) -> u64 {
        self.bits.swap(0, Ordering::Acquire)
    }

    /// The guest's interrupt mode: `off`, `msi` or `msi-x`.
    pub fn mode(&self) -> &'static str {
        match self.mode.load(Ordering::Relaxed) {
            1 => "msi",
            2 => "msi-x",
            _ => "off",
        }
    }
}

/// Most host vectors (messages) one function gets: the guest sees an MSI-X table of at most this
/// many entries.
pub const MAX_MESSAGES: usize = 16;

/// What the device did, for the shell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassthroughStats {
    /// Host interrupts turned into guest messages (or pending bits, when the guest masked).
    pub interrupts: u64,
    /// Guest messages delivered.
    pub messages: u64,
    /// BAR register reads and writes forwarded to the real function.
    pub bar_reads: u64,
    pub bar_writes: u64,
    /// Times the real function's MSI or MSI-X was switched on or off.
    pub msi_switches: u64,
}

/// Why a physical function cannot be given to a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassthroughError {
    /// A BAR the virtual configuration space cannot mirror.
    Bar { index: u8, error: ConfigError },
    /// An I/O BAR larger than 256 bytes.
    IoBarTooBig { index: u8, size: u64 },
    /// The guest address chosen for a BAR is not aligned to its size.
    BarPlacement { index: u8, address: u64, size: u64 },
    /// Capability emulation could not be installed.
    Capability(ConfigError),
    /// The function has MSI or MSI-X but no host vector was given for it.
    NoHostVectors,
}

impl fmt::Display for PassthroughError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bar { index, error } => write!(f, "BAR {index}: {error}"),
            Self::IoBarTooBig { index, size } => {
                write!(
                    f,
                    "BAR {index}: I/O BAR of {size:#x} bytes (at most 256 supported)"
                )
            }
            Self::BarPlacement {
                index,
                address,
                size,
            } => write!(
                f,
                "BAR {index}: guest address {address:#x} not aligned to its size {size:#x}"
            ),
            Self::Capability(e) => write!(f, "interrupt capability: {e}"),
            Self::NoHostVectors => f.write_str("the function signals MSI but has no host vector"),
        }
    }
}

/// Command bits mirrored to the real function.
const COMMAND_MIRRORED: u16 =
    COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;
/// MSI control (upper half of the capability's first dword): enable, multiple message enable.
const MSI_ENABLE: u32 = 1 << 16;
const MSI_MME: u32 = 0b111 << 20;
/// MSI-X control (upper half of the capability's first dword): enable, function mask.
const MSIX_ENABLE: u32 = 1 << 31;
const MSIX_FUNCTION_MASK: u32 = 1 << 30;

/// A physical function as its VM sees it; see the module documentation.
pub struct PassthroughDevice {
    phys: PhysFunction,
    host: Box<dyn HostFunction>,
    cfg: ConfigSpace,
    msi: Option<Msi>,
    msix: Option<MsiX>,
    /// The hypervisor's message for each message number.
    host_messages: Vec<MsiMessage>,
    irq: Arc<IrqPending>,
    phys_msi_on: bool,
    phys_msix_on: bool,
    /// The guest sees INTx asserted (from the host interrupt until the guest's EOI).
    intx_line: bool,
    stats: PassthroughStats,
}

impl PassthroughDevice {
    /// The VM's view of `phys`, with BAR `i` at guest address `bar_addresses[i]` (memory) or
    /// port (I/O); `host_messages[n]` is what the real function sends for message `n` (at most
    /// [`MAX_MESSAGES`] are used). With `intx` the guest gets the function's INTx pin (the
    /// hypervisor routes its I/O APIC input to [`IrqPending::raise_intx`]); without, the pin
    /// reads 0. The real function is quiesced first: decoding, bus mastering, MSI and MSI-X
    /// off, until the guest turns them on.
    pub fn new(
        phys: PhysFunction,
        host: Box<dyn HostFunction>,
        bar_addresses: &[(u8, u64)],
        mut host_messages: Vec<MsiMessage>,
        irq: Arc<IrqPending>,
        intx: bool,
    ) -> Result<Self, PassthroughError> {
        host_messages.truncate(MAX_MESSAGES);
        let ids = PciIds {
            vendor_id: phys.vendor_id,
            device_id: phys.device_id,
            revision: phys.revision,
            class: (phys.class >> 16) as u8,
            subclass: (phys.class >> 8) as u8,
            prog_if: phys.class as u8,
            subsystem_vendor_id: phys.subsystem_vendor_id,
            subsystem_id: phys.subsystem_id,
        };
        let mut cfg = ConfigSpace::new(&ids);
        for b in &phys.bars {
            let bar = match b.kind {
                BarKind::Io => Bar::Io {
                    size: u32::try_from(b.size).ok().filter(|s| *s <= 256).ok_or(
                        PassthroughError::IoBarTooBig {
                            index: b.index,
                            size: b.size,
                        },
                    )?,
                },
                BarKind::Mem32 { prefetchable } => Bar::Memory32 {
                    size: b.size as u32,
                    prefetchable,
                },
                BarKind::Mem64 { prefetchable } => Bar::Memory64 {
                    size: b.size,
                    prefetchable,
                },
            };
            cfg.set_bar(usize::from(b.index), bar)
                .map_err(|error| PassthroughError::Bar {
                    index: b.index,
                    error,
                })?;
            if let Some(&(_, address)) = bar_addresses.iter().find(|(i, _)| *i == b.index) {
                if address % b.size != 0 {
                    return Err(PassthroughError::BarPlacement {
                        index: b.index,
                        address,
                        size: b.size,
                    });
                }
                cfg.set_bar_address(usize::from(b.index), address);
            }
        }
        if intx && (1..=4).contains(&phys.interrupt_pin) {
            cfg.set_interrupt_pin(phys.interrupt_pin)
                .map_err(PassthroughError::Capability)?;
        }
        let wants_vectors = phys.caps.msi.is_some() || phys.caps.msix.is_some();
        if wants_vectors && host_messages.is_empty() {
            return Err(PassthroughError::NoHostVectors);
        }
        let msi = match phys.caps.msi {
            Some(_) => Some(Msi::install(&mut cfg, 1, true).map_err(PassthroughError::Capability)?),
            None => None,
        };
        let msix = match phys.caps.msix {
            Some(m) => {
                let entries = m.entries.min(host_messages.len() as u16);
                Some(
                    MsiX::install(
                        &mut cfg,
                        entries,
                        (m.table_bar, m.table_offset),
                        (m.pba_bar, m.pba_offset),
                    )
                    .map_err(PassthroughError::Capability)?,
                )
            }
            None => None,
        };
        let mut dev = PassthroughDevice {
            phys,
            host,
            cfg,
            msi,
            msix,
            host_messages,
            irq,
            phys_msi_on: true,
            phys_msix_on: true,
            intx_line: false,
            stats: PassthroughStats::default(),
        };
        dev.quiesce();
        Ok(dev)
    }

    /// The physical function.
    pub fn phys(&self) -> &PhysFunction {
        &self.phys
    }

    /// What it did so far.
    pub fn stats(&self) -> PassthroughStats {
        self.stats
    }

    /// The guest's interrupt mode: `off`, `msi` or `msi-x`.
    pub fn interrupt_mode(&self) -> &'static str {
        self.irq.mode()
    }

    /// Turns the real function's decoding, bus mastering and interrupts off.
    fn quiesce(&mut self) {
        let command = self.host.config_read(0x04);
        self.host.config_write(
            0x04,
            (command & 0xFFFF) & !u32::from(COMMAND_MIRRORED) | u32::from(COMMAND_INTX_DISABLE),
        );
        self.set_phys_msi(false);
        self.set_phys_msix(false);
    }

    fn sync_command(&mut self) {
        let want = self.cfg.command() & COMMAND_MIRRORED;
        let command = self.host.config_read(0x04) & 0xFFFF;
        let new = (command & !u32::from(COMMAND_MIRRORED)) | u32::from(want);
        if new != command {
            self.host.config_write(0x04, new);
        }
    }

    fn sync_interrupts(&mut self, out: &mut Vec<MsiMessage>) {
        let msix_on = self.msix.as_ref().is_some_and(|m| m.enabled(&self.cfg));
        let msi_on = !msix_on && self.msi.as_ref().is_some_and(|m| m.enabled(&self.cfg));
        // Off before on: the function never has both.
        if !msix_on {
            self.set_phys_msix(false);
        }
        if !msi_on {
            self.set_phys_msi(false);
        }
        self.set_phys_msix(msix_on);
        self.set_phys_msi(msi_on);
        let mode = if msix_on { 2 } else { u8::from(msi_on) };
        self.irq.mode.store(mode, Ordering::Relaxed);
        if let Some(m) = &mut self.msix {
            m.release_pending(&self.cfg, out);
        }
        if let Some(m) = &self.msi {
            m.release_pending(&mut self.cfg, out);
        }
    }

    fn set_phys_msi(&mut self, on: bool) {
        let Some(cap) = self.phys.caps.msi else {
            return;
        };
        if on == self.phys_msi_on {
            return;
        }
        self.phys_msi_on = on;
        self.stats.msi_switches += 1;
        let at = u16::from(cap.offset);
        let control = self.host.config_read(at);
        if !on {
            self.host.config_write(at, control & !MSI_ENABLE);
            return;
        }
        let Some(m) = self.host_messages.first().copied() else {
            return;
        };
        self.host.config_write(at + 4, m.address as u32);
        let data_at = if cap.addr64 {
            self.host.config_write(at + 8, (m.address >> 32) as u32);
            at + 12
        } else {
            at + 8
        };
        // Message data is the low 16 bits; the upper half is reserved (or extended data).
        let old = self.host.config_read(data_at);
        self.host
            .config_write(data_at, (old & 0xFFFF_0000) | (m.data & 0xFFFF));
        if cap.maskable {
            self.host.config_write(data_at + 4, 0);
        }
        self.host
            .config_write(at, (control & !MSI_MME) | MSI_ENABLE);
    }

    fn set_phys_msix(&mut self, on: bool) {
        let Some(cap) = self.phys.caps.msix else {
            return;
        };
        if on == self.phys_msix_on {
            return;
        }
        self.phys_msix_on = on;
        self.stats.msi_switches += 1;
        let at = u16::from(cap.offset);
        let control = self.host.config_read(at);
        if !on {
            self.host.config_write(at, control & !MSIX_ENABLE);
            return;
        }
        // Entries first (the function is off and masked while they change), then enable.
        self.host
            .config_write(at, (control & !MSIX_ENABLE) | MSIX_FUNCTION_MASK);
        let count = usize::from(cap.entries).min(self.host_messages.len());
        for n in 0..count {
            let m = self.host_messages[n];
            let e = u64::from(cap.table_offset) + n as u64 * MSIX_ENTRY_SIZE;
            self.host
                .bar_write(cap.table_bar, e, 4, m.address & 0xFFFF_FFFF);
            self.host
                .bar_write(cap.table_bar, e + 4, 4, m.address >> 32);
            self.host
                .bar_write(cap.table_bar, e + 8, 4, u64::from(m.data));
            self.host.bar_write(cap.table_bar, e + 12, 4, 0);
        }
        self.host
            .config_write(at, (control & !MSIX_FUNCTION_MASK) | MSIX_ENABLE);
    }

    fn in_bar(&self, bar: usize, offset: u64, size: u8) -> bool {
        u8::try_from(bar)
            .ok()
            .and_then(|b| self.phys.bar(b))
            .is_some_and(|b| {
                offset
                    .checked_add(u64::from(size))
                    .is_some_and(|end| end <= b.size)
            })
    }
}

impl PciDevice for PassthroughDevice {
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }

    fn config_written(&mut self, offset: u16, out: &mut Vec<MsiMessage>) {
        if offset == 0x04 {
            self.sync_command();
        }
        let msi_at = self.msi.as_ref().map(|m| m.offset() as u16);
        let msix_at = self.msix.as_ref().map(|m| m.offset() as u16);
        if msi_at.is_some_and(|at| (at..at + 0x18).contains(&offset))
            || msix_at.is_some_and(|at| at == offset)
        {
            self.sync_interrupts(out);
        }
    }

    fn bar_read(&mut self, bar: usize, offset: u64, size: u8, _out: &mut Vec<MsiMessage>) -> u64 {
        if let Some(m) = &self.msix {
            if let Some(region) = u8::try_from(bar).ok().and_then(|b| m.region(b, offset)) {
                return m.read(region, size);
            }
        }
        if !self.in_bar(bar, offset, size) {
            return vdev::all_ones(size).into();
        }
        self.stats.bar_reads += 1;
        self.host.bar_read(bar as u8, offset, size)
    }

    fn bar_write(
        &mut self,
        bar: usize,
        offset: u64,
        size: u8,
        value: u64,
        out: &mut Vec<MsiMessage>,
    ) {
        if let Some(m) = &mut self.msix {
            if let Some(region) = u8::try_from(bar).ok().and_then(|b| m.region(b, offset)) {
                m.write(&self.cfg, region, size, value, out);
                self.stats.messages += out.len() as u64;
                return;
            }
        }
        if !self.in_bar(bar, offset, size) {
            return;
        }
        self.stats.bar_writes += 1;
        self.host.bar_write(bar as u8, offset, size, value);
    }

    fn poll(&mut self, out: &mut Vec<MsiMessage>) {
        if self.irq.intx.swap(false, Ordering::Acquire) {
            self.stats.interrupts += 1;
            self.intx_line = true;
        }
        let mut bits = self.irq.take();
        let before = out.len();
        while bits != 0 {
            let n = bits.trailing_zeros();
            bits &= bits - 1;
            self.stats.interrupts += 1;
            if let Some(m) = self.msix.as_mut().filter(|m| m.enabled(&self.cfg)) {
                out.extend(m.signal(&self.cfg, n as usize));
            } else if let Some(m) = self.msi.as_ref().filter(|m| m.enabled(&self.cfg)) {
                out.extend(m.signal(&mut self.cfg, n));
            }
        }
        self.stats.messages += (out.len() - before) as u64;
    }

    fn has_input(&self) -> bool {
        self.irq.any()
    }

    fn intx_asserted(&self) -> bool {
        self.intx_line
    }

    fn intx_eoi(&mut self) {
        if core::mem::take(&mut self.intx_line) {
            self.host.intx_unmask();
        }
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }

    fn direct_ranges(&self, bar: usize, out: &mut Vec<DirectRange>) {
        let Some(b) = u8::try_from(bar).ok().and_then(|i| self.phys.bar(i)) else {
            return;
        };
        if b.kind == BarKind::Io || b.size < PAGE || b.base % PAGE != 0 {
            return;
        }
        // The pages holding the MSI-X table and PBA stay trapped (the guest's entries are
        // emulated); everything else of the BAR is the real registers.
        let mut holes: Vec<(u64, u64)> = Vec::new();
        if let (Some(cap), Some(m)) = (self.phys.caps.msix, &self.msix) {
            let table_len = m.entries() as u64 * MSIX_ENTRY_SIZE;
            let pba_len = (m.entries() as u64).div_ceil(64) * 8;
            for (bir, off, len) in [
                (cap.table_bar, u64::from(cap.table_offset), table_len),
                (cap.pba_bar, u64::from(cap.pba_offset), pba_len),
            ] {
                if usize::from(bir) == bar {
                    let start = off / PAGE * PAGE;
                    let end = (off + len).div_ceil(PAGE) * PAGE;
                    holes.push((start, end.min(b.size)));
                }
            }
        }
        holes.sort_unstable();
        let mut at = 0;
        for (start, end) in holes {
            if start > at {
                out.push(DirectRange {
                    offset: at,
                    len: start - at,
                    host: b.base + at,
                    kind: DirectKind::Mmio,
                });
            }
            at = at.max(end);
        }
        if at < b.size {
            out.push(DirectRange {
                offset: at,
                len: b.size - at,
                host: b.base + at,
                kind: DirectKind::Mmio,
            });
        }
    }
}

/// Bytes of a page the second-level tables map.
const PAGE: u64 = 4096;

impl Drop for PassthroughDevice {
    /// A VM that stops or reboots leaves its function quiet: no DMA, no interrupts.
    fn drop(&mut self) {
        self.irq.mode.store(0, Ordering::Relaxed);
        self.quiesce();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::scan;
    use crate::sim::{SimBus, SimFunction, SimHost};
    use vdev::{Bdf, PciFunction};

    fn host_messages(n: usize) -> Vec<MsiMessage> {
        (0..n)
            .map(|i| MsiMessage {
                address: 0xFEE0_1000,
                data: 0x40 + i as u32,
            })
            .collect()
    }

    fn make(
        f: SimFunction,
        addresses: &[(u8, u64)],
    ) -> (PassthroughDevice, SimHost, Arc<IrqPending>) {
        let mut bus = SimBus::default();
        bus.add(Bdf::new(0, 5, 0).unwrap(), f.clone());
        let phys = scan(&mut bus).remove(0);
        let host = SimHost::new(f);
        let irq = Arc::new(IrqPending::default());
        let dev = PassthroughDevice::new(
            phys,
            Box::new(host.clone()),
            addresses,
            host_messages(4),
            irq.clone(),
            true,
        )
        .unwrap();
        (dev, host, irq)
    }

    fn cfg_write(dev: &mut PassthroughDevice, offset: u16, value: u32) -> Vec<MsiMessage> {
        let mut out = Vec::new();
        dev.config_mut().config_write(offset & !3, value, 0xF);
        dev.config_written(offset & !3, &mut out);
        out
    }

    fn cfg_read(dev: &mut PassthroughDevice, offset: u16) -> u32 {
        dev.config_mut().config_read(offset)
    }

    /// The offset of the virtual capability with `id`.
    fn cap(dev: &mut PassthroughDevice, id: u8) -> u16 {
        let mut at = cfg_read(dev, 0x34) as u8;
        while at != 0 {
            let head = cfg_read(dev, u16::from(at));
            if head as u8 == id {
                return u16::from(at);
            }
            at = (head >> 8) as u8;
        }
        panic!("no capability {id:#x}")
    }

    #[test]
    fn identity_and_bars_virtual_real_function_quiet() {
        let (mut dev, host, _) = make(
            SimFunction::nic(),
            &[(0, 0xD000_0000), (2, 0xD000), (3, 0xD010_0000)],
        );
        assert_eq!(cfg_read(&mut dev, 0), 0x10d3_8086);
        assert_eq!(cfg_read(&mut dev, 0x08) >> 8, 0x020000);
        assert_eq!(cfg_read(&mut dev, 0x10), 0xD000_0000);
        assert_eq!(cfg_read(&mut dev, 0x18), 0xD001);
        assert_eq!(cfg_read(&mut dev, 0x1C), 0xD010_0004);
        // Sizing through the virtual BAR shows the real size.
        cfg_write(&mut dev, 0x10, u32::MAX);
        assert_eq!(cfg_read(&mut dev, 0x10), !(128 * 1024 - 1) & !0xF);
        // Expansion ROM, PCIe capability and extended space hidden.
        assert_eq!(cfg_read(&mut dev, 0x30), 0);
        assert_eq!(cfg_read(&mut dev, 0x100), 0);
        let mut at = cfg_read(&mut dev, 0x34) as u8;
        while at != 0 {
            let head = cfg_read(&mut dev, u16::from(at));
            assert!(
                matches!(head as u8, 0x05 | 0x11),
                "capability {:#x} exposed",
                head as u8
            );
            at = (head >> 8) as u8;
        }
        // The real function was quiesced: no decode, no bus master, MSI/MSI-X off.
        host.with(|f| {
            assert_eq!(f.peek(0x04) & 0x7, 0);
            assert_eq!(f.peek(0x50) & MSI_ENABLE, 0);
            assert_eq!(f.peek(0x70) & MSIX_ENABLE, 0);
            // Its BARs were never moved.
            assert_eq!(f.peek(0x10), 0xfeb0_0000);
        });
        // Guest command bits are mirrored (decode and bus master), others are not.
        cfg_write(&mut dev, 0x04, 0x0147);
        host.with(|f| assert_eq!(f.peek(0x04) & 0xFFFF, 0x0007));
    }

    #[test]
    fn bar_access_forwarded_with_offsets_and_bounded() {
        let (mut dev, host, _) = make(SimFunction::nic(), &[]);
        let mut out = Vec::new();
        dev.bar_write(0, 0x100, 4, 0xdead_beef, &mut out);
        host.with(|f| assert_eq!(&f.bar_mem[0][0x100..0x104], &0xdead_beefu32.to_le_bytes()));
        assert_eq!(dev.bar_read(0, 0x100, 2, &mut out), 0xbeef);
        // Past the BAR's end, or a BAR that does not exist: nothing reaches the function.
        assert_eq!(dev.bar_read(0, 128 * 1024 - 2, 4, &mut out), 0xFFFF_FFFF);
        dev.bar_write(1, 0, 4, 1, &mut out);
        dev.bar_write(0, u64::MAX - 1, 4, 1, &mut out);
        assert_eq!(dev.stats().bar_writes, 1);
    }

    #[test]
    fn msix_remapped_to_host_messages_and_back() {
        let (mut dev, host, irq) = make(SimFunction::nic(), &[]);
        let at = cap(&mut dev, 0x11);
        // The guest sees at most as many entries as there are host vectors.
        assert_eq!((cfg_read(&mut dev, at) >> 16) & 0x7FF, 3);
        // Guest programs entry 1 (table in BAR 3 at 0) and enables MSI-X.
        let mut out = Vec::new();
        dev.bar_write(3, 16, 4, 0xFEE0_2000, &mut out);
        dev.bar_write(3, 24, 4, 0x61, &mut out);
        dev.bar_write(3, 28, 4, 0, &mut out);
        let v = cfg_read(&mut dev, at) | MSIX_ENABLE;
        cfg_write(&mut dev, at, v);
        host.with(|f| {
            assert_ne!(f.peek(0x70) & MSIX_ENABLE, 0);
            assert_eq!(f.peek(0x70) & MSIX_FUNCTION_MASK, 0);
            // The real table holds the host's messages, never the guest's.
            let e1 = &f.bar_mem[3][16..32];
            assert_eq!(
                u32::from_le_bytes(e1[0..4].try_into().unwrap()),
                0xFEE0_1000
            );
            assert_eq!(u32::from_le_bytes(e1[8..12].try_into().unwrap()), 0x41);
            assert_eq!(u32::from_le_bytes(e1[12..16].try_into().unwrap()), 0);
        });
        // Host vector of message 1 fires: the guest's message 1 comes out.
        irq.raise(1);
        assert!(dev.has_input());
        dev.poll(&mut out);
        assert_eq!(
            out,
            [MsiMessage {
                address: 0xFEE0_2000,
                data: 0x61
            }]
        );
        // Message 0 is still masked (reset state): pending, delivered on unmask.
        out.clear();
        irq.raise(0);
        dev.poll(&mut out);
        assert!(out.is_empty());
        dev.bar_write(3, 0, 4, 0xFEE0_0000, &mut out);
        dev.bar_write(3, 8, 4, 0x60, &mut out);
        dev.bar_write(3, 12, 4, 0, &mut out);
        assert_eq!(
            out,
            [MsiMessage {
                address: 0xFEE0_0000,
                data: 0x60
            }]
        );
        // A message number the guest does not have delivers nothing.
        out.clear();
        irq.raise(9);
        dev.poll(&mut out);
        assert!(out.is_empty());
        // Disable: the real function stops signalling.
        let v = cfg_read(&mut dev, at) & !MSIX_ENABLE;
        cfg_write(&mut dev, at, v);
        host.with(|f| assert_eq!(f.peek(0x70) & MSIX_ENABLE, 0));
    }

    #[test]
    fn msi_remapped_single_vector() {
        let (mut dev, host, irq) = make(SimFunction::edu(), &[]);
        let at = cap(&mut dev, 0x05);
        cfg_write(&mut dev, at + 4, 0xFEE0_3000);
        cfg_write(&mut dev, at + 8, 0);
        cfg_write(&mut dev, at + 12, 0x4071);
        // Guest asks for 32 vectors: it has one.
        let v = cfg_read(&mut dev, at) | MSI_ENABLE | (5 << 20);
        let out = cfg_write(&mut dev, at, v);
        assert!(out.is_empty());
        host.with(|f| {
            let control = f.peek(0x40);
            assert_ne!(control & MSI_ENABLE, 0);
            assert_eq!(control & MSI_MME, 0);
            assert_eq!(f.peek(0x44), 0xFEE0_1000);
            assert_eq!(f.peek(0x4C) & 0xFFFF, 0x40);
        });
        irq.raise(0);
        let mut out = Vec::new();
        dev.poll(&mut out);
        assert_eq!(
            out,
            [MsiMessage {
                address: 0xFEE0_3000,
                data: 0x4071
            }]
        );
        assert_eq!(dev.interrupt_mode(), "msi");
        // Dropping the device (VM stops) turns everything off again.
        cfg_write(&mut dev, 0x04, 0x6);
        host.with(|f| assert_eq!(f.peek(0x04) & 0x6, 0x6));
        drop(dev);
        host.with(|f| {
            assert_eq!(f.peek(0x04) & 0x7, 0);
            assert_eq!(f.peek(0x40) & MSI_ENABLE, 0);
        });
    }

    #[test]
    fn hostile_config_and_bar_values() {
        let (mut dev, host, irq) = make(SimFunction::nic(), &[(0, 0xD000_0000)]);
        // Garbage everywhere in config space, every width offset.
        for offset in (0..0x1000u16).step_by(4) {
            cfg_write(&mut dev, offset, 0xFFFF_FFFF);
            cfg_write(&mut dev, offset, 0x5A5A_5A5A);
        }
        // Nothing but the mirrored command bits and the interrupt capabilities reached the
        // real function: no BAR, no ROM, no PCIe control (FLR bit), no PM.
        host.with(|f| {
            assert_eq!(f.peek(0x10), 0xfeb0_0000);
            assert_eq!(f.peek(0x30), 0);
            assert_eq!(f.peek(0x98), 0);
            for (offset, _) in &f.writes {
                assert!(
                    *offset == 0x04 || (0x50..0x68).contains(offset) || *offset == 0x70,
                    "config write at {offset:#x} reached the function"
                );
            }
        });
        // Interrupt bits for messages that do not exist, MSI-X table junk of every width.
        let mut out = Vec::new();
        for size in [1, 2, 3, 4, 8, 16] {
            dev.bar_write(3, 5, size, u64::MAX, &mut out);
            let _ = dev.bar_read(3, 0x2001, size, &mut out);
        }
        irq.raise(63);
        irq.raise(200);
        dev.poll(&mut out);
        for m in &out {
            assert_eq!(m.address & 0xFFF0_0000, 0xFEE0_0000, "bogus message {m:?}");
        }
    }

    #[test]
    fn intx_forwarded_until_the_guest_eoi() {
        use vdev::{PciInterrupt, PciSegment, SegmentLayout};
        let (dev, host, irq) = make(SimFunction::edu(), &[(0, 0xD000_0000)]);
        assert_eq!(dev.config().interrupt_pin(), 1);
        let mut seg = PciSegment::new(SegmentLayout {
            ecam_base: 0xE000_0000,
            bus_end: 0,
            mmio_window: 0xC000_0000..0xE000_0000,
            io_window: 0xC000..0x1_0000,
            intx_gsi_base: 16,
        });
        seg.add(Bdf::new(0, 4, 0).unwrap(), Box::new(dev)).unwrap();
        // Slot 4, INTA -> GSI 16 + 4 % 4.
        let gsi = 16;
        seg.take_interrupts();
        irq.raise_intx();
        assert!(seg.has_input());
        seg.poll();
        assert_eq!(
            seg.take_interrupts(),
            [PciInterrupt::Intx { gsi, level: true }]
        );
        // Status bit 3 shows it (PCI 2.3).
        let status = seg
            .device(Bdf::new(0, 4, 0).unwrap())
            .unwrap()
            .config()
            .status();
        assert_ne!(status & vdev::STATUS_INTERRUPT, 0);
        // An EOI on another GSI changes nothing; on its own, the line drops and the real input
        // is unmasked once.
        seg.intx_eoi(gsi + 1);
        assert!(seg.take_interrupts().is_empty());
        seg.intx_eoi(gsi);
        assert_eq!(
            seg.take_interrupts(),
            [PciInterrupt::Intx { gsi, level: false }]
        );
        seg.intx_eoi(gsi);
        assert!(seg.take_interrupts().is_empty());
        host.with(|f| assert_eq!(f.intx_unmasks, 1));
    }

    #[test]
    fn no_intx_pin_without_a_route() {
        let mut bus = SimBus::default();
        bus.add(Bdf::new(0, 4, 0).unwrap(), SimFunction::edu());
        let phys = scan(&mut bus).remove(0);
        let dev = PassthroughDevice::new(
            phys,
            Box::new(SimHost::new(SimFunction::edu())),
            &[],
            host_messages(1),
            Arc::new(IrqPending::default()),
            false,
        )
        .unwrap();
        assert_eq!(dev.config().interrupt_pin(), 0);
    }

    #[test]
    fn direct_ranges_skip_the_msix_pages() {
        let (dev, _, _) = make(SimFunction::nic(), &[]);
        let mut out = Vec::new();
        // BAR 0: 128 KiB of registers, all direct.
        dev.direct_ranges(0, &mut out);
        assert_eq!(
            out,
            [DirectRange {
                offset: 0,
                len: 128 << 10,
                host: 0xfeb0_0000,
                kind: DirectKind::Mmio,
            }]
        );
        // BAR 3: MSI-X table (page 0) and PBA (page 2) trapped, pages 1 and 3 direct.
        out.clear();
        dev.direct_ranges(3, &mut out);
        assert_eq!(
            out,
            [
                DirectRange {
                    offset: 0x1000,
                    len: 0x1000,
                    host: 0x8_0000_1000,
                    kind: DirectKind::Mmio,
                },
                DirectRange {
                    offset: 0x3000,
                    len: 0x1000,
                    host: 0x8_0000_3000,
                    kind: DirectKind::Mmio,
                }
            ]
        );
        // I/O BARs and BARs that do not exist: nothing.
        out.clear();
        dev.direct_ranges(2, &mut out);
        dev.direct_ranges(1, &mut out);
        dev.direct_ranges(9, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn bar_moves_become_second_level_changes() {
        use vdev::{PciSegment, SegmentLayout, SlatOp};
        let (dev, _, _) = make(
            SimFunction::nic(),
            &[(0, 0xD000_0000), (2, 0xD000), (3, 0xD010_0000)],
        );
        let mut seg = PciSegment::new(SegmentLayout {
            ecam_base: 0xE000_0000,
            bus_end: 0,
            mmio_window: 0xC000_0000..0xE000_0000,
            io_window: 0xC000..0x1_0000,
            intx_gsi_base: 16,
        });
        seg.add(Bdf::new(0, 5, 0).unwrap(), Box::new(dev)).unwrap();
        let cfg = 0xE000_0000 + (5 << 15);
        // Nothing decodes yet: nothing mapped.
        assert!(seg.take_slat_ops().is_empty());
        seg.mmio_write(cfg + 4, 2, 0x2);
        let map = |gpa, len, host| SlatOp::Map { gpa, len, host };
        assert_eq!(
            seg.take_slat_ops(),
            [
                map(0xD000_0000, 128 << 10, 0xfeb0_0000),
                map(0xD010_1000, 0x1000, 0x8_0000_1000),
                map(0xD010_3000, 0x1000, 0x8_0000_3000),
            ]
        );
        // The guest moves BAR 0: the old range goes, the new one comes.
        seg.mmio_write(cfg + 0x10, 4, 0xD040_0000);
        assert_eq!(
            seg.take_slat_ops(),
            [
                SlatOp::Unmap {
                    gpa: 0xD000_0000,
                    len: 128 << 10
                },
                map(0xD040_0000, 128 << 10, 0xfeb0_0000),
            ]
        );
        // Memory decoding off: everything goes.
        seg.mmio_write(cfg + 4, 2, 0x0);
        assert_eq!(seg.take_slat_ops().len(), 3);
        // A BAR moved over RAM or outside the window never decodes, so never maps.
        seg.mmio_write(cfg + 0x10, 4, 0x0010_0000);
        seg.mmio_write(cfg + 4, 2, 0x2);
        assert!(seg.take_slat_ops().iter().all(|op| !matches!(
            op,
            SlatOp::Map {
                gpa: 0x0010_0000,
                ..
            }
        )));
    }
}
