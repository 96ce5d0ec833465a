//! The legacy 8259 PIC pair: remapped away from the exception vectors and
//! masked, so that only the LAPIC and IOAPIC deliver interrupts to the host.

use crate::io::{inb, outb};

/// Vector base the master PIC is moved to (the slave follows at +8).
pub const PIC_VECTOR_BASE: u8 = 0x20;

/// Remaps both PICs to `PIC_VECTOR_BASE..+16` and masks every line. A
/// spurious IRQ 7/15 can still arrive there; trap dispatch ignores it.
pub fn disable() {
    // ICW1: init, ICW4 needed.
    outb(0x20, 0x11);
    outb(0xA0, 0x11);
    // ICW2: vector bases.
    outb(0x21, PIC_VECTOR_BASE);
    outb(0xA1, PIC_VECTOR_BASE + 8);
    // ICW3: slave on IRQ2.
    outb(0x21, 0x04);
    outb(0xA1, 0x02);
    // ICW4: 8086 mode.
    outb(0x21, 0x01);
    outb(0xA1, 0x01);
    // Mask all lines.
    outb(0x21, 0xFF);
    outb(0xA1, 0xFF);
    let _ = inb(0x21);
}
