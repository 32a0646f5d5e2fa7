//! `store.memory`: a bounded, concurrent, in-memory [`Store`](store_core::Store) with TTLs,
//! versions and conditional writes. Data is gone when the process ends.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> store_core::Result<()> {
//! use std::time::Duration;
//! use store_core::{Bytes, ErrorKind, Store, StoreExt};
//! use store_memory::MemoryStore;
//!
//! let store = MemoryStore::builder().max_size(2).build();
//! store.set("a", Bytes::from_static(b"1"), Some(Duration::from_secs(30))).await?;
//! let e = store.put_if_absent("b", Bytes::from_static(b"2"), None).await?;
//! assert_eq!(store.get("b").await?, Some(Bytes::from_static(b"2")));
//!
//! // Full: a new key is refused, an overwrite is not.
//! let full = store.set("c", Bytes::new(), None).await.unwrap_err();
//! assert_eq!(full.kind(), ErrorKind::Unavailable);
//! store.compare_and_swap("b", e.version, Bytes::from_static(b"3"), None).await?;
//! # Ok(()) }
//! ```
//!
//! Layout: 32 shards, each a `RwLock` over a hash map (point operations), an ordered set of its
//! keys (`list` merges the shards' ranges) and an expiry index ordered by deadline (cleanup and
//! the full-store check reclaim from its front). No operation scans the whole map.
//!
//! Memory: an entry costs its key and value plus about 115 bytes of structure (a hash-map
//! bucket, a place in the ordered set, a shared key allocation; `cargo bench -p store-memory`
//! measures it as `memory.bytes_per_key`). Values up to 1 KiB are copied out on every read. A stored value owns exactly its bytes, never a view
//! that keeps a caller's larger buffer alive. `max_size` bounds the entries and `max_bytes` the
//! bytes of keys and values; a write past either fails `Unavailable`, and
//! [`usage`](store_core::Store::usage) reports both figures.
//!
//! Versions come from one store-wide counter starting at 1, taken under the key's shard lock.
//! [`MemoryStore::start`] runs the cleanup timer; expiry itself never waits for it: a key is
//! absent from the instant `now >= deadline`.
//!
//! This store must never do I/O: it is the reference every other backend is compared against.

mod config;
mod store;

pub use config::{DEFAULT_CLEANUP_INTERVAL, DEFAULT_MAX_SIZE, Limits, MemoryConfig};
pub use store::{MemoryStore, MemoryStoreBuilder};
