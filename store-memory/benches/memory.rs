//! `cargo bench -p store-memory`: store-memory against moka (a bounded cache with TTL support)
//! and dashmap (a bare concurrent map) on the same workloads, 100 000 keys, 1 and 2 threads;
//! then the memory each holds per entry (`memory.bytes_per_key`), counted by the allocator.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cap::Cap;
use dashmap::DashMap;
use moka::sync::Cache;
use store_core::Store;
use store_memory::MemoryStore;
use store_testkit::bench::{self, Rng, Row, SizeRow};

/// Counts the bytes this process has allocated and not freed.
#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

const KEYS: usize = 100_000;
const BATCH: u64 = 512;
const TTL: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy)]
enum Work {
    Get,
    Set,
    SetTtl,
    /// 90 % get, 10 % set.
    Mix,
}

impl Work {
    fn name(self) -> &'static str {
        match self {
            Work::Get => "memory.get",
            Work::Set => "memory.set",
            Work::SetTtl => "memory.set_ttl",
            Work::Mix => "memory.mix90",
        }
    }

    fn is_write(self, rng: &mut Rng) -> bool {
        match self {
            Work::Get => false,
            Work::Set | Work::SetTtl => true,
            Work::Mix => rng.below(10) == 0,
        }
    }
}

fn ours(work: Work, threads: usize, keys: &Arc<Vec<Arc<str>>>, value: &Bytes) -> f64 {
    let store = MemoryStore::builder().max_size(2 * KEYS).build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for k in keys.iter() {
            store.set(k, value.clone(), None).await.unwrap();
        }
    });
    let ttl = matches!(work, Work::SetTtl).then_some(TTL);
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
                    if work.is_write(&mut rng) {
                        store.set(k, value.clone(), ttl).await.unwrap();
                    } else {
                        std::hint::black_box(store.get(k).await.unwrap());
                    }
                }
            });
            BATCH
        }
    })
}

/// Runs `work` on a synchronous peer through its `get` and `insert`.
fn run_peer<P: Clone + Send + 'static>(
    work: Work,
    threads: usize,
    keys: &Arc<Vec<Arc<str>>>,
    value: &Bytes,
    peer: P,
    get: fn(&P, &Arc<str>),
    insert: fn(&P, Arc<str>, Bytes),
) -> f64 {
    for k in keys.iter() {
        insert(&peer, Arc::clone(k), value.clone());
    }
    bench::run(threads, |t| {
        let peer = peer.clone();
        let keys = Arc::clone(keys);
        let value = value.clone();
        let mut rng = Rng::new(t as u64 + 1);
        move || {
            for _ in 0..BATCH {
                let k = &keys[rng.below(KEYS)];
                if work.is_write(&mut rng) {
                    insert(&peer, Arc::clone(k), value.clone());
                } else {
                    get(&peer, k);
                }
            }
            BATCH
        }
    })
}

fn moka(work: Work, threads: usize, keys: &Arc<Vec<Arc<str>>>, value: &Bytes) -> f64 {
    let mut builder = Cache::builder().max_capacity(2 * KEYS as u64);
    if matches!(work, Work::SetTtl) {
        builder = builder.time_to_live(TTL);
    }
    let cache: Cache<Arc<str>, Bytes> = builder.build();
    run_peer(
        work,
        threads,
        keys,
        value,
        cache,
        |c, k| {
            std::hint::black_box(c.get(k));
        },
        |c, k, v| c.insert(k, v),
    )
}

fn dashmap(work: Work, threads: usize, keys: &Arc<Vec<Arc<str>>>, value: &Bytes) -> f64 {
    let map: Arc<DashMap<Arc<str>, Bytes>> = Arc::new(DashMap::new());
    run_peer(
        work,
        threads,
        keys,
        value,
        map,
        |m, k| {
            std::hint::black_box(m.get(k).map(|v| v.clone()));
        },
        |m, k, v| {
            m.insert(k, v);
        },
    )
}

/// Bytes allocated per entry by `fill` (which stores `KEYS` entries) and still held by what it
/// returns: every allocation of the structure, its keys and its values.
fn bytes_per_key<T>(fill: impl FnOnce() -> T) -> f64 {
    let before = ALLOCATOR.allocated();
    let held = fill();
    let after = ALLOCATOR.allocated();
    drop(held);
    after.saturating_sub(before) as f64 / KEYS as f64
}

/// `memory.bytes_per_key` for values of `len` bytes: each entry holds a 10-byte key and a value
/// of its own, in our store, moka and dashmap. Keys arrive in random order, as a cache's do (in
/// order, B-tree nodes fill differently and the figures move by a few bytes).
fn size_row(len: usize) -> SizeRow {
    let mut keys: Vec<String> = (0..KEYS).map(|i| format!("key{i:07}")).collect();
    let mut rng = Rng::new(7);
    for i in (1..keys.len()).rev() {
        keys.swap(i, rng.below(i + 1));
    }
    let value = |i: usize| Bytes::from(vec![i as u8; len]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ours = bytes_per_key(|| {
        let store = MemoryStore::builder().max_size(2 * KEYS).build();
        rt.block_on(async {
            for (i, k) in keys.iter().enumerate() {
                store.set(k, value(i), None).await.unwrap();
            }
        });
        store
    });
    let moka = bytes_per_key(|| {
        let cache: Cache<Arc<str>, Bytes> = Cache::builder().max_capacity(2 * KEYS as u64).build();
        for (i, k) in keys.iter().enumerate() {
            cache.insert(Arc::from(k.as_str()), value(i));
        }
        cache.run_pending_tasks();
        cache
    });
    let dashmap = bytes_per_key(|| {
        let map: DashMap<Arc<str>, Bytes> = DashMap::new();
        for (i, k) in keys.iter().enumerate() {
            map.insert(Arc::from(k.as_str()), value(i));
        }
        map
    });
    SizeRow {
        bench: "memory.bytes_per_key".to_owned(),
        value_bytes: len,
        bytes_per_key: ours,
        peers: vec![("moka".into(), moka), ("dashmap".into(), dashmap)],
    }
}

fn main() {
    let keys: Arc<Vec<Arc<str>>> = Arc::new(
        (0..KEYS)
            .map(|i| Arc::from(format!("key:{i:06}")))
            .collect(),
    );
    let value = Bytes::from(vec![0xAB; 64]);
    // `cargo bench -p store-memory -- get` runs only workloads whose name contains "get".
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mut rows = Vec::new();
    for work in [Work::Get, Work::Set, Work::SetTtl, Work::Mix] {
        if !filters.is_empty() && !filters.iter().any(|f| work.name().contains(f.as_str())) {
            continue;
        }
        for threads in [1, 2] {
            let ops = ours(work, threads, &keys, &value);
            let moka_ops = moka(work, threads, &keys, &value);
            let dash_ops = dashmap(work, threads, &keys, &value);
            rows.push(Row {
                bench: work.name().to_owned(),
                threads,
                ops_per_s: ops,
                peers: vec![("moka".into(), moka_ops), ("dashmap".into(), dash_ops)],
            });
        }
    }
    if !rows.is_empty() {
        bench::report("store-memory", &rows);
    }
    if filters.is_empty()
        || filters
            .iter()
            .any(|f| "memory.bytes_per_key".contains(f.as_str()))
    {
        let sizes: Vec<SizeRow> = [64, 1024].into_iter().map(size_row).collect();
        bench::report_sizes("store-memory", &sizes);
    }
}
