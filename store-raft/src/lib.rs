//! `store.kv.raft`: a linearizable, replicated [`Store`](store_core::Store).
//!
//! A node runs one [`RaftEngine`]: one Raft group ([openraft]) whose log and state machine are
//! durable in [sled] under one folder. Every `store.kv.raft` entry of the node is a
//! [`RaftStore`], a namespace view of that group: its keys are stored as `<namespace>:<key>`.
//!
//! - **Writes** are log entries. A follower forwards them to the leader over the internode
//!   connection; the leader stamps its clock reading into the entry, and the state machine
//!   evaluates conditions and deadlines by that stamp, so every replica reaches the same state.
//!   A write's version is the log index of its entry.
//! - **Reads** are linearizable on every node: the node obtains a read index from the leader
//!   (which confirms its leadership with a quorum), waits until it has applied that far, and
//!   reads locally, judging expiry by the leader's clock. A view with
//!   [`ReadConsistency::Serializable`] reads locally without asking.
//! - **Failures** are bounded by the request timeout: a write that cannot reach a quorum fails
//!   `Unavailable` when it is known not to have been applied and `Timeout` (indeterminate)
//!   otherwise; it never hangs.
//! - **Durability**: an append is acknowledged only after sled flushed it; a snapshot is taken
//!   every `snapshot_threshold` applied entries and the log is purged behind it; a node that
//!   fell behind the purged log receives the snapshot. Snapshots are files beside the database
//!   (`snapshots/`), written, sent in chunks and installed a pair at a time, never whole in
//!   memory.
//! - **Internode transport**: two persistent TCP connections per peer (frames over 64 KiB, such
//!   as snapshot chunks and large entries, on one, so heartbeats and votes on the other never
//!   wait behind their bytes), length-delimited postcard
//!   frames with request ids (many requests in flight), mutual HMAC-SHA256 challenge-response on
//!   the cluster secret before anything else, then every frame sealed (ChaCha20-Poly1305, keys
//!   per connection and direction, sequence numbers as nonces: nothing forged or replayed opens).
//! - **Identity**: every data folder has a random incarnation and the leader records the
//!   cluster id and each member's incarnation in the state machine; a peer of another cluster, or
//!   a member whose folder was wiped (it lost its vote and could vote twice in a term), is refused
//!   by every node until it is removed and added back as a new member.
//! - **Snapshot installs** fill a second state tree and swap it in: a read sees the state before
//!   or after, never a tree half replaced.
//!
//! Feature `fault-injection` (debug builds only) compiles in the defects of the cluster tests'
//! negative controls (`store_core::backend::fault`); they stay off unless a node turns one on.
//!
//! ```no_run
//! # async fn demo() -> store_core::Result<()> {
//! use std::collections::BTreeMap;
//! use store_core::Store;
//! use store_raft::{Members, RaftConfig, RaftEngine, RaftStore, ReadConsistency};
//!
//! let members = BTreeMap::from([("n1".to_owned(), "127.0.0.1:7800".to_owned())]);
//! let config = RaftConfig::new("n1", "./data/_sys/raft", "127.0.0.1:7800".parse().unwrap(),
//!     Members::Founding(members));
//! let engine = RaftEngine::start(config).await?;
//! let store = RaftStore::new(&engine, "app:locks", "locks", ReadConsistency::Linearizable)?;
//! store.set("leader", "n1".into(), None).await?;
//! # Ok(()) }
//! ```

#![allow(
    clippy::result_large_err,
    reason = "openraft's storage and network traits return its errors by value; their size is openraft's"
)]

mod engine;
mod log;
mod net;
mod network;
mod sm;
mod snapshot;
mod store;
mod types;

pub use engine::{ClusterStatus, MemberStatus, Members, RaftConfig, RaftEngine, RaftNode, Role};
pub use store::RaftStoreConfig;
pub use store::{RaftStore, ReadConsistency, check_namespace};
