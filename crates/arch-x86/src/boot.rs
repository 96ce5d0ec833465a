//! The image's entry: multiboot headers and the 32-bit stub that enters long mode.
//!
//! Both loaders start us in 32-bit protected mode with paging off: GRUB through
//! the Multiboot2 header (magic in EAX, info pointer in EBX), QEMU's `-kernel`
//! through the Multiboot1 header with the a.out kludge (it refuses 64-bit ELF
//! otherwise). The stub identity-maps the first [`IDENTITY_MAPPED_GIB`] GiB with
//! 2 MiB pages, enables PAE, SSE, long mode and paging, and calls
//! `quercus_bsp_main(magic, info)` on the boot stack. No Rust runs before SSE
//! is on: the prebuilt `core` uses SSE registers.

/// How much physical memory the boot page tables map 1:1.
pub const IDENTITY_MAPPED_GIB: u64 = 16;

/// Size of the heap that exists before the memory map is known (parsing the
/// boot information needs a few allocations).
pub const BOOTSTRAP_HEAP_SIZE: usize = 1024 * 1024;

/// The bootstrap heap region `[start, end)` in .bss, handed to the allocator once.
pub fn bootstrap_heap() -> (usize, usize) {
    extern "C" {
        static boot_heap_start: u8;
    }
    let start = core::ptr::addr_of!(boot_heap_start) as usize;
    (start, start + BOOTSTRAP_HEAP_SIZE)
}

/// Size of the BSP's boot stack (also its stack for the life of the BSP).
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

core::arch::global_asm!(
    r#"
    .section .multiboot, "a"
    .balign 8
mb2_header:
    .long 0xE85250D6
    .long 0
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (0xE85250D6 + (mb2_header_end - mb2_header))
    .balign 8
    .short 0
    .short 0
    .long 8
mb2_header_end:

    .balign 4
mb1_header:
    .long 0x1BADB002
    .long 0x00010003
    .long 0x100000000 - (0x1BADB002 + 0x00010003)
    .long mb1_header
    .long __image_start
    .long __data_end
    .long __bss_end
    .long _start32

    .section .text.boot, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov %eax, %edi
    mov %ebx, %esi
    mov $boot_stack_top, %esp

    /* Long mode available? CPUID 0x80000001 EDX bit 29. */
    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb no_long_mode
    mov $0x80000001, %eax
    cpuid
    test $(1 << 29), %edx
    jz no_long_mode

    /* PML4[0] -> PDPT, PDPT[0..N] -> PD pages, PD entries -> 2 MiB pages. */
    mov $boot_pdpt, %eax
    or $3, %eax
    mov %eax, boot_pml4
    mov $boot_pd, %eax
    or $3, %eax
    xor %ecx, %ecx
1:
    mov %eax, boot_pdpt(,%ecx,8)
    add $4096, %eax
    inc %ecx
    cmp ${gib}, %ecx
    jb 1b
    xor %ecx, %ecx
2:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, boot_pd(,%ecx,8)
    mov %ecx, %edx
    shr $11, %edx
    mov %edx, boot_pd+4(,%ecx,8)
    inc %ecx
    cmp ${gib} * 512, %ecx
    jb 2b

    mov $boot_pml4, %eax
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
    /* CR0: PG | WP | NE | ET | MP | PE, EM and TS clear */
    mov $0x80010033, %eax
    mov %eax, %cr0
    lgdt boot_gdtr
    ljmp $0x08, $start64

no_long_mode:
    mov $no_lm_msg, %esi
3:
    movb (%esi), %al
    test %al, %al
    jz 4f
    mov $0x3F8, %dx
    outb %al, %dx
    inc %esi
    jmp 3b
4:
    hlt
    jmp 4b

    .code64
start64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    mov $boot_stack_top, %rsp
    xor %rbp, %rbp
    mov %edi, %edi
    mov %esi, %esi
    call quercus_bsp_main
5:
    cli
    hlt
    jmp 5b

    .section .rodata.boot, "a"
no_lm_msg:
    .asciz "quercus: fatal: this CPU has no long mode (x86_64)\r\n"
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
boot_gdtr:
    .short 23
    .long boot_gdt

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * {gib}
    .balign 4096
    .global boot_heap_start
boot_heap_start:
    .skip {heap}
    .balign 16
    .global boot_stack_bottom
boot_stack_bottom:
    .skip {stack}
boot_stack_top:
    .code64
"#,
    gib = const IDENTITY_MAPPED_GIB,
    stack = const BOOT_STACK_SIZE,
    heap = const BOOTSTRAP_HEAP_SIZE,
    options(att_syntax)
);
