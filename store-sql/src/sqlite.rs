//! The SQLite engine: its connections, served through [`lanes`](crate::lane) so nothing blocks
//! the async runtime and concurrent callers share work (group commit for writes, one read
//! transaction for a batch of reads), and the one executor every bound statement runs through.
//!
//! Every statement runs to its end (see [`query_one`]): an autocommit write commits when its
//! statement finishes, and that is when a full disk is reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};
use store_core::{Error, Result};
use tokio::sync::OnceCell;

use crate::config::SqliteConfig;
use crate::engine::{Engine, Row, WriteStats};
use crate::error;
use crate::lane::{Kind, Lanes, closed};
use crate::sql::{Answer, Bound, Dialect, Param, Reads, Statements};

/// Reader connections of a file database.
const READERS: usize = 4;
/// Default wait for another process's write lock.
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// A `db.sql.sqlite` database. Opens on first use; [`Engine::close`] closes it.
#[derive(Debug)]
pub(crate) struct SqliteEngine {
    config: SqliteConfig,
    lanes: OnceCell<Arc<Lanes>>,
    closed: AtomicBool,
}

impl SqliteEngine {
    pub(crate) fn new(config: SqliteConfig) -> Self {
        Self {
            config,
            lanes: OnceCell::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn is_memory(&self) -> bool {
        let p = self.config.path.trim();
        p.is_empty() || p == ":memory:"
    }

    async fn lanes(&self) -> Result<&Arc<Lanes>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        self.lanes
            .get_or_try_init(|| async {
                let config = self.config.clone();
                let memory = self.is_memory();
                tokio::task::spawn_blocking(move || open(&config, memory).map(Arc::new))
                    .await
                    .map_err(|e| Error::internal(format!("opening sqlite database: {e}")))?
            })
            .await
    }

    /// Runs `f` on a connection of the `kind` lane.
    async fn call<T, F>(&self, kind: Kind, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.lanes().await?.call(kind, f).await
    }
}

fn open_connection(config: &SqliteConfig, memory: bool) -> Result<Connection> {
    let path = if memory {
        ":memory:"
    } else {
        config.path.as_str()
    };
    let context = || format!("sqlite database {path:?}");
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        let e = error::sqlite(&context(), e);
        Error::unavailable(e.message()).with_retryable(true)
    })?;
    let busy = config
        .busy_timeout
        .map_or(DEFAULT_BUSY_TIMEOUT, Duration::from);
    conn.busy_timeout(busy)
        .map_err(|e| error::sqlite(&context(), e))?;
    if !memory {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| error::sqlite(&context(), e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::unavailable(format!(
                "{}: cannot switch to WAL journal (got {mode})",
                context()
            )));
        }
    }
    let synchronous = config.synchronous.unwrap_or_default();
    conn.pragma_update(None, "synchronous", synchronous.as_pragma())
        .map_err(|e| error::sqlite(&context(), e))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

fn open(config: &SqliteConfig, memory: bool) -> Result<Lanes> {
    let writer = open_connection(config, memory)?;
    let readers = if memory {
        Vec::new()
    } else {
        (0..READERS)
            .map(|_| open_connection(config, false))
            .collect::<Result<Vec<_>>>()?
    };
    Ok(Lanes::new(writer, readers))
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Param::Int(n) => ToSqlOutput::from(*n),
            Param::MaybeInt(n) => n.to_sql()?,
        })
    }
}

/// A row of `[key,] value, expires_at[, version]`.
fn row_of(r: &rusqlite::Row<'_>, keyed: bool, versioned: bool) -> rusqlite::Result<Row> {
    let first = usize::from(keyed);
    Ok(Row {
        key: if keyed { r.get(0)? } else { String::new() },
        value: Bytes::from(r.get::<_, Vec<u8>>(first)?),
        expires: r.get(first + 1)?,
        version: if versioned { r.get(first + 2)? } else { 0 },
    })
}

/// Runs a statement to its end and returns what `f` made of its first row.
///
/// `query_row` stops at the first row and drops the statement's final status when it resets it.
/// An autocommit write commits when its statement ends, and a failed commit (a full disk, an
/// I/O error) is reported only then: through `query_row`, a write SQLite rolled back would look
/// committed. So every statement here is stepped until SQLite says it is done.
fn query_one<T>(
    mut stmt: rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    let mut rows = stmt.query(params)?;
    let first = match rows.next()? {
        Some(row) => f(row),
        None => return Ok(None),
    };
    while rows.next()?.is_some() {}
    first.map(Some)
}

/// Runs one bound statement on `conn` and reads its answer as it asks.
fn execute(conn: &Connection, q: &Bound) -> rusqlite::Result<Answer> {
    let stmt = conn.prepare_cached(&q.sql)?;
    let params = rusqlite::params_from_iter(q.params.iter());
    Ok(match q.reads {
        Reads::Rows { keyed, versioned } => {
            let mut stmt = stmt;
            let rows = stmt
                .query_map(params, |r| row_of(r, keyed, versioned))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Answer::Rows(rows)
        }
        Reads::Number => Answer::Number(query_one(stmt, params, |r| r.get::<_, i64>(0))?),
        Reads::Exists => Answer::Exists(query_one(stmt, params, |_| Ok(()))?.is_some()),
        Reads::Changed => {
            let mut stmt = stmt;
            Answer::Changed(stmt.execute(params)?)
        }
    })
}

#[async_trait]
impl Engine for SqliteEngine {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn read(&self, q: Bound) -> Result<Answer> {
        self.call(Kind::Read, move |c| {
            execute(c, &q).map_err(|e| error::sqlite(&format!("sqlite {}", q.what), e))
        })
        .await
    }

    async fn write(&self, q: Bound, probe: Option<Bound>) -> Result<(Answer, Option<Answer>)> {
        self.call(Kind::Write, move |c| {
            let failed = |q: &Bound, e| error::sqlite_write(&format!("sqlite {}", q.what), e);
            let first = execute(c, &q).map_err(|e| failed(&q, e))?;
            let second = match (&first, probe) {
                // Not written: say why. Only this lane writes, so the answer is exact.
                // The probe only reads: its failure is not a write's.
                (Answer::Number(None), Some(p)) => Some(
                    execute(c, &p).map_err(|e| error::sqlite(&format!("sqlite {}", p.what), e))?,
                ),
                _ => None,
            };
            Ok((first, second))
        })
        .await
    }

    async fn create(&self, s: &Arc<Statements>) -> Result<()> {
        let s = Arc::clone(s);
        self.call(Kind::Write, move |c| {
            for sql in &s.create {
                c.execute_batch(sql)
                    .map_err(|e| error::sqlite_write("sqlite create_table", e))?;
            }
            Ok(())
        })
        .await
    }

    fn write_stats(&self) -> WriteStats {
        self.lanes
            .get()
            .map_or_else(WriteStats::default, |lanes| lanes.write_stats())
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(lanes) = self.lanes.get() {
            lanes.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Synchronous;

    #[test]
    fn connections_take_the_configured_synchronous_mode() {
        let dir = std::env::temp_dir().join(format!("store-sql-sync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test folder");
        let path = dir.join("s.db").to_string_lossy().into_owned();
        let mode = |config: &SqliteConfig| -> i64 {
            let conn = open_connection(config, false).expect("open");
            conn.pragma_query_value(None, "synchronous", |r| r.get(0))
                .expect("pragma")
        };
        // 1 = NORMAL, 2 = FULL.
        assert_eq!(mode(&SqliteConfig::new(path.clone())), 1);
        assert_eq!(
            mode(&SqliteConfig::new(path.clone()).synchronous(Synchronous::Full)),
            2
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
