//! Pure SVM facts the backend decides on, host-tested (the backend itself is
//! bare-metal only).

/// Whether a VMCB EXITCODE is one of the negative ones (VMEXIT_INVALID = -1,
/// VMEXIT_BUSY = -2, ...): sign-extended as the APM says, or 32 bits wide as
/// QEMU 7.2 writes them (0xFFFF_FFFF: found by the fault-injection case).
pub fn is_entry_failure(code: u64) -> bool {
    let high = code >> 32;
    code as u32 >= 0xFFFF_FFF0 && (high == 0 || high == 0xFFFF_FFFF)
}

/// EXITINTINFO / EVENTINJ: valid, and the type field's value for an exception.
pub const EVENT_VALID: u64 = 1 << 31;
pub const EVENT_TYPE_EXCEPTION: u64 = 3;

/// Whether EXITINTINFO `pending` says a #DF was being delivered.
pub fn delivering_double_fault(pending: u64) -> bool {
    pending & EVENT_VALID != 0 && (pending >> 8) & 7 == EVENT_TYPE_EXCEPTION && pending & 0xFF == 8
}

/// What a fault intercepted while a reinjected #DF was guarded (#TS, #NP,
/// #SS, #GP or #PF, `vector`) becomes, given EXITINTINFO `pending`: the
/// event the CPU was delivering when it came, if any (SDM table 6-5).
pub fn guarded_fault(vector: u8, pending: u64) -> vcpu::Nested {
    if pending & EVENT_VALID != 0 && (pending >> 8) & 7 == EVENT_TYPE_EXCEPTION {
        vcpu::nested_exception(pending as u8, vector)
    } else {
        // Nothing, or an interrupt or NMI, was being delivered: the fault
        // is the guest's own (an external event it interrupted is dropped).
        vcpu::Nested::Deliver
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcpu::Nested;

    /// EXITINTINFO of exception `vector` being delivered (with an error code).
    fn exception(vector: u8) -> u64 {
        EVENT_VALID | (EVENT_TYPE_EXCEPTION << 8) | (1 << 11) | u64::from(vector)
    }

    #[test]
    fn a_fault_while_the_double_fault_is_delivered_is_the_triple_fault() {
        assert!(delivering_double_fault(exception(8)));
        assert!(!delivering_double_fault(exception(13)));
        assert!(!delivering_double_fault(exception(8) & !EVENT_VALID));
        // External interrupt (type 0) with vector 8: not a double fault.
        assert!(!delivering_double_fault(EVENT_VALID | 8));
        for v in [10, 11, 12, 13, 14] {
            assert_eq!(guarded_fault(v, exception(8)), Nested::TripleFault, "{v}");
        }
    }

    #[test]
    fn other_guarded_faults_combine_or_are_delivered() {
        // The #DF handler ran and faulted on its own: delivered.
        assert_eq!(guarded_fault(13, 0), Nested::Deliver);
        assert_eq!(guarded_fault(14, 0), Nested::Deliver);
        // While delivering a #GP: a #GP is a double fault, a #PF is not.
        assert_eq!(guarded_fault(13, exception(13)), Nested::DoubleFault);
        assert_eq!(guarded_fault(14, exception(13)), Nested::Deliver);
        // While delivering an external interrupt or an NMI: the fault.
        assert_eq!(guarded_fault(14, EVENT_VALID | 0x30), Nested::Deliver);
        assert_eq!(
            guarded_fault(13, EVENT_VALID | (2 << 8) | 2),
            Nested::Deliver
        );
    }

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
