//! What a database must do for [`SqlStore`](crate::SqlStore): run the statements `sql.rs` binds,
//! and answer what each one's [`Reads`](crate::sql::Reads) asks. It decides nothing about what
//! the answers mean.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use store_core::Result;

use crate::sql::{Answer, Bound, Dialect, Statements};

/// One row as read: value, expiry (epoch ms) and version (0 when unversioned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) key: String,
    pub(crate) value: Bytes,
    pub(crate) expires: Option<i64>,
    pub(crate) version: i64,
}

/// The condition of a write, with the expected version resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Write {
    Always,
    IfAbsent,
    IfVersion(i64),
}

/// A write's arguments.
#[derive(Debug, Clone)]
pub(crate) struct WriteArgs {
    pub(crate) key: String,
    pub(crate) value: Bytes,
    pub(crate) expires: Option<i64>,
    pub(crate) now: i64,
    pub(crate) condition: Write,
}

/// A page request: keys from `start` (excluded if `exclusive`) below `upper`, at most `limit`.
#[derive(Debug, Clone)]
pub(crate) struct Range {
    pub(crate) start: String,
    pub(crate) exclusive: bool,
    pub(crate) upper: Option<String>,
    pub(crate) now: i64,
    pub(crate) limit: i64,
}

/// How a database's writes have run since it opened: alone, or in group commits (SQLite).
/// Failures count writes answered with an error of the database's (a full disk, a failed
/// commit), not refused conditions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteStats {
    /// Writes that ran alone, each in its own transaction.
    pub single: u64,
    /// Of those, the ones that failed.
    pub single_failed: u64,
    /// Group commits: transactions that held two writes or more.
    pub batches: u64,
    /// Writes run in group commits.
    pub batched: u64,
    /// Of those, the ones that failed (their own statement, a rolled-back or failed commit).
    pub batched_failed: u64,
}

#[async_trait]
pub(crate) trait Engine: Send + Sync + Debug + 'static {
    fn dialect(&self) -> Dialect;
    /// Runs a statement that only reads.
    async fn read(&self, q: Bound) -> Result<Answer>;
    /// Runs a statement that writes, committed before it answers; when it answers
    /// `Number(None)` (its condition did not hold) and `probe` is given, runs `probe` too and
    /// answers both. SQLite runs the probe on the writer connection, so its answer is exact;
    /// PostgreSQL on any pooled connection, after the write, so a concurrent writer may change
    /// what it reads (the write itself is never affected). An error that leaves the outcome
    /// unknown is indeterminate.
    async fn write(&self, q: Bound, probe: Option<Bound>) -> Result<(Answer, Option<Answer>)>;
    /// Runs the statements of `create_table: true`.
    async fn create(&self, s: &Arc<Statements>) -> Result<()>;
    /// Totals of the writes run so far (zero for engines without group commit).
    fn write_stats(&self) -> WriteStats {
        WriteStats::default()
    }
    /// Stops background threads and closes connections; later calls fail `Closed`.
    async fn close(&self);
}
