//! The conformance suite and model test on SQLite: with and without a version column, on the
//! concrete type and through `Arc<dyn Store>`, each test on its own database file.

use std::sync::Arc;

use store_core::SharedStore;
use store_sql::{SqlDatabase, SqlStore, SqlStoreConfig, SqliteConfig};
use store_testkit::{Harness, TempDir};

/// A database file in a folder the case keeps as long as it runs.
fn fresh_path(h: &Harness) -> String {
    let dir = TempDir::new("sqlite");
    let path = dir.join("t.db").to_string_lossy().into_owned();
    h.keep(dir);
    path
}

fn build(h: &Harness, versioned: bool) -> SqlStore {
    let db = SqlDatabase::sqlite(SqliteConfig::new(fresh_path(h)));
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
