//! The physical 16550 UART that carries the hypervisor console.

use crate::io::{inb, outb};

/// COM1, where every PC-compatible board and emulator puts its first UART.
pub const COM1: u16 = 0x3F8;

/// A 16550-compatible UART at an I/O base.
#[derive(Debug)]
pub struct Uart16550 {
    base: u16,
}

impl Uart16550 {
    /// A UART at `base`; call [`Uart16550::init`] before use.
    pub const fn new(base: u16) -> Self {
        Self { base }
    }

    /// Programs 115200 8N1, FIFOs on, interrupts off.
    pub fn init(&self) {
        outb(self.base + 1, 0x00); // IER: no interrupts
        outb(self.base + 3, 0x80); // LCR: DLAB
        outb(self.base, 0x01); // DLL: 115200 baud
        outb(self.base + 1, 0x00); // DLM
        outb(self.base + 3, 0x03); // LCR: 8N1
        outb(self.base + 2, 0xC7); // FCR: enable + clear FIFOs, 14-byte threshold
        outb(self.base + 4, 0x03); // MCR: DTR | RTS
    }

    /// Sends one byte, waiting (bounded) for the transmitter.
    pub fn write_byte(&self, byte: u8) {
        // Bounded wait: a UART that never drains must not hang the CPU.
        for _ in 0..100_000 {
            if inb(self.base + 5) & 0x20 != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        outb(self.base, byte);
    }

    /// Receives one byte if one is waiting.
    pub fn try_read_byte(&self) -> Option<u8> {
        (inb(self.base + 5) & 0x01 != 0).then(|| inb(self.base))
    }
}

impl core::fmt::Write for Uart16550 {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}
