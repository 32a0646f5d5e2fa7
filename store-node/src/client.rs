//! The client subcommands: talk to a node's HTTP API.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// Characters kept as they are in a path segment; everything else is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A connection to one node.
pub(crate) struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    pub(crate) json: bool,
}

/// An answer: status and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).context("the node answered something that is not JSON")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The answer's error as `Kind: message`, for a failed request; a write whose outcome is
    /// unknown says so.
    fn error(&self) -> anyhow::Error {
        match self.json() {
            Ok(v) => anyhow::anyhow!(
                "{}: {} (HTTP {}){}",
                v["error"]["kind"].as_str().unwrap_or("Error"),
                v["error"]["message"].as_str().unwrap_or(""),
                self.status,
                if v["error"]["indeterminate"].as_bool() == Some(true) {
                    "; the write may or may not have been applied"
                } else {
                    ""
                }
            ),
            Err(_) => anyhow::anyhow!("HTTP {}", self.status),
        }
    }
}

fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

impl Client {
    pub(crate) fn new(addr: &str, token: Option<String>, json: bool) -> Self {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_owned()
        } else {
            format!("http://{addr}")
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build();
        Self {
            base,
            token,
            agent: ureq::Agent::new_with_config(config),
            json,
        }
    }

    fn request(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let response = match body {
            Some(b) => self.agent.run(req.body(b)?),
            None => self.agent.run(req.body(())?),
        }
        .with_context(|| format!("cannot reach the node at {}", self.base))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = response
            .into_body()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .context("reading the answer")?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    fn ok_json(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Value> {
        let answer = self.request(method, path, body)?;
        if answer.status >= 300 {
            return Err(answer.error());
        }
        answer.json()
    }

    fn key_path(store: &str, key: &str) -> String {
        format!("/v1/stores/{}/keys/{}", segment(store), segment(key))
    }

    pub(crate) fn stores(&self) -> Result<()> {
        let v = self.ok_json("GET", "/v1/stores", None)?;
        if self.json {
            return print_json(&v);
        }
        for s in v["stores"].as_array().into_iter().flatten() {
            println!(
                "{:<24} {:<8} {:<12} durable={} versioned={}",
                s["id"].as_str().unwrap_or(""),
                s["backend"].as_str().unwrap_or(""),
                s["consistency"].as_str().unwrap_or(""),
                s["durable"],
                s["versioned"]
            );
        }
        Ok(())
    }

    pub(crate) fn info(&self, store: &str) -> Result<()> {
        let v = self.ok_json("GET", &format!("/v1/stores/{}", segment(store)), None)?;
        print_json(&v)
    }

    pub(crate) fn get(&self, store: &str, key: &str) -> Result<()> {
        let answer = self.request("GET", &Self::key_path(store, key), None)?;
        if answer.status >= 300 {
            return Err(answer.error());
        }
        if self.json {
            let b64 = base64::engine::general_purpose::STANDARD;
            return print_json(&serde_json::json!({
                "key": key,
                "value": b64.encode(&answer.body),
                "version": answer.header("x-store-version").and_then(|v| v.parse::<u64>().ok()),
                "expires_at": answer.header("x-store-expires-at").and_then(|v| v.parse::<u64>().ok()),
            }));
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&answer.body)?;
        if answer.body.last() != Some(&b'\n') && std::io::IsTerminal::is_terminal(&out) {
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    pub(crate) fn put(
        &self,
        store: &str,
        key: &str,
        value: Option<String>,
        ttl: Option<&str>,
        condition: Option<String>,
    ) -> Result<()> {
        let body = match value {
            Some(v) => v.into_bytes(),
            None => {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .context("reading the value from stdin")?;
                buf
            }
        };
        let mut query = Vec::new();
        if let Some(t) = ttl {
            query.push(format!("ttl={}", segment(t)));
        }
        query.extend(condition);
        let mut path = Self::key_path(store, key);
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        let v = self.ok_json("PUT", &path, Some(body))?;
        if self.json {
            return print_json(&v);
        }
        match v["expires_at"].as_u64() {
            Some(at) => println!("ok: version {} (expires at {at} ms)", v["version"]),
            None => println!("ok: version {}", v["version"]),
        }
        Ok(())
    }

    pub(crate) fn delete(&self, store: &str, key: &str) -> Result<()> {
        let v = self.ok_json("DELETE", &Self::key_path(store, key), None)?;
        if self.json {
            return print_json(&v);
        }
        println!(
            "{}",
            if v["deleted"] == Value::Bool(true) {
                "deleted"
            } else {
                "not found"
            }
        );
        Ok(())
    }

    pub(crate) fn list(
        &self,
        store: &str,
        prefix: Option<&str>,
        after: Option<String>,
        limit: Option<usize>,
        all: bool,
    ) -> Result<()> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut after = after;
        let mut collected = Vec::new();
        loop {
            let mut query = Vec::new();
            if let Some(p) = prefix {
                query.push(format!("prefix={}", segment(p)));
            }
            if let Some(a) = &after {
                query.push(format!("after={}", segment(a)));
            }
            if let Some(l) = limit {
                query.push(format!("limit={l}"));
            }
            let path = format!("/v1/stores/{}/keys?{}", segment(store), query.join("&"));
            let page = self.ok_json("GET", &path, None)?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if !self.json {
                for item in &items {
                    let value = b64
                        .decode(item["value"].as_str().unwrap_or(""))
                        .unwrap_or_default();
                    println!(
                        "{}\t{}\tversion={}",
                        item["key"].as_str().unwrap_or(""),
                        String::from_utf8_lossy(&value),
                        item["version"]
                    );
                }
            }
            collected.extend(items);
            let more = page["has_more"] == Value::Bool(true);
            if !(all && more) {
                if self.json {
                    print_json(&serde_json::json!({
                        "items": collected,
                        "cursor": page["cursor"],
                        "has_more": more,
                    }))?;
                } else if more {
                    eprintln!(
                        "(more: --after {} or --all)",
                        page["cursor"].as_str().unwrap_or("")
                    );
                }
                return Ok(());
            }
            after = page["cursor"].as_str().map(str::to_owned);
            if after.is_none() {
                bail!("the node said has_more without a cursor");
            }
        }
    }
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
