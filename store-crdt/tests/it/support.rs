//! An in-process cluster of gossip engines on loopback, for tests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use store_core::SharedClock;
use store_crdt::{CrdtConfig, CrdtNode, CrdtStore};
use store_testkit::TempDir;
use tokio::time::Instant;

/// Generous: a busy two-core machine may stall a node for a while.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Option<Arc<CrdtNode>>>,
    pub(crate) addrs: Vec<SocketAddr>,
    dir: TempDir,
    clock: SharedClock,
    pub(crate) secret: Vec<u8>,
    tune: fn(&mut CrdtConfig),
}

/// Test timings: anti-entropy every 300 ms, cleanup every 50 ms.
pub(crate) fn fast(config: &mut CrdtConfig) {
    config.push_pull_interval = Duration::from_millis(300);
    config.cleanup_interval = Duration::from_millis(50);
    config.snapshot_interval = Duration::from_millis(200);
}

/// Test timings without anti-entropy in practice (push/pull every hour): only broadcasts spread.
pub(crate) fn broadcast_only(config: &mut CrdtConfig) {
    fast(config);
    config.push_pull_interval = Duration::from_secs(3600);
}

impl Cluster {
    /// Starts `n` nodes named `n1`… on fresh loopback ports; each joins the first.
    pub(crate) async fn start(n: usize, clock: SharedClock, tune: fn(&mut CrdtConfig)) -> Self {
        let addrs = (0..n)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], store_testkit::free_port())))
            .collect();
        let mut cluster = Self {
            nodes: Vec::new(),
            addrs,
            dir: TempDir::new("store-crdt"),
            clock,
            secret: b"test cluster secret".to_vec(),
            tune,
        };
        for i in 0..n {
            let node = cluster.node(i);
            node.start().await.expect("start a node");
            cluster.nodes.push(Some(node));
        }
        cluster.wait_members(n).await;
        cluster
    }

    /// The configuration of node `i`: it joins node 0 (node 0 joins node 1 when restarted).
    pub(crate) fn config(&self, i: usize) -> CrdtConfig {
        let mut config = CrdtConfig::new(format!("n{}", i + 1), self.addrs[i]);
        config.join = if i == 0 {
            self.addrs.get(1).into_iter().copied().collect()
        } else {
            vec![self.addrs[0]]
        };
        if i == 0 && self.nodes.is_empty() {
            config.join.clear();
        }
        config.dir = Some(self.dir.path().join(format!("n{}", i + 1)));
        config.secret = self.secret.clone();
        config.clock = Arc::clone(&self.clock);
        // A manual clock jumps (ahead by hours, for tombstones) while the peers' clocks, as last
        // measured, have not yet: the clock guard would refuse the node until the next probes.
        // The guard's own tests turn it back on.
        config.max_clock_skew = Duration::ZERO;
        (self.tune)(&mut config);
        config
    }

    /// A new (not started) node object for member `i`, with every test namespace's views
    /// registered the way a registry would: `durable` is durable, `suite` and `plain` are not.
    pub(crate) fn node(&self, i: usize) -> Arc<CrdtNode> {
        let node = Arc::new(CrdtNode::new(self.config(i)));
        node.make_durable("durable");
        node
    }

    pub(crate) fn store(&self, i: usize, namespace: &str) -> CrdtStore {
        let node = self.nodes[i].as_ref().expect("node is running");
        CrdtStore::on_node(
            node,
            format!("test:{namespace}"),
            namespace,
            namespace == "durable",
        )
        .expect("a view")
    }

    pub(crate) fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].is_some())
    }

    /// Stops node `i` cleanly (final snapshot, leave).
    pub(crate) async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.engine().expect("started").shutdown().await;
        }
    }

    /// Stops node `i` as a crash would: no snapshot, no leave.
    pub(crate) async fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.engine().expect("started").kill().await;
        }
    }

    /// Starts node `i` again on its folder and address.
    pub(crate) async fn restart(&mut self, i: usize) {
        let node = self.node(i);
        // The port was just released; a retry covers a slow release.
        let deadline = Instant::now() + PATIENCE;
        loop {
            match node.start().await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart n{}: {e}; retrying", i + 1);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("restart n{}: {e}", i + 1),
            }
        }
        self.nodes[i] = Some(node);
    }

    /// Waits until every running node sees `n` alive members.
    pub(crate) async fn wait_members(&self, n: usize) {
        for i in self.running().collect::<Vec<_>>() {
            let engine = self.nodes[i]
                .as_ref()
                .and_then(|n| n.engine())
                .expect("started")
                .clone();
            eventually(&format!("n{} sees {n} alive members", i + 1), || {
                let engine = engine.clone();
                async move {
                    engine
                        .members()
                        .await
                        .iter()
                        .filter(|m| m.state == "alive")
                        .count()
                        == n
                }
            })
            .await;
        }
    }
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after [`PATIENCE`].
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
