//! [`MemoryStore`]: sharded hash maps for point operations, per-shard ordered sets for `list`,
//! per-shard expiry indexes for cleanup.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::num::NonZeroU64;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use store_core::backend::{Periodic, owned, owned_slice, validate};
use store_core::{
    Backend, Capabilities, Clock, Condition, Consistency, Entry, Error, Lifecycle, ListOptions,
    Page, PutOptions, Result, SharedClock, Store, StoreInfo, Usage, from_millis, system_clock,
};

use crate::config::{Limits, MemoryConfig};

/// Number of shards; a power of two so a hash picks one with a mask.
const SHARDS: usize = 32;
/// Most expired entries removed per shard lock acquisition by the cleanup timer.
const PURGE_BATCH: usize = 1024;

/// A bounded, concurrent in-memory store with TTLs (`store.memory`).
///
/// Keys are spread over 32 shards, each behind its own `RwLock`, so operations on different keys
/// rarely contend and reads never block each other. Cloning is cheap and shares the data.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    limits: Limits,
    clock: SharedClock,
    shard_hasher: RandomState,
    shards: Box<[Padded<RwLock<Shard>>]>,
    /// Entries held, live or expired-but-not-yet-reclaimed. Never exceeds `max_size`.
    stored: AtomicUsize,
    /// Key and value bytes of those entries. Never exceeds `max_bytes`.
    bytes: AtomicUsize,
    /// The store-wide version counter; the next write gets this value.
    next_version: AtomicU64,
    cleanup: Periodic,
}

/// Keeps each shard's lock on its own cache lines so two cores never fight over one line.
#[repr(align(128))]
struct Padded<T>(T);

#[derive(Default)]
struct Shard {
    map: HashMap<Arc<str>, Slot>,
    /// Every key of `map`, ordered for `list`.
    order: BTreeSet<Arc<str>>,
    /// `(deadline, key)` of every entry with a deadline, earliest first.
    expiry: BTreeSet<(u64, Arc<str>)>,
}

/// An entry, beside its key in the map. Kept small (32 bytes): it is most of a map bucket.
struct Slot {
    value: Value,
    version: u64,
    /// Epoch ms; never zero, so `None` costs no extra word.
    deadline: Option<NonZeroU64>,
}

impl Slot {
    fn deadline(&self) -> Option<u64> {
        self.deadline.map(NonZeroU64::get)
    }
}

/// Values up to this length are held in a buffer of their own and copied out on every read.
const SMALL_VALUE: usize = 1024;

/// A stored value, owning exactly its bytes whatever buffer the caller's `Bytes` viewed.
///
/// A small value is a plain boxed slice (16 bytes in the slot, against 32 for a `Bytes`) and a
/// read copies it: copying up to 1 KiB costs about what sharing a handle does (an atomic count
/// that readers on several cores fight over), and the 16 bytes saved are on every entry. A larger
/// value stays a shared `Bytes`, boxed so that the slot stays small; reads share it.
enum Value {
    Small(Box<[u8]>),
    Large(Box<Bytes>),
}

// The slot layout above relies on this: the two variants share one niche.
const _: () = assert!(std::mem::size_of::<Value>() == 16);
const _: () = assert!(std::mem::size_of::<Slot>() == 32);

impl Value {
    fn new(value: Bytes) -> Self {
        if value.len() <= SMALL_VALUE {
            Self::Small(owned_slice(value))
        } else {
            Self::Large(Box::new(owned(value)))
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Small(b) => b.len(),
            Self::Large(b) => b.len(),
        }
    }

    fn to_bytes(&self) -> Bytes {
        match self {
            Self::Small(b) => Bytes::copy_from_slice(b),
            Self::Large(b) => Bytes::clone(b),
        }
    }
}

/// Bytes an entry counts against `max_bytes`.
fn footprint(key: &str, value: &Value) -> usize {
    key.len() + value.len()
}

/// Which limit a write of a new key (or a larger value) met.
#[derive(Debug, Clone, Copy)]
enum Full {
    Entries,
    Bytes,
}

/// Reads the clock at most once, and only if something needs the time.
struct LazyNow<'a> {
    clock: &'a dyn Clock,
    ms: Cell<Option<u64>>,
}

impl<'a> LazyNow<'a> {
    fn new(clock: &'a dyn Clock) -> Self {
        Self {
            clock,
            ms: Cell::new(None),
        }
    }

    fn get(&self) -> u64 {
        if let Some(ms) = self.ms.get() {
            return ms;
        }
        let ms = self.clock.now_ms();
        self.ms.set(Some(ms));
        ms
    }

    fn is_live(&self, deadline: Option<u64>) -> bool {
        deadline.is_none_or(|d| self.get() < d)
    }
}

impl Shard {
    fn live(&self, key: &str, now: &LazyNow<'_>) -> Option<&Slot> {
        self.map.get(key).filter(|s| now.is_live(s.deadline()))
    }

    /// Removes `key`; returns its slot and the bytes it counted.
    fn remove(&mut self, key: &str) -> Option<(Slot, usize)> {
        let (k, slot) = self.map.remove_entry(key)?;
        self.order.remove(key);
        if let Some(d) = slot.deadline() {
            self.expiry.remove(&(d, Arc::clone(&k)));
        }
        let bytes = footprint(&k, &slot.value);
        Some((slot, bytes))
    }

    /// Removes up to `budget` entries whose deadline is at or before `now`; returns how many,
    /// and the bytes they counted.
    fn purge(&mut self, now: u64, budget: usize) -> (usize, usize) {
        let (mut removed, mut bytes) = (0, 0);
        while removed < budget {
            let Some((deadline, key)) = self.expiry.first().cloned() else {
                break;
            };
            if deadline > now {
                break;
            }
            self.expiry.pop_first();
            if let Some(slot) = self.map.remove(&key) {
                bytes += footprint(&key, &slot.value);
            }
            self.order.remove(&key);
            removed += 1;
        }
        (removed, bytes)
    }

    fn has_due(&self, now: u64) -> bool {
        self.expiry.first().is_some_and(|(d, _)| *d <= now)
    }
}

/// What a successful write produced.
struct Written {
    version: u64,
    deadline: Option<u64>,
}

impl Inner {
    /// Everything offered; values up to the configured limit.
    fn capabilities(&self) -> Capabilities {
        Capabilities::new().max_value_size(self.limits.max_value_size)
    }

    fn shard_index(&self, key: &str) -> usize {
        // The shard hasher is seeded per store, so a client cannot aim many keys at one shard.
        let hash = self.shard_hasher.hash_one(key);
        (hash >> 32) as usize & (SHARDS - 1)
    }

    fn read(&self, i: usize) -> RwLockReadGuard<'_, Shard> {
        self.shards[i]
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, i: usize) -> RwLockWriteGuard<'_, Shard> {
        self.shards[i]
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reclaims every expired entry, one bounded batch per lock acquisition.
    fn purge_expired(&self) -> usize {
        let now = self.clock.now_ms();
        let mut total = 0;
        for i in 0..SHARDS {
            if !self.read(i).has_due(now) {
                continue;
            }
            loop {
                let (removed, bytes) = self.write(i).purge(now, PURGE_BATCH);
                self.stored.fetch_sub(removed, Ordering::AcqRel);
                self.bytes.fetch_sub(bytes, Ordering::AcqRel);
                total += removed;
                if removed < PURGE_BATCH {
                    break;
                }
            }
        }
        total
    }

    /// Takes one unit of capacity for a new key; false when the store holds `max_size` entries.
    fn reserve(&self) -> bool {
        let max = self.limits.max_size;
        self.stored
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Takes `n` bytes of `max_bytes`; false when they would pass it.
    fn reserve_bytes(&self, n: usize) -> bool {
        let Some(max) = self.limits.max_bytes else {
            self.bytes.fetch_add(n, Ordering::AcqRel);
            return true;
        };
        self.bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                b.checked_add(n).filter(|total| *total <= max)
            })
            .is_ok()
    }

    /// The one write path. A full store reclaims expired entries once and tries again, so a new
    /// key is refused only when `max_size` entries are live.
    fn write_entry(
        &self,
        key: &str,
        value: Bytes,
        ttl_ms: Option<u64>,
        condition: Condition,
    ) -> Result<Written> {
        let value = match self.try_write(key, Value::new(value), ttl_ms, condition)? {
            Ok(written) => return Ok(written),
            Err((value, _)) => value,
        };
        self.purge_expired();
        let full = match self.try_write(key, value, ttl_ms, condition)? {
            Ok(written) => return Ok(written),
            Err((_, full)) => full,
        };
        Err(Error::unavailable(match (full, self.limits.max_bytes) {
            (Full::Bytes, Some(max)) => format!(
                "store is full: {} bytes of keys and values in use (max_bytes {max}), a write of \
                 key {} needs more",
                self.bytes.load(Ordering::Acquire),
                validate::quote(key)
            ),
            _ => format!(
                "store is full: {} live keys (max_size {})",
                self.stored.load(Ordering::Acquire),
                self.limits.max_size
            ),
        }))
    }

    /// Checks `condition` against the live entry and writes, all under the key's shard lock, so
    /// conditions are atomic and a key's versions only grow. `Ok(Err((value, full)))`: the
    /// write found no room, and the value comes back for the retry.
    fn try_write(
        &self,
        key: &str,
        value: Value,
        ttl_ms: Option<u64>,
        condition: Condition,
    ) -> Result<Result<Written, (Value, Full)>> {
        let mut guard = self.write(self.shard_index(key));
        let shard = &mut *guard;
        let now = LazyNow::new(self.clock.as_ref());
        let current = shard.live(key, &now).map(|s| s.version);
        match (condition, current) {
            (Condition::IfAbsent, Some(_)) => {
                return Err(Error::already_exists(format!(
                    "key {}: already exists",
                    validate::quote(key)
                )));
            }
            (Condition::IfVersion(want), None) => {
                return Err(Error::not_found(format!(
                    "key {}: absent, expected version {want}",
                    validate::quote(key)
                )));
            }
            (Condition::IfVersion(want), Some(have)) if want != have => {
                return Err(Error::conflict(format!(
                    "key {}: version is {have}, expected {want}",
                    validate::quote(key)
                )));
            }
            _ => {}
        }
        // A deadline is at least 1 ms after the epoch (TTLs round up to 1 ms).
        let deadline = ttl_ms.and_then(|t| NonZeroU64::new(now.get().saturating_add(t).max(1)));
        if let Some((k, slot)) = shard.map.get_key_value(key) {
            let (old_len, new_len) = (slot.value.len(), value.len());
            if new_len > old_len && !self.reserve_bytes(new_len - old_len) {
                return Ok(Err((value, Full::Bytes)));
            }
            let old_deadline = slot.deadline;
            if old_deadline != deadline {
                let k = Arc::clone(k);
                if let Some(old) = old_deadline {
                    shard.expiry.remove(&(old.get(), Arc::clone(&k)));
                }
                if let Some(new) = deadline {
                    shard.expiry.insert((new.get(), k));
                }
            }
            let version = self.next_version.fetch_add(1, Ordering::AcqRel);
            let slot = shard
                .map
                .get_mut(key)
                .ok_or_else(|| Error::internal("memory store: a key vanished under its lock"))?;
            slot.value = value;
            slot.version = version;
            slot.deadline = deadline;
            if old_len > new_len {
                self.bytes.fetch_sub(old_len - new_len, Ordering::AcqRel);
            }
            let deadline = deadline.map(NonZeroU64::get);
            return Ok(Ok(Written { version, deadline }));
        }
        if !self.reserve() {
            return Ok(Err((value, Full::Entries)));
        }
        if !self.reserve_bytes(footprint(key, &value)) {
            self.stored.fetch_sub(1, Ordering::AcqRel);
            return Ok(Err((value, Full::Bytes)));
        }
        let version = self.next_version.fetch_add(1, Ordering::AcqRel);
        let k: Arc<str> = Arc::from(key);
        shard.order.insert(Arc::clone(&k));
        if let Some(d) = deadline {
            shard.expiry.insert((d.get(), Arc::clone(&k)));
        }
        let slot = Slot {
            value,
            version,
            deadline,
        };
        shard.map.insert(k, slot);
        let deadline = deadline.map(NonZeroU64::get);
        Ok(Ok(Written { version, deadline }))
    }
}

/// Builds a [`MemoryStore`].
///
/// ```
/// use std::time::Duration;
/// use store_memory::MemoryStore;
///
/// let store = MemoryStore::builder()
///     .id("app:cache")
///     .max_size(1_000)
///     .cleanup_interval(Duration::from_secs(60))
///     .build();
/// assert_eq!(store_core::Store::info(&store).id, "app:cache");
/// ```
#[derive(Debug)]
pub struct MemoryStoreBuilder {
    id: String,
    limits: Limits,
    clock: SharedClock,
}

impl MemoryStoreBuilder {
    /// The store's id (default `memory`).
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Most live keys (default 10 000; 0 means the default).
    #[must_use]
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.limits.max_size = if max_size == 0 {
            crate::config::DEFAULT_MAX_SIZE
        } else {
            max_size
        };
        self
    }

    /// How often the cleanup timer reclaims expired keys (default 5 min; zero means the default).
    #[must_use]
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.limits.cleanup_interval = if interval.is_zero() {
            crate::config::DEFAULT_CLEANUP_INTERVAL
        } else {
            interval
        };
        self
    }

    /// Largest value in bytes (default 1 MiB).
    #[must_use]
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.limits.max_value_size = bytes;
        self
    }

    /// Most bytes of keys and values held (default unlimited; 0 means unlimited). A write that
    /// would pass it fails `Unavailable`, as a new key past `max_size` does.
    #[must_use]
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_bytes = (bytes > 0).then_some(bytes);
        self
    }

    /// The clock every expiry decision reads (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Applies a registry entry's fields; errors name the field.
    pub fn config(mut self, config: &MemoryConfig) -> Result<Self> {
        self.limits = config.limits()?;
        Ok(self)
    }

    /// The store. It serves requests at once; [`MemoryStore::start`] adds the cleanup timer.
    pub fn build(self) -> MemoryStore {
        let shards = (0..SHARDS)
            .map(|_| Padded(RwLock::new(Shard::default())))
            .collect();
        MemoryStore {
            inner: Arc::new(Inner {
                id: self.id,
                limits: self.limits,
                clock: self.clock,
                shard_hasher: RandomState::new(),
                shards,
                stored: AtomicUsize::new(0),
                bytes: AtomicUsize::new(0),
                next_version: AtomicU64::new(1),
                cleanup: Periodic::new(),
            }),
        }
    }
}

impl MemoryStore {
    /// A builder with every default.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            id: "memory".to_owned(),
            limits: Limits::default(),
            clock: system_clock(),
        }
    }

    /// A store with every default.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Entries held, including expired ones not yet reclaimed (never more than `max_size`).
    pub fn stored_len(&self) -> usize {
        self.inner.stored.load(Ordering::Acquire)
    }

    /// Key and value bytes of those entries (never more than `max_bytes`).
    pub fn stored_bytes(&self) -> usize {
        self.inner.bytes.load(Ordering::Acquire)
    }

    /// Reclaims every expired entry now; returns how many. The cleanup timer calls this.
    pub fn purge_expired(&self) -> usize {
        self.inner.purge_expired()
    }

    /// Starts the cleanup timer on the current tokio runtime. Idempotent.
    ///
    /// Fails `Unavailable` outside a tokio runtime.
    pub fn start(&self) -> Result<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        self.inner
            .cleanup
            .start(self.inner.limits.cleanup_interval, move || {
                weak.upgrade().map(|inner| {
                    inner.purge_expired();
                    std::future::ready(())
                })
            })
    }

    /// Stops the cleanup timer. Idempotent; the store keeps serving requests.
    pub fn stop(&self) {
        self.inner.cleanup.stop();
    }

    /// Whether the cleanup timer is running.
    pub fn is_started(&self) -> bool {
        self.inner.cleanup.is_running()
    }

    fn check_put(
        &self,
        key: &str,
        value: &Bytes,
        ttl: Option<Duration>,
        c: Condition,
    ) -> Result<Option<u64>> {
        validate::put(&self.inner.capabilities(), key, value.len(), ttl, c)
    }
}

/// What a registry drives: the cleanup timer starts and stops; closing stops it too (the data
/// lives as long as the store).
#[async_trait]
impl Lifecycle for MemoryStore {
    async fn start(&self) -> Result<()> {
        MemoryStore::start(self)
    }

    async fn stop(&self) {
        MemoryStore::stop(self);
    }

    async fn close(&self) {
        MemoryStore::stop(self);
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("id", &self.inner.id)
            .field("limits", &self.inner.limits)
            .field("stored", &self.stored_len())
            .field("bytes", &self.stored_bytes())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        validate::key(key)?;
        let inner = &*self.inner;
        let shard = inner.read(inner.shard_index(key));
        let now = LazyNow::new(inner.clock.as_ref());
        Ok(shard.live(key, &now).map(|s| s.value.to_bytes()))
    }

    async fn entry(&self, key: &str) -> Result<Option<Entry>> {
        validate::key(key)?;
        let inner = &*self.inner;
        let shard = inner.read(inner.shard_index(key));
        let now = LazyNow::new(inner.clock.as_ref());
        Ok(shard.live(key, &now).map(|slot| to_entry(key, slot)))
    }

    async fn has(&self, key: &str) -> Result<bool> {
        validate::key(key)?;
        let inner = &*self.inner;
        let shard = inner.read(inner.shard_index(key));
        let now = LazyNow::new(inner.clock.as_ref());
        Ok(shard.live(key, &now).is_some())
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        let ttl_ms = self.check_put(key, &value, ttl, Condition::Always)?;
        self.inner
            .write_entry(key, value, ttl_ms, Condition::Always)
            .map(drop)
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Entry> {
        let ttl_ms = self.check_put(key, &value, options.ttl, options.condition)?;
        let written = self
            .inner
            .write_entry(key, value.clone(), ttl_ms, options.condition)?;
        Ok(Entry {
            key: key.to_owned(),
            value,
            version: written.version,
            expires_at: written.deadline.map(from_millis),
        })
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        validate::key(key)?;
        let inner = &*self.inner;
        let mut shard = inner.write(inner.shard_index(key));
        let Some((slot, bytes)) = shard.remove(key) else {
            return Ok(false);
        };
        inner.stored.fetch_sub(1, Ordering::AcqRel);
        inner.bytes.fetch_sub(bytes, Ordering::AcqRel);
        let now = LazyNow::new(inner.clock.as_ref());
        Ok(now.is_live(slot.deadline()))
    }

    async fn list(&self, options: ListOptions) -> Result<Page> {
        let limit = validate::list(&options)?;
        let inner = &*self.inner;
        // Reclaim what has expired first, so the scan below only skips entries that expire
        // while it runs; each entry is reclaimed once, so this is amortised O(log n) per write.
        let now_ms = inner.clock.now_ms();
        if (0..SHARDS).any(|i| inner.read(i).has_due(now_ms)) {
            inner.purge_expired();
        }
        let guards: Vec<RwLockReadGuard<'_, Shard>> = (0..SHARDS).map(|i| inner.read(i)).collect();
        let prefix = options.prefix.as_str();
        let (start, exclusive) = validate::list_start(prefix, options.after.as_deref());
        let lower = if exclusive {
            Bound::Excluded(start)
        } else {
            Bound::Included(start)
        };
        let mut cursors: Vec<_> = guards
            .iter()
            .map(|g| {
                g.order
                    .range::<str, _>((lower, Bound::Unbounded))
                    .take_while(move |k| k.starts_with(prefix))
                    .filter(move |k| {
                        g.map
                            .get(&***k)
                            .is_some_and(|s| validate::is_live(s.deadline(), now_ms))
                    })
            })
            .collect();
        // k-way merge of the shards' ordered ranges: O(shards · log n + page · log shards).
        let mut heap = BinaryHeap::with_capacity(SHARDS);
        for (i, c) in cursors.iter_mut().enumerate() {
            if let Some(k) = c.next() {
                heap.push(Reverse((Arc::clone(k), i)));
            }
        }
        let mut items = Vec::with_capacity(limit.min(64));
        let mut has_more = false;
        while let Some(Reverse((key, i))) = heap.pop() {
            if items.len() == limit {
                has_more = true;
                break;
            }
            if let Some(slot) = guards[i].map.get(&*key) {
                items.push(to_entry(&key, slot));
            }
            if let Some(next) = cursors[i].next() {
                heap.push(Reverse((Arc::clone(next), i)));
            }
        }
        Ok(Page::new(items, has_more))
    }

    fn info(&self) -> StoreInfo {
        StoreInfo::new(
            self.inner.id.clone(),
            Backend::Memory,
            Consistency::Local,
            false,
            self.inner.capabilities(),
        )
    }

    fn usage(&self) -> Option<Usage> {
        let n = |a: &AtomicUsize| u64::try_from(a.load(Ordering::Acquire)).unwrap_or(u64::MAX);
        Some(Usage::new(n(&self.inner.stored), n(&self.inner.bytes)))
    }
}

fn to_entry(key: &str, slot: &Slot) -> Entry {
    Entry {
        key: key.to_owned(),
        value: slot.value.to_bytes(),
        version: slot.version,
        expires_at: slot.deadline().map(from_millis),
    }
}
