//! The conformance suite and model-based property test that every [`Store`] backend runs.
//!
//! A backend adopts the whole suite in one line per flavour: a factory builds a fresh store with
//! default limits that reads the [`Harness`]'s manual clock.
//!
//! ```text
//! mod concrete {
//!     store_testkit::conformance_suite!(|h: store_testkit::Harness| async move {
//!         store_memory::MemoryStore::builder().clock(h.shared_clock()).build()
//!     });
//! }
//! ```
//!
//! The macro expands to one `#[test]` per case in [`cases`] (named after the `# Behavior`
//! bullets of [`Store`]) plus `model_test`, which runs random operation sequences against a
//! `BTreeMap` reference model ([`model`]). Cases that the store's [`StoreInfo`](store_core::StoreInfo)
//! rules out check the `Unsupported` answer instead, or print one `SKIPPED` line saying why.
//!
//! The suite must never sleep to wait for time: every TTL case moves the manual clock.

pub mod bench;
pub mod cases;
pub mod model;
mod temp;

pub use temp::TempDir;

use std::any::Any;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use store_core::{ManualClock, SharedClock, Store};

/// 2026-01-01T00:00:00Z: where every harness clock starts, so runs are reproducible.
pub const START_MS: u64 = 1_767_225_600_000;

/// What a case gets besides the store: the manual clock the store reads.
///
/// A store in another process (a node over HTTP) follows the clock through a hook:
/// [`Harness::on_advance`] is called with every [`Harness::advance`], and [`Harness::keep`]
/// holds whatever must live as long as the case (the node process).
#[derive(Clone)]
pub struct Harness {
    clock: ManualClock,
    remote: Arc<Mutex<Remote>>,
}

type AdvanceHook = Box<dyn Fn(Duration) + Send + Sync>;

#[derive(Default)]
struct Remote {
    on_advance: Option<AdvanceHook>,
    kept: Vec<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("now_ms", &store_core::Clock::now_ms(&self.clock))
            .finish_non_exhaustive()
    }
}

/// How a backend adopts the suite, beyond its factory.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Returns why the backend cannot be tested here (each test then prints one `SKIPPED` line
    /// and passes), or `None` to run.
    pub skip: Option<fn() -> Option<String>>,
    /// Sequences the model test runs when `PROPTEST_CASES` is not set; `None` = 256. For a
    /// backend whose fresh store costs seconds (a Raft cluster), fewer sequences keep the
    /// suite's time bounded.
    pub model_cases: Option<u32>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A harness whose clock reads [`START_MS`].
    pub fn new() -> Self {
        Self {
            clock: ManualClock::at_millis(START_MS),
            remote: Arc::default(),
        }
    }

    /// The manual clock.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// The manual clock as a store holds it; the store then follows every [`Harness::advance`].
    pub fn shared_clock(&self) -> SharedClock {
        self.clock.shared()
    }

    /// Moves the clock forward, and the remote store's clock with it (see
    /// [`Harness::on_advance`]).
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
        if let Some(hook) = &self.remote().on_advance {
            hook(by);
        }
    }

    /// Calls `hook` with every [`Harness::advance`]: how a store in another process, whose clock
    /// the test controls, follows this one. The hook must return only once that clock moved.
    pub fn on_advance(&self, hook: impl Fn(Duration) + Send + Sync + 'static) {
        self.remote().on_advance = Some(Box::new(hook));
    }

    /// Keeps `guard` alive as long as the case runs (a node process the store talks to).
    pub fn keep(&self, guard: impl Any + Send + Sync) {
        self.remote().kept.push(Box::new(guard));
    }

    fn remote(&self) -> std::sync::MutexGuard<'_, Remote> {
        self.remote.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs one case on a fresh store built by `factory`, on a two-worker multi-thread runtime (so
/// the concurrency cases really run in parallel). Prints one `SKIPPED` line instead when
/// `options.skip` says the backend cannot be tested here.
pub fn run_case<S, F, Fut, C, CFut>(name: &str, options: Options, case: C, factory: F)
where
    S: Store,
    F: Fn(Harness) -> Fut,
    Fut: Future<Output = S>,
    C: FnOnce(S, Harness) -> CFut,
    CFut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime for the case");
    if let Some(why) = options.skip.and_then(|skip| skip()) {
        return loud_skip(name, &why);
    }
    runtime.block_on(async {
        let harness = Harness::new();
        let store = factory(harness.clone()).await;
        case(store, harness).await;
    });
}

/// A loopback port that was free a moment ago: bound to port 0, read, released. Another process
/// may take it before the caller binds it, so use it only where the address must be known
/// before the process that binds it starts (a cluster member's address in its peers' configs).
///
/// # Panics
/// When no loopback port can be bound at all.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// Prints `SKIPPED <what>: <why>` straight to the process's stderr. `eprintln!` would be
/// captured (and hidden) by the test harness for a passing test; a skip must never be silent.
pub fn loud_skip(what: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {what}: {why}");
}

/// Expands to one `#[test]` per conformance case plus `model_test`, each building its store with
/// `$factory: Fn(Harness) -> impl Future<Output = impl Store>`. Use it inside a module, once per
/// flavour (concrete type, `Arc<dyn Store>`). `conformance_suite!(options = expr; factory)`
/// passes [`Options`].
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr) => {
        $crate::conformance_suite!(options = $crate::Options::default(); $factory);
    };
    (options = $options:expr; $factory:expr) => {
        $crate::__cases!($options; $factory;
            get_absent_key_is_none,
            get_live_key_returns_value,
            expired_key_is_absent_to_every_read,
            expiry_is_exact_at_the_deadline,
            entry_reports_version_and_expiry,
            sub_millisecond_ttl_rounds_up_to_one_ms,
            zero_ttl_means_no_expiry,
            has_follows_liveness,
            set_replaces_value,
            set_without_ttl_clears_old_expiry,
            set_with_ttl_replaces_old_expiry,
            empty_key_is_invalid,
            key_length_limit_is_1024_bytes,
            key_with_nul_is_invalid,
            multibyte_keys_round_trip,
            value_size_limit_is_enforced,
            empty_value_round_trips,
            ttl_over_100_years_is_invalid,
            rejected_calls_change_nothing,
            special_characters_round_trip,
            put_always_returns_the_written_entry,
            put_expiry_comes_from_its_own_ttl,
            if_absent_on_absent_key_writes,
            if_absent_on_live_key_is_already_exists,
            if_absent_on_expired_key_writes,
            if_version_on_absent_key_is_not_found,
            if_version_on_expired_key_is_not_found,
            if_version_mismatch_is_conflict,
            if_version_match_writes_a_newer_version,
            if_version_zero_is_invalid,
            versions_strictly_increase_per_key,
            versions_fit_in_53_bits,
            unsupported_conditions_write_nothing,
            concurrent_compare_and_swap_loses_no_increment,
            concurrent_if_absent_has_one_winner,
            delete_absent_key_is_false,
            delete_live_key_removes_it,
            delete_expired_key_is_false,
            list_of_empty_store_is_empty,
            list_is_in_byte_order,
            list_filters_by_prefix,
            list_prefix_is_literal,
            list_starts_after_the_given_key,
            list_default_limit_is_100,
            list_limit_is_clamped_at_1000,
            list_cursor_is_last_key_and_has_more_is_exact,
            list_pages_through_2500_keys,
            list_excludes_expired_keys,
            list_entries_carry_version_and_expiry,
            list_options_are_validated,
            info_is_coherent,
            usage_counts_keys_and_values,
            json_helpers_round_trip,
        );

        #[test]
        fn model_test() {
            $crate::model::run("model_test", $options, $factory);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __cases {
    ($options:expr; $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::run_case(
                    stringify!($case),
                    $options,
                    |store, harness| $crate::cases::$case(store, harness),
                    $factory,
                );
            }
        )*

        /// Every case this module runs, for tooling that checks the suite is complete.
        #[allow(dead_code)]
        pub const CASES: &[&str] = &[$(stringify!($case)),*];
    };
}
