//! The ivshmem PCI function one peer VM sees.
//!
//! Identity: 1af4:1110 revision 1, class 05/00/00 (memory controller, RAM), subsystem
//! 1af4:1100, as QEMU's `ivshmem-doorbell` and ACRN's show it. BARs:
//! - BAR 0, 256 bytes of registers, 32-bit accesses at 4-byte offsets (other accesses read all
//!   ones and are ignored, counted): 0x0 interrupt mask (read-write), 0x4 interrupt status (a
//!   read returns it and clears it; a write sets it), 0x8 IV position (the peer id, read-only),
//!   0xC doorbell (write `peer << 16 | vector`; reads 0). Other offsets read 0.
//! - BAR 1, 4 KiB: the MSI-X table ([`IVSHMEM_VECTORS`] entries) at 0 and the PBA at 0x800.
//! - BAR 2, 64-bit prefetchable, the region's size: the shared memory, mapped straight into the
//!   VM's second-level tables wherever the guest puts the BAR ([`vdev::DirectKind::Ram`]). An
//!   access that exits anyway (a read-only peer's write) is dropped and counted.
//!
//! Interrupts: a doorbell for vector `v` raises MSI-X entry `v` when MSI-X is enabled (or sets
//! its pending bit while masked); otherwise it sets bit `v` of the interrupt status, and INTx
//! (INTA#) is asserted while `status & mask` is not 0. The segment reflects the assertion in
//! Status bit 3 and honours Command bit 10 (PCI 2.3), which is what `uio_pci_generic` needs.

use alloc::vec::Vec;
use core::any::Any;

use vdev::{
    all_ones, Bar, ConfigSpace, DirectKind, DirectRange, MsiMessage, MsiX, PciDevice, PciIds,
    COMMAND_MEMORY,
};

use crate::region::{PeerPort, RingError};

/// The device's identity.
pub const IVSHMEM_IDS: PciIds = PciIds {
    vendor_id: 0x1AF4,
    device_id: 0x1110,
    revision: 1,
    class: 0x05,
    subclass: 0x00,
    prog_if: 0x00,
    subsystem_vendor_id: 0x1AF4,
    subsystem_id: 0x1100,
};

/// MSI-X vectors (and doorbell vectors) each device has.
pub const IVSHMEM_VECTORS: u32 = 4;

/// BAR 0 registers.
pub const REG_INTR_MASK: u64 = 0x0;
pub const REG_INTR_STATUS: u64 = 0x4;
pub const REG_IV_POSITION: u64 = 0x8;
pub const REG_DOORBELL: u64 = 0xC;
/// BAR 0's size.
pub const REGS_SIZE: u32 = 256;
/// BAR 1's size and where the PBA sits in it.
pub const MSIX_BAR_SIZE: u32 = 0x1000;
pub const MSIX_PBA_OFFSET: u32 = 0x800;

/// What the device saw of its guest (its accesses to the region are counted in the region's
/// [`PeerCounters`](crate::PeerCounters)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// Register accesses of a width or alignment the device does not decode.
    pub bad_accesses: u64,
}

/// One peer's ivshmem function.
pub struct Ivshmem {
    cfg: ConfigSpace,
    msix: MsiX,
    port: PeerPort,
    readonly: bool,
    mask: u32,
    status: u32,
    counters: DeviceCounters,
}

impl Ivshmem {
    /// The function of the peer `port` attaches, firmware-placed: BAR 0 at `bar0`, BAR 1 at
    /// `bar1` (both 32-bit), BAR 2 at `bar2` (aligned to the region's size, a power of two),
    /// memory decoding on.
    pub fn new(port: PeerPort, readonly: bool, bar0: u32, bar1: u32, bar2: u64) -> Ivshmem {
        let size = port.region().size();
        let mut cfg = ConfigSpace::new(&IVSHMEM_IDS);
        let built = cfg
            .set_bar(
                0,
                Bar::Memory32 {
                    size: REGS_SIZE,
                    prefetchable: false,
                },
            )
            .and(cfg.set_bar(
                1,
                Bar::Memory32 {
                    size: MSIX_BAR_SIZE,
                    prefetchable: false,
                },
            ))
            .and(cfg.set_bar(
                2,
                Bar::Memory64 {
                    size,
                    prefetchable: true,
                },
            ))
            .and(cfg.set_interrupt_pin(1));
        if let Err(e) = built {
            // The configurator admits only power-of-two sizes from 4 KiB: a region that breaks
            // that is shown without its memory BAR rather than taking the hypervisor down.
            log::error!("shm {}: BARs: {e:?}", port.region().name());
        }
        cfg.set_bar_address(0, u64::from(bar0));
        cfg.set_bar_address(1, u64::from(bar1));
        cfg.set_bar_address(2, bar2);
        cfg.set_command(COMMAND_MEMORY);
        let msix = match MsiX::install(
            &mut cfg,
            IVSHMEM_VECTORS as u16,
            (1, 0),
            (1, MSIX_PBA_OFFSET),
        ) {
            Ok(m) => m,
            Err(_) => unreachable!("the MSI-X capability fits an empty configuration space"),
        };
        Ivshmem {
            cfg,
            msix,
            port,
            readonly,
            mask: 0,
            status: 0,
            counters: DeviceCounters::default(),
        }
    }

    /// The peer's attachment.
    pub fn port(&self) -> &PeerPort {
        &self.port
    }

    pub fn counters(&self) -> DeviceCounters {
        self.counters
    }

    /// Interrupt mask and status registers.
    pub fn registers(&self) -> (u32, u32) {
        (self.mask, self.status)
    }

    fn reg_read(&mut self, offset: u64, size: u8) -> u64 {
        if size != 4 || offset % 4 != 0 {
            self.counters.bad_accesses += 1;
            return u64::from(all_ones(size));
        }
        u64::from(match offset {
            REG_INTR_MASK => self.mask,
            REG_INTR_STATUS => core::mem::take(&mut self.status),
            REG_IV_POSITION => u32::from(self.port.peer()),
            _ => 0,
        })
    }

    fn reg_write(&mut self, offset: u64, size: u8, value: u32) {
        if size != 4 || offset % 4 != 0 {
            self.counters.bad_accesses += 1;
            return;
        }
        match offset {
            REG_INTR_MASK => self.mask = value,
            REG_INTR_STATUS => self.status = value,
            REG_DOORBELL => {
                let (to, vector) = ((value >> 16) as u16, value & 0xFF);
                // Dropped rings are counted (and logged, rate-limited) by the region.
                let _: Result<(), RingError> = self.port.ring(to, vector);
            }
            _ => {}
        }
    }
}

impl PciDevice for Ivshmem {
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }

    fn config_written(&mut self, _offset: u16, out: &mut Vec<MsiMessage>) {
        self.msix.release_pending(&self.cfg, out);
    }

    fn bar_read(&mut self, bar: usize, offset: u64, size: u8, _out: &mut Vec<MsiMessage>) -> u64 {
        match bar {
            0 => self.reg_read(offset, size),
            1 => match self.msix.region(1, offset) {
                Some(r) => self.msix.read(r, size),
                None => 0,
            },
            _ => {
                self.port.trapped(false);
                u64::MAX >> (64 - 8 * u32::from(size.clamp(1, 8)))
            }
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
            0 => self.reg_write(offset, size, value as u32),
            1 => {
                if let Some(r) = self.msix.region(1, offset) {
                    self.msix.write(&self.cfg, r, size, value, out);
                }
            }
            _ => self.port.trapped(true),
        }
    }

    fn intx_asserted(&self) -> bool {
        !self.msix.enabled(&self.cfg) && self.status & self.mask != 0
    }

    fn poll(&mut self, out: &mut Vec<MsiMessage>) {
        let bits = self.port.take();
        if bits == 0 {
            return;
        }
        let msix = self.msix.enabled(&self.cfg);
        for v in 0..IVSHMEM_VECTORS {
            if bits & (1 << v) == 0 {
                continue;
            }
            if msix {
                out.extend(self.msix.signal(&self.cfg, v as usize));
            } else {
                self.status |= 1 << v;
            }
        }
        self.port.delivered(u64::from(bits.count_ones()));
    }

    fn has_input(&self) -> bool {
        self.port.has_pending()
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }

    fn direct_ranges(&self, bar: usize, out: &mut Vec<DirectRange>) {
        if bar == 2 {
            out.push(DirectRange {
                offset: 0,
                len: self.port.region().size(),
                host: self.port.region().host(),
                kind: DirectKind::Ram {
                    writable: !self.readonly,
                },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::tests::{two, Count};
    use crate::region::Region;
    use alloc::boxed::Box;
    use alloc::sync::Arc;
    use core::sync::atomic::{AtomicU32, Ordering};
    use vdev::{Bdf, PciInterrupt, PciSegment, SegmentLayout, SlatOp};

    const ECAM: u64 = 0xE000_0000;
    const SLOT: u8 = 31;
    const BAR0: u32 = 0xC100_0000;
    const BAR1: u32 = 0xC100_4000;
    const BAR2: u64 = 0xD000_0000;

    fn segment() -> PciSegment {
        PciSegment::new(SegmentLayout {
            ecam_base: ECAM,
            bus_end: 0,
            mmio_window: 0xC000_0000..0xE000_0000,
            io_window: 0xC000..0x1_0000,
            intx_gsi_base: 16,
        })
    }

    fn cfg_addr(offset: u64) -> u64 {
        ECAM + (u64::from(SLOT) << 15) + offset
    }

    /// Peer `peer` of `region` in a segment of its own.
    fn plug(region: &Arc<Region>, peer: u16, wakes: Arc<AtomicU32>) -> PciSegment {
        let port = region.attach(peer, Box::new(Count(wakes))).unwrap();
        let readonly = region.peers()[usize::from(peer)].0.readonly;
        let mut seg = segment();
        seg.add(
            Bdf::new(0, SLOT, 0).unwrap(),
            Box::new(Ivshmem::new(port, readonly, BAR0, BAR1, BAR2)),
        )
        .unwrap();
        seg
    }

    fn ring(seg: &mut PciSegment, to: u32, vector: u32) {
        seg.mmio_write(
            u64::from(BAR0) + REG_DOORBELL,
            4,
            u64::from(to << 16 | vector),
        );
    }

    #[test]
    fn identity_bars_and_the_region_mapped_where_bar2_is() {
        let r = two();
        let mut a = plug(&r, 0, Arc::default());
        assert_eq!(a.mmio_read(cfg_addr(0), 4), 0x1110_1AF4);
        assert_eq!(
            a.mmio_read(cfg_addr(8), 4),
            0x0500_0001,
            "class 05/00/00, revision 1"
        );
        assert_eq!(a.mmio_read(cfg_addr(0x2C), 4), 0x1100_1AF4);
        assert_eq!(a.mmio_read(cfg_addr(0x3D), 1), 1, "INTA#");
        // BAR 2: 64-bit prefetchable, sized to the region.
        assert_eq!(a.mmio_read(cfg_addr(0x18), 4), BAR2 | 0xC);
        a.mmio_write(cfg_addr(0x18), 4, 0xFFFF_FFFF);
        assert_eq!(a.mmio_read(cfg_addr(0x18), 4), 0xFFFF_F00C);
        a.mmio_write(cfg_addr(0x18), 4, BAR2);
        // Mapped writable at its firmware place, then moved by the guest.
        let ops = a.take_slat_ops();
        assert_eq!(
            ops.last(),
            Some(&SlatOp::MapRam {
                gpa: BAR2,
                len: 0x1000,
                host: 0x100_0000,
                writable: true
            })
        );
        a.mmio_write(cfg_addr(0x18), 4, 0xD800_000C);
        assert_eq!(
            a.take_slat_ops(),
            [
                SlatOp::Unmap {
                    gpa: BAR2,
                    len: 0x1000
                },
                SlatOp::MapRam {
                    gpa: 0xD800_0000,
                    len: 0x1000,
                    host: 0x100_0000,
                    writable: true
                }
            ]
        );
        // Over guest RAM (outside the PCI window) or over another BAR: declined, unmapped, and
        // never mapped there.
        for bad in [0x1000_0000u64, u64::from(BAR1)] {
            a.mmio_write(cfg_addr(0x18), 4, bad | 0xC);
            let ops = a.take_slat_ops();
            assert!(
                ops.iter().all(|op| matches!(op, SlatOp::Unmap { .. })),
                "{bad:#x}: {ops:?}"
            );
        }
        assert!(a.counters().declined_bars >= 2);
        a.mmio_write(cfg_addr(0x18), 4, 0xD800_000C);
        assert_eq!(a.take_slat_ops().len(), 1, "mapped again at a good place");
        // Memory decoding off: unmapped.
        a.mmio_write(cfg_addr(4), 2, 0);
        assert_eq!(
            a.take_slat_ops(),
            [SlatOp::Unmap {
                gpa: 0xD800_0000,
                len: 0x1000
            }]
        );
        // The read-only peer's mapping is read-only; its writes that exit are dropped.
        let mut b = plug(&r, 1, Arc::default());
        assert!(b.take_slat_ops().contains(&SlatOp::MapRam {
            gpa: BAR2,
            len: 0x1000,
            host: 0x100_0000,
            writable: false
        }));
        b.mmio_write(BAR2 + 8, 4, 0x1234);
        assert_eq!(b.mmio_read(BAR2 + 8, 4), 0xFFFF_FFFF);
        assert_eq!(r.peers()[1].1.trapped, 2);
        assert_eq!(r.peers()[0].1.trapped, 0);
    }

    #[test]
    fn a_doorbell_raises_intx_with_pci23_status_and_disable() {
        let r = two();
        let wakes = Arc::new(AtomicU32::new(0));
        let mut a = plug(&r, 0, Arc::default());
        let mut b = plug(&r, 1, wakes.clone());
        assert_eq!(b.mmio_read(u64::from(BAR0) + REG_IV_POSITION, 4), 1);
        assert_eq!(a.mmio_read(u64::from(BAR0) + REG_IV_POSITION, 4), 0);
        // Mask 0 (reset value): the status latches, no interrupt.
        ring(&mut a, 1, 2);
        assert_eq!(wakes.load(Ordering::Relaxed), 1);
        assert!(b.has_input());
        b.poll();
        assert!(b.take_interrupts().is_empty());
        assert_eq!(b.mmio_read(cfg_addr(6), 2) & 8, 0, "Status bit 3 clear");
        // Unmasked: INTA# goes up (GSI 16 + 31 % 4 = 19), Status bit 3 shows it.
        b.mmio_write(u64::from(BAR0) + REG_INTR_MASK, 4, 0xFFFF_FFFF);
        assert_eq!(
            b.take_interrupts(),
            [PciInterrupt::Intx {
                gsi: 19,
                level: true
            }]
        );
        assert_eq!(b.mmio_read(cfg_addr(6), 2) & 8, 8);
        // Command bit 10: the line drops, Status bit 3 stays (uio_pci_generic's handler).
        b.mmio_write(cfg_addr(4), 2, 0x0402);
        assert_eq!(
            b.take_interrupts(),
            [PciInterrupt::Intx {
                gsi: 19,
                level: false
            }]
        );
        assert_eq!(b.mmio_read(cfg_addr(6), 2) & 8, 8);
        // Reading the status clears it (and the assertion).
        assert_eq!(b.mmio_read(u64::from(BAR0) + REG_INTR_STATUS, 4), 1 << 2);
        assert_eq!(b.mmio_read(u64::from(BAR0) + REG_INTR_STATUS, 4), 0);
        assert_eq!(b.mmio_read(cfg_addr(6), 2) & 8, 0);
        b.mmio_write(cfg_addr(4), 2, 0x0002);
        assert!(b.take_interrupts().is_empty());
        // The next doorbell interrupts again.
        ring(&mut a, 1, 0);
        b.poll();
        assert_eq!(
            b.take_interrupts(),
            [PciInterrupt::Intx {
                gsi: 19,
                level: true
            }]
        );
        let peers = r.peers();
        assert_eq!(
            (peers[0].1.sent, peers[1].1.received, peers[1].1.delivered),
            (2, 2, 2)
        );
    }

    #[test]
    fn a_doorbell_raises_the_msix_vector_or_its_pending_bit() {
        let r = two();
        let mut a = plug(&r, 0, Arc::default());
        let mut b = plug(&r, 1, Arc::default());
        // MSI-X capability: find it, enable it, program entry 3.
        let cap = b.mmio_read(cfg_addr(0x34), 1);
        assert_eq!(b.mmio_read(cfg_addr(cap), 1), 0x11);
        assert_eq!(b.mmio_read(cfg_addr(cap + 2), 2) & 0x7FF, 3, "4 entries");
        b.mmio_write(cfg_addr(cap + 2), 2, 0x8000);
        let entry = u64::from(BAR1) + 3 * 16;
        b.mmio_write(entry, 4, 0xFEE0_0000);
        b.mmio_write(entry + 8, 4, 0x45);
        ring(&mut a, 1, 3);
        b.poll();
        assert!(b.take_interrupts().is_empty(), "entry still masked");
        assert_eq!(
            b.mmio_read(u64::from(BAR1) + u64::from(MSIX_PBA_OFFSET), 4),
            1 << 3
        );
        b.mmio_write(entry + 12, 4, 0);
        let msgs = b.take_interrupts();
        assert_eq!(msgs.len(), 1);
        assert!(
            matches!(msgs[0], PciInterrupt::Msi(m) if m.data == 0x45 && m.address == 0xFEE0_0000)
        );
        ring(&mut a, 1, 3);
        b.poll();
        assert_eq!(b.take_interrupts().len(), 1);
        // With MSI-X on, INTx never asserts.
        b.mmio_write(u64::from(BAR0) + REG_INTR_MASK, 4, u64::from(u32::MAX));
        b.mmio_write(u64::from(BAR0) + REG_INTR_STATUS, 4, 1);
        assert!(b.take_interrupts().is_empty());
    }

    #[test]
    fn hostile_registers_peers_vectors_and_floods() {
        let r = two();
        let wakes = Arc::new(AtomicU32::new(0));
        let mut a = plug(&r, 0, Arc::default());
        let mut b = plug(&r, 1, wakes.clone());
        // Every offset and width of BAR 0 and BAR 1: nothing panics; the IV position stays.
        for off in 0..0x110u64 {
            for size in [0u8, 1, 2, 3, 4, 8, 16] {
                let _ = a.mmio_read(u64::from(BAR0) + off, size);
                if off != REG_DOORBELL {
                    a.mmio_write(u64::from(BAR0) + off, size, u64::MAX);
                }
                let _ = a.mmio_read(u64::from(BAR1) + off * 8, size);
                a.mmio_write(u64::from(BAR1) + off * 8, size, u64::MAX);
            }
        }
        assert_eq!(a.mmio_read(u64::from(BAR0) + REG_IV_POSITION, 4), 0);
        a.mmio_write(u64::from(BAR0) + REG_IV_POSITION, 4, 7);
        assert_eq!(
            a.mmio_read(u64::from(BAR0) + REG_IV_POSITION, 4),
            0,
            "read-only"
        );
        assert_eq!(a.mmio_read(u64::from(BAR0) + REG_DOORBELL, 4), 0);
        // Doorbells to peers that do not exist, vectors out of range, narrow doorbell writes.
        for value in [
            2u32 << 16,
            0xFFFF << 16 | 0xFF,
            1 << 16 | 4,
            1 << 16 | 0xFF,
            u32::MAX,
        ] {
            a.mmio_write(u64::from(BAR0) + REG_DOORBELL, 4, u64::from(value));
        }
        a.mmio_write(u64::from(BAR0) + REG_DOORBELL, 2, 1 << 16);
        a.mmio_write(u64::from(BAR0) + REG_DOORBELL + 1, 4, 1 << 16);
        assert_eq!(wakes.load(Ordering::Relaxed), 0);
        assert!(!b.has_input());
        assert_eq!(r.peers()[0].1.dropped, 5);
        // A flood: the burst gets through, the rest is rate-limited; one wake until b polls.
        for _ in 0..1000 {
            ring(&mut a, 1, 1);
        }
        let c = r.peers();
        assert_eq!(c[0].1.sent + c[0].1.rate_limited, 1000);
        assert!(c[0].1.rate_limited > 0, "{c:?}");
        assert_eq!(wakes.load(Ordering::Relaxed), 1);
        b.poll();
        assert_eq!(
            r.peers()[1].1.delivered,
            1,
            "a flood coalesces into one interrupt"
        );
    }
}
