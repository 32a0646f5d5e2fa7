//! `cargo bench -p store-node --bench raft` (also `cargo xtask bench raft`): `store.kv.raft`
//! against etcd, both as three processes on loopback on this machine, in the same run, under the
//! same load generator.
//!
//! - **Ours**: three `store-node` processes of this build, a three-node Raft cluster (default
//!   timings), serving one `store.kv.raft` store; clients speak the HTTP API over keep-alive
//!   connections (`store-client`, one connection per client).
//! - **Peer**: three `etcd` processes (Debian's `etcd-server`, 3.4), clients speak its native
//!   gRPC API (tonic, one HTTP/2 channel per client; `Put` and `Range` of `etcdserverpb.KV`,
//!   their messages declared below with prost). etcd's `Range` is linearizable by default.
//!
//! Workload: 10 000 keys preloaded, 64-byte values; `raft.put` writes a random key,
//! `raft.get` reads one linearizably, at 1 and 64 concurrent clients spread over the three
//! nodes. Both clusters run for the whole bench; each cell is the median of three interleaved
//! rounds (one in quick mode). Rows go to `target/bench/store-raft.jsonl` with `peer: "etcd"`,
//! followed by the disk's fsync rate (one writer), the ceiling of any one-client durable write.
//!
//! etcd is not installed by the bench: without it (or `STORE_BENCH_ETCD=/path/to/etcd`) the
//! bench prints how to get it and a `SKIPPED` line; `STORE_BENCH_REQUIRE_ETCD=1` (CI) makes that a
//! failure.

#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use store_client::Client;
use store_client::harness::NodeProcess;
use store_core::Bytes;
use store_core::PutOptions;
use store_testkit::bench::{self, Rng, Row};
use store_testkit::{TempDir, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_store-node");

/// The two etcd v3 RPCs the bench calls, from etcd's `rpc.proto` (fields the bench does not use
/// are left out; protobuf decoding skips them).
mod etcd {
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::transport::Channel;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutResponse {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "5")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeResponse {
        #[prost(message, repeated, tag = "2")]
        pub kvs: Vec<KeyValue>,
    }

    /// One client: its own HTTP/2 connection to one member.
    #[derive(Clone)]
    pub struct Kv(tonic::client::Grpc<Channel>);

    impl Kv {
        pub async fn connect(endpoint: &str) -> Result<Self, tonic::transport::Error> {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))?
                .tcp_nodelay(true)
                .connect()
                .await?;
            Ok(Self(tonic::client::Grpc::new(channel)))
        }

        pub async fn put(&mut self, key: &str, value: &[u8]) -> Result<(), tonic::Status> {
            self.0
                .ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let codec = tonic::codec::ProstCodec::<PutRequest, PutResponse>::default();
            let request = PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.to_vec(),
            };
            self.0
                .unary(
                    tonic::Request::new(request),
                    PathAndQuery::from_static("/etcdserverpb.KV/Put"),
                    codec,
                )
                .await
                .map(|_| ())
        }

        /// A linearizable read of one key (etcd's default).
        pub async fn get(&mut self, key: &str) -> Result<Vec<KeyValue>, tonic::Status> {
            self.0
                .ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let codec = tonic::codec::ProstCodec::<RangeRequest, RangeResponse>::default();
            let request = RangeRequest {
                key: key.as_bytes().to_vec(),
            };
            let answer = self
                .0
                .unary(
                    tonic::Request::new(request),
                    PathAndQuery::from_static("/etcdserverpb.KV/Range"),
                    codec,
                )
                .await?;
            Ok(answer.into_inner().kvs)
        }
    }
}
const KEYS: usize = 10_000;
const VALUE: [u8; 64] = [0xAB; 64];
const CLIENTS: [usize; 2] = [1, 64];
const STORE: &str = "bench:kv";

fn key(i: usize) -> String {
    format!("k{i:05}")
}

/// The etcd binary, if there is one.
fn etcd_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("STORE_BENCH_ETCD") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
}

/// Three `store-node` processes forming one cluster.
fn start_ours(root: &Path) -> Vec<NodeProcess> {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let members: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("      n{}: 127.0.0.1:{p}\n", i + 1))
        .collect();
    let nodes: Vec<NodeProcess> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let dir = root.join(format!("n{}", i + 1));
            std::fs::create_dir_all(dir.join("registry")).unwrap();
            std::fs::write(
                dir.join("node.yaml"),
                format!(
                    "data_dir: ./data\ncluster:\n  name: n{}\n  raft:\n    bind: 127.0.0.1:{port}\n    initial_members:\n{members}registry:\n  - ./registry\n",
                    i + 1
                ),
            )
            .unwrap();
            std::fs::write(
                dir.join("registry/bench.yaml"),
                "namespace: bench\nentries:\n  - name: kv\n    kind: store.kv.raft\n    namespace: kv\n",
            )
            .unwrap();
            NodeProcess::launch(Path::new(BIN), &dir, &[("RUST_LOG", "error")]).unwrap()
        })
        .collect();
    for n in &nodes {
        n.wait_healthy().unwrap();
    }
    nodes
}

/// Three etcd processes forming one cluster; killed when dropped.
struct Etcd {
    children: Vec<Child>,
    endpoints: Vec<String>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_etcd(binary: &Path, root: &Path) -> Etcd {
    let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let initial: Vec<String> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| format!("e{}=http://127.0.0.1:{p}", i + 1))
        .collect();
    let initial = initial.join(",");
    let children = (0..3)
        .map(|i| {
            let name = format!("e{}", i + 1);
            Command::new(binary)
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(root.join(&name))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{}", clients[i]),
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{}", clients[i]),
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{}", peers[i]),
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{}", peers[i]),
                    "--initial-cluster",
                    &initial,
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "store-bench",
                    "--logger",
                    "zap",
                    "--log-level",
                    "error",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()))
        })
        .collect();
    Etcd {
        children,
        endpoints: clients.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
    }
}

#[derive(Clone, Copy)]
enum Op {
    Put,
    Get,
}

/// Rate of `op` at `clients` concurrent clients against our nodes.
fn measure_ours(rt: &tokio::runtime::Runtime, addrs: &[String], op: Op, clients: usize) -> f64 {
    let handles: Vec<Client> = (0..clients)
        .map(|c| Client::new(&addrs[c % addrs.len()]).unwrap())
        .collect();
    let handles = Arc::new(handles);
    bench::run_clients(rt, clients, |c| {
        let client = handles[c].clone();
        let mut rng = Rng::new(c as u64 + 1);
        move || {
            let client = client.clone();
            let k = key(rng.below(KEYS));
            async move {
                match op {
                    Op::Put => {
                        client
                            .put(STORE, &k, Bytes::from_static(&VALUE), PutOptions::new())
                            .await
                            .unwrap();
                    }
                    Op::Get => {
                        client.entry(STORE, &k).await.unwrap();
                    }
                }
            }
        }
    })
}

/// Rate of `op` at `clients` concurrent clients against etcd.
fn measure_etcd(rt: &tokio::runtime::Runtime, endpoints: &[String], op: Op, clients: usize) -> f64 {
    let handles: Vec<etcd::Kv> = rt.block_on(async {
        let mut out = Vec::new();
        for c in 0..clients {
            out.push(
                etcd::Kv::connect(&endpoints[c % endpoints.len()])
                    .await
                    .unwrap(),
            );
        }
        out
    });
    let handles = Arc::new(handles);
    bench::run_clients(rt, clients, |c| {
        let client = handles[c].clone();
        let mut rng = Rng::new(c as u64 + 1);
        move || {
            let mut client = client.clone();
            let k = key(rng.below(KEYS));
            async move {
                match op {
                    Op::Put => {
                        client.put(&k, &VALUE).await.unwrap();
                    }
                    Op::Get => {
                        let kvs = client.get(&k).await.unwrap();
                        assert_eq!(kvs.len(), 1);
                    }
                }
            }
        }
    })
}

/// Waits until `f` succeeds (a cluster electing its leader).
fn until_ok<F: FnMut() -> bool>(what: &str, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not ready in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn preload_ours(rt: &tokio::runtime::Runtime, addr: &str) {
    let client = Client::new(addr).unwrap();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in 0..64 {
            let client = client.clone();
            tasks.spawn(async move {
                for i in (chunk..KEYS).step_by(64) {
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

fn preload_etcd(rt: &tokio::runtime::Runtime, endpoint: &str) {
    rt.block_on(async {
        let client = etcd::Kv::connect(endpoint).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in 0..64 {
            let mut kv = client.clone();
            tasks.spawn(async move {
                for i in (chunk..KEYS).step_by(64) {
                    kv.put(&key(i), &VALUE).await.unwrap();
                }
            });
        }
        while let Some(t) = tasks.join_next().await {
            t.unwrap();
        }
    });
}

/// Durable appends per second this disk allows one writer: a 64-byte append and `fdatasync`
/// in a loop. One client's write waits for at least one such flush (on the leader, and on a
/// follower in parallel), so this bounds the one-client write rate of both systems.
fn fsync_ceiling(dir: &Path) -> f64 {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("fsync-probe"))
        .unwrap();
    let time = bench::measure_time();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < time {
        file.write_all(&VALUE).unwrap();
        file.sync_data().unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let Some(etcd) = etcd_binary() else {
        let why = "etcd not found: install Debian's etcd-server (`apt-get install etcd-server`) \
                   or set STORE_BENCH_ETCD=/path/to/etcd";
        if std::env::var("STORE_BENCH_REQUIRE_ETCD").is_ok_and(|v| v == "1") {
            panic!("{why}");
        }
        store_testkit::loud_skip("store-raft benchmark", why);
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let root = TempDir::new("raft-bench");
    let nodes = start_ours(&root.join("ours"));
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_owned()).collect();
    preload_ours(&rt, &addrs[0]);
    let cluster = start_etcd(&etcd, &root.join("etcd"));
    until_ok("etcd cluster", || {
        rt.block_on(async {
            match etcd::Kv::connect(&cluster.endpoints[0]).await {
                Ok(mut c) => c.put("ready", b"1").await.is_ok(),
                Err(_) => false,
            }
        })
    });
    preload_etcd(&rt, &cluster.endpoints[0]);
    // Interleaved rounds (ours, etcd, ours, etcd, …), each column's median: both sides meet
    // the same drift of a shared machine.
    let rounds = if bench::quick() { 1 } else { 3 };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for op in [Op::Put, Op::Get] {
        for clients in CLIENTS {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                a.push(measure_ours(&rt, &addrs, op, clients));
                b.push(measure_etcd(&rt, &cluster.endpoints, op, clients));
            }
            ours.push(median(a));
            theirs.push(median(b));
        }
    }
    drop(nodes);
    drop(cluster);
    let ceiling = fsync_ceiling(root.path());
    let mut rows = Vec::new();
    let mut i = 0;
    for name in ["raft.put", "raft.get"] {
        for clients in CLIENTS {
            rows.push(Row {
                bench: name.to_owned(),
                threads: clients,
                ops_per_s: ours[i],
                peers: vec![("etcd".to_owned(), theirs[i])],
            });
            i += 1;
        }
    }
    bench::report("store-raft", &rows);
    println!(
        "\nceiling: this disk takes {ceiling:.0} fdatasync/s from one writer (an upper bound on \
         one client's durable writes, ours and etcd's alike)"
    );
}
