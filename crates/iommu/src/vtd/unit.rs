//! [`Unit`]: one VT-d unit, from `init` (root table, invalidation, DMA
//! translation and interrupt remapping on) to attaching devices to domains,
//! flushing, and draining the fault recording registers.
//!
//! Sequences (VT-d specification chapters 6 and 10, and the order Linux's
//! driver uses): the root table is set with RTADDR then GCMD.SRTP, waiting
//! for GSTS.RTPS; then a global context-cache and a global IOTLB
//! invalidation through the registers (CCMD, IOTLB at ECAP.IRO); then, if
//! the unit has queued invalidation, the queue is enabled and used for every
//! later invalidation (register-based invalidation must not be used while
//! it is on, and the interrupt entry cache can only be invalidated through
//! it, so interrupt remapping needs it); then GCMD.TE. Interrupt remapping:
//! IRTA, GCMD.SIRTP (wait IRTPS), a global interrupt-entry-cache
//! invalidation, GCMD.IRE (wait IRES), with GCMD.CFI left clear so that
//! compatibility-format interrupts (the old MSI and I/O APIC formats) are
//! blocked. Every GCMD write keeps the GSTS state bits and never repeats a
//! one-shot command. Every wait is bounded by the configured budget.

use core::fmt;

use platform::HostPhysAddr;

use super::caps::Caps;
use super::fault::FaultRecord;
use super::irte::{remapped_msi, Irte};
use super::regs::*;
use crate::bdf::Bdf;
use crate::hw::{DmaMemory, MsiMessage, Regs, FRAME_SIZE};
use crate::wait::{poll, DEFAULT_WAIT_BUDGET};

/// How [`Unit::init`] sets the unit up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Polls per wait before it fails with [`Error::Timeout`].
    pub wait_budget: u32,
    /// Use the invalidation queue when the unit has one (required for
    /// interrupt remapping).
    pub queued_invalidation: bool,
    /// Entries of the interrupt remapping table (a power of two, 2 to
    /// 65536); 0 leaves interrupt remapping off. Ignored if the unit has no
    /// interrupt remapping ([`Unit::ir_enabled`] tells).
    pub irte_entries: u32,
    /// x2APIC destinations (IRTA.EIME): the CPUs run in x2APIC mode.
    pub x2apic: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            wait_budget: DEFAULT_WAIT_BUDGET,
            queued_invalidation: true,
            irte_entries: 256,
            x2apic: false,
        }
    }
}

/// What went wrong talking to a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The version register reads as all ones or zero: no unit there.
    NoUnit {
        /// The value read.
        version: u32,
    },
    /// The unit never reported completion.
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// The register polled.
        register: usize,
        /// Its last value.
        value: u64,
    },
    /// [`DmaMemory::alloc_frames`] failed.
    OutOfMemory {
        /// What the memory was for.
        what: &'static str,
    },
    /// The unit supports neither 3- nor 4-level tables.
    NoUsableLevels {
        /// CAP.SAGAW.
        sagaw: u8,
    },
    /// `attach` was asked for a walk depth the unit does not support.
    LevelsUnsupported {
        /// Levels asked for.
        levels: u8,
        /// CAP.SAGAW.
        sagaw: u8,
    },
    /// A domain id of 0 (reserved) or beyond CAP.ND.
    BadDomain {
        /// The id asked for.
        domain: u16,
        /// Domain ids the unit supports.
        supported: u32,
    },
    /// A table root that is not 4 KiB aligned or lies beyond the unit's
    /// address width.
    BadRoot {
        /// The root given.
        root: HostPhysAddr,
        /// CAP.MGAW + 1.
        width: u8,
    },
    /// The unit refused an invalidation descriptor (FSTS.IQE).
    QueueError {
        /// IQH: the offending descriptor's offset in the queue.
        head: u64,
    },
    /// Interrupt remapping was asked on a unit without queued invalidation
    /// (or with it turned off in the configuration).
    IrNeedsQueuedInvalidation,
    /// An interrupt remapping call while interrupt remapping is off.
    IrOff,
    /// The configured IRTE count is not a power of two in 2..=65536.
    BadIrteCount {
        /// The count configured.
        entries: u32,
    },
    /// An IRTE index beyond the table.
    BadIrteIndex {
        /// The index given.
        index: u16,
        /// The table's entries.
        entries: u32,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoUnit { version } => {
                write!(f, "no VT-d unit: version register reads {version:#x}")
            }
            Self::Timeout {
                what,
                register,
                value,
            } => write!(
                f,
                "VT-d unit did not complete {what}: register {register:#x} still {value:#x}"
            ),
            Self::OutOfMemory { what } => write!(f, "no memory for the VT-d {what}"),
            Self::NoUsableLevels { sagaw } => write!(
                f,
                "VT-d unit supports neither 3- nor 4-level tables (SAGAW {sagaw:#x})"
            ),
            Self::LevelsUnsupported { levels, sagaw } => write!(
                f,
                "VT-d unit does not walk {levels}-level tables (SAGAW {sagaw:#x})"
            ),
            Self::BadDomain { domain, supported } => write!(
                f,
                "domain id {domain} is reserved or beyond the unit's {supported} ids (use 1..{supported})"
            ),
            Self::BadRoot { root, width } => write!(
                f,
                "table root {root} is not 4 KiB aligned or beyond the unit's {width}-bit width"
            ),
            Self::QueueError { head } => write!(
                f,
                "VT-d unit refused the invalidation descriptor at queue offset {head:#x}"
            ),
            Self::IrNeedsQueuedInvalidation => f.write_str(
                "interrupt remapping needs queued invalidation, which the unit lacks or is off",
            ),
            Self::IrOff => f.write_str("interrupt remapping is off on this VT-d unit"),
            Self::BadIrteCount { entries } => write!(
                f,
                "{entries} interrupt remapping entries: not a power of two in 2..=65536"
            ),
            Self::BadIrteIndex { index, entries } => write!(
                f,
                "interrupt remapping index {index} beyond the table's {entries} entries"
            ),
        }
    }
}

/// The invalidation queue: one page of 256 descriptors, and a status word
/// (in the next frame) that wait descriptors write.
#[derive(Clone, Copy, Debug)]
struct Queue {
    base: HostPhysAddr,
    status: HostPhysAddr,
    /// Next free slot.
    tail: u64,
    /// Last status value asked for.
    seq: u32,
}

/// One VT-d unit, driven through `R`.
#[derive(Debug)]
pub struct Unit<R: Regs> {
    regs: R,
    caps: Caps,
    config: Config,
    levels: u8,
    root_table: HostPhysAddr,
    queue: Option<Queue>,
    /// Interrupt remapping table and its entries, once IR is on.
    irt: Option<(HostPhysAddr, u32)>,
    attached: u32,
    faults: u64,
    overflows: u64,
}

impl<R: Regs> Unit<R> {
    /// Takes over the unit behind `regs`: turns off whatever firmware left
    /// on, installs an empty root table (every device blocked: a request
    /// from a device with no context entry faults), invalidates the caches,
    /// enables queued invalidation, DMA remapping and, if configured and
    /// offered, interrupt remapping.
    pub fn init(mut regs: R, mem: &mut impl DmaMemory, config: Config) -> Result<Self, Error> {
        let version = regs.read32(VER);
        if version == 0 || version == u32::MAX {
            return Err(Error::NoUnit { version });
        }
        let caps = Caps::new(version, regs.read64(CAP), regs.read64(ECAP));
        let levels = if caps.supports_levels(4) {
            4
        } else if caps.supports_levels(3) {
            3
        } else {
            return Err(Error::NoUsableLevels {
                sagaw: caps.sagaw(),
            });
        };
        let want_ir = caps.interrupt_remapping() && config.irte_entries != 0;
        if want_ir && !(config.queued_invalidation && caps.queued_invalidation()) {
            return Err(Error::IrNeedsQueuedInvalidation);
        }
        if want_ir
            && (!config.irte_entries.is_power_of_two()
                || !(2..=65536).contains(&config.irte_entries))
        {
            return Err(Error::BadIrteCount {
                entries: config.irte_entries,
            });
        }
        let root_table = mem
            .alloc_frames(1, FRAME_SIZE)
            .ok_or(Error::OutOfMemory { what: "root table" })?;
        let mut unit = Self {
            regs,
            caps,
            config,
            levels,
            root_table,
            queue: None,
            irt: None,
            attached: 0,
            faults: 0,
            overflows: 0,
        };
        // Firmware (or an earlier boot stage) may have left things on.
        for (bit, what) in [
            (IRE, "interrupt remapping off"),
            (TE, "translation off"),
            (QIE, "queued invalidation off"),
        ] {
            if unit.regs.read32(GSTS) & bit != 0 {
                unit.gcmd(bit, false, what)?;
            }
        }
        unit.regs.write64(RTADDR, root_table.0);
        unit.gcmd(SRTP, true, "root table pointer set")?;
        unit.write_buffer_flush()?;
        unit.ccmd(GRAN_GLOBAL << CIRG_SHIFT)?;
        unit.iotlb_register(GRAN_GLOBAL << IIRG_SHIFT)?;
        if config.queued_invalidation && caps.queued_invalidation() {
            let base = mem.alloc_frames(2, FRAME_SIZE).ok_or(Error::OutOfMemory {
                what: "invalidation queue",
            })?;
            unit.regs.write64(IQT, 0);
            // QS = 0 (one page), DW = 0 (128-bit descriptors).
            unit.regs.write64(IQA, base.0);
            unit.gcmd(QIE, true, "queued invalidation on")?;
            unit.queue = Some(Queue {
                base,
                status: HostPhysAddr(base.0 + FRAME_SIZE),
                tail: 0,
                seq: 0,
            });
        }
        unit.gcmd(TE, true, "translation on")?;
        if want_ir {
            unit.enable_ir(mem)?;
        }
        Ok(unit)
    }

    fn enable_ir(&mut self, mem: &mut impl DmaMemory) -> Result<(), Error> {
        let entries = self.config.irte_entries;
        let frames = (entries as usize * 16).div_ceil(FRAME_SIZE as usize);
        let table = mem
            .alloc_frames(frames, FRAME_SIZE)
            .ok_or(Error::OutOfMemory {
                what: "interrupt remapping table",
            })?;
        // Entries = 2^(S + 1).
        let s = u64::from(entries.trailing_zeros() - 1);
        let eime = if self.config.x2apic { 1 << 11 } else { 0 };
        self.regs.write64(IRTA, table.0 | eime | s);
        self.gcmd(SIRTP, true, "interrupt remapping table pointer set")?;
        self.queue_submit(mem, [DESC_IEC, 0])?;
        self.queue_wait(mem)?;
        // CFI stays clear: compatibility-format interrupts are blocked.
        if self.regs.read32(GSTS) & CFI != 0 {
            self.gcmd(CFI, false, "compatibility-format interrupts blocked")?;
        }
        self.gcmd(IRE, true, "interrupt remapping on")?;
        self.irt = Some((table, entries));
        Ok(())
    }

    /// The unit's capabilities.
    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    /// The walk depth the unit was set up for: the `levels` to give
    /// [`attach`](Self::attach) and `paging::SecondLevelTables::dma_root`
    /// (4 where offered, else 3: then the VM's RAM must lie below 512 GiB).
    pub fn levels(&self) -> u8 {
        self.levels
    }

    /// Whether interrupt remapping is on.
    pub fn ir_enabled(&self) -> bool {
        self.irt.is_some()
    }

    /// Whether invalidations go through the queue.
    pub fn queued(&self) -> bool {
        self.queue.is_some()
    }

    /// Faults drained by [`poll_faults`](Self::poll_faults) so far, and how
    /// often the recording registers overflowed (faults lost).
    pub fn fault_counts(&self) -> (u64, u64) {
        (self.faults, self.overflows)
    }

    /// The registers, e.g. for a test to inspect a simulated unit.
    pub fn regs(&mut self) -> &mut R {
        &mut self.regs
    }

    /// Points `bdf` at the second-level tables rooted at `root` (from
    /// `SecondLevelTables::dma_root(levels)`) in `domain` (1..the unit's
    /// domain count; every device of one VM shares the VM's domain id). A
    /// device attached elsewhere is moved (its old context is made
    /// not-present and invalidated first). Invalidates the device's context
    /// and the domain's IOTLB entries.
    pub fn attach(
        &mut self,
        mem: &mut impl DmaMemory,
        bdf: Bdf,
        domain: u16,
        root: HostPhysAddr,
        levels: u8,
    ) -> Result<(), Error> {
        if !self.caps.supports_levels(levels) {
            return Err(Error::LevelsUnsupported {
                levels,
                sagaw: self.caps.sagaw(),
            });
        }
        self.check_domain(domain)?;
        let width = self.caps.mgaw();
        if !root.is_aligned(FRAME_SIZE) || (width < 64 && root.0 >> width != 0) {
            return Err(Error::BadRoot { root, width });
        }
        let ctx = self.context_table(mem, bdf.bus())?;
        let entry = HostPhysAddr(ctx.0 + u64::from(bdf.devfn()) * 16);
        let aw = u64::from(levels - 2);
        let lo = root.0 | PRESENT;
        let hi = aw | (u64::from(domain) << CTX_DID_SHIFT);
        let old_lo = mem.read_u64(entry);
        let old_hi = mem.read_u64(HostPhysAddr(entry.0 + 8));
        if old_lo & PRESENT != 0 {
            if old_lo == lo && old_hi == hi {
                return Ok(());
            }
            self.clear_context(mem, bdf, entry, old_hi)?;
        } else {
            self.attached += 1;
        }
        mem.write_u64(HostPhysAddr(entry.0 + 8), hi);
        mem.write_u64(entry, lo);
        self.sync(mem, entry, 16);
        // With caching mode, a not-present entry may be cached under domain 0.
        let did = if self.caps.caching_mode() { 0 } else { domain };
        self.invalidate_context(mem, bdf, did)?;
        self.invalidate_iotlb(mem, domain)
    }

    /// Makes `bdf`'s context entry not-present, so its DMA faults, and
    /// invalidates what the unit cached for it. Returns whether it was
    /// attached.
    pub fn detach(&mut self, mem: &mut impl DmaMemory, bdf: Bdf) -> Result<bool, Error> {
        let root_entry = mem.read_u64(HostPhysAddr(self.root_table.0 + u64::from(bdf.bus()) * 16));
        if root_entry & PRESENT == 0 {
            return Ok(false);
        }
        let entry = HostPhysAddr((root_entry & !0xfff) + u64::from(bdf.devfn()) * 16);
        let lo = mem.read_u64(entry);
        if lo & PRESENT == 0 {
            return Ok(false);
        }
        let hi = mem.read_u64(HostPhysAddr(entry.0 + 8));
        self.clear_context(mem, bdf, entry, hi)?;
        self.attached = self.attached.saturating_sub(1);
        Ok(true)
    }

    /// Invalidates the IOTLB entries of `domain`: call after changing its
    /// tables (unmapping, and mapping too when the unit caches not-present
    /// entries).
    pub fn flush_domain(&mut self, mem: &mut impl DmaMemory, domain: u16) -> Result<(), Error> {
        self.check_domain(domain)?;
        self.write_buffer_flush()?;
        self.invalidate_iotlb(mem, domain)
    }

    /// Hands every recorded fault to `report` and clears it (F is
    /// write-1-to-clear), and clears a fault overflow (FSTS.PFO). Returns
    /// how many were drained.
    pub fn poll_faults(&mut self, mut report: impl FnMut(FaultRecord)) -> usize {
        let fsts = self.regs.read32(FSTS);
        let mut drained = 0;
        if fsts & PPF != 0 {
            let records = self.caps.fault_records();
            let first = ((fsts >> FRI_SHIFT) & 0xff) as usize;
            for i in 0..records {
                let offset = self.caps.fault_offset() + ((first + i) % records) * 16;
                let hi = self.regs.read64(offset + 8);
                if hi & (1 << 63) == 0 {
                    continue;
                }
                let lo = self.regs.read64(offset);
                self.regs.write32(offset + 12, FRCD_F_DWORD3);
                report(FaultRecord::decode(lo, hi));
                drained += 1;
            }
        }
        if fsts & PFO != 0 {
            self.regs.write32(FSTS, PFO);
            self.overflows += 1;
        }
        self.faults += drained as u64;
        drained
    }

    /// Writes interrupt remapping entry `index` and invalidates it; returns
    /// the MSI message the device must send to use it (see
    /// [`remapped_msi`]; for an I/O APIC pin use
    /// [`ioapic_rte`](super::ioapic_rte) with the same index and vector).
    pub fn set_irte(
        &mut self,
        mem: &mut impl DmaMemory,
        index: u16,
        irte: &Irte,
    ) -> Result<MsiMessage, Error> {
        let entry = self.irte_addr(index)?;
        let [lo, hi] = irte.encode(self.config.x2apic);
        let old_lo = mem.read_u64(entry);
        let old_hi = mem.read_u64(HostPhysAddr(entry.0 + 8));
        if old_lo & PRESENT != 0 && old_hi != hi {
            // The unit reads the entry in two halves: never let it see the
            // new source check with the old target or the other way round.
            mem.write_u64(entry, 0);
            self.sync(mem, entry, 16);
            self.invalidate_irte(mem, index)?;
        }
        mem.write_u64(HostPhysAddr(entry.0 + 8), hi);
        mem.write_u64(entry, lo);
        self.sync(mem, entry, 16);
        self.invalidate_irte(mem, index)?;
        Ok(remapped_msi(index))
    }

    /// Makes entry `index` not-present (interrupts through it fault) and
    /// invalidates it.
    pub fn clear_irte(&mut self, mem: &mut impl DmaMemory, index: u16) -> Result<(), Error> {
        let entry = self.irte_addr(index)?;
        mem.write_u64(entry, 0);
        mem.write_u64(HostPhysAddr(entry.0 + 8), 0);
        self.sync(mem, entry, 16);
        self.invalidate_irte(mem, index)
    }

    fn irte_addr(&self, index: u16) -> Result<HostPhysAddr, Error> {
        let (table, entries) = self.irt.ok_or(Error::IrOff)?;
        if u32::from(index) >= entries {
            return Err(Error::BadIrteIndex { index, entries });
        }
        Ok(HostPhysAddr(table.0 + u64::from(index) * 16))
    }

    fn check_domain(&self, domain: u16) -> Result<(), Error> {
        let supported = self.caps.domains();
        if domain == 0 || u32::from(domain) >= supported {
            return Err(Error::BadDomain { domain, supported });
        }
        Ok(())
    }

    /// The context table for `bus`, created (and linked from the root
    /// table) if missing.
    fn context_table(&mut self, mem: &mut impl DmaMemory, bus: u8) -> Result<HostPhysAddr, Error> {
        let root_entry = HostPhysAddr(self.root_table.0 + u64::from(bus) * 16);
        let raw = mem.read_u64(root_entry);
        if raw & PRESENT != 0 {
            return Ok(HostPhysAddr(raw & !0xfff));
        }
        let table = mem.alloc_frames(1, FRAME_SIZE).ok_or(Error::OutOfMemory {
            what: "context table",
        })?;
        self.sync(mem, table, FRAME_SIZE);
        mem.write_u64(root_entry, table.0 | PRESENT);
        self.sync(mem, root_entry, 16);
        Ok(table)
    }

    fn clear_context(
        &mut self,
        mem: &mut impl DmaMemory,
        bdf: Bdf,
        entry: HostPhysAddr,
        old_hi: u64,
    ) -> Result<(), Error> {
        let old_domain = ((old_hi >> CTX_DID_SHIFT) & 0xffff) as u16;
        mem.write_u64(entry, 0);
        mem.write_u64(HostPhysAddr(entry.0 + 8), 0);
        self.sync(mem, entry, 16);
        self.invalidate_context(mem, bdf, old_domain)?;
        self.invalidate_iotlb(mem, old_domain)
    }

    fn sync(&mut self, mem: &mut impl DmaMemory, addr: HostPhysAddr, len: u64) {
        if !self.caps.coherent() {
            mem.flush(addr, len);
        }
    }

    fn invalidate_context(
        &mut self,
        mem: &mut impl DmaMemory,
        bdf: Bdf,
        domain: u16,
    ) -> Result<(), Error> {
        if self.queue.is_some() {
            let desc =
                DESC_CC | (GRAN_DEVICE << 4) | (u64::from(domain) << 16) | (u64::from(bdf.0) << 32);
            self.queue_submit(mem, [desc, 0])?;
            self.queue_wait(mem)
        } else {
            self.ccmd(
                (GRAN_DEVICE << CIRG_SHIFT)
                    | (u64::from(bdf.0) << CCMD_SID_SHIFT)
                    | u64::from(domain),
            )
        }
    }

    fn invalidate_iotlb(&mut self, mem: &mut impl DmaMemory, domain: u16) -> Result<(), Error> {
        let (dw, dr) = self.caps.drain();
        if self.queue.is_some() {
            let desc = DESC_IOTLB
                | (GRAN_DOMAIN << 4)
                | (u64::from(dw) << 6)
                | (u64::from(dr) << 7)
                | (u64::from(domain) << 16);
            self.queue_submit(mem, [desc, 0])?;
            self.queue_wait(mem)
        } else {
            let drain = if dw { IOTLB_DW } else { 0 } | if dr { IOTLB_DR } else { 0 };
            self.iotlb_register(
                (GRAN_DOMAIN << IIRG_SHIFT) | drain | (u64::from(domain) << IOTLB_DID_SHIFT),
            )
        }
    }

    fn invalidate_irte(&mut self, mem: &mut impl DmaMemory, index: u16) -> Result<(), Error> {
        self.queue_submit(mem, [DESC_IEC | IEC_INDEX | (u64::from(index) << 32), 0])?;
        self.queue_wait(mem)
    }

    /// Writes GCMD with `bit` set or cleared on top of the current state
    /// and waits until GSTS shows it (one-shot commands: until the status
    /// bit is set).
    fn gcmd(&mut self, bit: u32, on: bool, what: &'static str) -> Result<(), Error> {
        let state = self.regs.read32(GSTS) & GSTS_KEEP;
        let value = if on { state | bit } else { state & !bit };
        self.regs.write32(GCMD, value);
        let regs = &mut self.regs;
        let mut last = 0;
        poll(self.config.wait_budget, || {
            last = regs.read32(GSTS);
            ((last & bit != 0) == on).then_some(())
        })
        .ok_or(Error::Timeout {
            what,
            register: GSTS,
            value: u64::from(last),
        })
    }

    fn write_buffer_flush(&mut self) -> Result<(), Error> {
        if !self.caps.required_write_buffer_flush() {
            return Ok(());
        }
        let state = self.regs.read32(GSTS) & GSTS_KEEP;
        self.regs.write32(GCMD, state | WBF);
        self.wait_clear32(GSTS, WBF, "write buffer flush")
    }

    fn ccmd(&mut self, command: u64) -> Result<(), Error> {
        self.regs.write64(CCMD, ICC | command);
        self.wait_clear64(CCMD, ICC, "context-cache invalidation")
    }

    fn iotlb_register(&mut self, command: u64) -> Result<(), Error> {
        let (dw, dr) = self.caps.drain();
        let drain = if dw { IOTLB_DW } else { 0 } | if dr { IOTLB_DR } else { 0 };
        let offset = self.caps.iotlb_offset() + 8;
        self.regs.write64(offset, IVT | drain | command);
        self.wait_clear64(offset, IVT, "IOTLB invalidation")
    }

    fn wait_clear32(&mut self, register: usize, bit: u32, what: &'static str) -> Result<(), Error> {
        let regs = &mut self.regs;
        let mut last = 0;
        poll(self.config.wait_budget, || {
            last = regs.read32(register);
            (last & bit == 0).then_some(())
        })
        .ok_or(Error::Timeout {
            what,
            register,
            value: u64::from(last),
        })
    }

    fn wait_clear64(&mut self, register: usize, bit: u64, what: &'static str) -> Result<(), Error> {
        let regs = &mut self.regs;
        let mut last = 0;
        poll(self.config.wait_budget, || {
            last = regs.read64(register);
            (last & bit == 0).then_some(())
        })
        .ok_or(Error::Timeout {
            what,
            register,
            value: last,
        })
    }

    /// Puts a descriptor in the queue and moves the tail past it, waiting
    /// for room if the queue is full.
    fn queue_submit(&mut self, mem: &mut impl DmaMemory, desc: [u64; 2]) -> Result<(), Error> {
        let Some(mut q) = self.queue else {
            return Err(Error::IrNeedsQueuedInvalidation);
        };
        let next = (q.tail + 1) % QUEUE_ENTRIES;
        let regs = &mut self.regs;
        let mut head = 0;
        poll(self.config.wait_budget, || {
            head = regs.read64(IQH);
            ((head >> 4) % QUEUE_ENTRIES != next).then_some(())
        })
        .ok_or(Error::Timeout {
            what: "room in the invalidation queue",
            register: IQH,
            value: head,
        })?;
        let slot = HostPhysAddr(q.base.0 + q.tail * 16);
        mem.write_u64(slot, desc[0]);
        mem.write_u64(HostPhysAddr(slot.0 + 8), desc[1]);
        q.tail = next;
        self.queue = Some(q);
        self.regs.write64(IQT, next << 4);
        Ok(())
    }

    /// Queues a wait descriptor that writes a fresh status value and polls
    /// for it; a refused descriptor (FSTS.IQE) becomes an error.
    fn queue_wait(&mut self, mem: &mut impl DmaMemory) -> Result<(), Error> {
        let Some(mut q) = self.queue else {
            return Err(Error::IrNeedsQueuedInvalidation);
        };
        q.seq = q.seq.wrapping_add(1).max(1);
        self.queue = Some(q);
        let desc = DESC_WAIT | WAIT_SW | WAIT_FN | (u64::from(q.seq) << 32);
        self.queue_submit(mem, [desc, q.status.0])?;
        let regs = &mut self.regs;
        let mut failed = None;
        let done = poll(self.config.wait_budget, || {
            if mem.read_u32(q.status) == q.seq {
                return Some(());
            }
            if regs.read32(FSTS) & IQE != 0 {
                failed = Some(regs.read64(IQH));
                return Some(());
            }
            None
        });
        if let Some(head) = failed {
            self.regs.write32(FSTS, IQE);
            return Err(Error::QueueError { head });
        }
        done.ok_or(Error::Timeout {
            what: "invalidation wait descriptor",
            register: IQH,
            value: self.regs.read64(IQH),
        })
    }
}

impl<R: Regs> fmt::Display for Unit<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.caps;
        write!(
            f,
            "VT-d {}.{}: {}-level tables (SAGAW {:#x}, MGAW {}), {} domains, large pages {:#x}, \
             {} invalidation, interrupt remapping ",
            c.major,
            c.minor,
            self.levels,
            c.sagaw(),
            c.mgaw(),
            c.domains(),
            c.large_pages(),
            if self.queue.is_some() {
                "queued"
            } else {
                "register"
            },
        )?;
        match self.irt {
            Some((_, entries)) => write!(f, "on ({entries} entries)")?,
            None if c.interrupt_remapping() => f.write_str("off")?,
            None => f.write_str("unsupported")?,
        }
        write!(
            f,
            ", coherent {}, caching mode {}, {} devices attached, {} faults, {} overflows",
            if c.coherent() { "yes" } else { "no" },
            if c.caching_mode() { "on" } else { "off" },
            self.attached,
            self.faults,
            self.overflows
        )
    }
}
