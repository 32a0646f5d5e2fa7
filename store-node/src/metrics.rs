//! `GET /metrics`: the node's numbers in the OpenMetrics text format, through `prometheus-client`.
//!
//! - `store_operations_total{store, op, outcome}`: store calls by outcome (`ok` or the error
//!   kind: `NotFound`, `Conflict`, …). A `get` of an absent key is `ok`: the store answered
//!   (the 404 is counted by `http_requests_total`).
//! - `store_operation_seconds{store, op}`: their latency, a histogram from 50 µs to 1.6 s.
//! - `store_keys{store}`: entries held, for stores that know it cheaply (in-memory ones).
//! - `http_requests_total{status}`: every answer by status code.
//! - `process_start_time_seconds` and `store_node_build_info{version}`.
//!
//! Every counter and histogram of a store is made when the node starts, so a request only finds
//! its handles by store id and bumps atomics; nothing is allocated per request.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use store_core::{ErrorKind, SharedStore};

/// A store call, as the HTTP API makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(
    non_camel_case_types,
    reason = "label values are written as the API's verbs"
)]
pub(crate) enum Op {
    get,
    has,
    put,
    delete,
    list,
}

const OPS: [Op; 5] = [Op::get, Op::has, Op::put, Op::delete, Op::list];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OpLabels {
    store: String,
    op: Op,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LatencyLabels {
    store: String,
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StoreLabel {
    store: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// One operation's handles on one store: `ok`, then one counter per
/// [`ErrorKind::ALL`] entry.
struct OpHandles {
    outcomes: [Counter; ErrorKind::ALL.len() + 1],
    latency: Histogram,
}

type Histograms = Family<LatencyLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The node's metrics and the registry that encodes them.
pub(crate) struct Metrics {
    registry: Registry,
    handles: HashMap<String, Vec<OpHandles>>,
    /// Kinds added after this was written land here rather than nowhere.
    operations: Family<OpLabels, Counter>,
    keys: Family<StoreLabel, Gauge>,
    http: Family<StatusLabel, Counter>,
    /// The counter of each status code once it was first answered: a request then bumps an
    /// atomic without taking the family's lock.
    by_status: Box<[OnceLock<Counter>]>,
}

impl Metrics {
    /// Metrics for the stores `ids`, every handle made now.
    pub(crate) fn new<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        let mut registry = Registry::default();
        let operations = Family::<OpLabels, Counter>::default();
        let latency = Histograms::new_with_constructor(latency_histogram);
        let keys = Family::<StoreLabel, Gauge>::default();
        let http = Family::<StatusLabel, Counter>::default();
        let mut handles = HashMap::new();
        for id in ids {
            let per_op = OPS
                .iter()
                .map(|&op| {
                    let counter = |outcome| {
                        operations.get_or_create_owned(&OpLabels {
                            store: id.to_owned(),
                            op,
                            outcome,
                        })
                    };
                    let mut outcomes = std::array::from_fn(|_| Counter::default());
                    outcomes[0] = counter("ok");
                    for (slot, kind) in outcomes[1..].iter_mut().zip(ErrorKind::ALL) {
                        *slot = counter(kind.as_str());
                    }
                    OpHandles {
                        outcomes,
                        latency: latency.get_or_create_owned(&LatencyLabels {
                            store: id.to_owned(),
                            op,
                        }),
                    }
                })
                .collect();
            handles.insert(id.to_owned(), per_op);
        }
        registry.register(
            "store_operations",
            "Store calls by store, operation and outcome (ok or the error kind)",
            operations.clone(),
        );
        registry.register(
            "store_operation_seconds",
            "Latency of store calls by store and operation",
            latency,
        );
        registry.register(
            "store_keys",
            "Entries held, for stores that keep their data in the node's memory",
            keys.clone(),
        );
        registry.register("http_requests", "HTTP answers by status code", http.clone());
        let started = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        started.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        registry.register(
            "process_start_time_seconds",
            "When the node started, in seconds since the Unix epoch",
            started,
        );
        registry.register(
            "store_node_build",
            "The node's build",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Self {
            registry,
            handles,
            operations,
            keys,
            http,
            by_status: (0..600).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts one store call of `op` on store `id` that took `took` and ended in `outcome`.
    pub(crate) fn operation(
        &self,
        id: &str,
        op: Op,
        took: Duration,
        outcome: Result<(), ErrorKind>,
    ) {
        let Some(per_op) = self.handles.get(id) else {
            return; // not a store of this node: the HTTP counter has it
        };
        let Some(h) = OPS
            .iter()
            .position(|o| *o == op)
            .and_then(|i| per_op.get(i))
        else {
            return;
        };
        h.latency.observe(took.as_secs_f64());
        let slot = match outcome {
            Ok(()) => Some(0),
            Err(kind) => ErrorKind::ALL
                .iter()
                .position(|k| *k == kind)
                .map(|i| i + 1),
        };
        match slot.and_then(|i| h.outcomes.get(i)) {
            Some(counter) => {
                counter.inc();
            }
            None => {
                if let Err(kind) = outcome {
                    let labels = OpLabels {
                        store: id.to_owned(),
                        op,
                        outcome: kind.as_str(),
                    };
                    self.operations.get_or_create(&labels).inc();
                }
            }
        }
    }

    /// Counts one HTTP answer.
    pub(crate) fn http(&self, status: u16) {
        let make = || self.http.get_or_create_owned(&StatusLabel { status });
        match self.by_status.get(usize::from(status)) {
            Some(slot) => slot.get_or_init(make).inc(),
            None => make().inc(),
        };
    }

    /// The text to answer `GET /metrics` with, after reading each store's entry count.
    pub(crate) fn encode<'a>(&self, stores: impl IntoIterator<Item = &'a SharedStore>) -> String {
        for store in stores {
            if let Some(usage) = store.usage() {
                let labels = StoreLabel {
                    store: store.info().id,
                };
                self.keys
                    .get_or_create(&labels)
                    .set(i64::try_from(usage.entries).unwrap_or(i64::MAX));
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_outcome_and_timed() {
        let m = Metrics::new(["app:kv"]);
        m.operation("app:kv", Op::put, Duration::from_micros(80), Ok(()));
        m.operation(
            "app:kv",
            Op::put,
            Duration::from_micros(80),
            Err(ErrorKind::Conflict),
        );
        m.operation("app:nope", Op::get, Duration::ZERO, Ok(()));
        m.http(200);
        let text = m.encode([]);
        assert!(
            text.contains(r#"store_operations_total{store="app:kv",op="put",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"store_operations_total{store="app:kv",op="put",outcome="Conflict"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"store_operation_seconds_count{store="app:kv",op="put"} 2"#),
            "{text}"
        );
        assert!(!text.contains("app:nope"), "{text}");
        assert!(
            text.contains(r#"http_requests_total{status="200"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
