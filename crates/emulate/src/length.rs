//! Instruction length for backends that do not report it (SVM without
//! next-RIP save): decode and count.

use crate::decode::decode;

/// The length of the instruction at the start of `bytes` decoded at
/// `bitness` (16, 32 or 64); `None` if the bytes are not a whole valid
/// instruction or the bitness is not one of those.
pub fn instruction_len(bytes: &[u8], bitness: u32) -> Option<u8> {
    decode(bytes, bitness)
        .ok()
        .and_then(|i| u8::try_from(i.len()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        assert_eq!(instruction_len(&[0x0F, 0x01, 0xD9, 0xAA], 64), Some(3)); // vmmcall
        assert_eq!(instruction_len(&[0xF4], 32), Some(1)); // hlt
        assert_eq!(instruction_len(&[0xEE], 16), Some(1)); // out dx, al
        assert_eq!(instruction_len(&[0x0F, 0xA2], 64), Some(2)); // cpuid
        assert_eq!(instruction_len(&[0x0F, 0x30], 64), Some(2)); // wrmsr
        assert_eq!(instruction_len(&[0xE6, 0x80], 32), Some(2)); // out 0x80, al
                                                                 // mov eax, [rip+disp32] with REX.W and a segment override.
        assert_eq!(
            instruction_len(&[0x65, 0x48, 0x8B, 0x05, 1, 2, 3, 4], 64),
            Some(8)
        );
        // C7 00 imm32: 6 bytes at 32/64-bit, 66 C7 00 imm16: 5 bytes.
        assert_eq!(instruction_len(&[0xC7, 0x00, 1, 2, 3, 4], 32), Some(6));
        assert_eq!(instruction_len(&[0x66, 0xC7, 0x00, 1, 2], 64), Some(5));
        // At 16 bits C7 00 takes an imm16.
        assert_eq!(instruction_len(&[0xC7, 0x00, 1, 2, 3, 4], 16), Some(4));
    }

    #[test]
    fn hostile_bytes() {
        assert_eq!(instruction_len(&[], 64), None);
        assert_eq!(instruction_len(&[0xC7, 0x00, 1], 64), None);
        assert_eq!(instruction_len(&[0x0F, 0xFF], 64), None);
        assert_eq!(instruction_len(&[0x90], 0), None);
        assert_eq!(instruction_len(&[0x90], 128), None);
        assert_eq!(instruction_len(&[0xF0; 20], 64), None);
        // Every 1- and 2-byte string and bitness: no panic.
        for bitness in [16, 32, 64] {
            for a in 0..=255u8 {
                for b in 0..=255u8 {
                    if let Some(n) =
                        instruction_len(&[a, b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], bitness)
                    {
                        assert!((1..=15).contains(&n));
                    }
                }
            }
        }
    }
}
