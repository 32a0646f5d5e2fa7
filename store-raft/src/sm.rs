//! The state machine, durable in sled (the state tree, `sm` or `sm.1`), and its snapshots (files
//! of their own, see `snapshot.rs`).
//!
//! Key layout of the state tree (first byte):
//! - `c`: the state machine's clock, the largest leader stamp applied so far;
//! - `d<physical key>`: a record: version (8 bytes), deadline (8 bytes, 0 = none), value;
//! - `e<deadline><physical key>`: the expiry index cleanup reads in deadline order;
//! - `i<member name>`: the member's recorded incarnation (8 bytes), `k`: the cluster id (8
//!   bytes), see `Command::Identities`;
//! - `m…`: the last applied log id with the clock (one record), the membership, and the marker
//!   of a clean stop;
//! - `u<generation><key>`: copy-on-write saves for the snapshot being built.
//!
//! **Crash consistency.** An applied entry's writes go in key by key, the applied log id and the
//! clock last, as one record (no sled batches: see `log.rs`). sled recovers a prefix of those
//! writes after a crash, and re-applying an entry over a part of its own writes is not always
//! the same as applying it once: a failed `if_absent` whose key a later `Expire` in the same
//! batch removed would succeed on replay. So the state is trusted only after a clean stop,
//! which writes a marker as its last write ([`Shared::mark_clean`]); the first write after
//! opening removes it. Opened without the marker, the state machine is discarded and rebuilt
//! from the last stored snapshot (or from nothing), and Raft replays the log from there: the log
//! after the snapshot is never purged, and replaying whole entries in order from a state that
//! was whole gives exactly the state every other replica reaches.
//!
//! **Point-in-time snapshots without MVCC.** sled has no snapshot reads, so a snapshot freezes a
//! generation instead: from the moment the builder is taken (which Raft does between two
//! applies) until it finishes, the first write of each key also saves the key's previous value (or
//! its absence) under `u<generation><key>`, written before the key itself. The builder walks the
//! live tree and, for each key, reads the key and then its save, preferring the save; then it
//! adds the saved values of keys deleted since. Because the save goes in first, whichever side
//! of a write the walk sees, it ends with the value the key had at the freeze. Writes keep flowing during the build and cost
//! one extra read per key while a snapshot is being built.
//!
//! **Installing a snapshot is atomic for readers.** The snapshot's pairs, read from the received
//! file one at a time, go into the other state tree (`sm` ↔ `sm.1`), which nobody reads; the `raft` tree's `state-tree` key then
//! names it, and the handle every read goes through is swapped under a lock that waits for the
//! reads in progress. A read sees the old state whole or the new one whole, never a tree half
//! emptied or half filled. The old tree is dropped after the swap (and at open, if a crash left
//! it behind).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use store_core::backend::fault;
use tokio::sync::watch;

use crate::snapshot::{Folder, SnapshotFile};
use crate::types::{Command, Cond, Member, NodeId, Request, Response, Responses, TypeConfig};

type StorageResult<T> = Result<T, StorageError<NodeId>>;
/// Writes to the `sm` tree in order: a key, and its new value or `None` for a removal.
type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;
/// The last applied log id and the membership as of it.
type AppliedState = (Option<LogId<NodeId>>, StoredMembership<NodeId, Member>);

/// The clock, inside snapshots (and in the live tree of data folders from before
/// [`APPLIED_AND_CLOCK`]).
const CLOCK: &[u8] = b"c";
/// The applied log id alone, in data folders from before [`APPLIED_AND_CLOCK`].
const APPLIED: &[u8] = b"m/applied";
/// The last applied log id and the clock as of it: one record, so no crash separates them.
const APPLIED_AND_CLOCK: &[u8] = b"m/applied+clock";
/// Present only after a clean stop, until the first write.
const CLEAN: &[u8] = b"m/clean";
const MEMBERSHIP: &[u8] = b"m/membership";
/// In the `raft` tree of data folders from before snapshot files: the last snapshot.
const LEGACY_SNAPSHOT: &[u8] = b"snapshot";
/// In the `raft` tree: the name of the state tree in use (absent: `sm`).
const STATE_TREE: &[u8] = b"state-tree";
/// The two names the state tree takes in turn, one per snapshot install.
const STATE_TREES: [&[u8]; 2] = [b"sm", b"sm.1"];
/// The cluster id.
const CLUSTER: &[u8] = b"k";

fn incarnation_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(b'i');
    k.extend_from_slice(name.as_bytes());
    k
}

fn read_u64(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

/// A stored value with its version and deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) version: u64,
    pub(crate) expires_at: Option<u64>,
    pub(crate) value: Vec<u8>,
}

impl Record {
    fn encode(version: u64, expires_at: Option<u64>, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + value.len());
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&expires_at.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(value);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let version = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let deadline = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        Some(Self {
            version,
            expires_at: (deadline != 0).then_some(deadline),
            value: bytes.get(16..)?.to_vec(),
        })
    }

    pub(crate) fn live(&self, now_ms: u64) -> bool {
        self.expires_at.is_none_or(|d| now_ms < d)
    }
}

pub(crate) fn data_key(physical: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + physical.len());
    k.push(b'd');
    k.extend_from_slice(physical.as_bytes());
    k
}

fn expiry_key(deadline: u64, physical: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + physical.len());
    k.push(b'e');
    k.extend_from_slice(&deadline.to_be_bytes());
    k.extend_from_slice(physical.as_bytes());
    k
}

fn undo_prefix(generation: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(b'u');
    k.extend_from_slice(&generation.to_be_bytes());
    k
}

/// A snapshot as data folders from before snapshot files stored it, in the `raft` tree: moved
/// to a file at open.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Member>,
    data: Vec<u8>,
}

/// The state shared by the state machine (applied by Raft), its snapshot builders and the read
/// path of every store view.
pub(crate) struct Shared {
    db: sled::Db,
    /// The state tree. Every use holds the read lock for as long as it uses the handle; only a
    /// snapshot install takes the write lock, to swap in the tree it filled.
    tree: RwLock<sled::Tree>,
    meta: sled::Tree,
    /// The last applied log index, for followers waiting on a read index.
    applied: watch::Sender<u64>,
    /// The state machine's clock (largest stamp applied).
    clock_ms: AtomicU64,
    /// The generation being frozen for a snapshot, if one is being built.
    freeze: Mutex<Option<u64>>,
    generations: AtomicU64,
    /// Held by a snapshot build and by a snapshot install, so they never overlap.
    snapshot_lock: tokio::sync::Mutex<()>,
    /// The snapshot files.
    snapshots: Folder,
    /// Whether the clean-stop marker is in the tree (the next write removes it first).
    marked_clean: std::sync::atomic::AtomicBool,
    /// Tests: every write of [`Shared::write_in_order`], in order, while `Some`.
    #[cfg(test)]
    recorded: Mutex<Option<Writes>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("applied", &*self.applied.borrow())
            .field("clock_ms", &self.clock_ms.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The state tree, for one read or write (see [`Shared::tree`]'s field). Never held across
    /// another call that takes it.
    fn tree(&self) -> RwLockReadGuard<'_, sled::Tree> {
        self.tree.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    pub(crate) fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The clock the state machine has reached: no read may judge expiry by an earlier time.
    pub(crate) fn clock_ms(&self) -> u64 {
        self.clock_ms.load(Ordering::Acquire)
    }

    /// The cluster id, once the first leader recorded one.
    pub(crate) fn cluster_id(&self) -> Option<u64> {
        self.tree()
            .get(CLUSTER)
            .ok()
            .flatten()
            .and_then(|b| read_u64(&b))
    }

    /// The incarnation recorded for member `name`, if any.
    pub(crate) fn incarnation(&self, name: &str) -> Option<u64> {
        self.tree()
            .get(incarnation_key(name))
            .ok()
            .flatten()
            .and_then(|b| read_u64(&b))
    }

    pub(crate) fn get(&self, physical: &str) -> sled::Result<Option<Record>> {
        Ok(self
            .tree()
            .get(data_key(physical))?
            .and_then(|b| Record::decode(&b)))
    }

    /// Live records whose physical key starts with `prefix` and is `> after` (or `>= start`),
    /// at most `limit + 1` of them, so the caller knows whether more follow.
    pub(crate) fn scan(
        &self,
        prefix: &str,
        start: &str,
        exclusive: bool,
        limit: usize,
        now_ms: u64,
    ) -> sled::Result<Vec<(String, Record)>> {
        let from = data_key(start);
        let lower = if exclusive {
            std::ops::Bound::Excluded(from)
        } else {
            std::ops::Bound::Included(from)
        };
        let mut out = Vec::new();
        let dprefix = data_key(prefix);
        let tree = self.tree();
        for item in tree.range((lower, std::ops::Bound::Unbounded)) {
            let (key, bytes) = item?;
            if !key.starts_with(&dprefix) {
                break;
            }
            let Some(record) = Record::decode(&bytes) else {
                continue;
            };
            if !record.live(now_ms) {
                continue;
            }
            let Ok(name) = std::str::from_utf8(&key[1..]) else {
                continue;
            };
            out.push((name.to_owned(), record));
            if out.len() > limit {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `max` keys whose deadline has passed at `now_ms`, with that deadline.
    pub(crate) fn expired(&self, now_ms: u64, max: usize) -> sled::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let tree = self.tree();
        for item in tree.range(b"e".to_vec()..expiry_key(now_ms.saturating_add(1), "")) {
            let (key, _) = item?;
            let Some(deadline) = key.get(1..9).and_then(|b| b.try_into().ok()) else {
                continue;
            };
            let Ok(name) = std::str::from_utf8(&key[9..]) else {
                continue;
            };
            out.push((name.to_owned(), u64::from_be_bytes(deadline)));
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Replaces the whole state machine by a snapshot's pairs: fills the other state tree,
    /// runs `commit` (which makes the snapshot the stored one, if it is not yet), names the tree
    /// in the `raft` tree, then swaps it in for every reader at once (see the module doc) and
    /// drops the old one. The state is unmarked first: a crash before `commit` leaves the old
    /// snapshot stored, so `open` rebuilds from it (and the leader sends the new one again); a
    /// crash after it, from the new one.
    fn replace_state(
        &self,
        pairs: impl Iterator<Item = io::Result<(Vec<u8>, Vec<u8>)>>,
        meta: &SnapshotMeta<NodeId, Member>,
        commit: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        {
            let _writing = self.freeze.lock().unwrap_or_else(PoisonError::into_inner);
            self.unmark()?;
        }
        let old_name = self.tree().name();
        let new_name = STATE_TREES
            .into_iter()
            .find(|n| *n != &*old_name)
            .unwrap_or(STATE_TREES[0]);
        let fresh = self.db.open_tree(new_name)?;
        fresh.clear()?;
        let mut clock = 0;
        for pair in pairs {
            let (key, value) = pair?;
            if key == CLOCK {
                clock = value
                    .as_slice()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
            } else {
                fresh.insert(key, value)?;
            }
        }
        fresh.insert(MEMBERSHIP, encode(&meta.last_membership))?;
        fresh.insert(APPLIED_AND_CLOCK, encode(&(meta.last_log_id, clock)))?;
        // Whole on disk before anything names it.
        self.db.flush()?;
        commit()?;
        self.meta.insert(STATE_TREE, new_name)?;
        let old = std::mem::replace(
            &mut *self.tree.write().unwrap_or_else(PoisonError::into_inner),
            fresh,
        );
        drop(old);
        self.db.drop_tree(old_name)?;
        self.clock_ms.store(clock, Ordering::Release);
        self.applied
            .send_replace(meta.last_log_id.map(|l| l.index).unwrap_or(0));
        Ok(())
    }

    /// The applied log id, the membership and the clock the tree holds.
    fn read_state(&self) -> StorageResult<(AppliedState, u64)> {
        let read = |key: &[u8]| -> StorageResult<Option<sled::IVec>> {
            self.tree()
                .get(key)
                .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)).into())
        };
        let corrupt = |e: postcard::Error| StorageIOError::read_state_machine(AnyError::new(&e));
        let (applied, clock) = match read(APPLIED_AND_CLOCK)? {
            Some(b) => postcard::from_bytes::<(Option<LogId<NodeId>>, u64)>(&b).map_err(corrupt)?,
            // A data folder from before the single record: two keys.
            None => {
                let applied = match read(APPLIED)? {
                    Some(b) => postcard::from_bytes(&b).map_err(corrupt)?,
                    None => None,
                };
                let clock = read(CLOCK)?
                    .and_then(|b| b.as_ref().try_into().ok())
                    .map_or(0, u64::from_be_bytes);
                (applied, clock)
            }
        };
        let membership = match read(MEMBERSHIP)? {
            Some(b) => postcard::from_bytes(&b)
                .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?,
            None => StoredMembership::default(),
        };
        Ok(((applied, membership), clock))
    }

    /// Removes the clean-stop marker if it is there: called, with the write lock held, before
    /// any write.
    fn unmark(&self) -> sled::Result<()> {
        if self.marked_clean.swap(false, Ordering::AcqRel) {
            self.tree().remove(CLEAN)?;
        }
        Ok(())
    }

    /// Records a clean stop: the state on disk is whole, as of its applied log id. The last
    /// write of a stopping engine (any later write removes it again first); the caller flushes.
    pub(crate) fn mark_clean(&self) -> sled::Result<()> {
        let _writing = self.freeze.lock().unwrap_or_else(PoisonError::into_inner);
        self.tree().insert(CLEAN, &[])?;
        self.marked_clean.store(true, Ordering::Release);
        Ok(())
    }

    /// Applies one entry: its writes one key at a time, in an order that makes a replay after a
    /// crash safe (see [`Shared::write_in_order`]). The clock and the applied log id are written
    /// once per batch of entries, after all of them ([`Shared::applied_up_to`]).
    fn apply_one(
        &self,
        entry: Entry<TypeConfig>,
        membership: &mut StoredMembership<NodeId, Member>,
    ) -> sled::Result<Responses> {
        let log_id = entry.log_id;
        let index = log_id.index;
        let responses = match entry.payload {
            EntryPayload::Blank => Responses::default(),
            EntryPayload::Membership(m) => {
                *membership = StoredMembership::new(Some(log_id), m);
                let names: std::collections::HashSet<&str> = membership
                    .membership()
                    .nodes()
                    .map(|(_, n)| n.name.as_str())
                    .collect();
                // A member that left loses its recorded incarnation: added back, it is new.
                let mut writes = Vec::new();
                for item in self.tree().scan_prefix(b"i") {
                    let (key, _) = item?;
                    if !std::str::from_utf8(&key[1..]).is_ok_and(|n| names.contains(n)) {
                        writes.push((key.to_vec(), None));
                    }
                }
                writes.push((MEMBERSHIP.to_vec(), Some(encode(&*membership))));
                self.write_in_order(writes)?;
                Responses::default()
            }
            EntryPayload::Normal(Request { stamp_ms, commands }) => {
                let now = stamp_ms.max(self.clock_ms());
                let mut responses = Vec::with_capacity(commands.len());
                // One command at a time: each sees the writes of the ones before it.
                for command in commands {
                    let mut writes = Vec::new();
                    responses.push(self.command(index, now, command, &mut writes)?);
                    self.write_in_order(writes)?;
                }
                self.clock_ms.store(now, Ordering::Release);
                Responses(responses)
            }
        };
        self.applied.send_replace(index);
        Ok(responses)
    }

    /// Records that every entry up to `log_id` is applied, with the clock as of it: one record.
    fn applied_up_to(&self, log_id: LogId<NodeId>) -> sled::Result<()> {
        self.write_in_order(vec![(
            APPLIED_AND_CLOCK.to_vec(),
            Some(encode(&(Some(log_id), self.clock_ms()))),
        )])
    }

    /// Writes `writes` one key at a time, in order, after saving for a snapshot being built the
    /// value each key had at its freeze.
    ///
    /// No sled batch (see `log.rs` for why). Instead the order carries the guarantees:
    /// - the clean-stop marker goes before anything else, so a crash after this write is never
    ///   taken for a clean stop (see the module doc);
    /// - a save is written before the key it saves, so a snapshot builder that reads the key and
    ///   then its save always ends with the value at the freeze;
    /// - an entry's writes come before its applied log id.
    fn write_in_order(&self, writes: Writes) -> sled::Result<()> {
        let frozen = self.freeze.lock().unwrap_or_else(PoisonError::into_inner);
        self.unmark()?;
        let tree = self.tree();
        if let Some(generation) = *frozen {
            let prefix = undo_prefix(generation);
            for (key, _) in &writes {
                if !matches!(key.first(), Some(b'c' | b'd' | b'e' | b'i' | b'k')) {
                    continue;
                }
                let mut undo = prefix.clone();
                undo.extend_from_slice(key);
                if tree.contains_key(&undo)? {
                    continue;
                }
                // A saved value is `1 + old value`, or `0` for "absent at the freeze".
                let saved = match tree.get(key)? {
                    Some(old) => [&[1u8][..], &old].concat(),
                    None => vec![0u8],
                };
                tree.insert(undo, saved)?;
            }
        }
        #[cfg(test)]
        if let Some(log) = self
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            log.extend(writes.iter().cloned());
        }
        for (key, value) in writes {
            match value {
                Some(v) => tree.insert(key, v)?,
                None => tree.remove(key)?,
            };
        }
        drop(tree);
        drop(frozen);
        Ok(())
    }

    fn command(
        &self,
        index: u64,
        now: u64,
        command: Command,
        writes: &mut Writes,
    ) -> sled::Result<Response> {
        Ok(match command {
            Command::Write {
                key,
                value,
                ttl_ms,
                condition,
            } => {
                let old = self.get(&key)?;
                let live = old.as_ref().filter(|r| r.live(now));
                match (condition, live) {
                    (Cond::IfAbsent, Some(_)) => return Ok(Response::Exists),
                    (Cond::IfVersion(_), None) => return Ok(Response::Missing),
                    (Cond::IfVersion(v), Some(r)) if r.version != v => {
                        return Ok(Response::Mismatch { current: r.version });
                    }
                    _ => {}
                }
                if let Some(d) = old.as_ref().and_then(|r| r.expires_at) {
                    writes.push((expiry_key(d, &key), None));
                }
                let expires_at = ttl_ms.map(|t| now.saturating_add(t));
                if let Some(d) = expires_at {
                    writes.push((expiry_key(d, &key), Some(Vec::new())));
                }
                let version = match &old {
                    // The defect: the same on every replica, as apply must be.
                    Some(r) if index.is_multiple_of(8) && fault::injected(fault::REUSE_VERSION) => {
                        r.version
                    }
                    _ => index,
                };
                writes.push((
                    data_key(&key),
                    Some(Record::encode(version, expires_at, &value)),
                ));
                Response::Written {
                    version,
                    expires_at,
                }
            }
            Command::Delete { key } => match self.get(&key)? {
                Some(old) => {
                    if let Some(d) = old.expires_at {
                        writes.push((expiry_key(d, &key), None));
                    }
                    writes.push((data_key(&key), None));
                    Response::Deleted(old.live(now))
                }
                None => Response::Deleted(false),
            },
            Command::Expire { keys } => {
                for (key, deadline) in keys {
                    if deadline > now {
                        continue;
                    }
                    match self.get(&key)? {
                        Some(old) if old.expires_at == Some(deadline) => {
                            writes.push((expiry_key(deadline, &key), None));
                            writes.push((data_key(&key), None));
                        }
                        // A stale index entry (the key was rewritten): drop just the entry.
                        _ => writes.push((expiry_key(deadline, &key), None)),
                    }
                }
                Response::Done
            }
            Command::Identities {
                cluster,
                incarnations,
            } => {
                if self.tree().get(CLUSTER)?.is_none() {
                    writes.push((CLUSTER.to_vec(), Some(cluster.to_be_bytes().to_vec())));
                }
                for (name, incarnation) in incarnations {
                    let key = incarnation_key(&name);
                    if self.tree().get(&key)?.is_none() && !writes.iter().any(|(k, _)| *k == key) {
                        writes.push((key, Some(incarnation.to_be_bytes().to_vec())));
                    }
                }
                Response::Done
            }
        })
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain data into a Vec cannot fail.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// The state machine Raft drives.
pub(crate) struct StateMachine {
    shared: Arc<Shared>,
    membership: StoredMembership<NodeId, Member>,
    applied: Option<LogId<NodeId>>,
}

impl StateMachine {
    /// Opens the state machine in `db`, with its snapshot files in the folder `snapshots`.
    pub(crate) fn open(
        db: &sled::Db,
        snapshots: &std::path::Path,
    ) -> Result<(Self, Arc<Shared>), StorageError<NodeId>> {
        let read_err = |e: sled::Error| StorageIOError::read_state_machine(AnyError::new(&e));
        let write_err = |e: sled::Error| StorageIOError::write_state_machine(AnyError::new(&e));
        let snapshot_err = |e: io::Error| StorageIOError::read_snapshot(None, AnyError::new(&e));
        let meta = db.open_tree("raft").map_err(read_err)?;
        let snapshots = Folder::open(snapshots).map_err(snapshot_err)?;
        move_legacy_snapshot(db, &meta, &snapshots).map_err(snapshot_err)?;
        let name = meta
            .get(STATE_TREE)
            .map_err(read_err)?
            .map_or_else(|| STATE_TREES[0].to_vec(), |n| n.to_vec());
        // The other one is what a crash left of an install that never swapped in.
        for other in STATE_TREES.into_iter().filter(|n| *n != name.as_slice()) {
            db.drop_tree(other).map_err(write_err)?;
        }
        let tree = db.open_tree(&name).map_err(read_err)?;
        let clean = tree
            .contains_key(CLEAN)
            .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
        let (applied_tx, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            db: db.clone(),
            tree: RwLock::new(tree),
            meta,
            applied: applied_tx,
            clock_ms: AtomicU64::new(0),
            freeze: Mutex::new(None),
            generations: AtomicU64::new(0),
            snapshot_lock: tokio::sync::Mutex::new(()),
            snapshots,
            marked_clean: std::sync::atomic::AtomicBool::new(clean),
            #[cfg(test)]
            recorded: Mutex::new(None),
        });
        let ((mut applied, mut membership), mut clock) = shared.read_state()?;
        if clean {
            // Saves of a snapshot build the stop interrupted are garbage now.
            let tree = shared.tree();
            for item in tree.scan_prefix(b"u") {
                let (key, _) = item.map_err(read_err)?;
                tree.remove(key).map_err(write_err)?;
            }
        } else if !shared.tree().is_empty() {
            // No clean stop: whatever prefix of the last writes sled recovered is not to be
            // trusted. Back to the last snapshot; Raft replays the log after it.
            match shared.snapshots.read().map_err(snapshot_err)? {
                Some((meta, pairs)) => {
                    let signature = Some(meta.signature());
                    shared
                        .replace_state(pairs, &meta, || Ok(()))
                        .map_err(|e| StorageIOError::read_snapshot(signature, AnyError::new(&e)))?;
                    (applied, membership) = (meta.last_log_id, meta.last_membership);
                    clock = shared.clock_ms();
                }
                None => {
                    shared.tree().clear().map_err(write_err)?;
                    (applied, membership, clock) = (None, StoredMembership::default(), 0);
                }
            }
            tracing::info!(
                from = applied.map_or(0, |l| l.index),
                "no clean stop recorded: the state machine restarts from its last snapshot and replays the log"
            );
        }
        shared.clock_ms.store(clock, Ordering::Release);
        shared
            .applied
            .send_replace(applied.map(|l| l.index).unwrap_or(0));
        Ok((
            Self {
                shared: Arc::clone(&shared),
                membership,
                applied,
            },
            shared,
        ))
    }

    /// The stored snapshot, to send.
    async fn current(shared: &Shared) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let current = shared
            .snapshots
            .open_current()
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
        Ok(current.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}

/// Moves the snapshot a data folder from before snapshot files kept in the `raft` tree into a
/// file (an interrupted move is done again: the file is written whole or not at all).
fn move_legacy_snapshot(db: &sled::Db, meta: &sled::Tree, folder: &Folder) -> io::Result<()> {
    let Some(bytes) = meta.get(LEGACY_SNAPSHOT)? else {
        return Ok(());
    };
    if !folder.exists() {
        let invalid = |e: postcard::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let stored: StoredSnapshot = postcard::from_bytes(&bytes).map_err(invalid)?;
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = postcard::from_bytes(&stored.data).map_err(invalid)?;
        let mut file = folder.build(&stored.meta)?;
        for (key, value) in &pairs {
            file.push(key, value)?;
        }
        file.finish()?;
    }
    meta.remove(LEGACY_SNAPSHOT)?;
    db.flush()?;
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> StorageResult<AppliedState> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Responses>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let response = self
                .shared
                .apply_one(entry, &mut self.membership)
                .map_err(|e| StorageIOError::apply(log_id, AnyError::new(&e)))?;
            self.applied = Some(log_id);
            responses.push(response);
        }
        if let Some(log_id) = self.applied {
            self.shared
                .applied_up_to(log_id)
                .map_err(|e| StorageIOError::apply(log_id, AnyError::new(&e)))?;
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        // Called between two applies: freezing here makes the snapshot the state at `applied`.
        let generation = self.shared.generations.fetch_add(1, Ordering::Relaxed) + 1;
        *self
            .shared
            .freeze
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(generation);
        Builder {
            shared: Arc::clone(&self.shared),
            generation,
            applied: self.applied,
            clock_ms: self.shared.clock_ms(),
            membership: self.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<SnapshotFile>> {
        let file = self
            .shared
            .snapshots
            .receive()
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        mut snapshot: Box<SnapshotFile>,
    ) -> StorageResult<()> {
        let shared = Arc::clone(&self.shared);
        let _building = shared.snapshot_lock.lock().await;
        // A build asked for before this install must not snapshot the state it replaces.
        *shared.freeze.lock().unwrap_or_else(PoisonError::into_inner) = None;
        let signature = Some(meta.signature());
        let error =
            |e: io::Error| StorageIOError::write_snapshot(signature.clone(), AnyError::new(&e));
        let pairs = shared
            .snapshots
            .received(&mut snapshot, meta)
            .await
            .map_err(error)?;
        // The received file becomes the stored snapshot once the tree it fills is whole (see
        // `replace_state`).
        let started = std::time::Instant::now();
        shared
            .replace_state(pairs, meta, || shared.snapshots.install(&mut snapshot))
            .map_err(error)?;
        tracing::info!(
            index = meta.last_log_id.map(|l| l.index).unwrap_or(0),
            ms = started.elapsed().as_millis() as u64,
            "raft snapshot installed"
        );
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Self::current(&self.shared).await
    }
}

impl crate::net::Records for Shared {
    fn cluster_id(&self) -> Option<u64> {
        Shared::cluster_id(self)
    }

    fn incarnation(&self, name: &str) -> Option<u64> {
        Shared::incarnation(self, name)
    }
}

/// Builds the snapshot of a frozen generation while writes go on.
pub(crate) struct Builder {
    shared: Arc<Shared>,
    generation: u64,
    applied: Option<LogId<NodeId>>,
    /// The clock as of `applied`.
    clock_ms: u64,
    membership: StoredMembership<NodeId, Member>,
}

impl Builder {
    /// Writes the frozen state into `file` pair by pair (nothing of it is held in memory).
    fn collect(&self, file: &mut crate::snapshot::Writer) -> io::Result<()> {
        let tree = self.shared.tree();
        let prefix = undo_prefix(self.generation);
        let saved = |key: &[u8]| -> sled::Result<Option<sled::IVec>> {
            let mut undo = prefix.clone();
            undo.extend_from_slice(key);
            tree.get(undo)
        };
        // The clock as of the freeze ...
        file.push(CLOCK, &self.clock_ms.to_be_bytes())?;
        // ... the live tree (records and expiry index: `d` up to `m`) ...
        let live = |key: &[u8]| key >= b"d".as_slice() && key < b"m".as_slice();
        for item in tree.range(b"d".to_vec()..b"m".to_vec()) {
            let (key, value) = item?;
            match saved(&key)? {
                Some(s) if s.first() == Some(&1) => file.push(&key, &s[1..])?,
                Some(_) => {}
                None => file.push(&key, &value)?,
            }
        }
        // ... then the keys removed since the freeze.
        for item in tree.scan_prefix(&prefix) {
            let (key, s) = item?;
            let original = &key[prefix.len()..];
            if s.first() != Some(&1) || (live(original) && tree.contains_key(original)?) {
                continue;
            }
            file.push(original, &s[1..])?;
        }
        Ok(())
    }

    fn thaw(&self) -> sled::Result<()> {
        {
            let mut frozen = self
                .shared
                .freeze
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *frozen == Some(self.generation) {
                *frozen = None;
            }
        }
        let tree = self.shared.tree();
        for item in tree.scan_prefix(undo_prefix(self.generation)) {
            tree.remove(item?.0)?;
        }
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let shared = Arc::clone(&self.shared);
        let _building = shared.snapshot_lock.lock().await;
        let still_frozen =
            *shared.freeze.lock().unwrap_or_else(PoisonError::into_inner) == Some(self.generation);
        if !still_frozen {
            // A snapshot from the leader was installed after this build was asked for: the
            // installed snapshot is newer than anything this build could make.
            if let Some(installed) = StateMachine::current(&shared).await? {
                return Ok(installed);
            }
        }
        let snapshot_id = match self.applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.generation),
            None => format!("--{}", self.generation),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let signature = Some(meta.signature());
        let error =
            |e: io::Error| StorageIOError::write_snapshot(signature.clone(), AnyError::new(&e));
        let started = std::time::Instant::now();
        let built = shared.snapshots.build(&meta).and_then(|mut file| {
            self.collect(&mut file)?;
            file.finish()
        });
        let thawed = self.thaw();
        let (pairs, bytes) = built.map_err(error)?;
        thawed.map_err(|e| StorageIOError::write_state_machine(AnyError::new(&e)))?;
        tracing::info!(
            index = self.applied.map(|l| l.index).unwrap_or(0),
            keys = pairs,
            bytes,
            ms = started.elapsed().as_millis() as u64,
            "raft snapshot built"
        );
        StateMachine::current(&shared)
            .await?
            .ok_or_else(|| error(io::ErrorKind::NotFound.into()).into())
    }
}

#[cfg(test)]
mod tests {
    //! Crash points of one `apply()`: every prefix of its sled writes, recovered, reopened and
    //! replayed, must give the tree the uncrashed apply gave.
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;
    use openraft::{CommittedLeaderId, EntryPayload};
    use proptest::prelude::*;
    use store_testkit::TempDir;

    use super::*;

    /// A replica's rows, applied index and clock.
    type State = (Vec<(Vec<u8>, Vec<u8>)>, u64, u64);

    fn entry(index: u64, stamp_ms: u64, commands: Vec<Command>) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(Request { stamp_ms, commands }),
        }
    }

    fn open(dir: &std::path::Path) -> (sled::Db, StateMachine, Arc<Shared>) {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .open()
            .unwrap();
        let (sm, shared) = StateMachine::open(&db, &dir.join("snapshots")).unwrap();
        (db, sm, shared)
    }

    /// What a replica's answers depend on: records, expiry index, applied index, clock.
    fn state(shared: &Shared) -> State {
        let rows = shared
            .tree()
            .range(b"d".to_vec()..b"m".to_vec())
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect();
        (rows, shared.applied_index(), shared.clock_ms())
    }

    /// Applies `entries[..first]` one by one (building a snapshot after `snapshot_at` of them,
    /// if given), then the rest in one `apply()` whose writes are returned.
    async fn run(
        sm: &mut StateMachine,
        shared: &Shared,
        entries: &[Entry<TypeConfig>],
        first: usize,
        snapshot_at: Option<usize>,
    ) -> Writes {
        for (i, e) in entries[..first].iter().enumerate() {
            sm.apply([e.clone()]).await.unwrap();
            if snapshot_at == Some(i + 1) {
                sm.get_snapshot_builder()
                    .await
                    .build_snapshot()
                    .await
                    .unwrap();
            }
        }
        *shared.recorded.lock().unwrap() = Some(Vec::new());
        sm.apply(entries[first..].to_vec()).await.unwrap();
        shared.recorded.lock().unwrap().take().unwrap()
    }

    /// For every prefix of the last apply's writes: a crash that recovered just that prefix,
    /// then a restart that replays the log after whatever the state machine says it has. Answers
    /// the prefixes whose replayed state differs from the uncrashed one; `trust` skips the
    /// discard of an unclean state (as the state machine did before it had one).
    async fn diverging_prefixes(
        entries: &[Entry<TypeConfig>],
        first: usize,
        snapshot_at: Option<usize>,
        trust: bool,
    ) -> Vec<usize> {
        let reference = TempDir::new("raft-sm-ref");
        let (_db, mut sm, shared) = open(reference.path());
        let writes = run(&mut sm, &shared, entries, first, snapshot_at).await;
        let expected = state(&shared);
        let mut diverging = Vec::new();
        for p in 0..=writes.len() {
            let dir = TempDir::new("raft-sm-crash");
            let (db, mut sm, shared) = open(dir.path());
            run(&mut sm, &shared, &entries[..first], first, snapshot_at).await;
            for (key, value) in &writes[..p] {
                match value {
                    Some(v) => shared.tree().insert(key, v.clone()).unwrap(),
                    None => shared.tree().remove(key).unwrap(),
                };
            }
            if trust {
                shared.mark_clean().unwrap();
            }
            drop((sm, shared));
            // What sled recovered is what this database holds; the state machine opens anew.
            let (mut sm, shared) = StateMachine::open(&db, &dir.path().join("snapshots")).unwrap();
            let (applied, _) = sm.applied_state().await.unwrap();
            let from = applied.map_or(0, |l| l.index);
            let rest: Vec<_> = entries
                .iter()
                .filter(|e| e.log_id.index > from)
                .cloned()
                .collect();
            sm.apply(rest).await.unwrap();
            if state(&shared) != expected {
                diverging.push(p);
            }
        }
        diverging
    }

    fn write(key: &str, ttl_ms: Option<u64>, condition: Cond) -> Command {
        Command::Write {
            key: key.to_owned(),
            value: Bytes::from(format!("{key}@{ttl_ms:?}")),
            ttl_ms,
            condition,
        }
    }

    /// The lock pattern: `if_absent` on a live key fails, then a cleanup in the same apply
    /// removes the key. Trusting a crashed prefix that holds the removal but not the applied
    /// index replays the `if_absent` onto an absent key, and it succeeds: that replica differs
    /// for good. Discarding the unclean state and replaying from the snapshot does not.
    #[tokio::test]
    async fn a_crash_inside_an_apply_replays_to_the_uncrashed_state() {
        let entries = vec![
            entry(1, 1_000, vec![write("lock", Some(50), Cond::IfAbsent)]),
            entry(2, 1_010, vec![write("lock", Some(50), Cond::IfAbsent)]),
            entry(
                3,
                1_100,
                vec![Command::Expire {
                    keys: vec![("lock".to_owned(), 1_050)],
                }],
            ),
        ];
        let trusted = diverging_prefixes(&entries, 1, None, true).await;
        assert!(
            !trusted.is_empty(),
            "a trusted crashed prefix should have diverged (the test would prove nothing)"
        );
        assert_eq!(
            diverging_prefixes(&entries, 1, None, false).await,
            Vec::<usize>::new()
        );
        assert_eq!(
            diverging_prefixes(&entries, 1, Some(1), false).await,
            Vec::<usize>::new()
        );
    }

    /// `n` keys `{prefix}00000`… written in entries of 256, from log index `first`.
    fn many(prefix: &str, n: usize, first: u64) -> Vec<Entry<TypeConfig>> {
        let writes: Vec<Command> = (0..n)
            .map(|i| write(&format!("{prefix}{i:05}"), None, Cond::Always))
            .collect();
        writes
            .chunks(256)
            .enumerate()
            .map(|(i, chunk)| entry(first + i as u64, 1_000, chunk.to_vec()))
            .collect()
    }

    /// A reader scanning the whole state while a snapshot is installed sees the old state whole
    /// or the new one whole, never a tree half emptied or half filled; after a reopen, the
    /// installed state is the one in use.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_sees_the_state_before_or_after_an_install_never_between() {
        const N: usize = 20_000;
        let source_dir = TempDir::new("raft-sm-source");
        let (_source_db, mut source, _) = open(source_dir.path());
        source.apply(many("b", N, 1)).await.unwrap();
        let snapshot = source
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let dir = TempDir::new("raft-sm-install");
        let (db, mut sm, shared) = open(dir.path());
        sm.apply(many("a", N, 1)).await.unwrap();

        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (scanning, scanned) = std::sync::mpsc::channel();
        let reader = {
            let (shared, done) = (Arc::clone(&shared), Arc::clone(&done));
            std::thread::spawn(move || {
                let (mut old, mut new, mut torn) = (0, 0, Vec::new());
                loop {
                    let _ = scanning.send(());
                    let finished = done.load(Ordering::SeqCst);
                    let rows = shared.scan("", "", false, 2 * N, 2_000).unwrap();
                    let a = rows.iter().filter(|(k, _)| k.starts_with('a')).count();
                    let b = rows.iter().filter(|(k, _)| k.starts_with('b')).count();
                    match (a, b) {
                        (N, 0) => old += 1,
                        (0, N) => new += 1,
                        other => torn.push(other),
                    }
                    if finished {
                        return (old, new, torn);
                    }
                }
            })
        };
        // The reader is scanning before the install begins.
        scanned.recv().unwrap();
        scanned.recv().unwrap();
        sm.install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        done.store(true, Ordering::SeqCst);
        let (old, new, torn) = reader.join().unwrap();
        assert!(torn.is_empty(), "torn reads (a keys, b keys): {torn:?}");
        assert!(old > 0 && new > 0, "old {old}, new {new}");

        shared.mark_clean().unwrap();
        drop((sm, shared));
        let (_sm, shared) = StateMachine::open(&db, &dir.path().join("snapshots")).unwrap();
        let rows = shared.scan("", "", false, 2 * N, 2_000).unwrap();
        assert_eq!(rows.len(), N);
        assert!(rows.iter().all(|(k, _)| k.starts_with('b')));
        assert_eq!(db.tree_names().len(), 3, "default, raft and one state tree");
    }

    /// A data folder from before snapshot files: its snapshot, kept in the `raft` tree, moves
    /// to the snapshots folder at open, and an unclean open rebuilds from it.
    #[tokio::test]
    async fn a_snapshot_kept_in_sled_moves_to_a_file_and_rebuilds_an_unclean_state() {
        let dir = TempDir::new("raft-sm-legacy");
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let record = Record::encode(3, None, b"kept");
        let pairs = vec![
            (CLOCK.to_vec(), 1_234u64.to_be_bytes().to_vec()),
            (data_key("app:k"), record),
        ];
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 0), 3)),
            last_membership: StoredMembership::default(),
            snapshot_id: "legacy".to_owned(),
        };
        let legacy = StoredSnapshot {
            meta,
            data: postcard::to_allocvec(&pairs).unwrap(),
        };
        let raft = db.open_tree("raft").unwrap();
        raft.insert(LEGACY_SNAPSHOT, postcard::to_allocvec(&legacy).unwrap())
            .unwrap();
        // A state tree with no clean-stop marker: rebuilt from the snapshot.
        db.open_tree(STATE_TREES[0])
            .unwrap()
            .insert(data_key("app:stale"), Record::encode(9, None, b"x"))
            .unwrap();
        let (mut sm, shared) = StateMachine::open(&db, &dir.path().join("snapshots")).unwrap();
        assert!(raft.get(LEGACY_SNAPSHOT).unwrap().is_none());
        assert_eq!(shared.get("app:k").unwrap().unwrap().value, b"kept");
        assert!(shared.get("app:stale").unwrap().is_none());
        assert_eq!((shared.applied_index(), shared.clock_ms()), (3, 1_234));
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.snapshot_id, "legacy");
    }

    fn command() -> impl Strategy<Value = Command> {
        let key = prop::sample::select(vec!["a", "b", "c"]);
        prop_oneof![
            (key.clone(), prop::option::of(1u64..40), 0..3u8, 1u64..8).prop_map(
                |(k, ttl, c, v)| {
                    let condition = match c {
                        0 => Cond::Always,
                        1 => Cond::IfAbsent,
                        _ => Cond::IfVersion(v),
                    };
                    write(k, ttl, condition)
                }
            ),
            key.clone()
                .prop_map(|k| Command::Delete { key: k.to_owned() }),
            (key, 0u64..120).prop_map(|(k, d)| Command::Expire {
                keys: vec![(k.to_owned(), 1_000 + d)],
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Random entries (writes with and without TTL and conditions, deletes, cleanups),
        /// with a snapshot somewhere or none, and a crash at every write of the last apply.
        #[test]
        fn every_crash_point_of_an_apply_replays_to_the_uncrashed_state(
            batches in prop::collection::vec(prop::collection::vec(command(), 1..4), 2..7),
            split in 0usize..6,
            snapshot in prop::option::of(1usize..5),
        ) {
            let entries: Vec<_> = batches
                .into_iter()
                .enumerate()
                .map(|(i, commands)| entry(i as u64 + 1, 1_000 + 15 * i as u64, commands))
                .collect();
            let first = split.min(entries.len() - 1);
            let snapshot_at = snapshot.filter(|s| *s <= first);
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let diverging =
                runtime.block_on(diverging_prefixes(&entries, first, snapshot_at, false));
            prop_assert!(diverging.is_empty(), "crash prefixes {diverging:?} diverged");
        }
    }
}
