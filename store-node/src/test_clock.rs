//! A clock the tests move over HTTP (feature `test-clock`, never in a release build): with
//! `STORE_NODE_TEST_CLOCK_MS=<epoch ms>` in its environment the node's stores read a manual
//! clock starting there, and `POST /v1/test/clock/advance?nanos=N` moves it forward and answers
//! `{now_ms}`. That lets the conformance suite's expiry cases run against a live node without
//! sleeping.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use store_core::{Clock, Error, ManualClock};

use crate::server::{ApiError, App};

/// The variable that turns the manual clock on, holding its start (epoch milliseconds).
pub(crate) const VAR: &str = "STORE_NODE_TEST_CLOCK_MS";

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
