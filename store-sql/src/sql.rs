//! The statements of one table, generated once per store from the checked names.

use crate::ident::quoted;

/// The SQL flavour.
#[cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// PostgreSQL's key column is `VARCHAR(255)`: keys of up to 255 characters.
const POSTGRES_KEY_CHARS: usize = 255;

impl Dialect {
    /// The key column's limit in characters, where the schema has one below 1024 bytes.
    pub(crate) fn max_key_chars(self) -> Option<usize> {
        match self {
            Self::Sqlite => None,
            Self::Postgres => Some(POSTGRES_KEY_CHARS),
        }
    }

    /// The `n`th (1-based) parameter placeholder.
    fn p(self, n: usize) -> String {
        match self {
            Self::Sqlite => format!("?{n}"),
            Self::Postgres => format!("${n}"),
        }
    }

    /// Larger of two expressions.
    fn max(self, a: &str, b: &str) -> String {
        match self {
            Self::Sqlite => format!("MAX({a}, {b})"),
            Self::Postgres => format!("GREATEST({a}, {b})"),
        }
    }

    /// The key column as compared and ordered: byte order on both (PostgreSQL needs "C").
    fn ordered(self, column: &str) -> String {
        match self {
            Self::Sqlite => column.to_owned(),
            Self::Postgres => format!("{column} COLLATE \"C\""),
        }
    }
}

/// Every statement a store runs against its table. Parameters are listed beside each.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    /// (key, now) → (value, expires_at[, version])
    pub(crate) get: String,
    /// (key, now) → 1
    pub(crate) has: String,
    /// (key, value, expires_at[, stamp]) → [version]
    pub(crate) upsert: String,
    /// (key, value, expires_at, now[, stamp]) → key, only when written
    pub(crate) insert_if_absent: String,
    /// (key, value, expires_at, now, expected, stamp) → version, only when written
    pub(crate) update_if_version: Option<String>,
    /// (key, now) → version of the live row, to classify a failed `IfVersion`
    pub(crate) live_version: Option<String>,
    /// (key, now) → whether the removed row was live
    pub(crate) delete: String,
    /// list variants: [exclusive start][has upper bound]; parameters
    /// (start, now, limit[, upper]) → (key, value, expires_at[, version])
    pub(crate) list: [[String; 2]; 2],
    /// (now, batch) → rows removed
    pub(crate) cleanup: String,
    /// statements of `create_table: true`, in order
    pub(crate) create: Vec<String>,
    /// whether rows carry versions
    pub(crate) versioned: bool,
}

/// Names of the table and its columns, as configured (unquoted, already checked).
#[derive(Debug, Clone)]
pub(crate) struct Names<'a> {
    pub(crate) table: &'a str,
    pub(crate) key: &'a str,
    pub(crate) value: &'a str,
    pub(crate) expires: &'a str,
    pub(crate) version: Option<&'a str>,
}

impl Statements {
    pub(crate) fn new(d: Dialect, n: &Names<'_>) -> Self {
        let t = quoted(n.table);
        let k = quoted(n.key);
        let v = quoted(n.value);
        let e = quoted(n.expires);
        let r = n.version.map(quoted);
        let p = |i| d.p(i);
        let live = |now: usize| format!("({e} IS NULL OR {e} > {})", p(now));
        let ver_col = r.as_ref().map(|r| format!(", {r}")).unwrap_or_default();

        let get = format!(
            "SELECT {v}, {e}{ver_col} FROM {t} WHERE {k} = {} AND {}",
            p(1),
            live(2)
        );
        let has = format!("SELECT 1 FROM {t} WHERE {k} = {} AND {}", p(1), live(2));

        // Unconditional upsert: one statement; a live row's version becomes max(old + 1, stamp).
        let (ins_cols, ins_vals, set_ver, returning) = match &r {
            Some(r) => (
                format!("{k}, {v}, {e}, {r}"),
                format!("{}, {}, {}, {}", p(1), p(2), p(3), p(4)),
                format!(
                    ", {r} = {}",
                    d.max(&format!("{t}.{r} + 1"), &format!("excluded.{r}"))
                ),
                format!(" RETURNING {r}"),
            ),
            None => (
                format!("{k}, {v}, {e}"),
                format!("{}, {}, {}", p(1), p(2), p(3)),
                String::new(),
                String::new(),
            ),
        };
        let upsert = format!(
            "INSERT INTO {t} ({ins_cols}) VALUES ({ins_vals}) ON CONFLICT ({k}) DO UPDATE SET \
             {v} = excluded.{v}, {e} = excluded.{e}{set_ver}{returning}"
        );

        // IfAbsent: the conflict branch only fires for an expired row.
        let (ia_cols, ia_vals, ia_now) = match &r {
            Some(r) => (
                format!("{k}, {v}, {e}, {r}"),
                format!("{}, {}, {}, {}", p(1), p(2), p(3), p(5)),
                p(4),
            ),
            None => (
                format!("{k}, {v}, {e}"),
                format!("{}, {}, {}", p(1), p(2), p(3)),
                p(4),
            ),
        };
        let ia_returning = match &r {
            Some(r) => format!(" RETURNING {r}"),
            None => format!(" RETURNING {k}"),
        };
        let insert_if_absent = format!(
            "INSERT INTO {t} ({ia_cols}) VALUES ({ia_vals}) ON CONFLICT ({k}) DO UPDATE SET \
             {v} = excluded.{v}, {e} = excluded.{e}{set_ver} \
             WHERE {t}.{e} IS NOT NULL AND {t}.{e} <= {ia_now}{ia_returning}"
        );

        let update_if_version = r.as_ref().map(|r| {
            format!(
                "UPDATE {t} SET {v} = {}, {e} = {}, {r} = {} WHERE {k} = {} AND {r} = {} AND {} \
                 RETURNING {r}",
                p(2),
                p(3),
                d.max(&format!("{r} + 1"), &p(6)),
                p(1),
                p(5),
                live(4)
            )
        });
        let live_version = r
            .as_ref()
            .map(|r| format!("SELECT {r} FROM {t} WHERE {k} = {} AND {}", p(1), live(2)));

        let delete_live = match d {
            Dialect::Sqlite => format!("CASE WHEN {} THEN 1 ELSE 0 END", live(2)),
            Dialect::Postgres => live(2),
        };
        let delete = format!(
            "DELETE FROM {t} WHERE {k} = {} RETURNING {delete_live}",
            p(1)
        );

        let ko = d.ordered(&k);
        let list_one = |exclusive: bool, upper: bool| {
            let op = if exclusive { ">" } else { ">=" };
            let upper = if upper {
                format!(" AND {ko} < {}", p(4))
            } else {
                String::new()
            };
            format!(
                "SELECT {k}, {v}, {e}{ver_col} FROM {t} WHERE {ko} {op} {}{upper} AND {} \
                 ORDER BY {ko} LIMIT {}",
                p(1),
                live(2),
                p(3)
            )
        };
        let list = [
            [list_one(false, false), list_one(false, true)],
            [list_one(true, false), list_one(true, true)],
        ];

        let cleanup = format!(
            "DELETE FROM {t} WHERE {k} IN (SELECT {k} FROM {t} WHERE {e} IS NOT NULL AND {e} <= {} \
             LIMIT {})",
            p(1),
            p(2)
        );

        let (key_type, blob) = match d {
            Dialect::Sqlite => ("TEXT".to_owned(), "BLOB"),
            Dialect::Postgres => (
                format!("VARCHAR({POSTGRES_KEY_CHARS}) COLLATE \"C\""),
                "BYTEA",
            ),
        };
        let ver_def = r
            .as_ref()
            .map(|r| format!(", {r} BIGINT NOT NULL"))
            .unwrap_or_default();
        let index_name = {
            let mut base = format!("{}_{}_idx", n.table, n.expires);
            base.truncate(crate::ident::MAX_IDENT_LEN);
            quoted(&base)
        };
        let create = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} ({k} {key_type} PRIMARY KEY, {v} {blob} NOT NULL, \
                 {e} BIGINT{ver_def})"
            ),
            format!("CREATE INDEX IF NOT EXISTS {index_name} ON {t} ({e}) WHERE {e} IS NOT NULL"),
        ];

        Self {
            get,
            has,
            upsert,
            insert_if_absent,
            update_if_version,
            live_version,
            delete,
            list,
            cleanup,
            create,
            versioned: r.is_some(),
        }
    }
}

/// The smallest string greater than every string starting with `prefix` (and not less than any
/// other string above `prefix`): the prefix with its last character replaced by the next code
/// point. UTF-8 byte order is code point order, so this bounds a prefix scan in both dialects.
/// `None` when no such string exists (empty prefix, or only U+10FFFF characters).
pub(crate) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_bounds() {
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("a").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("a%").as_deref(), Some("a&"));
        assert_eq!(
            prefix_upper_bound("a\u{D7FF}").as_deref(),
            Some("a\u{E000}")
        );
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
        // Every string with the prefix is below the bound, and the bound is above the prefix.
        for (p, inside, outside) in [("ab", "ab\u{10FFFF}zz", "ac"), ("é", "éé", "ê")] {
            let u = prefix_upper_bound(p).unwrap();
            assert!(inside < u.as_str() && p < u.as_str() && outside >= u.as_str());
        }
    }

    #[test]
    fn statements_quote_every_name_and_use_the_dialect() {
        let names = Names {
            table: "kv",
            key: "k",
            value: "v",
            expires: "e",
            version: Some("ver"),
        };
        let s = Statements::new(Dialect::Postgres, &names);
        assert!(s.get.contains("FROM \"kv\" WHERE \"k\" = $1"), "{}", s.get);
        assert!(
            s.upsert
                .contains("GREATEST(\"kv\".\"ver\" + 1, excluded.\"ver\")"),
            "{}",
            s.upsert
        );
        assert!(
            s.list[1][1].contains("\"k\" COLLATE \"C\" > $1"),
            "{}",
            s.list[1][1]
        );
        let s = Statements::new(Dialect::Sqlite, &names);
        assert!(
            s.upsert
                .contains("MAX(\"kv\".\"ver\" + 1, excluded.\"ver\")"),
            "{}",
            s.upsert
        );
        assert!(s.get.contains("?2"), "{}", s.get);
    }
}
