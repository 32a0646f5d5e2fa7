//! The conformance cases. Each is named after the `# Behavior` bullet of
//! [`store_core::Store`] it checks, takes a fresh store and its [`Harness`], and panics
//! with a message naming what differed.

#![allow(missing_docs)] // each case's doc is its bullet on the Store trait

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use store_core::backend::validate;
use store_core::{
    Clock, Entry, ErrorKind, ListOptions, Page, PutOptions, Result, Store, StoreExt, from_millis,
};

use crate::Harness;

// ---------------------------------------------------------------------------------------------
// helpers

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[track_caller]
fn ok<T>(result: Result<T>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("expected success, got {e:?}"),
    }
}

#[track_caller]
fn err<T: Debug>(result: Result<T>, kind: ErrorKind) -> store_core::Error {
    match result {
        Ok(v) => panic!("expected {kind}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "wrong error kind: {e:?}");
            e
        }
    }
}

/// The instant `offset` after the harness clock's current time.
fn at(h: &Harness, offset: Duration) -> SystemTime {
    from_millis(Clock::now_ms(h.clock())) + offset
}

fn skipped(case: &str, why: &str) {
    crate::loud_skip(case, why);
}

/// Every live entry, following cursors with the largest page.
async fn all_entries<S: Store>(s: &S) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = ok(s
            .list(ListOptions::new().with_after(after).limit(1000))
            .await);
        out.extend(page.items);
        if !page.has_more {
            return out;
        }
        after = page.cursor;
    }
}

fn keys(page: &Page) -> Vec<&str> {
    page.items.iter().map(|e| e.key.as_str()).collect()
}

async fn set_all<S: Store>(s: &S, names: &[&str]) {
    for k in names {
        ok(s.set(k, b(k), None).await);
    }
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    v.sort(); // String's Ord is UTF-8 byte order
    v
}

fn is_versioned<S: Store>(s: &S) -> bool {
    s.info().capabilities.versioned
}

fn can_if_absent<S: Store>(s: &S) -> bool {
    s.info().capabilities.conditional_put
}

fn can_if_version<S: Store>(s: &S) -> bool {
    let info = s.info();
    info.capabilities.conditional_put && info.capabilities.versioned
}

fn list_gate<S: Store>(s: &S, case: &str) -> bool {
    if s.info().capabilities.list {
        true
    } else {
        skipped(case, "store does not offer list");
        false
    }
}

// ---------------------------------------------------------------------------------------------
// get / entry / has

pub async fn get_absent_key_is_none<S: Store>(s: S, _h: Harness) {
    assert_eq!(ok(s.get("missing").await), None);
    assert!(!ok(s.has("missing").await));
    assert_eq!(ok(s.entry("missing").await), None);
}

pub async fn get_live_key_returns_value<S: Store>(s: S, _h: Harness) {
    ok(s.set("k", b("v1"), None).await);
    ok(s.set("t", b("v2"), Some(secs(60))).await);
    assert_eq!(ok(s.get("k").await), Some(b("v1")));
    assert_eq!(ok(s.get("t").await), Some(b("v2")));
    assert_eq!(ok(s.get("K").await), None, "keys are case sensitive");
}

pub async fn expired_key_is_absent_to_every_read<S: Store>(s: S, h: Harness) {
    ok(s.set("k", b("v"), Some(secs(10))).await);
    ok(s.set("other", b("v"), None).await);
    h.advance(secs(10));
    assert_eq!(ok(s.get("k").await), None);
    assert!(!ok(s.has("k").await));
    assert_eq!(ok(s.entry("k").await), None);
    if s.info().capabilities.list {
        let page = ok(s.list(ListOptions::new()).await);
        assert_eq!(keys(&page), ["other"]);
    }
}

pub async fn expiry_is_exact_at_the_deadline<S: Store>(s: S, h: Harness) {
    ok(s.set("k", b("v"), Some(ms(1000))).await);
    h.advance(ms(999));
    assert_eq!(
        ok(s.get("k").await),
        Some(b("v")),
        "1 ms before the deadline"
    );
    assert!(ok(s.has("k").await));
    assert!(ok(s.entry("k").await).is_some());
    h.advance(ms(1));
    assert_eq!(ok(s.get("k").await), None, "at the deadline");
    assert!(!ok(s.has("k").await));
    assert_eq!(ok(s.entry("k").await), None);
}

pub async fn entry_reports_version_and_expiry<S: Store>(s: S, h: Harness) {
    let written = ok(s.put("k", b("v"), PutOptions::new().ttl(secs(30))).await);
    let entry = ok(s.entry("k").await).expect("entry of a live key");
    assert_eq!(entry, written);
    assert_eq!(entry.key, "k");
    assert_eq!(entry.value, b("v"));
    assert_eq!(entry.expires_at, Some(at(&h, secs(30))));
    if is_versioned(&s) {
        assert!(entry.version > 0, "versioned store reported version 0");
    } else {
        assert_eq!(entry.version, 0, "unversioned store must report 0");
    }
    ok(s.set("p", b("v"), None).await);
    let permanent = ok(s.entry("p").await).expect("entry of a live key");
    assert_eq!(permanent.expires_at, None);
}

pub async fn sub_millisecond_ttl_rounds_up_to_one_ms<S: Store>(s: S, h: Harness) {
    ok(s.set("k", b("v"), Some(Duration::from_micros(1))).await);
    let entry = ok(s.entry("k").await).expect("live right after the write");
    assert_eq!(entry.expires_at, Some(at(&h, ms(1))));
    h.advance(ms(1));
    assert_eq!(ok(s.get("k").await), None);
}

pub async fn zero_ttl_means_no_expiry<S: Store>(s: S, h: Harness) {
    ok(s.set("k", b("v"), Some(Duration::ZERO)).await);
    let e = ok(s
        .put("p", b("v"), PutOptions::new().ttl(Duration::ZERO))
        .await);
    assert_eq!(e.expires_at, None);
    assert_eq!(ok(s.entry("k").await).map(|e| e.expires_at), Some(None));
    h.advance(secs(50 * 365 * 24 * 3600));
    assert_eq!(ok(s.get("k").await), Some(b("v")));
    assert_eq!(ok(s.get("p").await), Some(b("v")));
}

pub async fn has_follows_liveness<S: Store>(s: S, h: Harness) {
    assert!(!ok(s.has("k").await));
    ok(s.set("k", b("v"), None).await);
    assert!(ok(s.has("k").await));
    assert!(ok(s.delete("k").await));
    assert!(!ok(s.has("k").await));
    ok(s.set("k", b("v"), Some(secs(1))).await);
    assert!(ok(s.has("k").await));
    h.advance(secs(1));
    assert!(!ok(s.has("k").await));
}

// ---------------------------------------------------------------------------------------------
// set and argument validation

pub async fn set_replaces_value<S: Store>(s: S, _h: Harness) {
    ok(s.set("k", b("one"), None).await);
    ok(s.set("k", b("two"), None).await);
    assert_eq!(ok(s.get("k").await), Some(b("two")));
    ok(s.set("k", b(""), None).await);
    assert_eq!(ok(s.get("k").await), Some(b("")));
}

pub async fn set_without_ttl_clears_old_expiry<S: Store>(s: S, h: Harness) {
    ok(s.set("k", b("v1"), Some(secs(10))).await);
    ok(s.set("k", b("v2"), None).await);
    assert_eq!(ok(s.entry("k").await).map(|e| e.expires_at), Some(None));
    h.advance(secs(3600));
    assert_eq!(ok(s.get("k").await), Some(b("v2")));
}

pub async fn set_with_ttl_replaces_old_expiry<S: Store>(s: S, h: Harness) {
    ok(s.set("k", b("v1"), Some(secs(10))).await);
    h.advance(secs(5));
    ok(s.set("k", b("v2"), Some(secs(10))).await);
    assert_eq!(
        ok(s.entry("k").await).and_then(|e| e.expires_at),
        Some(at(&h, secs(10)))
    );
    h.advance(secs(6)); // past the first deadline
    assert_eq!(ok(s.get("k").await), Some(b("v2")));
    h.advance(secs(4));
    assert_eq!(ok(s.get("k").await), None);

    // A shorter TTL shortens too.
    ok(s.set("s", b("v"), Some(secs(100))).await);
    ok(s.set("s", b("v"), Some(secs(1))).await);
    h.advance(secs(1));
    assert_eq!(ok(s.get("s").await), None);
}

/// Calls every keyed method with `key` and asserts each is `Invalid`.
async fn every_method_rejects<S: Store>(s: &S, key: &str) {
    err(s.get(key).await, ErrorKind::Invalid);
    err(s.entry(key).await, ErrorKind::Invalid);
    err(s.has(key).await, ErrorKind::Invalid);
    err(s.set(key, b("v"), None).await, ErrorKind::Invalid);
    err(
        s.put(key, b("v"), PutOptions::new()).await,
        ErrorKind::Invalid,
    );
    err(
        s.put(key, b("v"), PutOptions::new().if_absent()).await,
        ErrorKind::Invalid,
    );
    err(s.delete(key).await, ErrorKind::Invalid);
}

pub async fn empty_key_is_invalid<S: Store>(s: S, _h: Harness) {
    every_method_rejects(&s, "").await;
}

pub async fn key_length_limit_is_1024_bytes<S: Store>(s: S, _h: Harness) {
    if let Some(chars) = s.info().capabilities.max_key_chars {
        // The schema allows fewer characters: its limit holds, one more is Invalid.
        let longest = "k".repeat(chars);
        ok(s.set(&longest, b("v"), None).await);
        assert_eq!(ok(s.get(&longest).await), Some(b("v")));
        let over = "k".repeat(chars + 1);
        err(s.set(&over, b("v"), None).await, ErrorKind::Invalid);
        err(
            s.put(&over, b("v"), PutOptions::new().if_absent()).await,
            ErrorKind::Invalid,
        );
        assert_eq!(ok(s.get(&over).await), None);
        every_method_rejects(&s, &"k".repeat(validate::MAX_KEY_LEN + 1)).await;
        return;
    }
    let longest = "k".repeat(validate::MAX_KEY_LEN);
    ok(s.set(&longest, b("v"), None).await);
    assert_eq!(ok(s.get(&longest).await), Some(b("v")));
    assert!(ok(s.delete(&longest).await));
    every_method_rejects(&s, &"k".repeat(validate::MAX_KEY_LEN + 1)).await;
    // The limit is in bytes, not characters: 341 × '€' (3 bytes) + "ab" = 1025 bytes.
    every_method_rejects(&s, &format!("{}ab", "€".repeat(341))).await;
}

pub async fn key_with_nul_is_invalid<S: Store>(s: S, _h: Harness) {
    every_method_rejects(&s, "a\0b").await;
    every_method_rejects(&s, "\0").await;
}

pub async fn multibyte_keys_round_trip<S: Store>(s: S, _h: Harness) {
    // NFC and NFD forms of "é" are different keys: keys are opaque bytes.
    let names = [
        "ключ",
        "🔑",
        "日本語",
        "\u{e9}",
        "e\u{301}",
        "a:b:c",
        ":lead",
    ];
    for k in names {
        ok(s.set(k, b(&format!("value of {k}")), None).await);
    }
    for k in names {
        assert_eq!(ok(s.get(k).await), Some(b(&format!("value of {k}"))), "{k}");
    }
    // 256 × 4 bytes = exactly 1024 bytes (or as many as the schema's character limit allows).
    let full = "🔑".repeat(s.info().capabilities.max_key_chars.unwrap_or(256).min(256));
    ok(s.set(&full, b("v"), None).await);
    assert_eq!(ok(s.get(&full).await), Some(b("v")));
    assert_eq!(ok(s.get(":lead").await), Some(b("value of :lead")));
    assert_eq!(ok(s.get("lead").await), None, "no key splitting at ':'");
}

pub async fn value_size_limit_is_enforced<S: Store>(s: S, _h: Harness) {
    let limit = s.info().capabilities.max_value_size;
    let at_limit = Bytes::from(vec![7u8; limit]);
    ok(s.set("k", at_limit.clone(), None).await);
    assert_eq!(ok(s.get("k").await).map(|v| v.len()), Some(limit));
    let over = Bytes::from(vec![7u8; limit + 1]);
    let e = err(s.set("big", over.clone(), None).await, ErrorKind::Invalid);
    assert_eq!(
        e.message(),
        format!("value too large: {} bytes, limit {limit}", limit + 1)
    );
    assert!(e.too_large().is_some());
    err(
        s.put("big", over, PutOptions::new()).await,
        ErrorKind::Invalid,
    );
    assert_eq!(ok(s.get("big").await), None);
}

pub async fn empty_value_round_trips<S: Store>(s: S, _h: Harness) {
    ok(s.set("k", Bytes::new(), None).await);
    assert_eq!(ok(s.get("k").await), Some(Bytes::new()));
    assert!(ok(s.has("k").await));
    let e = ok(s.put("p", Bytes::new(), PutOptions::new()).await);
    assert!(e.value.is_empty());
}

pub async fn ttl_over_100_years_is_invalid<S: Store>(s: S, _h: Harness) {
    let too_long = validate::MAX_TTL + ms(1);
    let e = err(s.set("k", b("v"), Some(too_long)).await, ErrorKind::Invalid);
    assert!(e.message().contains("ttl"), "message names the ttl: {e}");
    err(
        s.put("k", b("v"), PutOptions::new().ttl(too_long)).await,
        ErrorKind::Invalid,
    );
    assert_eq!(ok(s.get("k").await), None);
    ok(s.set("k", b("v"), Some(validate::MAX_TTL)).await);
    assert_eq!(ok(s.get("k").await), Some(b("v")));
}

pub async fn rejected_calls_change_nothing<S: Store>(s: S, _h: Harness) {
    ok(s.set("k", b("original"), Some(secs(60))).await);
    ok(s.set("other", b("x"), None).await);
    let before = ok(s.entry("k").await);
    let listed_before = if s.info().capabilities.list {
        Some(all_entries(&s).await)
    } else {
        None
    };

    let big = Bytes::from(vec![0u8; s.info().capabilities.max_value_size + 1]);
    assert!(s.set("k", big.clone(), None).await.is_err());
    assert!(s.put("k", big, PutOptions::new()).await.is_err());
    let forever = validate::MAX_TTL * 2;
    assert!(s.set("k", b("changed"), Some(forever)).await.is_err());
    assert!(
        s.put("k", b("changed"), PutOptions::new().if_version(0))
            .await
            .is_err()
    );
    assert!(
        s.put("k", b("changed"), PutOptions::new().if_absent())
            .await
            .is_err()
    );
    if let Some(e) = &before {
        let wrong = e.version.wrapping_add(1_000_000).max(1);
        assert!(
            s.put("k", b("changed"), PutOptions::new().if_version(wrong))
                .await
                .is_err()
        );
    }
    assert!(s.set("", b("changed"), None).await.is_err());
    assert!(s.delete("k\0").await.is_err());
    assert!(
        s.put("new", b("v"), PutOptions::new().if_version(0))
            .await
            .is_err()
    );
    assert!(s.list(ListOptions::new().prefix("\0")).await.is_err());

    assert_eq!(ok(s.entry("k").await), before);
    assert_eq!(ok(s.get("new").await), None);
    if let Some(listed) = listed_before {
        assert_eq!(all_entries(&s).await, listed);
    }
}

pub async fn special_characters_round_trip<S: Store>(s: S, _h: Harness) {
    let names = [
        "it's",
        "\"quoted\"",
        "back\\slash",
        "100%",
        "under_score",
        "emoji😀",
        "a/b/c",
        "sp ace",
        "semi;colon--",
        "' OR 1=1 --",
        "tab\there",
        "new\nline",
    ];
    let binary: Bytes = (0u8..=255).collect::<Vec<u8>>().into();
    for k in names {
        ok(s.set(k, binary.clone(), None).await);
    }
    for k in names {
        assert_eq!(ok(s.get(k).await), Some(binary.clone()), "key {k:?}");
    }
    if s.info().capabilities.list {
        let listed: Vec<String> = all_entries(&s).await.into_iter().map(|e| e.key).collect();
        assert_eq!(listed, sorted(&names));
    }
}

// ---------------------------------------------------------------------------------------------
// put

pub async fn put_always_returns_the_written_entry<S: Store>(s: S, h: Harness) {
    let e = ok(s.put("k", b("v"), PutOptions::new().ttl(secs(30))).await);
    assert_eq!(e.key, "k");
    assert_eq!(e.value, b("v"));
    assert_eq!(e.expires_at, Some(at(&h, secs(30))));
    assert_eq!(e.version > 0, is_versioned(&s));
    assert_eq!(ok(s.entry("k").await), Some(e.clone()));
    let again = ok(s.put("k", b("w"), PutOptions::new()).await);
    assert_eq!(again.value, b("w"));
    if is_versioned(&s) {
        assert!(again.version > e.version);
    }
}

pub async fn put_expiry_comes_from_its_own_ttl<S: Store>(s: S, h: Harness) {
    ok(s.put("k", b("v"), PutOptions::new().ttl(secs(10))).await);
    let e = ok(s.put("k", b("v"), PutOptions::new()).await);
    assert_eq!(e.expires_at, None, "a put without TTL clears the old one");
    let e = ok(s.put("k", b("v"), PutOptions::new().ttl(secs(5))).await);
    assert_eq!(e.expires_at, Some(at(&h, secs(5))));
    if can_if_version(&s) {
        let e = ok(s
            .put("k", b("w"), PutOptions::new().if_version(e.version))
            .await);
        assert_eq!(e.expires_at, None, "IfVersion without TTL clears it too");
        h.advance(secs(10));
        assert_eq!(ok(s.get("k").await), Some(b("w")));
    }
}

pub async fn if_absent_on_absent_key_writes<S: Store>(s: S, _h: Harness) {
    let result = s.put("k", b("v"), PutOptions::new().if_absent()).await;
    if !can_if_absent(&s) {
        err(result, ErrorKind::Unsupported);
        assert_eq!(ok(s.get("k").await), None);
        return;
    }
    let e = ok(result);
    assert_eq!(e.value, b("v"));
    assert_eq!(ok(s.get("k").await), Some(b("v")));
}

pub async fn if_absent_on_live_key_is_already_exists<S: Store>(s: S, _h: Harness) {
    if !can_if_absent(&s) {
        return skipped(
            "if_absent_on_live_key_is_already_exists",
            "no conditional puts",
        );
    }
    ok(s.set("k", b("first"), Some(secs(60))).await);
    let before = ok(s.entry("k").await);
    let e = err(
        s.put("k", b("second"), PutOptions::new().if_absent()).await,
        ErrorKind::AlreadyExists,
    );
    assert!(!e.retryable());
    assert_eq!(ok(s.entry("k").await), before);
}

pub async fn if_absent_on_expired_key_writes<S: Store>(s: S, h: Harness) {
    if !can_if_absent(&s) {
        return skipped("if_absent_on_expired_key_writes", "no conditional puts");
    }
    ok(s.set("k", b("old"), Some(secs(1))).await);
    h.advance(secs(1));
    let e = ok(s.put("k", b("new"), PutOptions::new().if_absent()).await);
    assert_eq!(e.expires_at, None, "expiry comes from this call alone");
    assert_eq!(ok(s.get("k").await), Some(b("new")));
    h.advance(secs(3600));
    assert_eq!(ok(s.get("k").await), Some(b("new")));
}

pub async fn if_version_on_absent_key_is_not_found<S: Store>(s: S, _h: Harness) {
    let result = s.put("k", b("v"), PutOptions::new().if_version(5)).await;
    if !can_if_version(&s) {
        err(result, ErrorKind::Unsupported);
    } else {
        let e = err(result, ErrorKind::NotFound);
        assert!(!e.retryable());
    }
    assert_eq!(ok(s.get("k").await), None);
}

pub async fn if_version_on_expired_key_is_not_found<S: Store>(s: S, h: Harness) {
    if !can_if_version(&s) {
        return skipped("if_version_on_expired_key_is_not_found", "no versions");
    }
    let e = ok(s.put("k", b("v"), PutOptions::new().ttl(secs(1))).await);
    h.advance(secs(1));
    err(
        s.put("k", b("w"), PutOptions::new().if_version(e.version))
            .await,
        ErrorKind::NotFound,
    );
    assert_eq!(ok(s.get("k").await), None);
}

pub async fn if_version_mismatch_is_conflict<S: Store>(s: S, _h: Harness) {
    if !can_if_version(&s) {
        return skipped("if_version_mismatch_is_conflict", "no versions");
    }
    let old = ok(s.put("k", b("old"), PutOptions::new()).await);
    let e = ok(s.put("k", b("v"), PutOptions::new()).await);
    // Both a newer and an older version than the live one are mismatches.
    for wrong in [e.version + 1_000, old.version] {
        let conflict = err(
            s.put("k", b("w"), PutOptions::new().if_version(wrong))
                .await,
            ErrorKind::Conflict,
        );
        assert!(conflict.retryable());
        assert_eq!(
            ok(s.entry("k").await),
            Some(e.clone()),
            "IfVersion({wrong})"
        );
    }
}

pub async fn if_version_match_writes_a_newer_version<S: Store>(s: S, _h: Harness) {
    if !can_if_version(&s) {
        return skipped("if_version_match_writes_a_newer_version", "no versions");
    }
    let first = ok(s.put("k", b("v1"), PutOptions::new()).await);
    let second = ok(s
        .put("k", b("v2"), PutOptions::new().if_version(first.version))
        .await);
    assert!(second.version > first.version);
    assert_eq!(second.value, b("v2"));
    assert_eq!(ok(s.get("k").await), Some(b("v2")));
    err(
        s.put("k", b("v3"), PutOptions::new().if_version(first.version))
            .await,
        ErrorKind::Conflict,
    );
}

pub async fn if_version_zero_is_invalid<S: Store>(s: S, _h: Harness) {
    err(
        s.put("absent", b("v"), PutOptions::new().if_version(0))
            .await,
        ErrorKind::Invalid,
    );
    ok(s.set("k", b("v"), None).await);
    err(
        s.put("k", b("w"), PutOptions::new().if_version(0)).await,
        ErrorKind::Invalid,
    );
    assert_eq!(ok(s.get("k").await), Some(b("v")));
    assert_eq!(ok(s.get("absent").await), None);
}

pub async fn versions_strictly_increase_per_key<S: Store>(s: S, _h: Harness) {
    let mut seen = Vec::new();
    seen.push(ok(s.put("k", b("1"), PutOptions::new()).await).version);
    ok(s.set("other", b("x"), None).await);
    ok(s.set("k", b("2"), None).await);
    seen.push(ok(s.entry("k").await).map_or(0, |e| e.version));
    seen.push(ok(s.put("k", b("3"), PutOptions::new().ttl(secs(9))).await).version);
    assert!(ok(s.delete("k").await));
    seen.push(ok(s.put("k", b("4"), PutOptions::new()).await).version);
    if can_if_version(&s) {
        let last = seen.last().copied().unwrap_or(0);
        seen.push(ok(s.put("k", b("5"), PutOptions::new().if_version(last)).await).version);
    }
    if is_versioned(&s) {
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "versions must strictly increase: {seen:?}"
        );
    } else {
        assert!(seen.iter().all(|v| *v == 0), "unversioned: {seen:?}");
    }
}

pub async fn versions_fit_in_53_bits<S: Store>(s: S, _h: Harness) {
    let mut seen = Vec::new();
    for round in 0..3 {
        seen.push(ok(s.put("k", b("v"), PutOptions::new()).await).version);
        seen.push(
            ok(s.put(&format!("other{round}"), b("v"), PutOptions::new())
                .await)
            .version,
        );
        ok(s.set("k", b("w"), None).await);
        seen.extend(ok(s.entry("k").await).map(|e| e.version));
        assert!(ok(s.delete("k").await));
    }
    assert!(
        seen.iter().all(|v| *v < validate::VERSION_LIMIT),
        "every version must be below 2^53 (exact in a JSON number): {seen:?}"
    );
}

pub async fn unsupported_conditions_write_nothing<S: Store>(s: S, _h: Harness) {
    let mut checked = false;
    if !can_if_absent(&s) {
        checked = true;
        err(
            s.put("a", b("v"), PutOptions::new().if_absent()).await,
            ErrorKind::Unsupported,
        );
        assert_eq!(ok(s.get("a").await), None);
    }
    if !can_if_version(&s) {
        checked = true;
        ok(s.set("k", b("v"), None).await);
        err(
            s.put("k", b("w"), PutOptions::new().if_version(1)).await,
            ErrorKind::Unsupported,
        );
        assert_eq!(ok(s.get("k").await), Some(b("v")));
    }
    if !checked {
        skipped(
            "unsupported_conditions_write_nothing",
            "store supports every condition",
        );
    }
}

pub async fn concurrent_compare_and_swap_loses_no_increment<S: Store>(s: S, _h: Harness) {
    if !can_if_version(&s) {
        return skipped(
            "concurrent_compare_and_swap_loses_no_increment",
            "no versions",
        );
    }
    const TASKS: u64 = 8;
    const INCREMENTS: u64 = 50;
    let s = Arc::new(s);
    ok(s.set("counter", b("0"), None).await);
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let s = Arc::clone(&s);
        handles.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            for _ in 0..INCREMENTS {
                loop {
                    let e = ok(s.entry("counter").await).expect("counter exists");
                    let n: u64 = std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .expect("counter is a number");
                    let next = b(&(n + 1).to_string());
                    match s.compare_and_swap("counter", e.version, next, None).await {
                        Ok(_) => break,
                        Err(e) if e.kind() == ErrorKind::Conflict => conflicts += 1,
                        Err(e) => panic!("unexpected error during CAS: {e:?}"),
                    }
                }
            }
            conflicts
        }));
    }
    for h in handles {
        h.await.expect("CAS task panicked");
    }
    let total = TASKS * INCREMENTS;
    assert_eq!(ok(s.get("counter").await), Some(b(&total.to_string())));
}

pub async fn concurrent_if_absent_has_one_winner<S: Store>(s: S, _h: Harness) {
    if !can_if_absent(&s) {
        return skipped("concurrent_if_absent_has_one_winner", "no conditional puts");
    }
    let s = Arc::new(s);
    let mut handles = Vec::new();
    for i in 0..16 {
        let s = Arc::clone(&s);
        handles.push(tokio::spawn(async move {
            let value = b(&format!("writer {i}"));
            (i, s.put_if_absent("prize", value, None).await)
        }));
    }
    let mut winners = Vec::new();
    for h in handles {
        let (i, result) = h.await.expect("task panicked");
        match result {
            Ok(_) => winners.push(i),
            Err(e) => assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let expected = b(&format!("writer {}", winners[0]));
    assert_eq!(ok(s.get("prize").await), Some(expected));
}

// ---------------------------------------------------------------------------------------------
// delete

pub async fn delete_absent_key_is_false<S: Store>(s: S, _h: Harness) {
    assert!(!ok(s.delete("missing").await));
}

pub async fn delete_live_key_removes_it<S: Store>(s: S, _h: Harness) {
    ok(s.set("k", b("v"), Some(secs(60))).await);
    ok(s.set("keep", b("v"), None).await);
    assert!(ok(s.delete("k").await));
    assert_eq!(ok(s.get("k").await), None);
    assert!(!ok(s.delete("k").await), "second delete finds nothing");
    assert_eq!(ok(s.get("keep").await), Some(b("v")));
}

pub async fn delete_expired_key_is_false<S: Store>(s: S, h: Harness) {
    ok(s.set("k", b("v"), Some(secs(1))).await);
    h.advance(secs(1));
    assert!(!ok(s.delete("k").await));
    assert_eq!(ok(s.get("k").await), None);
}

// ---------------------------------------------------------------------------------------------
// list

pub async fn list_of_empty_store_is_empty<S: Store>(s: S, _h: Harness) {
    if !list_gate(&s, "list_of_empty_store_is_empty") {
        return;
    }
    let page = ok(s.list(ListOptions::new()).await);
    assert_eq!(page, Page::default());
}

pub async fn list_is_in_byte_order<S: Store>(s: S, _h: Harness) {
    if !list_gate(&s, "list_is_in_byte_order") {
        return;
    }
    let names = [
        "b", "a", "\u{e9}", "z", "Z", "aa", "a\u{7f}", "日本", "🔑", "ab", "a b", "A", "_", "~",
        "a\u{80}",
    ];
    set_all(&s, &names).await;
    let page = ok(s.list(ListOptions::new()).await);
    assert_eq!(keys(&page), sorted(&names));
}

pub async fn list_filters_by_prefix<S: Store>(s: S, _h: Harness) {
    if !list_gate(&s, "list_filters_by_prefix") {
        return;
    }
    set_all(
        &s,
        &["user:1", "user:2", "users", "use", "other", "user:\u{e9}"],
    )
    .await;
    let with = |p: &str| ListOptions::new().prefix(p);
    let page = ok(s.list(with("user:")).await);
    assert_eq!(keys(&page), ["user:1", "user:2", "user:\u{e9}"]);
    let page = ok(s.list(with("user")).await);
    assert_eq!(keys(&page), ["user:1", "user:2", "user:\u{e9}", "users"]);
    assert!(ok(s.list(with("zzz")).await).items.is_empty());
    assert!(ok(s.list(with("User")).await).items.is_empty());
    assert_eq!(ok(s.list(with("")).await).items.len(), 6);
}

pub async fn list_prefix_is_literal<S: Store>(s: S, _h: Harness) {
    if !list_gate(&s, "list_prefix_is_literal") {
        return;
    }
    set_all(&s, &["a%b", "axb", "a_c", "abc", "a\\d", "aXd", "a\\%"]).await;
    let with = |p: &str| ListOptions::new().prefix(p);
    assert_eq!(keys(&ok(s.list(with("a%")).await)), ["a%b"]);
    assert_eq!(keys(&ok(s.list(with("a_")).await)), ["a_c"]);
    assert_eq!(keys(&ok(s.list(with("a\\")).await)), ["a\\%", "a\\d"]);
    assert_eq!(keys(&ok(s.list(with("a\\%")).await)), ["a\\%"]);
}

pub async fn list_starts_after_the_given_key<S: Store>(s: S, _h: Harness) {
    if !list_gate(&s, "list_starts_after_the_given_key") {
        return;
    }
    set_all(&s, &["a", "b", "c", "d", "e", "p:1", "p:2", "p:3", "q"]).await;
    let after = |a: &str| ListOptions::new().after(a);
    assert_eq!(
        keys(&ok(s.list(after("b")).await)),
        ["c", "d", "e", "p:1", "p:2", "p:3", "q"]
    );
    assert_eq!(
        keys(&ok(s.list(after("bb")).await)),
        ["c", "d", "e", "p:1", "p:2", "p:3", "q"]
    );
    assert!(ok(s.list(after("q")).await).items.is_empty());
    assert_eq!(ok(s.list(after("")).await).items.len(), 9);
    let scoped = |a: &str| ListOptions::new().prefix("p:").after(a);
    assert_eq!(keys(&ok(s.list(scoped("p:1")).await)), ["p:2", "p:3"]);
    assert_eq!(keys(&ok(s.list(scoped("a")).await)), ["p:1", "p:2", "p:3"]);
    assert!(ok(s.list(scoped("p:3")).await).items.is_empty());
    assert!(ok(s.list(scoped("pz")).await).items.is_empty());
}

async fn fill<S: Store>(s: &S, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("key:{i:05}")).collect();
    for k in &names {
        ok(s.set(k, b("v"), None).await);
    }
    names
}

pub async fn list_default_limit_is_100<S: Store>(s: S, _h: Harness) {
    if !list_gate(&s, "list_default_limit_is_100") {
        return;
    }
    let names = fill(&s, 150).await;
    for options in [ListOptions::new(), ListOptions::new().limit(0)] {
        let page = ok(s.list(options).await);
        assert_eq!(page.items.len(), 100);
        assert!(page.has_more);
        assert_eq!(page.cursor.as_deref(), Some(names[99].as_str()));
    }
}

pub async fn list_limit_is_clamped_at_1000<S: Store>(s: S, _h: Harness) {
    if !list_gate(&s, "list_limit_is_clamped_at_1000") {
        return;
    }
    fill(&s, 1001).await;
    let page = ok(s.list(ListOptions::new().limit(5000)).await);
    assert_eq!(page.items.len(), 1000);
    assert!(page.has_more);
    let rest = ok(s
        .list(ListOptions::new().with_after(page.cursor).limit(5000))
        .await);
    assert_eq!(rest.items.len(), 1);
    assert!(!rest.has_more);
}

pub async fn list_cursor_is_last_key_and_has_more_is_exact<S: Store>(s: S, _h: Harness) {
    if !list_gate(&s, "list_cursor_is_last_key_and_has_more_is_exact") {
        return;
    }
    let names = fill(&s, 10).await;
    let page = ok(s.list(ListOptions::new().limit(10)).await);
    assert!(!page.has_more, "exactly 10 keys, limit 10");
    assert_eq!(page.cursor.as_deref(), Some(names[9].as_str()));
    assert!(ok(s.list(ListOptions::new().limit(9)).await).has_more);
    assert!(!ok(s.list(ListOptions::new().limit(11)).await).has_more);
    let first = ok(s.list(ListOptions::new().limit(5)).await);
    assert!(first.has_more);
    assert_eq!(first.cursor.as_deref(), Some(names[4].as_str()));
    let second = ok(s
        .list(ListOptions::new().with_after(first.cursor).limit(5))
        .await);
    assert_eq!(
        keys(&second),
        names[5..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(!second.has_more);
}

pub async fn list_pages_through_2500_keys<S: Store>(s: S, _h: Harness) {
    if !list_gate(&s, "list_pages_through_2500_keys") {
        return;
    }
    let names = fill(&s, 2500).await;
    for limit in [1000, 333] {
        let mut seen = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let page = ok(s
                .list(ListOptions::new().with_after(after).limit(limit))
                .await);
            pages += 1;
            assert!(page.items.len() <= limit);
            seen.extend(page.items.into_iter().map(|e| e.key));
            if !page.has_more {
                break;
            }
            after = page.cursor;
        }
        assert_eq!(pages, 2500usize.div_ceil(limit), "limit {limit}");
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "duplicates at limit {limit}");
        assert_eq!(seen, names, "limit {limit}");
    }
}

pub async fn list_excludes_expired_keys<S: Store>(s: S, h: Harness) {
    if !list_gate(&s, "list_excludes_expired_keys") {
        return;
    }
    ok(s.set("a", b("v"), Some(secs(1))).await);
    ok(s.set("b", b("v"), None).await);
    ok(s.set("c", b("v"), Some(secs(2))).await);
    h.advance(secs(1));
    assert_eq!(keys(&ok(s.list(ListOptions::new()).await)), ["b", "c"]);
    h.advance(secs(1));
    let page = ok(s.list(ListOptions::new().limit(1)).await);
    assert_eq!(keys(&page), ["b"]);
    assert!(!page.has_more, "expired keys do not count as more");
}

pub async fn list_entries_carry_version_and_expiry<S: Store>(s: S, _h: Harness) {
    if !list_gate(&s, "list_entries_carry_version_and_expiry") {
        return;
    }
    ok(s.put("a", b("1"), PutOptions::new().ttl(secs(30))).await);
    ok(s.put("b", b("2"), PutOptions::new()).await);
    ok(s.set("c", b("3"), Some(secs(7))).await);
    ok(s.set("a", b("4"), Some(secs(60))).await);
    let page = ok(s.list(ListOptions::new()).await);
    let mut direct = Vec::new();
    for k in ["a", "b", "c"] {
        direct.push(ok(s.entry(k).await).expect("live"));
    }
    assert_eq!(page.items, direct);
}

pub async fn list_options_are_validated<S: Store>(s: S, _h: Harness) {
    if !list_gate(&s, "list_options_are_validated") {
        return;
    }
    let long = "p".repeat(validate::MAX_KEY_LEN + 1);
    let e = err(
        s.list(ListOptions::new().prefix("a\0")).await,
        ErrorKind::Invalid,
    );
    assert!(e.message().contains("prefix"), "{e}");
    let e = err(
        s.list(ListOptions::new().after(long.clone())).await,
        ErrorKind::Invalid,
    );
    assert!(e.message().contains("after"), "{e}");
    err(
        s.list(ListOptions::new().prefix(long)).await,
        ErrorKind::Invalid,
    );
}

// ---------------------------------------------------------------------------------------------
// info and helpers

pub async fn info_is_coherent<S: Store>(s: S, _h: Harness) {
    let info = s.info();
    assert_eq!(info, s.info(), "info is stable");
    assert!(!info.id.is_empty(), "a store has an id");
    assert!(
        info.capabilities.ttl,
        "every backend of this family honours TTLs"
    );
    let e = ok(s.put("k", b("v"), PutOptions::new()).await);
    assert_eq!(e.version == 0, !info.capabilities.versioned);
}

pub async fn usage_counts_keys_and_values<S: Store>(s: S, _h: Harness) {
    let Some(before) = s.usage() else {
        return skipped(
            "usage_counts_keys_and_values",
            "the store keeps no data in memory (usage is None)",
        );
    };
    let usage = |s: &S| s.usage().expect("usage stays reported");
    ok(s.set("key", b("value"), None).await); // 3 + 5 bytes
    let after = usage(&s);
    assert_eq!(after.entries, before.entries + 1);
    assert_eq!(after.bytes, before.bytes + 8);
    ok(s.put("key", b("vv"), PutOptions::new()).await); // overwrite: 3 + 2
    assert_eq!(usage(&s).bytes, before.bytes + 5);
    assert_eq!(usage(&s).entries, before.entries + 1);
    if can_if_absent(&s) {
        // A refused write changes nothing.
        err(
            s.put("key", b("xyz"), PutOptions::new().if_absent()).await,
            ErrorKind::AlreadyExists,
        );
        assert_eq!(usage(&s).bytes, before.bytes + 5);
    }
    assert!(ok(s.delete("key").await));
    assert_eq!(usage(&s), before);
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: String,
    visits: u32,
    tags: Vec<String>,
}

pub async fn json_helpers_round_trip<S: Store>(s: S, _h: Harness) {
    let p = Profile {
        name: "Ada".into(),
        visits: 3,
        tags: vec!["x".into(), "ÿ".into()],
    };
    ok(s.set_json("p", &p, None).await);
    assert_eq!(ok(s.get_json::<Profile>("p").await), Some(p));
    let e = ok(s.put_json("n", &[1, 2, 3], PutOptions::new()).await);
    assert_eq!(e.value, b("[1,2,3]"));
    assert_eq!(ok(s.get_json::<Vec<u8>>("n").await), Some(vec![1, 2, 3]));
    assert_eq!(ok(s.get_json::<u32>("missing").await), None);
    ok(s.set("raw", b("not json"), None).await);
    let e = err(s.get_json::<u32>("raw").await, ErrorKind::Invalid);
    assert!(e.message().contains("raw"), "{e}");
}
