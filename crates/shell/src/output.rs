//! Text for the terminal: the output sink commands write to (LF becomes CR LF) and aligned tables.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Bytes for the physical console. Text written through [`fmt::Write`] has each `\n` turned
/// into `\r\n` (the UART is a raw terminal); [`Output::raw`] passes bytes through unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    bytes: Vec<u8>,
}

impl Output {
    /// Nothing yet.
    pub const fn new() -> Self {
        Output { bytes: Vec::new() }
    }

    /// Appends bytes unchanged (a guest's own console output).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Appends `text` and a line end.
    pub fn line(&mut self, text: &str) {
        self.text(text);
        self.bytes.extend_from_slice(b"\r\n");
    }

    /// Appends `text`, turning `\n` into `\r\n`.
    pub fn text(&mut self, text: &str) {
        for (i, part) in text.split('\n').enumerate() {
            if i > 0 {
                self.bytes.extend_from_slice(b"\r\n");
            }
            self.bytes.extend_from_slice(part.as_bytes());
        }
    }

    /// What has been written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Forgets everything written after the first `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.bytes.truncate(len);
    }

    /// Takes the bytes out, leaving the sink empty.
    pub fn take(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.bytes)
    }
}

impl fmt::Write for Output {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.text(s);
        Ok(())
    }
}

/// Rows of cells printed in left-aligned columns two spaces apart, without trailing blanks.
#[derive(Clone, Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose first row is `header`.
    pub fn new(header: &[&str]) -> Self {
        Table {
            rows: alloc::vec![header.iter().map(|&h| String::from(h)).collect()],
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Writes every row, one line each.
    pub fn write_to(&self, out: &mut Output) {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut line = String::new();
        for row in &self.rows {
            line.clear();
            for (cell, width) in row.iter().zip(&widths) {
                line.push_str(cell);
                for _ in cell.chars().count()..width + 2 {
                    line.push(' ');
                }
            }
            out.line(line.trim_end());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use core::fmt::Write;

    #[test]
    fn newlines_become_crlf() {
        let mut out = Output::new();
        write!(out, "a\nb").unwrap();
        out.line("c");
        out.raw(b"x\ny");
        assert_eq!(out.as_bytes(), b"a\r\nbc\r\nx\ny");
        assert_eq!(out.take(), b"a\r\nbc\r\nx\ny");
        assert!(out.is_empty());
    }

    #[test]
    fn columns_align_without_trailing_blanks() {
        let mut t = Table::new(&["ID", "NAME", "STATE"]);
        t.row(vec![
            "0".to_string(),
            "linux-rt".to_string(),
            "running".into(),
        ]);
        t.row(vec!["12".to_string(), "x".to_string(), "".into()]);
        let mut out = Output::new();
        t.write_to(&mut out);
        assert_eq!(
            core::str::from_utf8(out.as_bytes()).unwrap(),
            "ID  NAME      STATE\r\n0   linux-rt  running\r\n12  x\r\n"
        );
    }
}
