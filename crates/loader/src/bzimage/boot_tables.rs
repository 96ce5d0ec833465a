//! The two structures a vCPU needs in guest RAM to start in 64-bit mode:
//! identity-mapping page tables (2 MiB pages) and a flat GDT with the
//! selectors the Linux boot protocol names (`__BOOT_CS` = 0x10,
//! `__BOOT_DS` = 0x18).
//!
//! Each builder checks its whole target range before writing, then writes
//! it in one piece.

use alloc::vec;
use core::fmt;

use vcpu::{GuestMemError, GuestMemory};

/// Code segment selector of the boot GDT (64-bit, execute/read).
pub const BOOT_CS: u16 = 0x10;
/// Data segment selector of the boot GDT (read/write, 4 GiB flat).
pub const BOOT_DS: u16 = 0x18;
/// Bytes of the boot GDT: null, unused, code, data.
pub const BOOT_GDT_LEN: u64 = 4 * 8;
/// Most bytes one PML4 entry's tables can map (512 GiB).
pub const MAX_IDENTITY_MAP: u64 = 512 << 30;

const PAGE: u64 = 0x1000;
const HUGE_PAGE: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
/// Page table entry bits: present, writable, 2 MiB page (in a PD).
const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_HUGE: u64 = 1 << 7;

/// Descriptors (accessed bits preset so the CPU never writes the table).
/// Code: base 0, limit 0xFFFFF pages, P, DPL 0, S, type 0xB, L=1, D=0, G=1.
const GDT_CODE64: u64 = 0x00AF_9B00_0000_FFFF;
/// Data: base 0, limit 0xFFFFF pages, P, DPL 0, S, type 0x3, D/B=1, G=1.
const GDT_DATA: u64 = 0x00CF_9300_0000_FFFF;

/// Base and limit to load into GDTR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gdtr {
    pub base: u64,
    pub limit: u16,
}

/// Why a boot structure cannot be built where asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootTablesError {
    /// The address is not aligned as the structure needs.
    Misaligned { gpa: u64, align: u64 },
    /// The structure would end past guest RAM (or past 2^64).
    OutsideRam { gpa: u64, len: u64, ram_size: u64 },
    /// Nothing to map, or more than one PML4 entry covers.
    BadMapSize { map_bytes: u64, max: u64 },
    /// Guest RAM refused a write the checks had allowed.
    Memory(GuestMemError),
}

impl fmt::Display for BootTablesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BootTablesError::Misaligned { gpa, align } => {
                write!(f, "address {gpa:#x} is not {align:#x}-byte aligned")
            }
            BootTablesError::OutsideRam { gpa, len, ram_size } => write!(
                f,
                "{len:#x} bytes at {gpa:#x} do not fit in guest RAM of {ram_size:#x} bytes"
            ),
            BootTablesError::BadMapSize { map_bytes, max } => write!(
                f,
                "cannot identity-map {map_bytes:#x} bytes: the size must be between 1 and {max:#x}"
            ),
            BootTablesError::Memory(e) => write!(f, "writing boot tables failed: {e}"),
        }
    }
}

impl core::error::Error for BootTablesError {}

/// Bytes of page tables [`build_identity_page_tables`] writes for
/// `map_bytes`: one PML4, one PDPT and one PD per GiB (6 pages for 4 GiB).
pub fn identity_page_tables_len(map_bytes: u64) -> Result<u64, BootTablesError> {
    if map_bytes == 0 || map_bytes > MAX_IDENTITY_MAP {
        return Err(BootTablesError::BadMapSize {
            map_bytes,
            max: MAX_IDENTITY_MAP,
        });
    }
    Ok((2 + map_bytes.div_ceil(GIB)) * PAGE)
}

/// Checks that `len` bytes at `gpa`, aligned to `align`, fit in `ram_size`.
fn check_range(gpa: u64, len: u64, align: u64, ram_size: u64) -> Result<(), BootTablesError> {
    if gpa % align != 0 {
        return Err(BootTablesError::Misaligned { gpa, align });
    }
    match gpa.checked_add(len) {
        Some(end) if end <= ram_size => Ok(()),
        _ => Err(BootTablesError::OutsideRam { gpa, len, ram_size }),
    }
}

/// Checks what [`build_identity_page_tables`] would reject; returns the
/// bytes it would write.
pub(crate) fn check_identity_page_tables(
    ram_size: u64,
    at_gpa: u64,
    map_bytes: u64,
) -> Result<u64, BootTablesError> {
    let len = identity_page_tables_len(map_bytes)?;
    check_range(at_gpa, len, PAGE, ram_size)?;
    Ok(len)
}

/// Writes page tables at `at_gpa` (4 KiB aligned) that map guest-physical
/// `0..map_bytes` (rounded up to 2 MiB) to the same linear addresses,
/// writable, with 2 MiB pages: PML4 at `at_gpa`, PDPT at `at_gpa + 4 KiB`,
/// the PDs after it. Returns the CR3 value (`at_gpa`). Nothing is written
/// unless the whole range fits in RAM.
pub fn build_identity_page_tables(
    mem: &mut impl GuestMemory,
    at_gpa: u64,
    map_bytes: u64,
) -> Result<u64, BootTablesError> {
    let len = check_identity_page_tables(mem.size(), at_gpa, map_bytes)?;
    // len <= 514 pages, so the cast cannot truncate.
    let mut tables = vec![0u8; len as usize];
    let pdpt = at_gpa + PAGE;
    let first_pd = at_gpa + 2 * PAGE;
    let entry = |t: &mut [u8], table: u64, index: u64, value: u64| {
        let off = (table * PAGE + index * 8) as usize;
        t[off..off + 8].copy_from_slice(&value.to_le_bytes());
    };
    entry(&mut tables, 0, 0, pdpt | PTE_PRESENT | PTE_WRITABLE);
    let huge_pages = map_bytes.div_ceil(HUGE_PAGE);
    for pd in 0..map_bytes.div_ceil(GIB) {
        entry(
            &mut tables,
            1,
            pd,
            (first_pd + pd * PAGE) | PTE_PRESENT | PTE_WRITABLE,
        );
    }
    for page in 0..huge_pages {
        let (pd, index) = (page / 512, page % 512);
        entry(
            &mut tables,
            2 + pd,
            index,
            (page * HUGE_PAGE) | PTE_PRESENT | PTE_WRITABLE | PTE_HUGE,
        );
    }
    mem.write(at_gpa, &tables)
        .map_err(BootTablesError::Memory)?;
    Ok(at_gpa)
}

/// Checks what [`build_boot_gdt`] would reject.
pub(crate) fn check_boot_gdt(ram_size: u64, at_gpa: u64) -> Result<(), BootTablesError> {
    check_range(at_gpa, BOOT_GDT_LEN, 8, ram_size)
}

/// Writes the boot GDT at `at_gpa` (8-byte aligned): null, unused,
/// [`BOOT_CS`] (64-bit code), [`BOOT_DS`] (flat data). Returns what GDTR
/// must hold. Nothing is written unless it fits in RAM.
pub fn build_boot_gdt(mem: &mut impl GuestMemory, at_gpa: u64) -> Result<Gdtr, BootTablesError> {
    check_boot_gdt(mem.size(), at_gpa)?;
    let mut gdt = [0u8; BOOT_GDT_LEN as usize];
    gdt[usize::from(BOOT_CS)..usize::from(BOOT_CS) + 8].copy_from_slice(&GDT_CODE64.to_le_bytes());
    gdt[usize::from(BOOT_DS)..usize::from(BOOT_DS) + 8].copy_from_slice(&GDT_DATA.to_le_bytes());
    mem.write(at_gpa, &gdt).map_err(BootTablesError::Memory)?;
    Ok(Gdtr {
        base: at_gpa,
        limit: BOOT_GDT_LEN as u16 - 1,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use vcpu::VecMemory;

    /// Walks the tables at `cr3` for `linear` the way the MMU does with
    /// 4-level paging, returning the physical address or `None` if not
    /// present, not writable, or not a 2 MiB page.
    pub(crate) fn translate(mem: &impl GuestMemory, cr3: u64, linear: u64) -> Option<u64> {
        const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
        let pml4e = mem.read_u64(cr3 + ((linear >> 39) & 0x1FF) * 8).ok()?;
        if pml4e & PTE_PRESENT == 0 {
            return None;
        }
        let pdpte = mem
            .read_u64((pml4e & ADDR) + ((linear >> 30) & 0x1FF) * 8)
            .ok()?;
        if pdpte & PTE_PRESENT == 0 || pdpte & PTE_HUGE != 0 {
            return None;
        }
        let pde = mem
            .read_u64((pdpte & ADDR) + ((linear >> 21) & 0x1FF) * 8)
            .ok()?;
        if pde & PTE_PRESENT == 0 || pde & PTE_HUGE == 0 || pde & PTE_WRITABLE == 0 {
            return None;
        }
        Some((pde & 0x000F_FFFF_FFE0_0000) + (linear & (HUGE_PAGE - 1)))
    }

    #[test]
    fn four_gib_identity_map_uses_six_pages() {
        assert_eq!(identity_page_tables_len(4 * GIB), Ok(6 * PAGE));
        let mut mem = VecMemory::new(0x10_0000);
        mem.0.fill(0xCC);
        let cr3 = build_identity_page_tables(&mut mem, 0x9000, 4 * GIB).unwrap();
        assert_eq!(cr3, 0x9000);
        for linear in [
            0,
            0x1234,
            0x100_0200,
            0x7FFF_FFFF,
            0xFEE0_0000,
            4 * GIB - 1,
            GIB + 0x20_0000 + 5,
        ] {
            assert_eq!(translate(&mem, cr3, linear), Some(linear), "{linear:#x}");
        }
        assert_eq!(translate(&mem, cr3, 4 * GIB), None);
        assert_eq!(translate(&mem, cr3, 1 << 39), None);
        assert_eq!(mem.0[0x8FFF], 0xCC);
        assert_eq!(mem.0[0xF000], 0xCC, "nothing past the six pages");
    }

    #[test]
    fn partial_gib_is_rounded_to_2_mib() {
        let mut mem = VecMemory::new(0x10_0000);
        let cr3 = build_identity_page_tables(&mut mem, 0x1000, 5 << 20).unwrap();
        assert_eq!(
            translate(&mem, cr3, (5 << 20) + 0x1000),
            Some((5 << 20) + 0x1000)
        );
        assert_eq!(translate(&mem, cr3, 6 << 20), None);
    }

    #[test]
    fn bad_places_and_sizes_write_nothing() {
        let mut mem = VecMemory::new(0x10_0000);
        mem.0.fill(0xCC);
        assert_eq!(
            build_identity_page_tables(&mut mem, 0x9008, 4 * GIB),
            Err(BootTablesError::Misaligned {
                gpa: 0x9008,
                align: PAGE
            })
        );
        assert_eq!(
            build_identity_page_tables(&mut mem, 0xFB000, 4 * GIB),
            Err(BootTablesError::OutsideRam {
                gpa: 0xFB000,
                len: 6 * PAGE,
                ram_size: 0x10_0000
            })
        );
        assert!(matches!(
            build_identity_page_tables(&mut mem, !0xFFF, 4 * GIB),
            Err(BootTablesError::OutsideRam { .. })
        ));
        assert!(matches!(
            build_identity_page_tables(&mut mem, 0x9000, 0),
            Err(BootTablesError::BadMapSize { .. })
        ));
        assert!(matches!(
            build_identity_page_tables(&mut mem, 0x9000, MAX_IDENTITY_MAP + 1),
            Err(BootTablesError::BadMapSize { .. })
        ));
        assert_eq!(
            build_boot_gdt(&mut mem, 0x5004),
            Err(BootTablesError::Misaligned {
                gpa: 0x5004,
                align: 8
            })
        );
        assert!(matches!(
            build_boot_gdt(&mut mem, 0xF_FFE8),
            Err(BootTablesError::OutsideRam { .. })
        ));
        assert!(mem.0.iter().all(|&b| b == 0xCC));
    }

    #[test]
    fn gdt_has_the_boot_selectors() {
        let mut mem = VecMemory::new(0x10_0000);
        let gdtr = build_boot_gdt(&mut mem, 0x5000).unwrap();
        assert_eq!(
            gdtr,
            Gdtr {
                base: 0x5000,
                limit: 31
            }
        );
        assert_eq!(mem.read_u64(0x5000).unwrap(), 0);
        let code = mem.read_u64(0x5000 + u64::from(BOOT_CS)).unwrap();
        let data = mem.read_u64(0x5000 + u64::from(BOOT_DS)).unwrap();
        // Access bytes: present, DPL 0, code execute/read or data read/write.
        assert_eq!((code >> 40) & 0xFF, 0x9B);
        assert_eq!((data >> 40) & 0xFF, 0x93);
        // Flags: G and L for code (D clear, as long mode requires); G and D/B for data.
        assert_eq!((code >> 52) & 0xF, 0b1010);
        assert_eq!((data >> 52) & 0xF, 0b1100);
        // Base 0, limit 0xFFFFF (4 GiB with G).
        for d in [code, data] {
            assert_eq!(d & 0xFFFF, 0xFFFF);
            assert_eq!((d >> 48) & 0xF, 0xF);
            assert_eq!((d >> 16) & 0xFF_FFFF, 0);
            assert_eq!(d >> 56, 0);
        }
    }
}
