//! A typed async client of a store node's HTTP API, and [`RemoteStore`]: the
//! [`Store`](store_core::Store) trait over HTTP, so code written against a local store runs
//! unchanged against a node.
//!
//! ```no_run
//! # async fn demo() -> store_core::Result<()> {
//! use store_client::Client;
//! use store_core::{Bytes, Store};
//!
//! let client = Client::new("127.0.0.1:7700")?;
//! let cache = client.store("app:cache").await?; // a RemoteStore; NotFound if the node has none
//! cache.set("greeting", Bytes::from("hello"), None).await?;
//! assert_eq!(cache.get("greeting").await?, Some(Bytes::from("hello")));
//! # Ok(())
//! # }
//! ```
//!
//! Every failure is a [`store_core::Error`] with its kind, `retryable` and `indeterminate` flags
//! as the node sent them. Failures of the connection itself: a node that cannot be reached is
//! `Unavailable` (nothing was sent); a write whose answer never came is `Unavailable` or
//! `Timeout` with `indeterminate` set (it may have been applied).
//!
//! With the `harness` feature, `harness::NodeProcess` runs a real `store-node` binary for tests.

#[cfg(feature = "harness")]
pub mod harness;
mod remote;

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use store_core::{
    Condition, Entry, Error, ErrorKind, ListOptions, Page, PutOptions, Result, StoreInfo, Usage,
    from_millis,
};

pub use remote::RemoteStore;

/// Characters kept as they are in a path segment; everything else is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How long a request may take, connection included, unless [`Client::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// A connection to one node. Cheap to clone: clones share their connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// A store as the node describes it: its info, plus what it holds for in-memory stores.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct StoreDescription {
    /// Id, backend, consistency, capabilities and limits.
    #[serde(flatten)]
    pub info: StoreInfo,
    /// Entries and bytes held, for stores that keep their data in the node's memory.
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// Whether a request writes: a write whose answer is lost may have been applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Read,
    Write,
}

/// An answer with its status, headers and body.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header_u64(&self, name: &str) -> Option<u64> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::internal(format!(
                "the node answered HTTP {} with a body that is not the expected JSON: {e}",
                self.status.as_u16()
            ))
        })
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorFields,
}

#[derive(Deserialize)]
struct ErrorFields {
    kind: String,
    message: String,
    retryable: Option<bool>,
    #[serde(default)]
    indeterminate: bool,
    #[serde(default)]
    too_large: Option<TooLargeFields>,
}

#[derive(Deserialize)]
struct TooLargeFields {
    size: usize,
    limit: usize,
}

/// The kind an HTTP status stands for, when an answer has no error body (HEAD).
fn kind_of_status(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        400 | 413 => ErrorKind::Invalid,
        401 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        501 => ErrorKind::Unsupported,
        503 => ErrorKind::Unavailable,
        504 => ErrorKind::Timeout,
        _ => ErrorKind::Internal,
    }
}

/// The error an unsuccessful answer carries, as the node sent it.
fn error_of(answer: &Answer) -> Error {
    let Ok(body) = serde_json::from_slice::<ErrorBody>(&answer.body) else {
        return Error::new(
            kind_of_status(answer.status),
            format!("the node answered HTTP {}", answer.status.as_u16()),
        );
    };
    let e = body.error;
    let kind = ErrorKind::parse(&e.kind).unwrap_or(ErrorKind::Internal);
    let mut error = match e.too_large {
        Some(t) => Error::value_too_large(t.size, t.limit),
        None => Error::new(kind, e.message),
    };
    if let Some(retryable) = e.retryable {
        error = error.with_retryable(retryable);
    }
    if e.indeterminate {
        error = error.indeterminate();
    }
    error
}

/// `ttl` as exact decimal seconds (`1.500000000`), the form the node parses without rounding.
fn ttl_param(ttl: Duration) -> String {
    format!("{}.{:09}", ttl.as_secs(), ttl.subsec_nanos())
}

/// A `ttl` as the HTTP API and the CLI take it: a duration string (`30s`, `1h30m`) or a number
/// of seconds, read exactly to the nanosecond (`0.0015` is 1.5 ms, not the nearest binary
/// fraction). Empty means none; anything else is `Invalid` naming `ttl`.
pub fn parse_ttl(text: &str) -> Result<Option<Duration>> {
    if text.is_empty() {
        return Ok(None);
    }
    if let Some(ttl) = decimal_seconds(text) {
        return Ok(Some(ttl));
    }
    store_core::parse_duration(text)
        .map(Some)
        .map_err(|e| Error::invalid(format!("ttl: {}", e.message())))
}

/// `S` or `S.F` with up to 9 fractional digits, as a duration; `None` for anything else.
fn decimal_seconds(text: &str) -> Option<Duration> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 9 {
        return None;
    }
    let secs: u64 = whole.parse().ok()?;
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().ok()?
    };
    Some(Duration::new(secs, nanos))
}

#[derive(Deserialize)]
struct Written {
    key: String,
    version: u64,
    expires_at: Option<u64>,
}

#[derive(Deserialize)]
struct ListedItem {
    key: String,
    value: String,
    version: u64,
    expires_at: Option<u64>,
}

#[derive(Deserialize)]
struct Listed {
    items: Vec<ListedItem>,
    #[serde(default)]
    cursor: Option<String>,
    has_more: bool,
}

#[derive(Deserialize)]
struct Deleted {
    deleted: bool,
}

#[derive(Deserialize)]
struct Stores {
    stores: Vec<StoreDescription>,
}

impl Client {
    /// A client of the node at `addr` (`127.0.0.1:7700` or `http://host:port`).
    pub fn new(addr: &str) -> Result<Self> {
        Self::with_timeout(addr, DEFAULT_TIMEOUT)
    }

    fn with_timeout(addr: &str, timeout: Duration) -> Result<Self> {
        if addr.starts_with("https://") {
            return Err(Error::invalid(format!(
                "address {addr:?}: https is not supported by this client yet; use http:// (or \
                 host:port)"
            )));
        }
        let base = if addr.starts_with("http://") {
            addr.trim_end_matches('/').to_owned()
        } else {
            format!("http://{addr}")
        };
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| Error::internal("cannot set up an HTTP client").with_source(e))?;
        Ok(Self {
            base,
            token: None,
            http,
        })
    }

    /// Sends this bearer token with every request (nodes with `http.token_env`).
    #[must_use]
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Gives every request at most `timeout`, connection included (default one minute).
    pub fn timeout(self, timeout: Duration) -> Result<Self> {
        let token = self.token.clone();
        Ok(Self::with_timeout(&self.base, timeout)?.token(token))
    }

    /// The node's base URL, `http://host:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        effect: Effect,
    ) -> Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let lost = |e: reqwest::Error| self.lost(e, effect);
        let response = request.send().await.map_err(lost)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(lost)?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// A transport failure as a store error: whether a write may have been applied is known
    /// only when the connection was never made.
    fn lost(&self, e: reqwest::Error, effect: Effect) -> Error {
        if e.is_builder() {
            // The request could not even be made (a malformed address): nothing was sent.
            return Error::invalid(format!("cannot make a request to {}: {e}", self.base))
                .with_source(e);
        }
        let error = if e.is_connect() {
            return Error::unavailable(format!("cannot reach the node at {}", self.base))
                .with_source(e);
        } else if e.is_timeout() {
            Error::timeout(format!("no answer from the node at {} in time", self.base))
        } else {
            Error::unavailable(format!("the connection to {} failed", self.base))
        };
        let error = match effect {
            Effect::Read => error,
            Effect::Write => error.indeterminate(),
        };
        error.with_source(e)
    }

    async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        effect: Effect,
    ) -> Result<Answer> {
        let answer = self.call(method, path, body, effect).await?;
        if answer.status.is_success() {
            return Ok(answer);
        }
        let error = error_of(&answer);
        // A gateway's 502/503/504 without the node's error body (a proxy between us): whether a
        // write reached the node is unknown.
        let from_gateway = matches!(answer.status.as_u16(), 502..=504)
            && serde_json::from_slice::<ErrorBody>(&answer.body).is_err();
        Err(if from_gateway && effect == Effect::Write {
            error.indeterminate()
        } else {
            error
        })
    }

    fn key_path(store: &str, key: &str) -> String {
        format!("/v1/stores/{}/keys/{}", segment(store), segment(key))
    }

    /// `GET /v1/health`: the node's status as it reports it.
    pub async fn health(&self) -> Result<serde_json::Value> {
        self.ok(Method::GET, "/v1/health", None, Effect::Read)
            .await?
            .json()
    }

    /// `GET /v1/cluster`: the node's view of its cluster (`raft` and `gossip` sections, each
    /// `null` when the node runs no such engine).
    pub async fn cluster(&self) -> Result<serde_json::Value> {
        self.ok(Method::GET, "/v1/cluster", None, Effect::Read)
            .await?
            .json()
    }

    /// `POST /v1/cluster/raft/members`: adds `name` at `addr` (its internode address) as a
    /// learner, and promotes it to voter once caught up unless `learner`. Answers the new
    /// membership.
    pub async fn add_member(
        &self,
        name: &str,
        addr: &str,
        learner: bool,
    ) -> Result<serde_json::Value> {
        let body = serde_json::json!({
            "name": name,
            "addr": addr,
            "role": if learner { "learner" } else { "voter" },
        });
        self.ok(
            Method::POST,
            "/v1/cluster/raft/members",
            Some(Bytes::from(body.to_string())),
            Effect::Write,
        )
        .await?
        .json()
    }

    /// `DELETE /v1/cluster/raft/members/{name}`: removes a member. Answers the new membership.
    pub async fn remove_member(&self, name: &str) -> Result<serde_json::Value> {
        let path = format!("/v1/cluster/raft/members/{}", segment(name));
        self.ok(Method::DELETE, &path, None, Effect::Write)
            .await?
            .json()
    }

    /// Every store of the node.
    pub async fn stores(&self) -> Result<Vec<StoreDescription>> {
        let answer = self
            .ok(Method::GET, "/v1/stores", None, Effect::Read)
            .await?;
        Ok(answer.json::<Stores>()?.stores)
    }

    /// One store's description; `NotFound` when the node has no such store.
    pub async fn describe(&self, store: &str) -> Result<StoreDescription> {
        let path = format!("/v1/stores/{}", segment(store));
        self.ok(Method::GET, &path, None, Effect::Read)
            .await?
            .json()
    }

    /// A [`RemoteStore`] for `store`, after checking that the node has it.
    pub async fn store(&self, store: &str) -> Result<RemoteStore> {
        RemoteStore::connect(self.clone(), store).await
    }

    /// The live entry of `key`; `NotFound` when the key is absent (or the store unknown).
    pub async fn entry(&self, store: &str, key: &str) -> Result<Entry> {
        let answer = self
            .ok(Method::GET, &Self::key_path(store, key), None, Effect::Read)
            .await?;
        Ok(Entry {
            key: key.to_owned(),
            version: answer.header_u64("x-store-version").unwrap_or(0),
            expires_at: answer.header_u64("x-store-expires-at").map(from_millis),
            value: answer.body,
        })
    }

    /// Whether `key` is live (`HEAD`). A `HEAD` answer has no body, so an unknown store also
    /// answers `false` here; [`RemoteStore`] checks the store exists when it connects.
    pub async fn has(&self, store: &str, key: &str) -> Result<bool> {
        let answer = self
            .call(
                Method::HEAD,
                &Self::key_path(store, key),
                None,
                Effect::Read,
            )
            .await?;
        match answer.status.as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(error_of(&answer)),
        }
    }

    /// Writes `value` under `options` and returns the written entry.
    pub async fn put(
        &self,
        store: &str,
        key: &str,
        value: Bytes,
        options: PutOptions,
    ) -> Result<Entry> {
        let mut query = Vec::new();
        if let Some(ttl) = options.ttl {
            query.push(format!("ttl={}", ttl_param(ttl)));
        }
        match options.condition {
            Condition::IfAbsent => query.push("if_absent=true".to_owned()),
            Condition::IfVersion(v) => query.push(format!("if_version={v}")),
            _ => {}
        }
        let mut path = Self::key_path(store, key);
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        let answer = self
            .ok(Method::PUT, &path, Some(value.clone()), Effect::Write)
            .await?;
        let written: Written = answer.json()?;
        Ok(Entry {
            key: written.key,
            value,
            version: written.version,
            expires_at: written.expires_at.map(from_millis),
        })
    }

    /// Removes `key`; true if a live key was removed.
    pub async fn delete(&self, store: &str, key: &str) -> Result<bool> {
        let answer = self
            .ok(
                Method::DELETE,
                &Self::key_path(store, key),
                None,
                Effect::Write,
            )
            .await?;
        Ok(answer.json::<Deleted>()?.deleted)
    }

    /// One page of keys.
    pub async fn list(&self, store: &str, options: &ListOptions) -> Result<Page> {
        let mut query = vec![format!("prefix={}", segment(&options.prefix))];
        if let Some(after) = &options.after {
            query.push(format!("after={}", segment(after)));
        }
        if let Some(limit) = options.limit {
            query.push(format!("limit={limit}"));
        }
        let path = format!("/v1/stores/{}/keys?{}", segment(store), query.join("&"));
        let listed: Listed = self
            .ok(Method::GET, &path, None, Effect::Read)
            .await?
            .json()?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let items = listed
            .items
            .into_iter()
            .map(|item| {
                let value = b64.decode(&item.value).map_err(|e| {
                    Error::internal(format!(
                        "the node listed key {:?} with a value that is not base64: {e}",
                        item.key
                    ))
                })?;
                Ok(Entry {
                    key: item.key,
                    value: Bytes::from(value),
                    version: item.version,
                    expires_at: item.expires_at.map(from_millis),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page {
            items,
            cursor: listed.cursor,
            has_more: listed.has_more,
        })
    }

    /// Moves the node's manual clock forward by `by` and returns its new time. Only nodes built
    /// with the `test-clock` feature and started with `STORE_NODE_TEST_CLOCK_MS` have one; others
    /// answer `NotFound`.
    pub async fn advance_clock(&self, by: Duration) -> Result<SystemTime> {
        #[derive(Deserialize)]
        struct Now {
            now_ms: u64,
        }
        let nanos = by.as_nanos();
        let path = format!("/v1/test/clock/advance?nanos={nanos}");
        let now: Now = self
            .ok(Method::POST, &path, None, Effect::Write)
            .await?
            .json()?;
        Ok(from_millis(now.now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_sent_as_exact_decimal_seconds() {
        assert_eq!(ttl_param(Duration::from_micros(1500)), "0.001500000");
        assert_eq!(ttl_param(Duration::from_secs(30)), "30.000000000");
        assert_eq!(ttl_param(Duration::from_nanos(1)), "0.000000001");
    }

    #[test]
    fn ttls_parse_exactly() {
        let ttl = |s| parse_ttl(s).unwrap();
        assert_eq!(ttl(""), None);
        assert_eq!(ttl("30"), Some(Duration::from_secs(30)));
        assert_eq!(ttl("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(ttl("0.0015"), Some(Duration::from_micros(1500)));
        assert_eq!(ttl("0.000000001"), Some(Duration::from_nanos(1)));
        assert_eq!(ttl("1h30m"), Some(Duration::from_secs(5400)));
        assert!(parse_ttl("0.0000000001").is_err(), "more than 9 digits");
        assert!(parse_ttl("-1").is_err() && parse_ttl(".5").is_err());
        assert!(
            parse_ttl("soon")
                .unwrap_err()
                .message()
                .starts_with("ttl: ")
        );
        for d in [
            Duration::from_micros(1500),
            Duration::new(3_155_760_000, 1_000_000),
        ] {
            assert_eq!(parse_ttl(&ttl_param(d)).unwrap(), Some(d), "round trip");
        }
    }

    #[test]
    fn error_bodies_keep_kind_and_flags() {
        let answer = |status: u16, body: &str| Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: Default::default(),
            body: Bytes::copy_from_slice(body.as_bytes()),
        };
        let e = error_of(&answer(
            504,
            r#"{"error":{"kind":"Timeout","message":"lost","retryable":true,"indeterminate":true}}"#,
        ));
        assert_eq!((e.kind(), e.message()), (ErrorKind::Timeout, "lost"));
        assert!(e.retryable() && e.is_indeterminate());
        let e = error_of(&answer(
            413,
            r#"{"error":{"kind":"Invalid","message":"x","retryable":false,"too_large":{"size":9,"limit":4}}}"#,
        ));
        assert_eq!(e.too_large().map(|t| (t.size, t.limit)), Some((9, 4)));
        let e = error_of(&answer(503, "not json"));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.retryable());
        assert!(
            Client::new("https://example.com").is_err(),
            "no TLS in this client yet"
        );
        let e = error_of(&answer(
            400,
            r#"{"error":{"kind":"Strange","message":"m"}}"#,
        ));
        assert_eq!(e.kind(), ErrorKind::Internal);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(
            Client::key_path("app:kv", "a/b c🔑"),
            "/v1/stores/app%3Akv/keys/a%2Fb%20c%F0%9F%94%91"
        );
    }
}
