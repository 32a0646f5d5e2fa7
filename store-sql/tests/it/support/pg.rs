//! A private PostgreSQL server for tests and benchmarks: `initdb` into a temporary folder,
//! `pg_ctl start` on a free loopback port, stopped and removed when dropped, or when the process
//! exits (a watchdog shell waits for this process to end). As root, the server runs as the
//! `postgres` user, since PostgreSQL refuses to run as root.
//!
//! `STORE_TEST_POSTGRES_URL` overrides all of this with an existing server;
//! `STORE_TEST_POSTGRES=off` skips PostgreSQL (loudly), unless `STORE_TEST_REQUIRE_POSTGRES=1`.

#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Why PostgreSQL tests could not run, or the server to run them on.
pub type Availability = Result<String, String>;

/// A running private server.
#[derive(Debug)]
pub struct PgServer {
    pub url: String,
    pub port: u16,
    base: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn find_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        dirs.extend(versions.into_iter().rev());
    }
    dirs.into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

fn id_of(flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(54329)
}

impl PgServer {
    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn data(&self) -> PathBuf {
        self.base.join("data")
    }

    /// initdb + start on a free port; `Err` says why it is impossible here.
    pub fn start_new(tag: &str) -> Result<Self, String> {
        let server = Self::create(tag)?;
        server.start()?;
        Ok(server)
    }

    /// A server that accepts only TLS connections (`hostssl` in `pg_hba.conf`), presenting
    /// `cert_pem` with `key_pem`.
    pub fn start_tls(tag: &str, cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        let server = Self::create(tag)?;
        let data = server.data();
        let write = |name: &str, text: &str| {
            let path = data.join(name);
            std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("chmod {}: {e}", path.display()))?;
            if server.as_postgres
                && let (Some(uid), Some(gid)) = (id_of("-u"), id_of("-g"))
            {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(|e| format!("chown {}: {e}", path.display()))?;
            }
            Ok::<(), String>(())
        };
        write("server.crt", cert_pem)?;
        write("server.key", key_pem)?;
        write(
            "pg_hba.conf",
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )?;
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(|e| format!("read conf: {e}"))?;
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).map_err(|e| format!("write conf: {e}"))?;
        server.start()?;
        Ok(server)
    }

    /// initdb on a free port, not started.
    fn create(tag: &str) -> Result<Self, String> {
        let bin = find_bin().ok_or("no initdb/pg_ctl on PATH or under /usr/lib/postgresql")?;
        let as_postgres = is_root();
        let base = std::env::temp_dir().join(format!("store-pg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).map_err(|e| format!("create {}: {e}", base.display()))?;
        if as_postgres {
            let (Some(uid), Some(gid)) = (id_of("-u"), id_of("-g")) else {
                return Err("running as root but there is no `postgres` user".into());
            };
            std::os::unix::fs::chown(&base, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", base.display()))?;
        }
        let mut server = Self {
            url: String::new(),
            port: 0,
            base,
            bin,
            as_postgres,
        };
        server.initdb()?;
        server.port = free_port();
        server.watchdog();
        server.url = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port);
        Ok(server)
    }

    fn initdb(&self) -> Result<(), String> {
        // An ICU default collation (when available) makes sure byte order comes from the
        // store's COLLATE "C", not from the server's locale.
        let base_args = ["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"];
        let data = self.data();
        let icu = self
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(base_args)
            .args([
                "--locale=C.UTF-8",
                "--locale-provider=icu",
                "--icu-locale=en-US",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if icu {
            return Ok(());
        }
        let _ = std::fs::remove_dir_all(&data);
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(base_args)
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Starts (or restarts) the server on its port and waits until it accepts connections.
    pub fn start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c full_page_writes=off \
             -c max_connections=200",
            self.port,
            self.base.display()
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.base.join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .map_err(|e| format!("pg_ctl start: {e}"))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.base.join("server.log")).unwrap_or_default();
            return Err(format!(
                "pg_ctl start failed: {}\n{log}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Stops the server at once (connections are cut, as in a crash of the database host).
    pub fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// A shell that waits for this process to end, then stops the server and removes its
    /// folder: the shared server of a test binary is never dropped.
    fn watchdog(&self) {
        let stop = format!(
            "{} -D '{}' -m immediate stop",
            if self.as_postgres {
                format!(
                    "runuser -u postgres -- '{}'",
                    self.bin.join("pg_ctl").display()
                )
            } else {
                format!("'{}'", self.bin.join("pg_ctl").display())
            },
            self.data().display()
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{base}'",
            pid = std::process::id(),
            base = self.base.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn required() -> bool {
    std::env::var("STORE_TEST_REQUIRE_POSTGRES").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The URL of the binary-wide server (started once), or why there is none. With
/// `STORE_TEST_REQUIRE_POSTGRES=1` (CI) an unavailable server is a failure, not a skip.
pub fn shared() -> Availability {
    static SERVER: OnceLock<Result<(String, Option<PgServer>), String>> = OnceLock::new();
    let state = SERVER.get_or_init(|| {
        if std::env::var("STORE_TEST_POSTGRES").is_ok_and(|v| v == "off") {
            return Err("STORE_TEST_POSTGRES=off".to_owned());
        }
        if let Ok(url) = std::env::var("STORE_TEST_POSTGRES_URL")
            && !url.is_empty()
        {
            return Ok((url, None));
        }
        PgServer::start_new("shared").map(|s| (s.url.clone(), Some(s)))
    });
    match state {
        Ok((url, _)) => Ok(url.clone()),
        Err(why) if required() => {
            panic!("PostgreSQL is required (STORE_TEST_REQUIRE_POSTGRES) but: {why}")
        }
        Err(why) => Err(why.clone()),
    }
}

/// Prints the one loud line of a skipped PostgreSQL test.
pub fn skip(test: &str, why: &str) {
    store_testkit::loud_skip(test, &format!("PostgreSQL unavailable: {why}"));
}

/// `base` with `-` for every character that is not a letter or digit.
pub fn sanitize(base: &str) -> String {
    base.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
