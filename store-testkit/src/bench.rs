//! A small benchmark harness shared by every backend's bench target: it runs our
//! store and its peers on the same workload in the same process, prints a table with ratios and
//! appends one JSON object per (row, peer) to `target/bench/<crate>.jsonl`.
//!
//! `STORE_BENCH_QUICK=1` shortens every measurement so a CI smoke run takes seconds.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Whether `STORE_BENCH_QUICK` asks for the quick mode.
pub fn quick() -> bool {
    std::env::var("STORE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// How long each measurement runs: 2 s (100 ms in quick mode), after a warm-up of a fifth of it.
pub fn measure_time() -> Duration {
    if quick() {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(2)
    }
}

/// Runs `threads` threads for [`measure_time`] and returns operations per second. Each thread
/// gets its own closure from `make(thread_index)`; the closure runs a batch of operations and
/// returns how many it ran (batches amortise timing and, for async stores, `block_on`).
pub fn run<F>(threads: usize, make: impl Fn(usize) -> F) -> f64
where
    F: FnMut() -> u64 + Send + 'static,
{
    let time = measure_time();
    let warmup = time / 5;
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mut batch = make(t);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let warm_end = Instant::now() + warmup;
                while Instant::now() < warm_end {
                    batch();
                }
                barrier.wait();
                let start = Instant::now();
                let mut ops = 0;
                while start.elapsed() < time {
                    ops += batch();
                }
                (ops, start.elapsed())
            })
        })
        .collect();
    barrier.wait();
    let mut total = 0.0;
    for h in handles {
        let (ops, elapsed) = h.join().expect("benchmark thread panicked");
        total += ops as f64 / elapsed.as_secs_f64();
    }
    total
}

/// Runs `clients` concurrent tasks on `runtime` for [`measure_time`] (after a warm-up) and
/// returns operations per second. Each task gets a closure from `make(client_index)` that runs
/// one operation.
pub fn run_clients<F, Fut>(
    runtime: &tokio::runtime::Runtime,
    clients: usize,
    make: impl Fn(usize) -> F,
) -> f64
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let time = measure_time();
    let warm_end = Instant::now() + time / 5;
    let end = warm_end + time;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let mut op = make(c);
            runtime.spawn(async move {
                while Instant::now() < warm_end {
                    op().await;
                }
                let mut ops = 0u64;
                while Instant::now() < end {
                    op().await;
                    ops += 1;
                }
                ops
            })
        })
        .collect();
    let total: u64 = runtime.block_on(async {
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("benchmark client panicked");
        }
        total
    });
    total as f64 / time.as_secs_f64()
}

/// One measured workload: our rate and each peer's, on the same workload and thread count.
#[derive(Debug, Clone)]
pub struct Row {
    /// Workload name, `<backend>.<operation>`.
    pub bench: String,
    /// Concurrent threads (or clients).
    pub threads: usize,
    /// Our operations per second.
    pub ops_per_s: f64,
    /// `(peer name, peer operations per second)`.
    pub peers: Vec<(String, f64)>,
}

/// A thread-local xorshift generator: cheap, deterministic per seed, good enough to pick keys.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (0 is replaced by a fixed odd constant).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n as u64) as usize
    }
}

fn human(ops: f64) -> String {
    if ops >= 1e6 {
        format!("{:.2}M", ops / 1e6)
    } else if ops >= 1e3 {
        format!("{:.1}k", ops / 1e3)
    } else {
        format!("{ops:.0}")
    }
}

/// Prints the table and appends the JSON lines to `target/bench/<crate_name>.jsonl`.
pub fn report(crate_name: &str, rows: &[Row]) {
    let peer_names: Vec<&str> = rows
        .first()
        .map(|r| r.peers.iter().map(|(n, _)| n.as_str()).collect())
        .unwrap_or_default();
    let mut header = format!("| {:<18} | {:>7} | {:>10} |", "bench", "threads", "ops/s");
    let mut rule = format!("|{:-<20}|{:->9}|{:->12}|", "", "", "");
    let widths: Vec<usize> = peer_names.iter().map(|p| (p.len() + 6).max(10)).collect();
    for (p, w) in peer_names.iter().zip(&widths) {
        header.push_str(&format!(" {:>w$} | {:>8} |", format!("{p} ops/s"), "ratio"));
        rule.push_str(&format!("{:->w$}|{:->10}|", "", "", w = w + 2));
    }
    let mode = if quick() { "quick" } else { "full" };
    println!("\n{crate_name} benchmark ({mode} mode; ratio = ours / peer, higher is better)\n");
    println!("{header}\n{rule}");
    let mut json = String::new();
    for r in rows {
        let mut line = format!(
            "| {:<18} | {:>7} | {:>10} |",
            r.bench,
            r.threads,
            human(r.ops_per_s)
        );
        for ((peer, peer_ops), w) in r
            .peers
            .iter()
            .zip(widths.iter().chain(std::iter::repeat(&10)))
        {
            let ratio = r.ops_per_s / peer_ops;
            line.push_str(&format!(" {:>w$} | {:>7.2}x |", human(*peer_ops), ratio));
            json.push_str(&format!(
                "{{\"bench\": \"{}\", \"threads\": {}, \"ops_per_s\": {:.1}, \"peer\": \"{}\", \
                 \"peer_ops_per_s\": {:.1}, \"ratio\": {:.3}, \"mode\": \"{mode}\"}}\n",
                r.bench, r.threads, r.ops_per_s, peer, peer_ops, ratio
            ));
        }
        println!("{line}");
    }
    append_jsonl(crate_name, &json, rows.len());
}

/// One row of a memory table: bytes per stored entry, ours and each peer's (lower is better).
#[derive(Debug, Clone)]
pub struct SizeRow {
    /// Row name, e.g. `memory.bytes_per_key`.
    pub bench: String,
    /// Length of each stored value.
    pub value_bytes: usize,
    /// Our bytes per entry.
    pub bytes_per_key: f64,
    /// `(peer name, peer's bytes per entry)`, in column order.
    pub peers: Vec<(String, f64)>,
}

/// Prints a table of [`SizeRow`]s (`ratio` = peer / ours, so higher is still better) and
/// appends them to `target/bench/<crate_name>.jsonl` with `"lower_is_better": true`.
pub fn report_sizes(crate_name: &str, rows: &[SizeRow]) {
    let peer_names: Vec<&str> = rows
        .first()
        .map(|r| r.peers.iter().map(|(n, _)| n.as_str()).collect())
        .unwrap_or_default();
    let mut header = format!(
        "| {:<22} | {:>11} | {:>10} |",
        "bench", "value bytes", "B/key"
    );
    let mut rule = format!("|{:-<24}|{:->13}|{:->12}|", "", "", "");
    let widths: Vec<usize> = peer_names.iter().map(|p| (p.len() + 6).max(10)).collect();
    for (p, w) in peer_names.iter().zip(&widths) {
        header.push_str(&format!(" {:>w$} | {:>8} |", format!("{p} B/key"), "ratio"));
        rule.push_str(&format!("{:->w$}|{:->10}|", "", "", w = w + 2));
    }
    println!(
        "\n{crate_name} memory per entry (bytes allocated per stored entry; ratio = peer / ours, \
         higher is better)\n"
    );
    println!("{header}\n{rule}");
    let mode = if quick() { "quick" } else { "full" };
    let mut json = String::new();
    for r in rows {
        let mut line = format!(
            "| {:<22} | {:>11} | {:>10.1} |",
            r.bench, r.value_bytes, r.bytes_per_key
        );
        for ((peer, peer_bytes), w) in r
            .peers
            .iter()
            .zip(widths.iter().chain(std::iter::repeat(&10)))
        {
            let ratio = peer_bytes / r.bytes_per_key;
            line.push_str(&format!(" {peer_bytes:>w$.1} | {ratio:>7.2}x |"));
            json.push_str(&format!(
                "{{\"bench\": \"{}\", \"threads\": 1, \"value_bytes\": {}, \"bytes_per_key\": \
                 {:.1}, \"peer\": \"{}\", \"peer_bytes_per_key\": {:.1}, \"ratio\": {:.3}, \
                 \"lower_is_better\": true, \"mode\": \"{mode}\"}}\n",
                r.bench, r.value_bytes, r.bytes_per_key, peer, peer_bytes, ratio
            ));
        }
        println!("{line}");
    }
    append_jsonl(crate_name, &json, rows.len());
}

/// One measurement against a fixed target rather than a peer (a latency, a byte count): lower
/// is better.
#[derive(Debug, Clone)]
pub struct TargetRow {
    /// Row name, e.g. `crdt.converge_p99_ms`.
    pub bench: String,
    /// Nodes (or threads) involved.
    pub threads: usize,
    /// What was measured, in `unit`.
    pub value: f64,
    /// The target it must stay under, in `unit`.
    pub target: f64,
    /// `ms`, `bytes`, …
    pub unit: &'static str,
}

/// Prints a table of [`TargetRow`]s (`ratio` = target / measured: at least 1 meets the
/// target) and appends them to `target/bench/<crate_name>.jsonl` with `"peer": "target"` and
/// `"lower_is_better": true`.
pub fn report_targets(crate_name: &str, title: &str, rows: &[TargetRow]) {
    let mode = if quick() { "quick" } else { "full" };
    println!(
        "\n{crate_name} {title} ({mode} mode; ratio = target / measured, at least 1.00x meets it)\n"
    );
    println!(
        "| {:<24} | {:>7} | {:>12} | {:>12} | {:>8} |",
        "bench", "nodes", "measured", "target", "ratio"
    );
    println!(
        "|{:-<26}|{:->9}|{:->14}|{:->14}|{:->10}|",
        "", "", "", "", ""
    );
    let mut json = String::new();
    for r in rows {
        let ratio = if r.value > 0.0 {
            r.target / r.value
        } else {
            f64::INFINITY
        };
        println!(
            "| {:<24} | {:>7} | {:>9.1} {:<2} | {:>9.1} {:<2} | {:>7.2}x |",
            r.bench,
            r.threads,
            r.value,
            short_unit(r.unit),
            r.target,
            short_unit(r.unit),
            ratio
        );
        json.push_str(&format!(
            "{{\"bench\": \"{}\", \"threads\": {}, \"value\": {:.3}, \"unit\": \"{}\", \
             \"peer\": \"target\", \"peer_value\": {:.3}, \"ratio\": {:.3}, \
             \"lower_is_better\": true, \"mode\": \"{mode}\"}}\n",
            r.bench,
            r.threads,
            r.value,
            r.unit,
            r.target,
            ratio.min(1e9)
        ));
    }
    append_jsonl(crate_name, &json, rows.len());
}

fn short_unit(unit: &str) -> &str {
    match unit {
        "bytes" => "B",
        other => other,
    }
}

fn append_jsonl(crate_name: &str, json: &str, rows: usize) {
    let dir = target_dir().join("bench");
    let path = dir.join(format!("{crate_name}.jsonl"));
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?
            .write_all(json.as_bytes())
    });
    match written {
        Ok(()) => println!("\nappended {rows} rows to {}", path.display()),
        Err(e) => eprintln!("\ncannot write {}: {e}", path.display()),
    }
}

/// `CARGO_TARGET_DIR`, or the `target` folder beside the workspace's `Cargo.lock`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let mut dir = std::env::current_dir().unwrap_or_default();
    loop {
        if dir.join("Cargo.lock").exists() {
            return dir.join("target");
        }
        if !dir.pop() {
            return PathBuf::from("target");
        }
    }
}
