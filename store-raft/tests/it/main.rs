//! `store-raft`'s integration tests, in one binary. Every cluster here is real: engines on real
//! loopback TCP sockets, durable in sled in a temporary folder.
//!
//! - `conformance`: the shared suite and model test on a single-node cluster and on a follower
//!   of a three-node cluster.
//! - `cluster`: leader loss, catch-up by snapshot, restart from disk, lost quorum, concurrent
//!   compare-and-swap from every node, membership changes, peer authentication.

mod cluster;
mod conformance;
mod support;
