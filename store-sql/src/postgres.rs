//! The PostgreSQL engine: a small pool of tokio-postgres connections, each with its prepared
//! statements. Broken connections are dropped and replaced on the next checkout, so a store
//! recovers by itself when the server comes back.
//!
//! `statement_timeout` is enforced by the server (set on every connection), so a statement that
//! runs too long is cancelled and rolled back there, and its caller learns it was not applied.
//! The client waits a little longer ([`CLIENT_GRACE`]) for that answer; when even that does not
//! come (the server or the network is stuck) it sends a cancel request, drops the connection and
//! answers a write as indeterminate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use store_core::{Error, Result};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{PostgresConfig, redact_url};
use crate::engine::{Engine, Row};
use crate::error;
use crate::sql::{Answer, Bound, Dialect, Param, Reads, Statements};

const DEFAULT_POOL_SIZE: usize = 10;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How much longer than `statement_timeout` the client waits for the server's own answer.
const CLIENT_GRACE: Duration = Duration::from_secs(1);
/// PostgreSQL's largest `statement_timeout`: 2³¹ − 1 ms.
const MAX_STATEMENT_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);
/// The least time table creation may take: building the expiry index of a large existing table
/// can take minutes, far longer than any one read or write should.
const MIN_CREATE_TIMEOUT: Duration = Duration::from_secs(600);

/// Each parameter checks its own type against the statement's: a mismatch is an error, not a
/// value written as another type.
impl ToSql for Param {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        match self {
            Param::Text(v) => v.to_sql(ty, out),
            Param::Blob(v) => (&v[..]).to_sql(ty, out),
            Param::Int(v) => v.to_sql(ty, out),
            Param::MaybeInt(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <String as ToSql>::accepts(ty)
            || <&[u8] as ToSql>::accepts(ty)
            || <i64 as ToSql>::accepts(ty)
    }

    fn to_sql_checked(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        match self {
            Param::Text(v) => v.to_sql_checked(ty, out),
            Param::Blob(v) => (&v[..]).to_sql_checked(ty, out),
            Param::Int(v) => v.to_sql_checked(ty, out),
            Param::MaybeInt(v) => v.to_sql_checked(ty, out),
        }
    }
}

/// A `db.sql.postgres` database.
pub(crate) struct PostgresEngine {
    config: tokio_postgres::Config,
    /// The TLS connector, `None` for plain TCP (`tls: disable`).
    tls: Option<MakeRustlsConnect>,
    /// The URL without its password, for messages.
    shown: String,
    connect_timeout: Duration,
    statement_timeout: Duration,
    permits: Semaphore,
    idle: Mutex<Vec<Conn>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for PostgresEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresEngine")
            .field("url", &self.shown)
            .field("pool_size", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

struct Conn {
    client: Client,
    /// Asks the server to cancel this connection's running statement.
    cancel: tokio_postgres::CancelToken,
    /// Prepared statements keyed by the address of their SQL text (a store's statements live as
    /// long as the store); the text is compared on every hit, so a reused address cannot mix
    /// statements up. Saves hashing ~150 bytes per operation.
    prepared: HashMap<usize, (String, Statement)>,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A checked-out connection; goes back to the pool on drop unless it broke.
struct Lease<'a> {
    engine: &'a PostgresEngine,
    conn: Option<Conn>,
    broken: bool,
    _permit: SemaphorePermit<'a>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !self.broken
            && !conn.client.is_closed()
            && !self.engine.closed.load(Ordering::Acquire)
        {
            lock(&self.engine.idle).push(conn);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PostgresEngine {
    pub(crate) fn new(config: &PostgresConfig) -> Result<Self> {
        let url = config.resolve_url()?;
        let shown = redact_url(&url);
        let mut pg: tokio_postgres::Config = url.parse().map_err(|_| {
            Error::invalid(format!("url {shown:?}: not a PostgreSQL URL")).with_field("url")
        })?;
        let connect_timeout = config
            .connect_timeout
            .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from);
        pg.connect_timeout(connect_timeout);
        let size = match config.pool_size {
            None | Some(0) => DEFAULT_POOL_SIZE,
            Some(n) => usize::try_from(n).unwrap_or(DEFAULT_POOL_SIZE),
        };
        let statement_timeout = match config.statement_timeout.map(Duration::from) {
            None => DEFAULT_STATEMENT_TIMEOUT,
            Some(d) if d.is_zero() => DEFAULT_STATEMENT_TIMEOUT,
            Some(d) if d > MAX_STATEMENT_TIMEOUT => {
                return Err(Error::invalid(format!(
                    "statement_timeout {}: at most {} (PostgreSQL's limit)",
                    store_core::format_duration(d),
                    store_core::format_duration(MAX_STATEMENT_TIMEOUT)
                ))
                .with_field("statement_timeout"));
            }
            Some(d) => d,
        };
        let mode = crate::tls::mode(config, &pg)?;
        let tls = crate::tls::connector(mode, config, &mut pg)?;
        Ok(Self {
            config: pg,
            tls,
            shown,
            connect_timeout,
            statement_timeout,
            permits: Semaphore::new(size),
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        })
    }

    async fn connect(&self) -> Result<Conn> {
        let limit = self.connect_timeout;
        let shown = &self.shown;
        let failed = |e| error::postgres(&format!("postgres {shown}"), e);
        let late =
            || Error::unavailable(format!("postgres {shown}: no connection within {limit:?}"));
        // The connection task ends when the server or the client closes the connection; the
        // client then reports is_closed and the pool replaces it.
        let (client, task) = match &self.tls {
            None => {
                let attempt = tokio::time::timeout(limit, self.config.connect(NoTls)).await;
                let (client, connection) = attempt.map_err(|_| late())?.map_err(failed)?;
                (client, tokio::spawn(async move { drop(connection.await) }))
            }
            Some(tls) => {
                let attempt = tokio::time::timeout(limit, self.config.connect(tls.clone())).await;
                let (client, connection) = attempt.map_err(|_| late())?.map_err(failed)?;
                (client, tokio::spawn(async move { drop(connection.await) }))
            }
        };
        let conn = Conn {
            cancel: client.cancel_token(),
            client,
            prepared: HashMap::new(),
            task,
        };
        // The server enforces the statement timeout itself: a statement the client gave up on
        // must not go on running (and holding locks) there.
        let set = format!(
            "SET statement_timeout = {}",
            self.statement_timeout.as_millis().max(1)
        );
        match tokio::time::timeout(self.connect_timeout, conn.client.batch_execute(&set)).await {
            Ok(Ok(())) => Ok(conn),
            Ok(Err(e)) => Err(error::postgres(&format!("postgres {}", self.shown), e)),
            Err(_) => Err(Error::unavailable(format!(
                "postgres {}: no answer to SET statement_timeout within {:?}",
                self.shown, self.connect_timeout
            ))),
        }
    }

    /// The client's own limit: the server's, plus time for its answer to arrive.
    fn client_timeout(&self) -> Duration {
        self.statement_timeout + CLIENT_GRACE
    }

    async fn lease(&self) -> Result<Lease<'_>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed("postgres database is closed"));
        }
        // Fast path without a timer when a connection is free.
        let permit = match self.permits.try_acquire() {
            Ok(p) => Ok(Ok(p)),
            Err(tokio::sync::TryAcquireError::Closed) => {
                return Err(Error::closed("postgres database is closed"));
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                tokio::time::timeout(self.connect_timeout, self.permits.acquire()).await
            }
        };
        let permit = match permit {
            Err(_) => {
                return Err(Error::unavailable(format!(
                    "postgres {}: no free connection within {:?}",
                    self.shown, self.connect_timeout
                )));
            }
            Ok(Err(_)) => return Err(Error::closed("postgres database is closed")),
            Ok(Ok(p)) => p,
        };
        let reusable = {
            let mut idle = lock(&self.idle);
            loop {
                match idle.pop() {
                    Some(c) if c.client.is_closed() => {}
                    other => break other,
                }
            }
        };
        let conn = match reusable {
            Some(c) => c,
            None => self.connect().await?,
        };
        Ok(Lease {
            engine: self,
            conn: Some(conn),
            broken: false,
            _permit: permit,
        })
    }

    /// Runs one bound statement on a leased connection: prepared once per connection, bounded
    /// by the statement timeout. A write that loses its connection or times out is
    /// indeterminate.
    async fn query(&self, q: &Bound, write: bool) -> Result<Answer> {
        let what = q.what;
        let mut lease = self.lease().await?;
        let result = {
            let Some(conn) = lease.conn.as_mut() else {
                return Err(Error::internal("postgres lease without a connection"));
            };
            run(conn, q, self.client_timeout()).await
        };
        match result {
            // A write's statement ran to its end: an answer that does not decode leaves its
            // outcome unknown to the caller.
            Ok(raw) if write => answer(raw, q.reads).map_err(Error::indeterminate),
            Ok(raw) => answer(raw, q.reads),
            Err(Failure::Timeout) => {
                lease.broken = true;
                if let Some(conn) = &lease.conn {
                    cancel_on_server(conn, self.connect_timeout, self.tls.clone());
                }
                let msg = format!(
                    "postgres {what}: no answer within {:?}",
                    self.client_timeout()
                );
                Err(if write {
                    Error::write_timeout(format!("{msg}; the write may or may not be applied"))
                } else {
                    Error::timeout(msg)
                })
            }
            Err(Failure::Db(e)) => Err(self.failed(&mut lease, what, e, write)),
        }
    }

    /// Maps a statement's error; a write whose connection was lost mid-flight is indeterminate.
    fn failed(
        &self,
        lease: &mut Lease<'_>,
        what: &str,
        e: tokio_postgres::Error,
        write: bool,
    ) -> Error {
        let lost = e.is_closed() || e.as_db_error().is_none();
        lease.broken |= lost;
        let err = error::postgres(&format!("postgres {what}"), e);
        if write && lost {
            Error::write_timeout(format!(
                "{}; the connection was lost, so the write may or may not be applied",
                err.message()
            ))
        } else {
            err
        }
    }
}

/// Asks the server to cancel whatever `conn` is running, in the background: the caller has
/// already been answered, and the connection is dropped either way.
fn cancel_on_server(conn: &Conn, limit: Duration, tls: Option<MakeRustlsConnect>) {
    let token = conn.cancel.clone();
    tokio::spawn(async move {
        // Over the connection's own TLS: a server that requires it refuses a plain request.
        let _ = match tls {
            None => tokio::time::timeout(limit, token.cancel_query(NoTls)).await,
            Some(tls) => tokio::time::timeout(limit, token.cancel_query(tls)).await,
        };
    });
}

enum Failure {
    Timeout,
    Db(tokio_postgres::Error),
}

/// What the server answered: rows, or how many rows a statement without them changed.
enum Raw {
    Rows(Vec<tokio_postgres::Row>),
    Changed(u64),
}

async fn run(conn: &mut Conn, q: &Bound, limit: Duration) -> std::result::Result<Raw, Failure> {
    let work = async {
        let sql: &str = &q.sql;
        let id = sql.as_ptr() as usize;
        let statement = match conn.prepared.get(&id) {
            Some((text, s)) if text == sql => s.clone(),
            _ => {
                let s = conn.client.prepare(sql).await?;
                conn.prepared.insert(id, (sql.to_owned(), s.clone()));
                s
            }
        };
        let params: Vec<&(dyn ToSql + Sync)> =
            q.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        match q.reads {
            Reads::Changed => conn
                .client
                .execute(&statement, &params)
                .await
                .map(Raw::Changed),
            _ => conn.client.query(&statement, &params).await.map(Raw::Rows),
        }
    };
    match tokio::time::timeout(limit, work).await {
        Err(_) => Err(Failure::Timeout),
        Ok(r) => r.map_err(Failure::Db),
    }
}

/// The server's answer read as `reads` asks; a value that does not decode is a bug here.
fn answer(raw: Raw, reads: Reads) -> Result<Answer> {
    let read = |e: tokio_postgres::Error| {
        Error::internal(format!("postgres: reading an answer: {e}")).with_source(e)
    };
    let rows = match raw {
        Raw::Changed(n) => return Ok(Answer::Changed(usize::try_from(n).unwrap_or(usize::MAX))),
        Raw::Rows(rows) => rows,
    };
    Ok(match reads {
        Reads::Rows { keyed, versioned } => Answer::Rows(
            rows.iter()
                .map(|r| row_of(r, keyed, versioned))
                .collect::<std::result::Result<_, _>>()
                .map_err(read)?,
        ),
        Reads::Number => Answer::Number(
            rows.first()
                .map(|r| r.try_get::<_, i64>(0))
                .transpose()
                .map_err(read)?,
        ),
        Reads::Exists => Answer::Exists(!rows.is_empty()),
        Reads::Changed => Answer::Changed(rows.len()),
    })
}

/// A row of `[key,] value, expires_at[, version]`.
fn row_of(
    r: &tokio_postgres::Row,
    keyed: bool,
    versioned: bool,
) -> std::result::Result<Row, tokio_postgres::Error> {
    let first = usize::from(keyed);
    Ok(Row {
        key: if keyed { r.try_get(0)? } else { String::new() },
        value: Bytes::from(r.try_get::<_, Vec<u8>>(first)?),
        expires: r.try_get(first + 1)?,
        version: if versioned { r.try_get(first + 2)? } else { 0 },
    })
}

#[async_trait]
impl Engine for PostgresEngine {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn read(&self, q: Bound) -> Result<Answer> {
        self.query(&q, false).await
    }

    async fn write(&self, q: Bound, probe: Option<Bound>) -> Result<(Answer, Option<Answer>)> {
        let first = self.query(&q, true).await?;
        let second = match (&first, probe) {
            // Not written: say why. Nothing is written on this answer, so reading after the
            // failed write is not probe-then-write.
            (Answer::Number(None), Some(p)) => Some(self.query(&p, false).await?),
            _ => None,
        };
        Ok((first, second))
    }

    async fn create(&self, s: &Arc<Statements>) -> Result<()> {
        let mut lease = self.lease().await?;
        let Some(conn) = lease.conn.as_mut() else {
            return Err(Error::internal("postgres lease without a connection"));
        };
        // Creation gets its own, longer limit, set for its transaction alone.
        let limit = self.statement_timeout.max(MIN_CREATE_TIMEOUT);
        for sql in &s.create {
            let statement = format!(
                "BEGIN; SET LOCAL statement_timeout = {}; {sql}; COMMIT",
                limit.as_millis()
            );
            let done =
                tokio::time::timeout(limit + CLIENT_GRACE, conn.client.batch_execute(&statement));
            match done.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    // The failed statement left its transaction aborted.
                    if conn.client.batch_execute("ROLLBACK").await.is_err() {
                        lease.broken = true;
                    }
                    // Two stores creating one table at once can race on the catalog; the loser
                    // sees a unique violation and the table exists either way.
                    if e.as_db_error().is_some_and(|d| d.code().code() == "23505") {
                        continue;
                    }
                    lease.broken |= e.is_closed() || e.as_db_error().is_none();
                    return Err(error::postgres("postgres create_table", e));
                }
                Err(_) => {
                    lease.broken = true;
                    cancel_on_server(conn, self.connect_timeout, self.tls.clone());
                    return Err(Error::timeout(format!(
                        "postgres create_table: no answer within {:?}",
                        limit + CLIENT_GRACE
                    )));
                }
            }
        }
        Ok(())
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.permits.close();
        lock(&self.idle).clear();
    }
}
