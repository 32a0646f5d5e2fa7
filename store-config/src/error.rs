//! Configuration errors: each names the file, the entry, the field, and the line and column
//! when they are known.

use std::fmt;
use std::path::{Path, PathBuf};

use store_core::ErrorKind;

/// One problem in one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// What kind of problem (`Invalid` mostly; `AlreadyExists` for duplicate ids; `Unsupported`
    /// for a kind this build does not include).
    pub kind: ErrorKind,
    /// The file.
    pub file: PathBuf,
    /// The entry id (`namespace:name`), when the problem is inside an entry.
    pub entry: Option<String>,
    /// The field, when one is to blame.
    pub field: Option<String>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(kind: ErrorKind, file: &Path, message: impl Into<String>) -> Self {
        Self {
            kind,
            file: file.to_path_buf(),
            entry: None,
            field: None,
            line: None,
            column: None,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(file: &Path, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, file, message)
    }

    pub(crate) fn entry(mut self, id: &str) -> Self {
        self.entry = Some(id.to_owned());
        self
    }

    pub(crate) fn field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }

    pub(crate) fn at(mut self, position: Option<(usize, usize)>) -> Self {
        if let Some((line, column)) = position {
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(entry) = &self.entry {
            write!(f, "entry `{entry}`: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found while loading: loading does not stop at the first one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The problems, in file and entry order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// How many problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (never true for a returned error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

impl From<ConfigErrors> for store_core::Error {
    fn from(e: ConfigErrors) -> Self {
        let kind = e.0.first().map_or(ErrorKind::Invalid, |first| first.kind);
        store_core::Error::new(kind, e.to_string())
    }
}

/// Edit distance (Levenshtein) of two short ASCII-ish strings.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb {
                previous
            } else {
                1 + previous.min(current).min(row[j])
            };
            previous = current;
        }
    }
    row[b.len()]
}

/// The known name closest to `unknown`, if it is close enough to be a typo.
pub(crate) fn closest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (distance(unknown, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_everything_known() {
        let e = ConfigError::invalid(Path::new("a.yaml"), "bad")
            .entry("app:x")
            .field("max_size")
            .at(Some((3, 5)));
        assert_eq!(
            e.to_string(),
            "a.yaml:3:5: entry `app:x`: field `max_size`: bad"
        );
        let e = ConfigError::invalid(Path::new("a.yaml"), "bad");
        assert_eq!(e.to_string(), "a.yaml: bad");
    }

    #[test]
    fn suggestions() {
        let fields = ["max_size", "cleanup_interval", "max_value_size"];
        assert_eq!(closest("max_sise", &fields), Some("max_size"));
        assert_eq!(
            closest("cleanup_intervall", &fields),
            Some("cleanup_interval")
        );
        assert_eq!(closest("colour", &fields), None);
    }
}
