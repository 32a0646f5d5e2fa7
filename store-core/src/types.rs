//! The values that cross the [`Store`](crate::Store) trait.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A live key with everything the store knows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Bytes,
    /// Version of the write that produced `value`; `0` when the store keeps no versions.
    pub version: u64,
    /// When the key expires, if it does.
    pub expires_at: Option<SystemTime>,
}

/// The condition a [`put`](crate::Store::put) must meet to write.
///
/// `Always` is an unconditional write; `IfAbsent` creates; `IfVersion` updates the exact version
/// (compare-and-swap).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Condition {
    /// Write whatever is there.
    #[default]
    Always,
    /// Write only if no live value exists; otherwise `AlreadyExists`.
    IfAbsent,
    /// Write only if the live value has this version; `NotFound` when absent, `Conflict` when
    /// the version differs. `IfVersion(0)` is `Invalid`.
    IfVersion(u64),
}

/// Options of [`put`](crate::Store::put). Build with the setters; new options never break
/// callers.
///
/// ```
/// use std::time::Duration;
/// use store_core::{Condition, PutOptions};
///
/// let options = PutOptions::new().if_version(7).ttl(Duration::from_secs(30));
/// assert_eq!(options.condition, Condition::IfVersion(7));
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Time to live of the written value; `None` or zero means no expiry.
    pub ttl: Option<Duration>,
    /// When the write may happen.
    pub condition: Condition,
}

impl PutOptions {
    /// An unconditional write without expiry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the time to live.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets an optional time to live.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the condition.
    #[must_use]
    pub fn condition(mut self, condition: Condition) -> Self {
        self.condition = condition;
        self
    }

    /// Shorthand for `condition(Condition::IfAbsent)`.
    #[must_use]
    pub fn if_absent(self) -> Self {
        self.condition(Condition::IfAbsent)
    }

    /// Shorthand for `condition(Condition::IfVersion(version))`.
    #[must_use]
    pub fn if_version(self, version: u64) -> Self {
        self.condition(Condition::IfVersion(version))
    }
}

/// Options of [`list`](crate::Store::list).
///
/// ```
/// use store_core::ListOptions;
///
/// let options = ListOptions::new().prefix("user:").after("user:17").limit(50);
/// assert_eq!(options.limit, Some(50));
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys starting with this (empty: every key).
    pub prefix: String,
    /// Only keys strictly greater than this (a previous page's cursor).
    pub after: Option<String>,
    /// Page size: `None` or 0 means 100; above 1000 means 1000.
    pub limit: Option<usize>,
}

impl ListOptions {
    /// Every key, first page, default size.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the prefix.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the exclusive lower bound.
    #[must_use]
    pub fn after(mut self, after: impl Into<String>) -> Self {
        self.after = Some(after.into());
        self
    }

    /// Sets an optional exclusive lower bound (a previous page's cursor).
    #[must_use]
    pub fn with_after(mut self, after: Option<String>) -> Self {
        self.after = after;
        self
    }

    /// Sets the page size.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// One page of [`list`](crate::Store::list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Live entries in byte order of their keys.
    pub items: Vec<Entry>,
    /// Last key of this page (`None` when the page is empty); pass it as `after` for the next.
    pub cursor: Option<String>,
    /// Whether more matching keys follow this page.
    pub has_more: bool,
}

impl Page {
    /// A page of `items` (already in key order), its cursor being the last key.
    pub fn new(items: Vec<Entry>, has_more: bool) -> Self {
        let cursor = items.last().map(|e| e.key.clone());
        Self {
            items,
            cursor,
            has_more,
        }
    }
}

/// Which backend a store runs on.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Backend {
    /// `store.memory`.
    #[serde(rename = "memory")]
    Memory,
    /// `store.sql`.
    #[serde(rename = "sql")]
    Sql,
    /// `store.kv.raft`.
    #[serde(rename = "kv.raft")]
    KvRaft,
    /// `store.kv.crdt`.
    #[serde(rename = "kv.crdt")]
    KvCrdt,
}

impl Backend {
    /// The backend's name: `memory`, `sql`, `kv.raft` or `kv.crdt`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sql => "sql",
            Self::KvRaft => "kv.raft",
            Self::KvCrdt => "kv.crdt",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a reader can rely on.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Every operation appears to take effect at one instant between its call and its return,
    /// across all nodes.
    Linearizable,
    /// Replicas converge once writes stop; reads may be stale.
    Eventual,
    /// One process (or one database) holds the data; no replication.
    Local,
}

impl Consistency {
    /// The name: `linearizable`, `eventual` or `local`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Linearizable => "linearizable",
            Self::Eventual => "eventual",
            Self::Local => "local",
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an in-memory store holds: see [`Store::usage`](crate::Store::usage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Usage {
    /// Entries held, counting expired ones not yet reclaimed.
    pub entries: u64,
    /// Bytes of their keys and values (UTF-8 key length plus value length), the figure
    /// `max_bytes` limits. The store's own overhead per entry is not included.
    pub bytes: u64,
}

impl Usage {
    /// A usage of `entries` entries holding `bytes` bytes.
    pub fn new(entries: u64, bytes: u64) -> Self {
        Self { entries, bytes }
    }
}

/// What a store can do, and the limits of its arguments. A store keeps one and checks every
/// call against it ([`validate::put`](crate::backend::validate::put)); front ends read it from
/// [`StoreInfo`] instead of asking the configuration.
///
/// ```
/// use store_core::Capabilities;
///
/// let caps = Capabilities::new().versioned(false).max_value_size(1024);
/// assert!(caps.conditional_put && !caps.versioned);
/// assert_eq!((caps.max_value_size, caps.max_key_len), (1024, 1024));
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capabilities {
    /// Whether [`list`](crate::Store::list) is offered.
    pub list: bool,
    /// Whether entries carry versions (`IfVersion` needs it).
    pub versioned: bool,
    /// Whether `IfAbsent` (and, with `versioned`, `IfVersion`) is offered.
    pub conditional_put: bool,
    /// Whether TTLs are honoured.
    pub ttl: bool,
    /// The largest value accepted, in bytes.
    pub max_value_size: usize,
    /// The longest key accepted, in UTF-8 bytes (at most 1024).
    pub max_key_len: usize,
    /// A limit on key length in characters, when the storage has one (PostgreSQL's
    /// `VARCHAR(255)`); `None` when only `max_key_len` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_key_chars: Option<usize>,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self::new()
    }
}

impl Capabilities {
    /// Everything offered, with the default limits: values up to 1 MiB, keys up to 1024 bytes.
    pub const fn new() -> Self {
        Self {
            list: true,
            versioned: true,
            conditional_put: true,
            ttl: true,
            max_value_size: crate::backend::validate::DEFAULT_MAX_VALUE_SIZE,
            max_key_len: crate::backend::validate::MAX_KEY_LEN,
            max_key_chars: None,
        }
    }

    /// Sets whether `list` is offered.
    #[must_use]
    pub const fn list(mut self, list: bool) -> Self {
        self.list = list;
        self
    }

    /// Sets whether entries carry versions.
    #[must_use]
    pub const fn versioned(mut self, versioned: bool) -> Self {
        self.versioned = versioned;
        self
    }

    /// Sets whether conditional puts are offered.
    #[must_use]
    pub const fn conditional_put(mut self, conditional_put: bool) -> Self {
        self.conditional_put = conditional_put;
        self
    }

    /// Sets whether TTLs are honoured.
    #[must_use]
    pub const fn ttl(mut self, ttl: bool) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the largest value accepted.
    #[must_use]
    pub const fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// Sets the longest key accepted in bytes (values above 1024 mean 1024).
    #[must_use]
    pub const fn max_key_len(mut self, bytes: usize) -> Self {
        self.max_key_len = if bytes < crate::backend::validate::MAX_KEY_LEN {
            bytes
        } else {
            crate::backend::validate::MAX_KEY_LEN
        };
        self
    }

    /// Sets a limit on key length in characters.
    #[must_use]
    pub const fn max_key_chars(mut self, chars: Option<usize>) -> Self {
        self.max_key_chars = chars;
        self
    }
}

/// What a store is and what it can do. Capabilities gate behaviour and the conformance suite.
///
/// In JSON (the HTTP API) the capabilities are fields of the info itself:
/// `{"id": "app:cache", "backend": "memory", …, "versioned": true, "max_value_size": 1048576}`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    /// The store's id (`namespace:name` when built from a registry).
    pub id: String,
    /// The backend.
    pub backend: Backend,
    /// The consistency model.
    pub consistency: Consistency,
    /// Whether data survives a restart.
    pub durable: bool,
    /// What it can do and its limits.
    #[serde(flatten)]
    pub capabilities: Capabilities,
}

impl StoreInfo {
    /// The info of store `id`.
    pub fn new(
        id: impl Into<String>,
        backend: Backend,
        consistency: Consistency,
        durable: bool,
        capabilities: Capabilities,
    ) -> Self {
        Self {
            id: id.into(),
            backend,
            consistency,
            durable,
            capabilities,
        }
    }
}
