//! The VMLAUNCH/VMRESUME world switch, in assembly: host FPU/SSE state saved
//! and the guest's loaded, host callee-saved registers and RFLAGS kept on the
//! stack, HOST_RSP written just before entry, guest GPRs loaded from and
//! saved back to a [`Gprs`] block at the VM-exit landing label.

use vcpu::Gprs;

// The assembly addresses Gprs by these offsets.
const _: () = {
    assert!(core::mem::offset_of!(Gprs, rax) == 0);
    assert!(core::mem::offset_of!(Gprs, rbx) == 8);
    assert!(core::mem::offset_of!(Gprs, rcx) == 16);
    assert!(core::mem::offset_of!(Gprs, rdx) == 24);
    assert!(core::mem::offset_of!(Gprs, rsi) == 32);
    assert!(core::mem::offset_of!(Gprs, rdi) == 40);
    assert!(core::mem::offset_of!(Gprs, rbp) == 48);
    assert!(core::mem::offset_of!(Gprs, r8) == 56);
    assert!(core::mem::offset_of!(Gprs, r15) == 112);
};

pub use crate::cpu::FxArea;

// HOST_RSP is VMCS field 0x6C14. On a VM exit the CPU loads HOST_RSP and
// jumps to quercus_vmx_exit with RFLAGS = 0x2: the stack then holds, from the
// top, &Gprs, guest FxArea, host FxArea, r15..rbx, the caller's RFLAGS and
// the return address.
core::arch::global_asm!(
    r#"
    .pushsection .text.vmx, "ax"
    .global quercus_vmx_run
    .global quercus_vmx_exit
    /* rdi = &Gprs, rsi = launched (0 or 1), rdx = guest FxArea,
       rcx = host FxArea. Returns 0 after a VM exit, 1 if the entry
       failed with VMfailInvalid (CF), 2 with VMfailValid (ZF). */
quercus_vmx_run:
    pushfq
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    fxsave64 [rcx]
    fxrstor64 [rdx]
    push rcx
    push rdx
    push rdi
    mov eax, 0x6C14
    vmwrite rax, rsp
    jbe 4f
    cmp rsi, 0
    mov rax, rdi
    mov rbx, [rax + 8]
    mov rcx, [rax + 16]
    mov rdx, [rax + 24]
    mov rsi, [rax + 32]
    mov rdi, [rax + 40]
    mov rbp, [rax + 48]
    mov r8, [rax + 56]
    mov r9, [rax + 64]
    mov r10, [rax + 72]
    mov r11, [rax + 80]
    mov r12, [rax + 88]
    mov r13, [rax + 96]
    mov r14, [rax + 104]
    mov r15, [rax + 112]
    mov rax, [rax]
    jne 2f
    vmlaunch
    jmp 4f
2:
    vmresume
4:
    /* No VM entry: CF or ZF tells which failure. */
    mov eax, 1
    mov ecx, 2
    cmovz eax, ecx
    jmp 5f
quercus_vmx_exit:
    push rax
    mov rax, [rsp + 8]
    mov [rax + 8], rbx
    mov [rax + 16], rcx
    mov [rax + 24], rdx
    mov [rax + 32], rsi
    mov [rax + 40], rdi
    mov [rax + 48], rbp
    mov [rax + 56], r8
    mov [rax + 64], r9
    mov [rax + 72], r10
    mov [rax + 80], r11
    mov [rax + 88], r12
    mov [rax + 96], r13
    mov [rax + 104], r14
    mov [rax + 112], r15
    pop rbx
    mov [rax], rbx
    xor eax, eax
5:
    pop rdi
    pop rdx
    pop rcx
    fxsave64 [rdx]
    fxrstor64 [rcx]
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    popfq
    ret
    .popsection
"#
);

extern "C" {
    fn quercus_vmx_run(
        gprs: *mut Gprs,
        launched: u64,
        guest_fx: *mut FxArea,
        host_fx: *mut FxArea,
    ) -> u64;
    fn quercus_vmx_exit();
}

/// The address the CPU continues at after a VM exit (HOST_RIP).
pub fn exit_landing() -> u64 {
    quercus_vmx_exit as *const () as u64
}

/// How an attempt to enter the guest ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The guest ran and exited: the exit-reason field says why.
    Exited,
    /// VMLAUNCH/VMRESUME failed with VMfailInvalid (no current VMCS).
    FailInvalid,
    /// VMLAUNCH/VMRESUME failed with VMfailValid (the VM-instruction error
    /// field says why).
    FailValid,
}

/// Enters the guest of the current VMCS until the next VM exit.
///
/// # Safety
/// The CPU is in VMX operation with this vCPU's VMCS current; its host-state
/// area describes this CPU (HOST_RIP = [`exit_landing`], CR3, GDT, TSS, GS
/// base) and its controls keep the guest inside memory the VM owns.
pub unsafe fn enter(
    gprs: &mut Gprs,
    launched: bool,
    guest_fx: &mut FxArea,
    host_fx: &mut FxArea,
) -> Entry {
    // SAFETY: the caller's contract; the register block and FXSAVE areas are
    // valid and exclusively borrowed for the call, and the routine restores
    // every callee-saved register, RFLAGS and the host FPU state.
    let rc = unsafe { quercus_vmx_run(gprs, u64::from(launched), guest_fx, host_fx) };
    match rc {
        0 => Entry::Exited,
        1 => Entry::FailInvalid,
        _ => Entry::FailValid,
    }
}
