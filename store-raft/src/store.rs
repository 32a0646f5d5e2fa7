//! [`RaftStore`]: one `store.kv.raft` entry, a namespace view into the node's [`RaftEngine`].

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use store_core::backend::validate;
use store_core::{
    Backend, Capabilities, Condition, Consistency, Entry, Error, ListOptions, Page, PutOptions,
    Result, Store, StoreInfo, from_millis,
};

use crate::engine::{Inner, RaftEngine, RaftNode};
use crate::sm::Record;
use crate::types::{Command, Cond, Response};

/// How a view's reads are served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadConsistency {
    /// Through the leader's read index: every read sees every write acknowledged before it.
    #[default]
    Linearizable,
    /// From this node's state machine, without asking the leader: fast, possibly stale.
    Serializable,
}

/// A namespace of the node's Raft group, as a [`Store`]. Every view of an engine shares its
/// log, state machine and connections; keys are stored as `<namespace>:<key>`.
#[derive(Clone)]
pub struct RaftStore {
    id: String,
    namespace: String,
    /// `<namespace>:`
    prefix: String,
    consistency: ReadConsistency,
    max_value_size: usize,
    engine: Arc<OnceLock<RaftEngine>>,
}

impl std::fmt::Debug for RaftStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftStore")
            .field("id", &self.id)
            .field("namespace", &self.namespace)
            .field("consistency", &self.consistency)
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

impl RaftStore {
    /// A view of `engine` under `namespace`, reporting `id` in its info.
    ///
    /// # Errors
    /// `Invalid` for a bad namespace.
    pub fn new(
        engine: &RaftEngine,
        id: impl Into<String>,
        namespace: &str,
        consistency: ReadConsistency,
    ) -> Result<Self> {
        Self::view(
            Arc::new(OnceLock::from(engine.clone())),
            id.into(),
            namespace,
            consistency,
        )
    }

    /// A view of the engine `node` runs once it is started; until then every call fails
    /// `Unavailable`. This is how a registry builds its stores before the node starts.
    ///
    /// # Errors
    /// `Invalid` for a bad namespace.
    pub fn on_node(
        node: &RaftNode,
        id: impl Into<String>,
        namespace: &str,
        consistency: ReadConsistency,
    ) -> Result<Self> {
        Self::view(node.slot(), id.into(), namespace, consistency)
    }

    fn view(
        engine: Arc<OnceLock<RaftEngine>>,
        id: String,
        namespace: &str,
        consistency: ReadConsistency,
    ) -> Result<Self> {
        check_namespace(namespace)?;
        Ok(Self {
            id,
            namespace: namespace.to_owned(),
            prefix: format!("{namespace}:"),
            consistency,
            max_value_size: validate::DEFAULT_MAX_VALUE_SIZE,
            engine,
        })
    }

    fn engine(&self) -> Result<&Arc<Inner>> {
        self.engine
            .get()
            .map(RaftEngine::inner)
            .ok_or_else(|| Error::unavailable("the raft engine of this node has not started"))
    }

    /// Sets the largest value accepted (default 1 MiB).
    #[must_use]
    pub fn with_max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new().max_value_size(self.max_value_size)
    }

    fn physical(&self, key: &str) -> String {
        let mut p = String::with_capacity(self.prefix.len() + key.len());
        p.push_str(&self.prefix);
        p.push_str(key);
        p
    }

    /// The clock reading to judge expiry by, after whatever wait the consistency needs.
    async fn now(&self) -> Result<u64> {
        match self.consistency {
            ReadConsistency::Linearizable => self.engine()?.read_barrier().await,
            ReadConsistency::Serializable => Ok(self.engine()?.local_now()),
        }
    }

    fn record(&self, key: &str) -> Result<Option<Record>> {
        self.engine()?
            .sm
            .get(&self.physical(key))
            .map_err(|e| Error::internal(format!("raft state machine: {e}")))
    }

    async fn live(&self, key: &str) -> Result<Option<Record>> {
        validate::key_for(&self.capabilities(), key)?;
        let now = self.now().await?;
        Ok(self.record(key)?.filter(|r| r.live(now)))
    }

    fn entry_of(key: &str, record: Record) -> Entry {
        Entry {
            key: key.to_owned(),
            value: Bytes::from(record.value),
            version: record.version,
            expires_at: record.expires_at.map(from_millis),
        }
    }

    async fn write(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        condition: Condition,
    ) -> Result<Entry> {
        let ttl_ms = validate::put(&self.capabilities(), key, value.len(), ttl, condition)?;
        let cond = match condition {
            Condition::Always => Cond::Always,
            Condition::IfAbsent => Cond::IfAbsent,
            Condition::IfVersion(v) => Cond::IfVersion(v),
            other => {
                return Err(Error::unsupported(format!(
                    "condition {other:?} is not supported by store.kv.raft"
                )));
            }
        };
        let response = self
            .engine()?
            .write(Command::Write {
                key: self.physical(key),
                value: value.clone(),
                ttl_ms,
                condition: cond,
            })
            .await?;
        match response {
            Response::Written {
                version,
                expires_at,
            } => Ok(Entry {
                key: key.to_owned(),
                value,
                version,
                expires_at: expires_at.map(from_millis),
            }),
            Response::Exists => Err(Error::already_exists(format!(
                "key {} already exists",
                validate::quote(key)
            ))),
            Response::Missing => Err(Error::not_found(format!(
                "key {} does not exist",
                validate::quote(key)
            ))),
            Response::Mismatch { current } => Err(Error::conflict(format!(
                "key {}: expected version {}, found {current}",
                validate::quote(key),
                match condition {
                    Condition::IfVersion(v) => v,
                    _ => 0,
                }
            ))),
            other => Err(Error::internal(format!("a write answered {other:?}"))),
        }
    }
}

#[async_trait]
impl Store for RaftStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.live(key).await?.map(|r| Bytes::from(r.value)))
    }

    async fn entry(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self.live(key).await?.map(|r| Self::entry_of(key, r)))
    }

    async fn has(&self, key: &str) -> Result<bool> {
        Ok(self.live(key).await?.is_some())
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        self.write(key, value, ttl, Condition::Always)
            .await
            .map(|_| ())
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Entry> {
        self.write(key, value, options.ttl, options.condition).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        validate::key_for(&self.capabilities(), key)?;
        match self
            .engine()?
            .write(Command::Delete {
                key: self.physical(key),
            })
            .await?
        {
            Response::Deleted(removed) => Ok(removed),
            other => Err(Error::internal(format!("a delete answered {other:?}"))),
        }
    }

    async fn list(&self, options: ListOptions) -> Result<Page> {
        let limit = validate::list(&options)?;
        let now = self.now().await?;
        let (start, exclusive) = validate::list_start(&options.prefix, options.after.as_deref());
        let found = self
            .engine()?
            .sm
            .scan(
                &self.physical(&options.prefix),
                &self.physical(start),
                exclusive,
                limit,
                now,
            )
            .map_err(|e| Error::internal(format!("raft state machine: {e}")))?;
        let has_more = found.len() > limit;
        let items = found
            .into_iter()
            .take(limit)
            .filter_map(|(physical, record)| {
                let key = physical.strip_prefix(&self.prefix)?.to_owned();
                Some(Self::entry_of(&key, record))
            })
            .collect();
        Ok(Page::new(items, has_more))
    }

    fn info(&self) -> StoreInfo {
        let consistency = match self.consistency {
            ReadConsistency::Linearizable => Consistency::Linearizable,
            ReadConsistency::Serializable => Consistency::Eventual,
        };
        StoreInfo::new(
            self.id.clone(),
            Backend::KvRaft,
            consistency,
            true,
            self.capabilities(),
        )
    }
}

/// The fields of a `store.kv.raft` registry entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftStoreConfig {
    /// The namespace: keys are stored as `<namespace>:<key>` in the node's group.
    pub namespace: String,
    /// `linearizable` (default) or `serializable`.
    #[serde(default)]
    pub consistency: ReadConsistency,
    /// Largest value accepted, in bytes (default 1 MiB).
    #[serde(default = "default_max_value_size")]
    pub max_value_size: usize,
}

fn default_max_value_size() -> usize {
    validate::DEFAULT_MAX_VALUE_SIZE
}

impl RaftStoreConfig {
    /// Every field an entry may have.
    pub const FIELDS: &'static [&'static str] = &["namespace", "consistency", "max_value_size"];
}

impl store_core::Lifecycle for RaftStore {}
