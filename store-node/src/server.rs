//! `store-node serve`: the HTTP API (`docs/http-api.md`) over a loaded registry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::failures::FailureLog;
use crate::metrics::{Metrics, Op};
use anyhow::Context as _;
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use store_config::{NodeConfig, Registry};
use store_core::{
    Condition, Error, ErrorKind, ListOptions, PutOptions, SharedStore, Store, to_millis,
};
use store_crdt::CrdtNode;
use store_raft::RaftNode;

/// What every handler shares.
pub(crate) struct App {
    registry: Registry,
    /// Largest value per store id, from each store's capabilities.
    limits: HashMap<String, usize>,
    /// The bearer token clients must send, if any.
    token: Option<String>,
    /// Storage failures logged so far, to log each cause once per window.
    failures: FailureLog,
    /// What `GET /metrics` reports; `None` when `http.metrics` is off.
    metrics: Option<Metrics>,
    /// The node's Raft engine, when its config has a `cluster.raft` section.
    raft: Option<Arc<RaftNode>>,
    gossip: Option<Arc<CrdtNode>>,
    /// The manual clock tests move, in a `test-clock` build started with one.
    #[cfg(feature = "test-clock")]
    pub(crate) test_clock: Option<store_core::ManualClock>,
    /// The offset clock of a `test-clock` build started with one (clock faults).
    #[cfg(feature = "test-clock")]
    pub(crate) test_offset: Option<crate::test_clock::OffsetClock>,
}

impl App {
    /// A store operation's error as an answer, logged if the storage failed.
    fn failed(&self, id: &str, e: Error) -> ApiError {
        self.failures.record(id, &e);
        ApiError(e)
    }

    /// Runs one store call, counted and timed under `op` when metrics are on.
    async fn call<T>(
        &self,
        id: &str,
        op: Op,
        call: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let Some(metrics) = &self.metrics else {
            return call.await;
        };
        let started = Instant::now();
        let result = call.await;
        let outcome = result.as_ref().map(drop).map_err(Error::kind);
        metrics.operation(id, op, started.elapsed(), outcome);
        result
    }
}

/// A store error as an HTTP answer: `{error: {kind, message, retryable, indeterminate}}`;
/// `indeterminate` is true when a write may or may not have been applied, and a value over its
/// store's limit adds `too_large: {size, limit}`.
pub(crate) struct ApiError(Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

fn status_of(e: &Error) -> StatusCode {
    if e.too_large().is_some() {
        return StatusCode::PAYLOAD_TOO_LARGE;
    }
    match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Unavailable | ErrorKind::Closed => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::PermissionDenied => StatusCode::UNAUTHORIZED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let mut error = json!({
            "kind": e.kind().as_str(),
            "message": e.message(),
            "retryable": e.retryable(),
            "indeterminate": e.is_indeterminate(),
        });
        if let (Some(t), Some(fields)) = (e.too_large(), error.as_object_mut()) {
            fields.insert(
                "too_large".to_owned(),
                json!({ "size": t.size, "limit": t.limit }),
            );
        }
        let body = json!({ "error": error });
        (status_of(&e), axum::Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// The store id and key of `/v1/stores/{id}/keys/{key…}`, percent-decoded from the raw path.
fn id_and_key(path: &str) -> Result<(String, Option<String>), Error> {
    let rest = path.strip_prefix("/v1/stores/").unwrap_or(path);
    let (id, key) = match rest.split_once('/') {
        Some((id, tail)) => (id, tail.strip_prefix("keys/")),
        None => (rest, None),
    };
    let decode = |what: &str, raw: &str| {
        percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| {
                Error::invalid(format!(
                    "{what} {raw:?}: not valid UTF-8 after percent-decoding"
                ))
            })
    };
    let id = decode("store id", id)?;
    let key = key.map(|k| decode("key", k)).transpose()?;
    Ok((id, key))
}

fn store(app: &App, id: &str) -> Result<SharedStore, Error> {
    app.registry.store(id)
}

/// A store's info, plus `usage` (entries, bytes) for stores that keep their data in memory.
fn described(store: &SharedStore) -> serde_json::Value {
    let mut v = json!(store.info());
    if let (Some(usage), Some(fields)) = (store.usage(), v.as_object_mut()) {
        fields.insert("usage".to_owned(), json!(usage));
    }
    v
}

/// 200 only when every engine the node runs can serve (the Raft engine knows a leader, the
/// gossip engine has joined its cluster); otherwise 503 with what is missing.
async fn health(State(app): State<Arc<App>>) -> Response {
    let mut missing = Vec::new();
    let mut raft = serde_json::Value::Null;
    if let Some(node) = &app.raft {
        match node.engine().map(|e| e.leader()) {
            None => missing.push("raft: the engine has not started"),
            Some(None) => missing.push("raft: no leader is known"),
            Some(Some(leader)) => raft = json!({ "leader": leader }),
        }
    }
    if let Some(node) = &app.gossip {
        match node.engine().map(|e| e.joined()) {
            None => missing.push("gossip: the engine has not started"),
            Some(false) => missing.push("gossip: no seed has answered yet"),
            Some(true) => {}
        }
    }
    let stores = app.registry.store_ids().count();
    if missing.is_empty() {
        axum::Json(json!({ "status": "ok", "stores": stores, "raft": raft })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "unavailable", "missing": missing, "stores": stores })),
        )
            .into_response()
    }
}

fn raft_engine(app: &App) -> Result<store_raft::RaftEngine, Error> {
    let node = app.raft.as_ref().ok_or_else(|| {
        Error::unsupported("this node runs no Raft engine (its config has no cluster.raft section)")
    })?;
    node.engine()
        .cloned()
        .ok_or_else(|| Error::unavailable("the Raft engine has not started"))
}

/// `GET /v1/cluster`.
async fn cluster(State(app): State<Arc<App>>) -> ApiResult {
    let raft = match &app.raft {
        Some(_) => json!(raft_engine(&app)?.status().await?),
        None => serde_json::Value::Null,
    };
    let gossip = match &app.gossip {
        Some(node) => {
            let engine = node
                .engine()
                .ok_or_else(|| Error::unavailable("the gossip engine has not started"))?;
            json!({
                "joined": engine.joined(),
                "snapshot_current": engine.snapshot_current(),
                "members": engine.members().await,
            })
        }
        None => serde_json::Value::Null,
    };
    Ok(axum::Json(json!({
        "name": app.registry.node().name(),
        "raft": raft,
        "gossip": gossip,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    name: String,
    addr: String,
    #[serde(default)]
    role: Option<String>,
}

/// `POST /v1/cluster/raft/members` with `{name, addr, role}`.
async fn add_member(State(app): State<Arc<App>>, body: axum::body::Bytes) -> ApiResult {
    let member: NewMember = serde_json::from_slice(&body).map_err(|e| {
        Error::invalid(format!(
            "the body must be {{\"name\", \"addr\", \"role\"}}: {e}"
        ))
    })?;
    let voter = match member.role.as_deref() {
        None | Some("voter") => true,
        Some("learner") => false,
        Some(other) => {
            return Err(Error::invalid(format!(
                "role {other:?}: must be \"voter\" or \"learner\""
            ))
            .with_field("role")
            .into());
        }
    };
    let engine = raft_engine(&app)?;
    let members = engine.add_member(&member.name, &member.addr, voter).await?;
    Ok(axum::Json(json!({ "members": members })).into_response())
}

/// `DELETE /v1/cluster/raft/members/{name}`.
async fn remove_member(
    State(app): State<Arc<App>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> ApiResult {
    let engine = raft_engine(&app)?;
    let members = engine.remove_member(&name).await?;
    Ok(axum::Json(json!({ "members": members })).into_response())
}

async fn stores(State(app): State<Arc<App>>) -> ApiResult {
    let mut out = Vec::new();
    for id in app.registry.store_ids() {
        out.push(described(&store(&app, id)?));
    }
    Ok(axum::Json(json!({ "stores": out })).into_response())
}

async fn store_info(State(app): State<Arc<App>>, req: Request) -> ApiResult {
    let (id, _) = id_and_key(req.uri().path())?;
    Ok(axum::Json(described(&store(&app, &id)?)).into_response())
}

async fn get_key(State(app): State<Arc<App>>, req: Request) -> ApiResult {
    let (id, key) = id_and_key(req.uri().path())?;
    let key = key.unwrap_or_default();
    let store = store(&app, &id)?;
    let entry = app
        .call(&id, Op::get, store.entry(&key))
        .await
        .map_err(|e| app.failed(&id, e))?;
    let Some(entry) = entry else {
        return Err(Error::not_found(format!(
            "key {}: absent",
            store_core::backend::validate::quote(&key)
        ))
        .into());
    };
    let mut headers = HeaderMap::new();
    headers.insert("x-store-version", HeaderValue::from(entry.version));
    if let Some(at) = entry.expires_at {
        headers.insert("x-store-expires-at", HeaderValue::from(to_millis(at)));
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok((StatusCode::OK, headers, entry.value).into_response())
}

async fn head_key(State(app): State<Arc<App>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let found = async {
        let (id, key) = id_and_key(&path)?;
        let store = store(&app, &id)?;
        let key = key.unwrap_or_default();
        app.call(&id, Op::has, store.has(&key))
            .await
            .inspect_err(|e| {
                app.failures.record(&id, e);
            })
    }
    .await;
    match found {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => status_of(&e).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct PutQuery {
    ttl: Option<String>,
    if_absent: Option<String>,
    if_version: Option<String>,
}

fn flag(name: &str, v: &str) -> Result<bool, Error> {
    match v {
        "" | "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        other => Err(Error::invalid(format!(
            "{name} {other:?}: expected true or false"
        ))),
    }
}

async fn put_key(
    State(app): State<Arc<App>>,
    Query(q): Query<PutQuery>,
    req: Request,
) -> ApiResult {
    let (id, key) = id_and_key(req.uri().path())?;
    let key = key.unwrap_or_default();
    let store = store(&app, &id)?;
    let limit = app
        .limits
        .get(&id)
        .copied()
        .unwrap_or_else(|| store.info().capabilities.max_value_size);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|n| *n > limit) {
        return Err(Error::value_too_large(n, limit).into());
    }
    let mut options = PutOptions::new();
    if let Some(ttl) = q.ttl.as_deref() {
        options = options.with_ttl(store_client::parse_ttl(ttl)?);
    }
    let if_absent = q
        .if_absent
        .as_deref()
        .map(|v| flag("if_absent", v))
        .transpose()?
        .unwrap_or(false);
    let if_version = q
        .if_version
        .as_deref()
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| Error::invalid(format!("if_version {v:?}: expected a version number")))
        })
        .transpose()?;
    options = match (if_absent, if_version) {
        (true, Some(_)) => {
            return Err(Error::invalid("if_absent and if_version: give only one").into());
        }
        (true, None) => options.condition(Condition::IfAbsent),
        (false, Some(v)) => options.condition(Condition::IfVersion(v)),
        (false, None) => options,
    };
    // At most `limit + 1` bytes are read: a longer body is refused without buffering it whole.
    let cap = limit.saturating_add(1);
    let body = axum::body::to_bytes(req.into_body(), cap)
        .await
        .map_err(|e| {
            let cause = e.into_inner();
            if cause.is::<http_body_util::LengthLimitError>() {
                Error::value_too_large(cap, limit).context("request body")
            } else {
                // The client went away mid-body, or sent a malformed one: nothing was written.
                Error::invalid(format!("request body: could not be read: {cause}"))
            }
        })?;
    if body.len() > limit {
        return Err(Error::value_too_large(body.len(), limit).into());
    }
    let e = app
        .call(&id, Op::put, store.put(&key, body, options))
        .await
        .map_err(|e| app.failed(&id, e))?;
    Ok(axum::Json(json!({
        "key": e.key,
        "version": e.version,
        "expires_at": e.expires_at.map(to_millis),
    }))
    .into_response())
}

async fn delete_key(State(app): State<Arc<App>>, req: Request) -> ApiResult {
    let (id, key) = id_and_key(req.uri().path())?;
    let store = store(&app, &id)?;
    let key = key.unwrap_or_default();
    let deleted = app
        .call(&id, Op::delete, store.delete(&key))
        .await
        .map_err(|e| app.failed(&id, e))?;
    Ok(axum::Json(json!({ "deleted": deleted })).into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

async fn list_keys(
    State(app): State<Arc<App>>,
    Query(q): Query<ListQuery>,
    req: Request,
) -> ApiResult {
    let (id, _) = id_and_key(req.uri().path())?;
    let mut options = ListOptions::new()
        .prefix(q.prefix.unwrap_or_default())
        .with_after(q.after.filter(|a| !a.is_empty()));
    if let Some(limit) = q.limit.filter(|l| !l.is_empty()) {
        let n = limit
            .parse::<usize>()
            .map_err(|_| Error::invalid(format!("limit {limit:?}: expected a number")))?;
        options = options.limit(n);
    }
    let store = store(&app, &id)?;
    let page = app
        .call(&id, Op::list, store.list(options))
        .await
        .map_err(|e| app.failed(&id, e))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let items: Vec<_> = page
        .items
        .iter()
        .map(|e| {
            json!({
                "key": e.key,
                "value": b64.encode(&e.value),
                "version": e.version,
                "expires_at": e.expires_at.map(to_millis),
            })
        })
        .collect();
    Ok(
        axum::Json(json!({ "items": items, "cursor": page.cursor, "has_more": page.has_more }))
            .into_response(),
    )
}

async fn no_route(req: Request) -> Response {
    let path = req.uri().path();
    let e = if path.starts_with("/v1/stores/") && path.contains("/keys/") {
        Error::invalid("key: must not be empty")
    } else {
        Error::not_found(format!("no route {} {path}", req.method()))
    };
    ApiError(e).into_response()
}

/// Equal in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authorize(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(token) = &app.token
        && req.uri().path() != "/v1/health"
    {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same(given.as_bytes(), token.as_bytes()) {
            return ApiError(Error::permission_denied("missing or wrong bearer token"))
                .into_response();
        }
    }
    next.run(req).await
}

/// `GET /metrics`: OpenMetrics text; 404 when `http.metrics` is off.
async fn metrics(State(app): State<Arc<App>>) -> Response {
    let Some(metrics) = &app.metrics else {
        return ApiError(Error::not_found(
            "metrics are off on this node (http.metrics: false)",
        ))
        .into_response();
    };
    let stores: Vec<SharedStore> = app
        .registry
        .store_ids()
        .filter_map(|id| app.registry.store(id).ok())
        .collect();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(&stores),
    )
        .into_response()
}

async fn log_request(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let started = Instant::now();
    let response = next.run(req).await;
    if let Some(metrics) = &app.metrics {
        metrics.http(response.status().as_u16());
    }
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

fn router(app: Arc<App>) -> Router {
    let router = Router::new()
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/raft/members", axum::routing::post(add_member))
        .route(
            "/v1/cluster/raft/members/{name}",
            axum::routing::delete(remove_member),
        )
        .route("/v1/stores", get(stores))
        .route("/v1/stores/{id}", get(store_info))
        .route("/v1/stores/{id}/keys", get(list_keys))
        .route(
            "/v1/stores/{id}/keys/{*key}",
            get(get_key).head(head_key).put(put_key).delete(delete_key),
        )
        .fallback(no_route);
    #[cfg(feature = "test-clock")]
    let router = router
        .route(
            "/v1/test/clock/advance",
            axum::routing::post(crate::test_clock::advance),
        )
        .route(
            "/v1/test/clock/offset",
            axum::routing::post(crate::test_clock::offset),
        );
    router
        .layer(middleware::from_fn_with_state(Arc::clone(&app), authorize))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            log_request,
        ))
        .with_state(app)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// The variable naming the defect a negative control injects (feature `fault-injection`).
const FAULT_VAR: &str = "STORE_NODE_FAULT";

/// Turns on the defect `STORE_NODE_FAULT` names, if it names one: refused (the node does not
/// start) for an unknown name, or in a build without the `fault-injection` feature, so a
/// negative control never runs a sound node by mistake.
fn inject_fault() -> anyhow::Result<()> {
    let Some(name) = std::env::var_os(FAULT_VAR) else {
        return Ok(());
    };
    let name = name.to_string_lossy();
    store_core::backend::fault::inject(&name).map_err(|e| anyhow::anyhow!("{FAULT_VAR}: {e}"))?;
    let what = store_core::backend::fault::describe(&name).unwrap_or_default();
    tracing::warn!("fault injection: {name} ({what}); this node breaks its promises on purpose");
    Ok(())
}

/// Runs the node until SIGINT or SIGTERM; then stops accepting, finishes requests in flight,
/// stops timers and closes databases.
pub(crate) async fn serve(config: &NodeConfig, bind: Option<String>) -> anyhow::Result<()> {
    inject_fault()?;
    let context = config.context();
    #[cfg(feature = "test-clock")]
    let test_clock = crate::test_clock::from_env()?;
    #[cfg(feature = "test-clock")]
    let test_offset = crate::test_clock::offset_from_env()?;
    #[cfg(feature = "test-clock")]
    let context = match (&test_clock, &test_offset) {
        (Some(clock), _) => context.clock(clock.shared()),
        (None, Some(clock)) => context.clock(std::sync::Arc::new(clock.clone())),
        (None, None) => context,
    };
    // A node with cluster.raft is a member even before any store.kv.raft entry uses it.
    let raft = match config.cluster.as_ref().and_then(|c| c.raft.as_ref()) {
        Some(_) => Some(store_config::raft_node(&context).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    // Likewise, a node with cluster.gossip is a member before any store.kv.crdt entry.
    let gossip = match config.cluster.as_ref().and_then(|c| c.gossip.as_ref()) {
        Some(_) => Some(store_config::crdt_node(&context).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    let registry = config
        .load_registry(Registry::builder().node(context))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let token = match &config.http.token_env {
        Some(var) => Some(
            std::env::var(var)
                .ok()
                .filter(|t| !t.is_empty())
                .with_context(|| {
                    format!("http.token_env: environment variable {var} is not set")
                })?,
        ),
        None => None,
    };
    let store_ids: Vec<String> = registry.store_ids().map(str::to_owned).collect();
    // Read once from each store's capabilities: the body limit of every PUT.
    let limits = registry
        .entries()
        .filter_map(|e| e.store())
        .map(|s| {
            let info = s.info();
            (info.id, info.capabilities.max_value_size)
        })
        .collect();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("data_dir {}", config.data_dir.display()))?;
    if let Err(e) = registry.start().await {
        // Stop and close whatever started before the failure (timers, connections).
        registry.shutdown().await;
        anyhow::bail!("{e}");
    }
    let app = Arc::new(App {
        registry,
        limits,
        token,
        failures: FailureLog::default(),
        raft,
        gossip,
        metrics: config
            .http
            .metrics
            .then(|| Metrics::new(store_ids.iter().map(String::as_str))),
        #[cfg(feature = "test-clock")]
        test_clock,
        #[cfg(feature = "test-clock")]
        test_offset,
    });
    let addr = bind.unwrap_or_else(|| config.bind.to_string());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() && app.token.is_none() && !config.http.insecure {
        anyhow::bail!(
            "{local} is not a loopback address: set http.token_env or http.insecure: true"
        );
    }
    // The one line on stdout: scripts and tests read the address from it.
    println!("listening on http://{local}");
    tracing::info!(%local, stores = app.registry.store_ids().count(), "serving");
    axum::serve(listener, router(Arc::clone(&app)))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    app.registry.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_and_reject_bad_utf8() {
        assert_eq!(
            id_and_key("/v1/stores/app:kv/keys/a%2Fb/c%20d").unwrap(),
            ("app:kv".to_owned(), Some("a/b/c d".to_owned()))
        );
        assert_eq!(
            id_and_key("/v1/stores/app:kv").unwrap(),
            ("app:kv".to_owned(), None)
        );
        let e = id_and_key("/v1/stores/app:kv/keys/%FF").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
    }

    #[test]
    fn ttls_and_flags() {
        assert!(flag("if_absent", "").unwrap());
        assert!(flag("if_absent", "maybe").is_err());
    }

    #[tokio::test]
    async fn error_bodies_say_whether_a_write_may_have_been_applied() {
        for (e, indeterminate) in [
            (Error::write_timeout("lost mid-write"), true),
            (Error::unavailable("disk full (write not applied)"), false),
        ] {
            let response = ApiError(e).into_response();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["indeterminate"], json!(indeterminate), "{v}");
            assert_eq!(v["error"]["retryable"], json!(true), "{v}");
        }
    }

    #[test]
    fn every_kind_has_its_status() {
        let cases = [
            (Error::not_found("x"), 404),
            (Error::already_exists("x"), 409),
            (Error::conflict("x"), 409),
            (Error::invalid("x"), 400),
            (Error::value_too_large(2, 1), 413),
            (Error::unsupported("x"), 501),
            (Error::unavailable("x"), 503),
            (Error::closed("x"), 503),
            (Error::timeout("x"), 504),
            (Error::write_timeout("x"), 504),
            (Error::permission_denied("x"), 401),
            (Error::internal("x"), 500),
        ];
        for (e, status) in cases {
            assert_eq!(status_of(&e).as_u16(), status, "{e}");
        }
    }

    #[test]
    fn constant_time_comparison() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret!"));
    }
}
