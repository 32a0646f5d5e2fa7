//! `store-node`'s integration tests, in one binary: the real binary end to end (`e2e`), clusters
//! of real node processes (`cluster`), and the conformance suite through `RemoteStore` against a
//! live node (`remote`).

// Setup helpers of a test: a failed step is a failed test, with the panic saying where.
#![allow(clippy::unwrap_used)]

mod cluster;
mod e2e;
mod gossip;
mod remote;

use std::path::Path;

use store_client::harness::NodeProcess;
use store_testkit::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_store-node");

const REGISTRY: &str = "\
namespace: app
entries:
  - name: mem
    kind: store.memory
    max_value_size: 1024
  - name: tiny
    kind: store.memory
    max_size: 1
  - name: db
    kind: db.sql.sqlite
    path: ../data/app.db
  - name: sql
    kind: store.sql
    database: db
    table_name: kv
    version_column_name: version
    create_table: true
    lifecycle:
      auto_start: true
  - name: plain
    kind: store.sql
    database: db
    table_name: plain
    create_table: true
";

/// A running node with the test registry (unless its folder already has one); killed when
/// dropped.
struct Node {
    process: NodeProcess,
    token: Option<String>,
    _dir: Option<TempDir>,
}

impl Node {
    /// A node in `dir`, with `http` as its config's `http:` section (or empty) and `env` added
    /// to its environment (`E2E_TOKEN` is also the token its calls send).
    fn start_in(dir: &Path, http: &str, env: &[(&str, &str)]) -> Node {
        std::fs::create_dir_all(dir.join("registry")).unwrap();
        std::fs::write(
            dir.join("node.yaml"),
            format!("data_dir: ./data\n{http}registry:\n  - ./registry\n"),
        )
        .unwrap();
        if !dir.join("registry/app.yaml").exists() {
            std::fs::write(dir.join("registry/app.yaml"), REGISTRY).unwrap();
        }
        let process = NodeProcess::start(Path::new(BIN), dir, env).unwrap();
        let token = env
            .iter()
            .find(|(k, _)| *k == "E2E_TOKEN")
            .map(|(_, v)| (*v).to_owned());
        Node {
            process,
            token,
            _dir: None,
        }
    }

    /// A node in a folder of its own.
    fn start(name: &str) -> Node {
        let dir = TempDir::new(name);
        let mut node = Node::start_in(dir.path(), "", &[]);
        node._dir = Some(dir);
        node
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.process.addr())
    }

    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Reply {
        call(&self.url(path), method, body, self.token.as_deref())
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(args).args(["--addr", self.process.addr()]);
        if let Some(t) = &self.token {
            cmd.env("STORE_TOKEN", t);
        }
        cmd.output().unwrap()
    }
}

/// A raw HTTP answer.
/// A cluster member: a test node (its `call`, `cli` and `process` through `Deref`) with its name
/// and internode (Raft or gossip) address.
struct Member {
    name: String,
    addr: String,
    node: Node,
}

impl std::ops::Deref for Member {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.node
    }
}

impl std::ops::DerefMut for Member {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.node
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `(kind, retryable)` of an error answer.
    fn error(&self) -> (String, bool) {
        let v = self.json();
        (
            v["error"]["kind"].as_str().unwrap_or("").to_owned(),
            v["error"]["retryable"].as_bool().unwrap_or(false),
        )
    }
}

/// One raw HTTP request, for tests of the API's statuses and headers themselves.
fn call(url: &str, method: &str, body: Option<&[u8]>, token: Option<&str>) -> Reply {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let response = match body {
        Some(b) => agent.run(req.body(b.to_vec()).unwrap()),
        None => agent.run(req.body(()).unwrap()),
    }
    .unwrap();
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = response.into_body().read_to_vec().unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}
