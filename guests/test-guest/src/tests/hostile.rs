//! The `hostile` mode: a guest that does what no sane guest does, phase by
//! phase, to show that the hypervisor contains it. Each phase prints
//! `HOSTILE phase <name> ticks=<TSC ticks> ms=<ms> <what it did and saw>`.
//! Interrupts stay off throughout (NMIs still come: the guest sends itself
//! some); every access that may fault runs under the guard or the
//! RDMSR/WRMSR #GP skip of `trap.rs`.
//!
//! The VM is expected to have a virtio-blk disk: its sector 0 holds the
//! reset stage, so that each boot tries the next reset path (the VM's RAM
//! and devices are fresh after a reset, the disk is not):
//! stage 0 runs every phase and resets through port 0xCF9, stage 1 through
//! the 8042 (0xFE to port 0x64), stage 2 through the FADT's reset register,
//! stage 3 sends an INIT to itself, stage 4 triple-faults. Each boot prints
//! `HOSTILE boot stage=N`. Without a disk only stage 0 runs, then the triple
//! fault.
//!
//! Command-line words: `storm=N` (exit-storm rounds, default 100000),
//! `quiet-ms=N` (a quiet spell before the first phase, default 2000: the
//! other VM's baseline pace).

use virtio_drivers::device::blk::SECTOR_SIZE;
use virtio_drivers::transport::DeviceType;

use super::tsc_bound_ms;
use super::virtio::{blk_io, Blk};
use crate::msg::Msg;
use crate::pci::{Bdf, ConfigSpace, PortIo, BAR0, COMMAND};
use crate::trap::{self, Abort};
use crate::{cpu, ioapic, lapic, msg, out, paging, serial, virtio, Env};

/// The byte, word and dword every junk write uses. 0x5A has bit 2 clear
/// (0xCF9 would reset with it), 0x5A & 0xF1 is not 0xF0 (the 8042's pulse
/// commands reset) and 0x5A5A has bit 13 clear (PM1a_CNT.SLP_EN), so the
/// port sweep never resets or powers off the VM by itself: the reset paths
/// are taken on purpose at the end.
const JUNK8: u8 = 0x5A;
const JUNK16: u16 = 0x5A5A;
const JUNK32: u32 = 0x5A5A_5A5A;
const JUNK64: u64 = 0x5A5A_5A5A_5A5A_5A5A;

/// Sector 0 of the stage disk: this magic, then the stage byte.
const STAGE_MAGIC: &[u8; 8] = b"HOSTILE1";

pub fn run(env: &Env) -> ! {
    cpu::cli();
    let disk = first_blk();
    let stage = disk.and_then(|f| read_stage(env, f)).unwrap_or(0);
    out!(
        "HOSTILE boot stage={stage} disk={}",
        if disk.is_some() { "yes" } else { "no" }
    );
    if let Some(f) = disk {
        if !write_stage(env, f, stage + 1) {
            out!("HOSTILE stage disk: write failed");
        }
    }
    virtio::fresh_start();
    match (stage, disk.is_some()) {
        (0, true) => {
            phases(env);
            reset_cf9()
        }
        (0, false) => {
            phases(env);
            crate::triple_fault()
        }
        (1, _) => reset_kbc(),
        (2, _) => reset_acpi(),
        (3, _) => init_self(),
        _ => {
            out!("HOSTILE last path: triple fault");
            crate::triple_fault()
        }
    }
}

// ------------------------------------------------------------- stage disk

fn first_blk() -> Option<Bdf> {
    let (list, n) = virtio::devices_of(DeviceType::Block);
    (n > 0).then(|| list[0])
}

fn with_blk<R>(f: Bdf, op: impl FnOnce(&mut Blk) -> Option<R>) -> Option<R> {
    virtio::fresh_start();
    let transport = virtio::transport(f).ok()?;
    let mut dev = Blk::new(transport).ok()?;
    op(&mut dev)
}

fn read_stage(env: &Env, f: Bdf) -> Option<u8> {
    with_blk(f, |dev| {
        let mut sector = [0u8; SECTOR_SIZE];
        blk_io(env, f, dev, false, 0, &mut sector).ok()?.ok()?;
        Some(if &sector[..8] == STAGE_MAGIC {
            sector[8]
        } else {
            0
        })
    })
}

fn write_stage(env: &Env, f: Bdf, stage: u8) -> bool {
    with_blk(f, |dev| {
        let mut sector = [0u8; SECTOR_SIZE];
        sector[..8].copy_from_slice(STAGE_MAGIC);
        sector[8] = stage;
        blk_io(env, f, dev, true, 0, &mut sector).ok()?.ok()
    })
    .is_some()
}

// ------------------------------------------------------------------ phases

fn arg(env: &Env, key: &str, default: u64) -> u64 {
    env.boot
        .word_value(key.as_bytes())
        .and_then(|v| core::str::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn phases(env: &Env) {
    let quiet = arg(env, "quiet-ms", 2000);
    out!("HOSTILE quiet {quiet} ms");
    let t0 = cpu::rdtsc();
    while cpu::rdtsc().wrapping_sub(t0) < tsc_bound_ms(env, quiet) {
        core::hint::spin_loop();
    }
    out!("HOSTILE attack begins");
    let storm = arg(env, "storm", 100_000);
    phase(env, "msr", msr_sweep);
    phase(env, "ports", port_sweep);
    phase(env, "mmio", mmio_sweep);
    phase(env, "virt-insns", virt_insns);
    phase(env, "ipi", ipis);
    phase(env, "virtio", virtio_junk);
    phase(env, "pci-config", pci_junk);
    phase(env, "ioapic", ioapic_junk);
    phase(env, "pic-pit-rtc", legacy_junk);
    phase(env, "timer-storm", timer_storm);
    phase(env, "exit-storm", |e| exit_storm(e, storm));
    out!("HOSTILE attack done");
}

/// Runs one phase under the guard and prints its line.
fn phase(env: &Env, name: &str, mut f: impl FnMut(&Env) -> Msg) {
    let t0 = cpu::rdtsc();
    let mut detail = Msg::new();
    let r = trap::guarded(|| detail = f(env));
    let ticks = cpu::rdtsc().wrapping_sub(t0);
    // The phases write junk to COM1's registers: set it up again, and end
    // the line the junk bytes began.
    serial::init();
    out!("");
    let ms = ticks / u64::from(env.tsc_khz.max(1));
    match r {
        Ok(()) => out!("HOSTILE phase {name} ticks={ticks} ms={ms} {}", detail.as_str()),
        Err(Abort::Exception(f)) => out!(
            "HOSTILE phase {name} ticks={ticks} ms={ms} aborted: vector {} at rip {:#x} error {:#x}",
            f.vector,
            f.rip,
            f.error_code
        ),
        Err(Abort::Panic(m)) => {
            out!("HOSTILE phase {name} ticks={ticks} ms={ms} aborted: {}", m.as_str())
        }
    }
    paging::unmap_all_extra();
}

// ------------------------------------------------------------------- MSRs

/// MSRs whose junk write would break this guest itself (its time, its
/// LAPIC, its paging and segments): read and written back, no junk.
fn keep(msr: u32) -> bool {
    matches!(
        msr,
        0x10 | 0x1B | 0x277 | 0x1A0 | 0x6E0 | 0xC000_0080 | 0xC000_0100..=0xC000_0102
    )
}

fn msr_sweep(_env: &Env) -> Msg {
    const RANGES: [(u32, u32); 4] = [
        (0, 0x2000),
        (0x4000_0000, 0x4000_0100),
        (0xC000_0000, 0xC000_2000),
        (0xC001_0000, 0xC001_2000),
    ];
    let (mut n, mut rd_ok, mut wr_ok, mut junk_ok) = (0u32, 0u32, 0u32, 0u32);
    let mut one = |msr: u32| {
        n += 1;
        match trap::rdmsr_checked(msr) {
            Ok(v) => {
                rd_ok += 1;
                // SAFETY: the value just read; for the rest, a junk write
                // that succeeds is undone at once (the MSRs this guest
                // depends on are `keep`).
                unsafe {
                    if trap::wrmsr_checked(msr, v).is_ok() {
                        wr_ok += 1;
                    }
                    if !keep(msr) && trap::wrmsr_checked(msr, JUNK64).is_ok() {
                        junk_ok += 1;
                        let _ = trap::wrmsr_checked(msr, v);
                    }
                }
            }
            Err(_) => {
                // SAFETY: an MSR that does not read; a junk write that
                // succeeds anyway is counted.
                if unsafe { trap::wrmsr_checked(msr, JUNK64) }.is_ok() {
                    junk_ok += 1;
                }
            }
        }
    };
    for (start, end) in RANGES {
        for msr in start..end {
            one(msr);
        }
    }
    // A sample of everything else: one MSR per 16 M.
    for i in 0..256u32 {
        let msr = (i << 24) | 0x00A5_5A5A;
        if !RANGES.iter().any(|&(s, e)| (s..e).contains(&msr)) {
            one(msr);
        }
    }
    msg!("msrs={n} read-ok={rd_ok} write-back-ok={wr_ok} junk-write-ok={junk_ok}")
}

// ------------------------------------------------------------------- ports

fn port_sweep(_env: &Env) -> Msg {
    let mut ones = [0u32; 3];
    for port in 0..=0xFFFFu16 {
        // SAFETY: every port of this VM is the hypervisor's emulation; the
        // junk value resets and powers off nothing (see JUNK8).
        unsafe {
            if cpu::inb(port) == 0xFF {
                ones[0] += 1;
            }
            cpu::outb(port, JUNK8);
            if cpu::inw(port) == 0xFFFF {
                ones[1] += 1;
            }
            cpu::outw(port, JUNK16);
            if cpu::inl(port) == 0xFFFF_FFFF {
                ones[2] += 1;
            }
            cpu::outl(port, JUNK32);
        }
    }
    msg!(
        "ports=65536 widths=1,2,4 accesses=393216 all-ones-reads={}/{}/{}",
        ones[0],
        ones[1],
        ones[2]
    )
}

// -------------------------------------------------------------------- MMIO

/// Sampling stride of the 2 MiB window at `w`: every 4 KiB page over the
/// ECAM window and the IOAPIC/LAPIC area, every 64 KiB in the rest of the
/// PCI hole, one access per 2 MiB below it.
fn mmio_stride(w: u64) -> u64 {
    if (0xE000_0000..0xE020_0000).contains(&w) || (0xFEC0_0000..0xFF00_0000).contains(&w) {
        0x1000
    } else if w >= 0xC000_0000 {
        0x1_0000
    } else {
        paging::PAGE_2M
    }
}

fn mmio_sweep(_env: &Env) -> Msg {
    let (mut samples, mut ones) = (0u32, 0u32);
    let mut w = paging::mapped_ram_end();
    while w < 1 << 32 {
        if paging::map_extra_2m(w) {
            let stride = mmio_stride(w);
            let mut off = 0;
            while off < paging::PAGE_2M {
                // SAFETY: outside this VM's RAM (mapped 1:1 just now, no Rust
                // object there); whatever answers is the hypervisor's.
                unsafe {
                    if cpu::mmio_read32(w + off) == 0xFFFF_FFFF {
                        ones += 1;
                    }
                    cpu::mmio_write32(w + off, JUNK32);
                }
                samples += 1;
                off += stride;
            }
            paging::unmap_extra_2m(w);
        }
        w += paging::PAGE_2M;
    }
    msg!(
        "from={:#x} samples={samples} (read+write) all-ones={ones} stride 4K ECAM/IOAPIC/LAPIC, 64K PCI hole, 2M below",
        paging::mapped_ram_end()
    )
}

// ---------------------------------------------------- VMX and SVM opcodes

fn virt_insns(env: &Env) -> Msg {
    macro_rules! try_insn {
        ($($asm:tt)*) => {{
            let r = trap::guarded(|| {
                // SAFETY: a virtualization instruction in a guest: the
                // hypervisor intercepts it or the CPU faults (caught by the
                // guard); rax, rcx and rdx hold junk for those that read
                // them and nothing else is touched.
                unsafe {
                    core::arch::asm!($($asm)*, inout("rax") 0xDEAD_0000_0000_0000u64 => _,
                        inout("rcx") 0x5A5Au64 => _, inout("rdx") 0u64 => _, options(nostack))
                }
            });
            match r {
                Ok(()) => 0xFF,
                Err(Abort::Exception(f)) => f.vector as u8,
                Err(Abort::Panic(_)) => 0xFE,
            }
        }};
    }
    let region = [0u64; 4];
    let p = region.as_ptr() as u64;
    let v = [
        try_insn!("vmxon [{0}]", in(reg) p),
        try_insn!("vmxoff"),
        try_insn!("vmclear [{0}]", in(reg) p),
        try_insn!("vmptrld [{0}]", in(reg) p),
        try_insn!("vmlaunch"),
        try_insn!("vmresume"),
        try_insn!("vmread {0}, rcx", out(reg) _),
        try_insn!("vmwrite rcx, rax"),
        try_insn!("invept rcx, [{0}]", in(reg) p),
        try_insn!("invvpid rcx, [{0}]", in(reg) p),
        try_insn!("vmcall"),
        try_insn!("vmrun rax"),
        try_insn!("vmload rax"),
        try_insn!("vmsave rax"),
        try_insn!("stgi"),
        try_insn!("clgi"),
        try_insn!("invlpga rax, ecx"),
        try_insn!("skinit eax"),
        try_insn!("vmmcall"),
    ];
    // VMMCALL/VMCALL with junk in every register: the hypervisor may change
    // RAX (the hypercall's result) and nothing else.
    let mut changed = 0u32;
    let mut regs = [0u64; 9];
    let seed = 0x1111_2222_3333_0000u64;
    for (i, r) in regs.iter_mut().enumerate() {
        *r = seed + i as u64;
    }
    let insn_ok = trap::guarded(|| {
        // SAFETY: the hypercall instruction of this CPU's vendor with an
        // unknown number (junk): the hypervisor answers in RAX; every other
        // register is an operand here and compared afterwards.
        unsafe {
            if env.is_amd() {
                core::arch::asm!("vmmcall",
                    inout("rax") 0xDEAD_0000_0000_0001u64 => _,
                    inout("rcx") regs[0], inout("rdx") regs[1], inout("rsi") regs[2],
                    inout("rdi") regs[3], inout("r8") regs[4], inout("r9") regs[5],
                    inout("r10") regs[6], inout("r11") regs[7], inout("r12") regs[8],
                    options(nostack));
            } else {
                core::arch::asm!("vmcall",
                    inout("rax") 0xDEAD_0000_0000_0001u64 => _,
                    inout("rcx") regs[0], inout("rdx") regs[1], inout("rsi") regs[2],
                    inout("rdi") regs[3], inout("r8") regs[4], inout("r9") regs[5],
                    inout("r10") regs[6], inout("r11") regs[7], inout("r12") regs[8],
                    options(nostack));
            }
        }
    })
    .is_ok();
    for (i, r) in regs.iter().enumerate() {
        if *r != seed + i as u64 {
            changed |= 1 << i;
        }
    }
    out!(
        "HOSTILE virt-insns: hypercall with junk: completed={insn_ok} registers changed besides rax: {changed:#x} (rcx,rdx,rsi,rdi,r8-r12 = bits 0-8)"
    );
    // Two lines: a message holds 200 bytes.
    out!(
        "HOSTILE virt-insns VMX (vector, 255 = no fault): vmxon={} vmxoff={} vmclear={} vmptrld={} vmlaunch={} vmresume={} vmread={} vmwrite={} invept={} invvpid={} vmcall={}",
        v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10]
    );
    msg!(
        "SVM (vector, 255 = no fault): vmrun={} vmload={} vmsave={} stgi={} clgi={} invlpga={} skinit={} vmmcall={}",
        v[11], v[12], v[13], v[14], v[15], v[16], v[17], v[18]
    )
}

// -------------------------------------------------------------------- IPIs

fn ipis(env: &Env) -> Msg {
    lapic::map();
    let nmis0 = trap::NMI_HITS.load(core::sync::atomic::Ordering::SeqCst);
    // (ICR high, ICR low): broadcasts that exclude this vCPU (an INIT that
    // reached it would reset the VM before the other phases ran: that path
    // is stage 3), NMIs to itself, SMIs, start-up IPIs, unknown APIC IDs.
    const ICR: [(u32, u32); 12] = [
        (0, 0x000C_0400),           // NMI, all excluding self
        (0, 0x000C_4500),           // INIT assert, all excluding self
        (0, 0x000C_8500),           // INIT deassert, all excluding self
        (0, 0x000C_0608),           // SIPI vector 8, all excluding self
        (0, 0x0008_0400),           // NMI, all including self
        (0, 0x0004_0400),           // NMI, self (invalid combination)
        (0, 0x0008_0200),           // SMI, all including self
        (0xFF00_0000, 0x0000_0400), // NMI, physical broadcast 0xFF
        (0xFF00_0000, 0x0000_0C00), // NMI, logical 0xFF
        (0x5A00_0000, 0x0000_4500), // INIT to APIC ID 0x5A (nobody)
        (0x5A00_0000, 0x0000_0600), // SIPI to APIC ID 0x5A
        (0xFE00_0000, 0x0000_0700), // ExtINT to APIC ID 0xFE
    ];
    for (hi, lo) in ICR {
        lapic::write(lapic::REG_ICR_HI, hi);
        lapic::write(lapic::REG_ICR_LO, lo);
    }
    // Junk ICR values; an INIT among them is made "all excluding self".
    let mut x = 0x5A5A_5A5Au32;
    for _ in 0..64 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let mut lo = x;
        if (lo >> 8) & 7 == 5 {
            lo |= 3 << 18;
        }
        lapic::write(lapic::REG_ICR_HI, x.rotate_left(8));
        lapic::write(lapic::REG_ICR_LO, lo);
    }
    // Let the NMIs come in.
    let t0 = cpu::rdtsc();
    while cpu::rdtsc().wrapping_sub(t0) < tsc_bound_ms(env, 20) {
        core::hint::spin_loop();
    }
    let nmis = trap::NMI_HITS.load(core::sync::atomic::Ordering::SeqCst) - nmis0;
    msg!(
        "icr-writes={} nmis-received={nmis} esr={:#x}",
        ICR.len() + 64,
        lapic::read(0x280)
    )
}

// ------------------------------------------------------- virtio and PCI

fn virtio_junk(_env: &Env) -> Msg {
    let (found, n) = virtio::scan();
    let mut notifies = 0u32;
    for f in found[..n].iter().flatten() {
        let bdf = f.bdf;
        let cmd = PortIo.read16(bdf, COMMAND);
        PortIo.write16(bdf, COMMAND, cmd | 0x2);
        let bar0 = u64::from(PortIo.read32(bdf, BAR0) & !0xF);
        let bar1 = u64::from(PortIo.read32(bdf, BAR0 + 4) & !0xF);
        if bar0 == 0 || !paging::map_phys_range(bar0, 0x4000) {
            continue;
        }
        // SAFETY: the device's own BAR, outside RAM; junk to its registers is
        // what this phase is about.
        unsafe {
            for off in (0..0x40).step_by(4) {
                cpu::mmio_write32(bar0 + off, JUNK32);
                cpu::mmio_write32(bar0 + 0x2000 + off, JUNK32);
            }
            let _ = cpu::mmio_read8(bar0 + 0x1000);
            // Ring every doorbell: each queue's notify address and past them.
            for q in 0..1024u64 {
                cpu::mmio_write16(bar0 + 0x3000 + q * 4, q as u16);
                notifies += 1;
            }
            // Device status: everything at once, then reset.
            cpu::mmio_write8(bar0 + 0x14, 0xFF);
            cpu::mmio_write8(bar0 + 0x14, 0);
        }
        if bar1 != 0 && paging::map_phys_range(bar1, 0x1000) {
            for off in (0..0x1000).step_by(4) {
                // SAFETY: the MSI-X table and PBA of the device, outside RAM.
                unsafe { cpu::mmio_write32(bar1 + off, JUNK32) };
            }
        }
    }
    msg!("virtio-devices={n} doorbells={notifies} bar-junk=common,device,isr,msix")
}

fn pci_junk(_env: &Env) -> Msg {
    let mut present = 0u32;
    // Every function of bus 0 and function 0 of every device of the other
    // buses through 0xCF8: vendor and device ID (the whole 64 Ki functions
    // took 16 s of exits on QEMU).
    for bus in 0..=255u8 {
        for dev in 0..32u8 {
            for func in 0..if bus == 0 { 8u8 } else { 1 } {
                if PortIo.read32(Bdf::new(bus, dev, func), 0) != 0xFFFF_FFFF {
                    present += 1;
                }
            }
        }
    }
    // Junk over every dword of every function of bus 0, at every width.
    for dev in 0..32u8 {
        for func in 0..8u8 {
            let f = Bdf::new(0, dev, func);
            for off in (0..0x100u16).step_by(4) {
                PortIo.write32(f, off, JUNK32);
                PortIo.write16(f, off + 2, JUNK16);
                PortIo.write8(f, off + 1, JUNK8);
            }
        }
    }
    // 0xCF8 itself: junk, odd widths, and the data port without an address.
    // SAFETY: the VM's own emulated configuration ports.
    unsafe {
        cpu::outl(0xCF8, JUNK32);
        let _ = cpu::inl(0xCFC);
        cpu::outb(0xCF8, JUNK8);
        cpu::outw(0xCFA, JUNK16);
        cpu::outl(0xCFC, JUNK32);
    }
    // ECAM: every width, aligned or not, over bus 0's first functions.
    let mut ecam = 0u32;
    if paging::map_phys_range(0xE000_0000, 0x10_0000) {
        for page in 0..256u64 {
            let a = 0xE000_0000 + page * 0x1000;
            // SAFETY: the ECAM window, outside RAM.
            unsafe {
                for off in [0u64, 1, 2, 3, 4, 6, 0x10, 0x3C, 0xFFC, 0xFFF] {
                    let _ = cpu::mmio_read8(a + off);
                    cpu::mmio_write8(a + off, JUNK8);
                    if off % 2 == 0 {
                        cpu::mmio_write16(a + off, JUNK16);
                    }
                    if off % 4 == 0 {
                        cpu::mmio_write32(a + off, JUNK32);
                    }
                    ecam += 1;
                }
            }
        }
    }
    msg!("functions-present={present} of bus0x32x8+255x32 cf8-junk=bus0x32x8x64 ecam-accesses={ecam}")
}

fn ioapic_junk(_env: &Env) -> Msg {
    ioapic::map();
    for reg in 0..=0xFFu32 {
        ioapic::write(reg, JUNK32);
        let _ = ioapic::read(reg);
    }
    // SAFETY: the IOAPIC page: junk to IOREGSEL/IOWIN at odd offsets and
    // widths, and to the EOI register.
    unsafe {
        for off in [0u64, 1, 3, 0x10, 0x13, 0x20, 0x40, 0xFFC] {
            cpu::mmio_write8(ioapic::BASE + off, JUNK8);
            cpu::mmio_write32(ioapic::BASE + (off & !3), JUNK32);
        }
    }
    msg!("registers=256 written, odd offsets and widths")
}

fn legacy_junk(_env: &Env) -> Msg {
    // SAFETY: the VM's emulated 8259s, 8254 and RTC/CMOS.
    unsafe {
        // 8259: an init sequence of junk, OCWs, poll, specific EOIs.
        for base in [0x20u16, 0xA0] {
            cpu::outb(base, 0x1F);
            for _ in 0..3 {
                cpu::outb(base + 1, JUNK8);
            }
            for ocw in [0x0C, 0x0B, 0x0A, 0x60, 0x67, 0xE5, 0xC7, 0x68, 0x48] {
                cpu::outb(base, ocw);
                let _ = cpu::inb(base);
            }
        }
        // 8254: every mode on every channel, counts 0/1/junk, read-back.
        for ch in 0..3u8 {
            for mode in 0..8u8 {
                cpu::outb(0x43, (ch << 6) | 0x30 | (mode << 1));
                cpu::outb(0x40 + u16::from(ch), 1);
                cpu::outb(0x40 + u16::from(ch), 0);
            }
        }
        for rb in [0xC2u8, 0xE2, 0xD4, 0xF8, 0xFE] {
            cpu::outb(0x43, rb);
            let _ = cpu::inb(0x40);
            let _ = cpu::inb(0x41);
            let _ = cpu::inb(0x42);
        }
        cpu::outb(0x61, 0xFF);
        // RTC/CMOS: every index (with the NMI-mask bit too), junk, then the
        // fastest periodic rate and every interrupt enabled.
        for idx in 0..=0xFFu8 {
            cpu::outb(0x70, idx);
            let _ = cpu::inb(0x71);
            cpu::outb(0x71, JUNK8);
        }
        cpu::outb(0x70, 0x0A);
        cpu::outb(0x71, 0x23);
        cpu::outb(0x70, 0x0B);
        cpu::outb(0x71, 0x70);
        cpu::outb(0x70, 0x0C);
        let _ = cpu::inb(0x71);
    }
    msg!("pic=icw/ocw/poll pit=3x8 modes+readback rtc=256 indexes, periodic 8 kHz")
}

/// The 8254 at its fastest (count 1, ~1.19 MHz) routed everywhere: the 8259
/// and every IOAPIC pin unmasked, edge, fixed, to this vCPU, with interrupts
/// off. Then everything masked again.
fn timer_storm(env: &Env) -> Msg {
    ioapic::map();
    let pins = ioapic::pins();
    // SAFETY: the VM's emulated 8259s and 8254.
    unsafe {
        cpu::outb(0x21, 0);
        cpu::outb(0xA1, 0);
        cpu::outb(0x43, 0x34);
        cpu::outb(0x40, 1);
        cpu::outb(0x40, 0);
    }
    for pin in 0..pins {
        ioapic::set_redirection(pin, 0, 0x5A);
    }
    let t0 = cpu::rdtsc();
    let mut spins = 0u64;
    while cpu::rdtsc().wrapping_sub(t0) < tsc_bound_ms(env, 200) {
        spins += 1;
        core::hint::spin_loop();
    }
    for pin in 0..pins {
        ioapic::set_redirection(pin, 0, ioapic::RTE_MASKED);
    }
    // SAFETY: as above: one-shot mode, everything masked.
    unsafe {
        cpu::outb(0x43, 0x30);
        cpu::outb(0x21, 0xFF);
        cpu::outb(0xA1, 0xFF);
    }
    msg!("pit=count-1 ioapic-pins={pins} unmasked for 200 ms, spins={spins}")
}

/// `n` CPUIDs, then `n` port reads, each storm cut short after `storm-ms`
/// (default 3000: an exit costs ~70 us on QEMU, ~4 us on Bochs).
fn exit_storm(env: &Env, n: u64) -> Msg {
    let khz = u64::from(env.tsc_khz.max(1));
    let cap = tsc_bound_ms(env, arg(env, "storm-ms", 3000));
    let storm = |op: &dyn Fn(u64)| {
        let t0 = cpu::rdtsc();
        let mut done = 0;
        while done < n {
            for i in done..(done + 1000).min(n) {
                op(i);
            }
            done = (done + 1000).min(n);
            if cpu::rdtsc().wrapping_sub(t0) > cap {
                break;
            }
        }
        (done, cpu::rdtsc().wrapping_sub(t0))
    };
    let (c, ct) = storm(&|i| {
        let _ = cpu::cpuid(i as u32 & 0x1F, 0);
    });
    let (p, pt) = storm(&|_| {
        // SAFETY: an unclaimed port: reads all ones.
        let _ = unsafe { cpu::inb(0x2E0) };
    });
    msg!(
        "cpuid={c} in {} ms ({} ticks each), port-reads={p} in {} ms ({} ticks each)",
        ct / khz,
        ct / c.max(1),
        pt / khz,
        pt / p.max(1)
    )
}

// ------------------------------------------------------------- reset paths

fn reset_cf9() -> ! {
    out!("HOSTILE reset path: port 0xCF9 <- 0x06");
    crate::drain_serial();
    // SAFETY: resetting the VM is the point.
    unsafe { cpu::outb(0xCF9, 0x06) };
    give_up("0xCF9")
}

fn reset_kbc() -> ! {
    out!("HOSTILE reset path: 8042 port 0x64 <- 0xFE");
    crate::drain_serial();
    // SAFETY: resetting the VM is the point.
    unsafe { cpu::outb(0x64, 0xFE) };
    give_up("8042")
}

fn reset_acpi() -> ! {
    let reg = crate::acpi::find_rsdp().ok().and_then(|rsdp| {
        let xsdt = crate::acpi::Table::load(rsdp.xsdt?, b"XSDT").ok()?;
        let fadt = xsdt.find_entry(8, b"FACP").ok()??;
        let fadt = crate::acpi::Table::load(fadt, b"FACP").ok()?;
        // RESET_REG (a GAS at 116: space, width, offset, size, address)
        // and RESET_VALUE at 128.
        (fadt.length() >= 129).then(|| (fadt.le(116, 1), fadt.le(120, 8), fadt.le(128, 1)))
    });
    match reg {
        Some((1, port, value)) => {
            out!("HOSTILE reset path: ACPI reset register, port {port:#x} <- {value:#x}");
            crate::drain_serial();
            // SAFETY: resetting the VM is the point.
            unsafe { cpu::outb(port as u16, value as u8) };
            give_up("ACPI reset register")
        }
        other => {
            out!("HOSTILE reset path: no usable ACPI reset register ({other:?}); INIT instead");
            init_self()
        }
    }
}

fn init_self() -> ! {
    out!("HOSTILE reset path: INIT to itself");
    crate::drain_serial();
    lapic::map();
    let id = lapic::read(lapic::REG_ID) >> 24;
    lapic::write(lapic::REG_ICR_HI, id << 24);
    lapic::write(lapic::REG_ICR_LO, 0x0000_4500);
    give_up("INIT")
}

fn give_up(path: &str) -> ! {
    let t0 = cpu::rdtsc();
    while cpu::rdtsc().wrapping_sub(t0) < 1_000_000_000 {
        core::hint::spin_loop();
    }
    out!("HOSTILE reset path {path} did not reset the VM");
    crate::triple_fault()
}
