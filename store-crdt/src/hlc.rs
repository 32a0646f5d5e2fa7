//! The hybrid logical clock that orders every write: `(physical ms, logical counter, node id)`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Bits of a version that hold the logical counter; the physical milliseconds sit above them.
/// 42 bits of milliseconds reach the year 2109 and keep a version below 2⁵³.
pub const LOGICAL_BITS: u32 = 11;
/// The largest logical counter; one more moves the clock a millisecond ahead.
pub const LOGICAL_MAX: u16 = (1 << LOGICAL_BITS) - 1;

/// One hybrid logical clock reading, the marker of a register: ordered by physical
/// milliseconds, then the logical counter, then the writing node's id (which breaks ties between
/// nodes, so two writes never compare equal unless they are the same write).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc {
    /// Physical time, Unix epoch milliseconds.
    pub ms: u64,
    /// Counter of events within the same millisecond, `0..=LOGICAL_MAX`.
    pub logical: u16,
    /// The writing node's id (a hash of its name).
    pub node: u64,
}

impl Hlc {
    /// The reading as a store version: `ms << 11 | logical`. Versions of one key only grow,
    /// because every write of it carries a later reading.
    pub fn version(&self) -> u64 {
        (self.ms << LOGICAL_BITS) | u64::from(self.logical)
    }
}

/// A node's clock: each local event reads a value greater than every reading it produced or
/// observed before, whatever the wall clock does.
#[derive(Debug)]
pub struct HlcClock {
    node: u64,
    /// The last reading as a version (`ms << 11 | logical`), updated lock-free.
    last: AtomicU64,
}

impl HlcClock {
    /// A clock for the node with id `node`, starting at zero.
    pub fn new(node: u64) -> Self {
        Self {
            node,
            last: AtomicU64::new(0),
        }
    }

    /// The node id stamped into every reading.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// A reading for a local event at wall-clock time `wall_ms`: the wall clock when it is
    /// ahead of everything seen, else the last reading plus one logical tick.
    pub fn tick(&self, wall_ms: u64) -> Hlc {
        let wall = wall_ms.min(MAX_MS) << LOGICAL_BITS;
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            // One more logical tick overflows into the milliseconds by itself.
            let next = wall.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Hlc {
                        ms: next >> LOGICAL_BITS,
                        logical: (next & u64::from(LOGICAL_MAX)) as u16,
                        node: self.node,
                    };
                }
                Err(seen) => last = seen,
            }
        }
    }

    /// The physical milliseconds of the last reading produced or observed.
    pub fn last_ms(&self) -> u64 {
        self.last.load(Ordering::Acquire) >> LOGICAL_BITS
    }

    /// Takes a reading from elsewhere into account: every later [`tick`](Self::tick) is greater.
    pub fn observe(&self, seen: &Hlc) {
        self.last
            .fetch_max(seen.version().min(MAX_MS << LOGICAL_BITS), Ordering::AcqRel);
    }
}

/// Milliseconds a reading holds at most (42 bits: the year 2109), so a version stays below 2⁵³.
const MAX_MS: u64 = (1 << 42) - 1;

/// A stable 64-bit id for a node name (FNV-1a, then mixed), the same in every build.
pub fn node_id(name: &str) -> u64 {
    crate::state::hash_bytes(&[name.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_grow_within_one_millisecond_and_past_the_logical_limit() {
        let clock = HlcClock::new(7);
        let mut last = clock.tick(1_000);
        for _ in 0..5_000 {
            let next = clock.tick(1_000);
            assert!(next > last && next.version() > last.version());
            last = next;
        }
        assert!(
            last.ms > 1_000,
            "the counter overflowed into the milliseconds"
        );
    }

    #[test]
    fn a_version_stays_below_two_to_the_53() {
        let clock = HlcClock::new(1);
        // 2100-01-01.
        let reading = clock.tick(4_102_444_800_000);
        assert!(reading.version() < 1 << 53);
    }
}
