//! Fuzz target: instruction bytes and register values straight into the
//! MMIO decoder and the completion, at each code size.
#![no_main]

use emulate::{complete, decode_mmio, instruction_len, size_mask};
use libfuzzer_sys::fuzz_target;
use vcpu::Gprs;

fuzz_target!(|data: &[u8]| {
    // Byte 0: code size; bytes 1..9: the device's answer and RFLAGS seed;
    // the rest: instruction bytes.
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bitness = [16, 32, 64][usize::from(mode % 3)];
    let (seed, bytes) = rest.split_at(rest.len().min(8));
    let mut s = [0u8; 8];
    s[..seed.len()].copy_from_slice(seed);
    let value = u64::from_le_bytes(s);
    let mut gprs = Gprs {
        rax: value,
        rbx: value.rotate_left(8),
        rcx: !value,
        rdx: value.swap_bytes(),
        rsi: value ^ 0x5555_5555_5555_5555,
        rdi: value.rotate_right(3),
        r8: value.wrapping_mul(3),
        r15: u64::MAX,
        ..Default::default()
    };
    let len = instruction_len(bytes, bitness);
    match decode_mmio(bytes, bitness, 0xFEE0_0000, &gprs) {
        Ok(access) => {
            assert_eq!(len, Some(access.instr_len));
            assert!(matches!(access.size, 1 | 2 | 4 | 8));
            let done = complete(&access, value, &mut gprs, value.rotate_left(17) | 2)
                .expect("decoded accesses complete");
            if let Some(w) = done.write_back {
                assert_eq!(w & !size_mask(access.size), 0);
            }
            let _ = access.next_rip(value);
        }
        Err(e) => {
            // Errors must format without panicking.
            let _ = format!("{e}");
        }
    }
});
