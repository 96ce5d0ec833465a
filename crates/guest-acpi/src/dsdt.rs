//! The Differentiated System Description Table: a definition block whose
//! AML declares `\_S5_` (so Linux can power the VM off) and, if asked, a PCI
//! host bridge.
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
//!
//! Scope (\_SB_) { Device (PCI0) { Name (_HID, EisaId ("PNP0A03")) Name (_UID, 0) } }
//!   10 1D 5C 5F 53 42 5F                 ScopeOp, PkgLength 29, "\_SB_"
//!   5B 82 15 50 43 49 30                 DeviceOp, PkgLength 21, "PCI0"
//!   08 5F 48 49 44 0C 41 D0 0A 03        Name _HID, DWord 0x030AD041
//!   08 5F 55 49 44 00                    Name _UID, Zero
//! ```
//!
//! The table's revision is 2: AML integers are 64 bits wide.

use alloc::vec::Vec;

use crate::aml::{device, eisa_id, integer, name, package, scope, ROOT_CHAR};
use crate::config::AcpiConfig;
use crate::sdt::Sdt;

const REVISION: u8 = 2;

/// The DSDT for `cfg`.
pub(crate) fn dsdt(cfg: &AcpiConfig) -> Vec<u8> {
    let mut t = Sdt::new(b"DSDT", REVISION);
    t.bytes(&aml_body(cfg));
    t.finish()
}

/// The AML after the header.
fn aml_body(cfg: &AcpiConfig) -> Vec<u8> {
    let mut body = Vec::new();
    if cfg.pci_host_bridge {
        let mut pci0 = name(b"_HID", &eisa_id(b"PNP0A03"));
        pci0.extend_from_slice(&name(b"_UID", &integer(0)));
        let sb = [ROOT_CHAR, b'_', b'S', b'B', b'_'];
        body.extend_from_slice(&scope(&sb, &device(b"PCI0", &pci0)));
    }
    let typ = integer(u64::from(cfg.s5_slp_typ));
    body.extend_from_slice(&name(
        b"_S5_",
        &package(&[typ.clone(), typ, integer(0), integer(0)]),
    ));
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aml::tests::names_in;
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

    #[test]
    fn pci_host_bridge() {
        let mut cfg = AcpiConfig::new(2);
        cfg.pci_host_bridge = true;
        let t = dsdt(&cfg);
        assert_table(&t, b"DSDT", 2);
        let expected: [u8; 30] = [
            0x10, 0x1D, 0x5C, 0x5F, 0x53, 0x42, 0x5F, // Scope (\_SB_)
            0x5B, 0x82, 0x15, 0x50, 0x43, 0x49, 0x30, // Device (PCI0)
            0x08, 0x5F, 0x48, 0x49, 0x44, 0x0C, 0x41, 0xD0, 0x0A, 0x03, // _HID
            0x08, 0x5F, 0x55, 0x49, 0x44, 0x00, // _UID
        ];
        assert_eq!(&t[36..66], &expected);
        assert_eq!(&t[66..], &S5);
        assert_eq!(
            names_in(&t[36..]),
            Ok(vec![
                String::from("\\_SB_.PCI0"),
                String::from("\\_SB_.PCI0._HID"),
                String::from("\\_SB_.PCI0._UID"),
                String::from("\\_S5_"),
            ])
        );
    }
}
