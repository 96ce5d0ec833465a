//! The `vuart-link-*` tests (command-line word `vuart-link`, scenario `ipc-vuart-link`): two VMs
//! talk through a vUART link between their COM2 UARTs (0x2F8), polled the way a driver without
//! interrupts does it. One runs with `role=left`, the other with `role=right`.
//!
//! Both open COM2 (FIFO on, 8N1, DTR and RTS) and wait to see the other's DTR and RTS as DSR,
//! DCD and CTS (the null-modem wiring). `left` sends [`BYTES`] bytes, writing at most a FIFO's
//! worth each time THRE reads 1; `right` reads them slowly (a pause every [`PAUSE_EVERY`] bytes)
//! so that the link fills and `left` must wait: every byte is checked, none may be lost. Then
//! `right` sends as many back and `left` checks them. `right` is done and powers its VM off;
//! `left` must then see DSR drop and still be able to send [`AFTER_BYTES`] bytes without THRE
//! ever holding it up for long: a stopped peer never blocks the other VM.

use super::Outcome::Pass;
use super::{tsc_bound_ms, TestResult};
use crate::msg::Ascii;
use crate::{cpu, msg, Env};

const COM2: u16 = 0x2F8;
const THR: u16 = 0;
const IER: u16 = 1;
const FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
const MSR: u16 = 6;
const LSR_DATA: u8 = 1 << 0;
const LSR_THRE: u8 = 1 << 5;
const LSR_TEMT: u8 = 1 << 6;
const MSR_CTS: u8 = 1 << 4;
const MSR_DSR: u8 = 1 << 5;
const MSR_DCD: u8 = 1 << 7;
const MCR_DTR_RTS_OUT2: u8 = 0x0B;
/// Bytes a 16550A's transmit FIFO holds.
const TX_FIFO: usize = 16;

/// Bytes each way.
const BYTES: usize = 32 * 1024;
/// The reader pauses this often, for [`PAUSE_MS`].
const PAUSE_EVERY: usize = 1024;
const PAUSE_MS: u64 = 2;
/// Bytes `left` sends once `right` is gone.
const AFTER_BYTES: usize = 64 * 1024;
/// How long a peer may take for anything (both VMs boot at once; Bochs is slow).
const PEER_MS: u64 = 30_000;
/// The longest THRE may keep `left` waiting once `right` is gone.
const GONE_WAIT_MS: u64 = 50;

pub(super) fn inb(reg: u16) -> u8 {
    // SAFETY: COM2's registers are this VM's virtual UART: port I/O there has no side effect
    // outside the UART.
    unsafe { cpu::inb(COM2 + reg) }
}

pub(super) fn outb(reg: u16, v: u8) {
    // SAFETY: as in `inb`.
    unsafe { cpu::outb(COM2 + reg, v) }
}

/// Byte `i` of the stream that `from` sends.
fn pattern(from: Side, i: usize) -> u8 {
    let salt = match from {
        Side::Left => 0x5A,
        Side::Right => 0xC3,
    };
    (i.wrapping_mul(31) ^ (i >> 8) ^ salt) as u8
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Left,
    Right,
}

fn side(env: &Env) -> Result<Side, crate::msg::Msg> {
    match env.boot.word_value(b"role") {
        Some(b"left") => Ok(Side::Left),
        Some(b"right") => Ok(Side::Right),
        Some(other) => fail!("role={} is not left or right", Ascii(other)),
        None => fail!("no role=left|right on the command line"),
    }
}

/// The tests of this VM's side.
pub fn tests(env: &Env) -> &'static [(&'static str, super::TestFn)] {
    match side(env) {
        Ok(Side::Right) => &[
            ("vuart-link-open", open),
            ("vuart-link-receive", receive),
            ("vuart-link-send", send),
        ],
        _ => &[
            ("vuart-link-open", open),
            ("vuart-link-send", send),
            ("vuart-link-receive", receive),
            ("vuart-link-peer-gone", peer_gone),
        ],
    }
}

/// Opens COM2 and waits for the other end to open its UART.
fn open(env: &Env) -> TestResult {
    side(env)?;
    open_port(tsc_bound_ms(env, PEER_MS))
}

/// Opens COM2 (no interrupts, 8N1, FIFOs on, DTR and RTS) and waits up to `bound` TSC ticks for
/// the other end to open its UART (CTS, DSR and DCD).
pub(super) fn open_port(bound: u64) -> TestResult {
    outb(IER, 0);
    outb(LCR, 0x03);
    outb(FCR, 0x07);
    outb(MCR, MCR_DTR_RTS_OUT2);
    let lines = MSR_CTS | MSR_DSR | MSR_DCD;
    let t0 = cpu::rdtsc();
    loop {
        let msr = inb(MSR);
        if msr & lines == lines {
            return Ok(Pass);
        }
        if cpu::rdtsc() - t0 > bound {
            fail!("the peer never opened its end (MSR {msr:#04x})");
        }
        core::hint::spin_loop();
    }
}

/// Sends this side's [`BYTES`], a FIFO's worth whenever THRE says the FIFO is empty.
fn send(env: &Env) -> TestResult {
    let me = side(env)?;
    let (mut sent, mut waits) = (0usize, 0u64);
    let t0 = cpu::rdtsc();
    let bound = tsc_bound_ms(env, PEER_MS);
    while sent < BYTES {
        if inb(LSR) & LSR_THRE == 0 {
            waits += 1;
            if cpu::rdtsc() - t0 > bound {
                fail!("stuck after {sent} of {BYTES} bytes: THRE never came back");
            }
            core::hint::spin_loop();
            continue;
        }
        for _ in 0..TX_FIFO.min(BYTES - sent) {
            outb(THR, pattern(me, sent));
            sent += 1;
        }
    }
    // Like a driver closing its port: wait until the transmitter is empty (the wire took all).
    while inb(LSR) & LSR_TEMT == 0 {
        if cpu::rdtsc() - t0 > bound {
            fail!("the last bytes never left the transmitter");
        }
        core::hint::spin_loop();
    }
    crate::out!("vuart-link: sent {sent} bytes, THRE held the sender {waits} times");
    if me == Side::Left && waits == 0 {
        fail!("the slow reader never made the sender wait: no flow control");
    }
    Ok(Pass)
}

/// Receives the other side's [`BYTES`] and checks each; the right side reads slowly.
fn receive(env: &Env) -> TestResult {
    let me = side(env)?;
    let from = match me {
        Side::Left => Side::Right,
        Side::Right => Side::Left,
    };
    let t0 = cpu::rdtsc();
    let bound = tsc_bound_ms(env, PEER_MS);
    let pause = tsc_bound_ms(env, PAUSE_MS);
    let mut got = 0usize;
    while got < BYTES {
        if inb(LSR) & LSR_DATA == 0 {
            if cpu::rdtsc() - t0 > bound {
                fail!("only {got} of {BYTES} bytes arrived");
            }
            core::hint::spin_loop();
            continue;
        }
        let b = inb(THR);
        let want = pattern(from, got);
        ensure!(b == want, "byte {got} is {b:#04x}, expected {want:#04x}");
        got += 1;
        if me == Side::Right && got.is_multiple_of(PAUSE_EVERY) {
            let p0 = cpu::rdtsc();
            while cpu::rdtsc() - p0 < pause {
                core::hint::spin_loop();
            }
        }
    }
    crate::out!("vuart-link: received {got} bytes, all as sent");
    Ok(Pass)
}

/// Waits for the peer to go (DSR low), then sends [`AFTER_BYTES`] into the dead cable: THRE
/// never holds the sender longer than [`GONE_WAIT_MS`].
fn peer_gone(env: &Env) -> TestResult {
    let t0 = cpu::rdtsc();
    let bound = tsc_bound_ms(env, PEER_MS);
    while inb(MSR) & MSR_DSR != 0 {
        if cpu::rdtsc() - t0 > bound {
            fail!("the peer's DSR never dropped");
        }
        core::hint::spin_loop();
    }
    let longest_allowed = tsc_bound_ms(env, GONE_WAIT_MS);
    let (mut sent, mut longest) = (0usize, 0u64);
    while sent < AFTER_BYTES {
        let w0 = cpu::rdtsc();
        while inb(LSR) & LSR_THRE == 0 {
            if cpu::rdtsc() - w0 > longest_allowed {
                fail!("THRE held the sender for over {GONE_WAIT_MS} ms with the peer gone");
            }
            core::hint::spin_loop();
        }
        longest = longest.max(cpu::rdtsc() - w0);
        for _ in 0..TX_FIFO {
            outb(THR, 0x55);
            sent += 1;
        }
    }
    crate::out!(
        "vuart-link: peer gone (DSR low); sent {sent} more bytes, longest THRE wait {longest} ticks"
    );
    Ok(Pass)
}
