//! Behaviour specific to `store.sql` on SQLite: identifier checks, durability across SIGKILL,
//! group commit and read batches under load, cancelled callers, cleanup and its timer. (PostgreSQL's are in `postgres.rs`.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use store_core::{Bytes, ErrorKind, ManualClock, Store};
use store_sql::{SqlDatabase, SqlStore, SqlStoreConfig, SqliteConfig};
use store_testkit::TempDir;

fn v(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A database file in a folder of its own; the folder goes when the returned `TempDir` does.
fn temp_db(name: &str) -> (TempDir, String) {
    let dir = TempDir::new(name);
    let path = dir.join("test.db").to_string_lossy().into_owned();
    (dir, path)
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
    let (_dir, path) = temp_db("missing");
    let db = SqlDatabase::sqlite(SqliteConfig::new(path));
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
async fn a_version_from_an_older_build_comes_back_below_2_pow_53_at_the_next_write() {
    let (_dir, path) = temp_db("old-versions");
    {
        // As an earlier build left it: nanosecond stamps as versions.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at BIGINT, \
             version BIGINT NOT NULL); \
             INSERT INTO kv VALUES ('a', x'01', NULL, 1796191475602750500), \
                                   ('b', x'01', NULL, 1796191475602750501);",
        )
        .unwrap();
    }
    let db = SqlDatabase::sqlite(SqliteConfig::new(path));
    let store = SqlStore::builder(
        db.clone(),
        SqlStoreConfig::new("kv").version_column("version"),
    )
    .build()
    .unwrap();
    let limit = store_core::backend::validate::VERSION_LIMIT;
    let old = store.entry("a").await.unwrap().unwrap().version;
    assert!(old >= limit, "the old row as it was: {old}");
    let set = store
        .put("a", v("2"), store_core::PutOptions::new())
        .await
        .unwrap();
    assert!(set.version < limit, "{}", set.version);
    // A compare-and-swap with the old version is a conflict; with the new one it writes.
    let e = store
        .put("b", v("2"), store_core::PutOptions::new().if_version(old))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    let b = store.entry("b").await.unwrap().unwrap().version;
    let swapped = store
        .put("b", v("3"), store_core::PutOptions::new().if_version(b))
        .await
        .unwrap();
    assert!(swapped.version < limit, "{}", swapped.version);
    let again = store
        .put(
            "b",
            v("4"),
            store_core::PutOptions::new().if_version(swapped.version),
        )
        .await
        .unwrap();
    assert!(again.version > swapped.version);
    db.close().await;
}

#[tokio::test]
async fn stores_share_one_database_handle() {
    let (_dir, path) = temp_db("shared");
    let db = SqlDatabase::sqlite(SqliteConfig::new(path));
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
    let (_dir, path) = temp_db("cleanup");
    let db = SqlDatabase::sqlite(SqliteConfig::new(path));
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
    let (_dir, path) = temp_db("durability");
    let mut child = rerun("sqlite_keeps_every_acknowledged_write_across_sigkill")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_group_commit_under_load_loses_nothing() {
    // 32 writers keep the queue full, so batches hold many writes and leadership is handed on.
    let (_dir, path) = temp_db("group");
    let db = SqlDatabase::sqlite(SqliteConfig::new(path));
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

/// A store on a fresh SQLite file, shareable between tasks, its database, and the folder that
/// holds the file.
fn shared_store(name: &str) -> (TempDir, SqlDatabase, Arc<SqlStore>) {
    let (dir, path) = temp_db(name);
    let db = SqlDatabase::sqlite(SqliteConfig::new(path));
    let config = SqlStoreConfig::new("kv").create_table(true);
    let store = SqlStore::builder(db.clone(), config)
        .build()
        .expect("a valid store config");
    (dir, db, Arc::new(store))
}

fn number(b: &Bytes) -> u64 {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("a value written by this test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_batched_reads_see_every_acknowledged_write() {
    // 16 writers each count up their own key and read it back at once; 16 readers keep the read
    // lane busy, so reads run in shared read transactions. Every read must see every write
    // acknowledged before it was asked: the writer its own last value, a reader never a value
    // older than one it saw before.
    let (_dir, db, store) = shared_store("reads");
    const KEYS: usize = 16;
    for k in 0..KEYS {
        store.set(&format!("k{k:02}"), v("0"), None).await.unwrap();
    }
    let mut tasks = Vec::new();
    for k in 0..KEYS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let key = format!("k{k:02}");
            for i in 1..=300u64 {
                store.set(&key, v(&i.to_string()), None).await.unwrap();
                let got = store.get(&key).await.unwrap().expect("a live key");
                assert_eq!(number(&got), i, "{key}: read after its write");
            }
        }));
    }
    for r in 0..16usize {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut seen = [0u64; KEYS];
            for i in 0..1500 {
                let k = (r * 7 + i) % KEYS;
                let got = store.get(&format!("k{k:02}")).await.unwrap();
                let n = number(&got.expect("a live key"));
                assert!(n >= seen[k], "k{k:02} went back from {} to {n}", seen[k]);
                seen[k] = n;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cancelled_callers_never_stall_the_lanes() {
    // Callers give up at random moments: while queued or while waiting for their batch. No
    // lane may be left without a leader, or every later call would wait forever. (The exact
    // moment just after being handed the leader's place is pinned down by a unit test in
    // src/sqlite.rs.)
    let (_dir, db, store) = shared_store("cancel");
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for i in 0..200u64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let limit = Duration::from_micros(x % 60);
                let key = format!("t{t:02}:{}", i % 10);
                if i % 2 == 0 {
                    let _ = tokio::time::timeout(limit, store.set(&key, v("x"), None)).await;
                } else {
                    let _ = tokio::time::timeout(limit, store.get(&key)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut after = Vec::new();
    for t in 0..8 {
        let store = Arc::clone(&store);
        after.push(tokio::spawn(async move {
            let key = format!("after{t}");
            store.set(&key, v("y"), None).await.unwrap();
            store.get(&key).await.unwrap().expect("just written")
        }));
    }
    for t in after {
        let value = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("a lane was left without a leader: calls after the cancellations hang")
            .unwrap();
        assert_eq!(value, v("y"));
    }
    db.close().await;
}

fn rows_in(path: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).expect("open the test database");
    conn.query_row("SELECT count(*) FROM kv", [], |r| r.get(0))
        .expect("count rows")
}

#[tokio::test(start_paused = true)]
async fn sqlite_cleanup_timer_deletes_expired_rows_and_stops() {
    let clock = ManualClock::at_millis(1_000_000);
    let (_dir, path) = temp_db("timer");
    let db = SqlDatabase::sqlite(SqliteConfig::new(path.clone()));
    let config = SqlStoreConfig::new("kv")
        .create_table(true)
        .cleanup_interval(Duration::from_secs(60));
    let store = SqlStore::builder(db.clone(), config)
        .clock(clock.shared())
        .build()
        .unwrap();
    store.start().await.unwrap();
    store.start().await.unwrap(); // idempotent
    store
        .set("gone", v("x"), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    store.set("kept", v("x"), None).await.unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!(rows_in(&path), 2, "expired but not yet reclaimed");
    // Tokio's paused clock drives the timer; poll the file with a bounded number of turns.
    tokio::time::advance(Duration::from_secs(61)).await;
    let mut turns = 0;
    while rows_in(&path) != 1 {
        turns += 1;
        assert!(
            turns < 1000,
            "the cleanup timer never removed the expired row"
        );
        tokio::task::yield_now().await;
    }
    store.stop();
    store
        .set("later", v("x"), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    tokio::time::advance(Duration::from_secs(600)).await;
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert_eq!(rows_in(&path), 2, "a stopped timer deletes nothing");
    db.close().await;
}

// ---------------------------------------------------------------------------------------------
// A full disk: a real one, a 1 MiB tmpfs mounted in a private mount namespace.

/// Which process of the full-disk test this is: unset at the top, `inside` in the namespace,
/// `writer` for the process that fills the disk.
const FULL_DISK_ROLE: &str = "STORE_SQL_FULL_DISK_ROLE";
/// The folder the tmpfs is mounted on (`inside`), or the database file (`writer`).
const FULL_DISK_PATH: &str = "STORE_SQL_FULL_DISK_PATH";
const FULL_DISK_TEST: &str = "sqlite_full_disk_refuses_writes_truthfully_and_recovers";
/// Writes refused before the writer stops filling.
const REFUSALS: usize = 400;
/// Writes acknowledged after room comes back before the writer is killed.
const RECOVERED: usize = 400;

/// The value stored under `key`: 2 KiB derived from it, so the reader can check it.
fn full_disk_value(key: &str) -> Bytes {
    Bytes::from(
        key.as_bytes()
            .iter()
            .copied()
            .cycle()
            .take(2048)
            .collect::<Vec<u8>>(),
    )
}

/// Runs this test binary again for `test` (a test of this module) alone: how a test becomes its
/// own child process.
fn rerun(test: &str) -> Command {
    // Test names are module paths without the crate's name: `sql::<test>`.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args([
        "--exact",
        &format!("{module}::{test}"),
        "--nocapture",
        "--test-threads",
        "1",
    ]);
    cmd
}

/// The full-disk test again, as `role`.
fn this_test(role: &str) -> Command {
    let mut cmd = rerun(FULL_DISK_TEST);
    cmd.env(FULL_DISK_ROLE, role);
    cmd
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// `unshare` arguments for a private mount namespace in which this process may mount: as root a
/// mount namespace, otherwise a user namespace that maps this user to root as well.
fn namespace_args() -> Vec<&'static str> {
    let mut args = vec!["--mount", "--propagation", "private"];
    if !running_as_root() {
        args.splice(0..0, ["--user", "--map-root-user"]);
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_full_disk_refuses_writes_truthfully_and_recovers() {
    match std::env::var(FULL_DISK_ROLE).as_deref() {
        Ok("writer") => return full_disk_writer().await,
        Ok("inside") => return full_disk_inside().await,
        _ => {}
    }
    let probe = Command::new("unshare")
        .args(namespace_args())
        .arg("true")
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        other => {
            let why = match other {
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                Err(e) => format!("cannot run unshare: {e}"),
            };
            assert!(
                std::env::var_os("STORE_TEST_REQUIRE_FULL_DISK").is_none(),
                "STORE_TEST_REQUIRE_FULL_DISK is set but no private mount namespace: {why}"
            );
            store_testkit::loud_skip(
                FULL_DISK_TEST,
                &format!("no private mount namespace for a tmpfs: {why}"),
            );
            return;
        }
    }
    let dir = TempDir::new("full-disk");
    let inside = this_test("inside");
    let out = Command::new("unshare")
        .args(namespace_args())
        .arg(inside.get_program())
        .args(inside.get_args())
        .env(FULL_DISK_ROLE, "inside")
        .env(FULL_DISK_PATH, dir.path())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the test inside a mount namespace");
    // The tmpfs went with the namespace; the folder it was mounted on is empty, and goes with
    // `dir`.
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        panic!("the full-disk run failed ({}):\n{stdout}", out.status);
    }
    // The counts, without the inner test harness's own summary lines, straight to stderr so
    // that they show in CI logs (the harness hides a passing test's output).
    use std::io::Write as _;
    let mut err = std::io::stderr().lock();
    for line in stdout
        .lines()
        .filter_map(|l| l.find("full disk:").map(|i| &l[i..]))
    {
        let _ = writeln!(err, "{line}");
    }
}

/// How a write ended, as the writer reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok(u64),
    Refused(String),
    Unknown(String),
}

/// In the namespace: mount a 1 MiB tmpfs, fill it from a writer process, give room back while
/// it runs, kill it mid-write, then open the database again and check every answer it gave.
async fn full_disk_inside() {
    let dir = std::path::PathBuf::from(std::env::var_os(FULL_DISK_PATH).expect("the test folder"));
    let mount = |options: &str| {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -o {options}: {status}");
    };
    mount("size=1m");
    let path = dir.join("kv.db").to_string_lossy().into_owned();

    let mut writer = this_test("writer")
        .env(FULL_DISK_PATH, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer");
    let mut to_writer = writer.stdin.take().expect("writer stdin");
    let stdout = writer.stdout.take().expect("writer stdout");
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let mut outcomes: std::collections::BTreeMap<String, Outcome> = Default::default();
    let mut stats_full = Vec::new();
    let mut recovered = 0;
    let mut room = false;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            let _ = writer.kill();
            panic!(
                "the writer stalled or ended early: {} outcomes",
                outcomes.len()
            );
        };
        let mut words = line.splitn(4, ' ');
        let (tag, key) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let rest: Vec<&str> = words.collect();
        match tag {
            "ok" => {
                let version = rest[0].parse().expect("a version");
                outcomes.insert(key.to_owned(), Outcome::Ok(version));
                if room && key.starts_with('r') {
                    recovered += 1;
                    if recovered == RECOVERED {
                        writer.kill().expect("SIGKILL the writer"); // mid-write
                        break;
                    }
                }
            }
            "refused" => {
                outcomes.insert(key.to_owned(), Outcome::Refused(rest.join(" ")));
            }
            "unknown" => {
                outcomes.insert(key.to_owned(), Outcome::Unknown(rest.join(" ")));
            }
            "stats" => stats_full.push(line.clone()),
            "full" => {
                // Space comes back while the writer runs: no restart.
                mount("remount,size=64m");
                room = true;
                use std::io::Write as _;
                writeln!(to_writer, "room").expect("tell the writer");
            }
            _ => {} // the test harness's own lines
        }
    }
    let _ = writer.wait();

    // A new process opens the database, with room: the writer's answers must all be true.
    let db = SqlDatabase::sqlite(SqliteConfig::new(path));
    let store = SqlStore::builder(db.clone(), SqlStoreConfig::new("kv").version_column("v"))
        .build()
        .expect("a valid store config");
    let (mut acked, mut refused, mut unknown, mut unknown_present) = (0, 0, 0, 0);
    let mut causes = std::collections::BTreeSet::new();
    for (key, outcome) in &outcomes {
        let found = store.entry(key).await.expect("a read after the restart");
        match outcome {
            Outcome::Ok(version) => {
                acked += 1;
                let e = found.unwrap_or_else(|| panic!("{key}: acknowledged but lost"));
                assert_eq!(e.version, *version, "{key}: acknowledged version");
                assert_eq!(e.value, full_disk_value(key), "{key}: value");
            }
            Outcome::Refused(why) => {
                refused += 1;
                causes.insert(why.clone());
                assert!(
                    found.is_none(),
                    "{key}: refused as not applied ({why}) but present"
                );
            }
            Outcome::Unknown(why) => {
                unknown += 1;
                causes.insert(why.clone());
                unknown_present += usize::from(found.is_some());
            }
        }
    }
    let e = store
        .put("after-restart", v("x"), store_core::PutOptions::new())
        .await
        .expect("a new write succeeds after the restart");
    assert_eq!(
        store
            .entry("after-restart")
            .await
            .expect("a read after the restart")
            .map(|e| e.version),
        Some(e.version)
    );
    db.close().await;

    println!(
        "full disk: {acked} acknowledged (all present with their version), {refused} refused as \
         not applied (all absent), {unknown} indeterminate ({unknown_present} present after the \
         restart), {recovered} acknowledged after room came back without a restart"
    );
    for line in &stats_full {
        println!("full disk: writer {line}");
    }
    for cause in &causes {
        println!("full disk: refusal: {cause}");
    }
    assert!(
        refused >= REFUSALS,
        "the disk never filled: {refused} refusals"
    );
    assert!(
        causes
            .iter()
            .all(|c| c.starts_with("Unavailable") && c.contains("full")),
        "every refusal is Unavailable and names the full disk: {causes:?}"
    );
    // Both write paths met the full disk: group commits, and statements run alone.
    let stat = |name: &str| -> u64 {
        stats_full
            .last()
            .and_then(|l| {
                l.split(' ')
                    .find_map(|w| w.strip_prefix(&format!("{name}=")))
            })
            .and_then(|n| n.parse().ok())
            .expect("the writer's stats line")
    };
    assert!(
        stat("batched") > stat("batches") && stat("batches") > 0,
        "group commits of more than one write happened"
    );
    assert!(
        stat("batched_failed") > 0,
        "a group commit met the full disk"
    );
    assert!(stat("single_failed") > 0, "a write alone met the full disk");
}

/// The writer: 16 tasks fill the disk until `REFUSALS` writes were refused, then one task writes
/// alone (each write its own transaction); then it says `full` and waits for `room` on stdin,
/// and 16 tasks write again until it is killed. One line per answer.
async fn full_disk_writer() {
    let path = std::env::var(FULL_DISK_PATH).expect("the database path");
    let db = SqlDatabase::sqlite(SqliteConfig::new(path));
    let config = SqlStoreConfig::new("kv")
        .create_table(true)
        .version_column("v");
    let store = Arc::new(
        SqlStore::builder(db.clone(), config)
            .build()
            .expect("a valid store config"),
    );
    let refusals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop_at = std::time::Instant::now() + Duration::from_secs(150);

    async fn write(store: &SqlStore, key: String, if_absent: bool) -> bool {
        let options = if if_absent {
            store_core::PutOptions::new().if_absent()
        } else {
            store_core::PutOptions::new()
        };
        match store.put(&key, full_disk_value(&key), options).await {
            Ok(e) => {
                println!("ok {key} {}", e.version);
                true
            }
            Err(e) if e.is_indeterminate() => {
                println!("unknown {key} {}: {}", e.kind(), e.message());
                false
            }
            Err(e) => {
                println!("refused {key} {}: {}", e.kind(), e.message());
                false
            }
        }
    }
    let writers = |prefix: char, stop: Option<Arc<std::sync::atomic::AtomicUsize>>| {
        (0..16)
            .map(|t| {
                let store = Arc::clone(&store);
                let stop = stop.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        if std::time::Instant::now() > stop_at
                            || stop.as_ref().is_some_and(|n| {
                                n.load(std::sync::atomic::Ordering::Relaxed) >= REFUSALS
                            })
                        {
                            return;
                        }
                        let key = format!("{prefix}{t:02}-{i:06}");
                        if !write(&store, key, i % 2 == 1).await
                            && let Some(n) = &stop
                        {
                            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect::<Vec<_>>()
    };
    let stats = |db: &SqlDatabase| {
        let s = db.write_stats();
        println!(
            "stats single={} single_failed={} batches={} batched={} batched_failed={}",
            s.single, s.single_failed, s.batches, s.batched, s.batched_failed
        );
    };
    for t in writers('f', Some(Arc::clone(&refusals))) {
        t.await.expect("a writer task");
    }
    for i in 0..20 {
        write(&store, format!("a-{i:06}"), false).await;
    }
    stats(&db);
    println!("full");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .expect("wait for room");
    for t in writers('r', None) {
        t.await.expect("a writer task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_closes_every_connection_the_writers_included() {
    // SQLite removes a database's WAL file when its last connection closes.
    let (_dir, path) = temp_db("close");
    let db = SqlDatabase::sqlite(SqliteConfig::new(path.clone()));
    let store = SqlStore::builder(db.clone(), SqlStoreConfig::new("kv").create_table(true))
        .build()
        .unwrap();
    store.set("k", v("x"), None).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(v("x")));
    let wal = format!("{path}-wal");
    assert!(std::path::Path::new(&wal).exists(), "open in WAL mode");
    db.close().await;
    assert!(
        !std::path::Path::new(&wal).exists(),
        "a connection is still open after close"
    );
    assert_eq!(
        store.set("k", v("y"), None).await.unwrap_err().kind(),
        ErrorKind::Closed
    );
}
