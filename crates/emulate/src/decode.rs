//! Instruction decoding with iced-x86 at the guest's current code size.

use core::fmt;

use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction};
use vcpu::SystemState;

use crate::fetch::MAX_INSTRUCTION_LEN;

/// CS.D/B in the packed attribute form (AVL, L, D/B, G in bits 11:8).
const CS_DB: u16 = 1 << 10;

/// An instruction name, for messages and counters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mnemonic(pub(crate) iced_x86::Mnemonic);

impl fmt::Display for Mnemonic {
    /// Lower case, as assemblers write it (`mov`, `stosb`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Lower<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl fmt::Write for Lower<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                s.chars()
                    .try_for_each(|c| self.0.write_char(c.to_ascii_lowercase()))
            }
        }
        fmt::write(&mut Lower(f), format_args!("{:?}", self.0))
    }
}

impl fmt::Debug for Mnemonic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why bytes did not decode into an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Bitness other than 16, 32 or 64.
    BadBitness { bitness: u32 },
    /// The bytes end inside the instruction.
    Truncated { available: usize },
    /// Not a valid instruction at this bitness (first bytes shown).
    Invalid {
        bytes: [u8; MAX_INSTRUCTION_LEN],
        len: usize,
        bitness: u32,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BadBitness { bitness } => write!(f, "cannot decode {bitness}-bit code"),
            DecodeError::Truncated { available } => {
                write!(f, "instruction runs past the {available} bytes available")
            }
            DecodeError::Invalid {
                bytes,
                len,
                bitness,
            } => {
                write!(f, "invalid {bitness}-bit instruction:")?;
                bytes[..*len].iter().try_for_each(|b| write!(f, " {b:02x}"))
            }
        }
    }
}

impl core::error::Error for DecodeError {}

/// The code size the guest runs at: 64 in 64-bit mode, else 32 if CS.D is
/// set, else 16 (real mode, virtual-8086 and 16-bit protected mode).
pub fn bitness(sys: &SystemState) -> u32 {
    if sys.long_mode_64() {
        64
    } else if sys.cs.attrib & CS_DB != 0 {
        32
    } else {
        16
    }
}

/// Decodes the one instruction at the start of `bytes`.
pub(crate) fn decode(bytes: &[u8], bitness: u32) -> Result<Instruction, DecodeError> {
    let mut decoder = Decoder::try_new(bitness, bytes, DecoderOptions::NONE)
        .map_err(|_| DecodeError::BadBitness { bitness })?;
    let instr = decoder.decode();
    if !instr.is_invalid() {
        return Ok(instr);
    }
    if decoder.last_error() == DecoderError::NoMoreBytes && bytes.len() < MAX_INSTRUCTION_LEN {
        return Err(DecodeError::Truncated {
            available: bytes.len(),
        });
    }
    let len = bytes.len().min(MAX_INSTRUCTION_LEN);
    let mut shown = [0u8; MAX_INSTRUCTION_LEN];
    shown[..len].copy_from_slice(&bytes[..len]);
    Err(DecodeError::Invalid {
        bytes: shown,
        len,
        bitness,
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;
    use vcpu::SegmentState;

    #[test]
    fn bitness_from_mode() {
        let mut sys = SystemState::default();
        assert_eq!(bitness(&sys), 16);
        sys.cs = SegmentState {
            attrib: 0xC9B,
            ..Default::default()
        };
        assert_eq!(bitness(&sys), 32);
        sys.efer = 0x500;
        assert_eq!(bitness(&sys), 32, "compatibility mode");
        sys.cs.attrib = 0xA9B;
        assert_eq!(bitness(&sys), 64);
    }

    #[test]
    fn errors() {
        assert_eq!(
            decode(&[0x90], 8),
            Err(DecodeError::BadBitness { bitness: 8 })
        );
        assert_eq!(
            decode(&[], 64),
            Err(DecodeError::Truncated { available: 0 })
        );
        assert_eq!(
            decode(&[0xC7, 0x00, 0x78], 64),
            Err(DecodeError::Truncated { available: 3 })
        );
        let e = decode(&[0x0F, 0x0B], 64); // ud2 is valid
        assert!(e.is_ok());
        let e = decode(&[0x06, 0x90], 64).unwrap_err(); // push es: invalid in 64-bit mode
        assert_eq!(format!("{e}"), "invalid 64-bit instruction: 06 90");
        // Fifteen prefixes and an opcode: longer than any instruction.
        let mut long = [0x66u8; 16];
        long[15] = 0x90;
        assert!(matches!(
            decode(&long, 64),
            Err(DecodeError::Invalid { len: 15, .. })
        ));
    }

    #[test]
    fn mnemonic_prints_lower_case() {
        let m = Mnemonic(decode(&[0xAA], 64).unwrap().mnemonic());
        assert_eq!(format!("{m}"), "stosb");
    }
}
