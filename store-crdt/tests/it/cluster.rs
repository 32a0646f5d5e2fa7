//! Real clusters: convergence, catch-up, late joiners, no resurrection, replicated expiry,
//! tombstone collection, durability, the secret.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use store_core::{ListOptions, ManualClock, Store};
use store_crdt::{CrdtConfig, CrdtNode, CrdtStore};

use crate::support::{Cluster, broadcast_only, eventually, fast};

/// Every live entry of a store: key, value, version.
async fn dump(store: &CrdtStore) -> Vec<(String, Bytes, u64)> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(ListOptions::new().limit(1000).with_after(after.clone()))
            .await
            .expect("list");
        out.extend(
            page.items
                .iter()
                .map(|e| (e.key.clone(), e.value.clone(), e.version)),
        );
        if !page.has_more {
            return out;
        }
        after = page.items.last().map(|e| e.key.clone());
    }
}

/// Waits until every running node's `namespace` holds the same entries, and returns them.
async fn converged(cluster: &Cluster, namespace: &str) -> Vec<(String, Bytes, u64)> {
    let stores: Vec<CrdtStore> = cluster
        .running()
        .map(|i| cluster.store(i, namespace))
        .collect();
    let last = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    eventually(&format!("every node holds the same {namespace}"), || {
        let stores = stores.clone();
        let last = std::sync::Arc::clone(&last);
        async move {
            let first = dump(&stores[0]).await;
            for s in &stores[1..] {
                if dump(s).await != first {
                    return false;
                }
            }
            *last.lock().expect("not poisoned") = first;
            true
        }
    })
    .await;

    last.lock().expect("not poisoned").clone()
}

fn v(s: impl Into<String>) -> Bytes {
    Bytes::from(s.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_every_node_converge_including_concurrent_writes_of_one_key() {
    let clock = ManualClock::starting_now();
    let cluster = Cluster::start(3, clock.shared(), fast).await;
    let stores: Vec<CrdtStore> = (0..3).map(|i| cluster.store(i, "plain")).collect();
    let mut tasks = Vec::new();
    for (i, s) in stores.iter().enumerate() {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..50 {
                s.set(&format!("own-{i}-{k}"), v(format!("{i}")), None)
                    .await
                    .expect("set");
                // Every node writes the shared keys too, concurrently with the others.
                s.set(
                    &format!("shared-{}", k % 10),
                    v(format!("from n{}", i + 1)),
                    None,
                )
                .await
                .expect("set");
            }
            s.delete("own-0-0").await.expect("delete");
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let state = converged(&cluster, "plain").await;
    assert_eq!(
        state.iter().filter(|(k, ..)| k.starts_with("own-")).count(),
        149
    );
    assert_eq!(
        state
            .iter()
            .filter(|(k, ..)| k.starts_with("shared-"))
            .count(),
        10
    );
    // Every node answers the same for every single key, not just for the listing.
    for (key, value, version) in &state {
        for s in &stores {
            let e = s.entry(key).await.expect("entry").expect("present");
            assert_eq!((&e.value, e.version), (value, *version), "{key}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_during_writes_catches_up_when_it_returns() {
    let clock = ManualClock::starting_now();
    let mut cluster = Cluster::start(3, clock.shared(), fast).await;
    let n1 = cluster.store(0, "plain");
    for k in 0..40 {
        n1.set(&format!("k{k}"), v("before"), None)
            .await
            .expect("set");
        if k == 20 {
            cluster.stop(2).await;
        }
    }
    let n2 = cluster.store(1, "plain");
    for k in 0..40 {
        n2.set(&format!("k{k}"), v("while n3 was away"), None)
            .await
            .expect("set");
    }
    cluster.restart(2).await;
    let state = converged(&cluster, "plain").await;
    assert_eq!(state.len(), 40);
    assert!(
        state
            .iter()
            .all(|(_, value, _)| value == "while n3 was away")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_with_an_empty_namespace_receives_it_all_large_values_included() {
    let clock = ManualClock::starting_now();
    let mut cluster = Cluster::start(3, clock.shared(), fast).await;
    cluster.stop(2).await;
    let n1 = cluster.store(0, "plain");
    for k in 0..300 {
        n1.set(&format!("k{k:03}"), v(format!("value {k}")), None)
            .await
            .expect("set");
    }
    let large = Bytes::from(vec![7u8; 200_000]);
    n1.set("large", large.clone(), None).await.expect("set");
    // Its folder is empty for `plain`: everything comes from the others.
    cluster.restart(2).await;
    let state = converged(&cluster, "plain").await;
    assert_eq!(state.len(), 301);
    let n3 = cluster.store(2, "plain");
    assert_eq!(n3.get("large").await.expect("get"), Some(large));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_joining_late_receives_the_full_state() {
    let clock = ManualClock::starting_now();
    let cluster = Cluster::start(2, clock.shared(), fast).await;
    let n1 = cluster.store(0, "plain");
    for k in 0..300 {
        n1.set(&format!("k{k:03}"), v(format!("value {k}")), None)
            .await
            .expect("set");
    }
    n1.delete("k000").await.expect("delete");
    let before = converged(&cluster, "plain").await;
    assert_eq!(before.len(), 299);
    // A node the cluster has never seen, joining through the second node.
    let mut config = CrdtConfig::new(
        "late",
        std::net::SocketAddr::from(([127, 0, 0, 1], store_testkit::free_port())),
    );
    config.join = vec![cluster.addrs[1]];
    config.secret = cluster.secret.clone();
    config.clock = clock.shared();
    config.max_clock_skew = Duration::ZERO;
    fast(&mut config);
    let late = CrdtNode::new(config);
    let store = CrdtStore::on_node(&late, "late", "plain", false).expect("view");
    late.start().await.expect("start");
    eventually("the late node holds everything", || {
        let store = store.clone();
        let before = before.clone();
        async move { dump(&store).await == before }
    })
    .await;
    assert_eq!(
        store.get("k000").await.expect("get"),
        None,
        "the delete came too"
    );
    late.engine().expect("started").kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_value_spreads_without_anti_entropy() {
    let clock = ManualClock::starting_now();
    let cluster = Cluster::start(3, clock.shared(), broadcast_only).await;
    let large = Bytes::from(vec![1u8; 300_000]);
    cluster
        .store(0, "plain")
        .set("big", large.clone(), None)
        .await
        .expect("set");
    cluster
        .store(1, "plain")
        .set("small", v("s"), None)
        .await
        .expect("set");
    for i in 0..3 {
        let s = cluster.store(i, "plain");
        eventually(&format!("n{} has both", i + 1), || {
            let s = s.clone();
            let large = large.clone();
            async move {
                s.get("big").await.expect("get") == Some(large)
                    && s.get("small").await.expect("get").is_some()
            }
        })
        .await;
    }
}

/// A node that missed a delete (it was down, its snapshot holds the value) returns: the value
/// must not come back, neither on it nor through it on the others.
async fn no_resurrection(tune: fn(&mut CrdtConfig), anti_entropy: bool) {
    let clock = ManualClock::starting_now();
    let mut cluster = Cluster::start(3, clock.shared(), tune).await;
    let n1 = cluster.store(0, "durable");
    for k in 0..20 {
        n1.set(&format!("k{k}"), v("old"), None).await.expect("set");
    }
    let state = converged(&cluster, "durable").await;
    assert_eq!(state.len(), 20);
    cluster.nodes[2]
        .as_ref()
        .and_then(|n| n.engine())
        .expect("n3")
        .snapshot_now()
        .await
        .expect("snapshot");
    cluster.kill(2).await;
    for k in 0..10 {
        assert!(n1.delete(&format!("k{k}")).await.expect("delete"));
    }
    let n2 = cluster.store(1, "durable");
    eventually("n2 saw the deletes", || {
        let n2 = n2.clone();
        async move { dump(&n2).await.len() == 10 }
    })
    .await;
    cluster.restart(2).await;
    let n3 = cluster.store(2, "durable");
    assert_eq!(
        n3.get("k0").await.expect("get"),
        Some(v("old")),
        "n3 restarted from its snapshot"
    );
    let state = converged(&cluster, "durable").await;
    assert_eq!(state.len(), 10, "the deleted keys stay deleted: {state:?}");
    // And they stay so, through further exchanges.
    let e1 = cluster.nodes[0]
        .as_ref()
        .and_then(|n| n.engine())
        .expect("n1")
        .clone();
    let seen = e1.traffic().exchanges.load(Ordering::Relaxed);
    if anti_entropy {
        eventually("three more exchanges", || {
            let e1 = e1.clone();
            async move { e1.traffic().exchanges.load(Ordering::Relaxed) >= seen + 3 }
        })
        .await;
    }
    for i in 0..3 {
        let s = cluster.store(i, "durable");
        for k in 0..10 {
            assert_eq!(
                s.get(&format!("k{k}")).await.expect("get"),
                None,
                "n{} k{k}",
                i + 1
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_missed_by_a_down_node_is_not_undone_by_anti_entropy() {
    no_resurrection(fast, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_spread_by_broadcast_is_not_undone_when_the_down_node_rejoins() {
    // Push/pull only at join: the live nodes learn the delete by broadcast alone.
    no_resurrection(broadcast_only, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_expires_on_every_node_and_a_later_set_keeps_the_key_everywhere() {
    let clock = ManualClock::starting_now();
    let cluster = Cluster::start(3, clock.shared(), fast).await;
    let stores: Vec<CrdtStore> = (0..3).map(|i| cluster.store(i, "plain")).collect();
    stores[0]
        .set("session", v("s1"), Some(Duration::from_secs(10)))
        .await
        .expect("set");
    stores[0]
        .set("other", v("o"), Some(Duration::from_secs(10)))
        .await
        .expect("set");
    let state = converged(&cluster, "plain").await;
    assert_eq!(state.len(), 2);
    for s in &stores {
        let e = s.entry("session").await.expect("entry").expect("present");
        assert!(
            e.expires_at.is_some(),
            "the deadline travels with the value"
        );
    }
    clock.advance(Duration::from_millis(9_999));
    for s in &stores {
        assert!(s.has("session").await.expect("has"));
    }
    clock.advance(Duration::from_millis(1));
    for (i, s) in stores.iter().enumerate() {
        assert_eq!(
            s.get("session").await.expect("get"),
            None,
            "n{} at the deadline",
            i + 1
        );
    }
    // A later set without TTL replaces the deadline on every node.
    stores[1].set("other", v("kept"), None).await.expect("set");
    clock.advance(Duration::from_secs(60));
    converged(&cluster, "plain").await;
    for s in &stores {
        let e = s.entry("other").await.expect("entry").expect("kept alive");
        assert_eq!((e.value, e.expires_at), (v("kept"), None));
    }
}

fn engine(cluster: &Cluster, i: usize) -> store_crdt::CrdtEngine {
    cluster.nodes[i]
        .as_ref()
        .and_then(|n| n.engine())
        .expect("running")
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_collected_once_every_member_acknowledged_them_and_not_before() {
    let clock = ManualClock::starting_now();
    let mut cluster = Cluster::start(3, clock.shared(), fast).await;
    let n1 = cluster.store(0, "plain");
    for k in 0..20 {
        n1.set(&format!("k{k}"), v("x"), None).await.expect("set");
    }
    converged(&cluster, "plain").await;
    cluster.kill(2).await;
    let e1 = engine(&cluster, 0);
    eventually("n1 finds n3 dead", || {
        let e1 = e1.clone();
        async move {
            e1.members()
                .await
                .iter()
                .any(|m| m.name == "n3" && m.state == "dead")
        }
    })
    .await;
    for k in 0..20 {
        n1.delete(&format!("k{k}")).await.expect("delete");
    }
    let state = converged(&cluster, "plain").await;
    assert!(state.is_empty());
    // Several exchanges and cleanups later, n3 (down, not departed) still holds them back.
    let seen = e1.traffic().exchanges.load(Ordering::Relaxed);
    eventually("five more exchanges", || {
        let e1 = e1.clone();
        async move { e1.traffic().exchanges.load(Ordering::Relaxed) >= seen + 5 }
    })
    .await;
    for i in 0..2 {
        let e = engine(&cluster, i);
        e.cleanup_now();
        assert_eq!(
            e.tombstones(),
            20,
            "n{} keeps its tombstones while n3 is down",
            i + 1
        );
    }
    cluster.restart(2).await;
    for i in 0..3 {
        let e = engine(&cluster, i);
        eventually(&format!("n{} collected its tombstones", i + 1), || {
            let e = e.clone();
            async move { e.tombstones() == 0 }
        })
        .await;
    }
    assert!(converged(&cluster, "plain").await.is_empty());
}

fn with_retention(config: &mut CrdtConfig) {
    fast(config);
    config.tombstone_retention = Duration::from_secs(60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_retention_tombstones_go_after_it_even_with_a_member_down() {
    let clock = ManualClock::starting_now();
    let mut cluster = Cluster::start(3, clock.shared(), with_retention).await;
    let n1 = cluster.store(0, "plain");
    n1.set("k", v("x"), None).await.expect("set");
    converged(&cluster, "plain").await;
    cluster.kill(2).await;
    n1.delete("k").await.expect("delete");
    converged(&cluster, "plain").await;
    let e1 = engine(&cluster, 0);
    e1.cleanup_now();
    assert_eq!(e1.tombstones(), 1, "kept before the retention passed");
    clock.advance(Duration::from_secs(61));
    for i in 0..2 {
        let e = engine(&cluster, i);
        eventually(&format!("n{} dropped the tombstone", i + 1), || {
            let e = e.clone();
            async move { e.tombstones() == 0 }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_namespaces_survive_a_full_cluster_restart_and_plain_ones_do_not() {
    let clock = ManualClock::starting_now();
    let mut cluster = Cluster::start(3, clock.shared(), fast).await;
    for i in 0..3 {
        let durable = cluster.store(i, "durable");
        let plain = cluster.store(i, "plain");
        for k in 0..30 {
            durable
                .set(&format!("n{i}-{k}"), v("d"), None)
                .await
                .expect("set");
            plain
                .set(&format!("n{i}-{k}"), v("p"), None)
                .await
                .expect("set");
        }
        durable.delete(&format!("n{i}-0")).await.expect("delete");
    }
    let before = converged(&cluster, "durable").await;
    assert_eq!(before.len(), 87);
    // Each node writes its snapshot within the snapshot interval; then every node crashes.
    for i in 0..3 {
        let e = engine(&cluster, i);
        let target = e.tombstones();
        let _ = target;
        e.snapshot_now().await.expect("snapshot");
    }
    for i in 0..3 {
        cluster.kill(i).await;
    }
    for i in 0..3 {
        cluster.restart(i).await;
    }
    for i in 0..3 {
        assert_eq!(
            dump(&cluster.store(i, "durable")).await,
            before,
            "n{}",
            i + 1
        );
        assert!(
            dump(&cluster.store(i, "plain")).await.is_empty(),
            "n{}",
            i + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_secret_is_refused() {
    let clock = ManualClock::starting_now();
    let cluster = Cluster::start(2, clock.shared(), fast).await;
    for secret in [&b""[..], b"a wrong secret"] {
        let mut config = CrdtConfig::new(
            "intruder",
            std::net::SocketAddr::from(([127, 0, 0, 1], store_testkit::free_port())),
        );
        config.join = vec![cluster.addrs[0]];
        config.secret = secret.to_vec();
        config.clock = clock.shared();
        config.max_clock_skew = Duration::ZERO;
        fast(&mut config);
        let intruder = CrdtNode::new(config);
        let store = CrdtStore::on_node(&intruder, "x", "plain", false).expect("view");
        let engine = intruder.start().await.expect("start").clone();
        store
            .set("planted", v("evil"), None)
            .await
            .expect("local write");
        // Each join attempt sends the intruder's push/pull state: wait for three attempts.
        let traffic =
            |e: &store_crdt::CrdtEngine| e.traffic().push_pull_bytes.load(Ordering::Relaxed);
        eventually("a first join attempt", || {
            let e = engine.clone();
            async move { traffic(&e) > 0 }
        })
        .await;
        let one = traffic(&engine);
        eventually("two more join attempts", || {
            let e = engine.clone();
            async move { traffic(&e) >= 3 * one }
        })
        .await;
        assert!(!engine.joined(), "secret {secret:?}: joined");
        for i in 0..2 {
            let members = engine_members(&cluster, i).await;
            assert!(!members.contains(&"intruder".to_owned()), "{members:?}");
            assert_eq!(
                cluster.store(i, "plain").get("planted").await.expect("get"),
                None
            );
        }
        engine.kill().await;
    }
}

async fn engine_members(cluster: &Cluster, i: usize) -> Vec<String> {
    engine(cluster, i)
        .members()
        .await
        .into_iter()
        .map(|m| m.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_nodes_exchange_digests_only_whatever_they_hold() {
    let clock = ManualClock::starting_now();
    let cluster = Cluster::start(2, clock.shared(), fast).await;
    let n1 = cluster.store(0, "plain");
    for k in 0..5_000 {
        n1.set(&format!("key-{k:05}"), v("some value of a few bytes"), None)
            .await
            .expect("set");
    }
    converged(&cluster, "plain").await;
    let (e1, e2) = (engine(&cluster, 0), engine(&cluster, 1));
    // Once equal: further exchanges send digests and no registers.
    let settle = |e: &store_crdt::CrdtEngine| {
        (
            e.traffic().exchanges.load(Ordering::Relaxed),
            e.traffic().push_pull_bytes.load(Ordering::Relaxed),
            e.traffic().repair_bytes.load(Ordering::Relaxed),
        )
    };
    // Repairs queued while the writes went on may still be in flight: wait until two
    // exchanges in a row send nothing.
    let mut last = (settle(&e1), settle(&e2));
    eventually("repairs stopped", || {
        let now = (settle(&e1), settle(&e2));
        let quiet = now.0.2 == last.0.2 && now.1.2 == last.1.2 && now.0.0 >= last.0.0 + 2;
        if now.0.2 != last.0.2 || now.1.2 != last.1.2 {
            last = now;
        }
        async move { quiet }
    })
    .await;
    let (x1, p1, r1) = settle(&e1);
    let (_, p2, r2) = settle(&e2);
    eventually("four more exchanges", || {
        let e1 = e1.clone();
        async move { e1.traffic().exchanges.load(Ordering::Relaxed) >= x1 + 4 }
    })
    .await;
    let (x1b, p1b, r1b) = settle(&e1);
    let (_, p2b, r2b) = settle(&e2);
    assert_eq!(
        (r1b - r1, r2b - r2),
        (0, 0),
        "no registers were sent between equal nodes"
    );
    let per_exchange = (p1b - p1 + p2b - p2) / (x1b - x1);
    // Both directions together: 512 digests of 8 bytes each way, and a name and an address.
    assert!(
        per_exchange < 9 * 1024,
        "{per_exchange} bytes of state per exchange"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_requested_at_once_all_succeed() {
    // The timer's, the caller's and the final snapshot share one file: they must not collide.
    let clock = ManualClock::starting_now();
    let cluster = Cluster::start(1, clock.shared(), fast).await;
    let store = cluster.store(0, "durable");
    let e = engine(&cluster, 0);
    let mut tasks = Vec::new();
    for round in 0..20 {
        store
            .set(&format!("k{round}"), v("x"), None)
            .await
            .expect("set");
        let e = e.clone();
        tasks.push(tokio::spawn(async move { e.snapshot_now().await }));
    }
    for t in tasks {
        t.await.expect("task").expect("every snapshot is written");
    }
    assert!(e.snapshot_current());
}
