//! Exception classes and what a fault raised while another exception is
//! being delivered becomes (SDM vol. 3 table 6-5, APM vol. 2 8.2.9): the
//! rules a backend needs when it, not the CPU, decides a double or triple
//! fault.

/// How an exception combines with another one (SDM table 6-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    Benign,
    /// #DE, #TS, #NP, #SS, #GP.
    Contributory,
    PageFault,
    DoubleFault,
}

/// The class of exception `vector` (vectors 0-31; others are benign).
pub fn exception_class(vector: u8) -> ExceptionClass {
    match vector {
        0 | 10..=13 => ExceptionClass::Contributory,
        14 => ExceptionClass::PageFault,
        8 => ExceptionClass::DoubleFault,
        _ => ExceptionClass::Benign,
    }
}

/// Whether exception `vector` pushes an error code (#DF, #TS, #NP, #SS,
/// #GP, #PF, #AC, #CP, #VC, #SX).
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// What the CPU does when exception `second` is raised while it delivers
/// exception `first`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nested {
    /// `second` is delivered (serially).
    Deliver,
    /// A double fault is delivered instead.
    DoubleFault,
    /// A contributory fault or #PF came while delivering a double fault:
    /// shutdown.
    TripleFault,
}

/// SDM vol. 3 table 6-5 (APM vol. 2 table 8-7).
pub fn nested_exception(first: u8, second: u8) -> Nested {
    use ExceptionClass::*;
    match (exception_class(first), exception_class(second)) {
        (DoubleFault, Contributory | PageFault) => Nested::TripleFault,
        (Contributory, Contributory) | (PageFault, Contributory | PageFault) => Nested::DoubleFault,
        _ => Nested::Deliver,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(exception_class(0), ExceptionClass::Contributory);
        assert_eq!(exception_class(13), ExceptionClass::Contributory);
        assert_eq!(exception_class(14), ExceptionClass::PageFault);
        assert_eq!(exception_class(8), ExceptionClass::DoubleFault);
        for benign in [1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 19, 32, 255] {
            assert_eq!(exception_class(benign), ExceptionClass::Benign, "{benign}");
        }
    }

    #[test]
    fn error_codes() {
        let with: [u8; 10] = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];
        for v in 0..=255u8 {
            assert_eq!(has_error_code(v), with.contains(&v), "vector {v}");
        }
    }

    #[test]
    fn nesting_follows_the_table() {
        // Benign first: the second is delivered whatever it is.
        assert_eq!(nested_exception(3, 13), Nested::Deliver);
        assert_eq!(nested_exception(1, 14), Nested::Deliver);
        // Contributory then contributory: #DF; contributory then #PF: serial.
        assert_eq!(nested_exception(13, 13), Nested::DoubleFault);
        assert_eq!(nested_exception(0, 11), Nested::DoubleFault);
        assert_eq!(nested_exception(13, 14), Nested::Deliver);
        // #PF then #PF or contributory: #DF; #PF then benign: serial.
        assert_eq!(nested_exception(14, 14), Nested::DoubleFault);
        assert_eq!(nested_exception(14, 12), Nested::DoubleFault);
        assert_eq!(nested_exception(14, 6), Nested::Deliver);
        // A contributory fault or #PF while delivering #DF: shutdown; a
        // benign one is delivered (SDM table 6-5's last row).
        for second in [0, 10, 11, 12, 13, 14] {
            assert_eq!(nested_exception(8, second), Nested::TripleFault);
        }
        assert_eq!(nested_exception(8, 1), Nested::Deliver);
    }
}
