//! store.sql on PostgreSQL: the conformance suite and model test (with and without a version
//! column, on the concrete type and through `Arc<dyn Store>`, each test on its own table of a
//! private server this binary starts, or `STORE_TEST_POSTGRES_URL`), then outages,
//! compare-and-swap across a pool, and secrets in errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::pg;
use store_core::{Bytes, ErrorKind, SharedStore, Store, StoreExt};
use store_sql::{PostgresConfig, SqlDatabase, SqlStore, SqlStoreConfig, TlsMode};
use store_testkit::{Harness, Options};

/// Runs only where a PostgreSQL server could be started (a skip prints why). The store reports
/// its `VARCHAR(255)` key limit in its capabilities, where the suite reads it.
const OPTIONS: Options = Options {
    skip: Some(skip),
    model_cases: None,
};

fn skip() -> Option<String> {
    pg::shared()
        .err()
        .map(|why| format!("PostgreSQL unavailable: {why}"))
}

fn fresh_table() -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    format!(
        "kv_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn build(h: &Harness, versioned: bool) -> SqlStore {
    let url = pg::shared().expect("checked by skip()");
    let mut db_config = PostgresConfig::new(url);
    db_config.pool_size = Some(4);
    let db = SqlDatabase::postgres(db_config).expect("valid url");
    let mut config = SqlStoreConfig::new(fresh_table()).create_table(true);
    if versioned {
        config = config.version_column("version");
    }
    SqlStore::builder(db, config)
        .id("test:postgres")
        .clock(h.shared_clock())
        .build()
        .expect("valid config")
}

mod versioned {
    use super::*;
    store_testkit::conformance_suite!(options = OPTIONS; |h: Harness| async move {
        build(&h, true)
    });
}

mod versioned_dyn {
    use super::*;
    store_testkit::conformance_suite!(options = OPTIONS; |h: Harness| async move {
        Arc::new(build(&h, true)) as SharedStore
    });
}

mod unversioned {
    use super::*;
    store_testkit::conformance_suite!(options = OPTIONS; |h: Harness| async move {
        build(&h, false)
    });
}

mod unversioned_dyn {
    use super::*;
    store_testkit::conformance_suite!(options = OPTIONS; |h: Harness| async move {
        Arc::new(build(&h, false)) as SharedStore
    });
}

fn v(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
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
async fn postgres_statement_past_its_timeout_is_cancelled_on_the_server() {
    let url = match pg::shared() {
        Ok(url) => url,
        Err(why) => {
            return pg::skip(
                "postgres_statement_past_its_timeout_is_cancelled_on_the_server",
                &why,
            );
        }
    };
    let mut config = pg_config(&url);
    config.statement_timeout = Some(store_core::HumanDuration(Duration::from_millis(500)));
    let db = SqlDatabase::postgres(config).unwrap();
    let table = format!("slow_{}", std::process::id());
    let store = SqlStore::builder(
        db.clone(),
        SqlStoreConfig::new(table.clone())
            .create_table(true)
            .version_column("v"),
    )
    .build()
    .unwrap();
    store.set("k", v("before"), None).await.unwrap();

    // Another session holds the row's lock, so the store's write waits past its timeout.
    let (locker, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    locker.batch_execute("BEGIN").await.unwrap();
    locker
        .execute(
            &format!("SELECT 1 FROM \"{table}\" WHERE key = 'k' FOR UPDATE"),
            &[],
        )
        .await
        .unwrap();

    let started = Instant::now();
    let e = store.set("k", v("during"), None).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e:?}");
    assert!(
        !e.is_indeterminate(),
        "the server cancelled it, so it is known not applied: {e:?}"
    );
    assert!(took < Duration::from_secs(5), "the timeout took {took:?}");

    // Nothing of the store's is still running on the server.
    let running: i64 = locker
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
             AND pid <> pg_backend_pid() AND query LIKE $1",
            &[&format!("INSERT INTO \"{table}\"%")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        running, 0,
        "the write still runs on the server after its timeout"
    );

    locker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        store.get("k").await.unwrap(),
        Some(v("before")),
        "not applied"
    );
    store.set("k", v("after"), None).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(v("after")));
    db.close().await;
}

#[test]
fn a_statement_timeout_past_postgres_limit_is_invalid_and_named() {
    // PostgreSQL refuses a statement_timeout over 2^31 - 1 ms; a store configured with one must
    // fail at construction, not on every connection.
    let mut config = PostgresConfig::new("postgres://app@127.0.0.1:1/db");
    config.statement_timeout = Some(store_core::HumanDuration(Duration::from_secs(1000 * 3600)));
    let e = SqlDatabase::postgres(config).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    assert!(e.message().starts_with("statement_timeout "), "{e}");
    assert!(e.message().contains("PostgreSQL's limit"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// TLS: a private server that accepts only TLS, with a certificate this test makes.

/// A CA called `name`, and a certificate it signed for 127.0.0.1 with its key:
/// `(ca_pem, cert_pem, key_pem)`.
fn certificates(name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, name);
    let ca_pem = ca.self_signed(&ca_key).expect("a CA certificate").pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("a server key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("a server certificate");
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// Writes and reads one key through a store on `config`; the error of whichever failed.
async fn round_trip(config: PostgresConfig) -> store_core::Result<()> {
    let db = SqlDatabase::postgres(config)?;
    let store =
        SqlStore::builder(db.clone(), SqlStoreConfig::new("tls_kv").create_table(true)).build()?;
    let result = async {
        store.set("k", Bytes::from_static(b"v"), None).await?;
        assert_eq!(store.get("k").await?, Some(Bytes::from_static(b"v")));
        Ok(())
    }
    .await;
    db.close().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_checks_the_server_and_says_why_not() {
    if let Err(why) = pg::shared() {
        return pg::skip("postgres_over_tls_checks_the_server_and_says_why_not", &why);
    }
    let (ca, cert, key) = certificates("store test CA");
    let (other_ca, _, _) = certificates("another CA");
    let server = match pg::PgServer::start_tls("tls", &cert, &key) {
        Ok(s) => s,
        Err(why) => panic!("a TLS server should start where PostgreSQL runs: {why}"),
    };
    let dir = store_testkit::TempDir::new("pg-tls");
    let (ca_file, other_file) = (dir.join("ca.pem"), dir.join("other.pem"));
    std::fs::write(&ca_file, ca).expect("ca.pem");
    std::fs::write(&other_file, other_ca).expect("other.pem");
    let ca_file = ca_file.to_string_lossy().into_owned();
    let url = server.url.clone();

    // The right CA, the address the certificate names: connected, and checked.
    let verified = PostgresConfig::new(url.clone())
        .tls(TlsMode::VerifyFull)
        .ca_file(ca_file.clone());
    round_trip(verified)
        .await
        .expect("verify-full with the server's CA");
    // Encrypted without a check.
    round_trip(PostgresConfig::new(url.clone()).tls(TlsMode::Require))
        .await
        .expect("require accepts any certificate");

    // Another CA: refused, and the error says it is the certificate.
    let wrong_ca = PostgresConfig::new(url.clone())
        .tls(TlsMode::VerifyFull)
        .ca_file(other_file.to_string_lossy().into_owned());
    let e = round_trip(wrong_ca).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.message().contains("certificate"), "{e}");
    assert!(e.message().contains("UnknownIssuer"), "{e}");

    // The right CA, another name than the certificate's (connecting to the same address).
    let wrong_name = format!(
        "postgres://postgres@localhost:{}/postgres?hostaddr=127.0.0.1",
        server.port
    );
    let e = round_trip(
        PostgresConfig::new(wrong_name)
            .tls(TlsMode::VerifyFull)
            .ca_file(ca_file.clone()),
    )
    .await
    .unwrap_err();
    assert!(e.message().contains("certificate"), "{e}");
    assert!(
        e.message().contains("not valid for name \"localhost\""),
        "{e}"
    );

    // Plain TCP (the default for a loopback host) to a server that requires TLS.
    let e = round_trip(PostgresConfig::new(url.clone()))
        .await
        .unwrap_err();
    assert!(
        e.message().contains("pg_hba.conf") && e.message().contains("no encryption"),
        "{e}"
    );
}
