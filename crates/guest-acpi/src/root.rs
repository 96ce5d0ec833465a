//! The root tables listing every other table: the XSDT (64-bit pointers,
//! what ACPI 2.0+ OSes read) and the RSDT (32-bit pointers, for OSes and
//! options such as Linux's `acpi=rsdt` that ask for it).

use alloc::vec::Vec;

use crate::sdt::Sdt;

/// The XSDT listing `tables`.
pub(crate) fn xsdt(tables: &[u64]) -> Vec<u8> {
    let mut t = Sdt::new(b"XSDT", 1);
    for &a in tables {
        t.u64(a);
    }
    t.finish()
}

/// The RSDT listing `tables`.
pub(crate) fn rsdt(tables: &[u32]) -> Vec<u8> {
    let mut t = Sdt::new(b"RSDT", 1);
    for &a in tables {
        t.u32(a);
    }
    t.finish()
}

/// Bytes of a root table of `n` entries of `width` bytes.
pub(crate) const fn root_len(n: usize, width: usize) -> usize {
    crate::sdt::HEADER_LEN + n * width
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdt::tests::assert_table;

    #[test]
    fn entries_follow_the_header() {
        let x = xsdt(&[0x1_0000_0000, 0xE_0100]);
        assert_table(&x, b"XSDT", 1);
        assert_eq!(x.len(), root_len(2, 8));
        assert_eq!(
            u64::from_le_bytes(x[36..44].try_into().unwrap()),
            0x1_0000_0000
        );
        assert_eq!(u64::from_le_bytes(x[44..52].try_into().unwrap()), 0xE_0100);
        let r = rsdt(&[0xE_0100, 0xE_0200]);
        assert_table(&r, b"RSDT", 1);
        assert_eq!(r.len(), root_len(2, 4));
        assert_eq!(u32::from_le_bytes(r[40..44].try_into().unwrap()), 0xE_0200);
    }
}
