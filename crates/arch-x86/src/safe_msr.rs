//! RDMSR/WRMSR that survive a #GP: for MSR numbers an operator types at the
//! shell, which may not exist on this CPU. The #GP handler recognizes the two
//! instructions below and resumes at their fixup labels with an error.

core::arch::global_asm!(
    r#"
    .section .text.safe_msr, "ax"
    .global quercus_rdmsr_safe
    .global quercus_rdmsr_insn
    .global quercus_rdmsr_fixup
    /* u64 quercus_rdmsr_safe(u32 msr, u64 *value): 0 ok, 1 #GP */
quercus_rdmsr_safe:
    mov %edi, %ecx
quercus_rdmsr_insn:
    rdmsr
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, (%rsi)
    xor %eax, %eax
    ret
quercus_rdmsr_fixup:
    mov $1, %eax
    ret

    .global quercus_wrmsr_safe
    .global quercus_wrmsr_insn
    .global quercus_wrmsr_fixup
    /* u64 quercus_wrmsr_safe(u32 msr, u64 value): 0 ok, 1 #GP */
quercus_wrmsr_safe:
    mov %edi, %ecx
    mov %rsi, %rax
    mov %rsi, %rdx
    shr $32, %rdx
quercus_wrmsr_insn:
    wrmsr
    xor %eax, %eax
    ret
quercus_wrmsr_fixup:
    mov $1, %eax
    ret
"#,
    options(att_syntax)
);

extern "C" {
    fn quercus_rdmsr_safe(msr: u32, value: *mut u64) -> u64;
    fn quercus_wrmsr_safe(msr: u32, value: u64) -> u64;
    static quercus_rdmsr_insn: u8;
    static quercus_rdmsr_fixup: u8;
    static quercus_wrmsr_insn: u8;
    static quercus_wrmsr_fixup: u8;
}

/// Reads `msr`, or `None` if the CPU raised #GP.
pub fn rdmsr(msr: u32) -> Option<u64> {
    let mut value = 0u64;
    // SAFETY: the routine only reads the MSR and writes `value`; a #GP on the
    // RDMSR is turned into the error return by `fixup`.
    let failed = unsafe { quercus_rdmsr_safe(msr, &mut value) };
    (failed == 0).then_some(value)
}

/// Writes `msr`; false if the CPU raised #GP. The caller decides whether the
/// write is safe for the host (the shell only allows it on request).
pub fn wrmsr(msr: u32, value: u64) -> bool {
    // SAFETY: a #GP on the WRMSR is turned into the error return by `fixup`;
    // what a successful write means for the host is the operator's choice,
    // made explicit at the shell.
    unsafe { quercus_wrmsr_safe(msr, value) == 0 }
}

/// If `rip` is one of the guarded instructions, the RIP to resume at.
pub fn fixup(rip: u64) -> Option<u64> {
    let pairs = [
        (
            core::ptr::addr_of!(quercus_rdmsr_insn),
            core::ptr::addr_of!(quercus_rdmsr_fixup),
        ),
        (
            core::ptr::addr_of!(quercus_wrmsr_insn),
            core::ptr::addr_of!(quercus_wrmsr_fixup),
        ),
    ];
    pairs
        .iter()
        .find(|(insn, _)| *insn as u64 == rip)
        .map(|(_, fix)| *fix as u64)
}
