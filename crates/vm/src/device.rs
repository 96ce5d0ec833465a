//! The one interface every emulated device of a VM implements, and the
//! interrupt controllers devices signal through.
//!
//! A device is a register state machine: the platform's buses route a guest
//! access by its address to [`Device::read`] or [`Device::write`] with the
//! absolute address (a device registered at several ranges tells them apart
//! by it). Timers go through the same registry: the platform polls every
//! device and takes the earliest [`Device::next_deadline`]. Side effects a
//! device cannot do itself travel in the [`DeviceCx`]: interrupts through
//! its [`IrqChip`], console bytes, and platform-wide requests (power off,
//! reset) as a [`PioEffect`].

use alloc::vec::Vec;
use core::any::Any;

use vdev::{Delivery, Ioapic, MsiMessage, Pic8259};

/// Which address space an access is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Pio,
    Mmio,
}

/// What an access asks of the hypervisor beyond the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PioEffect {
    None,
    /// ACPI S5 or another power-off request.
    PowerOff,
    /// The guest reset the platform (0xCF9).
    Reset,
}

/// Counters of interrupt requests that reached no CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqCounters {
    /// Messages whose address or delivery mode no local APIC accepts.
    pub bad_messages: u64,
}

/// A VM's interrupt controllers: the 8259A pair and the IOAPIC, and the
/// deliveries waiting for the vLAPICs.
pub struct IrqChip {
    pub pic: Pic8259,
    pub ioapic: Ioapic,
    deliveries: Vec<Delivery>,
    counters: IrqCounters,
}

/// The GSI an ISA IRQ arrives on (IRQ 0 is GSI 2, as the VM's MADT says).
pub fn gsi_of_isa(irq: u8) -> u32 {
    if irq == 0 {
        2
    } else {
        u32::from(irq)
    }
}

impl IrqChip {
    /// Controllers at reset; the IOAPIC gets `ioapic_id` (the MADT's).
    pub fn new(ioapic_id: u8) -> Self {
        IrqChip {
            pic: Pic8259::new(),
            ioapic: Ioapic::new(ioapic_id),
            deliveries: Vec::new(),
            counters: IrqCounters::default(),
        }
    }

    /// Raises or lowers ISA `irq` on both the PIC and the IOAPIC.
    pub fn set_isa_irq(&mut self, irq: u8, level: bool) {
        self.pic.set_irq(u32::from(irq), level);
        self.set_gsi(gsi_of_isa(irq), level);
    }

    /// A pulse on ISA `irq` (the PIT): latched by the 8259 as an edge, and a
    /// rising then falling edge at the IOAPIC.
    pub fn pulse_isa_irq(&mut self, irq: u8) {
        self.pic.pulse_irq(u32::from(irq));
        self.set_gsi(gsi_of_isa(irq), true);
        self.set_gsi(gsi_of_isa(irq), false);
    }

    /// Raises or lowers IOAPIC input `gsi` (PCI INTx lines, GSIs 16..).
    pub fn set_gsi(&mut self, gsi: u32, level: bool) {
        if let Some(d) = self.ioapic.set_irq(gsi, level) {
            self.deliveries.push(d);
        }
    }

    /// A message-signalled interrupt; a message no APIC accepts is counted
    /// and dropped (the write would have gone to memory).
    pub fn msi(&mut self, message: MsiMessage) {
        match message.delivery() {
            Ok(d) => self.deliveries.push(d),
            Err(_) => self.counters.bad_messages = self.counters.bad_messages.saturating_add(1),
        }
    }

    /// The end of interrupt `vector` at a vLAPIC (level-triggered lines re-deliver).
    pub fn eoi(&mut self, vector: u8) {
        let d = self.ioapic.eoi(vector);
        self.deliveries.extend(d);
    }

    /// An IOAPIC register write (may deliver pending level interrupts).
    pub fn ioapic_write(&mut self, offset: u64, size: u8, value: u32) {
        let d = self.ioapic.write(offset, size, value);
        self.deliveries.extend(d);
    }

    /// Takes the interrupts waiting for the vLAPICs.
    /// Whether interrupt messages wait for [`IrqChip::take_deliveries`].
    pub fn has_deliveries(&self) -> bool {
        !self.deliveries.is_empty()
    }

    pub fn take_deliveries(&mut self) -> Vec<Delivery> {
        core::mem::take(&mut self.deliveries)
    }

    /// Requests that reached no CPU.
    pub fn counters(&self) -> IrqCounters {
        self.counters
    }
}

/// What a device may touch while it handles an access or a poll.
pub struct DeviceCx<'a> {
    /// The VM's monotonic clock in nanoseconds.
    pub now_ns: u64,
    pub irq: &'a mut IrqChip,
    /// Bytes for the VM's console.
    pub console: &'a mut Vec<u8>,
    /// A platform-wide request (the strongest one wins: reset, power off).
    pub effect: PioEffect,
}

/// An emulated device on the VM's buses.
///
/// Guest input never panics a device: impossible widths read all ones and
/// ignore writes, as a floating bus does.
pub trait Device: Send + Any {
    /// A short name for statistics and messages.
    fn name(&self) -> &'static str;
    /// A read of `size` bytes at `addr` in `space`.
    fn read(&mut self, space: Space, addr: u64, size: u8, cx: &mut DeviceCx<'_>) -> u64;
    /// A write of `size` bytes of `value` at `addr` in `space`.
    fn write(&mut self, space: Space, addr: u64, size: u8, value: u64, cx: &mut DeviceCx<'_>);
    /// Advances the device's timers to `cx.now_ns`.
    fn poll(&mut self, _cx: &mut DeviceCx<'_>) {}
    /// How long a read at `addr` takes to answer, in nanoseconds (None: at
    /// once): the reading vCPU waits that long for the value
    /// [`read`](Device::read) returns.
    fn read_delay_ns(&self, _space: Space, _addr: u64) -> Option<u64> {
        None
    }
    /// When the device next needs [`poll`](Device::poll) (nanoseconds).
    fn next_deadline(&self) -> Option<u64> {
        None
    }
    /// For the platform to reach a device's own interface (console input).
    fn as_any_mut(&mut self) -> &mut dyn Any;
}
