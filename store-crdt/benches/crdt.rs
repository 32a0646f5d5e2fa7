//! `cargo bench -p store-crdt`:
//!
//! 1. local `get` and `set` on a node of a two-node cluster (every write queued for gossip to
//!    the other node) against store-memory, 100 000 keys, 1 and 2 threads;
//! 2. convergence latency: five nodes on loopback under a steady 1 000 writes/s spread over
//!    them; for each write, the time from its acknowledgement on the writer to the moment the
//!    last other node applied it (p50, p99, max; target p99 < 500 ms);
//! 3. anti-entropy cost: two equal nodes holding 100 000 keys; bytes both send per push/pull
//!    exchange (digests and any registers), target a few KiB whatever they hold.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use store_core::Store;
use store_crdt::{CrdtConfig, CrdtEngine, CrdtNode, CrdtStore};
use store_memory::MemoryStore;
use store_testkit::bench::{self, Rng, Row, TargetRow};

const KEYS: usize = 100_000;
const BATCH: u64 = 512;

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], store_testkit::free_port()))
}

/// Starts `n` engines, each joining the first, and waits until each sees all of them.
async fn cluster(n: usize, tune: impl Fn(&mut CrdtConfig)) -> Vec<Arc<CrdtNode>> {
    let addrs: Vec<SocketAddr> = (0..n).map(|_| addr()).collect();
    let mut nodes = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let mut config = CrdtConfig::new(format!("b{}", i + 1), *a);
        if i > 0 {
            config.join = vec![addrs[0]];
        }
        config.secret = b"bench secret".to_vec();
        tune(&mut config);
        let node = Arc::new(CrdtNode::new(config));
        node.start().await.unwrap();
        nodes.push(node);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &nodes {
        let engine = node.engine().unwrap();
        while engine
            .members()
            .await
            .iter()
            .filter(|m| m.state == "alive")
            .count()
            < n
        {
            assert!(Instant::now() < deadline, "the bench cluster did not form");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    nodes
}

fn view(node: &CrdtNode, ns: &str) -> CrdtStore {
    CrdtStore::on_node(node, format!("bench:{ns}"), ns, false).unwrap()
}

/// `get` or `set` of random keys on `store` from `threads` threads.
fn local<S: Store + Clone + 'static>(
    store: &S,
    write: bool,
    threads: usize,
    keys: &Arc<Vec<Arc<str>>>,
    value: &Bytes,
) -> f64 {
    bench::run(threads, |t| {
        let store = store.clone();
        let keys = Arc::clone(keys);
        let value = value.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut rng = Rng::new(t as u64 + 1);
        move || {
            rt.block_on(async {
                for _ in 0..BATCH {
                    let k = &keys[rng.below(KEYS)];
                    if write {
                        store.set(k, value.clone(), None).await.unwrap();
                    } else {
                        std::hint::black_box(store.get(k).await.unwrap());
                    }
                }
            });
            BATCH
        }
    })
}

fn local_rows(rt: &tokio::runtime::Runtime) -> Vec<Row> {
    let keys: Arc<Vec<Arc<str>>> = Arc::new(
        (0..KEYS)
            .map(|i| Arc::from(format!("key:{i:06}")))
            .collect(),
    );
    let value = Bytes::from(vec![0xAB; 64]);
    let nodes = rt.block_on(cluster(2, |_| {}));
    let ours = view(&nodes[0], "local");
    let memory = MemoryStore::builder().max_size(2 * KEYS).build();
    rt.block_on(async {
        for k in keys.iter() {
            ours.set(k, value.clone(), None).await.unwrap();
            memory.set(k, value.clone(), None).await.unwrap();
        }
    });
    let mut rows = Vec::new();
    for (name, write) in [("crdt.get", false), ("crdt.set", true)] {
        for threads in [1, 2] {
            let ops = local(&ours, write, threads, &keys, &value);
            let peer = local(&memory, write, threads, &keys, &value);
            rows.push(Row {
                bench: name.to_owned(),
                threads,
                ops_per_s: ops,
                peers: vec![("store-memory".into(), peer)],
            });
        }
    }
    rt.block_on(async {
        for n in &nodes {
            n.engine().unwrap().kill().await;
        }
    });
    rows
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Five nodes, 1 000 writes/s spread over them; the latency of each write to its last node.
fn convergence(rt: &tokio::runtime::Runtime) -> Vec<TargetRow> {
    const NODES: usize = 5;
    let seconds = if bench::quick() { 2 } else { 20 };
    let writes = 1_000 * seconds;
    rt.block_on(async {
        let nodes = cluster(NODES, |_| {}).await;
        // (key) -> times it became visible on each other node.
        let seen: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
        for node in &nodes {
            let seen = Arc::clone(&seen);
            node.engine().unwrap().on_merge(move |_, key| {
                let now = Instant::now();
                seen.lock().unwrap().entry(key.to_owned()).or_default().push(now);
            });
        }
        let stores: Vec<CrdtStore> = nodes.iter().map(|n| view(n, "converge")).collect();
        let mut acked: Vec<(String, Instant)> = Vec::with_capacity(writes);
        let start = Instant::now();
        for i in 0..writes {
            // A steady rate: write i is due at i ms.
            let due = start + Duration::from_micros(i as u64 * 1_000);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
            let key = format!("w{i:07}");
            stores[i % NODES].set(&key, Bytes::from_static(b"v"), None).await.unwrap();
            acked.push((key, Instant::now()));
        }
        let achieved = writes as f64 / start.elapsed().as_secs_f64();
        // Let the last writes arrive everywhere (or give up after 10 s: they count as lost).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let complete = {
                let seen = seen.lock().unwrap();
                acked.iter().all(|(k, _)| seen.get(k).is_some_and(|v| v.len() >= NODES - 1))
            };
            if complete {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        let mut latencies: Vec<f64> = Vec::new();
        let mut missing = 0;
        for (k, at) in &acked {
            match seen.get(k).filter(|v| v.len() >= NODES - 1) {
                Some(v) => {
                    let last = v.iter().max().copied().unwrap_or(*at);
                    latencies.push(last.saturating_duration_since(*at).as_secs_f64() * 1e3);
                }
                None => missing += 1,
            }
        }
        latencies.sort_by(f64::total_cmp);
        println!(
            "\nconvergence: {writes} writes at {achieved:.0}/s over {NODES} nodes; {missing} not on every node within 10 s"
        );
        for n in &nodes {
            n.engine().unwrap().kill().await;
        }
        let max = if missing > 0 { f64::INFINITY } else { latencies.last().copied().unwrap_or(0.0) };
        vec![
            TargetRow {
                bench: "crdt.converge_p50_ms".into(),
                threads: NODES,
                value: percentile(&latencies, 0.50),
                target: 500.0,
                unit: "ms",
            },
            TargetRow {
                bench: "crdt.converge_p99_ms".into(),
                threads: NODES,
                value: percentile(&latencies, 0.99),
                target: 500.0,
                unit: "ms",
            },
            TargetRow {
                bench: "crdt.converge_max_ms".into(),
                threads: NODES,
                value: max,
                target: 500.0,
                unit: "ms",
            },
        ]
    })
}

/// Two nodes holding the same 100 000 keys: bytes per push/pull exchange once equal.
fn anti_entropy(rt: &tokio::runtime::Runtime) -> TargetRow {
    let keys = if bench::quick() { 20_000 } else { KEYS };
    rt.block_on(async {
        let fast = |c: &mut CrdtConfig| c.push_pull_interval = Duration::from_millis(200);
        let first = cluster(1, fast).await;
        let store = view(&first[0], "ae");
        for i in 0..keys {
            store
                .set(
                    &format!("key:{i:06}"),
                    Bytes::from_static(b"a value of 24 bytes here"),
                    None,
                )
                .await
                .unwrap();
        }
        // The second node joins: the join's push/pull sends it every shard.
        let mut config = CrdtConfig::new("b2", addr());
        config.join = vec![first[0].engine().unwrap().local_addr()];
        config.secret = b"bench secret".to_vec();
        fast(&mut config);
        let second = Arc::new(CrdtNode::new(config));
        let copy = view(&second, "ae");
        second.start().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while copy.usage().map_or(0, |u| u.entries) < keys as u64 {
            assert!(
                Instant::now() < deadline,
                "the second node did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let engines: Vec<CrdtEngine> = [&first[0], &second]
            .iter()
            .map(|n| n.engine().unwrap().clone())
            .collect();
        let sent = |e: &CrdtEngine| {
            e.traffic().push_pull_bytes.load(Ordering::Relaxed)
                + e.traffic().repair_bytes.load(Ordering::Relaxed)
        };
        // Settle: repairs queued before they were equal finish first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (x0, b0) = (
            engines[0].traffic().exchanges.load(Ordering::Relaxed),
            sent(&engines[0]) + sent(&engines[1]),
        );
        while engines[0].traffic().exchanges.load(Ordering::Relaxed) < x0 + 10 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (x1, b1) = (
            engines[0].traffic().exchanges.load(Ordering::Relaxed),
            sent(&engines[0]) + sent(&engines[1]),
        );
        for e in &engines {
            e.kill().await;
        }
        TargetRow {
            bench: "crdt.antientropy_bytes".into(),
            threads: 2,
            value: (b1 - b0) as f64 / (x1 - x0) as f64,
            target: 16_384.0,
            unit: "bytes",
        }
    })
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if wanted("crdt.get") || wanted("crdt.set") {
        let rows = local_rows(&rt);
        bench::report("store-crdt", &rows);
    }
    let mut targets = Vec::new();
    if wanted("crdt.converge") {
        targets.extend(convergence(&rt));
    }
    if wanted("crdt.antientropy") {
        targets.push(anti_entropy(&rt));
    }
    if !targets.is_empty() {
        bench::report_targets("store-crdt", "convergence and anti-entropy", &targets);
    }
}
