//! The PC's cascaded pair of 8259A interrupt controllers (master at ports
//! 0x20/0x21, slave at 0xA0/0xA1, slave output on master IR2) plus the
//! edge/level control registers (ELCR) at 0x4D0/0x4D1.
//!
//! Interrupt output is queried, never pushed: [`Pic8259::pending_vector`] is
//! the master's INT pin (the vector an INTA cycle would fetch) and
//! [`Pic8259::acknowledge`] is that INTA cycle. The caller injects the vector
//! when the vCPU's LINT0 is in ExtINT mode and the guest can take it.
//!
//! Behaviour follows the Intel 8259A data sheet where a guest can observe it:
//! - ICW1..ICW4 initialisation (ICW1 clears IMR and ISR, resets priorities,
//!   selects IRR for reads; a request that is high must go low and high again
//!   to be seen, except on level-triggered inputs), single or cascade mode,
//!   auto-EOI (with rotate-on-auto-EOI), special fully nested mode.
//! - OCW1 (IMR), OCW2 (non-specific, specific and rotating EOIs, set
//!   priority, rotate-in-auto-EOI on/off), OCW3 (read IRR/ISR, poll, special
//!   mask mode).
//! - Edge-triggered inputs latch a rising request in IRR until it is
//!   acknowledged; a pulse (raise then lower) is therefore kept, which is how
//!   the timer's IRQ 0 arrives (the chip itself ANDs the latch with the input
//!   level; the VM's devices pulse their lines, so the latch alone is kept).
//!   Master IR2 is the exception: the slave's INT is a real level and the
//!   latch follows it, so a withdrawn slave request leaves no spurious IRQ 15.
//!   Level-triggered inputs (ICW1.LTIM or the ELCR bit) have IRR follow the
//!   request.
//! - An INTA with nothing to deliver returns the spurious vector of IR7
//!   (IRQ 7, or IRQ 15 when the master points at the slave and the slave has
//!   nothing); a spurious IRQ 7 sets no ISR bit.
//! - The master asks the slave for the vector only when ICW3 says a slave
//!   sits on IR2 and the master is not in single mode.
//!
//! Not modelled: 8080/8085 call-address mode (ICW4.uPM = 0 is accepted and
//! treated as 8086 mode) and buffered mode (no observable effect).
//!
//! Reset state is what a PC BIOS leaves, so that a kernel booted without
//! firmware starts from a quiet controller: both chips initialised (vector
//! bases 0x08 and 0x70, cascade on IR2, normal EOI) with every input masked.
//!
//! Linux probes the chip by writing 0xFB to the master IMR and reading it
//! back, then reinitialises it and, when it uses the I/O APIC, masks
//! everything: all ordinary register behaviour.

use crate::access::{all_ones, read_bytes, valid_size, write_bytes};

/// Master command (ICW1, OCW2, OCW3) and IRR/ISR/poll port.
pub const PIC_MASTER_COMMAND: u16 = 0x20;
/// Master data (ICW2..4, IMR) port.
pub const PIC_MASTER_DATA: u16 = 0x21;
/// Slave command port.
pub const PIC_SLAVE_COMMAND: u16 = 0xA0;
/// Slave data port.
pub const PIC_SLAVE_DATA: u16 = 0xA1;
/// ELCR for IRQ 0..7.
pub const ELCR_MASTER: u16 = 0x4D0;
/// ELCR for IRQ 8..15.
pub const ELCR_SLAVE: u16 = 0x4D1;

/// The master input the slave's INT drives.
const CASCADE_IR: u8 = 2;
/// ELCR bits that exist: IRQ 0, 1, 2 (master) and 8, 13 (slave) are always edge.
const ELCR_WRITABLE: [u8; 2] = [0xF8, 0xDE];

// ICW1.
const ICW1_IC4: u8 = 1 << 0;
const ICW1_SNGL: u8 = 1 << 1;
const ICW1_LTIM: u8 = 1 << 3;
const ICW1_SELECT: u8 = 1 << 4;
// ICW4.
const ICW4_AEOI: u8 = 1 << 1;
const ICW4_SFNM: u8 = 1 << 4;
// OCW3.
const OCW3_SELECT: u8 = 1 << 3;
const OCW3_POLL: u8 = 1 << 2;
const OCW3_ESMM: u8 = 1 << 6;
const OCW3_SMM: u8 = 1 << 5;
/// Poll word bit 7: an interrupt was pending.
const POLL_PENDING: u8 = 0x80;

/// Where the initialisation sequence stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Init {
    Ready,
    Icw2,
    Icw3,
    Icw4,
}

/// One 8259A.
#[derive(Clone, Copy, Debug)]
struct Chip {
    irr: u8,
    isr: u8,
    imr: u8,
    /// Request levels as last seen, for edge detection.
    lines: u8,
    elcr: u8,
    elcr_writable: u8,
    /// ICW2 bits 7:3.
    vector_base: u8,
    icw3: u8,
    init: Init,
    icw4_expected: bool,
    single: bool,
    ltim: bool,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    sfnm: bool,
    special_mask: bool,
    read_isr: bool,
    poll: bool,
    /// The IR with the highest priority; the others follow in order.
    highest: u8,
}

impl Chip {
    const fn initialised(vector_base: u8, icw3: u8, elcr_writable: u8) -> Self {
        Chip {
            irr: 0,
            isr: 0,
            imr: 0xFF,
            lines: 0,
            elcr: 0,
            elcr_writable,
            vector_base,
            icw3,
            init: Init::Ready,
            icw4_expected: true,
            single: false,
            ltim: false,
            auto_eoi: false,
            rotate_on_auto_eoi: false,
            sfnm: false,
            special_mask: false,
            read_isr: false,
            poll: false,
            highest: 0,
        }
    }

    fn level_mask(&self) -> u8 {
        if self.ltim {
            0xFF
        } else {
            self.elcr
        }
    }

    /// Priority rank (0 = highest) of the highest-priority bit set in `bits`.
    fn rank(&self, bits: u8) -> Option<u8> {
        (0..8).find(|r| bits & (1 << ((r + self.highest) & 7)) != 0)
    }

    fn ir_of_rank(&self, rank: u8) -> u8 {
        (rank + self.highest) & 7
    }

    /// The IR this chip would present on INT, if any: the highest-priority
    /// unmasked request that outranks everything in service.
    fn request(&self, is_master: bool) -> Option<u8> {
        let req = self.rank(self.irr & !self.imr)?;
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if is_master && self.sfnm {
            // A slave input in service does not block that slave's own
            // higher-priority requests.
            in_service &= !self.icw3;
        }
        let blocked_at = self.rank(in_service).unwrap_or(8);
        (req < blocked_at).then(|| self.ir_of_rank(req))
    }

    fn set_input(&mut self, ir: u8, level: bool) {
        let bit = 1 << ir;
        if self.level_mask() & bit != 0 {
            if level {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if level && self.lines & bit == 0 {
            self.irr |= bit;
        } else if !level && self.lines & bit != 0 {
            // The 8259A wants an edge-triggered request held until INTA: a
            // line that falls first withdraws it (an INTA then finds IR7,
            // the spurious vector). A device that clears its interrupt
            // (the RTC's register C read) must not leave a stale request.
            self.irr &= !bit;
        }
        if level {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
    }

    /// The INTA (or poll) transfer of `ir` from IRR to ISR.
    fn ack(&mut self, ir: u8) {
        let bit = 1 << ir;
        if self.level_mask() & bit == 0 {
            self.irr &= !bit;
        }
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.highest = (ir + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
    }

    fn icw1(&mut self, value: u8) {
        self.icw4_expected = value & ICW1_IC4 != 0;
        self.single = value & ICW1_SNGL != 0;
        self.ltim = value & ICW1_LTIM != 0;
        if !self.icw4_expected {
            self.auto_eoi = false;
            self.sfnm = false;
        }
        self.imr = 0;
        self.isr = 0;
        // Edge inputs must rise again to be seen; level inputs are their level.
        self.irr = self.lines & self.level_mask();
        self.highest = 0;
        self.special_mask = false;
        self.rotate_on_auto_eoi = false;
        self.read_isr = false;
        self.poll = false;
        self.init = Init::Icw2;
    }

    fn write_data(&mut self, value: u8) {
        self.init = match self.init {
            Init::Ready => {
                self.imr = value;
                Init::Ready
            }
            Init::Icw2 => {
                self.vector_base = value & 0xF8;
                if !self.single {
                    Init::Icw3
                } else if self.icw4_expected {
                    Init::Icw4
                } else {
                    Init::Ready
                }
            }
            Init::Icw3 => {
                self.icw3 = value;
                if self.icw4_expected {
                    Init::Icw4
                } else {
                    Init::Ready
                }
            }
            Init::Icw4 => {
                self.auto_eoi = value & ICW4_AEOI != 0;
                self.sfnm = value & ICW4_SFNM != 0;
                Init::Ready
            }
        };
    }

    fn ocw2(&mut self, value: u8) {
        let ir = value & 7;
        let nonspecific = |c: &mut Chip, rotate: bool| {
            if let Some(r) = c.rank(c.isr) {
                let top = c.ir_of_rank(r);
                c.isr &= !(1 << top);
                if rotate {
                    c.highest = (top + 1) & 7;
                }
            }
        };
        match value >> 5 {
            0b001 => nonspecific(self, false),
            0b101 => nonspecific(self, true),
            0b011 => self.isr &= !(1 << ir),
            0b111 => {
                self.isr &= !(1 << ir);
                self.highest = (ir + 1) & 7;
            }
            0b110 => self.highest = (ir + 1) & 7,
            0b100 => self.rotate_on_auto_eoi = true,
            0b000 => self.rotate_on_auto_eoi = false,
            _ => {} // 0b010: no operation
        }
    }

    fn ocw3(&mut self, value: u8) {
        if value & OCW3_POLL != 0 {
            self.poll = true;
        }
        match value & 0b11 {
            0b10 => self.read_isr = false,
            0b11 => self.read_isr = true,
            _ => {}
        }
        if value & OCW3_ESMM != 0 {
            self.special_mask = value & OCW3_SMM != 0;
        }
    }

    fn write_command(&mut self, value: u8) {
        if value & ICW1_SELECT != 0 {
            self.icw1(value);
        } else if value & OCW3_SELECT != 0 {
            self.ocw3(value);
        } else {
            self.ocw2(value);
        }
    }
}

/// What the controllers ignored, for the VM's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PicCounters {
    /// Accesses to ports the pair does not decode, or with an impossible width.
    pub bad_accesses: u64,
    /// `set_irq` calls for lines that do not exist or for the cascade input.
    pub bad_lines: u64,
    /// INTA cycles that found nothing to deliver (spurious IRQ 7 / 15).
    pub spurious: u64,
}

/// The master/slave 8259A pair with its ELCR.
#[derive(Clone, Debug)]
pub struct Pic8259 {
    /// Master, slave.
    chips: [Chip; 2],
    counters: PicCounters,
}

impl Default for Pic8259 {
    fn default() -> Self {
        Self::new()
    }
}

fn bump(c: &mut u64) {
    *c = c.saturating_add(1);
}

impl Pic8259 {
    /// The pair as a PC BIOS leaves it: vectors 0x08-0x0F and 0x70-0x77,
    /// cascade on IR2, normal EOI, every input masked, all inputs edge.
    pub const fn new() -> Self {
        Pic8259 {
            chips: [
                Chip::initialised(0x08, 1 << CASCADE_IR, ELCR_WRITABLE[0]),
                Chip::initialised(0x70, CASCADE_IR, ELCR_WRITABLE[1]),
            ],
            counters: PicCounters {
                bad_accesses: 0,
                bad_lines: 0,
                spurious: 0,
            },
        }
    }

    /// A guest read of `size` bytes at `port` (absolute port number). Wider
    /// accesses are successive byte reads; ports the pair does not decode
    /// read 0xFF.
    pub fn read(&mut self, port: u16, size: u8) -> u32 {
        if !valid_size(size) {
            bump(&mut self.counters.bad_accesses);
            return all_ones(size);
        }
        read_bytes(port, size, |p| self.read_byte(p))
    }

    /// A guest write of `size` bytes at `port`.
    pub fn write(&mut self, port: u16, size: u8, value: u32) {
        if !valid_size(size) {
            bump(&mut self.counters.bad_accesses);
            return;
        }
        write_bytes(port, size, value, |p, b| self.write_byte(p, b));
    }

    /// Sets the request level of ISA IRQ `line` (0..=15, except 2: that input
    /// is the slave's output). Other lines are counted and ignored.
    pub fn set_irq(&mut self, line: u32, level: bool) {
        if let Some((chip, ir)) = self.input_of(line) {
            self.chips[chip].set_input(ir, level);
            self.update_cascade();
        }
    }

    /// The chip and input of ISA IRQ `line`; other lines (2 is the slave's
    /// output) are counted and refused.
    fn input_of(&mut self, line: u32) -> Option<(usize, u8)> {
        match line {
            0 | 1 | 3..=7 => Some((0, line as u8)),
            8..=15 => Some((1, line as u8 - 8)),
            _ => {
                bump(&mut self.counters.bad_lines);
                None
            }
        }
    }

    /// Whether the master's INT output is asserted.
    pub fn int_output(&self) -> bool {
        self.chips[0].request(true).is_some()
    }

    /// A pulse on IRQ `line` that the chip latches although the line is low
    /// again at once: a rising edge whose high phase outlasts every INTA (the
    /// 8254's rate-generator output, low for one input clock per period).
    pub fn pulse_irq(&mut self, line: u32) {
        let Some((chip, ir)) = self.input_of(line) else {
            return;
        };
        let c = &mut self.chips[chip];
        let bit = 1u8 << ir;
        if c.level_mask() & bit == 0 && c.lines & bit == 0 {
            c.irr |= bit;
        }
        self.update_cascade();
    }

    /// The master's INT output: the vector an INTA cycle would return now,
    /// or None when INT is low.
    pub fn pending_vector(&self) -> Option<u8> {
        self.chips[0].request(true)?;
        let mut probe = self.clone();
        Some(probe.acknowledge())
    }

    /// The INTA cycle: moves the highest-priority request into service and
    /// returns its vector; the spurious IR7 vector of the chip that had
    /// nothing (IRQ 7 or IRQ 15) when no request is pending.
    pub fn acknowledge(&mut self) -> u8 {
        let [master, slave] = &mut self.chips;
        let vector = match master.request(true) {
            None => {
                bump(&mut self.counters.spurious);
                master.vector_base | 7
            }
            Some(ir) => {
                master.ack(ir);
                let cascaded = ir == CASCADE_IR && !master.single && master.icw3 & (1 << ir) != 0;
                if !cascaded {
                    master.vector_base | ir
                } else if let Some(sir) = slave.request(false) {
                    slave.ack(sir);
                    slave.vector_base | sir
                } else {
                    bump(&mut self.counters.spurious);
                    slave.vector_base | 7
                }
            }
        };
        self.update_cascade();
        vector
    }

    /// The Interrupt Mask Registers (master, slave).
    pub fn masks(&self) -> (u8, u8) {
        (self.chips[0].imr, self.chips[1].imr)
    }

    /// The ELCR as a 16-bit map (bit n set: IRQ n level-triggered).
    pub fn elcr(&self) -> u16 {
        u16::from_le_bytes([self.chips[0].elcr, self.chips[1].elcr])
    }

    /// What was ignored so far.
    pub fn counters(&self) -> PicCounters {
        self.counters
    }

    /// Drives master IR2 from the slave's INT output. That input is a true
    /// level, so the 8259A's request logic (edge latch AND input level)
    /// applies as built: when the slave's request goes away before INTA, so
    /// does master IR2's.
    fn update_cascade(&mut self) {
        let slave_int = self.chips[1].request(false).is_some();
        let master = &mut self.chips[0];
        master.set_input(CASCADE_IR, slave_int);
        if !slave_int {
            master.irr &= !(1 << CASCADE_IR);
        }
    }

    fn read_byte(&mut self, port: u16) -> u8 {
        let v = match port {
            PIC_MASTER_COMMAND => self.read_command(0),
            PIC_SLAVE_COMMAND => self.read_command(1),
            PIC_MASTER_DATA => self.chips[0].imr,
            PIC_SLAVE_DATA => self.chips[1].imr,
            ELCR_MASTER => self.chips[0].elcr,
            ELCR_SLAVE => self.chips[1].elcr,
            _ => {
                bump(&mut self.counters.bad_accesses);
                0xFF
            }
        };
        self.update_cascade();
        v
    }

    fn read_command(&mut self, chip: usize) -> u8 {
        let c = &mut self.chips[chip];
        if c.poll {
            // A poll read is an INTA for this chip alone.
            c.poll = false;
            return match c.request(chip == 0) {
                Some(ir) => {
                    c.ack(ir);
                    POLL_PENDING | ir
                }
                None => 0,
            };
        }
        if c.read_isr {
            c.isr
        } else {
            c.irr
        }
    }

    fn write_byte(&mut self, port: u16, value: u8) {
        match port {
            PIC_MASTER_COMMAND => self.chips[0].write_command(value),
            PIC_SLAVE_COMMAND => self.chips[1].write_command(value),
            PIC_MASTER_DATA => self.chips[0].write_data(value),
            PIC_SLAVE_DATA => self.chips[1].write_data(value),
            ELCR_MASTER | ELCR_SLAVE => {
                let c = &mut self.chips[usize::from(port - ELCR_MASTER)];
                c.elcr = value & c.elcr_writable;
                // IRR of a level input follows its request from now on.
                let level = c.level_mask();
                c.irr = (c.irr & !level) | (c.lines & level);
            }
            _ => bump(&mut self.counters.bad_accesses),
        }
        self.update_cascade();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outb(p: &mut Pic8259, port: u16, v: u8) {
        p.write(port, 1, u32::from(v));
    }

    fn inb(p: &mut Pic8259, port: u16) -> u8 {
        p.read(port, 1) as u8
    }

    /// Linux's init_8259A(0) sequence: vectors 0x30.. (ISA_IRQ_VECTOR(0)),
    /// then IMR restored to `master`/`slave`.
    fn linux_init(p: &mut Pic8259, master: u8, slave: u8) {
        outb(p, 0x21, 0xFF);
        outb(p, 0x20, 0x11);
        outb(p, 0x21, 0x30);
        outb(p, 0x21, 0x04);
        outb(p, 0x21, 0x01);
        outb(p, 0xA0, 0x11);
        outb(p, 0xA1, 0x38);
        outb(p, 0xA1, 0x02);
        outb(p, 0xA1, 0x01);
        outb(p, 0x21, master);
        outb(p, 0xA1, slave);
    }

    fn pulse(p: &mut Pic8259, line: u32) {
        p.pulse_irq(line);
    }

    #[test]
    fn an_edge_request_withdrawn_before_inta_is_gone() {
        let mut p = Pic8259::new();
        linux_init(&mut p, 0xFA, 0xFE); // IRQ 0, 2, 8 unmasked
                                        // The RTC raises IRQ 8, then its register C is read: the line falls.
        p.set_irq(8, true);
        assert_eq!(p.pending_vector(), Some(0x38));
        p.set_irq(8, false);
        assert_eq!(p.pending_vector(), None, "withdrawn, cascade included");
        assert_eq!(inb(&mut p, 0xA0) & 1, 0, "IRR bit cleared");
        // Withdrawn after INT reached the CPU: INTA finds the spurious IR7.
        p.set_irq(8, true);
        assert!(p.int_output());
        p.set_irq(8, false);
        assert!(!p.int_output());
        assert_eq!(p.acknowledge(), 0x37, "master spurious IR7");
        // A pulse (the PIT) stays latched; a held level stays requested.
        pulse(&mut p, 0);
        assert_eq!(p.acknowledge(), 0x30);
        p.set_irq(8, true);
        outb(&mut p, 0x20, 0x20);
        assert_eq!(p.acknowledge(), 0x38);
    }

    #[test]
    fn reset_state_is_quiet_and_masked() {
        let mut p = Pic8259::new();
        assert_eq!(p.masks(), (0xFF, 0xFF));
        pulse(&mut p, 0);
        assert_eq!(p.pending_vector(), None);
        assert_eq!(inb(&mut p, 0x20), 0x01, "IRR latched the edge");
        outb(&mut p, 0x21, 0xFE);
        assert_eq!(p.pending_vector(), Some(0x08));
        assert_eq!(p.counters(), PicCounters::default());
    }

    #[test]
    fn linux_probe_reads_back_the_mask() {
        let mut p = Pic8259::new();
        outb(&mut p, 0xA1, 0xFF);
        outb(&mut p, 0x21, 0xFB);
        assert_eq!(inb(&mut p, 0x21), 0xFB);
        linux_init(&mut p, 0xFF, 0xFF);
        assert_eq!(p.masks(), (0xFF, 0xFF));
        // Everything masked (the I/O APIC does the work): nothing comes out.
        for line in 0..16 {
            pulse(&mut p, line);
        }
        assert_eq!(p.pending_vector(), None);
    }

    #[test]
    fn init_sequence_sets_vectors_and_cascade_delivers_through_ir2() {
        let mut p = Pic8259::new();
        linux_init(&mut p, 0xFA, 0xFE); // IRQ 0, 2 (cascade), 8 unmasked
        pulse(&mut p, 0);
        pulse(&mut p, 8);
        // IRQ 0 outranks the cascade.
        assert_eq!(p.acknowledge(), 0x30);
        assert_eq!(p.pending_vector(), None, "IRQ 8 waits: IR0 in service");
        outb(&mut p, 0x20, 0x20); // non-specific EOI
        assert_eq!(p.acknowledge(), 0x38);
        // Both chips have the cascade/IR0 in service until EOIed.
        outb(&mut p, 0x20, 0x0B);
        outb(&mut p, 0xA0, 0x0B);
        assert_eq!(inb(&mut p, 0x20), 0x04);
        assert_eq!(inb(&mut p, 0xA0), 0x01);
        outb(&mut p, 0xA0, 0x60); // specific EOI IR0 on the slave
        outb(&mut p, 0x20, 0x62); // specific EOI IR2 on the master
        assert_eq!(inb(&mut p, 0x20), 0);
        assert_eq!(inb(&mut p, 0xA0), 0);
        assert_eq!(p.pending_vector(), None);
    }

    #[test]
    fn priority_nesting_and_rotation() {
        let mut p = Pic8259::new();
        linux_init(&mut p, 0x00, 0xFF);
        pulse(&mut p, 5);
        assert_eq!(p.acknowledge(), 0x35);
        pulse(&mut p, 6);
        assert_eq!(p.pending_vector(), None, "lower priority waits");
        pulse(&mut p, 3);
        assert_eq!(p.acknowledge(), 0x33, "higher priority nests");
        outb(&mut p, 0x20, 0x20); // EOI clears IR3 (highest in service)
        outb(&mut p, 0x20, 0x0B);
        assert_eq!(inb(&mut p, 0x20), 1 << 5);
        // Rotate on non-specific EOI: IR5 becomes the lowest priority.
        outb(&mut p, 0x20, 0xA0);
        pulse(&mut p, 1);
        // Priority order now 6,7,0,1,...: IR6 beats IR1.
        assert_eq!(p.acknowledge(), 0x36);
        // Set priority: IR7 lowest -> IR0 highest again.
        outb(&mut p, 0x20, 0xC7);
        outb(&mut p, 0x20, 0x66); // specific EOI IR6
        assert_eq!(p.acknowledge(), 0x31);
    }

    #[test]
    fn spurious_interrupts() {
        let mut p = Pic8259::new();
        linux_init(&mut p, 0x00, 0x00);
        assert_eq!(p.acknowledge(), 0x37);
        outb(&mut p, 0x20, 0x0B);
        assert_eq!(inb(&mut p, 0x20), 0, "spurious IRQ 7 sets no ISR bit");
        // A level slave request withdrawn before INTA takes master IR2 with it.
        outb(&mut p, 0x4D1, 0x02); // IRQ 9 level
        p.set_irq(9, true);
        assert_eq!(p.pending_vector(), Some(0x39));
        p.set_irq(9, false);
        assert_eq!(p.pending_vector(), None);
        outb(&mut p, 0x20, 0x0A);
        assert_eq!(inb(&mut p, 0x20), 0, "master IRR2 follows the slave");
        assert_eq!(p.counters().spurious, 1);
    }

    #[test]
    fn auto_eoi_and_rotation_in_auto_eoi() {
        let mut p = Pic8259::new();
        outb(&mut p, 0x20, 0x11);
        outb(&mut p, 0x21, 0x20);
        outb(&mut p, 0x21, 0x04);
        outb(&mut p, 0x21, 0x03); // 8086, auto-EOI
        assert_eq!(p.masks().0, 0, "ICW1 clears IMR");
        outb(&mut p, 0x20, 0x80); // rotate in auto-EOI
        pulse(&mut p, 0);
        pulse(&mut p, 4);
        assert_eq!(p.acknowledge(), 0x20);
        outb(&mut p, 0x20, 0x0B);
        assert_eq!(inb(&mut p, 0x20), 0, "auto-EOI leaves ISR clear");
        pulse(&mut p, 0);
        // IR0 is now lowest: IR4 first.
        assert_eq!(p.acknowledge(), 0x24);
        assert_eq!(p.acknowledge(), 0x20);
    }

    #[test]
    fn level_inputs_follow_the_line_and_reassert_after_eoi() {
        let mut p = Pic8259::new();
        linux_init(&mut p, 0xFB, 0xFD); // IRQ 9 unmasked
        outb(&mut p, 0x4D1, 0xFF);
        assert_eq!(inb(&mut p, 0x4D1), 0xDE, "IRQ 8 and 13 are edge-only");
        outb(&mut p, 0x4D0, 0xFF);
        assert_eq!(inb(&mut p, 0x4D0), 0xF8, "IRQ 0-2 are edge-only");
        assert_eq!(p.elcr(), 0xDEF8);
        p.set_irq(9, true);
        assert_eq!(p.acknowledge(), 0x39);
        outb(&mut p, 0xA0, 0x20);
        outb(&mut p, 0x20, 0x20);
        assert_eq!(p.pending_vector(), Some(0x39), "still asserted");
        p.set_irq(9, false);
        assert_eq!(p.pending_vector(), None);
    }

    #[test]
    fn poll_mode_and_special_mask_mode() {
        let mut p = Pic8259::new();
        linux_init(&mut p, 0x00, 0xFF);
        pulse(&mut p, 6);
        outb(&mut p, 0x20, 0x0C); // poll
        assert_eq!(inb(&mut p, 0x20), 0x86);
        outb(&mut p, 0x20, 0x0C);
        assert_eq!(inb(&mut p, 0x20), 0x00, "nothing left");
        // IR6 is in service; special mask mode with IR6 masked lets IR7 through.
        pulse(&mut p, 7);
        assert_eq!(p.pending_vector(), None);
        outb(&mut p, 0x21, 0x40);
        outb(&mut p, 0x20, 0x68); // set special mask
        assert_eq!(p.pending_vector(), Some(0x37));
        outb(&mut p, 0x20, 0x48); // reset special mask
        assert_eq!(p.pending_vector(), None);
    }

    #[test]
    fn reinitialisation_needs_a_fresh_edge() {
        let mut p = Pic8259::new();
        p.set_irq(1, true);
        linux_init(&mut p, 0x00, 0xFF);
        assert_eq!(p.pending_vector(), None);
        p.set_irq(1, false);
        p.set_irq(1, true);
        assert_eq!(p.pending_vector(), Some(0x31));
    }

    #[test]
    fn single_mode_and_icw3_without_slave_use_master_vectors() {
        let mut p = Pic8259::new();
        outb(&mut p, 0x20, 0x13); // ICW1: single, ICW4 needed
        outb(&mut p, 0x21, 0x40); // ICW2, no ICW3
        outb(&mut p, 0x21, 0x01); // ICW4
        outb(&mut p, 0x21, 0x00); // OCW1
        outb(&mut p, 0xA1, 0x00);
        pulse(&mut p, 10);
        assert_eq!(p.acknowledge(), 0x42, "IR2 is an ordinary input");
    }

    #[test]
    fn word_accesses_split_into_byte_cycles() {
        let mut p = Pic8259::new();
        p.write(0x4D0, 2, 0x0220); // IRQ 5 and IRQ 9 level
        assert_eq!(p.read(0x4D0, 2), 0x0220);
        assert_eq!(p.elcr(), 0x0220);
        // 0x21 then 0x22 (not decoded): high byte floats.
        assert_eq!(p.read(0x21, 2), 0xFFFF);
        assert_eq!(p.counters().bad_accesses, 1);
    }

    #[test]
    fn hostile_ports_sizes_lines_and_commands_never_panic() {
        let mut p = Pic8259::new();
        for port in [0u16, 0x1F, 0x22, 0x9F, 0xA2, 0x4CF, 0x4D2, 0xFFFF] {
            assert_eq!(p.read(port, 1), 0xFF);
            p.write(port, 1, 0xFF);
        }
        for size in [0u8, 3, 8, 255] {
            assert_eq!(p.read(0x20, size), 0xFFFF_FFFF);
            p.write(0x21, size, 0);
        }
        assert_eq!(p.masks(), (0xFF, 0xFF));
        for line in [2u32, 16, 255, u32::MAX] {
            p.set_irq(line, true);
        }
        assert_eq!(p.counters().bad_lines, 4);
        // Every command byte on both chips, then every data byte, interleaved
        // with requests and INTAs.
        for v in 0..=255u8 {
            for port in [0x20u16, 0xA0, 0x21, 0xA1, 0x4D0, 0x4D1] {
                p.write(port, 1, u32::from(v));
                pulse(&mut p, u32::from(v % 16));
                let _ = p.pending_vector();
                let _ = p.acknowledge();
                let _ = p.read(port, 4);
            }
        }
    }
}
