//! The replicated state of one node: every namespace's registers, the per-shard digests that
//! anti-entropy compares, the tombstones waiting for acknowledgement, and the expiry index.
//!
//! Lock order: a namespace's map, then a shard. Nothing takes a map while holding a shard.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use crdts::LWWReg;
use serde::{Deserialize, Serialize};

use crate::hlc::{Hlc, HlcClock};

/// How many shards the key space is cut into for anti-entropy: a digest exchange sends one
/// `u64` per shard (4 KiB), and a difference costs the keys of the shards that differ.
pub const SHARDS: usize = 512;

/// A register's value: bytes with their absolute deadline, or a tombstone (`value: None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    /// The value, or `None` for a delete.
    pub value: Option<Bytes>,
    /// Unix epoch ms from which the value is absent; `None` = never.
    pub expires_at: Option<u64>,
}

impl Cell {
    /// A tombstone.
    pub const TOMBSTONE: Cell = Cell {
        value: None,
        expires_at: None,
    };

    /// The value, if it is live at `now_ms`.
    pub fn live(&self, now_ms: u64) -> Option<&Bytes> {
        self.value
            .as_ref()
            .filter(|_| self.expires_at.is_none_or(|d| now_ms < d))
    }
}

/// The last-writer-wins register of one key.
pub type Reg = LWWReg<Cell, Hlc>;

/// One stored key.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// Its register.
    pub reg: Reg,
    /// [`key_hash`] of the namespace and key, kept to find its shard without hashing again.
    hash: u64,
}

#[derive(Debug, Default)]
struct SpaceData {
    /// Point reads and writes: hashing beats comparing keys down a tree.
    map: HashMap<Arc<str>, Slot>,
    /// Every key of `map`, ordered for `list`.
    order: BTreeSet<Arc<str>>,
    /// `(deadline, key)` of every live value with a deadline.
    expiry: BTreeSet<(u64, Arc<str>)>,
    /// Values (not tombstones) held, and the bytes of their keys and values.
    values: u64,
    bytes: u64,
}

impl SpaceData {
    fn remove(&mut self, key: &str) {
        self.map.remove(key);
        self.order.remove(key);
    }

    fn count(&mut self, key: &str, cell: &Cell, sign: i64) {
        if let Some(v) = &cell.value {
            let bytes = (key.len() + v.len()) as u64;
            if sign > 0 {
                self.values += 1;
                self.bytes += bytes;
            } else {
                self.values = self.values.saturating_sub(1);
                self.bytes = self.bytes.saturating_sub(bytes);
            }
        }
    }
}

/// How many parts a namespace's keys are spread over (by key hash), each behind its own lock,
/// so operations on different keys rarely meet.
const PARTS: usize = 16;

/// Keeps each part's lock on its own cache lines so two cores never fight over one line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// One namespace's keys.
#[derive(Debug)]
pub(crate) struct Space {
    name: Arc<str>,
    parts: Box<[Padded<RwLock<SpaceData>>]>,
}

impl Space {
    /// The namespace.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The part holding the key with this [`key_hash`].
    fn part(&self, hash: u64) -> &RwLock<SpaceData> {
        // The high bits: the low ones choose the digest shard.
        &self.parts[(hash >> 40) as usize % PARTS].0
    }

    fn part_of(&self, key: &str) -> (u64, &RwLock<SpaceData>) {
        let hash = key_hash(&self.name, key);
        (hash, self.part(hash))
    }
}

/// A tombstone waiting to be collected, in the order it arrived in its shard.
#[derive(Debug)]
struct Tomb {
    seq: u64,
    at_ms: u64,
    space: Arc<Space>,
    key: Arc<str>,
    hlc: Hlc,
}

#[derive(Debug, Default)]
struct Shard {
    /// XOR of [`entry_digest`] over the shard's registers (values and tombstones alike).
    digest: u64,
    /// Counts every change of the shard: a peer that matched the digest at `seq` holds
    /// every register that arrived here at or before it.
    seq: u64,
    tombs: VecDeque<Tomb>,
}

/// What a peer is known to hold.
#[derive(Debug)]
struct Peer {
    /// Per shard: this node's `seq` when the peer's digest last equalled ours.
    synced: Box<[u64]>,
    last_seen_ms: u64,
}

/// Everything a node replicates.
#[derive(Debug)]
pub(crate) struct State {
    spaces: RwLock<HashMap<Arc<str>, Arc<Space>>>,
    shards: Box<[Mutex<Shard>]>,
    peers: Mutex<HashMap<String, Peer>>,
    /// Tombstones collected lately, by key hash: a peer that has not collected its copy yet
    /// sends it back, and an older value of the key may still be on its way.
    collected: Mutex<HashMap<u64, Collected>>,
    /// The node's hybrid logical clock.
    pub hlc: HlcClock,
}

#[derive(Debug)]
struct Collected {
    ns: Arc<str>,
    key: Box<str>,
    hlc: Hlc,
    at_ms: u64,
}

/// One register on the wire or on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Update {
    /// Namespace.
    pub ns: String,
    /// Key within it.
    pub key: String,
    /// The register.
    pub reg: Reg,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

/// FNV-1a over the parts (each followed by a 0xff separator, a byte UTF-8 never holds), then
/// the splitmix64 finaliser: stable across builds and machines, unlike std's hasher.
pub(crate) fn hash_bytes(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The hash that places a key in its shard.
pub(crate) fn key_hash(ns: &str, key: &str) -> u64 {
    hash_bytes(&[ns.as_bytes(), key.as_bytes()])
}

/// The shard of a key hash.
pub(crate) fn shard_of(hash: u64) -> usize {
    (hash % SHARDS as u64) as usize
}

/// One register's share of its shard digest: the key and the write that produced it. The
/// content is left out on purpose: a value and the tombstone it becomes once expired are the
/// same write, so they compare equal.
fn entry_digest(hash: u64, hlc: &Hlc) -> u64 {
    mix(hash ^ mix(hlc.ms ^ (u64::from(hlc.logical) << 48)) ^ mix(hlc.node).rotate_left(17))
}

/// What a merge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Merged {
    /// The register was later than what the node held, and replaced it.
    Changed,
    /// It was not later (or a tombstone past the retention).
    Unchanged,
    /// It is a tombstone (or an older write) this node collected lately.
    Collected,
}

/// What a local write did.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    /// The register now stored.
    pub reg: Reg,
    /// Whether the key held a live value before.
    pub was_live: bool,
}

impl State {
    /// An empty state for the node whose id is `node`.
    pub(crate) fn new(node: u64) -> Self {
        Self {
            spaces: RwLock::new(HashMap::new()),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            peers: Mutex::new(HashMap::new()),
            collected: Mutex::new(HashMap::new()),
            hlc: HlcClock::new(node),
        }
    }

    /// The namespace `name`, created empty on first use.
    pub(crate) fn space(&self, name: &str) -> Arc<Space> {
        if let Some(space) = read(&self.spaces).get(name) {
            return Arc::clone(space);
        }
        let mut spaces = write(&self.spaces);
        Arc::clone(spaces.entry(Arc::from(name)).or_insert_with(|| {
            Arc::new(Space {
                name: Arc::from(name),
                parts: (0..PARTS).map(|_| Padded::default()).collect(),
            })
        }))
    }

    /// Every namespace.
    pub(crate) fn spaces(&self) -> Vec<Arc<Space>> {
        read(&self.spaces).values().cloned().collect()
    }

    /// The register of `key`, whatever its state.
    pub(crate) fn register(&self, space: &Space, key: &str) -> Option<Reg> {
        read(space.part_of(key).1)
            .map
            .get(key)
            .map(|s| s.reg.clone())
    }

    /// Applies `f` to the value of `key` if it is live, under the read lock; `now_ms` is read
    /// only for a value with a deadline.
    pub(crate) fn with_live<R>(
        &self,
        space: &Space,
        key: &str,
        now_ms: impl FnOnce() -> u64,
        f: impl FnOnce(&Bytes, &Reg) -> R,
    ) -> Option<R> {
        let data = read(space.part_of(key).1);
        let slot = data.map.get(key)?;
        let value = slot.reg.val.value.as_ref()?;
        match slot.reg.val.expires_at {
            Some(deadline) if now_ms() >= deadline => None,
            _ => Some(f(value, &slot.reg)),
        }
    }

    /// Live registers of `space` whose keys start with `prefix`, from `start` (excluded when
    /// `exclusive`), at most `limit + 1` of them.
    pub(crate) fn scan(
        &self,
        space: &Space,
        prefix: &str,
        start: &str,
        exclusive: bool,
        limit: usize,
        now_ms: u64,
    ) -> Vec<(String, Reg)> {
        let lower = if exclusive {
            Bound::Excluded(start)
        } else {
            Bound::Included(start)
        };
        let wanted = limit.saturating_add(1);
        // Each part's first `wanted` matches, merged: every part is read under its own lock
        // in turn, so a page is ordered but not one instant's snapshot of the namespace.
        let mut found: Vec<(String, Reg)> = Vec::new();
        for part in space.parts.iter() {
            let data = read(&part.0);
            found.extend(
                data.order
                    .range::<str, _>((lower, Bound::Unbounded))
                    .take_while(|k| k.starts_with(prefix))
                    .filter_map(|k| data.map.get(&**k).map(|s| (k, s)))
                    .filter(|(_, s)| s.reg.val.live(now_ms).is_some())
                    .take(wanted)
                    .map(|(k, s)| (k.to_string(), s.reg.clone())),
            );
        }
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        found.truncate(wanted);
        found
    }

    /// A local write at wall-clock `now_ms`: stamps the next clock reading and stores `cell`
    /// (a tombstone to delete). Deleting a key that is already a tombstone writes nothing.
    pub(crate) fn write_local(
        &self,
        space: &Arc<Space>,
        key: &str,
        cell: Cell,
        now_ms: u64,
    ) -> Written {
        let (hash, part) = space.part_of(key);
        let mut data = write(part);
        let current = data.map.get(key);
        let was_live = current.is_some_and(|s| s.reg.val.live(now_ms).is_some());
        if cell.value.is_none()
            && let Some(slot) = current.filter(|s| s.reg.val.value.is_none())
        {
            return Written {
                reg: slot.reg.clone(),
                was_live,
            };
        }
        let reg = Reg {
            val: cell,
            marker: self.hlc.tick(now_ms),
        };
        self.store(&mut data, space, key, hash, reg.clone(), now_ms);
        Written { reg, was_live }
    }

    /// Merges a register from a peer (or a snapshot): keeps the later write. A write no later
    /// than a tombstone collected here lately is refused ([`Merged::Collected`]: the sender may
    /// collect its copy too), and so is a tombstone older than `retention_ms` (when set) of a
    /// key this node does not hold.
    pub(crate) fn merge(
        &self,
        space: &Arc<Space>,
        key: &str,
        reg: Reg,
        now_ms: u64,
        retention_ms: u64,
    ) -> Merged {
        self.hlc.observe(&reg.marker);
        let (hash, part) = space.part_of(key);
        let mut data = write(part);
        match data.map.get(key) {
            Some(slot) if slot.reg.marker >= reg.marker => return Merged::Unchanged,
            Some(_) => {}
            None => {
                if self.was_collected(&space.name, key, &reg.marker) {
                    return Merged::Collected;
                }
                let stale_tombstone = reg.val.value.is_none()
                    && retention_ms > 0
                    && reg.marker.ms.saturating_add(retention_ms) <= now_ms;
                if stale_tombstone {
                    return Merged::Unchanged;
                }
            }
        }
        self.store(&mut data, space, key, hash, reg, now_ms);
        Merged::Changed
    }

    /// A peer collected the tombstone `hlc` of `key`, so every member acknowledged it: this
    /// node may drop its copy too. Returns whether it did.
    pub(crate) fn peer_collected(&self, space: &Space, key: &str, hlc: &Hlc, now_ms: u64) -> bool {
        let mut data = write(space.part_of(key).1);
        let Some(slot) = data.map.get(key) else {
            return false;
        };
        if slot.reg.marker != *hlc || slot.reg.val.value.is_some() {
            return false;
        }
        let hash = slot.hash;
        data.remove(key);
        self.forget(space, key, hash, *hlc, now_ms);
        true
    }

    /// After removing the tombstone `hlc` of `key`: takes it out of the digest and remembers it.
    fn forget(&self, space: &Space, key: &str, hash: u64, hlc: Hlc, now_ms: u64) {
        lock(&self.shards[shard_of(hash)]).digest ^= entry_digest(hash, &hlc);
        lock(&self.collected).insert(
            hash,
            Collected {
                ns: Arc::clone(&space.name),
                key: key.into(),
                hlc,
                at_ms: now_ms,
            },
        );
    }

    fn was_collected(&self, ns: &str, key: &str, hlc: &Hlc) -> bool {
        let collected = lock(&self.collected);
        if collected.is_empty() {
            return false;
        }
        collected
            .get(&key_hash(ns, key))
            .is_some_and(|c| &*c.ns == ns && &*c.key == key && *hlc <= c.hlc)
    }

    /// Stores `reg` over whatever `key` held (the caller checked it is later), keeping the
    /// expiry index, the shard digest and the tombstone queue in step.
    fn store(
        &self,
        data: &mut SpaceData,
        space: &Arc<Space>,
        key: &str,
        hash: u64,
        reg: Reg,
        now_ms: u64,
    ) {
        let (old, shared_key) = match data.map.get_key_value(key) {
            Some((k, _)) => {
                let k = Arc::clone(k);
                let slot = data.map.get_mut(key);
                (slot.map(|s| std::mem::replace(&mut s.reg, reg.clone())), k)
            }
            None => {
                let k: Arc<str> = Arc::from(key);
                data.map.insert(
                    Arc::clone(&k),
                    Slot {
                        reg: reg.clone(),
                        hash,
                    },
                );
                data.order.insert(Arc::clone(&k));
                (None, k)
            }
        };
        if let Some(old) = &old {
            data.count(key, &old.val, -1);
        }
        data.count(key, &reg.val, 1);
        if let Some(deadline) = old
            .as_ref()
            .filter(|o| o.val.value.is_some())
            .and_then(|o| o.val.expires_at)
        {
            data.expiry.remove(&(deadline, Arc::clone(&shared_key)));
        }
        if let (Some(_), Some(deadline)) = (&reg.val.value, reg.val.expires_at) {
            data.expiry.insert((deadline, Arc::clone(&shared_key)));
        }
        let mut shard = lock(&self.shards[shard_of(hash)]);
        if let Some(old) = &old {
            shard.digest ^= entry_digest(hash, &old.marker);
        }
        shard.digest ^= entry_digest(hash, &reg.marker);
        shard.seq += 1;
        if reg.val.value.is_none() {
            let seq = shard.seq;
            shard.tombs.push_back(Tomb {
                seq,
                at_ms: now_ms,
                space: Arc::clone(space),
                key: shared_key,
                hlc: reg.marker,
            });
        }
    }

    /// Turns values whose deadline passed by `now_ms` into tombstones of the same write (so
    /// digests do not change), at most `max` of them. Returns how many.
    pub(crate) fn expire(&self, now_ms: u64, max: usize) -> usize {
        let mut done = 0;
        for space in self.spaces() {
            for part in space.parts.iter() {
                let mut data = write(&part.0);
                while done < max {
                    let Some((deadline, key)) = data.expiry.first().cloned() else {
                        break;
                    };
                    if deadline > now_ms {
                        break;
                    }
                    data.expiry.pop_first();
                    let Some(slot) = data.map.get_mut(&key) else {
                        continue;
                    };
                    let old = std::mem::replace(&mut slot.reg.val, Cell::TOMBSTONE);
                    let (hash, hlc) = (slot.hash, slot.reg.marker);
                    data.count(&key, &old, -1);
                    let mut shard = lock(&self.shards[shard_of(hash)]);
                    shard.seq += 1;
                    let seq = shard.seq;
                    shard.tombs.push_back(Tomb {
                        seq,
                        at_ms: now_ms,
                        space: Arc::clone(&space),
                        key,
                        hlc,
                    });
                    done += 1;
                }
            }
        }
        done
    }

    /// Every shard's digest.
    pub(crate) fn digests(&self) -> Vec<u64> {
        self.shards.iter().map(|s| lock(s).digest).collect()
    }

    /// Compares a peer's digests with ours: records, for every equal shard, that the peer
    /// holds everything this node holds there; returns the shards that differ.
    pub(crate) fn compare(&self, peer: &str, theirs: &[u64], now_ms: u64) -> Vec<u16> {
        let mut differ = Vec::new();
        let mut synced = vec![0; SHARDS];
        for (i, shard) in self.shards.iter().enumerate() {
            let shard = lock(shard);
            if theirs.get(i) == Some(&shard.digest) {
                synced[i] = shard.seq;
            } else {
                differ.push(i as u16);
            }
        }
        let mut peers = lock(&self.peers);
        let entry = peers.entry(peer.to_owned()).or_insert_with(|| Peer {
            synced: vec![0; SHARDS].into_boxed_slice(),
            last_seen_ms: now_ms,
        });
        entry.last_seen_ms = now_ms;
        for (i, seq) in synced.into_iter().enumerate() {
            if seq > 0 {
                entry.synced[i] = entry.synced[i].max(seq);
            }
        }
        differ
    }

    /// Notes a member (by name) whose acknowledgement tombstones must wait for.
    pub(crate) fn note_member(&self, peer: &str, now_ms: u64) {
        let mut peers = lock(&self.peers);
        peers
            .entry(peer.to_owned())
            .or_insert_with(|| Peer {
                synced: vec![0; SHARDS].into_boxed_slice(),
                last_seen_ms: now_ms,
            })
            .last_seen_ms = now_ms;
    }

    /// The members tombstones wait for, by name.
    pub(crate) fn members(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.peers).keys().cloned().collect();
        names.sort();
        names
    }

    /// Collects tombstones every remembered member acknowledged, and (when `retention` is
    /// set) those that arrived at least `retention` ago. Members not seen for `retention` are
    /// forgotten first. Returns how many tombstones were dropped.
    pub(crate) fn collect(&self, now_ms: u64, retention_ms: u64, grace_ms: u64) -> usize {
        lock(&self.collected).retain(|_, c| c.at_ms.saturating_add(grace_ms) > now_ms);
        let watermarks: Vec<u64> = {
            let mut peers = lock(&self.peers);
            if retention_ms > 0 {
                peers.retain(|_, p| p.last_seen_ms.saturating_add(retention_ms) > now_ms);
            }
            (0..SHARDS)
                .map(|i| {
                    peers
                        .values()
                        .map(|p| p.synced[i])
                        .min()
                        .unwrap_or(u64::MAX)
                })
                .collect()
        };
        let mut dropped = 0;
        for (i, shard) in self.shards.iter().enumerate() {
            let due: Vec<Tomb> = {
                let mut shard = lock(shard);
                let mut due = Vec::new();
                while let Some(t) = shard.tombs.front() {
                    let acked = t.seq <= watermarks[i];
                    let old = retention_ms > 0 && t.at_ms.saturating_add(retention_ms) <= now_ms;
                    if !(acked || old) {
                        break;
                    }
                    due.extend(shard.tombs.pop_front());
                }
                due
            };
            for t in due {
                let mut data = write(t.space.part_of(&t.key).1);
                let Some(slot) = data.map.get(&*t.key) else {
                    continue;
                };
                if slot.reg.marker != t.hlc || slot.reg.val.value.is_some() {
                    continue;
                }
                let hash = slot.hash;
                data.remove(&t.key);
                self.forget(&t.space, &t.key, hash, t.hlc, now_ms);
                dropped += 1;
            }
        }
        dropped
    }

    /// Every register (tombstones included) of the given shards, or of every shard.
    pub(crate) fn export(&self, shards: Option<&[u16]>, spaces: Option<&[String]>) -> Vec<Update> {
        let mut out = Vec::new();
        let _ = self.each(shards, spaces, |ns, key, reg| {
            out.push(Update {
                ns: ns.to_owned(),
                key: key.to_owned(),
                reg: reg.clone(),
            });
            Ok::<(), std::convert::Infallible>(())
        });
        out
    }

    /// Calls `f` with every register (tombstones included) of the given shards (or of every
    /// shard) of the given namespaces (or of all), one part of a namespace at a time under its
    /// read lock; stops at `f`'s first error.
    pub(crate) fn each<E>(
        &self,
        shards: Option<&[u16]>,
        spaces: Option<&[String]>,
        mut f: impl FnMut(&str, &str, &Reg) -> Result<(), E>,
    ) -> Result<(), E> {
        let wanted: Option<Vec<bool>> = shards.map(|list| {
            let mut w = vec![false; SHARDS];
            for s in list {
                if let Some(slot) = w.get_mut(usize::from(*s)) {
                    *slot = true;
                }
            }
            w
        });
        for space in self.spaces() {
            if spaces.is_some_and(|names| !names.iter().any(|n| **n == *space.name)) {
                continue;
            }
            for part in space.parts.iter() {
                let data = read(&part.0);
                for (key, slot) in &data.map {
                    if wanted.as_ref().is_none_or(|w| w[shard_of(slot.hash)]) {
                        f(&space.name, key, &slot.reg)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A number that changes whenever the state does (the sum of the shards' change counts).
    pub(crate) fn version(&self) -> u64 {
        self.shards.iter().map(|s| lock(s).seq).sum()
    }

    /// How many tombstones wait for collection.
    pub(crate) fn tombstones(&self) -> usize {
        self.shards.iter().map(|s| lock(s).tombs.len()).sum()
    }

    /// Values stored in `space` (not tombstones; expired ones until cleanup turns them into
    /// tombstones) and the bytes of their keys and values.
    pub(crate) fn usage(&self, space: &Space) -> (u64, u64) {
        space.parts.iter().fold((0, 0), |(values, bytes), part| {
            let data = read(&part.0);
            (values + data.values, bytes + data.bytes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: &str) -> Cell {
        Cell {
            value: Some(Bytes::from(v.to_owned())),
            expires_at: None,
        }
    }

    #[test]
    fn equal_writes_give_equal_digests_in_any_order() {
        let a = State::new(1);
        let b = State::new(2);
        let sa = a.space("ns");
        let sb = b.space("ns");
        let w1 = a.write_local(&sa, "k", value("1"), 10).reg;
        let w2 = a.write_local(&sa, "k", value("2"), 11).reg;
        b.merge(&sb, "k", w2.clone(), 0, 0);
        b.merge(&sb, "k", w1, 0, 0);
        assert_eq!(a.digests(), b.digests());
        assert_eq!(b.register(&sb, "k"), Some(w2));
    }

    #[test]
    fn expiry_keeps_the_digest_and_queues_a_tombstone() {
        let s = State::new(1);
        let space = s.space("ns");
        let cell = Cell {
            value: Some(Bytes::from_static(b"v")),
            expires_at: Some(100),
        };
        s.write_local(&space, "k", cell, 10);
        let before = s.digests();
        assert_eq!(s.expire(99, 10), 0);
        assert_eq!(s.expire(100, 10), 1);
        assert_eq!(s.digests(), before);
        assert_eq!(s.tombstones(), 1);
        // A single node acknowledges alone: collected.
        assert_eq!(s.collect(100, 0, 0), 1);
        assert!(s.register(&space, "k").is_none());
    }

    #[test]
    fn a_tombstone_waits_for_every_member() {
        let s = State::new(1);
        let space = s.space("ns");
        s.note_member("n2", 0);
        s.write_local(&space, "k", value("v"), 10);
        s.write_local(&space, "k", Cell::TOMBSTONE, 11);
        assert_eq!(s.collect(20, 0, 0), 0, "n2 has not acknowledged");
        let differ = s.compare("n2", &vec![0; SHARDS], 20);
        assert!(!differ.is_empty());
        assert_eq!(s.collect(20, 0, 0), 0, "n2's digest differed");
        let ours = s.digests();
        assert!(s.compare("n2", &ours, 21).is_empty());
        assert_eq!(s.collect(21, 0, 0), 1);
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use crate::hlc::HlcClock;

        /// A write: key index and clock reading. Whether it deletes and what it writes are
        /// derived from the reading, since one reading is one write.
        fn writes() -> impl Strategy<Value = Vec<(u8, u64, u16, u64)>> {
            prop::collection::vec((0u8..6, 0u64..5, 0u16..3, 0u64..3), 1..40)
        }

        fn reg(ms: u64, logical: u16, node: u64, delete: bool) -> Reg {
            Reg {
                val: if delete {
                    Cell::TOMBSTONE
                } else {
                    Cell {
                        value: Some(Bytes::from(format!("{ms}.{logical}.{node}"))),
                        expires_at: ms.is_multiple_of(2).then_some(ms * 10),
                    }
                },
                marker: Hlc { ms, logical, node },
            }
        }

        fn state_after(order: &[(u8, u64, u16, u64)]) -> (Vec<u64>, Vec<Update>) {
            let s = State::new(99);
            let space = s.space("ns");
            for &(k, ms, logical, node) in order {
                let delete = (ms * 7 + u64::from(logical) * 3 + node) % 3 == 0;
                s.merge(
                    &space,
                    &format!("k{k}"),
                    reg(ms, logical, node, delete),
                    0,
                    0,
                );
            }
            let mut export = s.export(None, None);
            export.sort_by(|a, b| a.key.cmp(&b.key));
            (s.digests(), export)
        }

        proptest! {
            #[test]
            fn merging_in_any_order_with_duplicates_gives_one_state(
                writes in writes(),
                seed in any::<u64>(),
                dup in 0usize..40,
            ) {
                let expected = state_after(&writes);
                let mut shuffled = writes.clone();
                shuffled.push(writes[dup % writes.len()]);
                // A deterministic shuffle from the seed.
                let mut x = seed | 1;
                for i in (1..shuffled.len()).rev() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    shuffled.swap(i, (x % (i as u64 + 1)) as usize);
                }
                prop_assert_eq!(state_after(&shuffled), expected);
            }

            #[test]
            fn a_clock_never_goes_back_even_when_the_wall_clock_does(
                events in prop::collection::vec((0u64..10_000, prop::option::of((0u64..12_000, 0u16..2048))), 1..200),
            ) {
                let clock = HlcClock::new(1);
                let mut last = clock.tick(0);
                for (wall, seen) in events {
                    if let Some((ms, logical)) = seen {
                        let remote = Hlc { ms, logical, node: 2 };
                        clock.observe(&remote);
                        // A write after seeing a reading is later than it.
                        let next = clock.tick(wall);
                        prop_assert!(next > remote);
                        prop_assert!(next > last);
                        last = next;
                    }
                    let next = clock.tick(wall);
                    prop_assert!(next > last && next.version() > last.version());
                    last = next;
                }
            }
        }
    }
}
