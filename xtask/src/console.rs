//! The serial console: splitting the byte stream into lines and matching expected/failure lines.

use regex::Regex;

/// Turns chunks of console bytes into complete lines (without `\n` and trailing `\r`).
#[derive(Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feed bytes; returns the lines they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                lines.push(to_line(&self.partial));
                self.partial.clear();
            } else {
                self.partial.push(b);
            }
        }
        lines
    }

    /// The unterminated last line, if any (at end of output).
    pub fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        let line = to_line(&self.partial);
        self.partial.clear();
        Some(line)
    }
}

fn to_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.trim_end_matches('\r').replace('\r', "")
}

/// What a console line did to the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep going.
    Pending,
    /// The last expected line was seen.
    Matched,
    /// The failure regex matched this line.
    Failed(String),
}

/// Waits for lists of regexes, each list in order, the lists independent of
/// each other (one list per VM, say, whose lines interleave); a failure regex
/// ends the run at once.
///
/// A line that matches an awaited regex counts as expected even if it also
/// matches the failure regex (so a case can expect a `fatal: ...` line). One
/// line satisfies at most one expectation.
pub struct Matcher {
    groups: Vec<Vec<Regex>>,
    next: Vec<usize>,
    fail: Option<Regex>,
}

impl Matcher {
    /// Only `expect`, in order.
    #[cfg(test)]
    pub fn new(expect: Vec<Regex>, fail: Option<Regex>) -> Self {
        Self::with_parallel(expect, Vec::new(), fail)
    }

    /// `expect` and every list in `parallel` are awaited side by side.
    pub fn with_parallel(
        expect: Vec<Regex>,
        parallel: Vec<Vec<Regex>>,
        fail: Option<Regex>,
    ) -> Self {
        let groups: Vec<Vec<Regex>> = std::iter::once(expect)
            .chain(parallel)
            .filter(|g| !g.is_empty())
            .collect();
        let next = vec![0; groups.len()];
        Self { groups, next, fail }
    }

    /// The first regex still awaited, if any.
    pub fn waiting_for(&self) -> Option<&Regex> {
        self.groups
            .iter()
            .zip(&self.next)
            .find_map(|(g, &n)| g.get(n))
    }

    fn done(&self) -> bool {
        self.groups
            .iter()
            .zip(&self.next)
            .all(|(g, &n)| n >= g.len())
    }

    pub fn feed(&mut self, line: &str) -> Verdict {
        if self.done() {
            return Verdict::Matched;
        }
        for (group, next) in self.groups.iter().zip(self.next.iter_mut()) {
            if group.get(*next).is_some_and(|re| re.is_match(line)) {
                *next += 1;
                return if self.done() {
                    Verdict::Matched
                } else {
                    Verdict::Pending
                };
            }
        }
        match &self.fail {
            Some(fail) if fail.is_match(line) => Verdict::Failed(format!(
                "console line matched failure pattern /{}/: {line}",
                fail.as_str()
            )),
            _ => Verdict::Pending,
        }
    }
}

/// The last `n` lines.
pub fn tail(lines: &[String], n: usize) -> &[String] {
    &lines[lines.len().saturating_sub(n)..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(s: &str) -> Regex {
        Regex::new(s).unwrap()
    }

    #[test]
    fn parallel_groups_complete_independently_in_their_own_order() {
        let mut m = Matcher::with_parallel(
            vec![re("^a1$"), re("^a2$")],
            vec![vec![re("^b1$"), re("^b2$")]],
            Some(re("FAIL")),
        );
        assert_eq!(m.feed("b2"), Verdict::Pending); // out of order within its group
        assert_eq!(m.feed("b1"), Verdict::Pending);
        assert_eq!(m.feed("a1"), Verdict::Pending);
        assert_eq!(m.feed("b2"), Verdict::Pending);
        assert_eq!(m.waiting_for().map(Regex::as_str), Some("^a2$"));
        assert_eq!(m.feed("a2"), Verdict::Matched);
        let mut m = Matcher::with_parallel(vec![re("x")], vec![vec![re("y")]], Some(re("FAIL")));
        assert!(matches!(m.feed("FAIL here"), Verdict::Failed(_)));
    }

    #[test]
    fn splitter_handles_partial_chunks_and_crlf() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"hel").is_empty());
        assert_eq!(s.push(b"lo\r\nwor"), vec!["hello"]);
        assert_eq!(s.push(b"ld\n\n"), vec!["world", ""]);
        assert_eq!(s.finish(), None);
        s.push(b"tail\r");
        assert_eq!(s.finish().as_deref(), Some("tail"));
    }

    #[test]
    fn matcher_requires_order() {
        let mut m = Matcher::new(vec![re("SVM.*NPT"), re("^ready$")], None);
        assert_eq!(m.feed("ready"), Verdict::Pending, "ready before banner");
        assert_eq!(m.feed("banner: SVM with NPT"), Verdict::Pending);
        assert_eq!(m.waiting_for().unwrap().as_str(), "^ready$");
        assert_eq!(m.feed("something"), Verdict::Pending);
        assert_eq!(m.feed("ready"), Verdict::Matched);
    }

    #[test]
    fn one_line_satisfies_one_expectation() {
        let mut m = Matcher::new(vec![re("a"), re("a")], None);
        assert_eq!(m.feed("a"), Verdict::Pending);
        assert_eq!(m.feed("a"), Verdict::Matched);
    }

    #[test]
    fn failure_ends_run() {
        let mut m = Matcher::new(vec![re("^ready$")], Some(re("(?i)panic")));
        assert_eq!(m.feed("booting"), Verdict::Pending);
        assert!(matches!(m.feed("PANIC at foo.rs"), Verdict::Failed(_)));
    }

    #[test]
    fn expected_line_wins_over_failure() {
        let mut m = Matcher::new(vec![re("fatal: .*ACPI")], Some(re("(?i)fatal")));
        assert_eq!(m.feed("fatal: no ACPI tables"), Verdict::Matched);
        let mut m = Matcher::new(
            vec![re("banner"), re("fatal: .*ACPI")],
            Some(re("(?i)fatal")),
        );
        assert!(matches!(m.feed("fatal: no ACPI"), Verdict::Failed(_)));
    }

    #[test]
    fn empty_expect_matches_at_once() {
        let mut m = Matcher::new(Vec::new(), None);
        assert_eq!(m.feed("x"), Verdict::Matched);
    }

    #[test]
    fn tail_takes_last() {
        let lines: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        assert_eq!(tail(&lines, 40).len(), 40);
        assert_eq!(tail(&lines, 40)[0], "10");
        assert_eq!(tail(&lines[..3], 40).len(), 3);
    }
}
