//! The Raft log and the vote, durable in sled.
//!
//! An append is acknowledged to Raft only once sled has flushed it to disk. Appends do not flush
//! one by one: they hand their callbacks to one flusher task, which takes every callback waiting,
//! flushes once and answers them all, so a burst of appends costs one `fsync`.
//!
//! Nothing in this crate uses sled's batches or transactions: the first one switches sled (for
//! the whole process) to a global reader-writer lock that a flush holds as a reader for its whole
//! `fsync`, so every later batch would wait for the flush in progress and appends could never
//! overlap a flush. Single-key writes stay lock-free; sled applies them in order and recovers a
//! prefix of them after a crash, which is all the log and the state machine rely on.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError,
    StorageIOError, Vote,
};

use crate::types::{NodeId, TypeConfig};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"last_purged";

/// The log (`log` tree: big-endian index → entry) and the Raft metadata (`raft` tree).
#[derive(Clone)]
pub(crate) struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    flusher: std::sync::mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    /// Opens the trees and starts the flusher thread (it ends when the last handle is dropped).
    pub(crate) fn open(db: &sled::Db) -> sled::Result<Self> {
        let (flusher, waiting) = std::sync::mpsc::channel::<LogFlushed<TypeConfig>>();
        let flush_db = db.clone();
        // A thread of its own, blocking in sled's flush: no task hand-offs between an append and
        // its fsync, and every callback that queued meanwhile rides on the next one.
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || {
                while let Ok(first) = waiting.recv() {
                    let mut batch = vec![first];
                    batch.extend(waiting.try_iter());
                    let result = flush_db.flush().map(|_| ()).map_err(io_error);
                    for callback in batch {
                        callback.log_io_completed(result.as_ref().map(|_| ()).map_err(copy_io));
                    }
                }
            })
            .map_err(sled::Error::Io)?;
        Ok(Self {
            db: db.clone(),
            log: db.open_tree("log")?,
            meta: db.open_tree("raft")?,
            flusher,
        })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<NodeId>,
    ) -> StorageResult<Option<T>> {
        let Some(bytes) = self
            .meta
            .get(key)
            .map_err(|e| sio(subject.clone(), ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| sio(subject, ErrorVerb::Read, e))
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<NodeId>,
    ) -> StorageResult<()> {
        let bytes =
            postcard::to_allocvec(value).map_err(|e| sio(subject.clone(), ErrorVerb::Write, e))?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| sio(subject, ErrorVerb::Write, e))?;
        Ok(())
    }

    async fn flush(&self, subject: ErrorSubject<NodeId>) -> StorageResult<()> {
        self.db
            .flush_async()
            .await
            .map_err(|e| sio(subject, ErrorVerb::Write, e))?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(i.to_be_bytes()),
            Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(i.to_be_bytes()),
            Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        for item in self.log.range::<[u8; 8], _>((start, end)) {
            let (_, bytes) = item.map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
            let entry: Entry<TypeConfig> = postcard::from_bytes(&bytes)
                .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> =
            self.read_meta(PURGED, ErrorSubject::Logs)?;
        let last = match self
            .log
            .last()
            .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?
        {
            Some((_, bytes)) => {
                let entry: Entry<TypeConfig> = postcard::from_bytes(&bytes)
                    .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.write_meta(VOTE, vote, ErrorSubject::Vote)?;
        self.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.read_meta(VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // Not flushed: after a crash a smaller committed index only means re-learning it.
        self.write_meta(COMMITTED, &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>(COMMITTED, ErrorSubject::Store)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        for entry in entries {
            let bytes = postcard::to_allocvec(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, AnyError::new(&e)))?;
            self.log
                .insert(entry.log_id.index.to_be_bytes(), bytes)
                .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        }
        if let Err(std::sync::mpsc::SendError(callback)) = self.flusher.send(callback) {
            // The flusher thread is gone (it panicked): flush here instead.
            let result = self.db.flush_async().await.map(|_| ()).map_err(io_error);
            callback.log_io_completed(result);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // From the end backwards: whatever prefix of the removals a crash keeps, the log stays
        // contiguous.
        let mut keys = Vec::new();
        for item in self.log.range(log_id.index.to_be_bytes()..) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
            keys.push(key);
        }
        for key in keys.into_iter().rev() {
            self.log
                .remove(key)
                .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        }
        self.flush(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // The purge mark goes first: sled recovers writes in order, so a crash can never leave
        // the log shorter than the mark says.
        self.write_meta(PURGED, &log_id, ErrorSubject::Logs)?;
        let mut keys = Vec::new();
        for item in self.log.range(..=log_id.index.to_be_bytes()) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
            keys.push(key);
        }
        for key in keys {
            self.log
                .remove(key)
                .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        }
        Ok(())
    }
}

fn sio(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

fn io_error(e: sled::Error) -> std::io::Error {
    match e {
        sled::Error::Io(io) => io,
        other => std::io::Error::other(other.to_string()),
    }
}

fn copy_io(e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), e.to_string())
}
