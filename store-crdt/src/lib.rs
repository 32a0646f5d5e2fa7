//! `store.kv.crdt`: an always-writable, eventually consistent replicated
//! [`Store`](store_core::Store).
//!
//! A node runs one [`CrdtEngine`]; every `store.kv.crdt` entry of the node is a
//! [`CrdtStore`], a namespace of it.
//!
//! - **Data**: each key is a last-writer-wins register ([crdts]' `LWWReg`) whose marker is a
//!   hybrid logical clock reading `(physical ms, logical counter, node id)`. The register holds
//!   the value and its absolute deadline; a delete writes a tombstone. Merging keeps the later
//!   marker, so it is commutative, associative and idempotent: nodes that saw the same writes in
//!   any order hold the same state. A version is the marker as a `u64` (`ms << 11 | logical`).
//! - **Spreading** ([memberlist]): a write applies locally at once; a background flusher packs
//!   written registers into packet-sized messages, sends each to every online member and queues
//!   it for gossip, which retransmits it to several random peers; writes too large for a packet
//!   go over TCP to every online member.
//!   Anti-entropy on every push/pull compares 512 shard digests and sends only the shards that
//!   differ.
//! - **Expiry**: every replica judges the register's deadline by its own clock; expired values
//!   become tombstones of the same write.
//! - **Clocks** ([`CrdtConfig::max_clock_skew`], default 500 ms): every probe ack carries the
//!   peer's wall clock. A node whose clock is further than the bound from most of its peers'
//!   (an hour ahead after a bad NTP step) serves nothing, `Unavailable`, from the first request
//!   after the step until its clock is set right; a register stamped further than the bound
//!   ahead of a node's clock is not merged there (nor moves its hybrid clock) until its clock
//!   gets within the bound; a node whose hybrid clock is itself that far ahead of its wall clock
//!   takes no writes. So one clock far ahead cannot drag every node's versions with it. With
//!   two nodes neither clock is the odd one out: only the refusal of far-ahead stamps holds.
//! - **Tombstones** are collected once every member this node has seen acknowledged them
//!   (their shard digest matched), or after `tombstone_retention` when set.
//! - **Durability**: `durable` namespaces are snapshotted under the engine's folder (temporary
//!   file, fsync, rename) every `snapshot_interval` and at shutdown, and replayed at start.
//! - **Security**: with a cluster secret, every packet and stream is sealed with AES-256-GCM
//!   under a key derived from it; a message without it is refused. Outgoing connections leave
//!   from the node's bind address.
//!
//! Feature `fault-injection` (debug builds only) compiles in the `drop-crdt-merge` and
//! `ignore-clock-skew` defects of the cluster tests' negative controls
//! (`store_core::backend::fault`); they stay off unless a node turns one on.
//!
//! ```no_run
//! # async fn demo() -> store_core::Result<()> {
//! use store_core::Store;
//! use store_crdt::{CrdtConfig, CrdtNode, CrdtStore};
//!
//! let node = CrdtNode::new(CrdtConfig::new("n1", "127.0.0.1:7900".parse().unwrap()));
//! let store = CrdtStore::on_node(&node, "app:sessions", "sessions", false)?;
//! node.start().await?;
//! store.set("user:1", "alice".into(), None).await?;
//! # Ok(()) }
//! ```

mod bound;
mod engine;
pub mod hlc;
mod skew;
mod state;
mod store;

pub use engine::{CrdtConfig, CrdtEngine, CrdtNode, GossipMember, Traffic};
pub use state::{Cell, Reg, SHARDS};
pub use store::{CrdtStore, CrdtStoreConfig, check_namespace};
