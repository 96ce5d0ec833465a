//! COM1 (a 16550 at 0x3F8), polled transmit, plus the `out!` line macro.

use core::fmt;

use crate::cpu::{inb, outb};

/// COM1's base port.
pub const COM1: u16 = 0x3F8;
/// Register offsets.
pub const THR: u16 = 0;
pub const IER: u16 = 1;
pub const FCR: u16 = 2;
pub const LCR: u16 = 3;
pub const MCR: u16 = 4;
pub const LSR: u16 = 5;
pub const SCR: u16 = 7;
/// LSR: transmit holding register empty / transmitter empty.
pub const LSR_THRE: u8 = 1 << 5;
pub const LSR_TEMT: u8 = 1 << 6;
/// The line settings the guest uses: 8 data bits, no parity, 1 stop bit.
pub const LCR_8N1: u8 = 0x03;
/// LCR: divisor latch access.
pub const LCR_DLAB: u8 = 0x80;

/// How often to poll LSR before sending a byte anyway (a broken or absent
/// UART must not hang the guest).
const TX_POLLS: u32 = 1_000_000;

/// Reads UART register `reg`.
pub fn read(reg: u16) -> u8 {
    // SAFETY: COM1 registers; reading LSR/SCR/LCR has no side effects that
    // matter to a polled transmitter.
    unsafe { inb(COM1 + reg) }
}

/// Writes UART register `reg`.
pub fn write(reg: u16, v: u8) {
    // SAFETY: COM1 registers, owned by this guest.
    unsafe { outb(COM1 + reg, v) };
}

/// 115200 8N1, FIFOs on, interrupts off.
pub fn init() {
    write(IER, 0);
    write(LCR, LCR_DLAB);
    write(0, 1); // divisor low: 115200 baud
    write(1, 0); // divisor high
    write(LCR, LCR_8N1);
    write(FCR, 0xC7);
    write(MCR, 0x03); // DTR | RTS, OUT2 off: no IRQ line
}

/// Waits (bounded) until LSR has all of `bits`; returns whether it did.
pub fn wait_lsr(bits: u8, polls: u32) -> bool {
    for _ in 0..polls {
        if read(LSR) & bits == bits {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

fn put_byte(b: u8) {
    wait_lsr(LSR_THRE, TX_POLLS);
    write(THR, b);
}

/// Sends `bytes` as they are.
pub fn put_bytes(bytes: &[u8]) {
    for &b in bytes {
        put_byte(b);
    }
}

/// `fmt::Write` onto COM1.
pub struct Com1;

impl fmt::Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        put_bytes(s.as_bytes());
        Ok(())
    }
}

/// Prints one line (terminated by a bare `\n`) on COM1.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::Com1, $($arg)*);
    }};
}
