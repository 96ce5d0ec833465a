//! The VMRUN world switch, in assembly: host FPU/SSE state saved, guest's
//! loaded; VMLOAD/VMRUN/VMSAVE with GIF clear (and host IF set during VMRUN,
//! so that physical interrupts exit the guest); host state back.

use vcpu::Gprs;

use super::vmcb::Page;

pub use crate::cpu::FxArea;

core::arch::global_asm!(
    r#"
    .section .text.svm, "ax"
    .global quercus_svm_run
    /* rdi = guest VMCB pa, rsi = host save VMCB pa, rdx = &Gprs,
       rcx = guest FxArea, r8 = host FxArea */
quercus_svm_run:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    fxsave64 (%r8)
    fxrstor64 (%rcx)
    push %r8
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    clgi
    mov %rsi, %rax
    vmsave %rax
    mov %rdx, %rax
    mov 8(%rax), %rbx
    mov 16(%rax), %rcx
    mov 24(%rax), %rdx
    mov 32(%rax), %rsi
    mov 40(%rax), %rdi
    mov 48(%rax), %rbp
    mov 56(%rax), %r8
    mov 64(%rax), %r9
    mov 72(%rax), %r10
    mov 80(%rax), %r11
    mov 88(%rax), %r12
    mov 96(%rax), %r13
    mov 104(%rax), %r14
    mov 112(%rax), %r15
    mov (%rsp), %rax
    vmload %rax
    /* IF=1 with GIF=0: no host interrupt is taken here, but with
       V_INTR_MASKING the host's IF decides whether physical interrupts
       end the guest's run (INTR exit). */
    sti
    vmrun %rax
    cli
    vmsave %rax
    mov 16(%rsp), %rax
    mov %rbx, 8(%rax)
    mov %rcx, 16(%rax)
    mov %rdx, 24(%rax)
    mov %rsi, 32(%rax)
    mov %rdi, 40(%rax)
    mov %rbp, 48(%rax)
    mov %r8, 56(%rax)
    mov %r9, 64(%rax)
    mov %r10, 72(%rax)
    mov %r11, 80(%rax)
    mov %r12, 88(%rax)
    mov %r13, 96(%rax)
    mov %r14, 104(%rax)
    mov %r15, 112(%rax)
    mov 8(%rsp), %rax
    vmload %rax
    stgi
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %r8
    fxsave64 (%rcx)
    fxrstor64 (%r8)
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret
"#,
    options(att_syntax)
);

extern "C" {
    fn quercus_svm_run(
        vmcb: u64,
        host_save: u64,
        gprs: *mut Gprs,
        guest_fx: *mut FxArea,
        host_fx: *mut FxArea,
    );
}

/// Runs the guest of `vmcb` until the next #VMEXIT.
pub fn vmrun(
    vmcb: &mut Page,
    host_save: &mut Page,
    gprs: &mut Gprs,
    guest_fx: &mut FxArea,
    host_fx: &mut FxArea,
) {
    // SAFETY: both pages are 4 KiB-aligned identity-mapped VMCBs owned by this
    // vCPU (virtual address = physical address); SVM is enabled on this CPU
    // (the vCPU is only created after `enable_on_this_cpu`); the register
    // block and FXSAVE areas are valid and exclusively borrowed for the call.
    unsafe {
        quercus_svm_run(
            vmcb as *mut Page as u64,
            host_save as *mut Page as u64,
            gprs,
            guest_fx,
            host_fx,
        )
    }
}
