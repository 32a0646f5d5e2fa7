//! The kinds a registry knows, each mapped to the function that builds it. Adding a kind is one
//! entry in [`KINDS`] plus its function.

// A build with only some backends leaves parts of this module unused.
#![cfg_attr(
    not(all(feature = "memory", feature = "sqlite", feature = "postgres")),
    allow(dead_code, unused_imports, unused_variables)
)]

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_norway::{Mapping, Value};
use store_core::{ErrorKind, SharedClock};

use crate::error::ConfigError;
use crate::registry::{Built, Database, Settings};
use crate::source::Source;

/// How a kind is built.
pub(crate) enum Build {
    /// A database entry, shared by the stores that reference it.
    Database(fn(&Ctx<'_>) -> Result<(Database, Settings), ConfigError>),
    /// A store entry.
    Store(fn(&Ctx<'_>) -> Result<Built, ConfigError>),
    /// Known to the contract but not part of this build.
    Unavailable(&'static str),
}

/// A kind: its name, its fields (besides `name`, `kind`, `meta`, `lifecycle`), its builder.
pub(crate) struct Kind {
    pub(crate) name: &'static str,
    pub(crate) fields: &'static [&'static str],
    pub(crate) build: Build,
}

const NAMESPACE_FIELDS: &[&str] = &["namespace"];

/// Every kind of SPEC §9, in the order errors list them.
pub(crate) const KINDS: &[Kind] = &[
    #[cfg(feature = "memory")]
    Kind {
        name: "store.memory",
        fields: store_memory::MemoryConfig::FIELDS,
        build: Build::Store(memory),
    },
    #[cfg(not(feature = "memory"))]
    Kind {
        name: "store.memory",
        fields: &[],
        build: Build::Unavailable("store-config was built without its `memory` feature"),
    },
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    Kind {
        name: "store.sql",
        fields: store_sql::SqlStoreConfig::FIELDS,
        build: Build::Store(sql),
    },
    #[cfg(not(any(feature = "sqlite", feature = "postgres")))]
    Kind {
        name: "store.sql",
        fields: &[],
        build: Build::Unavailable(
            "store-config was built without its `sqlite` and `postgres` features",
        ),
    },
    Kind {
        name: "store.kv.raft",
        fields: NAMESPACE_FIELDS,
        build: Build::Unavailable("the Raft engine is not part of this build yet"),
    },
    Kind {
        name: "store.kv.crdt",
        fields: &["namespace", "durable"],
        build: Build::Unavailable("the CRDT engine is not part of this build yet"),
    },
    #[cfg(feature = "sqlite")]
    Kind {
        name: "db.sql.sqlite",
        fields: store_sql::SqliteConfig::FIELDS,
        build: Build::Database(sqlite),
    },
    #[cfg(not(feature = "sqlite"))]
    Kind {
        name: "db.sql.sqlite",
        fields: &[],
        build: Build::Unavailable("store-config was built without its `sqlite` feature"),
    },
    #[cfg(feature = "postgres")]
    Kind {
        name: "db.sql.postgres",
        fields: store_sql::PostgresConfig::FIELDS,
        build: Build::Database(postgres),
    },
    #[cfg(not(feature = "postgres"))]
    Kind {
        name: "db.sql.postgres",
        fields: &[],
        build: Build::Unavailable("store-config was built without its `postgres` feature"),
    },
];

/// The names of every kind, for "unknown kind" errors.
pub(crate) fn names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.name).collect()
}

pub(crate) fn find(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// What a `database` reference resolved to.
pub(crate) enum Reference<'a> {
    /// A database entry.
    Database(String, &'a Database),
    /// An entry of another kind.
    OtherKind(String, &'static str),
    /// A database entry that has errors of its own.
    Broken(String),
    /// Nothing with that id; the closest existing id, if one is close.
    Missing(String, Option<String>),
}

/// What a builder gets: the entry's fields and where they came from.
pub(crate) struct Ctx<'a> {
    pub(crate) id: &'a str,
    pub(crate) index: usize,
    pub(crate) source: &'a Source,
    pub(crate) fields: &'a Mapping,
    pub(crate) clock: &'a SharedClock,
    pub(crate) resolve: &'a dyn Fn(&str) -> Reference<'a>,
}

impl Ctx<'_> {
    pub(crate) fn error(&self, field: Option<&str>, message: impl Into<String>) -> ConfigError {
        self.error_of(ErrorKind::Invalid, field, message)
    }

    pub(crate) fn error_of(
        &self,
        kind: ErrorKind,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> ConfigError {
        let mut e = ConfigError::new(kind, &self.source.path, message).entry(self.id);
        match field {
            Some(f) => {
                e = e.field(f);
                e.at(self
                    .source
                    .field_position(self.index, f)
                    .or_else(|| self.source.entry_position(self.index)))
            }
            None => e.at(self.source.entry_position(self.index)),
        }
    }

    /// Deserializes the entry's fields into a backend config; the error names the field.
    pub(crate) fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let value = Value::Mapping(self.fields.clone());
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // "missing field `x`" names its field inside the message.
            let field = if path == "." {
                inner
                    .strip_prefix("missing field `")
                    .and_then(|r| r.split('`').next())
                    .map(str::to_owned)
            } else {
                Some(path.split('.').next().unwrap_or(&path).to_owned())
            };
            self.error(field.as_deref(), inner)
        })
    }

    /// An error from a backend's own validation: its message starts with the field's name.
    pub(crate) fn backend_error(&self, fields: &[&str], e: &store_core::Error) -> ConfigError {
        let message = e.message();
        let field = fields
            .iter()
            .filter(|f| message.starts_with(**f) && message[f.len()..].starts_with([' ', ':']))
            .max_by_key(|f| f.len());
        self.error_of(e.kind(), field.copied(), message)
    }

    /// A path relative to the entry's file, as written paths mean.
    #[cfg(feature = "sqlite")]
    fn relative_to_file(&self, path: &str) -> String {
        let p = Path::new(path);
        if p.is_absolute() || path == ":memory:" || path.is_empty() {
            return path.to_owned();
        }
        let base = self.source.path.parent().unwrap_or(Path::new("."));
        base.join(p).to_string_lossy().into_owned()
    }
}

#[cfg(feature = "memory")]
fn memory(ctx: &Ctx<'_>) -> Result<Built, ConfigError> {
    use store_memory::{MemoryConfig, MemoryStore};
    let config: MemoryConfig = ctx.parse()?;
    let builder = MemoryStore::builder()
        .id(ctx.id)
        .clock(std::sync::Arc::clone(ctx.clock))
        .config(&config)
        .map_err(|e| ctx.backend_error(MemoryConfig::FIELDS, &e))?;
    let store = builder.build();
    let limits = store.limits();
    Ok(Built::memory(store, config, limits))
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn sql(ctx: &Ctx<'_>) -> Result<Built, ConfigError> {
    use store_sql::{SqlStore, SqlStoreConfig};
    let mut config: SqlStoreConfig = ctx.parse()?;
    if config.database.is_empty() {
        return Err(ctx.error(
            Some("database"),
            "missing: give the id of a db.sql.sqlite or db.sql.postgres entry",
        ));
    }
    let (id, handle) = match (ctx.resolve)(&config.database) {
        Reference::Database(id, Database::Sql(handle)) => (id, handle),
        Reference::Database(_, Database::None(never)) => match *never {},
        Reference::OtherKind(id, kind) => {
            return Err(ctx.error(
                Some("database"),
                format!("`{id}` is a {kind} entry; expected db.sql.sqlite or db.sql.postgres"),
            ));
        }
        Reference::Broken(id) => {
            return Err(ctx.error(
                Some("database"),
                format!("`{id}` could not be built (its own errors are listed too)"),
            ));
        }
        Reference::Missing(id, closest) => {
            let hint = closest
                .map(|c| format!(", did you mean `{c}`?"))
                .unwrap_or_default();
            return Err(ctx.error_of(
                ErrorKind::NotFound,
                Some("database"),
                format!("no entry `{id}` (dangling reference){hint}"),
            ));
        }
    };
    config.database = id;
    let store = SqlStore::builder(handle.clone(), config.clone())
        .id(ctx.id)
        .clock(std::sync::Arc::clone(ctx.clock))
        .build()
        .map_err(|e| ctx.backend_error(SqlStoreConfig::FIELDS, &e))?;
    Ok(Built::sql(store, config))
}

#[cfg(feature = "sqlite")]
fn sqlite(ctx: &Ctx<'_>) -> Result<(Database, Settings), ConfigError> {
    use store_sql::{SqlDatabase, SqliteConfig};
    let mut config: SqliteConfig = ctx.parse()?;
    if config.path.trim().is_empty() {
        return Err(ctx.error(
            Some("path"),
            "must not be empty (use \":memory:\" for memory)",
        ));
    }
    config.path = ctx.relative_to_file(&config.path);
    let db = SqlDatabase::sqlite(config.clone());
    Ok((Database::Sql(db), Settings::Sqlite(config)))
}

#[cfg(feature = "postgres")]
fn postgres(ctx: &Ctx<'_>) -> Result<(Database, Settings), ConfigError> {
    use store_sql::{PostgresConfig, SqlDatabase};
    let config: PostgresConfig = ctx.parse()?;
    let db = SqlDatabase::postgres(config.clone())
        .map_err(|e| ctx.backend_error(PostgresConfig::FIELDS, &e))?;
    Ok((Database::Sql(db), Settings::Postgres(config)))
}
