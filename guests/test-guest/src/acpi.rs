//! The ACPI tables the firmware (or Quercus) left in guest memory: the RSDP
//! by the standard scan of 0xE0000..0xFFFFF, the RSDT/XSDT, any table by its
//! signature, and the MCFG's ECAM windows. Tables are read byte by byte at
//! checked offsets (never cast to structs); every checksum is verified.

use core::fmt;

use crate::msg::Ascii;
use crate::paging;

/// Where the RSDP scan looks (16-byte steps).
const RSDP_SCAN: core::ops::Range<u64> = 0xE_0000..0x10_0000;
const RSDP_SIGNATURE: &[u8; 8] = b"RSD PTR ";
/// The ACPI 1.0 part of the RSDP and the whole ACPI 2.0+ RSDP.
const RSDP_V1_LEN: u64 = 20;
const RSDP_V2_LEN: u64 = 36;
/// Size of every system description table's header.
pub const HEADER_LEN: u32 = 36;
/// Longest table accepted (a sanity bound, far above anything real).
const MAX_TABLE_LEN: u32 = 1 << 20;

/// What is wrong with the firmware's tables.
#[derive(Clone, Copy, Debug)]
pub enum AcpiError {
    NoRsdp,
    /// The range cannot be mapped (at or above 4 GiB).
    Unreachable {
        addr: u64,
        len: u64,
    },
    BadChecksum {
        what: [u8; 4],
        addr: u64,
        sum: u8,
    },
    BadSignature {
        want: [u8; 4],
        got: [u8; 4],
        addr: u64,
    },
    BadLength {
        what: [u8; 4],
        addr: u64,
        len: u32,
    },
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AcpiError::NoRsdp => write!(
                f,
                "no RSDP with a valid checksum in {:#x}..{:#x}",
                RSDP_SCAN.start, RSDP_SCAN.end
            ),
            AcpiError::Unreachable { addr, len } => {
                write!(f, "cannot map {addr:#x}+{len:#x} (above 4 GiB?)")
            }
            AcpiError::BadChecksum { what, addr, sum } => write!(
                f,
                "{} at {addr:#x}: bytes sum to {sum:#04x}, not 0",
                Ascii(&what)
            ),
            AcpiError::BadSignature { want, got, addr } => write!(
                f,
                "table at {addr:#x} is \"{}\", expected {}",
                Ascii(&got),
                Ascii(&want)
            ),
            AcpiError::BadLength { what, addr, len } => {
                write!(
                    f,
                    "{} at {addr:#x}: length {len} out of range",
                    Ascii(&what)
                )
            }
        }
    }
}

/// Bytes of guest-physical memory, identity-mapped by [`PhysBytes::map`].
#[derive(Clone, Copy)]
struct PhysBytes {
    addr: u64,
    len: u64,
}

impl PhysBytes {
    fn map(addr: u64, len: u64) -> Result<Self, AcpiError> {
        if !paging::map_phys_range(addr, len) {
            return Err(AcpiError::Unreachable { addr, len });
        }
        Ok(Self { addr, len })
    }

    /// The byte at `off` (0xFF past the end).
    fn u8(&self, off: u64) -> u8 {
        if off >= self.len {
            return 0xFF;
        }
        // SAFETY: `map` made addr..addr+len readable through the identity
        // map; a byte read has no alignment needs. Firmware tables are not
        // Rust objects, so a volatile read aliases nothing.
        unsafe { ((self.addr + off) as *const u8).read_volatile() }
    }

    fn le(&self, off: u64, n: u64) -> u64 {
        (0..n).fold(0, |v, i| v | u64::from(self.u8(off + i)) << (8 * i))
    }

    fn sum(&self, len: u64) -> u8 {
        (0..len.min(self.len)).fold(0u8, |s, i| s.wrapping_add(self.u8(i)))
    }

    fn bytes<const N: usize>(&self, off: u64) -> [u8; N] {
        let mut b = [0u8; N];
        for (i, x) in b.iter_mut().enumerate() {
            *x = self.u8(off + i as u64);
        }
        b
    }
}

/// The Root System Description Pointer.
#[derive(Clone, Copy, Debug)]
pub struct Rsdp {
    pub addr: u64,
    pub revision: u8,
    pub rsdt: u32,
    /// Revision 2 and later (0 if the field is 0).
    pub xsdt: Option<u64>,
}

/// Scans 0xE0000..0xFFFFF for the RSDP; the first with valid checksums wins.
pub fn find_rsdp() -> Result<Rsdp, AcpiError> {
    let area = PhysBytes::map(RSDP_SCAN.start, RSDP_SCAN.end - RSDP_SCAN.start)?;
    let mut off = 0;
    while off + RSDP_V1_LEN <= area.len {
        if area.bytes::<8>(off) == *RSDP_SIGNATURE {
            let p = PhysBytes {
                addr: area.addr + off,
                len: (area.len - off).min(RSDP_V2_LEN),
            };
            let revision = p.u8(15);
            let v1_ok = p.sum(RSDP_V1_LEN) == 0;
            let v2_ok = revision < 2 || (p.len == RSDP_V2_LEN && p.sum(RSDP_V2_LEN) == 0);
            if v1_ok && v2_ok {
                return Ok(Rsdp {
                    addr: p.addr,
                    revision,
                    rsdt: p.le(16, 4) as u32,
                    xsdt: (revision >= 2).then(|| p.le(24, 8)).filter(|&a| a != 0),
                });
            }
        }
        off += 16;
    }
    Err(AcpiError::NoRsdp)
}

/// A system description table whose header, length and checksum were checked.
#[derive(Clone, Copy)]
pub struct Table {
    bytes: PhysBytes,
}

impl Table {
    /// Maps and checks the table at `addr`, which must be a `signature`.
    pub fn load(addr: u64, signature: &[u8; 4]) -> Result<Self, AcpiError> {
        let head = PhysBytes::map(addr, u64::from(HEADER_LEN))?;
        let got = head.bytes::<4>(0);
        if got != *signature {
            return Err(AcpiError::BadSignature {
                want: *signature,
                got,
                addr,
            });
        }
        let len = head.le(4, 4) as u32;
        if !(HEADER_LEN..=MAX_TABLE_LEN).contains(&len) {
            return Err(AcpiError::BadLength {
                what: got,
                addr,
                len,
            });
        }
        let bytes = PhysBytes::map(addr, u64::from(len))?;
        let sum = bytes.sum(u64::from(len));
        if sum != 0 {
            return Err(AcpiError::BadChecksum {
                what: got,
                addr,
                sum,
            });
        }
        Ok(Self { bytes })
    }

    pub fn addr(&self) -> u64 {
        self.bytes.addr
    }

    pub fn length(&self) -> u32 {
        self.bytes.len as u32
    }

    /// Little-endian value of `n` bytes at `off` (bytes past the end read 0xFF).
    pub fn le(&self, off: u32, n: u32) -> u64 {
        self.bytes.le(u64::from(off), u64::from(n))
    }

    /// Looks through this RSDT (`entry` 4: 32-bit pointers) or XSDT
    /// (`entry` 8) for a table with `signature`; its address if listed.
    pub fn find_entry(&self, entry: u32, signature: &[u8; 4]) -> Result<Option<u64>, AcpiError> {
        let mut off = HEADER_LEN;
        while off + entry <= self.length() {
            let addr = self.le(off, entry);
            let head = PhysBytes::map(addr, 4)?;
            if head.bytes::<4>(0) == *signature {
                return Ok(Some(addr));
            }
            off += entry;
        }
        Ok(None)
    }
}

/// One MCFG entry: an ECAM window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcamWindow {
    pub base: u64,
    pub segment: u16,
    pub start_bus: u8,
    pub end_bus: u8,
}

/// MCFG: the header, 8 reserved bytes, then 16-byte entries.
const MCFG_ENTRIES: u32 = HEADER_LEN + 8;
const MCFG_ENTRY_LEN: u32 = 16;

/// The MCFG's entries (at most 8 are looked at) and how many there are.
pub fn mcfg_windows(mcfg: &Table) -> Result<([EcamWindow; 8], usize), AcpiError> {
    let len = mcfg.length();
    if len < MCFG_ENTRIES || !(len - MCFG_ENTRIES).is_multiple_of(MCFG_ENTRY_LEN) {
        return Err(AcpiError::BadLength {
            what: *b"MCFG",
            addr: mcfg.addr(),
            len,
        });
    }
    let count = ((len - MCFG_ENTRIES) / MCFG_ENTRY_LEN) as usize;
    let mut windows = [EcamWindow {
        base: 0,
        segment: 0,
        start_bus: 0,
        end_bus: 0,
    }; 8];
    for (i, w) in windows.iter_mut().enumerate().take(count) {
        let off = MCFG_ENTRIES + i as u32 * MCFG_ENTRY_LEN;
        *w = EcamWindow {
            base: mcfg.le(off, 8),
            segment: mcfg.le(off + 8, 2) as u16,
            start_bus: mcfg.le(off + 10, 1) as u8,
            end_bus: mcfg.le(off + 11, 1) as u8,
        };
    }
    Ok((windows, count))
}
