//! Fuzz target: a passed-through function (the NIC-like simulated function: three BARs, MSI,
//! MSI-X, PCIe with FLR) as its VM's segment holds it, driven by the fuzzer: configuration
//! writes of every width at every offset (through the segment, so BAR moves and command
//! changes take effect), BAR reads and writes at any offset and width, host interrupts on any
//! message, INTx raises and EOIs. Nothing may panic; no configuration write may reach the real
//! function except its command register and its MSI/MSI-X capabilities, the real BARs never
//! move, and every message the device hands out is one the guest programmed (an MSI address).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use passthrough::sim::{SimBus, SimFunction, SimHost};
use passthrough::{scan, IrqPending, PassthroughDevice};
use vdev::{Bdf, MsiMessage, PciInterrupt, PciSegment, SegmentLayout};

fuzz_target!(|data: &[u8]| {
    let nic = SimFunction::nic();
    let mut bus = SimBus::default();
    let bdf = Bdf::new(0, 5, 0).unwrap();
    bus.add(bdf, nic.clone());
    let phys = scan(&mut bus).remove(0);
    let host = SimHost::new(nic);
    let irq = Arc::new(IrqPending::default());
    let messages: Vec<MsiMessage> = (0..4)
        .map(|i| MsiMessage {
            address: 0xFEE0_1000,
            data: 0x40 + i,
        })
        .collect();
    let Ok(dev) = PassthroughDevice::new(
        phys,
        Box::new(host.clone()),
        &[(0, 0xD000_0000), (2, 0xD000), (3, 0xD010_0000)],
        messages,
        irq.clone(),
        true,
    ) else {
        return;
    };
    let mut seg = PciSegment::new(SegmentLayout {
        ecam_base: 0xE000_0000,
        bus_end: 0,
        mmio_window: 0xC000_0000..0xE000_0000,
        io_window: 0xC000..0x1_0000,
        intx_gsi_base: 16,
    });
    if seg.add(bdf, Box::new(dev)).is_err() {
        return;
    }
    for op in data.chunks(8) {
        let mut b = [0u8; 8];
        b[..op.len()].copy_from_slice(op);
        let size = [1u8, 2, 4, 8][usize::from(b[1] & 3)];
        let value = u64::from(u32::from_le_bytes([b[4], b[5], b[6], b[7]]))
            | u64::from(b[3]) << 32;
        let at = u64::from(u16::from_le_bytes([b[2], b[3]]));
        match b[0] % 8 {
            // Config space through ECAM (slot 5).
            0 => seg.mmio_write(0xE000_0000 + (5 << 15) + (at & 0xFFF), size.min(4), value),
            1 => {
                let _ = seg.mmio_read(0xE000_0000 + (5 << 15) + (at & 0xFFF), size.min(4));
            }
            // BAR 0 (wherever the guest moved it), BAR 3 (MSI-X table and PBA), I/O BAR 2.
            2 => seg.mmio_write(0xD000_0000 + (at << 2), size, value),
            3 => {
                let _ = seg.mmio_read(0xD010_0000 + (at & 0x7FFF), size);
            }
            4 => seg.mmio_write(0xD010_0000 + (at & 0x7FFF), size, value),
            5 => seg.pio_write(0xD000 + (at as u16 & 0x3F), size.min(4), value as u32),
            6 => {
                irq.raise(u32::from(b[1]));
                if b[2] & 1 == 1 {
                    irq.raise_intx();
                }
                seg.poll();
            }
            _ => seg.intx_eoi(u32::from(b[1] & 31)),
        }
        let _ = seg.take_interrupts();
    }
    host.with(|f| {
        assert_eq!(f.peek(0x10), 0xfeb0_0000, "the real BAR 0 moved");
        assert_eq!(f.peek(0x18), 0xc001, "the real I/O BAR moved");
        assert_eq!(f.peek(0x30), 0, "the real ROM BAR was written");
        for (offset, _) in &f.writes {
            assert!(
                *offset == 0x04 || (0x50..0x68).contains(offset) || *offset == 0x70,
                "config write at {offset:#x} reached the real function"
            );
        }
    });
});
