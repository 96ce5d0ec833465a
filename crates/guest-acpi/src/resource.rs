//! The resource data descriptors a `_CRS` buffer holds (ACPI 6.5, 6.4):
//! the small I/O Port, Fixed Memory Range and End Tag descriptors, and the
//! large Word/DWord Address Space descriptors a host bridge uses to give
//! its bus, I/O and memory windows.

use alloc::vec::Vec;

/// Small descriptor tag byte: type in bits 6:3, length in bits 2:0.
const fn small_tag(kind: u8, len: u8) -> u8 {
    (kind << 3) | len
}
/// I/O Port Descriptor (6.4.2.5): 7 bytes after the tag.
const IO_PORT: u8 = small_tag(0x08, 7);
/// End Tag (6.4.2.9): 1 byte (the checksum) after the tag.
const END_TAG: u8 = small_tag(0x0F, 1);
/// Large descriptor tags (bit 7 set, type in bits 6:0), 6.4.3.
const MEMORY32_FIXED: u8 = 0x86;
const DWORD_ADDRESS: u8 = 0x87;
const WORD_ADDRESS: u8 = 0x88;
/// Bytes after the large descriptors' 3-byte header.
const MEMORY32_FIXED_LEN: u16 = 9;
const DWORD_ADDRESS_LEN: u16 = 23;
const WORD_ADDRESS_LEN: u16 = 13;

/// I/O Port Descriptor information: the device decodes 16 address bits.
const DECODE16: u8 = 1;
/// Memory32Fixed information: read-write.
const READ_WRITE: u8 = 1;

/// Address Space Descriptor resource types (6.4.3.5.x, byte 3).
const MEMORY_RANGE: u8 = 0;
const IO_RANGE: u8 = 1;
const BUS_NUMBER_RANGE: u8 = 2;
/// General flags: _MAF (bit 3) and _MIF (bit 2) set: a fixed-size, fixed
/// window; _DEC (bit 1) clear: positive decode; bit 0 clear: the bridge
/// produces the range for the devices below it.
const PRODUCER_FIXED_WINDOW: u8 = 0b1100;
/// I/O type-specific flags: _RNG = 3, ISA and non-ISA ranges; _TTP, _TRS
/// clear (I/O on both sides, no translation).
const IO_ENTIRE_RANGE: u8 = 0b11;
/// Memory type-specific flags: _RW (bit 0) read-write, _MEM (bits 2:1) 0 =
/// non-cacheable, _MTP (bits 4:3) 0 = AddressRangeMemory, _TTP clear.
const MEMORY_NON_CACHEABLE_RW: u8 = 0b1;

/// A resource template under construction; [`Resources::finish`] appends
/// the End Tag.
pub(crate) struct Resources(Vec<u8>);

impl Resources {
    pub(crate) fn new() -> Self {
        Resources(Vec::new())
    }

    /// `IO (Decode16, min, max, align, len)`.
    pub(crate) fn io(&mut self, min: u16, max: u16, align: u8, len: u8) -> &mut Self {
        self.0.extend_from_slice(&[IO_PORT, DECODE16]);
        self.0.extend_from_slice(&min.to_le_bytes());
        self.0.extend_from_slice(&max.to_le_bytes());
        self.0.extend_from_slice(&[align, len]);
        self
    }

    /// `Memory32Fixed (ReadWrite, base, len)`.
    pub(crate) fn memory32_fixed(&mut self, base: u32, len: u32) -> &mut Self {
        self.0.push(MEMORY32_FIXED);
        self.0.extend_from_slice(&MEMORY32_FIXED_LEN.to_le_bytes());
        self.0.push(READ_WRITE);
        self.0.extend_from_slice(&base.to_le_bytes());
        self.0.extend_from_slice(&len.to_le_bytes());
        self
    }

    /// A Word Address Space Descriptor produced by a bridge: `min..=max`,
    /// fixed, no translation.
    fn word_window(&mut self, kind: u8, type_flags: u8, min: u16, max: u16) -> &mut Self {
        debug_assert!(min <= max);
        self.0.push(WORD_ADDRESS);
        self.0.extend_from_slice(&WORD_ADDRESS_LEN.to_le_bytes());
        self.0
            .extend_from_slice(&[kind, PRODUCER_FIXED_WINDOW, type_flags]);
        // Granularity, minimum, maximum, translation offset, length.
        for v in [0, min, max, 0, max.wrapping_sub(min).wrapping_add(1)] {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        self
    }

    /// `WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0,
    /// min, max, 0, max - min + 1)`.
    pub(crate) fn word_bus_number(&mut self, min: u8, max: u8) -> &mut Self {
        self.word_window(BUS_NUMBER_RANGE, 0, min.into(), max.into())
    }

    /// `WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode,
    /// EntireRange, 0, min, max, 0, max - min + 1)`; `max - min` below
    /// 0xFFFF (the length is a word).
    pub(crate) fn word_io(&mut self, min: u16, max: u16) -> &mut Self {
        self.word_window(IO_RANGE, IO_ENTIRE_RANGE, min, max)
    }

    /// `DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed,
    /// NonCacheable, ReadWrite, 0, base, base + len - 1, 0, len)`; `len`
    /// non-zero, the range below 4 GiB.
    pub(crate) fn dword_memory(&mut self, base: u32, len: u32) -> &mut Self {
        debug_assert!(len != 0 && base.checked_add(len - 1).is_some());
        self.0.push(DWORD_ADDRESS);
        self.0.extend_from_slice(&DWORD_ADDRESS_LEN.to_le_bytes());
        self.0
            .extend_from_slice(&[MEMORY_RANGE, PRODUCER_FIXED_WINDOW, MEMORY_NON_CACHEABLE_RW]);
        for v in [0, base, base + (len - 1), 0, len] {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        self
    }

    /// The template with its End Tag. The checksum byte is 0, which 6.4.2.9
    /// reads as "treat the checksum as good".
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[END_TAG, 0]);
        self.0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::String;
    use alloc::vec;

    /// A descriptor as the test reader sees it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Descriptor {
        /// (decode16, min, max, align, len)
        Io(bool, u16, u16, u8, u8),
        /// (writable, base, len)
        Memory32Fixed(bool, u32, u32),
        /// (type, general flags, type flags, granularity, min, max,
        /// translation, len), Word or DWord widened.
        Address(u8, u8, u8, u64, u64, u64, u64, u64),
    }

    fn le(b: &[u8]) -> u64 {
        b.iter().rev().fold(0, |v, &x| (v << 8) | u64::from(x))
    }

    /// Reads a resource template: every descriptor up to the End Tag,
    /// which must be last and whose checksum must be 0 or make the
    /// template sum to zero. Fails on any unknown tag or wrong length.
    pub(crate) fn descriptors(b: &[u8]) -> Result<Vec<Descriptor>, String> {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let tag = *b.get(at).ok_or("no End Tag")?;
            if tag & 0x80 == 0 {
                let len = usize::from(tag & 7);
                let body = b
                    .get(at + 1..at + 1 + len)
                    .ok_or("small item past the end")?;
                match tag >> 3 {
                    0x08 if len == 7 => out.push(Descriptor::Io(
                        body[0] & 1 == 1,
                        le(&body[1..3]) as u16,
                        le(&body[3..5]) as u16,
                        body[5],
                        body[6],
                    )),
                    0x0F if len == 1 => {
                        let sum = b[..at + 2].iter().fold(0u8, |s, &x| s.wrapping_add(x));
                        if body[0] != 0 && sum != 0 {
                            return Err(format!("bad checksum {:#04x}", body[0]));
                        }
                        if at + 2 != b.len() {
                            return Err(String::from("bytes after the End Tag"));
                        }
                        return Ok(out);
                    }
                    _ => return Err(format!("unexpected small item {tag:#04x}")),
                }
                at += 1 + len;
            } else {
                let len = le(b.get(at + 1..at + 3).ok_or("large item past the end")?) as usize;
                let body = b
                    .get(at + 3..at + 3 + len)
                    .ok_or("large item past the end")?;
                let address = |w: usize| {
                    let f = |i: usize| le(&body[3 + w * i..3 + w * (i + 1)]);
                    Descriptor::Address(body[0], body[1], body[2], f(0), f(1), f(2), f(3), f(4))
                };
                match (tag, len) {
                    (MEMORY32_FIXED, 9) => out.push(Descriptor::Memory32Fixed(
                        body[0] & 1 == 1,
                        le(&body[1..5]) as u32,
                        le(&body[5..9]) as u32,
                    )),
                    (DWORD_ADDRESS, 23) => out.push(address(4)),
                    (WORD_ADDRESS, 13) => out.push(address(2)),
                    _ => return Err(format!("unexpected large item {tag:#04x}, {len} bytes")),
                }
                at += 3 + len;
            }
        }
    }

    #[test]
    fn descriptors_byte_for_byte() {
        let mut r = Resources::new();
        r.word_bus_number(0, 0xFF)
            .word_io(0, 0xCF7)
            .io(0xCF8, 0xCF8, 1, 8)
            .dword_memory(0xC000_0000, 0x2000_0000)
            .memory32_fixed(0xE000_0000, 0x10_0000);
        let t = r.finish();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            // WordBusNumber 0..=0xFF
            0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00,
            0x00, 0x00, 0x00, 0x00, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x01,
            // WordIO 0..=0xCF7
            0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03,
            0x00, 0x00, 0x00, 0x00, 0xF7, 0x0C, 0x00, 0x00, 0xF8, 0x0C,
            // IO (Decode16, 0xCF8, 0xCF8, 1, 8)
            0x47, 0x01, 0xF8, 0x0C, 0xF8, 0x0C, 0x01, 0x08,
            // DWordMemory 0xC0000000..=0xDFFFFFFF
            0x87, 0x17, 0x00, 0x00, 0x0C, 0x01,
            0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0xC0,
            0xFF, 0xFF, 0xFF, 0xDF,
            0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x20,
            // Memory32Fixed (ReadWrite, 0xE0000000, 1 MiB)
            0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xE0, 0x00, 0x00, 0x10, 0x00,
            // End Tag
            0x79, 0x00,
        ];
        assert_eq!(t, expected);
        assert_eq!(
            descriptors(&t),
            Ok(vec![
                Descriptor::Address(2, 0x0C, 0, 0, 0, 0xFF, 0, 0x100),
                Descriptor::Address(1, 0x0C, 3, 0, 0, 0xCF7, 0, 0xCF8),
                Descriptor::Io(true, 0xCF8, 0xCF8, 1, 8),
                Descriptor::Address(0, 0x0C, 1, 0, 0xC000_0000, 0xDFFF_FFFF, 0, 0x2000_0000),
                Descriptor::Memory32Fixed(true, 0xE000_0000, 0x10_0000),
            ])
        );
    }

    #[test]
    fn window_ends() {
        let mut r = Resources::new();
        r.word_io(0xD00, 0xFFFF)
            .dword_memory(0xF000_0000, 0x1000_0000);
        assert_eq!(
            descriptors(&r.finish()),
            Ok(vec![
                Descriptor::Address(1, 0x0C, 3, 0, 0xD00, 0xFFFF, 0, 0xF300),
                Descriptor::Address(0, 0x0C, 1, 0, 0xF000_0000, 0xFFFF_FFFF, 0, 0x1000_0000),
            ])
        );
        assert_eq!(Resources::new().finish(), [0x79, 0x00]);
    }

    #[test]
    fn reader_rejects_bad_templates() {
        assert!(descriptors(&[]).is_err());
        assert!(descriptors(&[0x79, 0x00, 0x00]).is_err());
        assert!(descriptors(&[0x79, 0x01]).is_err());
        assert_eq!(descriptors(&[0x79, 0x87]), Ok(vec![]));
        let mut r = Resources::new();
        r.word_io(0, 1);
        let mut t = r.finish();
        t[1] = 0x0C; // one byte short
        assert!(descriptors(&t).is_err());
    }
}
