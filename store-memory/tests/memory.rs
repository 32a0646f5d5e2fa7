//! Behaviour specific to `store.memory`: the full-store rule, cleanup and its timer.

use std::time::Duration;

use store_core::{Bytes, ErrorKind, ManualClock, PutOptions, Store, StoreExt};
use store_memory::{MemoryConfig, MemoryStore};

fn v(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn store(max_size: usize, clock: &ManualClock) -> MemoryStore {
    MemoryStore::builder()
        .max_size(max_size)
        .clock(clock.shared())
        .build()
}

#[tokio::test]
async fn new_key_in_a_full_store_is_unavailable_and_overwrites_succeed() {
    let clock = ManualClock::at_millis(1_000);
    let s = store(2, &clock);
    s.set("a", v("1"), None).await.unwrap();
    s.set("b", v("2"), None).await.unwrap();
    let e = s.set("c", v("3"), None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.retryable());
    assert!(e.message().starts_with("store is full"), "{e}");
    let e = s
        .put("c", v("3"), PutOptions::new().if_absent())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(
        s.get("c").await.unwrap(),
        None,
        "a refused write changes nothing"
    );
    // Overwrites of existing keys always succeed, conditional ones too.
    s.set("a", v("1b"), None).await.unwrap();
    let b = s.entry("b").await.unwrap().unwrap();
    s.compare_and_swap("b", b.version, v("2b"), None)
        .await
        .unwrap();
    assert_eq!(s.get("a").await.unwrap(), Some(v("1b")));
    // A delete frees a place.
    assert!(s.delete("a").await.unwrap());
    s.set("c", v("3"), None).await.unwrap();
}

#[tokio::test]
async fn expired_keys_never_count_towards_max_size() {
    let clock = ManualClock::at_millis(1_000);
    let s = store(2, &clock);
    s.set("a", v("1"), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    s.set("b", v("2"), None).await.unwrap();
    clock.advance(Duration::from_secs(1));
    // "a" has expired but no cleanup ran: the store still has room for one new key.
    assert_eq!(s.stored_len(), 2);
    s.set("c", v("3"), None).await.unwrap();
    assert_eq!(
        s.stored_len(),
        2,
        "the expired entry was reclaimed to make room"
    );
    assert_eq!(s.get("a").await.unwrap(), None);
    assert_eq!(
        s.set("d", v("4"), None).await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
}

#[tokio::test]
async fn rewriting_an_expired_key_in_a_full_store_succeeds() {
    let clock = ManualClock::at_millis(1_000);
    let s = store(2, &clock);
    s.set("a", v("1"), Some(Duration::from_millis(5)))
        .await
        .unwrap();
    s.set("b", v("2"), None).await.unwrap();
    clock.advance(Duration::from_millis(5));
    s.put("a", v("again"), PutOptions::new().if_absent())
        .await
        .unwrap();
    assert_eq!(s.get("a").await.unwrap(), Some(v("again")));
}

#[tokio::test]
async fn purge_reclaims_only_expired_entries() {
    let clock = ManualClock::at_millis(1_000);
    let s = store(10_000, &clock);
    for i in 0..3000 {
        let ttl = (i % 3 != 0).then(|| Duration::from_millis(10 + (i % 7)));
        s.set(&format!("k{i}"), v("x"), ttl).await.unwrap();
    }
    assert_eq!(s.purge_expired(), 0);
    clock.advance(Duration::from_millis(10));
    // deadline 10 ms: i % 7 == 0 and i % 3 != 0
    let due = (0..3000u64).filter(|i| i % 3 != 0 && i % 7 == 0).count();
    assert_eq!(s.purge_expired(), due);
    clock.advance(Duration::from_secs(1));
    assert_eq!(s.purge_expired(), 2000 - due);
    assert_eq!(s.stored_len(), 1000);
    assert_eq!(s.get("k0").await.unwrap(), Some(v("x")));
}

#[tokio::test(start_paused = true)]
async fn cleanup_timer_reclaims_and_stops() {
    let clock = ManualClock::at_millis(1_000);
    let s = MemoryStore::builder()
        .clock(clock.shared())
        .cleanup_interval(Duration::from_secs(60))
        .build();
    s.set("a", v("1"), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2));
    s.start().unwrap();
    s.start().unwrap(); // idempotent
    assert!(s.is_started());
    // Tokio's paused clock drives the timer; the store's manual clock drives expiry.
    tokio::time::advance(Duration::from_secs(61)).await;
    tokio::task::yield_now().await;
    wait_until(|| s.stored_len() == 0).await;
    s.stop();
    s.stop(); // idempotent
    assert!(!s.is_started());
    s.set("b", v("1"), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2));
    tokio::time::advance(Duration::from_secs(600)).await;
    tokio::task::yield_now().await;
    assert_eq!(s.stored_len(), 1, "a stopped timer reclaims nothing");
    assert_eq!(
        s.get("b").await.unwrap(),
        None,
        "expiry does not wait for cleanup"
    );
}

/// Polls `cond` on the runtime's (paused) clock with a deadline, instead of a fixed sleep.
async fn wait_until(cond: impl Fn() -> bool) {
    for _ in 0..100 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached after 100 scheduler turns");
}

#[test]
fn start_outside_a_runtime_is_unavailable() {
    let s = MemoryStore::new();
    assert_eq!(s.start().unwrap_err().kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn config_limits_apply() {
    let config = MemoryConfig {
        max_size: 1,
        max_value_size: Some(4),
        ..MemoryConfig::default()
    };
    let s = MemoryStore::builder().config(&config).unwrap().build();
    let e = s.set("a", v("12345"), None).await.unwrap_err();
    assert_eq!(e.message(), "value too large: 5 bytes, limit 4");
    s.set("a", v("1234"), None).await.unwrap();
    assert_eq!(
        s.set("b", v("1"), None).await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    let bad = MemoryConfig {
        max_size: -5,
        ..MemoryConfig::default()
    };
    let e = MemoryStore::builder().config(&bad).unwrap_err();
    assert!(e.message().contains("max_size -5"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_never_exceed_max_size() {
    let s = std::sync::Arc::new(store(500, &ManualClock::at_millis(1)));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..300 {
                if s.set(&format!("{t}:{i}"), v("x"), None).await.is_ok() {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    assert_eq!(accepted, 500);
    assert_eq!(s.stored_len(), 500);
    let mut listed = 0;
    let mut after = None;
    loop {
        let page = s
            .list(store_core::ListOptions::new().with_after(after).limit(1000))
            .await
            .unwrap();
        listed += page.items.len();
        if !page.has_more {
            break;
        }
        after = page.cursor;
    }
    assert_eq!(listed, 500);
}
