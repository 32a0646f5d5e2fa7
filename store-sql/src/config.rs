//! Registry fields of `store.sql`, `db.sql.sqlite` and `db.sql.postgres`
//! (`docs/configuration.md`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use store_core::{Error, HumanDuration, Result};

use crate::ident;

fn default_id_column() -> String {
    "key".to_owned()
}

fn default_payload_column() -> String {
    "value".to_owned()
}

fn default_expire_column() -> String {
    "expires_at".to_owned()
}

/// Fields of a `store.sql` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlStoreConfig {
    /// Id of the `db.sql.sqlite` or `db.sql.postgres` entry holding the table (resolved by the
    /// registry; unused when a store is built in code).
    #[serde(default)]
    pub database: String,
    /// The table (required).
    pub table_name: String,
    /// Key column (default `key`).
    #[serde(default = "default_id_column")]
    pub id_column_name: String,
    /// Value column (default `value`).
    #[serde(default = "default_payload_column")]
    pub payload_column_name: String,
    /// Expiry column, epoch milliseconds or NULL (default `expires_at`).
    #[serde(default = "default_expire_column")]
    pub expire_column_name: String,
    /// Version column; without it the store is unversioned and `IfVersion` is `Unsupported`.
    #[serde(default)]
    pub version_column_name: Option<String>,
    /// How often expired rows are deleted; absent or `0` means no cleanup.
    #[serde(default)]
    pub cleanup_interval: Option<HumanDuration>,
    /// Create the table and its expiry index if they do not exist.
    #[serde(default)]
    pub create_table: bool,
    /// Largest value in bytes (default 1 MiB).
    #[serde(default)]
    pub max_value_size: Option<u64>,
}

impl SqlStoreConfig {
    /// Every field a `store.sql` entry may have.
    pub const FIELDS: &'static [&'static str] = &[
        "database",
        "table_name",
        "id_column_name",
        "payload_column_name",
        "expire_column_name",
        "version_column_name",
        "cleanup_interval",
        "create_table",
        "max_value_size",
    ];

    /// A config for `table_name` with every other field at its default.
    pub fn new(table_name: impl Into<String>) -> Self {
        Self {
            database: String::new(),
            table_name: table_name.into(),
            id_column_name: default_id_column(),
            payload_column_name: default_payload_column(),
            expire_column_name: default_expire_column(),
            version_column_name: None,
            cleanup_interval: None,
            create_table: false,
            max_value_size: None,
        }
    }

    /// Sets the version column.
    #[must_use]
    pub fn version_column(mut self, name: impl Into<String>) -> Self {
        self.version_column_name = Some(name.into());
        self
    }

    /// Sets `create_table`.
    #[must_use]
    pub fn create_table(mut self, create: bool) -> Self {
        self.create_table = create;
        self
    }

    /// Sets the cleanup interval (zero: no cleanup).
    #[must_use]
    pub fn cleanup_interval(mut self, every: Duration) -> Self {
        self.cleanup_interval = Some(HumanDuration(every));
        self
    }

    /// Checks every identifier (naming the field) and applies defaults.
    pub(crate) fn validate(&self) -> Result<Checked> {
        ident::check("table_name", &self.table_name)?;
        ident::check("id_column_name", &self.id_column_name)?;
        ident::check("payload_column_name", &self.payload_column_name)?;
        ident::check("expire_column_name", &self.expire_column_name)?;
        if let Some(v) = &self.version_column_name {
            ident::check("version_column_name", v)?;
        }
        let mut names: Vec<(&str, &str)> = vec![
            ("id_column_name", &self.id_column_name),
            ("payload_column_name", &self.payload_column_name),
            ("expire_column_name", &self.expire_column_name),
        ];
        if let Some(v) = &self.version_column_name {
            names.push(("version_column_name", v));
        }
        for (i, (field, name)) in names.iter().enumerate() {
            if let Some((other, _)) = names[..i]
                .iter()
                .find(|(_, n)| n.eq_ignore_ascii_case(name))
            {
                return Err(
                    Error::invalid(format!("{field} {name:?}: same column as {other}"))
                        .with_field(*field),
                );
            }
        }
        let max_value_size = match self.max_value_size {
            None | Some(0) => store_core::backend::validate::DEFAULT_MAX_VALUE_SIZE,
            Some(n) => usize::try_from(n).map_err(|_| {
                Error::invalid(format!("max_value_size {n}: too large for this platform"))
                    .with_field("max_value_size")
            })?,
        };
        Ok(Checked {
            cleanup_interval: self
                .cleanup_interval
                .map(Duration::from)
                .filter(|d| !d.is_zero()),
            max_value_size,
        })
    }
}

/// Defaults applied and checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checked {
    pub(crate) cleanup_interval: Option<Duration>,
    pub(crate) max_value_size: usize,
}

/// When SQLite waits for the disk (its `synchronous` pragma, in WAL mode).
///
/// | mode | a process crash loses | a power loss (or OS crash) loses |
/// |---|---|---|
/// | `normal` (default) | nothing acknowledged | the writes of the last moments before it: committed transactions not yet checkpointed may roll back, never a torn database |
/// | `full` | nothing acknowledged | nothing acknowledged: every commit waits for its fsync |
///
/// With `full`, a group commit shares one fsync among every write of its batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Sync the WAL at checkpoints only: durable across a process crash.
    #[default]
    Normal,
    /// Sync the WAL at every commit: durable across a power loss.
    Full,
}

impl Synchronous {
    /// The pragma's value: `NORMAL` or `FULL`.
    pub const fn as_pragma(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// Fields of a `db.sql.sqlite` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file (created if missing), or `:memory:`.
    pub path: String,
    /// How long a writer waits for another process's lock before failing `Unavailable`
    /// (default `5s`).
    #[serde(default)]
    pub busy_timeout: Option<HumanDuration>,
    /// `normal` (default) or `full`: see [`Synchronous`].
    #[serde(default)]
    pub synchronous: Option<Synchronous>,
}

impl SqliteConfig {
    /// Every field a `db.sql.sqlite` entry may have.
    pub const FIELDS: &'static [&'static str] = &["path", "busy_timeout", "synchronous"];

    /// A database at `path`.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            busy_timeout: None,
            synchronous: None,
        }
    }

    /// Sets when commits wait for the disk.
    #[must_use]
    pub fn synchronous(mut self, mode: Synchronous) -> Self {
        self.synchronous = Some(mode);
        self
    }
}

/// Whether and how a PostgreSQL connection uses TLS (`tls` of a `db.sql.postgres` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP; a server that requires TLS refuses the connection.
    Disable,
    /// TLS, without checking the server's certificate: encrypted, but open to an impostor.
    Require,
    /// TLS, and the server's certificate must be signed by a trusted CA (`ca_file`, else the
    /// system's roots) for the host name (or IP address) the URL names.
    VerifyFull,
}

/// Fields of a `db.sql.postgres` entry. `Debug` never shows the URL's password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL (`postgres://user:password@host:port/db`), or use `url_env`.
    #[serde(default)]
    pub url: Option<String>,
    /// Name of an environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// Most connections (default 10).
    #[serde(default)]
    pub pool_size: Option<u32>,
    /// Longest wait to connect or for a free connection (default `5s`).
    #[serde(default)]
    pub connect_timeout: Option<HumanDuration>,
    /// Longest a statement may run before `Timeout` (default `30s`; `0` means the default; at
    /// most PostgreSQL's limit of 2³¹ − 1 ms). The server enforces it and cancels the statement;
    /// table creation gets at least 10 minutes.
    #[serde(default)]
    pub statement_timeout: Option<HumanDuration>,
    /// `disable`, `require` or `verify-full`; default `verify-full` when the URL names a host
    /// that is not loopback, `disable` for loopback hosts and Unix sockets.
    #[serde(default)]
    pub tls: Option<TlsMode>,
    /// PEM file of the CA certificates `verify-full` trusts (default: the system's roots).
    #[serde(default)]
    pub ca_file: Option<String>,
}

impl PostgresConfig {
    /// Every field a `db.sql.postgres` entry may have.
    pub const FIELDS: &'static [&'static str] = &[
        "url",
        "url_env",
        "pool_size",
        "connect_timeout",
        "statement_timeout",
        "tls",
        "ca_file",
    ];

    /// A database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            url_env: None,
            pool_size: None,
            connect_timeout: None,
            statement_timeout: None,
            tls: None,
            ca_file: None,
        }
    }

    /// Sets the TLS mode.
    #[must_use]
    pub fn tls(mut self, mode: TlsMode) -> Self {
        self.tls = Some(mode);
        self
    }

    /// Sets the CA certificates `verify-full` trusts.
    #[must_use]
    pub fn ca_file(mut self, path: impl Into<String>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// The URL, from `url` or the variable `url_env` names; exactly one must be given.
    pub fn resolve_url(&self) -> Result<String> {
        match (&self.url, &self.url_env) {
            (Some(url), None) => Ok(url.clone()),
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                Error::invalid(format!(
                    "url_env {var:?}: environment variable is not set (or not UTF-8)"
                ))
                .with_field("url_env")
            }),
            (Some(_), Some(_)) => {
                Err(Error::invalid("url and url_env: give only one").with_field("url"))
            }
            (None, None) => Err(Error::invalid("url: missing (or give url_env)").with_field("url")),
        }
    }
}

/// `postgres://user:***@host/db`: a URL with its password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsed url>".to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split(':').next().unwrap_or("");
    let tail = redact_query(tail);
    format!("{scheme}://{user}:***@{host}{tail}")
}

fn redact_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{path}?{}", parts.join("&"))
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("url_env", &self.url_env)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_fields<T: serde::de::DeserializeOwned>() -> Vec<String> {
        let e = serde_json::from_str::<T>(r#"{"__probe__": 0}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        e.split('`').skip(3).step_by(2).map(str::to_owned).collect()
    }

    #[test]
    fn fields_lists_match_serde() {
        assert_eq!(serde_fields::<SqlStoreConfig>(), SqlStoreConfig::FIELDS);
        assert_eq!(serde_fields::<SqliteConfig>(), SqliteConfig::FIELDS);
        assert_eq!(serde_fields::<PostgresConfig>(), PostgresConfig::FIELDS);
    }

    #[test]
    fn passwords_never_show() {
        let c = PostgresConfig::new("postgres://app:s3cret@db:5432/kv?sslmode=disable");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://app:***@db:5432/kv?sslmode=disable"),
            "{shown}"
        );
        assert_eq!(
            redact_url("postgres://u@h/d?password=x&a=b"),
            "postgres://u:***@h/d?password=***&a=b"
        );
    }

    #[test]
    fn identifiers_are_checked_with_the_field_named() {
        let mut c = SqlStoreConfig::new("kv");
        c.payload_column_name = "kv--".into();
        let e = c.validate().unwrap_err();
        assert!(
            e.message().starts_with("payload_column_name \"kv--\""),
            "{e}"
        );
        let c = SqlStoreConfig::new("kv").version_column("KEY");
        let e = c.validate().unwrap_err();
        assert!(e.message().contains("same column as id_column_name"), "{e}");
    }

    #[test]
    fn url_sources() {
        assert!(PostgresConfig::new("postgres://x").resolve_url().is_ok());
        let mut c = PostgresConfig::new("postgres://x");
        c.url_env = Some("X".into());
        assert!(c.resolve_url().is_err());
        let c = PostgresConfig {
            url: None,
            url_env: Some("STORE_SQL_TEST_SURELY_UNSET".into()),
            pool_size: None,
            connect_timeout: None,
            statement_timeout: None,
            tls: None,
            ca_file: None,
        };
        assert!(
            c.resolve_url()
                .unwrap_err()
                .message()
                .contains("STORE_SQL_TEST_SURELY_UNSET")
        );
    }
}
