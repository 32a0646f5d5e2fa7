//! Model-based property test: random sequences of every operation and clock advances, run
//! against a store and a `BTreeMap` reference model, compared after every step.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use store_core::backend::validate;
use store_core::{
    Condition, Entry, ErrorKind, ListOptions, PutOptions, Store, StoreInfo, from_millis,
};

use crate::Harness;

const KEYS: &[&str] = &["a", "ab", "abc", "b", "ba", "\u{e9}", "日", "a%", "a_", "z"];
const PREFIXES: &[&str] = &["", "a", "ab", "b", "\u{e9}", "a%", "q"];

/// How a generated `put` chooses its condition. Versions are only known at run time, so the
/// choice is symbolic and resolved against the model.
#[derive(Debug, Clone)]
pub enum CondChoice {
    /// `Condition::Always`.
    Always,
    /// `Condition::IfAbsent`.
    IfAbsent,
    /// `IfVersion` with the key's current version (or 1 if it has none).
    IfCurrent,
    /// `IfVersion` with a version above the key's current one.
    IfStale,
    /// `IfVersion` with the version the key had before its latest write (if it had one).
    IfOlder,
    /// `IfVersion(0)`.
    IfZero,
}

/// One generated operation.
#[derive(Debug, Clone)]
pub enum Op {
    /// `get`.
    Get(&'static str),
    /// `entry`.
    Entry(&'static str),
    /// `has`.
    Has(&'static str),
    /// `set`.
    Set(&'static str, Vec<u8>, Option<Duration>),
    /// `put`.
    Put(&'static str, Vec<u8>, Option<Duration>, CondChoice),
    /// `delete`.
    Delete(&'static str),
    /// `list`.
    List {
        /// `prefix`.
        prefix: &'static str,
        /// `after`.
        after: Option<&'static str>,
        /// `limit`.
        limit: Option<usize>,
    },
    /// Move the clock forward by this many milliseconds.
    Advance(u64),
}

fn key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(KEYS)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..6)
}

fn ttl() -> impl Strategy<Value = Option<Duration>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(Duration::ZERO)),
        1 => (1u64..1000).prop_map(|us| Some(Duration::from_micros(us))),
        4 => (1u64..5000).prop_map(|ms| Some(Duration::from_millis(ms))),
    ]
}

fn cond() -> impl Strategy<Value = CondChoice> {
    prop_oneof![
        Just(CondChoice::Always),
        Just(CondChoice::IfAbsent),
        Just(CondChoice::IfCurrent),
        Just(CondChoice::IfStale),
        Just(CondChoice::IfOlder),
        Just(CondChoice::IfZero),
    ]
}

/// The generator of operations.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => key().prop_map(Op::Get),
        1 => key().prop_map(Op::Entry),
        1 => key().prop_map(Op::Has),
        4 => (key(), value(), ttl()).prop_map(|(k, v, t)| Op::Set(k, v, t)),
        4 => (key(), value(), ttl(), cond()).prop_map(|(k, v, t, c)| Op::Put(k, v, t, c)),
        2 => key().prop_map(Op::Delete),
        2 => (
            prop::sample::select(PREFIXES),
            prop::option::of(key()),
            prop::option::of(0usize..5),
        )
            .prop_map(|(prefix, after, limit)| Op::List { prefix, after, limit }),
        3 => prop_oneof![Just(1u64), 0u64..3000].prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone)]
struct Cell {
    value: Bytes,
    version: u64,
    deadline: Option<u64>,
}

/// The reference: a `BTreeMap` of cells, the clock, and every version each key ever had.
struct Model {
    info: StoreInfo,
    now: u64,
    cells: BTreeMap<String, Cell>,
    last_version: HashMap<String, u64>,
    /// The version each key had before its latest write.
    previous_version: HashMap<String, u64>,
}

impl Model {
    fn live(&self, k: &str) -> Option<&Cell> {
        self.cells
            .get(k)
            .filter(|c| validate::is_live(c.deadline, self.now))
    }

    fn entry(&self, k: &str) -> Option<Entry> {
        self.live(k).map(|c| Entry {
            key: k.to_owned(),
            value: c.value.clone(),
            version: c.version,
            expires_at: c.deadline.map(from_millis),
        })
    }

    /// Checks the version a store gave a write of `k`, then records the write.
    fn record_write(
        &mut self,
        k: &str,
        written: &Entry,
        deadline: Option<u64>,
    ) -> Result<(), TestCaseError> {
        if self.info.capabilities.versioned {
            let last = self.last_version.get(k).copied().unwrap_or(0);
            prop_assert!(
                written.version > last,
                "version of {k:?} went from {last} to {}",
                written.version
            );
            if let Some(prev) = self.last_version.insert(k.to_owned(), written.version) {
                self.previous_version.insert(k.to_owned(), prev);
            }
        } else {
            prop_assert_eq!(written.version, 0);
        }
        self.cells.insert(
            k.to_owned(),
            Cell {
                value: written.value.clone(),
                version: written.version,
                deadline,
            },
        );
        Ok(())
    }
}

fn kind_of<T>(r: &store_core::Result<T>) -> Option<ErrorKind> {
    r.as_ref().err().map(store_core::Error::kind)
}

async fn check<S: Store>(store: S, harness: Harness, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut m = Model {
        info: store.info(),
        now: store_core::Clock::now_ms(harness.clock()),
        cells: BTreeMap::new(),
        last_version: HashMap::new(),
        previous_version: HashMap::new(),
    };
    for (step, op) in ops.into_iter().enumerate() {
        let ctx = format!("step {step}: {op:?}");
        match op {
            Op::Get(k) => {
                let got = store.get(k).await.map_err(|e| fail(&ctx, e))?;
                prop_assert_eq!(got, m.live(k).map(|c| c.value.clone()), "{}", ctx);
            }
            Op::Entry(k) => {
                let got = store.entry(k).await.map_err(|e| fail(&ctx, e))?;
                prop_assert_eq!(got, m.entry(k), "{}", ctx);
            }
            Op::Has(k) => {
                let got = store.has(k).await.map_err(|e| fail(&ctx, e))?;
                prop_assert_eq!(got, m.live(k).is_some(), "{}", ctx);
            }
            Op::Set(k, v, ttl) => {
                let ttl_ms = validate::ttl(ttl).map_err(|e| fail(&ctx, e))?;
                store
                    .set(k, Bytes::from(v.clone()), ttl)
                    .await
                    .map_err(|e| fail(&ctx, e))?;
                let written = store.entry(k).await.map_err(|e| fail(&ctx, e))?;
                let written = written.ok_or_else(|| {
                    TestCaseError::fail(format!("{ctx}: key absent right after set"))
                })?;
                prop_assert_eq!(&written.value[..], &v[..], "{}", ctx);
                m.record_write(k, &written, validate::deadline(m.now, ttl_ms))?;
            }
            Op::Put(k, v, ttl, choice) => {
                let current = m.live(k).map(|c| c.version);
                let condition = match choice {
                    CondChoice::Always => Condition::Always,
                    CondChoice::IfAbsent => Condition::IfAbsent,
                    CondChoice::IfCurrent => Condition::IfVersion(current.unwrap_or(1).max(1)),
                    CondChoice::IfStale => {
                        Condition::IfVersion(current.unwrap_or(0) + 1_000_000_007)
                    }
                    CondChoice::IfOlder => {
                        Condition::IfVersion(m.previous_version.get(k).copied().unwrap_or(1).max(1))
                    }
                    CondChoice::IfZero => Condition::IfVersion(0),
                };
                let expected: Option<ErrorKind> = match condition {
                    Condition::IfVersion(0) => Some(ErrorKind::Invalid),
                    Condition::IfAbsent if !m.info.capabilities.conditional_put => {
                        Some(ErrorKind::Unsupported)
                    }
                    Condition::IfVersion(_)
                        if !(m.info.capabilities.conditional_put
                            && m.info.capabilities.versioned) =>
                    {
                        Some(ErrorKind::Unsupported)
                    }
                    Condition::IfAbsent if current.is_some() => Some(ErrorKind::AlreadyExists),
                    Condition::IfVersion(_) if current.is_none() => Some(ErrorKind::NotFound),
                    Condition::IfVersion(want) if current != Some(want) => {
                        Some(ErrorKind::Conflict)
                    }
                    _ => None,
                };
                let options = PutOptions::new().with_ttl(ttl).condition(condition);
                let result = store.put(k, Bytes::from(v.clone()), options).await;
                prop_assert_eq!(kind_of(&result), expected, "{}: {:?}", ctx, result);
                if let Ok(written) = result {
                    let ttl_ms = validate::ttl(ttl).map_err(|e| fail(&ctx, e))?;
                    let deadline = validate::deadline(m.now, ttl_ms);
                    prop_assert_eq!(&written.key, k, "{}", ctx);
                    prop_assert_eq!(&written.value[..], &v[..], "{}", ctx);
                    prop_assert_eq!(written.expires_at, deadline.map(from_millis), "{}", ctx);
                    m.record_write(k, &written, deadline)?;
                }
            }
            Op::Delete(k) => {
                let got = store.delete(k).await.map_err(|e| fail(&ctx, e))?;
                prop_assert_eq!(got, m.live(k).is_some(), "{}", ctx);
                m.cells.remove(k);
            }
            Op::List {
                prefix,
                after,
                limit,
            } => {
                if !m.info.capabilities.list {
                    continue;
                }
                let mut options = ListOptions::new().prefix(prefix);
                options.after = after.map(str::to_owned);
                options.limit = limit;
                let page = store
                    .list(options.clone())
                    .await
                    .map_err(|e| fail(&ctx, e))?;
                let size = validate::list(&options).map_err(|e| fail(&ctx, e))?;
                let matching: Vec<Entry> = m
                    .cells
                    .keys()
                    .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
                    .filter_map(|k| m.entry(k))
                    .collect();
                let want: Vec<Entry> = matching.iter().take(size).cloned().collect();
                prop_assert_eq!(&page.items, &want, "{}", ctx);
                prop_assert_eq!(page.has_more, matching.len() > size, "{}", ctx);
                prop_assert_eq!(page.cursor, want.last().map(|e| e.key.clone()), "{}", ctx);
            }
            Op::Advance(ms) => {
                harness.advance(Duration::from_millis(ms));
                m.now += ms;
            }
        }
    }
    Ok(())
}

fn fail(ctx: &str, e: store_core::Error) -> TestCaseError {
    TestCaseError::fail(format!("{ctx}: unexpected error {e:?}"))
}

/// Number of generated sequences: `PROPTEST_CASES` if set, else the backend's choice, else 256.
fn cases(options: &crate::Options) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .or(options.model_cases)
        .unwrap_or(256)
}

/// Runs the model test: `PROPTEST_CASES` (default `options.model_cases`, else 256) random sequences of up to 60 operations,
/// each on a fresh store from `factory`. Panics with the shrunk failing sequence.
pub fn run<S, F, Fut>(name: &str, options: crate::Options, factory: F)
where
    S: Store,
    F: Fn(Harness) -> Fut,
    Fut: Future<Output = S>,
{
    if let Some(why) = options.skip.and_then(|skip| skip()) {
        return crate::loud_skip(name, &why);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime for the model test");
    let config = Config {
        cases: cases(&options),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = prop::collection::vec(op(), 1..60);
    let result = runner.run(&strategy, |ops| {
        runtime.block_on(async {
            let harness = Harness::new();
            let store = factory(harness.clone()).await;
            check(store, harness, ops).await
        })
    });
    if let Err(e) = result {
        panic!("model test failed: {e}");
    }
}
