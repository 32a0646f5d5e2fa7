//! The state machine, durable in sled (`sm` tree), and its snapshots.
//!
//! Key layout of the `sm` tree (first byte):
//! - `c`: the state machine's clock, the largest leader stamp applied so far;
//! - `d<physical key>`: a record: version (8 bytes), deadline (8 bytes, 0 = none), value;
//! - `e<deadline><physical key>`: the expiry index cleanup reads in deadline order;
//! - `m…`: the last applied log id and the membership;
//! - `u<generation><key>`: copy-on-write saves for the snapshot being built.
//!
//! An applied entry's writes go in key by key, its applied log id last (no sled batches: see
//! `log.rs`); after a crash Raft replays the log from the recovered applied id, and re-applying
//! an entry whose writes were partly recovered gives the same state (see
//! `Shared::write_in_order`).
//!
//! **Point-in-time snapshots without MVCC.** sled has no snapshot reads, so a snapshot freezes a
//! generation instead: from the moment the builder is taken (which Raft does between two
//! applies) until it finishes, the first write of each key also saves the key's previous value (or
//! its absence) under `u<generation><key>`, written before the key itself. The builder walks the
//! live tree and, for each key, reads the key and then its save, preferring the save; then it
//! adds the saved values of keys deleted since. Because the save goes in first, whichever side
//! of a write the walk sees, it ends with the value the key had at the freeze. Writes keep flowing during the build and cost
//! one extra read per key while a snapshot is being built.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::types::{Command, Cond, Member, NodeId, Request, Response, Responses, TypeConfig};

type StorageResult<T> = Result<T, StorageError<NodeId>>;
/// The last applied log id and the membership as of it.
type AppliedState = (Option<LogId<NodeId>>, StoredMembership<NodeId, Member>);

const CLOCK: &[u8] = b"c";
const APPLIED: &[u8] = b"m/applied";
const MEMBERSHIP: &[u8] = b"m/membership";
const SNAPSHOT: &[u8] = b"snapshot";

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

/// The snapshot as stored in the `raft` tree and sent to followers.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Member>,
    data: Vec<u8>,
}

/// The state shared by the state machine (applied by Raft), its snapshot builders and the read
/// path of every store view.
pub(crate) struct Shared {
    db: sled::Db,
    tree: sled::Tree,
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

    pub(crate) fn get(&self, physical: &str) -> sled::Result<Option<Record>> {
        Ok(self
            .tree
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
        for item in self.tree.range((lower, std::ops::Bound::Unbounded)) {
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
        for item in self
            .tree
            .range(b"e".to_vec()..expiry_key(now_ms.saturating_add(1), ""))
        {
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

    /// Replaces the whole state machine by a snapshot's pairs, key by key, the applied log id
    /// last (so an interrupted replacement is still behind its stored snapshot, and redone).
    fn replace_state(
        &self,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        meta: &SnapshotMeta<NodeId, Member>,
    ) -> sled::Result<()> {
        for item in self.tree.iter() {
            self.tree.remove(item?.0)?;
        }
        let mut clock = 0;
        for (key, value) in pairs {
            if key == CLOCK {
                clock = value
                    .as_slice()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
            }
            self.tree.insert(key, value)?;
        }
        self.tree
            .insert(MEMBERSHIP, encode(&meta.last_membership))?;
        self.tree.insert(APPLIED, encode(&meta.last_log_id))?;
        self.clock_ms.store(clock, Ordering::Release);
        self.applied
            .send_replace(meta.last_log_id.map(|l| l.index).unwrap_or(0));
        Ok(())
    }

    fn read_state(&self) -> StorageResult<AppliedState> {
        let read = |key: &[u8]| -> StorageResult<Option<sled::IVec>> {
            self.tree
                .get(key)
                .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)).into())
        };
        let applied = match read(APPLIED)? {
            Some(b) => postcard::from_bytes(&b)
                .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?,
            None => None,
        };
        let membership = match read(MEMBERSHIP)? {
            Some(b) => postcard::from_bytes(&b)
                .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
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
                self.write_in_order(vec![(MEMBERSHIP.to_vec(), Some(encode(&*membership)))])?;
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

    /// Records that every entry up to `log_id` is applied: the clock, then the applied log id.
    fn applied_up_to(&self, log_id: LogId<NodeId>) -> sled::Result<()> {
        self.write_in_order(vec![
            (CLOCK.to_vec(), Some(self.clock_ms().to_be_bytes().to_vec())),
            (APPLIED.to_vec(), Some(encode(&Some(log_id)))),
        ])
    }

    /// Writes `writes` one key at a time, in order, after saving for a snapshot being built the
    /// value each key had at its freeze.
    ///
    /// No sled batch (see `log.rs` for why). Instead the order carries the guarantees:
    /// - a save is written before the key it saves, so a snapshot builder that reads the key and
    ///   then its save always ends with the value at the freeze;
    /// - an entry's writes come before its applied log id, and re-applying an entry whose writes
    ///   were only partly recovered after a crash gives the same state: a write gets the same
    ///   version (its index) and deadline (from the stamp), a condition that now fails writes
    ///   nothing because the write is already there, deletes and cleanups are idempotent, and at
    ///   worst an expiry-index entry is left stale, which cleanup drops.
    fn write_in_order(&self, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> sled::Result<()> {
        let frozen = self.freeze.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(generation) = *frozen {
            let prefix = undo_prefix(generation);
            for (key, _) in &writes {
                if !matches!(key.first(), Some(b'c' | b'd' | b'e')) {
                    continue;
                }
                let mut undo = prefix.clone();
                undo.extend_from_slice(key);
                if self.tree.contains_key(&undo)? {
                    continue;
                }
                // A saved value is `1 + old value`, or `0` for "absent at the freeze".
                let saved = match self.tree.get(key)? {
                    Some(old) => [&[1u8][..], &old].concat(),
                    None => vec![0u8],
                };
                self.tree.insert(undo, saved)?;
            }
        }
        for (key, value) in writes {
            match value {
                Some(v) => self.tree.insert(key, v)?,
                None => self.tree.remove(key)?,
            };
        }
        drop(frozen);
        Ok(())
    }

    fn command(
        &self,
        index: u64,
        now: u64,
        command: Command,
        writes: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
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
                writes.push((
                    data_key(&key),
                    Some(Record::encode(index, expires_at, &value)),
                ));
                Response::Written {
                    version: index,
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
    pub(crate) fn open(db: &sled::Db) -> Result<(Self, Arc<Shared>), StorageError<NodeId>> {
        let tree = db
            .open_tree("sm")
            .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
        let meta = db
            .open_tree("raft")
            .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
        // Saves of a snapshot build a crash interrupted are garbage now.
        for item in tree.scan_prefix(b"u") {
            let (key, _) =
                item.map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
            tree.remove(key)
                .map_err(|e| StorageIOError::write_state_machine(AnyError::new(&e)))?;
        }
        let clock = tree
            .get(CLOCK)
            .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?
            .and_then(|b| b.as_ref().try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let (applied_tx, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            db: db.clone(),
            tree,
            meta,
            applied: applied_tx,
            clock_ms: AtomicU64::new(clock),
            freeze: Mutex::new(None),
            generations: AtomicU64::new(0),
            snapshot_lock: tokio::sync::Mutex::new(()),
        });
        let (mut applied, mut membership) = shared.read_state()?;
        if let Some(stored) = Self::stored(&shared)?
            && stored.meta.last_log_id > applied
        {
            // A snapshot install was interrupted: finish it.
            let signature = Some(stored.meta.signature());
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = postcard::from_bytes(&stored.data)
                .map_err(|e| StorageIOError::read_snapshot(signature.clone(), AnyError::new(&e)))?;
            shared
                .replace_state(pairs, &stored.meta)
                .map_err(|e| StorageIOError::write_snapshot(signature, AnyError::new(&e)))?;
            (applied, membership) = (stored.meta.last_log_id, stored.meta.last_membership);
        }
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

    fn stored(shared: &Shared) -> StorageResult<Option<StoredSnapshot>> {
        let Some(bytes) = shared
            .meta
            .get(SNAPSHOT)
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?
        else {
            return Ok(None);
        };
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)).into())
    }
}

async fn save_snapshot(shared: &Shared, snapshot: &StoredSnapshot) -> StorageResult<()> {
    let signature = Some(snapshot.meta.signature());
    let bytes = postcard::to_allocvec(snapshot)
        .map_err(|e| StorageIOError::write_snapshot(signature.clone(), AnyError::new(&e)))?;
    shared
        .meta
        .insert(SNAPSHOT, bytes)
        .map_err(|e| StorageIOError::write_snapshot(signature.clone(), AnyError::new(&e)))?;
    shared
        .db
        .flush_async()
        .await
        .map_err(|e| StorageIOError::write_snapshot(signature, AnyError::new(&e)))?;
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
            membership: self.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let shared = Arc::clone(&self.shared);
        let _building = shared.snapshot_lock.lock().await;
        // A build asked for before this install must not snapshot the state it replaces.
        *shared.freeze.lock().unwrap_or_else(PoisonError::into_inner) = None;
        let signature = Some(meta.signature());
        let data = snapshot.into_inner();
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = postcard::from_bytes(&data)
            .map_err(|e| StorageIOError::read_snapshot(signature.clone(), AnyError::new(&e)))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        // Durable first: if a crash interrupts the replacement below, `open` finds a stored
        // snapshot newer than the applied index and finishes the job.
        save_snapshot(&shared, &stored).await?;
        shared
            .replace_state(pairs, meta)
            .map_err(|e| StorageIOError::write_snapshot(signature, AnyError::new(&e)))?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(Self::stored(&self.shared)?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

/// Builds the snapshot of a frozen generation while writes go on.
pub(crate) struct Builder {
    shared: Arc<Shared>,
    generation: u64,
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
}

impl Builder {
    fn collect(&self) -> sled::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let tree = &self.shared.tree;
        let prefix = undo_prefix(self.generation);
        let saved = |key: &[u8]| -> sled::Result<Option<sled::IVec>> {
            let mut undo = prefix.clone();
            undo.extend_from_slice(key);
            tree.get(undo)
        };
        let mut out: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        // Live tree first (clock, records, expiry index: `c` up to `m`) ...
        for item in tree.range(b"c".to_vec()..b"m".to_vec()) {
            let (key, value) = item?;
            seen.insert(key.to_vec());
            match saved(&key)? {
                Some(s) if s.first() == Some(&1) => {
                    out.insert(key.to_vec(), s[1..].to_vec());
                }
                Some(_) => {}
                None => {
                    out.insert(key.to_vec(), value.to_vec());
                }
            }
        }
        // ... then the keys removed since the freeze.
        for item in tree.scan_prefix(&prefix) {
            let (key, s) = item?;
            let original = key[prefix.len()..].to_vec();
            if seen.contains(&original) || s.first() != Some(&1) {
                continue;
            }
            out.insert(original, s[1..].to_vec());
        }
        Ok(out.into_iter().collect())
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
        for item in self.shared.tree.scan_prefix(undo_prefix(self.generation)) {
            self.shared.tree.remove(item?.0)?;
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
            let installed = StateMachine::stored(&shared)?;
            if let Some(s) = installed {
                return Ok(Snapshot {
                    meta: s.meta,
                    snapshot: Box::new(Cursor::new(s.data)),
                });
            }
        }
        let collected = self.collect();
        let thawed = self.thaw();
        let pairs = collected.map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
        thawed.map_err(|e| StorageIOError::write_state_machine(AnyError::new(&e)))?;
        let data = postcard::to_allocvec(&pairs)
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        let snapshot_id = match self.applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.generation),
            None => format!("--{}", self.generation),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        save_snapshot(&shared, &stored).await?;
        tracing::info!(
            index = self.applied.map(|l| l.index).unwrap_or(0),
            keys = pairs.len(),
            bytes = stored.data.len(),
            "raft snapshot built"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}
