//! Checkers of the histories `cargo xtask test-cluster` records: [`linear`] for the
//! linearizable store (store.kv.raft), [`eventual`] for the eventually consistent one
//! (store.kv.crdt).

use std::fmt;

pub mod eventual;
pub mod linear;

/// A check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Checked and correct.
    Pass,
    /// A violation; the text says which operations.
    Fail(String),
    /// The search ran out of budget: not proven either way.
    Unknown(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass => write!(f, "pass"),
            Verdict::Fail(why) => write!(f, "FAIL: {why}"),
            Verdict::Unknown(why) => write!(f, "unknown: {why}"),
        }
    }
}
