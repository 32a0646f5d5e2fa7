//! The clock guard: a node whose wall clock is far from its peers' (an hour ahead, as a bad NTP
//! step or a wrong RTC leaves it) must not carry their hybrid clocks with it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use store_core::{Clock, ErrorKind, ListOptions, Store};
use store_crdt::hlc::LOGICAL_BITS;
use store_crdt::{CrdtConfig, CrdtNode, CrdtStore};

use crate::support::{eventually, fast};

const HOUR_MS: i64 = 3_600_000;

/// The system clock plus an offset the test sets.
#[derive(Debug, Default)]
struct OffsetClock {
    offset_ms: AtomicI64,
}

impl Clock for OffsetClock {
    fn now(&self) -> SystemTime {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        let by = Duration::from_millis(offset.unsigned_abs());
        let now = SystemTime::now();
        if offset >= 0 { now + by } else { now - by }
    }
}

struct Skewed {
    nodes: Vec<Arc<CrdtNode>>,
    clocks: Vec<Arc<OffsetClock>>,
    stores: Vec<CrdtStore>,
}

/// `n` nodes on true time, each with its own offset clock and the default `max_clock_skew`
/// (500 ms), once every node has measured every peer's clock.
async fn skewed(n: usize) -> Skewed {
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|_| SocketAddr::from(([127, 0, 0, 1], store_testkit::free_port())))
        .collect();
    let mut cluster = Skewed {
        nodes: Vec::new(),
        clocks: Vec::new(),
        stores: Vec::new(),
    };
    for (i, addr) in addrs.iter().enumerate() {
        let mut config = CrdtConfig::new(format!("n{}", i + 1), *addr);
        if i > 0 {
            config.join = vec![addrs[0]];
        }
        config.secret = b"skew secret".to_vec();
        let clock = Arc::new(OffsetClock::default());
        config.clock = clock.clone();
        fast(&mut config);
        assert_eq!(config.max_clock_skew, Duration::from_millis(500));
        let node = Arc::new(CrdtNode::new(config));
        cluster
            .stores
            .push(CrdtStore::on_node(&node, format!("skew{i}"), "plain", false).expect("view"));
        node.start().await.expect("start");
        cluster.nodes.push(node);
        cluster.clocks.push(clock);
    }
    for (i, node) in cluster.nodes.iter().enumerate() {
        let engine = node.engine().expect("started").clone();
        eventually(
            &format!("n{} measured {} peers' clocks", i + 1, n - 1),
            || {
                let engine = engine.clone();
                async move { engine.measured_clocks() == n - 1 }
            },
        )
        .await;
    }
    cluster
}

fn v(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn wall_ms() -> u64 {
    store_core::system_clock().now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_an_hour_ahead_of_most_of_its_peers_serves_nothing_until_its_clock_is_back() {
    let c = skewed(3).await;
    c.stores[0].set("before", v("0"), None).await.expect("set");
    c.clocks[0].offset_ms.store(HOUR_MS, Ordering::Relaxed);
    // Refused at the first request after the step, not after the next probes.
    let refused = c.stores[0].set("k", v("ahead"), None).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    assert!(
        refused
            .to_string()
            .contains("ahead of most of its peers' clocks")
            && refused.to_string().contains("max_clock_skew (500 ms)"),
        "{refused}"
    );
    for refused in [
        c.stores[0].get("before").await.map(|_| ()),
        c.stores[0].delete("before").await.map(|_| ()),
        c.stores[0].list(ListOptions::default()).await.map(|_| ()),
    ] {
        let e = refused.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    }
    // The others serve, and their versions follow true time, not the hour.
    let written = c.stores[1]
        .put("k", v("true"), Default::default())
        .await
        .expect("put");
    let stamped_ms = written.version >> LOGICAL_BITS;
    assert!(
        stamped_ms <= wall_ms() + 500,
        "n2 stamped {stamped_ms}, true time is {}",
        wall_ms()
    );
    let store = c.stores[2].clone();
    eventually("n3 serves n1's write from before the step", || {
        let store = store.clone();
        async move { store.get("before").await.expect("n3 serves").is_some() }
    })
    .await;
    // The clock set right: served again, and n2's write arrives.
    c.clocks[0].offset_ms.store(0, Ordering::Relaxed);
    let store = c.stores[0].clone();
    eventually("n1 serves n2's write", || {
        let store = store.clone();
        async move { store.get("k").await.ok().flatten() == Some(v("true")) }
    })
    .await;
    c.stores[0]
        .set("after", v("1"), None)
        .await
        .expect("n1 writes again");
    // An hour behind: refused the same way.
    c.clocks[0].offset_ms.store(-HOUR_MS, Ordering::Relaxed);
    let refused = c.stores[0].get("k").await.unwrap_err();
    assert!(
        refused.to_string().contains("behind most of its peers"),
        "{refused}"
    );
    c.clocks[0].offset_ms.store(0, Ordering::Relaxed);
    for node in &c.nodes {
        node.engine().expect("started").shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_stamped_an_hour_ahead_is_not_merged_and_its_writer_stops_writing() {
    // Two nodes: neither clock is the odd one out, so a write an hour ahead is taken there.
    let c = skewed(2).await;
    c.clocks[0].offset_ms.store(HOUR_MS, Ordering::Relaxed);
    c.stores[0]
        .set("far", v("ahead"), None)
        .await
        .expect("n1 cannot tell");
    let engine = c.nodes[1].engine().expect("started").clone();
    eventually("n2 refused n1's register stamped an hour ahead", || {
        let engine = engine.clone();
        async move { engine.traffic().ahead.load(Ordering::Relaxed) > 0 }
    })
    .await;
    assert_eq!(c.stores[1].get("far").await.expect("get"), None);
    // n2's own clock did not move: its writes carry true time.
    let written = c.stores[1]
        .put("near", v("n2"), Default::default())
        .await
        .expect("put");
    assert!((written.version >> LOGICAL_BITS) <= wall_ms() + 500);
    // n1's clock set right: its hybrid clock is still an hour ahead, so it takes no writes (they
    // would carry stamps its peer refuses), yet serves reads and takes its peer's writes.
    c.clocks[0].offset_ms.store(0, Ordering::Relaxed);
    let refused = c.stores[0].set("far", v("again"), None).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    assert!(
        refused.to_string().contains("hybrid clock is")
            && refused.to_string().contains("ahead of its wall clock"),
        "{refused}"
    );
    let store = c.stores[0].clone();
    eventually("n1 holds n2's write", || {
        let store = store.clone();
        async move { store.get("near").await.ok().flatten() == Some(v("n2")) }
    })
    .await;
    for node in &c.nodes {
        node.engine().expect("started").shutdown().await;
    }
}
