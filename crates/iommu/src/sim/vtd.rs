//! [`SimVtd`]: a simulated VT-d unit shaped like QEMU 7.2's `intel-iommu`
//! (register offsets, one fault recording register at 0x220 unless told
//! otherwise, IOTLB registers at 0xf0, the same reserved-bit checks on
//! root, context and second-level entries and on invalidation descriptors).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::{Dma, Interrupt, SimMemory};
use crate::bdf::Bdf;
use crate::hw::Regs;
use crate::vtd::reason_name;

const SIZE: usize = 0x400;
const FRO: usize = 0x220;
const IRO: usize = 0xf0;

/// A simulated VT-d unit over a [`SimMemory`].
#[derive(Debug)]
pub struct SimVtd {
    mem: SimMemory,
    regs: [u8; SIZE],
    /// Never complete anything: status bits and invalidations stay pending.
    pub stuck: bool,
    /// Root table address latched by SRTP.
    root: Option<u64>,
    /// IRTA latched by SIRTP.
    irta: Option<u64>,
    context_cache: BTreeMap<u16, (u64, u64)>,
    iotlb: BTreeMap<(u16, u64), (u64, bool, bool)>,
    iec: BTreeMap<u16, (u64, u64)>,
    /// Register-based invalidations written while queued invalidation was
    /// on (the spec forbids it; QEMU ignores them).
    pub register_invalidations_under_qi: usize,
    /// Invalidations performed, by kind: context, IOTLB, IEC, wait.
    pub invalidations: [usize; 4],
}

impl SimVtd {
    /// A unit with the given capability registers (see [`qemu_cap`](Self::qemu_cap)).
    pub fn new(mem: SimMemory, cap: u64, ecap: u64) -> Self {
        let mut sim = Self {
            mem,
            regs: [0; SIZE],
            stuck: false,
            root: None,
            irta: None,
            context_cache: BTreeMap::new(),
            iotlb: BTreeMap::new(),
            iec: BTreeMap::new(),
            register_invalidations_under_qi: 0,
            invalidations: [0; 4],
        };
        sim.set(0x00, 4, 0x10);
        sim.set(0x08, 8, cap);
        sim.set(0x10, 8, ecap);
        sim
    }

    /// QEMU 7.2's CAP for `aw_bits` (39 or 48) with `records` fault
    /// recording registers: 16-bit domain ids, SAGAW for the width, MGAW,
    /// FRO 0x220, SLLPS 2M|1G, PSI, drain reads and writes.
    pub fn qemu_cap(aw_bits: u8, records: u8) -> u64 {
        let sagaw = if aw_bits >= 48 { 0x6 } else { 0x2 };
        6 | (sagaw << 8)
            | (u64::from(aw_bits - 1) << 16)
            | (((FRO >> 4) as u64) << 24)
            | (3 << 34)
            | (1 << 39)
            | (u64::from(records.max(1) - 1) << 40)
            | (3 << 54)
    }

    /// QEMU 7.2's ECAP: QI, IRO 0xf0, and with `ir` interrupt remapping
    /// (IR, EIM, MHMV).
    pub fn qemu_ecap(ir: bool) -> u64 {
        let base = (1 << 1) | (((IRO >> 4) as u64) << 8);
        if ir {
            base | (1 << 3) | (1 << 4) | (15 << 20)
        } else {
            base
        }
    }

    /// Sets a register's raw bytes without side effects (tests of odd
    /// hardware states).
    pub fn poke(&mut self, offset: usize, width: usize, value: u64) {
        self.set(offset, width, value);
    }

    fn get(&self, offset: usize, width: usize) -> u64 {
        (0..width).fold(0, |acc, i| {
            acc | (u64::from(self.regs.get(offset + i).copied().unwrap_or(0)) << (8 * i))
        })
    }

    fn set(&mut self, offset: usize, width: usize, value: u64) {
        for i in 0..width {
            if let Some(b) = self.regs.get_mut(offset + i) {
                *b = (value >> (8 * i)) as u8;
            }
        }
    }

    fn gsts(&self) -> u32 {
        self.get(0x1c, 4) as u32
    }

    fn cap(&self) -> u64 {
        self.get(0x08, 8)
    }

    fn haw(&self) -> u32 {
        (((self.cap() >> 16) & 0x3f) + 1) as u32
    }

    fn records(&self) -> usize {
        (((self.cap() >> 40) & 0xff) as usize) + 1
    }

    fn on_gcmd(&mut self, cmd: u32) {
        if self.stuck {
            return;
        }
        let mut sts = self.gsts();
        for bit in [31, 26, 25, 23] {
            // TE, QIE, IRE, CFI: states that follow the command.
            if cmd & (1 << bit) != 0 {
                sts |= 1 << bit;
            } else {
                sts &= !(1 << bit);
            }
        }
        if cmd & (1 << 26) != 0 && self.gsts() & (1 << 26) == 0 {
            self.set(0x80, 8, 0);
        }
        if cmd & (1 << 30) != 0 {
            self.root = Some(self.get(0x20, 8) & !0xfff);
            sts |= 1 << 30;
        }
        if cmd & (1 << 24) != 0 {
            self.irta = Some(self.get(0xb8, 8));
            sts |= 1 << 24;
        }
        self.set(0x1c, 4, u64::from(sts));
    }

    fn qi_on(&self) -> bool {
        self.gsts() & (1 << 26) != 0
    }

    fn on_ccmd(&mut self, value: u64) {
        if self.qi_on() {
            self.register_invalidations_under_qi += 1;
            return;
        }
        if self.stuck || value & (1 << 63) == 0 {
            return;
        }
        let gran = (value >> 61) & 3;
        self.invalidate_context(
            gran,
            (value & 0xffff) as u16,
            ((value >> 16) & 0xffff) as u16,
        );
        self.set(0x28, 8, (value & !(1 << 63) & !(3 << 59)) | (gran << 59));
    }

    fn on_iotlb(&mut self, value: u64) {
        if self.qi_on() {
            self.register_invalidations_under_qi += 1;
            return;
        }
        if self.stuck || value & (1 << 63) == 0 {
            return;
        }
        let gran = (value >> 60) & 3;
        self.invalidate_iotlb(gran, ((value >> 32) & 0xffff) as u16);
        self.set(IRO + 8, 8, (value & !(1 << 63) & !(3 << 57)) | (gran << 57));
    }

    fn invalidate_context(&mut self, gran: u64, did: u16, sid: u16) {
        self.invalidations[0] += 1;
        match gran {
            1 => self.context_cache.clear(),
            2 => self
                .context_cache
                .retain(|_, (_, hi)| ((*hi >> 8) & 0xffff) as u16 != did),
            _ => {
                self.context_cache.remove(&sid);
            }
        }
    }

    fn invalidate_iotlb(&mut self, gran: u64, did: u16) {
        self.invalidations[1] += 1;
        match gran {
            1 => self.iotlb.clear(),
            _ => self.iotlb.retain(|(d, _), _| *d != did),
        }
    }

    /// Runs the queue from IQH to IQT, as QEMU does on a tail write.
    fn run_queue(&mut self) {
        if self.stuck || !self.qi_on() || self.get(0x34, 4) & (1 << 4) != 0 {
            return;
        }
        let base = self.get(0x90, 8) & !0xfff;
        let entries = 256 << (self.get(0x90, 8) & 7);
        let tail = (self.get(0x88, 8) >> 4) % entries;
        let mut head = (self.get(0x80, 8) >> 4) % entries;
        while head != tail {
            let lo = self.mem.load(base + head * 16);
            let hi = self.mem.load(base + head * 16 + 8);
            let ok = match lo & 0xf {
                0x1 if lo & 0xfffc_0000_0000_ffc0 == 0 && hi == 0 => {
                    self.invalidate_context(
                        (lo >> 4) & 3,
                        ((lo >> 16) & 0xffff) as u16,
                        ((lo >> 32) & 0xffff) as u16,
                    );
                    true
                }
                0x2 if lo & 0xffff_ffff_0000_ff00 == 0 && hi & 0xf80 == 0 => {
                    self.invalidate_iotlb((lo >> 4) & 3, ((lo >> 16) & 0xffff) as u16);
                    true
                }
                0x4 if lo & 0xffff_0000_07ff_ffe0 == 0 && hi == 0 => {
                    self.invalidations[2] += 1;
                    if lo & (1 << 4) == 0 {
                        self.iec.clear();
                    } else {
                        self.iec.remove(&(((lo >> 32) & 0xffff) as u16));
                    }
                    true
                }
                0x5 if lo & 0xffff_ff80 == 0 && hi & 3 == 0 => {
                    self.invalidations[3] += 1;
                    if lo & (1 << 5) != 0 {
                        self.mem.store32(hi, (lo >> 32) as u32);
                    }
                    true
                }
                _ => false,
            };
            if !ok {
                let fsts = self.get(0x34, 4) | (1 << 4);
                self.set(0x34, 4, fsts);
                break;
            }
            head = (head + 1) % entries;
        }
        self.set(0x80, 8, head << 4);
    }

    fn record_fault(&mut self, sid: u16, reason: u8, info: u64, write: bool) {
        let mut fsts = self.get(0x34, 4);
        if fsts & 1 != 0 {
            return;
        }
        let records = self.records();
        let slot = (0..records).find(|i| self.get(FRO + i * 16 + 8, 8) & (1 << 63) == 0);
        match slot {
            Some(i) => {
                let t = if write { 0 } else { 1 << 62 };
                self.set(FRO + i * 16, 8, info & !0xfff);
                let hi = (1 << 63) | t | (u64::from(reason) << 32) | u64::from(sid);
                self.set(FRO + i * 16 + 8, 8, hi);
                if fsts & 2 == 0 {
                    fsts = (fsts & !0xff00) | ((i as u64) << 8);
                }
                fsts |= 2;
            }
            None => fsts |= 1,
        }
        self.set(0x34, 4, fsts);
    }

    fn update_ppf(&mut self) {
        let any = (0..self.records()).any(|i| self.get(FRO + i * 16 + 8, 8) & (1 << 63) != 0);
        let fsts = self.get(0x34, 4);
        self.set(0x34, 4, if any { fsts | 2 } else { fsts & !2 });
    }

    fn haw_mask(&self) -> u64 {
        (1u64 << self.haw()) - 1
    }

    /// The context entry for `bdf`, from the cache or the tables.
    fn context(&mut self, bdf: Bdf) -> Result<(u64, u64), u8> {
        if let Some(&entry) = self.context_cache.get(&bdf.0) {
            return Ok(entry);
        }
        let root = self.root.ok_or(8u8)?;
        let re = self.mem.load(root + u64::from(bdf.bus()) * 16);
        if re & 1 == 0 {
            return Err(1);
        }
        if re & (0xffe | !self.haw_mask()) != 0 {
            return Err(0xa);
        }
        let at = (re & !0xfff) + u64::from(bdf.devfn()) * 16;
        let (lo, hi) = (self.mem.load(at), self.mem.load(at + 8));
        if lo & 1 == 0 {
            return Err(2);
        }
        if lo & (0xff0 | !self.haw_mask()) != 0 || hi & 0xffff_ffff_ff00_0080 != 0 {
            return Err(0xb);
        }
        let levels = (hi & 7) as u32 + 2;
        let sagaw = (self.cap() >> 8) & 0x1f;
        if (lo >> 2) & 3 != 0 || !(3..=5).contains(&levels) || sagaw & (1 << (levels - 2)) == 0 {
            return Err(3);
        }
        self.context_cache.insert(bdf.0, (lo, hi));
        Ok((lo, hi))
    }

    /// What a DMA from `bdf` to `addr` does; a blocked one is recorded in
    /// the fault registers as the hardware would.
    pub fn dma(&mut self, bdf: Bdf, addr: u64, write: bool) -> Dma {
        if self.gsts() & (1 << 31) == 0 {
            return Dma::Untranslated(addr);
        }
        match self.translate(bdf, addr, write) {
            Ok(hpa) => Dma::Ok(hpa),
            Err(reason) => {
                self.record_fault(bdf.0, reason, addr, write);
                Dma::Blocked(reason)
            }
        }
    }

    fn translate(&mut self, bdf: Bdf, addr: u64, write: bool) -> Result<u64, u8> {
        let (lo, hi) = self.context(bdf)?;
        let did = ((hi >> 8) & 0xffff) as u16;
        let levels = (hi & 7) as u32 + 2;
        let denied = if write { 5 } else { 6 };
        if addr >> (12 + 9 * levels) != 0 {
            return Err(4);
        }
        if let Some(&(page, r, w)) = self.iotlb.get(&(did, addr >> 12)) {
            return if (write && w) || (!write && r) {
                Ok(page | (addr & 0xfff))
            } else {
                Err(denied)
            };
        }
        let ign = 0xbff0_0000_0000_0000u64;
        let keep = self.haw_mask() | ign;
        let mut table = lo & !0xfff;
        let (mut r, mut w) = (true, true);
        for level in (1..=levels).rev() {
            let index = (addr >> (12 + 9 * (level - 1))) & 0x1ff;
            let pte = self.mem.load(table + index * 8);
            if pte & 3 == 0 {
                return Err(denied);
            }
            let large = level > 1 && level < 4 && pte & (1 << 7) != 0;
            let rsvd = match (level, large) {
                (4, _) => 0x880,
                (2, true) => 0x1f_f800,
                (3, true) => 0x3fff_f800,
                _ => 0x800,
            } | !keep;
            if pte & rsvd != 0 {
                return Err(0xc);
            }
            r &= pte & 1 != 0;
            w &= pte & 2 != 0;
            if level == 1 || large {
                if (write && !w) || (!write && !r) {
                    return Err(denied);
                }
                let size = 1u64 << (12 + 9 * (level - 1));
                let hpa = (pte & self.haw_mask() & !(size - 1)) | (addr & (size - 1));
                self.iotlb.insert((did, addr >> 12), (hpa & !0xfff, r, w));
                return Ok(hpa);
            }
            table = pte & self.haw_mask() & !0xfff;
        }
        Err(denied)
    }

    /// What an MSI write of `data` to `address` from `bdf` does.
    pub fn msi(&mut self, bdf: Bdf, address: u64, data: u32) -> Interrupt {
        if self.gsts() & (1 << 25) == 0 {
            return Interrupt::Unmapped;
        }
        match self.remap(bdf, address, data) {
            Ok(Some((vector, dest))) => Interrupt::Delivered { vector, dest },
            Ok(None) => Interrupt::Unmapped,
            Err((reason, index)) => {
                self.record_fault(bdf.0, reason, u64::from(index) << 48, true);
                Interrupt::Blocked(reason)
            }
        }
    }

    fn remap(&mut self, bdf: Bdf, address: u64, data: u32) -> Result<Option<(u8, u32)>, (u8, u16)> {
        if address & (1 << 4) == 0 {
            // Compatibility format: passes only with CFI set.
            return if self.gsts() & (1 << 23) != 0 {
                Ok(None)
            } else {
                Err((0x25, 0))
            };
        }
        let mut index = (((address >> 5) & 0x7fff) | (((address >> 2) & 1) << 15)) as u16;
        if address & (1 << 3) != 0 {
            index = index.wrapping_add(data as u16);
        }
        let irta = self.irta.ok_or((0x23, index))?;
        let entries = 2u32 << (irta & 0xf);
        if u32::from(index) >= entries {
            return Err((0x21, index));
        }
        let (lo, hi) = match self.iec.get(&index) {
            Some(&e) => e,
            None => {
                let at = (irta & !0xfff) + u64::from(index) * 16;
                (self.mem.load(at), self.mem.load(at + 8))
            }
        };
        if lo & 1 == 0 {
            return Err((0x22, index));
        }
        let x2apic = irta & (1 << 11) != 0;
        let rsvd_lo =
            0x7000 | (1 << 15) | 0xff00_0000 | if x2apic { 0 } else { 0xffff_00ff_0000_0000 };
        if lo & rsvd_lo != 0 || hi & !0xf_ffff != 0 {
            return Err((0x24, index));
        }
        let sid = (hi & 0xffff) as u16;
        let ok = match (hi >> 18) & 3 {
            0 => true,
            1 => sid == bdf.0,
            2 => ((sid >> 8) as u8..=sid as u8).contains(&bdf.bus()),
            _ => false,
        };
        if !ok {
            return Err((0x26, index));
        }
        self.iec.insert(index, (lo, hi));
        let dest = if x2apic {
            (lo >> 32) as u32
        } else {
            ((lo >> 40) & 0xff) as u32
        };
        Ok(Some((((lo >> 16) & 0xff) as u8, dest)))
    }

    /// Fault records currently held (F set), as raw (lo, hi) pairs.
    pub fn pending_faults(&self) -> Vec<(u64, u64)> {
        (0..self.records())
            .map(|i| (self.get(FRO + i * 16, 8), self.get(FRO + i * 16 + 8, 8)))
            .filter(|(_, hi)| hi & (1 << 63) != 0)
            .collect()
    }

    /// A human-readable name for a reason the simulation returned.
    pub fn reason(reason: u8) -> &'static str {
        reason_name(reason)
    }
}

impl Regs for SimVtd {
    fn read32(&mut self, offset: usize) -> u32 {
        self.get(offset, 4) as u32
    }

    fn read64(&mut self, offset: usize) -> u64 {
        self.get(offset, 8)
    }

    fn write32(&mut self, offset: usize, value: u32) {
        match offset {
            0x18 => self.on_gcmd(value),
            0x34 => {
                // PFO, IQE, ICE, ITE are write-1-to-clear.
                let fsts = self.get(0x34, 4) & !(u64::from(value) & 0x71);
                self.set(0x34, 4, fsts);
                self.run_queue();
            }
            o if (FRO..FRO + self.records() * 16).contains(&o) && (o - FRO) % 16 == 12 => {
                if value & (1 << 31) != 0 {
                    let hi = self.get(o - 4, 8) & !(1 << 63);
                    self.set(o - 4, 8, hi);
                    self.update_ppf();
                }
            }
            0x00 | 0x08 | 0x0c | 0x10 | 0x14 | 0x1c => {}
            _ => self.set(offset, 4, u64::from(value)),
        }
    }

    fn write64(&mut self, offset: usize, value: u64) {
        match offset {
            0x28 => self.on_ccmd(value),
            o if o == IRO + 8 => self.on_iotlb(value),
            0x88 => {
                self.set(0x88, 8, value & 0x7fff0);
                self.run_queue();
            }
            o if (FRO..FRO + self.records() * 16).contains(&o) && (o - FRO) % 16 == 8 => {
                self.write32(o + 4, (value >> 32) as u32);
            }
            0x00 | 0x08 | 0x10 | 0x18 | 0x80 => {
                if offset == 0x18 {
                    self.on_gcmd(value as u32);
                }
            }
            _ => self.set(offset, 8, value),
        }
    }
}
