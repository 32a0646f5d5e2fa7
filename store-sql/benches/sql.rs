//! `cargo bench -p store-sql`: store-sql against the raw drivers on the same workload, in the
//! same run: raw rusqlite (same pragmas, prepared upsert/select, one connection per client,
//! one transaction per write) and raw tokio-postgres (prepared upsert/select, one connection per
//! client; our pool has as many). 10 000 keys, 64-byte values (each write a new one), 1 and 16
//! clients.
//!
//! SQLite rows also show rusqlite from async code (each call on `spawn_blocking`), and set rows
//! the ceiling of any group commit: one thread committing as many writes per transaction as
//! there are clients, with no coordination at all.
//!
//! `sqlite.set_full` repeats the set rows with `synchronous: full` on both sides, where every
//! commit waits for an fsync and a group commit shares one among its batch.
//!
//! `cargo bench -p store-sql -- sqlite` runs only the SQLite rows.

#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

#[path = "../tests/it/support/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use store_core::Store;
use store_sql::{PostgresConfig, SqlDatabase, SqlStore, SqlStoreConfig, SqliteConfig, Synchronous};
use store_testkit::bench::{self, Rng, Row};

const KEYS: usize = 10_000;
const CLIENTS: [usize; 2] = [1, 16];

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Get,
    Set,
}

fn keys() -> Arc<Vec<String>> {
    Arc::new((0..KEYS).map(|i| format!("key:{i:05}")).collect())
}

/// Fresh 64-byte values, one per write. SQLite leaves a page alone when an update does not
/// change its bytes, so writing the same value again would measure no write at all.
struct Values(u64);

impl Values {
    fn new(client: usize) -> Self {
        Self((client as u64) << 40)
    }

    fn next(&mut self) -> [u8; 64] {
        let mut v = [0xAB; 64];
        v[..8].copy_from_slice(&self.0.to_le_bytes());
        self.0 += 1;
        v
    }
}

fn now_ms() -> i64 {
    store_core::to_millis(std::time::SystemTime::now()) as i64
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn ours(rt: &tokio::runtime::Runtime, store: &SqlStore, op: Op, clients: usize) -> f64 {
    let keys = keys();
    let value = Bytes::from(vec![0xAB; 64]);
    rt.block_on(async {
        for k in keys.iter() {
            store.set(k, value.clone(), None).await.unwrap();
        }
    });
    bench::run_clients(rt, clients, |c| {
        let store = store.clone();
        let keys = Arc::clone(&keys);
        let mut rng = Rng::new(c as u64 + 1);
        let mut values = Values::new(c);
        move || {
            let store = store.clone();
            let key = keys[rng.below(KEYS)].clone();
            let value = match op {
                Op::Get => Bytes::new(),
                Op::Set => Bytes::copy_from_slice(&values.next()),
            };
            async move {
                match op {
                    Op::Get => {
                        std::hint::black_box(store.get(&key).await.unwrap());
                    }
                    Op::Set => store.set(&key, value, None).await.unwrap(),
                }
            }
        }
    })
}

const CREATE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS kv_raw (key TEXT PRIMARY KEY, \
    value BLOB NOT NULL, expires_at BIGINT)";
const UPSERT_SQLITE: &str = "INSERT INTO kv_raw (key, value, expires_at) VALUES (?1, ?2, ?3) \
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at";
const GET_SQLITE: &str = "SELECT value, expires_at FROM kv_raw WHERE key = ?1 \
    AND (expires_at IS NULL OR expires_at > ?2)";

/// The synchronous mode of the rows being measured: ours and every raw peer use the same one.
static SYNC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn sync_mode() -> Synchronous {
    if SYNC.load(std::sync::atomic::Ordering::Relaxed) {
        Synchronous::Full
    } else {
        Synchronous::Normal
    }
}

fn raw_sqlite_conn(path: &str) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    let _: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .unwrap();
    conn.pragma_update(None, "synchronous", sync_mode().as_pragma())
        .unwrap();
    conn
}

/// Raw rusqlite as a synchronous program calls it: one thread and connection per client.
fn raw_sqlite(path: &str, op: Op, clients: usize) -> f64 {
    raw_sqlite_setup(path);
    let keys = keys();
    let path = path.to_owned();
    bench::run(clients, |c| {
        let keys = Arc::clone(&keys);
        let conn = raw_sqlite_conn(&path);
        let mut rng = Rng::new(c as u64 + 1);
        let mut values = Values::new(c);
        move || {
            raw_sqlite_op(&conn, op, &keys[rng.below(KEYS)], &values.next());
            1
        }
    })
}

/// The ceiling of a group commit of `clients` writers: raw rusqlite on one thread committing
/// `clients` writes per transaction, with no coordination at all.
fn raw_sqlite_batched(path: &str, clients: usize) -> f64 {
    raw_sqlite_setup(path);
    let keys = keys();
    bench::run(1, move |_| {
        let keys = Arc::clone(&keys);
        let conn = raw_sqlite_conn(path);
        let mut rng = Rng::new(1);
        let mut values = Values::new(0);
        move || {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            for _ in 0..clients {
                raw_sqlite_op(&conn, Op::Set, &keys[rng.below(KEYS)], &values.next());
            }
            conn.execute_batch("COMMIT").unwrap();
            clients as u64
        }
    })
}

/// Raw rusqlite as an async program has to call it: each operation on `spawn_blocking`.
fn raw_sqlite_async(rt: &tokio::runtime::Runtime, path: &str, op: Op, clients: usize) -> f64 {
    raw_sqlite_setup(path);
    let keys = keys();
    bench::run_clients(rt, clients, |c| {
        let conn = Arc::new(std::sync::Mutex::new(raw_sqlite_conn(path)));
        let keys = Arc::clone(&keys);
        let mut rng = Rng::new(c as u64 + 1);
        let mut values = Values::new(c);
        move || {
            let conn = Arc::clone(&conn);
            let key = keys[rng.below(KEYS)].clone();
            let value = values.next();
            async move {
                tokio::task::spawn_blocking(move || {
                    let conn = conn.lock().unwrap();
                    raw_sqlite_op(&conn, op, &key, &value);
                })
                .await
                .unwrap();
            }
        }
    })
}

fn raw_sqlite_op(conn: &rusqlite::Connection, op: Op, key: &str, value: &[u8]) {
    match op {
        Op::Get => {
            let mut st = conn.prepare_cached(GET_SQLITE).unwrap();
            let row: Option<Vec<u8>> = rusqlite::OptionalExtension::optional(
                st.query_row(rusqlite::params![key, now_ms()], |r| r.get(0)),
            )
            .unwrap();
            std::hint::black_box(row);
        }
        Op::Set => {
            let mut st = conn.prepare_cached(UPSERT_SQLITE).unwrap();
            st.execute(rusqlite::params![key, value, None::<i64>])
                .unwrap();
        }
    }
}

fn raw_sqlite_setup(path: &str) {
    let conn = raw_sqlite_conn(path);
    conn.execute_batch(CREATE_SQLITE).unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for k in keys().iter() {
        tx.execute(
            UPSERT_SQLITE,
            rusqlite::params![k, &[0xABu8; 64][..], None::<i64>],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

const CREATE_PG: &str = "CREATE TABLE IF NOT EXISTS kv_raw (key VARCHAR(255) COLLATE \"C\" \
    PRIMARY KEY, value BYTEA NOT NULL, expires_at BIGINT)";
const UPSERT_PG: &str = "INSERT INTO kv_raw (key, value, expires_at) VALUES ($1, $2, $3) \
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at";
const GET_PG: &str = "SELECT value, expires_at FROM kv_raw WHERE key = $1 \
    AND (expires_at IS NULL OR expires_at > $2)";

async fn raw_pg_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn raw_postgres(rt: &tokio::runtime::Runtime, url: &str, op: Op, clients: usize) -> f64 {
    let keys = keys();
    let conns: Vec<Arc<tokio_postgres::Client>> = rt.block_on(async {
        let setup = raw_pg_client(url).await;
        setup.batch_execute(CREATE_PG).await.unwrap();
        let upsert = setup.prepare(UPSERT_PG).await.unwrap();
        for k in keys.iter() {
            let value: &[u8] = &[0xAB; 64];
            setup
                .execute(&upsert, &[k, &value, &None::<i64>])
                .await
                .unwrap();
        }
        let mut conns = Vec::new();
        for _ in 0..clients {
            conns.push(Arc::new(raw_pg_client(url).await));
        }
        conns
    });
    let statements: Vec<(tokio_postgres::Statement, tokio_postgres::Statement)> =
        rt.block_on(async {
            let mut out = Vec::new();
            for c in &conns {
                out.push((
                    c.prepare(GET_PG).await.unwrap(),
                    c.prepare(UPSERT_PG).await.unwrap(),
                ));
            }
            out
        });
    bench::run_clients(rt, clients, |c| {
        let client = Arc::clone(&conns[c]);
        let (get, upsert) = statements[c].clone();
        let keys = Arc::clone(&keys);
        let mut rng = Rng::new(c as u64 + 1);
        let mut values = Values::new(c);
        move || {
            let client = Arc::clone(&client);
            let key = keys[rng.below(KEYS)].clone();
            let (get, upsert) = (get.clone(), upsert.clone());
            let value = values.next();
            async move {
                match op {
                    Op::Get => {
                        let rows = client.query(&get, &[&key, &now_ms()]).await.unwrap();
                        std::hint::black_box(rows);
                    }
                    Op::Set => {
                        let value: &[u8] = &value;
                        client
                            .execute(&upsert, &[&key, &value, &None::<i64>])
                            .await
                            .unwrap();
                    }
                }
            }
        }
    })
}

/// Runs `round` (ours, then each peer) three times in full mode, and keeps each column's
/// median: the 2-core VM this was tuned on drifts by ±10% between runs, and interleaving
/// exposes ours and the peers to the same drift.
fn median_of_rounds(mut round: impl FnMut() -> Vec<f64>) -> Vec<f64> {
    let rounds = if bench::quick() { 1 } else { 3 };
    let results: Vec<Vec<f64>> = (0..rounds).map(|_| round()).collect();
    (0..results[0].len())
        .map(|col| {
            let mut v: Vec<f64> = results.iter().map(|r| r[col]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect()
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let dir = std::env::temp_dir().join(format!("store-sql-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = runtime();
    let (mut get_rows, mut set_rows) = (Vec::new(), Vec::new());

    let mut full_rows = Vec::new();
    for (op, name) in [
        (Op::Get, "sqlite.get"),
        (Op::Set, "sqlite.set"),
        (Op::Set, "sqlite.set_full"),
    ] {
        if !wanted(name) {
            continue;
        }
        let full = name.ends_with("_full");
        SYNC.store(full, std::sync::atomic::Ordering::Relaxed);
        for clients in CLIENTS {
            let tag = format!("{name}-{clients}");
            let path = |kind: &str| {
                dir.join(format!("{kind}-{tag}.db"))
                    .to_string_lossy()
                    .into_owned()
            };
            let m = median_of_rounds(|| {
                let db =
                    SqlDatabase::sqlite(SqliteConfig::new(path("ours")).synchronous(sync_mode()));
                let store =
                    SqlStore::builder(db.clone(), SqlStoreConfig::new("kv").create_table(true))
                        .build()
                        .unwrap();
                let mut m = vec![ours(&rt, &store, op, clients)];
                rt.block_on(db.close());
                m.push(raw_sqlite(&path("raw"), op, clients));
                if !full {
                    m.push(raw_sqlite_async(&rt, &path("raw-async"), op, clients));
                }
                if op == Op::Set {
                    m.push(raw_sqlite_batched(&path("raw-batched"), clients));
                }
                m
            });
            let names: &[&str] = if full {
                &["rusqlite (full)", "rusqlite (full), clients writes/tx"]
            } else {
                &[
                    "rusqlite",
                    "rusqlite+spawn_blocking",
                    "rusqlite, clients writes/tx",
                ]
            };
            let (ops, peers) = (
                m[0],
                names
                    .iter()
                    .map(|n| n.to_string())
                    .zip(m[1..].iter().copied())
                    .collect(),
            );
            let rows = match op {
                Op::Get => &mut get_rows,
                Op::Set if full => &mut full_rows,
                Op::Set => &mut set_rows,
            };
            rows.push(Row {
                bench: name.to_owned(),
                threads: clients,
                ops_per_s: ops,
                peers,
            });
        }
    }
    SYNC.store(false, std::sync::atomic::Ordering::Relaxed);
    for rows in [get_rows, set_rows, full_rows] {
        if !rows.is_empty() {
            bench::report("store-sql", &rows);
        }
    }

    let pg_rows: Vec<_> = [(Op::Get, "postgres.get"), (Op::Set, "postgres.set")]
        .into_iter()
        .filter(|(_, n)| wanted(n))
        .collect();
    if !pg_rows.is_empty() {
        let server = match std::env::var("STORE_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Ok((url, None)),
            _ => pg::PgServer::start_new("bench").map(|s| (s.url.clone(), Some(s))),
        };
        match server {
            Err(why) => store_testkit::loud_skip("postgres benchmark", &why),
            Ok((url, _server)) => {
                let mut rows = Vec::new();
                for (op, name) in pg_rows {
                    for clients in CLIENTS {
                        let table = format!("kv_{}_{clients}", name.replace('.', "_"));
                        let m = median_of_rounds(|| {
                            let mut config = PostgresConfig::new(url.clone());
                            config.pool_size = Some(clients as u32);
                            let db = SqlDatabase::postgres(config).unwrap();
                            let store = SqlStore::builder(
                                db.clone(),
                                SqlStoreConfig::new(table.clone()).create_table(true),
                            )
                            .build()
                            .unwrap();
                            let ours = ours(&rt, &store, op, clients);
                            rt.block_on(db.close());
                            vec![ours, raw_postgres(&rt, &url, op, clients)]
                        });
                        let (ops, raw) = (m[0], m[1]);
                        rows.push(Row {
                            bench: name.to_owned(),
                            threads: clients,
                            ops_per_s: ops,
                            peers: vec![("tokio-postgres".into(), raw)],
                        });
                    }
                }
                bench::report("store-sql", &rows);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
