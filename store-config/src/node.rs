//! The node config file (`docs/configuration.md`): data folder, HTTP settings, cluster settings,
//! registry paths.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_norway::Value;

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
    cluster: Option<Value>,
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
    /// Raft and gossip settings, kept as written for the cluster engines.
    pub cluster: Option<Value>,
    /// Registry files and folders.
    pub registry: Vec<PathBuf>,
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
        // 1-based line and column of the first `key:` at any depth, for errors.
        let position = |key: &str| {
            text.lines().enumerate().find_map(|(n, l)| {
                let trimmed = l.trim_start();
                trimmed
                    .starts_with(&format!("{key}:"))
                    .then(|| (n + 1, l.len() - trimmed.len() + 1))
            })
        };
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
                    errors.push(
                        ConfigError::invalid(path, format!("unknown field `{name}`{hint}"))
                            .field(&format!("{prefix}{name}"))
                            .at(position(name)),
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
                err = err.field(&field).at(position(&last));
            }
            ConfigErrors::from(err)
        })?;
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
            .at(position("bind"))
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
            .at(position("bind"))
            .into());
        }
        Ok(Self {
            file: path.to_path_buf(),
            data_dir: resolve(parsed.data_dir.as_deref().unwrap_or("./data")),
            http: parsed.http,
            bind,
            cluster: parsed.cluster,
            registry: parsed.registry.iter().map(|p| resolve(p)).collect(),
        })
    }

    /// The node's name: `cluster.name`, else the host name, else `local`.
    pub fn node_name(&self) -> String {
        let named = self
            .cluster
            .as_ref()
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        named
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "local".to_owned())
    }

    /// The context this node's stores are built in: its name and data folder.
    pub fn context(&self) -> NodeContext {
        NodeContext::new(self.node_name()).data_dir(&self.data_dir)
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
