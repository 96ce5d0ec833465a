//! The Firmware ACPI Control Structure (ACPI 6.5, 5.2.10): a legacy
//! (not hardware-reduced) FADT must point at one. It has no checksum; the
//! waking vectors stay 0 (no S3) and the global lock starts free.

/// Bytes of the FACS.
pub(crate) const FACS_LEN: usize = 64;
/// Alignment the specification requires.
pub(crate) const FACS_ALIGN: u64 = 64;

/// The FACS: signature, length, hardware signature 0, version 2.
pub(crate) fn facs() -> [u8; FACS_LEN] {
    let mut f = [0u8; FACS_LEN];
    f[0..4].copy_from_slice(b"FACS");
    f[4..8].copy_from_slice(&(FACS_LEN as u32).to_le_bytes());
    f[32] = 2; // version
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let f = facs();
        assert_eq!(&f[..4], b"FACS");
        assert_eq!(u32::from_le_bytes(f[4..8].try_into().unwrap()), 64);
        assert_eq!(f[32], 2);
        assert!(
            f[8..32].iter().all(|&b| b == 0),
            "no waking vector, lock free"
        );
    }
}
