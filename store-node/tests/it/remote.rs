//! The conformance suite through `RemoteStore` against a live node (memory, SQLite, and a
//! single-node Raft cluster): every case gets a node of its own, whose manual clock (a `test-clock` build) the case's harness moves over HTTP, so expiry
//! cases run exactly as they do in process. `usage_counts_keys_and_values` prints a skip: a
//! remote store's data is not in the test's process (`usage` is `None`).

#[cfg(feature = "test-clock")]
mod live {
    use std::path::Path;

    use store_client::RemoteStore;
    use store_client::harness::{NodeProcess, advance_clock};
    use store_testkit::{Harness, START_MS, TempDir};

    use crate::BIN;

    /// A node whose registry is `registry`, started at the harness clock's time, and the store
    /// `id` on it; the node lives as long as the case.
    pub(super) async fn remote(h: Harness, registry: &str, id: &str) -> RemoteStore {
        remote_with(h, "", registry, id).await
    }

    /// A node whose config also has `node_yaml` (a `cluster:` section).
    pub(super) async fn remote_with(
        h: Harness,
        node_yaml: &str,
        registry: &str,
        id: &str,
    ) -> RemoteStore {
        let dir = TempDir::new("remote");
        std::fs::create_dir_all(dir.join("registry")).expect("registry folder");
        std::fs::write(
            dir.join("node.yaml"),
            format!("data_dir: ./data\n{node_yaml}registry:\n  - ./registry\n"),
        )
        .expect("node.yaml");
        std::fs::write(dir.join("registry/r.yaml"), registry).expect("registry");
        let start = START_MS.to_string();
        let node = NodeProcess::start(
            Path::new(BIN),
            dir.path(),
            &[("STORE_NODE_TEST_CLOCK_MS", &start)],
        )
        .expect("a node with a manual clock");
        let addr = node.addr().to_owned();
        h.on_advance(move |by| {
            advance_clock(&addr, by).expect("the node's clock follows the harness");
        });
        let store = node
            .client()
            .expect("a client")
            .store(id)
            .await
            .expect("the node has the store");
        // The node goes first, then its folder.
        h.keep(node);
        h.keep(dir);
        store
    }

    /// An offset clock (clock faults): the node's stores read the system clock plus the offset
    /// set over HTTP, and a bad offset is refused, naming the parameter.
    #[tokio::test]
    async fn an_offset_clock_moves_the_stores_time_both_ways() {
        use std::time::{Duration, SystemTime};

        use store_client::harness::set_clock_offset;
        use store_core::{PutOptions, Store};

        let dir = TempDir::new("offset");
        std::fs::create_dir_all(dir.join("registry")).expect("registry folder");
        std::fs::write(
            dir.join("node.yaml"),
            "data_dir: ./data\nregistry:\n  - ./registry\n",
        )
        .expect("node.yaml");
        std::fs::write(dir.join("registry/r.yaml"), MEMORY).expect("registry");
        let node = NodeProcess::start(
            Path::new(BIN),
            dir.path(),
            &[("STORE_NODE_TEST_CLOCK_OFFSET", "1")],
        )
        .expect("a node with an offset clock");
        let addr = node.addr().to_owned();
        let store = node.client().unwrap().store("t:s").await.unwrap();
        let ttl = PutOptions::new().ttl(Duration::from_secs(60));
        let deadline = |entry: store_core::Entry| {
            entry
                .expires_at
                .unwrap()
                .duration_since(SystemTime::now())
                .unwrap_or_default()
        };
        assert_eq!(set_clock_offset(&addr, 3_600_000).unwrap(), 200);
        let ahead = deadline(store.put("k", "v".into(), ttl).await.unwrap());
        assert!(ahead > Duration::from_secs(3_600), "{ahead:?}");
        assert_eq!(set_clock_offset(&addr, -30_000).unwrap(), 200);
        let behind = deadline(store.put("k", "v".into(), ttl).await.unwrap());
        assert!(behind < Duration::from_secs(31), "{behind:?}");
        let far = 400 * 24 * 3_600_000_i64;
        assert_eq!(set_clock_offset(&addr, far).unwrap(), 400);
    }

    pub(super) const MEMORY: &str = "\
namespace: t
entries:
  - name: s
    kind: store.memory
";

    pub(super) const SQLITE: &str = "\
namespace: t
entries:
  - name: db
    kind: db.sql.sqlite
    path: ../data/t.db
  - name: s
    kind: store.sql
    database: db
    table_name: kv
    version_column_name: version
    create_table: true
";
}

#[cfg(feature = "test-clock")]
mod memory {
    use store_testkit::Harness;

    store_testkit::conformance_suite!(|h: Harness| super::live::remote(
        h,
        super::live::MEMORY,
        "t:s"
    ));
}

#[cfg(feature = "test-clock")]
mod sqlite {
    use store_testkit::Harness;

    store_testkit::conformance_suite!(|h: Harness| super::live::remote(
        h,
        super::live::SQLITE,
        "t:s"
    ));
}

/// A single-node Raft cluster: every write through the log, every read through the read index.
#[cfg(feature = "test-clock")]
mod raft {
    use store_testkit::{Harness, Options};

    const OPTIONS: Options = Options {
        skip: None,
        // Each sequence starts a node and waits for its election.
        model_cases: Some(24),
    };

    async fn raft(h: Harness) -> store_client::RemoteStore {
        let port = store_testkit::free_port();
        // The node's manual clock stands still unless a case moves it: a new leader waiting for
        // its clock to run `max_clock_skew` past its takeover would wait for ever.
        let cluster = format!(
            "cluster:\n  name: solo\n  raft:\n    bind: 127.0.0.1:{port}\n    initial_members: {{solo: 127.0.0.1:{port}}}\n    heartbeat_interval: 50ms\n    election_timeout: 300ms\n    max_clock_skew: 0s\n"
        );
        super::live::remote_with(
            h,
            &cluster,
            "namespace: t\nentries:\n  - name: s\n    kind: store.kv.raft\n    namespace: suite\n",
            "t:s",
        )
        .await
    }

    store_testkit::conformance_suite!(options = OPTIONS; raft);
}

/// A single gossip node: `store.kv.crdt` through the HTTP API.
#[cfg(feature = "test-clock")]
mod crdt {
    use store_testkit::{Harness, Options};

    const OPTIONS: Options = Options {
        skip: None,
        // Each sequence starts a node process.
        model_cases: Some(24),
    };

    async fn crdt(h: Harness) -> store_client::RemoteStore {
        let port = store_testkit::free_port();
        let cluster = format!("cluster:\n  name: solo\n  gossip:\n    bind: 127.0.0.1:{port}\n");
        super::live::remote_with(
            h,
            &cluster,
            "namespace: t\nentries:\n  - name: s\n    kind: store.kv.crdt\n    namespace: suite\n",
            "t:s",
        )
        .await
    }

    store_testkit::conformance_suite!(options = OPTIONS; crdt);
}

#[cfg(not(feature = "test-clock"))]
#[test]
fn conformance_through_remote_store() {
    store_testkit::loud_skip(
        "conformance_through_remote_store",
        "store-node was built without its `test-clock` feature; run \
         `cargo test -p store-node --features test-clock`",
    );
}
