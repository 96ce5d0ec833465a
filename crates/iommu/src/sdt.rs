//! The ACPI system description table header (ACPI 6.5, 5.2.6) checked over
//! raw bytes, bounds-checked little-endian readers, and [`TableError`], the
//! error of both table parsers.

use core::fmt;

/// Bytes in the standard header.
pub(crate) const HEADER_LEN: usize = 36;

/// Why a DMAR or IVRS table (or a structure in it) was refused. Offsets are
/// from the start of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// Fewer bytes than the standard header (or the table's fixed fields).
    TooShort {
        /// The table's signature as expected.
        signature: [u8; 4],
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The signature is not the one expected.
    BadSignature {
        /// The signature expected.
        expected: [u8; 4],
        /// The signature found.
        found: [u8; 4],
    },
    /// The header's length field is larger than the bytes given, or smaller
    /// than the fixed part of the table.
    BadLength {
        /// The table's signature.
        signature: [u8; 4],
        /// The header's length field.
        length: u32,
        /// Bytes available.
        available: usize,
    },
    /// The bytes of the table do not sum to zero.
    BadChecksum {
        /// The table's signature.
        signature: [u8; 4],
        /// Their sum modulo 256.
        sum: u8,
    },
    /// A structure inside the table has a length that is too small for its
    /// kind or runs past the end of the table (or of its parent).
    BadStructLength {
        /// What the structure is (e.g. "DRHD", "device scope", "IVHD").
        what: &'static str,
        /// Where it starts.
        offset: usize,
        /// Its length field (or the bytes its type needs).
        length: usize,
        /// Bytes left for it in the table or its parent.
        available: usize,
    },
    /// A field holds a value the specification does not allow.
    BadField {
        /// What the field is.
        what: &'static str,
        /// Where the structure holding it starts.
        offset: usize,
        /// The value found.
        value: u64,
    },
    /// An IVHD range-end entry without a range start before it, or a range
    /// start not closed before the next range start or the end of the block.
    UnpairedRange {
        /// Offset of the offending entry (or of the block end).
        offset: usize,
    },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sig = |s: &[u8; 4]| Sig(*s);
        match self {
            Self::TooShort {
                signature,
                len,
                need,
            } => write!(
                f,
                "{} table has {len} bytes, needs at least {need}",
                sig(signature)
            ),
            Self::BadSignature { expected, found } => write!(
                f,
                "expected an {} table, found signature {}",
                sig(expected),
                sig(found)
            ),
            Self::BadLength {
                signature,
                length,
                available,
            } => write!(
                f,
                "{} header length {length} does not fit the {available} bytes given \
                 (or is shorter than the table's fixed fields)",
                sig(signature)
            ),
            Self::BadChecksum { signature, sum } => write!(
                f,
                "{} checksum wrong: bytes sum to {sum:#04x}, not 0",
                sig(signature)
            ),
            Self::BadStructLength {
                what,
                offset,
                length,
                available,
            } => write!(
                f,
                "{what} at offset {offset:#x} has length {length}, \
                 but only {available} bytes are left for it (or it is too short for its kind)"
            ),
            Self::BadField {
                what,
                offset,
                value,
            } => write!(
                f,
                "{what} of the structure at offset {offset:#x} has the invalid value {value:#x}"
            ),
            Self::UnpairedRange { offset } => write!(
                f,
                "IVHD device entry at offset {offset:#x}: range start and end do not pair up"
            ),
        }
    }
}

/// Four signature bytes shown as text where printable.
struct Sig([u8; 4]);

impl fmt::Display for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for &b in &self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", char::from(b))?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_str("\"")
    }
}

/// Checks the header of a table with `signature` whose fixed fields take
/// `fixed_len` bytes (header included) and returns the table's bytes (the
/// header's length, which may be shorter than `bytes`).
pub(crate) fn check_table(
    bytes: &[u8],
    signature: [u8; 4],
    fixed_len: usize,
) -> Result<&[u8], TableError> {
    if bytes.len() < HEADER_LEN {
        return Err(TableError::TooShort {
            signature,
            len: bytes.len(),
            need: HEADER_LEN,
        });
    }
    let found = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if found != signature {
        return Err(TableError::BadSignature {
            expected: signature,
            found,
        });
    }
    let length = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let len = usize::try_from(length).unwrap_or(usize::MAX);
    if len > bytes.len() || len < fixed_len {
        return Err(TableError::BadLength {
            signature,
            length,
            available: bytes.len(),
        });
    }
    let table = &bytes[..len];
    let sum = table.iter().fold(0u8, |acc, &b| acc.wrapping_add(b));
    if sum != 0 {
        return Err(TableError::BadChecksum { signature, sum });
    }
    Ok(table)
}

/// Walks the variable-length structures of a table from byte `start` to its end: each begins
/// with its type and has its 16-bit length at offset 2 (DMAR remapping structures, IVRS blocks);
/// `f` gets each structure's bytes and offset. A length below 4 or past the end is an error
/// naming `what`.
pub(crate) fn structures<'a>(
    table: &'a [u8],
    start: usize,
    what: &'static str,
    mut f: impl FnMut(&'a [u8], usize) -> Result<(), TableError>,
) -> Result<(), TableError> {
    let mut offset = start;
    while offset < table.len() {
        let available = table.len() - offset;
        let length = if available < 4 {
            0
        } else {
            usize::from(u16_at(table, offset + 2))
        };
        if length < 4 || length > available {
            return Err(TableError::BadStructLength {
                what,
                offset,
                length,
                available,
            });
        }
        f(&table[offset..offset + length], offset)?;
        offset += length;
    }
    Ok(())
}

/// Little-endian reads at offsets already checked to be in bounds by the
/// caller; out-of-bounds reads yield 0 rather than a panic (a parser bug
/// then shows as a wrong value, never as a crash on firmware input).
pub(crate) fn u8_at(bytes: &[u8], offset: usize) -> u8 {
    bytes.get(offset).copied().unwrap_or(0)
}

/// See [`u8_at`].
pub(crate) fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    let hi = offset.checked_add(1).map_or(0, |o| u8_at(bytes, o));
    u16::from_le_bytes([u8_at(bytes, offset), hi])
}

/// See [`u8_at`].
pub(crate) fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let hi = offset.checked_add(2).map_or(0, |o| u16_at(bytes, o));
    u32::from(u16_at(bytes, offset)) | (u32::from(hi) << 16)
}

/// See [`u8_at`].
pub(crate) fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let hi = offset.checked_add(4).map_or(0, |o| u32_at(bytes, o));
    u64::from(u32_at(bytes, offset)) | (u64::from(hi) << 32)
}

/// Test helper: a table with `signature`, `body` after the header, and a
/// correct length and checksum.
#[cfg(any(test, feature = "test-utils"))]
pub(crate) fn build_table(signature: &[u8; 4], revision: u8, body: &[u8]) -> alloc::vec::Vec<u8> {
    let mut t = alloc::vec::Vec::with_capacity(HEADER_LEN + body.len());
    t.extend_from_slice(signature);
    let len = u32::try_from(HEADER_LEN + body.len()).unwrap_or(u32::MAX);
    t.extend_from_slice(&len.to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, fixed below
    t.extend_from_slice(b"QUERCS");
    t.extend_from_slice(b"TESTTABL");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(b"QRCS");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(body);
    fix_checksum(&mut t);
    t
}

/// Test helper: rewrites byte 9 so the table sums to zero.
#[cfg(any(test, feature = "test-utils"))]
pub(crate) fn fix_checksum(t: &mut [u8]) {
    if t.len() > 9 {
        t[9] = 0;
        let sum = t.iter().fold(0u8, |acc, &b| acc.wrapping_add(b));
        t[9] = 0u8.wrapping_sub(sum);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::*;

    #[test]
    fn header_checks() {
        let t = build_table(b"DMAR", 1, &[0; 12]);
        assert_eq!(check_table(&t, *b"DMAR", 48).map(<[u8]>::len), Ok(48));
        assert_eq!(
            check_table(&t[..20], *b"DMAR", 48),
            Err(TableError::TooShort {
                signature: *b"DMAR",
                len: 20,
                need: 36
            })
        );
        assert!(matches!(
            check_table(&t, *b"IVRS", 48),
            Err(TableError::BadSignature { found, .. }) if &found == b"DMAR"
        ));
        assert!(matches!(
            check_table(&t[..47], *b"DMAR", 48),
            Err(TableError::BadLength {
                length: 48,
                available: 47,
                ..
            })
        ));
        assert!(matches!(
            check_table(&t, *b"DMAR", 49),
            Err(TableError::BadLength { .. })
        ));
        let mut bad = t.clone();
        bad[40] ^= 1;
        assert!(matches!(
            check_table(&bad, *b"DMAR", 48),
            Err(TableError::BadChecksum { sum: 1, .. })
        ));
        // Trailing bytes past the header's length are ignored.
        let mut longer = t.clone();
        longer.extend_from_slice(&[0xff; 8]);
        assert_eq!(check_table(&longer, *b"DMAR", 48).map(<[u8]>::len), Ok(48));
        let msg = format!(
            "{}",
            TableError::BadSignature {
                expected: *b"IVRS",
                found: [b'D', 0, b'A', 0xff]
            }
        );
        assert_eq!(
            msg,
            "expected an \"IVRS\" table, found signature \"D\\x00A\\xff\""
        );
    }

    #[test]
    fn readers_never_panic() {
        let b = [1, 2, 3];
        assert_eq!(u16_at(&b, 1), 0x0302);
        assert_eq!(u32_at(&b, 2), 3);
        assert_eq!(u64_at(&b, usize::MAX), 0);
    }
}
