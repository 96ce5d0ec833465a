//! The Quercus hypercall ABI (VMCALL/VMMCALL) and its handlers.
//!
//! Calling convention, the same on VT-x and AMD-V:
//! - RAX: the hypercall number; RDI, RSI, RDX: arguments 1..3.
//! - RAX on return: a signed result, `>= 0` success, negative an error code
//!   ([`ENOSYS`] unknown number, [`EFAULT`] bad guest address, [`EINVAL`] bad
//!   argument). Other registers are preserved.
//! - Only CPL 0 may call: from any other level the instruction raises #GP and
//!   has no other effect, so guest user space cannot reach the hypervisor
//!   behind its kernel's back.
//! - Registers are taken whole (64 bits). A 32-bit guest must clear the upper
//!   halves it cannot see; garbage there reads as an unknown number or a
//!   bad argument, never as a different valid call.
//!
//! | RAX | Call | Arguments | Result |
//! |---|---|---|---|
//! | 0 | [`HC_API_VERSION`] | - | [`API_VERSION`] (major in 31:16, minor in 15:0) |
//! | 1 | [`HC_VM_ID`] | - | the caller's VM id |
//! | 2 | [`HC_CONSOLE_WRITE`] | RDI = guest-physical address, RSI = length (at most [`CONSOLE_WRITE_MAX`]) | the length written |
//! | 3 | [`HC_POWER_OFF`] | - | does not return: the VM stops |

use core::fmt;

use vcpu::{Gprs, GuestMemory};

/// Hypercall 0: the ABI version.
pub const HC_API_VERSION: u64 = 0;
/// Hypercall 1: the calling VM's id.
pub const HC_VM_ID: u64 = 1;
/// Hypercall 2: write guest bytes to the VM's console.
pub const HC_CONSOLE_WRITE: u64 = 2;
/// Hypercall 3: power the calling VM off.
pub const HC_POWER_OFF: u64 = 3;

/// ABI version 1.0.
pub const API_VERSION: i64 = 0x0001_0000;
/// Longest console write accepted in one call.
pub const CONSOLE_WRITE_MAX: u64 = 4096;

/// Unknown hypercall number.
pub const ENOSYS: i64 = HypercallError::NoSys.code();
/// A guest-physical range is not guest RAM.
pub const EFAULT: i64 = HypercallError::Fault.code();
/// An argument is out of range.
pub const EINVAL: i64 = HypercallError::Inval.code();

/// Bytes copied from guest RAM per console call: bounds the stack used.
const CONSOLE_CHUNK: usize = 256;

/// Why a hypercall failed; its [`code`](Self::code) goes back in RAX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallError {
    /// The number in RAX names no hypercall.
    NoSys,
    /// A guest-physical range lies (partly) outside guest RAM.
    Fault,
    /// An argument is out of range.
    Inval,
}

impl HypercallError {
    /// The negative errno-style value returned in RAX.
    pub const fn code(self) -> i64 {
        match self {
            HypercallError::NoSys => -38,
            HypercallError::Fault => -14,
            HypercallError::Inval => -22,
        }
    }
}

impl fmt::Display for HypercallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            HypercallError::NoSys => "unknown hypercall number",
            HypercallError::Fault => "guest address range is not guest RAM",
            HypercallError::Inval => "hypercall argument out of range",
        };
        write!(f, "{what} ({})", self.code())
    }
}

/// What the exit handler does after a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallOutcome {
    /// Write the value to RAX (as `u64`, two's complement) and advance RIP
    /// past the VMCALL/VMMCALL.
    Return(i64),
    /// Stop the VM; RIP and RAX do not matter any more.
    PowerOff,
    /// Inject #GP(0) and leave RIP and every register unchanged.
    InjectGp,
}

/// Handles the hypercall described by `gprs` from a vCPU at privilege level
/// `cpl` of VM `vm_id`. Console bytes go to `console`, possibly in several
/// pieces, only after the whole range was found to be guest RAM.
///
/// Never panics, whatever the registers hold.
pub fn handle(
    cpl: u8,
    gprs: &Gprs,
    vm_id: u16,
    mem: &impl GuestMemory,
    console: &mut impl FnMut(&[u8]),
) -> HypercallOutcome {
    if cpl != 0 {
        return HypercallOutcome::InjectGp;
    }
    let result = match gprs.rax {
        HC_API_VERSION => Ok(API_VERSION),
        HC_VM_ID => Ok(i64::from(vm_id)),
        HC_CONSOLE_WRITE => console_write(gprs.rdi, gprs.rsi, mem, console),
        HC_POWER_OFF => return HypercallOutcome::PowerOff,
        _ => Err(HypercallError::NoSys),
    };
    HypercallOutcome::Return(result.unwrap_or_else(HypercallError::code))
}

/// Hypercall 2: copies `len` bytes at guest-physical `gpa` to the console.
fn console_write(
    gpa: u64,
    len: u64,
    mem: &impl GuestMemory,
    console: &mut impl FnMut(&[u8]),
) -> Result<i64, HypercallError> {
    if len > CONSOLE_WRITE_MAX {
        return Err(HypercallError::Inval);
    }
    if len == 0 {
        return Ok(0);
    }
    // len <= 4096: the conversions below cannot fail or truncate.
    let total = usize::try_from(len).map_err(|_| HypercallError::Inval)?;
    // The whole buffer must be RAM (of one range: it cannot span the PCI hole).
    mem.layout().locate(gpa, len).ok_or(HypercallError::Fault)?;
    let mut buf = [0u8; CONSOLE_CHUNK];
    let mut done = 0usize;
    while done < total {
        let n = (total - done).min(CONSOLE_CHUNK);
        let chunk = &mut buf[..n];
        // The range was checked above; a failure here means a memory with
        // holes below its size: report it like any other bad range.
        mem.read(gpa + done as u64, chunk)
            .map_err(|_| HypercallError::Fault)?;
        console(chunk);
        done += n;
    }
    Ok(len as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use vcpu::VecMemory;

    const RAM: usize = 0x4000;

    fn mem() -> VecMemory {
        let mut m = VecMemory::new(RAM);
        for (i, b) in m.0.iter_mut().enumerate() {
            *b = i as u8;
        }
        m
    }

    fn call(cpl: u8, rax: u64, rdi: u64, rsi: u64) -> (HypercallOutcome, Vec<u8>) {
        let gprs = Gprs {
            rax,
            rdi,
            rsi,
            rdx: u64::MAX,
            ..Gprs::default()
        };
        let mut out = Vec::new();
        let r = handle(cpl, &gprs, 7, &mem(), &mut |b: &[u8]| {
            out.extend_from_slice(b)
        });
        (r, out)
    }

    #[test]
    fn error_codes_are_linux_errnos() {
        assert_eq!((ENOSYS, EFAULT, EINVAL), (-38, -14, -22));
        assert_eq!(HypercallError::Fault.code(), EFAULT);
    }

    #[test]
    fn version_and_vm_id() {
        assert_eq!(call(0, 0, 0, 0).0, HypercallOutcome::Return(0x0001_0000));
        assert_eq!(
            call(0, 1, u64::MAX, u64::MAX).0,
            HypercallOutcome::Return(7)
        );
        let gprs = Gprs {
            rax: 1,
            ..Gprs::default()
        };
        let r = handle(0, &gprs, u16::MAX, &mem(), &mut |_: &[u8]| {});
        assert_eq!(r, HypercallOutcome::Return(65535));
    }

    #[test]
    fn power_off() {
        assert_eq!(call(0, 3, 0, 0).0, HypercallOutcome::PowerOff);
    }

    #[test]
    fn unknown_numbers_are_enosys() {
        for rax in [4, 5, 0x100, 1 << 32, 1 << 32 | 2, u64::MAX, i64::MIN as u64] {
            assert_eq!(
                call(0, rax, 0, 0).0,
                HypercallOutcome::Return(ENOSYS),
                "{rax:#x}"
            );
        }
    }

    #[test]
    fn non_kernel_callers_get_gp_and_no_effect() {
        for cpl in [1, 2, 3, 4, u8::MAX] {
            for rax in [0, 1, 2, 3, u64::MAX] {
                let (r, out) = call(cpl, rax, 0, 16);
                assert_eq!(r, HypercallOutcome::InjectGp);
                assert!(out.is_empty());
            }
        }
    }

    #[test]
    fn console_write_copies_bytes() {
        let (r, out) = call(0, 2, 0x10, 3);
        assert_eq!(r, HypercallOutcome::Return(3));
        assert_eq!(out, [0x10, 0x11, 0x12]);
        // The maximum, crossing several chunks, ending at the last RAM byte.
        let (r, out) = call(0, 2, (RAM - 4096) as u64, 4096);
        assert_eq!(r, HypercallOutcome::Return(4096));
        assert_eq!(out.len(), 4096);
        assert!(out.iter().enumerate().all(|(i, &b)| b == i as u8));
        // Sizes around the chunk boundary.
        for len in [1u64, 8, 255, 256, 257, 511, 512, 4095] {
            let (r, out) = call(0, 2, 5, len);
            assert_eq!(r, HypercallOutcome::Return(len as i64));
            assert_eq!(out.len() as u64, len);
            assert_eq!(out[0], 5);
        }
    }

    #[test]
    fn console_write_zero_length_touches_nothing() {
        for gpa in [0, RAM as u64, u64::MAX] {
            let (r, out) = call(0, 2, gpa, 0);
            assert_eq!(r, HypercallOutcome::Return(0));
            assert!(out.is_empty());
        }
    }

    #[test]
    fn console_write_rejects_long_lengths() {
        for len in [4097, 0x1_0000, 1 << 32, i64::MAX as u64, u64::MAX] {
            let (r, out) = call(0, 2, 0, len);
            assert_eq!(r, HypercallOutcome::Return(EINVAL), "{len:#x}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn console_write_outside_ram_is_efault_and_writes_nothing() {
        let cases = [
            (RAM as u64, 1),
            (RAM as u64 - 3, 8),
            (RAM as u64 - 4095, 4096),
            (u64::MAX, 1),
            (u64::MAX - 2, 8),
            (u64::MAX - 4094, 4096),
            (1 << 63, 3),
        ];
        for (gpa, len) in cases {
            let (r, out) = call(0, 2, gpa, len);
            assert_eq!(r, HypercallOutcome::Return(EFAULT), "{gpa:#x}+{len}");
            assert!(out.is_empty(), "{gpa:#x}+{len}");
        }
    }

    #[test]
    fn errors_display_their_code() {
        use alloc::string::ToString;
        assert_eq!(
            HypercallError::Inval.to_string(),
            "hypercall argument out of range (-22)"
        );
    }
}
