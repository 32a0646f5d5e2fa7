//! The conformance suite and model test on PostgreSQL: with and without a version column, on the
//! concrete type and through `Arc<dyn Store>`, each test on its own table of a private server
//! this binary starts (or `STORE_TEST_POSTGRES_URL`).

#![cfg(feature = "postgres")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use store_core::SharedStore;
use store_sql::{PostgresConfig, SqlDatabase, SqlStore, SqlStoreConfig};
use store_testkit::{Harness, Options};
use support::pg;

/// SPEC's PostgreSQL schema: `VARCHAR(255)` keys.
const OPTIONS: Options = Options {
    key_chars_limit: Some(255),
    skip: Some(skip),
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
