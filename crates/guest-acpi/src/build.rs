//! Lays the tables out one after the other from a guest-physical base,
//! points each at the next, and returns the bytes to copy there.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::config::{AcpiConfig, ConfigError};
use crate::dsdt::dsdt;
use crate::facs::{facs, FACS_ALIGN, FACS_LEN};
use crate::fadt::{fadt, FADT_LEN};
use crate::madt::madt;
use crate::mcfg::mcfg;
use crate::root::{root_len, rsdt, xsdt};
use crate::rsdp::{rsdp, RSDP_LEN};

/// Where a VM's tables may go: the BIOS area, which a guest also searches
/// for the RSDP (16-byte boundaries from 0xE0000), and which the e820 map
/// already reports as reserved.
pub const ACPI_TABLES_GPA: u64 = 0xE_0000;
/// Room from [`ACPI_TABLES_GPA`] to 1 MiB.
pub const ACPI_TABLES_MAX_LEN: u64 = 0x2_0000;
/// Alignment of the RSDP (the BIOS search steps by 16) and of each table.
const ALIGN: u64 = 16;
/// Tables the root tables list at most: FADT, MADT, MCFG.
const MAX_LISTED: usize = 3;

/// A VM's ACPI tables, ready to copy to `base_gpa`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiTables {
    /// Everything from the RSDP on, contiguous.
    pub bytes: Vec<u8>,
    /// Where `bytes` go (the `base_gpa` given to [`build`]).
    pub base_gpa: u64,
    /// The RSDP: `base_gpa`. What the zero page's `acpi_rsdp_addr` gets.
    pub rsdp_gpa: u64,
    pub xsdt_gpa: u64,
    pub rsdt_gpa: u64,
    pub fadt_gpa: u64,
    pub facs_gpa: u64,
    pub dsdt_gpa: u64,
    pub madt_gpa: u64,
    /// The MCFG, with a PCI segment.
    pub mcfg_gpa: Option<u64>,
}

impl AcpiTables {
    /// The guest-physical range `base_gpa..base_gpa + len`, rounded up to
    /// whole 4 KiB pages: what to report as ACPI memory in the e820 map.
    pub fn reserved_len(&self) -> u64 {
        (self.bytes.len() as u64).next_multiple_of(0x1000)
    }
}

/// Why the tables cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiBuildError {
    /// The VM description is not usable.
    Config(ConfigError),
    /// The RSDP (at `base_gpa`) must be 16-byte aligned.
    Misaligned { base_gpa: u64 },
    /// The tables must lie below 4 GiB: the RSDT and FADT hold 32-bit
    /// pointers.
    Above4GiB { base_gpa: u64, end: u64 },
}

impl fmt::Display for AcpiBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AcpiBuildError::Config(e) => write!(f, "ACPI configuration: {e}"),
            AcpiBuildError::Misaligned { base_gpa } => write!(
                f,
                "ACPI tables at {base_gpa:#x}: the RSDP must be 16-byte aligned"
            ),
            AcpiBuildError::Above4GiB { base_gpa, end } => write!(
                f,
                "ACPI tables at {base_gpa:#x}..{end:#x} must end below 4 GiB (32-bit table pointers)"
            ),
        }
    }
}

impl core::error::Error for AcpiBuildError {}

impl From<ConfigError> for AcpiBuildError {
    fn from(e: ConfigError) -> Self {
        AcpiBuildError::Config(e)
    }
}

/// Next address at or after `at` aligned to `align` (a power of two);
/// callers keep every address below 2^33, so it cannot overflow.
fn align_up(at: u64, align: u64) -> u64 {
    (at + align - 1) & !(align - 1)
}

/// Builds the tables for `cfg` to be placed at `base_gpa` (16-byte aligned,
/// everything below 4 GiB). In order: RSDP (at `base_gpa`), XSDT, RSDT,
/// FADT, FACS (64-byte aligned), DSDT, MADT, and with `cfg.pci` the MCFG;
/// each table 16-byte aligned, the gaps zero. The root tables list the
/// FADT, the MADT and the MCFG, in that order.
pub fn build(cfg: &AcpiConfig, base_gpa: u64) -> Result<AcpiTables, AcpiBuildError> {
    cfg.check()?;
    if base_gpa % ALIGN != 0 {
        return Err(AcpiBuildError::Misaligned { base_gpa });
    }
    const LIMIT: u64 = 1 << 32;
    if base_gpa >= LIMIT {
        return Err(AcpiBuildError::Above4GiB {
            base_gpa,
            end: base_gpa.saturating_add(RSDP_LEN as u64),
        });
    }
    let dsdt_bytes = dsdt(cfg);
    let madt_bytes = madt(cfg);
    let mcfg_bytes = cfg.pci.as_ref().map(mcfg);
    let listed = 2 + usize::from(mcfg_bytes.is_some());
    debug_assert!(listed <= MAX_LISTED);

    let rsdp_gpa = base_gpa;
    let xsdt_gpa = align_up(rsdp_gpa + RSDP_LEN as u64, ALIGN);
    let rsdt_gpa = align_up(xsdt_gpa + root_len(listed, 8) as u64, ALIGN);
    let fadt_gpa = align_up(rsdt_gpa + root_len(listed, 4) as u64, ALIGN);
    let facs_gpa = align_up(fadt_gpa + FADT_LEN as u64, FACS_ALIGN);
    let dsdt_gpa = align_up(facs_gpa + FACS_LEN as u64, ALIGN);
    let madt_gpa = align_up(dsdt_gpa + dsdt_bytes.len() as u64, ALIGN);
    let mut end = madt_gpa + madt_bytes.len() as u64;
    let mcfg_gpa = mcfg_bytes.as_ref().map(|t| {
        let gpa = align_up(end, ALIGN);
        end = gpa + t.len() as u64;
        gpa
    });
    if end > LIMIT {
        return Err(AcpiBuildError::Above4GiB { base_gpa, end });
    }
    // Below 4 GiB: the 32-bit casts cannot truncate.
    let fadt_bytes = fadt(cfg, facs_gpa as u32, dsdt_gpa as u32);
    let listed_gpas = [fadt_gpa, madt_gpa, mcfg_gpa.unwrap_or(0)];
    let listed_gpas = &listed_gpas[..listed];
    let mut listed32 = [0u32; MAX_LISTED];
    for (to, &from) in listed32.iter_mut().zip(listed_gpas) {
        *to = from as u32;
    }
    let xsdt_bytes = xsdt(listed_gpas);
    let rsdt_bytes = rsdt(&listed32[..listed]);
    let rsdp_bytes = rsdp(rsdt_gpa as u32, xsdt_gpa);

    let mut bytes = vec![0u8; (end - base_gpa) as usize];
    for (gpa, table) in [
        (rsdp_gpa, &rsdp_bytes[..]),
        (xsdt_gpa, &xsdt_bytes[..]),
        (rsdt_gpa, &rsdt_bytes[..]),
        (fadt_gpa, &fadt_bytes[..]),
        (facs_gpa, &facs()[..]),
        (dsdt_gpa, &dsdt_bytes[..]),
        (madt_gpa, &madt_bytes[..]),
    ] {
        let at = (gpa - base_gpa) as usize;
        bytes[at..at + table.len()].copy_from_slice(table);
    }
    if let (Some(gpa), Some(table)) = (mcfg_gpa, &mcfg_bytes) {
        let at = (gpa - base_gpa) as usize;
        bytes[at..at + table.len()].copy_from_slice(table);
    }
    Ok(AcpiTables {
        bytes,
        base_gpa,
        rsdp_gpa,
        xsdt_gpa,
        rsdt_gpa,
        fadt_gpa,
        facs_gpa,
        dsdt_gpa,
        madt_gpa,
        mcfg_gpa,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::madt::madt_len;
    use alloc::string::ToString;

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |s, &x| s.wrapping_add(x))
    }

    /// The table at `gpa` in `t`, by its length field.
    fn table(t: &AcpiTables, gpa: u64) -> &[u8] {
        let off = (gpa - t.base_gpa) as usize;
        let len = u32_at(&t.bytes, off + 4) as usize;
        &t.bytes[off..off + len]
    }

    #[test]
    fn every_checksum_and_pointer() {
        for vcpus in [1u8, 2, 8] {
            let cfg = AcpiConfig::new(vcpus);
            let t = build(&cfg, ACPI_TABLES_GPA).unwrap();
            assert!(t.bytes.len() as u64 <= ACPI_TABLES_MAX_LEN);
            assert_eq!(t.rsdp_gpa, 0xE_0000);
            let rsdp = &t.bytes[..36];
            assert_eq!(sum(&rsdp[..20]), 0);
            assert_eq!(sum(rsdp), 0);
            assert_eq!(u32_at(rsdp, 16), t.rsdt_gpa as u32);
            assert_eq!(u64_at(rsdp, 24), t.xsdt_gpa);

            let xsdt = table(&t, t.xsdt_gpa);
            assert_eq!((&xsdt[..4], xsdt.len(), sum(xsdt)), (&b"XSDT"[..], 52, 0));
            assert_eq!(
                (u64_at(xsdt, 36), u64_at(xsdt, 44)),
                (t.fadt_gpa, t.madt_gpa)
            );
            let rsdt = table(&t, t.rsdt_gpa);
            assert_eq!((&rsdt[..4], rsdt.len(), sum(rsdt)), (&b"RSDT"[..], 44, 0));
            assert_eq!(
                (u32_at(rsdt, 36), u32_at(rsdt, 40)),
                (t.fadt_gpa as u32, t.madt_gpa as u32)
            );
            let fadt = table(&t, t.fadt_gpa);
            assert_eq!((&fadt[..4], fadt.len(), sum(fadt)), (&b"FACP"[..], 276, 0));
            assert_eq!(u32_at(fadt, 40), t.dsdt_gpa as u32);
            assert_eq!(u64_at(fadt, 140), t.dsdt_gpa);
            assert_eq!(u64_at(fadt, 132), t.facs_gpa);
            let facs_off = (t.facs_gpa - t.base_gpa) as usize;
            assert_eq!(&t.bytes[facs_off..facs_off + 4], b"FACS");
            assert_eq!(t.facs_gpa % 64, 0);
            let dsdt = table(&t, t.dsdt_gpa);
            assert_eq!((&dsdt[..4], sum(dsdt)), (&b"DSDT"[..], 0));
            let madt = table(&t, t.madt_gpa);
            assert_eq!((&madt[..4], sum(madt)), (&b"APIC"[..], 0));
            assert_eq!(madt.len(), madt_len(&cfg));
            assert_eq!(
                t.bytes.len() as u64,
                t.madt_gpa + madt.len() as u64 - t.base_gpa
            );
            for gpa in [t.xsdt_gpa, t.rsdt_gpa, t.fadt_gpa, t.dsdt_gpa, t.madt_gpa] {
                assert_eq!(gpa % 16, 0);
            }
            assert_eq!(t.reserved_len(), 0x1000);
        }
    }

    #[test]
    fn tables_are_ordered_and_apart() {
        let t = build(&AcpiConfig::new(254), 0x7FF0_0000).unwrap();
        let order = [
            (t.rsdp_gpa, 36u64),
            (t.xsdt_gpa, 52),
            (t.rsdt_gpa, 44),
            (t.fadt_gpa, 276),
            (t.facs_gpa, 64),
            (t.dsdt_gpa, table(&t, t.dsdt_gpa).len() as u64),
            (t.madt_gpa, table(&t, t.madt_gpa).len() as u64),
        ];
        for pair in order.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{pair:?}");
        }
        assert_eq!(t.reserved_len(), 0x1000);
    }

    #[test]
    fn placement_errors() {
        let cfg = AcpiConfig::new(2);
        assert_eq!(
            build(&cfg, 0xE_0008),
            Err(AcpiBuildError::Misaligned { base_gpa: 0xE_0008 })
        );
        assert!(matches!(
            build(&cfg, 0xFFFF_FF00),
            Err(AcpiBuildError::Above4GiB { base_gpa: 0xFFFF_FF00, end }) if end > 1 << 32
        ));
        assert!(matches!(
            build(&cfg, !0xF),
            Err(AcpiBuildError::Above4GiB { .. })
        ));
        let err = build(&AcpiConfig::new(0), 0xE_0000).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ACPI configuration: 0 vCPUs: the ACPI tables describe 1 to 254"
        );
    }

    #[test]
    fn the_same_config_gives_the_same_bytes() {
        let mut cfg = AcpiConfig::new(4);
        cfg.pci = Some(crate::config::DEFAULT_PCI_HOST);
        cfg.pm_tmr = Some(0x608);
        let a = build(&cfg, 0x1000).unwrap();
        let b = build(&cfg, 0x1000).unwrap();
        assert_eq!(a, b);
        // Only the pointers change with the base.
        let c = build(&cfg, 0x2000).unwrap();
        assert_eq!(c.bytes.len(), a.bytes.len());
        assert_eq!(c.madt_gpa - c.base_gpa, a.madt_gpa - a.base_gpa);
        let (am, cm) = (table(&a, a.madt_gpa), table(&c, c.madt_gpa));
        assert_eq!(am, cm, "the MADT holds no address");
        let (am, cm) = (
            table(&a, a.mcfg_gpa.unwrap()),
            table(&c, c.mcfg_gpa.unwrap()),
        );
        assert_eq!(am, cm, "the MCFG holds no table address");
    }

    #[test]
    fn mcfg_is_listed_last() {
        let mut cfg = AcpiConfig::new(2);
        cfg.pci = Some(crate::config::DEFAULT_PCI_HOST);
        let t = build(&cfg, ACPI_TABLES_GPA).unwrap();
        let mcfg_gpa = t.mcfg_gpa.expect("an MCFG");
        assert_eq!(mcfg_gpa % 16, 0);
        assert!(mcfg_gpa >= t.madt_gpa + table(&t, t.madt_gpa).len() as u64);
        let mcfg = table(&t, mcfg_gpa);
        assert_eq!((&mcfg[..4], mcfg.len(), sum(mcfg)), (&b"MCFG"[..], 60, 0));
        assert_eq!(u64_at(mcfg, 44), 0xE000_0000);
        assert_eq!(t.bytes.len() as u64, mcfg_gpa + 60 - t.base_gpa);

        let xsdt = table(&t, t.xsdt_gpa);
        assert_eq!((xsdt.len(), sum(xsdt)), (60, 0));
        assert_eq!(
            [u64_at(xsdt, 36), u64_at(xsdt, 44), u64_at(xsdt, 52)],
            [t.fadt_gpa, t.madt_gpa, mcfg_gpa]
        );
        let rsdt = table(&t, t.rsdt_gpa);
        assert_eq!((rsdt.len(), sum(rsdt)), (48, 0));
        assert_eq!(
            [u32_at(rsdt, 36), u32_at(rsdt, 40), u32_at(rsdt, 44)],
            [t.fadt_gpa as u32, t.madt_gpa as u32, mcfg_gpa as u32]
        );
        let dsdt = table(&t, t.dsdt_gpa);
        assert_eq!(sum(dsdt), 0);
        assert!(t.bytes.len() as u64 <= ACPI_TABLES_MAX_LEN);
        assert_eq!(t.reserved_len(), 0x1000);

        // Without PCI: no MCFG, two entries.
        let t = build(&AcpiConfig::new(2), ACPI_TABLES_GPA).unwrap();
        assert_eq!(t.mcfg_gpa, None);
        assert_eq!(table(&t, t.xsdt_gpa).len(), 52);
    }
}
