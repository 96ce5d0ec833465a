//! Fuzz target: arbitrary kernel images through every loader kind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loader::{load, KernelKind, MIN_RAM};
use vcpu::{GuestMemory, VecMemory};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, image)) = data.split_first() else {
        return;
    };
    let kind = match sel % 3 {
        0 => KernelKind::Multiboot1,
        1 => KernelKind::Elf64,
        _ => KernelKind::Raw {
            load_gpa: 0x10_0000,
            entry_gpa: 0x10_0000 + u64::from(sel),
        },
    };
    let mut mem = VecMemory::new(2 * MIN_RAM as usize);
    if let Ok(setup) = load(kind, image, "console=ttyS0", &mut mem) {
        assert!(setup.entry < 1 << 32);
        assert!(setup.entry < mem.size());
    }
});
