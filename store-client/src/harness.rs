//! [`NodeProcess`]: a real `store-node` binary, started on a free port in a folder of its own,
//! for tests and fault-injection runs (feature `harness`).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::Client;

/// How long a node may take to print its address and answer its health check.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running node; killed when dropped.
///
/// The folder must hold the node's config as `node.yaml`; the node binds `127.0.0.1:0` (a free
/// port) and the address it prints is read back. [`NodeProcess::start`] returns once the node
/// answers `GET /v1/health`.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    addr: String,
    bin: PathBuf,
    dir: PathBuf,
    env: Vec<(String, String)>,
    token: Option<String>,
}

/// Why a node could not be started, with what it said.
fn failed(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(what.to_string())
}

impl NodeProcess {
    /// Starts `bin serve --config dir/node.yaml --bind 127.0.0.1:0` with `env` added to its
    /// environment, and waits (up to [`START_TIMEOUT`]) until it is healthy.
    pub fn start(bin: &Path, dir: &Path, env: &[(&str, &str)]) -> std::io::Result<Self> {
        let node = Self::launch(bin, dir, env)?;
        node.wait_healthy()?;
        Ok(node)
    }

    /// Like [`NodeProcess::start`], but returns as soon as the node listens, without waiting
    /// for it to be healthy: a cluster member is healthy only once a quorum of its peers runs,
    /// so the members of a cluster are launched first and waited for afterwards.
    pub fn launch(bin: &Path, dir: &Path, env: &[(&str, &str)]) -> std::io::Result<Self> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let (child, addr) = spawn(bin, dir, &env)?;
        Ok(Self {
            child,
            addr,
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            env,
            token: None,
        })
    }

    /// Sends `token` from the clients this node hands out ([`NodeProcess::client`]).
    #[must_use]
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// `host:port` the node listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The node's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client of this node (with its token, if one was given).
    pub fn client(&self) -> store_core::Result<Client> {
        Ok(Client::new(&self.addr)?.token(self.token.clone()))
    }

    /// Sends `signal` (`-TERM`, `-STOP`, …) with `kill`.
    pub fn signal(&self, signal: &str) -> std::io::Result<()> {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(failed(format!(
                "kill {signal} {}: {status}",
                self.child.id()
            )))
        }
    }

    /// Kills the node (SIGKILL: no shutdown, as in a crash) and waits for it.
    pub fn kill(&mut self) -> std::io::Result<ExitStatus> {
        self.child.kill()?;
        self.child.wait()
    }

    /// Waits up to `limit` for the node to exit (after a signal), polling.
    pub fn wait_exit(&mut self, limit: Duration) -> std::io::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(failed(format!("the node did not exit within {limit:?}")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the node again in the same folder with the same environment, once the old
    /// process is gone (killing it if it still runs). Its address may change.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.relaunch()?;
        self.wait_healthy()
    }

    /// [`NodeProcess::restart`] without waiting for health (see [`NodeProcess::launch`]).
    pub fn relaunch(&mut self) -> std::io::Result<()> {
        if self.child.try_wait()?.is_none() {
            self.kill()?;
        }
        let (child, addr) = spawn(&self.bin, &self.dir, &self.env)?;
        self.child = child;
        self.addr = addr;
        Ok(())
    }

    /// Polls `GET /v1/health` until it answers 200, up to [`START_TIMEOUT`].
    pub fn wait_healthy(&self) -> std::io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if health(&self.addr).is_ok_and(|status| status == 200) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(failed(format!(
                    "the node at {} was not healthy within {START_TIMEOUT:?}",
                    self.addr
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the process and reads the address from its `listening on http://…` line.
fn spawn(bin: &Path, dir: &Path, env: &[(String, String)]) -> std::io::Result<(Child, String)> {
    let mut command = Command::new(bin);
    command
        .args(["serve", "--config"])
        .arg(dir.join("node.yaml"))
        .args(["--bind", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "warn");
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command
        .spawn()
        .map_err(|e| failed(format!("cannot start {}: {e}", bin.display())))?;
    let Some(stdout) = child.stdout.take() else {
        return Err(failed("the node's stdout was not captured"));
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = match rx.recv_timeout(START_TIMEOUT) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let status = child.wait()?;
            return Err(failed(format!(
                "{} printed no `listening on` line within {START_TIMEOUT:?} (exit: {status})",
                bin.display()
            )));
        }
    };
    match line.strip_prefix("listening on http://") {
        Some(addr) => Ok((child, addr.to_owned())),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(failed(format!(
                "unexpected first line from the node: {line}"
            )))
        }
    }
}

/// Moves the manual clock of the node at `addr` (a `test-clock` build started with
/// `STORE_NODE_TEST_CLOCK_MS`) forward by `by`, and returns once it moved. Blocking, over a plain
/// socket: a test's clock hook may run inside any runtime, or none.
pub fn advance_clock(addr: &str, by: Duration) -> std::io::Result<()> {
    advance_clock_as(addr, None, by)
}

/// [`advance_clock`] on a node that requires a bearer token.
pub fn advance_clock_as(addr: &str, token: Option<&str>, by: Duration) -> std::io::Result<()> {
    let path = format!("/v1/test/clock/advance?nanos={}", by.as_nanos());
    match request(addr, "POST", &path, token)? {
        200 => Ok(()),
        status => Err(failed(format!(
            "advancing the clock of {addr}: HTTP {status} (is it a test-clock build?)"
        ))),
    }
}

/// Sets the offset of a node's clock (a `test-clock` build started with
/// `STORE_NODE_TEST_CLOCK_OFFSET=1`) to `ms` milliseconds, ahead (positive) or behind: a clock
/// fault. Answers the HTTP status (200, or 400 for an offset out of range).
pub fn set_clock_offset(addr: &str, ms: i64) -> std::io::Result<u16> {
    request(
        addr,
        "POST",
        &format!("/v1/test/clock/offset?ms={ms}"),
        None,
    )
}

/// The status of `GET /v1/health`.
fn health(addr: &str) -> std::io::Result<u16> {
    request(addr, "GET", "/v1/health", None)
}

/// The status of one bodiless request, over a plain socket (no runtime needed).
fn request(addr: &str, method: &str, path: &str, token: Option<&str>) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| failed(format!("not an HTTP answer: {answer:?}")))
}
