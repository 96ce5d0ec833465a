//! Pure SVM facts the backend decides on, host-tested (the backend itself is
//! bare-metal only).

/// Whether a VMCB EXITCODE is one of the negative ones (VMEXIT_INVALID = -1,
/// VMEXIT_BUSY = -2, ...): sign-extended as the APM says, or 32 bits wide as
/// QEMU 7.2 writes them (0xFFFF_FFFF: found by the fault-injection case).
pub fn is_entry_failure(code: u64) -> bool {
    let high = code >> 32;
    code as u32 >= 0xFFFF_FFF0 && (high == 0 || high == 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::is_entry_failure;

    #[test]
    fn entry_failures_in_both_widths() {
        assert!(is_entry_failure(u64::MAX));
        assert!(is_entry_failure(0xFFFF_FFFF));
        assert!(is_entry_failure(0xFFFF_FFFF_FFFF_FFFE));
        // NPF, SHUTDOWN, IOIO, exception 0, and no truncated code with other high bits.
        for ordinary in [0x400, 0x7F, 0x7B, 0x40, 0, 0x1_FFFF_FFFF] {
            assert!(!is_entry_failure(ordinary), "{ordinary:#x}");
        }
    }
}
