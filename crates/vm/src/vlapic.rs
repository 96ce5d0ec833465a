//! A virtual local APIC as a register state machine: the xAPIC register page
//! and the x2APIC MSRs over the same state (ID/version, TPR/PPR, EOI, SVR,
//! ISR/IRR/TMR, the LVT, ESR, ICR, SELF IPI), IA32_APIC_BASE with the switch to
//! x2APIC mode, and the timer in one-shot, periodic and TSC-deadline modes.
//!
//! IA32_APIC_BASE follows the SDM's state machine (Intel SDM vol. 3 10.12.5):
//! disabled, xAPIC and x2APIC, with the transitions xAPIC <-> disabled,
//! xAPIC -> x2APIC and x2APIC -> disabled; x2APIC -> xAPIC, disabled ->
//! x2APIC, EXTD without EN and reserved bits take #GP. Disabling returns the
//! LAPIC to its power-up state. The xAPIC page can be moved (the caller
//! decodes [`VLapic::mmio_base`]); in x2APIC mode or disabled it does not
//! answer. The xAPIC ID register is writable; the x2APIC ID is always the
//! initial APIC ID.
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

const REG_SELF_IPI: u32 = 0x3F0;

const LVT_MASKED: u32 = 1 << 16;
/// LVT timer mode field (bits 18:17): 0 one-shot, 1 periodic, 2 TSC-deadline.
const LVT_TIMER_MODE_SHIFT: u32 = 17;
const TIMER_MODE_PERIODIC: u32 = 1;
const TIMER_MODE_TSC_DEADLINE: u32 = 2;

/// IA32_APIC_BASE bits.
const APIC_BASE_BSP: u64 = 1 << 8;
const APIC_BASE_EXTD: u64 = 1 << 10;
const APIC_BASE_EN: u64 = 1 << 11;
const APIC_BASE_PAGE: u64 = !0xFFF;
/// LVT delivery mode field (bits 10:8) and the ExtINT mode (LINT0 virtual wire).
const LVT_DELIVERY_MASK: u32 = 0x700;
const LVT_DELIVERY_EXTINT: u32 = 0x700;
const LVT_DELIVERY_NMI: u32 = 0x400;
/// LVT indexes of LINT0 and LINT1.
const LVT_LINT0: usize = 4;
const LVT_LINT1: usize = 5;
/// Physical-address width assumed until the caller says (CPUID 0x80000008).
const DEFAULT_PHYS_BITS: u8 = 36;

/// MSR numbers the vLAPIC answers.
pub const MSR_APIC_BASE: u32 = 0x1B;
pub const MSR_TSC_DEADLINE: u32 = 0x6E0;
/// x2APIC registers: 0x800 + (xAPIC offset >> 4).
pub const MSR_X2APIC_FIRST: u32 = 0x800;
pub const MSR_X2APIC_LAST: u32 = 0x8FF;
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
    /// The guest wrote the ICR: send an IPI (`icr` = high << 32 | low). In
    /// x2APIC format (`x2apic`) the destination is bits 63:32, else 63:56.
    Ipi {
        icr: u64,
        x2apic: bool,
    },
}

/// The LAPIC's mode, from IA32_APIC_BASE EN (bit 11) and EXTD (bit 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicMode {
    /// Globally disabled: no APIC; the PIC's INTR reaches the CPU directly.
    Disabled,
    XApic,
    X2Apic,
}

/// One vCPU's local APIC.
#[derive(Clone, Debug)]
pub struct VLapic {
    /// The initial APIC ID (the x2APIC ID; the xAPIC ID after a reset).
    initial_id: u32,
    /// The xAPIC ID register (writable in xAPIC mode).
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
    /// IA32_APIC_BASE (base, BSP, x2APIC and enable bits).
    apic_base: u64,
    /// The guest's physical-address width: base bits at or above it are reserved.
    phys_bits: u8,
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
    /// A LAPIC in its reset state for APIC ID `id` (xAPIC mode; the BSP's if
    /// `id` is 0); `tsc_hz` is the rate of `now`.
    pub fn new(id: u32, tsc_hz: u64) -> Self {
        VLapic {
            initial_id: id,
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
            apic_base: XAPIC_BASE | APIC_BASE_EN | if id == 0 { APIC_BASE_BSP } else { 0 },
            phys_bits: DEFAULT_PHYS_BITS,
        }
    }

    /// The BSP's LAPIC as a PC BIOS hands it over: software-enabled, in
    /// virtual-wire mode (LINT0 ExtINT: the 8259's interrupts pass through;
    /// LINT1 NMI), spurious vector 0xFF.
    pub fn new_bsp_virtual_wire(tsc_hz: u64) -> Self {
        let mut l = Self::new(0, tsc_hz);
        l.svr = 0x1FF;
        l.lvt[LVT_LINT0] = LVT_DELIVERY_EXTINT;
        l.lvt[LVT_LINT1] = LVT_DELIVERY_NMI;
        l
    }

    /// Back to the power-up state (IA32_APIC_BASE and the initial ID kept):
    /// what clearing IA32_APIC_BASE.EN does.
    fn power_up_reset(&mut self) {
        let (base, phys_bits) = (self.apic_base, self.phys_bits);
        *self = VLapic::new(self.initial_id, self.tsc_hz);
        self.apic_base = base;
        self.phys_bits = phys_bits;
    }

    /// Sets the guest's physical-address width (CPUID 0x80000008 EAX[7:0]):
    /// IA32_APIC_BASE bits at or above it are reserved.
    pub fn set_phys_bits(&mut self, bits: u8) {
        self.phys_bits = bits.clamp(32, 52);
    }

    /// The mode IA32_APIC_BASE selects.
    pub fn mode(&self) -> ApicMode {
        match (
            self.apic_base & APIC_BASE_EN != 0,
            self.apic_base & APIC_BASE_EXTD != 0,
        ) {
            (false, _) => ApicMode::Disabled,
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
        }
    }

    /// Whether the guest switched this LAPIC to x2APIC mode.
    pub fn x2apic(&self) -> bool {
        self.mode() == ApicMode::X2Apic
    }

    /// Where the xAPIC register page answers: only in xAPIC mode.
    pub fn mmio_base(&self) -> Option<u64> {
        (self.mode() == ApicMode::XApic)
            .then_some(self.apic_base & APIC_BASE_PAGE & self.phys_mask())
    }

    /// The offset of `gpa` in the xAPIC page, if the page answers there.
    pub fn mmio_offset(&self, gpa: u64) -> Option<u32> {
        let base = self.mmio_base()?;
        let off = gpa.wrapping_sub(base);
        (off < 0x1000).then_some(off as u32)
    }

    /// Whether the 8259's INTR output reaches this CPU: the LAPIC is globally
    /// disabled (the pin goes straight to the core), or LINT0 is an unmasked
    /// ExtINT entry of a software-enabled LAPIC (virtual-wire mode).
    pub fn accepts_extint(&self) -> bool {
        match self.mode() {
            ApicMode::Disabled => true,
            _ => {
                let lint0 = self.lvt[LVT_LINT0];
                self.enabled()
                    && lint0 & LVT_MASKED == 0
                    && lint0 & LVT_DELIVERY_MASK == LVT_DELIVERY_EXTINT
            }
        }
    }

    /// The task priority register.
    pub fn tpr(&self) -> u8 {
        self.tpr as u8
    }

    /// CR8 as the guest sees it: TPR bits 7:4.
    pub fn cr8(&self) -> u8 {
        (self.tpr >> 4) as u8
    }

    /// A MOV to CR8: TPR[7:4] = CR8[3:0], TPR[3:0] = 0. A value that keeps
    /// the priority class keeps the TPR's low bits (an unchanged CR8 read back
    /// from the hardware must not clear what the guest wrote through MMIO).
    pub fn set_cr8(&mut self, cr8: u8) {
        if cr8 & 0xF != self.cr8() {
            self.tpr = u32::from(cr8 & 0xF) << 4;
        }
    }

    /// The priority class (vector bits 7:4) of the highest requested
    /// interrupt if only the TPR holds it back: when the guest lowers its
    /// TPR below this, the interrupt is due.
    pub fn tpr_blocked_class(&self) -> Option<u8> {
        let v = Self::highest(&self.irr)?;
        let isr_class = Self::highest(&self.isr).map_or(0, |i| i >> 4);
        let class = v >> 4;
        (class > isr_class && u32::from(class) <= self.tpr >> 4).then_some(class)
    }

    fn phys_mask(&self) -> u64 {
        (1u64 << self.phys_bits) - 1
    }

    fn timer_mode(&self) -> u32 {
        (self.lvt[1] >> LVT_TIMER_MODE_SHIFT) & 0b11
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
            REG_LDR => self.ldr(),
            REG_DFR => self.dfr,
            REG_SVR => self.svr,
            0x100..=0x170 => self.isr[((offset - REG_ISR) / 0x10) as usize],
            0x180..=0x1F0 => self.tmr[((offset - REG_TMR) / 0x10) as usize],
            0x200..=0x270 => self.irr[((offset - REG_IRR) / 0x10) as usize],
            REG_ESR => self.esr,
            REG_ICR_LO => self.icr as u32 & !(1 << 12),
            REG_ICR_HI => (self.icr >> 32) as u32,
            REG_TIMER_INITIAL => self.timer_initial,
            REG_TIMER_CURRENT if self.timer_mode() == TIMER_MODE_TSC_DEADLINE => 0,
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
                    // Only a level-triggered interrupt's EOI goes on to the IOAPICs (SDM vol.
                    // 3, 11.8.5): an edge one ends here, with no exit to the platform.
                    if self.tmr[usize::from(v / 32)] & (1 << (v % 32)) != 0 {
                        return LapicAction::Eoi { vector: v };
                    }
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
                return LapicAction::Ipi {
                    icr: self.icr,
                    x2apic: false,
                };
            }
            REG_ICR_HI => {
                self.icr = (self.icr & 0xFFFF_FFFF) | (u64::from(value & 0xFF00_0000) << 32)
            }
            REG_TIMER_INITIAL => {
                // In TSC-deadline mode the initial count is ignored.
                if self.timer_mode() != TIMER_MODE_TSC_DEADLINE {
                    self.timer_initial = value;
                    self.arm(now);
                }
            }
            REG_TIMER_DIVIDE => self.timer_divide = value & 0b1011,
            o => {
                if let Some(i) = lvt_index(o) {
                    let mut v = value & if i == 1 { 0x0007_10FF } else { 0x0001_07FF };
                    if !self.enabled() {
                        v |= LVT_MASKED;
                    }
                    let old_mode = self.timer_mode();
                    self.lvt[i] = v;
                    let new_mode = self.timer_mode();
                    if i == 1
                        && new_mode != old_mode
                        && (old_mode == TIMER_MODE_TSC_DEADLINE
                            || new_mode == TIMER_MODE_TSC_DEADLINE)
                    {
                        // Entering or leaving TSC-deadline mode disarms the
                        // timer; between one-shot and periodic it runs on.
                        self.timer_deadline = None;
                    }
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
        if self.timer_mode() == TIMER_MODE_PERIODIC && self.timer_initial != 0 {
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
        if vector < 16 {
            self.esr |= 1 << 6; // receive illegal vector
            return false;
        }
        // A software-disabled APIC does not accept fixed interrupts (no error);
        // a globally disabled one receives nothing at all.
        if !self.enabled() || self.mode() == ApicMode::Disabled {
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
        if self.mode() == ApicMode::Disabled {
            return None;
        }
        let v = Self::highest(&self.irr)?;
        (u32::from(v) & 0xF0 > self.ppr() & 0xF0).then_some(v)
    }

    /// Marks `vector` as delivered: IRR -> ISR.
    pub fn accept(&mut self, vector: u8) {
        Self::clear_bit(&mut self.irr, vector);
        Self::set_bit(&mut self.isr, vector);
    }

    /// RDMSR of a vLAPIC MSR (IA32_APIC_BASE, IA32_TSC_DEADLINE, x2APIC
    /// registers); `None`: #GP. `now` and the TSC-deadline value are in host
    /// TSC units (the caller converts the guest's TSC offset).
    pub fn read_msr(&mut self, msr: u32, now: u64) -> Option<u64> {
        match msr {
            MSR_APIC_BASE => Some(self.apic_base),
            MSR_TSC_DEADLINE => Some(match (self.timer_mode(), self.timer_deadline) {
                (TIMER_MODE_TSC_DEADLINE, Some(d)) => d,
                _ => 0,
            }),
            MSR_X2APIC_FIRST..=MSR_X2APIC_LAST if self.x2apic() => {
                let offset = (msr - MSR_X2APIC_FIRST) << 4;
                match offset {
                    REG_ID => Some(u64::from(self.initial_id)),
                    REG_ICR_LO => Some(self.icr),
                    REG_VERSION | REG_TPR | REG_PPR | REG_LDR | REG_SVR | REG_ESR
                    | REG_LVT_CMCI | REG_TIMER_INITIAL | REG_TIMER_CURRENT | REG_TIMER_DIVIDE => {
                        Some(u64::from(self.read(offset, now)))
                    }
                    0x100..=0x270 => Some(u64::from(self.read(offset, now))),
                    o if lvt_index(o).is_some() => Some(u64::from(self.read(offset, now))),
                    // EOI and SELF IPI are write-only; APR, DFR, ICR high and
                    // the rest do not exist in x2APIC mode.
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// WRMSR of a vLAPIC MSR; `None`: #GP (nothing changed).
    pub fn write_msr(&mut self, msr: u32, value: u64, now: u64) -> Option<LapicAction> {
        match msr {
            MSR_APIC_BASE => {
                self.write_apic_base(value)?;
                Some(LapicAction::None)
            }
            MSR_TSC_DEADLINE => {
                // Ignored outside TSC-deadline mode; 0 disarms.
                if self.timer_mode() == TIMER_MODE_TSC_DEADLINE {
                    self.timer_deadline = (value != 0).then_some(value);
                }
                Some(LapicAction::None)
            }
            MSR_X2APIC_FIRST..=MSR_X2APIC_LAST if self.x2apic() => {
                let offset = (msr - MSR_X2APIC_FIRST) << 4;
                if offset == REG_ICR_LO {
                    // Vector, mode, destination mode, level, trigger,
                    // shorthand, and a 32-bit destination.
                    self.icr = value & 0xFFFF_FFFF_000C_CFFF;
                    return Some(LapicAction::Ipi {
                        icr: self.icr,
                        x2apic: true,
                    });
                }
                let low = u32::try_from(value).ok()?;
                match offset {
                    // EOI and ESR take only zero.
                    REG_EOI | REG_ESR if low != 0 => None,
                    REG_SELF_IPI => Some(LapicAction::Ipi {
                        icr: (1 << 18) | u64::from(low & 0xFF),
                        x2apic: true,
                    }),
                    REG_TPR | REG_EOI | REG_SVR | REG_ESR | REG_LVT_CMCI | REG_TIMER_INITIAL
                    | REG_TIMER_DIVIDE => Some(self.write(offset, low, now)),
                    o if lvt_index(o).is_some() => Some(self.write(offset, low, now)),
                    // Read-only or absent registers.
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// IA32_APIC_BASE: the SDM's transitions (see the module comment);
    /// `None` is #GP and changes nothing. The BSP flag is read-only.
    fn write_apic_base(&mut self, value: u64) -> Option<()> {
        let writable = (APIC_BASE_PAGE & self.phys_mask()) | APIC_BASE_EN | APIC_BASE_EXTD;
        if value & !(writable | APIC_BASE_BSP) != 0 {
            return None;
        }
        let new = match (value & APIC_BASE_EN != 0, value & APIC_BASE_EXTD != 0) {
            (false, false) => ApicMode::Disabled,
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
            (false, true) => return None,
        };
        let old = self.mode();
        match (old, new) {
            (ApicMode::X2Apic, ApicMode::XApic) | (ApicMode::Disabled, ApicMode::X2Apic) => {
                return None
            }
            _ => {}
        }
        self.apic_base = (value & writable) | (self.apic_base & APIC_BASE_BSP);
        match (old, new) {
            (ApicMode::XApic | ApicMode::X2Apic, ApicMode::Disabled) => self.power_up_reset(),
            // The x2APIC ID is the initial APIC ID, whatever the xAPIC ID
            // register was set to.
            (ApicMode::XApic, ApicMode::X2Apic) => self.id = self.initial_id,
            _ => {}
        }
        Some(())
    }

    /// The APIC ID: the x2APIC ID (the initial one) in x2APIC mode, else the
    /// xAPIC ID register.
    pub fn id(&self) -> u32 {
        if self.x2apic() {
            self.initial_id
        } else {
            self.id
        }
    }

    /// The logical destination register (in x2APIC mode derived from the ID:
    /// cluster in bits 31:16, one member bit in 15:0).
    pub fn ldr(&self) -> u32 {
        if self.x2apic() {
            ((self.initial_id >> 4) << 16) | (1 << (self.initial_id & 0xF))
        } else {
            self.ldr
        }
    }

    /// The destination format register.
    pub fn dfr(&self) -> u32 {
        self.dfr
    }

    /// Records an IPI the guest tried to send with an illegal vector (ESR bit 5).
    pub fn send_illegal_vector(&mut self) {
        self.esr |= 1 << 5;
    }

    /// LAPIC passthrough starts: what the physical LAPIC must be given (the registers, the
    /// running timer, the requested interrupts), the level-triggered vectors among those
    /// requested, and the level-triggered vectors in service (their EOI will not be seen: the
    /// caller retires them now). This vLAPIC keeps only what still exits (ID, LDR, ICR, LINT0/1):
    /// its timer is disarmed and its IRR and ISR emptied.
    pub fn hand_over(&mut self, now: u64) -> Handover {
        self.poll(now);
        let (tsc_deadline, timer_initial) = match (self.timer_mode(), self.timer_deadline) {
            (TIMER_MODE_TSC_DEADLINE, Some(d)) => (d.max(1), 0),
            (TIMER_MODE_PERIODIC, Some(_)) => (0, self.timer_initial),
            (_, Some(_)) => (0, self.current_count(now).max(1)),
            (_, None) => (0, 0),
        };
        let mut level_pending = [0u32; 8];
        let mut level_in_service = [0u32; 8];
        for i in 0..8 {
            level_pending[i] = self.irr[i] & self.tmr[i];
            level_in_service[i] = self.isr[i] & self.tmr[i];
        }
        let lapic = vcpu::LapicHandover {
            svr: self.svr,
            tpr: self.tpr,
            lvt_timer: self.lvt[1],
            lvt_error: self.lvt[6],
            timer_divide: self.timer_divide,
            timer_initial,
            tsc_deadline,
            pending: self.irr,
        };
        self.timer_deadline = None;
        self.irr = [0; 8];
        self.isr = [0; 8];
        Handover {
            lapic,
            level_pending,
            level_in_service,
        }
    }
}

/// What [`VLapic::hand_over`] gives the physical LAPIC and the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handover {
    pub lapic: vcpu::LapicHandover,
    /// Requested level-triggered vectors (a bit each): their EOIs must be watched.
    pub level_pending: [u32; 8],
    /// Level-triggered vectors in service: retired by the caller at the switch.
    pub level_in_service: [u32; 8],
}

#[cfg(test)]
mod tests {
    use super::*;

    const TSC: u64 = 1_000_000_000; // 1 GHz: 10 TSC ticks per bus tick
    const LVT_TIMER_PERIODIC: u32 = 1 << 17;
    const LVT_TIMER_TSC_DEADLINE: u32 = 2 << 17;

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
        // The timer is edge-triggered: its EOI stays in the local APIC.
        assert_eq!(l.write(REG_EOI, 0, 10_003), LapicAction::None);
        assert_eq!(l.read(REG_ISR + 0x20, 10_004), 0);
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
        assert_eq!(l.read(REG_ESR, 0), 0, "not an error, just not accepted");
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
            LapicAction::Ipi { icr, x2apic } => {
                assert_eq!(icr, 0xFF00_0000_000C_CFFF);
                assert!(!x2apic);
            }
            other => panic!("expected an IPI, got {other:?}"),
        }
    }

    #[test]
    fn tsc_deadline_mode_fires_at_the_deadline_and_disarms() {
        let mut l = enabled();
        // Outside TSC-deadline mode the MSR ignores writes and reads 0.
        assert_eq!(
            l.write_msr(MSR_TSC_DEADLINE, 5_000, 0),
            Some(LapicAction::None)
        );
        assert_eq!(l.read_msr(MSR_TSC_DEADLINE, 0), Some(0));
        assert_eq!(l.next_deadline(), None);
        l.write(REG_LVT_TIMER, LVT_TIMER_TSC_DEADLINE | 0x44, 0);
        l.write_msr(MSR_TSC_DEADLINE, 5_000, 0).unwrap();
        assert_eq!(l.read_msr(MSR_TSC_DEADLINE, 1), Some(5_000));
        // The initial count is ignored and the current count reads 0.
        l.write(REG_TIMER_INITIAL, 10, 1);
        assert_eq!(l.read(REG_TIMER_CURRENT, 2), 0);
        assert_eq!(l.next_deadline(), Some(5_000));
        l.poll(4_999);
        assert_eq!(l.pending(), None);
        l.poll(5_000);
        assert_eq!(l.pending(), Some(0x44));
        assert_eq!(l.read_msr(MSR_TSC_DEADLINE, 5_001), Some(0), "disarmed");
        // Zero disarms; leaving the mode disarms too.
        l.write_msr(MSR_TSC_DEADLINE, 9_000, 5_002).unwrap();
        l.write_msr(MSR_TSC_DEADLINE, 0, 5_003).unwrap();
        assert_eq!(l.next_deadline(), None);
        l.write_msr(MSR_TSC_DEADLINE, 9_000, 5_004).unwrap();
        l.write(REG_LVT_TIMER, 0x44, 5_005); // back to one-shot
        assert_eq!(l.next_deadline(), None);
    }

    #[test]
    fn x2apic_mode_is_entered_through_apic_base_and_answers_msrs() {
        let mut l = VLapic::new(3, TSC);
        let base = l.read_msr(MSR_APIC_BASE, 0).unwrap();
        assert_eq!(base, 0xFEE0_0800, "an AP: enabled, not BSP");
        // No x2APIC registers before the switch.
        assert_eq!(l.read_msr(0x802, 0), None);
        assert_eq!(l.write_msr(0x808, 0, 0), None);
        // EXTD without EN, reserved bits (0-7, 9, above MAXPHYADDR): #GP.
        for v in [
            0xFEE0_0400,
            0xFEE0_0801,
            0xFEE0_0A00,
            0x10_FEE0_0800,
            u64::MAX,
        ] {
            assert_eq!(l.write_msr(MSR_APIC_BASE, v, 0), None, "{v:#x}");
        }
        assert_eq!(l.read_msr(MSR_APIC_BASE, 0), Some(base), "unchanged");
        assert!(l.write_msr(MSR_APIC_BASE, base | 1 << 10, 0).is_some());
        assert!(l.x2apic());
        assert_eq!(l.write_msr(MSR_APIC_BASE, base, 0), None, "x2APIC -> xAPIC");
        assert_eq!(l.read_msr(0x802, 0), Some(3), "full 32-bit ID");
        assert_eq!(l.read_msr(0x80D, 0), Some(1 << 3), "LDR from the ID");
        l.write_msr(0x80F, 0x1FF, 0).unwrap(); // SVR
                                               // SELF IPI and ICR come back as x2APIC-format IPIs.
        assert_eq!(
            l.write_msr(0x83F, 0x55, 0),
            Some(LapicAction::Ipi {
                icr: 1 << 18 | 0x55,
                x2apic: true
            })
        );
        assert_eq!(
            l.write_msr(0x830, 0x0000_0007_0000_4041, 0),
            Some(LapicAction::Ipi {
                icr: 0x0000_0007_0000_4041,
                x2apic: true
            })
        );
        assert_eq!(l.read_msr(0x830, 0), Some(0x0000_0007_0000_4041));
        // EOI through the MSR retires the in-service vector; a level-triggered one is told to
        // the IOAPIC, an edge-triggered one is not.
        assert!(l.raise(0x61, true));
        l.accept(0x61);
        assert_eq!(
            l.write_msr(0x80B, 0, 0),
            Some(LapicAction::Eoi { vector: 0x61 })
        );
        assert!(l.raise(0x62, false));
        l.accept(0x62);
        assert_eq!(l.write_msr(0x80B, 0, 0), Some(LapicAction::None));
        assert_eq!(l.read(REG_ISR + 0x30, 0), 0, "0x62 retired all the same");
    }

    #[test]
    fn hostile_x2apic_accesses_raise_gp_and_change_nothing() {
        let mut l = VLapic::new(0, TSC);
        let base = l.read_msr(MSR_APIC_BASE, 0).unwrap();
        l.write_msr(MSR_APIC_BASE, base | 1 << 10, 0).unwrap();
        // Write-only, read-only, absent registers and non-zero EOI/ESR.
        for msr in [0x80B, 0x83F, 0x809, 0x80E, 0x831, 0x840, 0x8FF] {
            assert_eq!(l.read_msr(msr, 0), None, "read {msr:#x}");
        }
        for (msr, v) in [
            (0x802, 1),
            (0x803, 0),
            (0x80A, 0),
            (0x80D, 0),
            (0x80E, 0),
            (0x810, 0),
            (0x839, 0),
            (0x80B, 1),
            (0x828, 1),
            (0x808, 1 << 32),
            (0x8FF, 0),
        ] {
            assert_eq!(l.write_msr(msr, v, 0), None, "write {msr:#x} <- {v:#x}");
        }
        assert_eq!(l.read_msr(0x802, 0), Some(0));
        assert_eq!(l.read_msr(0x808, 0), Some(0));
        // Any MSR number at all: an answer or #GP, never a panic.
        for msr in (0..0x1000).chain([u32::MAX, 0x8000_0000]) {
            let _ = l.read_msr(msr, 0);
            let _ = l.write_msr(msr, u64::MAX, 0);
        }
    }

    const BASE: u64 = XAPIC_BASE | APIC_BASE_EN;

    #[test]
    fn apic_base_follows_the_sdm_state_machine() {
        let mut l = VLapic::new(1, TSC);
        l.write(REG_SVR, 0x1FF, 0);
        l.write(REG_TPR, 0x30, 0);
        // xAPIC -> disabled: legal, and the LAPIC returns to its power-up state.
        assert!(l.write_msr(MSR_APIC_BASE, XAPIC_BASE, 0).is_some());
        assert_eq!(l.mode(), ApicMode::Disabled);
        assert_eq!(l.mmio_base(), None, "the page no longer answers");
        assert!(!l.raise(0x40, false), "a disabled APIC receives nothing");
        // disabled -> x2APIC directly: #GP.
        assert_eq!(
            l.write_msr(MSR_APIC_BASE, BASE | APIC_BASE_EXTD & !APIC_BASE_EN, 0),
            None
        );
        assert_eq!(l.write_msr(MSR_APIC_BASE, BASE | APIC_BASE_EXTD, 0), None);
        // disabled -> xAPIC: legal, registers at their reset values.
        assert!(l.write_msr(MSR_APIC_BASE, BASE, 0).is_some());
        assert_eq!(l.mode(), ApicMode::XApic);
        assert_eq!(l.read(REG_SVR, 0), 0xFF);
        assert_eq!(l.read(REG_TPR, 0), 0);
        assert_eq!(l.read(REG_LVT_TIMER, 0), LVT_MASKED);
        // xAPIC -> x2APIC -> xAPIC: the second step is #GP.
        assert!(l
            .write_msr(MSR_APIC_BASE, BASE | APIC_BASE_EXTD, 0)
            .is_some());
        assert_eq!(l.write_msr(MSR_APIC_BASE, BASE, 0), None);
        assert!(l.x2apic());
        // x2APIC -> disabled -> xAPIC: legal.
        assert!(l.write_msr(MSR_APIC_BASE, XAPIC_BASE, 0).is_some());
        assert!(l.write_msr(MSR_APIC_BASE, BASE, 0).is_some());
        assert_eq!(l.mode(), ApicMode::XApic);
    }

    #[test]
    fn the_xapic_page_moves_and_is_silent_outside_xapic_mode() {
        let mut l = VLapic::new(0, TSC);
        assert_eq!(l.mmio_offset(XAPIC_BASE + 0x20), Some(0x20));
        assert!(l
            .write_msr(MSR_APIC_BASE, 0xFED0_0000 | APIC_BASE_EN | APIC_BASE_BSP, 0)
            .is_some());
        assert_eq!(l.mmio_offset(XAPIC_BASE + 0x20), None);
        assert_eq!(l.mmio_offset(0xFED0_0030), Some(0x30));
        assert_eq!(l.mmio_offset(0xFED0_1000), None);
        assert_eq!(
            l.read_msr(MSR_APIC_BASE, 0),
            Some(0xFED0_0000 | APIC_BASE_EN | APIC_BASE_BSP)
        );
        assert!(l
            .write_msr(MSR_APIC_BASE, BASE | APIC_BASE_BSP | APIC_BASE_EXTD, 0)
            .is_some());
        assert_eq!(l.mmio_base(), None, "x2APIC mode: no MMIO page");
        // The BSP flag is read-only.
        let mut ap = VLapic::new(2, TSC);
        assert!(ap
            .write_msr(MSR_APIC_BASE, BASE | APIC_BASE_BSP, 0)
            .is_some());
        assert_eq!(ap.read_msr(MSR_APIC_BASE, 0), Some(BASE));
    }

    #[test]
    fn a_written_xapic_id_does_not_change_the_x2apic_id() {
        let mut l = VLapic::new(2, TSC);
        l.write(REG_ID, 7 << 24, 0);
        assert_eq!(l.read(REG_ID, 0), 7 << 24);
        assert_eq!(l.id(), 7, "IPIs address the xAPIC ID in xAPIC mode");
        l.write_msr(MSR_APIC_BASE, BASE | APIC_BASE_EXTD, 0)
            .unwrap();
        assert_eq!(l.read_msr(0x802, 0), Some(2));
        assert_eq!(l.id(), 2);
        assert_eq!(l.ldr(), 1 << 2);
        // Through disabled back to xAPIC: the initial ID again.
        l.write_msr(MSR_APIC_BASE, XAPIC_BASE, 0).unwrap();
        l.write_msr(MSR_APIC_BASE, BASE, 0).unwrap();
        assert_eq!(l.read(REG_ID, 0), 2 << 24);
    }

    #[test]
    fn switching_one_shot_and_periodic_keeps_the_timer_running() {
        let mut l = enabled();
        l.write(REG_TIMER_DIVIDE, 0b1011, 0);
        l.write(REG_LVT_TIMER, 0x40, 0);
        l.write(REG_TIMER_INITIAL, 1000, 0);
        l.write(REG_LVT_TIMER, LVT_TIMER_PERIODIC | 0x40, 100);
        assert_eq!(l.read(REG_TIMER_INITIAL, 200), 1000);
        assert_eq!(l.read(REG_TIMER_CURRENT, 5_000), 500);
        l.poll(10_000);
        assert_eq!(l.pending(), Some(0x40));
        assert_eq!(l.next_deadline(), Some(20_000), "periodic now: re-armed");
        l.write(REG_LVT_TIMER, 0x40, 10_001);
        assert_eq!(
            l.next_deadline(),
            Some(20_000),
            "one-shot again: still armed"
        );
        // Into TSC-deadline mode: disarmed.
        l.write(REG_LVT_TIMER, LVT_TIMER_TSC_DEADLINE | 0x40, 10_002);
        assert_eq!(l.next_deadline(), None);
    }

    #[test]
    fn cr8_and_tpr_are_one_register() {
        let mut l = enabled();
        l.set_cr8(0xF);
        assert_eq!(l.read(REG_TPR, 0), 0xF0);
        l.write(REG_TPR, 0x5F, 0);
        assert_eq!(l.cr8(), 5);
        l.set_cr8(5);
        assert_eq!(l.tpr(), 0x5F, "an unchanged class keeps the low bits");
        l.set_cr8(0x13);
        assert_eq!(l.tpr(), 0x30, "CR8 bits above 3 are not the TPR's");
        assert!(l.raise(0x35, false));
        assert_eq!(l.pending(), None);
        assert_eq!(l.tpr_blocked_class(), Some(3));
        l.set_cr8(2);
        assert_eq!(l.pending(), Some(0x35));
        assert_eq!(l.tpr_blocked_class(), None);
    }

    #[test]
    fn extint_passes_when_disabled_or_in_virtual_wire_mode() {
        let bsp = VLapic::new_bsp_virtual_wire(TSC);
        assert!(bsp.accepts_extint());
        let mut l = VLapic::new(0, TSC);
        assert!(!l.accepts_extint(), "reset state: LINT0 masked");
        l.write(REG_SVR, 0x1FF, 0);
        l.write(0x350, 0x700, 0);
        assert!(l.accepts_extint());
        l.write(0x350, 0x1_0700, 0);
        assert!(!l.accepts_extint(), "masked");
        l.write(0x350, 0x000, 0);
        assert!(!l.accepts_extint(), "fixed mode is not ExtINT");
        l.write_msr(MSR_APIC_BASE, XAPIC_BASE | APIC_BASE_BSP, 0)
            .unwrap();
        assert!(
            l.accepts_extint(),
            "globally disabled: INTR goes to the core"
        );
    }
}
