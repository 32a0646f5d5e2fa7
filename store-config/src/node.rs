//! The node config file (`docs/configuration.md`): data folder, HTTP settings, cluster settings,
//! registry paths.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_norway::Value;

use crate::cluster::{CLUSTER_FIELDS, ClusterConfig, GOSSIP_FIELDS, RAFT_FIELDS, RawCluster};
use crate::context::NodeContext;
use crate::error::{ConfigError, ConfigErrors, closest};
use crate::registry::{Registry, RegistryBuilder};

const DEFAULT_BIND: &str = "127.0.0.1:7700";
/// The keys of a node file, and of its `http` section.
const TOP_FIELDS: &[&str] = &["data_dir", "http", "cluster", "registry"];
const HTTP_FIELDS: &[&str] = &["bind", "token_env", "insecure", "metrics"];

fn default_bind() -> String {
    DEFAULT_BIND.to_owned()
}

/// The `http` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on (default `127.0.0.1:7700`).
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Environment variable holding the bearer token clients must send.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Allow a non-loopback `bind` without a token.
    #[serde(default)]
    pub insecure: bool,
    /// Serve `GET /metrics` and count what it reports (default true).
    #[serde(default = "yes")]
    pub metrics: bool,
}

fn yes() -> bool {
    true
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: default_bind(),
            token_env: None,
            insecure: false,
            metrics: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    #[serde(default)]
    data_dir: Option<String>,
    #[serde(default)]
    http: HttpConfig,
    #[serde(default)]
    cluster: Option<RawCluster>,
    #[serde(default)]
    registry: Vec<String>,
}

/// A node's settings, with relative paths resolved against the node file's folder.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// The node config file.
    pub file: PathBuf,
    /// Where the node keeps its data (default `./data` beside the file).
    pub data_dir: PathBuf,
    /// HTTP settings.
    pub http: HttpConfig,
    /// The listen address, parsed from `http.bind`.
    pub bind: SocketAddr,
    /// The node's name, secret and engine settings, checked.
    pub cluster: Option<ClusterConfig>,
    /// Registry files and folders.
    pub registry: Vec<PathBuf>,
}

/// This machine's host name, when it has one.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|n| !n.is_empty())
}

impl NodeConfig {
    /// Reads and checks a node config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigErrors> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::invalid(path, format!("cannot read the file: {e}")))?;
        Self::from_str(path, &text)
    }

    /// Checks a node config given as text; `path` is where it (notionally) lives.
    pub fn from_str(path: &Path, text: &str) -> Result<Self, ConfigErrors> {
        // 1-based line and column of a key, found by its path (`["cluster", "raft", "bind"]`):
        // each key on a later line than its parent, indented more. The deepest key found when
        // the path does not go all the way (a flow-style mapping).
        let locate = |keys: &[&str]| {
            let mut found = None;
            let mut from = 0;
            let mut indent = None;
            for key in keys {
                let mut hit = None;
                for (n, l) in text.lines().enumerate().skip(from) {
                    let trimmed = l.trim_start();
                    let here = l.len() - trimmed.len();
                    if trimmed.is_empty() || trimmed.starts_with('#') {
                        continue;
                    }
                    // The parent's block ends at the first line indented no deeper than it.
                    if indent.is_some_and(|i| here <= i) {
                        break;
                    }
                    if trimmed.starts_with(&format!("{key}:")) {
                        hit = Some((n, here));
                        break;
                    }
                }
                let Some((n, here)) = hit else { break };
                found = Some((n + 1, here + 1));
                from = n + 1;
                indent = Some(here);
            }
            found
        };
        let position = |key: &str| locate(&[key]);
        let doc: Value = serde_norway::from_str(text).map_err(|e| {
            let at = e.location().map(|l| (l.line(), l.column()));
            ConfigError::invalid(path, format!("invalid YAML: {e}")).at(at)
        })?;
        // Unknown keys are found here, by name, so the error names the field and a suggestion.
        let mut errors = Vec::new();
        let mut check = |mapping: &serde_norway::Mapping, prefix: &str, known: &[&str]| {
            for key in mapping.keys() {
                let name = key.as_str().unwrap_or("?");
                if !known.contains(&name) {
                    let hint = closest(name, known)
                        .map(|c| format!(", did you mean `{c}`?"))
                        .unwrap_or_else(|| format!("; known: {}", known.join(", ")));
                    let mut at: Vec<&str> = prefix.split('.').filter(|p| !p.is_empty()).collect();
                    at.push(name);
                    errors.push(
                        ConfigError::invalid(path, format!("unknown field `{name}`{hint}"))
                            .field(&format!("{prefix}{name}"))
                            .at(locate(&at)),
                    );
                }
            }
        };
        match &doc {
            Value::Mapping(top) => {
                check(top, "", TOP_FIELDS);
                if let Some(Value::Mapping(http)) = top.get("http") {
                    check(http, "http.", HTTP_FIELDS);
                }
                if let Some(Value::Mapping(cluster)) = top.get("cluster") {
                    check(cluster, "cluster.", CLUSTER_FIELDS);
                    if let Some(Value::Mapping(raft)) = cluster.get("raft") {
                        check(raft, "cluster.raft.", RAFT_FIELDS);
                    }
                    if let Some(Value::Mapping(gossip)) = cluster.get("gossip") {
                        check(gossip, "cluster.gossip.", GOSSIP_FIELDS);
                    }
                }
            }
            Value::Null => {}
            _ => errors.push(ConfigError::invalid(
                path,
                "a node config is a mapping (data_dir, http, cluster, registry)",
            )),
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let doc = match doc {
            Value::Null => Value::Mapping(serde_norway::Mapping::new()),
            other => other,
        };
        let parsed: NodeFile = serde_path_to_error::deserialize(doc).map_err(|e| {
            let field = e.path().to_string();
            let message = e.into_inner().to_string();
            let last = field.rsplit('.').next().unwrap_or(&field).to_owned();
            let mut err = ConfigError::invalid(path, message);
            if field != "." {
                let keys: Vec<&str> = field.split('.').collect();
                err = err
                    .field(&field)
                    .at(locate(&keys).or_else(|| position(&last)));
            }
            ConfigErrors::from(err)
        })?;
        let mut errors = Vec::new();
        let cluster = parsed.cluster.and_then(|raw| {
            let host = host_name();
            crate::cluster::check(raw, path, &locate, host.as_deref(), &mut errors)
        });
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        // `./registry` beside `examples/local.yaml` is `examples/registry`, without the `./`.
        let resolve = |p: &str| {
            let p = Path::new(p);
            let joined = if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            };
            joined
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect::<PathBuf>()
        };
        let bind: SocketAddr = parsed.http.bind.parse().map_err(|_| {
            ConfigError::invalid(
                path,
                format!("`{}`: not an address like 127.0.0.1:7700", parsed.http.bind),
            )
            .field("http.bind")
            .at(locate(&["http", "bind"]))
        })?;
        if !bind.ip().is_loopback() && parsed.http.token_env.is_none() && !parsed.http.insecure {
            return Err(ConfigError::invalid(
                path,
                format!(
                    "`{bind}` is not a loopback address: set http.token_env (clients then send \
                     that bearer token) or http.insecure: true"
                ),
            )
            .field("http.bind")
            .at(locate(&["http", "bind"]))
            .into());
        }
        Ok(Self {
            file: path.to_path_buf(),
            data_dir: resolve(parsed.data_dir.as_deref().unwrap_or("./data")),
            http: parsed.http,
            bind,
            cluster,
            registry: parsed.registry.iter().map(|p| resolve(p)).collect(),
        })
    }

    /// The node's name: `cluster.name`, else the host name, else `local`.
    pub fn node_name(&self) -> String {
        let named = self.cluster.as_ref().and_then(|c| c.name.clone());
        named
            .or_else(host_name)
            .unwrap_or_else(|| "local".to_owned())
    }

    /// The context this node's stores are built in: its name, data folder and cluster section.
    pub fn context(&self) -> NodeContext {
        let context = NodeContext::new(self.node_name()).data_dir(&self.data_dir);
        match &self.cluster {
            Some(cluster) => context.cluster(cluster.clone()),
            None => context,
        }
    }

    /// Loads the registry files this node names.
    pub fn load_registry(&self, builder: RegistryBuilder) -> Result<Registry, ConfigErrors> {
        builder.load(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_relative_paths() {
        let c = NodeConfig::from_str(
            Path::new("/etc/store/node.yaml"),
            "registry: [./registry]\n",
        )
        .unwrap();
        assert_eq!(c.data_dir, Path::new("/etc/store/data"));
        assert_eq!(c.registry, vec![PathBuf::from("/etc/store/registry")]);
        assert_eq!(c.bind.to_string(), DEFAULT_BIND);
        assert!(!c.http.insecure);
    }

    #[test]
    fn non_loopback_needs_a_token_or_insecure() {
        let e =
            NodeConfig::from_str(Path::new("n.yaml"), "http:\n  bind: 0.0.0.0:7700\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("n.yaml:2:3: field `http.bind`: `0.0.0.0:7700` is not a loopback"),
            "{e}"
        );
        let ok = "http:\n  bind: 0.0.0.0:7700\n  token_env: STORE_TOKEN\n";
        assert!(NodeConfig::from_str(Path::new("n.yaml"), ok).is_ok());
        let ok = "http:\n  bind: 0.0.0.0:7700\n  insecure: true\n";
        assert!(NodeConfig::from_str(Path::new("n.yaml"), ok).is_ok());
    }

    #[test]
    fn wrong_types_and_bad_yaml_name_their_field_and_line() {
        let e = NodeConfig::from_str(Path::new("n.yaml"), "http:\n  insecure: maybe\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("n.yaml:2:3: field `http.insecure`: "), "{e}");
        let e = NodeConfig::from_str(Path::new("n.yaml"), "registry: [a\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("n.yaml:") && e.contains("invalid YAML"),
            "{e}"
        );
        let e = NodeConfig::from_str(Path::new("n.yaml"), "data_dri: x\nbogus: 1\n").unwrap_err();
        assert_eq!(e.len(), 2, "every unknown key is reported: {e}");
        assert!(
            e.to_string()
                .contains("; known: data_dir, http, cluster, registry"),
            "{e}"
        );
    }

    const CLUSTER: &str = "\
http:
  bind: 127.0.0.1:7700
cluster:
  name: n1
  raft:
    bind: 127.0.0.1:7800
    initial_members:
      n1: 127.0.0.1:7800
      n2: 127.0.0.1:7810
      n3: 127.0.0.1:7820
    election_timeout: 2s
  gossip:
    bind: 127.0.0.1:7900
    join: [127.0.0.1:7910]
";

    #[test]
    fn a_cluster_section_is_read_with_its_defaults() {
        let c = NodeConfig::from_str(Path::new("n.yaml"), CLUSTER).unwrap();
        assert_eq!(c.node_name(), "n1");
        let cluster = c.cluster.unwrap();
        let raft = cluster.raft.unwrap();
        assert_eq!(raft.advertise, raft.bind, "advertise defaults to bind");
        assert_eq!(
            raft.heartbeat_interval,
            std::time::Duration::from_millis(100)
        );
        assert_eq!(raft.election_timeout, std::time::Duration::from_secs(2));
        assert_eq!(raft.snapshot_threshold, 10_000);
        assert_eq!(raft.request_timeout, std::time::Duration::from_secs(5));
        match raft.members {
            crate::RaftMembers::Founding(m) => assert_eq!(m.len(), 3),
            other => panic!("{other:?}"),
        }
        let gossip = cluster.gossip.unwrap();
        assert_eq!(gossip.join.len(), 1);
        assert_eq!(gossip.push_pull_interval, std::time::Duration::from_secs(5));
        assert_eq!(gossip.max_clock_skew, std::time::Duration::from_millis(500));
        assert_eq!(cluster.secret, None, "loopback needs no secret");
        let off = CLUSTER.replacen(
            "    join: [127.0.0.1:7910]",
            "    join: [127.0.0.1:7910]\n    max_clock_skew: 0s",
            1,
        );
        let c = NodeConfig::from_str(Path::new("n.yaml"), &off).unwrap();
        let gossip = c.cluster.unwrap().gossip.unwrap();
        assert_eq!(gossip.max_clock_skew, std::time::Duration::ZERO, "0s: off");
    }

    #[test]
    fn cluster_errors_name_field_and_line() {
        let bad = |from: &str, to: &str| {
            let text = CLUSTER.replacen(from, to, 1);
            NodeConfig::from_str(Path::new("n.yaml"), &text)
                .unwrap_err()
                .to_string()
        };
        let e = bad("election_timeout: 2s", "electon_timeout: 2s");
        assert!(
            e.contains("n.yaml:11:5: field `cluster.raft.electon_timeout`"),
            "{e}"
        );
        assert!(e.contains("did you mean `election_timeout`?"), "{e}");
        let e = bad("election_timeout: 2s", "election_timeout: 150ms");
        assert!(
            e.contains("n.yaml:11:5: field `cluster.raft.election_timeout`: 150ms"),
            "{e}"
        );
        let e = bad("    bind: 127.0.0.1:7800", "    bind: localhost:7800");
        assert!(
            e.contains("n.yaml:6:5: field `cluster.raft.bind`: `localhost:7800`"),
            "{e}"
        );
        let e = bad("  name: n1", "  name: n9");
        assert!(
            e.contains("this node, `n9`, is not one of the founding members"),
            "{e}"
        );
        let e = bad("      n1: 127.0.0.1:7800", "      n1: 127.0.0.1:7801");
        assert!(
            e.contains("every founding node must list the others"),
            "{e}"
        );
        let e = bad(
            "    election_timeout: 2s",
            "    election_timeout: 2s\n    join: true",
        );
        assert!(
            e.contains("join: true and initial_members: give only one"),
            "{e}"
        );
        let e = bad("    bind: 127.0.0.1:7900", "    bind: 10.0.0.7:7900");
        assert!(
            e.contains("field `cluster.secret_env`: 10.0.0.7:7900 is not a loopback"),
            "{e}"
        );
        let ok = CLUSTER
            .replacen("    bind: 127.0.0.1:7900", "    bind: 10.0.0.7:7900", 1)
            .replacen("  name: n1", "  name: n1\n  secret_env: CLUSTER_SECRET", 1);
        assert!(NodeConfig::from_str(Path::new("n.yaml"), &ok).is_ok());
        let e = bad("  raft:\n    bind: 127.0.0.1:7800\n", "  raft:\n");
        assert!(e.contains("field `cluster.raft.bind`: missing"), "{e}");
        assert!(
            e.starts_with("n.yaml:5:3:"),
            "at its parent, not gossip's bind: {e}"
        );
        let e = bad(
            "      n1: 127.0.0.1:7800\n      n2: 127.0.0.1:7810\n      n3: 127.0.0.1:7820\n",
            "      {}\n",
        );
        assert!(e.contains("initial_members"), "{e}");
        let e = bad("    election_timeout: 2s", "    election_timeout: soon");
        assert!(e.contains("field `cluster.raft.election_timeout`"), "{e}");
        let e = bad(
            "    join: [127.0.0.1:7910]",
            "    join: [127.0.0.1:7910]\n    max_clock_skew: half a second",
        );
        assert!(
            e.contains("field `cluster.gossip.max_clock_skew`") && e.contains("half a second"),
            "{e}"
        );
    }

    #[test]
    fn unknown_fields_name_line_and_suggest() {
        let e =
            NodeConfig::from_str(Path::new("n.yaml"), "data_dir: x\nregistri: []\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "n.yaml:2:1: field `registri`: unknown field `registri`, did you mean `registry`?"
        );
        let e = NodeConfig::from_str(Path::new("n.yaml"), "http:\n  bnd: x\n").unwrap_err();
        assert!(
            e.to_string().contains("n.yaml:2:3: field `http.bnd`"),
            "{e}"
        );
        assert!(e.to_string().contains("did you mean `bind`?"), "{e}");
    }
}
