//! The Raft group's types: node ids and members, the commands a log entry carries and what
//! applying one answers.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A node's Raft id: the first eight bytes of the SHA-256 of its name, so every node derives the
/// same id for a name without coordination.
pub(crate) type NodeId = u64;

/// The id of the node called `name`.
pub(crate) fn node_id(name: &str) -> NodeId {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// A member of the group as the membership log records it: its name and the internode address
/// peers dial.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Member {
    /// The node's unique name (`cluster.name`).
    pub(crate) name: String,
    /// The address its internode listener is reachable at (`cluster.raft.advertise`).
    pub(crate) addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

openraft::declare_raft_types!(
    /// The type configuration of the group.
    pub(crate) TypeConfig:
        D = Request,
        R = Responses,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = crate::snapshot::SnapshotFile,
);

/// A log entry's commands with the proposing leader's clock reading, which the state machine
/// judges deadlines and conditions by (never the applying node's clock).
///
/// The leader packs the writes that arrive together into one entry, applied in order; no two of
/// them touch the same key, so every write's version (the entry's index) is still greater than
/// any version its key had.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Request {
    /// The leader's clock when it proposed the entry, in Unix milliseconds.
    pub(crate) stamp_ms: u64,
    /// What to do, in order; one [`Response`] each.
    pub(crate) commands: Vec<Command>,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} commands @{}", self.commands.len(), self.stamp_ms)
    }
}

impl Command {
    /// The one key a write or delete touches (cleanup touches many, and conflicts with none:
    /// it re-checks each deadline when applied).
    /// About how many bytes the command takes in an entry: what byte budgets count.
    pub(crate) fn size(&self) -> usize {
        match self {
            Self::Write { key, value, .. } => 32 + key.len() + value.len(),
            Self::Delete { key } => 16 + key.len(),
            Self::Expire { keys } => 16 + keys.iter().map(|(k, _)| 16 + k.len()).sum::<usize>(),
            Self::Identities { incarnations, .. } => {
                16 + incarnations
                    .iter()
                    .map(|(n, _)| 16 + n.len())
                    .sum::<usize>()
            }
        }
    }

    pub(crate) fn key(&self) -> Option<&str> {
        match self {
            Self::Write { key, .. } | Self::Delete { key } => Some(key),
            Self::Expire { .. } | Self::Identities { .. } => None,
        }
    }
}

/// A state-machine command. Keys are physical: `<namespace>:<key>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Command {
    /// Writes `value` under `key` if `condition` holds; the deadline is `stamp + ttl_ms`.
    Write {
        /// Physical key.
        key: String,
        /// The value.
        value: Bytes,
        /// Time to live in milliseconds; `None` = no expiry.
        ttl_ms: Option<u64>,
        /// When the write happens.
        condition: Cond,
    },
    /// Removes `key` if it is live.
    Delete {
        /// Physical key.
        key: String,
    },
    /// Cleanup: removes each key whose deadline is still the given one and has passed. Changes
    /// no answer, only reclaims space.
    Expire {
        /// Physical keys with the deadline the leader saw in its index.
        keys: Vec<(String, u64)>,
    },
    /// The leader recording who the cluster is: its id, and the incarnation of each member (the
    /// random number a node's data folder was created with). Each is recorded only where none
    /// is yet; a member's record goes when it leaves the membership. The transport refuses a
    /// peer whose incarnation is not the recorded one (a voter whose data folder was wiped).
    Identities {
        /// A cluster id, kept only if the cluster has none yet.
        cluster: u64,
        /// Member name and incarnation, each kept only if the member has none yet.
        incarnations: Vec<(String, u64)>,
    },
}

/// The condition of a write, as the state machine evaluates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Cond {
    /// Always write.
    Always,
    /// Only if no live value exists.
    IfAbsent,
    /// Only if the live value has this version.
    IfVersion(u64),
}

/// What applying an entry answers: one [`Response`] per command (none for a blank or membership
/// entry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Responses(pub(crate) Vec<Response>);

/// What applying one command answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Response {
    /// A cleanup.
    Done,
    /// The write happened: the new version (the entry's log index) and deadline.
    Written {
        /// The entry's log index.
        version: u64,
        /// Absolute deadline, Unix milliseconds.
        expires_at: Option<u64>,
    },
    /// A delete: whether a live key was removed.
    Deleted(bool),
    /// `IfAbsent` found a live value.
    Exists,
    /// `IfVersion` found no live value.
    Missing,
    /// `IfVersion` found another version.
    Mismatch {
        /// The version the key has.
        current: u64,
    },
}
