//! The Quercus PCI test device: a function with every feature the PCI
//! plane offers (a memory BAR of registers, an MSI-X BAR, an I/O BAR, MSI,
//! MSI-X and INTx), so a guest can prove enumeration, BAR sizing and
//! moving, and each interrupt path. It is for tests; a scenario adds it with
//! `pci_test_device = true`.
//!
//! Identity 5143:0001 revision 1, class FF/00/00, INTA#.
//! - BAR 0 (4 KiB memory): 0x00 MAGIC (read only, [`TEST_DEVICE_MAGIC`]),
//!   0x04 SCRATCH (read/write), 0x08 RAISE (write `n`: MSI-X entry `n` if
//!   MSI-X is enabled, else MSI vector `n` if MSI is enabled, else assert
//!   INTx), 0x0C INTX (read: bit 0 = asserted; write bit 0 = 1: deassert),
//!   0x10 RAISED (read only: interrupts signalled), 0x14 SLOW (read only:
//!   NOT SCRATCH, answered [`TEST_DEVICE_SLOW_NS`] later: the reading vCPU
//!   waits for it). Dword accesses only; others read all ones and are ignored.
//! - BAR 1 (4 KiB memory): the MSI-X table (4 entries) at 0, PBA at 0x800.
//! - BAR 2 (16 ports): +0 SCRATCH, +4 MAGIC (dword accesses).
//! - MSI at 0x40 (2 vectors, 64-bit, per-vector masking), MSI-X at 0x60.

use alloc::vec::Vec;

use crate::access::all_ones;
use crate::msi::{Msi, MsiMessage, MsiX};
use crate::pci_config::{Bar, ConfigSpace, PciIds, COMMAND_IO, COMMAND_MEMORY};
use crate::pci_segment::PciDevice;

/// The test device's identity.
pub const TEST_DEVICE_IDS: PciIds = PciIds {
    vendor_id: 0x5143,
    device_id: 0x0001,
    revision: 1,
    class: 0xFF,
    subclass: 0,
    prog_if: 0,
    subsystem_vendor_id: 0x5143,
    subsystem_id: 0x0001,
};
/// What BAR 0's first register reads.
pub const TEST_DEVICE_MAGIC: u32 = 0x5154_4456;
/// MSI-X table entries.
pub const TEST_DEVICE_MSIX_ENTRIES: u16 = 4;

const REG_MAGIC: u64 = 0x00;
const REG_SCRATCH: u64 = 0x04;
const REG_RAISE: u64 = 0x08;
const REG_INTX: u64 = 0x0C;
const REG_RAISED: u64 = 0x10;
const REG_SLOW: u64 = 0x14;
/// How late a read of the SLOW register is answered.
pub const TEST_DEVICE_SLOW_NS: u64 = 200_000;

/// The device's state.
pub struct TestDevice {
    cfg: ConfigSpace,
    msi: Msi,
    msix: MsiX,
    scratch: u32,
    intx: bool,
    raised: u32,
}

impl TestDevice {
    /// A device whose BARs firmware placed at `bar0`, `bar1` (memory) and
    /// `io` (ports), with I/O and memory decode on.
    pub fn new(bar0: u32, bar1: u32, io: u16) -> Self {
        let mut cfg = ConfigSpace::new(&TEST_DEVICE_IDS);
        let page = Bar::Memory32 {
            size: 0x1000,
            prefetchable: false,
        };
        // The layout is fixed: none of these can fail on a fresh space.
        let built = cfg
            .set_bar(0, page)
            .and(cfg.set_bar(1, page))
            .and(cfg.set_bar(2, Bar::Io { size: 16 }))
            .and(cfg.set_interrupt_pin(1));
        debug_assert_eq!(built, Ok(()));
        cfg.set_bar_address(0, u64::from(bar0));
        cfg.set_bar_address(1, u64::from(bar1));
        cfg.set_bar_address(2, u64::from(io));
        cfg.set_command(COMMAND_IO | COMMAND_MEMORY);
        let msi = Msi::install(&mut cfg, 2, true);
        let msix = MsiX::install(&mut cfg, TEST_DEVICE_MSIX_ENTRIES, (1, 0), (1, 0x800));
        let (Ok(msi), Ok(msix)) = (msi, msix) else {
            unreachable!("the test device's capabilities fit its configuration space")
        };
        TestDevice {
            cfg,
            msi,
            msix,
            scratch: 0,
            intx: false,
            raised: 0,
        }
    }

    fn raise(&mut self, n: u32, out: &mut Vec<MsiMessage>) {
        let sent = if self.msix.enabled(&self.cfg) {
            self.msix.signal(&self.cfg, n as usize)
        } else if self.msi.enabled(&self.cfg) {
            self.msi.signal(&mut self.cfg, n)
        } else {
            self.intx = true;
            self.raised = self.raised.wrapping_add(1);
            return;
        };
        if let Some(m) = sent {
            self.raised = self.raised.wrapping_add(1);
            out.push(m);
        }
    }
}

impl PciDevice for TestDevice {
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }

    fn config_written(&mut self, _offset: u16, out: &mut Vec<MsiMessage>) {
        self.msi.release_pending(&mut self.cfg, out);
        self.msix.release_pending(&self.cfg, out);
    }

    fn bar_read(&mut self, bar: usize, offset: u64, size: u8, _out: &mut Vec<MsiMessage>) -> u64 {
        match bar {
            1 => match self.msix.region(1, offset) {
                Some(r) => self.msix.read(r, size),
                None => u64::from(all_ones(size)),
            },
            _ if size != 4 => u64::from(all_ones(size)),
            0 => u64::from(match offset {
                REG_MAGIC => TEST_DEVICE_MAGIC,
                REG_SCRATCH => self.scratch,
                REG_INTX => u32::from(self.intx),
                REG_RAISED => self.raised,
                REG_SLOW => !self.scratch,
                _ => all_ones(4),
            }),
            2 => u64::from(match offset {
                0 => self.scratch,
                4 => TEST_DEVICE_MAGIC,
                _ => all_ones(4),
            }),
            _ => u64::from(all_ones(size)),
        }
    }

    fn bar_write(
        &mut self,
        bar: usize,
        offset: u64,
        size: u8,
        value: u64,
        out: &mut Vec<MsiMessage>,
    ) {
        match bar {
            1 => {
                if let Some(r) = self.msix.region(1, offset) {
                    self.msix.write(&self.cfg, r, size, value, out);
                }
            }
            _ if size != 4 => {}
            0 => match offset {
                REG_SCRATCH => self.scratch = value as u32,
                REG_RAISE => self.raise(value as u32, out),
                REG_INTX if value & 1 != 0 => self.intx = false,
                _ => {}
            },
            2 if offset == 0 => self.scratch = value as u32,
            _ => {}
        }
    }

    fn intx_asserted(&self) -> bool {
        self.intx
    }

    fn read_delay_ns(&self, bar: usize, offset: u64) -> Option<u64> {
        (bar == 0 && offset == REG_SLOW).then_some(TEST_DEVICE_SLOW_NS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::PciFunction;

    #[test]
    fn registers_and_widths() {
        let mut d = TestDevice::new(0xC000_0000, 0xC000_1000, 0xC000);
        let mut out = Vec::new();
        assert_eq!(d.bar_read(0, 0, 4, &mut out), u64::from(TEST_DEVICE_MAGIC));
        assert_eq!(d.bar_read(0, 0, 2, &mut out), 0xFFFF);
        d.bar_write(0, 4, 4, 0xAB, &mut out);
        d.bar_write(0, 4, 1, 0xCD, &mut out);
        assert_eq!(d.bar_read(2, 0, 4, &mut out), 0xAB);
        assert_eq!(d.bar_read(2, 4, 4, &mut out), u64::from(TEST_DEVICE_MAGIC));
        assert_eq!(d.bar_read(0, 0xFFC, 4, &mut out), 0xFFFF_FFFF);
        assert_eq!(d.bar_read(5, 0, 4, &mut out), 0xFFFF_FFFF);
        assert!(out.is_empty());
    }

    #[test]
    fn raise_prefers_msix_then_msi_then_intx() {
        let mut d = TestDevice::new(0xC000_0000, 0xC000_1000, 0xC000);
        let mut out = Vec::new();
        d.bar_write(0, REG_RAISE, 4, 0, &mut out);
        assert!(d.intx_asserted() && out.is_empty());
        d.bar_write(0, REG_INTX, 4, 1, &mut out);
        assert!(!d.intx_asserted());
        // MSI on.
        d.cfg.config_write(0x44, 0xFEE0_0000, 0xF);
        d.cfg.config_write(0x4C, 0x30, 0xF);
        d.cfg.config_write(0x40, 1 << 16, 0xF);
        d.bar_write(0, REG_RAISE, 4, 0, &mut out);
        assert_eq!(out.pop().map(|m| m.data), Some(0x30));
        d.bar_write(0, REG_RAISE, 4, 1, &mut out);
        assert!(out.is_empty(), "one vector enabled");
        // MSI-X on, entry 3 unmasked.
        d.bar_write(1, 0x30, 8, 0xFEE0_0000, &mut out);
        d.bar_write(1, 0x38, 8, 0x31, &mut out);
        d.cfg.config_write(0x60, 0x8000 << 16, 0xF);
        d.bar_write(0, REG_RAISE, 4, 3, &mut out);
        assert_eq!(out.pop().map(|m| m.data), Some(0x31));
        d.bar_write(0, REG_RAISE, 4, 7, &mut out);
        d.bar_write(0, REG_RAISE, 4, u64::MAX, &mut out);
        assert!(out.is_empty(), "no such entries");
        assert_eq!(d.bar_read(0, REG_RAISED, 4, &mut out), 3);
    }
}
