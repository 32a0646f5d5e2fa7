//! `store.sql`: a durable [`Store`](store_core::Store) in one table of SQLite (feature `sqlite`,
//! rusqlite with bundled SQLite) or PostgreSQL (feature `postgres`, tokio-postgres with a pool).
//!
//! SQLite commits wait for the disk as [`Synchronous`] says (`normal` by default, `full` for
//! durability across a power loss). PostgreSQL connections use TLS as [`TlsMode`] says
//! (rustls; `verify-full` by default for a server that is not on this machine).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> store_core::Result<()> {
//! use store_core::{Bytes, PutOptions, Store};
//! use store_sql::{SqlDatabase, SqlStore, SqlStoreConfig, SqliteConfig};
//!
//! let db = SqlDatabase::sqlite(SqliteConfig::new(":memory:"));
//! let config = SqlStoreConfig::new("kv").version_column("version").create_table(true);
//! let store = SqlStore::builder(db.clone(), config).id("app:cache").build()?;
//! let e = store.put("k", Bytes::from_static(b"v"), PutOptions::new().if_absent()).await?;
//! assert!(e.version > 0);
//! db.close().await;
//! # Ok(()) }
//! ```
//!
//! Every write is one atomic statement (`INSERT … ON CONFLICT … DO UPDATE`, or `UPDATE …
//! RETURNING` for `IfVersion`); conditions are evaluated by the database, so they hold across
//! processes. Expiry is epoch milliseconds from the store's `Clock`, passed as a parameter: this
//! crate must never call the database's own `now()`. Table and column names come from the
//! configuration, are checked at construction (`^[a-zA-Z][a-zA-Z0-9_]*$`, at most 63 characters,
//! no reserved words) and quoted in every statement.
//!
//! A write is answered with success only once it is committed. A write known not to be applied (a
//! full disk, a busy database, a statement the server cancelled at `statement_timeout`) fails
//! `Unavailable` or `Timeout` without [`is_indeterminate`](store_core::Error::is_indeterminate);
//! one that may have been applied (an I/O error during a commit, a connection lost mid-write)
//! fails `Timeout` with it set. After a full disk the store recovers by itself once there is room.

mod config;
mod engine;
mod error;
mod ident;
#[cfg(feature = "sqlite")]
mod lane;
#[cfg(feature = "postgres")]
mod postgres;
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
#[cfg(feature = "postgres")]
mod tls;
mod version;

pub use config::{PostgresConfig, SqlStoreConfig, SqliteConfig, Synchronous, TlsMode, redact_url};
pub use engine::WriteStats;
pub use ident::MAX_IDENT_LEN;
pub use store::{SqlDatabase, SqlStore, SqlStoreBuilder};
