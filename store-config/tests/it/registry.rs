//! Registries that load: the repository's examples, defaults, lifecycle, never panicking on
//! garbage, and the conformance suite on stores built from YAML.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use store_config::{NodeConfig, Registry};
use store_core::{Bytes, ErrorKind, SharedStore, Store, format_duration, parse_duration};
use store_testkit::{Harness, TempDir};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn every_example_config_loads() {
    let examples = repo().join("examples");
    let mut nodes = 0;
    for entry in std::fs::read_dir(&examples).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "yaml") {
            let node = NodeConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let registry = node
                .load_registry(Registry::builder())
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                registry.store_ids().count() > 0,
                "{} has no stores",
                path.display()
            );
            nodes += 1;
        }
    }
    assert!(
        nodes >= 1,
        "no example node configs under {}",
        examples.display()
    );
    let local = NodeConfig::load(examples.join("local.yaml")).unwrap();
    let registry = local.load_registry(Registry::builder()).unwrap();
    let ids: Vec<&str> = registry.store_ids().collect();
    assert_eq!(ids, ["app:cache", "app:kv"]);
    match registry
        .entry("app:main_db")
        .and_then(|e| e.settings::<store_sql::SqliteConfig>())
    {
        Some(c) => {
            assert!(c.path.ends_with("registry/../data/app.db"), "{}", c.path)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn defaults_apply_as_the_spec_says() {
    let yaml = "\
namespace: d
entries:
  - name: zero
    kind: store.memory
    max_size: 0
    cleanup_interval: '0'
  - name: bare
    kind: store.memory
  - name: db
    kind: db.sql.sqlite
    path: x.db
  - name: sql
    kind: store.sql
    database: db
    table_name: kv
  - name: pg
    kind: db.sql.postgres
    url: postgres://u:secret@h/d
";
    let r = Registry::builder().load_str("d.yaml", yaml).unwrap();
    for id in ["d:zero", "d:bare"] {
        match r
            .entry(id)
            .and_then(|e| e.settings::<store_memory::Limits>())
        {
            Some(limits) => {
                assert_eq!(limits.max_size, 10_000, "{id}");
                assert_eq!(limits.cleanup_interval, Duration::from_secs(300), "{id}");
                assert_eq!(limits.max_value_size, 1 << 20, "{id}");
            }
            other => panic!("{other:?}"),
        }
    }
    match r
        .entry("d:sql")
        .and_then(|e| e.settings::<store_sql::SqlStoreConfig>())
    {
        Some(c) => {
            assert_eq!(
                c.database, "d:db",
                "a bare reference means the same namespace"
            );
            assert_eq!(c.id_column_name, "key");
            assert_eq!(c.payload_column_name, "value");
            assert_eq!(c.expire_column_name, "expires_at");
            assert_eq!(c.version_column_name, None);
            assert_eq!(c.cleanup_interval, None, "no cleanup unless asked");
            assert!(!c.create_table);
            assert_eq!(c.max_value_size, None);
        }
        other => panic!("{other:?}"),
    }
    match r
        .entry("d:db")
        .and_then(|e| e.settings::<store_sql::SqliteConfig>())
    {
        Some(c) => {
            assert_eq!(c.path, "x.db", "relative to the file's folder (here: none)");
            assert_eq!(c.busy_timeout, None);
            assert_eq!(c.synchronous, None, "normal unless asked");
        }
        other => panic!("{other:?}"),
    }
    match r
        .entry("d:pg")
        .and_then(|e| e.settings::<store_sql::PostgresConfig>())
    {
        Some(c) => {
            assert_eq!(c.pool_size, None);
            assert!(!format!("{c:?}").contains("secret"), "{c:?}");
        }
        other => panic!("{other:?}"),
    }
    let info = r.store("d:sql").unwrap().info();
    assert!(!info.capabilities.versioned && info.capabilities.conditional_put && info.durable);
}

#[test]
fn unknown_store_ids_list_the_known_ones() {
    let yaml = "namespace: a\nentries:\n  - name: x\n    kind: store.memory\n";
    let r = Registry::builder().load_str("a.yaml", yaml).unwrap();
    let e = r.store("a:y").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.message(), "no store `a:y`; known stores: a:x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_shutdown_are_idempotent_and_shutdown_closes_databases() {
    let dir = TempDir::new("lifecycle");
    let path = dir.join("l.db");
    let yaml = format!(
        "namespace: l\nentries:\n  - name: db\n    kind: db.sql.sqlite\n    path: {}\n  \
         - name: kv\n    kind: store.sql\n    database: db\n    table_name: kv\n    \
         create_table: true\n    cleanup_interval: 1m\n    lifecycle:\n      auto_start: true\n  \
         - name: mem\n    kind: store.memory\n    lifecycle:\n      auto_start: true\n",
        path.display()
    );
    let r = Registry::builder().load_str("l.yaml", &yaml).unwrap();
    assert!(!path.exists(), "loading opens nothing");
    r.start().await.unwrap();
    r.start().await.unwrap();
    // Starting the auto_start SQL store created its table.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'kv'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1);
    let kv = r.store("l:kv").unwrap();
    kv.set("k", Bytes::from_static(b"v"), None).await.unwrap();
    r.shutdown().await;
    r.shutdown().await;
    assert_eq!(kv.get("k").await.unwrap_err().kind(), ErrorKind::Closed);
    let mem = r.store("l:mem").unwrap();
    mem.set("k", Bytes::from_static(b"v"), None).await.unwrap();
}

proptest! {
    #[test]
    fn formatted_durations_parse_back(secs in 0u64..10_000_000_000, nanos in 0u32..1_000_000_000) {
        let d = Duration::new(secs, nanos);
        prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
    }

    #[test]
    fn random_bytes_never_panic_the_loader(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = Registry::builder().load_str("fuzz.yaml", &text);
        let _ = NodeConfig::from_str(Path::new("fuzz.yaml"), &text);
    }

    #[test]
    fn random_registry_shaped_files_never_panic(
        lines in prop::collection::vec(
            (
                prop::sample::select(vec!["", "  ", "    ", "  - ", "      "]),
                prop::sample::select(vec![
                    "namespace", "entries", "name", "kind", "max_size", "cleanup_interval",
                    "database", "table_name", "path", "url", "lifecycle", "auto_start", "meta",
                    "version", "- name", "url_env", "create_table",
                ]),
                prop::sample::select(vec![
                    "", " app", " store.memory", " store.sql", " db.sql.sqlite", " -1", " 5m",
                    " 30", " ':memory:'", " [", " {a: 1}", " true", " 'x y'", " ~", " 0",
                ]),
            ),
            0..30,
        )
    ) {
        let text: String = lines
            .iter()
            .map(|(indent, key, value)| format!("{indent}{key}:{value}\n"))
            .collect();
        let _ = Registry::builder().load_str("shaped.yaml", &text);
    }
}

fn memory_from_yaml(h: &Harness) -> SharedStore {
    let yaml =
        "namespace: t\nentries:\n  - name: m\n    kind: store.memory\n    max_size: 100000\n";
    Registry::builder()
        .clock(h.shared_clock())
        .load_str("t.yaml", yaml)
        .expect("a valid registry")
        .store("t:m")
        .expect("the store it names")
}

fn sqlite_from_yaml(h: &Harness) -> SharedStore {
    let dir = TempDir::new("suite");
    let path = dir.join("t.db");
    h.keep(dir);
    let yaml = format!(
        "namespace: t\nentries:\n  - name: db\n    kind: db.sql.sqlite\n    path: {}\n    \
         synchronous: full\n  \
         - name: s\n    kind: store.sql\n    database: db\n    table_name: kv\n    \
         version_column_name: version\n    create_table: true\n",
        path.display()
    );
    Registry::builder()
        .clock(h.shared_clock())
        .load_str("t.yaml", &yaml)
        .expect("a valid registry")
        .store("t:s")
        .expect("the store it names")
}

mod memory_from_registry {
    use super::*;
    store_testkit::conformance_suite!(|h: Harness| async move { memory_from_yaml(&h) });
}

mod sqlite_from_registry {
    use super::*;
    store_testkit::conformance_suite!(|h: Harness| async move { sqlite_from_yaml(&h) });
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_of_one_database_entry_share_its_handle() {
    // A `:memory:` database exists once per handle: if both stores see each other's writes,
    // they share one database (one pool), not one each.
    let yaml = "\
namespace: s
entries:
  - name: db
    kind: db.sql.sqlite
    path: ':memory:'
  - name: a
    kind: store.sql
    database: db
    table_name: kv
    create_table: true
  - name: b
    kind: store.sql
    database: db
    table_name: kv
    create_table: true
";
    let r = Registry::builder().load_str("s.yaml", yaml).unwrap();
    let (a, b) = (r.store("s:a").unwrap(), r.store("s:b").unwrap());
    a.set("k", Bytes::from_static(b"from a"), None)
        .await
        .unwrap();
    assert_eq!(
        b.get("k").await.unwrap(),
        Some(Bytes::from_static(b"from a"))
    );
    r.shutdown().await;
    assert_eq!(b.get("k").await.unwrap_err().kind(), ErrorKind::Closed);
}

const RAFT_ENTRY: &str =
    "namespace: app\nentries:\n  - name: locks\n    kind: store.kv.raft\n    namespace: locks\n";

/// A node file `node_yaml` (naming `./app.yaml`) and `RAFT_ENTRY` as `app.yaml` in `dir`, loaded.
fn raft_node_config(dir: &TempDir, node_yaml: &str) -> NodeConfig {
    node_config(dir, node_yaml, RAFT_ENTRY)
}

/// A node file `node_yaml` (naming `./app.yaml`) and `entries` as `app.yaml` in `dir`, loaded.
fn node_config(dir: &TempDir, node_yaml: &str, entries: &str) -> NodeConfig {
    let node = dir.path().join("node.yaml");
    std::fs::write(&node, node_yaml).expect("write node.yaml");
    std::fs::write(dir.path().join("app.yaml"), entries).expect("write app.yaml");
    NodeConfig::load(&node).expect("a valid node file")
}

const CRDT_ENTRY: &str = "namespace: app\nentries:\n  - name: sessions\n    kind: store.kv.crdt\n    namespace: sessions\n    durable: true\n";

#[test]
fn a_crdt_entry_on_a_node_without_cluster_gossip_names_the_entry_and_the_section() {
    let text = Registry::builder()
        .load_str("app.yaml", CRDT_ENTRY)
        .unwrap_err()
        .to_string();
    assert!(text.contains("entry `app:sessions`"), "{text}");
    assert!(text.contains("`cluster.gossip` section"), "{text}");

    let dir = TempDir::new("config-crdt");
    let config = node_config(
        &dir,
        "cluster:\n  name: n1\n  raft:\n    bind: 127.0.0.1:7800\n    initial_members: {n1: 127.0.0.1:7800}\nregistry: [./app.yaml]\n",
        CRDT_ENTRY,
    );
    let errors = registry_errors(&config);
    assert!(errors.contains("app.yaml"), "{errors}");
    assert!(errors.contains("entry `app:sessions`"), "{errors}");
    assert!(
        errors.contains("this node's `cluster` has none"),
        "{errors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crdt_entry_serves_once_the_registry_starts_and_snapshots_at_shutdown() {
    let dir = TempDir::new("config-crdt");
    let port = store_testkit::free_port();
    let config = node_config(
        &dir,
        &format!(
            "data_dir: ./data\ncluster:\n  name: n1\n  gossip:\n    bind: 127.0.0.1:{port}\n    snapshot_interval: 10m\nregistry: [./app.yaml]\n"
        ),
        CRDT_ENTRY,
    );
    let gossip = config
        .cluster
        .as_ref()
        .and_then(|c| c.gossip.as_ref())
        .unwrap();
    assert_eq!(gossip.snapshot_interval, Duration::from_secs(600));
    let registry = config
        .load_registry(Registry::builder().node(config.context()))
        .unwrap();
    let store = registry.store("app:sessions").unwrap();
    let info = store.info();
    assert_eq!(info.backend.as_str(), "kv.crdt");
    assert_eq!(info.consistency.as_str(), "eventual");
    assert!(info.durable && !info.capabilities.conditional_put);
    let before = store.get("k").await.unwrap_err();
    assert_eq!(
        before.kind(),
        ErrorKind::Unavailable,
        "not started yet: {before}"
    );

    registry.start().await.unwrap();
    store
        .set("k", Bytes::from_static(b"v"), None)
        .await
        .unwrap();
    assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    let snapshot = dir.path().join("data/_sys/kvcrdt/state.snap");
    assert!(!snapshot.exists(), "the interval is ten minutes");
    registry.shutdown().await;
    assert!(snapshot.is_file(), "written at shutdown");
}

/// The errors of loading `config`'s registry in its own node context.
fn registry_errors(config: &NodeConfig) -> String {
    config
        .load_registry(Registry::builder().node(config.context()))
        .expect_err("the registry has errors")
        .to_string()
}

#[test]
fn a_raft_entry_on_a_node_without_cluster_raft_names_the_entry_and_the_section() {
    let errors = Registry::builder()
        .load_str("app.yaml", RAFT_ENTRY)
        .unwrap_err();
    let text = errors.to_string();
    assert!(text.contains("entry `app:locks`"), "{text}");
    assert!(text.contains("`cluster.raft` section"), "{text}");

    let dir = TempDir::new("config-raft");
    let config = raft_node_config(&dir, "cluster:\n  name: n1\nregistry: [./app.yaml]\n");
    let errors = registry_errors(&config);
    assert!(errors.contains("app.yaml"), "{errors}");
    assert!(errors.contains("entry `app:locks`"), "{errors}");
    assert!(
        errors.contains("this node's `cluster` has none"),
        "{errors}"
    );
}

#[test]
fn an_unset_secret_variable_is_named() {
    let dir = TempDir::new("config-raft");
    let config = raft_node_config(
        &dir,
        "cluster:\n  name: n1\n  secret_env: STORE_TEST_SECRET_THAT_IS_NOT_SET\n  raft:\n    bind: 127.0.0.1:7800\n    initial_members: {n1: 127.0.0.1:7800}\nregistry: [./app.yaml]\n",
    );
    let errors = registry_errors(&config);
    assert!(
        errors.contains("STORE_TEST_SECRET_THAT_IS_NOT_SET is not set"),
        "{errors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_entry_serves_once_the_registry_starts() {
    let dir = TempDir::new("config-raft");
    let port = store_testkit::free_port();
    let config = raft_node_config(
        &dir,
        &format!(
            "data_dir: ./data\ncluster:\n  name: n1\n  raft:\n    bind: 127.0.0.1:{port}\n    initial_members: {{n1: 127.0.0.1:{port}}}\n    election_timeout: 300ms\n    heartbeat_interval: 50ms\nregistry: [./app.yaml]\n"
        ),
    );
    let registry = config
        .load_registry(Registry::builder().node(config.context()))
        .unwrap();
    let store = registry.store("app:locks").unwrap();
    let info = store.info();
    assert_eq!(info.backend.as_str(), "kv.raft");
    assert_eq!(info.consistency.as_str(), "linearizable");
    assert!(info.durable);
    let before = store.get("k").await.unwrap_err();
    assert_eq!(
        before.kind(),
        ErrorKind::Unavailable,
        "not started yet: {before}"
    );

    registry.start().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match store.set("k", Bytes::from_static(b"v"), None).await {
            Ok(()) => break,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "no leader: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert!(dir.path().join("data/_sys/raft").is_dir());
    registry.shutdown().await;
    let after = store.get("k").await.unwrap_err();
    assert_eq!(after.kind(), ErrorKind::Closed, "{after}");
}
