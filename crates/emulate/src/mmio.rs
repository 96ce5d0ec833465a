//! MMIO emulation: the instruction that touched a hole in guest-physical
//! memory as one normalized access record, and the register write-back once
//! the device has answered.
//!
//! The family handled is what drivers use on device registers: MOV between
//! memory and a register or an immediate (8/16/32/64 bits, including the
//! `moffs` forms), MOVZX/MOVSX/MOVSXD from memory, STOS without a repeat
//! prefix, ADD/ADC/SUB/SBB/AND/OR/XOR with a memory destination (LOCK
//! allowed) or with a memory source and a register destination, and CMP/TEST
//! against memory. Anything else is an error for the caller's
//! policy (#GP/#UD or stopping the VM).
//!
//! The faulting guest-physical address comes from the hardware (the NPT/EPT
//! exit); the memory operand's effective address is not recomputed. RSP
//! (which [`Gprs`] does not hold) is refused as a register operand.

use core::fmt;

use iced_x86::{Instruction, MemorySize, Mnemonic as M, OpKind};
use vcpu::{Gprs, GuestMemory, Reg, SystemState};

use crate::alu::{alu, flags_after, size_mask, AluOp, DF};
use crate::decode::{bitness, decode, DecodeError, Mnemonic};
use crate::fetch::{fetch, FetchError};
use crate::gpr::GprOperand;

/// What the instruction does with the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// Read `size` bytes into `dest`, extended to `dest.size` (sign or zero).
    Read { dest: GprOperand, sign_extend: bool },
    /// Write `value` (already truncated to `size`).
    Write { value: u64 },
    /// Read, apply `op` with `operand` (see [`MmioAccess::apply_rmw`]), write
    /// the result back; sets the arithmetic flags.
    ReadModifyWrite { op: AluOp, operand: u64 },
    /// Read, compute `register op memory` into `dest` (whose value was
    /// `operand`), set the arithmetic flags; nothing is written.
    ReadToRegister {
        op: AluOp,
        dest: GprOperand,
        operand: u64,
    },
    /// Read and set the arithmetic flags of `memory op operand` (or
    /// `operand op memory` when `memory_is_left` is false); nothing is
    /// written. CMP is [`AluOp::Sub`], TEST is [`AluOp::And`].
    Compare {
        op: AluOp,
        operand: u64,
        memory_is_left: bool,
    },
}

/// One decoded MMIO access: what to do at `gpa`, and how to finish the
/// instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    pub gpa: u64,
    /// Bytes accessed: 1, 2, 4 or 8.
    pub size: u8,
    pub kind: AccessKind,
    /// Bytes of the instruction, for the next RIP.
    pub instr_len: u8,
    /// Code size it was decoded at (16, 32, 64).
    pub bitness: u32,
    /// STOS only: the address size in bytes (2, 4, 8) at which
    /// [`complete`] moves DI/EDI/RDI by `size`, down if RFLAGS.DF is set.
    pub string_addr_size: Option<u8>,
    pub mnemonic: Mnemonic,
}

impl MmioAccess {
    /// Whether the device must be read before [`complete`].
    pub fn needs_read(&self) -> bool {
        !matches!(self.kind, AccessKind::Write { .. })
    }

    /// Whether the device is written (after [`complete`]).
    pub fn writes_device(&self) -> bool {
        matches!(
            self.kind,
            AccessKind::Write { .. } | AccessKind::ReadModifyWrite { .. }
        )
    }

    /// For a read-modify-write, the value to write back given the `old`
    /// value read (with CF clear for ADC/SBB: [`complete`] takes the
    /// guest's flags); `None` for other kinds.
    pub fn apply_rmw(&self, old: u64) -> Option<u64> {
        match self.kind {
            AccessKind::ReadModifyWrite { op, operand } => {
                Some(alu(op, self.size, old, operand, 0))
            }
            _ => None,
        }
    }

    /// The RIP after this instruction, wrapping as the code size does.
    pub fn next_rip(&self, rip: u64) -> u64 {
        let next = rip.wrapping_add(u64::from(self.instr_len));
        match self.bitness {
            64 => next,
            32 => next & 0xFFFF_FFFF,
            _ => next & 0xFFFF,
        }
    }
}

/// What [`complete`] leaves for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The value to write to the device at `gpa` (writes and
    /// read-modify-writes).
    pub write_back: Option<u64>,
    /// The guest's new RFLAGS.
    pub rflags: u64,
}

/// Why an instruction form in the supported family is still refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// The instruction has no memory operand (the exit did not come from it).
    NoMemoryOperand,
    /// A register that is not a general-purpose one (segment, control...).
    NotGpr,
    /// RSP/ESP/SP/SPL, not held in [`Gprs`].
    StackPointer,
    /// A memory operand size other than 1, 2, 4 or 8 bytes.
    OperandSize,
    /// REP/REPNE on a string instruction.
    RepeatPrefix,
}

/// Why an MMIO access could not be emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulateError {
    Fetch(FetchError),
    Decode(DecodeError),
    /// An instruction outside the MMIO family.
    Unsupported {
        mnemonic: Mnemonic,
    },
    /// An instruction of the family in a form that is not handled.
    UnsupportedForm {
        mnemonic: Mnemonic,
        form: Form,
    },
    /// [`complete_read`] on an access that reads no register.
    NotARead {
        mnemonic: Mnemonic,
    },
}

impl fmt::Display for EmulateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmulateError::Fetch(e) => write!(f, "{e}"),
            EmulateError::Decode(e) => write!(f, "{e}"),
            EmulateError::Unsupported { mnemonic } => {
                write!(f, "MMIO by `{mnemonic}` is not emulated")
            }
            EmulateError::UnsupportedForm { mnemonic, form } => {
                write!(
                    f,
                    "MMIO by `{mnemonic}` in this form is not emulated: {form:?}"
                )
            }
            EmulateError::NotARead { mnemonic } => {
                write!(f, "`{mnemonic}` access has no register to complete")
            }
        }
    }
}

impl core::error::Error for EmulateError {}

impl From<DecodeError> for EmulateError {
    fn from(e: DecodeError) -> Self {
        EmulateError::Decode(e)
    }
}

impl From<FetchError> for EmulateError {
    fn from(e: FetchError) -> Self {
        EmulateError::Fetch(e)
    }
}

/// One operand, classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operand {
    Memory,
    /// ES:[DI/EDI/RDI] with the address size in bytes.
    StringDest(u8),
    Gpr(GprOperand),
    Imm(u64),
    Other,
}

fn operand(instr: &Instruction, i: u32) -> Operand {
    if i >= instr.op_count() {
        return Operand::Other;
    }
    match instr.op_kind(i) {
        OpKind::Memory => Operand::Memory,
        OpKind::MemoryESDI => Operand::StringDest(2),
        OpKind::MemoryESEDI => Operand::StringDest(4),
        OpKind::MemoryESRDI => Operand::StringDest(8),
        OpKind::Register => {
            GprOperand::from_iced(instr.op_register(i)).map_or(Operand::Other, Operand::Gpr)
        }
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => Operand::Imm(instr.immediate(i)),
        _ => Operand::Other,
    }
}

fn memory_bytes(size: MemorySize) -> Option<u8> {
    Some(match size {
        MemorySize::UInt8 | MemorySize::Int8 => 1,
        MemorySize::UInt16 | MemorySize::Int16 | MemorySize::WordOffset => 2,
        MemorySize::UInt32 | MemorySize::Int32 | MemorySize::DwordOffset => 4,
        MemorySize::UInt64 | MemorySize::Int64 | MemorySize::QwordOffset => 8,
        _ => return None,
    })
}

/// Decodes the instruction at the start of `bytes` (at `bitness`) that
/// faulted on `gpa`, reading register operands from `gprs`.
pub fn decode_mmio(
    bytes: &[u8],
    bitness: u32,
    gpa: u64,
    gprs: &Gprs,
) -> Result<MmioAccess, EmulateError> {
    let instr = decode(bytes, bitness)?;
    let mnemonic = Mnemonic(instr.mnemonic());
    let form = |form| EmulateError::UnsupportedForm { mnemonic, form };
    let alu_op = match instr.mnemonic() {
        M::Add => Some(AluOp::Add),
        M::Adc => Some(AluOp::Adc),
        M::Sub | M::Cmp => Some(AluOp::Sub),
        M::Sbb => Some(AluOp::Sbb),
        M::And | M::Test => Some(AluOp::And),
        M::Or => Some(AluOp::Or),
        M::Xor => Some(AluOp::Xor),
        _ => None,
    };
    let is_string = matches!(instr.mnemonic(), M::Stosb | M::Stosw | M::Stosd | M::Stosq);
    let family = alu_op.is_some()
        || is_string
        || matches!(instr.mnemonic(), M::Mov | M::Movzx | M::Movsx | M::Movsxd);
    if !family {
        return Err(EmulateError::Unsupported { mnemonic });
    }
    let (a, b) = (operand(&instr, 0), operand(&instr, 1));
    let has_memory = |op| matches!(op, Operand::Memory | Operand::StringDest(_));
    if !has_memory(a) && !has_memory(b) {
        return Err(form(Form::NoMemoryOperand));
    }
    let size = memory_bytes(instr.memory_size()).ok_or(form(Form::OperandSize))?;
    // A register source's value; RSP is refused.
    let value_of = |r: GprOperand| r.read(gprs).ok_or(form(Form::StackPointer));
    let dest = |r: GprOperand| {
        if r.reg == Reg::Rsp {
            Err(form(Form::StackPointer))
        } else {
            Ok(r)
        }
    };
    let mut string_addr_size = None;

    let kind = match (instr.mnemonic(), alu_op, a, b) {
        (M::Mov, _, Operand::Memory, Operand::Gpr(r)) => AccessKind::Write {
            value: value_of(r)?,
        },
        (M::Mov, _, Operand::Memory, Operand::Imm(v)) => AccessKind::Write {
            value: v & size_mask(size),
        },
        (M::Mov, _, Operand::Gpr(r), Operand::Memory) => AccessKind::Read {
            dest: dest(r)?,
            sign_extend: false,
        },
        (M::Movzx | M::Movsx | M::Movsxd, _, Operand::Gpr(r), Operand::Memory) => {
            AccessKind::Read {
                dest: dest(r)?,
                sign_extend: instr.mnemonic() != M::Movzx,
            }
        }
        (_, _, Operand::StringDest(addr_size), Operand::Gpr(r)) if is_string => {
            if instr.has_rep_prefix() || instr.has_repne_prefix() {
                return Err(form(Form::RepeatPrefix));
            }
            string_addr_size = Some(addr_size);
            AccessKind::Write {
                value: value_of(r)?,
            }
        }
        (M::Cmp | M::Test, Some(op), Operand::Memory, Operand::Gpr(r)) => AccessKind::Compare {
            op,
            operand: value_of(r)?,
            memory_is_left: true,
        },
        (M::Cmp | M::Test, Some(op), Operand::Memory, Operand::Imm(v)) => AccessKind::Compare {
            op,
            operand: v & size_mask(size),
            memory_is_left: true,
        },
        (M::Cmp, Some(op), Operand::Gpr(r), Operand::Memory) => AccessKind::Compare {
            op,
            operand: value_of(r)?,
            memory_is_left: false,
        },
        (_, Some(op), Operand::Memory, Operand::Gpr(r)) => AccessKind::ReadModifyWrite {
            op,
            operand: value_of(r)?,
        },
        (_, Some(op), Operand::Memory, Operand::Imm(v)) => AccessKind::ReadModifyWrite {
            op,
            operand: v & size_mask(size),
        },
        (_, Some(op), Operand::Gpr(r), Operand::Memory) => AccessKind::ReadToRegister {
            op,
            dest: dest(r)?,
            operand: value_of(r)?,
        },
        _ => return Err(form(Form::NotGpr)),
    };
    Ok(MmioAccess {
        gpa,
        size,
        kind,
        // Instructions are at most 15 bytes.
        instr_len: instr.len() as u8,
        bitness,
        string_addr_size,
        mnemonic,
    })
}

/// Fetches the instruction at `rip` through the guest's paging, and decodes
/// it as the access that faulted on `gpa`.
pub fn emulate_mmio(
    mem: &impl GuestMemory,
    sys: &SystemState,
    rip: u64,
    gpa: u64,
    gprs: &Gprs,
) -> Result<MmioAccess, EmulateError> {
    let (bytes, len) = fetch(mem, sys, rip)?;
    decode_mmio(&bytes[..len], bitness(sys), gpa, gprs)
}

/// Writes the `value` read from the device into the destination register of
/// a [`AccessKind::Read`]: truncated to the access size, sign- or
/// zero-extended to the register, then stored with x86 partial-register
/// rules (32-bit writes zero-extend, 8/16-bit writes merge, AH..BH are bits
/// 15:8).
pub fn complete_read(access: &MmioAccess, value: u64, gprs: &mut Gprs) -> Result<(), EmulateError> {
    let AccessKind::Read { dest, sign_extend } = access.kind else {
        return Err(EmulateError::NotARead {
            mnemonic: access.mnemonic,
        });
    };
    let v = value & size_mask(access.size);
    let extended = match (sign_extend, access.size) {
        (true, 1) => v as u8 as i8 as u64,
        (true, 2) => v as u16 as i16 as u64,
        (true, 4) => v as u32 as i32 as u64,
        _ => v,
    };
    if dest.write(gprs, extended) {
        Ok(())
    } else {
        Err(EmulateError::UnsupportedForm {
            mnemonic: access.mnemonic,
            form: Form::StackPointer,
        })
    }
}

/// Finishes the instruction after the device access: `read_value` is what
/// the device returned (ignored for [`AccessKind::Write`]). Updates `gprs`
/// (read destination, STOS's RDI), and returns the new RFLAGS and the value
/// to write to the device, if any. The caller then sets RIP to
/// [`MmioAccess::next_rip`].
pub fn complete(
    access: &MmioAccess,
    read_value: u64,
    gprs: &mut Gprs,
    rflags: u64,
) -> Result<Completion, EmulateError> {
    let size = access.size;
    let old = read_value & size_mask(size);
    Ok(match access.kind {
        AccessKind::Read { .. } => {
            complete_read(access, read_value, gprs)?;
            Completion {
                write_back: None,
                rflags,
            }
        }
        AccessKind::Write { value } => {
            if let Some(addr_size) = access.string_addr_size {
                let step = u64::from(size);
                let delta = if rflags & DF != 0 {
                    step.wrapping_neg()
                } else {
                    step
                };
                let rdi = GprOperand {
                    reg: Reg::Rdi,
                    size: addr_size,
                    high_byte: false,
                };
                rdi.write(gprs, gprs.rdi.wrapping_add(delta));
            }
            Completion {
                write_back: Some(value),
                rflags,
            }
        }
        AccessKind::ReadModifyWrite { op, operand } => Completion {
            write_back: Some(alu(op, size, old, operand, rflags)),
            rflags: flags_after(op, size, old, operand, rflags),
        },
        AccessKind::ReadToRegister { op, dest, operand } => {
            let result = alu(op, size, operand, old, rflags);
            if !dest.write(gprs, result) {
                return Err(EmulateError::UnsupportedForm {
                    mnemonic: access.mnemonic,
                    form: Form::StackPointer,
                });
            }
            Completion {
                write_back: None,
                rflags: flags_after(op, size, operand, old, rflags),
            }
        }
        AccessKind::Compare {
            op,
            operand,
            memory_is_left,
        } => {
            let (l, r) = if memory_is_left {
                (old, operand)
            } else {
                (operand, old)
            };
            Completion {
                write_back: None,
                rflags: flags_after(op, size, l, r, rflags),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::alu::{CF, PF, SF, ZF};
    use crate::walk::tests::{long_mode, long_tables};
    use std::format;
    use std::vec::Vec;
    use vcpu::{SegmentState, VecMemory};

    const GPA: u64 = 0xFEC0_0010;

    fn regs() -> Gprs {
        Gprs {
            rax: 0x1111_1111_2222_A1A0,
            rbx: 0xB0B0_B0B0_B0B0_B0B0,
            rcx: 0xC0C0_C0C0_8765_4321,
            rdx: 0xD0D0_D0D0_D0D0_D0D0,
            rdi: 0x1000,
            r8: 0x8888_8888_8888_8888,
            ..Default::default()
        }
    }

    fn dec(bytes: &[u8], bitness: u32) -> MmioAccess {
        decode_mmio(bytes, bitness, GPA, &regs()).unwrap_or_else(|e| panic!("{bytes:02x?}: {e}"))
    }

    fn read(dest: Reg, size: u8, sign_extend: bool) -> AccessKind {
        AccessKind::Read {
            dest: GprOperand {
                reg: dest,
                size,
                high_byte: false,
            },
            sign_extend,
        }
    }

    /// (size, kind, len) of `bytes` at `bitness`.
    fn shape(bytes: &[u8], bitness: u32) -> (u8, AccessKind, u8) {
        let a = dec(bytes, bitness);
        assert_eq!(a.gpa, GPA);
        assert_eq!(a.bitness, bitness);
        (a.size, a.kind, a.instr_len)
    }

    fn unsupported(bytes: &[u8], bitness: u32) -> EmulateError {
        decode_mmio(bytes, bitness, GPA, &regs()).unwrap_err()
    }

    #[test]
    fn mov_loads() {
        for bits in [32, 64] {
            assert_eq!(
                shape(&[0x8B, 0x03], bits),
                (4, read(Reg::Rax, 4, false), 2),
                "mov eax,[rbx]"
            );
            assert_eq!(
                shape(&[0x66, 0x8B, 0x03], bits),
                (2, read(Reg::Rax, 2, false), 3)
            );
            assert_eq!(
                shape(&[0x8A, 0x0B], bits),
                (1, read(Reg::Rcx, 1, false), 2),
                "mov cl,[rbx]"
            );
            let (_, kind, _) = shape(&[0x8A, 0x27], bits);
            assert_eq!(
                kind,
                AccessKind::Read {
                    dest: GprOperand {
                        reg: Reg::Rax,
                        size: 1,
                        high_byte: true
                    },
                    sign_extend: false
                },
                "mov ah,[rdi]"
            );
        }
        assert_eq!(
            shape(&[0x48, 0x8B, 0x03], 64),
            (8, read(Reg::Rax, 8, false), 3)
        );
        assert_eq!(
            shape(&[0x4C, 0x8B, 0x03], 64),
            (8, read(Reg::R8, 8, false), 3)
        );
        assert_eq!(
            shape(&[0x44, 0x8B, 0x7B, 0x10], 64),
            (4, read(Reg::R15, 4, false), 4)
        );
        // moffs forms.
        let moffs64 = [0xA1, 0x10, 0, 0xC0, 0xFE, 0, 0, 0, 0];
        assert_eq!(shape(&moffs64, 64), (4, read(Reg::Rax, 4, false), 9));
        assert_eq!(
            shape(&[0xA1, 0x10, 0, 0xC0, 0xFE], 32),
            (4, read(Reg::Rax, 4, false), 5)
        );
        // 16-bit code: 8B 07 is mov ax,[bx].
        assert_eq!(shape(&[0x8B, 0x07], 16), (2, read(Reg::Rax, 2, false), 2));
        assert_eq!(
            shape(&[0x66, 0x8B, 0x07], 16),
            (4, read(Reg::Rax, 4, false), 3)
        );
    }

    #[test]
    fn mov_stores() {
        let r = regs();
        for bits in [32, 64] {
            let w = |v| AccessKind::Write { value: v };
            assert_eq!(
                shape(&[0x89, 0x0A], bits),
                (4, w(r.rcx & 0xFFFF_FFFF), 2),
                "mov [rdx],ecx"
            );
            assert_eq!(
                shape(&[0x66, 0x89, 0x07], bits),
                (2, w(0xA1A0), 3),
                "mov [rdi],ax"
            );
            assert_eq!(shape(&[0x88, 0x27], bits), (1, w(0xA1), 2), "mov [rdi],ah");
            assert_eq!(shape(&[0x88, 0x07], bits), (1, w(0xA0), 2), "mov [rdi],al");
            assert_eq!(
                shape(&[0xC7, 0x00, 0x78, 0x56, 0x34, 0x12], bits),
                (4, w(0x1234_5678), 6)
            );
            assert_eq!(
                shape(&[0x66, 0xC7, 0x00, 0x34, 0x12], bits),
                (2, w(0x1234), 5)
            );
            assert_eq!(shape(&[0xC6, 0x00, 0xFF], bits), (1, w(0xFF), 3));
            // Displacement and SIB: mov [rax+rcx*4+0x10], ecx.
            assert_eq!(
                shape(&[0x89, 0x4C, 0x88, 0x10], bits),
                (4, w(0x8765_4321), 4)
            );
        }
        let w = |v| AccessKind::Write { value: v };
        assert_eq!(
            shape(&[0x48, 0x89, 0x07], 64),
            (8, w(r.rax), 3),
            "mov [rdi],rax"
        );
        assert_eq!(
            shape(&[0x4C, 0x89, 0x07], 64),
            (8, w(r.r8), 3),
            "mov [rdi],r8"
        );
        assert_eq!(
            shape(&[0x44, 0x88, 0x07], 64),
            (1, w(0x88), 3),
            "mov [rdi],r8b"
        );
        // REX.W C7: the imm32 is sign-extended to 64 bits.
        assert_eq!(
            shape(&[0x48, 0xC7, 0x00, 0xFF, 0xFF, 0xFF, 0xFF], 64),
            (8, w(u64::MAX), 7)
        );
        assert_eq!(
            shape(&[0x48, 0xC7, 0x00, 1, 0, 0, 0x80], 64),
            (8, w(0xFFFF_FFFF_8000_0001), 7)
        );
        // mov [rip+disp32], eax and a segment override.
        assert_eq!(shape(&[0x89, 0x05, 1, 2, 3, 4], 64), (4, w(0x2222_A1A0), 6));
        assert_eq!(shape(&[0x65, 0x89, 0x07], 64), (4, w(0x2222_A1A0), 3));
        // 16-bit: mov [bx], ax.
        assert_eq!(shape(&[0x89, 0x07], 16), (2, w(0xA1A0), 2));
    }

    #[test]
    fn movzx_movsx() {
        for bits in [32, 64] {
            assert_eq!(
                shape(&[0x0F, 0xB6, 0x07], bits),
                (1, read(Reg::Rax, 4, false), 3)
            );
            assert_eq!(
                shape(&[0x0F, 0xBF, 0x07], bits),
                (2, read(Reg::Rax, 4, true), 3)
            );
            assert_eq!(
                shape(&[0x0F, 0xB7, 0x0F], bits),
                (2, read(Reg::Rcx, 4, false), 3)
            );
            assert_eq!(
                shape(&[0x0F, 0xBE, 0x07], bits),
                (1, read(Reg::Rax, 4, true), 3)
            );
            assert_eq!(
                shape(&[0x66, 0x0F, 0xB6, 0x07], bits),
                (1, read(Reg::Rax, 2, false), 4)
            );
        }
        assert_eq!(
            shape(&[0x48, 0x0F, 0xBE, 0x07], 64),
            (1, read(Reg::Rax, 8, true), 4)
        );
        assert_eq!(
            shape(&[0x48, 0x0F, 0xB7, 0x07], 64),
            (2, read(Reg::Rax, 8, false), 4)
        );
        assert_eq!(
            shape(&[0x48, 0x63, 0x07], 64),
            (4, read(Reg::Rax, 8, true), 3),
            "movsxd"
        );
    }

    #[test]
    fn stos() {
        let a = dec(&[0xAA], 64);
        assert_eq!(
            (a.size, a.kind, a.string_addr_size),
            (1, AccessKind::Write { value: 0xA0 }, Some(8))
        );
        let a = dec(&[0xAB], 32);
        assert_eq!(
            (a.size, a.kind, a.string_addr_size),
            (4, AccessKind::Write { value: 0x2222_A1A0 }, Some(4))
        );
        let a = dec(&[0x48, 0xAB], 64);
        assert_eq!((a.size, a.string_addr_size), (8, Some(8)));
        let a = dec(&[0x67, 0x66, 0xAB], 64);
        assert_eq!((a.size, a.string_addr_size), (2, Some(4)));
        let a = dec(&[0xAA], 16);
        assert_eq!(a.string_addr_size, Some(2));

        // complete moves RDI by the size, down when DF is set.
        let mut g = regs();
        let a = dec(&[0xAB], 64);
        let c = complete(&a, 0, &mut g, 0x2).unwrap();
        assert_eq!(c.write_back, Some(0x2222_A1A0));
        assert_eq!(g.rdi, 0x1004);
        complete(&a, 0, &mut g, 0x2 | DF).unwrap();
        complete(&a, 0, &mut g, 0x2 | DF).unwrap();
        assert_eq!(g.rdi, 0xFFC);
        // 32-bit address size wraps and zero-extends EDI.
        let mut g = regs();
        g.rdi = 0xFFFF_FFFF_FFFF_FFFF;
        complete(&dec(&[0x67, 0xAA], 64), 0, &mut g, 0x2).unwrap();
        assert_eq!(g.rdi, 0);
        // 16-bit address size wraps DI and keeps the upper bits.
        let mut g = regs();
        g.rdi = 0x1234_FFFF;
        complete(&dec(&[0xAA], 16), 0, &mut g, 0x2).unwrap();
        assert_eq!(g.rdi, 0x1234_0000);

        assert_eq!(
            unsupported(&[0xF3, 0xAA], 64),
            EmulateError::UnsupportedForm {
                mnemonic: Mnemonic(M::Stosb),
                form: Form::RepeatPrefix
            }
        );
        assert!(matches!(
            unsupported(&[0xF2, 0xAB], 32),
            EmulateError::UnsupportedForm {
                form: Form::RepeatPrefix,
                ..
            }
        ));
    }

    #[test]
    fn read_modify_write() {
        let rmw = |op, operand| AccessKind::ReadModifyWrite { op, operand };
        for bits in [32, 64] {
            assert_eq!(
                shape(&[0x81, 0x20, 0xFF, 0, 0, 0], bits),
                (4, rmw(AluOp::And, 0xFF), 6)
            );
            assert_eq!(
                shape(&[0xF0, 0x81, 0x20, 0xFF, 0, 0, 0], bits),
                (4, rmw(AluOp::And, 0xFF), 7)
            );
            assert_eq!(shape(&[0x83, 0x08, 0x01], bits), (4, rmw(AluOp::Or, 1), 3));
            assert_eq!(
                shape(&[0x83, 0x28, 0xFF], bits),
                (4, rmw(AluOp::Sub, 0xFFFF_FFFF), 3)
            );
            assert_eq!(
                shape(&[0x80, 0x30, 0x0F], bits),
                (1, rmw(AluOp::Xor, 0x0F), 3)
            );
            assert_eq!(
                shape(&[0x01, 0x18], bits),
                (4, rmw(AluOp::Add, 0xB0B0_B0B0), 2)
            );
            assert_eq!(
                shape(&[0x66, 0x29, 0x18], bits),
                (2, rmw(AluOp::Sub, 0xB0B0), 3)
            );
            assert_eq!(
                shape(&[0xF0, 0x09, 0x08], bits),
                (4, rmw(AluOp::Or, 0x8765_4321), 3)
            );
            assert_eq!(
                shape(&[0x20, 0x20], bits),
                (1, rmw(AluOp::And, 0xA1), 2),
                "and [rax],ah"
            );
        }
        assert_eq!(
            shape(&[0x48, 0x83, 0x20, 0xF0], 64),
            (8, rmw(AluOp::And, 0xFFFF_FFFF_FFFF_FFF0), 4)
        );
        assert_eq!(
            shape(&[0xF0, 0x48, 0x09, 0x08], 64),
            (8, rmw(AluOp::Or, regs().rcx), 4)
        );

        // apply_rmw and complete agree; flags come from the operation.
        let a = dec(&[0x81, 0x20, 0xFF, 0, 0, 0], 64);
        assert_eq!(a.apply_rmw(0xDEAD_BE00), Some(0));
        let mut g = regs();
        let c = complete(&a, 0xDEAD_BE00, &mut g, 0x2 | CF).unwrap();
        assert_eq!(c.write_back, Some(0));
        assert_eq!(c.rflags, 0x2 | ZF | PF);
        assert_eq!(g, regs(), "no register changes");
        let a = dec(&[0x80, 0x00, 0x01], 64); // add byte [rax], 1
        let c = complete(&a, 0xFF, &mut g, 0x2).unwrap();
        assert_eq!(c.write_back, Some(0));
        assert_ne!(c.rflags & CF, 0);
        assert_eq!(dec(&[0x8B, 0x03], 64).apply_rmw(1), None);
        assert!(a.needs_read() && a.writes_device());
    }

    #[test]
    fn compare_and_test() {
        let cmp = |op, operand, memory_is_left| AccessKind::Compare {
            op,
            operand,
            memory_is_left,
        };
        for bits in [32, 64] {
            assert_eq!(
                shape(&[0x39, 0x03], bits),
                (4, cmp(AluOp::Sub, 0x2222_A1A0, true), 2)
            );
            assert_eq!(
                shape(&[0x3B, 0x03], bits),
                (4, cmp(AluOp::Sub, 0x2222_A1A0, false), 2)
            );
            assert_eq!(
                shape(&[0x80, 0x38, 0x05], bits),
                (1, cmp(AluOp::Sub, 5, true), 3)
            );
            assert_eq!(
                shape(&[0xF6, 0x00, 0x01], bits),
                (1, cmp(AluOp::And, 1, true), 3)
            );
            assert_eq!(
                shape(&[0x85, 0x03], bits),
                (4, cmp(AluOp::And, 0x2222_A1A0, true), 2)
            );
            assert_eq!(
                shape(&[0xF7, 0x00, 0, 0, 0, 0x80], bits),
                (4, cmp(AluOp::And, 0x8000_0000, true), 6)
            );
        }
        let mut g = regs();
        // cmp [rbx], eax with memory 1 < eax: borrow; cmp eax, [rbx]: no borrow.
        let c = complete(&dec(&[0x39, 0x03], 64), 1, &mut g, 0x202).unwrap();
        assert_eq!(c.write_back, None);
        assert_eq!(c.rflags & CF, CF);
        assert_eq!(c.rflags & 0x200, 0x200, "IF kept");
        let c = complete(&dec(&[0x3B, 0x03], 64), 1, &mut g, 0x202).unwrap();
        assert_eq!(c.rflags & CF, 0);
        // test dword [rax], 0x80000000 on a value with bit 31 set.
        let a = dec(&[0xF7, 0x00, 0, 0, 0, 0x80], 64);
        let c = complete(&a, 0x8000_0001, &mut g, 0x2 | ZF).unwrap();
        assert_eq!(c.rflags, 0x2 | SF | PF);
        assert!(a.needs_read() && !a.writes_device());
        assert_eq!(g, regs());
    }

    #[test]
    fn complete_read_extends_and_merges() {
        let run = |bytes: &[u8], value: u64| {
            let mut g = regs();
            complete_read(&dec(bytes, 64), value, &mut g).unwrap();
            g
        };
        let base = regs();
        assert_eq!(
            run(&[0x8B, 0x03], 0xFFFF_FFFF_8000_0001).rax,
            0x8000_0001,
            "32-bit zero-extends"
        );
        assert_eq!(
            run(&[0x48, 0x8B, 0x03], 0x1234_5678_9ABC_DEF0).rax,
            0x1234_5678_9ABC_DEF0
        );
        assert_eq!(
            run(&[0x66, 0x8B, 0x03], 0xBEEF).rax,
            (base.rax & !0xFFFF) | 0xBEEF
        );
        assert_eq!(run(&[0x8A, 0x0B], 0x7F).rcx, (base.rcx & !0xFF) | 0x7F);
        assert_eq!(
            run(&[0x8A, 0x27], 0x5A).rax,
            (base.rax & !0xFF00) | 0x5A00,
            "AH"
        );
        assert_eq!(
            run(&[0x8A, 0x3F], 0x5A).rbx,
            (base.rbx & !0xFF00) | 0x5A00,
            "BH"
        );
        assert_eq!(run(&[0x0F, 0xB6, 0x07], 0xFFFF_FF80).rax, 0x80);
        assert_eq!(run(&[0x0F, 0xBE, 0x07], 0x80).rax, 0xFFFF_FF80);
        assert_eq!(run(&[0x0F, 0xBF, 0x07], 0x8000).rax, 0xFFFF_8000);
        assert_eq!(
            run(&[0x48, 0x0F, 0xBE, 0x07], 0x80).rax,
            0xFFFF_FFFF_FFFF_FF80
        );
        assert_eq!(
            run(&[0x48, 0x63, 0x07], 0x8000_0000).rax,
            0xFFFF_FFFF_8000_0000
        );
        assert_eq!(
            run(&[0x66, 0x0F, 0xBE, 0x07], 0xFE).rax,
            (base.rax & !0xFFFF) | 0xFFFE
        );
        assert_eq!(run(&[0x4C, 0x8B, 0x03], 7).r8, 7);

        // Through `complete`, flags untouched.
        let mut g = regs();
        let c = complete(&dec(&[0x8B, 0x03], 64), 5, &mut g, 0x246).unwrap();
        assert_eq!((c.write_back, c.rflags, g.rax), (None, 0x246, 5));

        let mut g = regs();
        assert_eq!(
            complete_read(&dec(&[0x89, 0x03], 64), 0, &mut g),
            Err(EmulateError::NotARead {
                mnemonic: Mnemonic(M::Mov)
            })
        );
    }

    #[test]
    fn adc_sbb_and_register_destinations() {
        let cf = 0x2 | crate::alu::CF;
        // add eax,[rbx]: eax = 0x2222_A1A0 + 0x10, zero-extended to 64 bits.
        let a = dec(&[0x03, 0x03], 64);
        let mut g = regs();
        let done = complete(&a, 0x10, &mut g, 0x2).unwrap();
        assert_eq!(done.write_back, None);
        assert_eq!(g.rax, 0x2222_A1B0);
        // and ecx,[rbx]
        let mut g = regs();
        complete(&dec(&[0x23, 0x0B], 64), 0xFF00, &mut g, 0x2).unwrap();
        assert_eq!(g.rcx, 0x4300);
        // adc eax,[rbx] with CF set: + 1.
        let mut g = regs();
        complete(&dec(&[0x13, 0x03], 64), 0x10, &mut g, cf).unwrap();
        assert_eq!(g.rax, 0x2222_A1B1);
        // sbb cl,[rbx] with CF set: 0x21 - 0x20 - 1 = 0, ZF; the rest of RCX kept.
        let mut g = regs();
        let done = complete(&dec(&[0x1A, 0x0B], 64), 0x20, &mut g, cf).unwrap();
        assert_eq!(g.rcx, 0xC0C0_C0C0_8765_4300);
        assert_eq!(
            done.rflags & (crate::alu::ZF | crate::alu::CF),
            crate::alu::ZF
        );
        // adc [rbx],eax with CF: the device gets old + eax + 1.
        let done = complete(&dec(&[0x11, 0x03], 64), 1, &mut regs(), cf).unwrap();
        assert_eq!(done.write_back, Some(0x2222_A1A2));
        // sbb dword [rbx],5 with CF: 3 - 5 - 1 borrows.
        let done = complete(&dec(&[0x83, 0x1B, 0x05], 64), 3, &mut regs(), cf).unwrap();
        assert_eq!(done.write_back, Some(0xFFFF_FFFD));
        assert_ne!(done.rflags & crate::alu::CF, 0);
        // Hostile: every register-destination ALU form with any value never panics.
        for op in [0x03u8, 0x0B, 0x13, 0x1B, 0x23, 0x2B, 0x33] {
            for v in [0, 1, u64::MAX, 0x8000_0000] {
                let mut g = regs();
                let _ = complete(&dec(&[0x48, op, 0x03], 64), v, &mut g, cf);
            }
        }
    }

    #[test]
    fn refused_forms() {
        let form = |bytes: &[u8]| match unsupported(bytes, 64) {
            EmulateError::UnsupportedForm { form, .. } => form,
            e => panic!("{bytes:02x?}: {e}"),
        };
        assert_eq!(form(&[0x2B, 0x20]), Form::StackPointer, "sub esp,[rax]");
        assert_eq!(form(&[0x89, 0xD8]), Form::NoMemoryOperand, "mov eax,ebx");
        assert_eq!(form(&[0x8C, 0x18]), Form::NotGpr, "mov [rax],ds");
        assert_eq!(form(&[0x8E, 0x18]), Form::NotGpr, "mov ds,[rax]");
        assert_eq!(form(&[0x89, 0x20]), Form::StackPointer, "mov [rax],esp");
        assert_eq!(form(&[0x8B, 0x20]), Form::StackPointer, "mov esp,[rax]");
        assert_eq!(
            form(&[0x48, 0x39, 0x20]),
            Form::StackPointer,
            "cmp [rax],rsp"
        );
        assert_eq!(
            form(&[0x40, 0x88, 0x20]),
            Form::StackPointer,
            "mov [rax],spl"
        );
        let name = |bytes: &[u8], bits| match unsupported(bytes, bits) {
            EmulateError::Unsupported { mnemonic } => format!("{mnemonic}"),
            e => panic!("{bytes:02x?}: {e}"),
        };
        assert_eq!(name(&[0xFF, 0x00], 64), "inc");
        assert_eq!(name(&[0xA4], 64), "movsb");
        assert_eq!(name(&[0x87, 0x03], 64), "xchg");
        assert_eq!(name(&[0x0F, 0x01, 0xD9], 64), "vmmcall");
        assert_eq!(name(&[0xC5, 0xFE, 0x6F, 0x00], 64), "vmovdqu");
        // In 32-bit code 48 is `dec eax`, not REX.W.
        assert_eq!(name(&[0x48, 0x89, 0x07], 32), "dec");
        // LOCK on MOV is #UD: the decoder refuses it.
        assert!(matches!(
            unsupported(&[0xF0, 0x89, 0x07], 64),
            EmulateError::Decode(DecodeError::Invalid { .. })
        ));
        let e = unsupported(&[0xFF, 0x00], 64);
        assert_eq!(format!("{e}"), "MMIO by `inc` is not emulated");
    }

    #[test]
    fn next_rip_wraps_with_code_size() {
        let mut a = dec(&[0x8B, 0x03], 64);
        assert_eq!(a.next_rip(0x1000), 0x1002);
        assert_eq!(a.next_rip(u64::MAX), 1);
        a.bitness = 32;
        assert_eq!(a.next_rip(0xFFFF_FFFF), 1);
        a.bitness = 16;
        assert_eq!(a.next_rip(0xFFFF), 1);
    }

    fn long64() -> SystemState {
        let mut sys = long_mode(0x1000);
        sys.cs = SegmentState {
            attrib: 0xA9B,
            ..Default::default()
        };
        sys
    }

    #[test]
    fn end_to_end_through_guest_paging() {
        let mut mem = VecMemory::new(0x20_0000);
        long_tables(&mut mem);
        // VA 0x40_0FFE: `c7 00 | 78 56 34 12` split across two pages.
        mem.write_u64(0x4008, 0x1F_F000 | 3).unwrap();
        mem.0[0x10_0FFE..0x10_1000].copy_from_slice(&[0xC7, 0x00]);
        mem.0[0x1F_F000..0x1F_F004].copy_from_slice(&[0x78, 0x56, 0x34, 0x12]);
        let sys = long64();
        let a = emulate_mmio(&mem, &sys, 0x40_0FFE, GPA, &regs()).unwrap();
        assert_eq!(
            (a.size, a.kind, a.instr_len),
            (4, AccessKind::Write { value: 0x1234_5678 }, 6)
        );
        assert_eq!(a.next_rip(0x40_0FFE), 0x40_1004);
        // The same in 32-bit protected mode with paging off.
        let mut mem = VecMemory::new(0x2000);
        mem.0[0x1FF8..0x1FFA].copy_from_slice(&[0x8B, 0x03]);
        let sys32 = SystemState {
            cs: SegmentState {
                attrib: 0xC9B,
                ..Default::default()
            },
            ..Default::default()
        };
        let a = emulate_mmio(&mem, &sys32, 0x1FF8, GPA, &regs()).unwrap();
        assert_eq!((a.bitness, a.kind), (32, read(Reg::Rax, 4, false)));
    }

    #[test]
    fn hostile_fetches() {
        // Instruction cut by the end of RAM.
        let mut mem = VecMemory::new(0x1000);
        mem.0[0xFFE..].copy_from_slice(&[0xC7, 0x00]);
        let sys32 = SystemState {
            cs: SegmentState {
                attrib: 0xC9B,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            emulate_mmio(&mem, &sys32, 0xFFE, GPA, &regs()),
            Err(EmulateError::Decode(DecodeError::Truncated {
                available: 2
            }))
        );
        // RIP past the end of RAM.
        assert_eq!(
            emulate_mmio(&mem, &sys32, 0x1000, GPA, &regs()),
            Err(EmulateError::Fetch(FetchError::NotRam { gpa: 0x1000 }))
        );
        // CR3 outside RAM.
        assert!(matches!(
            emulate_mmio(&mem, &long64(), 0x40_0000, GPA, &regs()),
            Err(EmulateError::Fetch(FetchError::Walk(
                crate::WalkError::TableOutsideRam { level: 4, .. }
            )))
        ));
        // Garbage: a page of 0xFF and of 0x0F bytes.
        for fill in [0xFFu8, 0x0F, 0x00, 0xF0, 0x66] {
            mem.0.fill(fill);
            let _ = emulate_mmio(&mem, &sys32, 0x10, GPA, &regs());
        }
    }

    /// A small deterministic generator (xorshift64*).
    fn rng(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut s = 0x9E37_79B9_7F4A_7C15;
        // Prefixes and opcodes of the family, so many strings decode into it.
        let interesting = [
            0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x48, 0x4C, 0x41, 0x88, 0x89, 0x8A, 0x8B, 0xC6, 0xC7,
            0x0F, 0xB6, 0xBE, 0x63, 0xAA, 0xAB, 0x80, 0x81, 0x83, 0x84, 0x85, 0xF6, 0xF7, 0x39,
            0x3B, 0xA1, 0xA3, 0x65,
        ];
        let mut supported = 0;
        for i in 0..200_000 {
            let mut bytes: Vec<u8> = Vec::new();
            let len = (rng(&mut s) % 16) as usize;
            for _ in 0..len {
                let r = rng(&mut s);
                bytes.push(if r & 1 == 0 {
                    interesting[(r >> 8) as usize % interesting.len()]
                } else {
                    (r >> 8) as u8
                });
            }
            let bits = [16, 32, 64][i % 3];
            let mut g = regs();
            if let Ok(a) = decode_mmio(&bytes, bits, GPA, &g) {
                supported += 1;
                assert!(matches!(a.size, 1 | 2 | 4 | 8));
                assert!((1..=15).contains(&a.instr_len) && usize::from(a.instr_len) <= bytes.len());
                let c = complete(&a, rng(&mut s), &mut g, rng(&mut s)).unwrap();
                if let Some(v) = c.write_back {
                    assert_eq!(v & !size_mask(a.size), 0, "{bytes:02x?}");
                }
            }
        }
        assert!(supported > 1000, "only {supported} decoded into the family");
    }
}
