//! Plain-text output: aligned tables for lists, `key: value` blocks for single
//! objects, and a pretty-printer that keeps the server's JSON as it was sent.

use std::fmt::Write as _;

/// A table with a header row and columns padded to their widest cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; it must have one cell per header.
    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(
            cells.len(),
            self.headers.len(),
            "a row needs one cell per column"
        );
        self.rows.push(cells);
    }

    /// The table as text: columns separated by two spaces, no trailing blanks,
    /// one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, (cell, w)) in line.iter().zip(&widths).enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', w - width(cell)));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Renders `key: value` lines with the values aligned after the longest key.
pub fn details(fields: &[(&str, String)]) -> String {
    let key_width = fields.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in fields {
        let pad = key_width - width(key);
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{key}:{}  {value}", " ".repeat(pad));
    }
    out
}

/// Display width of a cell, counted in characters (cells are names, numbers
/// and identifiers; no wide glyphs are expected).
fn width(text: &str) -> usize {
    text.chars().count()
}

/// Formats a byte count with a binary unit: `10 GiB`, `1.5 MiB`, `512 B`.
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    let mut whole = count;
    while whole >= 1024 && unit + 1 < UNITS.len() {
        whole /= 1024;
        unit += 1;
    }
    if unit == 0 {
        return format!("{count} B");
    }
    let scale = 1u64 << (10 * unit);
    if count.is_multiple_of(scale) {
        format!("{} {}", count / scale, UNITS[unit])
    } else {
        // One decimal is enough to tell sizes apart in a table; the exact byte
        // count is in `-o json`. Precision loss above 2^53 bytes is irrelevant here.
        #[allow(clippy::cast_precision_loss)]
        let value = count as f64 / scale as f64;
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Formats a byte count the server sent as a decimal string; anything else is
/// shown unchanged so nothing is hidden.
pub fn byte_string(text: &str) -> String {
    text.parse::<u64>()
        .map(bytes)
        .unwrap_or_else(|_| text.to_owned())
}

/// Pretty-prints a JSON document, keeping its key order and number spelling
/// exactly as received (a `serde_json::Value` round trip would sort keys).
/// Returns `None` if `text` is not valid JSON.
pub fn pretty_json(text: &str) -> Option<String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // Keep empty containers on one line: `{}` and `[]`.
                while chars.peek().is_some_and(|n| n.is_ascii_whitespace()) {
                    chars.next();
                }
                if chars.peek().is_some_and(|n| *n == '}' || *n == ']') {
                    if let Some(close) = chars.next() {
                        out.push(close);
                    }
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    Some(out)
}

fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    out.extend(std::iter::repeat_n(' ', 2 * depth));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let mut t = Table::new(&["NAME", "SIZE"]);
        t.row(vec!["a-long-name".into(), "1 GiB".into()]);
        t.row(vec!["b".into(), "10 GiB".into()]);
        assert_eq!(
            t.render(),
            "NAME         SIZE\na-long-name  1 GiB\nb            10 GiB\n"
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(Table::new(&["UUID", "NAME"]).render(), "UUID  NAME\n");
    }

    #[test]
    #[should_panic(expected = "one cell per column")]
    fn a_short_row_is_a_programming_error() {
        Table::new(&["A", "B"]).row(vec!["x".into()]);
    }

    #[test]
    fn details_align_values() {
        let text = details(&[
            ("UUID", "u".into()),
            ("Name", "n".into()),
            ("ETag", "3".into()),
        ]);
        assert_eq!(text, "UUID:  u\nName:  n\nETag:  3\n");
    }

    #[test]
    fn byte_counts_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(4096), "4 KiB");
        assert_eq!(bytes(10 << 30), "10 GiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(u64::MAX), "16384.0 PiB");
        assert_eq!(byte_string("1073741824"), "1 GiB");
        assert_eq!(byte_string("n/a"), "n/a");
    }

    #[test]
    fn pretty_json_keeps_key_order_and_strings() {
        let raw = r#"{"z":1,"a":{"s":"x, {y}: \"q\"","e":[],"o":{}},"l":[1, 2]}"#;
        let pretty = pretty_json(raw).expect("valid");
        assert_eq!(
            pretty,
            "{\n  \"z\": 1,\n  \"a\": {\n    \"s\": \"x, {y}: \\\"q\\\"\",\n    \"e\": [],\n    \"o\": {}\n  },\n  \"l\": [\n    1,\n    2\n  ]\n}"
        );
        let reparsed: serde_json::Value = serde_json::from_str(&pretty).expect("still JSON");
        assert_eq!(
            reparsed,
            serde_json::from_str::<serde_json::Value>(raw).expect("raw")
        );
    }

    #[test]
    fn pretty_json_rejects_non_json() {
        assert_eq!(pretty_json("<html>"), None);
        assert_eq!(pretty_json(r#"{"a":"#), None);
    }
}
