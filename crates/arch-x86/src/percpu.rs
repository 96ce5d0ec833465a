//! The per-CPU area: one structure per pCPU, reached through GS, holding its
//! index, APIC ID, GDT, TSS and the stacks its interrupts run on.

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec;
use core::sync::atomic::AtomicBool;

use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

use crate::cpu::{msr, wrmsr};

/// Size of each interrupt stack (IST).
pub const IST_STACK_SIZE: usize = 16 * 1024;
/// Size of an AP's main stack.
pub const AP_STACK_SIZE: usize = 64 * 1024;

/// IST slots (1-based, as the IDT names them).
pub mod ist {
    /// Exceptions other than NMI, #DF and #MC.
    pub const EXCEPTION: u8 = 1;
    pub const NMI: u8 = 2;
    pub const DOUBLE_FAULT: u8 = 3;
    pub const MACHINE_CHECK: u8 = 4;
    /// External and IPI interrupts.
    pub const IRQ: u8 = 5;
}

/// One pCPU's private state. Field `self_ptr` must stay first: `gs:0` reads it.
#[repr(C)]
pub struct PerCpu {
    self_ptr: *const PerCpu,
    /// Dense index (0 = BSP) used everywhere above the arch tier.
    pub index: u32,
    /// The LAPIC ID.
    pub apic_id: u32,
    gdt: &'static GlobalDescriptorTable,
    /// The LAPIC is in x2APIC mode (since it was first passed through).
    pub x2apic: AtomicBool,
    /// The LAPIC belongs to the guest running here (LAPIC passthrough).
    pub lapic_passthrough: AtomicBool,
    /// An NMI kicked this pCPU while its LAPIC is passed through (taken before the next entry).
    pub nmi_kick: AtomicBool,
}

// SAFETY: a PerCpu is created once, then only read (its flags are atomics); `self_ptr` is an
// address.
unsafe impl Sync for PerCpu {}
// SAFETY: as above.
unsafe impl Send for PerCpu {}

fn leak_stack(size: usize) -> VirtAddr {
    let stack = vec![0u8; size].leak();
    // The CPU aligns RSP down to 16 when it switches to an IST stack.
    VirtAddr::new((stack.as_ptr() as u64 + size as u64) & !0xF)
}

impl PerCpu {
    /// Allocates the per-CPU area (GDT, TSS, IST stacks) of CPU `index`.
    pub fn new(index: u32, apic_id: u32) -> &'static PerCpu {
        let mut tss = TaskStateSegment::new();
        for slot in 1..=5u8 {
            tss.interrupt_stack_table[usize::from(slot - 1)] = leak_stack(IST_STACK_SIZE);
        }
        let tss: &'static TaskStateSegment = Box::leak(Box::new(tss));
        let mut gdt = GlobalDescriptorTable::new();
        gdt.append(Descriptor::kernel_code_segment());
        gdt.append(Descriptor::kernel_data_segment());
        gdt.append(Descriptor::tss_segment(tss));
        let gdt: &'static GlobalDescriptorTable = Box::leak(Box::new(gdt));
        let pc = Box::leak(Box::new(PerCpu {
            self_ptr: core::ptr::null(),
            index,
            apic_id,
            gdt,
            x2apic: AtomicBool::new(false),
            lapic_passthrough: AtomicBool::new(false),
            nmi_kick: AtomicBool::new(false),
        }));
        pc.self_ptr = pc as *const PerCpu;
        pc
    }

    /// Loads this area's GDT and TSS, the shared IDT, and points GS at it.
    /// Must run on the CPU the area was made for, once.
    pub fn install(&'static self) {
        self.gdt.load();
        // SAFETY: selectors 0x08 (code) and 0x10 (data) are the descriptors just
        // appended to the loaded GDT; 0x18 is the TSS, loaded once per CPU.
        unsafe {
            CS::set_reg(x86_64::structures::gdt::SegmentSelector(0x08));
            DS::set_reg(x86_64::structures::gdt::SegmentSelector(0x10));
            ES::set_reg(x86_64::structures::gdt::SegmentSelector(0x10));
            SS::set_reg(x86_64::structures::gdt::SegmentSelector(0x10));
            load_tss(x86_64::structures::gdt::SegmentSelector(0x18));
        }
        crate::trap::load_idt();
        // SAFETY: GS base now points at a 'static PerCpu whose first field is
        // its own address; nothing else uses GS in the hypervisor.
        unsafe { wrmsr(msr::IA32_GS_BASE, self as *const PerCpu as u64) };
        crate::lapic::register_cpu(self.apic_id, self.index);
    }
}

/// The running CPU's per-CPU area, if [`PerCpu::install`] ran on it.
pub fn current() -> Option<&'static PerCpu> {
    let ptr: u64;
    // SAFETY: reads the GS base MSR only; no memory access.
    let base = unsafe { crate::cpu::rdmsr(msr::IA32_GS_BASE) };
    if base == 0 {
        return None;
    }
    // SAFETY: a non-zero GS base was set by `install` to a 'static PerCpu
    // whose first field holds its own address.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) ptr, options(nostack, preserves_flags, readonly))
    };
    // SAFETY: `ptr` is the 'static PerCpu installed on this CPU.
    Some(unsafe { &*(ptr as *const PerCpu) })
}

/// Allocates a main stack for an AP and returns its (16-byte aligned) top.
pub fn alloc_ap_stack() -> u64 {
    leak_stack(AP_STACK_SIZE).as_u64()
}

/// Recovers the per-CPU area the BSP passed to an AP through the trampoline.
pub fn from_trampoline_arg(arg: u64) -> Option<&'static PerCpu> {
    if arg == 0 || !arg.is_multiple_of(core::mem::align_of::<PerCpu>() as u64) {
        return None;
    }
    // SAFETY: the BSP passes the address of a leaked ('static) PerCpu made by
    // `PerCpu::new` for exactly this AP; checked non-null and aligned above.
    let pc = unsafe { &*(arg as *const PerCpu) };
    (pc.self_ptr as u64 == arg).then_some(pc)
}
