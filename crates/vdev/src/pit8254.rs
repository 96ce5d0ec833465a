//! An 8254 programmable interval timer (channels 0-2 at ports 0x40-0x42,
//! control word at 0x43) with the PC's port 0x61 (channel 2 gate, speaker
//! enable, OUT2 status), computed from time rather than ticked.
//!
//! Time is `now_ns`, a monotonic nanosecond count the caller passes to every
//! call; the counters run at [`PIT_HZ`] (Linux's `PIT_TICK_RATE`). Nothing
//! ticks in the background: each channel remembers when it started counting
//! and every read derives the count and OUT from the time elapsed, so reading
//! a count back is exact to one input clock whatever the exit rate.
//!
//! Interrupt output is returned: [`Pit8254::poll`] reports how many rising
//! edges channel 0's OUT (IRQ 0) made since the last poll, and
//! [`Pit8254::next_deadline`] says when the next one is due. The caller
//! pulses ISA IRQ 0 on the 8259A and GSI 2 on the I/O APIC once when the
//! count is non-zero (like a real PIC's IRR, one pending edge stands for any
//! number of missed ones).
//!
//! Modes, per the Intel 8254 data sheet:
//! - 0 (interrupt on terminal count): OUT low from the control word, high
//!   once the count has run out; the counter keeps counting down and wraps.
//!   The gate pauses counting. Writing the first byte of a two-byte count
//!   stops the counter and drops OUT, the second starts the new count.
//! - 1 (hardware one-shot) and 5 (hardware strobe): counting starts on a gate
//!   rising edge (only channel 2's gate can move); on channels 0 and 1 whose
//!   gates are tied high they therefore never start, as on the chip.
//! - 2 (rate generator) and 3 (square wave): periodic with period N, OUT low
//!   for the last clock (mode 2) or the second half (mode 3) of each period;
//!   gate low holds OUT high and stops counting, gate rising restarts. Mode 3
//!   counts down by two; for odd N the count read back is approximate (the
//!   half-periods are (N+1)/2 and (N-1)/2 as specified, the exact values the
//!   chip shows for odd counts are not reproduced).
//! - 4 (software strobe): OUT high, low for one clock when the count runs out.
//! - Modes 6 and 7 are modes 2 and 3 (bit 3 is a don't-care there).
//!
//! Simplifications: a new count is loaded at once (the chip loads it on the
//! next clock, and in modes 2 and 3 at the end of the current period); the
//! count register is ready the moment it is written, so the status byte's
//! NULL COUNT bit is set only between a control word and its count. BCD
//! counting is supported (modulus 10000); a BCD count with non-decimal
//! digits is taken digit by digit modulo 10000.
//!
//! Port 0x61: bits 3:0 read back as written (bit 0 gates channel 2, bit 1
//! enables the speaker; bits 2, 3 enable parity/IOCHK checks, which never
//! fire), bit 4 toggles every 15.085 us (the refresh clock some code times
//! with), bit 5 is channel 2's OUT, bits 7:6 (error status) read 0.

use crate::access::{all_ones, read_bytes, valid_size, write_bytes};

/// Input clock of every channel, in Hz.
pub const PIT_HZ: u64 = 1_193_182;
/// Channel 0 data port (channels 1 and 2 follow).
pub const PIT_CHANNEL0: u16 = 0x40;
/// Mode/command port (write only).
pub const PIT_CONTROL: u16 = 0x43;
/// The PC's NMI status and control port ("port B").
pub const PORT_B: u16 = 0x61;

const NS_PER_SEC: u64 = 1_000_000_000;
/// Half-period of port B's refresh toggle (bit 4), in ns.
const REFRESH_TOGGLE_NS: u64 = 15_085;

const PORT_B_GATE2: u8 = 1 << 0;
const PORT_B_WRITABLE: u8 = 0x0F;
const PORT_B_REFRESH: u8 = 1 << 4;
const PORT_B_OUT2: u8 = 1 << 5;

// Status byte (read-back).
const STATUS_OUT: u8 = 1 << 7;
const STATUS_NULL_COUNT: u8 = 1 << 6;

/// Which bytes of the count a data-port access moves (control bits 5:4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Lsb,
    Msb,
    Word,
}

impl Access {
    fn bits(self) -> u8 {
        match self {
            Access::Lsb => 1,
            Access::Msb => 2,
            Access::Word => 3,
        }
    }
}

fn ns_to_ticks(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(PIT_HZ) / u128::from(NS_PER_SEC)) as u64
}

/// The first nanosecond at which `ticks` clocks have elapsed.
fn ticks_to_ns_ceil(ticks: u64) -> u64 {
    let ns = (u128::from(ticks) * u128::from(NS_PER_SEC)).div_ceil(u128::from(PIT_HZ));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

fn to_bcd(v: u32) -> u16 {
    let d = |i: u32| ((v / 10u32.pow(i)) % 10) as u16;
    d(3) << 12 | d(2) << 8 | d(1) << 4 | d(0)
}

fn from_bcd(raw: u16) -> u32 {
    let n = |i: u32| u32::from((raw >> (4 * i)) & 0xF);
    (n(3) * 1000 + n(2) * 100 + n(1) * 10 + n(0)) % 10_000
}

/// One counter.
#[derive(Clone, Copy, Debug)]
struct Channel {
    /// Mode bits as written (for the status byte).
    mode_bits: u8,
    /// Operating mode 0..=5 (6 and 7 folded to 2 and 3).
    mode: u8,
    access: Access,
    bcd: bool,
    /// The count register as written (raw, BCD if `bcd`).
    count_reg: u16,
    /// Low byte of a two-byte count, waiting for its high byte.
    pending_lsb: Option<u8>,
    /// The next data-port read of a two-byte value returns the high byte.
    read_msb_next: bool,
    latched_count: Option<u16>,
    latched_status: Option<u8>,
    /// A control word was written and no count since.
    null_count: bool,
    /// A count is loaded (the counter runs or can be triggered).
    loaded: bool,
    /// Modes 1 and 5: a gate edge has started the count.
    triggered: bool,
    gate: bool,
    /// Counting since this time, with `ticks_before` clocks counted earlier.
    running_since: Option<u64>,
    ticks_before: u64,
    /// The count shown while nothing is loaded.
    held_count: u16,
    /// Rising OUT edges already accounted for (channel 0's IRQ).
    edges_seen: u64,
}

impl Channel {
    const fn new() -> Self {
        Channel {
            mode_bits: 0,
            mode: 0,
            access: Access::Word,
            bcd: false,
            count_reg: 0,
            pending_lsb: None,
            read_msb_next: false,
            latched_count: None,
            latched_status: None,
            null_count: true,
            loaded: false,
            triggered: false,
            gate: true,
            running_since: None,
            ticks_before: 0,
            held_count: 0,
            edges_seen: 0,
        }
    }

    /// N: the count in clocks (a written 0 means 65536, or 10000 in BCD).
    fn period(&self) -> u64 {
        let n = if self.bcd {
            from_bcd(self.count_reg)
        } else {
            u32::from(self.count_reg)
        };
        match (n, self.bcd) {
            (0, false) => 0x1_0000,
            (0, true) => 10_000,
            (n, _) => u64::from(n),
        }
    }

    fn modulus(&self) -> u64 {
        if self.bcd {
            10_000
        } else {
            0x1_0000
        }
    }

    fn elapsed(&self, now: u64) -> u64 {
        let running = self
            .running_since
            .map_or(0, |since| ns_to_ticks(now.saturating_sub(since)));
        self.ticks_before.saturating_add(running)
    }

    /// Whether the counter is counting in its current state (gate, trigger).
    fn started(&self) -> bool {
        self.loaded && (!matches!(self.mode, 1 | 5) || self.triggered)
    }

    fn count(&self, now: u64) -> u16 {
        if !self.started() {
            return if self.loaded {
                self.count_reg
            } else {
                self.held_count
            };
        }
        let n = self.period();
        let m = self.modulus();
        let d = self.elapsed(now);
        let v = match self.mode {
            2 => n - d % n,
            3 => n - (2 * (d % n)) % n,
            _ => (n % m + m - d % m) % m,
        } % m;
        if self.bcd {
            to_bcd(v as u32)
        } else {
            v as u16
        }
    }

    fn out(&self, now: u64) -> bool {
        if !self.loaded {
            return self.mode != 0;
        }
        if !self.started() {
            return true; // modes 1 and 5 before their trigger
        }
        let n = self.period();
        let d = self.elapsed(now);
        match self.mode {
            0 | 1 => d >= n,
            2 => !self.gate || d % n != n - 1,
            3 => !self.gate || d % n < n.div_ceil(2),
            _ => d != n,
        }
    }

    /// Rising OUT edges after `d` clocks of counting.
    fn rising_edges(&self, d: u64) -> u64 {
        if !self.started() {
            return 0;
        }
        let n = self.period();
        match self.mode {
            0 | 1 => u64::from(d >= n),
            2 | 3 => d / n,
            _ => u64::from(d > n),
        }
    }

    /// The clock count at which edge number `k` (1-based) happens.
    fn edge_tick(&self, k: u64) -> Option<u64> {
        if !self.started() {
            return None;
        }
        let n = self.period();
        match (self.mode, k) {
            (0 | 1, 1) => Some(n),
            (2 | 3, k) => Some(k.saturating_mul(n)),
            (4 | 5, 1) => Some(n + 1),
            _ => None,
        }
    }

    fn status(&self, now: u64) -> u8 {
        let mut s = self.access.bits() << 4 | self.mode_bits << 1 | u8::from(self.bcd);
        if self.out(now) {
            s |= STATUS_OUT;
        }
        if self.null_count {
            s |= STATUS_NULL_COUNT;
        }
        s
    }

    fn control(&mut self, value: u8, now: u64) {
        self.held_count = self.count(now);
        self.mode_bits = (value >> 1) & 0b111;
        self.mode = match self.mode_bits {
            6 => 2,
            7 => 3,
            m => m,
        };
        self.access = match (value >> 4) & 0b11 {
            1 => Access::Lsb,
            2 => Access::Msb,
            _ => Access::Word,
        };
        self.bcd = value & 1 != 0;
        self.pending_lsb = None;
        self.read_msb_next = false;
        self.latched_count = None;
        self.latched_status = None;
        self.null_count = true;
        self.loaded = false;
        self.triggered = false;
        self.running_since = None;
        self.ticks_before = 0;
        self.edges_seen = 0;
    }

    fn latch_count(&mut self, now: u64) {
        if self.latched_count.is_none() {
            self.latched_count = Some(self.count(now));
        }
    }

    fn latch_status(&mut self, now: u64) {
        if self.latched_status.is_none() {
            self.latched_status = Some(self.status(now));
        }
    }

    fn write_data(&mut self, value: u8, now: u64) {
        let count = match (self.access, self.pending_lsb) {
            (Access::Lsb, _) => u16::from(value),
            (Access::Msb, _) => u16::from(value) << 8,
            (Access::Word, None) => {
                self.pending_lsb = Some(value);
                if self.mode == 0 {
                    // The first byte stops the counter and drops OUT.
                    self.held_count = self.count(now);
                    self.loaded = false;
                    self.running_since = None;
                }
                return;
            }
            (Access::Word, Some(lsb)) => {
                self.pending_lsb = None;
                u16::from_le_bytes([lsb, value])
            }
        };
        self.load(count, now);
    }

    fn load(&mut self, count: u16, now: u64) {
        self.count_reg = count;
        self.loaded = true;
        self.null_count = false;
        self.triggered = false;
        self.ticks_before = 0;
        self.edges_seen = 0;
        let counts_now = matches!(self.mode, 0 | 2 | 3 | 4) && self.gate;
        self.running_since = counts_now.then_some(now);
    }

    fn read_data(&mut self, now: u64) -> u8 {
        if let Some(s) = self.latched_status.take() {
            return s;
        }
        let value = self.latched_count.unwrap_or_else(|| self.count(now));
        let [lsb, msb] = value.to_le_bytes();
        let (byte, done) = match self.access {
            Access::Lsb => (lsb, true),
            Access::Msb => (msb, true),
            Access::Word if self.read_msb_next => (msb, true),
            Access::Word => (lsb, false),
        };
        self.read_msb_next = !done;
        if done {
            self.latched_count = None;
        }
        byte
    }

    fn set_gate(&mut self, gate: bool, now: u64) {
        if gate == self.gate {
            return;
        }
        let d = self.elapsed(now);
        self.gate = gate;
        if !self.loaded {
            return;
        }
        match (self.mode, gate) {
            // Modes 0 and 4: the gate enables counting.
            (0 | 4, true) => self.running_since = Some(now),
            (0 | 4 | 2 | 3, false) => {
                self.ticks_before = d;
                self.running_since = None;
            }
            // Modes 1, 2, 3, 5: a rising gate (re)starts the count.
            (_, true) => {
                self.triggered = true;
                self.ticks_before = 0;
                self.edges_seen = 0;
                self.running_since = Some(now);
            }
            // Modes 1 and 5 ignore a falling gate.
            (_, false) => {}
        }
    }
}

/// What the PIT ignored, for the VM's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PitCounters {
    /// Accesses to ports the PIT does not decode, or with an impossible width.
    pub bad_accesses: u64,
}

/// The three-channel 8254 and port 0x61.
#[derive(Clone, Debug)]
pub struct Pit8254 {
    channels: [Channel; 3],
    /// Port 0x61 bits 3:0.
    port_b: u8,
    /// Channel 0 edges accounted but not yet reported by `poll`.
    pending_edges: u64,
    /// When `pending_edges` was last brought up to date.
    accounted_at: u64,
    counters: PitCounters,
}

impl Default for Pit8254 {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit8254 {
    /// A PIT with nothing programmed: no channel counts and IRQ 0 stays
    /// quiet until the guest writes a mode and a count. Channel 2's gate
    /// (port 0x61 bit 0) starts low.
    pub const fn new() -> Self {
        let mut ch2 = Channel::new();
        ch2.gate = false;
        Pit8254 {
            channels: [Channel::new(), Channel::new(), ch2],
            port_b: 0,
            pending_edges: 0,
            accounted_at: 0,
            counters: PitCounters { bad_accesses: 0 },
        }
    }

    /// A guest read of `size` bytes at `port` (absolute) at time `now_ns`.
    /// Wider accesses are successive byte reads; undecoded ports read 0xFF.
    pub fn read(&mut self, port: u16, size: u8, now_ns: u64) -> u32 {
        if !valid_size(size) {
            self.counters.bad_accesses = self.counters.bad_accesses.saturating_add(1);
            return all_ones(size);
        }
        read_bytes(port, size, |p| self.read_byte(p, now_ns))
    }

    /// A guest write of `size` bytes at `port` at time `now_ns`.
    pub fn write(&mut self, port: u16, size: u8, value: u32, now_ns: u64) {
        if !valid_size(size) {
            self.counters.bad_accesses = self.counters.bad_accesses.saturating_add(1);
            return;
        }
        write_bytes(port, size, value, |p, b| self.write_byte(p, b, now_ns));
    }

    /// Rising edges of channel 0's OUT (IRQ 0) since the last poll, up to
    /// `now_ns` (saturating at `u32::MAX`).
    pub fn poll(&mut self, now_ns: u64) -> u32 {
        self.account(now_ns);
        let n = u32::try_from(self.pending_edges).unwrap_or(u32::MAX);
        self.pending_edges = 0;
        n
    }

    /// When channel 0 makes its next rising edge (`now_ns` scale), if it
    /// will; the last accounting time if an edge is already waiting for
    /// [`poll`](Self::poll).
    pub fn next_deadline(&self) -> Option<u64> {
        if self.pending_edges > 0 {
            return Some(self.accounted_at);
        }
        let c = &self.channels[0];
        let since = c.running_since?;
        let tick = c.edge_tick(c.edges_seen.saturating_add(1))?;
        Some(since.saturating_add(ticks_to_ns_ceil(tick.saturating_sub(c.ticks_before))))
    }

    /// Channel 2's OUT (port 0x61 bit 5) at `now_ns`.
    pub fn out2(&self, now_ns: u64) -> bool {
        self.channels[2].out(now_ns)
    }

    /// Whether the speaker is driven (gate 2 and speaker-data enable set).
    pub fn speaker_enabled(&self) -> bool {
        self.port_b & 0b11 == 0b11
    }

    /// What was ignored so far.
    pub fn counters(&self) -> PitCounters {
        self.counters
    }

    /// Brings channel 0's edge count up to `now`, before anything changes it.
    fn account(&mut self, now: u64) {
        let c = &mut self.channels[0];
        let total = c.rising_edges(c.elapsed(now));
        if total > c.edges_seen {
            self.pending_edges = self.pending_edges.saturating_add(total - c.edges_seen);
            c.edges_seen = total;
        }
        self.accounted_at = self.accounted_at.max(now);
    }

    fn read_byte(&mut self, port: u16, now: u64) -> u8 {
        match port {
            0x40..=0x42 => self.channels[usize::from(port - PIT_CHANNEL0)].read_data(now),
            // The control port cannot be read: the data bus floats.
            PIT_CONTROL => 0xFF,
            PORT_B => {
                let mut v = self.port_b;
                if (now / REFRESH_TOGGLE_NS) % 2 == 1 {
                    v |= PORT_B_REFRESH;
                }
                if self.channels[2].out(now) {
                    v |= PORT_B_OUT2;
                }
                v
            }
            _ => {
                self.counters.bad_accesses = self.counters.bad_accesses.saturating_add(1);
                0xFF
            }
        }
    }

    fn write_byte(&mut self, port: u16, value: u8, now: u64) {
        self.account(now);
        match port {
            0x40..=0x42 => self.channels[usize::from(port - PIT_CHANNEL0)].write_data(value, now),
            PIT_CONTROL => self.write_control(value, now),
            PORT_B => {
                self.port_b = value & PORT_B_WRITABLE;
                self.channels[2].set_gate(value & PORT_B_GATE2 != 0, now);
            }
            _ => self.counters.bad_accesses = self.counters.bad_accesses.saturating_add(1),
        }
    }

    fn write_control(&mut self, value: u8, now: u64) {
        let select = value >> 6;
        if select == 3 {
            // Read-back: bit 5 clear latches counts, bit 4 clear latches
            // status, bits 3:1 select channels 2:0.
            for (i, c) in self.channels.iter_mut().enumerate() {
                if value & (2 << i) == 0 {
                    continue;
                }
                if value & 0x20 == 0 {
                    c.latch_count(now);
                }
                if value & 0x10 == 0 {
                    c.latch_status(now);
                }
            }
            return;
        }
        let c = &mut self.channels[usize::from(select)];
        if value & 0x30 == 0 {
            c.latch_count(now);
        } else {
            c.control(value, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nanoseconds for `ticks` PIT clocks, rounded up.
    fn ns(ticks: u64) -> u64 {
        ticks_to_ns_ceil(ticks)
    }

    fn outb(p: &mut Pit8254, port: u16, v: u8, now: u64) {
        p.write(port, 1, u32::from(v), now);
    }

    fn inb(p: &mut Pit8254, port: u16, now: u64) -> u8 {
        p.read(port, 1, now) as u8
    }

    /// Channel `ch`, two-byte access, `mode`, binary, count `n`, at `now`.
    fn program(p: &mut Pit8254, ch: u8, mode: u8, n: u16, now: u64) {
        outb(p, 0x43, ch << 6 | 0x30 | mode << 1, now);
        let [lo, hi] = n.to_le_bytes();
        outb(p, 0x40 + u16::from(ch), lo, now);
        outb(p, 0x40 + u16::from(ch), hi, now);
    }

    fn read_word(p: &mut Pit8254, ch: u8, now: u64) -> u16 {
        let port = 0x40 + u16::from(ch);
        u16::from_le_bytes([inb(p, port, now), inb(p, port, now)])
    }

    #[test]
    fn time_conversion_round_trips_up() {
        for t in [0u64, 1, 2, 1_193_181, 1_193_182, 1 << 40] {
            assert!(ns_to_ticks(ticks_to_ns_ceil(t)) >= t);
            assert!(ns_to_ticks(ticks_to_ns_ceil(t).saturating_sub(1)) < t.max(1));
        }
        assert_eq!(ns_to_ticks(NS_PER_SEC), PIT_HZ);
        assert_eq!(ticks_to_ns_ceil(u64::MAX), u64::MAX);
    }

    #[test]
    fn reset_state_is_idle() {
        let mut p = Pit8254::new();
        assert_eq!(p.poll(10 * NS_PER_SEC), 0);
        assert_eq!(p.next_deadline(), None);
        assert_eq!(inb(&mut p, 0x61, 0) & PORT_B_OUT2, 0);
        assert_eq!(inb(&mut p, 0x43, 0), 0xFF);
    }

    #[test]
    fn mode2_periodic_irq0_and_deadlines() {
        let mut p = Pit8254::new();
        let n = 11_932u16; // ~100 Hz
        let t0 = 5_000;
        program(&mut p, 0, 2, n, t0);
        let period = u64::from(n);
        assert_eq!(p.next_deadline(), Some(t0 + ns(period)));
        assert_eq!(p.poll(t0 + ns(period) - 1), 0);
        assert_eq!(p.poll(t0 + ns(period)), 1);
        assert_eq!(p.next_deadline(), Some(t0 + ns(2 * period)));
        // Missed periods are counted, not lost.
        assert_eq!(p.poll(t0 + ns(10 * period)), 9);
        // Count counts down from N and reloads.
        let at = t0 + ns(10 * period + 100);
        outb(&mut p, 0x43, 0x00, at); // latch channel 0
        assert_eq!(read_word(&mut p, 0, at + 1_000_000), n - 100);
    }

    #[test]
    fn mode0_one_shot_fires_once_and_wraps() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 0, 1000, 0);
        assert_eq!(p.next_deadline(), Some(ns(1000)));
        assert_eq!(p.poll(ns(999)), 0);
        assert_eq!(p.poll(ns(5000)), 1);
        assert_eq!(p.poll(ns(100_000)), 0);
        assert_eq!(p.next_deadline(), None);
        // The counter keeps counting through zero.
        assert_eq!(read_word(&mut p, 0, ns(1001)), 0xFFFF);
        // Linux's pit_shutdown (mode 0, count 0) fires once 65536 clocks on.
        program(&mut p, 0, 0, 0, ns(200_000));
        assert_eq!(p.next_deadline(), Some(ns(200_000) + ns(65_536)));
    }

    #[test]
    fn reprogramming_keeps_edges_already_due() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 2, 100, 0);
        // Three periods pass unpolled, then the guest reprograms.
        program(&mut p, 0, 2, 50_000, ns(350));
        assert_eq!(p.poll(ns(351)), 3);
        assert_eq!(p.next_deadline(), Some(ns(350) + ns(50_000)));
    }

    #[test]
    fn mode3_square_wave_halves() {
        let mut p = Pit8254::new();
        outb(&mut p, 0x61, 0x01, 0); // gate 2 high
        program(&mut p, 2, 3, 1000, 0);
        let out2 = |p: &mut Pit8254, t: u64| inb(p, 0x61, ns(t)) & PORT_B_OUT2 != 0;
        assert!(out2(&mut p, 0));
        assert!(out2(&mut p, 499));
        assert!(!out2(&mut p, 500));
        assert!(!out2(&mut p, 999));
        assert!(out2(&mut p, 1000));
        // Counts down by two within each half.
        assert_eq!(read_word(&mut p, 2, ns(10)), 980);
        assert_eq!(read_word(&mut p, 2, ns(510)), 980);
        // Gate low holds OUT high.
        outb(&mut p, 0x61, 0x00, ns(1600));
        assert!(out2(&mut p, 1700));
    }

    /// Linux's pit_calibrate_tsc: gate high, speaker off, channel 2 mode 0
    /// with a 50 ms latch, then poll port 0x61 bit 5 until OUT2 rises.
    #[test]
    fn linux_pit_calibrate_tsc_sees_out2_after_the_latch() {
        let mut p = Pit8254::new();
        let t0 = 123_456_789;
        let v = inb(&mut p, 0x61, t0);
        outb(&mut p, 0x61, (v & !0x02) | 0x01, t0);
        let latch = (PIT_HZ / 20) as u16; // CAL_MS = 50
        outb(&mut p, 0x43, 0xB0, t0);
        outb(&mut p, 0x42, latch as u8, t0);
        outb(&mut p, 0x42, (latch >> 8) as u8, t0);
        assert_eq!(inb(&mut p, 0x61, t0 + ns(u64::from(latch)) - 1) & 0x20, 0);
        assert_eq!(inb(&mut p, 0x61, t0 + ns(u64::from(latch))) & 0x20, 0x20);
        assert!(!p.speaker_enabled());
        // Channel 2 never interrupts.
        assert_eq!(p.poll(t0 + NS_PER_SEC), 0);
    }

    /// Linux's quick_pit_calibrate: channel 2 mode 0 from 0xFFFF, then
    /// reading LSB and MSB pairs (no latch) and watching the MSB fall.
    #[test]
    fn linux_quick_pit_calibrate_reads_a_falling_msb() {
        let mut p = Pit8254::new();
        let t0 = 1_000;
        outb(&mut p, 0x61, 0x01, t0);
        outb(&mut p, 0x43, 0xB0, t0);
        outb(&mut p, 0x42, 0xFF, t0);
        outb(&mut p, 0x42, 0xFF, t0);
        let mut last = 0x100u16;
        for msb_step in 0..200u64 {
            let t = t0 + ns(msb_step * 256 + 10);
            let _lsb = inb(&mut p, 0x42, t);
            let msb = u16::from(inb(&mut p, 0x42, t));
            assert_eq!(msb, 0xFF - msb_step as u16, "after {msb_step} * 256 clocks");
            assert!(msb < last);
            last = msb;
        }
    }

    #[test]
    fn mode0_gate_pauses_and_first_byte_stops_counting() {
        let mut p = Pit8254::new();
        outb(&mut p, 0x61, 0x01, 0);
        program(&mut p, 2, 0, 1000, 0);
        outb(&mut p, 0x61, 0x00, ns(100));
        assert_eq!(read_word(&mut p, 2, ns(900)), 900, "paused while gate low");
        outb(&mut p, 0x61, 0x01, ns(900));
        assert_eq!(read_word(&mut p, 2, ns(900) + ns(100)), 800);
        // First byte of a new count: counting stops and OUT drops.
        assert!(p.out2(ns(2000)));
        outb(&mut p, 0x42, 0x10, ns(2000));
        assert!(!p.out2(ns(5000)));
        outb(&mut p, 0x42, 0x00, ns(5000));
        assert!(!p.out2(ns(5000) + ns(15)));
        assert!(p.out2(ns(5000) + ns(16)));
    }

    #[test]
    fn latches_access_modes_and_read_back() {
        let mut p = Pit8254::new();
        program(&mut p, 1, 2, 0x1234, 0);
        outb(&mut p, 0x43, 0x40, 0); // latch channel 1
        outb(&mut p, 0x43, 0x40, ns(0x100)); // ignored: already latched
        assert_eq!(read_word(&mut p, 1, ns(0x200)), 0x1234);
        // LSB-only and MSB-only access.
        outb(&mut p, 0x43, 0x54, 0); // ch1, LSB only, mode 2
        outb(&mut p, 0x41, 0x80, 0);
        assert_eq!(inb(&mut p, 0x41, ns(0x10)), 0x70);
        outb(&mut p, 0x43, 0x64, 0); // ch1, MSB only, mode 2
        outb(&mut p, 0x41, 0x02, 0);
        assert_eq!(inb(&mut p, 0x41, ns(0x100)), 0x01);
        // Read-back: status then count of channel 1.
        outb(&mut p, 0x43, 0xC4, ns(0x100));
        assert_eq!(inb(&mut p, 0x41, ns(0x180)), 0x80 | 0x20 | 2 << 1);
        assert_eq!(inb(&mut p, 0x41, ns(0x180)), 0x01);
        // Status right after a control word shows NULL COUNT.
        outb(&mut p, 0x43, 0x70, 0);
        outb(&mut p, 0x43, 0xE4, 0);
        assert_eq!(inb(&mut p, 0x41, 0), 0x40 | 0x30);
    }

    #[test]
    fn bcd_counting() {
        let mut p = Pit8254::new();
        outb(&mut p, 0x43, 0x35, 0); // ch0, word, mode 2, BCD
        outb(&mut p, 0x40, 0x00, 0);
        outb(&mut p, 0x40, 0x10, 0); // 1000 decimal
        assert_eq!(read_word(&mut p, 0, ns(1)), 0x0999);
        assert_eq!(p.poll(ns(1000)), 1);
        // Count 0 in BCD is 10000.
        outb(&mut p, 0x43, 0x31, 0);
        outb(&mut p, 0x40, 0, 0);
        outb(&mut p, 0x40, 0, 0);
        assert_eq!(read_word(&mut p, 0, ns(1)), 0x9999);
    }

    #[test]
    fn hardware_triggered_modes_start_on_the_gate() {
        let mut p = Pit8254::new();
        program(&mut p, 2, 1, 100, 0);
        assert!(p.out2(ns(500)), "mode 1 waits for a trigger");
        outb(&mut p, 0x61, 0x01, ns(500));
        assert!(!p.out2(ns(500) + ns(99)));
        assert!(p.out2(ns(500) + ns(100)));
        // Channel 0 in mode 1 never starts (its gate is tied high).
        program(&mut p, 0, 1, 10, 0);
        assert_eq!(p.poll(NS_PER_SEC), 0);
        assert_eq!(p.next_deadline(), None);
        // Mode 5 strobes after a trigger; mode 4 strobes by itself.
        program(&mut p, 0, 4, 10, 0);
        assert_eq!(p.next_deadline(), Some(ns(11)));
        assert_eq!(p.poll(ns(11)), 1);
    }

    #[test]
    fn modes_6_and_7_alias_2_and_3() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 6, 10, 0);
        assert_eq!(p.poll(ns(30)), 3);
        program(&mut p, 0, 7, 10, ns(30));
        assert_eq!(p.poll(ns(30) + ns(20)), 2);
    }

    #[test]
    fn hostile_ports_sizes_values_and_times_never_panic() {
        let mut p = Pit8254::new();
        for port in [0u16, 0x3F, 0x44, 0x60, 0x62, 0xFFFF] {
            assert_eq!(p.read(port, 1, 0), 0xFF);
            p.write(port, 1, 0xFF, 0);
        }
        for size in [0u8, 3, 8] {
            assert_eq!(p.read(0x40, size, 0), 0xFFFF_FFFF);
            p.write(0x43, size, 0x34, 0);
        }
        assert_eq!(p.counters().bad_accesses, 18);
        // Every control word, every count, odd times (including going backwards).
        let times = [0u64, 1, u64::MAX / 2, 7, u64::MAX, 3];
        for cw in 0..=255u8 {
            for (i, &t) in times.iter().enumerate() {
                outb(&mut p, 0x43, cw, t);
                outb(&mut p, 0x40 + (i as u16 % 3), cw.wrapping_mul(37), t);
                outb(&mut p, 0x40 + (i as u16 % 3), cw, t);
                outb(&mut p, 0x61, cw, t);
                let _ = p.read(0x40, 4, t);
                let _ = p.read(0x61, 2, t);
                let _ = p.poll(t);
                let _ = p.next_deadline();
            }
        }
        // Count 1 in modes 2 and 3 (illegal on the chip) still behaves.
        program(&mut p, 0, 2, 1, 0);
        let _ = p.poll(u64::MAX);
        program(&mut p, 0, 3, 1, 0);
        let _ = read_word(&mut p, 0, u64::MAX);
        let _ = p.poll(u64::MAX);
    }
}
