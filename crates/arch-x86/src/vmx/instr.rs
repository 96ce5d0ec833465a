//! The VMX instructions. Each reads CF and ZF inside its own asm block, so the
//! VMfailInvalid / VMfailValid status never crosses compiled code that could
//! change the flags.

use core::arch::asm;

use x86::vmx::vmcs::ro;

/// How a VMX instruction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFail {
    /// CF set: no current VMCS, or the operand was refused outright.
    Invalid,
    /// ZF set: the VM-instruction error number says why.
    Valid(u32),
}

/// INVEPT / INVVPID type: one context (the given EPTP or VPID).
pub const SINGLE_CONTEXT: u64 = 1;
/// INVEPT / INVVPID type: every context.
pub const ALL_CONTEXTS: u64 = 2;

fn status(cf: u8, zf: u8) -> Result<(), VmFail> {
    if cf != 0 {
        Err(VmFail::Invalid)
    } else if zf != 0 {
        // SAFETY: ZF means the instruction ran in VMX operation with a
        // current VMCS, whose VM-instruction error field is readable.
        Err(VmFail::Valid(unsafe { instruction_error() }))
    } else {
        Ok(())
    }
}

/// The VM-instruction error field of the current VMCS (0 if unreadable).
///
/// # Safety
/// The CPU must be in VMX operation.
pub unsafe fn instruction_error() -> u32 {
    let value: u64;
    // SAFETY: VMX operation (caller); VMREAD of a read-only field only
    // writes the output register. Without a current VMCS it fails and the
    // output is left as initialized below.
    unsafe {
        asm!(
            "xor {v:e}, {v:e}",
            "vmread {v}, {f}",
            v = out(reg) value,
            f = in(reg) u64::from(ro::VM_INSTRUCTION_ERROR),
            options(nostack)
        )
    };
    value as u32
}

/// Enters VMX operation with the VMXON region at physical `region`.
///
/// # Safety
/// CR4.VMXE must be set and CR0/CR4 must satisfy the VMX fixed bits; the
/// region must be a 4 KiB-aligned page holding the VMCS revision id, owned by
/// this CPU for as long as it stays in VMX operation.
pub unsafe fn vmxon(region: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees the preconditions; the operand is a
    // 64-bit memory location holding the region's address.
    unsafe {
        asm!(
            "vmxon qword ptr [{pa}]",
            "setc {cf}",
            "setz {zf}",
            pa = in(reg) &region,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack)
        )
    };
    if cf != 0 {
        Err(VmFail::Invalid)
    } else if zf != 0 {
        // No current VMCS exists yet: the error number is unavailable.
        Err(VmFail::Valid(0))
    } else {
        Ok(())
    }
}

/// Flushes and deactivates the VMCS at physical `vmcs`, marking it clear.
///
/// # Safety
/// VMX operation; `vmcs` is a VMCS region owned by the caller.
pub unsafe fn vmclear(vmcs: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: per the caller's contract; the operand holds the address.
    unsafe {
        asm!(
            "vmclear qword ptr [{pa}]",
            "setc {cf}",
            "setz {zf}",
            pa = in(reg) &vmcs,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack)
        )
    };
    status(cf, zf)
}

/// Makes the VMCS at physical `vmcs` current on this CPU.
///
/// # Safety
/// VMX operation; `vmcs` is a VMCS region owned by the caller that no other
/// CPU has current.
pub unsafe fn vmptrld(vmcs: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: per the caller's contract; the operand holds the address.
    unsafe {
        asm!(
            "vmptrld qword ptr [{pa}]",
            "setc {cf}",
            "setz {zf}",
            pa = in(reg) &vmcs,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack)
        )
    };
    status(cf, zf)
}

/// The physical address of the current VMCS (all ones if none).
///
/// # Safety
/// VMX operation.
pub unsafe fn vmptrst() -> u64 {
    let mut pa: u64 = u64::MAX;
    // SAFETY: VMX operation (caller); VMPTRST stores 8 bytes into `pa`.
    unsafe {
        asm!(
            "vmptrst qword ptr [{p}]",
            p = in(reg) &mut pa,
            options(nostack)
        )
    };
    pa
}

/// Reads a field of the current VMCS.
///
/// # Safety
/// VMX operation.
pub unsafe fn vmread(field: u32) -> Result<u64, VmFail> {
    let value: u64;
    let (cf, zf): (u8, u8);
    // SAFETY: VMX operation (caller); VMREAD only writes the output register.
    unsafe {
        asm!(
            "vmread {v}, {f}",
            "setc {cf}",
            "setz {zf}",
            v = out(reg) value,
            f = in(reg) u64::from(field),
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack)
        )
    };
    status(cf, zf).map(|()| value)
}

/// Writes a field of the current VMCS.
///
/// # Safety
/// VMX operation; the current VMCS must belong to the caller, and the value
/// must not let the guest reach host memory it does not own (bitmap, EPT
/// and host-state fields in particular).
pub unsafe fn vmwrite(field: u32, value: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: per the caller's contract; VMWRITE touches only the VMCS.
    unsafe {
        asm!(
            "vmwrite {f}, {v}",
            "setc {cf}",
            "setz {zf}",
            f = in(reg) u64::from(field),
            v = in(reg) value,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack)
        )
    };
    status(cf, zf)
}

/// Invalidates EPT-derived translations (`kind` = [`SINGLE_CONTEXT`] for
/// `eptp`, or [`ALL_CONTEXTS`]).
///
/// # Safety
/// VMX operation; the CPU must support INVEPT of that type.
pub unsafe fn invept(kind: u64, eptp: u64) -> Result<(), VmFail> {
    let desc: [u64; 2] = [eptp, 0];
    let (cf, zf): (u8, u8);
    // SAFETY: per the caller's contract; the descriptor is 16 readable bytes.
    unsafe {
        asm!(
            "invept {k}, xmmword ptr [{d}]",
            "setc {cf}",
            "setz {zf}",
            k = in(reg) kind,
            d = in(reg) &desc,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack)
        )
    };
    status(cf, zf)
}

/// Invalidates linear and combined translations (`kind` =
/// [`SINGLE_CONTEXT`] for `vpid`, or [`ALL_CONTEXTS`]).
///
/// # Safety
/// VMX operation; the CPU must support INVVPID of that type.
pub unsafe fn invvpid(kind: u64, vpid: u16) -> Result<(), VmFail> {
    let desc: [u64; 2] = [u64::from(vpid), 0];
    let (cf, zf): (u8, u8);
    // SAFETY: per the caller's contract; the descriptor is 16 readable bytes.
    unsafe {
        asm!(
            "invvpid {k}, xmmword ptr [{d}]",
            "setc {cf}",
            "setz {zf}",
            k = in(reg) kind,
            d = in(reg) &desc,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack)
        )
    };
    status(cf, zf)
}
