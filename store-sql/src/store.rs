//! [`SqlStore`] and [`SqlDatabase`].

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use store_core::backend::{Periodic, validate};
use store_core::{
    Backend, Capabilities, Condition, Consistency, Entry, Error, Lifecycle, ListOptions, Page,
    PutOptions, Result, SharedClock, Store, StoreInfo, from_millis, system_clock,
};
use tokio::sync::OnceCell;

use crate::config::{Checked, SqlStoreConfig};
use crate::engine::{Engine, Range, Row, Write, WriteArgs, WriteStats};
use crate::sql::{Answer, Names, Statements, prefix_upper_bound};

/// Expired rows deleted per cleanup statement.
const CLEANUP_BATCH: i64 = 1000;

/// A database that `store.sql` stores keep their tables in: SQLite or PostgreSQL. Cheap to
/// clone; every store of one database entry shares one handle (one pool, one writer).
#[derive(Clone)]
pub struct SqlDatabase {
    engine: Arc<dyn Engine>,
}

impl fmt::Debug for SqlDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SqlDatabase").field(&self.engine).finish()
    }
}

impl SqlDatabase {
    /// A SQLite database (`db.sql.sqlite`). Nothing is opened until first use.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(config: crate::SqliteConfig) -> Self {
        Self {
            engine: Arc::new(crate::sqlite::SqliteEngine::new(config)),
        }
    }

    /// A PostgreSQL database (`db.sql.postgres`). Resolves the URL (reading `url_env`) but
    /// connects only on first use.
    #[cfg(feature = "postgres")]
    pub fn postgres(config: crate::PostgresConfig) -> Result<Self> {
        Ok(Self {
            engine: Arc::new(crate::postgres::PostgresEngine::new(&config)?),
        })
    }

    /// How this database's writes have run since it opened.
    pub fn write_stats(&self) -> WriteStats {
        self.engine.write_stats()
    }

    /// Stops background threads and closes every connection; later operations fail `Closed`.
    /// Idempotent.
    pub async fn close(&self) {
        self.engine.close().await;
    }
}

/// A `store.sql` store: one table of a [`SqlDatabase`].
#[derive(Clone)]
pub struct SqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    table: String,
    db: SqlDatabase,
    statements: Arc<Statements>,
    checked: Checked,
    create_table: bool,
    clock: SharedClock,
    ready: OnceCell<()>,
    cleanup: Periodic,
    capabilities: Capabilities,
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("id", &self.inner.id)
            .field("table", &self.inner.table)
            .field("versioned", &self.inner.statements.versioned)
            .field("db", &self.inner.db)
            .finish_non_exhaustive()
    }
}

/// Builds a [`SqlStore`]; see [`SqlStore::builder`].
#[derive(Debug)]
pub struct SqlStoreBuilder {
    db: SqlDatabase,
    config: SqlStoreConfig,
    id: Option<String>,
    clock: SharedClock,
}

impl SqlStoreBuilder {
    /// The store's id (default: the table name).
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The clock every expiry decision reads (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Checks the configuration (identifiers name their field) and builds the store. Does no
    /// I/O: the table is created (with `create_table: true`) on first use or on `start`.
    pub fn build(self) -> Result<SqlStore> {
        let checked = self.config.validate()?;
        let c = &self.config;
        let names = Names {
            table: &c.table_name,
            key: &c.id_column_name,
            value: &c.payload_column_name,
            expires: &c.expire_column_name,
            version: c.version_column_name.as_deref(),
        };
        let dialect = self.db.engine.dialect();
        let statements = Arc::new(Statements::new(dialect, &names));
        let capabilities = Capabilities::new()
            .versioned(statements.versioned)
            .max_value_size(checked.max_value_size)
            .max_key_chars(dialect.max_key_chars());
        Ok(SqlStore {
            inner: Arc::new(Inner {
                id: self.id.unwrap_or_else(|| c.table_name.clone()),
                table: c.table_name.clone(),
                db: self.db,
                statements,
                checked,
                create_table: c.create_table,
                clock: self.clock,
                ready: OnceCell::new(),
                cleanup: Periodic::new(),
                capabilities,
            }),
        })
    }
}

/// An engine answered a statement in a way its `Reads` did not ask for: a bug.
fn unexpected(what: &str, answer: &Answer) -> Error {
    Error::internal(format!("sql {what}: unexpected answer {answer:?}"))
}

fn to_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn to_entry(key: String, row: Row) -> Entry {
    Entry {
        key,
        value: row.value,
        version: u64::try_from(row.version).unwrap_or(0),
        expires_at: row
            .expires
            .and_then(|e| u64::try_from(e).ok())
            .map(from_millis),
    }
}

impl Inner {
    fn now(&self) -> i64 {
        to_i64(self.clock.now_ms())
    }

    /// Creates the table once (with `create_table: true`) before the first operation.
    async fn ready(&self) -> Result<()> {
        if !self.create_table {
            return Ok(());
        }
        self.ready
            .get_or_try_init(|| async {
                self.db
                    .engine
                    .create(&self.statements)
                    .await
                    .map_err(|e| e.context(format!("table_name {:?}", self.table)))
            })
            .await
            .map(|_| ())
    }

    async fn cleanup_once(&self) -> Result<usize> {
        self.ready().await?;
        let mut total = 0;
        loop {
            let q = self.statements.cleanup(self.now(), CLEANUP_BATCH);
            let n = match self.db.engine.write(q, None).await? {
                (Answer::Changed(n), _) => n,
                (other, _) => return Err(unexpected("cleanup", &other)),
            };
            total += n;
            if i64::try_from(n).unwrap_or(i64::MAX) < CLEANUP_BATCH {
                return Ok(total);
            }
        }
    }
}

impl SqlStore {
    /// A builder for a store on table `config.table_name` of `db`.
    pub fn builder(db: SqlDatabase, config: SqlStoreConfig) -> SqlStoreBuilder {
        SqlStoreBuilder {
            db,
            config,
            id: None,
            clock: system_clock(),
        }
    }

    /// Deletes every expired row now, in bounded batches; returns how many.
    pub async fn purge_expired(&self) -> Result<usize> {
        self.inner.cleanup_once().await
    }

    /// Creates the table if configured, and starts the cleanup timer if `cleanup_interval` is
    /// set. Idempotent. Fails `Unavailable` outside a tokio runtime.
    pub async fn start(&self) -> Result<()> {
        self.inner.ready().await?;
        let Some(every) = self.inner.checked.cleanup_interval else {
            return Ok(());
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        self.inner.cleanup.start(every, move || {
            weak.upgrade().map(|inner| async move {
                // A failed sweep (database briefly unreachable) is retried next tick.
                let _ = inner.cleanup_once().await;
            })
        })
    }

    /// Stops the cleanup timer. Idempotent; the store keeps serving requests.
    pub fn stop(&self) {
        self.inner.cleanup.stop();
    }

    fn check_write(
        &self,
        key: &str,
        value: &Bytes,
        ttl: Option<Duration>,
        condition: Condition,
    ) -> Result<Option<u64>> {
        validate::put(&self.inner.capabilities, key, value.len(), ttl, condition)
    }

    async fn write(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        condition: Condition,
    ) -> Result<(i64, Option<u64>)> {
        let ttl_ms = self.check_write(key, &value, ttl, condition)?;
        self.inner.ready().await?;
        let now = self.inner.clock.now_ms();
        let deadline = validate::deadline(now, ttl_ms);
        let condition = match condition {
            Condition::IfAbsent => Write::IfAbsent,
            Condition::IfVersion(v) => Write::IfVersion(to_i64(v)),
            _ => Write::Always,
        };
        let args = WriteArgs {
            key: key.to_owned(),
            value,
            expires: deadline.map(to_i64),
            now: to_i64(now),
            condition,
        };
        let shown = || validate::quote(key);
        let (q, probe) = self.inner.statements.write(&args);
        let answers = self.inner.db.engine.write(q, probe).await?;
        match (condition, answers) {
            (_, (Answer::Number(Some(version)), _)) => Ok((version, deadline)),
            (Write::IfAbsent, (Answer::Number(None), _)) => Err(Error::already_exists(format!(
                "key {}: already exists",
                shown()
            ))),
            (Write::IfVersion(expected), (Answer::Number(None), Some(Answer::Number(live)))) => {
                Err(match live {
                    None => Error::not_found(format!(
                        "key {}: absent, expected version {expected}",
                        shown()
                    )),
                    Some(have) => Error::conflict(format!(
                        "key {}: version is {have}, expected {expected}",
                        shown()
                    )),
                })
            }
            (_, (first, _)) => Err(unexpected("write", &first)),
        }
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.entry_row(key).await?.map(|r| r.value))
    }

    async fn entry(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self
            .entry_row(key)
            .await?
            .map(|row| to_entry(key.to_owned(), row)))
    }

    async fn has(&self, key: &str) -> Result<bool> {
        let (engine, statements, now) = self.keyed(key).await?;
        match engine.read(statements.has(key, now)).await? {
            Answer::Exists(live) => Ok(live),
            other => Err(unexpected("has", &other)),
        }
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        self.write(key, value, ttl, Condition::Always)
            .await
            .map(drop)
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Entry> {
        let (version, deadline) = self
            .write(key, value.clone(), options.ttl, options.condition)
            .await?;
        Ok(Entry {
            key: key.to_owned(),
            value,
            version: u64::try_from(version).unwrap_or(0),
            expires_at: deadline.map(from_millis),
        })
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let (engine, statements, now) = self.keyed(key).await?;
        match engine.write(statements.delete(key, now), None).await? {
            // 1: the removed row was live; 0: it had expired; none: there was no row.
            (Answer::Number(live), _) => Ok(live == Some(1)),
            (other, _) => Err(unexpected("delete", &other)),
        }
    }

    async fn list(&self, options: ListOptions) -> Result<Page> {
        let limit = validate::list(&options)?;
        self.inner.ready().await?;
        let (start, exclusive) = validate::list_start(&options.prefix, options.after.as_deref());
        let range = Range {
            start: start.to_owned(),
            exclusive,
            upper: prefix_upper_bound(&options.prefix),
            now: self.inner.now(),
            // One more than the page, to know whether more follow.
            limit: i64::try_from(limit + 1).unwrap_or(i64::MAX),
        };
        let mut rows = match self
            .inner
            .db
            .engine
            .read(self.inner.statements.list(&range))
            .await?
        {
            Answer::Rows(rows) => rows,
            other => return Err(unexpected("list", &other)),
        };
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        let items: Vec<Entry> = rows
            .into_iter()
            .map(|mut row| {
                let key = std::mem::take(&mut row.key);
                to_entry(key, row)
            })
            .collect();
        Ok(Page::new(items, has_more))
    }

    fn info(&self) -> StoreInfo {
        StoreInfo::new(
            self.inner.id.clone(),
            Backend::Sql,
            Consistency::Local,
            true,
            self.inner.capabilities,
        )
    }
}

impl SqlStore {
    /// What every single-key read and delete starts with: the key checked, the table ready, the
    /// time read.
    async fn keyed(&self, key: &str) -> Result<(&dyn Engine, &Arc<Statements>, i64)> {
        validate::key(key)?;
        self.inner.ready().await?;
        let inner = &*self.inner;
        Ok((inner.db.engine.as_ref(), &inner.statements, inner.now()))
    }

    async fn entry_row(&self, key: &str) -> Result<Option<Row>> {
        let (engine, statements, now) = self.keyed(key).await?;
        match engine.read(statements.get(key, now)).await? {
            Answer::Rows(rows) => Ok(rows.into_iter().next()),
            other => Err(unexpected("get", &other)),
        }
    }
}

/// A database is a shared resource: started before the stores that use it (it connects on first
/// use, so starting does nothing), closed after them.
#[async_trait]
impl Lifecycle for SqlDatabase {
    async fn close(&self) {
        SqlDatabase::close(self).await;
    }
}

/// Starting creates the table (with `create_table`) and starts the cleanup timer; stopping and
/// closing stop the timer. The connections belong to the [`SqlDatabase`], closed by its owner.
#[async_trait]
impl Lifecycle for SqlStore {
    async fn start(&self) -> Result<()> {
        SqlStore::start(self).await
    }

    async fn stop(&self) {
        SqlStore::stop(self);
    }

    async fn close(&self) {
        SqlStore::stop(self);
    }
}
