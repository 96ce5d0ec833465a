//! The PCI Express memory-mapped configuration space table, MCFG (PCI
//! Firmware Specification 3.x, 4.1.2): after the header, 8 reserved bytes,
//! then one 16-byte allocation entry per ECAM window. The VM has one:
//! segment group 0, buses `0..=bus_end`.

use alloc::vec::Vec;

use crate::config::PciHost;
use crate::sdt::Sdt;

const REVISION: u8 = 1;
/// Bytes of the MCFG with one allocation entry.
pub(crate) const MCFG_LEN: usize = crate::sdt::HEADER_LEN + 8 + 16;

/// The MCFG for `pci`.
pub(crate) fn mcfg(pci: &PciHost) -> Vec<u8> {
    let mut t = Sdt::new(b"MCFG", REVISION);
    t.u64(0); // reserved
    t.u64(pci.ecam_base)
        .u16(0) // PCI segment group
        .u8(0) // start bus
        .u8(pci.bus_end)
        .u32(0); // reserved
    debug_assert_eq!(t.len(), MCFG_LEN);
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_PCI_HOST;
    use crate::sdt::tests::assert_table;

    #[test]
    fn one_allocation_entry() {
        let t = mcfg(&DEFAULT_PCI_HOST);
        assert_table(&t, b"MCFG", 1);
        assert_eq!(t.len(), 60);
        assert_eq!(&t[36..44], &[0; 8]);
        assert_eq!(
            &t[44..60],
            &[
                0x00, 0x00, 0x00, 0xE0, 0x00, 0x00, 0x00, 0x00, // base address
                0x00, 0x00, // segment group
                0x00, 0x00, // start bus, end bus
                0x00, 0x00, 0x00, 0x00, // reserved
            ]
        );
        let mut pci = DEFAULT_PCI_HOST;
        pci.ecam_base = 0xB000_0000;
        pci.bus_end = 0xFF;
        let t = mcfg(&pci);
        assert_table(&t, b"MCFG", 1);
        assert_eq!(&t[44..56], &[0, 0, 0, 0xB0, 0, 0, 0, 0, 0, 0, 0, 0xFF]);
    }
}
