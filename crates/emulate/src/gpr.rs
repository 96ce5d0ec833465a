//! General-purpose register operands: an iced register name mapped onto a
//! [`Gprs`] slot with its width, and the x86 rules for reading and writing
//! part of a register (32-bit writes zero-extend, 8/16-bit writes merge,
//! AH/CH/DH/BH are bits 15:8).

use iced_x86::Register;
use vcpu::{Gprs, Reg};

use crate::alu::size_mask;

/// A general-purpose register as an instruction names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GprOperand {
    pub reg: Reg,
    /// Width in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// AH, CH, DH or BH: bits 15:8 of RAX, RCX, RDX or RBX.
    pub high_byte: bool,
}

/// Registers in encoding order, the order iced numbers each width in.
const ENCODING_ORDER: [Reg; 16] = Reg::ENCODING_ORDER;

impl GprOperand {
    /// The operand for an iced register, `None` if it is not a
    /// general-purpose register (segment, control, vector, RIP...).
    pub(crate) fn from_iced(reg: Register) -> Option<Self> {
        let v = reg as u32;
        let in_run = |first: Register, len: u32| {
            let first = first as u32;
            (v >= first && v < first + len).then(|| (v - first) as usize)
        };
        let op = |i: usize, size, high_byte| {
            Some(GprOperand {
                reg: ENCODING_ORDER[i],
                size,
                high_byte,
            })
        };
        // iced numbers AL, CL, DL, BL, AH, CH, DH, BH, SPL, BPL, SIL, DIL,
        // R8L..R15L, then AX..R15W, EAX..R15D, RAX..R15, each in encoding order.
        if let Some(i) = in_run(Register::AL, 4) {
            op(i, 1, false)
        } else if let Some(i) = in_run(Register::AH, 4) {
            op(i, 1, true)
        } else if let Some(i) = in_run(Register::SPL, 12) {
            op(i + 4, 1, false)
        } else if let Some(i) = in_run(Register::AX, 16) {
            op(i, 2, false)
        } else if let Some(i) = in_run(Register::EAX, 16) {
            op(i, 4, false)
        } else if let Some(i) = in_run(Register::RAX, 16) {
            op(i, 8, false)
        } else {
            None
        }
    }

    /// The operand's current value, zero-extended; `None` for RSP/ESP/SP/SPL,
    /// which [`Gprs`] does not hold.
    pub fn read(&self, gprs: &Gprs) -> Option<u64> {
        let full = gprs.get(self.reg)?;
        let shifted = if self.high_byte { full >> 8 } else { full };
        Some(shifted & size_mask(self.size))
    }

    /// Writes `value` (its low `size` bytes) the way the CPU does: 8-byte
    /// writes replace, 4-byte writes zero-extend, 2- and 1-byte writes merge
    /// into the untouched bits. Returns false for the stack pointer.
    pub fn write(&self, gprs: &mut Gprs, value: u64) -> bool {
        let Some(old) = gprs.get(self.reg) else {
            return false;
        };
        let v = value & size_mask(self.size);
        let new = match (self.size, self.high_byte) {
            (8 | 4, _) => v,
            (1, true) => (old & !0xFF00) | (v << 8),
            (size, _) => (old & !size_mask(size)) | v,
        };
        gprs.set(self.reg, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(reg: Register) -> GprOperand {
        GprOperand::from_iced(reg).unwrap()
    }

    #[test]
    fn maps_every_width() {
        let op = |reg, size, high_byte| GprOperand {
            reg,
            size,
            high_byte,
        };
        assert_eq!(g(Register::AL), op(Reg::Rax, 1, false));
        assert_eq!(g(Register::BL), op(Reg::Rbx, 1, false));
        assert_eq!(g(Register::AH), op(Reg::Rax, 1, true));
        assert_eq!(g(Register::BH), op(Reg::Rbx, 1, true));
        assert_eq!(g(Register::SPL), op(Reg::Rsp, 1, false));
        assert_eq!(g(Register::DIL), op(Reg::Rdi, 1, false));
        assert_eq!(g(Register::R8L), op(Reg::R8, 1, false));
        assert_eq!(g(Register::R15L), op(Reg::R15, 1, false));
        assert_eq!(g(Register::AX), op(Reg::Rax, 2, false));
        assert_eq!(g(Register::R12W), op(Reg::R12, 2, false));
        assert_eq!(g(Register::ESI), op(Reg::Rsi, 4, false));
        assert_eq!(g(Register::R9D), op(Reg::R9, 4, false));
        assert_eq!(g(Register::RAX), op(Reg::Rax, 8, false));
        assert_eq!(g(Register::R15), op(Reg::R15, 8, false));
        for reg in [
            Register::None,
            Register::ES,
            Register::RIP,
            Register::CR0,
            Register::XMM0,
        ] {
            assert_eq!(GprOperand::from_iced(reg), None, "{reg:?}");
        }
    }

    #[test]
    fn partial_writes_follow_x86_rules() {
        let base = 0x1122_3344_5566_7788;
        let mut gprs = Gprs {
            rax: base,
            ..Default::default()
        };
        assert!(g(Register::AH).write(&mut gprs, 0xAB));
        assert_eq!(gprs.rax, 0x1122_3344_5566_AB88);
        assert!(g(Register::AL).write(&mut gprs, 0x1CD));
        assert_eq!(gprs.rax, 0x1122_3344_5566_ABCD);
        assert!(g(Register::AX).write(&mut gprs, 0xFFFF_0001));
        assert_eq!(gprs.rax, 0x1122_3344_5566_0001);
        assert!(g(Register::EAX).write(&mut gprs, 0xFFFF_FFFF_8000_0000));
        assert_eq!(gprs.rax, 0x8000_0000, "32-bit writes zero-extend");
        assert!(g(Register::RAX).write(&mut gprs, u64::MAX));
        assert_eq!(gprs.rax, u64::MAX);
        assert!(!g(Register::ESP).write(&mut gprs, 1));
    }

    #[test]
    fn reads_take_the_right_bits() {
        let gprs = Gprs {
            rbx: 0x1122_3344_5566_7788,
            ..Default::default()
        };
        assert_eq!(g(Register::BL).read(&gprs), Some(0x88));
        assert_eq!(g(Register::BH).read(&gprs), Some(0x77));
        assert_eq!(g(Register::BX).read(&gprs), Some(0x7788));
        assert_eq!(g(Register::EBX).read(&gprs), Some(0x5566_7788));
        assert_eq!(g(Register::RBX).read(&gprs), Some(0x1122_3344_5566_7788));
        assert_eq!(g(Register::SPL).read(&gprs), None);
    }
}
