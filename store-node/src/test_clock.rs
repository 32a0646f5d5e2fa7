//! A clock the tests move over HTTP (feature `test-clock`, never in a release build): with
//! `STORE_NODE_TEST_CLOCK_MS=<epoch ms>` in its environment the node's stores read a manual
//! clock starting there, and `POST /v1/test/clock/advance?nanos=N` moves it forward and answers
//! `{now_ms}`. That lets the conformance suite's expiry cases run against a live node without
//! sleeping.
//!
//! With `STORE_NODE_TEST_CLOCK_OFFSET=1` instead, the node reads the system clock plus an offset
//! that `POST /v1/test/clock/offset?ms=N` sets (N may be negative; answers `{offset_ms,
//! now_ms}`): the clock faults of `cargo xtask test-cluster` (a clock ahead or behind, and a
//! step back when the offset is lowered).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use store_core::{Clock, Error, ManualClock};

use crate::server::{ApiError, App};

/// The variable that turns the manual clock on, holding its start (epoch milliseconds).
pub(crate) const VAR: &str = "STORE_NODE_TEST_CLOCK_MS";
/// The variable that turns the offset clock on (`1`).
pub(crate) const OFFSET_VAR: &str = "STORE_NODE_TEST_CLOCK_OFFSET";

/// The system clock plus an offset the tests set.
#[derive(Debug, Clone, Default)]
pub(crate) struct OffsetClock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock for OffsetClock {
    fn now(&self) -> SystemTime {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        let by = Duration::from_millis(offset.unsigned_abs());
        let now = SystemTime::now();
        if offset >= 0 {
            now.checked_add(by).unwrap_or(now)
        } else {
            now.checked_sub(by).unwrap_or(now)
        }
    }
}

/// The offset clock the environment asks for, if it does.
pub(crate) fn offset_from_env() -> anyhow::Result<Option<OffsetClock>> {
    match std::env::var(OFFSET_VAR) {
        Err(_) => Ok(None),
        Ok(text) if text == "1" => {
            if std::env::var_os(VAR).is_some() {
                anyhow::bail!("{OFFSET_VAR} and {VAR}: give one clock, not both");
            }
            tracing::warn!("serving with an offset clock: a test build");
            Ok(Some(OffsetClock::default()))
        }
        Ok(text) => anyhow::bail!("{OFFSET_VAR} {text:?}: expected 1"),
    }
}

#[derive(Deserialize)]
pub(crate) struct Offset {
    ms: Option<String>,
}

/// `POST /v1/test/clock/offset?ms=N`.
pub(crate) async fn offset(
    State(app): State<Arc<App>>,
    Query(q): Query<Offset>,
) -> Result<Response, ApiError> {
    let Some(clock) = &app.test_offset else {
        return Err(Error::not_found(format!(
            "this node has no offset clock (start it with {OFFSET_VAR}=1)"
        ))
        .into());
    };
    let text = q.ms.unwrap_or_default();
    let ms: i64 = text
        .parse()
        .ok()
        .filter(|ms: &i64| ms.unsigned_abs() <= 365 * 24 * 3600 * 1000)
        .ok_or_else(|| {
            Error::invalid(format!(
                "ms {text:?}: expected milliseconds, at most a year either way"
            ))
            .with_field("ms")
        })?;
    clock.offset_ms.store(ms, Ordering::Relaxed);
    Ok(axum::Json(json!({ "offset_ms": ms, "now_ms": clock.now_ms() })).into_response())
}

/// The manual clock the environment asks for, if it does.
pub(crate) fn from_env() -> anyhow::Result<Option<ManualClock>> {
    match std::env::var(VAR) {
        Err(_) => Ok(None),
        Ok(text) => {
            let start: u64 = text
                .parse()
                .map_err(|_| anyhow::anyhow!("{VAR} {text:?}: expected epoch milliseconds"))?;
            tracing::warn!(start, "serving with a manual clock: a test build");
            Ok(Some(ManualClock::at_millis(start)))
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct Advance {
    nanos: Option<String>,
}

/// `POST /v1/test/clock/advance?nanos=N`.
pub(crate) async fn advance(
    State(app): State<Arc<App>>,
    Query(q): Query<Advance>,
) -> Result<Response, ApiError> {
    let Some(clock) = &app.test_clock else {
        return Err(Error::not_found(format!(
            "this node has no manual clock (start it with {VAR})"
        ))
        .into());
    };
    let text = q.nanos.unwrap_or_default();
    let nanos: u64 = text
        .parse()
        .map_err(|_| Error::invalid(format!("nanos {text:?}: expected a number")))?;
    clock.advance(Duration::from_nanos(nanos));
    Ok(axum::Json(json!({ "now_ms": clock.now_ms() })).into_response())
}
