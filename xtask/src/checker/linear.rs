//! Checks a history of a linearizable store (store.kv.raft): every key's operations must have a
//! linearization against a register with versions (a Wing–Gong / Lowe search with a cache of
//! visited states, as in Porcupine), and the versions each key shows must only grow in real
//! time.
//!
//! An operation whose outcome is unknown (a timeout, a connection lost after sending) may take
//! effect at any point after its invocation or never: it is given no return time, so the search
//! may place it anywhere later, including after everything else (which is never, as far as any
//! observation goes). A failed operation (known not applied) is kept only as an observation: a
//! compare-and-swap refused with a conflict says the version differed at some point of its
//! interval. A key whose search exceeds its step budget is `Unknown`, never `Pass`.
//!
//! **Expiry.** A write with a TTL makes the key absent from its deadline on, in the cluster's
//! time (Unix ms: the nodes' clock). Each operation carries the window of that clock it ran in
//! (`clock_ms`), and the model keeps, for a value that expires, the range its deadline may lie
//! in: exactly the `expires_at` an acknowledged write answered, or from `invoke + ttl` on for a
//! write whose answer never came. An operation that saw the key live needs a deadline after the
//! start of its window; one that saw it absent (a read's 404, `deleted: false`, an `if_absent`
//! that wrote, a compare-and-swap's 404) needs one before its end; each observation narrows the
//! range, and an empty range is a contradiction. So a key read expired and then read live again
//! in a later window fails. This is a relaxation (an operation's instant inside its window is
//! not tied to its place in the order), so it never fails a correct history.

use std::collections::HashSet;

pub use super::Verdict;

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `GET`.
    Read,
    /// Unconditional `PUT`.
    Write {
        /// The value written.
        value: String,
    },
    /// `PUT ?if_version=expected`.
    Cas {
        /// The version the key must have.
        expected: u64,
        /// The value written.
        value: String,
    },
    /// `DELETE`.
    Delete,
    /// `PUT ?if_absent=true`: writes only if the key is absent or expired.
    PutIfAbsent {
        /// The value written.
        value: String,
    },
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied (or read), with its answer.
    Ok(Reply),
    /// Known not applied. For a compare-and-swap, whether the store said why.
    Fail(Refusal),
    /// May or may not have been applied: timeout, 504, connection lost after sending.
    Unknown,
}

/// The answer of a successful operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A read: the value and its version, or absent.
    Read(Option<(String, u64)>),
    /// A write or compare-and-swap: the new version.
    Written(u64),
    /// A delete: whether the key was there.
    Deleted(bool),
}

/// Why an operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 409: the key's version differed (compare-and-swap).
    Conflict,
    /// 404: the key was absent (compare-and-swap).
    NotFound,
    /// 409 `AlreadyExists`: the key was live (`if_absent`).
    Exists,
    /// Anything else known not applied (503 before sending, 400, …): no observation.
    Other,
}

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Its index in the history (what a report points at).
    pub id: usize,
    /// The client that issued it.
    pub process: usize,
    /// The key.
    pub key: String,
    /// What was asked.
    pub call: Call,
    /// When it was sent (ns since the start of the run).
    pub invoke: u64,
    /// When its answer arrived (ignored for `Unknown`).
    pub complete: u64,
    /// What came back.
    pub outcome: Outcome,
    /// A write's TTL, in ms.
    pub ttl_ms: Option<u64>,
    /// The deadline an acknowledged write with a TTL answered (Unix ms).
    pub expires_at: Option<u64>,
    /// The window of the cluster's clock (Unix ms) the operation ran in: from before it was
    /// sent to after its answer came.
    pub clock_ms: (u64, u64),
}

/// Clock readings are whole milliseconds: this much either side of a window is within it.
const SLACK_MS: u64 = 2;

/// When a value stops being live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Expiry {
    Never,
    /// At a deadline somewhere in `lo..=hi` (Unix ms).
    Within {
        lo: u64,
        hi: u64,
    },
}

/// The register's version as the model knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Version {
    Known(u64),
    /// Written by an operation whose answer never came: greater than this.
    Above(u64),
}

/// The model: a register with versions and expiry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Register {
    value: Option<(String, Version, Expiry)>,
    /// The largest version any linearized operation showed: a later write's is greater.
    floor: u64,
}

impl Register {
    fn version_is(&self, v: u64) -> Option<Register> {
        match &self.value {
            Some((_, Version::Known(k), _)) if *k == v => Some(self.clone()),
            Some((value, Version::Above(m), expiry)) if v > *m => Some(Register {
                value: Some((value.clone(), Version::Known(v), *expiry)),
                floor: self.floor.max(v),
            }),
            _ => None,
        }
    }

    /// The state in which the value is live at some instant of `window`, if it can be.
    fn live_in(&self, (start, _): (u64, u64)) -> Option<Register> {
        let (value, version, expiry) = self.value.as_ref()?;
        match *expiry {
            Expiry::Never => Some(self.clone()),
            // Live at t when t < deadline: some t >= start - slack.
            Expiry::Within { lo, hi } => {
                let lo = lo.max(start.saturating_sub(SLACK_MS) + 1);
                (lo <= hi).then(|| Register {
                    value: Some((value.clone(), *version, Expiry::Within { lo, hi })),
                    floor: self.floor,
                })
            }
        }
    }

    /// The state in which the key is absent (never written, deleted, or expired) at some
    /// instant of `window`, if it can be.
    fn absent_in(&self, (_, end): (u64, u64)) -> Option<Register> {
        let Some((value, version, expiry)) = &self.value else {
            return Some(self.clone());
        };
        match *expiry {
            Expiry::Never => None,
            // Expired at t when t >= deadline: some t <= end + slack.
            Expiry::Within { lo, hi } => {
                let hi = hi.min(end.saturating_add(SLACK_MS));
                (lo <= hi).then(|| Register {
                    value: Some((value.clone(), *version, Expiry::Within { lo, hi })),
                    floor: self.floor,
                })
            }
        }
    }

    fn written(&self, value: &str, version: Option<u64>, expiry: Expiry) -> Register {
        match version {
            Some(v) => Register {
                value: Some((value.to_owned(), Version::Known(v), expiry)),
                floor: self.floor.max(v),
            },
            None => Register {
                value: Some((value.to_owned(), Version::Above(self.floor), expiry)),
                floor: self.floor,
            },
        }
    }

    fn deleted(&self) -> Register {
        Register {
            value: None,
            floor: self.floor,
        }
    }

    /// The state after `op` if it can take effect now; `None` if it cannot.
    fn step(&self, op: &Op) -> Option<Register> {
        let window = op.clock_ms;
        // The expiry a write gives its value: its answer's deadline, or (no answer) a deadline
        // stamped at any instant from its invocation on.
        let expiry = |acknowledged: bool| match (op.ttl_ms, op.expires_at) {
            (None, _) => Expiry::Never,
            (Some(_), Some(d)) if acknowledged => Expiry::Within { lo: d, hi: d },
            (Some(ttl), _) => Expiry::Within {
                lo: window.0.saturating_add(ttl).saturating_sub(SLACK_MS),
                hi: if acknowledged {
                    window.1.saturating_add(ttl).saturating_add(SLACK_MS)
                } else {
                    u64::MAX
                },
            },
        };
        match (&op.call, &op.outcome) {
            (Call::Read, Outcome::Ok(Reply::Read(None))) => self.absent_in(window),
            (Call::Read, Outcome::Ok(Reply::Read(Some((value, v))))) => {
                let state = self.version_is(*v)?.live_in(window)?;
                (state.value.as_ref().map(|(x, ..)| x) == Some(value)).then_some(state)
            }
            (Call::Write { value }, Outcome::Ok(Reply::Written(v))) => {
                (*v > self.floor).then(|| self.written(value, Some(*v), expiry(true)))
            }
            (Call::Write { value }, Outcome::Unknown) => {
                Some(self.written(value, None, expiry(false)))
            }
            (Call::Cas { expected, value }, Outcome::Ok(Reply::Written(v))) => {
                let state = self.version_is(*expected)?.live_in(window)?;
                (*v > state.floor).then(|| state.written(value, Some(*v), expiry(true)))
            }
            (Call::Cas { expected, value }, Outcome::Unknown) => {
                match self.version_is(*expected).and_then(|s| s.live_in(window)) {
                    Some(state) => Some(state.written(value, None, expiry(false))),
                    // Refused at this point: no effect.
                    None => Some(self.clone()),
                }
            }
            (Call::Cas { expected, .. }, Outcome::Fail(Refusal::Conflict)) => {
                let state = self.live_in(window)?;
                match &state.value {
                    Some((_, Version::Known(k), _)) if k == expected => None,
                    Some(_) => Some(state),
                    None => None,
                }
            }
            (Call::Cas { .. }, Outcome::Fail(Refusal::NotFound)) => self.absent_in(window),
            (Call::PutIfAbsent { value }, Outcome::Ok(Reply::Written(v))) => {
                let state = self.absent_in(window)?;
                (*v > state.floor).then(|| state.written(value, Some(*v), expiry(true)))
            }
            (Call::PutIfAbsent { value }, Outcome::Unknown) => match self.absent_in(window) {
                Some(state) => Some(state.written(value, None, expiry(false))),
                None => Some(self.clone()),
            },
            (Call::PutIfAbsent { .. }, Outcome::Fail(Refusal::Exists)) => self.live_in(window),
            (Call::Delete, Outcome::Ok(Reply::Deleted(true))) => {
                self.live_in(window).map(|s| s.deleted())
            }
            (Call::Delete, Outcome::Ok(Reply::Deleted(false))) => {
                self.absent_in(window).map(|s| s.deleted())
            }
            (Call::Delete, Outcome::Unknown) => Some(self.deleted()),
            // Operations with no effect and no observation are filtered out before the search;
            // any other pairing is an answer the call cannot give.
            _ => None,
        }
    }
}

/// Whether an operation matters to the search: reads that did not answer and refusals that say
/// nothing have no effect and observe nothing.
fn relevant(op: &Op) -> bool {
    !matches!(
        (&op.call, &op.outcome),
        (Call::Read, Outcome::Unknown | Outcome::Fail(_))
            | (_, Outcome::Fail(Refusal::Other))
            | (Call::Write { .. } | Call::Delete, Outcome::Fail(_))
    )
}

/// Checks one key's operations for linearizability, spending at most `budget` search steps.
pub fn check_key(ops: &[Op], budget: u64) -> Verdict {
    let ops: Vec<&Op> = ops.iter().filter(|o| relevant(o)).collect();
    if ops.is_empty() {
        return Verdict::Pass;
    }
    // Events: (time, is_return, op index). Calls before returns at equal times (they overlap).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoke, false, i));
        let ret = if op.outcome == Outcome::Unknown {
            u64::MAX
        } else {
            op.complete.max(op.invoke)
        };
        events.push((ret, true, i));
    }
    events.sort_by_key(|&(t, is_return, i)| (t, is_return, i));
    let n = events.len();
    // A doubly linked list over the events, with a head sentinel at index n.
    let mut next: Vec<usize> = (1..=n).collect();
    next.push(0);
    // prev[0] is the head; prev[i] = i - 1 after it.
    let mut prev: Vec<usize> = std::iter::once(n).chain(0..n).collect();
    let head = n;
    next[head] = 0;
    let end = n; // `next` of the last event points at n (the sentinel doubles as the end)
    next[n - 1] = end;
    let mut call_of = vec![0; ops.len()];
    let mut return_of = vec![0; ops.len()];
    for (e, &(_, is_return, i)) in events.iter().enumerate() {
        if is_return {
            return_of[i] = e;
        } else {
            call_of[i] = e;
        }
    }
    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, x) = (prev[e], next[e]);
        next[p] = x;
        if x != end {
            prev[x] = p;
        }
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, x) = (prev[e], next[e]);
        next[p] = e;
        if x != end {
            prev[x] = e;
        }
    };

    // The set of linearized operations as a Zobrist hash (XOR of a random 128-bit word per
    // operation), so a visited (set, state) pair costs 16 bytes however long the history; a
    // collision (2⁻¹²⁸ per pair) could only make the search skip a state.
    let zobrist: Vec<u128> = (0..ops.len() as u64).map(random_word).collect();
    let mut linearized: u128 = 0;
    let mut state = Register {
        value: None,
        floor: 0,
    };
    let mut cache: HashSet<u128> = HashSet::new();
    let mut stack: Vec<(usize, Register)> = Vec::new();
    let mut steps = 0u64;
    let mut deepest = (0usize, 0usize); // (ops linearized, the op that could not be)
    let mut entry = next[head];
    loop {
        if next[head] == end {
            return Verdict::Pass;
        }
        steps += 1;
        if steps > budget {
            return Verdict::Unknown(format!(
                "the search exceeded its budget of {budget} steps over {} operations",
                ops.len()
            ));
        }
        let (_, is_return, i) = events[entry];
        if !is_return {
            if let Some(new_state) = state.step(ops[i]) {
                let bits = linearized ^ zobrist[i];
                if cache.insert(bits ^ state_word(&new_state)) {
                    stack.push((i, state));
                    state = new_state;
                    linearized = bits;
                    lift(&mut next, &mut prev, call_of[i]);
                    lift(&mut next, &mut prev, return_of[i]);
                    entry = next[head];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            // A return reached: the operations before it cannot all be placed. Backtrack.
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), i);
            }
            let Some((j, previous)) = stack.pop() else {
                return Verdict::Fail(explain(&ops, deepest));
            };
            state = previous;
            linearized ^= zobrist[j];
            unlift(&mut next, &mut prev, return_of[j]);
            unlift(&mut next, &mut prev, call_of[j]);
            entry = next[call_of[j]];
        }
    }
}

/// A fixed pseudo-random 128-bit word for `i` (two rounds of splitmix64).
fn random_word(i: u64) -> u128 {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let hi = mix(i.wrapping_mul(2));
    let lo = mix(i.wrapping_mul(2) + 1);
    (u128::from(hi) << 64) | u128::from(lo)
}

/// A model state as a 128-bit word, for the visited set.
fn state_word(state: &Register) -> u128 {
    use std::hash::{Hash, Hasher};
    let mut a = std::collections::hash_map::DefaultHasher::new();
    state.hash(&mut a);
    let mut b = std::collections::hash_map::DefaultHasher::new();
    (state, 0x5eed_u32).hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

fn explain(ops: &[&Op], (placed, stuck): (usize, usize)) -> String {
    let op = ops[stuck];
    format!(
        "key {:?}: no linearization; at best {placed} of {} operations could be placed, and then \
         operation #{} ({:?} by client {} → {:?}, {}..{} ns) could not",
        op.key,
        ops.len(),
        op.id,
        op.call,
        op.process,
        op.outcome,
        op.invoke,
        op.complete
    )
}

/// The version an operation shows, if any, and whether it wrote it.
fn shown_version(op: &Op) -> Option<(u64, bool)> {
    match &op.outcome {
        Outcome::Ok(Reply::Read(Some((_, v)))) => Some((*v, false)),
        Outcome::Ok(Reply::Written(v)) => Some((*v, true)),
        _ => None,
    }
}

/// Versions of one key only grow in real time: an operation that started after another
/// finished never shows an older version, and a write shows a newer one.
pub fn check_versions(ops: &[Op]) -> Verdict {
    let mut shown: Vec<(&Op, u64, bool)> = ops
        .iter()
        .filter_map(|op| shown_version(op).map(|(v, w)| (op, v, w)))
        .collect();
    // Sweep by invocation; `done` holds completions in time order.
    shown.sort_by_key(|(op, ..)| op.invoke);
    let mut completions: Vec<(u64, u64, usize)> = shown
        .iter()
        .map(|(op, v, _)| (op.complete, *v, op.id))
        .collect();
    completions.sort();
    let mut c = 0;
    let mut max: Option<(u64, usize)> = None;
    for (op, v, wrote) in shown {
        while c < completions.len() && completions[c].0 < op.invoke {
            let (_, cv, id) = completions[c];
            if max.is_none_or(|(m, _)| cv > m) {
                max = Some((cv, id));
            }
            c += 1;
        }
        if let Some((m, by)) = max
            && (v < m || (wrote && v == m))
        {
            return Verdict::Fail(format!(
                "key {:?}: operation #{} shows version {v} after operation #{by} had shown \
                 {m} and finished before it started",
                op.key, op.id
            ));
        }
    }
    Verdict::Pass
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds ops on key "k" from (process, call, invoke, complete, outcome).
    fn history(spec: Vec<(usize, Call, u64, u64, Outcome)>) -> Vec<Op> {
        spec.into_iter()
            .enumerate()
            .map(|(id, (process, call, invoke, complete, outcome))| Op {
                id,
                process,
                key: "k".into(),
                call,
                invoke,
                complete,
                outcome,
                ttl_ms: None,
                expires_at: None,
                clock_ms: (0, 0),
            })
            .collect()
    }

    fn w(v: &str) -> Call {
        Call::Write { value: v.into() }
    }

    fn read(v: Option<(&str, u64)>) -> Outcome {
        Outcome::Ok(Reply::Read(v.map(|(s, n)| (s.to_owned(), n))))
    }

    fn written(v: u64) -> Outcome {
        Outcome::Ok(Reply::Written(v))
    }

    fn both(ops: &[Op]) -> (Verdict, Verdict) {
        (check_key(ops, 1_000_000), check_versions(ops))
    }

    #[test]
    fn a_valid_concurrent_history_passes() {
        let h = history(vec![
            (0, w("a"), 0, 10, written(1)),
            (1, Call::Read, 5, 15, read(Some(("a", 1)))),
            (2, w("b"), 12, 30, written(2)),
            // Overlaps the write of b: may see either.
            (1, Call::Read, 20, 25, read(Some(("a", 1)))),
            (0, Call::Read, 31, 35, read(Some(("b", 2)))),
            (
                1,
                Call::Cas {
                    expected: 2,
                    value: "c".into(),
                },
                40,
                50,
                written(3),
            ),
            (2, Call::Delete, 51, 60, Outcome::Ok(Reply::Deleted(true))),
            (0, Call::Read, 61, 70, read(None)),
        ]);
        assert_eq!(both(&h), (Verdict::Pass, Verdict::Pass));
    }

    #[test]
    fn an_unknown_write_may_apply_late_or_never() {
        let h = history(vec![
            (0, w("a"), 0, 10, written(1)),
            (1, w("x"), 11, 12, Outcome::Unknown),
            (0, Call::Read, 20, 21, read(Some(("a", 1)))),
            (2, Call::Read, 30, 31, read(Some(("x", 5)))),
        ]);
        assert_eq!(check_key(&h, 1_000_000), Verdict::Pass);
        // Never applied is fine too.
        let never = history(vec![
            (0, w("a"), 0, 10, written(1)),
            (1, w("x"), 11, 12, Outcome::Unknown),
            (0, Call::Read, 20, 21, read(Some(("a", 1)))),
        ]);
        assert_eq!(check_key(&never, 1_000_000), Verdict::Pass);
    }

    #[test]
    fn a_stale_read_fails_and_names_it() {
        let h = history(vec![
            (0, w("a"), 0, 10, written(1)),
            (0, w("b"), 11, 20, written(2)),
            (1, Call::Read, 21, 30, read(Some(("a", 1)))),
        ]);
        let (lin, versions) = both(&h);
        let Verdict::Fail(why) = lin else {
            panic!("{lin}")
        };
        assert!(why.contains("#2"), "{why}");
        assert!(
            matches!(versions, Verdict::Fail(ref why) if why.contains("#2")),
            "{versions}"
        );
    }

    #[test]
    fn a_lost_acknowledged_write_fails() {
        let h = history(vec![
            (0, w("a"), 0, 10, written(1)),
            (1, w("b"), 5, 15, written(2)),
            // Both writes are acknowledged; b's version is later, yet a read after both sees
            // nothing.
            (2, Call::Read, 20, 30, read(None)),
        ]);
        assert!(matches!(check_key(&h, 1_000_000), Verdict::Fail(_)));
    }

    #[test]
    fn two_successful_compare_and_swaps_from_one_version_fail() {
        let h = history(vec![
            (0, w("a"), 0, 10, written(1)),
            (
                1,
                Call::Cas {
                    expected: 1,
                    value: "b".into(),
                },
                20,
                30,
                written(2),
            ),
            (
                2,
                Call::Cas {
                    expected: 1,
                    value: "c".into(),
                },
                20,
                30,
                written(3),
            ),
        ]);
        let Verdict::Fail(why) = check_key(&h, 1_000_000) else {
            panic!("two CAS from version 1 both succeeded and passed")
        };
        assert!(why.contains("Cas"), "{why}");
    }

    #[test]
    fn a_read_of_a_value_never_written_fails() {
        let h = history(vec![
            (0, w("a"), 0, 10, written(1)),
            (1, Call::Read, 20, 30, read(Some(("ghost", 1)))),
        ]);
        let Verdict::Fail(why) = check_key(&h, 1_000_000) else {
            panic!("a read of a value nobody wrote passed")
        };
        assert!(why.contains("#1") && why.contains("ghost"), "{why}");
    }

    #[test]
    fn a_search_over_budget_is_unknown_never_pass() {
        // Many overlapping writes and a read that fits none: the search must explore.
        let mut spec = Vec::new();
        for i in 0..12 {
            spec.push((i, w(&format!("v{i}")), 0, 100, written(i as u64 + 1)));
        }
        spec.push((99, Call::Read, 200, 210, read(Some(("nobody", 77)))));
        let h = history(spec);
        assert!(matches!(check_key(&h, 50), Verdict::Unknown(_)));
        assert!(matches!(check_key(&h, 100_000_000), Verdict::Fail(_)));
    }

    /// A history the size of a ten-minute run's busiest key (10 clients, 60 000 operations,
    /// one in a hundred with an unknown outcome) is checked in seconds.
    #[test]
    fn a_long_history_is_checked_quickly() {
        let mut ops = Vec::new();
        let mut version = 0u64;
        let mut value: Option<(String, u64)> = None;
        for i in 0..60_000u64 {
            let at = 1_000 * i + 1_000;
            let (invoke, complete) = (at - 300 - (i * 7919) % 600, at + (i * 104_729) % 4_000);
            let (call, outcome) = if i % 100 == 7 {
                (
                    Call::Write {
                        value: format!("u{i}"),
                    },
                    Outcome::Unknown,
                )
            } else if i % 3 == 0 {
                version += 1;
                value = Some((format!("v{i}"), version));
                (
                    Call::Write {
                        value: format!("v{i}"),
                    },
                    Outcome::Ok(Reply::Written(version)),
                )
            } else {
                (Call::Read, Outcome::Ok(Reply::Read(value.clone())))
            };
            ops.push(Op {
                id: i as usize,
                process: (i % 10) as usize,
                key: "k".into(),
                call,
                invoke,
                complete,
                outcome,
                ttl_ms: None,
                expires_at: None,
                clock_ms: (0, 0),
            });
        }
        let start = std::time::Instant::now();
        assert_eq!(check_key(&ops, 50_000_000), Verdict::Pass);
        let took = start.elapsed();
        println!("60 000 operations checked in {took:?}");
        assert!(took < std::time::Duration::from_secs(60), "{took:?}");
    }

    /// One timed operation: call, clock window (ms), outcome, TTL, answered deadline.
    type Timed = (Call, (u64, u64), Outcome, Option<u64>, Option<u64>);

    /// Ops on key "k" with clock windows and TTLs.
    fn timed(spec: Vec<Timed>) -> Vec<Op> {
        spec.into_iter()
            .enumerate()
            .map(|(id, (call, clock_ms, outcome, ttl_ms, expires_at))| Op {
                id,
                process: id,
                key: "k".into(),
                call,
                invoke: clock_ms.0 * 1_000_000,
                complete: clock_ms.1 * 1_000_000,
                outcome,
                ttl_ms,
                expires_at,
                clock_ms,
            })
            .collect()
    }

    #[test]
    fn a_key_is_live_before_its_deadline_and_absent_from_it_on() {
        // Written at 1000 with a 500 ms TTL: deadline 1500.
        let ok = timed(vec![
            (w("a"), (1000, 1001), written(1), Some(500), Some(1500)),
            (Call::Read, (1200, 1210), read(Some(("a", 1))), None, None),
            (Call::Read, (1495, 1505), read(Some(("a", 1))), None, None),
            (Call::Read, (1495, 1505), read(None), None, None),
            (Call::Read, (1600, 1610), read(None), None, None),
        ]);
        assert_eq!(check_key(&ok, 1_000_000), Verdict::Pass);
        // Absent well before its deadline, or live well after it: no linearization.
        let early = timed(vec![
            (w("a"), (1000, 1001), written(1), Some(500), Some(1500)),
            (Call::Read, (1200, 1210), read(None), None, None),
        ]);
        assert!(matches!(check_key(&early, 1_000_000), Verdict::Fail(_)));
        let late = timed(vec![
            (w("a"), (1000, 1001), written(1), Some(500), Some(1500)),
            (Call::Read, (1600, 1610), read(Some(("a", 1))), None, None),
        ]);
        assert!(matches!(check_key(&late, 1_000_000), Verdict::Fail(_)));
    }

    /// What a clock stepped back would show: a read sees the key expired, a later one live.
    #[test]
    fn a_key_read_expired_and_then_live_again_fails() {
        // A write whose answer never came: its deadline is somewhere from 1000 + 500 on.
        let ops = timed(vec![
            (w("a"), (1000, 1001), Outcome::Unknown, Some(500), None),
            (Call::Read, (1100, 1110), read(Some(("a", 2))), None, None),
            (Call::Read, (2000, 2010), read(None), None, None),
            (Call::Read, (2100, 2110), read(Some(("a", 2))), None, None),
        ]);
        assert!(matches!(check_key(&ops, 1_000_000), Verdict::Fail(_)));
        // Without the live read after the absent one, the same history passes.
        assert_eq!(check_key(&ops[..3], 1_000_000), Verdict::Pass);
    }

    /// The lock pattern: `if_absent` with a TTL. A second holder may take it only once the
    /// first one's deadline has passed.
    #[test]
    fn an_if_absent_lock_is_taken_again_only_after_its_deadline() {
        let lock = |v: &str| Call::PutIfAbsent { value: v.into() };
        let fine = timed(vec![
            (lock("a"), (1000, 1002), written(1), Some(300), Some(1301)),
            (
                lock("b"),
                (1100, 1105),
                Outcome::Fail(Refusal::Exists),
                Some(300),
                None,
            ),
            (lock("b"), (1400, 1405), written(2), Some(300), Some(1702)),
            (Call::Read, (1500, 1501), read(Some(("b", 2))), None, None),
        ]);
        assert_eq!(check_key(&fine, 1_000_000), Verdict::Pass);
        let stolen = timed(vec![
            (lock("a"), (1000, 1002), written(1), Some(300), Some(1301)),
            (lock("b"), (1100, 1105), written(2), Some(300), Some(1402)),
        ]);
        assert!(matches!(check_key(&stolen, 1_000_000), Verdict::Fail(_)));
        let refused_after = timed(vec![
            (lock("a"), (1000, 1002), written(1), Some(300), Some(1301)),
            (
                lock("b"),
                (1400, 1405),
                Outcome::Fail(Refusal::Exists),
                Some(300),
                None,
            ),
        ]);
        assert!(matches!(
            check_key(&refused_after, 1_000_000),
            Verdict::Fail(_)
        ));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        /// A correct sequential register run by several clients, each operation taking effect
        /// at a random instant inside a random interval around it: always linearizable.
        fn run(seed: Vec<(u8, u8, u16, u16)>) -> Vec<Op> {
            let mut value: Option<(String, u64)> = None;
            let mut version = 0u64;
            let mut ops = Vec::new();
            for (i, (process, kind, before, after)) in seed.into_iter().enumerate() {
                // The operation takes effect at instant 1000·i; its interval spans it.
                let at = 1_000 * i as u64 + 1_000;
                let invoke = at - u64::from(before % 900);
                let complete = at + u64::from(after % 5_000);
                let (call, outcome) = match kind % 5 {
                    0 => (Call::Read, Outcome::Ok(Reply::Read(value.clone()))),
                    1 | 2 => {
                        version += 1;
                        let v = format!("v{i}");
                        value = Some((v.clone(), version));
                        (
                            Call::Write { value: v },
                            Outcome::Ok(Reply::Written(version)),
                        )
                    }
                    3 => match &value {
                        Some((_, current)) => {
                            let expected = *current;
                            version += 1;
                            let v = format!("c{i}");
                            value = Some((v.clone(), version));
                            (
                                Call::Cas { expected, value: v },
                                Outcome::Ok(Reply::Written(version)),
                            )
                        }
                        None => (
                            Call::Cas {
                                expected: 7,
                                value: "x".into(),
                            },
                            Outcome::Fail(Refusal::NotFound),
                        ),
                    },
                    _ => {
                        let was = value.take().is_some();
                        (Call::Delete, Outcome::Ok(Reply::Deleted(was)))
                    }
                };
                ops.push(Op {
                    id: i,
                    process: usize::from(process % 4),
                    key: "k".into(),
                    call,
                    invoke,
                    complete,
                    outcome,
                    ttl_ms: None,
                    expires_at: None,
                    clock_ms: (0, 0),
                });
            }
            ops
        }

        proptest! {
            #[test]
            fn histories_of_a_correct_register_always_pass(
                seed in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u16>(), any::<u16>()), 1..60),
            ) {
                let ops = run(seed);
                prop_assert_eq!(check_key(&ops, 10_000_000), Verdict::Pass);
                prop_assert_eq!(check_versions(&ops), Verdict::Pass);
            }
        }
    }
}
