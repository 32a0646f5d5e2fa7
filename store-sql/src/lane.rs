//! A lane: a queue of calls and the SQLite connections that serve it, leader/follower.
//!
//! Blocking work runs through [`blocking`]: inside `tokio::task::block_in_place` on a
//! multi-thread runtime, or on `spawn_blocking` on a current-thread runtime. `block_in_place`
//! gives the worker's core (its queue of other tasks) to another thread while SQLite runs, so the
//! runtime never stalls, and the caller waits for no other thread: on small VMs waking a thread
//! costs 15–100 µs against ~3 µs for the statement. A caller that goes on without waiting for
//! anything keeps running on the thread that gave its core away, so its next call costs nothing
//! extra.
//!
//! Calls wait in one of two lanes, each with its own connections: writes (one connection) and
//! reads (a few connections; WAL lets them run beside the writer). A lane works leader/follower,
//! as RocksDB's write groups do: a caller queues its job; if the lane has a free connection it
//! becomes a leader, takes the connection and runs every queued job (up to 256) as one batch,
//! again and again while jobs keep arriving; followers just wait for their answer. After a few
//! batches a leader hands its place to a waiting follower, so no caller leads forever.
//!
//! - A write batch is one `BEGIN IMMEDIATE … COMMIT` (group commit): each caller is answered
//!   only after the commit that holds its write. A statement that fails answers its own caller
//!   and does not undo the others; a failed commit answers every caller of its batch with the
//!   error. A statement error that ends the transaction (SQLite rolls back on a full disk or an
//!   I/O error) stops the batch: every write of it is answered "not applied", and no later job
//!   runs outside the transaction.
//! - A read batch is one read transaction, so it costs one snapshot and one set of file locks.
//!   Every read in it was asked for before the snapshot was taken, and is answered after, so each
//!   still sees every write acknowledged before it was asked.
//! - A caller that finds its lane idle runs its own statement at once, alone, as a plain driver
//!   call would (autocommit), then serves whatever queued meanwhile.
//!
//! A `:memory:` database cannot share data between connections, so its reads use the write lane.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use store_core::{Error, Result};
use tokio::sync::oneshot;

use crate::engine::WriteStats;
use crate::error;

/// Most jobs run in one batch.
const MAX_BATCH: usize = 256;
/// Batches a leader runs before handing its place to a waiting caller.
const MAX_ROUNDS: usize = 4;

/// How a batch ended, for a job's completion.
#[derive(Clone, Copy)]
enum Outcome<'a> {
    /// Committed (or a read): each caller gets its own result.
    Done,
    /// Not committed: a caller whose statement succeeded gets this error, the others their own.
    Failed(&'a Error),
    /// Rolled back before the end: every caller gets this error.
    Undone(&'a Error),
}

/// Answers a job's caller once the batch's outcome is known.
type Completion = Box<dyn FnOnce(Outcome<'_>) + Send>;
/// Runs a job's statements (or fails it with the error it is given).
type Run = Box<dyn FnOnce(std::result::Result<&Connection, &Error>) -> Ran + Send>;

/// A job that ran: its completion, and a copy of its error if its statements failed.
struct Ran {
    complete: Completion,
    failed: Option<Error>,
}

/// A queued call: what to run, and how to make its caller a leader.
struct Job {
    run: Run,
    promote: Option<oneshot::Sender<()>>,
}

/// What a lane's batch is: a group commit, or a shared read transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Write,
    Read,
}

/// A queue of calls and the connections that serve it. There are never more leaders than
/// connections, and each leader holds one connection while it leads.
struct Lane {
    kind: Kind,
    state: Mutex<LaneState>,
    counters: Counters,
}

/// Running totals of a write lane, read by [`Lanes::write_stats`].
#[derive(Default)]
struct Counters {
    single: AtomicU64,
    single_failed: AtomicU64,
    batches: AtomicU64,
    batched: AtomicU64,
    batched_failed: AtomicU64,
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl Counters {
    /// A write that ran alone, in its own transaction.
    fn alone(&self, failed: bool) {
        add(&self.single, 1);
        add(&self.single_failed, usize::from(failed));
    }

    /// A group commit of `writes` writes, `failed` of which were answered with an error.
    fn batch(&self, writes: usize, failed: usize) {
        add(&self.batches, 1);
        add(&self.batched, writes);
        add(&self.batched_failed, failed);
    }
}

struct LaneState {
    jobs: VecDeque<Job>,
    /// Connections not held by a leader.
    idle: Vec<Connection>,
    /// Leaders, counting one that was promoted and has not taken its connection yet.
    leaders: usize,
    /// All connections of the lane.
    size: usize,
    closed: bool,
}

impl Lane {
    fn new(kind: Kind, conns: Vec<Connection>) -> Self {
        Self {
            kind,
            state: Mutex::new(LaneState {
                jobs: VecDeque::new(),
                size: conns.len(),
                idle: conns,
                leaders: 0,
                closed: false,
            }),
            counters: Counters::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState> {
        lock(&self.state)
    }

    /// Fails new calls with `Closed` and closes the idle connections. A leader still serving
    /// finishes the calls queued behind it, then closes its connection.
    fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.idle.clear();
    }
}

/// The lanes of one database: writes, and reads unless the database is `:memory:`.
pub(crate) struct Lanes {
    writes: Lane,
    /// `None` for `:memory:`, whose connections cannot share data: reads use the write lane.
    reads: Option<Lane>,
}

impl Lanes {
    /// A write lane on `writer`, and a read lane on `readers` unless there are none.
    pub(crate) fn new(writer: Connection, readers: Vec<Connection>) -> Self {
        Self {
            writes: Lane::new(Kind::Write, vec![writer]),
            reads: (!readers.is_empty()).then(|| Lane::new(Kind::Read, readers)),
        }
    }

    /// How the writes have run so far.
    pub(crate) fn write_stats(&self) -> WriteStats {
        let c = &self.writes.counters;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        WriteStats {
            single: get(&c.single),
            single_failed: get(&c.single_failed),
            batches: get(&c.batches),
            batched: get(&c.batched),
            batched_failed: get(&c.batched_failed),
        }
    }

    /// Fails new calls `Closed`; queued calls are still served (their leaders drain them).
    pub(crate) fn close(&self) {
        self.writes.close();
        if let Some(reads) = &self.reads {
            reads.close();
        }
    }

    fn lane(&self, kind: Kind) -> &Lane {
        match (kind, &self.reads) {
            (Kind::Read, Some(reads)) => reads,
            _ => &self.writes,
        }
    }
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("readers", &self.reads.as_ref().map(|r| r.lock().size))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn closed() -> Error {
    Error::closed("sqlite database is closed")
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

impl Lanes {
    /// Runs `f` on a connection of the lane: in the next group-committed transaction for
    /// writes, in the next shared read transaction for reads.
    pub(crate) async fn call<T, F>(self: &Arc<Self>, kind: Kind, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let running = Arc::clone(self);
        // Idle lane: lead at once with this call's own statement, alone, then serve whatever
        // queued meanwhile.
        let conn = {
            let mut st = running.lane(kind).lock();
            if st.closed {
                return Err(closed());
            }
            if st.jobs.is_empty() && st.leaders < st.size {
                let conn = st.idle.pop().ok_or_else(|| {
                    Error::internal("sqlite lane has a free leader place but no connection")
                })?;
                st.leaders += 1;
                Some(conn)
            } else {
                None
            }
        };
        if let Some(conn) = conn {
            let leader = Leader::new(Arc::clone(&running), kind, Some(conn));
            // `:memory:` reads run in the write lane: what matters is the lane's kind.
            let lane_kind = running.lane(kind).kind;
            return blocking(move || {
                let result = leader.conn().and_then(|c| {
                    outside_transaction(c)?;
                    f(c)
                });
                if lane_kind == Kind::Write {
                    leader.running.writes.counters.alone(result.is_err());
                }
                leader.serve();
                result
            })
            .await?;
        }
        let (run, mut done_rx) = job(f);
        let (promote_tx, promote_rx) = oneshot::channel::<()>();
        let lead = {
            let mut st = running.lane(kind).lock();
            if st.closed {
                return Err(closed());
            }
            st.jobs.push_back(Job {
                run,
                promote: Some(promote_tx),
            });
            let lead = st.leaders < st.size;
            st.leaders += usize::from(lead);
            lead
        };
        let mut waiter = Waiter {
            running: Arc::clone(&running),
            kind,
            promote: Some(promote_rx),
        };
        if lead {
            blocking(Leader::new(Arc::clone(&running), kind, None).serving()).await?;
        }
        let answer = |a: std::result::Result<Result<T>, _>| {
            a.map_err(|_| Error::internal("sqlite call dropped without an answer"))?
        };
        loop {
            let Some(promote_rx) = waiter.promote.as_mut() else {
                return answer(done_rx.await);
            };
            tokio::select! {
                biased;
                a = &mut done_rx => return answer(a),
                promoted = promote_rx => {
                    waiter.promote = None;
                    if promoted.is_ok() {
                        blocking(Leader::new(Arc::clone(&running), kind, None).serving()).await?;
                    }
                }
            }
        }
    }
}

/// A queued job running `f`, and where its answer arrives.
fn job<T, F>(f: F) -> (Run, oneshot::Receiver<Result<T>>)
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    let (done_tx, done_rx) = oneshot::channel::<Result<T>>();
    let run: Run = Box::new(move |conn| {
        let result = match conn {
            Ok(c) => f(c),
            Err(e) => Err(e.clone()),
        };
        let failed = result.as_ref().err().cloned();
        let complete: Completion = Box::new(move |outcome: Outcome<'_>| {
            let answer = match (outcome, result) {
                (Outcome::Failed(e), Ok(_)) | (Outcome::Undone(e), _) => Err(e.clone()),
                (_, result) => result,
            };
            let _ = done_tx.send(answer);
        });
        Ran { complete, failed }
    });
    (run, done_rx)
}

/// A waiting caller. If it is dropped (cancelled) after being made a leader but before it
/// took the place, it passes the place on, so the lane never waits for a leader that is gone:
/// to another waiter, else to a leader on a blocking thread for calls left queued.
struct Waiter {
    running: Arc<Lanes>,
    kind: Kind,
    promote: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let Some(mut rx) = self.promote.take() else {
            return;
        };
        rx.close();
        if rx.try_recv().is_err() {
            return;
        }
        {
            let mut st = self.running.lane(self.kind).lock();
            if promote_one(&mut st) {
                return;
            }
            if st.jobs.is_empty() {
                st.leaders = st.leaders.saturating_sub(1);
                if st.closed {
                    st.idle.clear();
                }
                return;
            }
        }
        // Calls whose callers left still wait (this one's among them): serve them now rather
        // than whenever the next caller comes. Without a runtime, dropping the leader frees the
        // place, and the next caller serves them.
        let leader = Leader::new(Arc::clone(&self.running), self.kind, None);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn_blocking(leader.serving());
        }
    }
}

/// Makes the first live waiter a leader; false if every queued caller is gone.
fn promote_one(st: &mut LaneState) -> bool {
    st.jobs.iter_mut().any(|job| {
        job.promote
            .take()
            .is_some_and(|promote| promote.send(()).is_ok())
    })
}

/// A leader place in a lane, and the connection it serves with. Dropping it gives back both:
/// also when a job panics, or when a blocking closure that holds it never runs.
struct Leader {
    running: Arc<Lanes>,
    kind: Kind,
    /// `None` until a leader that was handed its place takes a connection.
    conn: Option<Connection>,
    /// The place went to a promoted caller: dropping gives back only the connection.
    passed: bool,
}

impl Leader {
    fn new(running: Arc<Lanes>, kind: Kind, conn: Option<Connection>) -> Self {
        Self {
            running,
            kind,
            conn,
            passed: false,
        }
    }

    fn conn(&self) -> Result<&Connection> {
        self.conn
            .as_ref()
            .ok_or_else(|| Error::internal("sqlite leader has no connection"))
    }

    /// [`Leader::serve`] as a closure for [`blocking`].
    fn serving(self) -> impl FnOnce() + Send + 'static {
        move || self.serve()
    }

    /// Runs queued jobs batch by batch until the queue is empty; after [`MAX_ROUNDS`] batches
    /// hands the place to a waiting caller.
    fn serve(mut self) {
        let running = Arc::clone(&self.running);
        let lane = running.lane(self.kind);
        if self.conn.is_none() {
            self.conn = lane.lock().idle.pop();
        }
        let mut rounds = 0;
        loop {
            let batch: Vec<Job> = {
                let mut st = lane.lock();
                if st.jobs.is_empty() {
                    return; // drop: connection back, place freed
                }
                if rounds >= MAX_ROUNDS {
                    if promote_one(&mut st) {
                        // The promoted caller takes the connection from `idle`: put it there
                        // before the lock is released.
                        if let Some(conn) = self.conn.take() {
                            st.idle.push(conn);
                        }
                        self.passed = true;
                        return;
                    }
                    rounds = 0; // every waiter is gone: keep leading
                }
                let n = st.jobs.len().min(MAX_BATCH);
                st.jobs.drain(..n).collect()
            };
            rounds += 1;
            match &self.conn {
                Some(conn) => run_batch(conn, lane, batch),
                // Only after close closed the idle connections.
                None => fail_all(batch, &closed()),
            }
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let conn = self.conn.take();
        if let Some(conn) = &conn
            && !conn.is_autocommit()
        {
            // Only after a job panicked inside a batch: end its transaction.
            let _ = conn.execute_batch("ROLLBACK");
        }
        let lane = self.running.lane(self.kind);
        let mut st = lane.lock();
        if !self.passed {
            st.leaders = st.leaders.saturating_sub(1);
        }
        if let Some(conn) = conn
            && !st.closed
        {
            st.idle.push(conn);
        }
    }
}

/// Answers jobs that never ran.
fn fail_all(jobs: impl IntoIterator<Item = Job>, err: &Error) {
    for job in jobs {
        ((job.run)(Err(err)).complete)(Outcome::Failed(err));
    }
}

/// Makes sure a connection is not inside a transaction left open by an earlier failure: a write
/// run inside one would never commit, a read would see an old snapshot.
fn outside_transaction(conn: &Connection) -> Result<()> {
    if conn.is_autocommit() {
        return Ok(());
    }
    let _ = conn.execute_batch("ROLLBACK");
    if conn.is_autocommit() {
        Ok(())
    } else {
        Err(Error::unavailable(
            "sqlite: the connection is stuck in a transaction that cannot be rolled back \
             (nothing was run; a write is not applied)",
        ))
    }
}

fn run_batch(conn: &Connection, lane: &Lane, jobs: Vec<Job>) {
    let kind = lane.kind;
    let counters = &lane.counters;
    if let Err(e) = outside_transaction(conn) {
        return fail_all(jobs, &e);
    }
    let mut jobs = jobs.into_iter();
    if jobs.len() == 1
        && let Some(job) = jobs.next()
    {
        // One statement, one transaction, as a plain driver call.
        let ran = (job.run)(Ok(conn));
        if kind == Kind::Write {
            counters.alone(ran.failed.is_some());
        }
        return (ran.complete)(Outcome::Done);
    }
    let (begin, what) = match kind {
        Kind::Write => ("BEGIN IMMEDIATE", "sqlite: begin write transaction"),
        Kind::Read => ("BEGIN", "sqlite: begin read transaction"),
    };
    if let Err(e) = conn.prepare_cached(begin).and_then(|mut s| s.execute([])) {
        return fail_all(jobs, &error::sqlite(what, e));
    }
    let total = jobs.len();
    let mut ran: Vec<Ran> = Vec::with_capacity(total);
    while let Some(job) = jobs.next() {
        ran.push((job.run)(Ok(conn)));
        if kind == Kind::Write && conn.is_autocommit() {
            // The statement's error ended the transaction: SQLite rolled it back, undoing every
            // write of the batch so far. The rest must not run outside it.
            let cause = ran
                .last()
                .and_then(|r| r.failed.as_ref())
                .map_or("the transaction ended early", Error::message);
            let err = Error::unavailable(format!(
                "sqlite: write not applied: its group commit was rolled back: {cause}"
            ));
            counters.batch(total, total);
            ran.into_iter()
                .for_each(|r| (r.complete)(Outcome::Undone(&err)));
            return fail_all(jobs, &err);
        }
    }
    let commit = conn
        .prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]));
    if kind == Kind::Read {
        // Reads already hold their answers; a failed end of a read transaction changes none.
        if commit.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        return ran.into_iter().for_each(|r| (r.complete)(Outcome::Done));
    }
    match commit {
        Ok(_) => {
            counters.batch(total, ran.iter().filter(|r| r.failed.is_some()).count());
            ran.into_iter().for_each(|r| (r.complete)(Outcome::Done));
        }
        Err(e) => {
            // A commit that failed for want of space wrote no commit record: not applied. After
            // another I/O error part of it may be on disk: indeterminate.
            let err = error::sqlite_write("sqlite: commit", e);
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            counters.batch(total, total);
            ran.into_iter()
                .for_each(|r| (r.complete)(Outcome::Failed(&err)));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use store_core::ErrorKind;

    fn count(c: &Connection) -> Result<i64> {
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .map_err(|e| error::sqlite("count", e))
    }

    /// The lanes of a `:memory:` database: one connection, reads in the write lane.
    fn memory() -> Arc<Lanes> {
        Arc::new(Lanes::new(
            Connection::open_in_memory().unwrap(),
            Vec::new(),
        ))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_cancelled_after_being_handed_the_place_passes_it_on() {
        let running = memory();
        running
            .call(Kind::Write, |c| {
                c.execute_batch("CREATE TABLE t (x INTEGER)")
                    .map_err(|e| error::sqlite("create", e))
            })
            .await
            .unwrap();
        // Act as the leader: hold the write lane's only place and its connection.
        let conn = {
            let mut st = running.writes.lock();
            st.leaders += 1;
            st.idle.pop().unwrap()
        };
        // A caller queues behind that leader...
        let mut waiting = Box::pin(running.call(Kind::Write, |c| {
            c.execute_batch("INSERT INTO t VALUES (1)")
                .map_err(|e| error::sqlite("insert", e))
        }));
        assert!(
            tokio::time::timeout(Duration::ZERO, &mut waiting)
                .await
                .is_err(),
            "the caller waits while the place is taken"
        );
        // ...is handed the place, as after MAX_ROUNDS batches, and is cancelled before it runs.
        {
            let mut st = running.writes.lock();
            assert!(promote_one(&mut st));
            st.idle.push(conn);
        }
        drop(waiting);
        // With no other waiter, a leader on a blocking thread serves the cancelled caller's
        // queued write and frees the place, without any further caller.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let served = {
                let st = running.writes.lock();
                st.leaders == 0 && st.jobs.is_empty()
            };
            if served {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the place was not passed on"
            );
            tokio::task::yield_now().await;
        }
        let rows = tokio::time::timeout(Duration::from_secs(5), running.call(Kind::Read, count))
            .await
            .expect("the lane serves calls again")
            .unwrap();
        assert_eq!(rows, 1, "the cancelled caller's queued write was committed");
    }

    /// A write job for [`run_batch`], and its answer.
    fn insert(bytes: usize) -> (Job, oneshot::Receiver<Result<()>>) {
        let (run, answer) = job(move |c| {
            c.execute("INSERT INTO t VALUES (?1)", [vec![7u8; bytes]])
                .map(drop)
                .map_err(|e| error::sqlite_write("insert", e))
        });
        (Job { run, promote: None }, answer)
    }

    #[tokio::test]
    async fn a_statement_that_ends_the_batch_transaction_stops_the_batch() {
        let running = memory();
        let conn = running.writes.lock().idle.pop().unwrap();
        // A rowid table with no index: an insert into it has no statement journal, so when it
        // finds the database full SQLite rolls back the whole transaction, not just the statement.
        conn.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", pages + 8)
            .unwrap();

        let (first, first_answer) = insert(10);
        let (full, full_answer) = insert(1 << 20); // needs far more than 8 pages
        let (last, last_answer) = insert(10);
        run_batch(&conn, &running.writes, vec![first, full, last]);

        for (name, answer) in [
            ("before", first_answer),
            ("full", full_answer),
            ("after", last_answer),
        ] {
            let e = answer.await.unwrap().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{name}: {e}");
            assert!(!e.is_indeterminate(), "{name}: known not applied: {e:?}");
            assert!(e.message().contains("not applied"), "{name}: {e}");
            assert!(e.message().contains("full"), "{name}: names the cause: {e}");
        }
        // Nothing was committed: neither the write before the failure (rolled back with the
        // transaction) nor the one after it (never run outside the transaction).
        assert_eq!(count(&conn).unwrap(), 0);
        assert!(conn.is_autocommit());
        let stats = running
            .writes
            .counters
            .batched_failed
            .load(Ordering::Relaxed);
        assert_eq!(stats, 3);

        // Room again: the same connection writes, alone and in a batch.
        conn.pragma_update(None, "max_page_count", pages + 10_000)
            .unwrap();
        let (a, a_answer) = insert(10);
        let (b, b_answer) = insert(1 << 20);
        run_batch(&conn, &running.writes, vec![a, b]);
        a_answer.await.unwrap().unwrap();
        b_answer.await.unwrap().unwrap();
        assert_eq!(count(&conn).unwrap(), 2);
        running.writes.lock().idle.push(conn);
    }

    #[tokio::test]
    async fn a_leader_dropped_before_it_ran_gives_back_its_place_and_connection() {
        // As when the runtime shuts down before a blocking closure holding the leader starts.
        let running = memory();
        let conn = {
            let mut st = running.writes.lock();
            st.leaders += 1;
            st.idle.pop().unwrap()
        };
        drop(Leader::new(Arc::clone(&running), Kind::Write, Some(conn)));
        let st = running.writes.lock();
        assert_eq!((st.leaders, st.idle.len()), (0, 1));
    }
}
