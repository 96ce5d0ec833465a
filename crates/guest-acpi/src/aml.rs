//! The few AML encodings the DSDT needs (ACPI 6.5, chapter 20): package
//! lengths, name segments, integers, `Name`, `Buffer`, `Package`, `Scope`,
//! `Device` and `EISAID()`. Encoded by hand, byte for byte from the grammar.

use alloc::vec::Vec;

const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const NAME_OP: u8 = 0x08;
const BYTE_PREFIX: u8 = 0x0A;
const WORD_PREFIX: u8 = 0x0B;
const DWORD_PREFIX: u8 = 0x0C;
const QWORD_PREFIX: u8 = 0x0E;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const EXT_OP_PREFIX: u8 = 0x5B;
const DEVICE_OP: u8 = 0x82;
/// `\`: a name string starting at the namespace root.
pub(crate) const ROOT_CHAR: u8 = 0x5C;

/// Largest PkgLength: 28 bits.
const PKG_LENGTH_MAX: usize = 0x0FFF_FFFF;

/// The PkgLength of an object whose bytes after the PkgLength number
/// `body_len`. The encoded value counts the PkgLength's own bytes: one byte
/// holds up to 63 (bits 5:0); otherwise bits 7:6 of the lead byte give the
/// number of following bytes (1..=3), its bits 3:0 the low nibble, and the
/// following bytes the rest, least significant first.
pub(crate) fn pkg_length(body_len: usize) -> Vec<u8> {
    if body_len < 0x3F {
        return alloc::vec![(body_len + 1) as u8];
    }
    let (extra, total) = if body_len + 2 <= 0xFFF {
        (1, body_len + 2)
    } else if body_len + 3 <= 0xF_FFFF {
        (2, body_len + 3)
    } else {
        (3, body_len + 4)
    };
    debug_assert!(total <= PKG_LENGTH_MAX, "AML object too large");
    let mut out = Vec::with_capacity(1 + extra);
    out.push(((extra as u8) << 6) | (total & 0xF) as u8);
    for i in 0..extra {
        out.push((total >> (4 + 8 * i)) as u8);
    }
    out
}

/// A name segment: 4 characters, the first `A-Z` or `_`, the others
/// `A-Z`, `0-9` or `_` (all names here are constants).
pub(crate) fn name_seg(seg: &[u8; 4]) -> [u8; 4] {
    debug_assert!(seg[0].is_ascii_uppercase() || seg[0] == b'_');
    debug_assert!(seg[1..]
        .iter()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_'));
    *seg
}

/// An integer in its shortest encoding: `Zero`, `One`, or a byte, word,
/// dword or qword constant.
pub(crate) fn integer(v: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    match v {
        0 => out.push(ZERO_OP),
        1 => out.push(ONE_OP),
        2..=0xFF => out.extend_from_slice(&[BYTE_PREFIX, v as u8]),
        0x100..=0xFFFF => {
            out.push(WORD_PREFIX);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xFFFF_FFFF => {
            out.push(DWORD_PREFIX);
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        _ => {
            out.push(QWORD_PREFIX);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// `EISAID("PNPxxxx")`: the three letters packed 5 bits each into a
/// big-endian word, then the four hex digits, as a dword constant.
pub(crate) fn eisa_id(id: &[u8; 7]) -> Vec<u8> {
    let letter = |c: u8| u16::from(c - 0x40) & 0x1F;
    let hex = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        _ => (c | 0x20) - b'a' + 10,
    };
    let word = (letter(id[0]) << 10) | (letter(id[1]) << 5) | letter(id[2]);
    alloc::vec![
        DWORD_PREFIX,
        (word >> 8) as u8,
        word as u8,
        (hex(id[3]) << 4) | hex(id[4]),
        (hex(id[5]) << 4) | hex(id[6]),
    ]
}

/// `Name(seg, value)`.
pub(crate) fn name(seg: &[u8; 4], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + value.len());
    out.push(NAME_OP);
    out.extend_from_slice(&name_seg(seg));
    out.extend_from_slice(value);
    out
}

/// `Package(n) { elements }` with `n` = the number of elements (< 256).
pub(crate) fn package(elements: &[Vec<u8>]) -> Vec<u8> {
    debug_assert!(elements.len() < 256);
    let mut body = alloc::vec![elements.len() as u8];
    for e in elements {
        body.extend_from_slice(e);
    }
    let mut out = alloc::vec![PACKAGE_OP];
    out.extend_from_slice(&pkg_length(body.len()));
    out.extend_from_slice(&body);
    out
}

/// `Buffer(n) { bytes }` with `n` = the number of bytes: BufferOp,
/// PkgLength, the BufferSize integer, the bytes.
pub(crate) fn buffer(bytes: &[u8]) -> Vec<u8> {
    let mut body = integer(bytes.len() as u64);
    body.extend_from_slice(bytes);
    let mut out = alloc::vec![BUFFER_OP];
    out.extend_from_slice(&pkg_length(body.len()));
    out.extend_from_slice(&body);
    out
}

/// `Scope(path) { terms }`; `path` is an encoded name string.
pub(crate) fn scope(path: &[u8], terms: &[u8]) -> Vec<u8> {
    let mut out = alloc::vec![SCOPE_OP];
    out.extend_from_slice(&pkg_length(path.len() + terms.len()));
    out.extend_from_slice(path);
    out.extend_from_slice(terms);
    out
}

/// `Device(seg) { terms }`.
pub(crate) fn device(seg: &[u8; 4], terms: &[u8]) -> Vec<u8> {
    let mut out = alloc::vec![EXT_OP_PREFIX, DEVICE_OP];
    out.extend_from_slice(&pkg_length(4 + terms.len()));
    out.extend_from_slice(&name_seg(seg));
    out.extend_from_slice(terms);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec;

    #[test]
    fn package_lengths_count_themselves() {
        assert_eq!(pkg_length(0), [0x01]);
        assert_eq!(pkg_length(7), [0x08]);
        assert_eq!(pkg_length(0x3E), [0x3F]);
        // 0x3F body bytes need a 2-byte PkgLength: 0x41 in total.
        assert_eq!(pkg_length(0x3F), [0x41, 0x04]);
        assert_eq!(pkg_length(0xFFD), [0x4F, 0xFF]);
        assert_eq!(pkg_length(0xFFE), [0x81, 0x00, 0x01]);
        assert_eq!(pkg_length(0xF_FFFC), [0x8F, 0xFF, 0xFF]);
        assert_eq!(pkg_length(0xF_FFFD), [0xC1, 0x00, 0x00, 0x01]);
        for body in [
            0, 1, 0x3E, 0x3F, 0x40, 0x100, 0xFFD, 0xFFE, 0x1_0000, 0xF_FFFD,
        ] {
            let enc = pkg_length(body);
            assert_eq!(decode_pkg_length(&enc), Some((body + enc.len(), enc.len())));
        }
    }

    #[test]
    fn integers_use_the_shortest_form() {
        assert_eq!(integer(0), [0x00]);
        assert_eq!(integer(1), [0x01]);
        assert_eq!(integer(5), [0x0A, 0x05]);
        assert_eq!(integer(0x1234), [0x0B, 0x34, 0x12]);
        assert_eq!(integer(0x12_3456), [0x0C, 0x56, 0x34, 0x12, 0x00]);
        assert_eq!(integer(0x1_0000_0000), [0x0E, 0, 0, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn eisa_ids() {
        // The well-known values: PNP0A03 = 0x030AD041, PNP0A08 = 0x080AD041,
        // PNP0501 (16550 UART) = 0x0105D041.
        assert_eq!(eisa_id(b"PNP0A03"), [0x0C, 0x41, 0xD0, 0x0A, 0x03]);
        assert_eq!(eisa_id(b"PNP0A08")[1..], 0x080A_D041u32.to_le_bytes());
        assert_eq!(eisa_id(b"PNP0501")[1..], 0x0105_D041u32.to_le_bytes());
        assert_eq!(eisa_id(b"PNP0a03"), eisa_id(b"PNP0A03"));
    }

    #[test]
    fn objects() {
        assert_eq!(
            name(
                b"_S5_",
                &package(&[integer(5), integer(5), integer(0), integer(0)])
            ),
            [0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00]
        );
        assert_eq!(
            device(b"DEV0", &name(b"_UID", &integer(1))),
            [0x5B, 0x82, 0x0B, b'D', b'E', b'V', b'0', 0x08, b'_', b'U', b'I', b'D', 0x01]
        );
        assert_eq!(scope(&[ROOT_CHAR], &[]), [0x10, 0x02, 0x5C]);
    }

    /// (value, bytes it took) of the PkgLength at the start of `b`.
    pub(crate) fn decode_pkg_length(b: &[u8]) -> Option<(usize, usize)> {
        let lead = *b.first()?;
        let extra = usize::from(lead >> 6);
        if extra == 0 {
            return Some((usize::from(lead & 0x3F), 1));
        }
        if lead & 0x30 != 0 {
            return None;
        }
        let mut v = usize::from(lead & 0xF);
        for i in 0..extra {
            v |= usize::from(*b.get(1 + i)?) << (4 + 8 * i);
        }
        Some((v, 1 + extra))
    }

    /// A data object as the test reader sees it.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub(crate) enum Data {
        Integer(u64),
        Buffer(Vec<u8>),
        Package(Vec<Data>),
    }

    impl Data {
        pub(crate) fn integer(&self) -> Option<u64> {
            match *self {
                Data::Integer(v) => Some(v),
                _ => None,
            }
        }
    }

    /// A strict reader for the subset of AML this crate writes: a term list
    /// of `Name`, `Scope` and `Device`, data objects being integers,
    /// EISA IDs (dwords), buffers and packages of data objects. It returns
    /// every name declared, with its full path, and fails unless every
    /// length is exact.
    pub(crate) fn names_in(terms: &[u8]) -> Result<Vec<String>, String> {
        Ok(objects_in(terms)?.into_iter().map(|(n, _)| n).collect())
    }

    /// Like [`names_in`], with each `Name`'s value (`None` for a device).
    pub(crate) fn objects_in(terms: &[u8]) -> Result<Vec<(String, Option<Data>)>, String> {
        let mut out = Vec::new();
        walk_terms(terms, "\\", &mut out)?;
        Ok(out)
    }

    /// The value of the `Name` at `path` in `terms`.
    pub(crate) fn value_of(terms: &[u8], path: &str) -> Result<Data, String> {
        objects_in(terms)?
            .into_iter()
            .find(|(n, _)| n == path)
            .and_then(|(_, v)| v)
            .ok_or_else(|| alloc::format!("no Name {path}"))
    }

    fn seg(b: &[u8]) -> Result<String, String> {
        let s = b.get(..4).ok_or("name segment past the end")?;
        let ok = (s[0].is_ascii_uppercase() || s[0] == b'_')
            && s[1..]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_');
        if !ok {
            return Err(alloc::format!("bad name segment {s:?}"));
        }
        Ok(String::from_utf8(s.to_vec()).unwrap())
    }

    fn join(scope: &str, name: &str) -> String {
        if scope == "\\" {
            alloc::format!("\\{name}")
        } else {
            alloc::format!("{scope}.{name}")
        }
    }

    fn le(b: &[u8]) -> u64 {
        b.iter().rev().fold(0, |v, &x| (v << 8) | u64::from(x))
    }

    /// The data object at the start of `b` and its length.
    fn data(b: &[u8]) -> Result<(Data, usize), String> {
        let int = |n: usize| -> Result<(Data, usize), String> {
            let v = b.get(1..1 + n).ok_or("integer past the end")?;
            Ok((Data::Integer(le(v)), 1 + n))
        };
        match *b.first().ok_or("data object past the end")? {
            ZERO_OP => Ok((Data::Integer(0), 1)),
            ONE_OP => Ok((Data::Integer(1), 1)),
            BYTE_PREFIX => int(1),
            WORD_PREFIX => int(2),
            DWORD_PREFIX => int(4),
            QWORD_PREFIX => int(8),
            BUFFER_OP => {
                let (len, n) = decode_pkg_length(&b[1..]).ok_or("bad buffer length")?;
                let body = b.get(1 + n..1 + len).ok_or("buffer past the end")?;
                let (size, used) = data(body)?;
                let bytes = &body[used..];
                if size != Data::Integer(bytes.len() as u64) {
                    return Err(alloc::format!(
                        "buffer size {size:?} for {} bytes",
                        bytes.len()
                    ));
                }
                Ok((Data::Buffer(bytes.to_vec()), 1 + len))
            }
            PACKAGE_OP => {
                let (len, n) = decode_pkg_length(&b[1..]).ok_or("bad package length")?;
                let body = b.get(1 + n..1 + len).ok_or("package past the end")?;
                let count = usize::from(*body.first().ok_or("no element count")?);
                let mut at = 1;
                let mut elements = Vec::new();
                for _ in 0..count {
                    let (e, used) = data(body.get(at..).ok_or("element past the end")?)?;
                    elements.push(e);
                    at += used;
                }
                if at != body.len() {
                    return Err(alloc::format!(
                        "package of {count} holds {at} of {} bytes",
                        body.len()
                    ));
                }
                Ok((Data::Package(elements), 1 + len))
            }
            op => Err(alloc::format!("unexpected data opcode {op:#04x}")),
        }
    }

    fn walk_terms(
        mut b: &[u8],
        scope: &str,
        out: &mut Vec<(String, Option<Data>)>,
    ) -> Result<(), String> {
        while let Some(&op) = b.first() {
            let used = match op {
                NAME_OP => {
                    let name = seg(&b[1..])?;
                    let (value, len) = data(b.get(5..).ok_or("Name without value")?)?;
                    out.push((join(scope, &name), Some(value)));
                    5 + len
                }
                SCOPE_OP => {
                    let (len, n) = decode_pkg_length(&b[1..]).ok_or("bad scope length")?;
                    let body = b.get(1 + n..1 + len).ok_or("scope past the end")?;
                    let (path, at) = if body.first() == Some(&ROOT_CHAR) {
                        (join("\\", &seg(&body[1..])?), 5)
                    } else {
                        (join(scope, &seg(body)?), 4)
                    };
                    walk_terms(&body[at..], &path, out)?;
                    1 + len
                }
                EXT_OP_PREFIX if b.get(1) == Some(&DEVICE_OP) => {
                    let (len, n) = decode_pkg_length(&b[2..]).ok_or("bad device length")?;
                    let body = b.get(2 + n..2 + len).ok_or("device past the end")?;
                    let path = join(scope, &seg(body)?);
                    out.push((path.clone(), None));
                    walk_terms(&body[4..], &path, out)?;
                    2 + len
                }
                op => return Err(alloc::format!("unexpected opcode {op:#04x}")),
            };
            b = b.get(used..).ok_or("object past the end")?;
        }
        Ok(())
    }

    #[test]
    fn buffers_and_nested_packages() {
        assert_eq!(buffer(&[]), [0x11, 0x02, 0x00]);
        assert_eq!(buffer(&[0x79, 0x00]), [0x11, 0x05, 0x0A, 0x02, 0x79, 0x00]);
        // 300 bytes: a word BufferSize and a 2-byte PkgLength (303 + 2 = 0x131).
        let big = buffer(&[0xAA; 300]);
        assert_eq!(&big[..5], &[0x11, 0x41, 0x13, 0x0B, 0x2C]);
        assert_eq!(big[5], 0x01);
        assert_eq!(big.len(), 1 + 2 + 3 + 300);
        assert_eq!(data(&big), Ok((Data::Buffer(vec![0xAA; 300]), big.len())));
        let inner = package(&[integer(0x1_FFFF), integer(2), integer(0), integer(17)]);
        assert_eq!(
            inner,
            [0x12, 0x0C, 0x04, 0x0C, 0xFF, 0xFF, 0x01, 0x00, 0x0A, 0x02, 0x00, 0x0A, 0x11]
        );
        let outer = package(&vec![inner; 20]);
        // 1 count byte + 20 x 13 = 261 body bytes: a 2-byte PkgLength.
        assert_eq!(&outer[..4], &[0x12, 0x47, 0x10, 20]);
        let (value, used) = data(&outer).unwrap();
        assert_eq!(used, outer.len());
        let Data::Package(entries) = value else {
            panic!("not a package")
        };
        assert_eq!(entries.len(), 20);
        assert_eq!(
            entries[19],
            Data::Package(vec![
                Data::Integer(0x1_FFFF),
                Data::Integer(2),
                Data::Integer(0),
                Data::Integer(17)
            ])
        );
        let mut bad = buffer(&[1, 2, 3]);
        bad[3] = 4; // BufferSize says 4 bytes, 3 follow
        assert!(data(&bad).is_err());
    }

    #[test]
    fn reader_rejects_bad_lengths() {
        let mut s5 = name(b"_S5_", &package(&[integer(5), integer(0)]));
        assert_eq!(names_in(&s5), Ok(vec![String::from("\\_S5_")]));
        s5[6] += 1; // package claims a byte more than there is
        assert!(names_in(&s5).is_err());
        let mut dev = device(b"PCI0", &name(b"_UID", &integer(0)));
        dev[2] -= 1;
        assert!(names_in(&dev).is_err());
    }
}
