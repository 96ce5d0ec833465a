//! Access-width rules shared by the devices: which widths exist, what a
//! floating bus returns, and how a 2- or 4-byte port access to byte-wide
//! registers becomes successive byte cycles.
//!
//! An x86 `in`/`out` of 2 or 4 bytes to an 8-bit ISA/LPC device reaches it as
//! byte cycles at `port`, `port + 1`, ... assembled little-endian: that is
//! what the chipset does, so the byte-wide devices here do the same (each
//! byte with its side effects). Widths other than 1, 2 and 4 cannot come
//! from a real instruction; they read all ones and write nothing.

/// True for the access widths a port or MMIO instruction can have: 1, 2, 4.
pub(crate) fn valid_size(size: u8) -> bool {
    matches!(size, 1 | 2 | 4)
}

/// What a floating bus returns for an access of `size` bytes: all ones in the
/// low `size` bytes (all 32 bits for widths that cannot exist).
pub fn all_ones(size: u8) -> u32 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

/// A `size`-byte read as byte cycles at `port`, `port + 1`, ... (wrapping at
/// 0xFFFF like the CPU's port counter), little-endian. `size` must be valid.
pub(crate) fn read_bytes(port: u16, size: u8, mut read: impl FnMut(u16) -> u8) -> u32 {
    debug_assert!(valid_size(size));
    (0..size).fold(0u32, |acc, i| {
        acc | u32::from(read(port.wrapping_add(u16::from(i)))) << (8 * u32::from(i))
    })
}

/// A `size`-byte write as byte cycles, lowest byte first at `port`.
pub(crate) fn write_bytes(port: u16, size: u8, value: u32, mut write: impl FnMut(u16, u8)) {
    debug_assert!(valid_size(size));
    for (i, b) in value
        .to_le_bytes()
        .into_iter()
        .take(usize::from(size))
        .enumerate()
    {
        write(port.wrapping_add(i as u16), b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn widths_and_floating_values() {
        assert!(valid_size(1) && valid_size(2) && valid_size(4));
        for s in [0, 3, 5, 8, 255] {
            assert!(!valid_size(s));
            assert_eq!(all_ones(s), 0xFFFF_FFFF);
        }
        assert_eq!(all_ones(1), 0xFF);
        assert_eq!(all_ones(2), 0xFFFF);
    }

    #[test]
    fn byte_cycles_are_little_endian_and_wrap() {
        let v = read_bytes(0xFFFE, 4, |p| p as u8);
        assert_eq!(v, 0x0100_FFFE);
        let mut seen = Vec::new();
        write_bytes(0x70, 2, 0xAABB_CCDD, |p, b| seen.push((p, b)));
        assert_eq!(seen, [(0x70, 0xDD), (0x71, 0xCC)]);
    }
}
