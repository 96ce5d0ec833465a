//! A fixed-size text buffer for failure reasons (there is no allocator).

use core::fmt;

const CAP: usize = 200;

/// Text formatted into a fixed buffer; whatever does not fit is dropped.
#[derive(Clone, Copy)]
pub struct Msg {
    buf: [u8; CAP],
    len: usize,
}

impl Msg {
    pub const fn new() -> Self {
        Self {
            buf: [0; CAP],
            len: 0,
        }
    }

    /// The text (only ASCII is ever written; a cut multibyte tail is dropped).
    pub fn as_str(&self) -> &str {
        match core::str::from_utf8(&self.buf[..self.len]) {
            Ok(s) => s,
            Err(e) => {
                let valid = &self.buf[..e.valid_up_to()];
                core::str::from_utf8(valid).unwrap_or("")
            }
        }
    }
}

impl Default for Msg {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for Msg {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = CAP - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Formats into a [`Msg`].
#[macro_export]
macro_rules! msg {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut m = $crate::msg::Msg::new();
        let _ = write!(m, $($arg)*);
        m
    }};
}

/// Displays bytes as ASCII, escaping anything unprintable as `\xNN`.
pub struct Ascii<'a>(pub &'a [u8]);

impl fmt::Display for Ascii<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            if (0x20..0x7F).contains(&b) && b != b'"' && b != b'\\' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}
