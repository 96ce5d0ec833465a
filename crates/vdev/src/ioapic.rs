//! An 82093AA-style I/O APIC as a register state machine: the indirect
//! IOREGSEL/IOWIN window, the ID, version and arbitration registers, 24
//! redirection entries, and the EOI register of version-0x20 parts.
//!
//! Interrupt output is returned, never pushed: [`Ioapic::set_irq`],
//! [`Ioapic::eoi`] and [`Ioapic::write`] hand back the [`Delivery`] messages
//! the I/O APIC would put on the APIC bus, and the caller routes them to the
//! local APICs (`VLapic::raise(vector, level)` for fixed deliveries).
//!
//! What is modelled, and how:
//! - `set_irq(line, level)` carries the *logical* request (asserted or not),
//!   not a voltage. The polarity bit is stored and read back but does not
//!   invert anything: the virtual wires have no electrical sense, the guest's
//!   MADT describes the polarity it should program, and a mismatch must not
//!   turn into an interrupt storm (KVM's IOAPIC makes the same choice).
//! - Edge-triggered pins deliver on a rising request. An edge on a masked pin
//!   is lost, as the data sheet says (counted in
//!   [`IoapicCounters::masked_edges`]).
//! - Level-triggered pins deliver while asserted, unmasked and Remote IRR is
//!   clear, and set Remote IRR; an EOI for the entry's vector (the local
//!   APIC's broadcast, [`Ioapic::eoi`], or the EOI register at 0x40) clears it
//!   and delivers again if the request is still asserted. Unmasking an
//!   asserted level pin delivers at once. Switching an entry to edge clears
//!   Remote IRR (old Linux relies on this to recover a stuck pin).
//! - Delivery is instantaneous, so Delivery Status always reads 0.
//! - Supported delivery modes: Fixed, Lowest Priority, NMI and ExtINT, with
//!   physical or logical destinations, reported as they are programmed: the
//!   caller resolves logical destinations (LDR/DFR) and picks the target of a
//!   lowest-priority message (any matching CPU is a valid choice). SMI, INIT
//!   and the two reserved modes are stored but never delivered, as are Fixed
//!   and Lowest Priority entries with a vector below 16 (counted in
//!   [`IoapicCounters::undeliverable`]). A destination that names no CPU is
//!   the caller's to drop.
//! - The destination field keeps 8 bits (xAPIC style, like the ICH I/O APICs
//!   Linux expects), not the 82093AA's 4.
//! - Register accesses are dword-wide at 0x00 (IOREGSEL, which also accepts
//!   1 and 2 bytes: only bits 7:0 exist), 0x10 (IOWIN) and 0x40 (EOI, write
//!   only). Anything else reads all ones and writes nothing, counted.
//!   IOREGSEL keeps any 8-bit value; IOWIN at an index that names no register
//!   reads all ones and ignores writes.

use crate::access::{all_ones, valid_size};

/// Guest-physical base of the I/O APIC (the PC default the MADT reports).
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
/// Bytes of MMIO space the I/O APIC decodes from [`IOAPIC_BASE`].
pub const IOAPIC_MMIO_SIZE: u64 = 0x1000;
/// Interrupt input pins (GSIs 0..=23).
pub const IOAPIC_PINS: usize = 24;

// MMIO offsets.
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const IOEOI: u64 = 0x40;

// Register indices.
const REG_ID: u8 = 0x00;
const REG_VER: u8 = 0x01;
const REG_ARB: u8 = 0x02;
const REG_REDTBL: u8 = 0x10;
const REG_REDTBL_LAST: u8 = REG_REDTBL + 2 * IOAPIC_PINS as u8 - 1;

/// Version 0x20 (has the EOI register), maximum redirection entry 23.
const VERSION: u32 = 0x20 | ((IOAPIC_PINS as u32 - 1) << 16);
/// ID and arbitration ID live in bits 27:24.
const ID_SHIFT: u32 = 24;
const ID_MASK: u32 = 0xF;

// Redirection entry bits.
const RTE_VECTOR: u64 = 0xFF;
const RTE_DELIVERY_MODE_SHIFT: u32 = 8;
const RTE_DEST_LOGICAL: u64 = 1 << 11;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_MASKED: u64 = 1 << 16;
const RTE_DEST_SHIFT: u32 = 56;
/// Guest-writable bits: vector, delivery mode, destination mode, polarity,
/// trigger mode, mask, destination. Delivery status (12) and Remote IRR (14)
/// are read-only; bits 55:17 are reserved and read 0.
const RTE_WRITABLE: u64 = 0xFF00_0000_0001_AFFF;

/// How a message is delivered (redirection entry bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// To every CPU the destination names.
    Fixed,
    /// To the lowest-priority CPU among those named (any one of them will do).
    LowestPriority,
    /// As an NMI; the vector is meaningless.
    Nmi,
    /// As an external interrupt: the target asks the 8259A for the vector.
    ExtInt,
}

/// How the destination field names CPUs (redirection entry bit 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationMode {
    /// `dest` is an APIC ID (0xFF: broadcast).
    Physical,
    /// `dest` is matched against each local APIC's LDR/DFR.
    Logical,
}

/// One interrupt message for the local APICs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The input pin (GSI) that caused it.
    pub pin: u8,
    /// Destination field (bits 63:56).
    pub dest: u8,
    pub dest_mode: DestinationMode,
    pub mode: DeliveryMode,
    pub vector: u8,
    /// Level-triggered: the local APIC sets TMR and its EOI must come back
    /// through [`Ioapic::eoi`].
    pub level: bool,
}

/// The messages one operation produced: at most one per pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deliveries {
    items: [Option<Delivery>; IOAPIC_PINS],
    len: usize,
}

impl Default for Deliveries {
    fn default() -> Self {
        Self::new()
    }
}

impl Deliveries {
    /// No messages.
    pub const fn new() -> Self {
        Deliveries {
            items: [None; IOAPIC_PINS],
            len: 0,
        }
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is to be delivered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The messages, in pin order.
    pub fn iter(&self) -> impl Iterator<Item = &Delivery> {
        self.items.iter().flatten()
    }

    fn push(&mut self, d: Option<Delivery>) {
        if let (Some(d), Some(slot)) = (d, self.items.get_mut(self.len)) {
            *slot = Some(d);
            self.len += 1;
        }
    }
}

impl IntoIterator for Deliveries {
    type Item = Delivery;
    type IntoIter = core::iter::Flatten<core::array::IntoIter<Option<Delivery>, IOAPIC_PINS>>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter().flatten()
    }
}

/// What the I/O APIC ignored or could not deliver, for the VM's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoapicCounters {
    /// MMIO accesses at an offset or width that names no register.
    pub bad_accesses: u64,
    /// IOWIN accesses while IOREGSEL names no register.
    pub bad_registers: u64,
    /// Writes to read-only registers (version, arbitration).
    pub ignored_writes: u64,
    /// `set_irq` calls for a pin that does not exist.
    pub bad_lines: u64,
    /// Interrupts that fired through an entry with an unsupported delivery
    /// mode or an illegal vector, and were dropped.
    pub undeliverable: u64,
    /// Edges on masked edge-triggered pins, lost.
    pub masked_edges: u64,
}

/// One virtual I/O APIC.
#[derive(Clone, Debug)]
pub struct Ioapic {
    /// 4-bit I/O APIC ID; the arbitration ID follows it.
    id: u8,
    ioregsel: u8,
    rte: [u64; IOAPIC_PINS],
    /// Bit n: pin n's request is asserted.
    lines: u32,
    counters: IoapicCounters,
}

fn bump(c: &mut u64) {
    *c = c.saturating_add(1);
}

impl Ioapic {
    /// An I/O APIC in its reset state with ID `id` (bits 3:0 kept): every
    /// redirection entry masked, edge-triggered, vector 0.
    pub const fn new(id: u8) -> Self {
        Ioapic {
            id: id & ID_MASK as u8,
            ioregsel: 0,
            rte: [RTE_MASKED; IOAPIC_PINS],
            lines: 0,
            counters: IoapicCounters {
                bad_accesses: 0,
                bad_registers: 0,
                ignored_writes: 0,
                bad_lines: 0,
                undeliverable: 0,
                masked_edges: 0,
            },
        }
    }

    /// A guest read of `size` bytes at `offset` from [`IOAPIC_BASE`].
    pub fn read(&mut self, offset: u64, size: u8) -> u32 {
        match (offset, size) {
            (IOREGSEL, s) if valid_size(s) => u32::from(self.ioregsel),
            (IOWIN, 4) => self.read_register(),
            // Write-only: reads return 0 like the ICH's.
            (IOEOI, 4) => 0,
            _ => {
                bump(&mut self.counters.bad_accesses);
                all_ones(size)
            }
        }
    }

    /// A guest write of `size` bytes at `offset`; returns the interrupts it
    /// released (an unmasked asserted level pin, an EOI).
    pub fn write(&mut self, offset: u64, size: u8, value: u32) -> Deliveries {
        let mut out = Deliveries::new();
        match (offset, size) {
            (IOREGSEL, s) if valid_size(s) => self.ioregsel = value as u8,
            (IOWIN, 4) => out.push(self.write_register(value)),
            (IOEOI, 4) => out = self.eoi(value as u8),
            _ => bump(&mut self.counters.bad_accesses),
        }
        out
    }

    /// Sets the request level of input `line` (a GSI, 0..=23); returns the
    /// message it causes, if any. Other lines are counted and ignored.
    pub fn set_irq(&mut self, line: u32, level: bool) -> Option<Delivery> {
        let Some(pin) = usize::try_from(line).ok().filter(|&p| p < IOAPIC_PINS) else {
            bump(&mut self.counters.bad_lines);
            return None;
        };
        let bit = 1u32 << pin;
        let was = self.lines & bit != 0;
        if level {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
        let entry = self.rte[pin];
        if entry & RTE_LEVEL != 0 {
            return if level { self.service_level(pin) } else { None };
        }
        if !level || was {
            return None;
        }
        if entry & RTE_MASKED != 0 {
            bump(&mut self.counters.masked_edges);
            return None;
        }
        self.message(pin)
    }

    /// A local APIC retired `vector` for a level-triggered interrupt: clears
    /// Remote IRR of every level entry with that vector and delivers again
    /// for those whose request is still asserted.
    pub fn eoi(&mut self, vector: u8) -> Deliveries {
        let mut out = Deliveries::new();
        for pin in 0..IOAPIC_PINS {
            let e = self.rte[pin];
            if e & RTE_LEVEL != 0 && e & RTE_REMOTE_IRR != 0 && (e & RTE_VECTOR) as u8 == vector {
                self.rte[pin] &= !RTE_REMOTE_IRR;
                out.push(self.service_level(pin));
            }
        }
        out
    }

    /// The full 64-bit redirection entry of `pin`.
    pub fn redirection_entry(&self, pin: usize) -> Option<u64> {
        self.rte.get(pin).copied()
    }

    /// Whether `pin`'s request is asserted.
    pub fn line_level(&self, pin: usize) -> bool {
        pin < IOAPIC_PINS && self.lines & (1 << pin) != 0
    }

    /// The I/O APIC ID (4 bits).
    pub fn id(&self) -> u8 {
        self.id
    }

    /// What was ignored or dropped so far.
    pub fn counters(&self) -> IoapicCounters {
        self.counters
    }

    /// The redirection entry `ioregsel` names and whether it is the high dword.
    fn selected_entry(&self) -> Option<(usize, bool)> {
        match self.ioregsel {
            r @ REG_REDTBL..=REG_REDTBL_LAST => {
                let i = r - REG_REDTBL;
                Some((usize::from(i / 2), i % 2 == 1))
            }
            _ => None,
        }
    }

    fn read_register(&mut self) -> u32 {
        match self.ioregsel {
            REG_ID | REG_ARB => u32::from(self.id) << ID_SHIFT,
            REG_VER => VERSION,
            _ => match self.selected_entry() {
                Some((pin, high)) => {
                    let e = self.rte[pin];
                    if high {
                        (e >> 32) as u32
                    } else {
                        e as u32
                    }
                }
                None => {
                    bump(&mut self.counters.bad_registers);
                    0xFFFF_FFFF
                }
            },
        }
    }

    fn write_register(&mut self, value: u32) -> Option<Delivery> {
        match self.ioregsel {
            // Reserved bits are ignored; the arbitration ID follows the ID.
            REG_ID => self.id = ((value >> ID_SHIFT) & ID_MASK) as u8,
            REG_VER | REG_ARB => bump(&mut self.counters.ignored_writes),
            _ => match self.selected_entry() {
                Some((pin, high)) => return self.write_entry(pin, high, value),
                None => bump(&mut self.counters.bad_registers),
            },
        }
        None
    }

    fn write_entry(&mut self, pin: usize, high: bool, value: u32) -> Option<Delivery> {
        let old = self.rte[pin];
        let (keep, new) = if high {
            (0xFFFF_FFFFu64, u64::from(value) << 32)
        } else {
            (0xFFFF_FFFF_0000_0000, u64::from(value))
        };
        let mut e = (old & keep) | (new & !keep & RTE_WRITABLE) | (old & !keep & !RTE_WRITABLE);
        if e & RTE_LEVEL == 0 {
            e &= !RTE_REMOTE_IRR;
        }
        self.rte[pin] = e;
        if e & RTE_LEVEL != 0 {
            self.service_level(pin)
        } else {
            None
        }
    }

    /// Delivers a level-triggered pin if it is asserted, unmasked and not
    /// already awaiting its EOI.
    fn service_level(&mut self, pin: usize) -> Option<Delivery> {
        let e = self.rte[pin];
        if self.lines & (1 << pin) == 0 || e & (RTE_MASKED | RTE_REMOTE_IRR) != 0 {
            return None;
        }
        let d = self.message(pin)?;
        self.rte[pin] |= RTE_REMOTE_IRR;
        Some(d)
    }

    /// The message `pin`'s entry describes, or None (counted) if it cannot
    /// be delivered.
    fn message(&mut self, pin: usize) -> Option<Delivery> {
        let e = self.rte[pin];
        let vector = (e & RTE_VECTOR) as u8;
        let mode = match (e >> RTE_DELIVERY_MODE_SHIFT) & 0b111 {
            0b000 => Some(DeliveryMode::Fixed),
            0b001 => Some(DeliveryMode::LowestPriority),
            0b100 => Some(DeliveryMode::Nmi),
            0b111 => Some(DeliveryMode::ExtInt),
            _ => None,
        };
        let mode = mode.filter(|m| {
            !matches!(m, DeliveryMode::Fixed | DeliveryMode::LowestPriority) || vector >= 16
        });
        let Some(mode) = mode else {
            bump(&mut self.counters.undeliverable);
            return None;
        };
        Some(Delivery {
            pin: pin as u8,
            dest: (e >> RTE_DEST_SHIFT) as u8,
            dest_mode: if e & RTE_DEST_LOGICAL != 0 {
                DestinationMode::Logical
            } else {
                DestinationMode::Physical
            },
            mode,
            vector,
            level: e & RTE_LEVEL != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn select_read(io: &mut Ioapic, reg: u32) -> u32 {
        io.write(IOREGSEL, 4, reg);
        io.read(IOWIN, 4)
    }

    fn select_write(io: &mut Ioapic, reg: u32, value: u32) -> Deliveries {
        io.write(IOREGSEL, 4, reg);
        io.write(IOWIN, 4, value)
    }

    /// Programs pin `pin`: low dword `lo`, destination `dest`.
    fn program(io: &mut Ioapic, pin: u32, lo: u32, dest: u8) -> Deliveries {
        select_write(io, 0x11 + 2 * pin, u32::from(dest) << 24);
        select_write(io, 0x10 + 2 * pin, lo)
    }

    const LEVEL: u32 = 1 << 15;
    const MASK: u32 = 1 << 16;

    #[test]
    fn reset_state_and_identification_registers() {
        let mut io = Ioapic::new(0x12);
        assert_eq!(io.id(), 2);
        assert_eq!(select_read(&mut io, 0), 0x0200_0000);
        assert_eq!(select_read(&mut io, 1), 0x0017_0020);
        assert_eq!(select_read(&mut io, 2), 0x0200_0000);
        for pin in 0..24 {
            assert_eq!(select_read(&mut io, 0x10 + 2 * pin), 0x0001_0000);
            assert_eq!(select_read(&mut io, 0x11 + 2 * pin), 0);
        }
        assert_eq!(io.read(IOREGSEL, 4), 0x3F);
        assert_eq!(io.counters(), IoapicCounters::default());
    }

    #[test]
    fn id_is_writable_but_version_and_arbitration_are_not() {
        let mut io = Ioapic::new(0);
        select_write(&mut io, 0, 0xFFFF_FFFF);
        assert_eq!(select_read(&mut io, 0), 0x0F00_0000);
        assert_eq!(select_read(&mut io, 2), 0x0F00_0000);
        select_write(&mut io, 1, 0);
        select_write(&mut io, 2, 0);
        assert_eq!(select_read(&mut io, 1), 0x0017_0020);
        assert_eq!(select_read(&mut io, 2), 0x0F00_0000);
        assert_eq!(io.counters().ignored_writes, 2);
    }

    #[test]
    fn redirection_entry_read_only_and_reserved_bits() {
        let mut io = Ioapic::new(0);
        select_write(&mut io, 0x10, 0xFFFF_FFFF);
        select_write(&mut io, 0x11, 0xFFFF_FFFF);
        // Delivery status, Remote IRR (set only by a delivery) and 31:17 stay 0.
        assert_eq!(select_read(&mut io, 0x10), 0x0001_AFFF);
        assert_eq!(select_read(&mut io, 0x11), 0xFF00_0000);
        assert_eq!(io.redirection_entry(0), Some(0xFF00_0000_0001_AFFF));
        assert_eq!(io.redirection_entry(24), None);
    }

    #[test]
    fn edge_pin_delivers_on_rising_request_only() {
        let mut io = Ioapic::new(0);
        assert!(program(&mut io, 2, 0x30, 1).is_empty());
        let d = io.set_irq(2, true).expect("rising edge delivers");
        assert_eq!(
            d,
            Delivery {
                pin: 2,
                dest: 1,
                dest_mode: DestinationMode::Physical,
                mode: DeliveryMode::Fixed,
                vector: 0x30,
                level: false,
            }
        );
        assert_eq!(io.set_irq(2, true), None, "still high: no new edge");
        assert_eq!(io.set_irq(2, false), None);
        assert!(io.set_irq(2, true).is_some());
        // Edge entries ignore EOIs.
        assert!(io.eoi(0x30).is_empty());
    }

    #[test]
    fn masked_edges_are_lost() {
        let mut io = Ioapic::new(0);
        program(&mut io, 4, 0x31 | MASK, 0);
        assert_eq!(io.set_irq(4, true), None);
        io.set_irq(4, false);
        assert_eq!(io.counters().masked_edges, 1);
        // Unmasking does not replay the lost edge.
        assert!(program(&mut io, 4, 0x31, 0).is_empty());
        assert!(io.set_irq(4, true).is_some());
    }

    #[test]
    fn level_pin_uses_remote_irr_and_redelivers_after_eoi() {
        let mut io = Ioapic::new(0);
        program(&mut io, 9, 0x41 | LEVEL | (1 << 13), 0);
        let d = io.set_irq(9, true).expect("asserted level delivers");
        assert!(d.level);
        assert_eq!(select_read(&mut io, 0x10 + 18) & (1 << 14), 1 << 14);
        // Still asserted, Remote IRR set: nothing more.
        assert_eq!(io.set_irq(9, true), None);
        // EOI of another vector changes nothing.
        assert!(io.eoi(0x42).is_empty());
        // EOI with the line still asserted: delivered again.
        let again: Vec<_> = io.eoi(0x41).into_iter().collect();
        assert_eq!(again, [d]);
        // Deasserted, then EOI: Remote IRR clears, nothing delivered.
        io.set_irq(9, false);
        assert!(io.eoi(0x41).is_empty());
        assert_eq!(select_read(&mut io, 0x10 + 18) & (1 << 14), 0);
        // The EOI register at 0x40 works like the broadcast.
        assert!(io.set_irq(9, true).is_some());
        assert_eq!(io.write(IOEOI, 4, 0x41).len(), 1);
    }

    #[test]
    fn unmasking_an_asserted_level_pin_delivers() {
        let mut io = Ioapic::new(0);
        program(&mut io, 11, 0x50 | LEVEL | MASK, 3);
        assert_eq!(io.set_irq(11, true), None);
        let out = program(&mut io, 11, 0x50 | LEVEL, 3);
        assert_eq!(out.len(), 1);
        assert_eq!(out.iter().next().map(|d| d.dest), Some(3));
        // Masking keeps Remote IRR; switching to edge clears it.
        program(&mut io, 11, 0x50 | LEVEL | MASK, 3);
        assert_ne!(io.redirection_entry(11).unwrap_or(0) & RTE_REMOTE_IRR, 0);
        program(&mut io, 11, 0x50 | MASK, 3);
        assert_eq!(io.redirection_entry(11).unwrap_or(0) & RTE_REMOTE_IRR, 0);
    }

    #[test]
    fn eoi_serves_every_pin_sharing_the_vector() {
        let mut io = Ioapic::new(0);
        program(&mut io, 16, 0x60 | LEVEL, 0);
        program(&mut io, 17, 0x60 | LEVEL, 0);
        assert!(io.set_irq(16, true).is_some());
        assert!(io.set_irq(17, true).is_some());
        let pins: Vec<u8> = io.eoi(0x60).iter().map(|d| d.pin).collect();
        assert_eq!(pins, [16, 17]);
    }

    #[test]
    fn logical_lowest_priority_nmi_and_extint_are_reported() {
        let mut io = Ioapic::new(0);
        program(&mut io, 1, 0x70 | (1 << 8) | (1 << 11), 0x0F);
        let d = io.set_irq(1, true).expect("lowest priority delivers");
        assert_eq!(d.mode, DeliveryMode::LowestPriority);
        assert_eq!(d.dest_mode, DestinationMode::Logical);
        assert_eq!(d.dest, 0x0F);
        program(&mut io, 3, 4 << 8, 0); // NMI: vector 0 is fine
        assert_eq!(io.set_irq(3, true).map(|d| d.mode), Some(DeliveryMode::Nmi));
        program(&mut io, 5, 7 << 8, 0);
        assert_eq!(
            io.set_irq(5, true).map(|d| d.mode),
            Some(DeliveryMode::ExtInt)
        );
    }

    #[test]
    fn unsupported_modes_and_illegal_vectors_deliver_nothing() {
        let mut io = Ioapic::new(0);
        for (pin, lo) in [
            (0u32, 0x0F),
            (1, 0x20 | (2 << 8)),
            (2, 0x20 | (3 << 8)),
            (3, 0x20 | (5 << 8)),
            (4, 0x20 | (6 << 8)),
        ] {
            program(&mut io, pin, lo, 0);
            assert_eq!(io.set_irq(pin, true), None, "pin {pin} entry {lo:#x}");
            // The entry reads back as written.
            assert_eq!(select_read(&mut io, 0x10 + 2 * pin), lo);
        }
        assert_eq!(io.counters().undeliverable, 5);
        // A level pin with an illegal vector never sets Remote IRR.
        program(&mut io, 6, 0x05 | LEVEL, 0);
        assert_eq!(io.set_irq(6, true), None);
        assert_eq!(io.redirection_entry(6).unwrap_or(0) & RTE_REMOTE_IRR, 0);
    }

    #[test]
    fn hostile_offsets_sizes_selectors_and_lines_never_panic() {
        let mut io = Ioapic::new(0);
        for off in [
            1u64,
            3,
            4,
            8,
            0x0C,
            0x11,
            0x14,
            0x20,
            0x3C,
            0x44,
            0xFFF,
            0x1000,
            u64::MAX,
        ] {
            for size in [0u8, 1, 2, 3, 4, 8, 255] {
                let _ = io.read(off, size);
                assert!(io.write(off, size, u32::MAX).is_empty());
            }
        }
        for size in [0u8, 3, 8] {
            assert_eq!(io.read(IOREGSEL, size), 0xFFFF_FFFF);
            assert_eq!(io.read(IOWIN, size), 0xFFFF_FFFF);
        }
        assert_eq!(io.read(IOWIN, 2), 0xFFFF);
        assert!(io.counters().bad_accesses > 0);
        // Byte-wide IOREGSEL works; only its low byte exists.
        io.write(IOREGSEL, 1, 0x1234_5601);
        assert_eq!(io.read(IOREGSEL, 1), 0x01);
        for sel in [3u32, 0x0F, 0x40, 0x7F, 0x80, 0xFF] {
            assert_eq!(select_read(&mut io, sel), 0xFFFF_FFFF, "IOREGSEL {sel:#x}");
            assert!(select_write(&mut io, sel, 0).is_empty());
        }
        assert_eq!(io.counters().bad_registers, 12);
        for line in [24u32, 25, 255, u32::MAX] {
            assert_eq!(io.set_irq(line, true), None);
        }
        assert_eq!(io.counters().bad_lines, 4);
        assert!(!io.line_level(24));
        for v in 0..=255u8 {
            assert!(io.eoi(v).is_empty());
        }
        // Broadcast / nonexistent destinations are reported for the caller to resolve.
        program(&mut io, 7, 0x80, 0xFF);
        assert_eq!(io.set_irq(7, true).map(|d| d.dest), Some(0xFF));
    }
}
