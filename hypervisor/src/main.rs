#![no_std]
#![no_main]

use arch_x86::println;

#[no_mangle]
extern "C" fn quercus_bsp_main(magic: u32, info: u32) -> ! {
    arch_x86::console::init(log::LevelFilter::Info);
    println!("hello magic {magic:#x} info {info:#x}");
    arch_x86::cpu::halt_forever()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("quercus: fatal: panic: {info}");
    arch_x86::cpu::halt_forever()
}

#[global_allocator]
static HEAP: buddy_system_allocator::LockedHeap<32> = buddy_system_allocator::LockedHeap::empty();
