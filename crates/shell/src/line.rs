//! The line editor: turns terminal bytes, one at a time, into command lines and echo.
//!
//! Keys: printable ASCII is appended (at most [`MAX_LINE`] characters; more rings the bell and
//! is dropped); Backspace (0x08) and DEL (0x7F) erase one character; Ctrl-W erases the last
//! word; Ctrl-U erases the line; Ctrl-C abandons the line ([`LineEvent::Interrupt`]); CR or LF
//! ends it (CR LF counts once). Other control bytes, bytes above 0x7F and escape sequences
//! (ESC [ ... final, ESC O x, ESC x, 8-bit CSI) are swallowed whole, so arrow and function keys
//! never insert garbage.

use alloc::string::String;

/// The longest line the editor holds.
pub const MAX_LINE: usize = 256;

/// Parameter and intermediate bytes a CSI sequence may have before the editor gives up on it.
const MAX_CSI: u8 = 32;

const BELL: &[u8] = b"\x07";
const ERASE: &[u8] = b"\x08 \x08";

/// What one byte did to the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineEvent {
    /// Nothing finished yet.
    None,
    /// The user pressed Enter: the line, without the terminator.
    Line(String),
    /// The user pressed Ctrl-C: the line was abandoned.
    Interrupt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    /// Not in an escape sequence.
    None,
    /// After ESC.
    Esc,
    /// Inside ESC [ (or 0x9B): this many parameter/intermediate bytes so far.
    Csi(u8),
    /// After ESC O: one more byte ends it.
    Ss3,
}

/// A one-line editor with echo.
#[derive(Clone, Debug)]
pub struct LineEditor {
    line: String,
    escape: Escape,
    /// The previous byte was a CR: a following LF belongs to it.
    after_cr: bool,
}

impl Default for LineEditor {
    fn default() -> Self {
        Self::new()
    }
}

impl LineEditor {
    /// An empty line.
    pub const fn new() -> Self {
        LineEditor {
            line: String::new(),
            escape: Escape::None,
            after_cr: false,
        }
    }

    /// The line typed so far.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// Forgets the line and any half-received escape sequence (no echo).
    pub fn clear(&mut self) {
        self.line.clear();
        self.escape = Escape::None;
        self.after_cr = false;
    }

    /// Takes one byte from the terminal; what should appear on the terminal goes to `echo`.
    pub fn feed(&mut self, byte: u8, echo: &mut impl FnMut(&[u8])) -> LineEvent {
        let after_cr = core::mem::replace(&mut self.after_cr, false);
        if self.swallow_escape(byte) {
            return LineEvent::None;
        }
        match byte {
            b'\r' | b'\n' => {
                if byte == b'\n' && after_cr {
                    return LineEvent::None;
                }
                self.after_cr = byte == b'\r';
                echo(b"\r\n");
                LineEvent::Line(core::mem::take(&mut self.line))
            }
            0x03 => {
                self.line.clear();
                echo(b"^C\r\n");
                LineEvent::Interrupt
            }
            0x08 | 0x7F => {
                if self.line.pop().is_some() {
                    echo(ERASE);
                }
                LineEvent::None
            }
            0x15 => {
                self.erase_to(0, echo);
                LineEvent::None
            }
            0x17 => {
                let kept = self.line.trim_end_matches(' ');
                let start = kept.rfind(' ').map_or(0, |i| i + 1);
                self.erase_to(start, echo);
                LineEvent::None
            }
            0x1B => {
                self.escape = Escape::Esc;
                LineEvent::None
            }
            0x9B => {
                self.escape = Escape::Csi(0);
                LineEvent::None
            }
            b' '..=b'~' => {
                if self.line.len() < MAX_LINE {
                    self.line.push(char::from(byte));
                    echo(&[byte]);
                } else {
                    echo(BELL);
                }
                LineEvent::None
            }
            _ => LineEvent::None,
        }
    }

    /// Advances an escape sequence; true if `byte` belonged to one. A control byte inside a
    /// sequence ends it and is handled normally (so a lost final byte cannot eat an Enter).
    fn swallow_escape(&mut self, byte: u8) -> bool {
        let printable = (0x20..=0x7E).contains(&byte);
        match self.escape {
            Escape::None => false,
            Escape::Esc => {
                self.escape = match byte {
                    b'[' => Escape::Csi(0),
                    b'O' => Escape::Ss3,
                    _ => Escape::None,
                };
                printable
            }
            Escape::Csi(n) => {
                if !printable {
                    self.escape = Escape::None;
                    return false;
                }
                // 0x40..=0x7E is the final byte; 0x20..=0x3F are parameters and intermediates.
                self.escape = if byte >= 0x40 || n >= MAX_CSI {
                    Escape::None
                } else {
                    Escape::Csi(n + 1)
                };
                true
            }
            Escape::Ss3 => {
                self.escape = Escape::None;
                printable
            }
        }
    }

    /// Erases the line from byte `start` on, echoing one erase per character.
    fn erase_to(&mut self, start: usize, echo: &mut impl FnMut(&[u8])) {
        while self.line.len() > start {
            self.line.pop();
            echo(ERASE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// Feeds `input`; returns the events that were not `None` and the echo.
    fn run(ed: &mut LineEditor, input: &[u8]) -> (Vec<LineEvent>, Vec<u8>) {
        let mut echo = Vec::new();
        let mut events = Vec::new();
        for &b in input {
            let ev = ed.feed(b, &mut |e: &[u8]| echo.extend_from_slice(e));
            if ev != LineEvent::None {
                events.push(ev);
            }
        }
        (events, echo)
    }

    fn line(s: &str) -> LineEvent {
        LineEvent::Line(s.into())
    }

    #[test]
    fn printable_bytes_are_echoed_and_cr_ends_the_line() {
        let mut ed = LineEditor::new();
        let (ev, echo) = run(&mut ed, b"vm_list\r");
        assert_eq!(ev, [line("vm_list")]);
        assert_eq!(echo, b"vm_list\r\n");
        assert_eq!(ed.line(), "");
    }

    #[test]
    fn crlf_counts_once_but_lf_alone_and_cr_cr_end_lines() {
        let mut ed = LineEditor::new();
        let (ev, _) = run(&mut ed, b"a\r\nb\nc\r\rd\n\n");
        assert_eq!(
            ev,
            [
                line("a"),
                line("b"),
                line("c"),
                line(""),
                line("d"),
                line("")
            ]
        );
    }

    #[test]
    fn backspace_and_del_erase_with_echo() {
        let mut ed = LineEditor::new();
        let (ev, echo) = run(&mut ed, b"ab\x08c\x7f\x7f\x7fx\r");
        assert_eq!(ev, [line("x")]);
        assert_eq!(echo, b"ab\x08 \x08c\x08 \x08\x08 \x08x\r\n");
    }

    #[test]
    fn ctrl_u_kills_the_line_and_ctrl_w_the_last_word() {
        let mut ed = LineEditor::new();
        let (ev, echo) = run(&mut ed, b"abc\x15");
        assert!(ev.is_empty());
        assert_eq!(echo, b"abc\x08 \x08\x08 \x08\x08 \x08");
        let (ev, _) = run(&mut ed, b"cpuid 1 0x7  \x17\x172\r");
        assert_eq!(ev, [line("cpuid 2")]);
        let (ev, _) = run(&mut ed, b"one\x17\x17two\r");
        assert_eq!(ev, [line("two")]);
    }

    #[test]
    fn ctrl_c_abandons_the_line() {
        let mut ed = LineEditor::new();
        let (ev, echo) = run(&mut ed, b"reboot\x03");
        assert_eq!(ev, [LineEvent::Interrupt]);
        assert!(echo.ends_with(b"^C\r\n"));
        assert_eq!(ed.line(), "");
        let (ev, _) = run(&mut ed, b"version\r");
        assert_eq!(ev, [line("version")]);
    }

    #[test]
    fn overlong_lines_ring_the_bell_and_keep_the_first_characters() {
        let mut ed = LineEditor::new();
        let input: Vec<u8> = core::iter::repeat_n(b'x', MAX_LINE + 10).collect();
        let (ev, echo) = run(&mut ed, &input);
        assert!(ev.is_empty());
        assert_eq!(ed.line().len(), MAX_LINE);
        assert_eq!(echo.iter().filter(|&&b| b == 0x07).count(), 10);
        let (ev, _) = run(&mut ed, b"\x08y\r");
        assert_eq!(ev.len(), 1);
        let LineEvent::Line(l) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(l.len(), MAX_LINE);
        assert!(l.ends_with("xy"));
    }

    #[test]
    fn escape_sequences_and_other_control_bytes_insert_nothing() {
        let mut ed = LineEditor::new();
        // Arrows, Home/End (CSI and SS3 forms), F5, a modified arrow, Alt-x, 8-bit CSI,
        // tab, NUL, bytes above 0x7F.
        let (ev, echo) = run(
            &mut ed,
            b"a\x1b[A\x1b[B\x1b[C\x1b[D\x1bOH\x1bOF\x1b[15~\x1b[1;5C\x1bx\x9b2J\t\x00\x80\xffb\r",
        );
        assert_eq!(ev, [line("ab")]);
        assert_eq!(echo, b"ab\r\n");
    }

    #[test]
    fn a_control_byte_ends_a_broken_escape_sequence() {
        let mut ed = LineEditor::new();
        let (ev, _) = run(&mut ed, b"x\x1b[12\ry\x1b\r");
        assert_eq!(ev, [line("x"), line("y")]);
        // An endless CSI parameter string is abandoned after MAX_CSI bytes.
        let mut input = b"\x1b[".to_vec();
        input.extend(core::iter::repeat_n(b'1', usize::from(MAX_CSI) + 1));
        input.extend_from_slice(b"ok\r");
        let (ev, _) = run(&mut ed, &input);
        assert_eq!(ev, [line("ok")]);
    }
}
