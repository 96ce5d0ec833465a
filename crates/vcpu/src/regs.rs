//! Guest register state as the exit handlers see it.

/// General-purpose registers except RSP (kept in the VMCS/VMCB).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gprs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

/// A register name in instruction-encoding order (RSP = 4 is not in [`Gprs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    Rax,
    Rcx,
    Rdx,
    Rbx,
    Rsp,
    Rbp,
    Rsi,
    Rdi,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
}

impl Reg {
    /// Every register in encoding order (the number in ModRM/REX, in VMX exit
    /// qualifications, and in the decoder's per-width numbering).
    pub const ENCODING_ORDER: [Reg; 16] = [
        Reg::Rax,
        Reg::Rcx,
        Reg::Rdx,
        Reg::Rbx,
        Reg::Rsp,
        Reg::Rbp,
        Reg::Rsi,
        Reg::Rdi,
        Reg::R8,
        Reg::R9,
        Reg::R10,
        Reg::R11,
        Reg::R12,
        Reg::R13,
        Reg::R14,
        Reg::R15,
    ];

    /// The register with encoding number `n & 15`.
    pub fn from_encoding(n: u8) -> Reg {
        Reg::ENCODING_ORDER[usize::from(n & 15)]
    }
}

impl Gprs {
    /// Reads `reg`; RSP is not held here and reads as `None`.
    pub fn get(&self, reg: Reg) -> Option<u64> {
        Some(match reg {
            Reg::Rax => self.rax,
            Reg::Rcx => self.rcx,
            Reg::Rdx => self.rdx,
            Reg::Rbx => self.rbx,
            Reg::Rsp => return None,
            Reg::Rbp => self.rbp,
            Reg::Rsi => self.rsi,
            Reg::Rdi => self.rdi,
            Reg::R8 => self.r8,
            Reg::R9 => self.r9,
            Reg::R10 => self.r10,
            Reg::R11 => self.r11,
            Reg::R12 => self.r12,
            Reg::R13 => self.r13,
            Reg::R14 => self.r14,
            Reg::R15 => self.r15,
        })
    }

    /// Writes `reg`; returns false for RSP (not held here).
    pub fn set(&mut self, reg: Reg, value: u64) -> bool {
        let slot = match reg {
            Reg::Rax => &mut self.rax,
            Reg::Rcx => &mut self.rcx,
            Reg::Rdx => &mut self.rdx,
            Reg::Rbx => &mut self.rbx,
            Reg::Rsp => return false,
            Reg::Rbp => &mut self.rbp,
            Reg::Rsi => &mut self.rsi,
            Reg::Rdi => &mut self.rdi,
            Reg::R8 => &mut self.r8,
            Reg::R9 => &mut self.r9,
            Reg::R10 => &mut self.r10,
            Reg::R11 => &mut self.r11,
            Reg::R12 => &mut self.r12,
            Reg::R13 => &mut self.r13,
            Reg::R14 => &mut self.r14,
            Reg::R15 => &mut self.r15,
        };
        *slot = value;
        true
    }

    /// The EDX:EAX pair (RDMSR/WRMSR/XSETBV operand).
    pub fn edx_eax(&self) -> u64 {
        (self.rdx << 32) | (self.rax & 0xFFFF_FFFF)
    }

    /// Sets EDX:EAX, zero-extending both halves as the hardware does.
    pub fn set_edx_eax(&mut self, value: u64) {
        self.rax = value & 0xFFFF_FFFF;
        self.rdx = value >> 32;
    }
}

/// A segment register as the guest loaded it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentState {
    pub selector: u16,
    pub base: u64,
    pub limit: u32,
    /// Descriptor attributes in the packed SVM form: type, S, DPL, P in
    /// bits 7:0; AVL, L, D/B, G in bits 11:8.
    pub attrib: u16,
}

/// Control registers, EFER and privilege of the guest at an exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemState {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cpl: u8,
    pub cs: SegmentState,
}

impl SystemState {
    /// Whether the guest runs 64-bit code (EFER.LMA and CS.L).
    pub fn long_mode_64(&self) -> bool {
        self.efer & (1 << 10) != 0 && self.cs.attrib & (1 << 9) != 0
    }

    /// Whether guest paging is on (CR0.PG).
    pub fn paging(&self) -> bool {
        self.cr0 & (1 << 31) != 0
    }
}
