//! The [`Store`] trait.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::types::{Entry, ListOptions, Page, PutOptions, StoreInfo, Usage};

/// A named key-value store with TTL, versions and conditional writes.
///
/// Every method validates its arguments first (keys: 1..=1024 UTF-8 bytes without NUL; values:
/// at most the store's `max_value_size`; TTLs: at most 100 years), so a call rejected with
/// `Invalid` or `Unsupported` changes nothing. A key whose deadline has been reached (`now >=
/// deadline`, read from the store's [`Clock`](crate::Clock)) is absent for every method, whether
/// or not cleanup has run.
///
/// Each `# Behavior` bullet below names the `store-testkit` conformance case that checks it.
#[async_trait]
pub trait Store: Send + Sync + Debug + 'static {
    /// The live value of `key`.
    ///
    /// # Behavior
    /// - `get_absent_key_is_none`: an absent key gives `None`, as do `has` (false) and `entry`.
    /// - `get_live_key_returns_value`: a live key gives the value last written.
    /// - `expired_key_is_absent_to_every_read`: a key past its deadline gives `None`.
    /// - `expiry_is_exact_at_the_deadline`: live one millisecond before its deadline, absent at it.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;

    /// The live entry of `key`: value, version and expiry.
    ///
    /// # Behavior
    /// - `entry_reports_version_and_expiry`: `version` is the one the last write returned (0 in
    ///   an unversioned store) and `expires_at` is the write's time plus its TTL.
    /// - `sub_millisecond_ttl_rounds_up_to_one_ms`: a TTL under 1 ms expires after exactly 1 ms.
    /// - `zero_ttl_means_no_expiry`: a zero TTL writes a key that never expires.
    async fn entry(&self, key: &str) -> Result<Option<Entry>>;

    /// Whether `key` is live.
    ///
    /// # Behavior
    /// - `has_follows_liveness`: true for a live key; false for absent, deleted and expired keys.
    async fn has(&self, key: &str) -> Result<bool>;

    /// Writes `value` unconditionally, replacing the value **and** the expiry.
    ///
    /// # Behavior
    /// - `set_replaces_value`: the new value replaces the old one.
    /// - `set_without_ttl_clears_old_expiry`: a set with no TTL makes the key permanent.
    /// - `set_with_ttl_replaces_old_expiry`: the new TTL counts from this write.
    /// - `empty_key_is_invalid`: an empty key is `Invalid`.
    /// - `key_length_limit_is_1024_bytes`: 1024 bytes pass, 1025 are `Invalid`.
    /// - `key_with_nul_is_invalid`: a key containing NUL is `Invalid`.
    /// - `multibyte_keys_round_trip`: non-ASCII UTF-8 keys are stored as given.
    /// - `value_size_limit_is_enforced`: a value at the limit passes, one byte more is `Invalid`.
    /// - `empty_value_round_trips`: a zero-length value is a value, not an absence.
    /// - `ttl_over_100_years_is_invalid`: the longest TTL is 100 years.
    /// - `rejected_calls_change_nothing`: every rejected call leaves the store as it was.
    /// - `special_characters_round_trip`: quotes, backslashes, `%`, `_`, emoji, binary values.
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()>;

    /// Writes `value` if `options.condition` holds and returns the written entry.
    ///
    /// # Behavior
    /// - `put_always_returns_the_written_entry`: the answer carries key, value, the new version
    ///   and the expiry.
    /// - `put_expiry_comes_from_its_own_ttl`: the written expiry comes from this call's TTL alone.
    /// - `if_absent_on_absent_key_writes`: `IfAbsent` creates an absent key.
    /// - `if_absent_on_live_key_is_already_exists`: `IfAbsent` on a live key is `AlreadyExists`
    ///   and writes nothing.
    /// - `if_absent_on_expired_key_writes`: an expired key counts as absent.
    /// - `if_version_on_absent_key_is_not_found`: `IfVersion` on an absent key is `NotFound`.
    /// - `if_version_on_expired_key_is_not_found`: an expired key counts as absent.
    /// - `if_version_mismatch_is_conflict`: a different version is `Conflict` (retryable) and
    ///   writes nothing.
    /// - `if_version_match_writes_a_newer_version`: the right version writes and answers a
    ///   greater one.
    /// - `if_version_zero_is_invalid`: `IfVersion(0)` is `Invalid`.
    /// - `versions_strictly_increase_per_key`: every write of a key, including after a delete,
    ///   gives a version greater than any the key had.
    /// - `versions_fit_in_53_bits`: every version is below 2⁵³
    ///   ([`VERSION_LIMIT`](crate::backend::validate::VERSION_LIMIT)), so a JSON client holds it
    ///   exactly.
    /// - `unsupported_conditions_write_nothing`: a condition the store cannot honour is
    ///   `Unsupported` and writes nothing.
    /// - `concurrent_compare_and_swap_loses_no_increment`: 8 tasks × 50 CAS increments of one
    ///   counter end at 400.
    /// - `concurrent_if_absent_has_one_winner`: of 16 concurrent `IfAbsent` puts of one key
    ///   exactly one succeeds.
    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Entry>;

    /// Removes `key`; true if a live key was removed.
    ///
    /// # Behavior
    /// - `delete_absent_key_is_false`: nothing to remove gives false.
    /// - `delete_live_key_removes_it`: a live key gives true and is gone afterwards.
    /// - `delete_expired_key_is_false`: an expired key is already absent.
    async fn delete(&self, key: &str) -> Result<bool>;

    /// One page of live keys starting with `prefix`, strictly greater than `after`, in byte
    /// order of their UTF-8 encoding.
    ///
    /// # Behavior
    /// - `list_of_empty_store_is_empty`: no keys, no cursor, no more.
    /// - `list_is_in_byte_order`: keys come in UTF-8 byte order, non-ASCII included.
    /// - `list_filters_by_prefix`: only keys starting with the prefix.
    /// - `list_prefix_is_literal`: `%`, `_` and `\` in a prefix match themselves.
    /// - `list_starts_after_the_given_key`: only keys strictly greater than `after`.
    /// - `list_default_limit_is_100`: no limit (or 0) means 100.
    /// - `list_limit_is_clamped_at_1000`: a larger limit means 1000.
    /// - `list_cursor_is_last_key_and_has_more_is_exact`: the cursor is the page's last key and
    ///   `has_more` is true exactly when more keys follow.
    /// - `list_pages_through_2500_keys`: following cursors visits every key once.
    /// - `list_excludes_expired_keys`: expired keys are never listed.
    /// - `list_entries_carry_version_and_expiry`: listed entries equal what `entry` returns.
    /// - `list_options_are_validated`: a prefix or `after` with NUL or over 1024 bytes is
    ///   `Invalid`.
    async fn list(&self, options: ListOptions) -> Result<Page>;

    /// What this store is and can do.
    ///
    /// # Behavior
    /// - `info_is_coherent`: `IfVersion` support implies conditional puts, and unversioned
    ///   stores report version 0.
    fn info(&self) -> StoreInfo;

    /// What the store holds now, for stores that keep their data in this process's memory;
    /// `None` (the default) for the others. Cheap: no I/O, no scan.
    ///
    /// # Behavior
    /// - `usage_counts_keys_and_values`: entries and bytes (key plus value lengths) follow every
    ///   write, overwrite and delete exactly.
    fn usage(&self) -> Option<Usage> {
        None
    }
}

/// A store shared behind a pointer, as registries hand them out.
pub type SharedStore = Arc<dyn Store>;

#[async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        (**self).get(key).await
    }

    async fn entry(&self, key: &str) -> Result<Option<Entry>> {
        (**self).entry(key).await
    }

    async fn has(&self, key: &str) -> Result<bool> {
        (**self).has(key).await
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        (**self).set(key, value, ttl).await
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Entry> {
        (**self).put(key, value, options).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        (**self).delete(key).await
    }

    async fn list(&self, options: ListOptions) -> Result<Page> {
        (**self).list(options).await
    }

    fn info(&self) -> StoreInfo {
        (**self).info()
    }

    fn usage(&self) -> Option<Usage> {
        (**self).usage()
    }
}
