//! A virtual 16550A UART as a register state machine: eight byte-wide
//! registers, a bounded receive FIFO, a bounded output buffer the caller
//! drains, and an interrupt level the caller forwards to the interrupt
//! controller.
//!
//! Behaviour follows the National PC16550D data sheet where a guest can
//! observe it, with these deliberate simplifications:
//! - Transmission is instantaneous: every THR byte goes straight to the output
//!   buffer, LSR.THRE and LSR.TEMT always read 1, so console output never
//!   waits on a baud rate. FCR's "clear transmit FIFO" therefore has nothing
//!   to clear.
//! - The receive FIFO holds [`RX_FIFO_SIZE`] bytes whether or not FCR enabled
//!   FIFOs, and the received-data interrupt fires as soon as one byte is
//!   waiting (no trigger levels, no character timeout: without a clock there
//!   is nothing to time out on).
//! - Parity, framing and break never happen; only overrun is reported.
//! - Outside loopback the modem inputs read as a connected terminal: CTS, DSR
//!   and DCD asserted, RI not.
//!
//!
//! A UART made with [`Uart16550::linked`] is one end of a wire to another
//! VM's UART (a vUART link) instead of a console: its transmitter is a
//! [`TX_FIFO_SIZE`]-byte FIFO that the caller empties into the wire as the
//! wire takes bytes ([`Uart16550::send_output`]), so LSR.THRE reads 0 and
//! the THR-empty interrupt waits while the peer is slow (flow control: a
//! driver that honours THRE loses nothing); its modem inputs are the peer's
//! outputs as a null-modem cable wires them ([`Uart16550::set_modem_inputs`]).
//!
//! The output buffer holds [`OUTPUT_CAPACITY`] bytes. When the caller does not
//! drain it in time, new bytes are dropped and counted
//! ([`UartCounters::output_dropped`]), as a real transmit FIFO loses bytes
//! written while it is full; keeping the oldest bytes also preserves the
//! start of a message (a panic's first line), and the count lets the console
//! say that something was lost.

/// Bytes the receive FIFO holds, as on a real 16550A.
pub const RX_FIFO_SIZE: usize = 16;
/// Bytes of guest output held until the caller drains them.
pub const OUTPUT_CAPACITY: usize = 4096;
/// Bytes the transmit FIFO of a linked UART holds, as on a real 16550A.
pub const TX_FIFO_SIZE: usize = 16;

// Register offsets.
const RBR_THR_DLL: u8 = 0;
const IER_DLM: u8 = 1;
const IIR_FCR: u8 = 2;
const LCR: u8 = 3;
const MCR: u8 = 4;
const LSR: u8 = 5;
const MSR: u8 = 6;
const SCR: u8 = 7;

// IER.
const IER_RX_DATA: u8 = 1 << 0;
const IER_THR_EMPTY: u8 = 1 << 1;
const IER_RX_LINE: u8 = 1 << 2;
const IER_MODEM: u8 = 1 << 3;
const IER_MASK: u8 = 0x0F;

// IIR interrupt identification, highest priority first.
const IIR_RX_LINE: u8 = 0x06;
const IIR_RX_DATA: u8 = 0x04;
const IIR_THR_EMPTY: u8 = 0x02;
const IIR_MODEM: u8 = 0x00;
const IIR_NONE: u8 = 0x01;
const IIR_FIFO_ENABLED: u8 = 0xC0;

// FCR.
const FCR_ENABLE: u8 = 1 << 0;
const FCR_CLEAR_RX: u8 = 1 << 1;

// LCR.
const LCR_DLAB: u8 = 1 << 7;

// MCR.
const MCR_DTR: u8 = 1 << 0;
const MCR_RTS: u8 = 1 << 1;
const MCR_OUT1: u8 = 1 << 2;
const MCR_OUT2: u8 = 1 << 3;
const MCR_LOOP: u8 = 1 << 4;
const MCR_MASK: u8 = 0x1F;

// LSR.
const LSR_DATA_READY: u8 = 1 << 0;
const LSR_OVERRUN: u8 = 1 << 1;
const LSR_THR_EMPTY: u8 = 1 << 5;
const LSR_TX_EMPTY: u8 = 1 << 6;

// MSR.
const MSR_DCTS: u8 = 1 << 0;
const MSR_DDSR: u8 = 1 << 1;
const MSR_TERI: u8 = 1 << 2;
const MSR_DDCD: u8 = 1 << 3;
const MSR_CTS: u8 = 1 << 4;
const MSR_DSR: u8 = 1 << 5;
const MSR_RI: u8 = 1 << 6;
const MSR_DCD: u8 = 1 << 7;

/// Divisor at reset: 12, i.e. 9600 baud from the PC's 1.8432 MHz clock.
const RESET_DIVISOR: u16 = 12;

/// What the UART lost or refused, for the VM's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UartCounters {
    /// Guest output bytes dropped because the output buffer (a linked
    /// UART's transmit FIFO) was full.
    pub output_dropped: u64,
    /// Loopback bytes lost because the receive FIFO was full (LSR.OE).
    pub overruns: u64,
    /// Reads or writes at offsets above 7.
    pub bad_offsets: u64,
}

/// A fixed-capacity byte queue.
#[derive(Clone, Debug)]
struct Ring<const N: usize> {
    buf: [u8; N],
    head: usize,
    len: usize,
}

impl<const N: usize> Ring<N> {
    const fn new() -> Self {
        Ring {
            buf: [0; N],
            head: 0,
            len: 0,
        }
    }

    /// Appends `b`; false (and nothing stored) when full.
    fn push(&mut self, b: u8) -> bool {
        if self.len == N {
            return false;
        }
        self.buf[(self.head + self.len) % N] = b;
        self.len += 1;
        true
    }

    fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let b = self.buf[self.head];
        self.head = (self.head + 1) % N;
        self.len -= 1;
        Some(b)
    }

    fn peek(&self) -> Option<u8> {
        (self.len > 0).then(|| self.buf[self.head])
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

/// One virtual 16550A.
#[derive(Clone, Debug)]
pub struct Uart16550 {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    divisor: u16,
    fifo_enabled: bool,
    /// LSR.OE, cleared by reading LSR.
    overrun: bool,
    /// The THR-empty interrupt condition: set when THR becomes empty (at
    /// once after every write, or when the interrupt is enabled), cleared by
    /// an IIR read that reports it.
    thr_empty_pending: bool,
    /// MSR bits 3:0, cleared by reading MSR.
    msr_deltas: u8,
    /// What RBR reads when the FIFO is empty: the last byte received.
    last_rx: u8,
    rx: Ring<RX_FIFO_SIZE>,
    out: Ring<OUTPUT_CAPACITY>,
    counters: UartCounters,
    /// A linked UART: a flow-controlled [`TX_FIFO_SIZE`]-byte transmitter.
    linked: bool,
    /// MSR bits 7:4 outside loopback: what the other end drives.
    modem_in: u8,
}

impl Default for Uart16550 {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart16550 {
    /// A UART in its reset state: interrupts and FIFOs off, divisor 12 (9600 baud).
    pub const fn new() -> Self {
        Uart16550 {
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            divisor: RESET_DIVISOR,
            fifo_enabled: false,
            overrun: false,
            thr_empty_pending: false,
            msr_deltas: 0,
            last_rx: 0,
            rx: Ring::new(),
            out: Ring::new(),
            counters: UartCounters {
                output_dropped: 0,
                overruns: 0,
                bad_offsets: 0,
            },
            linked: false,
            modem_in: MSR_CTS | MSR_DSR | MSR_DCD,
        }
    }

    /// A UART at one end of a wire to another UART, in its reset state: its
    /// modem inputs low until the wire reports the peer
    /// ([`Uart16550::set_modem_inputs`]).
    pub const fn linked() -> Self {
        let mut u = Self::new();
        u.linked = true;
        u.modem_in = 0;
        u
    }

    /// Sets the modem input pins (CTS, DSR, DCD; RI stays inactive), as the
    /// other end of a wire drives them; a change latches MSR's delta bits
    /// (and so the modem-status interrupt) outside loopback.
    pub fn set_modem_inputs(&mut self, cts: bool, dsr: bool, dcd: bool) {
        let mut v = 0;
        for (on, line) in [(cts, MSR_CTS), (dsr, MSR_DSR), (dcd, MSR_DCD)] {
            if on {
                v |= line;
            }
        }
        let before = self.modem_lines();
        self.modem_in = v;
        self.note_modem_change(before, self.modem_lines());
    }

    /// The modem output pins DTR and RTS as the wire sees them (in
    /// loopback the outputs are held inactive).
    pub fn modem_outputs(&self) -> (bool, bool) {
        if self.loopback() {
            return (false, false);
        }
        (self.mcr & MCR_DTR != 0, self.mcr & MCR_RTS != 0)
    }

    /// Whether the receiver takes bytes from the wire now: not in loopback
    /// (its input pin is disconnected) and room in the FIFO.
    pub fn rx_room(&self) -> usize {
        if self.loopback() {
            0
        } else {
            RX_FIFO_SIZE - self.rx.len
        }
    }

    /// Moves output bytes, oldest first, to `wire` while it takes them
    /// (`wire` returns false to keep a byte for later). A linked UART whose
    /// transmit FIFO empties raises its THR-empty condition.
    pub fn send_output(&mut self, wire: &mut impl FnMut(u8) -> bool) {
        let had = self.out.len > 0;
        while let Some(b) = self.out.peek() {
            if !wire(b) {
                break;
            }
            self.out.pop();
        }
        if self.linked && had && self.out.len == 0 {
            self.thr_empty_pending = true;
        }
    }

    /// A guest read of the register at `offset` (0..=7; others read 0xFF).
    /// Reading RBR, IIR, LSR or MSR has the side effects the hardware has.
    pub fn read(&mut self, offset: u8) -> u8 {
        match offset {
            RBR_THR_DLL if self.dlab() => self.divisor.to_le_bytes()[0],
            RBR_THR_DLL => {
                if let Some(b) = self.rx.pop() {
                    self.last_rx = b;
                }
                self.last_rx
            }
            IER_DLM if self.dlab() => self.divisor.to_le_bytes()[1],
            IER_DLM => self.ier,
            IIR_FCR => {
                let id = self.interrupt_id();
                if id == IIR_THR_EMPTY {
                    self.thr_empty_pending = false;
                }
                let fifo = if self.fifo_enabled {
                    IIR_FIFO_ENABLED
                } else {
                    0
                };
                id | fifo
            }
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => {
                // A linked transmitter is empty once the wire took every byte.
                let mut v = if self.linked && self.out.len > 0 {
                    0
                } else {
                    LSR_THR_EMPTY | LSR_TX_EMPTY
                };
                if self.rx.len > 0 {
                    v |= LSR_DATA_READY;
                }
                if self.overrun {
                    v |= LSR_OVERRUN;
                    self.overrun = false;
                }
                v
            }
            MSR => {
                let v = self.modem_lines() | self.msr_deltas;
                self.msr_deltas = 0;
                v
            }
            SCR => self.scr,
            _ => {
                self.counters.bad_offsets = self.counters.bad_offsets.saturating_add(1);
                0xFF
            }
        }
    }

    /// A guest write of `value` to the register at `offset` (0..=7; others
    /// are ignored). LSR and MSR are read-only: writes to them are ignored.
    pub fn write(&mut self, offset: u8, value: u8) {
        match offset {
            RBR_THR_DLL if self.dlab() => {
                self.divisor = u16::from_le_bytes([value, self.divisor.to_le_bytes()[1]]);
            }
            RBR_THR_DLL => self.transmit(value),
            IER_DLM if self.dlab() => {
                self.divisor = u16::from_le_bytes([self.divisor.to_le_bytes()[0], value]);
            }
            IER_DLM => {
                let new = value & IER_MASK;
                // Enabling the THR-empty interrupt while THR is empty raises it at once.
                let empty = !self.linked || self.out.len == 0;
                if empty && new & IER_THR_EMPTY != 0 && self.ier & IER_THR_EMPTY == 0 {
                    self.thr_empty_pending = true;
                }
                self.ier = new;
            }
            IIR_FCR => self.write_fcr(value),
            LCR => self.lcr = value,
            MCR => {
                let before = self.modem_lines();
                self.mcr = value & MCR_MASK;
                self.note_modem_change(before, self.modem_lines());
            }
            LSR | MSR => {}
            SCR => self.scr = value,
            _ => self.counters.bad_offsets = self.counters.bad_offsets.saturating_add(1),
        }
    }

    /// Offers one byte from the outside world to the receiver. Returns false,
    /// keeping nothing, when the byte cannot be taken: the FIFO is full or the
    /// UART is in loopback (its input pin is disconnected). The caller keeps
    /// the byte and offers it again later, so unlike a wire nothing is lost.
    pub fn push_input(&mut self, byte: u8) -> bool {
        if self.loopback() {
            return false;
        }
        self.rx.push(byte)
    }

    /// Hands every buffered output byte, oldest first, to `out` and empties
    /// the buffer.
    pub fn take_output(&mut self, out: &mut impl FnMut(u8)) {
        while let Some(b) = self.out.pop() {
            out(b);
        }
    }

    /// Output bytes waiting for [`take_output`](Self::take_output).
    pub fn output_len(&self) -> usize {
        self.out.len
    }

    /// The level of the UART's interrupt line as a PC wires it: an enabled
    /// interrupt condition exists and MCR.OUT2 (which gates the line) is set.
    /// In loopback the OUT2 pin is forced inactive, so the line is low.
    pub fn irq_pending(&self) -> bool {
        self.mcr & MCR_OUT2 != 0 && !self.loopback() && self.interrupt_id() != IIR_NONE
    }

    /// The divisor latch (DLM:DLL).
    pub fn divisor(&self) -> u16 {
        self.divisor
    }

    /// Bytes lost or refused so far.
    pub fn counters(&self) -> UartCounters {
        self.counters
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    /// A THR write: the byte leaves at once, to the output buffer or, in
    /// loopback, back into the receiver.
    fn transmit(&mut self, value: u8) {
        if self.loopback() {
            if !self.rx.push(value) {
                self.overrun = true;
                self.counters.overruns = self.counters.overruns.saturating_add(1);
            }
        } else if self.linked {
            // A full transmit FIFO (the guest ignored THRE) loses the byte.
            if self.out.len >= TX_FIFO_SIZE || !self.out.push(value) {
                self.counters.output_dropped = self.counters.output_dropped.saturating_add(1);
            }
            // THR empties when the wire takes the bytes (`send_output`).
            self.thr_empty_pending = false;
            return;
        } else if !self.out.push(value) {
            self.counters.output_dropped = self.counters.output_dropped.saturating_add(1);
        }
        self.thr_empty_pending = true;
    }

    /// FCR: other bits only take effect with bit 0 (FIFO enable) set; a
    /// change of bit 0 resets the FIFOs, as on the real part.
    fn write_fcr(&mut self, value: u8) {
        let enable = value & FCR_ENABLE != 0;
        if enable != self.fifo_enabled {
            self.rx.clear();
            self.fifo_enabled = enable;
        }
        if enable && value & FCR_CLEAR_RX != 0 {
            self.rx.clear();
        }
    }

    /// The highest-priority enabled interrupt condition (IIR bits 3:0).
    fn interrupt_id(&self) -> u8 {
        if self.ier & IER_RX_LINE != 0 && self.overrun {
            IIR_RX_LINE
        } else if self.ier & IER_RX_DATA != 0 && self.rx.len > 0 {
            IIR_RX_DATA
        } else if self.ier & IER_THR_EMPTY != 0 && self.thr_empty_pending {
            IIR_THR_EMPTY
        } else if self.ier & IER_MODEM != 0 && self.msr_deltas != 0 {
            IIR_MODEM
        } else {
            IIR_NONE
        }
    }

    /// MSR bits 7:4. In loopback the modem outputs feed the inputs: RTS to
    /// CTS, DTR to DSR, OUT1 to RI, OUT2 to DCD.
    fn modem_lines(&self) -> u8 {
        if !self.loopback() {
            return self.modem_in;
        }
        let mut v = 0;
        for (out, line) in [
            (MCR_RTS, MSR_CTS),
            (MCR_DTR, MSR_DSR),
            (MCR_OUT1, MSR_RI),
            (MCR_OUT2, MSR_DCD),
        ] {
            if self.mcr & out != 0 {
                v |= line;
            }
        }
        v
    }

    /// Latches MSR's delta bits for a change of the modem input lines.
    fn note_modem_change(&mut self, before: u8, after: u8) {
        let changed = before ^ after;
        if changed & MSR_CTS != 0 {
            self.msr_deltas |= MSR_DCTS;
        }
        if changed & MSR_DSR != 0 {
            self.msr_deltas |= MSR_DDSR;
        }
        if before & MSR_RI != 0 && after & MSR_RI == 0 {
            self.msr_deltas |= MSR_TERI;
        }
        if changed & MSR_DCD != 0 {
            self.msr_deltas |= MSR_DDCD;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn drain(u: &mut Uart16550) -> Vec<u8> {
        let mut v = Vec::new();
        u.take_output(&mut |b| v.push(b));
        v
    }

    #[test]
    fn reset_state() {
        let mut u = Uart16550::new();
        assert_eq!(u.read(IER_DLM), 0);
        assert_eq!(u.read(IIR_FCR), 0x01);
        assert_eq!(u.read(LCR), 0);
        assert_eq!(u.read(MCR), 0);
        assert_eq!(u.read(LSR), 0x60);
        assert_eq!(u.read(MSR), 0xB0);
        assert_eq!(u.read(SCR), 0);
        assert_eq!(u.divisor(), 12);
        assert!(!u.irq_pending());
        assert_eq!(u.counters(), UartCounters::default());
    }

    /// The register checks Linux's 8250 autoconfig makes to find a 16550A.
    #[test]
    fn linux_8250_probe_sequence() {
        let mut u = Uart16550::new();
        // IER test: 0 reads back 0, 0x0F reads back 0x0F.
        let save_ier = u.read(IER_DLM);
        u.write(IER_DLM, 0);
        assert_eq!(u.read(IER_DLM) & 0x0F, 0);
        u.write(IER_DLM, 0x0F);
        assert_eq!(u.read(IER_DLM) & 0x0F, 0x0F);
        u.write(IER_DLM, save_ier);
        // Loopback test: MCR = LOOP | OUT2 | RTS, MSR upper bits = DCD | CTS.
        let save_mcr = u.read(MCR);
        u.write(MCR, MCR_LOOP | 0x0A);
        assert_eq!(u.read(MSR) & 0xF0, 0x90);
        u.write(MCR, save_mcr);
        // Scratch register.
        for v in [0xA5, 0x5A, 0x00, 0xFF] {
            u.write(SCR, v);
            assert_eq!(u.read(SCR), v);
        }
        // LCR is readable; 0xBF selects no EFR on a 16550A: offset 2 is IIR.
        u.write(LCR, 0xBF);
        assert_eq!(u.read(LCR), 0xBF);
        assert_ne!(u.read(IIR_FCR), 0);
        u.write(LCR, 0);
        // FIFO detection: IIR bits 7:6 = 3 after enabling FIFOs.
        u.write(IIR_FCR, FCR_ENABLE);
        assert_eq!(u.read(IIR_FCR) >> 6, 3);
        // Not a 16750: IIR bit 5 stays clear even with the 64-byte bit.
        u.write(IIR_FCR, FCR_ENABLE | 0x20);
        assert_eq!(u.read(IIR_FCR) >> 5, 6);
        u.write(LCR, LCR_DLAB);
        u.write(IIR_FCR, FCR_ENABLE | 0x20);
        assert_eq!(u.read(IIR_FCR) >> 5, 6);
        u.write(LCR, 0);
        // Not an XScale: IER bit 6 does not stick.
        u.write(IER_DLM, 0x40);
        assert_eq!(u.read(IER_DLM) & 0x40, 0);
        // Startup: LSR must not float at 0xFF.
        assert_ne!(u.read(LSR), 0xFF);
    }

    #[test]
    fn divisor_latch_shadows_rbr_and_ier() {
        let mut u = Uart16550::new();
        u.write(IER_DLM, 0x05);
        u.write(LCR, LCR_DLAB | 0x03);
        u.write(RBR_THR_DLL, 0x01);
        u.write(IER_DLM, 0x80);
        assert_eq!(u.read(RBR_THR_DLL), 0x01);
        assert_eq!(u.read(IER_DLM), 0x80);
        assert_eq!(u.divisor(), 0x8001);
        // Divisor writes are not output, and IER is untouched.
        assert!(drain(&mut u).is_empty());
        u.write(LCR, 0x03);
        assert_eq!(u.read(IER_DLM), 0x05);
        assert_eq!(u.divisor(), 0x8001);
    }

    #[test]
    fn thr_writes_reach_output_in_order() {
        let mut u = Uart16550::new();
        for &b in b"hi\n" {
            u.write(RBR_THR_DLL, b);
        }
        assert_eq!(u.output_len(), 3);
        assert_eq!(u.read(LSR) & 0x60, 0x60);
        assert_eq!(drain(&mut u), b"hi\n");
        assert_eq!(u.output_len(), 0);
        assert!(drain(&mut u).is_empty());
    }

    #[test]
    fn output_overflow_drops_newest_and_counts() {
        let mut u = Uart16550::new();
        for i in 0..OUTPUT_CAPACITY + 10 {
            u.write(RBR_THR_DLL, i as u8);
        }
        assert_eq!(u.counters().output_dropped, 10);
        let out = drain(&mut u);
        assert_eq!(out.len(), OUTPUT_CAPACITY);
        assert!(out.iter().enumerate().all(|(i, &b)| b == i as u8));
        // Space again after draining, and the ring wraps correctly.
        for &b in b"ok" {
            u.write(RBR_THR_DLL, b);
        }
        assert_eq!(drain(&mut u), b"ok");
    }

    #[test]
    fn input_fifo_is_bounded_and_ordered() {
        let mut u = Uart16550::new();
        assert_eq!(u.read(LSR) & LSR_DATA_READY, 0);
        for i in 0..RX_FIFO_SIZE {
            assert!(u.push_input(i as u8));
        }
        assert!(!u.push_input(0xEE));
        assert_eq!(u.read(LSR) & (LSR_DATA_READY | LSR_OVERRUN), LSR_DATA_READY);
        for i in 0..RX_FIFO_SIZE {
            assert_eq!(u.read(RBR_THR_DLL), i as u8);
        }
        assert_eq!(u.read(LSR) & LSR_DATA_READY, 0);
        // Empty FIFO: RBR repeats the last byte, like the holding register.
        assert_eq!(u.read(RBR_THR_DLL), (RX_FIFO_SIZE - 1) as u8);
        assert!(u.push_input(0x41));
        assert_eq!(u.read(RBR_THR_DLL), 0x41);
    }

    #[test]
    fn fcr_clears_receive_fifo() {
        let mut u = Uart16550::new();
        u.write(IIR_FCR, FCR_ENABLE);
        u.push_input(1);
        u.push_input(2);
        // Clear bit without enable: ignored, but it disables FIFOs (reset).
        u.write(IIR_FCR, FCR_CLEAR_RX);
        assert_eq!(u.read(LSR) & LSR_DATA_READY, 0);
        assert_eq!(u.read(IIR_FCR) & 0xC0, 0);
        u.write(IIR_FCR, FCR_ENABLE);
        u.push_input(3);
        u.write(IIR_FCR, FCR_ENABLE);
        assert_eq!(u.read(LSR) & LSR_DATA_READY, LSR_DATA_READY);
        u.write(IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX | 0x04 | 0xC0);
        assert_eq!(u.read(LSR) & LSR_DATA_READY, 0);
        assert_eq!(u.read(IIR_FCR), 0xC1);
    }

    #[test]
    fn iir_priorities() {
        let mut u = Uart16550::new();
        u.write(MCR, MCR_OUT2);
        u.write(IER_DLM, IER_RX_DATA | IER_THR_EMPTY);
        // Enabling THRI with THR empty raises it.
        assert!(u.irq_pending());
        u.push_input(b'x');
        // RX data outranks THR empty.
        assert_eq!(u.read(IIR_FCR), IIR_RX_DATA);
        assert_eq!(u.read(IIR_FCR), IIR_RX_DATA);
        u.read(RBR_THR_DLL);
        // Then THR empty, cleared by the IIR read that reports it.
        assert!(u.irq_pending());
        assert_eq!(u.read(IIR_FCR), IIR_THR_EMPTY);
        assert_eq!(u.read(IIR_FCR), IIR_NONE);
        assert!(!u.irq_pending());
        // A THR write empties at once and raises it again.
        u.write(RBR_THR_DLL, b'a');
        assert!(u.irq_pending());
        assert_eq!(u.read(IIR_FCR), IIR_THR_EMPTY);
        // Re-writing IER with THRI still set does not re-raise it.
        u.write(IER_DLM, IER_RX_DATA | IER_THR_EMPTY);
        assert_eq!(u.read(IIR_FCR), IIR_NONE);
        // Disabled sources do not show.
        u.write(IER_DLM, 0);
        u.push_input(b'y');
        assert_eq!(u.read(IIR_FCR), IIR_NONE);
        assert!(!u.irq_pending());
    }

    #[test]
    fn line_status_and_modem_interrupts() {
        let mut u = Uart16550::new();
        u.write(IER_DLM, IER_RX_LINE | IER_RX_DATA | IER_MODEM);
        // Loopback with a full FIFO overruns.
        u.write(MCR, MCR_LOOP);
        // Entering loopback dropped CTS, DSR and DCD: modem status changed.
        assert_eq!(u.read(IIR_FCR), IIR_MODEM);
        for i in 0..=RX_FIFO_SIZE {
            u.write(RBR_THR_DLL, i as u8);
        }
        assert_eq!(u.counters().overruns, 1);
        assert_eq!(u.read(IIR_FCR), IIR_RX_LINE);
        assert_eq!(u.read(LSR), LSR_DATA_READY | LSR_OVERRUN | 0x60);
        // LSR read cleared OE: RX data is next.
        assert_eq!(u.read(IIR_FCR), IIR_RX_DATA);
        for i in 0..RX_FIFO_SIZE {
            assert_eq!(u.read(RBR_THR_DLL), i as u8);
        }
        assert_eq!(u.read(IIR_FCR), IIR_MODEM);
        assert_eq!(u.read(MSR), MSR_DCTS | MSR_DDSR | MSR_DDCD);
        assert_eq!(u.read(IIR_FCR), IIR_NONE);
        assert!(drain(&mut u).is_empty());
    }

    #[test]
    fn loopback_reflects_modem_control() {
        let mut u = Uart16550::new();
        u.write(MCR, MCR_LOOP);
        u.read(MSR);
        for (mcr, lines) in [
            (MCR_RTS, MSR_CTS),
            (MCR_DTR, MSR_DSR),
            (MCR_OUT1, MSR_RI),
            (MCR_OUT2, MSR_DCD),
            (0x0F, 0xF0),
        ] {
            u.write(MCR, MCR_LOOP | mcr);
            assert_eq!(u.read(MSR) & 0xF0, lines, "mcr {mcr:#x}");
        }
        // RI falling: trailing-edge bit; other lines: delta bits.
        u.write(MCR, MCR_LOOP);
        assert_eq!(u.read(MSR), MSR_DCTS | MSR_DDSR | MSR_TERI | MSR_DDCD);
        assert_eq!(u.read(MSR), 0);
        // RI rising sets no delta.
        u.write(MCR, MCR_LOOP | MCR_OUT1);
        assert_eq!(u.read(MSR), MSR_RI);
    }

    #[test]
    fn loopback_routes_thr_to_rbr_and_refuses_input() {
        let mut u = Uart16550::new();
        u.write(MCR, MCR_LOOP | MCR_OUT2);
        u.write(RBR_THR_DLL, 0x55);
        assert!(!u.push_input(0x66));
        assert_eq!(u.read(LSR) & LSR_DATA_READY, LSR_DATA_READY);
        assert_eq!(u.read(RBR_THR_DLL), 0x55);
        assert!(drain(&mut u).is_empty());
        // The line is gated in loopback even with a pending interrupt.
        u.write(IER_DLM, IER_THR_EMPTY);
        assert!(!u.irq_pending());
        u.write(MCR, MCR_OUT2);
        assert!(u.irq_pending());
        assert!(u.push_input(0x66));
    }

    #[test]
    fn out2_gates_the_interrupt_line() {
        let mut u = Uart16550::new();
        u.write(IER_DLM, IER_RX_DATA);
        u.push_input(1);
        assert!(!u.irq_pending());
        u.write(MCR, MCR_OUT2);
        assert!(u.irq_pending());
        u.read(RBR_THR_DLL);
        assert!(!u.irq_pending());
    }

    #[test]
    fn register_masks_and_read_only_registers() {
        let mut u = Uart16550::new();
        u.write(IER_DLM, 0xFF);
        assert_eq!(u.read(IER_DLM), 0x0F);
        u.write(MCR, 0xFF);
        assert_eq!(u.read(MCR), 0x1F);
        u.write(MCR, 0);
        u.write(LSR, 0xFF);
        u.write(MSR, 0x0F);
        assert_eq!(u.read(LSR), 0x60);
        // Leaving loopback dropped RI (OUT1): a trailing edge.
        assert_eq!(u.read(MSR), 0xB0 | MSR_TERI);
        assert_eq!(u.read(MSR), 0xB0);
        u.write(LCR, 0xFF);
        assert_eq!(u.read(LCR), 0xFF);
    }

    #[test]
    fn hostile_offsets_read_ones_and_ignore_writes() {
        let mut u = Uart16550::new();
        u.write(SCR, 0x12);
        let mut bad = 0;
        for off in 8..=u8::MAX {
            assert_eq!(u.read(off), 0xFF);
            u.write(off, 0xAB);
            bad += 2;
        }
        assert_eq!(u.counters().bad_offsets, bad);
        assert_eq!(u.read(SCR), 0x12);
        assert_eq!(u.read(LSR), 0x60);
        assert!(drain(&mut u).is_empty());
    }

    #[test]
    fn every_register_survives_every_value() {
        let mut u = Uart16550::new();
        for lcr in [0, LCR_DLAB] {
            for off in 0..=u8::MAX {
                for v in 0..=u8::MAX {
                    u.write(LCR, lcr);
                    u.write(off, v);
                    u.read(off);
                    u.irq_pending();
                }
            }
        }
        let _ = drain(&mut u);
    }

    /// A linked UART with DTR|RTS|OUT2 set and the THR-empty and RX
    /// interrupts enabled, as a driver that opened the port leaves it.
    fn opened_link() -> Uart16550 {
        let mut u = Uart16550::linked();
        u.write(MCR, MCR_DTR | MCR_RTS | MCR_OUT2);
        u.write(IIR_FCR, FCR_ENABLE);
        u
    }

    #[test]
    fn linked_transmitter_waits_for_the_wire() {
        let mut u = opened_link();
        assert_eq!(u.modem_outputs(), (true, true));
        u.write(IER_DLM, IER_THR_EMPTY);
        // Empty at first: enabling the interrupt raises it.
        assert_eq!(u.read(IIR_FCR) & 0x0F, IIR_THR_EMPTY);
        for b in 0..TX_FIFO_SIZE as u8 {
            u.write(RBR_THR_DLL, b);
        }
        // Bytes in the FIFO: THRE and TEMT clear, no interrupt.
        assert_eq!(u.read(LSR) & (LSR_THR_EMPTY | LSR_TX_EMPTY), 0);
        assert!(!u.irq_pending());
        // The 17th byte is lost and counted.
        u.write(RBR_THR_DLL, 0xEE);
        assert_eq!(u.counters().output_dropped, 1);
        // The wire takes five, then refuses: still not empty, still quiet.
        let mut taken = Vec::new();
        u.send_output(&mut |b| {
            if taken.len() < 5 {
                taken.push(b);
                true
            } else {
                false
            }
        });
        assert_eq!(taken, [0, 1, 2, 3, 4]);
        assert_eq!(u.read(LSR) & LSR_THR_EMPTY, 0);
        assert!(!u.irq_pending());
        // The wire takes the rest in order: THRE and its interrupt come back.
        u.send_output(&mut |b| {
            taken.push(b);
            true
        });
        assert_eq!(taken, (0..16).collect::<Vec<u8>>());
        assert_eq!(u.read(LSR) & 0x60, 0x60);
        assert!(u.irq_pending());
        assert_eq!(u.read(IIR_FCR) & 0x0F, IIR_THR_EMPTY);
        assert!(!u.irq_pending());
        // Nothing sent: an empty FIFO raises nothing again.
        u.send_output(&mut |_| true);
        assert!(!u.irq_pending());
    }

    #[test]
    fn linked_modem_inputs_follow_the_peer() {
        let mut u = opened_link();
        u.write(IER_DLM, IER_MODEM);
        // Nobody at the other end yet.
        assert_eq!(u.read(MSR), 0);
        u.set_modem_inputs(true, true, true);
        assert!(u.irq_pending());
        assert_eq!(
            u.read(MSR),
            MSR_CTS | MSR_DSR | MSR_DCD | MSR_DCTS | MSR_DDSR | MSR_DDCD
        );
        assert!(!u.irq_pending());
        // The peer goes away.
        u.set_modem_inputs(false, false, false);
        assert_eq!(u.read(MSR), MSR_DCTS | MSR_DDSR | MSR_DDCD);
        // In loopback the outputs are held inactive and the receiver takes nothing.
        u.write(MCR, MCR_LOOP | MCR_DTR);
        assert_eq!(u.modem_outputs(), (false, false));
        assert_eq!(u.rx_room(), 0);
        u.write(MCR, MCR_DTR);
        assert_eq!(u.rx_room(), RX_FIFO_SIZE);
        assert!(u.push_input(1));
        assert_eq!(u.rx_room(), RX_FIFO_SIZE - 1);
    }

    #[test]
    fn console_uarts_keep_their_instant_transmitter() {
        let mut u = Uart16550::new();
        for b in 0..100u8 {
            u.write(RBR_THR_DLL, b);
            assert_eq!(u.read(LSR) & 0x60, 0x60);
        }
        let mut n = 0;
        u.send_output(&mut |_| {
            n += 1;
            true
        });
        assert_eq!(n, 100);
        assert_eq!(u.read(MSR) & 0xF0, 0xB0);
    }
}
