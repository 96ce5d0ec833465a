//! [`SimAmdVi`]: a simulated AMD IOMMU shaped like QEMU 7.2's `amd-iommu`
//! (registers, buffers started only while IommuEn is set, commands run on
//! a tail write, the same reserved-bit checks on device table entries and
//! commands), with caches of device table entries, translations and
//! interrupt entries that only invalidation commands drop.

use alloc::collections::BTreeMap;

use super::{Dma, Interrupt, SimMemory};
use crate::bdf::Bdf;
use crate::hw::Regs;

/// A simulated AMD-Vi unit over a [`SimMemory`].
#[derive(Debug)]
pub struct SimAmdVi {
    mem: SimMemory,
    regs: BTreeMap<usize, u64>,
    /// Never start the buffers nor run commands.
    pub stuck: bool,
    dte_cache: BTreeMap<u16, [u64; 4]>,
    iotlb: BTreeMap<(u16, u64), (u64, bool, bool)>,
    irte_cache: BTreeMap<(u16, u16), u32>,
    /// Commands run, by opcode.
    pub commands: BTreeMap<u8, usize>,
}

const DTE_RSVD: [u64; 4] = [
    0x8030_0000_0000_00fc,
    0x100,
    0x08f0_0000_0000_0000,
    u64::MAX,
];

impl SimAmdVi {
    /// A unit reporting `efr` (QEMU 7.2: 0x29d3 without x2APIC).
    pub fn new(mem: SimMemory, efr: u64) -> Self {
        let mut regs = BTreeMap::new();
        regs.insert(0x30, efr);
        Self {
            mem,
            regs,
            stuck: false,
            dte_cache: BTreeMap::new(),
            iotlb: BTreeMap::new(),
            irte_cache: BTreeMap::new(),
            commands: BTreeMap::new(),
        }
    }

    fn reg(&self, offset: usize) -> u64 {
        self.regs.get(&offset).copied().unwrap_or(0)
    }

    fn enabled(&self) -> bool {
        self.reg(0x18) & 1 != 0
    }

    fn on_control(&mut self) {
        if self.stuck {
            return;
        }
        let control = self.reg(0x18);
        let on = control & 1 != 0;
        let mut status = self.reg(0x2020) & !0x18;
        if on && control & (1 << 12) != 0 {
            status |= 1 << 4;
        }
        if on && control & (1 << 2) != 0 {
            status |= 1 << 3;
        }
        self.regs.insert(0x2020, status);
        self.run_commands();
    }

    fn run_commands(&mut self) {
        if self.stuck || self.reg(0x2020) & (1 << 4) == 0 {
            return;
        }
        let base = self.reg(0x08) & 0x000f_ffff_ffff_f000;
        let len = 16u64 << ((self.reg(0x08) >> 56) & 0xf);
        let tail = self.reg(0x2008) & 0x7fff0;
        let mut head = self.reg(0x2000) & 0x7fff0;
        while head != tail && head < len {
            let q0 = self.mem.load(base + head);
            let q1 = self.mem.load(base + head + 8);
            let op = (q0 >> 60) as u8;
            let ok = match op {
                1 => {
                    if q0 & (0xff << 52) == 0 && q0 & 1 != 0 {
                        self.mem.store(q0 & 0x000f_ffff_ffff_fff8, q1);
                    }
                    q0 & (0xff << 52) == 0
                }
                2 => {
                    self.dte_cache.remove(&(q0 as u16));
                    q0 & 0x0fff_ffff_ffff_0000 == 0 && q1 == 0
                }
                3 => {
                    let domain = ((q0 >> 32) & 0xffff) as u16;
                    self.iotlb.retain(|(d, _), _| *d != domain);
                    q0 & 0x0fff_0000_fff0_0000 == 0 && q1 & 0xff8 == 0
                }
                5 => {
                    let dev = q0 as u16;
                    self.irte_cache.retain(|(d, _), _| *d != dev);
                    q0 & 0x0fff_ffff_ffff_0000 == 0 && q1 == 0
                }
                8 => {
                    self.dte_cache.clear();
                    self.iotlb.clear();
                    self.irte_cache.clear();
                    q0 & 0x0fff_ffff_ffff_ffff == 0 && q1 == 0
                }
                _ => false,
            };
            *self.commands.entry(op).or_default() += 1;
            if !ok {
                self.log_event((5 << 60) | (u64::from(op) << 48), base + head);
            }
            head = (head + 16) % len;
        }
        self.regs.insert(0x2000, head);
    }

    fn log_event(&mut self, q0: u64, q1: u64) {
        let status = self.reg(0x2020);
        if status & (1 << 3) == 0 || status & 1 != 0 {
            return;
        }
        let base = self.reg(0x10) & 0x000f_ffff_ffff_f000;
        let len = 16u64 << ((self.reg(0x10) >> 56) & 0xf);
        let tail = self.reg(0x2018) & 0x7fff0;
        let next = (tail + 16) % len;
        if next == self.reg(0x2010) & 0x7fff0 {
            self.regs.insert(0x2020, status | 1);
            return;
        }
        self.mem.store(base + tail, q0);
        self.mem.store(base + tail + 8, q1);
        self.regs.insert(0x2018, next);
    }

    /// The device table entry of `device`, or the event code that refuses it.
    fn dte(&mut self, device: Bdf) -> Result<[u64; 4], u8> {
        if let Some(&e) = self.dte_cache.get(&device.0) {
            return Ok(e);
        }
        let base = self.reg(0x00) & 0x000f_ffff_ffff_f000;
        let entries = ((self.reg(0x00) & 0x1ff) + 1) * 128;
        if u64::from(device.0) >= entries {
            return Err(1);
        }
        let at = base + u64::from(device.0) * 32;
        let e = [0, 8, 16, 24].map(|o| self.mem.load(at + o));
        if e.iter().zip(DTE_RSVD).any(|(q, r)| q & r != 0) {
            self.log_event((1 << 60) | u64::from(device.0), at);
            return Err(1);
        }
        self.dte_cache.insert(device.0, e);
        Ok(e)
    }

    /// What a DMA from `device` to `addr` does; a refused one is logged as
    /// an IO_PAGE_FAULT event (code 2).
    pub fn dma(&mut self, device: Bdf, addr: u64, write: bool) -> Dma {
        if !self.enabled() {
            return Dma::Untranslated(addr);
        }
        let dte = match self.dte(device) {
            Ok(d) => d,
            Err(code) => return Dma::Blocked(code),
        };
        if dte[0] & 1 == 0 {
            return Dma::Untranslated(addr);
        }
        let domain = (dte[1] & 0xffff) as u16;
        match self.translate(dte, domain, addr, write) {
            Ok(Some(hpa)) => Dma::Ok(hpa),
            Ok(None) => Dma::Untranslated(addr),
            Err(present) => {
                let flags =
                    (u64::from(present) << 4) | (u64::from(write) << 5) | (u64::from(present) << 6);
                self.log_event(
                    (2 << 60) | (flags << 48) | (u64::from(domain) << 16) | u64::from(device.0),
                    addr,
                );
                Dma::Blocked(2)
            }
        }
    }

    /// `Ok(None)`: passed untranslated (Mode 0 with the right permission);
    /// `Err(present)`: refused, `present` telling whether a present entry
    /// lacked the permission.
    fn translate(
        &mut self,
        dte: [u64; 4],
        domain: u16,
        addr: u64,
        write: bool,
    ) -> Result<Option<u64>, bool> {
        if dte[0] & 2 == 0 {
            return Err(false);
        }
        let allowed = |q: u64| {
            if write {
                q & (1 << 62) != 0
            } else {
                q & (1 << 61) != 0
            }
        };
        let mode = ((dte[0] >> 9) & 7) as u32;
        if mode == 0 {
            return if allowed(dte[0]) { Ok(None) } else { Err(true) };
        }
        if mode > 6 || (mode < 6 && addr >> (12 + 9 * mode) != 0) {
            return Err(false);
        }
        if let Some(&(page, r, w)) = self.iotlb.get(&(domain, addr >> 12)) {
            return if (write && w) || (!write && r) {
                Ok(Some(page | (addr & 0xfff)))
            } else {
                Err(true)
            };
        }
        let mut r = dte[0] & (1 << 61) != 0;
        let mut w = dte[0] & (1 << 62) != 0;
        let mut table = dte[0] & 0x000f_ffff_ffff_f000;
        let mut level = mode;
        loop {
            let index = (addr >> (12 + 9 * (level - 1))) & 0x1ff;
            let pte = self.mem.load(table + index * 8);
            if pte & 1 == 0 {
                return Err(false);
            }
            r &= pte & (1 << 61) != 0;
            w &= pte & (1 << 62) != 0;
            let next = ((pte >> 9) & 7) as u32;
            if next == 0 {
                if (write && !w) || (!write && !r) {
                    return Err(true);
                }
                let size = 1u64 << (12 + 9 * (level - 1));
                let hpa = (pte & 0x000f_ffff_ffff_f000 & !(size - 1)) | (addr & (size - 1));
                self.iotlb
                    .insert((domain, addr >> 12), (hpa & !0xfff, r, w));
                return Ok(Some(hpa));
            }
            if next >= level || next == 7 {
                return Err(true);
            }
            level = next;
            table = pte & 0x000f_ffff_ffff_f000;
        }
    }

    /// What an MSI from `device` with `data` does (legacy entries).
    pub fn msi(&mut self, device: Bdf, address: u64, data: u32) -> Interrupt {
        if !self.enabled() || address >> 20 != 0xfee {
            return Interrupt::Unmapped;
        }
        let dte = match self.dte(device) {
            Ok(d) => d,
            Err(code) => return Interrupt::Blocked(code),
        };
        if dte[0] & 1 == 0 || dte[2] & 1 == 0 {
            return Interrupt::Unmapped;
        }
        match (dte[2] >> 60) & 3 {
            1 => return Interrupt::Unmapped,
            2 => {}
            _ => return Interrupt::Blocked(2),
        }
        let index = (data & 0x7ff) as u16;
        if (data >> 8) & 7 > 1 {
            return Interrupt::Blocked(2);
        }
        let entries = 1u32 << ((dte[2] >> 1) & 0xf);
        if u32::from(index) >= entries {
            return Interrupt::Blocked(2);
        }
        let irte = match self.irte_cache.get(&(device.0, index)) {
            Some(&e) => e,
            None => self
                .mem
                .load32((dte[2] & 0x000f_ffff_ffff_ffc0) + u64::from(index) * 4),
        };
        if irte & 1 == 0 || irte & (1 << 7) != 0 || (irte >> 2) & 7 > 1 {
            if irte & 2 == 0 {
                // IO_PAGE_FAULT with the I (interrupt) flag.
                self.log_event(
                    (2 << 60) | (1 << 51) | u64::from(device.0),
                    0xfee0_0000 | u64::from(data),
                );
            }
            return Interrupt::Blocked(2);
        }
        self.irte_cache.insert((device.0, index), irte);
        Interrupt::Delivered {
            vector: (irte >> 16) as u8,
            dest: (irte >> 8) & 0xff,
        }
    }
}

impl Regs for SimAmdVi {
    fn read32(&mut self, offset: usize) -> u32 {
        (self.reg(offset & !7) >> (8 * (offset & 4))) as u32
    }

    fn read64(&mut self, offset: usize) -> u64 {
        self.reg(offset)
    }

    fn write32(&mut self, offset: usize, value: u32) {
        let shift = 8 * (offset & 4);
        let old = self.reg(offset & !7) & !(0xffff_ffff << shift);
        self.write64(offset & !7, old | (u64::from(value) << shift));
    }

    fn write64(&mut self, offset: usize, value: u64) {
        match offset {
            0x30 => {}
            0x18 => {
                self.regs.insert(0x18, value);
                self.on_control();
            }
            0x2008 => {
                self.regs.insert(0x2008, value & 0x7fff0);
                self.run_commands();
            }
            0x2000 | 0x2010 | 0x2018 => {
                self.regs.insert(offset, value & 0x7fff0);
            }
            0x2020 => {
                let status = self.reg(0x2020) & !(value & 0x7);
                self.regs.insert(0x2020, status);
            }
            _ => {
                self.regs.insert(offset, value);
            }
        }
    }
}
