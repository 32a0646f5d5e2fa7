//! The shared conformance suite and model test, on a single-node cluster and on a follower of a
//! three-node cluster (every write forwarded, every read through the leader's read index).

use store_raft::RaftStore;
use store_testkit::{Harness, Options};

use crate::support::{Cluster, fast};

/// A fresh cluster per sequence costs an election; fewer sequences keep the suite bounded.
const OPTIONS: Options = Options {
    skip: None,
    model_cases: Some(24),
};

async fn single(h: Harness) -> RaftStore {
    let cluster = Cluster::start(1, h.shared_clock(), fast).await;
    cluster.leader().await;
    let store = cluster.store(0, "suite");
    h.keep(cluster);
    store
}

async fn follower(h: Harness) -> RaftStore {
    let cluster = Cluster::start(3, h.shared_clock(), fast).await;
    let f = cluster.follower().await;
    let store = cluster.store(f, "suite");
    h.keep(cluster);
    store
}

mod single_node {
    store_testkit::conformance_suite!(options = super::OPTIONS; super::single);
}

mod on_a_follower {
    store_testkit::conformance_suite!(options = super::OPTIONS; super::follower);
}
