//! The `edu-*` tests (command-line word `passthrough-edu`): QEMU's `edu` device (1234:11e8)
//! passed through to this VM at 00:04.0, driven as a bare-metal driver would.
//!
//! edu (QEMU docs/specs/edu.txt): BAR0 (1 MiB) holds the registers: 0x00 identification
//! 0x010000ed, 0x04 liveness (reads the inverse of what was written), 0x08 factorial (write n,
//! read n! once status bit 0 clears), 0x20 status, 0x24 interrupt status, 0x60 raise interrupt
//! (ORs into the status), 0x64 acknowledge; DMA: 0x80 source, 0x88 destination, 0x90 count,
//! 0x98 command (bit 0 start/busy, bit 1 direction edu->RAM, bit 2 interrupt 0x100 when done);
//! the device's own 4 KiB buffer is at device address 0x40000. Addresses above its 28-bit DMA
//! mask are clamped. It signals MSI when enabled, else INTA#.
//!
//! Under Quercus the IOMMU translates this VM's guest-physical DMA addresses: DMA into its own
//! RAM works, DMA aimed anywhere else (the `victim` VM's host memory, the hypervisor's, an
//! address no RAM backs) is blocked and reported; the victim checks its own memory.
//! `victim=ADDR` on the command line is the victim's pattern as a host-physical address;
//! `hv=ADDR` one of the hypervisor's.

use super::Outcome::Pass;
use super::{require_quercus, tsc_bound_ms, wait_with_interrupts, TestResult};
use crate::msg::{Ascii, Msg};
use crate::pci::{
    Bdf, BAR0, CAP_ID_MSI, CAP_ID_MSIX, CMD_BUS_MASTER, CMD_INTX_DISABLE, CMD_MEMORY,
    STATUS_INTERRUPT,
};
use crate::tests::pci::{
    expect_hits, intx_gsi, lapic_on, msi_address, reset_hits, vector, want, Device, Mmio, SLOT_INTX,
};
use crate::vpci::{Area, Dma, AREA_SIZE};
use crate::{cpu, ioapic, lapic, msg, out, paging, Env, Global};

/// Where the scenario puts edu in the VM.
const EDU: Bdf = Bdf::new(0, 4, 0);
const EDU_IDS: u32 = 0x11e8_1234;
const EDU_CLASS: u32 = 0x00_ff_00;
const BAR0_SIZE: u32 = 1 << 20;

const REG_ID: u64 = 0x00;
const REG_LIVENESS: u64 = 0x04;
const REG_FACTORIAL: u64 = 0x08;
const REG_STATUS: u64 = 0x20;
const REG_IRQ_STATUS: u64 = 0x24;
const REG_IRQ_RAISE: u64 = 0x60;
const REG_IRQ_ACK: u64 = 0x64;
const REG_DMA_SRC: u64 = 0x80;
const REG_DMA_DST: u64 = 0x88;
const REG_DMA_COUNT: u64 = 0x90;
const REG_DMA_CMD: u64 = 0x98;
const EDU_ID: u32 = 0x0100_00ed;
const STATUS_COMPUTING: u32 = 1;
const DMA_START: u32 = 1;
const DMA_TO_RAM: u32 = 2;
const DMA_IRQ: u32 = 4;
/// The interrupt status bit edu sets when a DMA with `DMA_IRQ` finishes.
const IRQ_DMA_DONE: u32 = 0x100;
/// The device's buffer, as a DMA address on its side.
const EDU_BUFFER: u64 = 0x40000;
/// Bytes per transfer: half of edu's 4 KiB buffer (QEMU 7.2's edu refuses a transfer that
/// reaches the buffer's last byte, an off-by-one fixed in QEMU 8.2.1, and stops the emulator).
const XFER: u64 = 2048;

/// MSI capability registers (edu's is 64-bit, no per-vector masking).
const MSI_CONTROL: u16 = 0x02;
const MSI_ADDRESS_LO: u16 = 0x04;
const MSI_ADDRESS_HI: u16 = 0x08;
const MSI_DATA: u16 = 0x0C;
const MSI_ENABLE: u16 = 1;

/// The victim's pattern: 64 KiB from 16 MiB of its RAM, byte i = PATTERN(i).
pub const VICTIM_GPA: u64 = 16 << 20;
const VICTIM_LEN: u64 = 64 << 10;
const fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(7) ^ 0x5A) as u8
}

static AREA: Global<Area> = Global::new(Area::new());

/// Tests of the passed-through edu, in the order they run: `edu-config`, `edu-registers`,
/// `edu-msi`, `edu-intx`, `edu-dma`, `edu-dma-foreign`.
pub const TESTS: &[(&str, super::TestFn)] = &[
    ("edu-config", config),
    ("edu-registers", registers),
    ("edu-msi", msi),
    ("edu-intx", intx),
    ("edu-dma", dma),
    ("edu-dma-foreign", dma_foreign),
];

/// The device, with memory decoding (and bus mastering) on, and its registers mapped.
struct Edu {
    dev: Device,
    mmio: Mmio,
    base: u64,
}

impl Edu {
    fn open(bus_master: bool) -> Result<Self, Msg> {
        let dev = Device::at(EDU, EDU_IDS, "edu device")?;
        let base = dev.mem_bar(0)?;
        let mmio = Mmio::map(base)?;
        let command = dev.command() | CMD_MEMORY;
        dev.set_command(if bus_master {
            command | CMD_BUS_MASTER
        } else {
            command & !CMD_BUS_MASTER
        });
        Ok(Edu { dev, mmio, base })
    }

    fn r(&self, reg: u64) -> u32 {
        self.mmio.read32(self.base + reg)
    }

    fn w(&self, reg: u64, v: u32) {
        self.mmio.write32(self.base + reg, v);
    }

    fn w64(&self, reg: u64, v: u64) {
        self.w(reg, v as u32);
        self.w(reg + 4, (v >> 32) as u32);
    }

    /// Runs one DMA and waits (bounded) until the device says it is done.
    fn dma(&self, env: &Env, src: u64, dst: u64, len: u32, cmd: u32) -> Result<(), Msg> {
        self.w64(REG_DMA_SRC, src);
        self.w64(REG_DMA_DST, dst);
        self.w(REG_DMA_COUNT, len);
        self.w(REG_DMA_CMD, cmd | DMA_START);
        let t0 = cpu::rdtsc();
        // edu finishes a transfer 100 ms (virtual) after the start.
        while self.r(REG_DMA_CMD) & DMA_START != 0 {
            ensure!(
                cpu::rdtsc().wrapping_sub(t0) < tsc_bound_ms(env, 5000),
                "DMA {src:#x} -> {dst:#x} still busy after 5 s"
            );
            core::hint::spin_loop();
        }
        Ok(())
    }

    /// Turns MSI on with vector slot 0 to this vCPU.
    fn msi_on(&self) -> Result<u16, Msg> {
        let apic = lapic_on()?;
        let cap = self.dev.require_capability(CAP_ID_MSI, "MSI")?;
        self.dev.w32(cap + MSI_ADDRESS_LO, msi_address(apic));
        self.dev.w32(cap + MSI_ADDRESS_HI, 0);
        self.dev.w16(cap + MSI_DATA, vector(0) as u16);
        let c = self.dev.r16(cap + MSI_CONTROL);
        self.dev.w16(cap + MSI_CONTROL, (c & !0x70) | MSI_ENABLE);
        Ok(cap)
    }

    fn msi_off(&self, cap: u16) {
        let c = self.dev.r16(cap + MSI_CONTROL);
        self.dev.w16(cap + MSI_CONTROL, c & !MSI_ENABLE);
    }
}

/// `edu-config`: the VM sees edu's identity and its 1 MiB BAR inside the VM's PCI window, and
/// nothing of the real function beyond: no expansion ROM, no capability but MSI.
fn config(env: &Env) -> TestResult {
    if let Some(skip) = require_quercus(env)? {
        return Ok(skip);
    }
    let dev = Device::at(EDU, EDU_IDS, "edu device")?;
    let class = dev.r32(0x08) >> 8;
    ensure!(
        class == EDU_CLASS,
        "class {class:06x}, expected {EDU_CLASS:06x}"
    );
    let rom = dev.r32(0x30);
    ensure!(
        rom == 0,
        "expansion ROM BAR reads {rom:#x}: the real ROM must stay hidden"
    );
    let bar = dev.r32(BAR0);
    ensure!(
        (0xD000_0000..0xE000_0000).contains(&bar) && bar % BAR0_SIZE == 0,
        "BAR0 {bar:#x} not a 1 MiB-aligned address in 0xD0000000..0xE0000000"
    );
    dev.w32(BAR0, u32::MAX);
    let mask = dev.r32(BAR0);
    dev.w32(BAR0, bar);
    ensure!(
        mask == !(BAR0_SIZE - 1),
        "BAR0 sizes as {mask:#x}, expected {:#x} (1 MiB, 32-bit memory)",
        !(BAR0_SIZE - 1)
    );
    ensure!(dev.r32(BAR0) == bar, "BAR0 did not take its address back");
    ensure!(
        dev.capability(CAP_ID_MSI)?.is_some(),
        "no MSI capability (edu has one)"
    );
    let mut at = u16::from(dev.r8(0x34));
    let mut n = 0;
    while at != 0 && n < 48 {
        let id = dev.r8(at);
        ensure!(
            id == CAP_ID_MSI || id == CAP_ID_MSIX,
            "capability {id:#04x} at {at:#x} exposed"
        );
        at = u16::from(dev.r8(at + 1));
        n += 1;
    }
    let ext = dev.r32(0x100);
    ensure!(
        ext == 0 || ext == u32::MAX,
        "extended capability {ext:#x} exposed"
    );
    Ok(Pass)
}

/// `edu-registers`: register accesses reach the real device (identification, liveness,
/// factorial computed by the device).
fn registers(env: &Env) -> TestResult {
    if let Some(skip) = require_quercus(env)? {
        return Ok(skip);
    }
    let edu = Edu::open(false)?;
    let id = edu.r(REG_ID);
    ensure!(id == EDU_ID, "identification {id:#x}, expected {EDU_ID:#x}");
    for v in [0x1234_5678u32, 0xA5A5_0F0F] {
        edu.w(REG_LIVENESS, v);
        let got = edu.r(REG_LIVENESS);
        ensure!(
            got == !v,
            "liveness: wrote {v:#x}, read {got:#x}, expected {:#x}",
            !v
        );
    }
    edu.w(REG_FACTORIAL, 10);
    let t0 = cpu::rdtsc();
    while edu.r(REG_STATUS) & STATUS_COMPUTING != 0 {
        ensure!(
            cpu::rdtsc().wrapping_sub(t0) < tsc_bound_ms(env, 2000),
            "factorial still computing after 2 s"
        );
    }
    let f = edu.r(REG_FACTORIAL);
    ensure!(f == 3_628_800, "10! read as {f}");
    Ok(Pass)
}

/// `edu-msi`: interrupts the device raises arrive as the MSI this VM programmed (remapped by
/// the hypervisor from its own vector), one per raise, and stop when MSI is off. (An MSI is a
/// memory write of the device: bus mastering must be on, as for DMA.)
fn msi(env: &Env) -> TestResult {
    if let Some(skip) = require_quercus(env)? {
        return Ok(skip);
    }
    let edu = Edu::open(true)?;
    reset_hits();
    let cap = edu.msi_on()?;
    let r = (|| {
        for round in 1..=3u32 {
            edu.w(REG_IRQ_RAISE, 1);
            expect_hits(env, "edu raise", want(&[(0, round)]))?;
            let st = edu.r(REG_IRQ_STATUS);
            ensure!(st & 1 != 0, "interrupt status {st:#x} after a raise");
            edu.w(REG_IRQ_ACK, st);
        }
        Ok(())
    })();
    edu.msi_off(cap);
    r?;
    // With MSI off (and INTx not given to this VM's vIOAPIC), a raise delivers nothing.
    edu.w(REG_IRQ_RAISE, 1);
    expect_hits(env, "edu raise with MSI off", want(&[(0, 3)]))?;
    edu.w(REG_IRQ_ACK, u32::MAX);
    Ok(Pass)
}

/// The storm tests (command-line words `passthrough-edu storm`), in order: `edu-config`,
/// `edu-storm`.
pub const STORM_TESTS: &[(&str, super::TestFn)] = &[("edu-config", config), ("edu-storm", storm)];

/// `edu-storm`: 400 MSIs back to back (one per register write) from a hypervisor told that 50
/// in 100 ms is a storm (`quercus.storm_limit=50`): some arrive, then the function is
/// silenced and later raises bring nothing; the VM itself goes on.
fn storm(env: &Env) -> TestResult {
    if let Some(skip) = require_quercus(env)? {
        return Ok(skip);
    }
    let edu = Edu::open(true)?;
    reset_hits();
    let cap = edu.msi_on()?;
    let hits = || crate::trap::PCI_HITS[0].load(core::sync::atomic::Ordering::SeqCst);
    cpu::sti();
    for _ in 0..400 {
        edu.w(REG_IRQ_RAISE, 1);
    }
    cpu::cli();
    wait_with_interrupts(tsc_bound_ms(env, 200), || false);
    let flood = hits();
    for _ in 0..20 {
        edu.w(REG_IRQ_RAISE, 1);
    }
    wait_with_interrupts(tsc_bound_ms(env, 200), || false);
    let after = hits();
    edu.msi_off(cap);
    edu.w(REG_IRQ_ACK, u32::MAX);
    out!(
        "edu: storm delivered {flood} of 400, then {} of 20",
        after - flood
    );
    ensure!(flood > 0, "no interrupt arrived at all");
    ensure!(
        flood < 400,
        "all 400 interrupts arrived: the storm was not stopped"
    );
    ensure!(
        after == flood,
        "{} interrupt(s) arrived after the function was silenced",
        after - flood
    );
    Ok(Pass)
}

/// `edu-intx`: with MSI off, edu's INTA# reaches this VM through its vIOAPIC as a level
/// interrupt: once per raise, again after an EOI while the device still asserts (the level
/// stays), and no more once the device is acknowledged; Status bit 3 follows the line.
fn intx(env: &Env) -> TestResult {
    if let Some(skip) = require_quercus(env)? {
        return Ok(skip);
    }
    let edu = Edu::open(false)?;
    edu.dev.msi_off()?;
    let pin = edu.dev.r8(0x3D);
    ensure!(
        pin == 1,
        "Interrupt Pin {pin}, expected 1 (INTA#): INTx not passed through"
    );
    let gsi = intx_gsi(EDU.dev, pin - 1);
    let line = edu.dev.r8(0x3C);
    ensure!(line == gsi, "Interrupt Line {line}, expected GSI {gsi}");
    ensure!(
        ioapic::map(),
        "cannot map the IOAPIC at {:#x}",
        ioapic::BASE
    );
    let apic = lapic_on()?;
    let command = edu.dev.command();
    edu.dev
        .set_command((command | CMD_MEMORY) & !CMD_INTX_DISABLE);
    edu.w(REG_IRQ_ACK, u32::MAX);
    reset_hits();
    let rte = vector(SLOT_INTX) | ioapic::RTE_LEVEL | ioapic::RTE_ACTIVE_LOW;
    ioapic::set_redirection(u32::from(gsi), apic, rte);
    let hits = || crate::trap::PCI_HITS[SLOT_INTX].load(core::sync::atomic::Ordering::SeqCst);
    let wait = |n: u32| wait_with_interrupts(tsc_bound_ms(env, 1000), || hits() >= n);
    let r = (|| {
        // One interrupt per raise: acknowledged in the device, then the EOI.
        for round in 1..=2u32 {
            edu.w(REG_IRQ_RAISE, 1);
            wait(round);
            ensure!(hits() == round, "raise {round}: {} interrupt(s)", hits());
            let status = edu.dev.status();
            ensure!(
                status & STATUS_INTERRUPT != 0,
                "Status {status:#06x}: interrupt bit clear while asserted"
            );
            edu.w(REG_IRQ_ACK, 1);
            lapic::eoi();
        }
        // EOI while the device still asserts: the level brings it back.
        edu.w(REG_IRQ_RAISE, 1);
        wait(3);
        lapic::eoi();
        wait(4);
        ensure!(
            hits() == 4,
            "an EOI with the line still asserted gave {} interrupt(s), expected one more",
            hits() - 3
        );
        edu.w(REG_IRQ_ACK, 1);
        lapic::eoi();
        wait_with_interrupts(tsc_bound_ms(env, 100), || false);
        ensure!(
            hits() == 4,
            "{} interrupt(s) after the acknowledge",
            hits() - 4
        );
        let status = edu.dev.status();
        ensure!(
            status & STATUS_INTERRUPT == 0,
            "Status {status:#06x}: interrupt bit set after the acknowledge"
        );
        Ok(())
    })();
    ioapic::set_redirection(u32::from(gsi), apic, rte | ioapic::RTE_MASKED);
    edu.w(REG_IRQ_ACK, u32::MAX);
    edu.dev.set_command(command);
    r?;
    Ok(Pass)
}

/// `edu-dma`: DMA between this VM's RAM and the device, both ways, through the IOMMU (guest-
/// physical addresses), ending with the device's done interrupt.
fn dma(env: &Env) -> TestResult {
    if let Some(skip) = require_quercus(env)? {
        return Ok(skip);
    }
    let edu = Edu::open(true)?;
    let buf = Dma::of(&AREA);
    for i in 0..XFER {
        buf.w8(i, pattern(i ^ 0x33));
    }
    buf.fill(XFER, XFER, 0);
    reset_hits();
    let cap = edu.msi_on()?;
    let r = (|| {
        edu.dma(env, buf.addr(0), EDU_BUFFER, XFER as u32, 0)?;
        edu.dma(
            env,
            EDU_BUFFER,
            buf.addr(XFER),
            XFER as u32,
            DMA_TO_RAM | DMA_IRQ,
        )?;
        expect_hits(env, "DMA done", want(&[(0, 1)]))?;
        let st = edu.r(REG_IRQ_STATUS);
        ensure!(
            st & IRQ_DMA_DONE != 0,
            "interrupt status {st:#x} after the DMA"
        );
        edu.w(REG_IRQ_ACK, st);
        Ok(())
    })();
    edu.msi_off(cap);
    r?;
    for i in 0..XFER {
        let (a, b) = (buf.r8(i), buf.r8(XFER + i));
        ensure!(a == b, "byte {i} came back as {b:#04x}, sent {a:#04x}");
    }
    Ok(Pass)
}

/// `edu-dma-foreign`: DMA aimed outside this VM's RAM (the victim's memory, the hypervisor's,
/// past the end of RAM) moves nothing: reads bring none of the victim's bytes, writes change
/// nothing here; the victim checks its side, the hypervisor reports the faults.
fn dma_foreign(env: &Env) -> TestResult {
    if let Some(skip) = require_quercus(env)? {
        return Ok(skip);
    }
    let victim = value(env, b"victim")?;
    let hv = value(env, b"hv")?;
    let past_ram = paging::mapped_ram_end() + (1 << 20);
    let edu = Edu::open(true)?;
    let buf = Dma::of(&AREA);
    // Load a known pattern into the device.
    buf.fill(0, XFER, 0xEE);
    edu.dma(env, buf.addr(0), EDU_BUFFER, XFER as u32, 0)?;
    for (what, at) in [
        ("victim", victim),
        ("hypervisor", hv),
        ("past RAM", past_ram),
    ] {
        // Read: the device's buffer must not take the victim's bytes.
        edu.dma(env, at, EDU_BUFFER, XFER as u32, 0)?;
        edu.dma(env, EDU_BUFFER, buf.addr(XFER), XFER as u32, DMA_TO_RAM)?;
        let leaked = (0..64).all(|i| buf.r8(XFER + i) == pattern(i));
        ensure!(
            !leaked,
            "DMA read from the {what} at {at:#x} brought the victim's pattern"
        );
        // Write the device's buffer there.
        buf.fill(0, XFER, 0xEE);
        edu.dma(env, buf.addr(0), EDU_BUFFER, XFER as u32, 0)?;
        edu.dma(env, EDU_BUFFER, at, XFER as u32, DMA_TO_RAM)?;
        out!("edu: DMA aimed at the {what} ({at:#x}) done");
    }
    // The device still works for this VM's own RAM afterwards.
    buf.fill(XFER, XFER, 0);
    edu.dma(env, EDU_BUFFER, buf.addr(XFER), XFER as u32, DMA_TO_RAM)?;
    let ok = (0..XFER).all(|i| buf.r8(XFER + i) == 0xEE);
    ensure!(ok, "DMA into own RAM failed after the blocked ones");
    Ok(Pass)
}

fn value(env: &Env, key: &[u8]) -> Result<u64, Msg> {
    let Some(v) = env.boot.word_value(key) else {
        fail!("no {}=ADDR on the command line", Ascii(key));
    };
    let digits = v.strip_prefix(b"0x").unwrap_or(v);
    let mut n: u64 = 0;
    for &d in digits {
        let x = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => fail!("{}={} is not a hex address", Ascii(key), Ascii(v)),
        };
        n = n
            .checked_mul(16)
            .and_then(|n| n.checked_add(u64::from(x)))
            .ok_or_else(|| msg!("{} overflows", Ascii(key)))?;
    }
    Ok(n)
}

/// The `victim` VM: writes its pattern, then checks it every second forever, printing
/// `victim: check N intact` (or where it changed).
pub fn victim(env: &Env) -> ! {
    let end = VICTIM_GPA + VICTIM_LEN;
    if paging::mapped_ram_end() < end {
        out!(
            "victim: FAIL RAM ends at {:#x}, below {end:#x}",
            paging::mapped_ram_end()
        );
        crate::power_off(false);
    }
    let at = |i: u64| (VICTIM_GPA + i) as *mut u8;
    for i in 0..VICTIM_LEN {
        // SAFETY: identity-mapped RAM of this VM (checked above), used by nothing else: the
        // guest image and its stacks sit below 16 MiB.
        unsafe { at(i).write_volatile(pattern(i)) };
    }
    out!("victim: pattern at {VICTIM_GPA:#x}+{VICTIM_LEN:#x} ready");
    let period = tsc_bound_ms(env, 1000);
    let mut n = 0u64;
    loop {
        let t0 = cpu::rdtsc();
        while cpu::rdtsc().wrapping_sub(t0) < period {
            core::hint::spin_loop();
        }
        n += 1;
        // SAFETY: as above.
        let bad = (0..VICTIM_LEN).find(|&i| unsafe { at(i).read_volatile() } != pattern(i));
        match bad {
            None => out!("victim: check {n} intact"),
            Some(i) => out!("victim: CORRUPTED at {:#x} (check {n})", VICTIM_GPA + i),
        }
    }
}

const _: () = assert!(AREA_SIZE as u64 >= 2 * XFER);
