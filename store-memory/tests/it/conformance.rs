//! The shared conformance suite and model test, on the concrete type and through `Arc<dyn Store>`.

use std::sync::Arc;

use store_core::SharedStore;
use store_memory::MemoryStore;
use store_testkit::Harness;

fn build(h: &Harness) -> MemoryStore {
    MemoryStore::builder()
        .id("test:memory")
        .clock(h.shared_clock())
        .max_size(100_000)
        .build()
}

mod concrete {
    store_testkit::conformance_suite!(|h: super::Harness| async move { super::build(&h) });
}

mod dynamic {
    store_testkit::conformance_suite!(|h: super::Harness| async move {
        super::Arc::new(super::build(&h)) as super::SharedStore
    });
}
