//! `cargo xtask test-cluster`: a Jepsen-style run against real `store-node` processes.
//!
//! The outer process builds the release binary, checks that this machine can inject the faults
//! asked for, and re-runs itself inside a private user + network + PID namespace (`unshare`).
//! Inside, every node gets its own loopback address `127.0.0.N`, partitions are nftables drop
//! rules between those addresses, and when the run ends (or is interrupted) the namespace's
//! first process exits and the kernel kills every node with it: nothing outside is touched.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use xtask::checker::{Verdict, eventual, linear};

use crate::plot;

/// Set in the environment of the run inside the namespace.
const INSIDE: &str = "XTASK_TEST_CLUSTER_INSIDE";
const SECRET: &str = "test-cluster secret";
/// The nodes' `request_timeout`: a request waiting longer fails with a timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The snapshot threshold of raft runs with laggers, unless `--snapshot-threshold` says.
const LAGGER_SNAPSHOT_THRESHOLD: u64 = 500;
/// How long a lagger is kept away at most, waiting for the leader to purge past it.
const LAGGER_PATIENCE: Duration = Duration::from_secs(20);
/// How long an isolated leader's undo waits for the others to elect a new one (openraft 0.9
/// can take 8 s: see ARCHITECTURE.md).
const ISOLATION_PATIENCE: Duration = Duration::from_secs(20);
/// How long an isolated leader stays cut off once the others have a new one.
const ISOLATION_HOLD: Duration = Duration::from_secs(REQUEST_TIMEOUT.as_secs() + 1);
/// The largest clock offset of the clock fault (ms): within the nodes' `max_clock_skew` (500 ms
/// by default, which the runs keep), so every check is promised to hold.
const CLOCK_OFFSET_MS: u64 = 400;
/// The nodes' `max_clock_skew`, as the run configures it (the default).
const MAX_CLOCK_SKEW_MS: u64 = 500;
/// The widening of an operation's clock window where expiry is not promised: a year.
const UNBOUNDED_SKEW_MS: u64 = 365 * 24 * 3600 * 1000;
/// The range of a clock fault's offset beyond `max_clock_skew` (ms).
const CLOCK_BEYOND_MS: (u64, u64) = (700, 1500);
/// crdt: the clock fault's other offset beyond the bound, a clock an hour ahead (a wrong RTC, a
/// bad NTP step), which must not carry every node's hybrid clock with it.
const CLOCK_HOUR_MS: u64 = 3_600_000;
/// crdt: how far a version may be ahead of the clients' true time besides `max_clock_skew`
/// (the client reads its clock after the answer; the margin covers scheduling).
const STAMP_MARGIN_MS: u64 = 100;
/// How long after a clock fault beyond the bound ended, besides the offset itself, expiry is
/// still not promised: a leader that stamped entries ahead leaves the state machine's clock
/// ahead until true time catches up, and a failover meanwhile waits `max_clock_skew` more.
const BEYOND_AFTERMATH: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Raft,
    Crdt,
}

impl Backend {
    /// As `--backend` takes it.
    fn name(self) -> &'static str {
        match self {
            Backend::Raft => "raft",
            Backend::Crdt => "crdt",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Partition,
    Kill,
    /// SIGKILL of the leader, restarted 0–1.5 s later as a supervisor restarts a crashed
    /// process, back before anyone else started an election, while its followers stall or lag
    /// (see [`kill_leader`]).
    KillLeader,
    Pause,
    Membership,
    /// The Raft leader, asked for by name, cut off from every other node (crdt: any one node):
    /// it goes on believing it leads while the others elect a new one.
    IsolateLeader,
    /// A follower cut off until it needs a snapshot (raft: until the leader purged its log past
    /// the follower's last entry), then let back, and half the time killed while the snapshot
    /// comes in and restarted at once (see [`lagger`]).
    Lagger,
    /// One node's clock set ahead or behind by up to [`CLOCK_OFFSET_MS`] (within the nodes'
    /// `max_clock_skew`), then back to true time at the end: a step back when it was ahead.
    Clock,
    /// Enough of the leader's followers that it has no quorum, SIGSTOPped for 0.4–0.9 s (less
    /// than an election timeout) while it goes on taking writes, then resumed: every write in
    /// that time waits longer than usual and is then committed (see [`stall`]).
    Stall,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Partition => "partition",
            Fault::Kill => "kill",
            Fault::KillLeader => "kill-leader",
            Fault::Pause => "pause",
            Fault::Membership => "membership",
            Fault::IsolateLeader => "isolate-leader",
            Fault::Lagger => "lagger",
            Fault::Clock => "clock",
            Fault::Stall => "stall",
        }
    }
}

/// Which nodes a kill or a pause hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// One node drawn at random (it may be the leader).
    One,
    /// The Raft leader, asked for by name (a random node when none is known).
    Leader,
    /// Fewer than half of the nodes at once, the leader among them when one is known.
    Minority,
    /// Every node at once.
    All,
}

impl Target {
    /// Kills: the leader most often (what a stale restored leadership needs), whole minorities
    /// and the whole cluster now and then.
    fn for_kill(rng: &mut Rng) -> Self {
        match rng.below(10) {
            0..=3 => Target::Leader,
            4..=6 => Target::One,
            7..=8 => Target::Minority,
            _ => Target::All,
        }
    }

    /// Pauses: never every node (a cluster stopped whole only stops the clock for everyone).
    fn for_pause(rng: &mut Rng) -> Self {
        match rng.below(10) {
            0..=3 => Target::Leader,
            4..=7 => Target::One,
            _ => Target::Minority,
        }
    }

    /// The nodes hit, and a description for the report.
    fn pick(self, nodes: &[Node], rng: &mut Rng) -> (Vec<usize>, String) {
        let n = nodes.len();
        let names = |set: &[usize]| {
            set.iter()
                .map(|i| nodes[*i].name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Target::One => {
                let i = rng.below(n);
                (vec![i], nodes[i].name.clone())
            }
            Target::Leader => match leader(nodes) {
                Some(l) => (vec![l], format!("leader {}", nodes[l].name)),
                None => {
                    let i = rng.below(n);
                    (vec![i], format!("{} (no leader known)", nodes[i].name))
                }
            },
            Target::Minority => {
                let size = (n.saturating_sub(1) / 2).max(1);
                let mut set: Vec<usize> = Vec::new();
                if let Some(l) = leader(nodes) {
                    set.push(l);
                }
                for i in rng.permutation(n) {
                    if set.len() >= size {
                        break;
                    }
                    if !set.contains(&i) {
                        set.push(i);
                    }
                }
                set.sort_unstable();
                let what = format!("minority {}", names(&set));
                (set, what)
            }
            Target::All => ((0..n).collect(), "every node".to_owned()),
        }
    }
}

/// How long after a SIGKILL a node comes back.
enum Restart {
    /// 0–1.5 s: a supervisor's restart.
    Fast(Duration),
    /// At the end of the fault window.
    Slow,
}

#[derive(Debug, Clone)]
struct Options {
    backend: Backend,
    nodes: usize,
    time: Duration,
    clients: usize,
    rate: Option<f64>,
    keys: usize,
    nemesis: Vec<Fault>,
    seed: u64,
    out: Option<PathBuf>,
    /// The negative control to run, if any: a known defect the checks must catch.
    negative_control: Option<Control>,
    /// raft: the nodes' `snapshot_threshold` (None: their default, 10 000).
    snapshot_threshold: Option<u64>,
}

const USAGE: &str = "\
cargo xtask test-cluster [--backend raft|crdt] [--nodes N] [--time 60s] [--clients 10]
    [--rate OPS] [--keys 20]
    [--nemesis partition,kill,kill-leader,pause,isolate-leader,lagger,clock,stall,membership|none|all]
    [--seed N]
    [--out DIR] [--quick] [--snapshot-threshold N]
    [--negative-control serializable-reads|ack-before-quorum|fail-maybe-applied|
                        reuse-version|stale-lease-read|drop-crdt-merge|ignore-clock-skew]";

/// A negative control: a run whose nodes break a promise on purpose, so that its checks must
/// find a violation (a run that finds none fails: the checks or the workload are blind to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// The registry's `t:kv` reads serializably (from each node's own state) under partitions.
    SerializableReads,
    /// The defects of a `fault-injection` build, by name (`store_core::backend::fault`).
    AckBeforeQuorum,
    FailMaybeApplied,
    ReuseVersion,
    StaleLeaseRead,
    DropCrdtMerge,
    IgnoreClockSkew,
}

impl Control {
    pub(crate) const ALL: [Control; 7] = [
        Control::SerializableReads,
        Control::AckBeforeQuorum,
        Control::FailMaybeApplied,
        Control::ReuseVersion,
        Control::StaleLeaseRead,
        Control::DropCrdtMerge,
        Control::IgnoreClockSkew,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Control::SerializableReads => "serializable-reads",
            Control::AckBeforeQuorum => "ack-before-quorum",
            Control::FailMaybeApplied => "fail-maybe-applied",
            Control::ReuseVersion => "reuse-version",
            Control::StaleLeaseRead => "stale-lease-read",
            Control::DropCrdtMerge => "drop-crdt-merge",
            Control::IgnoreClockSkew => "ignore-clock-skew",
        }
    }

    fn parse(name: &str) -> Result<Self> {
        Control::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .with_context(|| {
                let names: Vec<&str> = Control::ALL.iter().map(|c| c.name()).collect();
                format!(
                    "--negative-control {name:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }

    /// The defect the nodes run with (`STORE_NODE_FAULT`), if the control is one.
    fn defect(self) -> Option<&'static str> {
        match self {
            Control::SerializableReads => None,
            other => Some(other.name()),
        }
    }

    /// What the control breaks, for the report.
    fn breaks(self) -> &'static str {
        match self {
            Control::SerializableReads => {
                "the `kv` store reads serializably, from each node's own state"
            }
            Control::AckBeforeQuorum => {
                "the leader acknowledges a put once its own log holds it, before a quorum does"
            }
            Control::FailMaybeApplied => {
                "a write that may still be applied is answered as a plain failure (and the leader \
                 gives a write 300 ms)"
            }
            Control::ReuseVersion => {
                "one write in eight of an existing key keeps the key's old version"
            }
            Control::StaleLeaseRead => {
                "a node that believes it leads serves linearizable reads without asking a quorum"
            }
            Control::DropCrdtMerge => "every node ignores one in four registers its peers send",
            Control::IgnoreClockSkew => {
                "no clock guard: a node an hour ahead serves, and its peers merge its stamps \
                 (every clock fault is an hour ahead)"
            }
        }
    }

    fn backend(self) -> Backend {
        match self {
            Control::DropCrdtMerge | Control::IgnoreClockSkew => Backend::Crdt,
            _ => Backend::Raft,
        }
    }

    /// The faults that expose the defect.
    fn nemesis(self) -> Vec<Fault> {
        match self {
            Control::SerializableReads => vec![Fault::Partition],
            Control::StaleLeaseRead => vec![Fault::IsolateLeader],
            Control::AckBeforeQuorum => vec![Fault::KillLeader, Fault::IsolateLeader],
            // Every stall makes writes wait past the defect's 300 ms and then commits them: a
            // fault that always exposes it (a kill or a pause of the leader only may).
            Control::FailMaybeApplied => vec![Fault::Stall],
            Control::IgnoreClockSkew => vec![Fault::Clock],
            // Wrong with or without faults.
            Control::ReuseVersion | Control::DropCrdtMerge => Vec::new(),
        }
    }
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        backend: Backend::Raft,
        nodes: 5,
        time: Duration::from_secs(60),
        clients: 10,
        rate: None,
        keys: 20,
        nemesis: Vec::new(),
        seed: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        out: None,
        negative_control: None,
        snapshot_threshold: None,
    };
    let mut nemesis = "all".to_owned();
    let mut quick = false;
    let mut nodes_given = false;
    let mut time_given = false;
    let mut backend_given = false;
    let mut nemesis_given = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--backend" => {
                backend_given = true;
                o.backend = match value("--backend")?.as_str() {
                    "raft" => Backend::Raft,
                    "crdt" => Backend::Crdt,
                    other => bail!("--backend {other:?}: expected raft or crdt"),
                }
            }
            "--nodes" => {
                o.nodes = count("--nodes", &value("--nodes")?, 1, 50)?;
                nodes_given = true;
            }
            "--time" => {
                let v = value("--time")?;
                o.time = parse_duration(&v).with_context(|| format!("--time {v:?}"))?;
                time_given = true;
            }
            "--clients" => o.clients = count("--clients", &value("--clients")?, 1, 200)?,
            "--rate" => {
                let v = value("--rate")?;
                o.rate =
                    Some(v.parse().ok().filter(|r: &f64| *r > 0.0).with_context(|| {
                        format!("--rate {v:?}: expected operations per second")
                    })?);
            }
            "--keys" => o.keys = count("--keys", &value("--keys")?, 1, 10_000)?,
            "--nemesis" => {
                nemesis_given = true;
                nemesis = value("--nemesis")?;
            }
            "--seed" => {
                let v = value("--seed")?;
                o.seed = v
                    .parse()
                    .with_context(|| format!("--seed {v:?}: expected a number"))?;
            }
            "--out" => o.out = Some(PathBuf::from(value("--out")?)),
            "--quick" => quick = true,
            "--negative-control" => {
                o.negative_control = Some(Control::parse(&value("--negative-control")?)?);
            }
            "--snapshot-threshold" => {
                let v = value("--snapshot-threshold")?;
                o.snapshot_threshold =
                    Some(v.parse().ok().filter(|n| *n > 0).with_context(|| {
                        format!("--snapshot-threshold {v:?}: expected a positive number of entries")
                    })?);
            }
            other => bail!("unknown flag {other:?}\n{USAGE}"),
        }
    }
    if quick {
        if !nodes_given {
            o.nodes = 3;
        }
        if !time_given {
            o.time = Duration::from_secs(30);
        }
    }
    if let Some(control) = o.negative_control {
        // A control's backend and faults are its own: those that expose its defect.
        if backend_given && o.backend != control.backend() {
            bail!(
                "--negative-control {} runs the {} backend; drop --backend",
                control.name(),
                control.backend().name()
            );
        }
        if nemesis_given {
            bail!(
                "--negative-control {} picks its own faults; drop --nemesis",
                control.name()
            );
        }
        o.backend = control.backend();
        o.nemesis = control.nemesis();
    } else {
        o.nemesis = parse_nemesis(&nemesis)?;
    }
    if o.nodes < 2
        && o.nemesis.iter().any(|f| {
            matches!(
                f,
                Fault::Partition | Fault::IsolateLeader | Fault::Membership | Fault::Lagger
            )
        })
    {
        bail!(
            "--nodes {}: partitions, laggers and membership changes need at least 2 nodes; \
             use --nemesis kill,pause (or none)",
            o.nodes
        );
    }
    if o.backend == Backend::Raft
        && o.nemesis.contains(&Fault::Lagger)
        && o.snapshot_threshold.is_none()
    {
        // A lagger must fall behind the purged log within a fault window.
        o.snapshot_threshold = Some(LAGGER_SNAPSHOT_THRESHOLD);
    }
    Ok(o)
}

/// A whole number in `lo..=hi` given to `flag`.
fn count(flag: &str, v: &str, lo: usize, hi: usize) -> Result<usize> {
    v.parse()
        .ok()
        .filter(|n| (lo..=hi).contains(n))
        .with_context(|| format!("{flag} {v:?}: expected {lo} to {hi}"))
}

/// The faults `v` names; `all` is every fault (membership is a Raft member removed and added
/// back, or a gossip node leaving and joining again).
fn parse_nemesis(v: &str) -> Result<Vec<Fault>> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim) {
        match part {
            "none" => {}
            "all" => {
                out.extend([
                    Fault::Partition,
                    Fault::Kill,
                    Fault::KillLeader,
                    Fault::Pause,
                    Fault::IsolateLeader,
                    Fault::Lagger,
                    Fault::Clock,
                    Fault::Stall,
                    Fault::Membership,
                ]);
            }
            "partition" => out.push(Fault::Partition),
            "kill" => out.push(Fault::Kill),
            "kill-leader" => out.push(Fault::KillLeader),
            "pause" => out.push(Fault::Pause),
            "isolate-leader" => out.push(Fault::IsolateLeader),
            "lagger" => out.push(Fault::Lagger),
            "clock" => out.push(Fault::Clock),
            "stall" => out.push(Fault::Stall),
            "membership" => out.push(Fault::Membership),
            other => bail!(
                "--nemesis {other:?}: expected partition, kill, kill-leader, pause, \
                 isolate-leader, lagger, clock, stall, membership, none or all"
            ),
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn parse_duration(v: &str) -> Result<Duration> {
    let (number, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = number
        .parse()
        .context("expected a duration like 60s or 2m")?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(60 * n),
        "ms" => Duration::from_millis(n),
        _ => bail!("expected a duration like 60s or 2m"),
    })
}

/// A small deterministic generator (splitmix64): every choice of a run comes from the seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `0..n` in a random order (Fisher–Yates).
    fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, self.below(i + 1));
        }
        order
    }

    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(self.next() % span.max(1))
    }
}

/// Entry point of `cargo xtask test-cluster`: exit 0 when every check passed, 1 on a violation,
/// 2 when the run could not be set up.
pub(crate) fn main(args: &[String]) -> ExitCode {
    let options = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let inside = std::env::var_os(INSIDE).is_some();
    let result = if inside {
        run_inside(&options)
    } else {
        run_outside(args, &options)
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Why this machine cannot run the namespace, or `None`.
/// Whether the run cuts nodes apart (partitions, laggers).
fn needs_firewall(options: &Options) -> bool {
    options
        .nemesis
        .iter()
        .any(|f| matches!(f, Fault::Partition | Fault::IsolateLeader | Fault::Lagger))
}

fn cannot_isolate() -> Option<String> {
    let ok = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--net",
            "--pid",
            "--fork",
            "true",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| {
        "cannot create a private user + network + PID namespace with `unshare` (util-linux): \
         install util-linux, run as root, or allow unprivileged user namespaces \
         (sysctl kernel.unprivileged_userns_clone=1)"
            .to_owned()
    })
}

/// The command for `tool`: its name when it is on the `PATH`, else the sbin folders an
/// unprivileged user's `PATH` often lacks.
fn tool(name: &str) -> String {
    ["", "/usr/sbin/", "/sbin/"]
        .iter()
        .map(|dir| format!("{dir}{name}"))
        .find(|path| have(path, "--version") || have(path, "-V"))
        .unwrap_or_else(|| name.to_owned())
}

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run_outside(args: &[String], options: &Options) -> Result<ExitCode> {
    // Refuse up front what this machine cannot inject.
    if let Some(why) = cannot_isolate() {
        eprintln!("test-cluster: refused: {why}");
        return Ok(ExitCode::from(2));
    }
    if !have(&tool("ip"), "-V") {
        eprintln!("test-cluster: refused: `ip` (Debian: iproute2) is needed to bring up loopback");
        return Ok(ExitCode::from(2));
    }
    if needs_firewall(options) && !have(&tool("nft"), "--version") {
        eprintln!(
            "test-cluster: refused: the partition and lagger faults need nftables' `nft` \
             (Debian: apt-get install nftables); or run with --nemesis kill,pause"
        );
        return Ok(ExitCode::from(2));
    }
    // `STORE_NODE_BIN` runs a binary built elsewhere (CI uses the test build's); otherwise
    // the release build.
    let bin = match std::env::var_os("STORE_NODE_BIN") {
        Some(path) => PathBuf::from(path),
        // A defect needs a `fault-injection` build, which is a debug build only (the release
        // profile refuses the feature): the one `cargo xtask ci` tests.
        None if options.negative_control.and_then(Control::defect).is_some() => {
            println!("==> cargo build -p store-node --features test-clock,fault-injection");
            let status = crate::cargo()
                .args(["build", "-p", "store-node"])
                .args(["--features", "test-clock,fault-injection"])
                .status()
                .context("cannot run cargo")?;
            if !status.success() {
                bail!("building store-node failed");
            }
            crate::root().join("target/debug/store-node")
        }
        // Clock faults need the offset clock of a `test-clock` build: built apart, so the
        // release binary in target/release never has it.
        None if options.nemesis.contains(&Fault::Clock) => {
            let dir = "target/test-cluster-node";
            println!(
                "==> cargo build --release -p store-node --features test-clock --target-dir {dir}"
            );
            let status = crate::cargo()
                .args(["build", "--release", "-p", "store-node"])
                .args(["--features", "test-clock", "--target-dir", dir])
                .status()
                .context("cannot run cargo")?;
            if !status.success() {
                bail!("building store-node failed");
            }
            crate::root().join(dir).join("release/store-node")
        }
        None => {
            println!("==> cargo build --release -p store-node");
            let status = crate::cargo()
                .args(["build", "--release", "-p", "store-node"])
                .status()
                .context("cannot run cargo")?;
            if !status.success() {
                bail!("building store-node failed");
            }
            crate::root().join("target/release/store-node")
        }
    };
    if !bin.is_file() {
        bail!("no store-node binary at {}", bin.display());
    }
    let out = options.out.clone().unwrap_or_else(|| {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        crate::root()
            .join("target/test-cluster")
            .join(format!("{stamp}-{}", options.seed))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let exe = std::env::current_exe().context("cannot find xtask's own executable")?;
    // The seed and folder are fixed here (the flags, if given, dropped with their values), so
    // the run inside and its report agree.
    let mut skip = false;
    let mut inner_args: Vec<String> = args
        .iter()
        .filter(|a| {
            if skip {
                skip = false;
                return false;
            }
            if *a == "--seed" || *a == "--out" {
                skip = true;
                return false;
            }
            true
        })
        .cloned()
        .collect();
    inner_args.extend([
        "--seed".to_owned(),
        options.seed.to_string(),
        "--out".to_owned(),
        out.display().to_string(),
    ]);
    println!("seed {} → {}", options.seed, out.display());
    // Ctrl-C reaches the whole process group: `unshare` dies of it and `--kill-child` takes the
    // namespace (and every node) down with it. This process only waits, then cleans up.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = Arc::clone(&interrupted);
        ctrlc::set_handler(move || interrupted.store(true, Ordering::SeqCst))
            .context("cannot install the Ctrl-C handler")?;
    }
    let status = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--net",
            "--pid",
            "--fork",
            "--kill-child",
        ])
        .arg(&exe)
        .arg("test-cluster")
        .args(&inner_args)
        .env(INSIDE, "1")
        .env("STORE_NODE_BIN", &bin)
        .status()
        .context("cannot run unshare")?;
    // Whatever happened inside, the nodes' data folders go; the report stays.
    let _ = std::fs::remove_dir_all(out.join("data"));
    if interrupted.load(Ordering::SeqCst) {
        eprintln!(
            "test-cluster: interrupted; nodes stopped, data removed, logs in {}",
            out.display()
        );
        return Ok(ExitCode::from(2));
    }
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(1) => ExitCode::from(1),
        _ => ExitCode::from(2),
    })
}

/// One node process.
struct Node {
    index: usize,
    name: String,
    ip: Ipv4Addr,
    dir: PathBuf,
    child: Option<Child>,
    /// The defect it runs with (`STORE_NODE_FAULT`), for a negative control.
    defect: Option<&'static str>,
}

impl Node {
    fn http(&self) -> String {
        format!("{}:{HTTP_PORT}", self.ip)
    }

    fn start(&mut self, bin: &Path, log: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        use std::os::unix::process::CommandExt as _;
        let mut command = Command::new(bin);
        command
            // Its own process group: Ctrl-C reaches the run, which stops the nodes itself.
            .process_group(0)
            .args(["serve", "--config"])
            .arg(self.dir.join("node.yaml"))
            .env("TEST_CLUSTER_SECRET", SECRET)
            // A `test-clock` build reads the system clock plus an offset the clock fault sets;
            // any other build ignores it.
            .env("STORE_NODE_TEST_CLOCK_OFFSET", "1");
        if let Some(defect) = self.defect {
            command.env("STORE_NODE_FAULT", defect);
        }
        let child = command
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the node the way an operator does (SIGTERM: it finishes its work, writes its last
    /// snapshot and leaves the cluster); SIGKILL after `patience`. Whether it exited by itself.
    fn terminate(&mut self, patience: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

fn write_configs(options: &Options, nodes: &[Node]) -> Result<()> {
    let serializable = options.negative_control == Some(Control::SerializableReads);
    let registry = match (options.backend, serializable) {
        // `local` is the same data read from the node's own state machine: the final phase
        // compares the nodes through it.
        (Backend::Raft, false) => {
            "namespace: t\nentries:\n  - name: kv\n    kind: store.kv.raft\n    namespace: kv\n  - name: local\n    kind: store.kv.raft\n    namespace: kv\n    consistency: serializable\n"
        }
        (Backend::Raft, true) => {
            "namespace: t\nentries:\n  - name: kv\n    kind: store.kv.raft\n    namespace: kv\n    consistency: serializable\n  - name: local\n    kind: store.kv.raft\n    namespace: kv\n    consistency: serializable\n"
        }
        (Backend::Crdt, _) => {
            "namespace: t\nentries:\n  - name: kv\n    kind: store.kv.crdt\n    namespace: kv\n    durable: true\n"
        }
    };
    for node in nodes {
        std::fs::create_dir_all(node.dir.join("registry"))?;
        std::fs::write(node.dir.join("registry/t.yaml"), registry)?;
        let mut cluster = format!(
            "cluster:\n  name: {}\n  secret_env: TEST_CLUSTER_SECRET\n",
            node.name
        );
        match options.backend {
            Backend::Raft => {
                let snapshots = options
                    .snapshot_threshold
                    .map_or(String::new(), |n| format!("    snapshot_threshold: {n}\n"));
                let _ = write!(
                    cluster,
                    "  raft:\n    bind: {}:7800\n    heartbeat_interval: 100ms\n    election_timeout: 1s\n    request_timeout: {}s\n{snapshots}    initial_members:\n",
                    node.ip,
                    REQUEST_TIMEOUT.as_secs()
                );
                for n in nodes {
                    let _ = writeln!(cluster, "      {}: {}:7800", n.name, n.ip);
                }
            }
            Backend::Crdt => {
                let seeds: Vec<String> = nodes
                    .iter()
                    .filter(|n| n.index != node.index)
                    .map(|n| format!("{}:7900", n.ip))
                    .collect();
                let _ = write!(
                    cluster,
                    "  gossip:\n    bind: {}:7900\n    join: [{}]\n    push_pull_interval: 2s\n    snapshot_interval: 500ms\n",
                    node.ip,
                    seeds.join(", ")
                );
            }
        }
        std::fs::write(
            node.dir.join("node.yaml"),
            format!(
                "data_dir: ./data\nhttp:\n  bind: {}\n{cluster}registry:\n  - ./registry\n",
                node.http()
            ),
        )?;
    }
    Ok(())
}

/// What one client did, as recorded.
#[derive(Debug, Clone)]
struct Record {
    process: usize,
    node: usize,
    key: String,
    call: &'static str,
    value: Option<String>,
    expected: Option<u64>,
    invoke: u64,
    complete: u64,
    /// `ok`, `fail` or `unknown`.
    outcome: &'static str,
    /// For reads: the value and version; for writes: the version; for deletes: deleted.
    read: Option<(String, u64)>,
    version: Option<u64>,
    deleted: Option<bool>,
    /// 409 / 404 of a compare-and-swap, 409 of an `if_absent`.
    refusal: Option<&'static str>,
    expires_at: Option<u64>,
    /// A write's TTL (ms).
    ttl_ms: Option<u64>,
    /// The wall clock (Unix ms, the nodes' clock too) just before sending and just after the
    /// answer: the window in which the cluster judged expiry.
    clock_ms: (u64, u64),
    /// For a read that was part of a list: the list's prefix (every key under it that the page
    /// covered is one such read, present or absent, with the list's times).
    list: Option<String>,
}

/// The wall clock in Unix ms.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A value of `size` bytes that names `id` and says its own length (`v12/65536/...`), so a
/// read can tell a whole value from a torn one; small values are just the id.
fn value_of(id: &str, size: usize) -> Vec<u8> {
    if size <= id.len() {
        return id.as_bytes().to_vec();
    }
    let mut v = format!("{id}/{size}/").into_bytes();
    v.resize(size.max(v.len()), b'.');
    v
}

/// The id a read value names, or a mark no write wrote if its length is not the one it says.
fn id_of(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut parts = text.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(id), Some(size), Some(_)) => match size.parse::<usize>() {
            Ok(n) if n == body.len() => id.to_owned(),
            _ => format!("<torn: {} bytes of {id}, which says {size}>", body.len()),
        },
        _ => text.into_owned(),
    }
}

/// The reads a list answer stands for: one per key of the run's key space under the list's
/// prefix that the page covers, with the value and version listed, or absent; none when the
/// answer does not parse (the list then counts as failed).
fn list_reads(list: &Record, body: &[u8], keys: usize) -> Vec<Record> {
    use base64::Engine as _;
    let Ok(page) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let (Some(items), Some(has_more)) = (page["items"].as_array(), page["has_more"].as_bool())
    else {
        return Vec::new();
    };
    let mut listed = BTreeMap::new();
    for item in items {
        let (Some(key), Some(value), Some(version)) = (
            item["key"].as_str(),
            item["value"].as_str(),
            item["version"].as_u64(),
        ) else {
            return Vec::new();
        };
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(value) else {
            return Vec::new();
        };
        listed.insert(key.to_owned(), (id_of(&bytes), version));
    }
    let prefix = list.list.clone().unwrap_or_default();
    // A page that has more covers the keys up to its cursor only.
    let cursor = page["cursor"].as_str().map(str::to_owned);
    (0..keys)
        .map(|k| format!("k{k}"))
        .filter(|k| k.starts_with(&prefix))
        .filter(|k| !has_more || cursor.as_ref().is_some_and(|c| k <= c))
        .map(|key| Record {
            key: key.clone(),
            call: "read",
            outcome: "ok",
            read: listed.get(&key).cloned(),
            ..list.clone()
        })
        .collect()
}

/// What ends a fault (restart the node, resume it, add it back, …); a note for the report when
/// it did not go as planned.
type Undo = Box<dyn FnOnce(&mut [Node]) -> Option<String>>;

/// A fault window.
#[derive(Debug, Clone)]
struct Window {
    what: String,
    start: u64,
    end: u64,
    /// The nodes the fault acted on.
    nodes: Vec<usize>,
    /// A clock fault beyond `max_clock_skew`: the offset (ms).
    beyond_ms: Option<u64>,
}

struct Http {
    agent: ureq::Agent,
}

/// The answer to one request: status, headers we read, body; or how it failed.
enum Answer {
    Reply(u16, Option<u64>, Option<u64>, Vec<u8>),
    /// Failed before anything was sent (connection refused): not applied.
    NotSent,
    /// Sent, then lost (timeout, reset): may have been applied.
    Lost,
}

impl Http {
    fn new(timeout: Duration) -> Self {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(timeout))
                .timeout_connect(Some(Duration::from_secs(1)))
                .build(),
        );
        Self { agent }
    }

    fn call(&self, method: &str, url: &str, body: Option<&[u8]>) -> Answer {
        let req = ureq::http::Request::builder().method(method).uri(url);
        let result = match body {
            Some(b) => req.body(b.to_vec()).map(|r| self.agent.run(r)),
            None => req.body(()).map(|r| self.agent.run(r)),
        };
        match result {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                };
                let version = header("x-store-version");
                let expires = header("x-store-expires-at");
                // A body cut off (the node killed while it was sent) is an answer lost, never
                // an empty value.
                match response.into_body().read_to_vec() {
                    Ok(body) => Answer::Reply(status, version, expires, body),
                    Err(_) => Answer::Lost,
                }
            }
            Ok(Err(ureq::Error::ConnectionFailed | ureq::Error::HostNotFound)) => Answer::NotSent,
            Ok(Err(ureq::Error::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Answer::NotSent
            }
            _ => Answer::Lost,
        }
    }
}

/// Whether an error answer says the write may have been applied.
fn indeterminate(status: u16, body: &[u8]) -> bool {
    if status == 504 {
        return true;
    }
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["indeterminate"].as_bool())
        .unwrap_or(false)
}

struct Shared {
    start: Instant,
    stop: AtomicBool,
    records: Mutex<Vec<Record>>,
    counts: [AtomicU64; 3],
    fault: Mutex<String>,
    next_value: AtomicU64,
}

impl Shared {
    /// The fault in progress, as the progress line shows it.
    fn fault(&self) -> std::sync::MutexGuard<'_, String> {
        self.fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// Client `process`, on `node` at `addr`, until `deadline`.
fn client(
    shared: &Shared,
    options: &Options,
    (process, node, addr): (usize, usize, &str),
    seed: u64,
    deadline: Instant,
) {
    // Longer than the nodes' own request timeout, so the history records the store's answer
    // (ok, refused, indeterminate) rather than the client's impatience; only a paused or killed
    // node leaves a request cut off (`unknown`).
    let http = Http::new(REQUEST_TIMEOUT + Duration::from_secs(2));
    let mut rng = Rng(seed);
    // The last version this client saw per key, for compare-and-swap.
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let per_client = options.rate.map(|r| r / options.clients as f64);
    let begun = Instant::now();
    let mut done = 0u64;
    while Instant::now() < deadline && !shared.stop.load(Ordering::Relaxed) {
        if let Some(rate) = per_client {
            let due = begun + Duration::from_secs_f64(done as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        done += 1;
        let key = format!("k{}", rng.below(options.keys));
        let url = format!("http://{addr}/v1/stores/t:kv/keys/{key}");
        let roll = rng.below(100);
        let mut r = Record {
            process,
            node,
            key: key.clone(),
            call: "read",
            value: None,
            expected: None,
            invoke: 0,
            complete: 0,
            outcome: "unknown",
            read: None,
            version: None,
            deleted: None,
            refusal: None,
            expires_at: None,
            ttl_ms: None,
            clock_ms: (0, 0),
            list: None,
        };
        let value = format!("v{}", shared.next_value.fetch_add(1, Ordering::Relaxed));
        // Raft: one write in a hundred carries a large value (64 KiB to just under the 1 MiB
        // limit); one in four a TTL of 1-3 s, so reads cross deadlines.
        let size = if rng.below(100) == 0 {
            64 * 1024 + rng.below(1024 * 1024 - 64 * 1024 - 1024)
        } else {
            0
        };
        let ttl_ms = (rng.below(4) == 0).then(|| 1_000 + rng.below(2_001) as u64);
        let ttl = |ttl_ms: u64| format!("ttl={}ms", ttl_ms);
        // A list of the keys under a prefix (`k1`: k1, k10-k19): one read of each key it covers.
        let prefix = format!("k{}", rng.below(10));
        let list_url = format!("http://{addr}/v1/stores/t:kv/keys?prefix={prefix}&limit=1000");
        let (method, target, body): (&str, String, Option<Vec<u8>>) = match options.backend {
            Backend::Raft | Backend::Crdt if roll < 5 => {
                r.call = "list";
                r.list = Some(prefix.clone());
                ("GET", list_url, None)
            }
            Backend::Raft if roll < 40 => ("GET", url, None),
            Backend::Raft if roll < 62 => {
                r.call = "write";
                r.ttl_ms = ttl_ms;
                let query = ttl_ms.map_or(String::new(), |t| format!("?{}", ttl(t)));
                r.value = Some(value.clone());
                ("PUT", format!("{url}{query}"), Some(value_of(&value, size)))
            }
            Backend::Raft if roll < 82 => {
                r.call = "cas";
                r.ttl_ms = ttl_ms;
                let expected = seen.get(&key).copied().unwrap_or(1);
                r.expected = Some(expected);
                let query = ttl_ms.map_or(String::new(), |t| format!("&{}", ttl(t)));
                r.value = Some(value.clone());
                (
                    "PUT",
                    format!("{url}?if_version={expected}{query}"),
                    Some(value_of(&value, size)),
                )
            }
            // A lock: taken if free, held 1-2 s.
            Backend::Raft if roll < 92 => {
                r.call = "if_absent";
                let held = 1_000 + rng.below(1_001) as u64;
                r.ttl_ms = Some(held);
                r.value = Some(value.clone());
                (
                    "PUT",
                    format!("{url}?if_absent=true&{}", ttl(held)),
                    Some(value.into_bytes()),
                )
            }
            Backend::Raft => {
                r.call = "delete";
                ("DELETE", url, None)
            }
            Backend::Crdt if roll < 40 => ("GET", url, None),
            Backend::Crdt if roll < 85 => {
                r.call = "write";
                r.value = Some(value.clone());
                // One write in five with a short TTL.
                let ttl = if rng.below(5) == 0 { "?ttl=3s" } else { "" };
                ("PUT", format!("{url}{ttl}"), Some(value.into_bytes()))
            }
            Backend::Crdt => {
                r.call = "delete";
                ("DELETE", url, None)
            }
        };
        // The reads an ok list stands for.
        let mut listed = Vec::new();
        r.clock_ms.0 = unix_ms();
        r.invoke = shared.now();
        let answer = http.call(method, &target, body.as_deref());
        r.complete = shared.now();
        r.clock_ms.1 = unix_ms();
        match answer {
            Answer::NotSent => {
                r.outcome = "fail";
                // The node is down (killed): try again soon, not in a tight loop.
                std::thread::sleep(Duration::from_millis(50));
            }
            Answer::Lost => {
                r.outcome = if matches!(r.call, "read" | "list") {
                    "fail"
                } else {
                    "unknown"
                }
            }
            Answer::Reply(status, version, expires, body) => match (r.call, status) {
                ("read", 200) => {
                    r.outcome = "ok";
                    let v = id_of(&body);
                    if let Some(version) = version {
                        seen.insert(key.clone(), version);
                        r.read = Some((v, version));
                    }
                    let _ = expires;
                }
                ("read", 404) => r.outcome = "ok",
                ("read" | "list", _) if status != 200 => r.outcome = "fail",
                ("list", _) => {
                    let reads = list_reads(&r, &body, options.keys);
                    for read in &reads {
                        if let Some((_, version)) = &read.read {
                            seen.insert(read.key.clone(), *version);
                        }
                    }
                    r.outcome = if reads.is_empty() { "fail" } else { "ok" };
                    listed = reads;
                }
                ("write" | "cas" | "if_absent", 200) => {
                    r.outcome = "ok";
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    r.version = v["version"].as_u64();
                    r.expires_at = v["expires_at"].as_u64();
                    if let Some(version) = r.version {
                        seen.insert(key.clone(), version);
                    }
                }
                ("cas", 409) => {
                    r.outcome = "fail";
                    r.refusal = Some("conflict");
                    seen.remove(&key);
                }
                ("cas", 404) => {
                    r.outcome = "fail";
                    r.refusal = Some("not_found");
                }
                ("if_absent", 409) => {
                    r.outcome = "fail";
                    r.refusal = Some("exists");
                }
                ("delete", 200) => {
                    r.outcome = "ok";
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    r.deleted = v["deleted"].as_bool();
                }
                (_, s) if s >= 500 && indeterminate(s, &body) => r.outcome = "unknown",
                _ => r.outcome = "fail",
            },
        }
        let slot = match r.outcome {
            "ok" => 0,
            "fail" => 1,
            _ => 2,
        };
        shared.counts[slot].fetch_add(1, Ordering::Relaxed);
        let mut records = shared
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A list counts once, and stands in the history for the reads it made.
        if listed.is_empty() {
            records.push(r);
        } else {
            records.extend(listed);
        }
    }
}

/// The firewall of the namespace: drops between node addresses.
///
/// Clients share the namespace's loopback with the nodes, and the kernel gives their
/// connections the source address 127.0.0.1, node n1's: traffic to or from the HTTP port is
/// let through first, so a partition cuts nodes from each other and never clients from their
/// node (as a Jepsen control node stands outside the partitions).
struct Firewall;

const HTTP_PORT: &str = "7700";

impl Firewall {
    fn new() -> Result<Self> {
        nft(&["add", "table", "inet", "testcluster"])?;
        nft(&[
            "add",
            "chain",
            "inet",
            "testcluster",
            "out",
            "{ type filter hook output priority 0; policy accept; }",
        ])?;
        nft(&["add", "chain", "inet", "testcluster", "cuts"])?;
        for direction in ["dport", "sport"] {
            nft(&[
                "add",
                "rule",
                "inet",
                "testcluster",
                "out",
                "tcp",
                direction,
                HTTP_PORT,
                "accept",
            ])?;
        }
        nft(&["add", "rule", "inet", "testcluster", "out", "jump", "cuts"])?;
        Ok(Self)
    }

    /// Drops every packet between `a` and `b`, both ways.
    fn cut(&self, a: Ipv4Addr, b: Ipv4Addr) -> Result<()> {
        for (from, to) in [(a, b), (b, a)] {
            nft(&[
                "add",
                "rule",
                "inet",
                "testcluster",
                "cuts",
                "ip",
                "saddr",
                &from.to_string(),
                "ip",
                "daddr",
                &to.to_string(),
                "drop",
            ])?;
        }
        Ok(())
    }

    fn heal(&self) -> Result<()> {
        nft(&["flush", "chain", "inet", "testcluster", "cuts"])
    }
}

fn nft(args: &[&str]) -> Result<()> {
    let status = Command::new(tool("nft"))
        .args(args)
        .status()
        .context("cannot run nft")?;
    if !status.success() {
        bail!("nft {} failed", args.join(" "));
    }
    Ok(())
}

fn wait_healthy(addr: &str, patience: Duration) -> bool {
    let http = Http::new(Duration::from_secs(2));
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if let Answer::Reply(200, ..) = http.call("GET", &format!("http://{addr}/v1/health"), None)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn run_inside(options: &Options) -> Result<ExitCode> {
    let out = options
        .out
        .clone()
        .context("--out is set by the outer run")?;
    let bin = std::env::var_os("STORE_NODE_BIN")
        .map(PathBuf::from)
        .context("STORE_NODE_BIN is set by the outer run")?;
    let up = Command::new(tool("ip"))
        .args(["link", "set", "lo", "up"])
        .status()
        .context("cannot run ip")?;
    if !up.success() {
        bail!("cannot bring up loopback in the namespace");
    }
    // In the namespace this process is its init: a signal without a handler is ignored. Ctrl-C
    // ends the run early; everything below still stops the nodes and writes what was recorded.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = Arc::clone(&interrupted);
        ctrlc::set_handler(move || interrupted.store(true, Ordering::SeqCst))
            .context("cannot install the Ctrl-C handler")?;
    }
    let firewall = if needs_firewall(options) {
        Some(Firewall::new()?)
    } else {
        None
    };
    let mut nodes: Vec<Node> = (0..options.nodes)
        .map(|i| Node {
            index: i,
            name: format!("n{}", i + 1),
            ip: Ipv4Addr::new(127, 0, 0, i as u8 + 1),
            dir: out.join("data").join(format!("n{}", i + 1)),
            child: None,
            defect: options.negative_control.and_then(Control::defect),
        })
        .collect();
    write_configs(options, &nodes)?;
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs)?;
    for node in &mut nodes {
        node.start(&bin, &logs.join(format!("{}.log", node.name)))?;
    }
    let addrs: Vec<String> = nodes.iter().map(Node::http).collect();
    for a in &addrs {
        if !wait_healthy(a, Duration::from_secs(60)) {
            bail!(
                "node {a} did not become healthy within 60 s; see {}",
                logs.display()
            );
        }
    }
    if let Some(defect) = options.negative_control.and_then(Control::defect) {
        // A node logs the defect it runs with; one that does not is not breaking anything.
        let line = format!("fault injection: {defect}");
        for node in &nodes {
            let log = logs.join(format!("{}.log", node.name));
            if !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(&line)
            {
                bail!(
                    "{} does not run the defect {defect:?} (no {line:?} in {}): not a \
                     fault-injection build?",
                    node.name,
                    log.display()
                );
            }
        }
    }
    println!(
        "{} nodes up ({:?}), {} clients, {:?}, nemesis {:?}",
        nodes.len(),
        options.backend,
        options.clients,
        options.time,
        options.nemesis.iter().map(|f| f.name()).collect::<Vec<_>>()
    );

    let shared = Arc::new(Shared {
        start: Instant::now(),
        stop: AtomicBool::new(false),
        records: Mutex::new(Vec::new()),
        counts: Default::default(),
        fault: Mutex::new("none".into()),
        next_value: AtomicU64::new(1),
    });
    let deadline = Instant::now() + options.time;
    let mut rng = Rng(options.seed);
    // Each client talks to one node, the clients dealt over the nodes in a random order: a
    // client whose node is cut off or paused waits, the others go on (a client free to pick any
    // node would soon be stuck on the faulty one, and so would every other).
    let order = rng.permutation(nodes.len());
    let clients: Vec<_> = (0..options.clients)
        .map(|c| {
            let shared = Arc::clone(&shared);
            let options = options.clone();
            let node = order[c % order.len()];
            let addr = addrs[node].clone();
            let seed = rng.next();
            std::thread::spawn(move || {
                client(&shared, &options, (c, node, &addr), seed, deadline);
            })
        })
        .collect();

    // The nemesis, on this thread: a fault, a pause, another fault, … until the end.
    let mut windows: Vec<Window> = Vec::new();
    let faults = &options.nemesis;
    let mut last_print = Instant::now();
    let mut next_fault =
        Instant::now() + rng.between(Duration::from_secs(2), Duration::from_secs(5));
    let mut active: Option<(Instant, Window, Undo)> = None;
    while Instant::now() < deadline && !interrupted.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        if let Some((end, _, _)) = &active {
            if now >= *end {
                end_fault(
                    &mut active,
                    &mut nodes,
                    &mut windows,
                    firewall.as_ref(),
                    &shared,
                )?;
                next_fault = now + rng.between(Duration::from_secs(2), Duration::from_secs(6));
            }
        } else if !faults.is_empty() && now >= next_fault && now + Duration::from_secs(5) < deadline
        {
            let fault = faults[rng.below(faults.len())];
            let length = rng.between(Duration::from_secs(3), Duration::from_secs(8));
            let start = shared.now();
            *shared.fault() = fault.name().to_owned();
            let Injected {
                what,
                undo,
                over,
                hit,
                beyond_ms,
            } = inject(
                fault,
                &mut nodes,
                &mut rng,
                firewall.as_ref(),
                (options.backend, &bin, &logs),
                options.negative_control == Some(Control::IgnoreClockSkew),
            )?;
            *shared.fault() = what.clone();
            let window = Window {
                what,
                start,
                end: 0,
                nodes: hit,
                beyond_ms,
            };
            active = Some((now + length, window, undo));
            if over {
                end_fault(
                    &mut active,
                    &mut nodes,
                    &mut windows,
                    firewall.as_ref(),
                    &shared,
                )?;
                next_fault = now + rng.between(Duration::from_secs(2), Duration::from_secs(6));
            }
        }
        if last_print.elapsed() >= Duration::from_secs(2) {
            last_print = Instant::now();
            let c: Vec<u64> = shared
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
            println!(
                "[{:>4.0}s] ops {:>7}  ok {:>7}  fail {:>6}  unknown {:>5}  fault: {}",
                shared.start.elapsed().as_secs_f64(),
                c.iter().sum::<u64>(),
                c[0],
                c[1],
                c[2],
                shared.fault()
            );
        }
    }
    end_fault(
        &mut active,
        &mut nodes,
        &mut windows,
        firewall.as_ref(),
        &shared,
    )?;
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let records = std::mem::take(
        &mut *shared
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    if interrupted.load(Ordering::SeqCst) {
        for node in &mut nodes {
            node.kill();
        }
        write_history(&out, &records, &windows)?;
        eprintln!(
            "test-cluster: interrupted; nodes stopped, the history so far is in {}",
            out.display()
        );
        return Ok(ExitCode::from(2));
    }
    // Healed; let the cluster recover, then (gossip) read every key on every node until they
    // agree.
    let healed = Instant::now();
    for a in &addrs {
        wait_healthy(a, Duration::from_secs(60));
    }
    let mut records = records;
    let (finals, converged, replicas) = match options.backend {
        Backend::Crdt => {
            let (finals, converged) = settle(options, &addrs, healed, Duration::from_secs(60));
            (finals, converged, None)
        }
        Backend::Raft => {
            let settled = settle_raft(options, &addrs, &shared, healed, Duration::from_secs(60));
            records.extend(settled.reads);
            (Vec::new(), settled.converged, Some(settled.verdict))
        }
    };
    for node in &mut nodes {
        node.kill();
    }
    write_history(&out, &records, &windows)?;
    let length = shared.now();
    let checking = Instant::now();
    let mut verdicts = check(options, &records, &finals, &windows);
    if let Some(v) = replicas {
        verdicts.push(("every node holds the final state".into(), v));
    }
    let run = Run {
        checked_in: checking.elapsed(),
        records,
        windows,
        verdicts,
        converged,
        length,
    };
    plots(&out, &run)?;
    report(options, &out, &run)
}

/// What a run recorded and found.
struct Run {
    records: Vec<Record>,
    windows: Vec<Window>,
    verdicts: Vec<(String, Verdict)>,
    /// How long the checkers took.
    checked_in: Duration,
    /// Gossip: how long after healing every node answered the same.
    converged: Option<Duration>,
    /// ns from the start to the end of the final reads.
    length: u64,
}

/// `latency.png` and `throughput.png` in `out`.
fn plots(out: &Path, run: &Run) -> Result<()> {
    let points: Vec<plot::Point> = run
        .records
        .iter()
        .map(|r| plot::Point {
            at: r.invoke as f64 / 1e9,
            latency_ms: r.complete.saturating_sub(r.invoke) as f64 / 1e6,
            outcome: r.outcome,
        })
        .collect();
    let spans: Vec<plot::Span> = run
        .windows
        .iter()
        .map(|w| plot::Span {
            start: w.start as f64 / 1e9,
            end: w.end as f64 / 1e9,
            what: w.what.clone(),
        })
        .collect();
    let end = run.length as f64 / 1e9;
    plot::latency(&out.join("latency.png"), &points, &spans, end)?;
    plot::throughput(&out.join("throughput.png"), &points, &spans, end)
}

/// Cuts a follower (a random node when no leader is known) from every other node. Its undo
/// waits (raft) until the leader has purged its log past the lagger's last entry, so the
/// lagger can only catch up by snapshot (for up to [`LAGGER_PATIENCE`]; the report says if it
/// never got that far), lets it back, and half the time kills it 0–0.5 s later, while the
/// snapshot comes in, and restarts it at once.
fn lagger(
    nodes: &[Node],
    rng: &mut Rng,
    fw: &Firewall,
    backend: Backend,
    bin: &Path,
    logs: &Path,
) -> Result<(String, Undo, Vec<usize>)> {
    let n = nodes.len();
    let leader = if backend == Backend::Raft {
        leader(nodes)
    } else {
        None
    };
    let followers: Vec<usize> = (0..n).filter(|i| Some(*i) != leader).collect();
    let f = followers[rng.below(followers.len())];
    for other in (0..n).filter(|i| *i != f) {
        fw.cut(nodes[f].ip, nodes[other].ip)?;
    }
    let crash =
        (rng.below(2) == 0).then(|| rng.between(Duration::ZERO, Duration::from_millis(500)));
    let (bin, logs) = (bin.to_owned(), logs.to_owned());
    let undo: Undo = Box::new(move |nodes: &mut [Node]| {
        let mut notes = Vec::new();
        if backend == Backend::Raft {
            let started = Instant::now();
            notes.push(if behind_purge(nodes, f, started + LAGGER_PATIENCE) {
                format!(
                    "behind the purged log after {:.1} s",
                    started.elapsed().as_secs_f64()
                )
            } else {
                format!(
                    "NOT behind the purged log within {} s",
                    LAGGER_PATIENCE.as_secs()
                )
            });
        }
        if let Err(e) = Firewall.heal() {
            notes.push(format!("heal failed: {e:#}"));
        }
        if let Some(after) = crash {
            std::thread::sleep(after);
            nodes[f].kill();
            notes.push(match restart(nodes, &[f], &bin, &logs) {
                None => format!(
                    "killed {:.1} s after it was let back, restarted at once",
                    after.as_secs_f64()
                ),
                Some(e) => e,
            });
        }
        (!notes.is_empty()).then(|| notes.join("; "))
    });
    Ok((format!("lagger {}", nodes[f].name), undo, vec![f]))
}

/// Sets one node's clock (the raft leader half the time) ahead or behind: two times in three by
/// 100 ms to [`CLOCK_OFFSET_MS`], within the nodes' `max_clock_skew`; else by
/// [`CLOCK_BEYOND_MS`], beyond it (returned: the offset), or for crdt an hour ahead (every time
/// with `hour`). The undo sets it back to true time, a step back when it was ahead.
fn clock(
    nodes: &[Node],
    rng: &mut Rng,
    backend: Backend,
    hour: bool,
) -> (String, Undo, Vec<usize>, Option<u64>) {
    let known = (backend == Backend::Raft && rng.below(2) == 0)
        .then(|| leader(nodes))
        .flatten();
    let i = known.unwrap_or_else(|| rng.below(nodes.len()));
    // Two gossip nodes cannot tell whose clock is wrong, so their guard is off: beyond the bound
    // they promise nothing about stamps.
    let beyond = hour || (rng.below(3) == 0 && (backend == Backend::Raft || nodes.len() >= 3));
    let hour = hour || (beyond && backend == Backend::Crdt && rng.below(2) == 0);
    let size = if hour {
        CLOCK_HOUR_MS
    } else if beyond {
        let (lo, hi) = CLOCK_BEYOND_MS;
        lo + rng.below((hi - lo + 1) as usize) as u64
    } else {
        100 + rng.below(CLOCK_OFFSET_MS as usize - 99) as u64
    };
    let offset = if hour || rng.below(2) == 0 {
        size as i64
    } else {
        -(size as i64)
    };
    let set = |addr: &str, ms: i64| -> Option<String> {
        let http = Http::new(Duration::from_secs(3));
        match http.call(
            "POST",
            &format!("http://{addr}/v1/test/clock/offset?ms={ms}"),
            None,
        ) {
            Answer::Reply(200, ..) => None,
            Answer::Reply(404, ..) => {
                Some("the node has no offset clock: not a test-clock build".into())
            }
            Answer::Reply(status, ..) => Some(format!("offset refused: {status}")),
            _ => Some("the node did not answer".into()),
        }
    };
    let addr = nodes[i].http();
    let who = if known == Some(i) {
        format!("leader {}", nodes[i].name)
    } else {
        nodes[i].name.clone()
    };
    let what = match set(&addr, offset) {
        None => format!(
            "clock {who} {offset:+} ms ({} max_clock_skew {MAX_CLOCK_SKEW_MS} ms){}",
            if beyond { "BEYOND" } else { "within" },
            if offset > 0 {
                ", stepped back to true time at the end"
            } else {
                ", back to true time at the end"
            }
        ),
        Some(e) => format!("clock {who}: {e}"),
    };
    let undo: Undo = Box::new(move |_: &mut [Node]| set(&addr, 0));
    (what, undo, vec![i], beyond.then_some(size))
}

/// Whether the raft leader (as the nodes other than `f` name it) purged its log past `f`'s
/// last entry before `deadline`, polling.
fn behind_purge(nodes: &[Node], f: usize, deadline: Instant) -> bool {
    let http = Http::new(Duration::from_secs(3));
    let raft = |i: usize| -> Option<serde_json::Value> {
        let Answer::Reply(200, _, _, body) = http.call(
            "GET",
            &format!("http://{}/v1/cluster", nodes[i].http()),
            None,
        ) else {
            return None;
        };
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .map(|v| v["raft"].clone())
    };
    while Instant::now() < deadline {
        let last = raft(f).and_then(|r| r["last_log_index"].as_u64());
        let purged = (0..nodes.len())
            .filter(|i| *i != f)
            .filter_map(raft)
            .find(|r| r["leader"].is_string() && r["leader"] == r["name"])
            .and_then(|r| r["purged_index"].as_u64());
        if let (Some(last), Some(purged)) = (last, purged)
            && purged > last
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// A fault just started.
struct Injected {
    /// What it is, for the report.
    what: String,
    /// What ends it.
    undo: Undo,
    /// Over already (a fast restart, a stall).
    over: bool,
    /// The nodes it acts on (killed, stopped, cut off, removed), for the per-node schedule.
    hit: Vec<usize>,
    /// A clock set beyond `max_clock_skew`: by how much (ms).
    beyond_ms: Option<u64>,
}

impl Injected {
    /// A fault that is over already: its window closes at once, with nothing to undo.
    fn over(what: String, hit: Vec<usize>) -> Self {
        Self {
            what,
            undo: Box::new(|_: &mut [Node]| None),
            over: true,
            hit,
            beyond_ms: None,
        }
    }
}

/// Starts `fault` on the cluster.
fn inject(
    fault: Fault,
    nodes: &mut [Node],
    rng: &mut Rng,
    firewall: Option<&Firewall>,
    (backend, bin, logs): (Backend, &Path, &Path),
    clock_hour: bool,
) -> Result<Injected> {
    let (what, undo, hit): (String, Undo, Vec<usize>) = match fault {
        Fault::Partition => {
            let fw = firewall.context("the firewall exists for partitions")?;
            let undo: Undo = Box::new(|_: &mut [Node]| None);
            let (what, hit) = partition(nodes, rng, fw)?;
            (what, undo, hit)
        }
        Fault::KillLeader => kill_leader(nodes, rng, bin, logs),
        Fault::IsolateLeader => {
            let fw = firewall.context("the firewall exists for partitions")?;
            isolate_leader(nodes, rng, fw, backend)?
        }
        Fault::Kill => {
            let (target, when) = if rng.below(2) == 0 {
                (Target::for_kill(rng), Restart::Fast(fast_restart(rng)))
            } else {
                (Target::for_kill(rng), Restart::Slow)
            };
            let (hit, who) = target.pick(nodes, rng);
            for &i in &hit {
                nodes[i].kill();
            }
            match when {
                Restart::Fast(after) => {
                    std::thread::sleep(after);
                    let what = match restart(nodes, &hit, bin, logs) {
                        None => format!("kill {who}, restarted after {:.1} s", after.as_secs_f64()),
                        Some(e) => format!("kill {who} ({e})"),
                    };
                    return Ok(Injected::over(what, hit));
                }
                Restart::Slow => {
                    let bin = bin.to_owned();
                    let logs = logs.to_owned();
                    let restarted = hit.clone();
                    (
                        format!("kill {who}"),
                        Box::new(move |nodes: &mut [Node]| restart(nodes, &restarted, &bin, &logs)),
                        hit,
                    )
                }
            }
        }
        Fault::Pause => {
            let (hit, who) = Target::for_pause(rng).pick(nodes, rng);
            for &i in &hit {
                nodes[i].signal("-STOP");
            }
            let resumed = hit.clone();
            (
                format!("pause {who}"),
                Box::new(move |nodes: &mut [Node]| {
                    for &i in &resumed {
                        nodes[i].signal("-CONT");
                    }
                    None
                }),
                hit,
            )
        }
        Fault::Membership if backend == Backend::Crdt => gossip_churn(nodes, rng, bin, logs),
        Fault::Membership => membership(nodes, rng),
        Fault::Lagger => {
            let fw = firewall.context("the firewall exists for laggers")?;
            lagger(nodes, rng, fw, backend, bin, logs)?
        }
        Fault::Stall => {
            let (what, hit) = stall(nodes, rng);
            return Ok(Injected::over(what, hit));
        }
        Fault::Clock => {
            let (what, undo, hit, beyond_ms) = clock(nodes, rng, backend, clock_hour);
            return Ok(Injected {
                what,
                undo,
                over: false,
                hit,
                beyond_ms,
            });
        }
    };
    Ok(Injected {
        what,
        undo,
        over: false,
        hit,
        beyond_ms: None,
    })
}

/// The leader killed and restarted 0–1.5 s later, at the worst moment for it: the followers
/// holding its newest entries are stalled (SIGSTOP, as a disk or a VM can stall) from the kill to
/// the end of the window, and the others, enough to make a quorum with it, lag behind (stopped
/// for 0.3–1 s before the kill while the rest went on). The restarted leader must serve nothing
/// from before its newest acknowledged writes while it brings the laggers up to date. The whole
/// schedule stays shorter than a follower's election timeout, so the restarted node comes back
/// as the leader it was, not after an election.
fn kill_leader(
    nodes: &mut [Node],
    rng: &mut Rng,
    bin: &Path,
    logs: &Path,
) -> (String, Undo, Vec<usize>) {
    let n = nodes.len();
    let Some(l) = leader(nodes) else {
        let i = rng.below(n);
        nodes[i].kill();
        std::thread::sleep(fast_restart(rng));
        let note = restart(nodes, &[i], bin, logs).map_or(String::new(), |e| format!(" ({e})"));
        let what = format!(
            "kill-leader: no leader known; killed {}{note}",
            nodes[i].name
        );
        return (what, Box::new(|_: &mut [Node]| None), vec![i]);
    };
    let followers: Vec<usize> = rng.permutation(n).into_iter().filter(|i| *i != l).collect();
    // With the leader, the laggers are a quorum (n/2 + 1 nodes).
    let (lagging, stalled) = followers.split_at((n / 2).min(followers.len()));
    let (lagging, stalled) = (lagging.to_vec(), stalled.to_vec());
    let names = |set: &[usize]| {
        set.iter()
            .map(|i| nodes[*i].name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    let (lagging_names, stalled_names) = (names(&lagging), names(&stalled));
    for &i in &lagging {
        nodes[i].signal("-STOP");
    }
    std::thread::sleep(rng.between(Duration::from_millis(300), Duration::from_millis(1000)));
    nodes[l].kill();
    for &i in &stalled {
        nodes[i].signal("-STOP");
    }
    let after = fast_restart(rng);
    std::thread::sleep(after);
    let note = restart(nodes, &[l], bin, logs).map_or(String::new(), |e| format!(" ({e})"));
    for &i in &lagging {
        nodes[i].signal("-CONT");
    }
    let mut hit = vec![l];
    hit.extend(&lagging);
    hit.extend(&stalled);
    hit.sort_unstable();
    let what = format!(
        "kill-leader {}, restarted after {:.1} s{note}; lagging {lagging_names}, stalled {}",
        nodes[l].name,
        after.as_secs_f64(),
        if stalled_names.is_empty() {
            "none"
        } else {
            &stalled_names
        }
    );
    (
        what,
        Box::new(move |nodes: &mut [Node]| {
            for &i in &stalled {
                nodes[i].signal("-CONT");
            }
            None
        }),
        hit,
    )
}

/// Stops enough of the leader's followers that the leader has no quorum (crdt, or no leader
/// known: that many nodes at random) for 0.4–0.9 s, shorter than an election timeout (1 s), so
/// the leader keeps leading, then resumes them: what it was, and the nodes stopped. A write in
/// that time waits past its usual latency and is then committed: one answered as failed (not
/// applied) shows up in a later read.
fn stall(nodes: &mut [Node], rng: &mut Rng) -> (String, Vec<usize>) {
    let n = nodes.len();
    // A quorum is n/2 + 1: with n - n/2 nodes stopped, the rest are short of one.
    let count = n - n / 2;
    let leader = leader(nodes);
    let mut hit: Vec<usize> = rng
        .permutation(n)
        .into_iter()
        .filter(|i| Some(*i) != leader)
        .take(count)
        .collect();
    hit.sort_unstable();
    let held = rng.between(Duration::from_millis(400), Duration::from_millis(900));
    for &i in &hit {
        nodes[i].signal("-STOP");
    }
    std::thread::sleep(held);
    for &i in &hit {
        nodes[i].signal("-CONT");
    }
    let names: Vec<&str> = hit.iter().map(|i| nodes[*i].name.as_str()).collect();
    let what = format!(
        "stall {} for {:.1} s ({})",
        names.join(","),
        held.as_secs_f64(),
        match leader {
            Some(l) => format!("leader {} without a quorum", nodes[l].name),
            None => "no leader known".to_owned(),
        }
    );
    (what, hit)
}

/// Starts the `hit` nodes again on their data folders; what failed, if anything.
fn restart(nodes: &mut [Node], hit: &[usize], bin: &Path, logs: &Path) -> Option<String> {
    let failed: Vec<String> = hit
        .iter()
        .filter_map(|&i| {
            let log = logs.join(format!("{}.log", nodes[i].name));
            nodes[i]
                .start(bin, &log)
                .err()
                .map(|e| format!("restart of {} failed: {e:#}", nodes[i].name))
        })
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}

/// A supervisor's restart delay: 0–1.5 s.
fn fast_restart(rng: &mut Rng) -> Duration {
    rng.between(Duration::ZERO, Duration::from_millis(1500))
}

/// Cuts the cluster in one of the shapes of [`shape`], with drops both ways between the sides:
/// what it is, and the nodes on either side.
fn partition(nodes: &[Node], rng: &mut Rng, fw: &Firewall) -> Result<(String, Vec<usize>)> {
    let (what, a, b) = shape(nodes.len(), rng, || leader(nodes));
    for &x in &a {
        for &y in &b {
            fw.cut(nodes[x].ip, nodes[y].ip)?;
        }
    }
    let names = |s: &[usize]| {
        s.iter()
            .map(|i| nodes[*i].name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    let what = what.replace("{bridge}", &names(&[shape_bridge(nodes.len(), &a, &b)]));
    let what = format!("{what}: {} | {}", names(&a), names(&b));
    let mut hit: Vec<usize> = a.iter().chain(&b).copied().collect();
    hit.sort_unstable();
    Ok((what, hit))
}

/// Cuts the Raft leader (a random node when none is known, and always for crdt) from every
/// other node. Its undo (raft) first waits, for up to [`ISOLATION_PATIENCE`], until the others
/// elected a new leader, and keeps the cut [`ISOLATION_HOLD`] longer: only then is there a
/// deposed leader that still believes it leads, next to a new one taking writes, and its
/// clients, back from writes that waited out the request timeout, read from it.
fn isolate_leader(
    nodes: &[Node],
    rng: &mut Rng,
    fw: &Firewall,
    backend: Backend,
) -> Result<(String, Undo, Vec<usize>)> {
    let known = if backend == Backend::Raft {
        leader(nodes)
    } else {
        None
    };
    let alone = known.unwrap_or_else(|| rng.below(nodes.len()));
    let others: Vec<usize> = (0..nodes.len()).filter(|i| *i != alone).collect();
    for &other in &others {
        fw.cut(nodes[alone].ip, nodes[other].ip)?;
    }
    let name = nodes[alone].name.clone();
    let what = match known {
        Some(_) => format!("isolate leader {name}"),
        None => format!("isolate {name} (no leader known)"),
    };
    let undo: Undo = Box::new(move |nodes: &mut [Node]| {
        // Gossip has no leader to depose.
        known?;
        let started = Instant::now();
        loop {
            let seen = leader_name(nodes.iter().filter(|n| n.index != alone));
            if let Some(new) = seen.filter(|l| *l != name) {
                let waited = started.elapsed();
                // Long enough for every client of the deposed leader to be answered by it again:
                // a write there waits out the request timeout.
                std::thread::sleep(ISOLATION_HOLD);
                return Some(format!(
                    "{new} led the others {:.1} s into the wait, cut off {} s more",
                    waited.as_secs_f64(),
                    ISOLATION_HOLD.as_secs()
                ));
            }
            if started.elapsed() >= ISOLATION_PATIENCE {
                return Some(format!(
                    "NO new leader among the others within {} s",
                    ISOLATION_PATIENCE.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    Ok((what, undo, (0..nodes.len()).collect()))
}

/// The node in neither side of a cut of `n` nodes (a bridge's), or the first if none.
fn shape_bridge(n: usize, a: &[usize], b: &[usize]) -> usize {
    (0..n)
        .find(|i| !a.contains(i) && !b.contains(i))
        .unwrap_or(0)
}

/// One of three partition shapes of `n` nodes, drawn from `rng`, as the two sides to cut
/// apart: two random halves; the Raft leader alone (any one node when `leader` knows none); or
/// a bridge: one node in neither side, which sees both while the sides do not see each
/// other (with an odd count, each side with the bridge is a majority).
fn shape(
    n: usize,
    rng: &mut Rng,
    leader: impl FnOnce() -> Option<usize>,
) -> (String, Vec<usize>, Vec<usize>) {
    let order = rng.permutation(n);
    match rng.below(3) {
        1 => {
            let leader = leader().filter(|l| *l < n);
            let alone = leader.unwrap_or(order[0]);
            let rest = order.into_iter().filter(|i| *i != alone).collect();
            let what = if leader.is_some() {
                "partition, leader alone"
            } else {
                "partition, one node alone"
            };
            (what.to_owned(), vec![alone], rest)
        }
        2 if n >= 3 => {
            let side = (n - 1) / 2;
            (
                "partition, bridge {bridge}".to_owned(),
                order[1..=side].to_vec(),
                order[side + 1..].to_vec(),
            )
        }
        _ => {
            let (a, b) = order.split_at((n / 2).max(1));
            ("partition, halves".to_owned(), a.to_vec(), b.to_vec())
        }
    }
}

/// The Raft leader, as the first node that answers knows it.
fn leader(nodes: &[Node]) -> Option<usize> {
    let name = leader_name(nodes)?;
    nodes.iter().position(|m| m.name == name)
}

/// The name of the Raft leader, as the first of `asked` that answers knows it.
fn leader_name<'a>(asked: impl IntoIterator<Item = &'a Node>) -> Option<String> {
    let http = Http::new(Duration::from_secs(1));
    asked.into_iter().find_map(|n| {
        let Answer::Reply(200, _, _, body) =
            http.call("GET", &format!("http://{}/v1/cluster", n.http()), None)
        else {
            return None;
        };
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        v["raft"]["leader"].as_str().map(str::to_owned)
    })
}

/// Gossip membership churn: one node leaves the cluster cleanly (SIGTERM: last snapshot, then
/// memberlist's leave) while the others go on writing and deleting, so their tombstones wait on
/// a member that is gone; at the end of the window it joins again, half the time on its old
/// data (a restart: its stale values must not bring a deleted key back) and half the time with
/// its data folder wiped (a machine replaced under the same name: it must catch up from
/// nothing).
fn gossip_churn(
    nodes: &mut [Node],
    rng: &mut Rng,
    bin: &Path,
    logs: &Path,
) -> (String, Undo, Vec<usize>) {
    let i = rng.below(nodes.len());
    let wipe = rng.below(2) == 0;
    let clean = nodes[i].terminate(Duration::from_secs(20));
    let name = nodes[i].name.clone();
    let mut note = if clean {
        String::new()
    } else {
        " (it did not exit within 20 s of SIGTERM: killed)".to_owned()
    };
    if wipe && let Err(e) = std::fs::remove_dir_all(nodes[i].dir.join("data")) {
        let _ = write!(note, " (cannot wipe its data: {e})");
    }
    let (bin, logs) = (bin.to_owned(), logs.to_owned());
    (
        format!(
            "membership {name}: left (SIGTERM), rejoins at the end {}{note}",
            if wipe {
                "with its data wiped"
            } else {
                "on its old data"
            }
        ),
        Box::new(move |nodes: &mut [Node]| restart(nodes, &[i], &bin, &logs)),
        vec![i],
    )
}

/// Removes a Raft member through the cluster endpoint of another node (any node forwards it
/// to the leader); the undo adds it back as a voter, retrying until a leader takes it.
fn membership(nodes: &[Node], rng: &mut Rng) -> (String, Undo, Vec<usize>) {
    let i = rng.below(nodes.len());
    let others: Vec<String> = nodes
        .iter()
        .filter(|n| n.index != i)
        .map(Node::http)
        .collect();
    let name = nodes[i].name.clone();
    let raft_addr = format!("{}:7800", nodes[i].ip);
    let http = Http::new(Duration::from_secs(10));
    let via = &others[rng.below(others.len())];
    let removed = match http.call(
        "DELETE",
        &format!("http://{via}/v1/cluster/raft/members/{name}"),
        None,
    ) {
        Answer::Reply(200, ..) => "removed, then added back".to_owned(),
        Answer::Reply(status, _, _, body) => format!(
            "removal refused: {status} {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(120)
                .collect::<String>()
        ),
        Answer::NotSent | Answer::Lost => "removal unanswered".to_owned(),
    };
    let undo: Undo = Box::new(move |_: &mut [Node]| {
        // Added back whatever the removal answered: adding a member that is one is a no-op.
        let body = serde_json::json!({"name": name, "addr": raft_addr, "role": "voter"});
        let body = body.to_string().into_bytes();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        for via in others.iter().cycle() {
            match http.call(
                "POST",
                &format!("http://{via}/v1/cluster/raft/members"),
                Some(&body),
            ) {
                Answer::Reply(200, ..) => return None,
                Answer::Reply(status, _, _, body) => {
                    last = format!("{status} {}", String::from_utf8_lossy(&body));
                }
                Answer::NotSent | Answer::Lost => last = format!("{via} did not answer"),
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Some(format!("NOT added back within 30 s: {last}"))
    });
    (
        format!("membership {}: {removed}", nodes[i].name),
        undo,
        vec![i],
    )
}

/// Ends the fault in progress, if any (restart, resume, add back), records its window, shows
/// no fault, and heals every partition.
fn end_fault(
    active: &mut Option<(Instant, Window, Undo)>,
    nodes: &mut [Node],
    windows: &mut Vec<Window>,
    firewall: Option<&Firewall>,
    shared: &Shared,
) -> Result<()> {
    if let Some((_, mut w, undo)) = active.take() {
        if let Some(note) = undo(nodes) {
            eprintln!("{}: {note}", w.what);
            let _ = write!(w.what, " ({note})");
        }
        w.end = shared.now();
        windows.push(w);
        *shared.fault() = "none".into();
    }
    if let Some(fw) = firewall {
        fw.heal()?;
    }
    Ok(())
}

/// Reads every key on every node until all nodes answer the same for every key, or `patience`
/// after `healed` passed: the last reads, and how long after healing they agreed.
fn settle(
    options: &Options,
    addrs: &[String],
    healed: Instant,
    patience: Duration,
) -> (Vec<eventual::FinalRead>, Option<Duration>) {
    loop {
        let finals = final_reads(options, addrs, "t:kv");
        let mut first: BTreeMap<&str, &Option<(String, u64)>> = BTreeMap::new();
        let agree = finals
            .iter()
            .all(|f| **first.entry(f.key.as_str()).or_insert(&f.value) == f.value);
        if agree {
            return (finals, Some(healed.elapsed()));
        }
        if healed.elapsed() >= patience {
            return (finals, None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the raft final phase found.
struct Settled {
    /// The linearizable reads it made, for the history.
    reads: Vec<Record>,
    /// How long after healing every node held the state the linearizable reads saw.
    converged: Option<Duration>,
    verdict: Verdict,
}

/// Raft, healed: reads every key linearizably (through each node in turn), then every key on
/// every node from its own state machine (`t:local`, serializable), until every node holds
/// what the linearizable reads saw, or `patience` after `healed` passed. The linearizable
/// reads join the history (as process `options.clients`, after every client stopped), so the
/// linearizability check holds the final state to every acknowledged write.
fn settle_raft(
    options: &Options,
    addrs: &[String],
    shared: &Shared,
    healed: Instant,
    patience: Duration,
) -> Settled {
    let http = Http::new(REQUEST_TIMEOUT + Duration::from_secs(2));
    let mut reads = Vec::new();
    let mut round = 0usize;
    loop {
        let node = round % addrs.len();
        round += 1;
        let mut linear: BTreeMap<String, Option<Option<(String, u64)>>> = BTreeMap::new();
        for k in 0..options.keys {
            let key = format!("k{k}");
            let before = unix_ms();
            let invoke = shared.now();
            let answer = http.call(
                "GET",
                &format!("http://{}/v1/stores/t:kv/keys/{key}", addrs[node]),
                None,
            );
            let complete = shared.now();
            let clock_ms = (before, unix_ms());
            let (outcome, read) = match answer {
                Answer::Reply(200, Some(version), _, body) => ("ok", Some((id_of(&body), version))),
                Answer::Reply(404, ..) => ("ok", None),
                _ => ("fail", None),
            };
            linear.insert(key.clone(), (outcome == "ok").then(|| read.clone()));
            reads.push(Record {
                process: options.clients,
                node,
                key,
                call: "read",
                value: None,
                expected: None,
                invoke,
                complete,
                outcome,
                read,
                version: None,
                deleted: None,
                refusal: None,
                expires_at: None,
                ttl_ms: None,
                clock_ms,
                list: None,
            });
        }
        let local = final_reads(options, addrs, "t:local");
        let differ: Vec<String> = local
            .iter()
            .filter(|f| {
                linear
                    .get(&f.key)
                    .is_none_or(|l| l.as_ref() != Some(&f.value))
            })
            .map(|f| {
                let shown = |v: &Option<(String, u64)>| match v {
                    Some((value, version)) => format!("{value:?} v{version}"),
                    None => "absent".to_owned(),
                };
                format!(
                    "n{} holds {} for {:?}, the linearizable read saw {}",
                    f.node + 1,
                    shown(&f.value),
                    f.key,
                    match linear.get(&f.key) {
                        Some(Some(v)) => shown(v),
                        _ => "no answer".to_owned(),
                    }
                )
            })
            .collect();
        if differ.is_empty() {
            return Settled {
                reads,
                converged: Some(healed.elapsed()),
                verdict: Verdict::Pass,
            };
        }
        if healed.elapsed() >= patience {
            return Settled {
                reads,
                converged: None,
                verdict: Verdict::Fail(format!(
                    "{} s after healing: {}",
                    patience.as_secs(),
                    differ.join("; ")
                )),
            };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every key read on every node through `store`.
fn final_reads(options: &Options, addrs: &[String], store: &str) -> Vec<eventual::FinalRead> {
    let http = Http::new(Duration::from_secs(5));
    let mut out = Vec::new();
    for (node, addr) in addrs.iter().enumerate() {
        for k in 0..options.keys {
            let key = format!("k{k}");
            let at_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let value = match http.call(
                "GET",
                &format!("http://{addr}/v1/stores/{store}/keys/{key}"),
                None,
            ) {
                Answer::Reply(200, version, _, body) => Some((id_of(&body), version.unwrap_or(0))),
                Answer::Reply(404, ..) => None,
                _ => Some(("<no answer>".into(), 0)),
            };
            out.push(eventual::FinalRead {
                node,
                key,
                value,
                at_ms,
            });
        }
    }
    out
}

fn write_history(out: &Path, records: &[Record], windows: &[Window]) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(out.join("history.jsonl"))?);
    for (id, r) in records.iter().enumerate() {
        let line = serde_json::json!({
            "id": id, "process": r.process, "node": r.node, "key": r.key, "f": r.call,
            "value": r.value, "expected": r.expected, "invoke_ns": r.invoke,
            "complete_ns": r.complete, "outcome": r.outcome, "read": r.read,
            "version": r.version, "deleted": r.deleted, "refusal": r.refusal,
            "expires_at": r.expires_at, "ttl_ms": r.ttl_ms, "clock_ms": r.clock_ms,
            "list": r.list,
        });
        writeln!(f, "{line}")?;
    }
    for w in windows {
        let nodes: Vec<String> = w.nodes.iter().map(|i| format!("n{}", i + 1)).collect();
        let line = serde_json::json!({
            "fault": w.what, "start_ns": w.start, "end_ns": w.end, "nodes": nodes,
            "beyond_ms": w.beyond_ms,
        });
        writeln!(f, "{line}")?;
    }
    Ok(())
}

/// The stretches of the run (ns) in which expiry is not promised: each clock fault beyond
/// `max_clock_skew`, and its offset plus [`BEYOND_AFTERMATH`] after it.
fn unpromised_expiry(windows: &[Window]) -> Vec<(u64, u64)> {
    windows
        .iter()
        .filter_map(|w| {
            let beyond = Duration::from_millis(w.beyond_ms?) + BEYOND_AFTERMATH;
            Some((w.start, w.end.saturating_add(beyond.as_nanos() as u64)))
        })
        .collect()
}

fn check(
    options: &Options,
    records: &[Record],
    finals: &[eventual::FinalRead],
    windows: &[Window],
) -> Vec<(String, Verdict)> {
    match options.backend {
        Backend::Raft => {
            // With clock faults, a node judges expiry up to the largest offset away from the
            // clients' clock: each window is that much wider. Beyond the bound, expiry is not
            // promised: an operation in such a stretch may judge it at any time at all.
            let skew = if options.nemesis.contains(&Fault::Clock) {
                CLOCK_OFFSET_MS
            } else {
                0
            };
            let unpromised = unpromised_expiry(windows);
            let ops: Vec<linear::Op> = records
                .iter()
                .enumerate()
                .map(|(id, r)| {
                    let mut op = linear_op(id, r);
                    let skew = if unpromised
                        .iter()
                        .any(|(from, to)| r.invoke <= *to && r.complete >= *from)
                    {
                        UNBOUNDED_SKEW_MS
                    } else {
                        skew
                    };
                    op.clock_ms = (
                        op.clock_ms.0.saturating_sub(skew),
                        op.clock_ms.1.saturating_add(skew),
                    );
                    op
                })
                .collect();
            let mut by_key: BTreeMap<&str, Vec<linear::Op>> = BTreeMap::new();
            for op in &ops {
                by_key.entry(op.key.as_str()).or_default().push(op.clone());
            }
            let mut lin = Vec::new();
            let mut versions = Vec::new();
            let mut unknown = Vec::new();
            for (key, ops) in &by_key {
                match linear::check_key(ops, 20_000_000) {
                    Verdict::Pass => {}
                    Verdict::Fail(why) => lin.push(why),
                    Verdict::Unknown(why) => unknown.push(format!("key {key:?}: {why}")),
                }
                if let Verdict::Fail(why) = linear::check_versions(ops) {
                    versions.push(why);
                }
            }
            let linearizable = if !lin.is_empty() {
                Verdict::Fail(lin.join("; "))
            } else if !unknown.is_empty() {
                Verdict::Unknown(unknown.join("; "))
            } else {
                Verdict::Pass
            };
            let versions = if versions.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail(versions.join("; "))
            };
            vec![
                ("linearizable (per key)".into(), linearizable),
                ("versions grow in real time".into(), versions),
            ]
        }
        Backend::Crdt => {
            let ops: Vec<eventual::Op> = records
                .iter()
                .enumerate()
                .map(|(id, r)| eventual_op(id, r))
                .collect();
            let v = eventual::check(&ops, finals, MAX_CLOCK_SKEW_MS + STAMP_MARGIN_MS);
            vec![
                ("convergence".into(), v.convergence),
                ("no lost acknowledged write".into(), v.no_lost_write),
                ("no resurrected delete".into(), v.no_resurrection),
                ("TTL: nothing past its deadline".into(), v.ttl),
                ("no value nobody wrote".into(), v.no_phantom),
                (
                    format!("stamps within max_clock_skew ({MAX_CLOCK_SKEW_MS} ms) of true time"),
                    v.stamps,
                ),
            ]
        }
    }
}

fn linear_op(id: usize, r: &Record) -> linear::Op {
    let call = match r.call {
        "write" => linear::Call::Write {
            value: r.value.clone().unwrap_or_default(),
        },
        "cas" => linear::Call::Cas {
            expected: r.expected.unwrap_or(0),
            value: r.value.clone().unwrap_or_default(),
        },
        "delete" => linear::Call::Delete,
        "if_absent" => linear::Call::PutIfAbsent {
            value: r.value.clone().unwrap_or_default(),
        },
        _ => linear::Call::Read,
    };
    let outcome = match (r.outcome, r.call) {
        ("ok", "read") => linear::Outcome::Ok(linear::Reply::Read(r.read.clone())),
        ("ok", "delete") => linear::Outcome::Ok(linear::Reply::Deleted(r.deleted.unwrap_or(false))),
        ("ok", _) => linear::Outcome::Ok(linear::Reply::Written(r.version.unwrap_or(0))),
        ("fail", _) => linear::Outcome::Fail(match r.refusal {
            Some("conflict") => linear::Refusal::Conflict,
            Some("not_found") => linear::Refusal::NotFound,
            Some("exists") => linear::Refusal::Exists,
            _ => linear::Refusal::Other,
        }),
        _ => linear::Outcome::Unknown,
    };
    linear::Op {
        id,
        process: r.process,
        key: r.key.clone(),
        call,
        invoke: r.invoke,
        complete: r.complete,
        outcome,
        ttl_ms: r.ttl_ms,
        expires_at: r.expires_at,
        clock_ms: r.clock_ms,
    }
}

fn eventual_op(id: usize, r: &Record) -> eventual::Op {
    let call = match r.call {
        "write" => eventual::Call::Write {
            value: r.value.clone().unwrap_or_default(),
        },
        "delete" => eventual::Call::Delete,
        _ => eventual::Call::Read,
    };
    let outcome = match (r.outcome, r.call) {
        ("ok", "read") => eventual::Outcome::Read(r.read.clone()),
        ("ok", "delete") => eventual::Outcome::Deleted,
        ("ok", _) => eventual::Outcome::Written {
            version: r.version.unwrap_or(0),
            expires_at: r.expires_at,
        },
        ("fail", _) => eventual::Outcome::Fail,
        _ => eventual::Outcome::Unknown,
    };
    eventual::Op {
        id,
        node: r.node,
        key: r.key.clone(),
        call,
        invoke: r.invoke,
        complete: r.complete,
        outcome,
        clock_ms: r.clock_ms,
    }
}

/// For each of `n` nodes, the windows of the faults that acted on it, in time order.
fn per_node(n: usize, windows: &[Window]) -> Vec<String> {
    (0..n)
        .map(|node| {
            let hits: Vec<String> = windows
                .iter()
                .filter(|w| w.nodes.contains(&node))
                .map(|w| {
                    format!(
                        "{:.1}–{:.1} s {}",
                        w.start as f64 / 1e9,
                        w.end as f64 / 1e9,
                        w.what.replace('|', "\\|")
                    )
                })
                .collect();
            if hits.is_empty() {
                "none".to_owned()
            } else {
                hits.join("; ")
            }
        })
        .collect()
}

fn report(options: &Options, out: &Path, run: &Run) -> Result<ExitCode> {
    let (records, windows, verdicts) = (&run.records, &run.windows, &run.verdicts);
    let count = |o: &str| records.iter().filter(|r| r.outcome == o).count();
    let mut md = String::new();
    let _ = writeln!(md, "# test-cluster report\n");
    let _ = writeln!(
        md,
        "- backend: {:?}{}, {} nodes, {} clients, {:?}, {} keys",
        options.backend,
        match options.negative_control {
            Some(c) => format!(" (negative control {}: {})", c.name(), c.breaks()),
            None => String::new(),
        },
        options.nodes,
        options.clients,
        options.time,
        options.keys
    );
    let _ = writeln!(md, "- seed: {}", options.seed);
    let beyond: Vec<u64> = windows.iter().filter_map(|w| w.beyond_ms).collect();
    let clocks = if options.nemesis.contains(&Fault::Clock) {
        let mut line = format!(
            "one node at a time ahead or behind: up to {CLOCK_OFFSET_MS} ms, within the nodes' \
             max_clock_skew ({MAX_CLOCK_SKEW_MS} ms), where every check is promised to hold{}",
            if options.backend == Backend::Raft {
                " (the checker widens each operation's clock window by that much)"
            } else {
                ""
            }
        );
        let _ = write!(
            line,
            "; or {}-{} ms{}, beyond it: {}",
            CLOCK_BEYOND_MS.0,
            CLOCK_BEYOND_MS.1,
            if options.backend == Backend::Crdt {
                " or an hour ahead"
            } else {
                ""
            },
            if beyond.is_empty() {
                "not drawn in this run".to_owned()
            } else {
                format!(
                    "{} window(s), up to {} ms, {}",
                    beyond.len(),
                    beyond.iter().max().unwrap_or(&0),
                    match options.backend {
                        Backend::Raft => format!(
                            "where, and for the offset plus {} s after, expiry is not promised \
                             (the checker lets those operations judge it at any time) and \
                             everything else is",
                            BEYOND_AFTERMATH.as_secs()
                        ),
                        Backend::Crdt => format!(
                            "where that node serves nothing (the odd clock out of its \
                             peers'), so no stamp runs ahead; every check is promised{}",
                            if options.nodes < 3 {
                                " (not drawn with two nodes: neither clock is the odd one out)"
                            } else {
                                ""
                            }
                        ),
                    }
                )
            }
        );
        line
    } else {
        "true time on every node (no clock fault)".to_owned()
    };
    let _ = writeln!(md, "- clocks: {clocks}");
    // A control's backend and faults are its own.
    let what = match options.negative_control {
        Some(c) => format!("--negative-control {}", c.name()),
        None => format!("--backend {}", options.backend.name()),
    };
    let mut command = format!(
        "cargo xtask test-cluster {what} --nodes {} --time {}s --clients {} --keys {} --seed {}",
        options.nodes,
        options.time.as_secs(),
        options.clients,
        options.keys,
        options.seed
    );
    if options.negative_control.is_none() {
        let nemesis: Vec<&str> = options.nemesis.iter().map(|f| f.name()).collect();
        let _ = write!(
            command,
            " --nemesis {}",
            if nemesis.is_empty() {
                "none".to_owned()
            } else {
                nemesis.join(",")
            }
        );
    }
    if let Some(rate) = options.rate {
        let _ = write!(command, " --rate {rate}");
    }
    if let Some(n) = options.snapshot_threshold {
        let _ = write!(command, " --snapshot-threshold {n}");
    }
    let _ = writeln!(md, "- reproduce: `{command}`");
    let _ = writeln!(
        md,
        "- operations: {} (ok {}, fail {}, unknown {})",
        records.len(),
        count("ok"),
        count("fail"),
        count("unknown")
    );
    let _ = writeln!(
        md,
        "- convergence: {}",
        match (run.converged, options.backend) {
            (Some(t), Backend::Crdt) => format!(
                "every node answered the same for every key {:.1} s after the faults healed",
                t.as_secs_f64()
            ),
            (Some(t), Backend::Raft) => format!(
                "every node's own state machine held what a linearizable read of every key saw \
                 {:.1} s after the faults healed (those reads are in the history, process {})",
                t.as_secs_f64(),
                options.clients
            ),
            (None, _) => "the nodes still disagreed 60 s after the faults healed".to_owned(),
        }
    );
    let _ = writeln!(
        md,
        "- checked in {:.2} s ({} operations)",
        run.checked_in.as_secs_f64(),
        records.len()
    );
    let _ = writeln!(
        md,
        "- plots: `latency.png`, `throughput.png` (fault windows shaded)\n"
    );
    let _ = writeln!(md, "## Faults\n");
    for w in windows {
        let _ = writeln!(
            md,
            "- {:.1}s–{:.1}s: {}",
            w.start as f64 / 1e9,
            w.end as f64 / 1e9,
            w.what
        );
    }
    let _ = writeln!(md, "\n## Fault schedule per node\n");
    let _ = writeln!(md, "| node | faults that acted on it |\n|---|---|");
    for (n, line) in per_node(options.nodes, windows).iter().enumerate() {
        let _ = writeln!(md, "| n{} | {line} |", n + 1);
    }
    let _ = writeln!(md, "\n## Verdicts\n\n| check | verdict |\n|---|---|");
    for (name, v) in verdicts {
        let _ = writeln!(md, "| {name} | {v} |");
    }
    // A control passes when a check caught its defect: the report names which.
    let caught: Vec<&str> = verdicts
        .iter()
        .filter(|(_, v)| matches!(v, Verdict::Fail(_)))
        .map(|(name, _)| name.as_str())
        .collect();
    let control = options.negative_control.map(|c| {
        if caught.is_empty() {
            format!(
                "negative control {}: NOT caught; no check found the defect ({}): the checks or \
                 the workload are blind to it",
                c.name(),
                c.breaks()
            )
        } else {
            format!(
                "negative control {}: caught by {}",
                c.name(),
                caught
                    .iter()
                    .map(|n| format!("\"{n}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    });
    if let Some(line) = &control {
        let _ = writeln!(md, "\n## Negative control\n\n{line}");
    }
    std::fs::write(out.join("report.md"), &md)?;
    println!("\n| check | verdict |\n|---|---|");
    for (name, v) in verdicts {
        let shown = v.to_string();
        let shown: String = shown.chars().take(300).collect();
        println!("| {name} | {shown} |");
    }
    println!(
        "\nchecked {} operations in {:.2} s",
        records.len(),
        run.checked_in.as_secs_f64()
    );
    if let Some(t) = run.converged {
        println!("converged {:.1} s after the faults healed", t.as_secs_f64());
    }
    println!("report: {}", out.join("report.md").display());
    let all_pass = verdicts.iter().all(|(_, v)| *v == Verdict::Pass);
    Ok(if let Some(line) = control {
        println!("{line}");
        if caught.is_empty() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    } else if all_pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn flags_have_their_defaults_and_quick_shrinks_the_run() {
        let o = parse(&args("--seed 9")).unwrap();
        assert_eq!(
            (o.backend, o.nodes, o.time, o.clients, o.keys, o.seed),
            (Backend::Raft, 5, Duration::from_secs(60), 10, 20, 9)
        );
        assert_eq!(
            o.nemesis,
            [
                Fault::Partition,
                Fault::Kill,
                Fault::KillLeader,
                Fault::Pause,
                Fault::Membership,
                Fault::IsolateLeader,
                Fault::Lagger,
                Fault::Clock,
                Fault::Stall
            ]
        );
        // Laggers need snapshots within a fault window.
        assert_eq!(o.snapshot_threshold, Some(LAGGER_SNAPSHOT_THRESHOLD));
        // Gossip churn is its membership change.
        let c = parse(&args("--backend crdt --nemesis all")).unwrap();
        assert_eq!(
            c.nemesis,
            [
                Fault::Partition,
                Fault::Kill,
                Fault::KillLeader,
                Fault::Pause,
                Fault::Membership,
                Fault::IsolateLeader,
                Fault::Lagger,
                Fault::Clock,
                Fault::Stall
            ]
        );
        assert_eq!(c.snapshot_threshold, None);
        assert_eq!(
            parse(&args("--nemesis kill")).unwrap().snapshot_threshold,
            None
        );
        let k = parse(&args("--nemesis kill-leader")).unwrap();
        assert_eq!(k.nemesis, [Fault::KillLeader]);
        let q = parse(&args("--quick --backend crdt --nemesis partition,kill")).unwrap();
        assert_eq!(
            (q.backend, q.nodes, q.time),
            (Backend::Crdt, 3, Duration::from_secs(30))
        );
        assert_eq!(q.nemesis, [Fault::Partition, Fault::Kill]);
        assert!(parse(&args("--nemesis none")).unwrap().nemesis.is_empty());
        assert_eq!(
            parse(&args("--snapshot-threshold 200"))
                .unwrap()
                .snapshot_threshold,
            Some(200)
        );
        let n = parse(&args("--quick --negative-control serializable-reads")).unwrap();
        assert_eq!(n.nemesis, [Fault::Partition]);
        // Each control brings its backend and its faults.
        let c = parse(&args("--negative-control drop-crdt-merge")).unwrap();
        assert_eq!(
            (c.backend, c.negative_control),
            (Backend::Crdt, Some(Control::DropCrdtMerge))
        );
        for control in Control::ALL {
            let o = parse(&args(&format!("--negative-control {}", control.name()))).unwrap();
            assert_eq!(o.nemesis, control.nemesis(), "{}", control.name());
            assert_eq!(o.backend, control.backend(), "{}", control.name());
        }
        assert_eq!(
            parse(&args("--time 2m")).unwrap().time,
            Duration::from_secs(120)
        );
    }

    #[test]
    fn partitions_take_every_shape_and_bridges_keep_two_majorities() {
        let mut rng = Rng(7);
        let mut seen = std::collections::BTreeSet::new();
        for n in [2, 3, 4, 5, 7] {
            for _ in 0..60 {
                let (what, a, b) = shape(n, &mut rng, || Some(n - 1));
                let kind = what.split(' ').nth(1).unwrap_or("").to_owned();
                seen.insert(kind.clone());
                assert!(!a.is_empty() && !b.is_empty(), "{what}: {a:?} | {b:?}");
                assert!(a.iter().all(|x| !b.contains(x)), "{what}: sides overlap");
                match kind.as_str() {
                    "halves" => assert_eq!(a.len() + b.len(), n),
                    "leader" => assert_eq!((a.as_slice(), b.len()), (&[n - 1][..], n - 1)),
                    "bridge" => {
                        let bridge = shape_bridge(n, &a, &b);
                        assert!(!a.contains(&bridge) && !b.contains(&bridge));
                        assert_eq!(a.len() + b.len(), n - 1);
                        // With an odd count each side with the bridge is a majority; with an
                        // even one, the larger side is.
                        let majority = |side: &[usize]| 2 * (side.len() + 1) > n;
                        assert!(majority(&b), "{n}: {a:?} {b:?}");
                        assert_eq!(majority(&a), n % 2 == 1, "{n}: {a:?} {b:?}");
                    }
                    other => panic!("unexpected shape {other}"),
                }
            }
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        // No leader known: one node alone.
        let mut rng = Rng(1);
        let alone = (0..30)
            .map(|_| shape(5, &mut rng, || None).0)
            .find(|w| w.contains("alone"));
        assert_eq!(alone.as_deref(), Some("partition, one node alone"));
    }

    #[test]
    fn kill_and_pause_targets_hit_the_nodes_they_name() {
        // No node listens at these addresses: no leader is known, so "leader" is a random node.
        let nodes: Vec<Node> = (0..5)
            .map(|i| Node {
                index: i,
                name: format!("n{}", i + 1),
                ip: Ipv4Addr::new(127, 0, 0, 201),
                dir: PathBuf::new(),
                child: None,
                defect: None,
            })
            .collect();
        let mut rng = Rng(3);
        let mut targets = std::collections::BTreeSet::new();
        for _ in 0..200 {
            for target in [Target::for_kill(&mut rng), Target::for_pause(&mut rng)] {
                targets.insert(format!("{target:?}"));
                let (hit, what) = target.pick(&nodes, &mut rng);
                let mut distinct = hit.clone();
                distinct.dedup();
                assert_eq!(distinct, hit, "{what}");
                match target {
                    Target::One | Target::Leader => assert_eq!(hit.len(), 1, "{what}"),
                    Target::Minority => {
                        assert_eq!(hit.len(), 2, "{what}");
                        assert!(hit.windows(2).all(|w| w[0] < w[1]), "{what}");
                    }
                    Target::All => assert_eq!(hit, [0, 1, 2, 3, 4], "{what}"),
                }
            }
        }
        assert_eq!(targets.len(), 4, "{targets:?}");
    }

    #[test]
    fn the_schedule_per_node_lists_each_window_under_the_nodes_it_hit() {
        let window = |what: &str, start: u64, nodes: Vec<usize>| Window {
            what: what.into(),
            start: start * 1_000_000_000,
            end: (start + 2) * 1_000_000_000,
            nodes,
            beyond_ms: None,
        };
        let windows = [
            window("kill leader n2", 3, vec![1]),
            window("partition, halves: n1 | n2,n3", 9, vec![0, 1, 2]),
        ];
        let lines = per_node(4, &windows);
        assert_eq!(lines[0], "9.0–11.0 s partition, halves: n1 \\| n2,n3");
        assert_eq!(
            lines[1],
            "3.0–5.0 s kill leader n2; 9.0–11.0 s partition, halves: n1 \\| n2,n3"
        );
        assert_eq!(lines[3], "none");
    }

    #[test]
    fn a_large_value_names_its_writer_and_a_torn_one_says_so() {
        let v = value_of("v12", 70_000);
        assert_eq!(v.len(), 70_000);
        assert_eq!(id_of(&v), "v12");
        assert_eq!(id_of(b"v7"), "v7");
        assert_eq!(value_of("v7", 0), b"v7");
        let torn = id_of(&v[..65_536]);
        assert!(torn.starts_with("<torn: 65536 bytes of v12"), "{torn}");
    }

    #[test]
    fn beyond_the_clock_bound_expiry_is_not_held_against_the_store_and_elsewhere_it_is() {
        let op = |call: &'static str, at_s: u64, read: Option<(&str, u64)>| Record {
            process: 0,
            node: 0,
            key: "k0".into(),
            call,
            value: (call == "write").then(|| "v1".into()),
            expected: None,
            invoke: at_s * 1_000_000_000,
            complete: at_s * 1_000_000_000 + 1_000_000,
            outcome: "ok",
            read: read.map(|(v, n)| (v.to_owned(), n)),
            version: (call == "write").then_some(1),
            deleted: None,
            refusal: None,
            expires_at: None,
            ttl_ms: (call == "write").then_some(1_000),
            clock_ms: (at_s * 1000, at_s * 1000 + 1),
            list: None,
        };
        // Written with a 1 s TTL at 10 s, read expired at 13 s, then live again at 14 s.
        let records = [
            op("write", 10, None),
            op("read", 13, None),
            op("read", 14, Some(("v1", 1))),
        ];
        let options = parse(&args("--nemesis clock --seed 1")).unwrap();
        let linearizable =
            |windows: &[Window]| check(&options, &records, &[], windows)[0].1.clone();
        assert!(matches!(linearizable(&[]), Verdict::Fail(_)));
        let clock = |beyond_ms: Option<u64>| Window {
            what: "clock n1".into(),
            start: 12_000_000_000,
            end: 12_500_000_000,
            nodes: vec![0],
            beyond_ms,
        };
        // Within the bound the check holds; beyond it, expiry is not promised until the offset
        // and the aftermath have passed (12.5 s + 1.5 s + 2 s).
        assert!(matches!(linearizable(&[clock(None)]), Verdict::Fail(_)));
        assert_eq!(linearizable(&[clock(Some(1_500))]), Verdict::Pass);
        assert_eq!(
            unpromised_expiry(&[clock(Some(1_500))]),
            [(12_000_000_000, 16_000_000_000)]
        );
    }

    #[test]
    fn a_list_stands_for_one_read_of_each_key_it_covers() {
        let list = Record {
            process: 3,
            node: 1,
            key: "k1".into(),
            call: "list",
            value: None,
            expected: None,
            invoke: 10,
            complete: 20,
            outcome: "unknown",
            read: None,
            version: None,
            deleted: None,
            refusal: None,
            expires_at: None,
            ttl_ms: None,
            clock_ms: (1, 2),
            list: Some("k1".into()),
        };
        // "djEy" is base64 of "v12".
        let body = br#"{"items":[{"key":"k10","value":"djEy","version":7,"expires_at":null}],"cursor":"k10","has_more":false}"#;
        let reads = list_reads(&list, body, 12);
        let got: Vec<(&str, Option<(String, u64)>)> = reads
            .iter()
            .map(|r| (r.key.as_str(), r.read.clone()))
            .collect();
        // k1 and k11 are absent; k10 holds v12.
        assert_eq!(
            got,
            [
                ("k1", None),
                ("k10", Some(("v12".into(), 7))),
                ("k11", None)
            ]
        );
        assert!(reads.iter().all(|r| r.call == "read"
            && (r.invoke, r.complete, r.process) == (10, 20, 3)
            && r.list.as_deref() == Some("k1")));
        // A page with more covers the keys up to its cursor only.
        let body = br#"{"items":[{"key":"k10","value":"djEy","version":7,"expires_at":null}],"cursor":"k10","has_more":true}"#;
        let keys: Vec<String> = list_reads(&list, body, 12)
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, ["k1", "k10"]);
        // An answer that does not parse stands for nothing.
        assert!(list_reads(&list, b"{\"items\":[{\"key\":\"k1\"}]}", 12).is_empty());
        assert!(list_reads(&list, b"not json", 12).is_empty());
    }

    #[test]
    fn bad_flags_name_the_flag_and_the_value() {
        for (given, says) in [
            ("--backend etcd", "--backend \"etcd\""),
            ("--nodes 0", "--nodes \"0\""),
            ("--time soon", "--time \"soon\""),
            ("--nemesis chaos", "--nemesis \"chaos\""),
            (
                "--negative-control reuse-version --backend crdt",
                "runs the raft backend",
            ),
            (
                "--negative-control stale-lease-read --nemesis kill",
                "picks its own faults",
            ),
            ("--negative-control chaos", "--negative-control \"chaos\""),
            ("--negative-control", "needs a value"),
            ("--frobnicate", "unknown flag"),
            ("--seed", "needs a value"),
            ("--snapshot-threshold 0", "--snapshot-threshold \"0\""),
        ] {
            let e = format!("{:#}", parse(&args(given)).unwrap_err());
            assert!(e.contains(says), "{given}: {e}");
        }
    }
}
