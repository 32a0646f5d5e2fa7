//! SQL identifiers from configuration: checked once at construction, quoted anyway.

use store_core::{Error, Result};

/// Longest identifier (PostgreSQL's limit).
pub const MAX_IDENT_LEN: usize = 63;

/// Words that cannot be bare names: PostgreSQL's reserved key words, plus the SQLite key words
/// that have no fallback to a plain name. Non-reserved key words (`key`, `value`, `version`, …)
/// are fine: the default column names `key` and `value` are among them.
const RESERVED: &[&str] = &[
    // PostgreSQL reserved (and reserved-but-may-be-function/type)
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
    // SQLite key words without fallback
    "add",
    "alter",
    "autoincrement",
    "between",
    "commit",
    "delete",
    "drop",
    "escape",
    "exists",
    "index",
    "insert",
    "nothing",
    "rollback",
    "set",
    "transaction",
    "update",
    "values",
];

/// Checks that `value` (the value of config field `field`) is a safe identifier: at most 63
/// characters matching `^[a-zA-Z][a-zA-Z0-9_]*$` and not a reserved word.
pub(crate) fn check(field: &str, value: &str) -> Result<()> {
    check_value(field, value).map_err(|e| e.with_field(field))
}

fn check_value(field: &str, value: &str) -> Result<()> {
    const PATTERN: &str = "^[a-zA-Z][a-zA-Z0-9_]*$";
    let shown = store_core::backend::validate::quote(value);
    if value.is_empty() {
        return Err(Error::invalid(format!("{field}: must not be empty")));
    }
    if value.len() > MAX_IDENT_LEN {
        return Err(Error::invalid(format!(
            "{field} {shown}: {} characters, limit {MAX_IDENT_LEN}",
            value.chars().count()
        )));
    }
    let mut chars = value.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::invalid(format!(
            "{field} {shown}: must match {PATTERN}"
        )));
    }
    if RESERVED.contains(&value.to_ascii_lowercase().as_str()) {
        return Err(Error::invalid(format!(
            "{field} {shown}: is an SQL reserved word"
        )));
    }
    Ok(())
}

/// `"name"`: a checked identifier, quoted for generated SQL.
pub(crate) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_spec_defaults() {
        for ok in [
            "kv",
            "kv_store",
            "KV2",
            "a",
            &"a".repeat(63),
            "key",
            "value",
            "expires_at",
            "version",
        ] {
            assert!(check("table_name", ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_hostile_names_naming_field_and_value() {
        for bad in [
            "kv; DROP TABLE x",
            "kv--",
            "\"kv\"",
            "select",
            "SELECT",
            &"a".repeat(64),
            "1kv",
            "kv store",
            "",
            "_kv",
            "kv\0",
            "ключ",
        ] {
            let e = check("table_name", bad).unwrap_err();
            assert_eq!(e.kind(), store_core::ErrorKind::Invalid);
            assert!(e.message().starts_with("table_name"), "{bad}: {e}");
        }
        let e = check("table_name", "kv store").unwrap_err();
        assert_eq!(
            e.message(),
            "table_name \"kv store\": must match ^[a-zA-Z][a-zA-Z0-9_]*$"
        );
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quoted("kv"), "\"kv\"");
        assert_eq!(quoted("a\"b"), "\"a\"\"b\"");
    }
}
