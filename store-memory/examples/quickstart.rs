//! A tour of the Store API on store.memory: `cargo run -p store-memory --example quickstart`.

use std::time::Duration;

use store_core::{Bytes, ErrorKind, ListOptions, ManualClock, PutOptions, Store, StoreExt};
use store_memory::MemoryStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> store_core::Result<()> {
    // A manual clock makes the TTL part of the tour instant and repeatable.
    let clock = ManualClock::starting_now();
    let store = MemoryStore::builder()
        .id("demo:cache")
        .max_size(1_000)
        .clock(clock.shared())
        .build();

    store
        .set("greeting", Bytes::from_static(b"hello"), None)
        .await?;
    let v = store.get("greeting").await?;
    println!(
        "get greeting            -> {:?}",
        v.as_deref().map(String::from_utf8_lossy)
    );

    let e = store
        .put(
            "session:42",
            Bytes::from_static(b"alice"),
            PutOptions::new().ttl(Duration::from_secs(30)),
        )
        .await?;
    println!(
        "put session:42 ttl=30s  -> version {}, expires_at {:?}",
        e.version, e.expires_at
    );

    let again = store
        .put_if_absent("session:42", Bytes::from_static(b"mallory"), None)
        .await;
    println!(
        "put_if_absent again     -> {:?}",
        again.map_err(|e| e.kind())
    );

    let swapped = store
        .compare_and_swap(
            "session:42",
            e.version,
            Bytes::from_static(b"alice+"),
            Some(Duration::from_secs(30)),
        )
        .await?;
    println!("compare_and_swap        -> version {}", swapped.version);
    let stale = store
        .compare_and_swap("session:42", e.version, Bytes::new(), None)
        .await;
    println!(
        "stale compare_and_swap  -> {:?}",
        stale.map_err(|e| (e.kind(), e.retryable()))
    );

    store
        .set_json(
            "user:1",
            &serde_json::json!({"name": "Ada", "visits": 3}),
            None,
        )
        .await?;
    let user: Option<serde_json::Value> = store.get_json("user:1").await?;
    println!("get_json user:1         -> {}", user.unwrap_or_default());

    let page = store.list(ListOptions::new().limit(10)).await?;
    let keys: Vec<_> = page.items.iter().map(|e| e.key.as_str()).collect();
    println!(
        "list                    -> {keys:?} (has_more: {})",
        page.has_more
    );

    clock.advance(Duration::from_secs(30));
    println!(
        "30 s later, session:42  -> {:?}",
        store.get("session:42").await?
    );

    if let Err(bad) = store.set("", Bytes::new(), None).await {
        assert_eq!(bad.kind(), ErrorKind::Invalid);
        println!("set of an empty key     -> {bad}");
    }
    println!("info                    -> {:?}", store.info());
    Ok(())
}
