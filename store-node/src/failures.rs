//! Storage failures in the node's log: each cause once, however many requests meet it.
//!
//! A full disk or an unreachable database fails every request until it is fixed; a line per
//! request would bury the log (and fill the disk further). [`FailureLog`] logs the first failure
//! of each cause at once, then at most one line per [`WINDOW`] saying how many repeats it held
//! back. A cause is the store, the kind and the message with its per-request details (numbers,
//! quoted keys) blanked, so "store is full: 1022 bytes …, a write of key \"a\" …" and the same
//! refusal for another key are one cause. Repeats held back after the last line are reported
//! only if the cause comes back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use store_core::{Error, ErrorKind};

/// The least time between two lines about the same failure.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
/// Distinct failures remembered; past it the oldest memory is dropped (a cause then logs again).
const REMEMBERED: usize = 1024;

/// Rate-limits log lines about storage failures.
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    seen: Mutex<HashMap<(String, ErrorKind, String), Seen>>,
}

#[derive(Debug)]
struct Seen {
    logged_at: Instant,
    held_back: u64,
}

/// A failure line to write: what failed and how many repeats were held back before it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) held_back: u64,
}

/// Whether an error says the storage failed (rather than the request being refused).
pub(crate) fn is_storage_failure(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Internal
    )
}

impl FailureLog {
    /// Logs `e` from store `id` unless the same failure was logged less than [`WINDOW`] ago.
    pub(crate) fn record(&self, id: &str, e: &Error) {
        if let Some(line) = self.admit(id, e, Instant::now()) {
            tracing::warn!(
                store = id,
                kind = e.kind().as_str(),
                indeterminate = e.is_indeterminate(),
                repeats_held_back = line.held_back,
                "storage failure: {}",
                e.message()
            );
        }
    }

    /// The rate limit alone: `Some` when a line is due at `now`.
    pub(crate) fn admit(&self, id: &str, e: &Error, now: Instant) -> Option<Line> {
        if !is_storage_failure(e) {
            return None;
        }
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (id.to_owned(), e.kind(), cause(e.message()));
        if let Some(s) = seen.get_mut(&key) {
            if now.duration_since(s.logged_at) < WINDOW {
                s.held_back += 1;
                return None;
            }
            let line = Line {
                held_back: s.held_back,
            };
            *s = Seen {
                logged_at: now,
                held_back: 0,
            };
            return Some(line);
        }
        if seen.len() >= REMEMBERED {
            // Forget causes whose window has passed; if more than half are recent, forget them
            // all (each then logs once more). Either way at least REMEMBERED / 2 new causes come
            // between two of these scans.
            seen.retain(|_, s| now.duration_since(s.logged_at) < WINDOW);
            if seen.len() > REMEMBERED / 2 {
                seen.clear();
            }
        }
        seen.insert(
            key,
            Seen {
                logged_at: now,
                held_back: 0,
            },
        );
        Some(Line { held_back: 0 })
    }
}

/// A message with its per-request details blanked: digits become `#`, quoted text `"…"`.
fn cause(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        match (quoted, c) {
            (false, '"') => {
                quoted = true;
                out.push_str("\"…\"");
            }
            (true, '"') => quoted = false,
            (true, _) => {}
            (false, '0'..='9') => {
                if !out.ends_with('#') {
                    out.push('#');
                }
            }
            (false, c) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_one_failure_logs_once_per_window_with_the_count() {
        let log = FailureLog::default();
        let full = Error::unavailable("sqlite write: database or disk is full (write not applied)");
        let t0 = Instant::now();
        assert_eq!(log.admit("app:kv", &full, t0), Some(Line { held_back: 0 }));
        for i in 1..1000 {
            assert_eq!(
                log.admit("app:kv", &full, t0 + Duration::from_millis(i)),
                None
            );
        }
        // Another cause, or another store, is news.
        let gone = Error::unavailable("postgres: database unreachable");
        assert!(log.admit("app:kv", &gone, t0).is_some());
        assert!(log.admit("app:other", &full, t0).is_some());
        // After the window, one line with the repeats it held back.
        assert_eq!(
            log.admit("app:kv", &full, t0 + WINDOW),
            Some(Line { held_back: 999 })
        );
        assert_eq!(log.admit("app:kv", &full, t0 + WINDOW), None);
    }

    #[test]
    fn refusals_of_the_request_are_not_storage_failures() {
        let log = FailureLog::default();
        let t0 = Instant::now();
        for e in [
            Error::invalid("bad key"),
            Error::conflict("version"),
            Error::not_found("absent"),
        ] {
            assert_eq!(log.admit("app:kv", &e, t0), None, "{e}");
        }
        assert!(
            log.admit("app:kv", &Error::write_timeout("lost"), t0)
                .is_some()
        );
        assert!(log.admit("app:kv", &Error::internal("bug"), t0).is_some());
    }

    #[test]
    fn details_of_one_cause_do_not_make_new_causes() {
        let log = FailureLog::default();
        let t0 = Instant::now();
        let full = |bytes: usize, key: &str| {
            Error::unavailable(format!(
                "store is full: {bytes} bytes of keys and values in use (max_bytes 1024), a \
                 write of key \"{key}\" needs more"
            ))
        };
        assert!(log.admit("app:m", &full(1000, "a"), t0).is_some());
        for i in 0..500 {
            assert_eq!(
                log.admit("app:m", &full(1000 + i, &format!("k{i}")), t0),
                None
            );
        }
        assert_eq!(cause("key \"a\" at 12 and 345"), "key \"…\" at # and #");
    }

    #[test]
    fn memory_of_causes_is_bounded() {
        let log = FailureLog::default();
        let t0 = Instant::now();
        for i in 0..3000u64 {
            let e = Error::unavailable("database unreachable");
            let store = format!("store-{i}");
            assert!(
                log.admit(&store, &e, t0 + Duration::from_millis(i))
                    .is_some()
            );
        }
        assert!(
            log.seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .len()
                <= REMEMBERED
        );
    }
}
