//! Little-endian fields read from an image by offset, bounds-checked: an
//! image is never cast to a struct in place.

/// `len` bytes at `offset`, or `None` if any lies past the end (or the range
/// wraps).
pub(crate) fn slice(image: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    image.get(start..end)
}

/// The little-endian u16 at `offset`.
pub(crate) fn u16_at(image: &[u8], offset: usize) -> Option<u16> {
    let b = image.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

/// The little-endian u32 at `offset`.
pub(crate) fn u32_at(image: &[u8], offset: usize) -> Option<u32> {
    let b = image.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The little-endian u64 at `offset`.
pub(crate) fn u64_at(image: &[u8], offset: usize) -> Option<u64> {
    let b = image.get(offset..offset.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_end_and_never_wrap() {
        let b = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(u16_at(&b, 7), Some(0x0908));
        assert_eq!(u16_at(&b, 8), None);
        assert_eq!(u32_at(&b, 5), Some(0x0908_0706));
        assert_eq!(u32_at(&b, 6), None);
        assert_eq!(u64_at(&b, 1), Some(0x0908_0706_0504_0302));
        assert_eq!(u64_at(&b, usize::MAX), None);
        assert_eq!(slice(&b, 8, 1), Some(&b[8..]));
        assert_eq!(slice(&b, 8, 2), None);
        assert_eq!(slice(&b, u64::MAX, 2), None);
        assert_eq!(slice(&b, 1, u64::MAX), None);
    }
}
