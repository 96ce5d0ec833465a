//! Guest-virtual to guest-physical translation through the guest's own page
//! tables, read from guest RAM: paging off, 32-bit (4 KiB and 4 MiB pages),
//! PAE (4 KiB and 2 MiB) and 4-level long mode (4 KiB, 2 MiB and 1 GiB).
//!
//! Only presence and reserved bits are checked, not access rights: the walk
//! answers "which byte did the guest mean", the hardware already decided
//! the access was allowed. Accessed/dirty bits are not set. The physical
//! address width is taken as the architectural maximum (52 bits), so only
//! the bits reserved at every width are checked.
//!
//! Levels are numbered as the architecture does: 4 = PML4, 3 = PDPT,
//! 2 = page directory, 1 = page table.

use core::fmt;

use vcpu::{GuestMemory, SystemState};

const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

const P: u64 = 1 << 0;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;
/// Physical-address bits 51:12 of a PAE/long-mode entry.
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// Bits 62:52, reserved in PAE entries (ignored in long mode).
const PAE_HIGH_RESERVED: u64 = 0x7FF0_0000_0000_0000;
/// Reserved bits of a PAE PDPTE besides the high ones: 2:1 and 8:5.
const PDPTE_RESERVED: u64 = 0b1_1110_0110;
/// Bits 20:13 of a 2 MiB leaf, bits 29:13 of a 1 GiB leaf: must be zero.
const RESERVED_2M: u64 = 0x001F_E000;
const RESERVED_1G: u64 = 0x3FFF_E000;
/// Bit 21 of a 4 MiB (PSE) leaf.
const RESERVED_4M: u64 = 1 << 21;

/// Which translation the guest's control registers select.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG clear: linear = physical (32-bit).
    Off,
    /// CR0.PG, no PAE: two levels of 32-bit entries.
    Legacy32,
    /// CR0.PG and CR4.PAE, EFER.LMA clear: three levels of 64-bit entries.
    Pae,
    /// Long mode: four levels.
    Long4,
}

/// Why a guest-virtual address has no translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The entry at `level` has P clear (the guest would take #PF).
    NotPresent { level: u8, va: u64 },
    /// The entry at `level` has a reserved bit set (the guest would take
    /// #PF with RSVD).
    Reserved { level: u8, va: u64, entry: u64 },
    /// A long-mode address whose bits 63:47 are not all equal.
    NonCanonical { va: u64 },
    /// The table holding the entry for `level` lies outside guest RAM
    /// (e.g. CR3 points past the end).
    TableOutsideRam { level: u8, gpa: u64 },
    /// 5-level paging (CR4.LA57), not handled.
    FiveLevel,
    /// A control-register combination no CPU runs with.
    InvalidMode { cr0: u64, cr4: u64, efer: u64 },
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::NotPresent { level, va } => {
                write!(f, "{va:#x}: level-{level} entry not present")
            }
            WalkError::Reserved { level, va, entry } => {
                write!(
                    f,
                    "{va:#x}: level-{level} entry {entry:#x} has reserved bits set"
                )
            }
            WalkError::NonCanonical { va } => write!(f, "{va:#x} is not canonical"),
            WalkError::TableOutsideRam { level, gpa } => {
                write!(
                    f,
                    "level-{level} table entry at {gpa:#x} is outside guest RAM"
                )
            }
            WalkError::FiveLevel => write!(f, "5-level paging is not supported"),
            WalkError::InvalidMode { cr0, cr4, efer } => write!(
                f,
                "invalid paging state CR0={cr0:#x} CR4={cr4:#x} EFER={efer:#x}"
            ),
        }
    }
}

impl core::error::Error for WalkError {}

/// The paging mode `sys` selects.
pub fn paging_mode(sys: &SystemState) -> Result<PagingMode, WalkError> {
    let pg = sys.cr0 & CR0_PG != 0;
    let pae = sys.cr4 & CR4_PAE != 0;
    let lma = sys.efer & EFER_LMA != 0;
    match (pg, pae, lma) {
        (false, _, false) => Ok(PagingMode::Off),
        (true, false, false) => Ok(PagingMode::Legacy32),
        (true, true, false) => Ok(PagingMode::Pae),
        (true, true, true) if sys.cr4 & CR4_LA57 != 0 => Err(WalkError::FiveLevel),
        (true, true, true) => Ok(PagingMode::Long4),
        _ => Err(WalkError::InvalidMode {
            cr0: sys.cr0,
            cr4: sys.cr4,
            efer: sys.efer,
        }),
    }
}

/// Translates the linear address `va` as the guest's paging would.
/// Outside long mode only the low 32 bits of `va` count.
pub fn translate(mem: &impl GuestMemory, sys: &SystemState, va: u64) -> Result<u64, WalkError> {
    match paging_mode(sys)? {
        PagingMode::Off => Ok(va & 0xFFFF_FFFF),
        PagingMode::Legacy32 => walk32(mem, sys, va & 0xFFFF_FFFF),
        PagingMode::Pae => walk_pae(mem, sys, va & 0xFFFF_FFFF),
        PagingMode::Long4 => walk_long(mem, sys, va),
    }
}

fn read64(mem: &impl GuestMemory, level: u8, gpa: u64) -> Result<u64, WalkError> {
    mem.read_u64(gpa)
        .map_err(|_| WalkError::TableOutsideRam { level, gpa })
}

/// Index bits of `va` for the table at `level` of a 9-bit-per-level walk.
fn index9(va: u64, level: u8) -> u64 {
    (va >> (12 + 9 * (u32::from(level) - 1))) & 0x1FF
}

/// Checks presence and `reserved` bits of `entry`.
fn check(entry: u64, level: u8, va: u64, reserved: u64) -> Result<u64, WalkError> {
    if entry & P == 0 {
        return Err(WalkError::NotPresent { level, va });
    }
    if entry & reserved != 0 {
        return Err(WalkError::Reserved { level, va, entry });
    }
    Ok(entry)
}

fn nx_reserved(sys: &SystemState) -> u64 {
    if sys.efer & EFER_NXE != 0 {
        0
    } else {
        NX
    }
}

fn walk32(mem: &impl GuestMemory, sys: &SystemState, va: u64) -> Result<u64, WalkError> {
    let pde_gpa = (sys.cr3 & 0xFFFF_F000) + ((va >> 22) << 2);
    let pde = mem
        .read_u32(pde_gpa)
        .map_err(|_| WalkError::TableOutsideRam {
            level: 2,
            gpa: pde_gpa,
        })?;
    let pde = u64::from(pde);
    if pde & PS != 0 && sys.cr4 & CR4_PSE != 0 {
        let pde = check(pde, 2, va, RESERVED_4M)?;
        // PSE-36: PDE bits 20:13 hold physical-address bits 39:32.
        let high = ((pde >> 13) & 0xFF) << 32;
        return Ok(high | (pde & 0xFFC0_0000) | (va & 0x3F_FFFF));
    }
    let pde = check(pde, 2, va, 0)?;
    let pte_gpa = (pde & 0xFFFF_F000) + (((va >> 12) & 0x3FF) << 2);
    let pte = mem
        .read_u32(pte_gpa)
        .map_err(|_| WalkError::TableOutsideRam {
            level: 1,
            gpa: pte_gpa,
        })?;
    let pte = check(u64::from(pte), 1, va, 0)?;
    Ok((pte & 0xFFFF_F000) | (va & 0xFFF))
}

fn walk_pae(mem: &impl GuestMemory, sys: &SystemState, va: u64) -> Result<u64, WalkError> {
    let nx = nx_reserved(sys);
    let pdpte_gpa = (sys.cr3 & 0xFFFF_FFE0) + ((va >> 30) << 3);
    let pdpte = read64(mem, 3, pdpte_gpa)?;
    let pdpte = check(pdpte, 3, va, PDPTE_RESERVED | PAE_HIGH_RESERVED | NX)?;
    let pde_gpa = (pdpte & ADDR_MASK) + (index9(va, 2) << 3);
    let pde = read64(mem, 2, pde_gpa)?;
    if pde & P != 0 && pde & PS != 0 {
        let pde = check(pde, 2, va, RESERVED_2M | PAE_HIGH_RESERVED | nx)?;
        return Ok((pde & ADDR_MASK & !0x1F_FFFF) | (va & 0x1F_FFFF));
    }
    let pde = check(pde, 2, va, PAE_HIGH_RESERVED | nx)?;
    let pte_gpa = (pde & ADDR_MASK) + (index9(va, 1) << 3);
    let pte = check(read64(mem, 1, pte_gpa)?, 1, va, PAE_HIGH_RESERVED | nx)?;
    Ok((pte & ADDR_MASK) | (va & 0xFFF))
}

fn walk_long(mem: &impl GuestMemory, sys: &SystemState, va: u64) -> Result<u64, WalkError> {
    // Bits 63:47 must all equal bit 47.
    let top = (va as i64) >> 47;
    if top != 0 && top != -1 {
        return Err(WalkError::NonCanonical { va });
    }
    let nx = nx_reserved(sys);
    let mut table = sys.cr3 & ADDR_MASK;
    for level in (1..=4u8).rev() {
        let entry_gpa = table + (index9(va, level) << 3);
        let entry = read64(mem, level, entry_gpa)?;
        let large = entry & PS != 0;
        let reserved = nx
            | match level {
                4 => PS,
                3 if large => RESERVED_1G,
                2 if large => RESERVED_2M,
                _ => 0,
            };
        let entry = check(entry, level, va, reserved)?;
        let page_bits = match level {
            3 if large => 30,
            2 if large => 21,
            1 => 12,
            _ => {
                table = entry & ADDR_MASK;
                continue;
            }
        };
        let offset_mask = (1u64 << page_bits) - 1;
        return Ok((entry & ADDR_MASK & !offset_mask) | (va & offset_mask));
    }
    // The level-1 arm always returns.
    Err(WalkError::NotPresent { level: 1, va })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use vcpu::VecMemory;

    pub(crate) const PG: u64 = CR0_PG | 1;

    pub(crate) fn long_mode(cr3: u64) -> SystemState {
        SystemState {
            cr0: PG,
            cr3,
            cr4: CR4_PAE,
            efer: EFER_LMA | (1 << 8) | EFER_NXE,
            ..Default::default()
        }
    }

    /// 4-level tables at 0x1000 (PML4), 0x2000 (PDPT), 0x3000 (PD), 0x4000 (PT):
    /// VA 0x0040_0000+n*4K -> 0x10_0000+n*4K (4 KiB, n < 2),
    /// VA 0x0060_0000 -> 0x20_0000 (2 MiB), VA 0x4000_0000 -> 0x4000_0000 (1 GiB),
    /// VA 0xFFFF_8000_0000_0000 -> PML4[256] not present.
    pub(crate) fn long_tables(mem: &mut VecMemory) {
        let w = |m: &mut VecMemory, gpa: u64, v: u64| m.write_u64(gpa, v).unwrap();
        w(mem, 0x1000, 0x2000 | 3);
        w(mem, 0x2000, 0x3000 | 3);
        w(mem, 0x2000 + 8, 0x4000_0000 | PS | 3);
        w(mem, 0x3000 + 2 * 8, 0x4000 | 3);
        w(mem, 0x3000 + 3 * 8, 0x20_0000 | PS | 3 | NX);
        w(mem, 0x4000, 0x10_0000 | 3);
        w(mem, 0x4000 + 8, 0x10_1000 | 3);
    }

    #[test]
    fn paging_off_is_identity_in_32_bits() {
        let mem = VecMemory::new(0x1000);
        let sys = SystemState::default();
        assert_eq!(translate(&mem, &sys, 0x1234_5678), Ok(0x1234_5678));
        assert_eq!(translate(&mem, &sys, 0x1_0000_0010), Ok(0x10));
    }

    #[test]
    fn long_mode_pages() {
        let mut mem = VecMemory::new(0x8000);
        long_tables(&mut mem);
        let sys = long_mode(0x1000);
        assert_eq!(translate(&mem, &sys, 0x40_0123), Ok(0x10_0123));
        assert_eq!(translate(&mem, &sys, 0x40_1FFF), Ok(0x10_1FFF));
        assert_eq!(
            translate(&mem, &sys, 0x40_2000),
            Err(WalkError::NotPresent {
                level: 1,
                va: 0x40_2000
            })
        );
        assert_eq!(
            translate(&mem, &sys, 0x7F_FFFF),
            Ok(0x3F_FFFF),
            "2 MiB page"
        );
        assert_eq!(
            translate(&mem, &sys, 0x4123_4567),
            Ok(0x4123_4567),
            "1 GiB page"
        );
        assert_eq!(
            translate(&mem, &sys, 0x8000_0000),
            Err(WalkError::NotPresent {
                level: 3,
                va: 0x8000_0000
            })
        );
        assert_eq!(
            translate(&mem, &sys, 0xFFFF_8000_0000_0000),
            Err(WalkError::NotPresent {
                level: 4,
                va: 0xFFFF_8000_0000_0000
            })
        );
        assert_eq!(
            translate(&mem, &sys, 0x0000_8000_0000_0000),
            Err(WalkError::NonCanonical {
                va: 0x0000_8000_0000_0000
            })
        );
        // CR3 low bits (PCID, PWT/PCD) are not part of the table address.
        assert_eq!(
            translate(&mem, &long_mode(0x1000 | 0x18), 0x40_0000),
            Ok(0x10_0000)
        );
    }

    #[test]
    fn long_mode_reserved_bits() {
        let mut mem = VecMemory::new(0x8000);
        long_tables(&mut mem);
        // NX used while EFER.NXE is clear.
        let mut sys = long_mode(0x1000);
        sys.efer &= !EFER_NXE;
        assert!(matches!(
            translate(&mem, &sys, 0x60_0000),
            Err(WalkError::Reserved { level: 2, .. })
        ));
        // PS in a PML4 entry; a misaligned 1 GiB page; a misaligned 2 MiB page.
        let sys = long_mode(0x1000);
        let mut bad = VecMemory(mem.0.clone());
        bad.write_u64(0x1000, 0x2000 | PS | 3).unwrap();
        assert!(matches!(
            translate(&bad, &sys, 0),
            Err(WalkError::Reserved { level: 4, .. })
        ));
        let mut bad = VecMemory(mem.0.clone());
        bad.write_u64(0x2008, 0x4000_0000 | 0x10_0000 | PS | 3)
            .unwrap();
        assert!(matches!(
            translate(&bad, &sys, 0x4000_0000),
            Err(WalkError::Reserved { level: 3, .. })
        ));
        let mut bad = VecMemory(mem.0.clone());
        bad.write_u64(0x3018, 0x20_0000 | 0x2000 | PS | 3).unwrap();
        assert!(matches!(
            translate(&bad, &sys, 0x60_0000),
            Err(WalkError::Reserved { level: 2, .. })
        ));
    }

    #[test]
    fn tables_outside_ram() {
        let mut mem = VecMemory::new(0x8000);
        long_tables(&mut mem);
        assert_eq!(
            translate(&mem, &long_mode(0xFFFF_F000), 0),
            Err(WalkError::TableOutsideRam {
                level: 4,
                gpa: 0xFFFF_F000
            })
        );
        assert!(matches!(
            translate(&mem, &long_mode(0x000F_FFFF_FFFF_F000), u64::MAX),
            Err(WalkError::TableOutsideRam { level: 4, .. })
        ));
        // A PDE pointing past RAM.
        mem.write_u64(0x3010, 0x1_0000_0000 | 3).unwrap();
        assert_eq!(
            translate(&mem, &long_mode(0x1000), 0x40_0000),
            Err(WalkError::TableOutsideRam {
                level: 1,
                gpa: 0x1_0000_0000
            })
        );
    }

    #[test]
    fn legacy_32_bit_pages() {
        let mut mem = VecMemory::new(0x8000);
        // PD at 0x1000: PDE[1] -> PT at 0x2000, PDE[2] 4 MiB page at 0x0080_0000,
        // PDE[3] 4 MiB page with PSE-36 bits (physical 0x3_00C0_0000).
        mem.write_u32(0x1000 + 4, 0x2000 | 3).unwrap();
        mem.write_u32(0x1000 + 8, 0x0080_0000 | PS as u32 | 3)
            .unwrap();
        mem.write_u32(0x1000 + 12, 0x00C0_0000 | (3 << 13) | PS as u32 | 3)
            .unwrap();
        mem.write_u32(0x2000 + 5 * 4, 0x0007_7000 | 3).unwrap();
        let mut sys = SystemState {
            cr0: PG,
            cr3: 0x1000,
            cr4: CR4_PSE,
            ..Default::default()
        };
        assert_eq!(translate(&mem, &sys, 0x0040_5ABC), Ok(0x7_7ABC));
        assert_eq!(
            translate(&mem, &sys, 0x0093_4567),
            Ok(0x0093_4567),
            "4 MiB page"
        );
        assert_eq!(
            translate(&mem, &sys, 0x00C0_0001),
            Ok(0x3_00C0_0001),
            "PSE-36"
        );
        assert_eq!(
            translate(&mem, &sys, 0x0040_6000),
            Err(WalkError::NotPresent {
                level: 1,
                va: 0x40_6000
            })
        );
        assert_eq!(
            translate(&mem, &sys, 0x0100_0000),
            Err(WalkError::NotPresent {
                level: 2,
                va: 0x100_0000
            })
        );
        // Without CR4.PSE the PS bit is ignored: PDE[2] points at a table at
        // 0x80_0000, outside this RAM.
        sys.cr4 = 0;
        assert!(matches!(
            translate(&mem, &sys, 0x0080_0000),
            Err(WalkError::TableOutsideRam { level: 1, .. })
        ));
        // Bit 21 of a 4 MiB entry is reserved.
        sys.cr4 = CR4_PSE;
        mem.write_u32(0x1008, 0x0080_0000 | (1 << 21) | PS as u32 | 3)
            .unwrap();
        assert!(matches!(
            translate(&mem, &sys, 0x0080_0000),
            Err(WalkError::Reserved { level: 2, .. })
        ));
    }

    #[test]
    fn pae_pages() {
        let mut mem = VecMemory::new(0x8000);
        // PDPT at 0x1020 (32-byte aligned, not page aligned).
        mem.write_u64(0x1020, 0x2000 | 1).unwrap();
        mem.write_u64(0x1028 + 8, 0x3000 | 1).unwrap(); // PDPTE[2]
        mem.write_u64(0x2000 + 8, 0x4000 | 3).unwrap(); // PDE[1] -> PT
        mem.write_u64(0x2000 + 16, 0x1_0060_0000 | PS | 3).unwrap(); // PDE[2] 2 MiB
        mem.write_u64(0x4000 + 3 * 8, 0x0009_9000 | 3).unwrap();
        let mut sys = SystemState {
            cr0: PG,
            cr3: 0x1020,
            cr4: CR4_PAE,
            ..Default::default()
        };
        assert_eq!(translate(&mem, &sys, 0x0020_3123), Ok(0x9_9123));
        assert_eq!(
            translate(&mem, &sys, 0x0045_6789),
            Ok(0x1_0065_6789),
            "2 MiB page"
        );
        assert_eq!(
            translate(&mem, &sys, 0x4000_0000),
            Err(WalkError::NotPresent {
                level: 3,
                va: 0x4000_0000
            })
        );
        assert_eq!(
            translate(&mem, &sys, 0x8000_0000),
            Err(WalkError::NotPresent {
                level: 2,
                va: 0x8000_0000
            })
        );
        // Only 32 bits of the address count.
        assert_eq!(translate(&mem, &sys, 0xFFFF_0000_0020_3123), Ok(0x9_9123));
        // PDPTE reserved bit 1; NX without EFER.NXE.
        mem.write_u64(0x1020, 0x2000 | 2 | 1).unwrap();
        assert!(matches!(
            translate(&mem, &sys, 0),
            Err(WalkError::Reserved { level: 3, .. })
        ));
        mem.write_u64(0x1020, 0x2000 | 1).unwrap();
        mem.write_u64(0x2010, 0x60_0000 | NX | PS | 3).unwrap();
        assert!(matches!(
            translate(&mem, &sys, 0x40_0000),
            Err(WalkError::Reserved { level: 2, .. })
        ));
        sys.efer = EFER_NXE;
        assert_eq!(translate(&mem, &sys, 0x40_0000), Ok(0x60_0000));
    }

    #[test]
    fn odd_modes() {
        let mem = VecMemory::new(0x1000);
        let mut sys = long_mode(0);
        sys.cr4 |= CR4_LA57;
        assert_eq!(translate(&mem, &sys, 0), Err(WalkError::FiveLevel));
        let sys = SystemState {
            cr0: PG,
            efer: EFER_LMA,
            ..Default::default()
        };
        assert!(matches!(
            translate(&mem, &sys, 0),
            Err(WalkError::InvalidMode { .. })
        ));
        let sys = SystemState {
            efer: EFER_LMA,
            ..Default::default()
        };
        assert!(matches!(
            translate(&mem, &sys, 0),
            Err(WalkError::InvalidMode { .. })
        ));
    }
}
