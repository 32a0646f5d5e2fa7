//! The conformance suite and model test on SQLite: with and without a version column, on the
//! concrete type and through `Arc<dyn Store>`, each test on its own database file.

#![cfg(feature = "sqlite")]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use store_core::SharedStore;
use store_sql::{SqlDatabase, SqlStore, SqlStoreConfig, SqliteConfig};
use store_testkit::Harness;

/// A new database file under cargo's per-target temporary folder; files of earlier runs are
/// removed the first time.
fn fresh_path() -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("store-sql-sqlite");
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).expect("create test folder");
        dir
    });
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("t{n}.db")).to_string_lossy().into_owned()
}

fn build(h: &Harness, versioned: bool) -> SqlStore {
    let db = SqlDatabase::sqlite(SqliteConfig::new(fresh_path()));
    let mut config = SqlStoreConfig::new("kv").create_table(true);
    if versioned {
        config = config.version_column("version");
    }
    SqlStore::builder(db, config)
        .id("test:sqlite")
        .clock(h.shared_clock())
        .build()
        .expect("valid config")
}

mod versioned {
    use super::*;
    store_testkit::conformance_suite!(|h: Harness| async move { build(&h, true) });
}

mod versioned_dyn {
    use super::*;
    store_testkit::conformance_suite!(|h: Harness| async move {
        Arc::new(build(&h, true)) as SharedStore
    });
}

mod unversioned {
    use super::*;
    store_testkit::conformance_suite!(|h: Harness| async move { build(&h, false) });
}

mod unversioned_dyn {
    use super::*;
    store_testkit::conformance_suite!(|h: Harness| async move {
        Arc::new(build(&h, false)) as SharedStore
    });
}

/// `:memory:` routes reads through the writer; the suite holds there too.
mod in_memory {
    use super::*;
    store_testkit::conformance_suite!(|h: Harness| async move {
        let db = SqlDatabase::sqlite(SqliteConfig::new(":memory:"));
        let config = SqlStoreConfig::new("kv")
            .create_table(true)
            .version_column("v");
        SqlStore::builder(db, config)
            .clock(h.shared_clock())
            .build()
            .expect("valid config")
    });
}
