//! The Multiboot1 header and the 32-bit entry stub that reaches long mode.
//!
//! A Multiboot1 loader (QEMU `-kernel`, GRUB `multiboot`, the Quercus loader)
//! enters `guest_start32` in 32-bit protected mode, paging off, with
//! EAX = 0x2BADB002 and EBX = the physical address of the multiboot info.
//! The header uses the a.out kludge (flags bit 16) so that the loader needs
//! no ELF support: it copies `load_addr..load_end_addr` from the file and
//! zeroes up to `bss_end_addr`.
//!
//! The stub zeroes .bss itself (it does not trust the loader to), then maps
//! exactly the guest's RAM 1:1 with 2 MiB pages: `mem_upper` KiB + 1 MiB,
//! rounded up to 2 MiB and capped at 4 GiB (one 2 MiB page if the loader gave
//! no memory size). It enables PAE, SSE (no Rust code runs before: the
//! prebuilt `core` uses SSE registers), EFER.LME and paging, loads the
//! guest's GDT and calls `guest_main(magic, info)` on the boot stack.

/// Size of the boot stack, which every test runs on.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

core::arch::global_asm!(
    r#"
    .section .multiboot1, "a"
    .balign 4
mb1_header:
    .long 0x1BADB002
    .long 0x00010003
    .long -(0x1BADB002 + 0x00010003)
    .long mb1_header
    .long __guest_start
    .long __guest_load_end
    .long __guest_bss_end
    .long guest_start32

    .section .text.entry32, "ax"
    .code32
    .global guest_start32
guest_start32:
    cli
    cld
    mov %eax, %ebp
    /* %ebx keeps the info pointer; nothing below touches it before 64-bit mode. */
    mov $__guest_load_end, %edi
    mov $__guest_bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb
    mov $guest_stack_top, %esp

    /* Long mode? CPUID 0x80000001 EDX bit 29. */
    mov $0x80000000, %eax
    push %ebx
    cpuid
    pop %ebx
    cmp $0x80000001, %eax
    jb 90f
    mov $0x80000001, %eax
    push %ebx
    cpuid
    pop %ebx
    bt $29, %edx
    jnc 90f

    /* %ecx = 2 MiB pages of RAM to map. */
    mov $1, %ecx
    cmp $0x2BADB002, %ebp
    jne 20f
    testl $1, (%ebx)
    jz 20f
    mov 8(%ebx), %eax
    cmp $(4 * 1024 * 1024 - 1024), %eax
    jbe 10f
    mov $(4 * 1024 * 1024 - 1024), %eax
10:
    add $(1024 + 2047), %eax
    shr $11, %eax
    mov %eax, %ecx
20:
    mov %ecx, guest_ram_pages

    /* PML4[0] -> PDPT; the U bit here only lets a lower level grant user access. */
    mov $guest_pdpt, %eax
    or $7, %eax
    mov %eax, guest_pml4
    /* PDPT[0..4] -> the four page directories (supervisor only). */
    mov $guest_pd, %eax
    or $3, %eax
    xor %edx, %edx
30:
    mov %eax, guest_pdpt(,%edx,8)
    add $4096, %eax
    inc %edx
    cmp $4, %edx
    jb 30b
    /* PD entries: present, writable, 2 MiB. */
    xor %edx, %edx
40:
    mov %edx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, guest_pd(,%edx,8)
    inc %edx
    cmp %ecx, %edx
    jb 40b

    mov $guest_pml4, %eax
    mov %eax, %cr3
    /* CR4: PAE | OSFXSR | OSXMMEXCPT */
    mov %cr4, %eax
    or $0x620, %eax
    mov %eax, %cr4
    /* EFER.LME */
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    /* CR0: PG | WP | NE | ET | MP | PE (EM, TS clear) */
    mov $0x80010033, %eax
    mov %eax, %cr0
    lgdt guest_gdtr
    ljmp $0x08, $guest_start64

90:
    /* No long mode: say so on COM1 and stop. */
    mov $no_long_mode_msg, %esi
91:
    movb (%esi), %al
    test %al, %al
    jz 92f
    mov $0x3F8, %dx
    outb %al, %dx
    inc %esi
    jmp 91b
92:
    cli
    hlt
    jmp 92b

    .code64
guest_start64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    mov $guest_stack_top, %rsp
    xor %ecx, %ecx
    mov %ebp, %edi
    mov %ebx, %esi
    xor %ebp, %ebp
    call guest_main
93:
    cli
    hlt
    jmp 93b

    .section .rodata.entry32, "a"
no_long_mode_msg:
    .asciz "TESTS DONE 0 passed 1 failed (test-guest: the CPU has no long mode)\n"

    /* The guest's only GDT: the TSS descriptor (0x28) is filled in by Rust. */
    .section .data.gdt, "aw"
    .balign 16
    .global guest_gdt
guest_gdt:
    .quad 0                     /* 0x00 null */
    .quad 0x00AF9A000000FFFF    /* 0x08 kernel code, 64-bit */
    .quad 0x00CF92000000FFFF    /* 0x10 kernel data */
    .quad 0x00CFF2000000FFFF    /* 0x18 user data, DPL 3 */
    .quad 0x00AFFA000000FFFF    /* 0x20 user code, 64-bit, DPL 3 */
    .quad 0, 0                  /* 0x28 TSS (16 bytes) */
guest_gdt_end:
    .balign 8
    .global guest_gdtr
guest_gdtr:
    .short guest_gdt_end - guest_gdt - 1
    .quad guest_gdt
    .global guest_ram_pages
    .balign 4
guest_ram_pages:
    .long 0

    .section .bss.paging, "aw", @nobits
    .balign 4096
    .global guest_pml4
guest_pml4:
    .skip 4096
    .global guest_pdpt
guest_pdpt:
    .skip 4096
    .global guest_pd
guest_pd:
    .skip 4096 * 4
    .balign 16
guest_stack_bottom:
    .skip {stack}
    .global guest_stack_top
guest_stack_top:
"#,
    stack = const BOOT_STACK_SIZE,
    options(att_syntax)
);
