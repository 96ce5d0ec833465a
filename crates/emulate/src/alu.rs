//! The arithmetic and logic the MMIO family needs (ADD, ADC, SUB, SBB, AND,
//! OR, XOR; CMP is SUB and TEST is AND with the result dropped) and the
//! RFLAGS bits they leave behind. ADC and SBB take their carry-in from
//! RFLAGS.CF.

/// Carry flag.
pub const CF: u64 = 1 << 0;
/// Parity flag (even number of set bits in the low byte of the result).
pub const PF: u64 = 1 << 2;
/// Auxiliary (nibble) carry flag.
pub const AF: u64 = 1 << 4;
/// Zero flag.
pub const ZF: u64 = 1 << 6;
/// Sign flag.
pub const SF: u64 = 1 << 7;
/// Direction flag (string instructions count down when set).
pub const DF: u64 = 1 << 10;
/// Overflow flag.
pub const OF: u64 = 1 << 11;
/// Every flag [`flags_after`] writes.
pub const ARITH_FLAGS: u64 = CF | PF | AF | ZF | SF | OF;

/// A two-operand ALU operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AluOp {
    Add,
    /// Add with carry-in (CF).
    Adc,
    Sub,
    /// Subtract with borrow-in (CF).
    Sbb,
    And,
    Or,
    Xor,
}

/// All-ones in the low `size` bytes (1, 2, 4; anything else counts as 8).
pub const fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        4 => 0xFFFF_FFFF,
        _ => u64::MAX,
    }
}

/// `left op right` at `size` bytes, truncated to that width; `rflags`
/// supplies ADC's and SBB's carry-in.
pub fn alu(op: AluOp, size: u8, left: u64, right: u64, rflags: u64) -> u64 {
    let (l, r) = (left & size_mask(size), right & size_mask(size));
    let c = rflags & CF;
    let result = match op {
        AluOp::Add => l.wrapping_add(r),
        AluOp::Adc => l.wrapping_add(r).wrapping_add(c),
        AluOp::Sub => l.wrapping_sub(r),
        AluOp::Sbb => l.wrapping_sub(r).wrapping_sub(c),
        AluOp::And => l & r,
        AluOp::Or => l | r,
        AluOp::Xor => l ^ r,
    };
    result & size_mask(size)
}

/// RFLAGS after `left op right` at `size` bytes: [`ARITH_FLAGS`] replaced,
/// every other bit of `rflags` kept. For AND/OR/XOR, CF and OF are cleared
/// and AF (architecturally undefined) is cleared too.
pub fn flags_after(op: AluOp, size: u8, left: u64, right: u64, rflags: u64) -> u64 {
    let mask = size_mask(size);
    let sign = 1u64 << (u32::from(size_bits(size)) - 1);
    let (l, r) = (left & mask, right & mask);
    let res = alu(op, size, l, r, rflags);
    let c = u128::from(rflags & CF);
    let mut f = rflags & !ARITH_FLAGS;
    match op {
        AluOp::Add | AluOp::Adc => {
            let carry_in = if op == AluOp::Adc { c } else { 0 };
            if u128::from(l) + u128::from(r) + carry_in > u128::from(mask) {
                f |= CF;
            }
            if (l ^ res) & (r ^ res) & sign != 0 {
                f |= OF;
            }
            if (l ^ r ^ res) & 0x10 != 0 {
                f |= AF;
            }
        }
        AluOp::Sub | AluOp::Sbb => {
            let borrow_in = if op == AluOp::Sbb { c } else { 0 };
            if u128::from(l) < u128::from(r) + borrow_in {
                f |= CF;
            }
            if (l ^ r) & (l ^ res) & sign != 0 {
                f |= OF;
            }
            if (l ^ r ^ res) & 0x10 != 0 {
                f |= AF;
            }
        }
        AluOp::And | AluOp::Or | AluOp::Xor => {}
    }
    if res == 0 {
        f |= ZF;
    }
    if res & sign != 0 {
        f |= SF;
    }
    if (res as u8).count_ones() % 2 == 0 {
        f |= PF;
    }
    f
}

fn size_bits(size: u8) -> u8 {
    match size {
        1 => 8,
        2 => 16,
        4 => 32,
        _ => 64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags of `l op r` from a clean RFLAGS (bit 1 is always set).
    fn fl(op: AluOp, size: u8, l: u64, r: u64) -> u64 {
        flags_after(op, size, l, r, 0x2) & ARITH_FLAGS
    }

    #[test]
    fn add_flags() {
        assert_eq!(fl(AluOp::Add, 1, 0x7F, 1), OF | SF | AF);
        assert_eq!(fl(AluOp::Add, 1, 0xFF, 1), CF | ZF | AF | PF);
        assert_eq!(fl(AluOp::Add, 1, 0x80, 0x80), CF | OF | ZF | PF);
        assert_eq!(fl(AluOp::Add, 2, 0x7FFF, 1), OF | SF | AF | PF);
        assert_eq!(fl(AluOp::Add, 4, 0xFFFF_FFFF, 2), CF | AF);
        assert_eq!(fl(AluOp::Add, 8, u64::MAX, 1), CF | ZF | AF | PF);
        assert_eq!(fl(AluOp::Add, 8, 1, 2), PF);
        // Bits above the operand size are ignored.
        assert_eq!(fl(AluOp::Add, 1, 0x1_00, 0x2_00), ZF | PF);
    }

    #[test]
    fn sub_and_cmp_flags() {
        assert_eq!(fl(AluOp::Sub, 1, 0, 1), CF | SF | AF | PF);
        assert_eq!(fl(AluOp::Sub, 1, 0x80, 1), OF | AF);
        assert_eq!(fl(AluOp::Sub, 4, 5, 5), ZF | PF);
        assert_eq!(fl(AluOp::Sub, 4, 3, 5), CF | SF | AF);
        assert_eq!(fl(AluOp::Sub, 8, 0x8000_0000_0000_0000, 1), OF | AF | PF);
        assert_eq!(fl(AluOp::Sub, 2, 0x10, 0x01), AF | PF);
    }

    #[test]
    fn logic_flags_clear_cf_of_af() {
        let dirty = CF | OF | AF | 0x2;
        assert_eq!(flags_after(AluOp::And, 4, 0xF0, 0x0F, dirty), ZF | PF | 0x2);
        assert_eq!(flags_after(AluOp::Or, 1, 0x80, 0x01, dirty), SF | PF | 0x2);
        assert_eq!(flags_after(AluOp::Xor, 8, 3, 0, dirty), PF | 0x2);
        // Non-arithmetic bits (IF, DF, TF) survive.
        let other = (1 << 9) | DF | (1 << 8) | 0x2;
        assert_eq!(flags_after(AluOp::Xor, 4, 1, 1, other), other | ZF | PF);
    }

    #[test]
    fn alu_results_truncate() {
        assert_eq!(alu(AluOp::Add, 1, 0xFF, 2, 0), 1);
        assert_eq!(alu(AluOp::Sub, 2, 0, 1, 0), 0xFFFF);
        assert_eq!(alu(AluOp::And, 4, u64::MAX, 0xFF, 0), 0xFF);
        assert_eq!(alu(AluOp::Or, 8, 0xF0, 0x0F, 0), 0xFF);
        assert_eq!(alu(AluOp::Xor, 4, u64::MAX, 0, 0), 0xFFFF_FFFF);
    }

    #[test]
    fn adc_and_sbb_take_the_carry_in() {
        let cf = 0x2 | CF;
        assert_eq!(alu(AluOp::Adc, 1, 0x10, 0x01, cf), 0x12);
        assert_eq!(alu(AluOp::Adc, 1, 0x10, 0x01, 0x2), 0x11);
        assert_eq!(alu(AluOp::Sbb, 1, 0x10, 0x01, cf), 0x0E);
        // 0xFF + 0 + 1 carries out and wraps to 0.
        assert_eq!(alu(AluOp::Adc, 1, 0xFF, 0, cf), 0);
        assert_eq!(fl2(AluOp::Adc, 1, 0xFF, 0, cf) & (CF | ZF), CF | ZF);
        // 0 - 0 - 1 borrows.
        assert_eq!(alu(AluOp::Sbb, 4, 0, 0, cf), 0xFFFF_FFFF);
        assert_eq!(fl2(AluOp::Sbb, 4, 0, 0, cf) & (CF | SF | ZF), CF | SF);
        // 64 bits: all ones + all ones + 1.
        assert_eq!(alu(AluOp::Adc, 8, u64::MAX, u64::MAX, cf), u64::MAX);
        assert_eq!(fl2(AluOp::Adc, 8, u64::MAX, u64::MAX, cf) & CF, CF);
        // Signed overflow: 0x7F + 0 + 1.
        assert_eq!(fl2(AluOp::Adc, 1, 0x7F, 0, cf) & OF, OF);
        // Signed overflow: 0x80 - 0 - 1.
        assert_eq!(fl2(AluOp::Sbb, 1, 0x80, 0, cf) & OF, OF);
        // Without CF they are ADD and SUB, flags included.
        for (l, r) in [(0u64, 0u64), (0x7F, 1), (0xFF, 1), (3, 5)] {
            assert_eq!(fl2(AluOp::Adc, 1, l, r, 0x2), fl(AluOp::Add, 1, l, r));
            assert_eq!(fl2(AluOp::Sbb, 1, l, r, 0x2), fl(AluOp::Sub, 1, l, r));
        }
    }

    fn fl2(op: AluOp, size: u8, l: u64, r: u64, rflags: u64) -> u64 {
        flags_after(op, size, l, r, rflags) & ARITH_FLAGS
    }
}
