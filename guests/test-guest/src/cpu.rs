//! Thin wrappers over the instructions the guest needs.

use core::arch::asm;

/// The four registers CPUID returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpuid {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// CPUID with `leaf` in EAX and `subleaf` in ECX.
pub fn cpuid(leaf: u32, subleaf: u32) -> Cpuid {
    let (eax, ecx, edx): (u32, u32, u32);
    let rbx: u64;
    // SAFETY: CPUID only writes the four registers; LLVM reserves RBX, so
    // it is parked in a scratch register and swapped back.
    unsafe {
        asm!(
            "mov {saved}, rbx",
            "cpuid",
            "xchg {saved}, rbx",
            saved = out(reg) rbx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nostack, nomem, preserves_flags)
        );
    }
    Cpuid {
        eax,
        ebx: rbx as u32,
        ecx,
        edx,
    }
}

/// The 12 bytes of EBX, ECX, EDX in that order (vendor and hypervisor signatures).
pub fn signature_bcd(r: Cpuid) -> [u8; 12] {
    let mut s = [0u8; 12];
    s[0..4].copy_from_slice(&r.ebx.to_le_bytes());
    s[4..8].copy_from_slice(&r.ecx.to_le_bytes());
    s[8..12].copy_from_slice(&r.edx.to_le_bytes());
    s
}

/// The TSC, not ordered with the instructions around it.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC reads a counter (CR4.TSD is clear: we run at CPL 0).
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nostack, nomem, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The TSC, read after every earlier instruction completed (LFENCE first).
pub fn rdtsc_ordered() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: LFENCE and RDTSC have no memory effects.
    unsafe {
        asm!("lfence", "rdtsc", "lfence", out("eax") lo, out("edx") hi,
            options(nostack, nomem, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// RDMSR.
///
/// # Safety
/// The MSR must exist and be readable, or a #GP must be expected (see
/// `trap::rdmsr_checked`).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the read is valid.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi,
            options(nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// WRMSR.
///
/// # Safety
/// The write must be valid and must not break the guest's own state.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the write is valid and harmless.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags));
    }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// Reading the port must have no effect the caller does not intend.
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: the caller vouches for the port.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nostack, nomem, preserves_flags))
    };
    v
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// Writing the port must have no effect the caller does not intend.
pub unsafe fn outb(port: u16, v: u8) {
    // SAFETY: the caller vouches for the port.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nostack, nomem, preserves_flags))
    };
}

/// Reads a word from an I/O port.
///
/// # Safety
/// Reading the port must have no effect the caller does not intend.
pub unsafe fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: the caller vouches for the port.
    unsafe {
        asm!("in ax, dx", in("dx") port, out("ax") v, options(nostack, nomem, preserves_flags))
    };
    v
}

/// Reads a dword from an I/O port.
///
/// # Safety
/// Reading the port must have no effect the caller does not intend.
pub unsafe fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: the caller vouches for the port.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") v, options(nostack, nomem, preserves_flags))
    };
    v
}

/// Writes a word to an I/O port.
///
/// # Safety
/// Writing the port must have no effect the caller does not intend.
pub unsafe fn outw(port: u16, v: u16) {
    // SAFETY: the caller vouches for the port.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") v, options(nostack, nomem, preserves_flags))
    };
}

/// Writes a dword to an I/O port.
///
/// # Safety
/// Writing the port must have no effect the caller does not intend.
pub unsafe fn outl(port: u16, v: u32) {
    // SAFETY: the caller vouches for the port.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") v, options(nostack, nomem, preserves_flags))
    };
}

// Device registers are accessed with exactly one plain MOV each: the
// compiler may fold a `read_volatile` into another instruction (seen:
// `and ecx, [rax + 0x10]`), and a hypervisor's MMIO emulator, like a
// driver's readl/writel, only has to handle MOV.

/// Reads a byte of device memory with one MOV.
///
/// # Safety
/// `addr` must be mapped and hold no Rust object; the read must have no
/// effect the caller does not intend.
pub unsafe fn mmio_read8(addr: u64) -> u8 {
    let v: u8;
    // SAFETY: the caller vouches for the address.
    unsafe {
        asm!("mov {v}, byte ptr [{a}]", a = in(reg) addr, v = out(reg_byte) v, options(nostack, preserves_flags))
    };
    v
}

/// Reads a word of device memory with one MOV.
///
/// # Safety
/// As [`mmio_read8`]; `addr` 2-byte aligned.
pub unsafe fn mmio_read16(addr: u64) -> u16 {
    let v: u16;
    // SAFETY: the caller vouches for the address.
    unsafe {
        asm!("mov {v:x}, word ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, preserves_flags))
    };
    v
}

/// Reads a dword of device memory with one MOV.
///
/// # Safety
/// As [`mmio_read8`]; `addr` 4-byte aligned.
pub unsafe fn mmio_read32(addr: u64) -> u32 {
    let v: u32;
    // SAFETY: the caller vouches for the address.
    unsafe {
        asm!("mov {v:e}, dword ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, preserves_flags))
    };
    v
}

/// Writes a byte of device memory with one MOV.
///
/// # Safety
/// `addr` must be mapped and hold no Rust object; the write must have no
/// effect the caller does not intend.
pub unsafe fn mmio_write8(addr: u64, v: u8) {
    // SAFETY: the caller vouches for the address and the value.
    unsafe {
        asm!("mov byte ptr [{a}], {v}", a = in(reg) addr, v = in(reg_byte) v, options(nostack, preserves_flags))
    };
}

/// Writes a word of device memory with one MOV.
///
/// # Safety
/// As [`mmio_write8`]; `addr` 2-byte aligned.
pub unsafe fn mmio_write16(addr: u64, v: u16) {
    // SAFETY: the caller vouches for the address and the value.
    unsafe {
        asm!("mov word ptr [{a}], {v:x}", a = in(reg) addr, v = in(reg) v, options(nostack, preserves_flags))
    };
}

/// Writes a dword of device memory with one MOV.
///
/// # Safety
/// As [`mmio_write8`]; `addr` 4-byte aligned.
pub unsafe fn mmio_write32(addr: u64, v: u32) {
    // SAFETY: the caller vouches for the address and the value.
    unsafe {
        asm!("mov dword ptr [{a}], {v:e}", a = in(reg) addr, v = in(reg) v, options(nostack, preserves_flags))
    };
}

/// Invalidates the TLB entry for `addr`.
pub fn invlpg(addr: u64) {
    // SAFETY: INVLPG only drops a cached translation.
    unsafe { asm!("invlpg [{}]", in(reg) addr, options(nostack, preserves_flags)) };
}

/// Reloads CR3 (flushes every non-global translation).
pub fn flush_tlb() {
    // SAFETY: writing back the current CR3 keeps the same page tables.
    unsafe {
        asm!("mov {t}, cr3", "mov cr3, {t}", t = out(reg) _, options(nostack, preserves_flags));
    }
}

/// CR2 (the last page-fault address).
pub fn cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nostack, nomem, preserves_flags)) };
    v
}

/// DR6 (the debug status).
pub fn dr6() -> u64 {
    let v: u64;
    // SAFETY: reading DR6 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, dr6", out(reg) v, options(nostack, nomem, preserves_flags)) };
    v
}

/// Writes DR6 (only its status bits matter; no breakpoint is enabled).
pub fn set_dr6(v: u64) {
    // SAFETY: DR6 only reports debug conditions; writing it arms nothing.
    unsafe { asm!("mov dr6, {}", in(reg) v, options(nostack, nomem, preserves_flags)) };
}

/// Masks interrupts.
pub fn cli() {
    // SAFETY: clearing IF only delays interrupts.
    unsafe { asm!("cli", options(nostack, nomem)) };
}

/// Enables interrupts.
pub fn sti() {
    // SAFETY: the IDT covers every vector; handlers run on IST stacks.
    unsafe { asm!("sti", options(nostack, nomem)) };
}

/// Enables interrupts and halts until one arrives (`sti` takes effect after `hlt` starts, so
/// no interrupt slips in between); returns with interrupts enabled.
pub fn sti_hlt() {
    // SAFETY: the IDT covers every vector; handlers run on IST stacks; an interrupt ends the halt.
    unsafe { asm!("sti", "hlt", options(nostack, nomem)) };
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: with IF clear only NMI/SMI can wake it, and the loop halts again.
        unsafe { asm!("cli", "hlt", options(nostack, nomem)) };
    }
}

/// Remaps the legacy 8259 PICs to vectors 0x20..0x2F and masks every line,
/// so that nothing a BIOS left behind (IRQ0 on vector 8) can reach us.
pub fn quiesce_pic() {
    const ICW1_INIT_ICW4: u8 = 0x11;
    let seq: [(u16, u8); 10] = [
        (0x20, ICW1_INIT_ICW4),
        (0xA0, ICW1_INIT_ICW4),
        (0x21, 0x20), // master vector base
        (0xA1, 0x28), // slave vector base
        (0x21, 0x04), // slave on IRQ2
        (0xA1, 0x02), // cascade identity
        (0x21, 0x01), // 8086 mode
        (0xA1, 0x01),
        (0x21, 0xFF), // mask all
        (0xA1, 0xFF),
    ];
    for (port, v) in seq {
        // SAFETY: the standard 8259 initialisation sequence; a machine
        // without PICs ignores writes to these ports.
        unsafe { outb(port, v) };
    }
}
