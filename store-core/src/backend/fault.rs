//! Defects injected on purpose (feature `fault-injection`, debug builds only): each one breaks
//! a promise of a cluster store the way a real bug would, so `cargo xtask test-cluster
//! --negative-control NAME` can show that its checks catch that kind of bug. A node turns one
//! on at start ([`inject`]); the store code asks [`injected`] where the defect lives. Without
//! the feature, [`injected`] is `false` and the compiler drops the defective paths.
//!
//! ```
//! use store_core::backend::fault;
//!
//! // Nothing is injected unless a node asked for it.
//! assert!(!fault::injected(fault::REUSE_VERSION));
//! assert!(fault::describe("no-such-defect").is_none());
//! ```

#[cfg(all(feature = "fault-injection", not(debug_assertions)))]
compile_error!(
    "the `fault-injection` feature breaks the stores on purpose: it is for debug builds only, \
     never a release build"
);

/// store.kv.raft: the leader answers an unconditional write as soon as its own log holds the
/// entry, without waiting for a quorum, with the entry's index as the version.
pub const ACK_BEFORE_QUORUM: &str = "ack-before-quorum";
/// store.kv.raft: a write that may still be applied (no quorum in time, the leader lost) is
/// answered as a plain failure ("not applied"), and the leader gives a write 300 ms at most.
pub const FAIL_MAYBE_APPLIED: &str = "fail-maybe-applied";
/// store.kv.raft: one write in eight of a key that exists keeps the key's old version.
pub const REUSE_VERSION: &str = "reuse-version";
/// store.kv.raft: a node that believes it leads serves a linearizable read from its own state
/// without asking a quorum (a lease it does not hold), so a deposed leader serves stale reads.
pub const STALE_LEASE_READ: &str = "stale-lease-read";
/// store.kv.crdt: a node ignores one in four registers that peers send it (chosen by key and
/// write, so every resend of that write is ignored too).
pub const DROP_CRDT_MERGE: &str = "drop-crdt-merge";
/// store.kv.crdt: no clock guard: a node serves whatever its clock says, and merges (and moves
/// its hybrid clock to) registers stamped however far ahead.
pub const IGNORE_CLOCK_SKEW: &str = "ignore-clock-skew";

/// Every defect, with what it does.
pub const DEFECTS: [(&str, &str); 6] = [
    (
        ACK_BEFORE_QUORUM,
        "store.kv.raft acknowledges a write once the leader's log holds it, before a quorum does",
    ),
    (
        FAIL_MAYBE_APPLIED,
        "store.kv.raft answers a plain failure for a write that may still be applied",
    ),
    (
        REUSE_VERSION,
        "store.kv.raft gives one write in eight of an existing key the key's old version",
    ),
    (
        STALE_LEASE_READ,
        "store.kv.raft serves linearizable reads on a node that believes it leads, without a quorum",
    ),
    (
        DROP_CRDT_MERGE,
        "store.kv.crdt ignores one in four registers its peers send",
    ),
    (
        IGNORE_CLOCK_SKEW,
        "store.kv.crdt serves on any clock and merges stamps however far ahead",
    ),
];

/// What the defect `name` does, if it is one.
pub fn describe(name: &str) -> Option<&'static str> {
    DEFECTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, what)| *what)
}

#[cfg(feature = "fault-injection")]
static ACTIVE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Turns the defect `name` on for this process (once: a second call fails). Fails for a name
/// that is not one of [`DEFECTS`], or in a build without the `fault-injection` feature.
pub fn inject(name: &str) -> Result<(), String> {
    let Some(&(known, _)) = DEFECTS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = DEFECTS.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "unknown defect {name:?}: expected one of {}",
            names.join(", ")
        ));
    };
    #[cfg(feature = "fault-injection")]
    {
        ACTIVE
            .set(known)
            .map_err(|_| format!("a defect is injected already; {known:?} not added"))
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        Err(format!(
            "cannot inject {known:?}: this build has no `fault-injection` feature"
        ))
    }
}

/// Whether the defect `name` is on in this process.
#[inline]
pub fn injected(name: &str) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        ACTIVE.get().is_some_and(|active| *active == name)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = name;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_defect_is_refused_with_the_known_names() {
        let e = inject("ack-before-lunch").unwrap_err();
        assert!(
            e.contains("ack-before-lunch") && e.contains(REUSE_VERSION),
            "{e}"
        );
        assert!(!injected("ack-before-lunch"));
    }

    #[cfg(not(feature = "fault-injection"))]
    #[test]
    fn without_the_feature_nothing_can_be_injected() {
        let e = inject(REUSE_VERSION).unwrap_err();
        assert!(e.contains("fault-injection"), "{e}");
        assert!(!injected(REUSE_VERSION));
    }

    #[cfg(feature = "fault-injection")]
    #[test]
    fn an_injected_defect_is_on_and_only_it() {
        inject(DROP_CRDT_MERGE).unwrap();
        assert!(injected(DROP_CRDT_MERGE));
        assert!(!injected(REUSE_VERSION));
        assert!(inject(REUSE_VERSION).is_err());
    }
}
