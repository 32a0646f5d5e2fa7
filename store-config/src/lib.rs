//! Registry files (YAML) to stores: `store.memory`, `store.sql` and its `db.sql.sqlite` /
//! `db.sql.postgres` databases, `store.kv.raft` and `store.kv.crdt`, each behind a cargo
//! feature (`memory`, `sqlite`, `postgres`, `raft`, `crdt`). A `store.kv.raft` entry is a
//! namespace of the node's Raft engine (`raft_node`), which the node's `cluster.raft` section
//! configures; a `store.kv.crdt` entry is a namespace of its gossip engine (`crdt_node`), which
//! `cluster.gossip` configures.
//!
//! ```
//! use store_config::Registry;
//!
//! let yaml = r#"
//! namespace: app
//! entries:
//!   - name: cache
//!     kind: store.memory
//!     max_sise: 10
//! "#;
//! let errors = Registry::builder().load_str("app.yaml", yaml).unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "app.yaml:6:5: entry `app:cache`: field `max_sise`: unknown field `max_sise`, did you mean `max_size`?"
//! );
//! ```
//!
//! Every error names the file, the entry id and the field, with the line and column where they
//! are known, and loading reports every problem it finds, not just the first. Loading does no
//! I/O beyond reading the files; databases connect on first use. [`Registry::start`] starts the
//! background work of `lifecycle.auto_start` entries and [`Registry::shutdown`] stops everything.
//! [`NodeConfig`] reads a node's settings and the registry paths it names.
//!
//! Builders get a [`NodeContext`]: the node's name, data folder and clock, and resources made
//! once per node and shared by every entry that needs them. [`Registry::start`] starts shared
//! resources, then resource entries (databases), then stores; [`Registry::shutdown`] goes the
//! other way.
//!
//! `kinds.rs` is the one list of backends: adding a kind is one entry in its table and one
//! function; each backend's config struct lives in its own crate. This crate must never open a connection while loading.

// Loading runs once at start-up; its errors are values people read, not a hot path to shrink.
#![allow(clippy::result_large_err)]

mod build;
mod cluster;
mod context;
mod error;
mod kinds;
mod node;
mod registry;
mod source;

pub use cluster::{
    ClusterConfig, GossipSettings, RaftMembers, RaftSettings, SecretSource, read_secret,
};
pub use context::NodeContext;
pub use error::{ConfigError, ConfigErrors};
#[cfg(feature = "crdt")]
pub use kinds::crdt_node;
#[cfg(feature = "raft")]
pub use kinds::raft_node;
pub use node::{HttpConfig, NodeConfig};
pub use registry::{Entry, Registry, RegistryBuilder};
