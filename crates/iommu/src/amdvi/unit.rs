//! [`Unit`]: one AMD IOMMU, from `init` (device table with every covered
//! device's DMA blocked, command buffer, event log, translation on) to
//! attaching devices to domains, flushing, interrupt remapping and draining
//! the event log.
//!
//! A device table entry with V = 0 lets the device's DMA through
//! untranslated, so `init` writes V = 1, TV = 1, Mode = 0 with IR = IW = 0
//! for every device id up to the highest one the unit covers: Mode 0 means
//! "no translation, the IR/IW bits decide", and with both clear every DMA
//! is refused. Only attached devices get a page table (Mode = levels). The
//! device table, command buffer and event log are set before IommuEn,
//! CmdBufEn and EventLogEn are written together (QEMU only starts the
//! buffers while IommuEn is set), and the driver waits for the status
//! register's CmdBufRun and EventLogRun. Every change to a device table
//! entry, page table or interrupt table is followed by its INVALIDATE_*
//! command and a COMPLETION_WAIT whose store the driver polls, bounded.

use alloc::collections::BTreeMap;
use core::fmt;

use platform::HostPhysAddr;

use super::event::Event;
use super::irte::{Irte, IRTE_ENTRIES};
use super::regs::*;
use crate::bdf::Bdf;
use crate::hw::{DmaMemory, MsiMessage, Regs, FRAME_SIZE};
use crate::wait::{poll, DEFAULT_WAIT_BUDGET};

/// How [`Unit::init`] sets the unit up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Polls per wait before it fails with [`Error::Timeout`].
    pub wait_budget: u32,
    /// The highest device id the unit covers (`Ivhd::max_device_id`): the
    /// device table gets an entry for every id up to it.
    pub max_device_id: Bdf,
}

impl Config {
    /// The default wait budget and a device table for ids up to `max_device_id`.
    pub fn new(max_device_id: Bdf) -> Self {
        Self {
            wait_budget: DEFAULT_WAIT_BUDGET,
            max_device_id,
        }
    }
}

/// What went wrong talking to a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The registers read as all ones: no unit there.
    NoUnit,
    /// The unit never reported completion.
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// The register polled (or 0 for the completion-wait store in memory).
        register: usize,
        /// Its last value.
        value: u64,
    },
    /// [`DmaMemory::alloc_frames`] failed.
    OutOfMemory {
        /// What the memory was for.
        what: &'static str,
    },
    /// A device id beyond the device table.
    DeviceOutOfRange {
        /// The device.
        device: Bdf,
        /// The highest id the table holds.
        max: Bdf,
    },
    /// A walk depth outside 1..= the unit's maximum (EFR.HATS).
    BadLevels {
        /// Levels asked for.
        levels: u8,
        /// The most the unit walks.
        max: u8,
    },
    /// Domain id 0 (reserved here, as in Linux).
    BadDomain {
        /// The id asked for.
        domain: u16,
    },
    /// A table root that is not 4 KiB aligned or beyond 52 bits.
    BadRoot {
        /// The root given.
        root: HostPhysAddr,
    },
    /// An interrupt remapping call for a device without a table.
    IrOff {
        /// The device.
        device: Bdf,
    },
    /// An IRTE index beyond the device's table.
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
            Self::NoUnit => f.write_str("no AMD-Vi unit: its registers read as all ones"),
            Self::Timeout {
                what,
                register,
                value,
            } => write!(
                f,
                "AMD-Vi unit did not complete {what}: register {register:#x} still {value:#x}"
            ),
            Self::OutOfMemory { what } => write!(f, "no memory for the AMD-Vi {what}"),
            Self::DeviceOutOfRange { device, max } => write!(
                f,
                "device {device} is beyond the device table (last id {max})"
            ),
            Self::BadLevels { levels, max } => {
                write!(f, "{levels}-level tables: the unit walks 1 to {max} levels")
            }
            Self::BadDomain { domain } => {
                write!(f, "domain id {domain} is reserved (use 1..=65535)")
            }
            Self::BadRoot { root } => write!(
                f,
                "table root {root} is not 4 KiB aligned or beyond 52 bits"
            ),
            Self::IrOff { device } => write!(
                f,
                "device {device} has no interrupt remapping table (call enable_irq_remapping)"
            ),
            Self::BadIrteIndex { index, entries } => write!(
                f,
                "interrupt remapping index {index} beyond the table's {entries} entries"
            ),
        }
    }
}

/// One AMD IOMMU, driven through `R`.
#[derive(Debug)]
pub struct Unit<R: Regs> {
    regs: R,
    config: Config,
    efr: u64,
    dev_table: HostPhysAddr,
    cmd: HostPhysAddr,
    cmd_tail: u64,
    events: HostPhysAddr,
    semaphore: HostPhysAddr,
    seq: u64,
    irq_tables: BTreeMap<u16, HostPhysAddr>,
    attached: u32,
    events_seen: u64,
    overflows: u64,
}

impl<R: Regs> Unit<R> {
    /// Takes over the unit behind `regs` (turning off what firmware left
    /// on), blocks DMA of every device id up to `config.max_device_id`, and
    /// turns translation, the command buffer and the event log on.
    pub fn init(mut regs: R, mem: &mut impl DmaMemory, config: Config) -> Result<Self, Error> {
        let control = regs.read64(CONTROL);
        let efr = regs.read64(EXT_FEATURES);
        if control == u64::MAX && efr == u64::MAX {
            return Err(Error::NoUnit);
        }
        if control & (CTRL_IOMMU_EN | CTRL_CMD_BUF_EN | CTRL_EVENT_LOG_EN) != 0 {
            regs.write64(
                CONTROL,
                control & !(CTRL_IOMMU_EN | CTRL_CMD_BUF_EN | CTRL_EVENT_LOG_EN),
            );
        }
        let entries = u64::from(config.max_device_id.0) + 1;
        let frames = (entries * DTE_SIZE).div_ceil(FRAME_SIZE);
        let dev_table =
            mem.alloc_frames(frames as usize, FRAME_SIZE)
                .ok_or(Error::OutOfMemory {
                    what: "device table",
                })?;
        for id in 0..entries {
            mem.write_u64(HostPhysAddr(dev_table.0 + id * DTE_SIZE), DTE_V | DTE_TV);
        }
        let cmd = mem.alloc_frames(1, FRAME_SIZE).ok_or(Error::OutOfMemory {
            what: "command buffer",
        })?;
        let events = mem
            .alloc_frames(1, FRAME_SIZE)
            .ok_or(Error::OutOfMemory { what: "event log" })?;
        let semaphore = mem.alloc_frames(1, FRAME_SIZE).ok_or(Error::OutOfMemory {
            what: "completion-wait word",
        })?;
        // Size field: the table's 4 KiB pages minus one.
        regs.write64(DEV_TABLE_BASE, dev_table.0 | (frames - 1));
        regs.write64(CMD_BUF_BASE, cmd.0 | LEN_256);
        regs.write64(CMD_HEAD, 0);
        regs.write64(CMD_TAIL, 0);
        regs.write64(EVENT_LOG_BASE, events.0 | LEN_256);
        regs.write64(EVENT_HEAD, 0);
        regs.write64(EVENT_TAIL, 0);
        regs.write64(EXCLUSION_BASE, 0);
        regs.write64(EXCLUSION_LIMIT, 0);
        let mut unit = Self {
            regs,
            config,
            efr,
            dev_table,
            cmd,
            cmd_tail: 0,
            events,
            semaphore,
            seq: 0,
            irq_tables: BTreeMap::new(),
            attached: 0,
            events_seen: 0,
            overflows: 0,
        };
        let control = unit.regs.read64(CONTROL);
        unit.regs.write64(
            CONTROL,
            control | CTRL_IOMMU_EN | CTRL_CMD_BUF_EN | CTRL_EVENT_LOG_EN,
        );
        unit.wait_status(
            STATUS_CMD_BUF_RUN | STATUS_EVENT_LOG_RUN,
            "command buffer and event log start",
        )?;
        if efr & EFR_IA != 0 {
            unit.command(mem, CMD_INVALIDATE_IOMMU_ALL << OPCODE_SHIFT, 0)?;
        } else {
            for id in 0..entries {
                unit.command(mem, (CMD_INVALIDATE_DEVTAB_ENTRY << OPCODE_SHIFT) | id, 0)?;
            }
        }
        unit.completion_wait(mem)?;
        Ok(unit)
    }

    /// The extended feature register.
    pub fn efr(&self) -> u64 {
        self.efr
    }

    /// The deepest walk the unit offers (EFR.HATS: 4, 5 or 6 levels).
    pub fn max_levels(&self) -> u8 {
        match (self.efr >> 10) & 3 {
            1 => 5,
            2 => 6,
            _ => 4,
        }
    }

    /// The walk depth to build tables for: 4 (the `paging` tables' depth).
    pub fn levels(&self) -> u8 {
        4
    }

    /// Events drained so far, and event log overflows (events lost).
    pub fn event_counts(&self) -> (u64, u64) {
        (self.events_seen, self.overflows)
    }

    /// The registers, e.g. for a test to inspect a simulated unit.
    pub fn regs(&mut self) -> &mut R {
        &mut self.regs
    }

    fn dte(&self, device: Bdf) -> Result<HostPhysAddr, Error> {
        if device > self.config.max_device_id {
            return Err(Error::DeviceOutOfRange {
                device,
                max: self.config.max_device_id,
            });
        }
        Ok(HostPhysAddr(
            self.dev_table.0 + u64::from(device.0) * DTE_SIZE,
        ))
    }

    /// Points `device` (its requester id: the alias, if the IVRS names one)
    /// at the page tables rooted at `root` (`SecondLevelTables::dma_root
    /// (levels)`) in `domain` (1..=65535; a VM's devices share its id), with
    /// read and write allowed (the leaves decide). Invalidates the entry and
    /// the old and new domains' pages.
    pub fn attach(
        &mut self,
        mem: &mut impl DmaMemory,
        device: Bdf,
        domain: u16,
        root: HostPhysAddr,
        levels: u8,
    ) -> Result<(), Error> {
        let entry = self.dte(device)?;
        let max = self.max_levels();
        if !(1..=max).contains(&levels) {
            return Err(Error::BadLevels { levels, max });
        }
        if domain == 0 {
            return Err(Error::BadDomain { domain });
        }
        if !root.is_aligned(FRAME_SIZE) || root.0 >> 52 != 0 {
            return Err(Error::BadRoot { root });
        }
        let old = mem.read_u64(entry);
        let old_domain = (mem.read_u64(HostPhysAddr(entry.0 + 8)) & 0xffff) as u16;
        if old & (0b111 << DTE_MODE_SHIFT) == 0 {
            self.attached += 1;
        }
        // Domain first: until the new root lands the entry still blocks.
        mem.write_u64(HostPhysAddr(entry.0 + 8), u64::from(domain));
        mem.write_u64(
            entry,
            root.0 | DTE_V | DTE_TV | DTE_IR | DTE_IW | (u64::from(levels) << DTE_MODE_SHIFT),
        );
        self.invalidate_entry(mem, device)?;
        if old_domain != 0 && old_domain != domain {
            self.invalidate_pages(mem, old_domain)?;
        }
        self.invalidate_pages(mem, domain)?;
        self.completion_wait(mem)
    }

    /// Blocks `device`'s DMA again (V = 1, TV = 1, Mode 0, no IR/IW) and
    /// invalidates what the unit cached for it. Interrupt remapping is left
    /// as it is. Returns whether it was attached.
    pub fn detach(&mut self, mem: &mut impl DmaMemory, device: Bdf) -> Result<bool, Error> {
        let entry = self.dte(device)?;
        let old = mem.read_u64(entry);
        if old & (0b111 << DTE_MODE_SHIFT) == 0 {
            return Ok(false);
        }
        let domain = (mem.read_u64(HostPhysAddr(entry.0 + 8)) & 0xffff) as u16;
        mem.write_u64(entry, DTE_V | DTE_TV);
        mem.write_u64(HostPhysAddr(entry.0 + 8), 0);
        self.invalidate_entry(mem, device)?;
        self.invalidate_pages(mem, domain)?;
        self.completion_wait(mem)?;
        self.attached = self.attached.saturating_sub(1);
        Ok(true)
    }

    /// Invalidates every cached translation of `domain`: call after
    /// changing its page tables.
    pub fn flush_domain(&mut self, mem: &mut impl DmaMemory, domain: u16) -> Result<(), Error> {
        if domain == 0 {
            return Err(Error::BadDomain { domain });
        }
        self.invalidate_pages(mem, domain)?;
        self.completion_wait(mem)
    }

    /// Gives `device` its own interrupt remapping table (256 entries, all
    /// blocked until [`set_irte`](Self::set_irte)) and turns remapping on
    /// for it (IV = 1, IntCtl = remap; NMI, INIT, ExtInt and LINT pass-through
    /// stay off). Calling it again keeps the table.
    pub fn enable_irq_remapping(
        &mut self,
        mem: &mut impl DmaMemory,
        device: Bdf,
    ) -> Result<(), Error> {
        let entry = self.dte(device)?;
        let table = match self.irq_tables.get(&device.0) {
            Some(&t) => t,
            None => {
                let t = mem.alloc_frames(1, FRAME_SIZE).ok_or(Error::OutOfMemory {
                    what: "interrupt remapping table",
                })?;
                self.irq_tables.insert(device.0, t);
                t
            }
        };
        let len = u64::from(IRTE_ENTRIES.trailing_zeros());
        let q2 = DTE_IV
            | (len << DTE_INT_TAB_LEN_SHIFT)
            | (table.0 & DTE_INT_ROOT_MASK)
            | DTE_INT_CTL_REMAP;
        mem.write_u64(HostPhysAddr(entry.0 + 16), q2);
        self.invalidate_entry(mem, device)?;
        self.invalidate_interrupts(mem, device)?;
        self.completion_wait(mem)
    }

    /// Refuses every fixed and arbitrated interrupt of `device` (IV = 1,
    /// IntCtl = abort) and forgets its table.
    pub fn block_interrupts(&mut self, mem: &mut impl DmaMemory, device: Bdf) -> Result<(), Error> {
        let entry = self.dte(device)?;
        mem.write_u64(HostPhysAddr(entry.0 + 16), DTE_IV);
        self.irq_tables.remove(&device.0);
        self.invalidate_entry(mem, device)?;
        self.invalidate_interrupts(mem, device)?;
        self.completion_wait(mem)
    }

    /// Writes entry `index` of `device`'s table and invalidates it; returns
    /// the MSI message the device must send: address 0xfee0_0000 (the
    /// destination comes from the entry), data `index`.
    pub fn set_irte(
        &mut self,
        mem: &mut impl DmaMemory,
        device: Bdf,
        index: u16,
        irte: &Irte,
    ) -> Result<MsiMessage, Error> {
        self.write_irte(mem, device, index, irte.encode())?;
        Ok(MsiMessage {
            address: 0xfee0_0000,
            data: u32::from(index),
        })
    }

    /// Disables entry `index` of `device`'s table (its interrupts are
    /// refused and logged).
    pub fn clear_irte(
        &mut self,
        mem: &mut impl DmaMemory,
        device: Bdf,
        index: u16,
    ) -> Result<(), Error> {
        self.write_irte(mem, device, index, 0)
    }

    fn write_irte(
        &mut self,
        mem: &mut impl DmaMemory,
        device: Bdf,
        index: u16,
        raw: u32,
    ) -> Result<(), Error> {
        let table = *self
            .irq_tables
            .get(&device.0)
            .ok_or(Error::IrOff { device })?;
        if u32::from(index) >= IRTE_ENTRIES {
            return Err(Error::BadIrteIndex {
                index,
                entries: IRTE_ENTRIES,
            });
        }
        mem.write_u32(HostPhysAddr(table.0 + u64::from(index) * 4), raw);
        self.invalidate_interrupts(mem, device)?;
        self.completion_wait(mem)
    }

    /// Hands every new event log entry to `report`, moves the head past
    /// them, and restarts the log after an overflow. Returns how many.
    pub fn poll_events(
        &mut self,
        mem: &mut impl DmaMemory,
        mut report: impl FnMut(Event),
    ) -> Result<usize, Error> {
        let len = RING_ENTRIES * 16;
        let mut head = self.regs.read64(EVENT_HEAD) & RING_PTR_MASK;
        let tail = self.regs.read64(EVENT_TAIL) & RING_PTR_MASK;
        let mut drained = 0;
        while head != tail && head < len {
            let at = self.events.0 + head;
            let event = Event::decode(
                mem.read_u64(HostPhysAddr(at)),
                mem.read_u64(HostPhysAddr(at + 8)),
            );
            report(event);
            drained += 1;
            head = (head + 16) % len;
        }
        self.regs.write64(EVENT_HEAD, head);
        self.events_seen += drained as u64;
        if self.regs.read64(STATUS) & STATUS_EVENT_OVERFLOW != 0 {
            self.overflows += 1;
            let control = self.regs.read64(CONTROL);
            self.regs.write64(CONTROL, control & !CTRL_EVENT_LOG_EN);
            self.regs.write64(STATUS, STATUS_EVENT_OVERFLOW);
            self.regs.write64(EVENT_HEAD, 0);
            self.regs.write64(EVENT_TAIL, 0);
            self.regs.write64(CONTROL, control | CTRL_EVENT_LOG_EN);
            self.wait_status(STATUS_EVENT_LOG_RUN, "event log restart")?;
        }
        Ok(drained as usize)
    }

    fn invalidate_entry(&mut self, mem: &mut impl DmaMemory, device: Bdf) -> Result<(), Error> {
        self.command(
            mem,
            (CMD_INVALIDATE_DEVTAB_ENTRY << OPCODE_SHIFT) | u64::from(device.0),
            0,
        )
    }

    fn invalidate_pages(&mut self, mem: &mut impl DmaMemory, domain: u16) -> Result<(), Error> {
        self.command(
            mem,
            (CMD_INVALIDATE_IOMMU_PAGES << OPCODE_SHIFT) | (u64::from(domain) << 32),
            ALL_PAGES,
        )
    }

    fn invalidate_interrupts(
        &mut self,
        mem: &mut impl DmaMemory,
        device: Bdf,
    ) -> Result<(), Error> {
        self.command(
            mem,
            (CMD_INVALIDATE_INTERRUPT_TABLE << OPCODE_SHIFT) | u64::from(device.0),
            0,
        )
    }

    /// Queues a COMPLETION_WAIT that stores a fresh value and polls for it:
    /// every command before it has then completed.
    fn completion_wait(&mut self, mem: &mut impl DmaMemory) -> Result<(), Error> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        let addr = self.semaphore;
        self.command(
            mem,
            (CMD_COMPLETION_WAIT << OPCODE_SHIFT) | (addr.0 & 0x000f_ffff_ffff_fff8) | WAIT_STORE,
            seq,
        )?;
        let mut last = 0;
        poll(self.config.wait_budget, || {
            last = mem.read_u64(addr);
            (last == seq).then_some(())
        })
        .ok_or(Error::Timeout {
            what: "completion wait",
            register: CMD_HEAD,
            value: last,
        })
    }

    /// Puts a command in the buffer, waiting for room, and moves the tail.
    fn command(&mut self, mem: &mut impl DmaMemory, q0: u64, q1: u64) -> Result<(), Error> {
        let len = RING_ENTRIES * 16;
        let next = (self.cmd_tail + 16) % len;
        let regs = &mut self.regs;
        let mut head = 0;
        poll(self.config.wait_budget, || {
            head = regs.read64(CMD_HEAD) & RING_PTR_MASK;
            (head != next).then_some(())
        })
        .ok_or(Error::Timeout {
            what: "room in the command buffer",
            register: CMD_HEAD,
            value: head,
        })?;
        let at = self.cmd.0 + self.cmd_tail;
        mem.write_u64(HostPhysAddr(at), q0);
        mem.write_u64(HostPhysAddr(at + 8), q1);
        self.cmd_tail = next;
        self.regs.write64(CMD_TAIL, next);
        Ok(())
    }

    fn wait_status(&mut self, bits: u64, what: &'static str) -> Result<(), Error> {
        let regs = &mut self.regs;
        let mut last = 0;
        poll(self.config.wait_budget, || {
            last = regs.read64(STATUS);
            (last & bits == bits).then_some(())
        })
        .ok_or(Error::Timeout {
            what,
            register: STATUS,
            value: last,
        })
    }
}

impl<R: Regs> fmt::Display for Unit<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AMD-Vi: EFR {:#x} (up to {}-level tables, invalidate-all {}), {}-level tables, \
             device table for ids 00:00.0..={}, interrupt remapping on {} devices, \
             {} devices attached, {} events, {} overflows",
            self.efr,
            self.max_levels(),
            if self.efr & EFR_IA != 0 { "yes" } else { "no" },
            self.levels(),
            self.config.max_device_id,
            self.irq_tables.len(),
            self.attached,
            self.events_seen,
            self.overflows
        )
    }
}
