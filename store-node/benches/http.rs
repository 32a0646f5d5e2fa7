//! `cargo bench -p store-node`: what counting costs. Two `store-node` processes of this build on
//! loopback, one with `http.metrics: true` (the default) and one with `false`, each serving a
//! memory store of 10 000 keys; the same load generator drives both, in five interleaved rounds
//! (median, the first node alternating): raw
//! HTTP/1.1 over keep-alive connections, one thread per client, 64-byte values. The ratio is
//! with metrics / without (target ≥ 0.97).

#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;

use store_client::harness::NodeProcess;
use store_testkit::TempDir;
use store_testkit::bench::{self, Rng, Row};

const BIN: &str = env!("CARGO_BIN_EXE_store-node");
const KEYS: usize = 10_000;
const CLIENTS: [usize; 2] = [1, 16];

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Get,
    Put,
}

/// One keep-alive connection, sending a request and reading its whole answer.
struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    addr: String,
}

impl Conn {
    fn new(addr: &str) -> Self {
        let writer = TcpStream::connect(addr).unwrap();
        writer.set_nodelay(true).unwrap();
        let reader = BufReader::new(writer.try_clone().unwrap());
        Self {
            writer,
            reader,
            addr: addr.to_owned(),
        }
    }

    fn call(&mut self, op: Op, key: usize) {
        let path = format!("/v1/stores/app:cache/keys/k{key:05}");
        let mut request = match op {
            Op::Get => format!("GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n", self.addr).into_bytes(),
            Op::Put => {
                let mut r = format!(
                    "PUT {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: 64\r\n\r\n",
                    self.addr
                )
                .into_bytes();
                r.extend_from_slice(&[0xAB; 64]);
                r
            }
        };
        self.writer.write_all(&request).unwrap();
        request.clear();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
    }
}

fn start(metrics: bool) -> (TempDir, NodeProcess) {
    let dir = TempDir::new(if metrics {
        "bench-metrics"
    } else {
        "bench-quiet"
    });
    std::fs::create_dir_all(dir.join("registry")).unwrap();
    std::fs::write(
        dir.join("node.yaml"),
        format!("http:\n  metrics: {metrics}\nregistry:\n  - ./registry\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("registry/app.yaml"),
        "namespace: app\nentries:\n  - name: cache\n    kind: store.memory\n    max_size: 100000\n",
    )
    .unwrap();
    let node = NodeProcess::start(Path::new(BIN), dir.path(), &[]).unwrap();
    let mut conn = Conn::new(node.addr());
    for k in 0..KEYS {
        conn.call(Op::Put, k);
    }
    (dir, node)
}

/// CPU time the process `pid` has used so far (user + system), from `/proc`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}

/// Requests per second against `node`, and the node's CPU microseconds per request.
fn load(node: &NodeProcess, op: Op, clients: usize) -> (f64, f64) {
    let cpu = cpu_seconds(node.pid());
    let started = std::time::Instant::now();
    let rate = bench::run(clients, |c| {
        let mut conn = Conn::new(node.addr());
        let mut rng = Rng::new(c as u64 + 1);
        move || {
            conn.call(op, rng.below(KEYS));
            1
        }
    });
    // Warm-up requests count too: the CPU was spent on them.
    let requests = rate * started.elapsed().as_secs_f64();
    let per_request = (cpu_seconds(node.pid()) - cpu) / requests.max(1.0) * 1e6;
    (rate, per_request)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let (_on_dir, on) = start(true);
    let (_off_dir, off) = start(false);
    let rounds = if bench::quick() { 1 } else { 5 };
    let mut rows = Vec::new();
    let mut cpu = Vec::new();
    for (op, name) in [(Op::Get, "node.get"), (Op::Put, "node.put")] {
        for clients in CLIENTS {
            // Interleaved rounds, each column's median: both nodes see the same drift.
            let (mut with, mut without) = (Vec::new(), Vec::new());
            let (mut cpu_with, mut cpu_without) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                // Which node goes first alternates, so neither always meets a warmer machine.
                let order = if round % 2 == 0 {
                    [true, false]
                } else {
                    [false, true]
                };
                for metrics in order {
                    let (rate, us) = load(if metrics { &on } else { &off }, op, clients);
                    if metrics {
                        with.push(rate);
                        cpu_with.push(us);
                    } else {
                        without.push(rate);
                        cpu_without.push(us);
                    }
                }
            }
            rows.push(Row {
                bench: name.to_owned(),
                threads: clients,
                ops_per_s: median(&mut with),
                peers: vec![("metrics off".into(), median(&mut without))],
            });
            cpu.push((
                name,
                clients,
                median(&mut cpu_with),
                median(&mut cpu_without),
            ));
        }
    }
    bench::report("store-node", &rows);
    // Throughput on a shared 2-core VM moves by more than counting costs; the node's own CPU
    // time per request is the steadier measure of it.
    println!("\n| bench              | threads | node CPU µs/request | metrics off |    ratio |");
    println!("|--------------------|---------|---------------------|-------------|----------|");
    for (name, clients, with, without) in cpu {
        println!(
            "| {name:<18} | {clients:>7} | {with:>19.1} | {without:>11.1} | {:>7.3}x |",
            with / without
        );
    }
}
