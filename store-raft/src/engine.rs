//! [`RaftEngine`]: the node-wide Raft group every `store.kv.raft` view shares.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use store_core::backend::fault;
use store_core::{Error, Result, SharedClock, system_clock};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::log::LogStore;
use crate::net::{CallError, Identity, Peers, ReadIndex, Refusal, Reply, Rpc, Secret};
use crate::network::Network;
use crate::sm::{Shared, StateMachine};
use crate::types::{Command, Member, NodeId, Request, Response, TypeConfig, node_id};

/// How long to wait between two tries while there is no leader or the leader moved.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Most expired keys one cleanup entry removes.
const CLEANUP_BATCH: usize = 512;
/// Most writes one entry carries.
const MAX_BATCH: usize = 256;
/// Most bytes of keys and values one entry carries (one write alone may carry more): entries
/// stay small enough to replicate within a heartbeat interval.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// How far behind the leader's log a learner may be when it is promoted to voter.
const CATCH_UP_LAG: u64 = 1000;
/// Writes waiting for the leader's proposer, at most; one more is refused at once.
const MAX_QUEUED_WRITES: usize = 16 * 1024;
/// Entries the leader has proposed and not yet seen applied, at most; writes that arrive
/// meanwhile wait and go together in the next entry.
const MAX_IN_FLIGHT: usize = 4;

/// A write waiting for the leader to propose it.
pub(crate) struct Pending {
    command: Command,
    reply: oneshot::Sender<Try<Response>>,
}

/// Which members found the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    /// The founding voters, name → internode address; the same map on every founding node.
    /// A one-entry map is a single-node cluster.
    Founding(BTreeMap<String, String>),
    /// This node joins a running cluster: it waits until a member adds it.
    Join,
}

/// Everything the engine needs to start.
#[derive(Clone)]
pub struct RaftConfig {
    /// This node's unique name.
    pub name: String,
    /// Folder of the sled database (`<data_dir>/_sys/raft` on a node).
    pub dir: PathBuf,
    /// Address the internode listener binds; outgoing connections are made from its IP too.
    pub bind: SocketAddr,
    /// Address peers dial; `None` = `bind`.
    pub advertise: Option<String>,
    /// Founding members, or join later.
    pub members: Members,
    /// Leader heartbeat period.
    pub heartbeat_interval: Duration,
    /// The minimum election timeout; the maximum is twice it.
    pub election_timeout: Duration,
    /// Applied entries between two snapshots.
    pub snapshot_threshold: u64,
    /// A request waiting longer fails `Timeout` (or `Unavailable` when known not applied).
    pub request_timeout: Duration,
    /// The most any two members' clocks may differ: a new leader (or a leader restarted from
    /// disk) serves nothing until its own clock has run this long past the moment it took
    /// over, so it never judges expiry at a time before one its predecessor already judged by.
    /// 0 turns the wait off.
    pub max_clock_skew: Duration,
    /// The cluster secret every internode connection proves it holds.
    pub secret: Vec<u8>,
    /// The clock the leader stamps into entries and judges reads by.
    pub clock: SharedClock,
    /// How often the leader proposes the removal of expired keys.
    pub cleanup_interval: Duration,
}

impl fmt::Debug for RaftConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaftConfig")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("bind", &self.bind)
            .field("advertise", &self.advertise)
            .field("members", &self.members)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("election_timeout", &self.election_timeout)
            .field("snapshot_threshold", &self.snapshot_threshold)
            .field("request_timeout", &self.request_timeout)
            .field("max_clock_skew", &self.max_clock_skew)
            .field("secret", &"***")
            .finish_non_exhaustive()
    }
}

impl RaftConfig {
    /// A configuration with the documented defaults: heartbeat 100 ms, election timeout 1 s,
    /// snapshots every 10 000 entries, requests time out after 5 s, clocks within 500 ms of each
    /// other, no secret, system clock.
    pub fn new(
        name: impl Into<String>,
        dir: impl Into<PathBuf>,
        bind: SocketAddr,
        members: Members,
    ) -> Self {
        Self {
            name: name.into(),
            dir: dir.into(),
            bind,
            advertise: None,
            members,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_secs(1),
            snapshot_threshold: 10_000,
            request_timeout: Duration::from_secs(5),
            max_clock_skew: Duration::from_millis(500),
            secret: Vec::new(),
            clock: system_clock(),
            cleanup_interval: Duration::from_secs(1),
        }
    }

    fn advertised(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.bind.to_string())
    }

    fn check(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::invalid(why).with_field(field));
        if self.name.is_empty() {
            return bad("name", "the node name is empty".into());
        }
        if self.heartbeat_interval.is_zero() {
            return bad(
                "heartbeat_interval",
                "heartbeat_interval must be positive".into(),
            );
        }
        if self.election_timeout <= self.heartbeat_interval {
            return bad(
                "election_timeout",
                format!(
                    "election_timeout ({:?}) must be longer than heartbeat_interval ({:?})",
                    self.election_timeout, self.heartbeat_interval
                ),
            );
        }
        if self.snapshot_threshold == 0 {
            return bad(
                "snapshot_threshold",
                "snapshot_threshold must be positive".into(),
            );
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout", "request_timeout must be positive".into());
        }
        if let Members::Founding(members) = &self.members {
            if !members.contains_key(&self.name) {
                return bad(
                    "initial_members",
                    format!("initial_members does not name this node ({:?})", self.name),
                );
            }
            let mut ids = BTreeMap::new();
            for name in members.keys() {
                if let Some(other) = ids.insert(node_id(name), name) {
                    return bad(
                        "initial_members",
                        format!(
                            "members {other:?} and {name:?} hash to the same node id; rename one"
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

/// The role of a member in the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Votes and counts for the quorum.
    Voter,
    /// Receives the log, does not vote.
    Learner,
}

/// One member as [`RaftEngine::status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The member's name.
    pub name: String,
    /// Its internode address.
    pub addr: String,
    /// Voter or learner.
    pub role: Role,
    /// Whether this node got an answer from it just now (always true for itself).
    pub reachable: bool,
    /// The incarnation the cluster recorded for it (16 hex digits; `None` until the leader
    /// recorded one). A node whose data folder was wiped comes back with another and is
    /// refused until it is removed and added back.
    pub incarnation: Option<String>,
}

/// The group as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This node's name.
    pub name: String,
    /// This node's incarnation (16 hex digits): the random number its data folder was created
    /// with.
    pub incarnation: String,
    /// The cluster id (16 hex digits), once the first leader recorded one.
    pub cluster_id: Option<String>,
    /// The leader's name, if this node knows one.
    pub leader: Option<String>,
    /// The current term.
    pub term: u64,
    /// The last index in this node's log (on the leader: proposed, perhaps not committed yet).
    pub last_log_index: u64,
    /// The last log index known committed.
    pub commit_index: u64,
    /// The last log index applied to this node's state machine.
    pub applied_index: u64,
    /// The log index this node's last snapshot covers (0: none yet).
    pub snapshot_index: u64,
    /// The last log index this node purged from its log (0: none).
    pub purged_index: u64,
    /// Every member, voters first.
    pub members: Vec<MemberStatus>,
}

/// A node's engine before and after it starts: what a registry shares between the
/// `store.kv.raft` entries it builds (which must not bind sockets while loading) and starts with
/// the node.
#[derive(Debug)]
pub struct RaftNode {
    config: RaftConfig,
    engine: Arc<OnceLock<RaftEngine>>,
    starting: tokio::sync::Mutex<()>,
}

impl RaftNode {
    /// An engine to start later with `config`.
    pub fn new(config: RaftConfig) -> Self {
        Self {
            config,
            engine: Arc::new(OnceLock::new()),
            starting: tokio::sync::Mutex::new(()),
        }
    }

    /// The configuration it starts with.
    pub fn config(&self) -> &RaftConfig {
        &self.config
    }

    /// The running engine, once started.
    pub fn engine(&self) -> Option<&RaftEngine> {
        self.engine.get()
    }

    pub(crate) fn slot(&self) -> Arc<OnceLock<RaftEngine>> {
        Arc::clone(&self.engine)
    }

    /// Starts the engine (once; later calls do nothing).
    ///
    /// # Errors
    /// As [`RaftEngine::start`].
    pub async fn start(&self) -> Result<&RaftEngine> {
        let _one = self.starting.lock().await;
        if let Some(engine) = self.engine.get() {
            return Ok(engine);
        }
        let engine = RaftEngine::start(self.config.clone()).await?;
        Ok(self.engine.get_or_init(|| engine))
    }
}

#[async_trait::async_trait]
impl store_core::Lifecycle for RaftNode {
    async fn start(&self) -> Result<()> {
        RaftNode::start(self).await.map(|_| ())
    }

    async fn stop(&self) {
        if let Some(engine) = self.engine.get() {
            engine.shutdown().await;
        }
    }
}

/// The node-wide Raft engine: one group, durable in sled, reachable on its internode address.
/// Cloning is cheap and shares the engine.
#[derive(Clone)]
pub struct RaftEngine {
    inner: Arc<Inner>,
}

impl fmt::Debug for RaftEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaftEngine")
            .field("name", &self.inner.name)
            .field("bind", &self.inner.bind)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    name: String,
    id: NodeId,
    bind: SocketAddr,
    request_timeout: Duration,
    election_timeout: Duration,
    pub(crate) raft: openraft::Raft<TypeConfig>,
    pub(crate) sm: Arc<Shared>,
    peers: Arc<Peers>,
    /// This node's incarnation, and how it judges peers.
    identity: Arc<Identity>,
    pub(crate) clock: SharedClock,
    db: sled::Db,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
    /// Writes for the leader's proposer (see [`proposer`]).
    proposals: mpsc::Sender<Pending>,
    /// Leadership this node restored from its own disk at start, if any (see [`ReadFloor`]).
    restored: Option<ReadFloor>,
    /// The largest clock reading this node has used: its `now` never goes back.
    last_now: std::sync::atomic::AtomicU64,
    max_clock_skew_ms: u64,
    /// The leadership this node holds or last held, and its own clock reading when it saw it
    /// begin (see [`Inner::ready_to_lead`]).
    took_over: Mutex<Option<(openraft::Vote<NodeId>, u64)>>,
}

/// A leadership restored at start, and the read index it may not go below.
///
/// openraft 0.9 lets a node whose stored vote is a committed vote for itself come back as the
/// leader of the same term at once, with the commit index it had persisted, which can be behind
/// entries it had already committed and acknowledged before it stopped. Its read index is then
/// that stale commit index, and a read would miss acknowledged writes. Every entry such a write
/// can be in is in this node's log at start, so as long as this leadership lasts, a read waits
/// for the last of them to apply: for the leader to commit what it had.
#[derive(Debug, Clone, Copy)]
struct ReadFloor {
    vote: openraft::Vote<NodeId>,
    last_index: u64,
}

enum Leader {
    Me,
    Other(String),
    Unknown,
}

/// The outcome of one try: final, or known to have done nothing (try again).
pub(crate) enum Try<T> {
    Done(Result<T>),
    Again,
}

/// The read floor of a node whose stored vote is a committed vote for itself: openraft will
/// restore its leadership in that term at once.
async fn restored_leadership(
    log: &mut LogStore,
    id: NodeId,
) -> std::result::Result<Option<ReadFloor>, openraft::StorageError<NodeId>> {
    use openraft::storage::RaftLogStorage as _;
    let Some(vote) = log.read_vote().await? else {
        return Ok(None);
    };
    if !vote.is_committed() || vote.leader_id().voted_for() != Some(id) {
        return Ok(None);
    }
    let last_index = log
        .get_log_state()
        .await?
        .last_log_id
        .map_or(0, |l| l.index);
    Ok(Some(ReadFloor { vote, last_index }))
}

fn storage_error(e: impl fmt::Display) -> Error {
    Error::internal(format!("raft storage: {e}"))
}

impl RaftEngine {
    /// Opens the state in `config.dir`, binds the internode listener, and joins the group:
    /// founding members initialize it (every founding node with the same map forms one cluster,
    /// whatever the start order); a joining node waits to be added.
    ///
    /// Must be called inside a Tokio runtime, which then runs the engine's tasks.
    ///
    /// # Errors
    /// `Invalid` for a bad configuration (the error names the field); `Unavailable` when the
    /// folder cannot be opened (another process holds it) or the address cannot be bound.
    pub async fn start(config: RaftConfig) -> Result<Self> {
        config.check()?;
        let listener = TcpListener::bind(config.bind).await.map_err(|e| {
            Error::unavailable(format!("cannot bind {}: {e}", config.bind)).with_field("bind")
        })?;
        Self::start_inner(config, listener).await
    }

    /// [`RaftEngine::start`] on a listener the caller already bound (its address replaces
    /// `config.bind`): how a test or a supervisor hands over a socket without a race for the
    /// port.
    ///
    /// # Errors
    /// As [`RaftEngine::start`].
    pub async fn start_on(mut config: RaftConfig, listener: std::net::TcpListener) -> Result<Self> {
        config.check()?;
        let prepared = listener
            .set_nonblocking(true)
            .and_then(|()| listener.local_addr())
            .and_then(|addr| Ok((addr, TcpListener::from_std(listener)?)));
        let (addr, listener) =
            prepared.map_err(|e| Error::unavailable(format!("cannot use the listener: {e}")))?;
        config.bind = addr;
        Self::start_inner(config, listener).await
    }

    async fn start_inner(config: RaftConfig, listener: TcpListener) -> Result<Self> {
        std::fs::create_dir_all(&config.dir).map_err(|e| {
            Error::unavailable(format!("cannot create {}: {e}", config.dir.display()))
        })?;
        // Every durable write is flushed explicitly (appends, votes, snapshots); sled's own
        // periodic flush would only add fsyncs.
        let db = sled::Config::new()
            .path(&config.dir)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| {
                Error::unavailable(format!("cannot open {}: {e}", config.dir.display()))
            })?;
        let mut log = LogStore::open(&db).map_err(storage_error)?;
        let (sm, shared) =
            StateMachine::open(&db, &config.dir.join("snapshots")).map_err(storage_error)?;
        let id = node_id(&config.name);
        let restored = restored_leadership(&mut log, id)
            .await
            .map_err(storage_error)?;
        if let Some(floor) = restored {
            tracing::info!(
                vote = %floor.vote,
                last_index = floor.last_index,
                "restarted as the leader it was: no read is served below the last index until it is applied"
            );
        }
        let incarnation = incarnation(&db)?;
        let identity = Arc::new(Identity::new(
            config.name.clone(),
            incarnation,
            Arc::clone(&shared) as Arc<dyn crate::net::Records>,
        ));
        let secret = Secret::new(&config.secret);
        let peers = Arc::new(Peers::new(
            Arc::clone(&identity),
            config.bind.ip(),
            secret.clone(),
        ));

        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        let raft_config = openraft::Config {
            cluster_name: "store-raft".into(),
            heartbeat_interval: ms(config.heartbeat_interval),
            election_timeout_min: ms(config.election_timeout),
            election_timeout_max: ms(config.election_timeout) * 2,
            install_snapshot_timeout: ms(config.request_timeout).max(1000),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_threshold),
            max_in_snapshot_log_to_keep: config.snapshot_threshold / 4,
            purge_batch_size: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::invalid(format!("raft settings: {e}")))?;

        let raft = openraft::Raft::new(
            id,
            Arc::new(raft_config),
            Network::new(Arc::clone(&peers), config.request_timeout),
            log,
            sm,
        )
        .await
        .map_err(|e| Error::internal(format!("cannot start raft: {e}")))?;

        let (stop, stopped) = watch::channel(false);
        let (proposals, pending) = mpsc::channel(MAX_QUEUED_WRITES);
        let inner = Arc::new(Inner {
            name: config.name.clone(),
            id,
            bind: config.bind,
            request_timeout: config.request_timeout,
            election_timeout: config.election_timeout,
            raft,
            sm: shared,
            peers,
            identity: Arc::clone(&identity),
            clock: config.clock.clone(),
            db,
            stop,
            tasks: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            proposals,
            restored,
            last_now: std::sync::atomic::AtomicU64::new(0),
            max_clock_skew_ms: u64::try_from(config.max_clock_skew.as_millis())
                .unwrap_or(u64::MAX)
                .min(u64::MAX / 4),
            took_over: Mutex::new(None),
        });

        let weak = Arc::downgrade(&inner);
        let server = tokio::spawn(crate::net::serve(
            listener,
            secret,
            identity,
            move |rpc| {
                let weak = Weak::clone(&weak);
                async move {
                    match weak.upgrade() {
                        Some(inner) => inner.handle(rpc).await,
                        None => refusal_for(&rpc, Refusal::NotLeader),
                    }
                }
            },
            stopped.clone(),
        ));
        let proposing = tokio::spawn(proposer(Arc::downgrade(&inner), pending, stopped.clone()));
        let cleanup = tokio::spawn(cleanup_loop(
            Arc::downgrade(&inner),
            config.cleanup_interval,
            stopped.clone(),
        ));
        let recording = tokio::spawn(record_identities(
            Arc::downgrade(&inner),
            config.election_timeout,
            stopped.clone(),
        ));
        let watching = tokio::spawn(watch_leadership(Arc::downgrade(&inner), stopped));
        inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend([server, proposing, cleanup, recording, watching]);

        if let Members::Founding(members) = &config.members {
            let nodes: BTreeMap<NodeId, Member> = members
                .iter()
                .map(|(name, addr)| {
                    let addr = if *name == config.name {
                        config.advertised()
                    } else {
                        addr.clone()
                    };
                    (
                        node_id(name),
                        Member {
                            name: name.clone(),
                            addr,
                        },
                    )
                })
                .collect();
            match inner.raft.initialize(nodes).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(Error::internal(format!("cannot initialize raft: {e}"))),
            }
        }
        tracing::info!(name = %config.name, bind = %config.bind, "raft engine started");
        Ok(Self { inner })
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The internode address the engine listens on.
    pub fn bind(&self) -> SocketAddr {
        self.inner.bind
    }

    /// The leader's name, if this node knows one now.
    pub fn leader(&self) -> Option<String> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        let leader = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.name.clone())
    }

    /// The group as this node sees it; `reachable` comes from a ping to every member.
    pub async fn status(&self) -> Result<ClusterStatus> {
        let inner = &self.inner;
        let (term, leader, members, last_log_index, snapshot_index, purged_index) = {
            let metrics = inner.raft.metrics();
            let m = metrics.borrow();
            let leader = m.current_leader.and_then(|id| {
                m.membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| n.name.clone())
            });
            (
                m.current_term,
                leader,
                inner.members_of(&m.membership_config),
                m.last_log_index.unwrap_or(0),
                m.snapshot.map(|l| l.index).unwrap_or(0),
                m.purged.map(|l| l.index).unwrap_or(0),
            )
        };
        let commit_index = inner
            .raft
            .with_raft_state(|st| st.committed.map(|l| l.index).unwrap_or(0))
            .await
            .map_err(|e| Error::closed(format!("the raft engine stopped: {e}")))?;
        let mut pings = tokio::task::JoinSet::new();
        for (i, member) in members.iter().enumerate() {
            let (inner, name, addr) = (Arc::clone(inner), member.name.clone(), member.addr.clone());
            pings.spawn(async move { (i, name == inner.name || inner.ping(&addr).await) });
        }
        let mut members = members;
        while let Some(done) = pings.join_next().await {
            if let Ok((i, reachable)) = done
                && let Some(member) = members.get_mut(i)
            {
                member.reachable = reachable;
            }
        }
        Ok(ClusterStatus {
            name: inner.name.clone(),
            incarnation: format!("{:016x}", inner.identity.incarnation()),
            cluster_id: inner.sm.cluster_id().map(|id| format!("{id:016x}")),
            leader,
            term,
            last_log_index,
            commit_index,
            applied_index: inner.sm.applied_index(),
            snapshot_index,
            purged_index,
            members,
        })
    }

    /// Adds `name` at `addr` as a learner and, when `voter`, promotes it once it has caught up.
    /// Any node accepts it: a follower forwards it to the leader. Answers the new membership.
    pub async fn add_member(
        &self,
        name: &str,
        addr: &str,
        voter: bool,
    ) -> Result<Vec<MemberStatus>> {
        if name.is_empty() {
            return Err(Error::invalid("member name is empty").with_field("name"));
        }
        if addr.parse::<SocketAddr>().is_err() && !addr.contains(':') {
            return Err(
                Error::invalid(format!("member address {addr:?} is not host:port"))
                    .with_field("addr"),
            );
        }
        self.inner
            .on_leader(Rpc::AddMember {
                name: name.to_owned(),
                addr: addr.to_owned(),
                voter,
            })
            .await
    }

    /// Removes the member `name` (voter or learner). Answers the new membership.
    pub async fn remove_member(&self, name: &str) -> Result<Vec<MemberStatus>> {
        self.inner
            .on_leader(Rpc::RemoveMember {
                name: name.to_owned(),
            })
            .await
    }

    /// Stops serving: no new internode requests, Raft shut down, sled flushed. Idempotent.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        inner.stop.send_replace(true);
        if let Err(e) = inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let tasks: Vec<_> = inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for task in tasks {
            task.abort();
        }
        // Raft is stopped: nothing applies any more, and the state on disk is whole.
        if let Err(e) = inner.sm.mark_clean() {
            tracing::error!(error = %e, "cannot record the clean stop");
        }
        if let Err(e) = inner.db.flush_async().await {
            tracing::error!(error = %e, "cannot flush the raft state");
        }
        tracing::info!(name = %inner.name, "raft engine stopped");
    }
}

fn refusal_for(rpc: &Rpc, refusal: Refusal) -> Reply {
    match rpc {
        Rpc::Write(_) => Reply::Write(Err(refusal)),
        Rpc::ReadIndex => Reply::ReadIndex(Err(refusal)),
        Rpc::AddMember { .. } | Rpc::RemoveMember { .. } => Reply::Members(Err(refusal)),
        Rpc::Append(_) | Rpc::Vote(_) | Rpc::Snapshot(_) | Rpc::Ping => Reply::Pong,
    }
}

impl Inner {
    fn closed(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed("the raft engine was shut down"));
        }
        Ok(())
    }

    fn leader(&self) -> Leader {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        match m.current_leader {
            Some(id) if id == self.id => {
                if m.state == ServerState::Leader && self.ready_to_lead(&m.vote) {
                    Leader::Me
                } else {
                    Leader::Unknown
                }
            }
            Some(id) => match m.membership_config.membership().get_node(&id) {
                Some(node) => Leader::Other(node.addr.clone()),
                None => Leader::Unknown,
            },
            None => Leader::Unknown,
        }
    }

    /// This node's clock reading, never below one it used before nor below the state machine's
    /// clock (the largest stamp applied): a clock stepped back holds still instead.
    pub(crate) fn now_ms(&self) -> u64 {
        let t = self.clock.now_ms().max(self.sm.clock_ms());
        self.last_now.fetch_max(t, Ordering::AcqRel).max(t)
    }

    /// Whether this node, leader under `vote`, may serve: once its own clock has run
    /// `max_clock_skew` past the reading it had when it first saw that leadership. The
    /// predecessor judged every read and stamped every entry by its own clock, at most
    /// `max_clock_skew` ahead of this one then; waiting that long keeps every judgement of this
    /// leader at or after all of them (a key a completed read saw expired stays expired).
    fn ready_to_lead(&self, vote: &openraft::Vote<NodeId>) -> bool {
        if self.max_clock_skew_ms == 0 {
            return true;
        }
        let since = self.note_takeover(vote);
        self.now_ms() >= since.saturating_add(self.max_clock_skew_ms)
    }

    /// The clock reading when this node first saw itself leader under `vote` (now, if this is
    /// the first time).
    fn note_takeover(&self, vote: &openraft::Vote<NodeId>) -> u64 {
        let mut took_over = self
            .took_over
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *took_over {
            Some((v, at)) if v == *vote => at,
            _ => {
                let now = self.now_ms();
                if self.max_clock_skew_ms > 0 {
                    tracing::info!(%vote, wait_ms = self.max_clock_skew_ms, "leader: serving once max_clock_skew has passed");
                }
                *took_over = Some((*vote, now));
                now
            }
        }
    }

    fn members_of(&self, stored: &openraft::StoredMembership<NodeId, Member>) -> Vec<MemberStatus> {
        let membership = stored.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut out: Vec<MemberStatus> = membership
            .nodes()
            .map(|(id, node)| MemberStatus {
                name: node.name.clone(),
                addr: node.addr.clone(),
                role: if voters.contains(id) {
                    Role::Voter
                } else {
                    Role::Learner
                },
                reachable: false,
                incarnation: self.sm.incarnation(&node.name).map(|i| format!("{i:016x}")),
            })
            .collect();
        out.sort_by(|a, b| (a.role != Role::Voter, &a.name).cmp(&(b.role != Role::Voter, &b.name)));
        out
    }

    fn current_members(&self) -> Vec<MemberStatus> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        self.members_of(&m.membership_config)
    }

    async fn ping(&self, addr: &str) -> bool {
        let timeout = self.election_timeout.min(Duration::from_secs(1));
        matches!(
            self.peers.call(addr, Rpc::Ping, timeout).await,
            Ok(Reply::Pong)
        )
    }

    /// Proposes a write, forwarding it to the leader from a follower, within `request_timeout`.
    pub(crate) async fn write(&self, command: Command) -> Result<Response> {
        self.closed()?;
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let attempt = match self.leader() {
                Leader::Me => self.propose(command.clone(), deadline).await,
                Leader::Other(addr) => self.forward_write(&addr, command.clone(), deadline).await,
                Leader::Unknown => Try::Again,
            };
            match attempt {
                Try::Done(result) => return result,
                Try::Again => {
                    if Instant::now() + RETRY_PAUSE >= deadline {
                        return Err(Error::unavailable(format!(
                            "no raft leader accepted the write within {:?}; it was not applied",
                            self.request_timeout
                        )));
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// Proposes `command` on this node, which believes it is the leader.
    async fn propose(&self, command: Command, deadline: Instant) -> Try<Response> {
        if !matches!(self.leader(), Leader::Me) {
            return Try::Again;
        }
        let (reply, answer) = oneshot::channel();
        match self.proposals.try_send(Pending { command, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Try::Done(Err(Error::unavailable(format!(
                    "the leader's write queue is full ({MAX_QUEUED_WRITES} writes waiting); \
                     the write was not applied"
                ))));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Try::Done(Err(Error::closed("the raft engine was shut down")));
            }
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Try::Done(Err(Error::closed(
                "the raft engine stopped with the write in flight",
            )
            .indeterminate())),
            Err(_) => Try::Done(Err(maybe_applied(Error::write_timeout(format!(
                "no quorum acknowledged the write within {:?}; it may still be applied",
                self.request_timeout
            ))))),
        }
    }

    /// Proposes `batch` as one entry and answers each of its writers.
    async fn propose_batch(&self, batch: Vec<Pending>) {
        if !matches!(self.leader(), Leader::Me) {
            for p in batch {
                let _ = p.reply.send(Try::Again);
            }
            return;
        }
        let (commands, replies): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        let request = Request {
            stamp_ms: self.now_ms(),
            commands,
        };
        let failed = |e: Error| -> Vec<Try<Response>> {
            let e = maybe_applied(e);
            (0..replies.len())
                .map(|_| Try::Done(Err(e.clone())))
                .collect()
        };
        if fault::injected(fault::ACK_BEFORE_QUORUM) && request.commands.iter().all(unconditional) {
            self.answer_before_quorum(request, replies).await;
            return;
        }
        let patience = if fault::injected(fault::FAIL_MAYBE_APPLIED) {
            self.request_timeout.min(Duration::from_millis(300))
        } else {
            self.request_timeout
        };
        let outcomes = match tokio::time::timeout(patience, self.raft.client_write(request)).await {
            Err(_) => failed(Error::write_timeout(format!(
                "no quorum acknowledged the write within {:?}; it may still be applied",
                self.request_timeout
            ))),
            Ok(Ok(written)) if written.data.0.len() == replies.len() => written
                .data
                .0
                .into_iter()
                .map(|r| Try::Done(Ok(r)))
                .collect(),
            Ok(Ok(written)) => failed(Error::internal(format!(
                "an entry of {} writes answered {} times",
                replies.len(),
                written.data.0.len()
            ))),
            // Openraft answers this both when it was no longer the leader (nothing appended) and
            // when the appended entry was overwritten by a new leader; only the outcome of the
            // second is unknown, and the two cannot be told apart here.
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                failed(Error::write_timeout(
                    "the leader changed while the write was in flight; it may or may not have been applied",
                ))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                failed(Error::internal(format!("unexpected membership error: {e}")))
            }
            Ok(Err(RaftError::Fatal(e))) => {
                failed(Error::closed(format!("the raft engine stopped: {e}")).indeterminate())
            }
        };
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }

    /// The defect [`fault::ACK_BEFORE_QUORUM`]: proposes `request` and answers its writers as
    /// soon as this node's own log holds it (or after a second), with the entry's index there
    /// as the version, while the entry goes on to a quorum, or not, unwatched.
    async fn answer_before_quorum(
        &self,
        request: Request,
        replies: Vec<oneshot::Sender<Try<Response>>>,
    ) {
        let mut metrics = self.raft.metrics();
        let after = metrics.borrow().last_log_index.unwrap_or(0);
        let wanted = postcard::to_allocvec(&request).unwrap_or_default();
        let stamp = request.stamp_ms;
        let ttls: Vec<Option<u64>> = request
            .commands
            .iter()
            .map(|c| match c {
                Command::Write { ttl_ms, .. } => *ttl_ms,
                _ => None,
            })
            .collect();
        let raft = self.raft.clone();
        tokio::spawn(async move {
            let _ = raft.client_write(request).await;
        });
        let until = Instant::now() + Duration::from_secs(1);
        let version = loop {
            if let Some(index) = self.index_in_log(after, &wanted) {
                break index;
            }
            if Instant::now() >= until {
                break metrics.borrow().last_log_index.unwrap_or(0);
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), metrics.changed()).await;
        };
        for (reply, ttl) in replies.into_iter().zip(ttls) {
            let _ = reply.send(Try::Done(Ok(Response::Written {
                version,
                expires_at: ttl.map(|t| stamp.saturating_add(t)),
            })));
        }
    }

    /// The index of the entry after `after` in this node's log whose request encodes to
    /// `wanted`, if the log holds it.
    fn index_in_log(&self, after: u64, wanted: &[u8]) -> Option<u64> {
        let log = self.db.open_tree("log").ok()?;
        for item in log.range(after.saturating_add(1).to_be_bytes()..) {
            let (_, bytes) = item.ok()?;
            let entry: openraft::Entry<TypeConfig> = postcard::from_bytes(&bytes).ok()?;
            if let openraft::EntryPayload::Normal(r) = &entry.payload
                && postcard::to_allocvec(r).ok()?.as_slice() == wanted
            {
                return Some(entry.log_id.index);
            }
        }
        None
    }

    async fn forward_write(
        &self,
        addr: &str,
        command: Command,
        deadline: Instant,
    ) -> Try<Response> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.peers.call(addr, Rpc::Write(command), left).await {
            Ok(Reply::Write(Ok(response))) => Try::Done(Ok(response)),
            Ok(Reply::Write(Err(Refusal::NotLeader))) => Try::Again,
            Ok(Reply::Write(Err(refusal))) => Try::Done(Err(refusal.into_error())),
            Ok(other) => Try::Done(Err(Error::internal(format!(
                "the leader answered a write with {other:?}"
            )))),
            Err(CallError::NotSent(why)) => {
                tracing::debug!(%why, "write not forwarded; retrying");
                Try::Again
            }
            Err(CallError::Lost(why)) => {
                Try::Done(Err(maybe_applied(Error::write_timeout(format!(
                    "the leader did not answer the forwarded write ({why}); it may or may not have been applied"
                )))))
            }
        }
    }

    /// Waits until a read on this node is linearizable, and returns the clock reading
    /// (Unix ms) expiry must be judged by.
    pub(crate) async fn read_barrier(&self) -> Result<u64> {
        self.closed()?;
        let deadline = Instant::now() + self.request_timeout;
        let mut had_leader = false;
        loop {
            let attempt = match self.leader() {
                Leader::Me => {
                    had_leader = true;
                    self.read_index_here(deadline).await
                }
                Leader::Other(addr) => {
                    had_leader = true;
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.peers.call(&addr, Rpc::ReadIndex, left).await {
                        Ok(Reply::ReadIndex(Ok(ri))) => Try::Done(Ok(ri)),
                        Ok(Reply::ReadIndex(Err(Refusal::NotLeader))) => Try::Again,
                        Ok(Reply::ReadIndex(Err(refusal))) => Try::Done(Err(refusal.into_error())),
                        Ok(other) => Try::Done(Err(Error::internal(format!(
                            "the leader answered a read index with {other:?}"
                        )))),
                        // A read changes nothing: any failure may be retried.
                        Err(_) => Try::Again,
                    }
                }
                Leader::Unknown => Try::Again,
            };
            match attempt {
                Try::Done(Ok(ri)) => {
                    let mut applied = self.sm.subscribe_applied();
                    if tokio::time::timeout_at(deadline, applied.wait_for(|a| *a >= ri.index))
                        .await
                        .is_err()
                    {
                        return Err(Error::timeout(format!(
                            "this node did not apply up to the read index {} within {:?}",
                            ri.index, self.request_timeout
                        )));
                    }
                    // The leader's reading (never this node's own, which may run behind or ahead
                    // of it); it is also the least this node's own `now` may be from here on, so
                    // a local read never judges earlier than this one did.
                    let now = ri.now_ms.max(self.sm.clock_ms());
                    self.last_now.fetch_max(now, Ordering::AcqRel);
                    return Ok(now);
                }
                Try::Done(Err(e)) => return Err(e),
                Try::Again => {
                    if Instant::now() + RETRY_PAUSE >= deadline {
                        return Err(if had_leader {
                            Error::timeout(format!(
                                "no quorum confirmed the leader within {:?}",
                                self.request_timeout
                            ))
                        } else {
                            Error::unavailable(format!(
                                "no raft leader within {:?}",
                                self.request_timeout
                            ))
                        });
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// The read index as the leader computes it: leadership confirmed by a quorum.
    async fn read_index_here(&self, deadline: Instant) -> Try<ReadIndex> {
        if fault::injected(fault::STALE_LEASE_READ) {
            // The defect: a lease nobody granted. What this node has applied, unconfirmed.
            let applied = self
                .raft
                .metrics()
                .borrow()
                .last_applied
                .map_or(0, |l| l.index);
            return Try::Done(Ok(ReadIndex {
                index: applied,
                now_ms: self.now_ms(),
            }));
        }
        match tokio::time::timeout_at(deadline, self.raft.get_read_log_id()).await {
            Err(_) => Try::Done(Err(Error::timeout(format!(
                "no quorum confirmed the leader within {:?}",
                self.request_timeout
            )))),
            Ok(Ok((read, _))) => Try::Done(Ok(ReadIndex {
                index: read.map_or(0, |l| l.index).max(self.read_floor()),
                now_ms: self.now_ms(),
            })),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => Try::Again,
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => Try::Again,
            Ok(Err(RaftError::Fatal(e))) => {
                Try::Done(Err(Error::closed(format!("the raft engine stopped: {e}"))))
            }
        }
    }

    /// The lowest read index this leader may hand out: the last index it had at start while the
    /// leadership it restored then lasts (see [`ReadFloor`]), 0 otherwise.
    fn read_floor(&self) -> u64 {
        let Some(floor) = self.restored else { return 0 };
        let metrics = self.raft.metrics();
        if metrics.borrow().vote == floor.vote {
            floor.last_index
        } else {
            0
        }
    }

    /// The clock reading a serializable (local) read judges expiry by.
    pub(crate) fn local_now(&self) -> u64 {
        self.now_ms()
    }

    /// Runs a membership change on the leader, forwarding it there from a follower.
    async fn on_leader(&self, rpc: Rpc) -> Result<Vec<MemberStatus>> {
        self.closed()?;
        let timeout = self.request_timeout.max(Duration::from_secs(60));
        let deadline = Instant::now() + timeout;
        loop {
            let attempt = match self.leader() {
                Leader::Me => match self.change_here_in_time(&rpc).await {
                    Ok(members) => return Ok(members),
                    Err(Refusal::NotLeader) => Try::Again,
                    Err(refusal) => return Err(refusal.into_error()),
                },
                Leader::Other(addr) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let forwarded = match &rpc {
                        Rpc::AddMember { name, addr, voter } => Rpc::AddMember {
                            name: name.clone(),
                            addr: addr.clone(),
                            voter: *voter,
                        },
                        Rpc::RemoveMember { name } => Rpc::RemoveMember { name: name.clone() },
                        _ => return Err(Error::internal("not a membership change")),
                    };
                    match self.peers.call(&addr, forwarded, left).await {
                        Ok(Reply::Members(Ok(members))) => return Ok(members),
                        Ok(Reply::Members(Err(Refusal::NotLeader))) => Try::Again,
                        Ok(Reply::Members(Err(refusal))) => return Err(refusal.into_error()),
                        Ok(other) => {
                            return Err(Error::internal(format!(
                                "the leader answered a membership change with {other:?}"
                            )));
                        }
                        Err(CallError::NotSent(_)) => Try::Again,
                        Err(CallError::Lost(why)) => {
                            return Err(Error::write_timeout(format!(
                                "the leader did not answer the membership change ({why}); check `cluster status`"
                            )));
                        }
                    }
                }
                Leader::Unknown => Try::<()>::Again,
            };
            let Try::Again = attempt else { continue };
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(Error::unavailable(format!(
                    "no raft leader accepted the membership change within {timeout:?}"
                )));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// [`Inner::change_here`] within `request_timeout`: a learner that never catches up (an
    /// unreachable address) fails the change with a timeout instead of holding it forever. The
    /// learner stays added and keeps being replicated to; adding it again promotes it.
    async fn change_here_in_time(
        &self,
        rpc: &Rpc,
    ) -> std::result::Result<Vec<MemberStatus>, Refusal> {
        match tokio::time::timeout(self.request_timeout, self.change_here(rpc)).await {
            Ok(answer) => answer,
            Err(_) => Err(Refusal::from_error(&Error::write_timeout(format!(
                "the membership change did not finish within {:?} (a member being added must \
                 be reachable and catch up); check `cluster status`, then ask again",
                self.request_timeout
            )))),
        }
    }

    /// Waits until this leader has replicated to `id` up to within [`CATCH_UP_LAG`] entries of
    /// its last log index.
    async fn caught_up(&self, id: NodeId) -> std::result::Result<(), Refusal> {
        let mut metrics = self.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                let Some(replication) = &m.replication else {
                    return Err(Refusal::NotLeader);
                };
                if let Some(Some(matched)) = replication.get(&id)
                    && m.last_log_index.unwrap_or(0).saturating_sub(matched.index) <= CATCH_UP_LAG
                {
                    return Ok(());
                }
            }
            if metrics.changed().await.is_err() {
                return Err(Refusal::from_error(&Error::closed(
                    "the raft engine was shut down",
                )));
            }
        }
    }

    async fn change_here(&self, rpc: &Rpc) -> std::result::Result<Vec<MemberStatus>, Refusal> {
        let failed = |e: Error| Refusal::from_error(&e);
        let map = |e: RaftError<NodeId, ClientWriteError<NodeId, Member>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Refusal::NotLeader,
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                failed(Error::invalid(format!("membership change refused: {e}")))
            }
            RaftError::Fatal(e) => failed(Error::closed(format!("the raft engine stopped: {e}"))),
        };
        match rpc {
            Rpc::AddMember { name, addr, voter } => {
                let id = node_id(name);
                if let Some(existing) = self
                    .current_members()
                    .into_iter()
                    .find(|m| node_id(&m.name) == id)
                    && existing.name != *name
                {
                    return Err(failed(Error::invalid(format!(
                        "{name:?} hashes to the same node id as member {:?}; choose another name",
                        existing.name
                    ))));
                }
                let member = Member {
                    name: name.clone(),
                    addr: addr.clone(),
                };
                let moved = self
                    .current_members()
                    .into_iter()
                    .any(|m| m.name == *name && m.addr != *addr);
                if moved {
                    // A member added again at another address: openraft's add_learner keeps the
                    // node it knows, so the address is set on its own.
                    self.raft
                        .change_membership(
                            ChangeMembers::SetNodes(BTreeMap::from([(id, member.clone())])),
                            false,
                        )
                        .await
                        .map_err(map)?;
                }
                self.raft.add_learner(id, member, true).await.map_err(map)?;
                if *voter {
                    // openraft's blocking add_learner returns at once while the log is short,
                    // even for a learner nobody can reach; promoting that one would quietly take
                    // a voter's worth of fault tolerance away. Promote only once it holds the log.
                    self.caught_up(id).await?;
                    self.raft
                        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                        .await
                        .map_err(map)?;
                }
                Ok(self.current_members())
            }
            Rpc::RemoveMember { name } => {
                let id = node_id(name);
                let Some(member) = self.current_members().into_iter().find(|m| m.name == *name)
                else {
                    return Err(failed(
                        Error::not_found(format!("{name:?} is not a member")).with_field("name"),
                    ));
                };
                let change = match member.role {
                    Role::Voter => ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                    Role::Learner => ChangeMembers::RemoveNodes(BTreeSet::from([id])),
                };
                self.raft
                    .change_membership(change, false)
                    .await
                    .map_err(map)?;
                Ok(self.current_members())
            }
            _ => Err(failed(Error::internal("not a membership change"))),
        }
    }

    /// Answers a request from a peer.
    async fn handle(self: Arc<Self>, rpc: Rpc) -> Reply {
        match rpc {
            Rpc::Append(req) => Reply::Append(self.raft.append_entries(req).await),
            Rpc::Vote(req) => Reply::Vote(self.raft.vote(req).await),
            Rpc::Snapshot(req) => Reply::Snapshot(self.raft.install_snapshot(req).await),
            Rpc::Ping => Reply::Pong,
            Rpc::Write(command) => {
                if !matches!(self.leader(), Leader::Me) {
                    return Reply::Write(Err(Refusal::NotLeader));
                }
                let deadline = Instant::now() + self.request_timeout;
                match self.propose(command, deadline).await {
                    Try::Done(Ok(r)) => Reply::Write(Ok(r)),
                    Try::Done(Err(e)) => Reply::Write(Err(Refusal::from_error(&e))),
                    Try::Again => Reply::Write(Err(Refusal::NotLeader)),
                }
            }
            Rpc::ReadIndex => {
                if !matches!(self.leader(), Leader::Me) {
                    return Reply::ReadIndex(Err(Refusal::NotLeader));
                }
                let deadline = Instant::now() + self.request_timeout;
                match self.read_index_here(deadline).await {
                    Try::Done(Ok(ri)) => Reply::ReadIndex(Ok(ri)),
                    Try::Done(Err(e)) => Reply::ReadIndex(Err(Refusal::from_error(&e))),
                    Try::Again => Reply::ReadIndex(Err(Refusal::NotLeader)),
                }
            }
            rpc @ (Rpc::AddMember { .. } | Rpc::RemoveMember { .. }) => {
                if !matches!(self.leader(), Leader::Me) {
                    return Reply::Members(Err(Refusal::NotLeader));
                }
                Reply::Members(self.change_here_in_time(&rpc).await)
            }
        }
    }
}

/// `e`, an error for a write that may still be applied, as the defect
/// [`fault::FAIL_MAYBE_APPLIED`] answers it when it is on: a plain "not applied".
fn maybe_applied(e: Error) -> Error {
    if fault::injected(fault::FAIL_MAYBE_APPLIED) {
        Error::unavailable("the write was not applied (fault injection: it may have been)")
    } else {
        e
    }
}

/// A put without a condition: what [`fault::ACK_BEFORE_QUORUM`] answers early.
fn unconditional(command: &Command) -> bool {
    matches!(
        command,
        Command::Write {
            condition: crate::types::Cond::Always,
            ..
        }
    )
}

/// Packs the writes waiting on the leader into entries: up to [`MAX_BATCH`] writes of distinct
/// keys each, at most [`MAX_IN_FLIGHT`] entries proposed and not yet applied. One writer alone
/// is proposed at once; under load, each entry carries every write that arrived while the
/// previous ones were replicated, so the log, the replication, the flushes and the apply all
/// work per batch instead of per write.
async fn proposer(
    inner: Weak<Inner>,
    mut pending: mpsc::Receiver<Pending>,
    mut stop: watch::Receiver<bool>,
) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => tokio::select! {
                p = pending.recv() => match p {
                    Some(p) => p,
                    None => return,
                },
                _ = stop.wait_for(|s| *s) => return,
            },
        };
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        // Gathered after the permit: whatever queued while entries were in flight joins this one.
        // A writer that gave up (its request timed out) is dropped here, never proposed.
        let mut keys = std::collections::HashSet::new();
        let mut bytes = 0;
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(p) = next.take() {
            if p.reply.is_closed() {
                next = pending.try_recv().ok();
                continue;
            }
            let size = p.command.size();
            // A second write of a key waits for the next entry (each write of a key must get a
            // greater version than the last), and so does a write past the byte budget.
            let repeated = p.command.key().is_some_and(|k| keys.contains(k));
            if !batch.is_empty() && (repeated || bytes + size > MAX_BATCH_BYTES) {
                carried = Some(p);
                break;
            }
            if let Some(k) = p.command.key() {
                keys.insert(k.to_owned());
            }
            bytes += size;
            batch.push(p);
            if batch.len() >= MAX_BATCH {
                break;
            }
            next = pending.try_recv().ok();
        }
        if batch.is_empty() {
            continue;
        }
        let Some(inner) = inner.upgrade() else { return };
        tokio::spawn(async move {
            inner.propose_batch(batch).await;
            drop(permit);
        });
    }
}

/// This node's incarnation: the random number its data folder was created with (made on the
/// first start, kept in the `raft` tree). A folder wiped or replaced gets a new one, which the
/// cluster's records tell from the old (see `net.rs`).
fn incarnation(db: &sled::Db) -> Result<u64> {
    let failed = |e: &dyn fmt::Display| {
        Error::unavailable(format!("cannot read or write the node's incarnation: {e}"))
    };
    let meta = db.open_tree("raft").map_err(|e| failed(&e))?;
    if let Some(b) = meta.get(b"incarnation").map_err(|e| failed(&e))?
        && let Ok(bytes) = <[u8; 8]>::try_from(b.as_ref())
    {
        return Ok(u64::from_be_bytes(bytes));
    }
    let made = crate::net::random_u64().map_err(|e| failed(&e))?;
    meta.insert(b"incarnation", &made.to_be_bytes())
        .map_err(|e| failed(&e))?;
    db.flush().map_err(|e| failed(&e))?;
    Ok(made)
}

/// On the leader, every `every`: records the cluster id if the cluster has none, and the
/// incarnation of each member that has none recorded (its own; a peer's as it claimed in its
/// last handshake with this node). See [`Command::Identities`].
async fn record_identities(inner: Weak<Inner>, every: Duration, mut stop: watch::Receiver<bool>) {
    while let Some(inner) = leading_tick(&inner, every, &mut stop).await {
        let incarnations: Vec<(String, u64)> = inner
            .current_members()
            .into_iter()
            .filter(|m| inner.sm.incarnation(&m.name).is_none())
            .filter_map(|m| {
                let seen = if m.name == inner.name {
                    Some(inner.identity.incarnation())
                } else {
                    inner.identity.seen(&m.name)
                };
                seen.map(|i| (m.name, i))
            })
            .collect();
        let cluster = match inner.sm.cluster_id() {
            Some(_) if incarnations.is_empty() => continue,
            Some(id) => id,
            None => match crate::net::random_u64() {
                Ok(id) => id,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot make a cluster id");
                    continue;
                }
            },
        };
        let names: Vec<&str> = incarnations.iter().map(|(n, _)| n.as_str()).collect();
        let names = names.join(",");
        match inner
            .write(Command::Identities {
                cluster,
                incarnations,
            })
            .await
        {
            Ok(_) => tracing::debug!(members = %names, "raft identities recorded"),
            Err(e) => tracing::debug!(error = %e, "raft identities not recorded yet"),
        }
    }
}

/// Notes the moment this node becomes leader (see [`Inner::ready_to_lead`]).
async fn watch_leadership(inner: Weak<Inner>, mut stop: watch::Receiver<bool>) {
    let Some(mut metrics) = inner.upgrade().map(|i| i.raft.metrics()) else {
        return;
    };
    loop {
        {
            let Some(inner) = inner.upgrade() else { return };
            let (leading, vote) = {
                let m = metrics.borrow_and_update();
                (m.state == ServerState::Leader, m.vote)
            };
            if leading {
                inner.note_takeover(&vote);
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The next tick, every `every`, at which this node leads; `None` once the engine stops.
async fn leading_tick(
    inner: &Weak<Inner>,
    every: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Option<Arc<Inner>> {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return None,
        }
        let inner = inner.upgrade()?;
        if matches!(inner.leader(), Leader::Me) {
            return Some(inner);
        }
    }
}

/// On the leader, proposes the removal of expired keys every `every`.
async fn cleanup_loop(inner: Weak<Inner>, every: Duration, mut stop: watch::Receiver<bool>) {
    while let Some(inner) = leading_tick(&inner, every, &mut stop).await {
        let now = inner.local_now();
        let keys = match inner.sm.expired(now, CLEANUP_BATCH) {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the expiry index");
                continue;
            }
        };
        if keys.is_empty() {
            continue;
        }
        let n = keys.len();
        match inner.write(Command::Expire { keys }).await {
            Ok(_) => tracing::debug!(removed = n, "raft cleanup"),
            Err(e) => tracing::debug!(error = %e, "raft cleanup deferred"),
        }
    }
}
