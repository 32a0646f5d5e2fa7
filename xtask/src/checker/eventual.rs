//! Checks a history of an eventually consistent store (store.kv.crdt) after the faults healed
//! and the nodes had a quiet period: every node answers the same for every key; every
//! acknowledged write is the final value or was superseded by a later write (or a delete, or
//! its TTL); no acknowledged delete is undone; no key is visible past its deadline; nothing is
//! read that nobody wrote; no write is stamped, nor read with, a version further ahead of true
//! time than the nodes' `max_clock_skew` (a clock far ahead must not carry the others with it).
//!
//! Versions are hybrid-logical-clock readings: a write's version is comparable with the final
//! one. A delete reports none, so "later than the delete" is judged in real time: a value whose
//! every write finished before an acknowledged delete began must not be the final value.

use std::collections::{BTreeMap, HashMap};

use super::Verdict;

/// The bits of a version below its milliseconds (store.kv.crdt's hybrid logical clock: `ms << 11
/// | logical`).
const LOGICAL_BITS: u32 = 11;

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `PUT` of `value`, with an optional TTL.
    Write {
        /// The value written.
        value: String,
    },
    /// `DELETE`.
    Delete,
    /// `GET`.
    Read,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A write applied on its node: its version, and its deadline (Unix ms) if it has a TTL.
    Written {
        /// The HLC version.
        version: u64,
        /// When it expires, if ever.
        expires_at: Option<u64>,
    },
    /// A delete applied.
    Deleted,
    /// A read's answer.
    Read(Option<(String, u64)>),
    /// Known not applied.
    Fail,
    /// May or may not have been applied.
    Unknown,
}

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Its index in the history.
    pub id: usize,
    /// The node it was sent to.
    pub node: usize,
    /// The key.
    pub key: String,
    /// What was asked.
    pub call: Call,
    /// When it was sent (ns since the start of the run).
    pub invoke: u64,
    /// When its answer arrived.
    pub complete: u64,
    /// What came back.
    pub outcome: Outcome,
    /// The wall clock (Unix ms) just before sending and just after the answer.
    pub clock_ms: (u64, u64),
}

/// One node's answer for one key after the quiet period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalRead {
    /// The node asked.
    pub node: usize,
    /// The key.
    pub key: String,
    /// Its value and version, or absent.
    pub value: Option<(String, u64)>,
    /// The wall clock (Unix ms) when it was read.
    pub at_ms: u64,
}

/// The verdicts of the eventual checks, one per property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdicts {
    /// Every node answers the same for every key.
    pub convergence: Verdict,
    /// Every acknowledged write is final or superseded.
    pub no_lost_write: Verdict,
    /// No acknowledged delete is undone.
    pub no_resurrection: Verdict,
    /// No key is visible past its deadline.
    pub ttl: Verdict,
    /// Every value read was written by someone.
    pub no_phantom: Verdict,
    /// No version written or read is further ahead of true time than the bound.
    pub stamps: Verdict,
}

fn first_failure(mut problems: Vec<String>) -> Verdict {
    if problems.is_empty() {
        return Verdict::Pass;
    }
    let n = problems.len();
    problems.truncate(5);
    let more = if n > 5 {
        format!(" (and {} more)", n - 5)
    } else {
        String::new()
    };
    Verdict::Fail(format!("{}{more}", problems.join("; ")))
}

/// Runs every check on `ops` and the final reads `finals` (one per node and key); `ahead_ms`
/// is how far ahead of true time a version's milliseconds may be (the nodes' `max_clock_skew`
/// and a margin).
pub fn check(ops: &[Op], finals: &[FinalRead], ahead_ms: u64) -> Verdicts {
    let mut stamped = Vec::new();
    for op in ops {
        let version = match &op.outcome {
            Outcome::Written { version, .. } | Outcome::Read(Some((_, version))) => *version,
            _ => continue,
        };
        let ms = version >> LOGICAL_BITS;
        let limit = op.clock_ms.1.saturating_add(ahead_ms);
        if ms > limit {
            stamped.push(format!(
                "operation #{} on node {} (key {:?}) {} version {version}, stamped {} ms ahead \
                 of true time when it was answered, beyond the {ahead_ms} ms allowed",
                op.id,
                op.node,
                op.key,
                if matches!(op.outcome, Outcome::Read(_)) {
                    "read"
                } else {
                    "wrote"
                },
                ms - op.clock_ms.1
            ));
        }
    }
    let mut by_key: BTreeMap<&str, Vec<&FinalRead>> = BTreeMap::new();
    for f in finals {
        by_key.entry(f.key.as_str()).or_default().push(f);
    }
    let mut ops_by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        ops_by_key.entry(op.key.as_str()).or_default().push(op);
    }

    let mut diverged = Vec::new();
    let mut lost = Vec::new();
    let mut resurrected = Vec::new();
    let mut expired = Vec::new();
    let mut phantom = Vec::new();
    for (key, reads) in &by_key {
        let Some(first) = reads.first() else {
            continue;
        };
        if let Some(other) = reads.iter().find(|r| r.value != first.value) {
            diverged.push(format!(
                "key {key:?}: node {} has {:?}, node {} has {:?}",
                first.node, first.value, other.node, other.value
            ));
            continue;
        }
        let last = &first.value;
        let ops = ops_by_key.get(key).cloned().unwrap_or_default();
        // Everything below looks up these summaries of the key's history, never rescans it:
        // a ten-minute history has tens of thousands of operations per key.
        // Writes that may have applied, by value (each write has its own value).
        let mut writes: HashMap<&str, Vec<&Op>> = HashMap::new();
        // The latest completion of an applied delete (u64::MAX if one may still apply), the
        // highest acknowledged write version, the latest invocation of an unknown write.
        let (mut delete_done, mut top_version, mut unknown_write) = (None, None, None);
        for op in &ops {
            match (&op.call, &op.outcome) {
                (Call::Write { .. }, Outcome::Fail) => {}
                (Call::Write { value }, outcome) => {
                    writes.entry(value.as_str()).or_default().push(op);
                    match outcome {
                        Outcome::Written { version, .. } => {
                            top_version = top_version.max(Some(*version));
                        }
                        Outcome::Unknown => unknown_write = unknown_write.max(Some(op.invoke)),
                        _ => {}
                    }
                }
                (Call::Delete, Outcome::Deleted) => {
                    delete_done = delete_done.max(Some(op.complete))
                }
                (Call::Delete, Outcome::Unknown) => delete_done = Some(u64::MAX),
                _ => {}
            }
        }
        // The final value, and everything read during the run, was written by someone.
        let mut seen: Vec<(&str, String)> = Vec::new();
        if let Some((v, _)) = last {
            seen.push((
                v.as_str(),
                format!("the final value on node {}", first.node),
            ));
        }
        for op in &ops {
            if let Outcome::Read(Some((v, _))) = &op.outcome {
                seen.push((v.as_str(), format!("operation #{}", op.id)));
            }
        }
        for (v, by) in &seen {
            if !writes.contains_key(v) {
                phantom.push(format!(
                    "key {key:?}: {by} read {v:?}, which no operation wrote"
                ));
            }
        }
        // When the last write of the final value may have happened: its latest completion, or
        // never known (u64::MAX) if it is unknown.
        let final_written = last.as_ref().and_then(|(v, _)| {
            writes.get(v.as_str()).and_then(|ws| {
                ws.iter()
                    .map(|w| {
                        if w.outcome == Outcome::Unknown {
                            u64::MAX
                        } else {
                            w.complete
                        }
                    })
                    .max()
            })
        });
        for op in &ops {
            match (&op.call, &op.outcome) {
                (
                    Call::Write { value },
                    Outcome::Written {
                        version,
                        expires_at,
                    },
                ) => {
                    let expired_by_now = expires_at.is_some_and(|d| d <= first.at_ms);
                    match last {
                        Some((_, fv)) if version > fv => lost.push(format!(
                            "key {key:?}: operation #{} wrote {value:?} at version {version}, \
                             yet the final version is the older {fv}",
                            op.id
                        )),
                        None if !expired_by_now => {
                            // Absent: a delete not entirely before this write, or a later write
                            // (which may itself have expired or been deleted), superseded it.
                            let superseded = delete_done.is_some_and(|d| d >= op.invoke)
                                || top_version.is_some_and(|t| t > *version)
                                || unknown_write.is_some_and(|u| u >= op.invoke);
                            if !superseded {
                                lost.push(format!(
                                    "key {key:?}: operation #{} wrote {value:?} (version \
                                     {version}), no delete came after it, and the key is absent",
                                    op.id
                                ));
                            }
                        }
                        _ => {}
                    }
                }
                (Call::Delete, Outcome::Deleted) => {
                    if let Some((v, _)) = last {
                        // The final value must come from a write not finished before the delete.
                        if final_written.is_none_or(|w| w < op.invoke) {
                            resurrected.push(format!(
                                "key {key:?}: {v:?} is back although every write of it finished \
                                 before delete #{} began",
                                op.id
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some((v, fv)) = last {
            let deadline = ops.iter().find_map(|o| match (&o.call, &o.outcome) {
                (
                    Call::Write { value },
                    Outcome::Written {
                        version,
                        expires_at,
                    },
                ) if value == v && version == fv => Some(*expires_at),
                _ => None,
            });
            if let Some(Some(d)) = deadline {
                for r in reads.iter().filter(|r| r.at_ms >= d) {
                    expired.push(format!(
                        "key {key:?}: node {} shows {v:?} at {} ms, past its deadline {d} ms",
                        r.node, r.at_ms
                    ));
                }
            }
        }
    }
    Verdicts {
        convergence: first_failure(diverged),
        no_lost_write: first_failure(lost),
        no_resurrection: first_failure(resurrected),
        ttl: first_failure(expired),
        no_phantom: first_failure(phantom),
        stamps: first_failure(stamped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: usize, node: usize, call: Call, invoke: u64, complete: u64, outcome: Outcome) -> Op {
        Op {
            id,
            node,
            key: "k".into(),
            call,
            invoke,
            complete,
            outcome,
            clock_ms: (0, 0),
        }
    }

    fn w(v: &str) -> Call {
        Call::Write { value: v.into() }
    }

    fn written(version: u64) -> Outcome {
        Outcome::Written {
            version,
            expires_at: None,
        }
    }

    fn finals(value: Option<(&str, u64)>, nodes: usize) -> Vec<FinalRead> {
        (0..nodes)
            .map(|node| FinalRead {
                node,
                key: "k".into(),
                value: value.map(|(v, n)| (v.to_owned(), n)),
                at_ms: 1_000,
            })
            .collect()
    }

    fn all_pass(v: &Verdicts) -> bool {
        [
            &v.convergence,
            &v.no_lost_write,
            &v.no_resurrection,
            &v.ttl,
            &v.no_phantom,
            &v.stamps,
        ]
        .iter()
        .all(|v| **v == Verdict::Pass)
    }

    #[test]
    fn concurrent_writes_with_one_winner_everywhere_pass() {
        let ops = vec![
            op(0, 0, w("a"), 0, 10, written(100)),
            op(1, 1, w("b"), 5, 12, written(101)),
            op(
                2,
                2,
                Call::Read,
                20,
                21,
                Outcome::Read(Some(("a".into(), 100))),
            ),
        ];
        let v = check(&ops, &finals(Some(("b", 101)), 3), 600);
        assert!(all_pass(&v), "{v:?}");
    }

    #[test]
    fn nodes_that_disagree_fail_convergence() {
        let ops = vec![op(0, 0, w("a"), 0, 10, written(100))];
        let mut f = finals(Some(("a", 100)), 3);
        f[2].value = None;
        let v = check(&ops, &f, 600);
        assert!(
            matches!(v.convergence, Verdict::Fail(ref why) if why.contains("node 2")),
            "{v:?}"
        );
    }

    #[test]
    fn a_newer_acknowledged_write_under_an_older_final_value_is_lost() {
        let ops = vec![
            op(0, 0, w("a"), 0, 10, written(100)),
            op(1, 1, w("b"), 20, 30, written(200)),
        ];
        let v = check(&ops, &finals(Some(("a", 100)), 3), 600);
        assert!(
            matches!(v.no_lost_write, Verdict::Fail(ref why) if why.contains("#1")),
            "{v:?}"
        );
    }

    #[test]
    fn a_write_gone_without_a_later_delete_is_lost() {
        let ops = vec![
            op(0, 0, Call::Delete, 0, 5, Outcome::Deleted),
            op(1, 1, w("a"), 10, 20, written(100)),
        ];
        let v = check(&ops, &finals(None, 2), 600);
        assert!(
            matches!(v.no_lost_write, Verdict::Fail(ref why) if why.contains("#1")),
            "{v:?}"
        );
    }

    #[test]
    fn a_write_superseded_by_a_later_write_that_expired_is_not_lost() {
        let ops = vec![
            op(0, 0, w("a"), 0, 10, written(100)),
            op(
                1,
                1,
                w("b"),
                20,
                30,
                Outcome::Written {
                    version: 200,
                    expires_at: Some(500),
                },
            ),
        ];
        let v = check(&ops, &finals(None, 2), 600);
        assert!(all_pass(&v), "{v:?}");
    }

    #[test]
    fn a_value_back_after_a_later_delete_is_a_resurrection() {
        let ops = vec![
            op(0, 0, w("a"), 0, 10, written(100)),
            op(1, 1, Call::Delete, 20, 30, Outcome::Deleted),
        ];
        let v = check(&ops, &finals(Some(("a", 100)), 3), 600);
        assert!(
            matches!(v.no_resurrection, Verdict::Fail(ref why) if why.contains("#1")),
            "{v:?}"
        );
        // A delete concurrent with the write may lose to it.
        let ops = vec![
            op(0, 0, w("a"), 0, 25, written(100)),
            op(1, 1, Call::Delete, 20, 30, Outcome::Deleted),
        ];
        assert!(all_pass(&check(&ops, &finals(Some(("a", 100)), 3), 600)));
    }

    #[test]
    fn a_key_visible_past_its_deadline_fails_and_an_expired_absent_key_passes() {
        let ops = vec![op(
            0,
            0,
            w("a"),
            0,
            10,
            Outcome::Written {
                version: 100,
                expires_at: Some(900),
            },
        )];
        let v = check(&ops, &finals(Some(("a", 100)), 2), 600);
        assert!(
            matches!(v.ttl, Verdict::Fail(ref why) if why.contains("deadline 900")),
            "{v:?}"
        );
        assert!(all_pass(&check(&ops, &finals(None, 2), 600)));
    }

    #[test]
    fn a_value_nobody_wrote_is_a_phantom() {
        let ops = vec![
            op(0, 0, w("a"), 0, 10, written(100)),
            op(
                1,
                1,
                Call::Read,
                11,
                12,
                Outcome::Read(Some(("zzz".into(), 5))),
            ),
        ];
        let v = check(&ops, &finals(Some(("a", 100)), 2), 600);
        assert!(
            matches!(v.no_phantom, Verdict::Fail(ref why) if why.contains("#1")),
            "{v:?}"
        );
    }

    #[test]
    fn a_version_stamped_far_ahead_of_true_time_fails_the_stamps() {
        let hour_ms = 3_600_000u64;
        let true_ms = 1_800_000_000_000u64;
        let at = |id, node, call, outcome, ms: u64| Op {
            clock_ms: (ms - 5, ms),
            ..op(id, node, call, 0, 10, outcome)
        };
        let near = (true_ms + 400) << LOGICAL_BITS;
        let far = (true_ms + hour_ms) << LOGICAL_BITS;
        let within = vec![at(0, 0, w("a"), written(near), true_ms)];
        assert_eq!(check(&within, &[], 600).stamps, Verdict::Pass);
        let ahead = vec![
            at(0, 0, w("a"), written(far), true_ms),
            at(
                1,
                1,
                Call::Read,
                Outcome::Read(Some(("a".into(), far))),
                true_ms + 10,
            ),
        ];
        let v = check(&ahead, &[], 600);
        let Verdict::Fail(why) = v.stamps else {
            panic!("{v:?}")
        };
        assert!(
            why.contains("operation #0 on node 0 (key \"k\") wrote")
                && why.contains("3600000 ms ahead")
                && why.contains("operation #1 on node 1 (key \"k\") read"),
            "{why}"
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use super::all_pass;

        /// A correct last-writer-wins register: operation `i` takes effect at instant 1000·(i+1)
        /// inside a random interval around it, a write's version is the order it took effect
        /// in, an unknown write took effect or not; every node ends with the model's state.
        fn run(seed: Vec<(u8, u8, u16, u16)>) -> (Vec<Op>, Vec<FinalRead>) {
            let mut value: Option<(String, u64)> = None;
            let mut version = 0u64;
            let mut ops = Vec::new();
            for (i, (node, kind, before, after)) in seed.into_iter().enumerate() {
                let at = 1_000 * i as u64 + 1_000;
                let invoke = at - u64::from(before % 900);
                let complete = at + u64::from(after % 5_000);
                let unknown = kind % 7 == 6;
                let (call, outcome) = match kind % 3 {
                    0 => (Call::Read, Outcome::Read(value.clone())),
                    1 => {
                        let v = format!("v{i}");
                        // An unknown write took effect when `after` is even.
                        if !unknown || after % 2 == 0 {
                            version += 1;
                            value = Some((v.clone(), version));
                        }
                        let outcome = if unknown {
                            Outcome::Unknown
                        } else {
                            Outcome::Written {
                                version,
                                expires_at: None,
                            }
                        };
                        (Call::Write { value: v }, outcome)
                    }
                    _ => {
                        if !unknown || after % 2 == 0 {
                            value = None;
                        }
                        let outcome = if unknown {
                            Outcome::Unknown
                        } else {
                            Outcome::Deleted
                        };
                        (Call::Delete, outcome)
                    }
                };
                ops.push(Op {
                    id: i,
                    node: usize::from(node % 3),
                    key: "k".into(),
                    call,
                    invoke,
                    complete,
                    outcome,
                    clock_ms: (0, 0),
                });
            }
            let finals = (0..3)
                .map(|node| FinalRead {
                    node,
                    key: "k".into(),
                    value: value.clone(),
                    at_ms: u64::MAX,
                })
                .collect();
            (ops, finals)
        }

        proptest! {
            #[test]
            fn histories_of_a_correct_register_always_pass(
                seed in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u16>(), any::<u16>()), 1..80),
            ) {
                let (ops, finals) = run(seed);
                let v = check(&ops, &finals, 600);
                prop_assert!(all_pass(&v), "{:?}", v);
            }
        }
    }
}
