//! The virtual PC platform of a VM: the legacy devices a stock Linux kernel
//! probes (PIC pair, PIT, RTC/CMOS, PCI configuration space with a host
//! bridge, IOAPIC, ACPI PM1 and PM timer, the 0xCF9 reset port) and the
//! console vUART, wired to interrupt lines. ISA IRQ n is GSI n except IRQ 0,
//! which is GSI 2 (the override the VM's MADT declares).
//!
//! The platform is shared by the VM's vCPUs; interrupts come out as IOAPIC
//! deliveries that the caller hands to the vLAPICs.

use alloc::vec::Vec;

use vdev::{Bdf, ConfigSpace, Delivery, Ioapic, PciBus, Pic8259, Pit8254, RtcCmos};

use crate::Uart16550;

/// I/O port of the ACPI PM1a event block (status, enable), as the FADT says.
pub const PM1A_EVT: u16 = 0x600;
/// I/O port of the ACPI PM1a control register.
pub const PM1A_CNT: u16 = 0x604;
/// I/O port of the ACPI PM timer (24-bit, 3.579545 MHz).
pub const PM_TMR: u16 = 0x608;
/// The ACPI PM timer frequency.
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// SLP_TYP value that means S5 (soft off), as the DSDT's `_S5_` says.
pub const S5_SLP_TYP: u16 = 5;
/// The reset control register.
pub const RESET_PORT: u16 = 0xCF9;

/// What a port write asks of the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PioEffect {
    None,
    /// ACPI S5 or another power-off request.
    PowerOff,
    /// The guest reset the platform (0xCF9).
    Reset,
}

/// The console vUART's place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UartPlace {
    pub port: u16,
    pub irq: u8,
}

/// A VM's legacy platform.
pub struct PcPlatform {
    pub pic: Pic8259,
    pub pit: Pit8254,
    pub rtc: RtcCmos,
    pub pci: PciBus<ConfigSpace>,
    pub ioapic: Ioapic,
    pub uart: Uart16550,
    uart_place: Option<UartPlace>,
    uart_level: bool,
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u16,
    /// Deliveries waiting for the vLAPICs.
    deliveries: Vec<Delivery>,
}

fn gsi_of_isa(irq: u8) -> u32 {
    if irq == 0 {
        2
    } else {
        u32::from(irq)
    }
}

impl PcPlatform {
    /// A platform whose clock reads `now_ns` and whose RTC says `unix_secs`;
    /// the IOAPIC gets `ioapic_id` (the MADT's).
    pub fn new(now_ns: u64, unix_secs: u64, ioapic_id: u8, uart: Option<UartPlace>) -> Self {
        let mut pci = PciBus::new();
        // The bus is empty: adding the host bridge cannot collide.
        let _ = pci.add(Bdf::HOST_BRIDGE, vdev::host_bridge());
        PcPlatform {
            pic: Pic8259::new(),
            pit: Pit8254::new(),
            rtc: RtcCmos::new(unix_secs, now_ns),
            pci,
            ioapic: Ioapic::new(ioapic_id),
            uart: Uart16550::new(),
            uart_place: uart,
            uart_level: false,
            pm1_sts: 0,
            pm1_en: 0,
            pm1_cnt: 1, // SCI_EN: always in ACPI mode
            deliveries: Vec::new(),
        }
    }

    /// Raises or lowers ISA `irq` on both the PIC and the IOAPIC.
    pub fn set_isa_irq(&mut self, irq: u8, level: bool) {
        self.pic.set_irq(u32::from(irq), level);
        if let Some(d) = self.ioapic.set_irq(gsi_of_isa(irq), level) {
            self.deliveries.push(d);
        }
    }

    fn pulse_isa_irq(&mut self, irq: u8) {
        self.set_isa_irq(irq, true);
        self.set_isa_irq(irq, false);
    }

    fn uart_offset(&self, port: u16) -> Option<u8> {
        let p = self.uart_place?;
        (p.port..p.port + 8)
            .contains(&port)
            .then(|| (port - p.port) as u8)
    }

    /// Updates the vUART's interrupt line after any access or input.
    fn sync_uart_irq(&mut self) {
        let Some(p) = self.uart_place else { return };
        let level = self.uart.irq_pending();
        if level != self.uart_level {
            self.uart_level = level;
            self.set_isa_irq(p.irq, level);
        }
    }

    /// A guest port read.
    pub fn pio_read(&mut self, port: u16, size: u8, now_ns: u64) -> u32 {
        if let Some(off) = self.uart_offset(port) {
            let v = if size == 1 {
                u32::from(self.uart.read(off))
            } else {
                vdev::all_ones(size)
            };
            self.sync_uart_irq();
            return v;
        }
        match port {
            0x20 | 0x21 | 0xA0 | 0xA1 | 0x4D0 | 0x4D1 => self.pic.read(port, size),
            0x40..=0x43 | 0x61 => self.pit.read(port, size, now_ns),
            0x70 | 0x71 => self.rtc.read(port, size, now_ns),
            0xCF8..=0xCFF => self.pci.read(port, size),
            PM1A_EVT => u32::from(self.pm1_sts),
            0x602 => u32::from(self.pm1_en),
            PM1A_CNT => u32::from(self.pm1_cnt),
            PM_TMR => {
                let ticks = u128::from(now_ns) * u128::from(PM_TIMER_HZ) / 1_000_000_000;
                (ticks as u32) & 0x00FF_FFFF
            }
            _ => vdev::all_ones(size),
        }
    }

    /// A guest port write.
    pub fn pio_write(&mut self, port: u16, size: u8, value: u32, now_ns: u64) -> PioEffect {
        if let Some(off) = self.uart_offset(port) {
            if size == 1 {
                self.uart.write(off, value as u8);
            }
            self.sync_uart_irq();
            return PioEffect::None;
        }
        match port {
            0x20 | 0x21 | 0xA0 | 0xA1 | 0x4D0 | 0x4D1 => self.pic.write(port, size, value),
            0x40..=0x43 | 0x61 => self.pit.write(port, size, value, now_ns),
            0x70 | 0x71 => self.rtc.write(port, size, value, now_ns),
            RESET_PORT if size == 1 && value & 0x04 != 0 => return PioEffect::Reset,
            0xCF8..=0xCFF => self.pci.write(port, size, value),
            PM1A_EVT => self.pm1_sts &= !(value as u16), // write 1 to clear
            0x602 => self.pm1_en = value as u16,
            PM1A_CNT => {
                let v = value as u16;
                self.pm1_cnt = (v & !(1 << 13)) | 1;
                if v & (1 << 13) != 0 && (v >> 10) & 7 == S5_SLP_TYP {
                    return PioEffect::PowerOff;
                }
            }
            _ => {}
        }
        PioEffect::None
    }

    /// Whether `gpa` is the IOAPIC's register window.
    pub fn is_ioapic(gpa: u64) -> bool {
        (vdev::IOAPIC_BASE..vdev::IOAPIC_BASE + vdev::IOAPIC_MMIO_SIZE).contains(&gpa)
    }

    /// An IOAPIC register read.
    pub fn ioapic_read(&mut self, gpa: u64, size: u8) -> u32 {
        self.ioapic.read(gpa.wrapping_sub(vdev::IOAPIC_BASE), size)
    }

    /// An IOAPIC register write (may deliver pending level interrupts).
    pub fn ioapic_write(&mut self, gpa: u64, size: u8, value: u32) {
        let d = self
            .ioapic
            .write(gpa.wrapping_sub(vdev::IOAPIC_BASE), size, value);
        self.deliveries.extend(d);
    }

    /// Advances the timers to `now_ns` (PIT IRQ 0, RTC IRQ 8).
    pub fn poll(&mut self, now_ns: u64) {
        if self.pit.poll(now_ns) > 0 {
            self.pulse_isa_irq(0);
        }
        let rtc = self.rtc.poll(now_ns);
        self.set_isa_irq(8, rtc);
    }

    /// The next time a timer needs [`PcPlatform::poll`].
    pub fn next_deadline(&self) -> Option<u64> {
        match (self.pit.next_deadline(), self.rtc.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A byte typed at the VM's console; false if its receive FIFO is full.
    pub fn console_input(&mut self, byte: u8) -> bool {
        let ok = self.uart.push_input(byte);
        self.sync_uart_irq();
        ok
    }

    /// The end of interrupt `vector` at a vLAPIC (level-triggered lines re-deliver).
    pub fn eoi(&mut self, vector: u8) {
        let d = self.ioapic.eoi(vector);
        self.deliveries.extend(d);
    }

    /// Takes the interrupts waiting for the vLAPICs.
    pub fn take_deliveries(&mut self) -> Vec<Delivery> {
        core::mem::take(&mut self.deliveries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform() -> PcPlatform {
        PcPlatform::new(
            0,
            1_700_000_000,
            1,
            Some(UartPlace {
                port: 0x3F8,
                irq: 4,
            }),
        )
    }

    /// Programs IOAPIC pin `pin` to `vector`, edge, unmasked, destination APIC 0.
    fn route(p: &mut PcPlatform, pin: u32, vector: u8) {
        p.ioapic_write(vdev::IOAPIC_BASE, 4, 0x10 + 2 * pin);
        p.ioapic_write(vdev::IOAPIC_BASE + 0x10, 4, u32::from(vector));
        p.ioapic_write(vdev::IOAPIC_BASE, 4, 0x11 + 2 * pin);
        p.ioapic_write(vdev::IOAPIC_BASE + 0x10, 4, 0);
    }

    #[test]
    fn pit_channel0_reaches_gsi2() {
        let mut p = platform();
        route(&mut p, 2, 0x30);
        p.pio_write(0x43, 1, 0x34, 0); // channel 0, lo/hi, mode 2
        p.pio_write(0x40, 1, 0x9C, 0);
        p.pio_write(0x40, 1, 0x2E, 0); // 11932: 10 ms
        assert!(p.next_deadline().is_some());
        p.poll(20_000_000);
        let d = p.take_deliveries();
        assert!(d.iter().any(|d| d.vector == 0x30), "{d:?}");
    }

    #[test]
    fn uart_receive_raises_irq4_when_enabled() {
        let mut p = platform();
        route(&mut p, 4, 0x24);
        p.pio_write(0x3F9, 1, 0x01, 0); // IER: RX data
        p.pio_write(0x3FC, 1, 0x08, 0); // MCR: OUT2 gates the line
        assert!(p.console_input(b'x'));
        assert!(p.take_deliveries().iter().any(|d| d.vector == 0x24));
        assert_eq!(p.pio_read(0x3F8, 1, 0), u32::from(b'x'));
    }

    #[test]
    fn acpi_s5_powers_off_and_cf9_resets() {
        let mut p = platform();
        assert_eq!(p.pio_read(PM1A_CNT, 2, 0) & 1, 1, "SCI_EN");
        assert_eq!(
            p.pio_write(PM1A_CNT, 2, 1 << 13, 0),
            PioEffect::None,
            "S0 sleep type is not off"
        );
        assert_eq!(
            p.pio_write(PM1A_CNT, 2, (1 << 13) | (5 << 10), 0),
            PioEffect::PowerOff
        );
        assert_eq!(p.pio_write(RESET_PORT, 1, 0x06, 0), PioEffect::Reset);
        assert_eq!(p.pio_write(RESET_PORT, 1, 0x02, 0), PioEffect::None);
    }

    #[test]
    fn pm_timer_counts_at_its_frequency_and_wraps_at_24_bits() {
        let mut p = platform();
        assert_eq!(
            p.pio_read(PM_TMR, 4, 1_000_000_000),
            (PM_TIMER_HZ as u32) & 0xFF_FFFF
        );
        assert!(p.pio_read(PM_TMR, 4, u64::MAX) <= 0xFF_FFFF);
    }

    #[test]
    fn hostile_ports_and_sizes_never_panic() {
        let mut p = platform();
        for port in [
            0u16, 0x20, 0x40, 0x61, 0x70, 0x3F8, 0x3FF, 0x600, 0x608, 0xCF8, 0xCFC, 0xCFF, 0xFFFF,
        ] {
            for size in [0u8, 1, 2, 3, 4, 8] {
                let _ = p.pio_read(port, size, u64::MAX);
                let _ = p.pio_write(port, size, u32::MAX, u64::MAX);
            }
        }
        for off in [0u64, 0x10, 0x20, 0x40, 0xFFF, 0x1000] {
            let _ = p.ioapic_read(vdev::IOAPIC_BASE + off, 4);
            p.ioapic_write(vdev::IOAPIC_BASE + off, 4, u32::MAX);
        }
        p.eoi(0);
        p.eoi(255);
        p.poll(u64::MAX);
        let _ = p.take_deliveries();
    }
}
