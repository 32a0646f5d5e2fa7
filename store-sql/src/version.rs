//! Versions of SQL rows: `max(old + 1, stamp)` where `stamp` is a process-wide strictly
//! increasing count of system-clock microseconds: about 1.8·10¹⁵ today, below the 2⁵³ every JSON
//! client holds exactly until the year 2255.
//!
//! `old + 1` keeps a live row's versions strictly increasing; the stamp makes a key deleted and
//! written again get a version above any it had, without a sequence object outside the table
//! (the old row is gone, but it was written at an earlier instant). The system clock is used, not
//! the store's `Clock`: versions are not expiry decisions, and a manual clock stands still.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static LAST: AtomicI64 = AtomicI64::new(0);

/// The next version stamp: microseconds since the epoch, strictly above every earlier stamp of
/// this process. More than a million writes a second run ahead of the clock by one a write,
/// which keeps stamps unique and increasing.
pub(crate) fn stamp() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
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

    #[test]
    fn stamps_fit_in_a_json_number() {
        let limit = i64::try_from(store_core::backend::validate::VERSION_LIMIT).unwrap();
        assert!(super::stamp() < limit);
    }
}
