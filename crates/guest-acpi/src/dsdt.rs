//! The Differentiated System Description Table: a definition block whose
//! AML declares `\_S5_` (so Linux can power the VM off) and, with a PCI
//! segment, its host bridge and the motherboard resource reserving ECAM.
//!
//! The AML, with its encoding (SLP_TYP 5):
//!
//! ```text
//! Name (\_S5_, Package (4) { 5, 5, 0, 0 })
//!   08              NameOp
//!   5F 53 35 5F     "_S5_"
//!   12 08           PackageOp, PkgLength 8 (itself, the count, 6 bytes of elements)
//!   04              4 elements: SLP_TYPa, SLP_TYPb, two reserved
//!   0A 05 0A 05     BytePrefix 5, BytePrefix 5
//!   00 00           Zero, Zero
//! ```
//!
//! With a PCI segment, before `\_S5_` (values of `DEFAULT_PCI_HOST`):
//!
//! ```text
//! Scope (\_SB_) {
//!   Device (PCI0) {
//!     Name (_HID, EisaId ("PNP0A08"))   // PCI Express root bridge
//!     Name (_CID, EisaId ("PNP0A03"))   // PCI root bridge
//!     Name (_UID, 0)
//!     Name (_SEG, 0)
//!     Name (_BBN, 0)
//!     Name (_CRS, ResourceTemplate () {
//!       WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,
//!                      0, 0, 0 /* bus_end */, 0, 1)
//!       WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
//!               0, 0x0000, 0x0CF7, 0, 0x0CF8)
//!       IO (Decode16, 0x0CF8, 0x0CF8, 1, 8)
//!       WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
//!               0, 0x0D00, 0xFFFF, 0, 0xF300)
//!       DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed,
//!                    NonCacheable, ReadWrite,
//!                    0, 0xC0000000, 0xDFFFFFFF, 0, 0x20000000)
//!     })
//!     Name (_PRT, Package (124) {       // devices 1..=31 x INTA..INTD
//!       Package (4) { 0x0001FFFF, 0, Zero, 17 },
//!       ...                             // GSI 16 + (device + pin) % 4
//!       Package (4) { 0x001FFFFF, 3, Zero, 18 },
//!     })
//!   }
//!   Device (MRES) {
//!     Name (_HID, EisaId ("PNP0C02"))   // motherboard resources
//!     Name (_UID, 1)
//!     Name (_CRS, ResourceTemplate () {
//!       Memory32Fixed (ReadWrite, 0xE0000000, 0x100000)  // ECAM
//!     })
//!   }
//! }
//! ```
//!
//! The table's revision is 2: AML integers are 64 bits wide.

use alloc::vec::Vec;

use crate::aml::{buffer, device, eisa_id, integer, name, package, scope, ROOT_CHAR};
use crate::config::{AcpiConfig, PciHost, PCI_CONFIG_PORTS};
use crate::resource::Resources;
use crate::sdt::Sdt;

const REVISION: u8 = 2;
/// `_UID` of the motherboard resource device (the host bridge has 0).
const MRES_UID: u64 = 1;
/// `_PRT` address field: device in bits 31:16, 0xFFFF = every function.
const ALL_FUNCTIONS: u64 = 0xFFFF;

/// The DSDT for `cfg`.
pub(crate) fn dsdt(cfg: &AcpiConfig) -> Vec<u8> {
    let mut t = Sdt::new(b"DSDT", REVISION);
    t.bytes(&aml_body(cfg));
    t.finish()
}

/// The AML after the header.
fn aml_body(cfg: &AcpiConfig) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(pci) = &cfg.pci {
        let mut sb = device(b"PCI0", &host_bridge(pci));
        sb.extend_from_slice(&device(b"MRES", &motherboard_resources(pci)));
        let path = [ROOT_CHAR, b'_', b'S', b'B', b'_'];
        body.extend_from_slice(&scope(&path, &sb));
    }
    let typ = integer(u64::from(cfg.s5_slp_typ));
    body.extend_from_slice(&name(
        b"_S5_",
        &package(&[typ.clone(), typ, integer(0), integer(0)]),
    ));
    body
}

/// The terms of `\_SB_.PCI0`: a PCI Express root bridge for segment 0 from
/// bus 0, its windows, and its INTx routing.
fn host_bridge(pci: &PciHost) -> Vec<u8> {
    let mut t = name(b"_HID", &eisa_id(b"PNP0A08"));
    t.extend_from_slice(&name(b"_CID", &eisa_id(b"PNP0A03")));
    t.extend_from_slice(&name(b"_UID", &integer(0)));
    t.extend_from_slice(&name(b"_SEG", &integer(0)));
    t.extend_from_slice(&name(b"_BBN", &integer(0)));
    t.extend_from_slice(&name(b"_CRS", &buffer(&host_bridge_resources(pci))));
    t.extend_from_slice(&name(b"_PRT", &routing_table(pci)));
    t
}

/// The host bridge's `_CRS`: its buses, every I/O port around the
/// configuration ports (which it consumes), and the MMIO window.
pub(crate) fn host_bridge_resources(pci: &PciHost) -> Vec<u8> {
    let (cfg_start, cfg_end) = PCI_CONFIG_PORTS;
    let (mmio_base, mmio_len) = pci.mmio_window;
    let mut r = Resources::new();
    r.word_bus_number(0, pci.bus_end)
        .word_io(0, cfg_start - 1)
        .io(cfg_start, cfg_start, 1, (cfg_end - cfg_start) as u8)
        .word_io(cfg_end, 0xFFFF)
        .dword_memory(mmio_base, mmio_len);
    r.finish()
}

/// The `_PRT`: for devices 1..32 (device 0, the host bridge, has no pin)
/// and pins INTA..INTD, `Package { address, pin, Zero, GSI }`: the GSI
/// form, Source 0 and SourceIndex the GSI ([`PciHost::intx_gsi`]).
fn routing_table(pci: &PciHost) -> Vec<u8> {
    let mut entries = Vec::with_capacity(31 * 4);
    for slot in 1..32u8 {
        for pin in 0..4u8 {
            entries.push(package(&[
                integer((u64::from(slot) << 16) | ALL_FUNCTIONS),
                integer(pin.into()),
                integer(0),
                integer(pci.intx_gsi(slot, pin).into()),
            ]));
        }
    }
    package(&entries)
}

/// The terms of `\_SB_.MRES`: a motherboard resource device reserving the
/// ECAM window, which Linux requires before it trusts the MCFG.
fn motherboard_resources(pci: &PciHost) -> Vec<u8> {
    let mut t = name(b"_HID", &eisa_id(b"PNP0C02"));
    t.extend_from_slice(&name(b"_UID", &integer(MRES_UID)));
    let mut r = Resources::new();
    // PciHost::check keeps the window below 4 GiB: the casts cannot
    // truncate.
    r.memory32_fixed(pci.ecam_base as u32, pci.ecam_len() as u32);
    t.extend_from_slice(&name(b"_CRS", &buffer(&r.finish())));
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aml::tests::{names_in, value_of, Data};
    use crate::config::DEFAULT_PCI_HOST;
    use crate::resource::tests::{descriptors, Descriptor};
    use crate::sdt::tests::assert_table;
    use alloc::string::String;
    use alloc::vec;

    const S5: [u8; 14] = [
        0x08, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00,
    ];

    #[test]
    fn s5_only() {
        let t = dsdt(&AcpiConfig::new(1));
        assert_table(&t, b"DSDT", 2);
        assert_eq!(&t[36..], &S5);
        assert_eq!(names_in(&t[36..]), Ok(vec![String::from("\\_S5_")]));
    }

    #[test]
    fn s5_with_other_sleep_types() {
        let mut cfg = AcpiConfig::new(1);
        cfg.s5_slp_typ = 0;
        let t = dsdt(&cfg);
        assert_eq!(
            &t[36..],
            &[0x08, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x06, 0x04, 0, 0, 0, 0]
        );
        cfg.s5_slp_typ = 7;
        let t = dsdt(&cfg);
        assert_eq!(&t[36 + 8..36 + 12], &[0x0A, 7, 0x0A, 7]);
    }

    /// Every name with a PCI segment, in order.
    const PCI_NAMES: [&str; 13] = [
        "\\_SB_.PCI0",
        "\\_SB_.PCI0._HID",
        "\\_SB_.PCI0._CID",
        "\\_SB_.PCI0._UID",
        "\\_SB_.PCI0._SEG",
        "\\_SB_.PCI0._BBN",
        "\\_SB_.PCI0._CRS",
        "\\_SB_.PCI0._PRT",
        "\\_SB_.MRES",
        "\\_SB_.MRES._HID",
        "\\_SB_.MRES._UID",
        "\\_SB_.MRES._CRS",
        "\\_S5_",
    ];

    fn pci_cfg(pci: PciHost) -> AcpiConfig {
        let mut cfg = AcpiConfig::new(2);
        cfg.pci = Some(pci);
        cfg.check().unwrap();
        cfg
    }

    fn int(d: &Data) -> u64 {
        d.integer().expect("an integer")
    }

    #[test]
    fn pci_names_and_ids() {
        let t = dsdt(&pci_cfg(DEFAULT_PCI_HOST));
        assert_table(&t, b"DSDT", 2);
        let aml = &t[36..];
        assert_eq!(names_in(aml).unwrap(), PCI_NAMES);
        assert!(aml.ends_with(&S5));
        // Scope (\_SB_), 2-byte PkgLength; Device (PCI0), 2-byte PkgLength;
        // then the names, written out by hand.
        assert_eq!((aml[0], aml[1] >> 6, &aml[3..8]), (0x10, 1, &b"\\_SB_"[..]));
        let pci0 = &aml[8..];
        assert_eq!((pci0[0], pci0[1], pci0[2] >> 6), (0x5B, 0x82, 1));
        assert_eq!(&pci0[4..8], b"PCI0");
        #[rustfmt::skip]
        let ids: [u8; 48] = [
            0x08, b'_', b'H', b'I', b'D', 0x0C, 0x41, 0xD0, 0x0A, 0x08,
            0x08, b'_', b'C', b'I', b'D', 0x0C, 0x41, 0xD0, 0x0A, 0x03,
            0x08, b'_', b'U', b'I', b'D', 0x00,
            0x08, b'_', b'S', b'E', b'G', 0x00,
            0x08, b'_', b'B', b'B', b'N', 0x00,
            0x08, b'_', b'C', b'R', b'S', 0x11, 0x48, 0x05, 0x0A, 0x54,
        ];
        assert_eq!(&pci0[8..56], &ids);
        assert_eq!(
            value_of(aml, "\\_SB_.MRES._HID"),
            Ok(Data::Integer(0x020C_D041))
        );
        assert_eq!(value_of(aml, "\\_SB_.MRES._UID"), Ok(Data::Integer(1)));
    }

    #[test]
    fn host_bridge_crs_by_hand() {
        let t = dsdt(&pci_cfg(DEFAULT_PCI_HOST));
        #[rustfmt::skip]
        let expected: [u8; 84] = [
            // WordBusNumber 0..=0, length 1
            0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
            // WordIO 0x0000..=0x0CF7
            0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03,
            0x00, 0x00, 0x00, 0x00, 0xF7, 0x0C, 0x00, 0x00, 0xF8, 0x0C,
            // IO (Decode16, 0xCF8, 0xCF8, 1, 8)
            0x47, 0x01, 0xF8, 0x0C, 0xF8, 0x0C, 0x01, 0x08,
            // WordIO 0x0D00..=0xFFFF
            0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03,
            0x00, 0x00, 0x00, 0x0D, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0xF3,
            // DWordMemory 0xC0000000..=0xDFFFFFFF, non-cacheable, read-write
            0x87, 0x17, 0x00, 0x00, 0x0C, 0x01,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0, 0xFF, 0xFF, 0xFF, 0xDF,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20,
            // End Tag, checksum 0
            0x79, 0x00,
        ];
        assert_eq!(
            value_of(&t[36..], "\\_SB_.PCI0._CRS"),
            Ok(Data::Buffer(expected.to_vec()))
        );
        // The same buffer follows its BufferOp header in the table.
        let at = t
            .windows(4)
            .position(|w| w == [0x11, 0x48, 0x05, 0x0A])
            .unwrap();
        assert_eq!(&t[at + 4..at + 5], &[0x54]);
        assert_eq!(&t[at + 5..at + 89], &expected);
        // The ECAM reservation, byte for byte: Name (_CRS, Buffer (14) {
        // Memory32Fixed (ReadWrite, 0xE0000000, 1 MiB), End Tag }).
        let mres: [u8; 23] = [
            0x08, b'_', b'C', b'R', b'S', 0x11, 0x11, 0x0A, 0x0E, 0x86, 0x09, 0x00, 0x01, 0x00,
            0x00, 0x00, 0xE0, 0x00, 0x00, 0x10, 0x00, 0x79, 0x00,
        ];
        assert!(t[36..].ends_with(&[&mres[..], &S5[..]].concat()));
    }

    #[test]
    fn crs_follows_the_config() {
        let pci = PciHost {
            ecam_base: 0xB000_0000,
            bus_end: 0x3F,
            mmio_window: (0x8000_0000, 0x3000_0000),
            io_window: (0x1000, 0x1000),
            intx_gsi_base: 20,
        };
        let t = dsdt(&pci_cfg(pci));
        let Ok(Data::Buffer(crs)) = value_of(&t[36..], "\\_SB_.PCI0._CRS") else {
            panic!("no _CRS buffer")
        };
        let d = descriptors(&crs).unwrap();
        assert_eq!(d.len(), 5);
        assert_eq!(d[0], Descriptor::Address(2, 0x0C, 0, 0, 0, 0x3F, 0, 0x40));
        assert_eq!(d[1], Descriptor::Address(1, 0x0C, 3, 0, 0, 0xCF7, 0, 0xCF8));
        assert_eq!(d[2], Descriptor::Io(true, 0xCF8, 0xCF8, 1, 8));
        assert_eq!(
            d[3],
            Descriptor::Address(1, 0x0C, 3, 0, 0xD00, 0xFFFF, 0, 0xF300)
        );
        assert_eq!(
            d[4],
            Descriptor::Address(0, 0x0C, 1, 0, 0x8000_0000, 0xAFFF_FFFF, 0, 0x3000_0000)
        );
        let Ok(Data::Buffer(mres)) = value_of(&t[36..], "\\_SB_.MRES._CRS") else {
            panic!("no MRES _CRS buffer")
        };
        assert_eq!(
            descriptors(&mres),
            Ok(vec![Descriptor::Memory32Fixed(
                true,
                0xB000_0000,
                0x400_0000
            )])
        );
        let with_root = descriptors(&host_bridge_resources(&pci)).unwrap();
        assert_eq!(with_root, d);
    }

    #[test]
    fn prt_follows_the_rule() {
        for base in [16, 20] {
            let mut pci = DEFAULT_PCI_HOST;
            pci.intx_gsi_base = base;
            let t = dsdt(&pci_cfg(pci));
            let Ok(Data::Package(entries)) = value_of(&t[36..], "\\_SB_.PCI0._PRT") else {
                panic!("no _PRT package")
            };
            assert_eq!(entries.len(), 31 * 4);
            for (i, e) in entries.iter().enumerate() {
                let Data::Package(f) = e else {
                    panic!("entry {i} is not a package")
                };
                let (slot, pin) = (i as u64 / 4 + 1, i as u64 % 4);
                let f: Vec<u64> = f.iter().map(int).collect();
                // Address, pin, Source 0, SourceIndex = GSI.
                let gsi = u64::from(base) + (slot + pin) % 4;
                assert_eq!(f, [slot << 16 | 0xFFFF, pin, 0, gsi], "entry {i}");
                assert!((16..24).contains(&gsi));
            }
        }
        // The first entry by hand: Package (4) { 0x0001FFFF, Zero, Zero, 17 }.
        let t = dsdt(&pci_cfg(DEFAULT_PCI_HOST));
        let first = [
            0x12, 0x0B, 0x04, 0x0C, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0x00, 0x0A, 0x11,
        ];
        // Name (_PRT, Package (124) { first, ... }): a 2-byte PkgLength.
        let at = t.windows(4).position(|w| w == b"_PRT").unwrap();
        assert_eq!((t[at + 4], t[at + 5] >> 6, t[at + 7]), (0x12, 1, 124));
        assert_eq!(&t[at + 8..at + 20], &first);
        // The last: device 31, INTD, GSI 16 + (31 + 3) % 4 = 18.
        let last = [
            0x12, 0x0C, 0x04, 0x0C, 0xFF, 0xFF, 0x1F, 0x00, 0x0A, 0x03, 0x00, 0x0A, 0x12,
        ];
        let prt_end = t.windows(4).position(|w| w == b"MRES").unwrap() - 3;
        assert_eq!(&t[prt_end - 13..prt_end], &last);
    }
}
