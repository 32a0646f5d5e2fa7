//! The one list of backends: every kind a registry knows and the function that builds it, with
//! the settings it reports. Adding a backend is one entry in [`KINDS`] and one function here;
//! nothing else in this crate names a backend.

use crate::build;

use build::{Build, Kind};
#[cfg(any(
    feature = "memory",
    feature = "sqlite",
    feature = "postgres",
    feature = "raft",
    feature = "crdt"
))]
use build::{Built, Ctx};
#[cfg(any(
    feature = "memory",
    feature = "sqlite",
    feature = "postgres",
    feature = "raft",
    feature = "crdt"
))]
type Result<T> = std::result::Result<T, crate::ConfigError>;

/// Every kind, in the order errors list them.
pub(crate) const KINDS: &[Kind] = &[
    #[cfg(feature = "memory")]
    Kind {
        name: "store.memory",
        fields: store_memory::MemoryConfig::FIELDS,
        required: &[],
        build: Build::Store(memory),
    },
    #[cfg(not(feature = "memory"))]
    Kind {
        name: "store.memory",
        fields: &[],
        required: &[],
        build: Build::Unavailable("store-config was built without its `memory` feature"),
    },
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    Kind {
        name: "store.sql",
        fields: store_sql::SqlStoreConfig::FIELDS,
        required: &["table_name"],
        build: Build::Store(sql),
    },
    #[cfg(not(any(feature = "sqlite", feature = "postgres")))]
    Kind {
        name: "store.sql",
        fields: &[],
        required: &[],
        build: Build::Unavailable(
            "store-config was built without its `sqlite` and `postgres` features",
        ),
    },
    #[cfg(feature = "raft")]
    Kind {
        name: "store.kv.raft",
        fields: store_raft::RaftStoreConfig::FIELDS,
        required: &["namespace"],
        build: Build::Store(raft),
    },
    #[cfg(not(feature = "raft"))]
    Kind {
        name: "store.kv.raft",
        fields: &[],
        required: &[],
        build: Build::Unavailable("store-config was built without its `raft` feature"),
    },
    #[cfg(feature = "crdt")]
    Kind {
        name: "store.kv.crdt",
        fields: store_crdt::CrdtStoreConfig::FIELDS,
        required: &["namespace"],
        build: Build::Store(crdt),
    },
    #[cfg(not(feature = "crdt"))]
    Kind {
        name: "store.kv.crdt",
        fields: &[],
        required: &[],
        build: Build::Unavailable("store-config was built without its `crdt` feature"),
    },
    #[cfg(feature = "sqlite")]
    Kind {
        name: "db.sql.sqlite",
        fields: store_sql::SqliteConfig::FIELDS,
        required: &["path"],
        build: Build::Resource(sqlite),
    },
    #[cfg(not(feature = "sqlite"))]
    Kind {
        name: "db.sql.sqlite",
        fields: &[],
        required: &[],
        build: Build::Unavailable("store-config was built without its `sqlite` feature"),
    },
    #[cfg(feature = "postgres")]
    Kind {
        name: "db.sql.postgres",
        fields: store_sql::PostgresConfig::FIELDS,
        required: &[],
        build: Build::Resource(postgres),
    },
    #[cfg(not(feature = "postgres"))]
    Kind {
        name: "db.sql.postgres",
        fields: &[],
        required: &[],
        build: Build::Unavailable("store-config was built without its `postgres` feature"),
    },
];

#[cfg(feature = "memory")]
fn memory(ctx: &Ctx<'_>) -> Result<Built> {
    use store_memory::{MemoryConfig, MemoryStore};
    let config: MemoryConfig = ctx.parse()?;
    let store = MemoryStore::builder()
        .id(ctx.id)
        .clock(std::sync::Arc::clone(ctx.node.shared_clock()))
        .config(&config)
        .map_err(|e| ctx.backend_error(&e))?
        .build();
    let limits: store_memory::Limits = store.limits();
    Ok(Built::store(store, limits))
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn sql(ctx: &Ctx<'_>) -> Result<Built> {
    use store_sql::{SqlDatabase, SqlStore, SqlStoreConfig};
    let mut config: SqlStoreConfig = ctx.parse()?;
    let (id, db) = ctx.resource::<SqlDatabase>(
        "database",
        &config.database,
        "db.sql.sqlite or db.sql.postgres",
    )?;
    config.database = id;
    let store = SqlStore::builder(db.clone(), config.clone())
        .id(ctx.id)
        .clock(std::sync::Arc::clone(ctx.node.shared_clock()))
        .build()
        .map_err(|e| ctx.backend_error(&e))?;
    Ok(Built::store(store, config))
}

#[cfg(feature = "raft")]
fn raft(ctx: &Ctx<'_>) -> Result<Built> {
    use store_raft::{RaftStore, RaftStoreConfig};
    let config: RaftStoreConfig = ctx.parse()?;
    store_raft::check_namespace(&config.namespace).map_err(|e| ctx.backend_error(&e))?;
    let node =
        raft_node(ctx.node).map_err(|e| ctx.error_of(e.kind(), None, e.message().to_owned()))?;
    let store = RaftStore::on_node(&node, ctx.id, &config.namespace, config.consistency)
        .map_err(|e| ctx.backend_error(&e))?
        .with_max_value_size(config.max_value_size);
    Ok(Built::store(store, config))
}

/// The node's Raft engine, made from its `cluster.raft` section the first time anything asks
/// (a `store.kv.raft` entry, or the node itself so it joins its cluster with no entry yet). It
/// starts with the registry.
///
/// # Errors
/// `Invalid` when the node has no `cluster.raft` section or no data folder, or the secret
/// cannot be read.
#[cfg(feature = "raft")]
pub fn raft_node(
    node: &crate::NodeContext,
) -> store_core::Result<std::sync::Arc<store_raft::RaftNode>> {
    use store_raft::{Members, RaftConfig, RaftNode};
    let Some(cluster) = node.cluster_config() else {
        return Err(store_core::Error::invalid(
            "store.kv.raft needs the node's `cluster.raft` section, and this node has no `cluster` section",
        ));
    };
    let Some(raft) = &cluster.raft else {
        return Err(store_core::Error::invalid(
            "store.kv.raft needs the node's `cluster.raft` section, and this node's `cluster` has none",
        ));
    };
    let Some(data) = node.data_folder() else {
        return Err(store_core::Error::invalid(
            "store.kv.raft needs the node's data folder (`data_dir`)",
        ));
    };
    node.shared(|node| {
        let members = match &raft.members {
            crate::RaftMembers::Founding(map) => Members::Founding(
                map.iter()
                    .map(|(name, addr)| (name.clone(), addr.to_string()))
                    .collect(),
            ),
            crate::RaftMembers::Join => Members::Join,
        };
        let mut config = RaftConfig::new(
            node.name(),
            data.join("_sys").join("raft"),
            raft.bind,
            members,
        );
        config.advertise = Some(raft.advertise.to_string());
        config.heartbeat_interval = raft.heartbeat_interval;
        config.election_timeout = raft.election_timeout;
        config.snapshot_threshold = raft.snapshot_threshold;
        config.request_timeout = raft.request_timeout;
        config.max_clock_skew = raft.max_clock_skew;
        config.clock = std::sync::Arc::clone(node.shared_clock());
        config.secret = match &cluster.secret {
            Some(source) => crate::cluster::read_secret(source)?,
            None => Vec::new(),
        };
        Ok(RaftNode::new(config))
    })
}

#[cfg(feature = "crdt")]
fn crdt(ctx: &Ctx<'_>) -> Result<Built> {
    use store_crdt::{CrdtStore, CrdtStoreConfig};
    let config: CrdtStoreConfig = ctx.parse()?;
    store_crdt::check_namespace(&config.namespace).map_err(|e| ctx.backend_error(&e))?;
    let node =
        crdt_node(ctx.node).map_err(|e| ctx.error_of(e.kind(), None, e.message().to_owned()))?;
    let store = CrdtStore::on_node(&node, ctx.id, &config.namespace, config.durable)
        .map_err(|e| ctx.backend_error(&e))?
        .with_max_value_size(config.max_value_size);
    Ok(Built::store(store, config))
}

/// The node's gossip engine, made from its `cluster.gossip` section the first time anything
/// asks (a `store.kv.crdt` entry, or the node itself so it joins its cluster with no entry
/// yet). It starts with the registry.
///
/// # Errors
/// `Invalid` when the node has no `cluster.gossip` section or no data folder, or the secret
/// cannot be read.
#[cfg(feature = "crdt")]
pub fn crdt_node(
    node: &crate::NodeContext,
) -> store_core::Result<std::sync::Arc<store_crdt::CrdtNode>> {
    use store_crdt::{CrdtConfig, CrdtNode};
    let Some(cluster) = node.cluster_config() else {
        return Err(store_core::Error::invalid(
            "store.kv.crdt needs the node's `cluster.gossip` section, and this node has no `cluster` section",
        ));
    };
    let Some(gossip) = &cluster.gossip else {
        return Err(store_core::Error::invalid(
            "store.kv.crdt needs the node's `cluster.gossip` section, and this node's `cluster` has none",
        ));
    };
    let Some(data) = node.data_folder() else {
        return Err(store_core::Error::invalid(
            "store.kv.crdt needs the node's data folder (`data_dir`)",
        ));
    };
    node.shared(|node| {
        let mut config = CrdtConfig::new(node.name(), gossip.bind);
        config.advertise = Some(gossip.advertise);
        config.join = gossip.join.clone();
        config.push_pull_interval = gossip.push_pull_interval;
        config.tombstone_retention = gossip.tombstone_retention;
        config.snapshot_interval = gossip.snapshot_interval;
        config.max_clock_skew = gossip.max_clock_skew;
        config.dir = Some(data.join("_sys").join("kvcrdt"));
        config.clock = std::sync::Arc::clone(node.shared_clock());
        config.secret = match &cluster.secret {
            Some(source) => crate::cluster::read_secret(source)?,
            None => Vec::new(),
        };
        Ok(CrdtNode::new(config))
    })
}

#[cfg(feature = "sqlite")]
fn sqlite(ctx: &Ctx<'_>) -> Result<Built> {
    use store_sql::{SqlDatabase, SqliteConfig};
    let mut config: SqliteConfig = ctx.parse()?;
    if config.path.trim().is_empty() {
        return Err(ctx.error(
            Some("path"),
            "must not be empty (use \":memory:\" for memory)",
        ));
    }
    config.path = relative_to_file(&ctx.source.path, &config.path);
    let db = SqlDatabase::sqlite(config.clone());
    Ok(Built::resource(db, config))
}

#[cfg(feature = "postgres")]
fn postgres(ctx: &Ctx<'_>) -> Result<Built> {
    use store_sql::{PostgresConfig, SqlDatabase};
    let mut config: PostgresConfig = ctx.parse()?;
    config.ca_file = config
        .ca_file
        .map(|path| relative_to_file(&ctx.source.path, &path));
    let db = SqlDatabase::postgres(config.clone()).map_err(|e| ctx.backend_error(&e))?;
    Ok(Built::resource(db, config))
}

/// A path relative to the entry's file, as written paths mean; `:memory:` stays as it is.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn relative_to_file(file: &std::path::Path, path: &str) -> String {
    let p = std::path::Path::new(path);
    if p.is_absolute() || path == ":memory:" || path.is_empty() {
        return path.to_owned();
    }
    let base = file.parent().unwrap_or(std::path::Path::new("."));
    base.join(p).to_string_lossy().into_owned()
}
