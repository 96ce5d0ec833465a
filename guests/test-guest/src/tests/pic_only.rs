//! The `pic-*` tests (command-line word `pic-only`): a legacy guest that
//! uses nothing but the 8259 pair, the 8254 and the RTC (plus COM1 and the
//! TSC). The local APIC is globally disabled first (IA32_APIC_BASE.EN = 0),
//! so the master PIC's INT output is the CPU's INTR; `pic-virtual-wire`
//! enables it again with LVT LINT0 in ExtINT mode. The IOAPIC is never
//! touched.
//!
//! Time is measured with PIT channel 2 (mode 0 one-shots gated through
//! port 0x61, OUT2 read back at port 0x61 bit 5), the emulator's own notion
//! of time, so that slow emulators do not matter; a TSC bound stops every
//! wait in case channel 2 itself never expires.
//!
//! With `kbd-reset` on the command line too, [`kbd_reset`] runs after the
//! tests: it resets the machine through the 8042 (0xFE to port 0x64).

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::Outcome::Pass;
use super::TestResult;
use crate::msg::Msg;
use crate::{cpu, lapic, msg, out, trap, Env};

const MASTER_CMD: u16 = 0x20;
const MASTER_DATA: u16 = 0x21;
const SLAVE_CMD: u16 = 0xA0;
const SLAVE_DATA: u16 = 0xA1;
/// Vector of IRQ0 and of IRQ8.
pub const MASTER_BASE: u8 = 0x20;
pub const SLAVE_BASE: u8 = 0x28;
/// ICW1: edge triggered, cascade, ICW4 follows.
const ICW1_INIT_ICW4: u8 = 0x11;
/// ICW3: the slave sits on the master's IR2; the slave's identity is 2.
const ICW3_MASTER: u8 = 1 << 2;
const ICW3_SLAVE: u8 = 2;
/// ICW4: 8086 mode, normal EOI, not buffered, not special fully nested.
const ICW4_8086: u8 = 0x01;
/// OCW2 commands.
const OCW2_EOI: u8 = 0x20;
const OCW2_SPECIFIC_EOI: u8 = 0x60;
/// OCW3: read IRR, read ISR on the next read of the command port.
const OCW3_READ_IRR: u8 = 0x0A;
const OCW3_READ_ISR: u8 = 0x0B;
/// Master IR2: the cascade from the slave.
const CASCADE_BIT: u8 = 1 << 2;

const PIT_CH0: u16 = 0x40;
const PIT_CH2: u16 = 0x42;
const PIT_CMD: u16 = 0x43;
const PORT_B: u16 = 0x61;
/// Port 0x61: channel 2 gate, speaker data, OUT2.
const PORT_B_GATE2: u8 = 1 << 0;
const PORT_B_SPEAKER: u8 = 1 << 1;
const PORT_B_OUT2: u8 = 1 << 5;
/// The 8254's input clock, Hz.
const PIT_HZ: u64 = 1_193_182;
/// Channel 0 reload for about 1 kHz (1000.15 Hz).
const PIT_1KHZ: u16 = 1193;

const CMOS_INDEX: u16 = 0x70;
const CMOS_DATA: u16 = 0x71;
const RTC_A: u8 = 0x0A;
const RTC_B: u8 = 0x0B;
const RTC_C: u8 = 0x0C;
/// Register A: the 32.768 kHz time base and rate 6 (1024 Hz periodic).
const RTC_A_DV_32K: u8 = 0x20;
const RTC_A_RATE_1024HZ: u8 = 0x06;
const RTC_PERIODIC_HZ: u64 = 1024;
/// Register B: periodic interrupt enable.
const RTC_B_PIE: u8 = 1 << 6;
/// Register C: interrupt request and periodic flags.
const RTC_C_IRQF: u8 = 1 << 7;
const RTC_C_PF: u8 = 1 << 6;

const KBC_STATUS: u16 = 0x64;
const KBC_STATUS_INPUT_FULL: u8 = 1 << 1;
const KBC_CMD_RESET: u8 = 0xFE;

/// IA32_APIC_BASE's global enable bit.
const APIC_BASE_EN: u64 = 1 << 11;
/// LVT LINT0 and the ExtINT delivery mode.
const REG_LVT_LINT0: u32 = 0x350;
const LVT_EXTINT: u32 = 0x700;

/// How long each rate measurement lasts, and the share of the nominal tick
/// count it must see (interrupts may be lost on a slow emulator, never gained).
const WINDOW_MS: u64 = 50;
const MIN_SHARE_PERCENT: u64 = 40;
const MAX_SHARE_PERCENT: u64 = 150;
/// Ticks the `sti; hlt` loops must see at least.
const MIN_TICKS: u32 = 20;

/// The test that runs first, with the local APIC as the firmware left it
/// (globally enabled): QEMU cannot enable an APIC again once it was
/// globally disabled ("if disabled, cannot be enabled again"), so virtual-wire
/// mode comes before [`enter`] and the rest.
pub const PIC_FIRST_TESTS: &[(&str, super::TestFn)] = &[("pic-virtual-wire", pic_virtual_wire)];

/// The `pic-*` tests run after [`enter`], in this order (the harness lists
/// [`PIC_FIRST_TESTS`], then them).
pub const PIC_ONLY_TESTS: &[(&str, super::TestFn)] = &[
    ("pic-init", pic_init),
    ("pic-pit-irq0", pic_pit_irq0),
    ("pic-rtc-irq8", pic_rtc_irq8),
    ("pic-mask-priority", pic_mask_priority),
];

// ------------------------------------------------------------ interrupt side

/// Set while the pic-only tests own vectors 0x20..0x2F.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Interrupts taken per IRQ line (spurious ones excluded).
static TICKS: [AtomicU32; 16] = [const { AtomicU32::new(0) }; 16];
/// Spurious IRQ7 (master) and IRQ15 (slave): ISR bit 7 clear on entry.
static SPURIOUS_MASTER: AtomicU32 = AtomicU32::new(0);
static SPURIOUS_SLAVE: AtomicU32 = AtomicU32::new(0);
/// Interrupts whose ISR bit (and, for the slave, the master's IR2 bit) was
/// not set when the handler read it.
static WRONG_ISR: AtomicU32 = AtomicU32::new(0);
/// The ISR bytes (master | slave << 8) the handler saw last.
static LAST_ISR: AtomicU32 = AtomicU32::new(0);
/// Lines whose handler leaves the EOI to the test (bit n: IRQ n).
static HOLD_EOI: AtomicU32 = AtomicU32::new(0);
/// RTC register C as the IRQ8 handler read it, and how many reads lacked
/// IRQF or PF.
static RTC_C_SEEN: AtomicU32 = AtomicU32::new(0);
static RTC_C_BAD: AtomicU32 = AtomicU32::new(0);

/// The trap handler's hook for vectors 0x20..0x2F: false when the pic-only
/// tests are not running (the caller then treats the vector as stray).
pub fn irq(vector: u64) -> bool {
    if !ACTIVE.load(Ordering::SeqCst) {
        return false;
    }
    let line = (vector - u64::from(MASTER_BASE)) as usize;
    let master_isr = isr(MASTER_CMD);
    let slave_isr = if line >= 8 { isr(SLAVE_CMD) } else { 0 };
    LAST_ISR.store(
        u32::from(master_isr) | u32::from(slave_isr) << 8,
        Ordering::SeqCst,
    );
    if line == 7 && master_isr & 0x80 == 0 {
        // A spurious IRQ7: nothing is in service, so no EOI.
        SPURIOUS_MASTER.fetch_add(1, Ordering::SeqCst);
        return true;
    }
    if line == 15 && slave_isr & 0x80 == 0 {
        // The slave's spurious IRQ15: the master did see its IR2.
        SPURIOUS_SLAVE.fetch_add(1, Ordering::SeqCst);
        eoi_master();
        return true;
    }
    let in_service = if line < 8 {
        master_isr & (1 << line) != 0
    } else {
        slave_isr & (1 << (line - 8)) != 0 && master_isr & CASCADE_BIT != 0
    };
    if !in_service {
        WRONG_ISR.fetch_add(1, Ordering::SeqCst);
    }
    if line == 8 {
        let c = cmos_read(RTC_C);
        RTC_C_SEEN.store(u32::from(c), Ordering::SeqCst);
        if c & (RTC_C_IRQF | RTC_C_PF) != RTC_C_IRQF | RTC_C_PF {
            RTC_C_BAD.fetch_add(1, Ordering::SeqCst);
        }
    }
    TICKS[line].fetch_add(1, Ordering::SeqCst);
    if HOLD_EOI.load(Ordering::SeqCst) & (1 << line) == 0 {
        if line >= 8 {
            // SAFETY: a non-specific EOI to the slave PIC.
            unsafe { cpu::outb(SLAVE_CMD, OCW2_EOI) };
        }
        eoi_master();
    }
    true
}

fn eoi_master() {
    // SAFETY: a non-specific EOI to the master PIC.
    unsafe { cpu::outb(MASTER_CMD, OCW2_EOI) };
}

fn reset_counters() {
    for t in &TICKS {
        t.store(0, Ordering::SeqCst);
    }
    for c in [
        &SPURIOUS_MASTER,
        &SPURIOUS_SLAVE,
        &WRONG_ISR,
        &LAST_ISR,
        &HOLD_EOI,
        &RTC_C_SEEN,
        &RTC_C_BAD,
        &trap::STRAY_INTERRUPTS,
    ] {
        c.store(0, Ordering::SeqCst);
    }
}

fn ticks(line: usize) -> u32 {
    TICKS[line].load(Ordering::SeqCst)
}

// ------------------------------------------------------------------ devices

fn outb(port: u16, v: u8) {
    // SAFETY: only the PICs, the PIT, port 0x61, the CMOS/RTC and the 8042
    // are written, each as its datasheet allows; nothing else owns them.
    unsafe { cpu::outb(port, v) }
}

fn inb(port: u16) -> u8 {
    // SAFETY: reads of the PICs, PIT, port 0x61, CMOS/RTC and 8042 status
    // registers; the only side effects (OCW3 selection, RTC register C) are
    // the ones the tests want.
    unsafe { cpu::inb(port) }
}

/// Runs `f` with interrupts off, restoring IF afterwards.
fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack (IST stacks keep the red zone
    // safe from interrupt frames).
    unsafe { core::arch::asm!("pushfq", "pop {}", out(reg) flags, options(preserves_flags)) };
    cpu::cli();
    let r = f();
    if flags & (1 << 9) != 0 {
        cpu::sti();
    }
    r
}

fn irr(cmd: u16) -> u8 {
    without_interrupts(|| {
        outb(cmd, OCW3_READ_IRR);
        inb(cmd)
    })
}

fn isr(cmd: u16) -> u8 {
    without_interrupts(|| {
        outb(cmd, OCW3_READ_ISR);
        inb(cmd)
    })
}

/// ICW1..ICW4 on both PICs (master 0x20.., slave 0x28.., slave on IR2,
/// 8086 mode), then the masks.
fn init_pics(master_mask: u8, slave_mask: u8) {
    for (cmd, data, base, icw3) in [
        (MASTER_CMD, MASTER_DATA, MASTER_BASE, ICW3_MASTER),
        (SLAVE_CMD, SLAVE_DATA, SLAVE_BASE, ICW3_SLAVE),
    ] {
        outb(cmd, ICW1_INIT_ICW4);
        outb(data, base);
        outb(data, icw3);
        outb(data, ICW4_8086);
    }
    set_masks(master_mask, slave_mask);
}

fn set_masks(master: u8, slave: u8) {
    outb(MASTER_DATA, master);
    outb(SLAVE_DATA, slave);
}

fn masks() -> (u8, u8) {
    (inb(MASTER_DATA), inb(SLAVE_DATA))
}

/// Everything masked, channel 0 stopped, the RTC's periodic interrupt off,
/// the handler idle.
fn quiet() {
    cpu::cli();
    set_masks(0xFF, 0xFF);
    pit_ch0_stop();
    rtc_periodic(false);
    HOLD_EOI.store(0, Ordering::SeqCst);
}

/// Channel 0 in `mode` (2: rate generator, 0: one-shot) with `count`.
fn pit_ch0(mode: u8, count: u16) {
    outb(PIT_CMD, 0x30 | mode << 1); // channel 0, low then high byte, binary
    outb(PIT_CH0, count as u8);
    outb(PIT_CH0, (count >> 8) as u8);
}

/// A control word without a count: in mode 0 OUT0 goes low and the channel
/// waits for a count that never comes.
fn pit_ch0_stop() {
    outb(PIT_CMD, 0x30);
}

fn cmos_read(reg: u8) -> u8 {
    without_interrupts(|| {
        outb(CMOS_INDEX, reg);
        inb(CMOS_DATA)
    })
}

fn cmos_write(reg: u8, v: u8) {
    without_interrupts(|| {
        outb(CMOS_INDEX, reg);
        outb(CMOS_DATA, v);
    })
}

/// The RTC's periodic interrupt at 1024 Hz on (register C cleared first) or off.
fn rtc_periodic(on: bool) {
    if on {
        cmos_write(RTC_A, RTC_A_DV_32K | RTC_A_RATE_1024HZ);
    }
    let b = cmos_read(RTC_B);
    cmos_write(RTC_B, if on { b | RTC_B_PIE } else { b & !RTC_B_PIE });
    cmos_read(RTC_C);
}

// --------------------------------------------------------------------- time

/// A one-shot of PIT channel 2 (mode 0): OUT2 (port 0x61 bit 5) goes high
/// once the count ran out. A TSC bound ends the wait if it never does.
struct Window {
    tsc_start: u64,
    tsc_cap: u64,
}

impl Window {
    /// Starts a window of `ms` (at most 54 ms: one 16-bit count).
    fn start(env: &Env, ms: u64) -> Self {
        let count = (PIT_HZ * ms / 1000).min(0xFFFF) as u16;
        let b = inb(PORT_B) & 0x0F & !(PORT_B_GATE2 | PORT_B_SPEAKER);
        outb(PORT_B, b); // gate low, speaker off
        outb(PIT_CMD, 0xB0); // channel 2, low then high byte, mode 0, binary
        outb(PIT_CH2, count as u8);
        outb(PIT_CH2, (count >> 8) as u8);
        outb(PORT_B, b | PORT_B_GATE2); // counting starts
                                        // Four times the window at the TSC rate Quercus reports, else at 5 GHz.
        let khz = if env.tsc_khz != 0 {
            u64::from(env.tsc_khz)
        } else {
            5_000_000
        };
        Window {
            tsc_start: cpu::rdtsc(),
            tsc_cap: khz * ms * 4,
        }
    }

    fn expired(&self) -> bool {
        inb(PORT_B) & PORT_B_OUT2 != 0
    }

    /// The TSC bound passed although OUT2 is still low.
    fn overrun(&self) -> bool {
        cpu::rdtsc().wrapping_sub(self.tsc_start) > self.tsc_cap
    }

    /// Done: expired or overrun.
    fn over(&self) -> bool {
        self.expired() || self.overrun()
    }

    fn tsc_elapsed(&self) -> u64 {
        cpu::rdtsc().wrapping_sub(self.tsc_start)
    }
}

/// Spins with interrupts on until `done` or `ms` of channel 2 time passed
/// (successive windows of at most [`WINDOW_MS`]); whether `done` became true.
fn spin_until(env: &Env, ms: u64, done: impl Fn() -> bool) -> bool {
    let mut left = ms;
    cpu::sti();
    while left > 0 && !done() {
        let chunk = left.min(WINDOW_MS);
        let w = Window::start(env, chunk);
        while !done() && !w.over() {
            core::hint::spin_loop();
        }
        left -= chunk;
    }
    cpu::cli();
    done()
}

/// Spins with interrupts on for `ms` (at most [`WINDOW_MS`]) of channel 2 time.
fn spin_for(env: &Env, ms: u64) -> Result<(), Msg> {
    let w = Window::start(env, ms);
    cpu::sti();
    while !w.over() {
        core::hint::spin_loop();
    }
    cpu::cli();
    ensure!(
        w.expired(),
        "PIT channel 2 did not expire in {ms} ms ({} TSC ticks; port 0x61={:#04x})",
        w.tsc_elapsed(),
        inb(PORT_B)
    );
    Ok(())
}

/// The PIC state for failure messages.
struct PicState;

impl core::fmt::Display for PicState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (mm, sm) = masks();
        write!(
            f,
            "master irr={:#04x} isr={:#04x} imr={mm:#04x} slave irr={:#04x} isr={:#04x} imr={sm:#04x}",
            irr(MASTER_CMD),
            isr(MASTER_CMD),
            irr(SLAVE_CMD),
            isr(SLAVE_CMD)
        )
    }
}

/// Counts interrupts on `line` during a [`WINDOW_MS`] window in a
/// `sti; hlt` loop, once a first one arrived (waited for by spinning, so
/// that a machine that never delivers fails instead of hanging); checks the
/// count against `hz` and that nothing else arrived. Returns the count.
fn count_ticks(env: &Env, line: usize, hz: u64) -> Result<u32, Msg> {
    let first = spin_until(env, 4 * WINDOW_MS, || ticks(line) > 0);
    ensure!(
        first,
        "no IRQ{line} (vector {:#x}) within {} ms; {}",
        u64::from(MASTER_BASE) + line as u64,
        4 * WINDOW_MS,
        PicState
    );
    let w = Window::start(env, WINDOW_MS);
    let before = ticks(line);
    while !w.over() {
        // SAFETY: STI's one-instruction shadow makes STI; HLT atomic: the
        // tick that ends the HLT is taken after it, never lost before it.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nostack)) };
    }
    let n = ticks(line) - before;
    let tsc = w.tsc_elapsed();
    ensure!(
        w.expired(),
        "PIT channel 2 did not expire in {WINDOW_MS} ms ({tsc} TSC ticks)"
    );
    let nominal = hz * WINDOW_MS / 1000;
    out!(
        "pic-only: IRQ{line}: {n} interrupts in {WINDOW_MS} ms of PIT channel 2 time (nominal {nominal}), {} TSC ticks per interrupt",
        tsc / u64::from(n.max(1))
    );
    ensure!(
        (nominal * MIN_SHARE_PERCENT / 100..=nominal * MAX_SHARE_PERCENT / 100)
            .contains(&u64::from(n)),
        "IRQ{line}: {n} interrupts in {WINDOW_MS} ms of PIT channel 2 time, expected about {nominal}"
    );
    if env.tsc_khz != 0 {
        // Under Quercus the TSC rate is known: the interrupt rate by the TSC.
        let measured_hz = u64::from(n) * u64::from(env.tsc_khz) * 1000 / tsc.max(1);
        ensure!(
            (hz * MIN_SHARE_PERCENT / 100..=hz * MAX_SHARE_PERCENT / 100).contains(&measured_hz),
            "IRQ{line} at {measured_hz} Hz by the TSC ({} kHz), expected about {hz}",
            env.tsc_khz
        );
    }
    let total = ticks(line);
    ensure!(
        total >= MIN_TICKS,
        "only {total} IRQ{line} interrupts, expected at least {MIN_TICKS}"
    );
    no_strays(line)?;
    Ok(total)
}

/// No interrupt on any line but `expected` and no stray vector.
fn no_strays(expected: usize) -> Result<(), Msg> {
    for (line, t) in TICKS.iter().enumerate() {
        let n = t.load(Ordering::SeqCst);
        ensure!(
            line == expected || n == 0,
            "{n} interrupts on IRQ{line} (vector {:#x}), only IRQ{expected} is unmasked",
            u64::from(MASTER_BASE) + line as u64
        );
    }
    let stray = trap::STRAY_INTERRUPTS.load(Ordering::SeqCst);
    ensure!(stray == 0, "{stray} interrupts on unexpected vectors");
    let wrong = WRONG_ISR.load(Ordering::SeqCst);
    ensure!(
        wrong == 0,
        "{wrong} interrupts without their ISR bit set (last ISR master {:#04x} slave {:#04x})",
        LAST_ISR.load(Ordering::SeqCst) & 0xFF,
        LAST_ISR.load(Ordering::SeqCst) >> 8
    );
    Ok(())
}

// ------------------------------------------------------------------ set-up

/// Arms the interrupt handler for vectors 0x20..0x2F (before any `pic-*` test).
pub fn arm() {
    ACTIVE.store(true, Ordering::SeqCst);
}

/// Enters pic-only mode proper: the local APIC globally disabled (if
/// `pic-virtual-wire` did not leave it so). Prints what it found or did;
/// `pic-init` checks that it is off.
pub fn enter() {
    cpu::cli();
    match apic_base() {
        Ok(base) if base & APIC_BASE_EN == 0 => {
            out!("pic-only: local APIC globally disabled (IA32_APIC_BASE {base:#x})");
        }
        Ok(base) => match disable_lapic() {
            Ok(now) => out!(
                "pic-only: local APIC globally disabled (IA32_APIC_BASE {base:#x} -> {now:#x})"
            ),
            Err(m) => out!("pic-only: {}", m.as_str()),
        },
        Err(m) => out!("pic-only: {}", m.as_str()),
    }
}

fn apic_base() -> Result<u64, Msg> {
    trap::rdmsr_checked(lapic::MSR_APIC_BASE)
        .map_err(|f| msg!("reading IA32_APIC_BASE: exception {}", f.vector))
}

// -------------------------------------------------------------------- tests

/// ICW1..ICW4 on both PICs; IMR cleared by ICW1; OCW1 masks read back;
/// OCW3 selects IRR or ISR for command-port reads; nothing in service; a
/// masked edge is latched in the IRR; and the local APIC is globally off.
fn pic_init(env: &Env) -> TestResult {
    quiet();
    reset_counters();
    // ICW1 clears the IMR (8259A datasheet): with IF clear nothing is taken.
    for (cmd, data, base, icw3) in [
        (MASTER_CMD, MASTER_DATA, MASTER_BASE, ICW3_MASTER),
        (SLAVE_CMD, SLAVE_DATA, SLAVE_BASE, ICW3_SLAVE),
    ] {
        outb(data, 0xA5);
        outb(cmd, ICW1_INIT_ICW4);
        outb(data, base);
        outb(data, icw3);
        outb(data, ICW4_8086);
        let imr = inb(data);
        ensure!(
            imr == 0,
            "IMR at {data:#x} reads {imr:#04x} after ICW1..ICW4, the datasheet says ICW1 clears it"
        );
        outb(data, 0xFF);
    }
    for (m, s) in [(0xFFu8, 0xFFu8), (0xA5, 0x5A), (0xFE, 0xFB), (0xFB, 0xFE)] {
        set_masks(m, s);
        let (rm, rs) = masks();
        ensure!(
            (rm, rs) == (m, s),
            "OCW1 wrote masks {m:#04x}/{s:#04x}, read back {rm:#04x}/{rs:#04x}"
        );
    }
    set_masks(0xFF, 0xFF);
    // OCW3: ISR then IRR, each read twice (the selection sticks).
    for cmd in [MASTER_CMD, SLAVE_CMD] {
        outb(cmd, OCW3_READ_ISR);
        let (a, b) = (inb(cmd), inb(cmd));
        ensure!(
            a == 0 && b == 0,
            "ISR at {cmd:#x} reads {a:#04x}, {b:#04x} with nothing in service"
        );
    }
    // A masked request is still latched in the IRR: channel 0 one-shot.
    pit_ch0(0, 100);
    let w_ok = spin_for(env, 2);
    let irr0 = irr(MASTER_CMD);
    let (again, isr0) = (inb(MASTER_CMD), isr(MASTER_CMD));
    pit_ch0_stop();
    w_ok?;
    ensure!(
        irr0 & 1 != 0,
        "masked IRQ0 after a channel 0 one-shot: master IRR {irr0:#04x}, bit 0 clear"
    );
    ensure!(
        again == irr0,
        "second command-port read after OCW3 read-IRR gave {again:#04x}, first {irr0:#04x}"
    );
    ensure!(isr0 == 0, "master ISR {isr0:#04x} with IRQ0 masked");
    let ticks = ticks(0);
    ensure!(ticks == 0, "{ticks} interrupts on masked IRQ0");
    // Leave the PICs initialised and everything masked for the next tests.
    init_pics(0xFF, 0xFF);
    let base = apic_base()?;
    ensure!(
        base & APIC_BASE_EN == 0,
        "IA32_APIC_BASE {base:#x}: the local APIC is still globally enabled (the PIC checks passed)"
    );
    Ok(Pass)
}

/// PIT channel 0 in mode 2 at about 1 kHz on IRQ0: ticks arrive on vector
/// 0x20 with ISR bit 0 set, are ended by a non-specific EOI, at the rate
/// channel 2 (and, under Quercus, the TSC) says.
fn pic_pit_irq0(env: &Env) -> TestResult {
    quiet();
    reset_counters();
    init_pics(0xFF, 0xFF);
    pit_ch0(2, PIT_1KHZ);
    set_masks(!1, 0xFF);
    let r = count_ticks(env, 0, PIT_HZ / u64::from(PIT_1KHZ));
    quiet();
    r?;
    let (m, s) = (isr(MASTER_CMD), isr(SLAVE_CMD));
    ensure!(
        m == 0 && s == 0,
        "ISR master {m:#04x} slave {s:#04x} after every tick was EOIed"
    );
    Ok(Pass)
}

/// The RTC's periodic interrupt (1024 Hz) through the slave (IR0, vector
/// 0x28) and the master's cascade IR2: register C shows IRQF and PF in each
/// interrupt and reading it clears them.
fn pic_rtc_irq8(env: &Env) -> TestResult {
    quiet();
    reset_counters();
    init_pics(!CASCADE_BIT, 0xFF);
    rtc_periodic(true);
    set_masks(!CASCADE_BIT, !1);
    let r = count_ticks(env, 8, RTC_PERIODIC_HZ).and_then(|_| register_c_clears(env));
    quiet();
    r?;
    let bad = RTC_C_BAD.load(Ordering::SeqCst);
    ensure!(
        bad == 0,
        "{bad} IRQ8 interrupts whose register C lacked IRQF|PF (last {:#04x})",
        RTC_C_SEEN.load(Ordering::SeqCst)
    );
    let (m, s) = (isr(MASTER_CMD), isr(SLAVE_CMD));
    ensure!(
        m == 0 && s == 0,
        "ISR master {m:#04x} slave {s:#04x} after every IRQ8 was EOIed to both"
    );
    Ok(Pass)
}

/// With PIE set and IRQ8 masked at the slave (so that the handler does not
/// read it first), register C shows IRQF|PF after a period and reads 0 right
/// after. (Checked after the interrupts: the edge the RTC raised stays
/// latched in the slave's IRR, and QEMU delivers it on a later unmask although
/// the read withdrew the request.)
fn register_c_clears(env: &Env) -> Result<(), Msg> {
    set_masks(!CASCADE_BIT, 0xFF);
    let mut seen = (0, 0);
    for _ in 0..3 {
        spin_for(env, 3)?;
        let (a, b) = without_interrupts(|| (cmos_read(RTC_C), cmos_read(RTC_C)));
        if a & (RTC_C_IRQF | RTC_C_PF) == RTC_C_IRQF | RTC_C_PF && b & (RTC_C_IRQF | RTC_C_PF) == 0
        {
            return Ok(());
        }
        seen = (a, b);
    }
    fail!(
        "RTC register C read {:#04x} after 3 ms with PIE set, then {:#04x}: expected IRQF|PF, then clear",
        seen.0,
        seen.1
    );
}

/// Masking and priorities: a masked edge waits in the IRR and arrives once
/// unmasked; with IRQ0 in service IRQ8 (on the lower IR2) waits for the EOI
/// (a specific EOI); with IRQ8 in service IRQ0 still arrives; a spurious
/// IRQ7 (ISR bit 7 clear) is not counted and sends no EOI.
fn pic_mask_priority(env: &Env) -> TestResult {
    quiet();
    reset_counters();
    init_pics(0xFF, 0xFF);
    let r = mask_priority_steps(env);
    quiet();
    r?;
    let (m, s) = (isr(MASTER_CMD), isr(SLAVE_CMD));
    ensure!(
        m == 0 && s == 0,
        "ISR master {m:#04x} slave {s:#04x} at the end"
    );
    Ok(Pass)
}

fn mask_priority_steps(env: &Env) -> Result<(), Msg> {
    // 1. A masked edge is latched and arrives once unmasked, exactly once.
    pit_ch0(0, 1193); // one-shot, 1 ms
    spin_for(env, 5)?;
    let n = ticks(0);
    ensure!(n == 0, "{n} interrupts on IRQ0 while masked");
    let irr0 = irr(MASTER_CMD);
    ensure!(
        irr0 & 1 != 0,
        "masked IRQ0 not latched: master IRR {irr0:#04x}"
    );
    set_masks(!1, 0xFF);
    ensure!(
        spin_until(env, 10, || ticks(0) > 0),
        "latched IRQ0 did not arrive once unmasked; {PicState}"
    );
    spin_for(env, 5)?;
    let n = ticks(0);
    ensure!(n == 1, "{n} interrupts from one channel 0 one-shot");

    // 2. IRQ0 in service (EOI held back): IRQ8 behind the master's IR2 waits.
    HOLD_EOI.store(1 << 0, Ordering::SeqCst);
    pit_ch0(0, 1193);
    ensure!(
        spin_until(env, 10, || ticks(0) > 1),
        "second IRQ0 one-shot did not arrive; {PicState}"
    );
    let m = isr(MASTER_CMD);
    ensure!(
        m & 1 != 0,
        "IRQ0 not in service without its EOI: master ISR {m:#04x}"
    );
    rtc_periodic(true);
    set_masks(!(1 | CASCADE_BIT), !1);
    spin_for(env, 10)?;
    let n8 = ticks(8);
    ensure!(
        n8 == 0,
        "{n8} IRQ8 interrupts while the higher priority IRQ0 was in service"
    );
    let (mi, si) = (irr(MASTER_CMD), irr(SLAVE_CMD));
    ensure!(
        mi & CASCADE_BIT != 0 && si & 1 != 0,
        "IRQ8 not pending behind IRQ0: master IRR {mi:#04x}, slave IRR {si:#04x}"
    );

    // 3. A spurious IRQ7 (vector 0x27 with ISR bit 7 clear) is no tick and
    //    sends no EOI: IRQ0 stays in service.
    // SAFETY: vector 0x27 has a gate; the handler only reads the ISR.
    unsafe { core::arch::asm!("int 0x27", options(nostack)) };
    let sp = SPURIOUS_MASTER.load(Ordering::SeqCst);
    let t7 = ticks(7);
    let m = isr(MASTER_CMD);
    ensure!(
        sp == 1 && t7 == 0,
        "vector 0x27 with ISR bit 7 clear: {sp} spurious, {t7} IRQ7 ticks"
    );
    ensure!(
        m & 1 != 0,
        "the spurious IRQ7 handler ended IRQ0: master ISR {m:#04x}"
    );

    // Specific EOI for IR0: IRQ8 comes in.
    outb(MASTER_CMD, OCW2_SPECIFIC_EOI);
    let m = isr(MASTER_CMD);
    ensure!(m & 1 == 0, "specific EOI 0 left master ISR {m:#04x}");
    ensure!(
        spin_until(env, 10, || ticks(8) > 0),
        "IRQ8 did not arrive after IRQ0's EOI; {PicState}"
    );

    // 4. IRQ8 in service (EOI held back): the higher IRQ0 still arrives.
    cpu::cli();
    HOLD_EOI.store(1 << 8, Ordering::SeqCst);
    let t8 = ticks(8);
    ensure!(
        spin_until(env, 10, || ticks(8) > t8),
        "IRQ8 stopped arriving; {PicState}"
    );
    let (m, s) = (isr(MASTER_CMD), isr(SLAVE_CMD));
    ensure!(
        m & CASCADE_BIT != 0 && s & 1 != 0,
        "IRQ8 not in service without its EOI: master ISR {m:#04x}, slave ISR {s:#04x}"
    );
    let t0 = ticks(0);
    pit_ch0(0, 1193);
    ensure!(
        spin_until(env, 10, || ticks(0) > t0),
        "IRQ0 did not preempt the lower priority IRQ8 in service; {PicState}"
    );
    let t8_held = ticks(8);
    spin_for(env, 5)?;
    let t8_now = ticks(8);
    ensure!(
        t8_now == t8_held,
        "IRQ8 arrived again ({t8_held} -> {t8_now}) while in service"
    );
    rtc_periodic(false);
    HOLD_EOI.store(0, Ordering::SeqCst);
    outb(SLAVE_CMD, OCW2_SPECIFIC_EOI);
    outb(MASTER_CMD, OCW2_SPECIFIC_EOI | 2);
    let (m, s) = (isr(MASTER_CMD), isr(SLAVE_CMD));
    ensure!(
        m == 0 && s == 0,
        "specific EOIs 0 (slave) and 2 (master) left ISR master {m:#04x} slave {s:#04x}"
    );
    ensure!(
        SPURIOUS_SLAVE.load(Ordering::SeqCst) == 0,
        "spurious IRQ15 seen"
    );
    let stray = trap::STRAY_INTERRUPTS.load(Ordering::SeqCst);
    ensure!(stray == 0, "{stray} interrupts on unexpected vectors");
    Ok(())
}

/// Virtual-wire mode, with the local APIC as the firmware left it (globally
/// enabled; EN is set if it is not): software-enabled, LVT LINT0 unmasked
/// in ExtINT mode: PIT ticks reach the CPU through it with the PIC's vector;
/// with LINT0 masked they stop. Then LINT0 goes back to unmasked ExtINT (what
/// a BIOS leaves: QEMU still routes the PIC through LINT0 when the APIC is
/// globally disabled) and the APIC is disabled globally.
fn pic_virtual_wire(env: &Env) -> TestResult {
    quiet();
    reset_counters();
    init_pics(0xFF, 0xFF);
    let base = apic_base()?;
    if base & APIC_BASE_EN == 0 {
        // SAFETY: sets EN (xAPIC mode, the default base): the LAPIC comes
        // back in its reset state; a #GP is caught and reported.
        unsafe { trap::wrmsr_checked(lapic::MSR_APIC_BASE, base | APIC_BASE_EN) }
            .map_err(|f| msg!("setting IA32_APIC_BASE.EN: exception {}", f.vector))?;
    }
    let r = virtual_wire_steps(env);
    quiet();
    if apic_base().is_ok_and(|b| b & APIC_BASE_EN != 0) && lapic::map() {
        lapic::write(REG_LVT_LINT0, LVT_EXTINT);
    }
    lapic::shutdown();
    let back = disable_lapic();
    r?;
    let back = back?;
    ensure!(
        back & APIC_BASE_EN == 0,
        "IA32_APIC_BASE {back:#x} after clearing EN"
    );
    Ok(Pass)
}

/// Clears IA32_APIC_BASE.EN; the value read back after.
fn disable_lapic() -> Result<u64, Msg> {
    let b = apic_base()?;
    // SAFETY: clearing EN (xAPIC mode, the LAPIC unmapped and unused) turns
    // the local APIC off; a #GP is caught and reported.
    unsafe { trap::wrmsr_checked(lapic::MSR_APIC_BASE, b & !APIC_BASE_EN) }.map_err(|f| {
        msg!(
            "clearing IA32_APIC_BASE.EN ({b:#x}): exception {}",
            f.vector
        )
    })?;
    apic_base()
}

fn virtual_wire_steps(env: &Env) -> Result<(), Msg> {
    let base = apic_base()?;
    ensure!(
        base & APIC_BASE_EN != 0,
        "IA32_APIC_BASE {base:#x}: EN did not stick"
    );
    ensure!(lapic::map(), "cannot map the LAPIC at {:#x}", lapic::BASE);
    lapic::write(
        lapic::REG_SVR,
        lapic::SVR_ENABLE | trap::SPURIOUS_VECTOR as u32,
    );
    lapic::write(lapic::REG_TPR, 0);
    lapic::write(REG_LVT_LINT0, LVT_EXTINT);
    let lint0 = lapic::read(REG_LVT_LINT0);
    ensure!(
        lint0 & (lapic::LVT_MASKED | 0x700) == LVT_EXTINT,
        "LVT LINT0 reads {lint0:#x} after writing {LVT_EXTINT:#x}"
    );
    pit_ch0(2, PIT_1KHZ);
    set_masks(!1, 0xFF);
    count_ticks(env, 0, PIT_HZ / u64::from(PIT_1KHZ))?;
    // LINT0 masked: the PIC's INT no longer reaches the CPU. The 8259 is
    // masked while LINT0 changes, so that no request is on its way to the
    // core meanwhile (QEMU 7.2 then delivers a garbage vector: #GP with
    // error code 0xfff...f2 on the next STI).
    cpu::cli();
    set_masks(0xFF, 0xFF);
    lapic::write(REG_LVT_LINT0, lapic::LVT_MASKED | LVT_EXTINT);
    set_masks(!1, 0xFF);
    let before = ticks(0);
    spin_for(env, 20)?;
    let after = ticks(0);
    if after > before + 1 {
        // Bochs delivers the PIC's INTR to the CPU whatever LINT0 says; a
        // hypervisor's local APIC must follow the SDM.
        ensure!(
            env.native,
            "{} IRQ0 interrupts in 20 ms with LVT LINT0 masked",
            after - before
        );
        out!(
            "pic-only: the native CPU ignores the LVT LINT0 mask: {} IRQ0 interrupts in 20 ms (an emulator's deviation; checked only under a hypervisor)",
            after - before
        );
    } else {
        let m = irr(MASTER_CMD);
        ensure!(
            m & 1 != 0,
            "IRQ0 not pending at the PIC while LINT0 is masked: master IRR {m:#04x}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- kbd-reset

/// Resets the machine through the 8042 (command 0xFE at port 0x64): prints
/// `TEST kbd-reset ARMED` first; a reset boots the guest again (its banner
/// shows up a second time). Without a reset within about 1 s it prints
/// `TEST kbd-reset FAIL no reset` and powers off.
pub fn kbd_reset(env: &Env) -> ! {
    out!("TEST kbd-reset ARMED");
    crate::drain_serial();
    cpu::cli();
    let mut polls = 0u32;
    while inb(KBC_STATUS) & KBC_STATUS_INPUT_FULL != 0 && polls < 100_000 {
        polls += 1;
        core::hint::spin_loop();
    }
    outb(KBC_STATUS, KBC_CMD_RESET);
    // About 1 s: twenty 50 ms windows of channel 2.
    for _ in 0..20 {
        let w = Window::start(env, WINDOW_MS);
        while !w.over() {
            core::hint::spin_loop();
        }
    }
    out!(
        "TEST kbd-reset FAIL no reset (8042 status {:#04x})",
        inb(KBC_STATUS)
    );
    crate::power_off(false)
}
