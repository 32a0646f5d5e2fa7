//! The `cluster` section of a node file: the node's name, the cluster secret, and the settings of
//! the Raft and gossip engines, checked with the same error quality as the rest.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use store_core::HumanDuration;

use crate::error::ConfigError;

/// Where the cluster secret comes from; the value itself is read when the engines start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The value of this environment variable.
    Env(String),
    /// The contents of this file (resolved against the node file's folder).
    File(PathBuf),
}

/// Who the Raft group starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaftMembers {
    /// Founding voters, name → address, the same map on every founding node; this node is one
    /// of them. One entry is a single-node cluster.
    Founding(BTreeMap<String, SocketAddr>),
    /// A node started empty, added later through the members endpoint.
    Join,
}

/// `cluster.raft`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RaftSettings {
    /// Internode address: Raft RPCs and forwarded client requests.
    pub bind: SocketAddr,
    /// What peers dial (default: `bind`).
    pub advertise: SocketAddr,
    /// Founding members, or `join`.
    pub members: RaftMembers,
    /// How often the leader heartbeats (default 100 ms).
    pub heartbeat_interval: Duration,
    /// The shortest election timeout; the longest is twice it (default 1 s).
    pub election_timeout: Duration,
    /// Applied entries between snapshots (default 10 000).
    pub snapshot_threshold: u64,
    /// How long a request may wait for a quorum (default 5 s).
    pub request_timeout: Duration,
    /// The most any two members' clocks may differ (default 500 ms; `0s` turns off the wait of
    /// a new leader).
    pub max_clock_skew: Duration,
}

/// `cluster.gossip`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GossipSettings {
    /// memberlist TCP and UDP address.
    pub bind: SocketAddr,
    /// What peers dial (default: `bind`).
    pub advertise: SocketAddr,
    /// Seeds to join; empty on the first node.
    pub join: Vec<SocketAddr>,
    /// How often full state is exchanged with a peer (default 5 s).
    pub push_pull_interval: Duration,
    /// How long a tombstone is kept; 0 drops it once every live member acknowledged it.
    pub tombstone_retention: Duration,
    /// How often durable namespaces are snapshotted when they changed (default 1 s).
    pub snapshot_interval: Duration,
    /// The most any two members' clocks may differ (default 500 ms; `0s` turns the clock guard
    /// off): a node further than this from most of its peers serves nothing, and a register
    /// stamped further than this ahead of a node's clock waits until its clock gets there.
    pub max_clock_skew: Duration,
}

/// The `cluster` section, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// The node's name, if the section gives one (otherwise the host name is used).
    pub name: Option<String>,
    /// The cluster secret's source; required when any cluster address is not loopback.
    pub secret: Option<SecretSource>,
    /// The Raft engine's settings, on nodes that serve `store.kv.raft`.
    pub raft: Option<RaftSettings>,
    /// The gossip engine's settings, on nodes that serve `store.kv.crdt`.
    pub gossip: Option<GossipSettings>,
}

/// The secret's bytes, read from its source (a trailing newline of a file is not part of it).
///
/// # Errors
/// `Invalid` naming `cluster.secret_env` or `cluster.secret_file` when the variable is unset,
/// the file unreadable, or the secret empty.
pub fn read_secret(source: &SecretSource) -> store_core::Result<Vec<u8>> {
    let (field, secret) = match source {
        SecretSource::Env(var) => (
            "cluster.secret_env",
            std::env::var(var).map(String::into_bytes).map_err(|_| {
                store_core::Error::invalid(format!(
                    "cluster.secret_env: environment variable {var} is not set"
                ))
            }),
        ),
        SecretSource::File(path) => (
            "cluster.secret_file",
            std::fs::read(path).map_err(|e| {
                store_core::Error::invalid(format!(
                    "cluster.secret_file: cannot read {}: {e}",
                    path.display()
                ))
            }),
        ),
    };
    let mut secret = secret.map_err(|e| e.with_field(field))?;
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    if secret.is_empty() {
        return Err(
            store_core::Error::invalid(format!("{field}: the cluster secret is empty"))
                .with_field(field),
        );
    }
    Ok(secret)
}

/// Every key of the section and its subsections, for unknown-field errors.
pub(crate) const CLUSTER_FIELDS: &[&str] = &["name", "secret_env", "secret_file", "raft", "gossip"];
pub(crate) const RAFT_FIELDS: &[&str] = &[
    "bind",
    "advertise",
    "initial_members",
    "join",
    "heartbeat_interval",
    "election_timeout",
    "snapshot_threshold",
    "request_timeout",
    "max_clock_skew",
];
pub(crate) const GOSSIP_FIELDS: &[&str] = &[
    "bind",
    "advertise",
    "join",
    "push_pull_interval",
    "tombstone_retention",
    "snapshot_interval",
    "max_clock_skew",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default)]
    secret_file: Option<String>,
    #[serde(default)]
    raft: Option<RawRaft>,
    #[serde(default)]
    gossip: Option<RawGossip>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRaft {
    #[serde(default)]
    bind: Option<String>,
    #[serde(default)]
    advertise: Option<String>,
    #[serde(default)]
    initial_members: Option<BTreeMap<String, String>>,
    #[serde(default)]
    join: bool,
    #[serde(default)]
    heartbeat_interval: Option<HumanDuration>,
    #[serde(default)]
    election_timeout: Option<HumanDuration>,
    #[serde(default)]
    snapshot_threshold: Option<u64>,
    #[serde(default)]
    request_timeout: Option<HumanDuration>,
    #[serde(default)]
    max_clock_skew: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGossip {
    #[serde(default)]
    bind: Option<String>,
    #[serde(default)]
    advertise: Option<String>,
    #[serde(default)]
    join: Vec<String>,
    #[serde(default)]
    push_pull_interval: Option<HumanDuration>,
    #[serde(default)]
    tombstone_retention: Option<HumanDuration>,
    #[serde(default)]
    snapshot_interval: Option<HumanDuration>,
    #[serde(default)]
    max_clock_skew: Option<HumanDuration>,
}

/// Where a problem is: the field's dotted path, and its line and column when known.
pub(crate) type Locate<'a> = &'a dyn Fn(&[&str]) -> Option<(usize, usize)>;

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn duration(value: Option<HumanDuration>, default: Duration) -> Duration {
    value
        .map(Duration::from)
        .filter(|d| !d.is_zero())
        .unwrap_or(default)
}

/// Checks the parsed section; every problem is pushed to `errors` with its field and position.
pub(crate) fn check(
    raw: RawCluster,
    file: &Path,
    locate: Locate<'_>,
    host_name: Option<&str>,
    errors: &mut Vec<ConfigError>,
) -> Option<ClusterConfig> {
    // The name the node goes by: the section's, else the host's.
    let node_name = raw.name.as_deref().or(host_name);
    let before = errors.len();
    let mut fail = |keys: &[&str], message: String| {
        let field = format!("cluster.{}", keys.join("."));
        let mut at: Vec<&str> = vec!["cluster"];
        at.extend_from_slice(keys);
        errors.push(
            ConfigError::invalid(file, message)
                .field(&field)
                .at(locate(&at)),
        );
    };
    let addr = |keys: &[&str], text: &str, fail: &mut dyn FnMut(&[&str], String)| {
        text.parse::<SocketAddr>()
            .map_err(|_| {
                fail(
                    keys,
                    format!(
                        "`{text}`: not an address like 127.0.0.1:7800 (an IP address and a port)"
                    ),
                );
            })
            .ok()
    };
    if let Some(name) = &raw.name
        && !is_name(name)
    {
        fail(
            &["name"],
            format!("`{name}`: must match ^[a-zA-Z][a-zA-Z0-9_.-]*$"),
        );
    }
    let base = file.parent().unwrap_or(Path::new("."));
    let secret = match (raw.secret_env, raw.secret_file) {
        (Some(_), Some(_)) => {
            fail(
                &["secret_file"],
                "secret_env and secret_file: give only one".to_owned(),
            );
            None
        }
        (Some(var), None) => Some(SecretSource::Env(var)),
        (None, Some(path)) => Some(SecretSource::File(base.join(path))),
        (None, None) => None,
    };

    let mut addresses = Vec::new();
    let raft = raw.raft.and_then(|r| {
        let Some(bind_text) = r.bind else {
            fail(
                &["raft", "bind"],
                "missing: the internode address, like 127.0.0.1:7800".to_owned(),
            );
            return None;
        };
        let bind = addr(&["raft", "bind"], &bind_text, &mut fail)?;
        let advertise = match &r.advertise {
            Some(text) => addr(&["raft", "advertise"], text, &mut fail)?,
            None => bind,
        };
        addresses.extend([bind, advertise]);
        let members = match (r.initial_members, r.join) {
            (Some(_), true) => {
                fail(
                    &["raft", "join"],
                    "join: true and initial_members: give only one".to_owned(),
                );
                return None;
            }
            (None, false) => {
                fail(
                    &["raft", "initial_members"],
                    "missing: the founding voters, name → address (one entry is a single-node \
                     cluster), or join: true for a node added later"
                        .to_owned(),
                );
                return None;
            }
            (None, true) => RaftMembers::Join,
            (Some(map), false) if map.is_empty() => {
                fail(
                    &["raft", "initial_members"],
                    "empty: list the founding voters, this node among them".to_owned(),
                );
                return None;
            }
            (Some(map), false) => {
                let mut members = BTreeMap::new();
                for (name, text) in map {
                    if !is_name(&name) {
                        fail(
                            &["raft", "initial_members"],
                            format!("member `{name}`: must match ^[a-zA-Z][a-zA-Z0-9_.-]*$"),
                        );
                        continue;
                    }
                    if let Some(a) = addr(&["raft", "initial_members"], &text, &mut fail) {
                        addresses.push(a);
                        members.insert(name, a);
                    }
                }
                if let Some(name) = node_name {
                    match members.get(name) {
                        None if !members.is_empty() => fail(
                            &["raft", "initial_members"],
                            format!(
                                "this node, `{name}`, is not one of the founding members ({}); \
                                 add it, or start it with join: true",
                                members.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        ),
                        Some(a) if *a != advertise => fail(
                            &["raft", "initial_members"],
                            format!(
                                "`{name}` is {a} here but this node advertises {advertise}: \
                                 every founding node must list the others at the address they \
                                 advertise"
                            ),
                        ),
                        _ => {}
                    }
                }
                RaftMembers::Founding(members)
            }
        };
        let heartbeat_interval = duration(r.heartbeat_interval, Duration::from_millis(100));
        let election_timeout = duration(r.election_timeout, Duration::from_secs(1));
        if heartbeat_interval
            .checked_mul(2)
            .is_none_or(|twice| election_timeout <= twice)
        {
            fail(
                &["raft", "election_timeout"],
                format!(
                    "{}: must be more than twice heartbeat_interval ({}), or followers start \
                     elections while the leader is healthy",
                    store_core::format_duration(election_timeout),
                    store_core::format_duration(heartbeat_interval)
                ),
            );
        }
        let snapshot_threshold = match r.snapshot_threshold {
            None | Some(0) => 10_000,
            Some(n) => n,
        };
        Some(RaftSettings {
            bind,
            advertise,
            members,
            heartbeat_interval,
            election_timeout,
            snapshot_threshold,
            request_timeout: duration(r.request_timeout, Duration::from_secs(5)),
            // Unlike the other durations, 0 means what it says: no wait.
            max_clock_skew: r
                .max_clock_skew
                .map_or(Duration::from_millis(500), Duration::from),
        })
    });

    let gossip = raw.gossip.and_then(|g| {
        let Some(bind_text) = g.bind else {
            fail(
                &["gossip", "bind"],
                "missing: the gossip address, like 127.0.0.1:7900".to_owned(),
            );
            return None;
        };
        let bind = addr(&["gossip", "bind"], &bind_text, &mut fail)?;
        let advertise = match &g.advertise {
            Some(text) => addr(&["gossip", "advertise"], text, &mut fail)?,
            None => bind,
        };
        let join: Vec<SocketAddr> = g
            .join
            .iter()
            .filter_map(|text| addr(&["gossip", "join"], text, &mut fail))
            .collect();
        addresses.extend([bind, advertise]);
        addresses.extend(join.iter().copied());
        Some(GossipSettings {
            bind,
            advertise,
            join,
            push_pull_interval: duration(g.push_pull_interval, Duration::from_secs(5)),
            tombstone_retention: g.tombstone_retention.map_or(Duration::ZERO, Duration::from),
            snapshot_interval: duration(g.snapshot_interval, Duration::from_secs(1)),
            // As for raft, 0 means what it says: the guard off.
            max_clock_skew: g
                .max_clock_skew
                .map_or(Duration::from_millis(500), Duration::from),
        })
    });

    if secret.is_none()
        && let Some(open) = addresses.iter().find(|a| !a.ip().is_loopback())
    {
        fail(
            &["secret_env"],
            format!(
                "{open} is not a loopback address: set secret_env or secret_file, the secret \
                 every node of the cluster shares"
            ),
        );
    }
    (errors.len() == before).then_some(ClusterConfig {
        name: raw.name,
        secret,
        raft,
        gossip,
    })
}
