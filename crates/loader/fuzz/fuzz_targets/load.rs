//! Fuzz target: arbitrary kernel images and boot modules through every loader
//! kind.
//!
//! Input: a selector byte (kernel kind), a module count byte (0..=3), then for
//! each module a length byte for its bytes and one for its string, both taken
//! from the front of what follows; the rest is the kernel image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loader::{load, KernelKind, Module, MIN_RAM};
use vcpu::{GuestMemory, VecMemory};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Some((&count, mut rest)) = rest.split_first() else {
        return;
    };
    let mut modules = Vec::new();
    for _ in 0..count % 4 {
        let [data_len, str_len, tail @ ..] = rest else {
            return;
        };
        let (data_len, str_len) = (usize::from(*data_len) * 64, usize::from(*str_len));
        if tail.len() < data_len + str_len {
            return;
        }
        let (bytes, tail) = tail.split_at(data_len);
        let (string, tail) = tail.split_at(str_len);
        let Ok(cmdline) = core::str::from_utf8(string) else {
            return;
        };
        modules.push(Module {
            data: bytes,
            cmdline,
        });
        rest = tail;
    }
    let image = rest;
    let kind = match sel % 3 {
        0 => KernelKind::Multiboot1,
        1 => KernelKind::Elf64,
        _ => KernelKind::Raw {
            load_gpa: 0x10_0000,
            entry_gpa: 0x10_0000 + u64::from(sel),
        },
    };
    let mut mem = VecMemory::new(2 * MIN_RAM as usize);
    if let Ok(setup) = load(kind, image, "console=ttyS0", &modules, &mut mem) {
        assert!(setup.entry < 1 << 32);
        assert!(setup.entry < mem.size());
        assert!(setup.info_gpa + setup.info_len <= mem.size());
        let flags = mem.read_u32(setup.info_gpa).unwrap();
        assert_eq!(flags & (1 << 3) != 0, !modules.is_empty());
        if !modules.is_empty() {
            assert_eq!(
                mem.read_u32(setup.info_gpa + 20).unwrap() as usize,
                modules.len()
            );
        }
    }
});
