//! Time as every expiry decision sees it: injectable, millisecond resolution.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time. Every expiry decision of every store reads one, so tests can
/// move time by hand instead of sleeping.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// The current time as Unix epoch milliseconds (0 for times before the epoch).
    fn now_ms(&self) -> u64 {
        to_millis(self.now())
    }
}

/// A shareable clock, as stores hold it.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The default clock of every store: [`SystemClock`].
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that moves only when told to. Clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use store_core::{Clock, ManualClock};
///
/// let clock = ManualClock::at_millis(1_000);
/// clock.advance(Duration::from_millis(500));
/// assert_eq!(clock.now_ms(), 1_500);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock reading `ms` Unix epoch milliseconds.
    pub fn at_millis(ms: u64) -> Self {
        Self {
            ms: Arc::new(AtomicU64::new(ms)),
        }
    }

    /// A manual clock that starts at the system clock's current time.
    pub fn starting_now() -> Self {
        Self::at_millis(to_millis(SystemTime::now()))
    }

    /// Moves time forward by `by` (rounded down to whole milliseconds).
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(ms))
            });
    }

    /// Sets the time to `ms` Unix epoch milliseconds (it may move backwards).
    pub fn set_millis(&self, ms: u64) {
        self.ms.store(ms, Ordering::SeqCst);
    }

    /// This clock as a [`SharedClock`] that a store can hold; it keeps following this clock.
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        from_millis(self.ms.load(Ordering::SeqCst))
    }

    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }
}

/// Unix epoch milliseconds of `t` (0 before the epoch, saturating far in the future).
pub fn to_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The instant `ms` Unix epoch milliseconds denote.
pub fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::at_millis(10);
        let b = a.clone();
        let shared = a.shared();
        b.advance(Duration::from_secs(1));
        assert_eq!(a.now_ms(), 1_010);
        assert_eq!(shared.now_ms(), 1_010);
        assert_eq!(to_millis(shared.now()), 1_010);
    }

    #[test]
    fn millis_round_trip() {
        let t = from_millis(1_767_225_600_123);
        assert_eq!(to_millis(t), 1_767_225_600_123);
        assert_eq!(to_millis(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
