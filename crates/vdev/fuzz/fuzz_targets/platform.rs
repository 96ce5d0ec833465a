//! Fuzz target: a stream of guest port and MMIO accesses, interrupt lines,
//! EOIs and clock steps against all five platform devices, wired to each
//! other the way a VM wires them (PIT -> IRQ 0 / GSI 2, RTC -> IRQ 8 / GSI 8),
//! checking the invariants callers rely on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vdev::{
    host_bridge, Bar, Bdf, ConfigSpace, DeliveryMode, Ioapic, PciBus, PciIds, Pic8259, Pit8254,
    RtcCmos,
};

/// Reads the input a byte or a dword at a time; zeros once it runs out.
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

    /// A port: usually one the devices decode, sometimes anything.
    fn port(&mut self, decoded: &[u16]) -> u16 {
        let b = self.byte();
        match decoded.get(usize::from(b)) {
            Some(&p) => p,
            None if b & 1 == 0 => u16::from_le_bytes([self.byte(), self.byte()]),
            None => decoded[usize::from(b) % decoded.len()],
        }
    }

    /// An access width, mostly valid.
    fn size(&mut self) -> u8 {
        [1, 1, 2, 4, 4, 0, 3, 8][usize::from(self.byte() & 7)]
    }
}

/// A read of `size` bytes never has bits above its width.
fn check_width(v: u32, size: u8) {
    if size == 1 {
        assert!(v <= 0xFF, "byte read {v:#x}");
    } else if size == 2 {
        assert!(v <= 0xFFFF, "word read {v:#x}");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut now: u64 = u64::from(input.dword());
    let mut ioapic = Ioapic::new(input.byte());
    let mut pic = Pic8259::new();
    let mut pit = Pit8254::new();
    let mut rtc = RtcCmos::new(u64::from(input.dword()) << 8, now);
    let mut pci: PciBus<ConfigSpace> = PciBus::new();
    pci.add(Bdf::HOST_BRIDGE, host_bridge()).expect("empty bus");
    let mut nic = ConfigSpace::new(&PciIds {
        vendor_id: 0x1AF4,
        device_id: 0x1041,
        revision: 1,
        class: 2,
        subclass: 0,
        prog_if: 0,
        subsystem_vendor_id: 0x1AF4,
        subsystem_id: 1,
    });
    nic.set_bar(
        0,
        Bar::Memory64 {
            size: 0x4000,
            prefetchable: true,
        },
    )
    .expect("valid BAR");
    nic.set_bar(2, Bar::Io { size: 0x20 }).expect("valid BAR");
    nic.set_interrupt_pin(1).expect("valid pin");
    pci.add(Bdf::new(0, 3, 0).expect("valid BDF"), nic)
        .expect("free slot");

    let mut rtc_irq = false;
    while !input.0.is_empty() {
        let op = input.byte();
        let size = input.size();
        match op % 16 {
            0 => {
                let offset = u64::from(input.byte()) * 4 + u64::from(input.byte() & 3);
                let v = ioapic.read(offset, size);
                check_width(v, size);
            }
            1 => {
                let offset = [0x00, 0x10, 0x40, u64::from(input.byte())][usize::from(op >> 6)];
                for d in ioapic.write(offset, size, input.dword()) {
                    assert!(d.mode != DeliveryMode::Fixed || d.vector >= 16);
                }
            }
            2 => {
                let line = u32::from(input.byte() % 32);
                if let Some(d) = ioapic.set_irq(line, op & 0x80 != 0) {
                    assert!(line < 24 && u32::from(d.pin) == line);
                    assert!(
                        !matches!(d.mode, DeliveryMode::Fixed | DeliveryMode::LowestPriority)
                            || d.vector >= 16
                    );
                }
            }
            3 => {
                let n = ioapic.eoi(input.byte()).len();
                assert!(n <= vdev::IOAPIC_PINS);
            }
            4 => {
                let port = input.port(&[0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1]);
                check_width(pic.read(port, size), size);
            }
            5 => {
                let port = input.port(&[0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1]);
                pic.write(port, size, input.dword());
            }
            6 => {
                pic.set_irq(u32::from(input.byte() % 20), op & 0x80 != 0);
                // INT and INTA agree.
                if let Some(v) = pic.pending_vector() {
                    assert_eq!(pic.acknowledge(), v);
                } else if op & 0x40 != 0 {
                    let _ = pic.acknowledge();
                }
            }
            7 => {
                let port = input.port(&[0x40, 0x41, 0x42, 0x43, 0x61]);
                check_width(pit.read(port, size, now), size);
            }
            8 => {
                let port = input.port(&[0x40, 0x41, 0x42, 0x43, 0x61]);
                pit.write(port, size, input.dword(), now);
            }
            9 | 10 => {
                let port = input.port(&[0x70, 0x71]);
                if op % 16 == 9 {
                    check_width(rtc.read(port, size, now), size);
                } else {
                    rtc.write(port, size, input.dword(), now);
                }
            }
            11 | 12 => {
                let port = input.port(&[0xCF8, 0xCFC, 0xCFD, 0xCFE, 0xCFF]);
                if op % 16 == 11 {
                    check_width(pci.read(port, size), size);
                } else {
                    pci.write(port, size, input.dword());
                }
            }
            13 => {
                let bdf = Bdf::from_raw(u16::from(input.byte()) >> 3 << 3);
                let offset = u16::from_le_bytes([input.byte(), input.byte() & 0x1F]);
                if op & 0x80 != 0 {
                    pci.config_write(bdf, offset, size, input.dword());
                } else {
                    check_width(pci.config_read(bdf, offset, size), size);
                }
            }
            _ => {
                // Time moves on (never back): small steps and huge jumps.
                let step = u64::from(input.dword()) << (input.byte() % 40);
                now = now.saturating_add(step);
            }
        }

        // Wire the timers to the interrupt controllers, as the VM does.
        if pit.poll(now) > 0 {
            pic.set_irq(0, true);
            pic.set_irq(0, false);
            let _ = ioapic.set_irq(2, true);
            let _ = ioapic.set_irq(2, false);
        }
        if let Some(t) = pit.next_deadline() {
            assert!(
                t > now || now == u64::MAX,
                "PIT deadline {t} not after {now}"
            );
        }
        let level = rtc.poll(now);
        if level != rtc_irq {
            rtc_irq = level;
            pic.set_irq(8, level);
            let _ = ioapic.set_irq(8, level);
        }
        if let Some(t) = rtc.next_deadline() {
            assert!(!level, "a deadline while IRQ 8 is already high");
            assert!(
                t > now || now == u64::MAX,
                "RTC deadline {t} not after {now}"
            );
        }
    }
});
