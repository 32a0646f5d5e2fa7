//! End-to-end: the real `store-node` binary on a free port with a temporary data folder, driven
//! over raw HTTP and through its CLI. No in-process shortcuts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use store_testkit::TempDir;

use crate::{BIN, Node, call};

#[test]
fn every_route_and_status_on_memory_and_sqlite() {
    let node = Node::start("routes");
    let health = node.call("GET", "/v1/health", None);
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (200, Some("ok"))
    );
    let stores = node.call("GET", "/v1/stores", None).json();
    let ids: Vec<&str> = stores["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["app:mem", "app:plain", "app:sql", "app:tiny"]);
    let info = node.call("GET", "/v1/stores/app:sql", None).json();
    assert_eq!(
        (info["backend"].as_str(), info["durable"].as_bool()),
        (Some("sql"), Some(true))
    );
    let unknown = node.call("GET", "/v1/stores/app:nope/keys/x", None);
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("known stores: app:mem, app:plain, app:sql, app:tiny")
    );

    for store in ["app:mem", "app:sql"] {
        let key = |k: &str| format!("/v1/stores/{store}/keys/{k}");
        let put = node.call("PUT", &key("greeting"), Some(b"hello"));
        assert_eq!(put.status, 200, "{store}");
        let written = put.json();
        let version = written["version"].as_u64().unwrap();
        assert!(version > 0 && written["expires_at"].is_null(), "{written}");
        let got = node.call("GET", &key("greeting"), None);
        assert_eq!((got.status, got.body.as_slice()), (200, &b"hello"[..]));
        assert_eq!(
            got.header("x-store-version"),
            Some(version.to_string().as_str())
        );
        assert_eq!(got.header("x-store-expires-at"), None);
        assert_eq!(node.call("HEAD", &key("greeting"), None).status, 200);
        assert_eq!(node.call("HEAD", &key("missing"), None).status, 404);
        let missing = node.call("GET", &key("missing"), None);
        assert_eq!(
            (missing.status, missing.error().0.as_str()),
            (404, "NotFound")
        );

        let ttl = node.call("PUT", &(key("t") + "?ttl=60"), Some(b"x")).json();
        let at = ttl["expires_at"].as_u64().unwrap();
        let got = node.call("GET", &key("t"), None);
        assert_eq!(
            got.header("x-store-expires-at"),
            Some(at.to_string().as_str())
        );
        let ttl = node
            .call("PUT", &(key("t2") + "?ttl=1h30m"), Some(b"x"))
            .json();
        assert!(ttl["expires_at"].as_u64().unwrap() > at);

        let exists = node.call("PUT", &(key("greeting") + "?if_absent=true"), Some(b"no"));
        assert_eq!(
            (exists.status, exists.error()),
            (409, ("AlreadyExists".into(), false))
        );
        let conflict = node.call(
            "PUT",
            &format!("{}?if_version={}", key("greeting"), version + 7),
            Some(b"no"),
        );
        assert_eq!(
            (conflict.status, conflict.error()),
            (409, ("Conflict".into(), true))
        );
        let swapped = node.call(
            "PUT",
            &format!("{}?if_version={version}", key("greeting")),
            Some(b"hi"),
        );
        assert_eq!(swapped.status, 200);
        let zero = node.call("PUT", &(key("greeting") + "?if_version=0"), Some(b"no"));
        assert_eq!((zero.status, zero.error().0.as_str()), (400, "Invalid"));
        let bad_ttl = node.call("PUT", &(key("greeting") + "?ttl=soon"), Some(b"no"));
        assert_eq!(bad_ttl.status, 400);
        assert!(
            bad_ttl.json()["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("ttl")
        );

        // Keys are percent-encoded path segments and may contain '/'.
        assert_eq!(
            node.call("PUT", &key("a%2Fb%20c%F0%9F%94%91"), Some(b"1"))
                .status,
            200
        );
        assert_eq!(
            node.call("GET", &key("a/b%20c%F0%9F%94%91"), None).body,
            b"1"
        );
        let bad_utf8 = node.call("GET", &key("%FF%FE"), None);
        assert_eq!(
            (bad_utf8.status, bad_utf8.error().0.as_str()),
            (400, "Invalid")
        );
        let empty = node.call("GET", &key(""), None);
        assert_eq!(empty.status, 400);

        let page = node
            .call(
                "GET",
                &format!("/v1/stores/{store}/keys?prefix=t&limit=1"),
                None,
            )
            .json();
        assert_eq!(page["items"][0]["key"], "t");
        assert_eq!(page["items"][0]["value"], "eA=="); // base64 of "x"
        assert_eq!(
            (page["cursor"].as_str(), page["has_more"].as_bool()),
            (Some("t"), Some(true))
        );
        let rest = node
            .call(
                "GET",
                &format!("/v1/stores/{store}/keys?prefix=t&after=t"),
                None,
            )
            .json();
        assert_eq!(rest["items"].as_array().unwrap().len(), 1);
        assert_eq!(rest["has_more"], false);
        let bad_limit = node.call("GET", &format!("/v1/stores/{store}/keys?limit=many"), None);
        assert_eq!(bad_limit.status, 400);

        assert_eq!(
            node.call("DELETE", &key("greeting"), None).json()["deleted"],
            true
        );
        assert_eq!(
            node.call("DELETE", &key("greeting"), None).json()["deleted"],
            false
        );
    }

    // 413: a body over the store's max_value_size (1024 bytes for app:mem), refused unread.
    let big = vec![b'x'; 5000];
    let too_large = node.call("PUT", "/v1/stores/app:mem/keys/big", Some(&big));
    assert_eq!(too_large.status, 413);
    assert_eq!(too_large.error().0, "Invalid");
    assert_eq!(
        node.call("HEAD", "/v1/stores/app:mem/keys/big", None)
            .status,
        404
    );
    // 503: a full memory store refuses a new key (retryable); an overwrite still works.
    assert_eq!(
        node.call("PUT", "/v1/stores/app:tiny/keys/a", Some(b"1"))
            .status,
        200
    );
    let full = node.call("PUT", "/v1/stores/app:tiny/keys/b", Some(b"2"));
    assert_eq!(
        (full.status, full.error()),
        (503, ("Unavailable".into(), true))
    );
    assert_eq!(
        node.call("PUT", "/v1/stores/app:tiny/keys/a", Some(b"3"))
            .status,
        200
    );
    // 501: a condition the store cannot honour (no version column).
    let unsupported = node.call(
        "PUT",
        "/v1/stores/app:plain/keys/k?if_version=3",
        Some(b"v"),
    );
    assert_eq!(
        (unsupported.status, unsupported.error().0.as_str()),
        (501, "Unsupported")
    );
}

#[test]
fn cli_commands_and_list_all_follow_cursors() {
    let node = Node::start("cli");
    for i in 0..250 {
        let r = node.call(
            "PUT",
            &format!("/v1/stores/app:sql/keys/k{i:03}"),
            Some(b"v"),
        );
        assert_eq!(r.status, 200);
    }
    let out = node.cli(&["list", "app:sql", "--limit", "100", "--all", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 250);
    let one_page = node.cli(&["list", "app:sql", "--limit", "100", "--json"]);
    let v: Value = serde_json::from_slice(&one_page.stdout).unwrap();
    assert_eq!(
        (
            v["items"].as_array().unwrap().len(),
            v["has_more"].as_bool()
        ),
        (100, Some(true))
    );

    let set = node.cli(&["set", "app:mem", "a/b", "hello world", "--ttl", "30s"]);
    assert!(set.status.success());
    let get = node.cli(&["get", "app:mem", "a/b"]);
    assert_eq!(get.stdout, b"hello world");
    let conflict = node.cli(&["put", "app:mem", "a/b", "x", "--if-absent"]);
    assert!(!conflict.status.success());
    assert!(String::from_utf8_lossy(&conflict.stderr).contains("AlreadyExists"));
    let stdin_put = Command::new(BIN)
        .args([
            "set",
            "app:mem",
            "from-stdin",
            "--addr",
            node.process.addr(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"piped\x00bytes")?;
            c.wait()
        })
        .unwrap();
    assert!(stdin_put.success());
    assert_eq!(
        node.call("GET", "/v1/stores/app:mem/keys/from-stdin", None)
            .body,
        b"piped\x00bytes"
    );
    let deleted = node.cli(&["delete", "app:mem", "a/b", "--json"]);
    let v: Value = serde_json::from_slice(&deleted.stdout).unwrap();
    assert_eq!(v["deleted"], true);
    let stores = node.cli(&["stores"]);
    assert!(String::from_utf8_lossy(&stores.stdout).contains("app:sql"));
}

#[test]
fn a_token_is_required_when_configured() {
    let dir = TempDir::new("token");
    let node = Node::start_in(
        dir.path(),
        "http:\n  token_env: E2E_TOKEN\n",
        &[("E2E_TOKEN", "s3cret")],
    );
    let url = node.url("/v1/stores");
    let none = call(&url, "GET", None, None);
    assert_eq!(
        (none.status, none.error().0.as_str()),
        (401, "PermissionDenied")
    );
    let wrong = call(&url, "GET", None, Some("s3creT"));
    assert_eq!(wrong.status, 401);
    assert_eq!(call(&url, "GET", None, Some("s3cret")).status, 200);
    assert_eq!(call(&node.url("/v1/health"), "GET", None, None).status, 200);
    let cli = node.cli(&["stores"]);
    assert!(cli.status.success(), "the CLI sends STORE_TOKEN");
}

#[test]
fn a_non_loopback_bind_without_a_token_is_refused() {
    let dir = TempDir::new("exposed");
    std::fs::write(
        dir.join("node.yaml"),
        "http:\n  bind: 0.0.0.0:0\nregistry: []\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.join("node.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a loopback address"));
}

#[test]
fn graceful_shutdown_finishes_the_request_in_flight() {
    let node = Node::start("graceful");
    let mut stream = TcpStream::connect(node.process.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "PUT /v1/stores/app:sql/keys/late HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\nconnection: close\r\n\r\nhello"
    )
    .unwrap();
    stream.flush().unwrap();
    // Make sure the node is reading this request before it is told to stop.
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.call("GET", "/v1/health", None).status != 200 {
        assert!(Instant::now() < deadline);
    }
    node.process.signal("-TERM").unwrap();
    stream.write_all(b"world").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut node = node;
    let status = node.process.wait_exit(Duration::from_secs(30)).unwrap();
    assert_eq!(status.code(), Some(0));
    // The write is there after a restart.
    node.process.restart().unwrap();
    assert_eq!(
        node.call("GET", "/v1/stores/app:sql/keys/late", None).body,
        b"helloworld"
    );
}

#[test]
fn sigkill_loses_no_acknowledged_sqlite_write() {
    let node = Node::start("crash");
    let mut acked = Vec::new();
    for i in 0..400 {
        let key = format!("w{i:04}");
        let r = node.call(
            "PUT",
            &format!("/v1/stores/app:sql/keys/{key}"),
            Some(key.as_bytes()),
        );
        assert_eq!(r.status, 200);
        acked.push(key);
    }
    // Writes keep arriving from another thread while the node is killed.
    let url = node.url("/v1/stores/app:sql/keys/");
    let writer = std::thread::spawn(move || {
        let mut more = Vec::new();
        for i in 0..100_000 {
            let key = format!("x{i:05}");
            let agent = ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build(),
            );
            match agent.put(format!("{url}{key}")).send(key.as_bytes()) {
                Ok(r) if r.status() == 200 => more.push(key),
                _ => break,
            }
        }
        more
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while node
        .call("HEAD", "/v1/stores/app:sql/keys/x00050", None)
        .status
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the background writer made no progress"
        );
    }
    let mut node = node;
    node.process.kill().unwrap(); // SIGKILL
    acked.extend(writer.join().unwrap());
    node.process.restart().unwrap();
    for key in &acked {
        let r = node.call("GET", &format!("/v1/stores/app:sql/keys/{key}"), None);
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, key.as_bytes()),
            "acknowledged {key} lost"
        );
    }
}

#[test]
fn validate_reports_errors_or_a_summary() {
    let dir = TempDir::new("validate");
    std::fs::create_dir_all(dir.join("registry")).unwrap();
    std::fs::write(dir.join("node.yaml"), "registry:\n  - ./registry\n").unwrap();
    std::fs::write(dir.join("registry/app.yaml"), crate::REGISTRY).unwrap();
    let ok = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(dir.join("node.yaml"))
        .output()
        .unwrap();
    assert!(ok.status.success());
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(text.starts_with("ok: "), "{text}");
    assert!(
        text.contains("app:sql") && text.contains("auto_start"),
        "{text}"
    );
    assert!(!dir.join("data").exists(), "validate opens nothing");

    std::fs::write(
        dir.join("registry/bad.yaml"),
        "namespace: bad\nentries:\n  - name: c\n    kind: store.memory\n    max_sise: 3\n",
    )
    .unwrap();
    let bad = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(dir.join("node.yaml"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stderr);
    assert!(
        text.contains("bad.yaml:5:5: entry `bad:c`: field `max_sise`"),
        "{text}"
    );
}

/// The resident memory of a process, in bytes (Linux `/proc`).
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a VmRSS line");
    kb * 1024
}

/// PUTs `count` 64-byte values under 10-byte keys starting at `from`, over two keep-alive
/// connections (plain HTTP/1.1 on a socket: one request, then its answer).
fn put_many(node: &Node, from: usize, count: usize) {
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let addr = node.process.addr().to_owned();
            std::thread::spawn(move || {
                let mut conn = TcpStream::connect(&addr).unwrap();
                conn.set_nodelay(true).unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                for i in (from + t..from + count).step_by(2) {
                    let mut request = format!(
                        "PUT /v1/stores/app:cache/keys/k{i:09} HTTP/1.1\r\nhost: {addr}\r\n\
                         content-length: 64\r\n\r\n"
                    )
                    .into_bytes();
                    request.extend_from_slice(&[(i % 251) as u8; 64]);
                    conn.write_all(&request).unwrap();
                    let mut status = String::new();
                    reader.read_line(&mut status).unwrap();
                    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).unwrap();
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn small_values_over_http_cost_about_their_size() {
    // A stored value must own its bytes, not keep the HTTP server's read buffer alive: that
    // once cost ~4.7 KB per 64-byte value.
    let dir = TempDir::new("memory-per-key");
    std::fs::create_dir_all(dir.join("registry")).unwrap();
    std::fs::write(
        dir.join("registry/app.yaml"),
        "namespace: app\nentries:\n  - name: cache\n    kind: store.memory\n    max_size: 200000\n",
    )
    .unwrap();
    let node = Node::start_in(dir.path(), "", &[]);
    put_many(&node, 0, 5_000); // warm up: connections, buffers, allocator arenas
    let before = rss_of(node.process.pid());
    const KEYS: usize = 50_000;
    put_many(&node, 5_000, KEYS);
    let after = rss_of(node.process.pid());
    let per_key = after.saturating_sub(before) / KEYS as u64;
    let usage = node.call("GET", "/v1/stores/app:cache", None).json();
    assert_eq!(usage["usage"]["entries"].as_u64(), Some(55_000), "{usage}");
    assert_eq!(
        usage["usage"]["bytes"].as_u64(),
        Some(55_000 * (10 + 64)),
        "{usage}"
    );
    // The library holds ~190 B per such entry (cargo bench -p store-memory, bytes_per_key);
    // the bound leaves room for the allocator's own overhead and hash-table growth.
    println!("store-node: {per_key} bytes of RSS per 64-byte value");
    assert!(
        per_key < 800,
        "{per_key} bytes of resident memory per 64-byte value (RSS {before} -> {after})"
    );
}

#[test]
fn the_typed_client_gets_the_nodes_answers_and_errors_intact() {
    use store_core::{Bytes, ErrorKind, ListOptions, PutOptions};
    let node = Node::start("typed-client");
    let client = node.process.client().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stores = client.stores().await.unwrap();
        let mem = stores.iter().find(|s| s.info.id == "app:mem").unwrap();
        assert_eq!(mem.info.capabilities.max_value_size, 1024);
        assert_eq!(mem.usage.map(|u| u.entries), Some(0));

        let written = client
            .put(
                "app:sql",
                "k",
                Bytes::from("v"),
                PutOptions::new().ttl(Duration::from_secs(60)),
            )
            .await
            .unwrap();
        assert!(written.version > 0 && written.expires_at.is_some());
        let got = client.entry("app:sql", "k").await.unwrap();
        assert_eq!(
            (got.value, got.version),
            (Bytes::from("v"), written.version)
        );
        assert!(client.has("app:sql", "k").await.unwrap());
        assert!(!client.has("app:sql", "nope").await.unwrap());

        let exists = client
            .put(
                "app:sql",
                "k",
                Bytes::from("w"),
                PutOptions::new().if_absent(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            (exists.kind(), exists.retryable()),
            (ErrorKind::AlreadyExists, false)
        );
        let conflict = client
            .put(
                "app:sql",
                "k",
                Bytes::from("w"),
                PutOptions::new().if_version(written.version + 9),
            )
            .await
            .unwrap_err();
        assert_eq!(
            (conflict.kind(), conflict.retryable()),
            (ErrorKind::Conflict, true)
        );
        assert!(!conflict.is_indeterminate());
        let full = client
            .put("app:tiny", "a", Bytes::from("1"), PutOptions::new())
            .await
            .and(
                client
                    .put("app:tiny", "b", Bytes::from("2"), PutOptions::new())
                    .await,
            )
            .unwrap_err();
        assert_eq!(
            (full.kind(), full.retryable()),
            (ErrorKind::Unavailable, true)
        );
        let big = client
            .put(
                "app:mem",
                "big",
                Bytes::from(vec![b'x'; 2000]),
                PutOptions::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(big.too_large().map(|t| t.limit), Some(1024), "{big:?}");
        let absent = client.entry("app:sql", "nope").await.unwrap_err();
        assert_eq!(absent.kind(), ErrorKind::NotFound);
        let unknown = client.describe("app:nope").await.unwrap_err();
        assert_eq!(unknown.kind(), ErrorKind::NotFound);
        assert!(unknown.message().contains("known stores"), "{unknown}");

        let page = client
            .list("app:sql", &ListOptions::new().prefix("k"))
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1);
        assert!(client.delete("app:sql", "k").await.unwrap());
        assert!(!client.delete("app:sql", "k").await.unwrap());
    });
    // A node that is gone: Unavailable, and a write to it was never sent, so not indeterminate.
    let addr = node.process.addr().to_owned();
    drop(node);
    let gone = store_client::Client::new(&addr).unwrap();
    runtime.block_on(async {
        let e = gone.entry("app:sql", "k").await.unwrap_err();
        assert_eq!(
            (e.kind(), e.is_indeterminate()),
            (ErrorKind::Unavailable, false)
        );
        let e = gone
            .put("app:sql", "k", Bytes::from("v"), PutOptions::new())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(
            !e.is_indeterminate(),
            "nothing was sent to a node that refused the connection"
        );
    });
}

/// Read-modify-write loops from Node.js's `fetch`: versions come from JSON bodies (a list item,
/// a PUT's answer) and go back as `if_version`, as a JavaScript client would do it.
const JS_COUNTER: &str = r#"
const [base, store, key, workers, rounds] = process.argv.slice(2);
const url = `${base}/v1/stores/${store}/keys/${key}`;
async function current() {
  const r = await fetch(`${base}/v1/stores/${store}/keys?prefix=${key}&limit=1`);
  const page = await r.json();
  const item = page.items.find((i) => i.key === key);
  return { count: Number(Buffer.from(item.value, "base64").toString()), version: item.version };
}
async function worker() {
  let { count, version } = await current();
  for (let done = 0, tries = 0; done < Number(rounds); ) {
    if (++tries > 100 * Number(rounds)) throw new Error(`no progress: version ${version}`);
    const r = await fetch(`${url}?if_version=${version}`, { method: "PUT", body: String(count + 1) });
    if (r.status === 200) {
      version = (await r.json()).version;
      count += 1;
      done += 1;
    } else if (r.status === 409) {
      ({ count, version } = await current());
    } else {
      throw new Error(`HTTP ${r.status}: ${await r.text()}`);
    }
  }
}
(async () => {
  await fetch(url, { method: "PUT", body: "0" });
  await Promise.all(Array.from({ length: Number(workers) }, worker));
  const { count } = await current();
  console.log(count);
})().catch((e) => { console.error(e.message); process.exit(1); });
"#;

#[test]
fn a_javascript_client_compares_and_swaps_with_the_versions_it_reads() {
    let Ok(version) = Command::new("node").arg("--version").output() else {
        return store_testkit::loud_skip(
            "a_javascript_client_compares_and_swaps_with_the_versions_it_reads",
            "Node.js is not installed (`node` not found)",
        );
    };
    assert!(version.status.success());
    let node = Node::start("javascript");
    let dir = TempDir::new("javascript");
    let script = dir.join("counter.js");
    std::fs::write(&script, JS_COUNTER).unwrap();
    for store in ["app:mem", "app:sql"] {
        let out = Command::new("node")
            .arg(&script)
            .args([&node.url(""), store, "counter", "4", "25"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{store}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "100",
            "{store}: 4 workers × 25 increments"
        );
    }
}

/// Every sample of a scrape, by metric name and labels; every line that is not a comment must
/// be a sample the parser understood.
fn scrape(node: &Node) -> Vec<prometheus_parse::Sample> {
    let r = node.call("GET", "/metrics", None);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        r.header("content-type")
    );
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.iter().cloned().map(Ok)).unwrap();
    let sample_lines = lines.iter().filter(|l| !l.starts_with('#')).count();
    let parsed: usize = scrape
        .samples
        .iter()
        .map(|s| match &s.value {
            // A histogram's buckets are one sample here (its sum and count are two more).
            prometheus_parse::Value::Histogram(buckets) => buckets.len(),
            _ => 1,
        })
        .sum();
    assert_eq!(parsed, sample_lines, "every sample line parses:\n{text}");
    scrape.samples
}

/// The value of the sample `metric` whose labels include `labels`.
fn sample(samples: &[prometheus_parse::Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found = samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
    match found.map(|s| &s.value) {
        Some(
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v),
        ) => *v,
        other => panic!("{metric} {labels:?}: {other:?}"),
    }
}

#[test]
fn metrics_count_what_the_node_does() {
    let node = Node::start("metrics");
    let before = scrape(&node);
    let ok_puts = [("store", "app:mem"), ("op", "put"), ("outcome", "ok")];
    assert_eq!(sample(&before, "store_operations_total", &ok_puts), 0.0);
    for k in ["a", "b", "c"] {
        let r = node.call("PUT", &format!("/v1/stores/app:mem/keys/{k}"), Some(b"v"));
        assert_eq!(r.status, 200);
    }
    let exists = node.call(
        "PUT",
        "/v1/stores/app:mem/keys/a?if_absent=true",
        Some(b"w"),
    );
    assert_eq!(exists.status, 409);
    assert_eq!(
        node.call("GET", "/v1/stores/app:mem/keys/a", None).status,
        200
    );
    assert_eq!(
        node.call("GET", "/v1/stores/app:mem/keys/zz", None).status,
        404
    );
    assert_eq!(
        node.call("HEAD", "/v1/stores/app:mem/keys/b", None).status,
        200
    );
    assert_eq!(
        node.call("DELETE", "/v1/stores/app:sql/keys/none", None)
            .status,
        200
    );

    let after = scrape(&node);
    let count = |op: &str, outcome: &str| {
        sample(
            &after,
            "store_operations_total",
            &[("store", "app:mem"), ("op", op), ("outcome", outcome)],
        )
    };
    assert_eq!(count("put", "ok"), 3.0);
    assert_eq!(count("put", "AlreadyExists"), 1.0);
    // An absent key is a store call that succeeded; the 404 is the HTTP answer's.
    assert_eq!((count("get", "ok"), count("get", "NotFound")), (2.0, 0.0));
    assert_eq!(count("has", "ok"), 1.0);
    let sql_delete = [("store", "app:sql"), ("op", "delete"), ("outcome", "ok")];
    assert_eq!(sample(&after, "store_operations_total", &sql_delete), 1.0);
    let put_latency = after
        .iter()
        .find(|s| {
            s.metric == "store_operation_seconds"
                && s.labels.get("store") == Some("app:mem")
                && s.labels.get("op") == Some("put")
        })
        .map(|s| s.value.clone());
    match put_latency {
        Some(prometheus_parse::Value::Histogram(buckets)) => {
            let total = buckets.last().map_or(0.0, |b| b.count);
            assert_eq!(total, 4.0, "four puts timed: {buckets:?}");
        }
        other => panic!("put latency: {other:?}"),
    }
    assert_eq!(sample(&after, "store_keys", &[("store", "app:mem")]), 3.0);
    let status = |code: &str| sample(&after, "http_requests_total", &[("status", code)]);
    assert!(status("200") >= 6.0, "{}", status("200"));
    assert_eq!((status("409"), status("404")), (1.0, 1.0));
    assert!(sample(&after, "process_start_time_seconds", &[]) > 1.7e9);
    assert!(
        after
            .iter()
            .any(|s| s.metric == "store_node_build_info" && s.labels.get("version").is_some())
    );

    // Off by configuration: no route, and nothing counted.
    let dir = TempDir::new("metrics-off");
    let quiet = Node::start_in(dir.path(), "http:\n  metrics: false\n", &[]);
    assert_eq!(quiet.call("GET", "/metrics", None).status, 404);
}
