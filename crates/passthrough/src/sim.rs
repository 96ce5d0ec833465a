//! Simulated physical functions for the tests: configuration space with BAR size masks, and
//! BAR memory the passthrough device reads and writes.

use alloc::vec;
use alloc::vec::Vec;

use vdev::Bdf;

use crate::scan::ConfigAccess;

/// One simulated function.
#[derive(Clone, Debug)]
pub struct SimFunction {
    pub cfg: Vec<u8>,
    /// Per BAR register: the bits a write keeps (0: not implemented).
    bar_masks: [u32; 6],
    /// Memory behind each BAR (bytes), for register accesses.
    pub bar_mem: Vec<Vec<u8>>,
    /// Config writes seen: (offset, value).
    pub writes: Vec<(u16, u32)>,
    /// Times the hypervisor unmasked its INTx input.
    pub intx_unmasks: u32,
}

impl SimFunction {
    fn new(vendor: u16, device: u16, class: u32) -> Self {
        let mut f = SimFunction {
            cfg: vec![0; 4096],
            bar_masks: [0; 6],
            bar_mem: vec![Vec::new(); 6],
            writes: Vec::new(),
            intx_unmasks: 0,
        };
        f.poke(0, u32::from(device) << 16 | u32::from(vendor));
        f.poke(0x08, class << 8 | 0x10);
        f
    }

    pub fn host_bridge() -> Self {
        Self::new(0x8086, 0x29c0, 0x060000)
    }

    /// QEMU's edu: BAR0 1 MiB at 0xfea00000, INTA, MSI (64-bit) at 0x40.
    pub fn edu() -> Self {
        let mut f = Self::new(0x1234, 0x11e8, 0x00ff00);
        f.bar(0, 0xfea0_0000, 1 << 20);
        f.poke(0x3C, 0x0000_010b);
        f.poke(0x04, 0x0010_0000);
        f.poke(0x34, 0x40);
        f.poke(0x40, 0x0080_0005);
        f
    }

    /// A NIC-like function: BAR0 128 KiB, BAR2 I/O 32 bytes, BAR3 64-bit 16 KiB (MSI-X table
    /// at 0, PBA at 0x2000), MSI at 0x50, MSI-X (5 entries) at 0x70, PCIe with FLR at 0x90.
    pub fn nic() -> Self {
        let mut f = Self::new(0x8086, 0x10d3, 0x020000);
        f.bar(0, 0xfeb0_0000, 128 << 10);
        f.poke(0x18, 0xc001);
        f.bar_masks[2] = !(32 - 1) & 0xFFFF_FFFC;
        f.bar_mem[2] = vec![0; 32];
        f.poke(0x1C, 0x0000_0004);
        f.poke(0x20, 0x8);
        f.bar_masks[3] = !(0x4000 - 1) & 0xFFFF_FFF0;
        f.bar_masks[4] = u32::MAX;
        f.bar_mem[3] = vec![0; 0x4000];
        f.poke(0x3C, 0x0000_010a);
        f.poke(0x04, 0x0010_0007);
        f.poke(0x34, 0x50);
        f.poke(0x50, 0x0180_7005);
        f.poke(0x70, 0x0004_9011);
        f.poke(0x74, 0x0000_0003);
        f.poke(0x78, 0x0000_2003);
        f.poke(0x90, 0x0002_0010);
        f.poke(0x94, 1 << 28);
        f
    }

    /// A PCI-to-PCI bridge from bus 0 to `secondary..=subordinate`.
    pub fn bridge(secondary: u8, subordinate: u8) -> Self {
        let mut f = Self::new(0x8086, 0x244e, 0x060400);
        f.poke(0x0C, 0x0001_0000);
        f.poke(
            0x18,
            u32::from(subordinate) << 16 | u32::from(secondary) << 8,
        );
        f
    }

    fn bar(&mut self, index: usize, base: u32, size: u32) {
        self.poke(0x10 + 4 * index as u16, base);
        self.bar_masks[index] = !(size - 1) & 0xFFFF_FFF0;
        self.bar_mem[index] = vec![0; size as usize];
    }

    pub fn set_bar_mask(&mut self, index: usize, mask: u32) {
        self.bar_masks[index] = mask;
    }

    pub fn set_multi_function(&mut self) {
        let v = self.peek(0x0C) | 0x0080_0000;
        self.poke(0x0C, v);
    }

    pub fn poke(&mut self, offset: u16, value: u32) {
        let at = usize::from(offset);
        self.cfg[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    pub fn peek(&self, offset: u16) -> u32 {
        let at = usize::from(offset & !3);
        u32::from_le_bytes([
            self.cfg[at],
            self.cfg[at + 1],
            self.cfg[at + 2],
            self.cfg[at + 3],
        ])
    }

    pub fn write(&mut self, offset: u16, value: u32) {
        self.writes.push((offset, value));
        let offset = offset & !3;
        if (0x10..0x28).contains(&offset) && self.peek(0x0C) & 0x007F_0000 == 0 {
            let i = usize::from(offset - 0x10) / 4;
            let mask = self.bar_masks[i];
            let flags = self.peek(offset) & if i < 6 && mask & 1 == 0 { 0xF } else { 0x3 };
            let v = if mask == 0 {
                0
            } else {
                (value & mask) | (flags & !mask)
            };
            self.poke(offset, v);
            return;
        }
        if offset == 0x04 {
            let status = self.peek(4) & 0xFFFF_0000;
            self.poke(4, status | (value & 0xFFFF));
            return;
        }
        if usize::from(offset) + 4 <= self.cfg.len() {
            self.poke(offset, value);
        }
    }
}

/// A simulated segment.
#[derive(Default)]
pub struct SimBus {
    pub functions: Vec<(Bdf, SimFunction)>,
}

impl SimBus {
    pub fn add(&mut self, bdf: Bdf, f: SimFunction) {
        self.functions.retain(|(b, _)| *b != bdf);
        self.functions.push((bdf, f));
    }
}

impl ConfigAccess for SimBus {
    fn read32(&mut self, bdf: Bdf, offset: u16) -> u32 {
        self.functions
            .iter()
            .find(|(b, _)| *b == bdf)
            .map_or(u32::MAX, |(_, f)| f.peek(offset))
    }

    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
        if let Some((_, f)) = self.functions.iter_mut().find(|(b, _)| *b == bdf) {
            f.write(offset, value);
        }
    }
}

extern crate std;

/// A [`HostFunction`](crate::HostFunction) over a shared simulated function, so a test can look
/// at the real function after the device touched it.
#[derive(Clone, Default)]
pub struct SimHost(pub std::sync::Arc<std::sync::Mutex<Option<SimFunction>>>);

impl SimHost {
    pub fn new(f: SimFunction) -> Self {
        SimHost(std::sync::Arc::new(std::sync::Mutex::new(Some(f))))
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut SimFunction) -> R) -> R {
        f(self.0.lock().unwrap().as_mut().unwrap())
    }
}

impl crate::HostFunction for SimHost {
    fn config_read(&mut self, offset: u16) -> u32 {
        self.with(|f| f.peek(offset))
    }

    fn config_write(&mut self, offset: u16, value: u32) {
        self.with(|f| f.write(offset, value));
    }

    fn bar_read(&mut self, bar: u8, offset: u64, size: u8) -> u64 {
        self.with(|f| {
            let mem = &f.bar_mem[usize::from(bar)];
            let at = offset as usize;
            let mut v = [0u8; 8];
            v[..usize::from(size)].copy_from_slice(&mem[at..at + usize::from(size)]);
            u64::from_le_bytes(v)
        })
    }

    fn intx_unmask(&mut self) {
        self.with(|f| f.intx_unmasks += 1);
    }

    fn bar_write(&mut self, bar: u8, offset: u64, size: u8, value: u64) {
        self.with(|f| {
            let mem = &mut f.bar_mem[usize::from(bar)];
            let at = offset as usize;
            mem[at..at + usize::from(size)]
                .copy_from_slice(&value.to_le_bytes()[..usize::from(size)]);
        });
    }
}
