//! Fuzz target: guest page tables, control registers and RIP from the input,
//! through the page walk, the instruction fetch and the MMIO decoder.
#![no_main]

use emulate::{emulate_mmio, translate};
use libfuzzer_sys::fuzz_target;
use vcpu::{Gprs, SegmentState, SystemState, VecMemory};

/// Guest RAM: small, so random table pointers often land inside it.
const RAM: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // 48 bytes of state, then the RAM image (the rest zero).
    if data.len() < 48 {
        return;
    }
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[i * 8..i * 8 + 8]);
        u64::from_le_bytes(b)
    };
    let sys = SystemState {
        cr0: word(0),
        cr3: word(1) % (2 * RAM as u64),
        cr4: word(2),
        efer: word(3),
        cpl: 0,
        cs: SegmentState {
            selector: 8,
            base: word(4) >> 32,
            limit: u32::MAX,
            attrib: word(4) as u16,
        },
    };
    let rip = word(5);
    let mut mem = VecMemory::new(RAM);
    let image = &data[48..];
    let n = image.len().min(RAM);
    mem.0[..n].copy_from_slice(&image[..n]);
    let _ = translate(&mem, &sys, rip);
    let _ = emulate_mmio(&mem, &sys, rip, 0xFEC0_0000, &Gprs::default());
});
