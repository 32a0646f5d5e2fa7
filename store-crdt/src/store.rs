//! [`CrdtStore`]: one `store.kv.crdt` entry, a namespace view into the node's [`CrdtEngine`].

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use store_core::backend::{owned, validate};
use store_core::{
    Backend, Capabilities, Condition, Consistency, Entry, Error, ListOptions, Page, PutOptions,
    Result, Store, StoreInfo, Usage, from_millis,
};

use crate::engine::{CrdtEngine, CrdtNode, Shared};
use crate::state::{Cell, Reg, Space, State};

/// A namespace of the node's gossip engine, as a [`Store`]: always writable, eventually
/// consistent. Conditional puts are `Unsupported`.
#[derive(Clone)]
pub struct CrdtStore {
    id: String,
    durable: bool,
    max_value_size: usize,
    space: Arc<Space>,
    state: Arc<State>,
    engine: Arc<OnceLock<CrdtEngine>>,
}

impl std::fmt::Debug for CrdtStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrdtStore")
            .field("id", &self.id)
            .field("namespace", &self.space.name())
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

/// Checks a namespace: `^[a-z][a-z0-9._-]*$`, at most 64 bytes.
///
/// # Errors
/// `Invalid`, naming the field `namespace`.
pub fn check_namespace(namespace: &str) -> Result<()> {
    validate::namespace(namespace)
}

impl CrdtStore {
    /// A view of the engine `node` runs, under `namespace`; until the node starts every call
    /// fails `Unavailable`. A `durable` view makes its namespace durable on the node.
    ///
    /// # Errors
    /// `Invalid` for a bad namespace.
    pub fn on_node(
        node: &CrdtNode,
        id: impl Into<String>,
        namespace: &str,
        durable: bool,
    ) -> Result<Self> {
        check_namespace(namespace)?;
        if durable {
            node.make_durable(namespace);
        }
        Ok(Self {
            id: id.into(),
            durable,
            max_value_size: validate::DEFAULT_MAX_VALUE_SIZE,
            space: node.state().space(namespace),
            state: Arc::clone(node.state()),
            engine: node.slot(),
        })
    }

    /// Sets the largest value accepted (default 1 MiB).
    #[must_use]
    pub fn with_max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        self.space.name()
    }

    fn shared(&self) -> Result<&Shared> {
        self.engine
            .get()
            .map(|e| &*e.inner().shared)
            .ok_or_else(|| Error::unavailable("the gossip engine of this node has not started"))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .conditional_put(false)
            .max_value_size(self.max_value_size)
    }

    fn entry_of(key: &str, value: &Bytes, reg: &Reg) -> Entry {
        Entry {
            key: key.to_owned(),
            value: value.clone(),
            version: reg.marker.version(),
            expires_at: reg.val.expires_at.map(from_millis),
        }
    }

    async fn write(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<Entry> {
        let ttl_ms = validate::put(
            &self.capabilities(),
            key,
            value.len(),
            ttl,
            Condition::Always,
        )?;
        let shared = self.shared()?;
        let now = shared.writing_now()?;
        // A value from an HTTP body is a view into the connection's read buffer (kilobytes):
        // kept as it is, every stored key would pin one.
        let value = owned(value);
        let cell = Cell {
            value: Some(value.clone()),
            expires_at: validate::deadline(now, ttl_ms),
        };
        let written = self.state.write_local(&self.space, key, cell, now);
        shared.publish(&self.space, key);
        Ok(Self::entry_of(key, &value, &written.reg))
    }

    /// The clock reading to serve at, or `Unavailable` when this node's clock is off from most
    /// of its peers' by more than `max_clock_skew`.
    fn now(&self) -> Result<u64> {
        self.shared()?.serving_now()
    }
}

#[async_trait]
impl Store for CrdtStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        validate::key_for(&self.capabilities(), key)?;
        let now = self.now()?;
        Ok(self
            .state
            .with_live(&self.space, key, || now, |v, _| v.clone()))
    }

    async fn entry(&self, key: &str) -> Result<Option<Entry>> {
        validate::key_for(&self.capabilities(), key)?;
        let now = self.now()?;
        Ok(self.state.with_live(
            &self.space,
            key,
            || now,
            |v, reg| Self::entry_of(key, v, reg),
        ))
    }

    async fn has(&self, key: &str) -> Result<bool> {
        validate::key_for(&self.capabilities(), key)?;
        let now = self.now()?;
        Ok(self
            .state
            .with_live(&self.space, key, || now, |_, _| ())
            .is_some())
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        self.write(key, value, ttl).await.map(|_| ())
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Entry> {
        if options.condition != Condition::Always {
            // Validate first, so a bad key or value is Invalid rather than Unsupported.
            validate::put(
                &self.capabilities(),
                key,
                value.len(),
                options.ttl,
                options.condition,
            )?;
            return Err(Error::unsupported(
                "store.kv.crdt has no conditional puts: concurrent writes on different nodes \
                 are resolved by last writer wins",
            ));
        }
        self.write(key, value, options.ttl).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        validate::key_for(&self.capabilities(), key)?;
        let shared = self.shared()?;
        let now = shared.writing_now()?;
        let written = self
            .state
            .write_local(&self.space, key, Cell::TOMBSTONE, now);
        if written.reg.val.value.is_none() {
            shared.publish(&self.space, key);
        }
        Ok(written.was_live)
    }

    async fn list(&self, options: ListOptions) -> Result<Page> {
        let limit = validate::list(&options)?;
        let now = self.now()?;
        let (start, exclusive) = validate::list_start(&options.prefix, options.after.as_deref());
        let found = self
            .state
            .scan(&self.space, &options.prefix, start, exclusive, limit, now);
        let has_more = found.len() > limit;
        let items = found
            .into_iter()
            .take(limit)
            .filter_map(|(key, reg)| {
                let value = reg.val.value.clone()?;
                Some(Self::entry_of(&key, &value, &reg))
            })
            .collect();
        Ok(Page::new(items, has_more))
    }

    fn usage(&self) -> Option<Usage> {
        let (entries, bytes) = self.state.usage(&self.space);
        Some(Usage::new(entries, bytes))
    }

    fn info(&self) -> StoreInfo {
        StoreInfo::new(
            self.id.clone(),
            Backend::KvCrdt,
            Consistency::Eventual,
            self.durable,
            self.capabilities(),
        )
    }
}

impl store_core::Lifecycle for CrdtStore {}

/// The fields of a `store.kv.crdt` registry entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrdtStoreConfig {
    /// The namespace: the node's registers of this name.
    pub namespace: String,
    /// Whether the namespace is snapshotted to disk and survives a full-cluster restart.
    #[serde(default)]
    pub durable: bool,
    /// Largest value accepted, in bytes (default 1 MiB).
    #[serde(default = "default_max_value_size")]
    pub max_value_size: usize,
}

fn default_max_value_size() -> usize {
    validate::DEFAULT_MAX_VALUE_SIZE
}

impl CrdtStoreConfig {
    /// Every field an entry may have.
    pub const FIELDS: &'static [&'static str] = &["namespace", "durable", "max_value_size"];
}
