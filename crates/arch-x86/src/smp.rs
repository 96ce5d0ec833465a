//! Starting application processors: a real-mode trampoline copied below 1 MiB,
//! then INIT-SIPI-SIPI through the LAPIC.
//!
//! The trampoline goes from real mode straight to long mode (PAE, EFER.LME,
//! CR0.PE|PG in one write), using the BSP's page tables, then jumps to the
//! entry with the stack and argument the BSP left in its data area.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::lapic;
use crate::time;

/// Physical address the trampoline is copied to (page 8: SIPI vector 0x08).
pub const TRAMPOLINE_ADDR: u64 = 0x8000;

core::arch::global_asm!(
    r#"
    .section .rodata.trampoline, "a"
    .balign 16
    .global ap_tramp_start
    .global ap_tramp_end
    .global ap_tramp_data
    .code16
ap_tramp_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (ap_tramp_gdtr - ap_tramp_start)
    mov $0x620, %eax
    mov %eax, %cr4
    mov (ap_tramp_cr3 - ap_tramp_start), %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov $0x80010033, %eax
    mov %eax, %cr0
    ljmpl $0x08, $({base} + ap_tramp64 - ap_tramp_start)
    .code64
ap_tramp64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    mov ({base} + ap_tramp_stack - ap_tramp_start), %rsp
    mov ({base} + ap_tramp_arg - ap_tramp_start), %rdi
    mov ({base} + ap_tramp_entry - ap_tramp_start), %rax
    xor %rbp, %rbp
    call *%rax
1:
    cli
    hlt
    jmp 1b
    .balign 16
ap_tramp_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
ap_tramp_gdtr:
    .short 23
    .long {base} + ap_tramp_gdt - ap_tramp_start
    .balign 8
ap_tramp_data:
ap_tramp_cr3:
    .quad 0
ap_tramp_stack:
    .quad 0
ap_tramp_entry:
    .quad 0
ap_tramp_arg:
    .quad 0
ap_tramp_end:
    .code64
"#,
    base = const TRAMPOLINE_ADDR,
    options(att_syntax)
);

extern "C" {
    static ap_tramp_start: u8;
    static ap_tramp_end: u8;
    static ap_tramp_data: u8;
}

/// Why an AP did not come up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApStartError {
    /// The LAPIC never finished sending an IPI.
    IpiStuck,
    /// The AP did not report in before the deadline.
    Timeout { waited_ms: u64 },
}

impl core::fmt::Display for ApStartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ApStartError::IpiStuck => write!(f, "the local APIC never delivered INIT/SIPI"),
            ApStartError::Timeout { waited_ms } => {
                write!(f, "no sign of life after {waited_ms} ms")
            }
        }
    }
}

/// What an AP needs to enter Rust.
#[derive(Clone, Copy, Debug)]
pub struct ApBoot {
    pub apic_id: u32,
    /// Top of the AP's stack (16-byte aligned).
    pub stack_top: u64,
    /// Called on the AP with `arg`; never returns.
    pub entry: extern "C" fn(u64) -> !,
    pub arg: u64,
}

/// Starts one AP and waits until it sets `online` (or `timeout_ms` passes).
///
/// Starts one AP at a time: the trampoline's data area is shared.
pub fn start_ap(boot: &ApBoot, online: &AtomicBool, timeout_ms: u64) -> Result<(), ApStartError> {
    // Taking addresses of assembly labels; nothing is read through them.
    let (start, end, data) = {
        (
            core::ptr::addr_of!(ap_tramp_start) as usize,
            core::ptr::addr_of!(ap_tramp_end) as usize,
            core::ptr::addr_of!(ap_tramp_data) as usize,
        )
    };
    let len = end - start;
    let cr3 = crate::cpu::read_crs()[2];
    let dst = TRAMPOLINE_ADDR as *mut u8;
    // SAFETY: the first MiB is identity-mapped and never handed out by the
    // frame allocator; the trampoline is a few hundred bytes below 0x9000, and
    // no AP is running it (they are started one at a time).
    unsafe {
        core::ptr::copy_nonoverlapping(start as *const u8, dst, len);
        let d = dst.add(data - start) as *mut u64;
        d.write_volatile(cr3);
        d.add(1).write_volatile(boot.stack_top);
        d.add(2).write_volatile(boot.entry as usize as u64);
        d.add(3).write_volatile(boot.arg);
    }
    core::sync::atomic::fence(Ordering::SeqCst);

    if !lapic::send_init(boot.apic_id) {
        return Err(ApStartError::IpiStuck);
    }
    time::delay_us(10_000);
    for _ in 0..2 {
        if online.load(Ordering::Acquire) {
            break;
        }
        if !lapic::send_sipi(boot.apic_id, (TRAMPOLINE_ADDR >> 12) as u8) {
            return Err(ApStartError::IpiStuck);
        }
        time::delay_us(200);
    }
    let deadline = time::deadline_after_us(timeout_ms * 1000);
    while !online.load(Ordering::Acquire) {
        if time::passed(deadline) {
            return Err(ApStartError::Timeout {
                waited_ms: timeout_ms,
            });
        }
        core::hint::spin_loop();
    }
    Ok(())
}
