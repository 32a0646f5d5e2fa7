//! Gossip clusters of real `store-node` processes on loopback: `store.kv.crdt` writes on one
//! node read on another, members and readiness in the cluster endpoints, a stopped node's peers
//! still taking writes, and every node killed with SIGKILL: durable namespaces come back from
//! their snapshots, plain ones do not.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use store_client::harness::NodeProcess;
use store_testkit::{TempDir, free_port};

use crate::{BIN, Member, Node, Reply};

const PATIENCE: Duration = Duration::from_secs(60);

const CRDT_REGISTRY: &str = "\
namespace: app
entries:
  - name: sessions
    kind: store.kv.crdt
    namespace: sessions
    durable: true
  - name: cache
    kind: store.kv.crdt
    namespace: cache
";

const ENV: &[(&str, &str)] = &[("E2E_CLUSTER_SECRET", "e2e gossip secret")];

impl Member {
    fn gossip(&self) -> Value {
        let r = self.call("GET", "/v1/cluster", None);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["gossip"].clone()
    }

    fn states(&self) -> Vec<(String, String)> {
        self.gossip()["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or_default().to_owned(),
                    m["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    fn put(&self, store: &str, key: &str, value: &str) -> Reply {
        self.call(
            "PUT",
            &format!("/v1/stores/app:{store}/keys/{key}"),
            Some(value.as_bytes()),
        )
    }

    fn get(&self, store: &str, key: &str) -> Reply {
        self.call("GET", &format!("/v1/stores/app:{store}/keys/{key}"), None)
    }

    fn snapshot(&self) -> PathBuf {
        self.process.dir().join("data/_sys/kvcrdt/state.snap")
    }
}

/// Launches `n` nodes; every node but the first joins the first.
fn gossip_cluster(root: &Path, n: usize) -> Vec<Member> {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let members: Vec<Member> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let name = format!("g{}", i + 1);
            let join = if i == 0 {
                String::new()
            } else {
                format!("    join: [127.0.0.1:{}]\n", ports[0])
            };
            let dir = root.join(&name);
            std::fs::create_dir_all(dir.join("registry")).unwrap();
            std::fs::write(
                dir.join("node.yaml"),
                format!(
                    "data_dir: ./data\ncluster:\n  name: {name}\n  secret_env: E2E_CLUSTER_SECRET\n  gossip:\n    bind: 127.0.0.1:{port}\n{join}    push_pull_interval: 500ms\n    snapshot_interval: 200ms\nregistry:\n  - ./registry\n"
                ),
            )
            .unwrap();
            std::fs::write(dir.join("registry/app.yaml"), CRDT_REGISTRY).unwrap();
            let process = NodeProcess::launch(Path::new(BIN), &dir, ENV).unwrap();
            Member {
                name,
                addr: format!("127.0.0.1:{port}"),
                node: Node {
                    process,
                    token: None,
                    _dir: None,
                },
            }
        })
        .collect();
    for m in &members {
        m.process.wait_healthy().unwrap();
    }
    members
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn has(m: &Member, store: &str, key: &str, value: &str) -> bool {
    let r = m.get(store, key);
    r.status == 200 && r.body == value.as_bytes()
}

#[test]
fn a_write_on_one_node_is_read_on_another_and_peers_of_a_stopped_node_keep_writing() {
    let root = TempDir::new("crdt-e2e");
    let mut members = gossip_cluster(root.path(), 3);
    until("every node sees three alive members", || {
        members.iter().all(|m| {
            let s = m.states();
            s.len() == 3 && s.iter().all(|(_, state)| state == "alive")
        })
    });
    let health = members[1].call("GET", "/v1/health", None);
    assert_eq!(
        health.status,
        200,
        "{}",
        String::from_utf8_lossy(&health.body)
    );
    let status = members[2].cli(&["cluster", "status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(
        text.contains("gossip joined") && text.contains("g1") && text.contains("alive"),
        "{text}"
    );

    let r = members[0].put("sessions", "greeting", "hello");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    until("g3 reads g1's write", || {
        has(&members[2], "sessions", "greeting", "hello")
    });
    // Conditional puts are refused: last writer wins here.
    let r = members[0].call(
        "PUT",
        "/v1/stores/app:sessions/keys/greeting?if_absent=true",
        Some(b"x"),
    );
    assert_eq!(r.status, 501, "{}", String::from_utf8_lossy(&r.body));

    // g2 stops (SIGTERM: final snapshot, leaves); both sides keep taking writes.
    members[1].process.signal("-TERM").unwrap();
    members[1].process.wait_exit(PATIENCE).unwrap();
    until("g1 sees g2 gone", || {
        members[0]
            .states()
            .iter()
            .any(|(n, s)| n == "g2" && s == "dead")
    });
    assert_eq!(members[0].put("sessions", "during", "from g1").status, 200);
    assert_eq!(members[2].put("cache", "during", "from g3").status, 200);
    until("g3 reads g1's write while g2 is away", || {
        has(&members[2], "sessions", "during", "from g1")
    });

    members[1].process.relaunch().unwrap();
    members[1].process.wait_healthy().unwrap();
    until("g2 caught up", || {
        has(&members[1], "sessions", "during", "from g1")
            && has(&members[1], "cache", "during", "from g3")
            && has(&members[1], "sessions", "greeting", "hello")
    });
    let names: Vec<String> = members[1].states().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["g1", "g2", "g3"]);
}

#[test]
fn every_node_killed_keeps_durable_namespaces_from_snapshots_and_loses_plain_ones() {
    let root = TempDir::new("crdt-e2e");
    let mut members = gossip_cluster(root.path(), 3);
    for i in 0..60 {
        let m = &members[i % 3];
        assert_eq!(
            m.put("sessions", &format!("s{i:02}"), &format!("v{i}"))
                .status,
            200
        );
        assert_eq!(m.put("cache", &format!("c{i:02}"), "x").status, 200);
    }
    let r = members[0].call("DELETE", "/v1/stores/app:sessions/keys/s00", None);
    assert_eq!(r.status, 200);
    until("every node holds every write", || {
        members.iter().all(|m| {
            (1..60).all(|i| has(m, "sessions", &format!("s{i:02}"), &format!("v{i}")))
                && m.get("sessions", "s00").status == 404
                && has(m, "cache", "c59", "x")
        })
    });
    // Within a snapshot interval (200 ms) every node's snapshot holds all of it.
    until("every node's snapshot is current", || {
        members
            .iter()
            .all(|m| m.gossip()["snapshot_current"] == Value::Bool(true) && m.snapshot().is_file())
    });
    for m in &mut members {
        m.process.kill().unwrap(); // SIGKILL: no final snapshot, no leave
    }
    for m in &mut members {
        m.process.relaunch().unwrap();
    }
    for m in &members {
        m.process.wait_healthy().unwrap();
    }
    for m in &members {
        for i in 1..60 {
            assert!(
                has(m, "sessions", &format!("s{i:02}"), &format!("v{i}")),
                "s{i:02} on {}",
                m.name
            );
        }
        assert_eq!(
            m.get("sessions", "s00").status,
            404,
            "the delete survived on {}",
            m.name
        );
        for i in 0..60 {
            assert_eq!(
                m.get("cache", &format!("c{i:02}")).status,
                404,
                "plain c{i:02} on {}",
                m.name
            );
        }
    }
}
