//! A virtual local APIC (xAPIC register page) as a register state machine:
//! ID/version, TPR/PPR, EOI, SVR, ISR/IRR/TMR, the LVT, ESR, ICR and the timer
//! in one-shot and periodic modes.
//!
//! Time is whatever monotonic counter the caller passes as `now` (the host
//! TSC); the timer counts at `bus_hz`, converted with `tsc_hz`. Nothing here
//! panics on guest input: unknown offsets read 0 and ignore writes, as do
//! read-only registers.

/// Guest-physical base of the xAPIC page (the architectural default).
pub const XAPIC_BASE: u64 = 0xFEE0_0000;
/// Virtual APIC bus (timer input) frequency, reported in CPUID 0x4000_0010 EBX.
pub const BUS_HZ: u64 = 100_000_000;

const REG_ID: u32 = 0x20;
const REG_VERSION: u32 = 0x30;
const REG_TPR: u32 = 0x80;
const REG_APR: u32 = 0x90;
const REG_PPR: u32 = 0xA0;
const REG_EOI: u32 = 0xB0;
const REG_LDR: u32 = 0xD0;
const REG_DFR: u32 = 0xE0;
const REG_SVR: u32 = 0xF0;
const REG_ISR: u32 = 0x100;
const REG_TMR: u32 = 0x180;
const REG_IRR: u32 = 0x200;
const REG_ESR: u32 = 0x280;
const REG_LVT_CMCI: u32 = 0x2F0;
const REG_ICR_LO: u32 = 0x300;
const REG_ICR_HI: u32 = 0x310;
const REG_LVT_TIMER: u32 = 0x320;
const REG_LVT_ERROR: u32 = 0x370;
const REG_TIMER_INITIAL: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3E0;

const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
const SVR_ENABLED: u32 = 1 << 8;
/// Version 0x14 with 7 LVT entries (max LVT index 6), like a modern xAPIC.
const VERSION: u32 = 0x0006_0014;

/// What a register write asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LapicAction {
    None,
    /// An EOI retired `vector` (the IOAPIC needs this for level-triggered lines).
    Eoi {
        vector: u8,
    },
    /// The guest wrote the ICR: send an IPI (`icr` = high << 32 | low).
    Ipi {
        icr: u64,
    },
}

/// One vCPU's local APIC.
#[derive(Clone, Debug)]
pub struct VLapic {
    id: u32,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: [u32; 8],
    irr: [u32; 8],
    tmr: [u32; 8],
    /// CMCI, timer, thermal, perf, LINT0, LINT1, error (0x2F0, 0x320..0x370).
    lvt: [u32; 7],
    esr: u32,
    icr: u64,
    timer_initial: u32,
    timer_divide: u32,
    /// When the current period started and when it ends (in `now` units).
    timer_start: u64,
    timer_deadline: Option<u64>,
    tsc_hz: u64,
}

fn lvt_index(offset: u32) -> Option<usize> {
    match offset {
        REG_LVT_CMCI => Some(0),
        REG_LVT_TIMER..=REG_LVT_ERROR if offset % 0x10 == 0 => {
            Some(1 + ((offset - REG_LVT_TIMER) / 0x10) as usize)
        }
        _ => None,
    }
}

/// The divide configuration register value -> divisor (1..=128).
pub fn divisor(divide_reg: u32) -> u64 {
    let code = (divide_reg & 0b11) | ((divide_reg >> 1) & 0b100);
    if code == 0b111 {
        1
    } else {
        2u64 << code
    }
}

impl VLapic {
    /// A LAPIC in its reset state for APIC ID `id`; `tsc_hz` is the rate of `now`.
    pub fn new(id: u32, tsc_hz: u64) -> Self {
        VLapic {
            id,
            tpr: 0,
            ldr: 0,
            dfr: 0xFFFF_FFFF,
            svr: 0xFF,
            isr: [0; 8],
            irr: [0; 8],
            tmr: [0; 8],
            lvt: [LVT_MASKED; 7],
            esr: 0,
            icr: 0,
            timer_initial: 0,
            timer_divide: 0,
            timer_start: 0,
            timer_deadline: None,
            tsc_hz: tsc_hz.max(1),
        }
    }

    fn enabled(&self) -> bool {
        self.svr & SVR_ENABLED != 0
    }

    /// `now` ticks per timer count, times 2^16 for precision.
    fn ticks_per_count_q16(&self) -> u128 {
        (u128::from(self.tsc_hz) << 16) * u128::from(divisor(self.timer_divide))
            / u128::from(BUS_HZ)
    }

    fn period_ticks(&self) -> u64 {
        let t = (u128::from(self.timer_initial) * self.ticks_per_count_q16()) >> 16;
        u64::try_from(t).unwrap_or(u64::MAX).max(1)
    }

    fn arm(&mut self, now: u64) {
        self.timer_start = now;
        self.timer_deadline =
            (self.timer_initial != 0).then(|| now.saturating_add(self.period_ticks()));
    }

    fn current_count(&self, now: u64) -> u32 {
        let Some(deadline) = self.timer_deadline else {
            return 0;
        };
        if now >= deadline {
            return 0;
        }
        let left = u128::from(deadline - now) << 16;
        let per = self.ticks_per_count_q16().max(1);
        u32::try_from(left / per)
            .unwrap_or(u32::MAX)
            .min(self.timer_initial)
    }

    fn highest(bits: &[u32; 8]) -> Option<u8> {
        (0..8).rev().find_map(|i| {
            let w = bits[i];
            (w != 0).then(|| (i as u32 * 32 + 31 - w.leading_zeros()) as u8)
        })
    }

    fn set_bit(bits: &mut [u32; 8], vector: u8) {
        bits[usize::from(vector / 32)] |= 1 << (vector % 32);
    }

    fn clear_bit(bits: &mut [u32; 8], vector: u8) {
        bits[usize::from(vector / 32)] &= !(1 << (vector % 32));
    }

    /// The processor priority: the higher of TPR and the in-service class.
    pub fn ppr(&self) -> u32 {
        let isr_class = Self::highest(&self.isr).map_or(0, |v| u32::from(v) & 0xF0);
        if (self.tpr & 0xF0) >= isr_class {
            self.tpr & 0xFF
        } else {
            isr_class
        }
    }

    /// Reads the 32-bit register at `offset` in the APIC page.
    pub fn read(&mut self, offset: u32, now: u64) -> u32 {
        self.poll(now);
        if offset % 0x10 != 0 || offset >= 0x1000 {
            return 0;
        }
        match offset {
            REG_ID => self.id << 24,
            REG_VERSION => VERSION,
            REG_TPR => self.tpr,
            REG_APR => 0,
            REG_PPR => self.ppr(),
            REG_LDR => self.ldr,
            REG_DFR => self.dfr,
            REG_SVR => self.svr,
            0x100..=0x170 => self.isr[((offset - REG_ISR) / 0x10) as usize],
            0x180..=0x1F0 => self.tmr[((offset - REG_TMR) / 0x10) as usize],
            0x200..=0x270 => self.irr[((offset - REG_IRR) / 0x10) as usize],
            REG_ESR => self.esr,
            REG_ICR_LO => self.icr as u32 & !(1 << 12),
            REG_ICR_HI => (self.icr >> 32) as u32,
            REG_TIMER_INITIAL => self.timer_initial,
            REG_TIMER_CURRENT => self.current_count(now),
            REG_TIMER_DIVIDE => self.timer_divide,
            o => lvt_index(o).map_or(0, |i| self.lvt[i]),
        }
    }

    /// Writes the 32-bit register at `offset`.
    pub fn write(&mut self, offset: u32, value: u32, now: u64) -> LapicAction {
        self.poll(now);
        if offset % 0x10 != 0 || offset >= 0x1000 {
            return LapicAction::None;
        }
        match offset {
            REG_ID => self.id = value >> 24,
            REG_TPR => self.tpr = value & 0xFF,
            REG_EOI => {
                if let Some(v) = Self::highest(&self.isr) {
                    Self::clear_bit(&mut self.isr, v);
                    return LapicAction::Eoi { vector: v };
                }
            }
            REG_LDR => self.ldr = value & 0xFF00_0000,
            REG_DFR => self.dfr = value | 0x0FFF_FFFF,
            REG_SVR => {
                self.svr = value & 0x13FF;
                if !self.enabled() {
                    for l in &mut self.lvt {
                        *l |= LVT_MASKED;
                    }
                }
            }
            REG_ESR => self.esr = 0,
            REG_ICR_LO => {
                self.icr = (self.icr & !0xFFFF_FFFF) | u64::from(value & 0x000C_CFFF);
                return LapicAction::Ipi { icr: self.icr };
            }
            REG_ICR_HI => {
                self.icr = (self.icr & 0xFFFF_FFFF) | (u64::from(value & 0xFF00_0000) << 32)
            }
            REG_TIMER_INITIAL => {
                self.timer_initial = value;
                self.arm(now);
            }
            REG_TIMER_DIVIDE => self.timer_divide = value & 0b1011,
            o => {
                if let Some(i) = lvt_index(o) {
                    let mut v = value & if i == 1 { 0x0007_10FF } else { 0x0001_07FF };
                    if !self.enabled() {
                        v |= LVT_MASKED;
                    }
                    self.lvt[i] = v;
                }
            }
        }
        LapicAction::None
    }

    /// Fires the timer if its deadline has passed (re-arming a periodic one).
    pub fn poll(&mut self, now: u64) {
        let Some(deadline) = self.timer_deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        let lvt = self.lvt[1];
        if lvt & LVT_TIMER_PERIODIC != 0 && self.timer_initial != 0 {
            let period = self.period_ticks();
            // Skip whole missed periods rather than queueing them.
            let missed = (now - deadline) / period;
            self.timer_deadline =
                Some(deadline.saturating_add((missed + 1).saturating_mul(period)));
        } else {
            self.timer_deadline = None;
        }
        if lvt & LVT_MASKED == 0 && self.enabled() {
            let vector = (lvt & 0xFF) as u8;
            if vector >= 16 {
                Self::set_bit(&mut self.irr, vector);
            } else {
                self.esr |= 1 << 6; // illegal vector
            }
        }
    }

    /// When the timer fires next, if armed.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timer_deadline
    }

    /// Raises `vector` from another source (IPI, IOAPIC); vectors < 16 are illegal.
    pub fn raise(&mut self, vector: u8, level: bool) -> bool {
        if vector < 16 || !self.enabled() {
            self.esr |= 1 << 6;
            return false;
        }
        Self::set_bit(&mut self.irr, vector);
        if level {
            Self::set_bit(&mut self.tmr, vector);
        } else {
            Self::clear_bit(&mut self.tmr, vector);
        }
        true
    }

    /// The vector to deliver now, if one outranks the processor priority.
    pub fn pending(&self) -> Option<u8> {
        let v = Self::highest(&self.irr)?;
        (u32::from(v) & 0xF0 > self.ppr() & 0xF0).then_some(v)
    }

    /// Marks `vector` as delivered: IRR -> ISR.
    pub fn accept(&mut self, vector: u8) {
        Self::clear_bit(&mut self.irr, vector);
        Self::set_bit(&mut self.isr, vector);
    }

    /// The APIC ID.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The logical destination register.
    pub fn ldr(&self) -> u32 {
        self.ldr
    }

    /// The destination format register.
    pub fn dfr(&self) -> u32 {
        self.dfr
    }

    /// Records an IPI the guest tried to send with an illegal vector (ESR bit 5).
    pub fn send_illegal_vector(&mut self) {
        self.esr |= 1 << 5;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TSC: u64 = 1_000_000_000; // 1 GHz: 10 TSC ticks per bus tick

    fn enabled() -> VLapic {
        let mut l = VLapic::new(0, TSC);
        l.write(REG_SVR, 0x1FF, 0);
        l
    }

    #[test]
    fn divisor_encoding_matches_the_sdm_table() {
        let table = [
            (0b0000, 2),
            (0b0001, 4),
            (0b0010, 8),
            (0b0011, 16),
            (0b1000, 32),
            (0b1001, 64),
            (0b1010, 128),
            (0b1011, 1),
        ];
        for (reg, div) in table {
            assert_eq!(divisor(reg), div, "divide register {reg:#b}");
        }
    }

    #[test]
    fn one_shot_timer_fires_once_and_counts_down() {
        let mut l = enabled();
        l.write(REG_TIMER_DIVIDE, 0b1011, 0); // divide by 1
        l.write(REG_LVT_TIMER, 0x40, 0);
        l.write(REG_TIMER_INITIAL, 1000, 0); // 1000 bus ticks = 10_000 TSC ticks
        assert_eq!(l.next_deadline(), Some(10_000));
        assert_eq!(l.read(REG_TIMER_CURRENT, 5_000), 500);
        assert_eq!(l.pending(), None);
        l.poll(10_000);
        assert_eq!(l.pending(), Some(0x40));
        assert_eq!(l.read(REG_TIMER_CURRENT, 10_001), 0);
        assert_eq!(l.next_deadline(), None);
        l.accept(0x40);
        assert_eq!(l.pending(), None);
        assert_eq!(l.read(REG_ISR + 0x20, 10_002), 1);
        assert_eq!(
            l.write(REG_EOI, 0, 10_003),
            LapicAction::Eoi { vector: 0x40 }
        );
        assert_eq!(l.read(REG_ISR + 0x20, 10_004), 0);
    }

    #[test]
    fn periodic_timer_rearms_and_skips_missed_periods() {
        let mut l = enabled();
        l.write(REG_TIMER_DIVIDE, 0b1011, 0);
        l.write(REG_LVT_TIMER, LVT_TIMER_PERIODIC | 0x30, 0);
        l.write(REG_TIMER_INITIAL, 100, 0); // period 1000 ticks
        l.poll(3_500);
        assert_eq!(l.pending(), Some(0x30));
        assert_eq!(l.next_deadline(), Some(4_000));
    }

    #[test]
    fn masked_or_disabled_apic_does_not_deliver() {
        let mut l = VLapic::new(0, TSC); // SVR software-disabled at reset
        l.write(REG_LVT_TIMER, 0x40, 0);
        assert_eq!(l.read(REG_LVT_TIMER, 0) & LVT_MASKED, LVT_MASKED);
        l.write(REG_TIMER_INITIAL, 1, 0);
        l.poll(1_000_000);
        assert_eq!(l.pending(), None);
        assert!(!l.raise(0x50, false));
    }

    #[test]
    fn priority_rules_hold_back_lower_classes() {
        let mut l = enabled();
        assert!(l.raise(0x51, false));
        l.write(REG_TPR, 0x60, 0);
        assert_eq!(l.pending(), None);
        l.write(REG_TPR, 0x40, 0);
        assert_eq!(l.pending(), Some(0x51));
        l.accept(0x51);
        assert!(l.raise(0x52, false)); // same class as in-service: held
        assert_eq!(l.pending(), None);
        assert!(l.raise(0x61, false));
        assert_eq!(l.pending(), Some(0x61));
        assert_eq!(l.read(REG_PPR, 0), 0x50);
    }

    #[test]
    fn hostile_offsets_values_and_vectors_never_panic() {
        let mut l = enabled();
        for off in [
            0u32,
            1,
            3,
            0xF,
            0x21,
            0x3F0,
            0x400,
            0xFFC,
            0xFFF,
            0x1000,
            u32::MAX,
        ] {
            let _ = l.read(off, 0);
            let _ = l.write(off, u32::MAX, 0);
        }
        for v in 0..16u8 {
            assert!(!l.raise(v, false), "vector {v} is illegal");
        }
        assert_ne!(l.read(REG_ESR, 0), 0);
        l.write(REG_LVT_TIMER, 0x5, 0); // illegal timer vector
        l.write(REG_TIMER_DIVIDE, u32::MAX, 0);
        l.write(REG_TIMER_INITIAL, u32::MAX, 0);
        l.poll(u64::MAX);
        assert_eq!(l.pending(), None);
        // EOI with nothing in service is harmless.
        assert_eq!(l.write(REG_EOI, 0, 0), LapicAction::None);
        // ICR writes surface an IPI with reserved bits cleared.
        l.write(REG_ICR_HI, 0xFFFF_FFFF, 0);
        match l.write(REG_ICR_LO, 0xFFFF_FFFF, 0) {
            LapicAction::Ipi { icr } => assert_eq!(icr, 0xFF00_0000_000C_CFFF),
            other => panic!("expected an IPI, got {other:?}"),
        }
    }
}
