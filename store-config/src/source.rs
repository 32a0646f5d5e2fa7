//! Where things are in a registry file's text, so errors can give a line and column.
//!
//! The YAML parser reports positions only for syntax errors. For entries and fields this module
//! scans the block-style text: items of the top-level `entries:` list start with `-` at one
//! indentation, and an entry's own keys sit at one column. Flow-style YAML (`{…}`, `[…]`) still
//! loads; its errors just carry no line.

use std::path::{Path, PathBuf};

/// A file's path and text.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
    /// `(first line, key column)` of each entry, 0-based lines, in document order.
    items: Vec<(usize, usize)>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

impl Source {
    pub(crate) fn new(path: &Path, text: String) -> Self {
        let items = find_items(&text);
        Self {
            path: path.to_path_buf(),
            text,
            items,
        }
    }

    /// 1-based `(line, column)` of entry `index`'s first line.
    pub(crate) fn entry_position(&self, index: usize) -> Option<(usize, usize)> {
        self.items.get(index).map(|(line, col)| (line + 1, col + 1))
    }

    /// 1-based `(line, column)` of key `field` of entry `index`.
    pub(crate) fn field_position(&self, index: usize, field: &str) -> Option<(usize, usize)> {
        let (start, key_col) = *self.items.get(index)?;
        let end = self
            .items
            .get(index + 1)
            .map_or(usize::MAX, |(line, _)| *line);
        let key = format!("{field}:");
        for (n, line) in self.text.lines().enumerate().skip(start) {
            if n >= end || (n > start && !is_blank(line) && indent(line) == 0) {
                break;
            }
            let col = if n == start { key_col } else { indent(line) };
            if col == key_col && line.get(col..).is_some_and(|rest| rest.starts_with(&key)) {
                return Some((n + 1, col + 1));
            }
        }
        None
    }

    /// 1-based `(line, column)` of a top-level key.
    pub(crate) fn top_level_position(&self, key: &str) -> Option<(usize, usize)> {
        let key = format!("{key}:");
        self.text
            .lines()
            .position(|l| l.starts_with(&key))
            .map(|n| (n + 1, 1))
    }
}

/// `(line, key column)` of every item of the top-level `entries:` sequence.
fn find_items(text: &str) -> Vec<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let Some(header) = lines
        .iter()
        .position(|l| l.trim_end() == "entries:" || l.starts_with("entries: #"))
    else {
        return Vec::new();
    };
    let mut items = Vec::new();
    let mut dash_col = None;
    for (n, line) in lines.iter().enumerate().skip(header + 1) {
        if is_blank(line) {
            continue;
        }
        let col = indent(line);
        let rest = &line[col..];
        if col == 0 && !rest.starts_with('-') {
            break; // the next top-level key
        }
        if rest.starts_with('-') && dash_col.is_none_or(|d| d == col) {
            dash_col = Some(col);
            let after_dash = &rest[1..];
            let key_col = col + 1 + indent(after_dash);
            items.push((n, key_col));
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
version: \"1.0\"
namespace: app
entries:
  - name: main_db
    kind: db.sql.sqlite
    path: ./data/app.db

  # a comment
  - name: cache
    kind: store.sql
    meta:
      table_name: not-this-one
    table_name: kv_store
    lifecycle:
      auto_start: true
other: 1
";

    #[test]
    fn finds_entries_and_their_own_keys() {
        let s = Source::new(Path::new("a.yaml"), TEXT.to_owned());
        assert_eq!(s.entry_position(0), Some((4, 5)));
        assert_eq!(s.entry_position(1), Some((9, 5)));
        assert_eq!(s.field_position(0, "name"), Some((4, 5)));
        assert_eq!(s.field_position(0, "path"), Some((6, 5)));
        assert_eq!(
            s.field_position(1, "table_name"),
            Some((13, 5)),
            "not meta's key"
        );
        assert_eq!(s.field_position(1, "path"), None);
        assert_eq!(s.top_level_position("namespace"), Some((2, 1)));
    }

    #[test]
    fn flow_style_has_no_positions() {
        let s = Source::new(Path::new("a.yaml"), "entries: [{name: a}]".to_owned());
        assert_eq!(s.entry_position(0), None);
    }
}
