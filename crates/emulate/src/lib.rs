//! What the hypervisor does when a guest touches guest-physical memory that
//! is not RAM: walk the guest's own page tables to find the instruction,
//! fetch and decode it, and turn it into one normalized MMIO access record
//! ([`MmioAccess`]) that a device bus can serve; then write the result back
//! into the guest's registers with x86 semantics ([`complete`]).
//!
//! Everything here reads guest-controlled bytes (page tables, instruction
//! bytes, register values) and never panics on them: anything it cannot
//! handle comes back as an error for the caller to answer per policy
//! (inject #GP/#UD or stop the VM).
//!
//! The flow for an NPT/EPT fault on a hole at `gpa`:
//! 1. [`emulate_mmio`] (= [`fetch`] + [`decode_mmio`]) gives an [`MmioAccess`];
//! 2. if [`MmioAccess::needs_read`], read `size` bytes from the device at `gpa`;
//! 3. [`complete`] updates the registers and returns the new RFLAGS and, for
//!    writes and read-modify-writes, the value to write to the device;
//! 4. set RIP to [`MmioAccess::next_rip`].
#![no_std]
#![forbid(unsafe_code)]

mod alu;
mod decode;
mod fetch;
mod gpr;
mod length;
mod mmio;
mod walk;

pub use alu::{alu, flags_after, size_mask, AluOp, AF, ARITH_FLAGS, CF, DF, OF, PF, SF, ZF};
pub use decode::{bitness, DecodeError, Mnemonic};
pub use fetch::{fetch, linear_rip, FetchError, MAX_INSTRUCTION_LEN};
pub use gpr::GprOperand;
pub use length::instruction_len;
pub use mmio::{
    complete, complete_read, decode_mmio, emulate_mmio, AccessKind, Completion, EmulateError, Form,
    MmioAccess,
};
pub use walk::{paging_mode, translate, PagingMode, WalkError};
