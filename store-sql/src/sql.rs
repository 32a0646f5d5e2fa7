//! The statements of one table, generated once per store from the checked names, and bound to
//! their parameters here for both dialects: an engine only runs a [`Bound`] statement and hands
//! back what its [`Reads`] says to read. What the answers mean is decided in `store.rs`.

use std::sync::Arc;

use bytes::Bytes;

use crate::engine::{Range, Write, WriteArgs};
use crate::ident::quoted;
use crate::version::stamp;

/// The SQL flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `?1` placeholders, `MAX`, byte-ordered `TEXT` keys.
    #[cfg_attr(
        not(feature = "sqlite"),
        allow(dead_code, reason = "built without SQLite")
    )]
    Sqlite,
    /// `$1` placeholders, `GREATEST`, `VARCHAR(255) COLLATE "C"` keys.
    #[cfg_attr(
        not(feature = "postgres"),
        allow(dead_code, reason = "built without PostgreSQL")
    )]
    Postgres,
}

/// A value bound to a statement parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    /// A key or a list bound.
    Text(String),
    /// A value.
    Blob(Bytes),
    /// A time, a version, a count.
    Int(i64),
    /// An expiry, `NULL` for none.
    MaybeInt(Option<i64>),
}

/// What a statement's answer is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reads {
    /// Every row: `[key,] value, expires_at[, version]`.
    Rows { keyed: bool, versioned: bool },
    /// The first column (a `BIGINT`) of the first row, if a row came back.
    Number,
    /// Whether a row came back.
    Exists,
    /// How many rows the statement changed.
    Changed,
}

/// An engine's answer to a [`Bound`] statement, as its [`Reads`] asked.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(
        dead_code,
        reason = "only an engine runs statements, and this build has none"
    )
)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    Rows(Vec<crate::engine::Row>),
    Number(Option<i64>),
    Exists(bool),
    Changed(usize),
}

/// One statement ready to run: its text, its parameters in order, how to read its answer, and
/// what it is called in errors.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(
        dead_code,
        reason = "only an engine runs statements, and this build has none"
    )
)]
#[derive(Debug, Clone)]
pub(crate) struct Bound {
    pub(crate) sql: Arc<str>,
    pub(crate) params: Vec<Param>,
    pub(crate) reads: Reads,
    pub(crate) what: &'static str,
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

/// The version a write gives a row whose version is `old`: `max(old + 1, stamp)`, except that a
/// version at or above 2⁵³ (a nanosecond stamp of a build before versions were kept JSON-exact)
/// is replaced by `stamp`, so every key comes back below 2⁵³ at its next write.
fn next_version(d: Dialect, old: &str, stamp: &str) -> String {
    format!(
        "CASE WHEN {old} >= {limit} THEN {stamp} ELSE {} END",
        d.max(&format!("{old} + 1"), stamp),
        limit = store_core::backend::validate::VERSION_LIMIT
    )
}

/// Every statement a store runs against its table, with its parameters and answer beside it.
/// Build a statement ready to run with the methods below.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    /// (key, now) → (value, expires_at[, version])
    get: Arc<str>,
    /// (key, now) → 1
    has: Arc<str>,
    /// (key, value, expires_at[, stamp]) → version (0 when unversioned)
    upsert: Arc<str>,
    /// (key, value, expires_at, now[, stamp]) → version (0 when unversioned), only when written
    insert_if_absent: Arc<str>,
    /// (key, value, expires_at, now, expected, stamp) → version, only when written
    update_if_version: Option<Arc<str>>,
    /// (key, now) → version of the live row, to classify a failed `IfVersion`
    live_version: Option<Arc<str>>,
    /// (key, now) → 1 if the removed row was live, 0 if it had expired; no row if none
    delete: Arc<str>,
    /// list variants: [exclusive start][has upper bound]; parameters
    /// (start, now, limit[, upper]) → (key, value, expires_at[, version])
    list: [[Arc<str>; 2]; 2],
    /// (now, batch) → rows removed
    cleanup: Arc<str>,
    /// statements of `create_table: true`, in order
    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres")),
        allow(
            dead_code,
            reason = "only an engine runs statements, and this build has none"
        )
    )]
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
        // Every write answers the version it wrote, 0 in a table without versions.
        let returning = match &r {
            Some(r) => format!(" RETURNING {r}"),
            None => " RETURNING CAST(0 AS BIGINT)".to_owned(),
        };
        let (ins_cols, ins_vals, set_ver) = match &r {
            Some(r) => (
                format!("{k}, {v}, {e}, {r}"),
                format!("{}, {}, {}, {}", p(1), p(2), p(3), p(4)),
                format!(
                    ", {r} = {}",
                    next_version(d, &format!("{t}.{r}"), &format!("excluded.{r}"))
                ),
            ),
            None => (
                format!("{k}, {v}, {e}"),
                format!("{}, {}, {}", p(1), p(2), p(3)),
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
        let insert_if_absent = format!(
            "INSERT INTO {t} ({ia_cols}) VALUES ({ia_vals}) ON CONFLICT ({k}) DO UPDATE SET \
             {v} = excluded.{v}, {e} = excluded.{e}{set_ver} \
             WHERE {t}.{e} IS NOT NULL AND {t}.{e} <= {ia_now}{returning}"
        );

        let update_if_version = r.as_ref().map(|r| {
            format!(
                "UPDATE {t} SET {v} = {}, {e} = {}, {r} = {} WHERE {k} = {} AND {r} = {} AND {} \
                 RETURNING {r}",
                p(2),
                p(3),
                next_version(d, r, &p(6)),
                p(1),
                p(5),
                live(4)
            )
        });
        let live_version = r
            .as_ref()
            .map(|r| format!("SELECT {r} FROM {t} WHERE {k} = {} AND {}", p(1), live(2)));

        let delete = format!(
            "DELETE FROM {t} WHERE {k} = {} RETURNING CAST(CASE WHEN {} THEN 1 ELSE 0 END AS \
             BIGINT)",
            p(1),
            live(2)
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
            [list_one(false, false).into(), list_one(false, true).into()],
            [list_one(true, false).into(), list_one(true, true).into()],
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
            get: get.into(),
            has: has.into(),
            upsert: upsert.into(),
            insert_if_absent: insert_if_absent.into(),
            update_if_version: update_if_version.map(Into::into),
            live_version: live_version.map(Into::into),
            delete: delete.into(),
            list,
            cleanup: cleanup.into(),
            create,
            versioned: r.is_some(),
        }
    }

    fn bound(sql: &Arc<str>, params: Vec<Param>, reads: Reads, what: &'static str) -> Bound {
        Bound {
            sql: Arc::clone(sql),
            params,
            reads,
            what,
        }
    }

    /// The live row of `key`: [`Reads::Rows`] of at most one row.
    pub(crate) fn get(&self, key: &str, now: i64) -> Bound {
        let reads = Reads::Rows {
            keyed: false,
            versioned: self.versioned,
        };
        let params = vec![Param::Text(key.to_owned()), Param::Int(now)];
        Self::bound(&self.get, params, reads, "get")
    }

    /// Whether `key` is live: [`Reads::Exists`].
    pub(crate) fn has(&self, key: &str, now: i64) -> Bound {
        let params = vec![Param::Text(key.to_owned()), Param::Int(now)];
        Self::bound(&self.has, params, Reads::Exists, "has")
    }

    /// A write: [`Reads::Number`], the written version (0 in a table without versions), or none
    /// when its condition did not hold. For `IfVersion`, also the statement that tells why not:
    /// the live row's version, or none when the key is absent.
    pub(crate) fn write(&self, a: &WriteArgs) -> (Bound, Option<Bound>) {
        let mut params = vec![
            Param::Text(a.key.clone()),
            Param::Blob(a.value.clone()),
            Param::MaybeInt(a.expires),
        ];
        let (sql, what) = match a.condition {
            Write::Always => (&self.upsert, "set"),
            Write::IfAbsent => {
                params.push(Param::Int(a.now));
                (&self.insert_if_absent, "put IfAbsent")
            }
            Write::IfVersion(expected) => {
                params.extend([Param::Int(a.now), Param::Int(expected)]);
                match &self.update_if_version {
                    Some(sql) => (sql, "put IfVersion"),
                    // Refused before it gets here (the store offers no IfVersion): a bug.
                    None => (&self.upsert, "put IfVersion without versions"),
                }
            }
        };
        if self.versioned {
            params.push(Param::Int(stamp()));
        }
        let probe = match (a.condition, &self.live_version) {
            (Write::IfVersion(_), Some(sql)) => Some(Self::bound(
                sql,
                vec![Param::Text(a.key.clone()), Param::Int(a.now)],
                Reads::Number,
                "put IfVersion",
            )),
            _ => None,
        };
        (Self::bound(sql, params, Reads::Number, what), probe)
    }

    /// Removes `key`: [`Reads::Number`], 1 if the row was live, 0 if it had expired, none if
    /// there was no row.
    pub(crate) fn delete(&self, key: &str, now: i64) -> Bound {
        let params = vec![Param::Text(key.to_owned()), Param::Int(now)];
        Self::bound(&self.delete, params, Reads::Number, "delete")
    }

    /// A page: [`Reads::Rows`] with their keys.
    pub(crate) fn list(&self, range: &Range) -> Bound {
        let sql = &self.list[usize::from(range.exclusive)][usize::from(range.upper.is_some())];
        let mut params = vec![
            Param::Text(range.start.clone()),
            Param::Int(range.now),
            Param::Int(range.limit),
        ];
        params.extend(range.upper.clone().map(Param::Text));
        let reads = Reads::Rows {
            keyed: true,
            versioned: self.versioned,
        };
        Self::bound(sql, params, reads, "list")
    }

    /// Deletes at most `batch` expired rows: [`Reads::Changed`].
    pub(crate) fn cleanup(&self, now: i64, batch: i64) -> Bound {
        let params = vec![Param::Int(now), Param::Int(batch)];
        Self::bound(&self.cleanup, params, Reads::Changed, "cleanup")
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
            s.delete.ends_with("THEN 1 ELSE 0 END AS BIGINT)"),
            "{}",
            s.delete
        );
        assert!(
            s.upsert
                .contains("GREATEST(\"kv\".\"ver\" + 1, excluded.\"ver\")"),
            "{}",
            s.upsert
        );
        assert!(
            s.upsert
                .contains("CASE WHEN \"kv\".\"ver\" >= 9007199254740992 THEN excluded.\"ver\""),
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

    /// The highest placeholder number in `sql` (`?N` or `$N`).
    fn placeholders(sql: &str) -> usize {
        let mut most = 0;
        let bytes = sql.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'?' || *b == b'$' {
                let digits: String = sql[i + 1..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                most = most.max(digits.parse().unwrap_or(0));
            }
        }
        most
    }

    #[test]
    fn every_bound_statement_has_a_parameter_for_each_placeholder() {
        for d in [Dialect::Sqlite, Dialect::Postgres] {
            for version in [Some("ver"), None] {
                let names = Names {
                    table: "kv",
                    key: "k",
                    value: "v",
                    expires: "e",
                    version,
                };
                let s = Statements::new(d, &names);
                let args = |condition| WriteArgs {
                    key: "a".into(),
                    value: Bytes::from_static(b"x"),
                    expires: None,
                    now: 5,
                    condition,
                };
                let range = |exclusive, upper: Option<&str>| Range {
                    start: "a".into(),
                    exclusive,
                    upper: upper.map(str::to_owned),
                    now: 5,
                    limit: 10,
                };
                let mut bound = vec![
                    s.get("a", 5),
                    s.has("a", 5),
                    s.delete("a", 5),
                    s.cleanup(5, 100),
                    s.list(&range(false, None)),
                    s.list(&range(true, Some("b"))),
                ];
                let mut conditions = vec![Write::Always, Write::IfAbsent];
                if version.is_some() {
                    conditions.push(Write::IfVersion(3));
                }
                for c in conditions {
                    let (q, probe) = s.write(&args(c));
                    bound.push(q);
                    bound.extend(probe);
                }
                for q in bound {
                    assert_eq!(
                        placeholders(&q.sql),
                        q.params.len(),
                        "{d:?} {}: {}",
                        q.what,
                        q.sql
                    );
                }
            }
        }
    }

    #[test]
    fn writes_are_bound_with_their_parameters_in_order() {
        let names = Names {
            table: "kv",
            key: "k",
            value: "v",
            expires: "e",
            version: Some("ver"),
        };
        let s = Statements::new(Dialect::Sqlite, &names);
        let args = |condition| WriteArgs {
            key: "a".into(),
            value: Bytes::from_static(b"x"),
            expires: Some(9),
            now: 5,
            condition,
        };
        let (set, probe) = s.write(&args(Write::Always));
        assert!(probe.is_none() && set.sql.starts_with("INSERT"));
        assert_eq!(set.params.len(), 4, "key, value, expires, stamp");
        assert_eq!(set.params[2], Param::MaybeInt(Some(9)));
        let (cas, probe) = s.write(&args(Write::IfVersion(3)));
        assert!(cas.sql.starts_with("UPDATE"), "{}", cas.sql);
        assert_eq!(&cas.params[3..5], &[Param::Int(5), Param::Int(3)]);
        let probe = probe.expect("IfVersion says why it did not write");
        assert_eq!(probe.params, vec![Param::Text("a".into()), Param::Int(5)]);
        // Without versions: no stamp, and every write still answers a number (0).
        let plain = Statements::new(
            Dialect::Postgres,
            &Names {
                version: None,
                ..names
            },
        );
        let (ia, _) = plain.write(&args(Write::IfAbsent));
        assert_eq!(ia.params.len(), 4, "key, value, expires, now");
        assert!(
            ia.sql.ends_with("RETURNING CAST(0 AS BIGINT)"),
            "{}",
            ia.sql
        );
        assert_eq!(ia.reads, Reads::Number);
    }
}
