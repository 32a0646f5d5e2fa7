//! `cargo bench -p store-node --bench memory` (also `cargo xtask bench memory`): resident memory
//! per stored key of the cluster stores, against `store.memory` in the same run.
//!
//! Three setups of real `store-node` processes of this build, one after the other on this
//! machine: one node serving a `store.memory` store (the peer); three nodes serving one
//! `store.kv.raft` store (snapshotting every 1 000 entries, so the load runs through several
//! snapshots and log purges); three nodes serving one durable `store.kv.crdt` store. Each is loaded
//! with a warm-up of keys (connections, buffers, allocator arenas), then the measured keys
//! (50 000; 5 000 in quick mode): 10-byte keys, 64-byte values, written through one node's HTTP
//! API by 64 concurrent clients. Once every node holds the last key, the growth of each node's
//! resident set (`VmRSS`, polled until it holds still) over the measured keys is its bytes per
//! key. Rows go to `target/bench/store-node.jsonl`: bytes per key per store (the mean over its
//! nodes, and its largest node) with store.memory's as the peer, and each cluster store against
//! the target of at most twice store.memory's.

#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

use std::path::Path;
use std::time::{Duration, Instant};

use store_client::Client;
use store_client::harness::NodeProcess;
use store_core::{Bytes, PutOptions};
use store_testkit::bench::{self, SizeRow, TargetRow};
use store_testkit::{TempDir, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_store-node");
const VALUE: [u8; 64] = [0xAB; 64];
const STORE: &str = "bench:kv";
const PATIENCE: Duration = Duration::from_secs(120);
/// The raft nodes snapshot every this many entries, so the load runs through several snapshots
/// and log purges, as a long-lived node does (the default, 10 000 entries, is more than the
/// measured writes make once the leader packs them).
const SNAPSHOT_THRESHOLD: u64 = 1_000;

fn key(i: usize) -> String {
    format!("k{i:09}")
}

/// The resident memory of a process, in bytes (Linux `/proc`).
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The resident sets of `nodes` once they hold still: sampled every 250 ms until two samples
/// in a row are within 1% of each other (or 20 s passed), so a background snapshot or
/// compaction has finished.
fn settled_rss(nodes: &[NodeProcess]) -> Vec<u64> {
    let sample = || nodes.iter().map(|n| rss_of(n.pid())).collect::<Vec<u64>>();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = sample();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = sample();
        let still = now
            .iter()
            .zip(&last)
            .all(|(a, b)| a.abs_diff(*b) * 100 <= (*b).max(1));
        if still || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

fn write_node(dir: &Path, cluster: &str, registry: &str) {
    std::fs::create_dir_all(dir.join("registry")).unwrap();
    std::fs::write(
        dir.join("node.yaml"),
        format!("data_dir: ./data\n{cluster}registry:\n  - ./registry\n"),
    )
    .unwrap();
    std::fs::write(dir.join("registry/bench.yaml"), registry).unwrap();
}

fn launch(dirs: &[std::path::PathBuf]) -> Vec<NodeProcess> {
    let nodes: Vec<NodeProcess> = dirs
        .iter()
        .map(|d| NodeProcess::launch(Path::new(BIN), d, &[("RUST_LOG", "error")]).unwrap())
        .collect();
    for n in &nodes {
        n.wait_healthy().unwrap();
    }
    nodes
}

fn memory_node(root: &Path) -> Vec<NodeProcess> {
    let dir = root.join("memory");
    write_node(
        &dir,
        "",
        "namespace: bench\nentries:\n  - name: kv\n    kind: store.memory\n    max_size: 1000000\n",
    );
    launch(&[dir])
}

fn raft_cluster(root: &Path) -> Vec<NodeProcess> {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let members: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("      n{}: 127.0.0.1:{p}\n", i + 1))
        .collect();
    let dirs: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let dir = root.join(format!("raft-n{}", i + 1));
            write_node(
                &dir,
                &format!(
                    "cluster:\n  name: n{}\n  raft:\n    bind: 127.0.0.1:{port}\n    snapshot_threshold: {SNAPSHOT_THRESHOLD}\n    initial_members:\n{members}",
                    i + 1
                ),
                "namespace: bench\nentries:\n  - name: kv\n    kind: store.kv.raft\n    namespace: kv\n  - name: local\n    kind: store.kv.raft\n    namespace: kv\n    consistency: serializable\n",
            );
            dir
        })
        .collect();
    launch(&dirs)
}

fn crdt_cluster(root: &Path) -> Vec<NodeProcess> {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let dirs: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let join = if i == 0 {
                String::new()
            } else {
                format!("    join: [127.0.0.1:{}]\n", ports[0])
            };
            let dir = root.join(format!("crdt-n{}", i + 1));
            write_node(
                &dir,
                &format!("cluster:\n  name: n{}\n  gossip:\n    bind: 127.0.0.1:{port}\n{join}", i + 1),
                "namespace: bench\nentries:\n  - name: kv\n    kind: store.kv.crdt\n    namespace: kv\n    durable: true\n",
            );
            dir
        })
        .collect();
    launch(&dirs)
}

/// Writes keys `from..to` through `addr`, 64 clients at once.
fn load(rt: &tokio::runtime::Runtime, addr: &str, from: usize, to: usize) {
    let client = Client::new(addr).unwrap();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in 0..64 {
            let client = client.clone();
            tasks.spawn(async move {
                for i in (from + chunk..to).step_by(64) {
                    client
                        .put(
                            STORE,
                            &key(i),
                            Bytes::from_static(&VALUE),
                            PutOptions::new(),
                        )
                        .await
                        .unwrap();
                }
            });
        }
        while let Some(t) = tasks.join_next().await {
            t.unwrap();
        }
    });
}

/// Waits until every node answers `key` from its own state (`store`: a serializable or local
/// view).
fn until_everywhere(rt: &tokio::runtime::Runtime, nodes: &[NodeProcess], store: &str, key: &str) {
    let deadline = Instant::now() + PATIENCE;
    for n in nodes {
        let client = n.client().unwrap();
        while !rt.block_on(client.has(store, key)).unwrap_or(false) {
            assert!(
                Instant::now() < deadline,
                "{} does not hold {key} within {PATIENCE:?}",
                n.addr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Loads `nodes` with the warm-up and the measured keys; each node's bytes per measured key.
fn measure(
    rt: &tokio::runtime::Runtime,
    nodes: &[NodeProcess],
    local: &str,
    keys: usize,
) -> Vec<f64> {
    let warm = keys / 10;
    load(rt, nodes[0].addr(), 0, warm);
    until_everywhere(rt, nodes, local, &key(warm - 1));
    let before = settled_rss(nodes);
    load(rt, nodes[0].addr(), warm, warm + keys);
    until_everywhere(rt, nodes, local, &key(warm + keys - 1));
    let after = settled_rss(nodes);
    before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.saturating_sub(*b) as f64 / keys as f64)
        .collect()
}

fn main() {
    let keys = if bench::quick() { 5_000 } else { 50_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let root = TempDir::new("memory-bench");
    let mut per_store: Vec<(&str, Vec<f64>)> = Vec::new();
    {
        let nodes = memory_node(root.path());
        per_store.push(("store.memory", measure(&rt, &nodes, STORE, keys)));
    }
    {
        let nodes = raft_cluster(root.path());
        per_store.push(("store.kv.raft", measure(&rt, &nodes, "bench:local", keys)));
    }
    {
        let nodes = crdt_cluster(root.path());
        per_store.push(("store.kv.crdt", measure(&rt, &nodes, STORE, keys)));
    }
    println!("\nresident memory per key, {keys} keys of 10 + 64 bytes (each node's growth)\n");
    println!("| store          | per node (B/key)");
    println!("|----------------|-----------------");
    for (store, nodes) in &per_store {
        let shown: Vec<String> = nodes.iter().map(|b| format!("{b:.0}")).collect();
        println!("| {store:<14} | {}", shown.join(", "));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let peer = mean(&per_store[0].1).max(1.0);
    let mut sizes = Vec::new();
    let mut targets = Vec::new();
    for (store, nodes) in &per_store[1..] {
        let name = store.trim_start_matches("store.");
        sizes.push(SizeRow {
            bench: format!("{name}.rss_per_key"),
            value_bytes: VALUE.len(),
            bytes_per_key: mean(nodes),
            peers: vec![("store.memory".to_owned(), peer)],
        });
        targets.push(TargetRow {
            bench: format!("{name}.rss_per_key_max"),
            threads: nodes.len(),
            value: max(nodes),
            target: 2.0 * peer,
            unit: "bytes",
        });
    }
    bench::report_sizes("store-node", &sizes);
    bench::report_targets(
        "store-node",
        "resident memory per key on the fullest node, against twice store.memory's",
        &targets,
    );
}
