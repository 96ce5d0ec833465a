//! Quercus, the bare-metal image: the composition root.
//!
//! Boot order on the BSP: console and TSC, boot information from the loader,
//! memory map, frame allocator and heap, per-CPU area, ACPI topology, LAPIC,
//! then the APs one by one. Every step that reads firmware input checks it and
//! stops with a `quercus: fatal:` line when it is unusable.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

mod boot;
mod iommu_host;
mod mailbox;
mod pci_host;
mod rt_host;
mod shell_host;
mod vmm;

use arch_x86::println;

/// Stops the machine with a clear message: for unusable firmware input and
/// for invariants that cannot hold.
#[macro_export]
macro_rules! fatal {
    ($($arg:tt)*) => {{
        arch_x86::println!("quercus: fatal: {}", format_args!($($arg)*));
        arch_x86::cpu::halt_forever()
    }};
}

// The entry point is named for the assembly stub in arch-x86; `no_mangle` is
// the only thing `unsafe_code` objects to here.
#[allow(unsafe_code)]
#[no_mangle]
extern "C" fn quercus_bsp_main(magic: u32, info: u32) -> ! {
    boot::bsp_main(magic, info)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!(
        "quercus: fatal: panic on cpu{}: {info}",
        arch_x86::lapic::current_cpu_label()
    );
    arch_x86::cpu::halt_forever()
}
