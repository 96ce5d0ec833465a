//! The `arch-*` tests (command-line word `arch`, run alone): what a guest
//! probing the architecture must see according to the Intel SDM and the AMD
//! APM: IA32_APIC_BASE state transitions and relocation, the xAPIC page in
//! x2APIC mode, the APIC ID, LAPIC timer mode switches, CR8, NMI delivery,
//! single-stepping exiting instructions, MSRs of advertised features, ALU
//! instructions on MMIO, and the Multiboot information.
//!
//! Each runs natively (the emulator's own CPU) and under Quercus. Where an
//! emulator itself departs from the SDM/APM, the test says so and checks
//! what that emulator does, recognised by [`Cpu::detect`]; under Quercus
//! (and any other hypervisor) the architectural behaviour is required.
//! Every test starts from, and leaves, the LAPIC in xAPIC mode at its
//! default base with interrupts off.

use core::fmt::Write as _;
use core::sync::atomic::Ordering;

use super::Outcome::{Pass, Skip};
use super::{rd, tsc_bound_ms, wr, FaultText, TestFn, TestResult};
use crate::cpu::{self, cpuid, mmio_read32, mmio_write32};
use crate::msg::{Ascii, Msg};
use crate::trap::{self, Fault};
use crate::{acpi, lapic, msg, Env};

/// The `arch-*` tests in the order they run: the ones that switch to x2APIC
/// mode or disable the LAPIC last (Bochs cannot undo either without a
/// reset; those tests then start from where the previous one left it).
pub const ARCH_TESTS: &[(&str, TestFn)] = &[
    ("arch-cpuid-msrs", cpuid_msrs),
    ("arch-mmio-alu", mmio_alu),
    ("arch-cr8-tpr", cr8_tpr),
    ("arch-single-step", single_step),
    ("arch-nmi-pair", nmi_pair),
    ("arch-timer-mode", timer_mode),
    ("arch-amd-perfctr", amd_perfctr),
    ("arch-multiboot", multiboot),
    ("arch-apic-relocate", apic_relocate),
    ("arch-apic-id", apic_id),
    ("arch-x2apic-mmio", x2apic_mmio),
    ("arch-apic-disable", apic_disable),
];

/// IA32_APIC_BASE bits.
const MSR_APIC_BASE: u32 = lapic::MSR_APIC_BASE;
const APIC_EN: u64 = 1 << 11;
const APIC_EXTD: u64 = lapic::APIC_BASE_EXTD;
const APIC_BSP: u64 = 1 << 8;

/// xAPIC register offsets beyond those in `lapic`.
const REG_VERSION: u32 = 0x30;
const REG_LVT_LINT0: u32 = 0x350;
const REG_LVT_LINT1: u32 = 0x360;
const REG_LVT_ERROR: u32 = 0x370;
/// x2APIC MSRs.
const X2APIC_ID: u32 = 0x802;
const X2APIC_VERSION: u32 = 0x803;
const X2APIC_TPR: u32 = 0x808;
/// ICR low word of an NMI (delivery mode 100b, level assert, physical, no shorthand).
const ICR_NMI: u32 = 0x4400;

/// Which CPU the guest runs on, as far as the tests care.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cpu {
    /// QEMU's TCG booting the guest itself (signature "TCGTCGTCGTCG").
    QemuTcg,
    /// Bochs booting the guest itself (no hypervisor bit).
    Bochs,
    /// Quercus, or any other CPU: the SDM/APM apply.
    Architectural,
}

impl Cpu {
    fn detect(env: &Env) -> Self {
        if env.native && env.hv_signature == *b"TCGTCGTCGTCG" {
            Cpu::QemuTcg
        } else if env.native && !env.hv_bit {
            Cpu::Bochs
        } else {
            Cpu::Architectural
        }
    }
}

fn has_x2apic() -> bool {
    cpuid(1, 0).ecx & (1 << 21) != 0
}

fn has_tsc_deadline() -> bool {
    cpuid(1, 0).ecx & (1 << 24) != 0
}

/// CPUID 0x80000008 EAX[7:0] (36 without the leaf).
fn max_phys_bits() -> u32 {
    if cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        cpuid(0x8000_0008, 0).eax & 0xFF
    } else {
        36
    }
}

/// The initial APIC ID: CPUID 0xB EDX (32 bits) when the leaf exists, else CPUID.1:EBX[31:24].
fn initial_apic_id() -> u32 {
    if cpuid(0, 0).eax >= 0xB && cpuid(0xB, 0).ebx & 0xFFFF != 0 {
        cpuid(0xB, 0).edx
    } else {
        cpuid(1, 0).ebx >> 24
    }
}

/// Reads xAPIC register `reg` on the page at `base` with one MOV.
fn xrd(base: u64, reg: u32) -> u32 {
    // SAFETY: `base` is inside the LAPIC window `lapic::map` mapped (the 2 MiB
    // page at 0xFEE00000, uncached, no RAM); a read of a LAPIC register or
    // of an unclaimed address has no side effect.
    unsafe { mmio_read32(base + u64::from(reg)) }
}

/// Writes xAPIC register `reg` on the page at `base` with one MOV.
fn xwr(base: u64, reg: u32, v: u32) {
    // SAFETY: as in `xrd`; callers write only registers (TPR, ID, SVR, LVT,
    // timer, ICR) whose effect the test intends, or unclaimed addresses.
    unsafe { mmio_write32(base + u64::from(reg), v) }
}

fn x2rd(msr: u32) -> Result<u64, Msg> {
    rd(msr)
}

/// WRMSR IA32_APIC_BASE that may #GP.
fn try_base(v: u64) -> Result<(), Fault> {
    // SAFETY: every value written is either rejected (#GP, skipped) or a
    // mode/base of the LAPIC that the calling test expects and undoes; no
    // interrupt is enabled meanwhile.
    unsafe { trap::wrmsr_checked(MSR_APIC_BASE, v) }
}

fn set_base(v: u64) -> Result<(), Msg> {
    try_base(v).map_err(|f| msg!("IA32_APIC_BASE <- {v:#x}: {}", FaultText(f)))
}

/// The write of `v` must raise #GP and leave IA32_APIC_BASE at `before`.
fn base_gp(what: &str, v: u64, before: u64) -> Result<(), Msg> {
    match try_base(v) {
        Err(f) if f.vector == trap::GP => {}
        Err(f) => fail!(
            "{what}: IA32_APIC_BASE <- {v:#x}: {} instead of #GP",
            FaultText(f)
        ),
        Ok(()) => {
            let now = rd(MSR_APIC_BASE)?;
            // Put back what was there (through `disabled` if needed).
            restore_xapic(before)?;
            fail!("{what}: IA32_APIC_BASE <- {v:#x} accepted (reads {now:#x}) instead of #GP")
        }
    }
    let now = rd(MSR_APIC_BASE)?;
    ensure!(
        now == before,
        "{what}: after the #GP IA32_APIC_BASE reads {now:#x}, was {before:#x}"
    );
    Ok(())
}

/// Puts the LAPIC in xAPIC mode with IA32_APIC_BASE = `base` (EN set,
/// EXTD clear), through the disabled state if it is in x2APIC mode.
fn restore_xapic(base: u64) -> Result<(), Msg> {
    let now = rd(MSR_APIC_BASE)?;
    if now == base {
        return Ok(());
    }
    if now & APIC_EXTD != 0 {
        set_base(now & !(APIC_EN | APIC_EXTD))?;
    }
    set_base(base)?;
    let back = rd(MSR_APIC_BASE)?;
    ensure!(
        back == base,
        "IA32_APIC_BASE reads {back:#x} after restoring {base:#x}"
    );
    Ok(())
}

/// Common start: interrupts off, the LAPIC window mapped, xAPIC mode at
/// 0xFEE00000. Returns the IA32_APIC_BASE value of that state.
fn start() -> Result<u64, Msg> {
    cpu::cli();
    ensure!(lapic::map(), "cannot map the LAPIC at {:#x}", lapic::BASE);
    let now = rd(MSR_APIC_BASE)?;
    let base = lapic::BASE | (now & APIC_BSP) | APIC_EN;
    restore_xapic(base)?;
    Ok(base)
}

/// Like [`start`], but on Bochs, which cannot leave x2APIC mode once in it
/// (see [`apic_disable`]), an LAPIC already in x2APIC mode stays there.
/// Returns the xAPIC-mode IA32_APIC_BASE value and the current one.
fn start_any(env: &Env) -> Result<(u64, u64), Msg> {
    cpu::cli();
    ensure!(lapic::map(), "cannot map the LAPIC at {:#x}", lapic::BASE);
    let now = rd(MSR_APIC_BASE)?;
    let base = lapic::BASE | (now & APIC_BSP) | APIC_EN;
    if now == base | APIC_EXTD && !can_leave_x2apic(env) {
        return Ok((base, now));
    }
    restore_xapic(base)?;
    Ok((base, base))
}

/// Whether x2APIC mode can be left (through the disabled state) without a
/// reset. Bochs ignores every IA32_APIC_BASE write once EN is clear, so
/// there x2APIC mode, once entered, lasts until the end of the run.
fn can_leave_x2apic(env: &Env) -> bool {
    Cpu::detect(env) != Cpu::Bochs
}

/// Back to xAPIC mode after an x2APIC excursion, where the CPU can.
fn leave_x2apic(env: &Env, base: u64) -> Result<(), Msg> {
    if can_leave_x2apic(env) {
        restore_xapic(base)
    } else {
        Ok(())
    }
}

/// A plausible LAPIC version register: version 0x10..=0x15 (integrated
/// APIC), at least 3 LVT entries.
fn looks_like_version(v: u32) -> bool {
    (0x10..=0x15).contains(&(v & 0xFF)) && (v >> 16) & 0xFF >= 2 && v != u32::MAX
}

/// Spins until `read()` differs from `prev` (about `bound` TSC ticks at most); the new value.
fn until_changed(bound: u64, prev: u32, read: impl Fn() -> u32) -> u32 {
    let t0 = cpu::rdtsc();
    loop {
        let v = read();
        if v != prev || cpu::rdtsc().wrapping_sub(t0) > bound {
            return v;
        }
    }
}

// ---------------------------------------------------------------- APIC base

/// SDM 10.12.5 (Intel) / APM 16.3 (AMD): the legal and illegal transitions
/// of IA32_APIC_BASE. xAPIC -> disabled -> xAPIC (reset state) -> x2APIC ->
/// (xAPIC: #GP) -> disabled (-> x2APIC: #GP) -> xAPIC; EN=0 with EXTD=1 and
/// reserved bits #GP.
///
/// QEMU 7.2's TCG departs from this: its IA32_APIC_BASE never #GPs, ignores
/// bits 0-7, 9 and 10, and clearing EN disables the LAPIC until the next
/// reset (it cannot be re-enabled: the CPUID APIC bit is cleared too). There
/// the test checks only what is reversible: reserved low bits are dropped
/// without a #GP and the LAPIC stays enabled.
fn apic_disable(env: &Env) -> TestResult {
    let (base, now) = start_any(env)?;
    if Cpu::detect(env) == Cpu::Bochs {
        return apic_disable_bochs(base, now);
    }
    let version = xrd(lapic::BASE, REG_VERSION);
    ensure!(
        looks_like_version(version),
        "VERSION reads {version:#x} in xAPIC mode"
    );
    if Cpu::detect(env) == Cpu::QemuTcg {
        for bit in [0u32, 9] {
            let v = base | 1 << bit;
            set_base(v)?;
            let back = rd(MSR_APIC_BASE)?;
            ensure!(
                back == base,
                "QEMU: IA32_APIC_BASE <- {v:#x} reads back {back:#x}, expected {base:#x}"
            );
        }
        return Ok(Pass);
    }
    let maxphy = max_phys_bits();
    for (what, bit) in [
        ("reserved bit 0", 0u32),
        ("reserved bit 7", 7),
        ("reserved bit 9", 9),
        ("reserved bit MAXPHYADDR", maxphy),
    ] {
        if bit < 64 {
            base_gp(what, base | 1 << bit, base)?;
        }
    }
    base_gp("EN=0 EXTD=1", (base & !APIC_EN) | APIC_EXTD, base)?;

    // xAPIC -> disabled: the page stops answering.
    let disabled = base & !APIC_EN;
    set_base(disabled)?;
    let back = rd(MSR_APIC_BASE)?;
    let gone = xrd(lapic::BASE, REG_VERSION);
    if back != disabled || gone == version {
        restore_xapic(base)?;
    }
    ensure!(
        back == disabled,
        "xAPIC -> disabled: IA32_APIC_BASE reads {back:#x}, wrote {disabled:#x}"
    );
    ensure!(
        gone != version,
        "disabled LAPIC: VERSION still reads {gone:#x} at {:#x}",
        lapic::BASE
    );
    if let Err(m) = base_gp("disabled -> x2APIC", base | APIC_EXTD, disabled) {
        restore_xapic(base)?;
        return Err(m);
    }

    // disabled -> xAPIC: back in its reset state.
    set_base(base)?;
    let back = rd(MSR_APIC_BASE)?;
    ensure!(
        back == base,
        "disabled -> xAPIC: IA32_APIC_BASE reads {back:#x}, wrote {base:#x}"
    );
    let v = xrd(lapic::BASE, REG_VERSION);
    ensure!(
        v == version,
        "re-enabled LAPIC: VERSION reads {v:#x}, was {version:#x}"
    );
    let svr = xrd(lapic::BASE, lapic::REG_SVR);
    ensure!(
        svr == 0xFF,
        "re-enabled LAPIC: SVR {svr:#x}, reset value 0xff"
    );
    for (name, reg) in [
        ("timer", lapic::REG_LVT_TIMER),
        ("LINT0", REG_LVT_LINT0),
        ("LINT1", REG_LVT_LINT1),
        ("error", REG_LVT_ERROR),
    ] {
        let lvt = xrd(lapic::BASE, reg);
        ensure!(
            lvt & lapic::LVT_MASKED != 0,
            "re-enabled LAPIC: LVT {name} {lvt:#x} not masked"
        );
    }

    if !has_x2apic() {
        ensure!(env.native, "CPUID.1:ECX[21] (x2APIC) clear");
        return Ok(Pass);
    }
    let x2 = base | APIC_EXTD;
    set_base(x2)?;
    let back = rd(MSR_APIC_BASE)?;
    if back != x2 {
        restore_xapic(base)?;
        fail!("xAPIC -> x2APIC: IA32_APIC_BASE reads {back:#x}, wrote {x2:#x}");
    }
    if let Err(m) = base_gp("x2APIC -> xAPIC", base, x2) {
        restore_xapic(base)?;
        return Err(m);
    }
    set_base(disabled)?;
    let back = rd(MSR_APIC_BASE)?;
    restore_xapic(base)?;
    ensure!(
        back == disabled,
        "x2APIC -> disabled: IA32_APIC_BASE reads {back:#x}, wrote {disabled:#x}"
    );
    Ok(Pass)
}

/// Bochs 2.7 #GPs on reserved bits and illegal mode changes, but once EN is
/// clear it ignores every IA32_APIC_BASE write (no #GP) until a reset:
/// disabled -> xAPIC and disabled -> x2APIC both leave it disabled. Checked
/// there, from the mode the previous tests left (x2APIC where the model has
/// it): reserved bits, EN=0 with EXTD=1 and x2APIC -> xAPIC #GP; -> disabled
/// is legal and the xAPIC page stops answering; later writes are ignored.
fn apic_disable_bochs(base: u64, now: u64) -> TestResult {
    let x2 = now & APIC_EXTD != 0;
    let version = if x2 {
        rd(X2APIC_VERSION)? as u32
    } else {
        xrd(lapic::BASE, REG_VERSION)
    };
    ensure!(
        looks_like_version(version),
        "Bochs: VERSION reads {version:#x} (x2APIC mode: {x2})"
    );
    for (what, bit) in [
        ("reserved bit 0", 0u32),
        ("reserved bit 7", 7),
        ("reserved bit 9", 9),
        ("reserved bit MAXPHYADDR", max_phys_bits()),
    ] {
        if bit < 64 {
            base_gp(what, now | 1 << bit, now)?;
        }
    }
    base_gp("EN=0 EXTD=1", (now & !APIC_EN) | APIC_EXTD, now)?;
    if x2 {
        base_gp("x2APIC -> xAPIC", base, now)?;
    }
    let disabled = base & !APIC_EN;
    set_base(disabled)?;
    let back = rd(MSR_APIC_BASE)?;
    let gone = xrd(lapic::BASE, REG_VERSION);
    ensure!(
        back == disabled,
        "-> disabled: IA32_APIC_BASE reads {back:#x}, wrote {disabled:#x}"
    );
    ensure!(
        gone != version,
        "disabled LAPIC: VERSION still reads {gone:#x} at {:#x}",
        lapic::BASE
    );
    for v in [base, base | APIC_EXTD] {
        set_base(v)?;
        let back = rd(MSR_APIC_BASE)?;
        ensure!(
            back == disabled,
            "Bochs: IA32_APIC_BASE <- {v:#x} while disabled reads {back:#x}, expected it ignored ({disabled:#x})"
        );
    }
    Ok(Pass)
}

/// Where `arch-apic-relocate` moves the xAPIC page: inside the LAPIC's 2 MiB
/// window, a page nothing else decodes natively or under Quercus.
const RELOCATED: u64 = 0xFEE1_0000;

/// The xAPIC page moves with IA32_APIC_BASE: the registers answer at the new
/// page and no longer at the old one; then it moves back.
///
/// QEMU 7.2's TCG does not relocate (it logs "APIC base relocation is
/// unsupported by QEMU"): the MSR reads back the new base but the registers
/// keep answering at 0xFEE00000. That is what is checked there.
fn apic_relocate(env: &Env) -> TestResult {
    let base = start()?;
    let version = xrd(lapic::BASE, REG_VERSION);
    ensure!(
        looks_like_version(version),
        "VERSION reads {version:#x} in xAPIC mode"
    );
    let moved = RELOCATED | (base & 0xFFF);
    set_base(moved)?;
    let back = rd(MSR_APIC_BASE)?;
    let at_new = xrd(RELOCATED, REG_VERSION);
    let at_old = xrd(lapic::BASE, REG_VERSION);
    // The TPR round trip at the new page.
    xwr(RELOCATED, lapic::REG_TPR, 0x30);
    let tpr_new = xrd(RELOCATED, lapic::REG_TPR);
    xwr(RELOCATED, lapic::REG_TPR, 0);
    set_base(base)?;
    let restored = xrd(lapic::BASE, REG_VERSION);
    ensure!(
        back == moved,
        "IA32_APIC_BASE reads {back:#x} after writing {moved:#x}"
    );
    ensure!(
        restored == version,
        "moved back: VERSION at {:#x} reads {restored:#x}, was {version:#x}",
        lapic::BASE
    );
    if Cpu::detect(env) == Cpu::QemuTcg {
        ensure!(
            at_old == version,
            "QEMU: VERSION at the old page reads {at_old:#x}, expected {version:#x} (QEMU does not relocate)"
        );
        return Ok(Pass);
    }
    ensure!(
        at_new == version,
        "VERSION at the new page {RELOCATED:#x} reads {at_new:#x}, expected {version:#x}"
    );
    ensure!(
        tpr_new == 0x30,
        "TPR at the new page: wrote 0x30, read {tpr_new:#x}"
    );
    ensure!(
        at_old != version,
        "VERSION still answers at the old page {:#x} ({at_old:#x})",
        lapic::BASE
    );
    Ok(Pass)
}

/// In x2APIC mode the xAPIC page does not answer: an MMIO TPR write leaves
/// the x2APIC TPR alone, MMIO reads of VERSION and ID do not return them.
fn x2apic_mmio(env: &Env) -> TestResult {
    if !has_x2apic() {
        ensure!(env.native, "CPUID.1:ECX[21] (x2APIC) clear");
        return Ok(Skip("native CPU has no x2APIC"));
    }
    let (base, now) = start_any(env)?;
    if now == base {
        xwr(lapic::BASE, lapic::REG_TPR, 0);
        set_base(base | APIC_EXTD)?;
    }
    let r = (|| -> Result<(), Msg> {
        let tpr0 = x2rd(X2APIC_TPR)?;
        xwr(lapic::BASE, lapic::REG_TPR, 0x70);
        let tpr1 = x2rd(X2APIC_TPR)?;
        let id = x2rd(X2APIC_ID)? as u32;
        let version = x2rd(X2APIC_VERSION)? as u32;
        let mmio_id = xrd(lapic::BASE, lapic::REG_ID);
        let mmio_version = xrd(lapic::BASE, REG_VERSION);
        ensure!(
            looks_like_version(version),
            "x2APIC mode: MSR 0x803 (version) reads {version:#x}"
        );
        ensure!(
            tpr1 == tpr0,
            "x2APIC mode: an MMIO TPR write of 0x70 changed MSR 0x808 from {tpr0:#x} to {tpr1:#x}"
        );
        ensure!(
            mmio_version != version,
            "x2APIC mode: MMIO VERSION reads {mmio_version:#x}, the version"
        );
        ensure!(
            id == 0 || mmio_id != id << 24,
            "x2APIC mode: MMIO ID reads {mmio_id:#x}, the ID"
        );
        Ok(())
    })();
    // The checks' verdict first: a failed way back says less.
    let left = leave_x2apic(env, base);
    r?;
    left?;
    Ok(Pass)
}

/// A new xAPIC ID written through MMIO leaves the x2APIC ID (MSR 0x802
/// after the switch) at the initial APIC ID, and CPUID's too.
fn apic_id(env: &Env) -> TestResult {
    // (Bochs stays in x2APIC mode afterwards: see `can_leave_x2apic`.)
    let base = start()?;
    let initial = initial_apic_id();
    let id0 = xrd(lapic::BASE, lapic::REG_ID) >> 24;
    ensure!(
        id0 == initial & 0xFF,
        "xAPIC ID {id0:#x}, initial APIC ID {initial:#x}"
    );
    let new = id0 ^ 0x5;
    xwr(lapic::BASE, lapic::REG_ID, new << 24);
    let back = xrd(lapic::BASE, lapic::REG_ID) >> 24;
    let cpuid_id = cpuid(1, 0).ebx >> 24;
    // Bochs's xAPIC ID register is read-only: the write is dropped there.
    let want = if Cpu::detect(env) == Cpu::Bochs {
        id0
    } else {
        new
    };
    ensure!(
        back == want,
        "xAPIC ID: wrote {new:#x}, reads {back:#x} (expected {want:#x})"
    );
    ensure!(
        cpuid_id == initial & 0xFF,
        "CPUID.1:EBX[31:24] {cpuid_id:#x} after the ID write, initial {initial:#x}"
    );
    if !has_x2apic() {
        xwr(lapic::BASE, lapic::REG_ID, id0 << 24);
        ensure!(env.native, "CPUID.1:ECX[21] (x2APIC) clear");
        return Ok(Pass);
    }
    set_base(base | APIC_EXTD)?;
    let x2id = x2rd(X2APIC_ID);
    let left = leave_x2apic(env, base);
    let x2id = x2id? as u32;
    ensure!(
        x2id == initial,
        "x2APIC ID {x2id:#x} after the xAPIC ID was set to {new:#x}; initial APIC ID {initial:#x}"
    );
    left?;
    if can_leave_x2apic(env) {
        xwr(lapic::BASE, lapic::REG_ID, id0 << 24);
        let again = xrd(lapic::BASE, lapic::REG_ID) >> 24;
        ensure!(
            again == id0,
            "xAPIC ID reads {again:#x} after restoring {id0:#x}"
        );
    }
    Ok(Pass)
}

// ---------------------------------------------------------------- timer

/// LVT timer mode field (bits 18:17).
const TIMER_PERIODIC: u32 = 1 << 17;
const TIMER_TSC_DEADLINE: u32 = 2 << 17;
/// Divide configuration 0b1011: divide by 1.
const DIVIDE_1: u32 = 0xB;
const TIMER_INITIAL: u32 = 0x4000_0000;
const MSR_TSC_DEADLINE: u32 = 0x6E0;

/// One-shot -> periodic -> one-shot keeps the initial count and the
/// countdown going (SDM 10.5.4); a switch to TSC-deadline mode disarms the
/// timer (current count 0), and so does the switch back.
fn timer_mode(env: &Env) -> TestResult {
    start()?;
    let b = lapic::BASE;
    let bound = tsc_bound_ms(env, 200);
    let masked = lapic::LVT_MASKED | trap::TIMER_VECTOR as u32;
    xwr(
        b,
        lapic::REG_SVR,
        lapic::SVR_ENABLE | trap::SPURIOUS_VECTOR as u32,
    );
    xwr(b, lapic::REG_TIMER_DIVIDE, DIVIDE_1);
    xwr(b, lapic::REG_LVT_TIMER, masked);
    xwr(b, lapic::REG_TIMER_INITIAL, TIMER_INITIAL);
    let cur = || xrd(lapic::BASE, lapic::REG_TIMER_CURRENT);
    let r = (|| -> Result<(), Msg> {
        let c1 = cur();
        let c2 = until_changed(bound, c1, cur);
        ensure!(
            c2 != 0 && c2 < c1 && c1 <= TIMER_INITIAL,
            "one-shot: current count {c1:#x} then {c2:#x} (initial {TIMER_INITIAL:#x})"
        );
        for (what, mode) in [("periodic", TIMER_PERIODIC), ("one-shot", 0)] {
            let before = cur();
            xwr(b, lapic::REG_LVT_TIMER, masked | mode);
            let after = cur();
            let later = until_changed(bound, after, cur);
            let initial = xrd(b, lapic::REG_TIMER_INITIAL);
            ensure!(
                after != 0 && after <= before,
                "switch to {what}: current count {before:#x} before, {after:#x} right after"
            );
            ensure!(
                later != 0 && later < after,
                "after the switch to {what} the count went {after:#x} -> {later:#x}"
            );
            ensure!(
                initial == TIMER_INITIAL,
                "after the switch to {what} the initial count reads {initial:#x}"
            );
        }
        if !has_tsc_deadline() {
            ensure!(env.native, "CPUID.1:ECX[24] (TSC-deadline timer) clear");
            return Ok(());
        }
        xwr(b, lapic::REG_LVT_TIMER, masked | TIMER_TSC_DEADLINE);
        let c = cur();
        // Bochs's IA32_TSC_DEADLINE reads a stale non-zero value here (as
        // it does after the timer fired): only the current count is
        // checked there.
        let deadline = match Cpu::detect(env) {
            Cpu::Bochs => 0,
            _ => rd(MSR_TSC_DEADLINE)?,
        };
        ensure!(
            c == 0,
            "in TSC-deadline mode the current count reads {c:#x}, expected 0 (disarmed)"
        );
        ensure!(
            deadline == 0,
            "IA32_TSC_DEADLINE reads {deadline:#x} after the switch, expected 0"
        );
        xwr(b, lapic::REG_LVT_TIMER, masked);
        let c = cur();
        // Bochs does not disarm the one-shot countdown on the way into
        // TSC-deadline mode (it only reads the current count as 0 there):
        // back in one-shot mode the old countdown goes on. Checked there.
        if Cpu::detect(env) == Cpu::Bochs {
            ensure!(
                c != 0,
                "Bochs: back in one-shot mode from TSC-deadline the current count reads 0"
            );
            return Ok(());
        }
        ensure!(
            c == 0,
            "back in one-shot mode from TSC-deadline: current count {c:#x}, expected 0 (disarmed)"
        );
        Ok(())
    })();
    xwr(b, lapic::REG_TIMER_INITIAL, 0);
    xwr(b, lapic::REG_LVT_TIMER, masked);
    r?;
    Ok(Pass)
}

// ---------------------------------------------------------------- CR8

fn read_cr8() -> u64 {
    let v: u64;
    // SAFETY: reading CR8 at CPL 0 in long mode has no side effect.
    unsafe {
        core::arch::asm!("mov {}, cr8", out(reg) v, options(nostack, nomem, preserves_flags))
    };
    v
}

fn write_cr8(v: u64) {
    // SAFETY: CR8 is the task priority; interrupts are off in these tests
    // and the priority is put back to 0.
    unsafe { core::arch::asm!("mov cr8, {}", in(reg) v, options(nostack, nomem, preserves_flags)) };
}

/// CR8 is TPR[7:4] (SDM 10.8.6.1): `mov cr8, 0xf` reads back as TPR 0xF0,
/// TPR 0x5F as CR8 5, TPR 0 as CR8 0.
fn cr8_tpr(_env: &Env) -> TestResult {
    start()?;
    let b = lapic::BASE;
    write_cr8(0xF);
    let tpr = xrd(b, lapic::REG_TPR);
    xwr(b, lapic::REG_TPR, 0x5F);
    let cr8 = read_cr8();
    xwr(b, lapic::REG_TPR, 0);
    let cr8_zero = read_cr8();
    let tpr_zero = xrd(b, lapic::REG_TPR);
    ensure!(
        tpr == 0xF0,
        "mov cr8, 0xf: TPR reads {tpr:#x}, expected 0xf0"
    );
    ensure!(cr8 == 5, "TPR 0x5f: CR8 reads {cr8:#x}, expected 5");
    ensure!(
        cr8_zero == 0 && tpr_zero == 0,
        "TPR 0: CR8 reads {cr8_zero:#x}, TPR {tpr_zero:#x}"
    );
    Ok(Pass)
}

// ---------------------------------------------------------------- NMI

/// A short, fixed spin: 40 iterations of `dec; jnz` (80 instructions).
fn short_spin() {
    // SAFETY: only ECX and the flags change.
    unsafe {
        core::arch::asm!("mov ecx, 40", "2:", "dec ecx", "jnz 2b", out("ecx") _, options(nostack, nomem));
    }
}

/// Two NMIs to itself sent back to back (ICR, physical destination = own
/// APIC ID) are both delivered; an NMI sent from inside the NMI handler is
/// held until that handler's IRET and arrives right after it (no nesting).
fn nmi_pair(env: &Env) -> TestResult {
    start()?;
    let b = lapic::BASE;
    xwr(
        b,
        lapic::REG_SVR,
        lapic::SVR_ENABLE | trap::SPURIOUS_VECTOR as u32,
    );
    let id = xrd(b, lapic::REG_ID) >> 24;
    trap::NMI_HITS.store(0, Ordering::SeqCst);
    trap::NMI_NESTED.store(0, Ordering::SeqCst);
    xwr(b, lapic::REG_ICR_HI, id << 24);
    let icr = b + u64::from(lapic::REG_ICR_LO);
    // SAFETY: two MOVs to the ICR: NMIs to this CPU, which the NMI handler counts.
    unsafe {
        core::arch::asm!(
            "mov dword ptr [{icr}], {v:e}",
            "mov dword ptr [{icr}], {v:e}",
            icr = in(reg) icr,
            v = in(reg) ICR_NMI,
            options(nostack)
        );
    }
    let right_after = trap::NMI_HITS.load(Ordering::SeqCst);
    short_spin();
    let pair = trap::NMI_HITS.load(Ordering::SeqCst);
    // QEMU's TCG keeps one pending-NMI flag and looks at it only between
    // translation blocks: two NMIs sent by consecutive instructions merge
    // into one there.
    let expect = if Cpu::detect(env) == Cpu::QemuTcg {
        1
    } else {
        2
    };
    ensure!(
        pair == expect,
        "two NMIs sent back to back: {right_after} arrived by the next instruction, {pair} after a short spin (expected {expect})"
    );

    trap::NMI_HITS.store(0, Ordering::SeqCst);
    trap::NMI_RESEND_DEST.store(id, Ordering::SeqCst);
    trap::NMI_RESEND.store(true, Ordering::SeqCst);
    // SAFETY: as above; the handler sends the second NMI itself.
    unsafe {
        core::arch::asm!(
            "mov dword ptr [{icr}], {v:e}",
            icr = in(reg) icr,
            v = in(reg) ICR_NMI,
            options(nostack)
        );
    }
    let right_after = trap::NMI_HITS.load(Ordering::SeqCst);
    short_spin();
    let hits = trap::NMI_HITS.load(Ordering::SeqCst);
    let resend_pending = trap::NMI_RESEND.swap(false, Ordering::SeqCst);
    let nested = trap::NMI_NESTED.load(Ordering::SeqCst);
    ensure!(
        !resend_pending,
        "the first NMI did not arrive within a short spin ({hits} NMIs)"
    );
    ensure!(
        nested == 0,
        "{nested} NMI(s) arrived inside the NMI handler (before its IRET)"
    );
    ensure!(
        hits == 2,
        "NMI sent from the NMI handler: {right_after} NMIs by the instruction after the ICR write, {hits} after a short spin (expected 2, the second right after the handler's IRET)"
    );
    Ok(Pass)
}

// ---------------------------------------------------------------- single step

/// Runs one instruction (by number) with TF set, as the instruction right
/// after the POPF that sets TF; returns the address after it.
fn stepped(which: u32) -> u64 {
    let next: u64;
    let icr_unused = 0u32;
    let version = lapic::BASE + u64::from(REG_VERSION);
    let tpr = lapic::BASE + u64::from(lapic::REG_TPR);
    // SAFETY: each arm executes one harmless instruction with TF set: NOP,
    // CPUID (RBX parked), IN/OUT of the master PIC's mask register (the value
    // read is written back), RDMSR of IA32_APIC_BASE, a read of the xAPIC
    // VERSION register, a write of 0 to the xAPIC TPR. The #DB handler
    // clears TF in the saved RFLAGS; the stack is ours (no red zone).
    unsafe {
        match which {
            0 => core::arch::asm!(
                "lea {n}, [rip + 2f]", "pushfq", "or qword ptr [rsp], 0x100", "popfq",
                "nop", "2:",
                n = out(reg) next),
            1 => core::arch::asm!(
                "mov {s}, rbx", "xor eax, eax", "xor ecx, ecx",
                "lea {n}, [rip + 2f]", "pushfq", "or qword ptr [rsp], 0x100", "popfq",
                "cpuid", "2:", "mov rbx, {s}",
                s = out(reg) _, n = out(reg) next,
                out("eax") _, out("ecx") _, out("edx") _),
            2 => core::arch::asm!(
                "lea {n}, [rip + 2f]", "pushfq", "or qword ptr [rsp], 0x100", "popfq",
                "in al, 0x21", "2:", "mov {v:e}, eax",
                n = out(reg) next, v = out(reg) _, out("eax") _),
            3 => {
                let mask = cpu::inb(0x21);
                core::arch::asm!(
                    "lea {n}, [rip + 2f]", "pushfq", "or qword ptr [rsp], 0x100", "popfq",
                    "out 0x21, al", "2:",
                    n = out(reg) next, in("al") mask)
            }
            4 => core::arch::asm!(
                "lea {n}, [rip + 2f]", "pushfq", "or qword ptr [rsp], 0x100", "popfq",
                "rdmsr", "2:",
                n = out(reg) next, in("ecx") MSR_APIC_BASE, out("eax") _, out("edx") _),
            5 => core::arch::asm!(
                "lea {n}, [rip + 2f]", "pushfq", "or qword ptr [rsp], 0x100", "popfq",
                "mov {v:e}, dword ptr [{p}]", "2:",
                n = out(reg) next, p = in(reg) version, v = out(reg) _),
            _ => core::arch::asm!(
                "lea {n}, [rip + 2f]", "pushfq", "or qword ptr [rsp], 0x100", "popfq",
                "mov dword ptr [{p}], {v:e}", "2:",
                n = out(reg) next, p = in(reg) tpr, v = in(reg) icr_unused),
        }
    }
    next
}

fn rflags() -> u64 {
    let f: u64;
    // SAFETY: PUSHFQ/POP only move RFLAGS into a register through our stack.
    unsafe { core::arch::asm!("pushfq", "pop {}", out(reg) f) };
    f
}

/// With EFLAGS.TF set, each of NOP (the baseline), CPUID, IN, OUT, RDMSR,
/// an xAPIC MMIO read and an MMIO write raises exactly one #DB, a trap with
/// DR6.BS set and the saved RIP at the next instruction (SDM 17.3.1.4).
fn single_step(_env: &Env) -> TestResult {
    start()?;
    const NAMES: [&str; 7] = [
        "NOP",
        "CPUID",
        "IN 0x21",
        "OUT 0x21",
        "RDMSR 0x1b",
        "MMIO read (xAPIC VERSION)",
        "MMIO write (xAPIC TPR)",
    ];
    let mut why = Msg::new();
    for (i, name) in (0u32..).zip(NAMES) {
        cpu::set_dr6(trap::DR6_INIT);
        trap::STEP_HITS.store(0, Ordering::SeqCst);
        trap::STEP_RIP.store(0, Ordering::SeqCst);
        trap::STEP_DR6.store(0, Ordering::SeqCst);
        trap::STEP_ARMED.store(true, Ordering::SeqCst);
        let next = stepped(i);
        trap::STEP_ARMED.store(false, Ordering::SeqCst);
        let tf_left = rflags() & trap::RFLAGS_TF != 0;
        let hits = trap::STEP_HITS.load(Ordering::SeqCst);
        let rip = trap::STEP_RIP.load(Ordering::SeqCst);
        let dr6 = trap::STEP_DR6.load(Ordering::SeqCst);
        let sep = if why.as_str().is_empty() { "" } else { "; " };
        if hits != 1 || rip != next || dr6 & (1 << 14) == 0 || tf_left {
            let _ = write!(
                why,
                "{sep}{name}: {hits} #DB, rip {rip:#x} (next {next:#x}), DR6 {dr6:#x}{}",
                if tf_left { ", TF still set" } else { "" }
            );
        }
    }
    cpu::set_dr6(trap::DR6_INIT);
    if why.as_str().is_empty() {
        Ok(Pass)
    } else {
        Err(why)
    }
}

// ---------------------------------------------------------------- MSRs

const PERF_CTL0: u32 = 0xC001_0000;
const PERF_CTR0: u32 = 0xC001_0004;
/// PERF_CTL: event 0x76 (cycles), USR and OS, the enable bit (22) clear.
const PERF_CTL_IDLE: u64 = 0x0003_0076;

/// The legacy AMD performance MSRs PERF_CTL0-3 / PERF_CTR0-3 exist on every
/// AMD CPU whatever CPUID says (APM 13.2.1): no #GP, a PERF_CTL written with
/// the enable bit clear and a counter read back. On Intel they #GP.
///
/// Neither emulator implements them, for either vendor: QEMU 7.2's TCG and
/// Bochs (its default `ignore_bad_msrs`) read them as 0 and drop writes,
/// without a #GP, as for every MSR they do not know. That is checked there.
fn amd_perfctr(env: &Env) -> TestResult {
    let unimplemented = Cpu::detect(env) != Cpu::Architectural;
    ensure!(
        env.is_amd() || env.is_intel(),
        "vendor \"{}\"",
        Ascii(&env.vendor)
    );
    let mut why = Msg::new();
    let mut note = |m: Msg| {
        let sep = if why.as_str().is_empty() { "" } else { "; " };
        let _ = write!(why, "{sep}{}", m.as_str());
    };
    for i in 0..4 {
        let (ctl, ctr) = (PERF_CTL0 + i, PERF_CTR0 + i);
        if env.is_intel() && !unimplemented {
            for msr in [ctl, ctr] {
                match trap::rdmsr_checked(msr) {
                    Err(f) if f.vector == trap::GP => {}
                    Err(f) => note(msg!("RDMSR {msr:#x}: {}", FaultText(f))),
                    Ok(v) => note(msg!("RDMSR {msr:#x} = {v:#x} instead of #GP")),
                }
            }
            continue;
        }
        let (want_ctl, want_ctr) = if unimplemented {
            (0, 0)
        } else {
            (PERF_CTL_IDLE, 0x1234)
        };
        let r = (|| -> Result<(u64, u64), Msg> {
            let old_ctl = rd(ctl)?;
            let old_ctr = rd(ctr)?;
            // SAFETY: the enable bit stays clear: nothing counts or interrupts.
            unsafe { wr(ctl, PERF_CTL_IDLE)? };
            let back = rd(ctl)?;
            // SAFETY: a stopped counter's value matters to no one.
            unsafe { wr(ctr, 0x1234)? };
            let back_ctr = rd(ctr)?;
            // SAFETY: restoring the values read above.
            unsafe {
                wr(ctl, old_ctl)?;
                wr(ctr, old_ctr)?;
            }
            Ok((back, back_ctr))
        })();
        match r {
            Err(m) => note(m),
            Ok((c, n)) if (c, n) != (want_ctl, want_ctr) => note(msg!(
                "PERF_CTL{i} reads {c:#x} (expected {want_ctl:#x}), PERF_CTR{i} {n:#x} (expected {want_ctr:#x})"
            )),
            Ok(_) => {}
        }
    }
    if why.as_str().is_empty() {
        Ok(Pass)
    } else {
        Err(why)
    }
}

/// An MSR that an advertised feature brings.
struct FeatureMsr {
    feature: &'static str,
    msr: u32,
    /// Written back with the value read (harmless for these).
    write_back: bool,
}

const fn fm(feature: &'static str, msr: u32, write_back: bool) -> FeatureMsr {
    FeatureMsr {
        feature,
        msr,
        write_back,
    }
}

/// For each feature CPUID advertises that has MSRs, reading them (and
/// writing back what was read, where harmless) takes no #GP. (The x2APIC
/// MSRs are read by `arch-x2apic-mmio`.)
///
/// Bochs (its default `ignore_bad_msrs`) reads MSRs it does not implement
/// as 0 without a #GP; its `tigerlake` model advertises PDCM, MCA, DS and
/// an architectural PMU without implementing their MSRs, which this test
/// therefore cannot catch natively there.
fn cpuid_msrs(env: &Env) -> TestResult {
    let max = cpuid(0, 0).eax;
    let max_ext = cpuid(0x8000_0000, 0).eax;
    // A leaf the CPU has, else all zero (no feature).
    let leaf = |l: u32, sub: u32| {
        let top = if l >= 0x8000_0000 { max_ext } else { max };
        if top >= l {
            cpuid(l, sub)
        } else {
            Default::default()
        }
    };
    let l1 = cpuid(1, 0);
    let l7 = leaf(7, 0);
    let la = leaf(0xA, 0);
    let ld1 = leaf(0xD, 1);
    let e1 = leaf(0x8000_0001, 0);
    let e8 = leaf(0x8000_0008, 0);
    let spec_ctrl = if env.is_amd() {
        e8.ebx & (1 << 14 | 1 << 15 | 1 << 24) != 0
    } else {
        l7.edx & (1 << 26) != 0
    };
    let groups: [(bool, &[FeatureMsr]); 16] = [
        (l7.ecx & (1 << 31) != 0, &[fm("PKS", 0x6E1, true)]),
        (l7.ebx & (1 << 1) != 0, &[fm("TSC_ADJUST", 0x3B, true)]),
        (
            l7.edx & (1 << 29) != 0,
            &[fm("ARCH_CAPABILITIES", 0x10A, false)],
        ),
        (l1.ecx & (1 << 15) != 0, &[fm("PDCM", 0x345, false)]),
        (
            l1.edx & (1 << 12) != 0,
            &[fm("MTRR", 0xFE, false), fm("MTRR", 0x2FF, true)],
        ),
        (
            l1.edx & (1 << 14) != 0,
            &[fm("MCA", 0x179, false), fm("MCA", 0x17A, false)],
        ),
        (l1.edx & (1 << 16) != 0, &[fm("PAT", 0x277, true)]),
        (
            l1.edx & (1 << 11) != 0,
            &[
                fm("SEP", 0x174, true),
                fm("SEP", 0x175, true),
                fm("SEP", 0x176, true),
            ],
        ),
        (
            e1.edx & (1 << 27) != 0 || l7.ecx & (1 << 22) != 0,
            &[fm("RDTSCP/RDPID", 0xC000_0103, true)],
        ),
        (ld1.eax & (1 << 3) != 0, &[fm("XSAVES", 0xDA0, true)]),
        (l7.ecx & (1 << 5) != 0, &[fm("WAITPKG", 0xE1, true)]),
        (spec_ctrl, &[fm("SPEC_CTRL", 0x48, true)]),
        (
            la.eax & 0xFF != 0,
            &[fm("PMU", 0xC1, true), fm("PMU", 0x186, true)],
        ),
        (l1.edx & (1 << 21) != 0, &[fm("DS", 0x600, true)]),
        (
            env.is_amd() && e1.ecx & (1 << 23) != 0,
            &[
                fm("PerfCtrExtCore", 0xC001_0200, true),
                fm("PerfCtrExtCore", 0xC001_0201, true),
            ],
        ),
        (true, &[fm("APIC", MSR_APIC_BASE, true)]),
    ];
    let mut why = Msg::new();
    let mut checked = 0u32;
    for (advertised, msrs) in groups {
        if !advertised {
            continue;
        }
        for m in msrs {
            checked += 1;
            let sep = if why.as_str().is_empty() { "" } else { ", " };
            match trap::rdmsr_checked(m.msr) {
                Err(f) => {
                    let _ = write!(
                        why,
                        "{sep}{} {:#x} read: {}",
                        m.feature,
                        m.msr,
                        trap::vector_name(f.vector)
                    );
                }
                Ok(v) if m.write_back => {
                    // SAFETY: the value just read is written back unchanged.
                    if let Err(f) = unsafe { trap::wrmsr_checked(m.msr, v) } {
                        let _ = write!(
                            why,
                            "{sep}{} {:#x} write {v:#x}: {}",
                            m.feature,
                            m.msr,
                            trap::vector_name(f.vector)
                        );
                    }
                }
                Ok(_) => {}
            }
        }
    }
    ensure!(checked > 0, "no MSR checked");
    if why.as_str().is_empty() {
        Ok(Pass)
    } else {
        Err(msg!("#GP on advertised MSRs: {}", why.as_str()))
    }
}

// ---------------------------------------------------------------- MMIO ALU

const CF: u64 = 1 << 0;
const ZF: u64 = 1 << 6;

/// One ALU instruction on the TPR; (register after, TPR after, CF|ZF after).
fn alu(which: u32, tpr_in: u32, reg_in: u32, carry_in: bool) -> (u32, u32, u64) {
    let p = lapic::BASE + u64::from(lapic::REG_TPR);
    xwr(lapic::BASE, lapic::REG_TPR, tpr_in);
    let mut r = reg_in;
    let flags: u64;
    let c = u64::from(carry_in);
    // SAFETY: each arm is one ALU instruction whose memory operand is the
    // xAPIC TPR (mapped, uncached); the carry is set from `c` first (BT),
    // and the flags are saved with PUSHFQ right after.
    unsafe {
        macro_rules! op {
            ($insn:literal) => {
                core::arch::asm!(
                    "mov {r:e}, {r:e}", "bt {c}, 0", $insn, "pushfq", "pop {f}",
                    c = in(reg) c, p = in(reg) p, r = inout(reg) r, f = out(reg) flags)
            };
        }
        match which {
            0 => op!("adc dword ptr [{p}], 5"),
            1 => op!("adc dword ptr [{p}], {r:e}"),
            2 => op!("adc {r:e}, dword ptr [{p}]"),
            3 => op!("sbb dword ptr [{p}], 5"),
            4 => op!("sbb dword ptr [{p}], {r:e}"),
            5 => op!("sbb {r:e}, dword ptr [{p}]"),
            6 => op!("and {r:e}, dword ptr [{p}]"),
            7 => op!("or {r:e}, dword ptr [{p}]"),
            8 => op!("xor {r:e}, dword ptr [{p}]"),
            9 => op!("add {r:e}, dword ptr [{p}]"),
            10 => op!("sub {r:e}, dword ptr [{p}]"),
            11 => op!("cmp dword ptr [{p}], 0x5a"),
            12 => op!("cmp dword ptr [{p}], 0x5b"),
            13 => op!("test dword ptr [{p}], {r:e}"),
            _ => op!("adc dword ptr [{p}], -255"),
        }
    }
    let tpr = xrd(lapic::BASE, lapic::REG_TPR);
    (r, tpr, flags & (CF | ZF))
}

/// (name, instruction, TPR in, register in, CF in, register out, TPR out, CF|ZF out).
type AluCase = (&'static str, u32, u32, u32, bool, u32, u32, u64);

/// ALU instructions with the xAPIC TPR (bits 7:0 read/write, 31:8 zero) as
/// their memory operand: results and CF/ZF follow the arithmetic.
fn mmio_alu(_env: &Env) -> TestResult {
    start()?;
    let cases: [AluCase; 16] = [
        ("stc; adc [tpr], 5", 0, 0x10, 0, true, 0, 0x16, 0),
        ("clc; adc [tpr], 5", 0, 0x10, 0, false, 0, 0x15, 0),
        ("adc [tpr], reg", 1, 0x16, 0x20, true, 0x20, 0x37, 0),
        ("adc reg, [tpr]", 2, 0x37, 0x100, true, 0x138, 0x37, 0),
        (
            "adc [tpr], -255 (carry out)",
            14,
            0xFF,
            0,
            false,
            0,
            0,
            CF | ZF,
        ),
        ("stc; sbb [tpr], 5", 3, 0x37, 0, true, 0, 0x31, 0),
        ("sbb [tpr], reg", 4, 0x31, 0x10, true, 0x10, 0x20, 0),
        ("sbb reg, [tpr]", 5, 0x20, 0x100, true, 0xDF, 0x20, 0),
        (
            "sbb reg, [tpr] (borrow)",
            5,
            0x20,
            0x10,
            true,
            0xFFFF_FFEF,
            0x20,
            CF,
        ),
        ("and reg, [tpr]", 6, 0x5A, 0xF0, false, 0x50, 0x5A, 0),
        ("or reg, [tpr]", 7, 0x5A, 0x100, false, 0x15A, 0x5A, 0),
        ("xor reg, [tpr]", 8, 0x5A, 0x5A, false, 0, 0x5A, ZF),
        (
            "add reg, [tpr]",
            9,
            0x5A,
            0xFFFF_FFA6,
            false,
            0,
            0x5A,
            CF | ZF,
        ),
        (
            "sub reg, [tpr]",
            10,
            0x5A,
            0x50,
            false,
            0xFFFF_FFF6,
            0x5A,
            CF,
        ),
        ("cmp [tpr], 0x5b", 12, 0x5A, 0, false, 0, 0x5A, CF),
        ("test [tpr], reg", 13, 0x5A, 0xA5, false, 0xA5, 0x5A, ZF),
    ];
    let mut why = Msg::new();
    let mut check = |name: &str, got: (u32, u32, u64), want: (u32, u32, u64)| {
        if got != want {
            let sep = if why.as_str().is_empty() { "" } else { "; " };
            let _ = write!(
                why,
                "{sep}{name}: reg {:#x} tpr {:#x} CF|ZF {:#x}, expected {:#x} {:#x} {:#x}",
                got.0, got.1, got.2, want.0, want.1, want.2
            );
        }
    };
    for (name, which, tpr, reg, carry, reg_out, tpr_out, flags) in cases {
        check(name, alu(which, tpr, reg, carry), (reg_out, tpr_out, flags));
    }
    check("cmp [tpr], 0x5a", alu(11, 0x5A, 0, true), (0, 0x5A, ZF));
    check(
        "test [tpr], reg (non-zero)",
        alu(13, 0x5A, 0x02, false),
        (0x02, 0x5A, 0),
    );
    xwr(lapic::BASE, lapic::REG_TPR, 0);
    if why.as_str().is_empty() {
        Ok(Pass)
    } else {
        Err(why)
    }
}

// ---------------------------------------------------------------- boot information

/// The Multiboot information lists the boot module the loader was given
/// (flags bit 3): exactly one, whose command line has the word named by
/// `module=WORD` on the kernel command line and whose bytes are an ELF
/// image (the runs pass the test guest itself); and the ACPI RSDP found by
/// the BIOS-area scan leads to an MADT that lists this CPU's local APIC
/// (enabled) and an IOAPIC.
fn multiboot(env: &Env) -> TestResult {
    use crate::multiboot::{BootInfo, FLAG_MODS};
    let boot = &env.boot;
    ensure!(
        boot.valid,
        "no Multiboot information (eax {:#x})",
        boot.magic
    );
    let Some(want) = boot
        .cmdline()
        .split(|&c| c == b' ')
        .find_map(|w| w.strip_prefix(b"module="))
    else {
        fail!(
            "the command line \"{}\" names no module=WORD",
            Ascii(boot.cmdline())
        );
    };
    ensure!(
        boot.flags & FLAG_MODS != 0,
        "Multiboot flags {:#x} lack bit 3 (modules)",
        boot.flags
    );
    let (count, addr) = boot.mods.unwrap_or((0, 0));
    ensure!(
        count == 1,
        "mods_count {count} (mods_addr {addr:#x}), expected 1"
    );
    let Some(m) = boot.module(0) else {
        fail!("module entry at {addr:#x} is not in RAM");
    };
    ensure!(
        m.cmdline().split(|&c| c == b' ').any(|w| w == want),
        "module 0 command line \"{}\" lacks the word \"{}\"",
        Ascii(m.cmdline()),
        Ascii(want)
    );
    let (start, end) = (u64::from(m.start), u64::from(m.end));
    ensure!(
        end > start + 4 && BootInfo::is_readable(start, end - start),
        "module 0 at {start:#x}..{end:#x} is empty or not in RAM"
    );
    // SAFETY: start..end lies in the identity-mapped RAM (checked above) and
    // is the module's data, which no Rust object overlaps.
    let magic = unsafe { (start as *const [u8; 4]).read_unaligned() };
    ensure!(
        magic == *b"\x7fELF",
        "module 0 at {start:#x} starts with {magic:02x?}, not an ELF header"
    );

    let rsdp = acpi::find_rsdp().map_err(|e| msg!("RSDP: {e}"))?;
    let madt = match rsdp.xsdt {
        Some(x) => acpi::Table::load(x, b"XSDT")
            .and_then(|t| t.find_entry(8, b"APIC"))
            .map_err(|e| msg!("XSDT: {e}"))?,
        None => acpi::Table::load(u64::from(rsdp.rsdt), b"RSDT")
            .and_then(|t| t.find_entry(4, b"APIC"))
            .map_err(|e| msg!("RSDT: {e}"))?,
    };
    let Some(madt) = madt else {
        fail!("the RSDP at {:#x} lists no MADT", rsdp.addr);
    };
    let madt = acpi::Table::load(madt, b"APIC").map_err(|e| msg!("MADT: {e}"))?;
    let me = initial_apic_id();
    let (mut mine, mut ioapics) = (false, 0u32);
    let mut off = 44;
    while off + 2 <= madt.length() {
        let kind = madt.le(off, 1);
        let len = madt.le(off + 1, 1) as u32;
        ensure!(len >= 2, "MADT entry at offset {off} has length {len}");
        match kind {
            0 => {
                let id = madt.le(off + 3, 1) as u32;
                let flags = madt.le(off + 4, 4);
                mine |= id == me && flags & 1 != 0;
            }
            1 => ioapics += 1,
            9 => {
                let id = madt.le(off + 4, 4) as u32;
                let flags = madt.le(off + 8, 4);
                mine |= id == me && flags & 1 != 0;
            }
            _ => {}
        }
        off += len;
    }
    ensure!(
        mine,
        "the MADT at {:#x} has no enabled local APIC {me}",
        madt.addr()
    );
    ensure!(
        ioapics > 0,
        "the MADT at {:#x} lists no IOAPIC",
        madt.addr()
    );
    Ok(Pass)
}
