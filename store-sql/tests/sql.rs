//! Behaviour specific to `store.sql`: identifier checks, durability across SIGKILL, PostgreSQL
//! outages, compare-and-swap across a connection pool, cleanup, secrets in errors.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use store_core::{Bytes, ErrorKind, ManualClock, Store, StoreExt};
use store_sql::{PostgresConfig, SqlDatabase, SqlStore, SqlStoreConfig, SqliteConfig};
use support::pg;

fn v(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn temp_db(name: &str) -> String {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("store-sql-misc");
    std::fs::create_dir_all(&dir).expect("test folder");
    let path = dir.join(format!("{name}-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path.to_string_lossy().into_owned()
}

#[test]
fn hostile_identifiers_are_rejected_at_construction() {
    let hostile = [
        "kv; DROP TABLE x",
        "kv--",
        "\"kv\"",
        "select",
        "1kv",
        "kv store",
        &"a".repeat(64),
    ];
    let db = SqlDatabase::sqlite(SqliteConfig::new(":memory:"));
    type Set = fn(&mut SqlStoreConfig, String);
    let fields: [(&str, Set); 5] = [
        ("table_name", |c, v| c.table_name = v),
        ("id_column_name", |c, v| c.id_column_name = v),
        ("payload_column_name", |c, v| c.payload_column_name = v),
        ("expire_column_name", |c, v| c.expire_column_name = v),
        ("version_column_name", |c, v| {
            c.version_column_name = Some(v)
        }),
    ];
    for (field, set) in fields {
        for name in hostile {
            let mut config = SqlStoreConfig::new("kv");
            set(&mut config, name.to_owned());
            let e = SqlStore::builder(db.clone(), config).build().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Invalid, "{field} = {name:?}");
            assert!(e.message().starts_with(field), "names the field: {e}");
            // The value is shown Debug-escaped, so quotes inside it stay readable.
            let escaped = format!("{name:?}");
            let shown: String = escaped[1..escaped.len() - 1].chars().take(20).collect();
            assert!(e.message().contains(&shown), "names the value: {e}");
        }
    }
}

#[tokio::test]
async fn a_missing_table_is_invalid_and_names_it() {
    let db = SqlDatabase::sqlite(SqliteConfig::new(temp_db("missing")));
    let store = SqlStore::builder(db.clone(), SqlStoreConfig::new("nowhere"))
        .build()
        .unwrap();
    let e = store.get("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e:?}");
    assert!(e.message().contains("nowhere"), "{e}");
    db.close().await;
    assert_eq!(store.get("k").await.unwrap_err().kind(), ErrorKind::Closed);
}

#[tokio::test]
async fn stores_share_one_database_handle() {
    let db = SqlDatabase::sqlite(SqliteConfig::new(temp_db("shared")));
    let a = SqlStore::builder(db.clone(), SqlStoreConfig::new("a").create_table(true))
        .build()
        .unwrap();
    let b = SqlStore::builder(db.clone(), SqlStoreConfig::new("b").create_table(true))
        .build()
        .unwrap();
    a.set("k", v("from a"), None).await.unwrap();
    b.set("k", v("from b"), None).await.unwrap();
    assert_eq!(a.get("k").await.unwrap(), Some(v("from a")));
    assert_eq!(b.get("k").await.unwrap(), Some(v("from b")));
    db.close().await;
}

#[tokio::test]
async fn cleanup_deletes_expired_rows_in_batches() {
    let clock = ManualClock::at_millis(1_000_000);
    let db = SqlDatabase::sqlite(SqliteConfig::new(temp_db("cleanup")));
    let store = SqlStore::builder(db.clone(), SqlStoreConfig::new("kv").create_table(true))
        .clock(clock.shared())
        .build()
        .unwrap();
    for i in 0..2500 {
        store
            .set(&format!("t{i}"), v("x"), Some(Duration::from_secs(1)))
            .await
            .unwrap();
    }
    for i in 0..10 {
        store.set(&format!("p{i}"), v("x"), None).await.unwrap();
    }
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    clock.advance(Duration::from_secs(1));
    // 2500 rows go in three statements of at most 1000 rows each.
    assert_eq!(store.purge_expired().await.unwrap(), 2500);
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    let page = store.list(store_core::ListOptions::new()).await.unwrap();
    assert_eq!(page.items.len(), 10);
    db.close().await;
}

/// Child mode of the durability test: 8 concurrent writers, one `ack <key>` line per
/// acknowledged write, until killed.
async fn durability_child(path: String) {
    let db = SqlDatabase::sqlite(SqliteConfig::new(path));
    let store = Arc::new(
        SqlStore::builder(
            db,
            SqlStoreConfig::new("kv")
                .create_table(true)
                .version_column("v"),
        )
        .build()
        .expect("valid config"),
    );
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("w{w}:{i}");
                store
                    .set(&key, v(&key), None)
                    .await
                    .expect("the child writes until it is killed");
                println!("ack {key}");
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_acknowledged_write_across_sigkill() {
    if let Ok(path) = std::env::var("STORE_SQL_DURABILITY_CHILD") {
        return durability_child(path).await;
    }
    let path = temp_db("durability");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sqlite_keeps_every_acknowledged_write_across_sigkill",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("STORE_SQL_DURABILITY_CHILD", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(key) = line.strip_prefix("ack ") {
            acked.push(key.to_owned());
            if acked.len() == 3000 {
                child.kill().unwrap(); // SIGKILL, mid-stream
                break;
            }
        }
    }
    let _ = child.wait();
    assert_eq!(acked.len(), 3000, "the child stopped acknowledging early");

    let db = SqlDatabase::sqlite(SqliteConfig::new(path));
    let store = SqlStore::builder(db.clone(), SqlStoreConfig::new("kv").version_column("v"))
        .build()
        .unwrap();
    let mut missing = Vec::new();
    for key in &acked {
        if store.get(key).await.unwrap() != Some(v(key)) {
            missing.push(key.clone());
        }
    }
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    db.close().await;
}

fn pg_config(url: &str) -> PostgresConfig {
    let mut c = PostgresConfig::new(url);
    c.pool_size = Some(8);
    c.connect_timeout = Some(store_core::HumanDuration(Duration::from_secs(2)));
    c.statement_timeout = Some(store_core::HumanDuration(Duration::from_secs(5)));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cas_race_across_a_pool_loses_nothing() {
    let url = match pg::shared() {
        Ok(url) => url,
        Err(why) => return pg::skip("postgres_cas_race_across_a_pool_loses_nothing", &why),
    };
    let db = SqlDatabase::postgres(pg_config(&url)).unwrap();
    let table = format!("race_{}", std::process::id());
    let store = Arc::new(
        SqlStore::builder(
            db.clone(),
            SqlStoreConfig::new(table)
                .create_table(true)
                .version_column("v"),
        )
        .build()
        .unwrap(),
    );
    store.set("n", v("0"), None).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                loop {
                    let e = store.entry("n").await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&e.value).unwrap().parse().unwrap();
                    match store
                        .compare_and_swap("n", e.version, v(&(n + 1).to_string()), None)
                        .await
                    {
                        Ok(_) => break,
                        Err(e) if e.kind() == ErrorKind::Conflict => continue,
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.get("n").await.unwrap(), Some(v("800")));
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_fails_fast_and_the_store_recovers() {
    let server = match pg::PgServer::start_new("outage") {
        Ok(s) => s,
        Err(why) if std::env::var("STORE_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") => {
            panic!("PostgreSQL is required but: {why}")
        }
        Err(why) => return pg::skip("postgres_outage_fails_fast_and_the_store_recovers", &why),
    };
    let db = SqlDatabase::postgres(pg_config(&server.url)).unwrap();
    let store = SqlStore::builder(db.clone(), SqlStoreConfig::new("kv").create_table(true))
        .build()
        .unwrap();
    store.set("k", v("before"), None).await.unwrap();

    server.stop();
    let started = Instant::now();
    let read = store.get("k").await.unwrap_err();
    let write = store.set("k", v("during"), None).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(read.kind(), ErrorKind::Unavailable, "{read:?}");
    assert_eq!(write.kind(), ErrorKind::Unavailable, "{write:?}");
    assert!(read.retryable() && write.retryable());
    assert!(took < Duration::from_secs(5), "failing took {took:?}");

    server.start().unwrap();
    // The same store object works again: broken connections are replaced on checkout.
    assert_eq!(store.get("k").await.unwrap(), Some(v("before")));
    store.set("k", v("after"), None).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(v("after")));
    db.close().await;
}

#[tokio::test]
async fn postgres_password_never_appears_in_errors() {
    // Nothing listens on port 1: the connection fails, and the error must not echo the secret.
    let db = SqlDatabase::postgres(pg_config("postgres://app:hunter2@127.0.0.1:1/db")).unwrap();
    let store = SqlStore::builder(db.clone(), SqlStoreConfig::new("kv"))
        .build()
        .unwrap();
    let e = store.get("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    let everything = format!("{e} {e:?} {db:?} {store:?}");
    assert!(!everything.contains("hunter2"), "{everything}");
    assert!(everything.contains("app:***@127.0.0.1:1"), "{everything}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_group_commit_under_load_loses_nothing() {
    // 32 writers keep the queue full, so batches hold many writes and leadership is handed on.
    let db = SqlDatabase::sqlite(SqliteConfig::new(temp_db("group")));
    let store = Arc::new(
        SqlStore::builder(
            db.clone(),
            SqlStoreConfig::new("kv")
                .create_table(true)
                .version_column("v"),
        )
        .build()
        .unwrap(),
    );
    let mut tasks = Vec::new();
    for w in 0..32 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for i in 0..200 {
                let key = format!("w{w:02}:{i:03}");
                let e = store
                    .put(&key, v(&key), store_core::PutOptions::new())
                    .await
                    .unwrap();
                assert!(e.version > last, "versions grow in commit order");
                last = e.version;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut seen = 0;
    let mut after = None;
    loop {
        let page = store
            .list(store_core::ListOptions::new().with_after(after).limit(1000))
            .await
            .unwrap();
        for e in &page.items {
            assert_eq!(e.value, v(&e.key));
        }
        seen += page.items.len();
        if !page.has_more {
            break;
        }
        after = page.cursor;
    }
    assert_eq!(seen, 32 * 200);
    db.close().await;
}
