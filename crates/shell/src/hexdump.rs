//! Memory dumps: 16 bytes a line, address, hex in two groups of eight, printable ASCII.

use alloc::string::String;
use core::fmt::Write;

use crate::output::Output;

/// Bytes shown per line.
pub const BYTES_PER_LINE: usize = 16;

/// Writes `data`, which was read at address `start`, one line per 16 bytes:
/// `0x0000000000001000  48 65 6c 6c 6f 00 00 00  00 00 00 00 00 00 00 00  |Hello...........|`.
/// The last line is padded so its ASCII column lines up.
pub fn hexdump(out: &mut Output, start: u64, data: &[u8]) {
    let mut line = String::new();
    for (i, chunk) in data.chunks(BYTES_PER_LINE).enumerate() {
        line.clear();
        let addr = start.wrapping_add((i * BYTES_PER_LINE) as u64);
        let _ = write!(line, "{addr:#018x} ");
        for j in 0..BYTES_PER_LINE {
            if j == BYTES_PER_LINE / 2 {
                line.push(' ');
            }
            match chunk.get(j) {
                Some(b) => {
                    let _ = write!(line, " {b:02x}");
                }
                None => line.push_str("   "),
            }
        }
        line.push_str("  |");
        line.extend(chunk.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        }));
        line.push('|');
        out.line(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn dump(start: u64, data: &[u8]) -> String {
        let mut out = Output::new();
        hexdump(&mut out, start, data);
        String::from_utf8(out.take()).unwrap()
    }

    #[test]
    fn full_and_partial_lines() {
        let data: Vec<u8> = b"Hello, world!\n\x00\xff"
            .iter()
            .chain(b"ab")
            .copied()
            .collect();
        assert_eq!(
            dump(0x1000, &data),
            "0x0000000000001000  48 65 6c 6c 6f 2c 20 77  6f 72 6c 64 21 0a 00 ff  |Hello, world!...|\r\n\
             0x0000000000001010  61 62                                             |ab|\r\n"
        );
    }

    #[test]
    fn every_line_has_the_same_ascii_column() {
        let data: Vec<u8> = (0..=255u8).collect();
        let text = dump(u64::MAX - 0x7f, &data[..100]);
        let columns: Vec<usize> = text.lines().map(|l| l.find('|').unwrap()).collect();
        assert_eq!(columns.len(), 7);
        assert!(columns.iter().all(|&c| c == columns[0]));
        assert!(text.starts_with("0xffffffffffffff80"));
        assert_eq!(dump(0, &[]), "");
    }
}
