//! An in-process cluster of engines on loopback, for tests.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use store_core::{Error, SharedClock};
use store_raft::{Members, RaftConfig, RaftEngine, RaftStore, ReadConsistency};
use store_testkit::TempDir;
use tokio::time::Instant;

/// Generous: a busy two-core machine may stall a node for a while.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Option<RaftEngine>>,
    pub(crate) addrs: Vec<SocketAddr>,
    names: Vec<String>,
    dir: TempDir,
    /// Each node's clock (all the same clock unless started with clocks of their own).
    clocks: Vec<SharedClock>,
    tune: fn(&mut RaftConfig),
    joining: Vec<usize>,
}

/// Test timings: fast heartbeats; elections after 1–2 s of silence, well above the stalls of a
/// busy two-core machine running other tests (a needless election would fail a write in flight
/// with an indeterminate error, and the case with it).
pub(crate) fn fast(config: &mut RaftConfig) {
    config.heartbeat_interval = Duration::from_millis(50);
    config.election_timeout = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(10);
    // The tests share one manual clock, which stands still unless a test moves it: a new
    // leader would wait for it for ever.
    config.max_clock_skew = Duration::ZERO;
}

impl Cluster {
    /// Starts `n` founding nodes named `n1`… on fresh loopback ports.
    pub(crate) async fn start(n: usize, clock: SharedClock, tune: fn(&mut RaftConfig)) -> Self {
        Self::start_with_clocks(vec![clock; n], tune).await
    }

    /// Starts one founding node per clock, each on its own clock.
    pub(crate) async fn start_with_clocks(
        clocks: Vec<SharedClock>,
        tune: fn(&mut RaftConfig),
    ) -> Self {
        let n = clocks.len();
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
            .collect();
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("local address"))
            .collect();
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let mut cluster = Self {
            nodes: Vec::new(),
            addrs,
            names,
            dir: TempDir::new("store-raft"),
            clocks,
            tune,
            joining: Vec::new(),
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            let config = cluster.config(i);
            let engine = RaftEngine::start_on(config, listener)
                .await
                .expect("start a node");
            cluster.nodes.push(Some(engine));
        }
        cluster
    }

    pub(crate) fn founding(&self) -> Members {
        Members::Founding(
            self.names
                .iter()
                .zip(&self.addrs)
                .enumerate()
                .filter(|(i, _)| !self.joining.contains(i))
                .map(|(_, pair)| pair)
                .map(|(n, a)| (n.clone(), a.to_string()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    pub(crate) fn config(&self, i: usize) -> RaftConfig {
        let mut config = RaftConfig::new(
            self.names[i].clone(),
            self.dir.path().join(&self.names[i]),
            self.addrs[i],
            if self.joining.contains(&i) {
                Members::Join
            } else {
                self.founding()
            },
        );
        config.secret = b"test secret".to_vec();
        config.clock = self.clocks[i.min(self.clocks.len() - 1)].clone();
        (self.tune)(&mut config);
        config
    }

    pub(crate) fn engine(&self, i: usize) -> &RaftEngine {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub(crate) fn store(&self, i: usize, namespace: &str) -> RaftStore {
        RaftStore::new(
            self.engine(i),
            format!("test:{namespace}"),
            namespace,
            ReadConsistency::Linearizable,
        )
        .expect("a view")
    }

    pub(crate) fn index_of(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .expect("a known node")
    }

    /// Starts one more node with `join: true`; it waits until a member adds it. Returns its
    /// index.
    pub(crate) async fn add_joining_node(&mut self) -> usize {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let i = self.names.len();
        self.addrs
            .push(listener.local_addr().expect("local address"));
        self.names.push(format!("n{}", i + 1));
        self.joining.push(i);
        let config = self.config(i);
        let engine = RaftEngine::start_on(config, listener)
            .await
            .expect("start a joining node");
        self.nodes.push(Some(engine));
        i
    }

    /// Waits until every running node names the same running leader; returns its index.
    pub(crate) async fn leader(&self) -> usize {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let seen: Vec<Option<String>> = self
                .nodes
                .iter()
                .flatten()
                .map(RaftEngine::leader)
                .collect();
            if let Some(Some(first)) = seen.first()
                && seen.iter().all(|s| s.as_deref() == Some(first.as_str()))
            {
                let i = self.index_of(first);
                if self.nodes[i].is_some() {
                    return i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {PATIENCE:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A running node that is not the leader.
    pub(crate) async fn follower(&self) -> usize {
        let leader = self.leader().await;
        (0..self.nodes.len())
            .find(|&i| i != leader && self.nodes[i].is_some())
            .expect("a running follower")
    }

    /// Shuts node `i` down and releases its folder.
    pub(crate) async fn stop(&mut self, i: usize) {
        if let Some(engine) = self.nodes[i].take() {
            engine.shutdown().await;
        }
    }

    /// Starts node `i` again from its folder, on its address (polling while the old instance
    /// still holds the folder or the port).
    pub(crate) async fn restart(&mut self, i: usize) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match RaftEngine::start(self.config(i)).await {
                Ok(engine) => {
                    self.nodes[i] = Some(engine);
                    return;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "node {i} did not restart: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// Retries `op` until it succeeds (a write during an election may fail `Unavailable`/`Timeout`).
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(Instant::now() < deadline, "{what}: still failing: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
