//! L3 cache allocation: Intel CAT (SDM vol. 3, "Intel Resource Director Technology") and AMD's
//! L3 allocation enforcement (AMD's PQoS extensions), which use the same CPUID leaf and MSRs.
//!
//! - CPUID.(7,0):EBX[15] (PQE) and CPUID.(0x10,0):EBX[1] say the CPU has L3 CAT;
//!   CPUID.(0x10,1): EAX[4:0] is the capacity bitmask's length minus one (the ways a mask may
//!   name), EDX[15:0] the highest class of service (CLOS).
//! - `IA32_L3_QOS_MASK_n` (0xC90 + n) holds CLOS n's way mask (per L3 domain); a mask must be
//!   non-zero and one contiguous run of set bits within the ways (AMD allows gaps; Quercus
//!   asks for contiguous masks everywhere so that a scenario means the same on both).
//! - `IA32_PQR_ASSOC` (0xC8F) bits 63:32 pick the running logical CPU's CLOS (bits 9:0 are the
//!   monitoring RMID, left 0).
//!
//! CLOS 0 is what every CPU uses after reset: the hypervisor's pCPU 0 and every VM without a
//! mask stay there, and its mask becomes the ways no VM asked for ([`default_mask`]), so the
//! masked VMs' ways are theirs alone unless their masks overlap each other's.

use core::fmt;

/// IA32_PQR_ASSOC: the running CPU's CLOS (bits 63:32) and RMID (bits 9:0).
pub const IA32_PQR_ASSOC: u32 = 0xC8F;
/// IA32_L3_QOS_MASK_0; CLOS n's mask is at `IA32_L3_QOS_MASK_0 + n`.
pub const IA32_L3_QOS_MASK_0: u32 = 0xC90;
/// IA32_L3_QOS_CFG (code/data prioritization enable).
pub const IA32_L3_QOS_CFG: u32 = 0xC81;
/// IA32_L2_QOS_CFG.
pub const IA32_L2_QOS_CFG: u32 = 0xC82;
/// The last MSR of the allocation block (L3 masks, L2 masks, memory-bandwidth throttles).
const ALLOCATION_LAST: u32 = 0xDCF;

/// Whether `msr` is one of the resource-allocation MSRs a guest must never write: the QoS
/// configuration registers, IA32_PQR_ASSOC and the L3/L2 mask and bandwidth blocks
/// (0xC90..=0xDCF). A guest that wrote them would take ways from other VMs.
pub fn is_allocation_msr(msr: u32) -> bool {
    matches!(msr, IA32_L3_QOS_CFG | IA32_L2_QOS_CFG | IA32_PQR_ASSOC)
        || (IA32_L3_QOS_MASK_0..=ALLOCATION_LAST).contains(&msr)
}

/// What the CPU's L3 allocation offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L3Cat {
    /// Bits a way mask may have (the capacity bitmask's length).
    pub ways: u8,
    /// Classes of service (CLOS 0 included).
    pub clos: u16,
}

/// Why the CPU offers no L3 allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoCat {
    /// The CPU's highest basic leaf is below 0x10.
    NoLeaf { max_leaf: u32 },
    /// CPUID.(7,0):EBX[15] (resource allocation) is clear.
    NoPqe,
    /// CPUID.(0x10,0):EBX[1] (L3 allocation) is clear.
    NoL3,
    /// Leaf 0x10 subleaf 1 reports no mask bits or no CLOS.
    Empty,
}

impl fmt::Display for NoCat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoCat::NoLeaf { max_leaf } => write!(
                f,
                "the CPU has no CPUID leaf 0x10 (highest basic leaf {max_leaf:#x})"
            ),
            NoCat::NoPqe => f.write_str(
                "CPUID.(7,0):EBX[15] is clear: the CPU has no resource allocation (no CAT)",
            ),
            NoCat::NoL3 => f.write_str("CPUID.(0x10,0):EBX[1] is clear: the CPU has no L3 CAT"),
            NoCat::Empty => f.write_str("CPUID.(0x10,1) reports no ways or no classes of service"),
        }
    }
}

impl L3Cat {
    /// Decodes the CPU's L3 allocation from CPUID, read through `cpuid(leaf, subleaf)`
    /// (EAX, EBX, ECX, EDX); leaf 0x10 is looked at only when leaf 0 and 7 allow it.
    pub fn from_cpuid(cpuid: impl Fn(u32, u32) -> [u32; 4]) -> Result<Self, NoCat> {
        let max_leaf = cpuid(0, 0)[0];
        if max_leaf < 0x10 {
            return Err(NoCat::NoLeaf { max_leaf });
        }
        if cpuid(7, 0)[1] & (1 << 15) == 0 {
            return Err(NoCat::NoPqe);
        }
        if cpuid(0x10, 0)[1] & (1 << 1) == 0 {
            return Err(NoCat::NoL3);
        }
        let [eax, _, _, edx] = cpuid(0x10, 1);
        let ways = (eax & 0x1F) as u8 + 1;
        let clos = (edx & 0xFFFF) as u16;
        if clos == 0 {
            return Err(NoCat::Empty);
        }
        Ok(L3Cat {
            ways,
            clos: clos + 1,
        })
    }

    /// Every way.
    pub fn full_mask(&self) -> u64 {
        full_mask(self.ways)
    }
}

/// The mask with all `ways` bits set.
pub fn full_mask(ways: u8) -> u64 {
    if ways >= 64 {
        u64::MAX
    } else {
        (1u64 << ways) - 1
    }
}

/// What is wrong with a way mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskError {
    Zero,
    NotContiguous { mask: u64 },
    BeyondWays { mask: u64, ways: u8 },
}

impl fmt::Display for MaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskError::Zero => f.write_str("a way mask of 0 gives no cache at all"),
            MaskError::NotContiguous { mask } => write!(
                f,
                "{mask:#x} is not one contiguous run of ways (CAT requires contiguous masks)"
            ),
            MaskError::BeyondWays { mask, ways } => write!(
                f,
                "{mask:#x} names ways beyond the L3's {ways} (at most {:#x})",
                full_mask(*ways)
            ),
        }
    }
}

/// Checks `mask` against an L3 with `ways` ways: non-zero, within the ways, contiguous.
pub fn check_mask(mask: u64, ways: u8) -> Result<(), MaskError> {
    if mask == 0 {
        return Err(MaskError::Zero);
    }
    if mask & !full_mask(ways) != 0 {
        return Err(MaskError::BeyondWays { mask, ways });
    }
    // One run: shifted down to bit 0, mask + 1 is a power of two.
    let run = mask >> mask.trailing_zeros();
    if run & run.wrapping_add(1) != 0 {
        return Err(MaskError::NotContiguous { mask });
    }
    Ok(())
}

/// The CLOS of `masks[i]`: distinct masks get CLOS 1, 2, ... in order of first appearance (CLOS
/// 0 stays the default class); equal masks share one.
pub fn clos_of(masks: &[u64], i: usize) -> u16 {
    let first = masks
        .iter()
        .position(|m| Some(m) == masks.get(i))
        .unwrap_or(i);
    1 + clos_needed(&masks[..first.min(masks.len())])
}

/// Classes of service `masks` need besides CLOS 0.
pub fn clos_needed(masks: &[u64]) -> u16 {
    masks
        .iter()
        .enumerate()
        .filter(|&(j, m)| !masks[..j].contains(m))
        .count() as u16
}

/// CLOS 0's mask: the ways no VM asked for, or every way if the VMs took them all (the
/// configurator warns about that: then CLOS 0 overlaps every VM's mask).
pub fn default_mask(ways: u8, masks: &[u64]) -> u64 {
    let taken = masks.iter().fold(0, |a, m| a | m);
    match full_mask(ways) & !taken {
        0 => full_mask(ways),
        rest => rest,
    }
}

/// A `WRMSR` that may fault: `false` when the CPU raised #GP.
pub trait MsrWriter {
    fn wrmsr(&mut self, msr: u32, value: u64) -> bool;
}

/// Why programming failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramError {
    NoCat(NoCat),
    Mask(MaskError),
    ClosOutOfRange { clos: u16, count: u16 },
    Refused { msr: u32, value: u64 },
}

impl fmt::Display for ProgramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProgramError::NoCat(why) => write!(f, "no cache allocation: {why}"),
            ProgramError::Mask(e) => write!(f, "way mask: {e}"),
            ProgramError::ClosOutOfRange { clos, count } => {
                write!(f, "CLOS {clos} does not exist (the CPU has {count})")
            }
            ProgramError::Refused { msr, value } => {
                write!(f, "WRMSR {msr:#x} <- {value:#x} raised #GP")
            }
        }
    }
}

fn write(w: &mut impl MsrWriter, msr: u32, value: u64) -> Result<(), ProgramError> {
    if w.wrmsr(msr, value) {
        Ok(())
    } else {
        Err(ProgramError::Refused { msr, value })
    }
}

/// Sets CLOS `clos`'s way mask (`IA32_L3_QOS_MASK_clos`), after checking both against `cat`.
pub fn set_mask(
    w: &mut impl MsrWriter,
    cat: &L3Cat,
    clos: u16,
    mask: u64,
) -> Result<(), ProgramError> {
    if clos >= cat.clos {
        return Err(ProgramError::ClosOutOfRange {
            clos,
            count: cat.clos,
        });
    }
    check_mask(mask, cat.ways).map_err(ProgramError::Mask)?;
    write(w, IA32_L3_QOS_MASK_0 + u32::from(clos), mask)
}

/// Puts the running CPU in CLOS `clos` (`IA32_PQR_ASSOC`, RMID 0).
pub fn associate(w: &mut impl MsrWriter, cat: &L3Cat, clos: u16) -> Result<(), ProgramError> {
    if clos >= cat.clos {
        return Err(ProgramError::ClosOutOfRange {
            clos,
            count: cat.clos,
        });
    }
    write(w, IA32_PQR_ASSOC, u64::from(clos) << 32)
}

/// What one pCPU of a VM with a mask does at boot: its CLOS's mask, then its association.
pub fn program_pcpu(
    w: &mut impl MsrWriter,
    cat: &L3Cat,
    clos: u16,
    mask: u64,
) -> Result<(), ProgramError> {
    set_mask(w, cat, clos, mask)?;
    associate(w, cat, clos)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    /// Records writes; refuses the MSRs in `refuse`.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u32, u64)>,
        refuse: Vec<u32>,
    }

    impl MsrWriter for Recorder {
        fn wrmsr(&mut self, msr: u32, value: u64) -> bool {
            if self.refuse.contains(&msr) {
                return false;
            }
            self.writes.push((msr, value));
            true
        }
    }

    const CAT: L3Cat = L3Cat { ways: 12, clos: 16 };

    #[test]
    fn masks_must_be_nonzero_contiguous_and_within_the_ways() {
        for good in [0x1, 0x3, 0xF0, 0xFFF, 0x800, 0x7E] {
            assert_eq!(check_mask(good, 12), Ok(()), "{good:#x}");
        }
        assert_eq!(check_mask(0, 12), Err(MaskError::Zero));
        assert_eq!(
            check_mask(0x1000, 12),
            Err(MaskError::BeyondWays {
                mask: 0x1000,
                ways: 12
            })
        );
        for bad in [0x5, 0xF0F, 0x801, 0x101] {
            assert_eq!(
                check_mask(bad, 12),
                Err(MaskError::NotContiguous { mask: bad }),
                "{bad:#x}"
            );
        }
        assert_eq!(check_mask(u64::MAX, 64), Ok(()));
        assert_eq!(full_mask(12), 0xFFF);
    }

    #[test]
    fn cpuid_is_decoded_and_each_absence_named() {
        let cpu = |max: u32, pqe: bool, l3: bool, eax1: u32, edx1: u32| {
            move |leaf: u32, sub: u32| match (leaf, sub) {
                (0, _) => [max, 0, 0, 0],
                (7, 0) => [0, if pqe { 1 << 15 } else { 0 }, 0, 0],
                (0x10, 0) => [0, if l3 { 1 << 1 } else { 0 }, 0, 0],
                (0x10, 1) => [eax1, 0, 0, edx1],
                _ => [0; 4],
            }
        };
        assert_eq!(
            L3Cat::from_cpuid(cpu(0x16, true, true, 11, 15)),
            Ok(L3Cat { ways: 12, clos: 16 })
        );
        assert_eq!(
            L3Cat::from_cpuid(cpu(0xD, true, true, 11, 15)),
            Err(NoCat::NoLeaf { max_leaf: 0xD })
        );
        assert_eq!(
            L3Cat::from_cpuid(cpu(0x16, false, true, 11, 15)),
            Err(NoCat::NoPqe)
        );
        assert_eq!(
            L3Cat::from_cpuid(cpu(0x16, true, false, 11, 15)),
            Err(NoCat::NoL3)
        );
        assert_eq!(
            L3Cat::from_cpuid(cpu(0x16, true, true, 11, 0)),
            Err(NoCat::Empty)
        );
    }

    #[test]
    fn distinct_masks_get_their_own_clos_from_1() {
        let masks = [0xF00, 0x0F0, 0xF00, 0x00F, 0x0F0];
        let clos: Vec<u16> = (0..masks.len()).map(|i| clos_of(&masks, i)).collect();
        assert_eq!(clos, [1, 2, 1, 3, 2]);
        assert_eq!(clos_needed(&masks), 3);
        assert_eq!(
            default_mask(12, &masks),
            0xFFF,
            "every way taken: CLOS 0 keeps them all"
        );
        // No way is left: CLOS 0 keeps them all.
        assert_eq!(default_mask(12, &[0xFFF]), 0xFFF);
        assert_eq!(default_mask(12, &[0xF00, 0x0F0]), 0x00F);
    }

    #[test]
    fn a_pcpu_gets_its_mask_then_its_association() {
        let mut w = Recorder::default();
        assert_eq!(program_pcpu(&mut w, &CAT, 2, 0xF0), Ok(()));
        assert_eq!(w.writes, [(0xC92, 0xF0), (0xC8F, 2u64 << 32)]);
    }

    #[test]
    fn bad_requests_write_nothing_and_refusals_are_reported() {
        let mut w = Recorder::default();
        assert_eq!(
            program_pcpu(&mut w, &CAT, 16, 0xF0),
            Err(ProgramError::ClosOutOfRange {
                clos: 16,
                count: 16
            })
        );
        assert_eq!(
            program_pcpu(&mut w, &CAT, 1, 0x505),
            Err(ProgramError::Mask(MaskError::NotContiguous { mask: 0x505 }))
        );
        assert!(w.writes.is_empty());
        let mut w = Recorder {
            refuse: std::vec![IA32_PQR_ASSOC],
            ..Recorder::default()
        };
        assert_eq!(
            program_pcpu(&mut w, &CAT, 1, 0xF),
            Err(ProgramError::Refused {
                msr: 0xC8F,
                value: 1 << 32
            })
        );
        assert_eq!(w.writes, [(0xC91, 0xF)]);
    }

    #[test]
    fn the_allocation_msrs_are_recognized() {
        for msr in [0xC81, 0xC82, 0xC8F, 0xC90, 0xC9F, 0xD10, 0xD50, 0xDCF] {
            assert!(is_allocation_msr(msr), "{msr:#x}");
        }
        for msr in [0xC80, 0xC8D, 0xC8E, 0xDD0, 0x1B, 0x6E0] {
            assert!(!is_allocation_msr(msr), "{msr:#x}");
        }
    }
}
