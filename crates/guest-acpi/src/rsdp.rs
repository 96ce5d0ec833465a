//! The Root System Description Pointer, revision 2 (ACPI 6.5, 5.2.5.3):
//! signature, the RSDT and XSDT addresses and two checksums.

use crate::sdt::{checksum, OEM_ID};

/// Bytes of a revision 2 RSDP.
pub(crate) const RSDP_LEN: usize = 36;
/// Bytes the first (ACPI 1.0) checksum covers.
const V1_LEN: usize = 20;

/// The RSDP pointing at an RSDT at `rsdt` and an XSDT at `xsdt`.
pub(crate) fn rsdp(rsdt: u32, xsdt: u64) -> [u8; RSDP_LEN] {
    let mut r = [0u8; RSDP_LEN];
    r[0..8].copy_from_slice(b"RSD PTR ");
    r[9..15].copy_from_slice(&OEM_ID);
    r[15] = 2; // revision: ACPI 2.0 and later
    r[16..20].copy_from_slice(&rsdt.to_le_bytes());
    r[20..24].copy_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    r[24..32].copy_from_slice(&xsdt.to_le_bytes());
    r[8] = checksum(&r[..V1_LEN]);
    r[32] = checksum(&r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_checksums_hold() {
        let r = rsdp(0xE_0040, 0xE_0080);
        assert_eq!(&r[..8], b"RSD PTR ");
        assert_eq!(r[..20].iter().fold(0u8, |s, &b| s.wrapping_add(b)), 0);
        assert_eq!(r.iter().fold(0u8, |s, &b| s.wrapping_add(b)), 0);
        assert_eq!(r[15], 2);
        assert_eq!(u32::from_le_bytes(r[16..20].try_into().unwrap()), 0xE_0040);
        assert_eq!(u32::from_le_bytes(r[20..24].try_into().unwrap()), 36);
        assert_eq!(u64::from_le_bytes(r[24..32].try_into().unwrap()), 0xE_0080);
        assert_eq!(&r[33..], &[0, 0, 0]);
    }
}
