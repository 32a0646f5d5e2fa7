//! Versions of SQL rows: `max(old + 1, stamp)` where `stamp` is a process-wide strictly
//! increasing count of system-clock nanoseconds.
//!
//! `old + 1` keeps a live row's versions strictly increasing; the stamp makes a key deleted and
//! written again get a version above any it had, without a sequence object outside SPEC's schema
//! (the old row is gone, but it was written at an earlier instant). The system clock is used, not
//! the store's `Clock`: versions are not expiry decisions, and a manual clock stands still.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static LAST: AtomicI64 = AtomicI64::new(0);

/// The next version stamp: nanoseconds since the epoch, strictly above every earlier stamp of
/// this process.
pub(crate) fn stamp() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let previous = LAST
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
            Some(now.max(last.saturating_add(1)))
        })
        .unwrap_or(0); // the closure always returns Some
    now.max(previous.saturating_add(1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn stamps_strictly_increase() {
        let mut last = 0;
        for _ in 0..10_000 {
            let s = super::stamp();
            assert!(s > last);
            last = s;
        }
    }
}
