//! The virtual PC platform of a VM: the legacy devices a stock Linux kernel
//! probes (PIC pair, PIT, RTC/CMOS, IOAPIC, ACPI PM1 and PM timer, the 0xCF9
//! reset port), the console vUART and a PCI segment (host bridge, optional
//! test device), every one registered in [`PcPlatform::new`] on the VM's
//! port and MMIO buses. The exit path reaches them only through
//! [`PcPlatform::pio_read`] and its siblings, which dispatch by address.
//!
//! ISA IRQ n is GSI n except IRQ 0, which is GSI 2 (the override the VM's
//! MADT declares); PCI INTx lines arrive on GSIs 16..=19 (see [`layout`]).
//! The platform is shared by the VM's vCPUs; interrupts come out as
//! deliveries that the caller hands to the vLAPICs.

use alloc::boxed::Box;
use alloc::vec::Vec;

use vdev::{
    Bdf, Delivery, Ioapic, PciInterrupt, PciSegment, Pit8254, RtcCmos, SegmentCounters,
    SegmentLayout, TestDevice,
};

use crate::bus::Bus;
pub use crate::device::PioEffect;
use crate::device::{Device, DeviceCx, IrqChip, IrqCounters, Space};
use crate::IoReply;
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

/// Where the PCI segment sits in every VM (the ACPI tables say the same).
pub mod layout {
    /// ECAM (MMCONFIG) window: bus 0 only, 1 MiB.
    pub const ECAM_BASE: u64 = 0xE000_0000;
    /// Last bus number of the segment.
    pub const BUS_END: u8 = 0;
    /// Guest-physical window memory BARs decode in: 0xC000_0000..0xE000_0000.
    /// Guest RAM below 4 GiB ends at or below its start.
    pub const MMIO_WINDOW: (u64, u64) = (vcpu::PCI_HOLE_START, ECAM_BASE - vcpu::PCI_HOLE_START);
    /// Port window I/O BARs decode in: 0xC000..=0xFFFF.
    pub const IO_WINDOW: (u32, u32) = (0xC000, 0x4000);
    /// GSI of slot 0's INTA#: slot s, pin p (0 = INTA#) -> 16 + (s + p) % 4.
    pub const INTX_GSI_BASE: u32 = 16;
    /// Where the test device goes (00:03.0) and its firmware BAR placement.
    pub const TEST_DEVICE_SLOT: u8 = 3;
    pub const TEST_DEVICE_BAR0: u32 = 0xC000_0000;
    pub const TEST_DEVICE_BAR1: u32 = 0xC000_1000;
    pub const TEST_DEVICE_IO: u16 = 0xC000;
    /// Where firmware places the BARs of the device at slot `s` that the
    /// hypervisor serves (virtio): BAR 0 (16 KiB) then BAR 1 (4 KiB), in a
    /// 32 KiB stride from 0xC100_0000.
    pub const fn device_bars(slot: u8) -> (u32, u32) {
        let base = 0xC100_0000 + (slot as u32) * 0x8000;
        (base, base + 0x4000)
    }
}

/// The console vUART's place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UartPlace {
    pub port: u16,
    pub irq: u8,
}

/// What a VM's platform has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformConfig {
    /// The VM clock's reading now, and what the RTC says it is (Unix time).
    pub now_ns: u64,
    pub unix_secs: u64,
    /// The IOAPIC's ID (the MADT's).
    pub ioapic_id: u8,
    pub uart: Option<UartPlace>,
    /// Plug the Quercus PCI test device in at 00:03.0.
    pub pci_test_device: bool,
}

/// Who answers a bus range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The 8259A pair (part of the interrupt controllers).
    Pic,
    /// The IOAPIC (part of the interrupt controllers).
    Ioapic,
    /// A registered device, by index.
    Device(usize),
}

/// A VM's platform: its devices, buses and interrupt controllers.
pub struct PcPlatform {
    irq: IrqChip,
    devices: Vec<Box<dyn Device>>,
    pio: Bus<Target>,
    mmio: Bus<Target>,
    /// Index of the console vUART in `devices`.
    uart: Option<usize>,
    /// Index of the PCI segment in `devices`.
    pci: Option<usize>,
    /// Indexes of the UARTs linked to other VMs' UARTs in `devices`.
    links: Vec<usize>,
    /// Console bytes waiting for the caller.
    console: Vec<u8>,
    /// The earliest device deadline, kept current after every device
    /// access and poll: the per-entry poll is one comparison until then.
    deadline: Option<u64>,
    /// Reads a device answers later, and the last ticket given out.
    late: Vec<LateRead>,
    ticket: u64,
    /// Late reads whose time came: (vCPU, ticket, value).
    completed: Vec<(usize, u64, u64)>,
}

/// A read that a device answers later (an asynchronous backend).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LateRead {
    vcpu: usize,
    ticket: u64,
    value: u64,
    due_ns: u64,
}

/// The 8254 PIT and port 0x61 (IRQ 0).
struct PitDevice(Pit8254);

impl Device for PitDevice {
    fn name(&self) -> &'static str {
        "pit"
    }
    fn read(&mut self, _: Space, addr: u64, size: u8, cx: &mut DeviceCx<'_>) -> u64 {
        u64::from(self.0.read(addr as u16, size, cx.now_ns))
    }
    fn write(&mut self, _: Space, addr: u64, size: u8, value: u64, cx: &mut DeviceCx<'_>) {
        self.0.write(addr as u16, size, value as u32, cx.now_ns);
    }
    fn poll(&mut self, cx: &mut DeviceCx<'_>) {
        if self.0.poll(cx.now_ns) > 0 {
            cx.irq.pulse_isa_irq(0);
        }
    }
    fn next_deadline(&self) -> Option<u64> {
        self.0.next_deadline()
    }
    fn as_any_mut(&mut self) -> &mut dyn core::any::Any {
        self
    }
}

/// The MC146818 RTC and CMOS (IRQ 8).
struct RtcDevice(RtcCmos);

impl Device for RtcDevice {
    fn name(&self) -> &'static str {
        "rtc"
    }
    fn read(&mut self, _: Space, addr: u64, size: u8, cx: &mut DeviceCx<'_>) -> u64 {
        let v = u64::from(self.0.read(addr as u16, size, cx.now_ns));
        // Reading register C lowers IRQ 8 now, not at the next deadline.
        self.poll(cx);
        v
    }
    fn write(&mut self, _: Space, addr: u64, size: u8, value: u64, cx: &mut DeviceCx<'_>) {
        self.0.write(addr as u16, size, value as u32, cx.now_ns);
        self.poll(cx);
    }
    fn poll(&mut self, cx: &mut DeviceCx<'_>) {
        let level = self.0.poll(cx.now_ns);
        cx.irq.set_isa_irq(8, level);
    }
    fn next_deadline(&self) -> Option<u64> {
        self.0.next_deadline()
    }
    fn as_any_mut(&mut self) -> &mut dyn core::any::Any {
        self
    }
}

/// The UARTs at `links` among `devices` (the vUART link ends).
fn linked<'a>(
    devices: &'a mut [Box<dyn Device>],
    links: &'a [usize],
) -> impl Iterator<Item = &'a mut UartDevice> {
    devices
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| links.contains(i))
        .filter_map(|(_, d)| d.as_any_mut().downcast_mut::<UartDevice>())
}

/// A 16550 at its place, with its interrupt line: the console's (its output goes to the VM's
/// console bytes) or one end of a vUART link (`wire`: see [`crate::UartWire`]).
struct UartDevice {
    uart: Uart16550,
    place: UartPlace,
    level: bool,
    wire: Option<Box<dyn crate::UartWire>>,
}

impl UartDevice {
    /// Moves output (and, on a link, input and the modem lines) and updates the interrupt line,
    /// after any access or input.
    fn sync(&mut self, irq: &mut IrqChip, console: &mut Vec<u8>) {
        match self.wire.as_mut() {
            None => self.uart.take_output(&mut |b| console.push(b)),
            Some(wire) => {
                let (dtr, rts) = self.uart.modem_outputs();
                wire.set_outputs(dtr, rts);
                self.uart.send_output(&mut |b| wire.send(b));
                for _ in 0..self.uart.rx_room() {
                    match wire.recv() {
                        // `rx_room` promised the room.
                        Some(b) => {
                            let _ = self.uart.push_input(b);
                        }
                        None => break,
                    }
                }
                let (peer_dtr, peer_rts) = wire.peer_outputs();
                self.uart.set_modem_inputs(peer_rts, peer_dtr, peer_dtr);
            }
        }
        let level = self.uart.irq_pending();
        if level != self.level {
            self.level = level;
            irq.set_isa_irq(self.place.irq, level);
        }
    }
}

impl Device for UartDevice {
    fn name(&self) -> &'static str {
        if self.wire.is_some() {
            "uart-link"
        } else {
            "uart"
        }
    }
    fn read(&mut self, _: Space, addr: u64, size: u8, cx: &mut DeviceCx<'_>) -> u64 {
        let v = if size == 1 {
            u64::from(
                self.uart
                    .read(addr.wrapping_sub(u64::from(self.place.port)) as u8),
            )
        } else {
            u64::from(vdev::all_ones(size))
        };
        self.sync(cx.irq, cx.console);
        v
    }
    fn write(&mut self, _: Space, addr: u64, size: u8, value: u64, cx: &mut DeviceCx<'_>) {
        if size == 1 {
            let off = addr.wrapping_sub(u64::from(self.place.port)) as u8;
            self.uart.write(off, value as u8);
        }
        self.sync(cx.irq, cx.console);
    }
    fn as_any_mut(&mut self) -> &mut dyn core::any::Any {
        self
    }
}

/// The ACPI PM1a event and control blocks and the PM timer.
struct PmDevice {
    sts: u16,
    en: u16,
    cnt: u16,
}

impl Device for PmDevice {
    fn name(&self) -> &'static str {
        "acpi-pm"
    }
    fn read(&mut self, _: Space, addr: u64, size: u8, cx: &mut DeviceCx<'_>) -> u64 {
        u64::from(match addr as u16 {
            PM1A_EVT => u32::from(self.sts),
            0x602 => u32::from(self.en),
            PM1A_CNT => u32::from(self.cnt),
            PM_TMR => {
                let ticks = u128::from(cx.now_ns) * u128::from(PM_TIMER_HZ) / 1_000_000_000;
                (ticks as u32) & 0x00FF_FFFF
            }
            _ => vdev::all_ones(size),
        })
    }
    fn write(&mut self, _: Space, addr: u64, _size: u8, value: u64, cx: &mut DeviceCx<'_>) {
        match addr as u16 {
            PM1A_EVT => self.sts &= !(value as u16), // write 1 to clear
            0x602 => self.en = value as u16,
            PM1A_CNT => {
                let v = value as u16;
                self.cnt = (v & !(1 << 13)) | 1;
                if v & (1 << 13) != 0 && (v >> 10) & 7 == S5_SLP_TYP {
                    cx.effect = PioEffect::PowerOff;
                }
            }
            _ => {}
        }
    }
    fn as_any_mut(&mut self) -> &mut dyn core::any::Any {
        self
    }
}

/// The 8042 keyboard controller's system-reset line, the way PC software
/// resets a machine since the AT: command 0xFE (any "pulse output port"
/// command 0xF0-0xFF that pulses bit 0) or command 0xD1 followed by an output
/// port byte with bit 0 clear, written to port 0x64, resets the VM. There is
/// no keyboard: the status register reads "system flag set, both buffers
/// empty", so a guest never waits on it, and the data port reads 0. The
/// FADT does not announce an 8042 (Linux does not probe it).
#[derive(Default)]
struct Kbc8042 {
    /// The last byte went to the command port (status bit 3).
    command_last: bool,
    /// Command 0xD1: the next data byte is the output port.
    writing_output_port: bool,
}

/// The 8042's data and command/status ports.
pub const KBC_DATA: u16 = 0x60;
pub const KBC_COMMAND: u16 = 0x64;
/// Status bit 2: the controller passed its self-test (set by POST).
const KBC_STATUS_SYSTEM: u8 = 1 << 2;
const KBC_STATUS_COMMAND: u8 = 1 << 3;

impl Device for Kbc8042 {
    fn name(&self) -> &'static str {
        "i8042"
    }
    fn read(&mut self, _: Space, addr: u64, _size: u8, _cx: &mut DeviceCx<'_>) -> u64 {
        match addr as u16 {
            KBC_COMMAND => {
                let cmd = if self.command_last {
                    KBC_STATUS_COMMAND
                } else {
                    0
                };
                u64::from(KBC_STATUS_SYSTEM | cmd)
            }
            _ => 0,
        }
    }
    fn write(&mut self, _: Space, addr: u64, _size: u8, value: u64, cx: &mut DeviceCx<'_>) {
        let byte = value as u8;
        match addr as u16 {
            KBC_COMMAND => {
                self.command_last = true;
                self.writing_output_port = byte == 0xD1;
                if byte & 0xF1 == 0xF0 {
                    cx.effect = PioEffect::Reset;
                }
            }
            _ => {
                self.command_last = false;
                if core::mem::take(&mut self.writing_output_port) && byte & 1 == 0 {
                    cx.effect = PioEffect::Reset;
                }
            }
        }
    }
    fn as_any_mut(&mut self) -> &mut dyn core::any::Any {
        self
    }
}

/// The PCI segment, and the reset control register that shares its ports
/// (a byte access to 0xCF9 is not a configuration cycle).
struct PciHost(PciSegment);

impl PciHost {
    fn deliver(&mut self, irq: &mut IrqChip) {
        for i in self.0.take_interrupts() {
            match i {
                PciInterrupt::Msi(m) => irq.msi(m),
                PciInterrupt::Intx { gsi, level } => irq.set_gsi(gsi, level),
            }
        }
    }
}

impl Device for PciHost {
    fn name(&self) -> &'static str {
        "pci"
    }
    fn read_delay_ns(&self, space: Space, addr: u64) -> Option<u64> {
        self.0.read_delay_ns(space == Space::Pio, addr)
    }
    fn read(&mut self, space: Space, addr: u64, size: u8, cx: &mut DeviceCx<'_>) -> u64 {
        let v = match space {
            Space::Pio if addr == u64::from(RESET_PORT) && size == 1 => 0,
            Space::Pio => u64::from(self.0.pio_read(addr as u16, size)),
            Space::Mmio => self.0.mmio_read(addr, size),
        };
        self.deliver(cx.irq);
        v
    }
    fn write(&mut self, space: Space, addr: u64, size: u8, value: u64, cx: &mut DeviceCx<'_>) {
        match space {
            Space::Pio if addr == u64::from(RESET_PORT) && size == 1 => {
                if value & 0x04 != 0 {
                    cx.effect = PioEffect::Reset;
                }
            }
            Space::Pio => self.0.pio_write(addr as u16, size, value as u32),
            Space::Mmio => self.0.mmio_write(addr, size, value),
        }
        self.deliver(cx.irq);
    }
    fn as_any_mut(&mut self) -> &mut dyn core::any::Any {
        self
    }
}

impl PcPlatform {
    /// The platform `cfg` describes, every device registered on its buses.
    pub fn new(cfg: &PlatformConfig) -> Self {
        let mut p = PcPlatform {
            irq: IrqChip::new(cfg.ioapic_id),
            devices: Vec::new(),
            pio: Bus::ports(),
            mmio: Bus::mmio(),
            uart: None,
            pci: None,
            links: Vec::new(),
            console: Vec::new(),
            deadline: None,
            late: Vec::new(),
            ticket: 0,
            completed: Vec::new(),
        };
        let pic = [(0x20, 2), (0xA0, 2), (0x4D0, 2)];
        for (base, len) in pic {
            p.map_pio(base, len, Target::Pic);
        }
        p.map_mmio(vdev::IOAPIC_BASE, vdev::IOAPIC_MMIO_SIZE, Target::Ioapic);
        p.add(
            Box::new(PitDevice(Pit8254::new())),
            &[(0x40, 4), (0x61, 1)],
            &[],
        );
        p.add(
            Box::new(Kbc8042::default()),
            &[(KBC_DATA, 1), (KBC_COMMAND, 1)],
            &[],
        );
        p.add(
            Box::new(RtcDevice(RtcCmos::new(cfg.unix_secs, cfg.now_ns))),
            &[(0x70, 2)],
            &[],
        );
        p.add(
            Box::new(PmDevice {
                sts: 0,
                en: 0,
                cnt: 1, // SCI_EN: always in ACPI mode
            }),
            &[(PM1A_EVT, 4), (PM1A_CNT, 2), (PM_TMR, 4)],
            &[],
        );
        if let Some(place) = cfg.uart {
            p.uart = Some(p.add(
                Box::new(UartDevice {
                    uart: Uart16550::new(),
                    place,
                    level: false,
                    wire: None,
                }),
                &[(place.port, 8)],
                &[],
            ));
        }
        let seg = Self::pci_segment(cfg);
        let l = seg.layout().clone();
        let ecam = l.ecam();
        let io = (
            l.io_window.start as u16,
            (l.io_window.end - l.io_window.start) as u16,
        );
        p.pci = Some(p.add(
            Box::new(PciHost(seg)),
            &[(0xCF8, 8), io],
            &[
                (ecam.start, ecam.end - ecam.start),
                (l.mmio_window.start, l.mmio_window.end - l.mmio_window.start),
            ],
        ));
        p.refresh_deadline();
        p
    }

    fn refresh_deadline(&mut self) {
        let devices = self.devices.iter().filter_map(|d| d.next_deadline());
        self.deadline = devices.chain(self.late.iter().map(|l| l.due_ns)).min();
    }

    /// The VM's PCI segment: the host bridge and, if asked, the test device.
    fn pci_segment(cfg: &PlatformConfig) -> PciSegment {
        use layout::*;
        let mut seg = PciSegment::new(SegmentLayout {
            ecam_base: ECAM_BASE,
            bus_end: BUS_END,
            mmio_window: MMIO_WINDOW.0..MMIO_WINDOW.0 + MMIO_WINDOW.1,
            io_window: IO_WINDOW.0..IO_WINDOW.0 + IO_WINDOW.1,
            intx_gsi_base: INTX_GSI_BASE,
        });
        // Distinct slots on an empty segment: neither add can collide.
        let _ = seg.add(Bdf::HOST_BRIDGE, Box::new(vdev::host_bridge()));
        if cfg.pci_test_device {
            if let Some(bdf) = Bdf::new(0, TEST_DEVICE_SLOT, 0) {
                let dev = TestDevice::new(TEST_DEVICE_BAR0, TEST_DEVICE_BAR1, TEST_DEVICE_IO);
                let _ = seg.add(bdf, Box::new(dev));
            }
        }
        seg
    }

    /// Registers `device` at its port and MMIO ranges; returns its index.
    /// The ranges are the platform's own constants: an overlap is a bug.
    fn add(&mut self, device: Box<dyn Device>, ports: &[(u16, u16)], mmio: &[(u64, u64)]) -> usize {
        let index = self.devices.len();
        self.devices.push(device);
        for &(base, len) in ports {
            self.map_pio(base, len, Target::Device(index));
        }
        for &(base, len) in mmio {
            self.map_mmio(base, len, Target::Device(index));
        }
        index
    }

    fn map_pio(&mut self, base: u16, len: u16, target: Target) {
        let r = self.pio.register(u64::from(base), u64::from(len), target);
        debug_assert!(r.is_ok(), "port range {base:#x}+{len:#x}: {r:?}");
    }

    fn map_mmio(&mut self, base: u64, len: u64, target: Target) {
        let r = self.mmio.register(base, len, target);
        debug_assert!(r.is_ok(), "MMIO range {base:#x}+{len:#x}: {r:?}");
    }

    /// Who answers a bus address (a controller or a device), if anyone: the
    /// one bus lookup of an access.
    fn route(&self, space: Space, addr: u64) -> Option<Target> {
        let bus = match space {
            Space::Pio => &self.pio,
            Space::Mmio => &self.mmio,
        };
        let (slot, _) = bus.dispatch(addr)?;
        bus.get(slot).copied()
    }

    /// Runs `f` on device `i` with the platform's context; returns what it
    /// returned and the platform-wide request it made.
    fn with_device<R>(
        &mut self,
        i: usize,
        now_ns: u64,
        f: impl FnOnce(&mut dyn Device, &mut DeviceCx<'_>) -> R,
    ) -> Option<(R, PioEffect)> {
        let dev = self.devices.get_mut(i)?;
        let mut cx = DeviceCx {
            now_ns,
            irq: &mut self.irq,
            console: &mut self.console,
            effect: PioEffect::None,
        };
        let r = f(&mut **dev, &mut cx);
        let effect = cx.effect;
        self.refresh_deadline();
        Some((r, effect))
    }

    /// A read at an address [`PcPlatform::route`] resolved to `target`.
    fn read_at(&mut self, target: Target, space: Space, addr: u64, size: u8, now_ns: u64) -> u64 {
        match target {
            Target::Pic => u64::from(self.irq.pic.read(addr as u16, size)),
            Target::Ioapic => u64::from(
                self.irq
                    .ioapic
                    .read(addr.wrapping_sub(vdev::IOAPIC_BASE), size),
            ),
            Target::Device(i) => self
                .with_device(i, now_ns, |d, cx| d.read(space, addr, size, cx))
                .map_or(u64::MAX, |(v, _)| v),
        }
    }

    /// A write at an address [`PcPlatform::route`] resolved to `target`.
    fn write_at(
        &mut self,
        target: Target,
        space: Space,
        addr: u64,
        size: u8,
        value: u64,
        now_ns: u64,
    ) -> PioEffect {
        match target {
            Target::Pic => {
                self.irq.pic.write(addr as u16, size, value as u32);
                PioEffect::None
            }
            Target::Ioapic => {
                self.irq
                    .ioapic_write(addr.wrapping_sub(vdev::IOAPIC_BASE), size, value as u32);
                PioEffect::None
            }
            Target::Device(i) => self
                .with_device(i, now_ns, |d, cx| d.write(space, addr, size, value, cx))
                .map_or(PioEffect::None, |((), e)| e),
        }
    }

    /// A guest port read; unclaimed ports read all ones.
    pub fn pio_read(&mut self, port: u16, size: u8, now_ns: u64) -> u32 {
        match self.route(Space::Pio, u64::from(port)) {
            Some(t) => self.read_at(t, Space::Pio, u64::from(port), size, now_ns) as u32,
            None => vdev::all_ones(size),
        }
    }

    /// A guest port write; unclaimed ports ignore it.
    pub fn pio_write(&mut self, port: u16, size: u8, value: u32, now_ns: u64) -> PioEffect {
        match self.route(Space::Pio, u64::from(port)) {
            Some(t) => self.write_at(
                t,
                Space::Pio,
                u64::from(port),
                size,
                u64::from(value),
                now_ns,
            ),
            None => PioEffect::None,
        }
    }

    /// A guest MMIO read; None if no device claims `gpa`.
    pub fn mmio_read(&mut self, gpa: u64, size: u8, now_ns: u64) -> Option<u64> {
        let t = self.route(Space::Mmio, gpa)?;
        Some(self.read_at(t, Space::Mmio, gpa, size, now_ns))
    }

    /// A guest MMIO write; false if no device claims `gpa`.
    pub fn mmio_write(&mut self, gpa: u64, size: u8, value: u64, now_ns: u64) -> bool {
        let Some(t) = self.route(Space::Mmio, gpa) else {
            return false;
        };
        self.write_at(t, Space::Mmio, gpa, size, value, now_ns);
        true
    }

    /// Advances every device's timers to `now_ns` (nothing to do before the
    /// earliest deadline: called before every guest entry).
    pub fn poll(&mut self, now_ns: u64) {
        if self.deadline.is_none_or(|d| now_ns < d) {
            return;
        }
        let mut cx = DeviceCx {
            now_ns,
            irq: &mut self.irq,
            console: &mut self.console,
            effect: PioEffect::None,
        };
        for d in &mut self.devices {
            d.poll(&mut cx);
        }
        let completed = &mut self.completed;
        self.late.retain(|l| {
            let due = l.due_ns <= now_ns;
            if due {
                completed.push((l.vcpu, l.ticket, l.value));
            }
            !due
        });
        self.refresh_deadline();
    }

    /// A read by vCPU `vcpu` that its device may answer later: the value
    /// now, or a ticket whose value [`PcPlatform::take_completed_reads`]
    /// hands over once the device's delay has passed (a [`PcPlatform::poll`]
    /// at or after it). None: no device claims the MMIO address.
    pub fn read_from(
        &mut self,
        vcpu: usize,
        space: Space,
        addr: u64,
        size: u8,
        now_ns: u64,
    ) -> Option<IoReply> {
        let target = self.route(space, addr);
        let delay = match target {
            Some(Target::Device(i)) => self
                .devices
                .get(i)
                .and_then(|d| d.read_delay_ns(space, addr)),
            _ => None,
        };
        let value = match (target, space) {
            (Some(t), _) => self.read_at(t, space, addr, size, now_ns),
            (None, Space::Pio) => u64::from(vdev::all_ones(size)),
            (None, Space::Mmio) => return None,
        };
        let Some(delay) = delay else {
            return Some(IoReply::Ready(value));
        };
        // Tickets are never 0 (the inbox's "none").
        self.ticket = self.ticket.wrapping_add(1).max(1);
        self.late.push(LateRead {
            vcpu,
            ticket: self.ticket,
            value,
            due_ns: now_ns.saturating_add(delay),
        });
        self.refresh_deadline();
        Some(IoReply::Later(self.ticket))
    }

    /// Takes the late reads whose time came: (vCPU, ticket, value).
    pub fn take_completed_reads(&mut self) -> Vec<(usize, u64, u64)> {
        core::mem::take(&mut self.completed)
    }

    /// The next time a device needs [`PcPlatform::poll`].
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadline
    }

    /// A byte typed at the VM's console; false if its receive FIFO is full
    /// (or the VM has no console).
    pub fn console_input(&mut self, byte: u8) -> bool {
        let Some(dev) = self.uart.and_then(|i| self.devices.get_mut(i)) else {
            return false;
        };
        let Some(u) = dev.as_any_mut().downcast_mut::<UartDevice>() else {
            return false;
        };
        let ok = u.uart.push_input(byte);
        u.sync(&mut self.irq, &mut self.console);
        ok
    }

    /// Moves the console bytes the guest wrote into `out`.
    pub fn take_console_output(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.console);
    }

    /// Whether the 8259 pair's INT output is asserted.
    pub fn pic_interrupt(&self) -> bool {
        self.irq.pic.int_output()
    }

    /// The INTA cycle: the vector the 8259 pair hands over.
    pub fn pic_acknowledge(&mut self) -> u8 {
        self.irq.pic.acknowledge()
    }

    /// The end of interrupt `vector` at a vLAPIC (level-triggered lines re-deliver). The PCI
    /// functions behind a level-triggered vIOAPIC pin with that vector hear of it first, so a
    /// line that dropped is not delivered again.
    pub fn eoi(&mut self, vector: u8) {
        if let Some(i) = self.pci {
            let host = self
                .devices
                .get_mut(i)
                .and_then(|d| d.as_any_mut().downcast_mut::<PciHost>());
            if let Some(host) = host {
                let mut any = false;
                for pin in 0..vdev::IOAPIC_PINS {
                    let Some(rte) = self.irq.ioapic.redirection_entry(pin) else {
                        continue;
                    };
                    // Vector (7:0) and level trigger (bit 15).
                    if rte as u8 == vector && rte & (1 << 15) != 0 {
                        host.0.intx_eoi(pin as u32);
                        any = true;
                    }
                }
                if any {
                    host.deliver(&mut self.irq);
                }
            }
        }
        self.irq.eoi(vector);
    }

    /// Whether interrupt messages or late answers wait to be taken
    /// ([`PcPlatform::take_deliveries`], [`PcPlatform::take_completed_reads`]).
    pub fn has_news(&self) -> bool {
        self.irq.has_deliveries() || !self.completed.is_empty()
    }

    /// Takes the interrupts waiting for the vLAPICs.
    pub fn take_deliveries(&mut self) -> Vec<Delivery> {
        self.irq.take_deliveries()
    }

    /// The virtual IOAPIC (for the shell).
    pub fn ioapic(&self) -> &Ioapic {
        &self.irq.ioapic
    }

    /// Interrupt requests that reached no CPU.
    pub fn irq_counters(&self) -> IrqCounters {
        self.irq.counters()
    }

    /// Plugs `device` in at `slot` (function 0) of the PCI segment.
    pub fn add_pci_device(
        &mut self,
        slot: u8,
        device: Box<dyn vdev::PciDevice>,
    ) -> Result<(), vdev::PciError> {
        let bdf = Bdf::new(0, slot, 0).ok_or(vdev::PciError::Duplicate {
            bdf: Bdf::HOST_BRIDGE,
        })?;
        let Some(host) = self.pci_host() else {
            return Err(vdev::PciError::Duplicate { bdf });
        };
        host.0.add(bdf, device)
    }

    /// Plugs `device` in at `bdf` of the VM's segment (a passthrough function keeps its
    /// function number).
    pub fn add_pci_function(
        &mut self,
        bdf: Bdf,
        device: Box<dyn vdev::PciDevice>,
    ) -> Result<(), vdev::PciError> {
        let Some(host) = self.pci_host() else {
            return Err(vdev::PciError::Duplicate { bdf });
        };
        host.0.add(bdf, device)
    }

    /// Takes the second-level changes the guest's BAR programming asked for
    /// ([`vdev::PciSegment::take_slat_ops`]).
    pub fn take_slat_ops(&mut self) -> Vec<vdev::SlatOp> {
        match self.pci_host() {
            Some(host) if host.0.has_slat_ops() => host.0.take_slat_ops(),
            _ => Vec::new(),
        }
    }

    /// Serves what device backends brought in (frames, console input) and
    /// raises the interrupts that follow.
    pub fn serve_backends(&mut self) {
        self.serve_links();
        let Some(i) = self.pci else { return };
        let Some(host) = self
            .devices
            .get_mut(i)
            .and_then(|d| d.as_any_mut().downcast_mut::<PciHost>())
        else {
            return;
        };
        host.0.poll();
        host.deliver(&mut self.irq);
    }

    /// Adds a UART joined to `wire` at `place` (a vUART link to another VM);
    /// refused when its ports are taken.
    pub fn add_linked_uart(
        &mut self,
        place: UartPlace,
        wire: Box<dyn crate::UartWire>,
    ) -> Result<(), alloc::string::String> {
        let (base, len) = (u64::from(place.port), 8);
        if (base..base + len).any(|port| self.pio.dispatch(port).is_some()) {
            return Err(alloc::format!(
                "ports {:#x}-{:#x} are taken",
                place.port,
                place.port + 7
            ));
        }
        let index = self.add(
            Box::new(UartDevice {
                uart: Uart16550::linked(),
                place,
                level: false,
                wire: Some(wire),
            }),
            &[(place.port, 8)],
            &[],
        );
        self.links.push(index);
        Ok(())
    }

    /// Moves what the linked UARTs' wires brought (bytes, room, modem
    /// lines) into the UARTs.
    fn serve_links(&mut self) {
        for u in linked(&mut self.devices, &self.links) {
            u.sync(&mut self.irq, &mut self.console);
        }
    }

    /// The linked UARTs leave their wires (the VM stopped): their peers see
    /// the cable go dead.
    pub fn disconnect_links(&mut self) {
        for u in linked(&mut self.devices, &self.links) {
            if let Some(wire) = u.wire.as_mut() {
                wire.disconnect();
            }
        }
    }

    /// Each linked UART's place and counters (for the shell).
    pub fn linked_uarts(&mut self) -> Vec<(UartPlace, crate::UartCounters)> {
        linked(&mut self.devices, &self.links)
            .map(|u| (u.place, u.uart.counters()))
            .collect()
    }

    /// Calls `f` with each PCI device (for the shell).
    pub fn for_each_pci_device(&mut self, mut f: impl FnMut(Bdf, &dyn vdev::PciDevice)) {
        if let Some(host) = self.pci_host() {
            for (bdf, d) in host.0.devices() {
                f(bdf, d);
            }
        }
    }

    fn pci_host(&mut self) -> Option<&mut PciHost> {
        let d = self.pci.and_then(|i| self.devices.get_mut(i))?;
        d.as_any_mut().downcast_mut::<PciHost>()
    }

    /// The PCI segment's counters.
    pub fn pci_counters(&mut self) -> Option<SegmentCounters> {
        let d = self.pci.and_then(|i| self.devices.get_mut(i))?;
        d.as_any_mut()
            .downcast_mut::<PciHost>()
            .map(|h| h.0.counters())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pci_test_device: bool) -> PlatformConfig {
        PlatformConfig {
            now_ns: 0,
            unix_secs: 1_700_000_000,
            ioapic_id: 1,
            uart: Some(UartPlace {
                port: 0x3F8,
                irq: 4,
            }),
            pci_test_device,
        }
    }

    fn platform() -> PcPlatform {
        PcPlatform::new(&config(false))
    }

    /// Programs IOAPIC pin `pin` to `vector`, edge (or level), unmasked,
    /// destination APIC 0.
    fn route_with(p: &mut PcPlatform, pin: u32, vector: u8, level: bool) {
        let low = u64::from(vector) | if level { 1 << 15 } else { 0 };
        p.mmio_write(vdev::IOAPIC_BASE, 4, u64::from(0x10 + 2 * pin), 0);
        p.mmio_write(vdev::IOAPIC_BASE + 0x10, 4, low, 0);
        p.mmio_write(vdev::IOAPIC_BASE, 4, u64::from(0x11 + 2 * pin), 0);
        p.mmio_write(vdev::IOAPIC_BASE + 0x10, 4, 0, 0);
    }

    fn route(p: &mut PcPlatform, pin: u32, vector: u8) {
        route_with(p, pin, vector, false);
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
        p.pio_write(0x3F8, 1, u32::from(b'y'), 0);
        let mut out = Vec::new();
        p.take_console_output(&mut out);
        assert_eq!(out, b"y");
    }

    #[test]
    fn every_device_is_reached_through_the_buses() {
        let mut p = PcPlatform::new(&config(true));
        // PCI through 0xCF8 and through ECAM: host bridge and test device.
        p.pio_write(0xCF8, 4, 0x8000_0000, 0);
        assert_eq!(p.pio_read(0xCFC, 4, 0), 0x29C0_8086);
        let ecam = layout::ECAM_BASE + (3 << 15);
        assert_eq!(p.mmio_read(ecam, 4, 0), Some(0x0001_5143));
        assert_eq!(
            p.mmio_read(u64::from(layout::TEST_DEVICE_BAR0), 4, 0),
            Some(u64::from(vdev::TEST_DEVICE_MAGIC))
        );
        assert_eq!(
            p.pio_read(layout::TEST_DEVICE_IO + 4, 4, 0),
            vdev::TEST_DEVICE_MAGIC
        );
        // Unclaimed window addresses read all ones but are claimed.
        assert_eq!(p.mmio_read(0xD000_0000, 4, 0), Some(0xFFFF_FFFF));
        // The PIC and the RTC answer at their ports.
        p.pio_write(0x21, 1, 0xAB, 0);
        assert_eq!(p.pio_read(0x21, 1, 0), 0xAB);
        p.pio_write(0x70, 1, 0x0F, 0);
        assert_ne!(p.pio_read(0x71, 1, 0), 0xFFFF_FFFF);
        // Nobody at 0x80.
        assert_eq!(p.pio_read(0x80, 1, 0), 0xFF);
        assert_eq!(p.pio_write(0x80, 1, 0, 0), PioEffect::None);
    }

    #[test]
    fn a_slow_register_is_answered_after_its_delay() {
        let mut p = PcPlatform::new(&config(true));
        let bar0 = u64::from(layout::TEST_DEVICE_BAR0);
        p.mmio_write(bar0 + 4, 4, 0x1234_5678, 0);
        // An ordinary register answers at once, through the same path.
        assert_eq!(
            p.read_from(0, Space::Mmio, bar0, 4, 0),
            Some(IoReply::Ready(u64::from(vdev::TEST_DEVICE_MAGIC)))
        );
        assert_eq!(p.read_from(0, Space::Mmio, 0xFEFF_0000, 4, 0), None);
        let Some(IoReply::Later(t1)) = p.read_from(1, Space::Mmio, bar0 + 0x14, 4, 1000) else {
            panic!("the SLOW register answers later")
        };
        let Some(IoReply::Later(t2)) = p.read_from(0, Space::Mmio, bar0 + 0x14, 4, 2000) else {
            panic!("the SLOW register answers later")
        };
        assert!(t1 != 0 && t2 != 0 && t1 != t2, "distinct non-zero tickets");
        let due = 1000 + vdev::TEST_DEVICE_SLOW_NS;
        assert_eq!(p.next_deadline(), Some(due), "the platform wakes for it");
        p.poll(due - 1);
        assert!(p.take_completed_reads().is_empty(), "not before its time");
        p.poll(due);
        assert_eq!(p.take_completed_reads(), [(1, t1, 0xEDCB_A987)]);
        p.poll(u64::MAX);
        assert_eq!(p.take_completed_reads(), [(0, t2, 0xEDCB_A987)]);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn pci_interrupts_reach_the_ioapic_and_the_lapics() {
        let mut p = PcPlatform::new(&config(true));
        // INTx: slot 3 INTA# is GSI 19, level-triggered.
        route_with(&mut p, 19, 0x50, true);
        let bar0 = u64::from(layout::TEST_DEVICE_BAR0);
        p.mmio_write(bar0 + 8, 4, 0, 0);
        let d = p.take_deliveries();
        assert!(d.iter().any(|d| d.vector == 0x50 && d.level), "{d:?}");
        // Still asserted: the EOI re-delivers; deasserted: it does not.
        p.eoi(0x50);
        assert!(p.take_deliveries().iter().any(|d| d.vector == 0x50));
        p.mmio_write(bar0 + 0xC, 4, 1, 0);
        p.eoi(0x50);
        assert!(p.take_deliveries().is_empty());
        // MSI to APIC 0 vector 0x51, and one to a bad address.
        let ecam = layout::ECAM_BASE + (3 << 15);
        p.mmio_write(ecam + 0x44, 4, 0xFEE0_0000, 0);
        p.mmio_write(ecam + 0x4C, 2, 0x51, 0);
        p.mmio_write(ecam + 0x42, 2, 1, 0);
        p.mmio_write(bar0 + 8, 4, 0, 0);
        let d = p.take_deliveries();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].vector, d[0].dest, d[0].level), (0x51, 0, false));
        p.mmio_write(ecam + 0x44, 4, 0x1000, 0);
        p.mmio_write(bar0 + 8, 4, 0, 0);
        assert!(p.take_deliveries().is_empty());
        assert_eq!(p.irq_counters().bad_messages, 1);
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
        // The 8042's reset line: 0xFE, other pulse commands with bit 0, the output port.
        assert_eq!(p.pio_read(KBC_COMMAND, 1, 0) & 0x3, 0, "buffers empty");
        assert_eq!(p.pio_write(KBC_COMMAND, 1, 0xFE, 0), PioEffect::Reset);
        assert_eq!(p.pio_write(KBC_COMMAND, 1, 0xF0, 0), PioEffect::Reset);
        assert_eq!(p.pio_write(KBC_COMMAND, 1, 0xFF, 0), PioEffect::None);
        assert_eq!(p.pio_write(KBC_COMMAND, 1, 0xAD, 0), PioEffect::None);
        assert_eq!(p.pio_write(KBC_COMMAND, 1, 0xD1, 0), PioEffect::None);
        assert_eq!(p.pio_write(KBC_DATA, 1, 0x03, 0), PioEffect::None);
        assert_eq!(
            p.pio_write(KBC_DATA, 1, 0x02, 0),
            PioEffect::None,
            "not after 0xD1"
        );
        assert_eq!(p.pio_write(KBC_COMMAND, 1, 0xD1, 0), PioEffect::None);
        assert_eq!(p.pio_write(KBC_DATA, 1, 0x02, 0), PioEffect::Reset);
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
        for off in [0u64, 0x10, 0x20, 0x40, 0xFFF] {
            assert!(p.mmio_read(vdev::IOAPIC_BASE + off, 4, 0).is_some());
            assert!(p.mmio_write(vdev::IOAPIC_BASE + off, 4, u64::MAX, 0));
        }
        for gpa in [0u64, 0xBFFF_FFFF, 0xFEC0_1000, 0xFEE0_0000, u64::MAX] {
            assert_eq!(p.mmio_read(gpa, 4, 0), None, "{gpa:#x} is nobody's");
            assert!(!p.mmio_write(gpa, 4, 0, 0));
        }
        p.eoi(0);
        p.eoi(255);
        p.poll(u64::MAX);
        let _ = p.take_deliveries();
    }
}
