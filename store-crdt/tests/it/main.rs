//! `store-crdt`'s integration tests, in one binary. Every cluster here is real: engines talking
//! memberlist over loopback UDP and TCP, snapshots in a temporary folder.
//!
//! - `conformance`: the shared suite and model test on a single node and on one node of a
//!   three-node cluster.
//! - `cluster`: convergence, catch-up, late joiners, no resurrection, replicated expiry,
//!   tombstone collection, durability across restarts, the secret.
//! - `skew`: the clock guard, with nodes an hour ahead or behind their peers.

mod cluster;
mod conformance;
mod skew;
mod support;
