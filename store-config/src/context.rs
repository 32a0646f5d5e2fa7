//! [`NodeContext`]: what every builder of a node shares.

use std::any::{Any, TypeId};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use store_core::{Lifecycle, SharedClock, system_clock};

use crate::cluster::ClusterConfig;

/// The node a registry is built for: its data folder, its name, its clock, and the resources
/// created once per node and shared by every entry that needs them (a replication engine that
/// serves many stores).
///
/// ```
/// use store_config::{NodeContext, Registry};
///
/// let node = NodeContext::new("n1").data_dir("/var/lib/store");
/// let registry = Registry::builder()
///     .node(node)
///     .load_str("app.yaml", "namespace: app\nentries: []\n")
///     .unwrap();
/// assert_eq!(registry.node().name(), "n1");
/// ```
pub struct NodeContext {
    name: String,
    data_dir: Option<PathBuf>,
    clock: SharedClock,
    cluster: Option<ClusterConfig>,
    shared: Mutex<Vec<SharedResource>>,
}

/// One node-wide resource: the value builders get, and its lifecycle.
struct SharedResource {
    type_id: TypeId,
    value: Arc<dyn Any + Send + Sync>,
    lifecycle: Arc<dyn Lifecycle>,
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext")
            .field("name", &self.name)
            .field("data_dir", &self.data_dir)
            .field("shared", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Default for NodeContext {
    fn default() -> Self {
        Self::new("local")
    }
}

impl NodeContext {
    /// A node called `name`, on the system clock, without a data folder.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            data_dir: None,
            clock: system_clock(),
            cluster: None,
            shared: Mutex::default(),
        }
    }

    /// Sets the folder where the node keeps its data.
    #[must_use]
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Sets the clock every store reads (tests use a manual one).
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the node's `cluster` section: the engines' settings.
    #[must_use]
    pub fn cluster(mut self, cluster: ClusterConfig) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The node's `cluster` section, if it has one.
    pub fn cluster_config(&self) -> Option<&ClusterConfig> {
        self.cluster.as_ref()
    }

    /// The node-wide `T` if some builder made it (see [`NodeContext::shared`]).
    pub fn get<T: Lifecycle + Any>(&self) -> Option<Arc<T>> {
        self.find::<T>(TypeId::of::<T>())
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The folder where the node keeps its data, if it has one.
    pub fn data_folder(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// The clock.
    pub fn shared_clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The node-wide `T`, made by `make` the first time any builder asks for it; every later
    /// call gets the same one. A registry starts these before any entry and closes them after.
    pub fn shared<T, F>(&self, make: F) -> store_core::Result<Arc<T>>
    where
        T: Lifecycle + Any,
        F: FnOnce(&Self) -> store_core::Result<T>,
    {
        let wanted = TypeId::of::<T>();
        if let Some(found) = self.find::<T>(wanted) {
            return Ok(found);
        }
        // Made outside the lock: `make` may ask for other shared resources.
        let made = Arc::new(make(self)?);
        let mut shared = self.lock();
        if let Some(raced) = shared
            .iter()
            .find(|r| r.type_id == wanted)
            .and_then(|r| Arc::clone(&r.value).downcast::<T>().ok())
        {
            return Ok(raced);
        }
        shared.push(SharedResource {
            type_id: wanted,
            value: made.clone(),
            lifecycle: made.clone(),
        });
        Ok(made)
    }

    fn find<T: Any + Send + Sync>(&self, wanted: TypeId) -> Option<Arc<T>> {
        self.lock()
            .iter()
            .find(|r| r.type_id == wanted)
            .and_then(|r| Arc::clone(&r.value).downcast::<T>().ok())
    }

    /// The lifecycles of the shared resources, in the order they were made.
    pub(crate) fn lifecycles(&self) -> Vec<Arc<dyn Lifecycle>> {
        self.lock()
            .iter()
            .map(|r| Arc::clone(&r.lifecycle))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SharedResource>> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct Engine(usize);
    impl Lifecycle for Engine {}

    #[test]
    fn a_shared_resource_is_made_once_per_node() {
        let node = NodeContext::new("n1");
        let made = AtomicUsize::new(0);
        let make = |_: &NodeContext| Ok(Engine(made.fetch_add(1, Ordering::SeqCst)));
        let a = node.shared(make).unwrap();
        let b = node.shared(make).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!((made.load(Ordering::SeqCst), a.0), (1, 0));
        assert_eq!(node.lifecycles().len(), 1);
        let failed = NodeContext::new("n2")
            .shared::<Engine, _>(|_| Err(store_core::Error::unavailable("no peers")));
        assert!(failed.is_err());
    }
}
