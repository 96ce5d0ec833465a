//! TOML plumbing: syntax errors with line and column, and typed deserialization of one table whose
//! errors say which field (by dotted path) and where.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, Deserializer};
use toml::Spanned;

use crate::error::ErrorKind;

/// A parsed document or sub-table, with byte spans into the source text.
pub type Table<'i> = Spanned<DeTable<'i>>;

/// Parses `text` as a TOML document; every syntax error is returned, each with its position.
pub fn parse(text: &str) -> Result<Table<'_>, Vec<ErrorKind>> {
    let (table, errors) = DeTable::parse_recoverable(text);
    if errors.is_empty() {
        return Ok(table);
    }
    let mut positioned: Vec<(usize, usize, String)> = errors
        .iter()
        .map(|e| {
            let (line, column) = line_col(text, e.span().map_or(0, |s| s.start));
            (line, column, e.message().trim().to_owned())
        })
        .collect();
    positioned.sort();
    positioned.dedup();
    Err(positioned
        .into_iter()
        .map(|(line, column, message)| ErrorKind::Syntax {
            line,
            column,
            message,
        })
        .collect())
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The TOML type name of `value`, for messages.
pub fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Each table of the top-level array of tables `key` (`[[key]]`) deserialized into `T`, with
/// its index. An entry that is not a table is reported as `not_table(its type)`, a field that
/// does not deserialize with its path; both under the field prefix `at(index, its name)` (the
/// name when the table has a string `name`). A `key` that is absent or not an array gives
/// nothing (the top-level deserialization reports a wrong type).
pub fn array_tables<T: DeserializeOwned>(
    file: &std::path::Path,
    text: &str,
    doc: &Table<'_>,
    key: &str,
    at: impl Fn(usize, Option<&str>) -> String,
    not_table: impl Fn(&'static str) -> ErrorKind,
    errors: &mut Vec<crate::error::ConfigError>,
) -> Vec<(usize, T)> {
    let Some(DeValue::Array(entries)) = doc.get_ref().get(key).map(Spanned::get_ref) else {
        return Vec::new();
    };
    let error = |field: String, kind: ErrorKind| crate::error::ConfigError {
        file: file.to_owned(),
        vm: None,
        field,
        kind,
    };
    let mut out = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let DeValue::Table(table) = entry.get_ref() else {
            errors.push(error(
                at(index, None),
                not_table(type_name(entry.get_ref())),
            ));
            continue;
        };
        let name = match table.get("name").map(Spanned::get_ref) {
            Some(DeValue::String(name)) => Some(name.to_string()),
            _ => None,
        };
        match deserialize::<T>(text, &Spanned::new(entry.span(), table.clone())) {
            Ok(raw) => out.push((index, raw)),
            Err((field, kind)) => errors.push(error(
                format!("{}: {field}", at(index, name.as_deref())),
                kind,
            )),
        }
    }
    out
}

/// Deserializes `table` (a sub-table of `text`) into `T`. On failure returns the dotted path of
/// the field at fault (relative to `table`) and what is wrong with it.
pub fn deserialize<T: DeserializeOwned>(
    text: &str,
    table: &Table<'_>,
) -> Result<T, (String, ErrorKind)> {
    T::deserialize(Deserializer::from(table.clone())).map_err(|e| {
        let span = e.span().unwrap_or_else(|| table.span());
        let (line, column) = line_col(text, span.start);
        let mut path = path_to(table.get_ref(), &span);
        let message = e.message().trim();
        let kind = if let Some(rest) = message.strip_prefix("unknown field `") {
            let expected = rest
                .split_once("`, expected ")
                .map_or("no field here", |(_, expected)| expected);
            if path.is_empty() {
                // The span was the table's, not the key's: take the key from the message.
                path.push(rest.split('`').next().unwrap_or_default().to_owned());
            }
            ErrorKind::UnknownField {
                line,
                column,
                expected: expected.to_owned(),
            }
        } else if let Some(rest) = message.strip_prefix("missing field `") {
            path.push(rest.split('`').next().unwrap_or_default().to_owned());
            ErrorKind::MissingField
        } else {
            ErrorKind::BadValue {
                line,
                column,
                message: message.to_owned(),
            }
        };
        (path.join("."), kind)
    })
}

/// The keys leading from `table` to the innermost key or value whose span contains `span`; a table
/// inside an array is named by its index, as in `virtio[2]`.
///
/// Sub-tables are searched even when their own span does not contain `span`: a table opened by a
/// `[vm.kernel]` or `[[vm.virtio]]` header is spanned by its header only, while its keys follow it.
fn path_to(table: &DeTable<'_>, span: &Range<usize>) -> Vec<String> {
    let within = |outer: Range<usize>| outer.start <= span.start && span.end <= outer.end;
    for (key, value) in table {
        let key_path = || vec![key.get_ref().to_string()];
        if within(key.span()) {
            return key_path();
        }
        match value.get_ref() {
            DeValue::Table(inner) => {
                let inner_path = path_to(inner, span);
                if !inner_path.is_empty() {
                    return key_path().into_iter().chain(inner_path).collect();
                }
            }
            DeValue::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    let DeValue::Table(inner) = item.get_ref() else {
                        continue;
                    };
                    let element = || format!("{}[{index}]", key.get_ref());
                    let inner_path = path_to(inner, span);
                    if !inner_path.is_empty() {
                        return std::iter::once(element()).chain(inner_path).collect();
                    }
                    if within(item.span()) {
                        return vec![element()];
                    }
                }
            }
            _ => {}
        }
        if within(value.span()) {
            return key_path();
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 3)); // after the two-byte 'é'
    }

    #[test]
    fn syntax_errors_have_positions() {
        let errors = parse("a = 1\nb = = 2\n").unwrap_err();
        assert!(
            matches!(errors[0], ErrorKind::Syntax { line: 2, .. }),
            "{errors:?}"
        );
    }
}
