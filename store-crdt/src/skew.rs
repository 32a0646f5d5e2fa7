//! How far this node's clock is from its peers', and whether it may serve.
//!
//! Every probe memberlist sends (about one a second, to one peer at a time) comes back with the
//! peer's wall clock in its ack, and memberlist measures the round trip. When the ack arrives,
//! the peer's clock reads somewhere in `[sent, sent + rtt]`; from then on the peer's clock is
//! projected forward with this node's monotonic clock, which no clock step moves. So at any
//! moment, with `drift = wall - monotonic` for this node and `p = sent - monotonic at arrival`
//! for a peer, this node's clock minus the peer's lies in `[drift - p - rtt, drift - p]`.
//!
//! This node is **ahead** of a peer beyond the bound when even the low end exceeds
//! `max_clock_skew`, **behind** it when even the high end is below `-max_clock_skew`. When most
//! of the cluster (the peers measured in the last minute, and this node, which always agrees
//! with itself) is on one side, this node's clock is the odd one out: it serves nothing (reads
//! judge expiry by it, writes stamp it) until the clock is set right. Each of those tests is a
//! threshold on `drift` alone, so the two thresholds are worked out when a measurement arrives
//! and every request compares one number: a step of the clock is seen by the first request
//! after it, not by the next probes.
//!
//! With one peer, no majority can be told apart (two clocks, each "wrong" to the other): the
//! guard is off. A node started with a wrong clock serves until its first probes came back
//! (two or three seconds); its writes then carry stamps its peers refuse until their clocks
//! reach them (see [`Skew::too_far_ahead`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use store_core::{Error, Result};

/// Measurements older than this are not counted.
const FRESH: Duration = Duration::from_secs(60);

/// One peer's clock as last measured: `p = its reading - our monotonic ms when it arrived`.
#[derive(Debug, Clone, Copy)]
struct Sample {
    p: i64,
    rtt: i64,
    at: Instant,
}

/// The clock guard of one node.
#[derive(Debug)]
pub(crate) struct Skew {
    /// `max_clock_skew` in ms; 0 turns the guard off.
    bound: i64,
    base: Instant,
    samples: Mutex<HashMap<String, Sample>>,
    /// Above this drift, most of the cluster is behind this node by more than the bound.
    ahead_above: AtomicI64,
    /// Below this drift, most of the cluster is ahead of this node by more than the bound.
    behind_below: AtomicI64,
}

impl Skew {
    pub(crate) fn new(bound: Duration) -> Self {
        Self {
            bound: i64::try_from(bound.as_millis()).unwrap_or(i64::MAX),
            base: Instant::now(),
            samples: Mutex::new(HashMap::new()),
            ahead_above: AtomicI64::new(i64::MAX),
            behind_below: AtomicI64::new(i64::MIN),
        }
    }

    /// Whether the guard judges nothing: `max_clock_skew` 0, or the `ignore-clock-skew` defect
    /// of a `fault-injection` build.
    fn off(&self) -> bool {
        self.bound == 0
            || store_core::backend::fault::injected(store_core::backend::fault::IGNORE_CLOCK_SKEW)
    }

    fn monotonic_ms(&self, at: Instant) -> i64 {
        i64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(i64::MAX)
    }

    fn drift(&self, wall_ms: u64) -> i64 {
        i64::try_from(wall_ms).unwrap_or(i64::MAX) - self.monotonic_ms(Instant::now())
    }

    /// A probe of `peer` came back after `rtt` with its clock reading `peer_ms`.
    pub(crate) fn measured(&self, peer: &str, peer_ms: u64, rtt: Duration) {
        if self.bound == 0 {
            return;
        }
        let now = Instant::now();
        let sample = Sample {
            p: i64::try_from(peer_ms).unwrap_or(i64::MAX) - self.monotonic_ms(now),
            rtt: i64::try_from(rtt.as_millis()).unwrap_or(i64::MAX),
            at: now,
        };
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.insert(peer.to_owned(), sample);
        self.recompute(&mut samples);
    }

    /// Drops measurements older than a minute (of members gone quiet) and what they decided.
    pub(crate) fn expire(&self) {
        if self.bound == 0 {
            return;
        }
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        self.recompute(&mut samples);
    }

    fn recompute(&self, samples: &mut HashMap<String, Sample>) {
        samples.retain(|_, s| s.at.elapsed() <= FRESH);
        // Most of the cluster: more than half of the measured peers and this node.
        let members = samples.len() + 1;
        let needed = members / 2 + 1;
        let (ahead, behind) = if samples.len() < needed {
            (i64::MAX, i64::MIN)
        } else {
            // Ahead of peer i beyond the bound: drift - p - rtt > bound.
            let mut ahead: Vec<i64> = samples
                .values()
                .map(|s| s.p.saturating_add(s.rtt).saturating_add(self.bound))
                .collect();
            ahead.sort_unstable();
            // Behind peer i beyond the bound: drift - p < -bound.
            let mut behind: Vec<i64> = samples
                .values()
                .map(|s| s.p.saturating_sub(self.bound))
                .collect();
            behind.sort_unstable_by(|a, b| b.cmp(a));
            (ahead[needed - 1], behind[needed - 1])
        };
        self.ahead_above.store(ahead, Ordering::Release);
        self.behind_below.store(behind, Ordering::Release);
    }

    /// `Ok` when this node may serve at wall-clock time `now_ms`; `Unavailable` saying by how
    /// much its clock is off when most of the cluster disagrees with it.
    pub(crate) fn check(&self, now_ms: u64) -> Result<()> {
        if self.off() {
            return Ok(());
        }
        let drift = self.drift(now_ms);
        let ahead = self.ahead_above.load(Ordering::Acquire);
        if drift > ahead {
            return Err(self.refusal("ahead of", drift - ahead + self.bound));
        }
        let behind = self.behind_below.load(Ordering::Acquire);
        if drift < behind {
            return Err(self.refusal("behind", behind - drift + self.bound));
        }
        Ok(())
    }

    fn refusal(&self, side: &str, by_ms: i64) -> Error {
        Error::unavailable(format!(
            "this node's clock is at least {by_ms} ms {side} most of its peers' clocks, beyond \
             max_clock_skew ({} ms): it serves nothing until its clock is set right",
            self.bound
        ))
    }

    /// Whether a peer's stamp of `stamp_ms` is more than the bound ahead of this node's clock
    /// at `now_ms`: such a register is not merged (nor does it move this node's clock), so a
    /// node whose clock ran far ahead cannot carry every clock with it nor win every later write
    /// for as long as it is ahead. The register is offered again by anti-entropy and taken once
    /// this node's clock comes within the bound of it.
    pub(crate) fn too_far_ahead(&self, stamp_ms: u64, now_ms: u64) -> bool {
        !self.off() && stamp_ms > now_ms.saturating_add(self.bound.unsigned_abs())
    }

    /// `Unavailable` when this node's hybrid clock, whose last reading is `hlc_ms`, runs more
    /// than the bound ahead of its wall clock at `now_ms`: it stamped writes while its clock was
    /// ahead (alone with one peer, or before its first probes came back, or restored from such
    /// a snapshot). A write now would carry such a stamp too, which its peers refuse; it takes
    /// writes again once the wall clock is within the bound of it.
    pub(crate) fn check_stamps(&self, hlc_ms: u64, now_ms: u64) -> Result<()> {
        if self.too_far_ahead(hlc_ms, now_ms) {
            return Err(Error::unavailable(format!(
                "this node's hybrid clock is {} ms ahead of its wall clock, beyond \
                 max_clock_skew ({} ms): it stamped writes while its clock was ahead, and its \
                 peers refuse such stamps; it takes writes again once its wall clock is within \
                 the bound",
                hlc_ms - now_ms,
                self.bound
            )));
        }
        Ok(())
    }

    /// How many peers' clocks are counted now.
    pub(crate) fn measured_peers(&self) -> usize {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    #[test]
    fn the_odd_clock_out_is_refused_either_way_and_agreeing_clocks_are_served() {
        let skew = Skew::new(Duration::from_millis(500));
        let now = wall_now();
        // One peer: nothing can be told apart.
        skew.measured("a", now - 3_600_000, Duration::from_millis(2));
        assert!(skew.check(now).is_ok());
        // Two peers an hour behind: this node is the odd one out.
        skew.measured("b", now - 3_600_000, Duration::from_millis(2));
        let refused = skew.check(now).unwrap_err().to_string();
        assert!(
            refused.contains("ahead of") && refused.contains("max_clock_skew"),
            "{refused}"
        );
        // Its clock set back an hour: served.
        assert!(skew.check(now - 3_600_000).is_ok());
        // Within the bound either side: served; past it behind: refused.
        assert!(skew.check(now - 3_600_000 + 400).is_ok());
        assert!(skew.check(now - 3_600_000 - 400).is_ok());
        let refused = skew.check(now - 3_600_000 - 900).unwrap_err().to_string();
        assert!(refused.contains("behind"), "{refused}");
        // A third peer agreeing with this node: two of four members is not most of them.
        skew.measured("c", now, Duration::from_millis(2));
        assert!(skew.check(now).is_ok());
        // A fourth an hour behind: three of five are.
        skew.measured("d", now - 3_600_000, Duration::from_millis(2));
        assert!(skew.check(now).is_err());
    }

    #[test]
    fn a_long_round_trip_never_makes_a_clock_look_off() {
        let skew = Skew::new(Duration::from_millis(500));
        let now = wall_now();
        // The ack left the peers 900 ms before it arrived, in a round trip of 1 s: their clocks
        // may read up to 100 ms behind ours, within the bound.
        skew.measured("a", now - 900, Duration::from_secs(1));
        skew.measured("b", now - 900, Duration::from_secs(1));
        assert!(skew.check(now).is_ok());
    }

    #[test]
    fn the_guard_is_off_at_zero_and_a_stamp_past_the_bound_is_too_far_ahead() {
        let off = Skew::new(Duration::ZERO);
        off.measured("a", 1, Duration::ZERO);
        off.measured("b", 1, Duration::ZERO);
        assert!(off.check(wall_now()).is_ok());
        assert!(!off.too_far_ahead(u64::MAX, 0));
        assert!(off.check_stamps(u64::MAX, 0).is_ok());
        let on = Skew::new(Duration::from_millis(500));
        assert!(!on.too_far_ahead(1_500, 1_000));
        assert!(on.too_far_ahead(1_501, 1_000));
        assert!(on.check_stamps(1_500, 1_000).is_ok());
        let refused = on.check_stamps(3_601_000, 1_000).unwrap_err().to_string();
        assert!(
            refused.contains("3600000 ms ahead of its wall clock"),
            "{refused}"
        );
    }
}
