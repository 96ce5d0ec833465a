//! The common system description table header (ACPI 6.5, 5.2.6) and the
//! checksum every ACPI structure carries: its bytes sum to zero.

use alloc::vec::Vec;

/// OEM ID in every table and the RSDP.
pub const OEM_ID: [u8; 6] = *b"QRCUS ";
/// OEM table ID in every table.
pub const OEM_TABLE_ID: [u8; 8] = *b"QUERCUS ";
/// Creator ID in every table.
pub const CREATOR_ID: [u8; 4] = *b"QRCS";
const OEM_REVISION: u32 = 1;
const CREATOR_REVISION: u32 = 1;

/// Bytes of the header.
pub(crate) const HEADER_LEN: usize = 36;
/// Offset of the length field.
const LENGTH: usize = 4;
/// Offset of the checksum byte.
pub(crate) const CHECKSUM: usize = 9;

/// The byte that makes `bytes` (with it at 0) sum to zero.
pub(crate) fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b)))
}

/// A table under construction: the header, then the body appended with the
/// little-endian writers; [`Sdt::finish`] fills in length and checksum.
pub(crate) struct Sdt(Vec<u8>);

impl Sdt {
    pub(crate) fn new(signature: &[u8; 4], revision: u8) -> Self {
        let mut t = Vec::with_capacity(256);
        t.extend_from_slice(signature);
        t.extend_from_slice(&0u32.to_le_bytes()); // length, in finish
        t.push(revision);
        t.push(0); // checksum, in finish
        t.extend_from_slice(&OEM_ID);
        t.extend_from_slice(&OEM_TABLE_ID);
        t.extend_from_slice(&OEM_REVISION.to_le_bytes());
        t.extend_from_slice(&CREATOR_ID);
        t.extend_from_slice(&CREATOR_REVISION.to_le_bytes());
        debug_assert_eq!(t.len(), HEADER_LEN);
        Sdt(t)
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    /// Bytes written so far, header included.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The finished table: length and checksum filled in.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        // Tables here are at most a few KiB: the cast cannot truncate.
        let len = self.0.len() as u32;
        self.0[LENGTH..LENGTH + 4].copy_from_slice(&len.to_le_bytes());
        self.0[CHECKSUM] = 0;
        self.0[CHECKSUM] = checksum(&self.0);
        self.0
    }
}

/// A 12-byte Generic Address Structure (ACPI 6.5, 5.2.3.2) in system I/O
/// space: `bits` wide at `port`, accessed `access` bytes at a time (1, 2, 4).
pub(crate) fn io_gas(port: u16, bits: u8, access: u8) -> [u8; 12] {
    const SYSTEM_IO: u8 = 1;
    let access_size = match access {
        1 => 1,
        2 => 2,
        4 => 3,
        _ => 0,
    };
    let mut g = [0u8; 12];
    g[0] = SYSTEM_IO;
    g[1] = bits;
    g[2] = 0; // bit offset
    g[3] = access_size;
    g[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    g
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Checks the header of `t` and that its bytes sum to zero.
    pub(crate) fn assert_table(t: &[u8], signature: &[u8; 4], revision: u8) {
        assert_eq!(&t[..4], signature);
        assert_eq!(
            u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize,
            t.len()
        );
        assert_eq!(t[8], revision);
        assert_eq!(&t[10..16], &OEM_ID);
        assert_eq!(&t[16..24], &OEM_TABLE_ID);
        assert_eq!(&t[28..32], &CREATOR_ID);
        assert_eq!(t.iter().fold(0u8, |s, &b| s.wrapping_add(b)), 0);
    }

    #[test]
    fn header_length_and_checksum() {
        let mut t = Sdt::new(b"TEST", 3);
        t.u8(0xAB).u16(0x1234).u32(0xDEAD_BEEF).u64(u64::MAX);
        assert_eq!(t.len(), HEADER_LEN + 15);
        let t = t.finish();
        assert_table(&t, b"TEST", 3);
        assert_eq!(&t[36..39], &[0xAB, 0x34, 0x12]);
    }

    #[test]
    fn gas_layout() {
        assert_eq!(
            io_gas(0xCF9, 8, 1),
            [1, 8, 0, 1, 0xF9, 0x0C, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(io_gas(0x600, 32, 2)[3], 2);
        assert_eq!(io_gas(0x608, 32, 4)[3], 3);
    }
}
