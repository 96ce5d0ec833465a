//! The `ivshmem-*` tests (command-line word `ivshmem`, scenario `ipc-ivshmem`): inter-VM shared
//! memory through Quercus's ivshmem device (1af4:1110). Three VMs run this guest with
//! `role=writer` (alice, peer 0), `role=reader` (bob, peer 1) and `role=outsider` (carol).
//!
//! alice and bob share `ipc0` (64 KiB, slot 31, BAR 2 at 0xD000_0000) and `ro0` (4 KiB, slot 30,
//! BAR 2 at 0xD001_0000), which bob maps read-only. A handshake in `ipc0` orders each phase:
//! bob sets up its interrupt and writes READY = phase; alice waits for it, writes a 4 KiB pattern
//! and SENT = phase, and rings bob's doorbell (peer 1, vector 0); bob takes the interrupt,
//! checks the pattern, writes its checksum to ANSWER and DONE = phase, and rings alice (peer 0),
//! who takes that interrupt and checks the answer. Phase 1 uses MSI-X, phase 2 INTx (IOAPIC,
//! level) with the PCI 2.3 interrupt-status bit and the Command interrupt-disable bit handled as
//! Linux's `uio_pci_generic` does. Phase 3 is a ping-pong of 200 MSI-X doorbell round trips
//! (alice prints ticks and exits per round trip). Then bob checks that its writes to `ro0` do not land, and alice
//! rings peers and vectors that do not exist and floods bob (the hypervisor drops, rate-limits
//! and counts those: the xtask case checks its console). carol's PCI scan must show no ivshmem
//! device, and nothing answers where the others see the region.

use core::sync::atomic::Ordering;

use super::pci::{
    hits, intx_gsi, lapic_on, msi_address, reset_hits, stray, vector, Device, Mmio, SLOT_INTX,
};
use super::Outcome::Pass;
use super::{require_quercus, tsc_bound_ms, wait_with_interrupts, TestResult};
use crate::msg::{Ascii, Msg};
use crate::pci::{
    self, Bdf, ConfigSpace, PortIo, BAR0, CAP_ID_MSIX, CMD_INTX_DISABLE, CMD_MEMORY, INTERRUPT_PIN,
    REVISION, STATUS_INTERRUPT, VENDOR_ID,
};
use crate::trap::PCI_HITS;
use crate::{ioapic, lapic, msg, out, Env};

/// Vendor and device ID as the dword at offset 0 reads them.
const IVSHMEM_IDS: u32 = 0x1110_1AF4;
const IVSHMEM_CLASS: u32 = 0x05_00_00;
/// Where the scenario puts the two devices (the configurator's defaults) and their BAR 2.
const IPC0: Bdf = Bdf::new(0, 31, 0);
const RO0: Bdf = Bdf::new(0, 30, 0);
const IPC0_BAR2: u64 = 0xD000_0000;
const IPC0_SIZE: u64 = 0x1_0000;
const RO0_BAR2: u64 = 0xD001_0000;

/// BAR 0 registers.
const REG_INTR_MASK: u64 = 0x0;
const REG_INTR_STATUS: u64 = 0x4;
pub(super) const REG_IV_POSITION: u64 = 0x8;
const REG_DOORBELL: u64 = 0xC;

/// MSI-X capability.
const MSIX_CONTROL: u16 = 0x02;
const MSIX_ENABLE: u16 = 1 << 15;

/// The handshake words in `ipc0` and the pattern.
const READY: u64 = 0x00;
const SENT: u64 = 0x04;
const ANSWER: u64 = 0x08;
const DONE: u64 = 0x0C;
const PATTERN: u64 = 0x100;
const PATTERN_WORDS: u64 = 1024;
/// What alice writes into `ro0` (bob must read it and fail to change it).
const RO_MAGIC: u32 = 0x1B5E_0D0E;

/// The MSI-X vector slot (`PCI_VECTOR_BASE + 0`).
const SLOT_MSIX: usize = 0;
/// How long a peer may take (both VMs boot at once; Bochs is slow).
const PEER_MS: u64 = 30_000;

/// The VM's part.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
    Outsider,
}

fn role(env: &Env) -> Result<Role, Msg> {
    match env.boot.word_value(b"role") {
        Some(b"writer") => Ok(Role::Writer),
        Some(b"reader") => Ok(Role::Reader),
        Some(b"outsider") => Ok(Role::Outsider),
        Some(other) => fail!("role={} is not writer, reader or outsider", Ascii(other)),
        None => fail!("no role=writer|reader|outsider on the command line"),
    }
}

/// Pattern word `i` of phase `phase`.
fn pattern(phase: u32, i: u64) -> u32 {
    (i as u32).wrapping_mul(0x9E37_79B9) ^ phase.wrapping_mul(0x0101_0101)
}

fn checksum(phase: u32) -> u32 {
    (0..PATTERN_WORDS).fold(phase, |acc, i| acc.rotate_left(5) ^ pattern(phase, i))
}

/// One ivshmem device: its configuration space and its mapped BARs.
pub(super) struct Ivshmem {
    dev: Device,
    regs: u64,
    table: u64,
    pub(super) shm: u64,
    mmio_regs: Mmio,
    pub(super) mmio_shm: Mmio,
}

impl Ivshmem {
    pub(super) fn find(bdf: Bdf, bar2: u64) -> Result<Self, Msg> {
        let dev = Device::at(bdf, IVSHMEM_IDS, "ivshmem device")?;
        let regs = dev.mem_bar(0)?;
        let table = dev.mem_bar(1)?;
        let (lo, hi) = (dev.bar(2), dev.bar(3));
        let shm = u64::from(hi) << 32 | u64::from(lo & !0xF);
        ensure!(
            lo & 0xF == 0xC && shm == bar2,
            "{bdf}: BAR2 {hi:#010x}:{lo:#010x}, expected {bar2:#x} (64-bit prefetchable)"
        );
        ensure!(
            dev.command() & CMD_MEMORY != 0,
            "{bdf}: memory decoding is off (Command {:#06x})",
            dev.command()
        );
        Ok(Ivshmem {
            mmio_regs: Mmio::map(regs)?,
            mmio_shm: Mmio::map(shm)?,
            dev,
            regs,
            table,
            shm,
        })
    }

    pub(super) fn reg(&self, r: u64) -> u32 {
        self.mmio_regs.read32(self.regs + r)
    }

    fn set_reg(&self, r: u64, v: u32) {
        self.mmio_regs.write32(self.regs + r, v);
    }

    fn peek(&self, off: u64) -> u32 {
        self.mmio_shm.read32(self.shm + off)
    }

    fn poke(&self, off: u64, v: u32) {
        self.mmio_shm.write32(self.shm + off, v);
    }

    pub(super) fn ring(&self, peer: u32, vector: u32) {
        self.set_reg(REG_DOORBELL, peer << 16 | vector);
    }

    fn msix_cap(&self) -> Result<u16, Msg> {
        self.dev.require_capability(CAP_ID_MSIX, "MSI-X")
    }

    /// MSI-X on, entry 0 to `vector(SLOT_MSIX)` at `apic`, the other entries masked.
    pub(super) fn msix_on(&self, apic: u8) -> Result<(), Msg> {
        let cap = self.msix_cap()?;
        self.dev.w16(cap + MSIX_CONTROL, MSIX_ENABLE);
        let e = self.table;
        self.mmio_regs.write32(e, msi_address(apic));
        self.mmio_regs.write32(e + 4, 0);
        self.mmio_regs.write32(e + 8, vector(SLOT_MSIX));
        self.mmio_regs.write32(e + 12, 0);
        Ok(())
    }

    fn msix_off(&self) -> Result<(), Msg> {
        let cap = self.msix_cap()?;
        self.dev.w16(cap + MSIX_CONTROL, 0);
        Ok(())
    }
}

/// Waits (interrupts on) until `cond` or `ms` passed; false on timeout.
fn wait_for(env: &Env, ms: u64, cond: impl Fn() -> bool) -> bool {
    wait_with_interrupts(tsc_bound_ms(env, ms), &cond);
    cond()
}

/// `ivshmem-enum`: alice and bob see both devices where the scenario puts them, with
/// QEMU's/ACRN's identity and their own peer ids; carol sees none, and nothing answers where
/// the region is for the others.
pub fn enumerate(env: &Env) -> TestResult {
    if let Some(skip) = require_quercus(env)? {
        return Ok(skip);
    }
    let role = role(env)?;
    let cfg = PortIo;
    let found = pci::scan_bus(&cfg, 0);
    let mut list = [Bdf::default(); 32];
    let mut n = 0;
    for &f in found.as_slice() {
        if cfg.read32(f, VENDOR_ID) == IVSHMEM_IDS && n < list.len() {
            list[n] = f;
            n += 1;
        }
    }
    let ivshmem = &list[..n];
    if role == Role::Outsider {
        ensure!(
            ivshmem.is_empty(),
            "a VM outside every region sees ivshmem devices at {}",
            BdfList(ivshmem)
        );
        // Every slot, whatever the scan skipped.
        for dev in 0..32 {
            let ids = cfg.read32(Bdf::new(0, dev, 0), VENDOR_ID);
            ensure!(ids != IVSHMEM_IDS, "00:{dev:02x}.0 is an ivshmem device");
        }
        let window = Mmio::map(IPC0_BAR2)?;
        let v = window.read32(IPC0_BAR2);
        ensure!(
            v == 0xFFFF_FFFF,
            "{IPC0_BAR2:#x}, where the region is for its VMs, reads {v:#010x} (nothing may answer)"
        );
        out!("ivshmem: no ivshmem device on bus 0, nothing at {IPC0_BAR2:#x}");
        return Ok(Pass);
    }
    ensure!(
        ivshmem == [RO0, IPC0],
        "ivshmem devices at {}, expected 00:1e.0 00:1f.0",
        BdfList(ivshmem)
    );
    let own = if role == Role::Writer { 0 } else { 1 };
    for (bdf, bar2, size) in [(IPC0, IPC0_BAR2, IPC0_SIZE), (RO0, RO0_BAR2, 0x1000)] {
        let d = Ivshmem::find(bdf, bar2)?;
        let class = pci::class_code(&cfg, bdf);
        let revision = cfg.read8(bdf, REVISION);
        let pin = cfg.read8(bdf, INTERRUPT_PIN);
        ensure!(
            class == IVSHMEM_CLASS && revision == 1 && pin == 1,
            "{bdf}: class {class:06x} revision {revision} pin {pin}, expected 050000, 1, 1 (INTA#)"
        );
        // BAR 2's size (write all ones, read, restore).
        d.dev.w32(BAR0 + 8, 0xFFFF_FFFF);
        let mask = d.dev.bar(2);
        d.dev.w32(BAR0 + 8, bar2 as u32 | 0xC);
        ensure!(
            u64::from(!(mask & !0xF)) + 1 == size,
            "{bdf}: BAR2 sizes to {mask:#010x}, expected {size:#x} bytes"
        );
        let iv = d.reg(REG_IV_POSITION);
        ensure!(iv == own, "{bdf}: IV position {iv}, expected {own}");
        d.set_reg(REG_IV_POSITION, 7);
        ensure!(
            d.reg(REG_IV_POSITION) == own,
            "{bdf}: IV position is writable"
        );
    }
    if role == Role::Writer {
        bar2_moves()?;
    }
    out!("ivshmem: 00:1e.0 and 00:1f.0 are 1af4:1110 rev 1 class 050000, peer id {own}");
    Ok(Pass)
}

/// alice moves `ipc0`'s BAR 2: the region follows it (what was written shows at the new place,
/// nothing answers at the old one) and comes back with it.
fn bar2_moves() -> Result<(), Msg> {
    const MOVED: u64 = 0xD800_0000;
    const WORD: u64 = 0x2000;
    const MAGIC: u32 = 0x600D_BA25;
    let d = Ivshmem::find(IPC0, IPC0_BAR2)?;
    d.poke(WORD, MAGIC);
    d.dev.w32(BAR0 + 8, MOVED as u32 | 0xC);
    let moved = Mmio::map(MOVED)?;
    let (there, old) = (moved.read32(MOVED + WORD), d.peek(WORD));
    d.dev.w32(BAR0 + 8, IPC0_BAR2 as u32 | 0xC);
    let back = d.peek(WORD);
    d.poke(WORD, 0);
    ensure!(
        there == MAGIC && old == 0xFFFF_FFFF && back == MAGIC,
        "BAR2 moved to {MOVED:#x}: reads {there:#010x} there and {old:#010x} at the old place; moved back: {back:#010x} (expected {MAGIC:#010x}, all ones, {MAGIC:#010x})"
    );
    Ok(())
}

/// What a phase uses to interrupt.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    MsiX,
    Intx,
}

/// The interrupt setup of one phase, undone by `Drop`.
struct Irq<'a> {
    d: &'a Ivshmem,
    via: Via,
    gsi: u32,
    apic: u8,
}

impl<'a> Irq<'a> {
    fn on(d: &'a Ivshmem, via: Via) -> Result<Self, Msg> {
        let apic = lapic_on()?;
        reset_hits();
        let gsi = u32::from(intx_gsi(IPC0.dev, 0));
        match via {
            Via::MsiX => {
                d.dev.set_command(d.dev.command() | CMD_INTX_DISABLE);
                d.msix_on(apic)?;
            }
            Via::Intx => {
                d.msix_off()?;
                ensure!(
                    ioapic::map(),
                    "cannot map the IOAPIC at {:#x}",
                    ioapic::BASE
                );
                let line = d.dev.r8(crate::pci::INTERRUPT_LINE);
                ensure!(
                    u32::from(line) == gsi,
                    "Interrupt Line {line}, expected GSI {gsi}"
                );
                // Whatever is latched from before goes; then unmask every vector.
                let _ = d.reg(REG_INTR_STATUS);
                d.set_reg(REG_INTR_MASK, 0xFFFF_FFFF);
                let rte = vector(SLOT_INTX) | ioapic::RTE_LEVEL | ioapic::RTE_ACTIVE_LOW;
                ioapic::set_redirection(gsi, apic, rte);
                d.dev
                    .set_command((d.dev.command() | CMD_MEMORY) & !CMD_INTX_DISABLE);
            }
        }
        Ok(Irq { d, via, gsi, apic })
    }

    /// Waits for the interrupt and services it as a driver would.
    fn take(&self, env: &Env, what: &str) -> Result<(), Msg> {
        let slot = if self.via == Via::MsiX {
            SLOT_MSIX
        } else {
            SLOT_INTX
        };
        let arrived = wait_for(env, PEER_MS, || PCI_HITS[slot].load(Ordering::SeqCst) > 0);
        ensure!(
            arrived,
            "{what}: no interrupt within {PEER_MS} ms (hits {:?})",
            hits()
        );
        if self.via == Via::Intx {
            // uio_pci_generic's handler: Status bit 3 says it is ours; mask with Command bit 10.
            let status = self.d.dev.status();
            ensure!(
                status & STATUS_INTERRUPT != 0,
                "{what}: INTx taken but Status {status:#06x} has bit 3 clear"
            );
            let command = self.d.dev.command();
            self.d.dev.set_command(command | CMD_INTX_DISABLE);
            // Userspace: read (and so clear) the interrupt status, then unmask.
            let intr = self.d.reg(REG_INTR_STATUS);
            ensure!(
                intr == 1,
                "{what}: interrupt status {intr:#x}, expected 1 (vector 0)"
            );
            let status = self.d.dev.status();
            ensure!(
                status & STATUS_INTERRUPT == 0,
                "{what}: Status {status:#06x} keeps bit 3 after the interrupt status was read"
            );
            lapic::eoi();
            self.d.dev.set_command(command & !CMD_INTX_DISABLE);
        }
        // Exactly one.
        wait_with_interrupts(tsc_bound_ms(env, 50), || false);
        let got = hits();
        ensure!(
            got.iter().sum::<u32>() == 1 && got[slot] == 1,
            "{what}: interrupts {got:?}, expected one on slot {slot}"
        );
        Ok(())
    }
}

impl Drop for Irq<'_> {
    fn drop(&mut self) {
        match self.via {
            Via::MsiX => {
                let _ = self.d.msix_off();
            }
            Via::Intx => {
                self.d.set_reg(REG_INTR_MASK, 0);
                let rte = vector(SLOT_INTX) | ioapic::RTE_LEVEL | ioapic::RTE_ACTIVE_LOW;
                ioapic::set_redirection(self.gsi, self.apic, rte | ioapic::RTE_MASKED);
            }
        }
    }
}

/// One phase of the exchange, from either side.
fn exchange(env: &Env, phase: u32, via: Via) -> TestResult {
    if let Some(skip) = require_quercus(env)? {
        return Ok(skip);
    }
    let role = role(env)?;
    ensure!(
        role != Role::Outsider,
        "the outsider has no region to exchange through"
    );
    let d = Ivshmem::find(IPC0, IPC0_BAR2)?;
    let strays = stray();
    let irq = Irq::on(&d, via)?;
    if role == Role::Reader {
        d.poke(READY, phase);
        irq.take(env, "bob, waiting for alice's doorbell")?;
        let sent = d.peek(SENT);
        ensure!(
            sent == phase,
            "doorbell taken but SENT is {sent}, expected {phase}"
        );
        for i in 0..PATTERN_WORDS {
            let (got, want) = (d.peek(PATTERN + 4 * i), pattern(phase, i));
            ensure!(
                got == want,
                "pattern word {i}: {got:#010x}, expected {want:#010x}"
            );
        }
        d.poke(ANSWER, checksum(phase));
        d.poke(DONE, phase);
        d.ring(0, 0);
        out!("ivshmem: phase {phase}: pattern checked, alice rung");
    } else {
        let ready = wait_for(env, PEER_MS, || d.peek(READY) == phase);
        ensure!(
            ready,
            "bob not READY for phase {phase} within {PEER_MS} ms (READY {})",
            d.peek(READY)
        );
        if phase == 1 {
            // ro0 is writable here; bob checks it later.
            let ro = Ivshmem::find(RO0, RO0_BAR2)?;
            ro.poke(0, RO_MAGIC);
            ensure!(ro.peek(0) == RO_MAGIC, "ro0 does not keep alice's write");
        }
        for i in 0..PATTERN_WORDS {
            d.poke(PATTERN + 4 * i, pattern(phase, i));
        }
        d.poke(SENT, phase);
        d.ring(1, 0);
        irq.take(env, "alice, waiting for bob's answer")?;
        let (done, answer) = (d.peek(DONE), d.peek(ANSWER));
        ensure!(
            done == phase && answer == checksum(phase),
            "bob's answer: DONE {done} ANSWER {answer:#010x}, expected {phase} and {:#010x}",
            checksum(phase)
        );
        out!("ivshmem: phase {phase}: bob answered {answer:#010x}");
    }
    drop(irq);
    let strays = stray() - strays;
    ensure!(strays == 0, "{strays} interrupt(s) on unexpected vectors");
    Ok(Pass)
}

/// `ivshmem-msix`: the exchange with MSI-X doorbells.
pub fn msix(env: &Env) -> TestResult {
    exchange(env, 1, Via::MsiX)
}

/// `ivshmem-intx`: the exchange with INTx doorbells.
pub fn intx(env: &Env) -> TestResult {
    exchange(env, 2, Via::Intx)
}

/// Round trips of `ivshmem-pingpong`.
const ROUNDS: u32 = 200;

/// This vCPU's exits so far (the statistics leaf).
fn exits() -> u64 {
    let r = crate::cpu::cpuid(0x4000_0001, 0);
    u64::from(r.eax) | u64::from(r.ebx) << 32
}

/// `ivshmem-pingpong`: [`ROUNDS`] doorbell round trips by MSI-X, alice ringing bob and bob ringing
/// back from his interrupt; alice prints the TSC ticks and her VM exits per round trip (bob's
/// exits per round trip too). Every round must arrive within a second.
pub fn pingpong(env: &Env) -> TestResult {
    if let Some(skip) = require_quercus(env)? {
        return Ok(skip);
    }
    let role = role(env)?;
    ensure!(role != Role::Outsider, "the outsider has no region");
    let d = Ivshmem::find(IPC0, IPC0_BAR2)?;
    let irq = Irq::on(&d, Via::MsiX)?;
    let got = |n: u32| PCI_HITS[SLOT_MSIX].load(Ordering::SeqCst) >= n;
    if role == Role::Reader {
        d.poke(READY, 3);
        let e0 = exits();
        for n in 1..=ROUNDS {
            ensure!(
                wait_for(env, if n == 1 { PEER_MS } else { 1000 }, || got(n)),
                "round {n}: no doorbell from alice"
            );
            d.ring(0, 0);
        }
        let per = (exits() - e0) / u64::from(ROUNDS);
        out!("ivshmem: pingpong answered {ROUNDS} doorbells, {per} exits per round trip");
    } else {
        ensure!(
            wait_for(env, PEER_MS, || d.peek(READY) == 3),
            "bob not READY for the ping-pong within {PEER_MS} ms"
        );
        let (e0, t0) = (exits(), crate::cpu::rdtsc());
        for n in 1..=ROUNDS {
            d.ring(1, 0);
            ensure!(
                wait_for(env, 1000, || got(n)),
                "round {n}: bob did not ring back"
            );
        }
        let (e1, t1) = (exits(), crate::cpu::rdtsc());
        out!(
            "ivshmem: pingpong rounds={ROUNDS} ticks-per-round-trip={} exits-per-round-trip={} tsc-khz={}",
            (t1 - t0) / u64::from(ROUNDS),
            (e1 - e0) / u64::from(ROUNDS),
            env.tsc_khz
        );
    }
    drop(irq);
    Ok(Pass)
}

/// `ivshmem-readonly` (bob): `ro0` shows alice's word and bob's writes do not land. alice:
/// doorbells to peers and vectors that do not exist, then a flood of doorbells to bob; its own
/// device stays quiet and keeps its id.
pub fn readonly_and_hostile(env: &Env) -> TestResult {
    if let Some(skip) = require_quercus(env)? {
        return Ok(skip);
    }
    match role(env)? {
        Role::Outsider => fail!("the outsider maps no region"),
        Role::Reader => {
            let ro = Ivshmem::find(RO0, RO0_BAR2)?;
            let before = ro.peek(0);
            ensure!(
                before == RO_MAGIC,
                "ro0 reads {before:#010x}, expected alice's {RO_MAGIC:#010x}"
            );
            ro.poke(0, 0xDEAD_BEEF);
            ro.poke(0x800, 0xDEAD_BEEF);
            let (after, other) = (ro.peek(0), ro.peek(0x800));
            ensure!(
                after == RO_MAGIC && other == 0,
                "a read-only VM's writes landed: ro0[0] {after:#010x}, ro0[0x800] {other:#010x}"
            );
            out!("ivshmem: ro0 kept {RO_MAGIC:#010x} against bob's writes");
            Ok(Pass)
        }
        Role::Writer => {
            let d = Ivshmem::find(IPC0, IPC0_BAR2)?;
            let apic = lapic_on()?;
            reset_hits();
            d.msix_on(apic)?;
            // Peers and vectors that do not exist, and garbage register writes.
            d.ring(5, 0);
            d.ring(0xFFFF, 0xFF);
            d.ring(1, 9);
            d.set_reg(0x10, 0xFFFF_FFFF);
            d.set_reg(0xFC, 0xFFFF_FFFF);
            // A flood to bob's vector 3 (masked there): most of it is rate-limited.
            for _ in 0..5000 {
                d.ring(1, 3);
            }
            wait_with_interrupts(tsc_bound_ms(env, 50), || false);
            let got = hits();
            d.msix_off()?;
            ensure!(got.iter().all(|&h| h == 0), "alice got interrupts {got:?}");
            let iv = d.reg(REG_IV_POSITION);
            ensure!(iv == 0, "IV position {iv} after the garbage, expected 0");
            out!("ivshmem: doorbells to nobody and a flood of 5000 sent");
            Ok(Pass)
        }
    }
}

/// The tests `env`'s role runs: carol, outside every region, only `ivshmem-enum`.
pub fn tests(env: &Env) -> &'static [(&'static str, super::TestFn)] {
    match role(env) {
        Ok(Role::Outsider) => &TESTS[..1],
        _ => TESTS,
    }
}

/// The tests, in order.
pub const TESTS: &[(&str, super::TestFn)] = &[
    ("ivshmem-enum", enumerate),
    ("ivshmem-msix", msix),
    ("ivshmem-intx", intx),
    ("ivshmem-pingpong", pingpong),
    ("ivshmem-readonly", readonly_and_hostile),
];

/// Functions, for messages.
struct BdfList<'a>(&'a [Bdf]);

impl core::fmt::Display for BdfList<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(none)");
        }
        for (i, b) in self.0.iter().enumerate() {
            write!(f, "{}{b}", if i == 0 { "" } else { " " })?;
        }
        Ok(())
    }
}
