//! Tokenizing a command line and parsing its arguments: numbers, address ranges, VM references,
//! log levels.
//!
//! Numbers are decimal (`4096`, leading zeros allowed, never octal) or hexadecimal with `0x`
//! (`0x1000`, `0XfeE0_0000`); `_` may separate digits. Ranges are `ADDR [LEN]`, `ADDR+LEN` or
//! `ADDR..END` (END excluded). A VM is named by its name or its numeric id; its second console by
//! `hvc`.

use alloc::string::{String, ToString};
use core::fmt;
use core::str::SplitAsciiWhitespace;

use log::LevelFilter;

use crate::backend::VmInfo;
use crate::console::Port;

/// What was wrong with an argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not a decimal or `0x` number.
    BadNumber(String),
    /// A number above what the argument can hold.
    TooLarge { text: String, max: u64 },
    /// A required argument is absent (its name, as in the usage: `<vm>`).
    Missing(&'static str),
    /// An argument after the last one the command takes.
    Unexpected(String),
    /// No VM has this name, and it is not a number.
    NoVmNamed(String),
    /// No VM has this id.
    NoVmId(u64),
    /// A length of zero or above the command's maximum.
    BadLength { len: u64, max: usize },
    /// `A..B` with B not above A.
    EmptyRange(String),
    /// The range passes the end of the 64-bit address space.
    Wraps { start: u64, len: u64 },
    /// Not a log level name or number.
    BadLogLevel(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::BadNumber(t) => write!(f, "bad number {t:?}"),
            ParseError::TooLarge { text, max } => {
                write!(f, "number {text:?} is too large (max {max:#x})")
            }
            ParseError::Missing(name) => write!(f, "missing {name}"),
            ParseError::Unexpected(t) => write!(f, "unexpected argument {t:?}"),
            ParseError::NoVmNamed(t) => write!(f, "no VM named {t:?} (see vm_list)"),
            ParseError::NoVmId(id) => write!(f, "no VM with id {id} (see vm_list)"),
            ParseError::BadLength { len, max } => {
                write!(f, "length {len} is out of range (1 to {max})")
            }
            ParseError::EmptyRange(t) => write!(f, "range {t:?} is empty or backwards"),
            ParseError::Wraps { start, len } => write!(
                f,
                "range {start:#x}+{len:#x} passes the end of the address space"
            ),
            ParseError::BadLogLevel(t) => write!(
                f,
                "bad log level {t:?} (off, error, warn, info, debug, trace or 0 to 5)"
            ),
        }
    }
}

/// The arguments after a command's name, taken left to right.
#[derive(Clone, Debug)]
pub struct Args<'a> {
    tokens: SplitAsciiWhitespace<'a>,
}

impl<'a> Args<'a> {
    /// The whitespace-separated words of `text`.
    pub fn new(text: &'a str) -> Self {
        Args {
            tokens: text.split_ascii_whitespace(),
        }
    }

    /// The next word; `name` (as in the usage, `<vm>`) says which argument is missing if none.
    pub fn required(&mut self, name: &'static str) -> Result<&'a str, ParseError> {
        self.tokens.next().ok_or(ParseError::Missing(name))
    }

    /// The next word, if any.
    pub fn optional(&mut self) -> Option<&'a str> {
        self.tokens.next()
    }

    /// Fails if any word is left.
    pub fn finish(&mut self) -> Result<(), ParseError> {
        match self.tokens.next() {
            Some(t) => Err(ParseError::Unexpected(t.into())),
            None => Ok(()),
        }
    }
}

/// Parses the optional console word after a VM: none (or `uart`, `vuart`) is the vUART, `hvc`
/// (or `hvc0`) the virtio console; any case. Any other word is an unexpected argument (the
/// usage, `<vm> [hvc]`, says what is expected).
pub fn parse_port(text: Option<&str>) -> Result<Port, ParseError> {
    let Some(text) = text else {
        return Ok(Port::Uart);
    };
    let is = |w: &str| text.eq_ignore_ascii_case(w);
    if is("hvc") || is("hvc0") {
        Ok(Port::Hvc)
    } else if is("uart") || is("vuart") {
        Ok(Port::Uart)
    } else {
        Err(ParseError::Unexpected(text.into()))
    }
}

/// Parses a decimal or `0x` hexadecimal number.
pub fn parse_u64(text: &str) -> Result<u64, ParseError> {
    let bad = || ParseError::BadNumber(text.into());
    let (digits, radix) = match text.get(..2) {
        Some("0x" | "0X") => (&text[2..], 16),
        _ => (text, 10),
    };
    if !digits.as_bytes().first().is_some_and(u8::is_ascii_hexdigit) {
        return Err(bad());
    }
    let mut value: u64 = 0;
    for c in digits.chars().filter(|&c| c != '_') {
        let d = c.to_digit(radix).ok_or_else(bad)?;
        value = value
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(d)))
            .ok_or_else(|| ParseError::TooLarge {
                text: text.into(),
                max: u64::MAX,
            })?;
    }
    Ok(value)
}

/// Parses a number no greater than `max`.
pub fn parse_max(text: &str, max: u64) -> Result<u64, ParseError> {
    let too_large = || ParseError::TooLarge {
        text: text.into(),
        max,
    };
    match parse_u64(text) {
        Ok(v) if v <= max => Ok(v),
        Ok(_) => Err(too_large()),
        Err(ParseError::TooLarge { .. }) => Err(too_large()),
        Err(e) => Err(e),
    }
}

/// Parses a 32-bit number (CPUID leaf, MSR index).
pub fn parse_u32(text: &str) -> Result<u32, ParseError> {
    let v = parse_max(text, u64::from(u32::MAX))?;
    u32::try_from(v).map_err(|_| ParseError::BadNumber(text.into()))
}

/// Parses a 16-bit number (pCPU, vCPU index).
pub fn parse_u16(text: &str) -> Result<u16, ParseError> {
    let v = parse_max(text, u64::from(u16::MAX))?;
    u16::try_from(v).map_err(|_| ParseError::BadNumber(text.into()))
}

/// A start address and a length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub len: usize,
}

/// Parses `ADDR [LEN]`, `ADDR+LEN` or `ADDR..END` into a span of 1 to `max_len` bytes that does
/// not pass the end of the address space; `LEN` defaults to `default_len`.
pub fn parse_range(
    addr: &str,
    len: Option<&str>,
    default_len: usize,
    max_len: usize,
) -> Result<Span, ParseError> {
    let (start, len) = if let Some((a, b)) = addr.split_once("..") {
        if let Some(extra) = len {
            return Err(ParseError::Unexpected(extra.into()));
        }
        let (start, end) = (parse_u64(a)?, parse_u64(b)?);
        if end <= start {
            return Err(ParseError::EmptyRange(addr.into()));
        }
        (start, end - start)
    } else if let Some((a, b)) = addr.split_once('+') {
        if let Some(extra) = len {
            return Err(ParseError::Unexpected(extra.into()));
        }
        (parse_u64(a)?, parse_u64(b)?)
    } else {
        let len = match len {
            Some(t) => parse_u64(t)?,
            None => default_len as u64,
        };
        (parse_u64(addr)?, len)
    };
    let n = usize::try_from(len)
        .ok()
        .filter(|&n| (1..=max_len).contains(&n))
        .ok_or(ParseError::BadLength { len, max: max_len })?;
    if start.checked_add(len - 1).is_none() {
        return Err(ParseError::Wraps { start, len });
    }
    Ok(Span { start, len: n })
}

/// Finds the VM `text` names: by name first, then by numeric id.
pub fn find_vm<'v>(text: &str, vms: &'v [VmInfo]) -> Result<&'v VmInfo, ParseError> {
    if let Some(vm) = vms.iter().find(|v| v.name == text) {
        return Ok(vm);
    }
    if !text.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return Err(ParseError::NoVmNamed(text.into()));
    }
    let id = parse_u64(text)?;
    vms.iter()
        .find(|v| u64::from(v.id.0) == id)
        .ok_or(ParseError::NoVmId(id))
}

/// Log levels by name, in `LevelFilter` order (their index is the level's number).
pub const LOG_LEVELS: [(LevelFilter, &str); 6] = [
    (LevelFilter::Off, "off"),
    (LevelFilter::Error, "error"),
    (LevelFilter::Warn, "warn"),
    (LevelFilter::Info, "info"),
    (LevelFilter::Debug, "debug"),
    (LevelFilter::Trace, "trace"),
];

/// Parses a log level: a name (any case) or its number, 0 (off) to 5 (trace).
pub fn parse_log_level(text: &str) -> Result<LevelFilter, ParseError> {
    let bad = || ParseError::BadLogLevel(text.to_string());
    if let Some((level, _)) = LOG_LEVELS
        .iter()
        .find(|(_, name)| name.eq_ignore_ascii_case(text))
    {
        return Ok(*level);
    }
    let n = parse_u64(text).map_err(|_| bad())?;
    usize::try_from(n)
        .ok()
        .and_then(|i| LOG_LEVELS.get(i))
        .map(|(level, _)| *level)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{VmId, VmState};
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;
    use scenario::{LoadOrder, VmType};

    #[test]
    fn numbers_in_decimal_and_hex() {
        assert_eq!(parse_u64("0"), Ok(0));
        assert_eq!(parse_u64("4096"), Ok(4096));
        assert_eq!(parse_u64("010"), Ok(10));
        assert_eq!(parse_u64("0x1000"), Ok(0x1000));
        assert_eq!(parse_u64("0XfeE0_0000"), Ok(0xfee0_0000));
        assert_eq!(parse_u64("1_000"), Ok(1000));
        assert_eq!(parse_u64("0xffffffffffffffff"), Ok(u64::MAX));
        assert_eq!(parse_u64("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn bad_numbers_name_the_text() {
        for t in [
            "", "0x", "0xZZ", "-1", "+1", "1.5", "12a", "0b10", "_1", "0x_1", "x10", "１",
        ] {
            assert_eq!(parse_u64(t), Err(ParseError::BadNumber(t.into())), "{t:?}");
        }
        assert_eq!(
            ParseError::BadNumber("0xZZ".into()).to_string(),
            "bad number \"0xZZ\""
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        for t in [
            "0x10000000000000000",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            assert_eq!(
                parse_u64(t),
                Err(ParseError::TooLarge {
                    text: t.into(),
                    max: u64::MAX
                })
            );
        }
        assert_eq!(parse_u32("0xffffffff"), Ok(u32::MAX));
        assert_eq!(
            parse_u32("0x100000000").unwrap_err().to_string(),
            "number \"0x100000000\" is too large (max 0xffffffff)"
        );
        assert_eq!(
            parse_u32("0x10000000000000000").unwrap_err().to_string(),
            "number \"0x10000000000000000\" is too large (max 0xffffffff)"
        );
        assert_eq!(parse_u16("65535"), Ok(u16::MAX));
        assert!(matches!(
            parse_u16("65536"),
            Err(ParseError::TooLarge { max: 0xffff, .. })
        ));
        assert_eq!(parse_u16("x"), Err(ParseError::BadNumber("x".into())));
    }

    #[test]
    fn args_are_taken_in_order_and_extra_ones_refused() {
        let mut a = Args::new("  vm0\t0x10   64 ");
        assert_eq!(a.required("<vm>"), Ok("vm0"));
        assert_eq!(a.optional(), Some("0x10"));
        assert_eq!(a.finish(), Err(ParseError::Unexpected("64".into())));
        assert_eq!(a.required("<len>"), Err(ParseError::Missing("<len>")));
        assert_eq!(a.finish(), Ok(()));
        assert_eq!(ParseError::Missing("<vm>").to_string(), "missing <vm>");
    }

    #[test]
    fn ranges_in_three_forms() {
        let s = |start, len| Ok(Span { start, len });
        assert_eq!(parse_range("0x1000", None, 64, 4096), s(0x1000, 64));
        assert_eq!(parse_range("0x1000", Some("16"), 64, 4096), s(0x1000, 16));
        assert_eq!(parse_range("0x1000+0x20", None, 64, 4096), s(0x1000, 32));
        assert_eq!(
            parse_range("0x1000..0x1100", None, 64, 4096),
            s(0x1000, 256)
        );
        assert_eq!(
            parse_range("0xfffffffffffffff0", Some("16"), 64, 4096),
            s(u64::MAX - 15, 16)
        );
    }

    #[test]
    fn bad_ranges() {
        assert_eq!(
            parse_range("0x10", Some("0"), 64, 4096),
            Err(ParseError::BadLength { len: 0, max: 4096 })
        );
        assert_eq!(
            parse_range("0x10", Some("4097"), 64, 4096)
                .unwrap_err()
                .to_string(),
            "length 4097 is out of range (1 to 4096)"
        );
        assert_eq!(
            parse_range("0", Some("0xffffffffffffffff"), 64, 4096),
            Err(ParseError::BadLength {
                len: u64::MAX,
                max: 4096
            })
        );
        assert_eq!(
            parse_range("0xfffffffffffffff0", Some("17"), 64, 4096),
            Err(ParseError::Wraps {
                start: u64::MAX - 15,
                len: 17
            })
        );
        assert_eq!(
            parse_range("0x20..0x10", None, 64, 4096),
            Err(ParseError::EmptyRange("0x20..0x10".into()))
        );
        assert_eq!(
            parse_range("0x20..0x20", None, 64, 4096),
            Err(ParseError::EmptyRange("0x20..0x20".into()))
        );
        assert_eq!(
            parse_range("0x20+16", Some("16"), 64, 4096),
            Err(ParseError::Unexpected("16".into()))
        );
        assert_eq!(
            parse_range("0x20..0x30", Some("1"), 64, 4096),
            Err(ParseError::Unexpected("1".into()))
        );
        assert_eq!(
            parse_range("0xZZ+1", None, 64, 4096),
            Err(ParseError::BadNumber("0xZZ".into()))
        );
        assert_eq!(
            parse_range("1+", None, 64, 4096),
            Err(ParseError::BadNumber("".into()))
        );
        assert_eq!(
            parse_range("..", None, 64, 4096),
            Err(ParseError::BadNumber("".into()))
        );
    }

    #[test]
    fn console_ports() {
        assert_eq!(parse_port(None), Ok(Port::Uart));
        for w in ["hvc", "hvc0", "HVC"] {
            assert_eq!(parse_port(Some(w)), Ok(Port::Hvc), "{w}");
        }
        for w in ["uart", "vUART"] {
            assert_eq!(parse_port(Some(w)), Ok(Port::Uart), "{w}");
        }
        for w in ["hvc1", "com1", "", "h"] {
            assert_eq!(
                parse_port(Some(w)),
                Err(ParseError::Unexpected(w.into())),
                "{w}"
            );
        }
    }

    fn vms() -> Vec<VmInfo> {
        let vm = |id, name: &str| VmInfo {
            id: VmId(id),
            name: name.into(),
            state: VmState::Running,
            load_order: LoadOrder::PreLaunched,
            vm_type: VmType::Standard,
            pcpus: vec![1],
            vcpus: 1,
            memory: 1 << 20,
            console: true,
            hvc: false,
        };
        vec![vm(0, "linux"), vm(1, "0x0"), vm(5, "5ive")]
    }

    #[test]
    fn vms_by_name_then_id() {
        let vms = vms();
        assert_eq!(find_vm("linux", &vms).unwrap().id, VmId(0));
        assert_eq!(find_vm("0", &vms).unwrap().id, VmId(0));
        assert_eq!(find_vm("0x5", &vms).unwrap().id, VmId(5));
        // A name wins over an id that reads the same.
        assert_eq!(find_vm("0x0", &vms).unwrap().id, VmId(1));
        assert_eq!(find_vm("5ive", &vms).unwrap().id, VmId(5));
        assert_eq!(
            find_vm("windows", &vms),
            Err(ParseError::NoVmNamed("windows".into()))
        );
        assert_eq!(find_vm("7", &vms), Err(ParseError::NoVmId(7)));
        assert_eq!(
            find_vm("99999999999999999999999", &vms)
                .unwrap_err()
                .to_string(),
            "number \"99999999999999999999999\" is too large (max 0xffffffffffffffff)"
        );
        assert_eq!(find_vm("1x", &vms), Err(ParseError::BadNumber("1x".into())));
        assert_eq!(find_vm("70000", &vms), Err(ParseError::NoVmId(70000)));
    }

    #[test]
    fn log_levels_by_name_or_number() {
        assert_eq!(parse_log_level("INFO"), Ok(LevelFilter::Info));
        assert_eq!(parse_log_level("off"), Ok(LevelFilter::Off));
        assert_eq!(parse_log_level("5"), Ok(LevelFilter::Trace));
        assert_eq!(parse_log_level("0x2"), Ok(LevelFilter::Warn));
        for t in ["6", "verbose", "-1", "0x100000000000000000"] {
            assert_eq!(parse_log_level(t), Err(ParseError::BadLogLevel(t.into())));
        }
        for (i, (level, _)) in LOG_LEVELS.iter().enumerate() {
            assert_eq!(*level as usize, i);
        }
    }
}
