//! `store-sql`'s integration tests, in one binary: the conformance suite on SQLite (`sqlite`)
//! and PostgreSQL (`postgres`), and SQLite's own behaviour: durability, full disk, group commit
//! (`sql`).

#[cfg(feature = "postgres")]
mod support;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
