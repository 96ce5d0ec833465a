//! Instruction fetch: up to 15 bytes at CS.base + RIP through the guest's
//! paging, each page translated separately.

use core::fmt;

use vcpu::{GuestMemory, SystemState};

use crate::walk::{translate, WalkError};

/// The longest x86 instruction.
pub const MAX_INSTRUCTION_LEN: usize = 15;
const PAGE: u64 = 4096;

/// Why not a single instruction byte could be fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// The first byte's page has no translation.
    Walk(WalkError),
    /// The first byte translates to guest-physical memory that is not RAM
    /// (the guest runs code from a device, or past the end of RAM).
    NotRam { gpa: u64 },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Walk(e) => write!(f, "instruction fetch: {e}"),
            FetchError::NotRam { gpa } => {
                write!(f, "instruction fetch: {gpa:#x} is not guest RAM")
            }
        }
    }
}

impl core::error::Error for FetchError {}

/// The linear address of the instruction at `rip`: CS.base is ignored in
/// 64-bit mode; elsewhere the address wraps at 4 GiB.
pub fn linear_rip(sys: &SystemState, rip: u64) -> u64 {
    if sys.long_mode_64() {
        rip
    } else {
        sys.cs.base.wrapping_add(rip) & 0xFFFF_FFFF
    }
}

/// Reads up to [`MAX_INSTRUCTION_LEN`] bytes of the instruction at `rip`.
/// Returns the bytes and how many are valid: fewer than 15 when a later page
/// is unmapped or not RAM (the decoder then decides whether the instruction
/// fits). Fails only when not even the first byte can be read.
pub fn fetch(
    mem: &impl GuestMemory,
    sys: &SystemState,
    rip: u64,
) -> Result<([u8; MAX_INSTRUCTION_LEN], usize), FetchError> {
    let start = linear_rip(sys, rip);
    let wrap = if sys.long_mode_64() {
        u64::MAX
    } else {
        0xFFFF_FFFF
    };
    let mut buf = [0u8; MAX_INSTRUCTION_LEN];
    let mut got = 0;
    while got < MAX_INSTRUCTION_LEN {
        let la = start.wrapping_add(got as u64) & wrap;
        let gpa = match translate(mem, sys, la) {
            Ok(gpa) => gpa,
            Err(e) if got == 0 => return Err(FetchError::Walk(e)),
            Err(_) => break,
        };
        let in_page = PAGE - (la % PAGE);
        let in_ram = mem.layout().bytes_from(gpa);
        let want = (MAX_INSTRUCTION_LEN - got) as u64;
        // At most 15, so the cast cannot truncate.
        let n = want.min(in_page).min(in_ram) as usize;
        if n == 0 || mem.read(gpa, &mut buf[got..got + n]).is_err() {
            if got == 0 {
                return Err(FetchError::NotRam { gpa });
            }
            break;
        }
        got += n;
        if (n as u64) < want.min(in_page) {
            break; // RAM ended inside the page
        }
    }
    Ok((buf, got))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walk::tests::{long_mode, long_tables};
    use vcpu::{SegmentState, VecMemory};

    fn long64(cr3: u64) -> SystemState {
        let mut sys = long_mode(cr3);
        sys.cs.attrib = 0xA9B;
        sys
    }

    #[test]
    fn crosses_a_page_boundary_through_separate_translations() {
        let mut mem = VecMemory::new(0x20_0000);
        long_tables(&mut mem);
        // VA 0x40_0FFA..0x40_1000 -> 0x10_0FFA; VA 0x40_1000.. -> 0x10_1000 (adjacent
        // here); remap the second page elsewhere to prove the split.
        mem.write_u64(0x4008, 0x1F_F000 | 3).unwrap();
        mem.0[0x10_0FFA..0x10_1000].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        mem.0[0x1F_F000..0x1F_F009].copy_from_slice(&[7, 8, 9, 10, 11, 12, 13, 14, 15]);
        let (bytes, n) = fetch(&mem, &long64(0x1000), 0x40_0FFA).unwrap();
        assert_eq!(n, 15);
        assert_eq!(bytes, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
    }

    #[test]
    fn stops_at_an_unmapped_second_page() {
        let mut mem = VecMemory::new(0x20_0000);
        long_tables(&mut mem);
        mem.0[0x10_1FFD..0x10_2000].copy_from_slice(&[0x8B, 0x03, 0x90]);
        // VA 0x40_2000 is not present.
        let (bytes, n) = fetch(&mem, &long64(0x1000), 0x40_1FFD).unwrap();
        assert_eq!((n, &bytes[..3]), (3, &[0x8B, 0x03, 0x90][..]));
        assert_eq!(
            fetch(&mem, &long64(0x1000), 0x40_2000),
            Err(FetchError::Walk(WalkError::NotPresent {
                level: 1,
                va: 0x40_2000
            }))
        );
    }

    #[test]
    fn rip_at_the_end_of_ram() {
        let mut mem = VecMemory::new(0x1_0000);
        mem.0[0xFFFE..].copy_from_slice(&[0x89, 0x0A]);
        let sys = SystemState {
            cs: SegmentState {
                attrib: 0xC9B,
                ..Default::default()
            },
            ..Default::default()
        };
        let (bytes, n) = fetch(&mem, &sys, 0xFFFE).unwrap();
        assert_eq!((n, bytes[0], bytes[1]), (2, 0x89, 0x0A));
        assert_eq!(
            fetch(&mem, &sys, 0x1_0000),
            Err(FetchError::NotRam { gpa: 0x1_0000 })
        );
        assert_eq!(
            fetch(&mem, &sys, u64::MAX),
            Err(FetchError::NotRam { gpa: 0xFFFF_FFFF })
        );
    }

    #[test]
    fn segment_base_and_wrap_outside_64_bit_mode() {
        let mut mem = VecMemory::new(0x2_0000);
        mem.0[0x1_2345] = 0xAA;
        let sys = SystemState {
            cs: SegmentState {
                base: 0x1_0000,
                ..Default::default()
            },
            ..Default::default()
        };
        let (bytes, n) = fetch(&mem, &sys, 0x2345).unwrap();
        assert_eq!((bytes[0], n), (0xAA, 15));
        // In 64-bit mode CS.base does not count.
        let mut mem = VecMemory::new(0x20_0000);
        long_tables(&mut mem);
        mem.0[0x10_0000] = 0xAB;
        let mut sys = long64(0x1000);
        sys.cs.base = 0x1000;
        assert_eq!(fetch(&mem, &sys, 0x40_0000).unwrap().0[0], 0xAB);
        // Linear addresses wrap at 4 GiB outside long mode.
        let mut mem = VecMemory::new(0x1000);
        mem.0[..4].copy_from_slice(&[1, 2, 3, 4]);
        let sys = SystemState {
            cs: SegmentState {
                base: 0xFFFF_FFF0,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(linear_rip(&sys, 0x10), 0);
        assert_eq!(fetch(&mem, &sys, 0x10).unwrap().0[..4], [1, 2, 3, 4]);
    }

    #[test]
    fn cr3_outside_ram() {
        let mem = VecMemory::new(0x1_0000);
        assert_eq!(
            fetch(&mem, &long64(0x8000_0000), 0x40_0000),
            Err(FetchError::Walk(WalkError::TableOutsideRam {
                level: 4,
                gpa: 0x8000_0000
            }))
        );
    }
}
