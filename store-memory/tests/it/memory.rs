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

fn bytes_store(max_bytes: usize, clock: &ManualClock) -> MemoryStore {
    MemoryStore::builder()
        .max_size(1000)
        .max_bytes(max_bytes)
        .clock(clock.shared())
        .build()
}

#[tokio::test]
async fn max_bytes_refuses_writes_past_it_like_max_size() {
    let clock = ManualClock::at_millis(1_000);
    let s = bytes_store(20, &clock);
    s.set("a", v("123456789"), None).await.unwrap(); // 1 + 9
    s.set("b", v("12345678"), None).await.unwrap(); // 1 + 8 = 19 in all
    assert_eq!(s.stored_bytes(), 19);
    let e = s.set("c", v("1"), None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.retryable());
    assert!(e.message().contains("max_bytes 20"), "{e}");
    assert_eq!(
        s.get("c").await.unwrap(),
        None,
        "a refused write changes nothing"
    );
    assert_eq!(s.stored_bytes(), 19);
    // An overwrite that grows past the limit is refused too; one that shrinks or fits is not.
    let e = s.set("b", v("1234567890"), None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(s.get("b").await.unwrap(), Some(v("12345678")));
    s.set("b", v("123456789"), None).await.unwrap(); // exactly 20
    assert_eq!(s.stored_bytes(), 20);
    s.set("a", v(""), None).await.unwrap();
    assert_eq!(s.stored_bytes(), 11);
    assert!(s.delete("b").await.unwrap());
    assert_eq!(s.stored_bytes(), 1);
    s.set("c", v("123456789012345678"), None).await.unwrap(); // 1 + 18
    assert_eq!(s.usage().map(|u| (u.entries, u.bytes)), Some((2, 20)));
}

#[tokio::test]
async fn expired_entries_give_their_bytes_back() {
    let clock = ManualClock::at_millis(1_000);
    let s = bytes_store(20, &clock);
    s.set("a", v("123456789"), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    s.set("b", v("123456789"), None).await.unwrap();
    assert_eq!(
        s.set("c", v("12345678"), None).await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    clock.advance(Duration::from_secs(1));
    // The expired entry still counts until it is reclaimed; a write that needs its room
    // reclaims it first.
    assert_eq!(s.stored_bytes(), 20);
    s.set("c", v("12345678"), None).await.unwrap();
    assert_eq!(s.stored_bytes(), 19);
    // The cleanup sweep gives bytes back too.
    s.set("d", v(""), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(s.stored_bytes(), 20);
    clock.advance(Duration::from_secs(1));
    assert_eq!(s.purge_expired(), 1);
    assert_eq!(s.stored_bytes(), 19);
}

#[tokio::test]
async fn bytes_in_use_never_drift() {
    // Random writes, overwrites, deletes, conditional writes, expiries and sweeps; afterwards the
    // count must equal the sum over what is stored.
    let clock = ManualClock::at_millis(1_000);
    let s = bytes_store(4000, &clock);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for _ in 0..20_000 {
        let key = format!("k{}", next(200));
        let value = Bytes::from(vec![b'x'; usize::try_from(next(40)).unwrap()]);
        let ttl = (next(4) == 0).then(|| Duration::from_millis(1 + next(50)));
        match next(10) {
            0..=4 => drop(s.set(&key, value, ttl).await),
            5 => drop(s.put(&key, value, PutOptions::new().if_absent()).await),
            6 => drop(s.delete(&key).await),
            7 => clock.advance(Duration::from_millis(next(20))),
            8 => drop(s.purge_expired()),
            _ => drop(s.put(&key, value, PutOptions::new().with_ttl(ttl)).await),
        }
        assert!(s.stored_bytes() <= 4000);
    }
    clock.advance(Duration::from_secs(3600));
    s.purge_expired();
    let mut sum = 0;
    let mut after = None;
    loop {
        let page = s
            .list(store_core::ListOptions::new().with_after(after).limit(1000))
            .await
            .unwrap();
        sum += page
            .items
            .iter()
            .map(|e| e.key.len() + e.value.len())
            .sum::<usize>();
        if !page.has_more {
            break;
        }
        after = page.cursor;
    }
    assert_eq!(s.stored_bytes(), sum);
}

#[tokio::test]
async fn a_stored_value_never_keeps_the_callers_buffer_alive() {
    // An HTTP server hands the body over as a slice of its read buffer.
    let buffer = Bytes::from(vec![7u8; 64 * 1024]);
    let s = MemoryStore::new();
    s.set("k", buffer.slice(0..64), None).await.unwrap();
    s.put("p", buffer.slice(64..128), PutOptions::new())
        .await
        .unwrap();
    assert!(
        buffer.is_unique(),
        "the store holds a view of the caller's 64 KiB buffer"
    );
    let got = s.get("k").await.unwrap().unwrap();
    assert_eq!(got, buffer.slice(0..64));
}

#[test]
fn max_bytes_comes_from_the_registry_field() {
    let config: MemoryConfig = serde_json::from_str(r#"{"max_bytes": 100}"#).unwrap();
    assert_eq!(config.limits().unwrap().max_bytes, Some(100));
    let config: MemoryConfig = serde_json::from_str(r#"{"max_bytes": 0}"#).unwrap();
    assert_eq!(config.limits().unwrap().max_bytes, None, "0 is unlimited");
}
