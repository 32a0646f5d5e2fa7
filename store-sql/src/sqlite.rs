//! The SQLite engine: nothing blocks the async runtime, and concurrent writers share commits.
//!
//! Blocking work runs through [`blocking`]: inside `tokio::task::block_in_place` on a
//! multi-thread runtime (tokio moves the worker's other tasks away while SQLite runs, and no
//! thread hand-off is paid: on small VMs a hand-off costs 15–100 µs against ~3 µs for the
//! statement), or on `spawn_blocking` on a current-thread runtime.
//!
//! Group commit (leader/follower, as in RocksDB's write groups): a writer queues its job; if no
//! leader is active it becomes the leader and runs every queued job (up to 256) in one
//! `BEGIN IMMEDIATE … COMMIT`, again and again while jobs keep arriving; followers just wait for
//! their answer, which comes only after the commit that holds their write. After a few batches
//! the leader hands leadership to a waiting follower, so no caller leads forever. A statement
//! that fails answers its own caller and does not undo the others; a failed commit answers every
//! caller of its batch with the error. A batch of one runs in autocommit mode, exactly like a
//! plain driver call.
//!
//! Reads use a pool of reader connections (WAL lets them run beside the writer); a `:memory:`
//! database cannot share data between connections, so its reads queue like writes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use store_core::{Error, Result};
use tokio::sync::{OnceCell, Semaphore, oneshot};

use crate::config::SqliteConfig;
use crate::engine::{Engine, Range, Row, Write, WriteArgs, Written};
use crate::error;
use crate::sql::{Dialect, Statements};
use crate::version::stamp;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;
/// Batches a leader commits before handing leadership to a waiting writer.
const MAX_ROUNDS: usize = 4;
/// Reader connections of a file database.
const READERS: usize = 4;
/// Default wait for another process's write lock.
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

type Completion = Box<dyn FnOnce(Option<&Error>) + Send>;
type Run = Box<dyn FnOnce(std::result::Result<&Connection, &Error>) -> Completion + Send>;

/// A queued write: what to run, and how to make its caller the next leader.
struct Job {
    run: Run,
    promote: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    leading: bool,
    closed: bool,
}

/// A `db.sql.sqlite` database. Opens on first use; [`Engine::close`] closes it.
#[derive(Debug)]
pub(crate) struct SqliteEngine {
    config: SqliteConfig,
    running: OnceCell<Arc<Running>>,
    closed: AtomicBool,
}

struct Running {
    writer: Mutex<Connection>,
    queue: Mutex<Queue>,
    /// `None` for `:memory:`, whose connections cannot share data: reads queue like writes.
    readers: Option<Readers>,
}

struct Readers {
    permits: Semaphore,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("readers", &self.readers.as_ref().map(|_| READERS))
            .finish_non_exhaustive()
    }
}

fn copy(e: &Error) -> Error {
    Error::new(e.kind(), e.message()).with_retryable(e.retryable())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs blocking work without stalling the runtime: `block_in_place` on a multi-thread runtime,
/// `spawn_blocking` otherwise.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(f))
        }
        _ => tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::internal(format!("sqlite blocking task failed: {e}"))),
    }
}

impl SqliteEngine {
    pub(crate) fn new(config: SqliteConfig) -> Self {
        Self {
            config,
            running: OnceCell::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn is_memory(&self) -> bool {
        let p = self.config.path.trim();
        p.is_empty() || p == ":memory:"
    }

    async fn running(&self) -> Result<&Arc<Running>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed("sqlite database is closed"));
        }
        self.running
            .get_or_try_init(|| async {
                let config = self.config.clone();
                let memory = self.is_memory();
                tokio::task::spawn_blocking(move || open(&config, memory).map(Arc::new))
                    .await
                    .map_err(|e| Error::internal(format!("opening sqlite database: {e}")))?
            })
            .await
    }

    /// Runs `f` on the writer connection inside the next group-committed transaction.
    async fn write_job<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let running = Arc::clone(self.running().await?);
        // Uncontended fast path: nobody leads and nothing waits, so this writer leads with its
        // own statement in autocommit mode, then commits whatever queued meanwhile.
        let alone = {
            let mut q = lock(&running.queue);
            if q.closed {
                return Err(Error::closed("sqlite database is closed"));
            }
            let alone = !q.leading && q.jobs.is_empty();
            q.leading |= alone;
            alone
        };
        if alone {
            let r = Arc::clone(&running);
            return blocking(move || {
                let _unwind = Unwind(&r);
                let result = f(&lock(&r.writer));
                lead_batches(&r);
                result
            })
            .await?;
        }
        let (done_tx, mut done_rx) = oneshot::channel::<Result<T>>();
        let (promote_tx, mut promote_rx) = oneshot::channel::<()>();
        let run: Run = Box::new(move |conn| {
            let result = match conn {
                Ok(c) => f(c),
                Err(e) => Err(copy(e)),
            };
            Box::new(move |commit: Option<&Error>| {
                let answer = match (commit, result) {
                    (Some(e), Ok(_)) => Err(copy(e)),
                    (_, result) => result,
                };
                let _ = done_tx.send(answer);
            })
        });
        let lead = {
            let mut q = lock(&running.queue);
            if q.closed {
                return Err(Error::closed("sqlite database is closed"));
            }
            q.jobs.push_back(Job {
                run,
                promote: Some(promote_tx),
            });
            !std::mem::replace(&mut q.leading, true)
        };
        if lead {
            let r = Arc::clone(&running);
            blocking(move || lead_batches(&r)).await?;
        }
        let mut may_be_promoted = true;
        loop {
            tokio::select! {
                biased;
                answer = &mut done_rx => {
                    return answer.map_err(|_| {
                        Error::internal("sqlite write dropped without an answer")
                    })?;
                }
                promoted = &mut promote_rx, if may_be_promoted => {
                    may_be_promoted = false;
                    if promoted.is_ok() {
                        let r = Arc::clone(&running);
                        blocking(move || lead_batches(&r)).await?;
                    }
                }
            }
        }
    }

    /// Runs `f` on a reader connection (or queued like a write, for `:memory:`).
    async fn read_job<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let running = self.running().await?;
        let Some(readers) = &running.readers else {
            return self.write_job(f).await;
        };
        let _permit = readers
            .permits
            .acquire()
            .await
            .map_err(|_| Error::closed("sqlite database is closed"))?;
        let conn = lock(&readers.idle)
            .pop()
            .ok_or_else(|| Error::internal("sqlite reader pool is empty despite a permit"))?;
        let (conn, result) = blocking(move || {
            let result = f(&conn);
            (conn, result)
        })
        .await?;
        lock(&readers.idle).push(conn);
        result
    }
}

/// The leader's loop: commit queued jobs batch by batch; after [`MAX_ROUNDS`] batches hand
/// leadership to a waiting writer; stop leading when the queue is empty.
/// Gives up leadership if a job panics, so later writers are not left waiting forever.
struct Unwind<'a>(&'a Running);

impl Drop for Unwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(&self.0.queue).leading = false;
        }
    }
}

fn lead_batches(running: &Running) {
    let _unwind = Unwind(running);
    let mut rounds = 0;
    loop {
        let batch: Vec<Job> = {
            let mut q = lock(&running.queue);
            if q.jobs.is_empty() {
                q.leading = false;
                return;
            }
            if rounds >= MAX_ROUNDS {
                for job in &mut q.jobs {
                    if let Some(promote) = job.promote.take()
                        && promote.send(()).is_ok()
                    {
                        return; // `leading` stays true: the promoted writer leads now
                    }
                }
                rounds = 0; // every waiter is gone: keep leading
            }
            let n = q.jobs.len().min(MAX_BATCH);
            q.jobs.drain(..n).collect()
        };
        rounds += 1;
        let conn = lock(&running.writer);
        commit_batch(&conn, batch);
    }
}

fn commit_batch(conn: &Connection, mut jobs: Vec<Job>) {
    if jobs.len() == 1
        && let Some(job) = jobs.pop()
    {
        // Autocommit: one statement, one transaction, as a plain driver call.
        (job.run)(Ok(conn))(None);
        return;
    }
    let begin = conn
        .prepare_cached("BEGIN IMMEDIATE")
        .and_then(|mut s| s.execute([]));
    if let Err(e) = begin {
        let err = error::sqlite("sqlite: begin write transaction", e);
        for job in jobs {
            (job.run)(Err(&err))(Some(&err));
        }
        return;
    }
    let completions: Vec<Completion> = jobs.into_iter().map(|job| (job.run)(Ok(conn))).collect();
    match conn
        .prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]))
    {
        Ok(_) => completions.into_iter().for_each(|c| c(None)),
        Err(e) => {
            let err = error::sqlite("sqlite: commit", e);
            let _ = conn.execute_batch("ROLLBACK");
            completions.into_iter().for_each(|c| c(Some(&err)));
        }
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
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| error::sqlite(&context(), e))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

fn open(config: &SqliteConfig, memory: bool) -> Result<Running> {
    let writer = open_connection(config, memory)?;
    let readers = if memory {
        None
    } else {
        let conns = (0..READERS)
            .map(|_| open_connection(config, false))
            .collect::<Result<Vec<_>>>()?;
        Some(Readers {
            permits: Semaphore::new(READERS),
            idle: Mutex::new(conns),
        })
    };
    Ok(Running {
        writer: Mutex::new(writer),
        queue: Mutex::new(Queue::default()),
        readers,
    })
}

fn row_of(r: &rusqlite::Row<'_>, first: usize, versioned: bool) -> rusqlite::Result<Row> {
    Ok(Row {
        key: String::new(),
        value: Bytes::from(r.get::<_, Vec<u8>>(first)?),
        expires: r.get(first + 1)?,
        version: if versioned { r.get(first + 2)? } else { 0 },
    })
}

fn write_sync(conn: &Connection, s: &Statements, a: &WriteArgs) -> rusqlite::Result<Written> {
    let value = &a.value[..];
    match a.condition {
        Write::Always if s.versioned => conn
            .prepare_cached(&s.upsert)?
            .query_row(params![a.key, value, a.expires, stamp()], |r| r.get(0))
            .map(Written::Ok),
        Write::Always => conn
            .prepare_cached(&s.upsert)?
            .execute(params![a.key, value, a.expires])
            .map(|_| Written::Ok(0)),
        Write::IfAbsent => {
            let mut stmt = conn.prepare_cached(&s.insert_if_absent)?;
            let row = if s.versioned {
                stmt.query_row(params![a.key, value, a.expires, a.now, stamp()], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()?
            } else {
                stmt.query_row(params![a.key, value, a.expires, a.now], |_| Ok(0))
                    .optional()?
            };
            Ok(row.map_or(Written::Exists, Written::Ok))
        }
        Write::IfVersion(expected) => {
            let (Some(update), Some(probe)) = (&s.update_if_version, &s.live_version) else {
                return Err(rusqlite::Error::InvalidQuery);
            };
            let written = conn
                .prepare_cached(update)?
                .query_row(
                    params![a.key, value, a.expires, a.now, expected, stamp()],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?;
            if let Some(v) = written {
                return Ok(Written::Ok(v));
            }
            // Not written: say why. Same transaction, so the answer is exact.
            let live = conn
                .prepare_cached(probe)?
                .query_row(params![a.key, a.now], |r| r.get::<_, i64>(0))
                .optional()?;
            Ok(live.map_or(Written::Missing, Written::Mismatch))
        }
    }
}

#[async_trait]
impl Engine for SqliteEngine {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn get(&self, s: &Arc<Statements>, key: &str, now: i64) -> Result<Option<Row>> {
        let s = Arc::clone(s);
        let key = key.to_owned();
        self.read_job(move |c| {
            c.prepare_cached(&s.get)
                .and_then(|mut st| {
                    st.query_row(params![key, now], |r| row_of(r, 0, s.versioned))
                        .optional()
                })
                .map_err(|e| error::sqlite("sqlite get", e))
        })
        .await
    }

    async fn has(&self, s: &Arc<Statements>, key: &str, now: i64) -> Result<bool> {
        let s = Arc::clone(s);
        let key = key.to_owned();
        self.read_job(move |c| {
            c.prepare_cached(&s.has)
                .and_then(|mut st| st.exists(params![key, now]))
                .map_err(|e| error::sqlite("sqlite has", e))
        })
        .await
    }

    async fn write(&self, s: &Arc<Statements>, args: WriteArgs) -> Result<Written> {
        let s = Arc::clone(s);
        self.write_job(move |c| {
            write_sync(c, &s, &args).map_err(|e| error::sqlite("sqlite write", e))
        })
        .await
    }

    async fn delete(&self, s: &Arc<Statements>, key: &str, now: i64) -> Result<bool> {
        let s = Arc::clone(s);
        let key = key.to_owned();
        self.write_job(move |c| {
            c.prepare_cached(&s.delete)
                .and_then(|mut st| {
                    st.query_row(params![key, now], |r| r.get::<_, i64>(0))
                        .optional()
                })
                .map(|live| live == Some(1))
                .map_err(|e| error::sqlite("sqlite delete", e))
        })
        .await
    }

    async fn list(&self, s: &Arc<Statements>, range: Range) -> Result<Vec<Row>> {
        let s = Arc::clone(s);
        self.read_job(move |c| {
            let run = || -> rusqlite::Result<Vec<Row>> {
                let sql = &s.list[usize::from(range.exclusive)][usize::from(range.upper.is_some())];
                let mut st = c.prepare_cached(sql)?;
                let map = |r: &rusqlite::Row<'_>| {
                    let mut row = row_of(r, 1, s.versioned)?;
                    row.key = r.get(0)?;
                    Ok(row)
                };
                match &range.upper {
                    Some(upper) => st
                        .query_map(params![range.start, range.now, range.limit, upper], map)?
                        .collect(),
                    None => st
                        .query_map(params![range.start, range.now, range.limit], map)?
                        .collect(),
                }
            };
            run().map_err(|e| error::sqlite("sqlite list", e))
        })
        .await
    }

    async fn cleanup(&self, s: &Arc<Statements>, now: i64, batch: i64) -> Result<usize> {
        let s = Arc::clone(s);
        self.write_job(move |c| {
            c.prepare_cached(&s.cleanup)
                .and_then(|mut st| st.execute(params![now, batch]))
                .map_err(|e| error::sqlite("sqlite cleanup", e))
        })
        .await
    }

    async fn create(&self, s: &Arc<Statements>) -> Result<()> {
        let s = Arc::clone(s);
        self.write_job(move |c| {
            for sql in &s.create {
                c.execute_batch(sql)
                    .map_err(|e| error::sqlite("sqlite create_table", e))?;
            }
            Ok(())
        })
        .await
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let Some(running) = self.running.get() else {
            return;
        };
        // Queued writes still commit (the current leader drains them); new ones fail Closed.
        lock(&running.queue).closed = true;
        if let Some(readers) = &running.readers {
            readers.permits.close();
            lock(&readers.idle).clear();
        }
    }
}
