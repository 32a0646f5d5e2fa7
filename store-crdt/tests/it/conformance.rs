//! The shared conformance suite and model test, on a single node and on one node of a
//! three-node cluster (every write broadcast to two peers while the suite reads locally).

use store_crdt::CrdtStore;
use store_testkit::{Harness, Options};

use crate::support::{Cluster, fast};

/// A fresh cluster per sequence costs a join; fewer sequences keep the suite bounded.
const OPTIONS: Options = Options {
    skip: None,
    model_cases: Some(32),
};

async fn single(h: Harness) -> CrdtStore {
    let cluster = Cluster::start(1, h.shared_clock(), fast).await;
    let store = cluster.store(0, "suite");
    h.keep(cluster);
    store
}

async fn member_of_three(h: Harness) -> CrdtStore {
    let cluster = Cluster::start(3, h.shared_clock(), fast).await;
    let store = cluster.store(1, "suite");
    h.keep(cluster);
    store
}

mod single_node {
    store_testkit::conformance_suite!(options = super::OPTIONS; super::single);
}

mod member_of_three {
    store_testkit::conformance_suite!(options = super::OPTIONS; super::member_of_three);
}
