//! [`CrdtEngine`]: the node-wide gossip engine. memberlist keeps the membership and carries
//! three kinds of traffic for it:
//!
//! - **broadcasts**: a flusher task packs the registers of keys written here into messages of
//!   about one UDP packet, sends each at once to every online member, and queues it in a
//!   transmit-limited queue that piggybacks it on memberlist's gossip packets
//!   `retransmit_mult · log(N+1)` more times to random peers (a lost packet is repeated);
//!   writes too large for a packet go to every online member over TCP instead;
//! - **anti-entropy**: on every push/pull (every `push_pull_interval`, and at join) both sides
//!   send their 512 shard digests; each side then sends the other, over TCP, the registers of the
//!   shards that differ, so equal nodes exchange a few KiB whatever they hold;
//! - **acknowledgements**: a shard whose digest equals a peer's tells this node the peer holds
//!   every tombstone it holds there; a tombstone is collected once every remembered member
//!   acknowledged it (or once `tombstone_retention` passed, when set).

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use memberlist::agnostic::tokio::TokioRuntime;
use memberlist::delegate::{
    CompositeDelegate, EventDelegate, NodeDelegate, PingDelegate, VoidDelegate,
};
use memberlist::net::{NetTransport, NetTransportOptions};
use memberlist::proto::{
    EncryptionAlgorithm, Label, MaybeResolvedAddress, NodeId, NodeState, SecretKey,
};
use memberlist::queue::TransmitLimitedQueue;
use memberlist::transport::resolver::socket_addr::SocketAddrResolver;
use memberlist::{Memberlist, Options};
use serde::{Deserialize, Serialize};
use store_core::{Error, Result, SharedClock, system_clock};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::bound::BoundTcp;
use crate::hlc::Hlc;
use crate::hlc::node_id;
use crate::skew::Skew;
use crate::state::{Merged, Space, State, Update};

/// Longest node name memberlist carries.
const NAME_MAX: usize = 64;
/// Node ids as memberlist carries them.
pub(crate) type Name = NodeId<NAME_MAX>;
type Transport =
    NetTransport<Name, SocketAddrResolver<TokioRuntime>, BoundTcp<TokioRuntime>, TokioRuntime>;
type Delegate = CompositeDelegate<
    Name,
    SocketAddr,
    VoidDelegate<Name, SocketAddr>,
    VoidDelegate<Name, SocketAddr>,
    Membership,
    VoidDelegate<Name, SocketAddr>,
    Gossip,
    Probe,
>;
type List = Memberlist<Transport, Delegate>;
type Queue = TransmitLimitedQueue<Bcast, Arc<AtomicUsize>>;

/// Gossip messages are packed up to this size (a UDP packet of 1400 bytes, less memberlist's
/// framing, label and encryption); a single update larger than it goes over TCP.
const MAX_GOSSIP_MESSAGE: usize = 1100;
/// Written keys waiting for the flusher at most; beyond, anti-entropy carries them.
const MAX_PENDING: usize = 100_000;
/// Anti-entropy sends differing registers in messages of about this size.
const CHUNK_BYTES: usize = 256 * 1024;
/// Repairs and direct sends in flight at once.
const JOBS_AT_ONCE: usize = 8;
/// Queued broadcasts kept at most, about 1 MiB of packed updates (the oldest beyond are dropped
/// at the next tick). Every broadcast went straight to each online peer already; the queue only
/// repeats it against a lost packet, as anti-entropy also does. A burst of writes outruns
/// gossip's few packets a second, so a larger queue only holds a copy of the burst (100 000 held
/// about 100 bytes per written key on the writer).
const MAX_QUEUED: usize = 1_024;
/// Format of the messages this engine exchanges.
const WIRE_VERSION: u8 = 1;
/// Format of the snapshot file: 2 streams its registers (1, one postcard `Snapshot`, is still
/// read).
const SNAPSHOT_VERSION: u8 = 2;
const SNAPSHOT_FILE: &str = "state.snap";

/// The engine's settings.
#[derive(Clone)]
pub struct CrdtConfig {
    /// This node's unique name (at most 64 bytes).
    pub name: String,
    /// memberlist's TCP and UDP address; outgoing TCP connections are made from its IP too.
    pub bind: SocketAddr,
    /// What peers dial; `None` = `bind`.
    pub advertise: Option<SocketAddr>,
    /// Seeds to join; empty on the first node.
    pub join: Vec<SocketAddr>,
    /// How often state digests are exchanged with a random peer.
    pub push_pull_interval: Duration,
    /// How often queued broadcasts are sent to random peers.
    pub gossip_interval: Duration,
    /// 0 = drop a tombstone once every remembered member acknowledged it; otherwise also drop
    /// it this long after it arrived, and forget members not seen for this long.
    pub tombstone_retention: Duration,
    /// Where durable namespaces are snapshotted (`<data_dir>/_sys/kvcrdt` on a node); `None`
    /// keeps nothing on disk.
    pub dir: Option<PathBuf>,
    /// How often a changed state is snapshotted.
    pub snapshot_interval: Duration,
    /// How often expired values become tombstones and acknowledged tombstones are dropped.
    pub cleanup_interval: Duration,
    /// The cluster secret: gossip is encrypted and authenticated (AES-256-GCM) with a key
    /// derived from it. Empty = plain gossip (loopback only).
    pub secret: Vec<u8>,
    /// The clock of every expiry decision and of the hybrid logical clock's physical part.
    pub clock: SharedClock,
    /// The most two members' clocks may differ. A node whose clock is further than this from
    /// most of the cluster's serves nothing (`Unavailable`), and a register stamped further than
    /// this ahead of a node's clock is not merged there until its clock gets within it. `0`
    /// turns both off (a manual clock in tests).
    pub max_clock_skew: Duration,
}

impl fmt::Debug for CrdtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrdtConfig")
            .field("name", &self.name)
            .field("bind", &self.bind)
            .field("advertise", &self.advertise)
            .field("join", &self.join)
            .field("push_pull_interval", &self.push_pull_interval)
            .field("gossip_interval", &self.gossip_interval)
            .field("tombstone_retention", &self.tombstone_retention)
            .field("dir", &self.dir)
            .field("snapshot_interval", &self.snapshot_interval)
            .field("max_clock_skew", &self.max_clock_skew)
            .field("secret", &"***")
            .finish_non_exhaustive()
    }
}

impl CrdtConfig {
    /// Settings with the documented defaults: push/pull every 5 s, gossip every 50 ms, no
    /// tombstone retention, no snapshots, snapshot interval 1 s, cleanup every 250 ms, no
    /// secret, system clock, `max_clock_skew` 500 ms.
    pub fn new(name: impl Into<String>, bind: SocketAddr) -> Self {
        Self {
            name: name.into(),
            bind,
            advertise: None,
            join: Vec::new(),
            push_pull_interval: Duration::from_secs(5),
            gossip_interval: Duration::from_millis(50),
            tombstone_retention: Duration::ZERO,
            dir: None,
            snapshot_interval: Duration::from_secs(1),
            cleanup_interval: Duration::from_millis(250),
            secret: Vec::new(),
            clock: system_clock(),
            max_clock_skew: Duration::from_millis(500),
        }
    }
}

/// A gossip member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GossipMember {
    /// Its name.
    pub name: String,
    /// Its gossip address.
    pub addr: SocketAddr,
    /// `alive` or `dead` (failed its probes, or left).
    pub state: String,
}

/// Counters of the engine's traffic, for benchmarks and tests.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes of push/pull state this node sent (its digests).
    pub push_pull_bytes: AtomicU64,
    /// Bytes of anti-entropy registers this node sent.
    pub repair_bytes: AtomicU64,
    /// Push/pull exchanges merged.
    pub exchanges: AtomicU64,
    /// Writes not broadcast because the flusher was too far behind (anti-entropy carries them).
    pub unsent: AtomicU64,
    /// Registers from peers not merged because they were stamped more than `max_clock_skew`
    /// ahead of this node's clock.
    pub ahead: AtomicU64,
}

/// What the engine tells its background task to send.
enum Job {
    /// The registers of these shards to the peer at this address.
    Repair(SocketAddr, Vec<u16>),
    /// One large update to every online member.
    Large(Bytes),
    /// One message to one member.
    Tell(SocketAddr, Bytes),
}

#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    /// Updates broadcast by their writer (directly and through the gossip queue).
    Gossip(Vec<Update>),
    /// Updates sent point to point (large writes, anti-entropy): merged, not passed on. `from`
    /// is where the sender listens.
    Direct {
        from: SocketAddr,
        updates: Vec<Update>,
    },
    /// Tombstones the sender collected (every member acknowledged them): the receiver, which
    /// sent them, may collect its copies.
    Collected(Vec<(String, String, Hlc)>),
}

#[derive(Debug, Serialize, Deserialize)]
struct PushPull {
    name: String,
    /// Where the sender listens, for the registers it lacks.
    addr: SocketAddr,
    /// Every shard's digest, 8 little-endian bytes each (varints would take 10 for hashes).
    digests: Vec<u8>,
}

fn encode<T: Serialize>(version: u8, value: &T) -> Bytes {
    let mut out = vec![version];
    // postcard cannot fail to encode these types into a Vec.
    out.extend(postcard::to_allocvec(value).unwrap_or_default());
    Bytes::from(out)
}

fn decode<'a, T: Deserialize<'a>>(buf: &'a [u8]) -> Option<T> {
    match buf.split_first() {
        Some((&WIRE_VERSION, rest)) => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}

/// One queued broadcast: a packed message of updates.
#[derive(Debug)]
struct Bcast {
    id: u64,
    msg: Bytes,
}

impl memberlist::Broadcast for Bcast {
    type Id = u64;
    type Message = Bytes;

    fn id(&self) -> Option<&u64> {
        Some(&self.id)
    }

    fn invalidates(&self, _other: &Self) -> bool {
        false
    }

    fn message(&self) -> &Bytes {
        &self.msg
    }

    fn encoded_len(msg: &Bytes) -> usize {
        // The user-data frame: a tag and a length prefix.
        msg.len() + 8
    }

    async fn finished(&self) {}
}

/// The memberlist delegate: hands gossip to the state and answers push/pull.
pub(crate) struct Gossip {
    shared: Arc<Shared>,
}

/// What the delegate and the engine share.
pub(crate) struct Shared {
    pub(crate) name: String,
    advertise: SocketAddr,
    pub(crate) state: Arc<State>,
    pub(crate) clock: SharedClock,
    /// How this node's clock compares with its peers'.
    pub(crate) skew: Skew,
    /// When this node last logged a register refused for its stamp (ms), to log once a minute.
    ahead_logged: AtomicU64,
    queue: Queue,
    /// Online members other than this node; 0 means nobody to broadcast to.
    peers_online: Arc<AtomicUsize>,
    jobs: mpsc::UnboundedSender<Job>,
    /// Keys written here since the flusher last ran.
    outbox: Mutex<Vec<(Arc<Space>, Box<str>)>>,
    flush: tokio::sync::Notify,
    /// Ids of queued broadcasts.
    next_broadcast: AtomicU64,
    pub(crate) traffic: Traffic,
    retention_ms: u64,
    /// Called with (namespace, key) for every register a peer's message changed here.
    merge_hook: OnceLock<MergeHook>,
}

type MergeHook = Box<dyn Fn(&str, &str) + Send + Sync>;

impl Shared {
    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The clock reading to serve a request at, or `Unavailable` when this node's clock is
    /// beyond `max_clock_skew` from most of its peers'.
    pub(crate) fn serving_now(&self) -> Result<u64> {
        let now = self.now();
        self.skew.check(now)?;
        Ok(now)
    }

    /// The clock reading to stamp a write at: [`serving_now`](Self::serving_now), and
    /// `Unavailable` as well while this node's hybrid clock is beyond `max_clock_skew` ahead of
    /// its wall clock (a write would carry a stamp its peers refuse).
    pub(crate) fn writing_now(&self) -> Result<u64> {
        let now = self.serving_now()?;
        self.skew.check_stamps(self.state.hlc.last_ms(), now)?;
        Ok(now)
    }

    /// Queues a key just written here for the flusher, which sends its register to every
    /// online peer and queues it for gossip. Cheap: the encoding happens off the write path.
    pub(crate) fn publish(&self, space: &Arc<Space>, key: &str) {
        if self.peers_online.load(Ordering::Relaxed) == 0 {
            // Nobody to tell now; whoever joins later gets it by anti-entropy.
            return;
        }
        {
            let mut pending = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.len() >= MAX_PENDING {
                // The flusher is behind: anti-entropy repairs what is not sent.
                self.traffic.unsent.fetch_add(1, Ordering::Relaxed);
                return;
            }
            pending.push((Arc::clone(space), key.into()));
        }
        self.flush.notify_one();
    }

    /// Merges updates; returns those that changed this node's state, and tells `from` (when
    /// known) which of them this node had collected.
    fn merge_all(&self, updates: Vec<Update>, from: Option<SocketAddr>) -> Vec<Update> {
        let now = self.now();
        let mut changed = Vec::new();
        let mut collected = Vec::new();
        for u in updates {
            if store_core::backend::validate::key(&u.key).is_err() {
                continue;
            }
            if store_core::backend::fault::injected(store_core::backend::fault::DROP_CRDT_MERGE) {
                // The defect: the same writes are ignored every time they come.
                let m = &u.reg.marker;
                let chosen = crate::state::hash_bytes(&[
                    u.key.as_bytes(),
                    &m.ms.to_be_bytes(),
                    &m.logical.to_be_bytes(),
                    &m.node.to_be_bytes(),
                ]);
                if chosen.is_multiple_of(4) {
                    continue;
                }
            }
            if self.skew.too_far_ahead(u.reg.marker.ms, now) {
                self.traffic.ahead.fetch_add(1, Ordering::Relaxed);
                let logged = self.ahead_logged.load(Ordering::Relaxed);
                if now.saturating_sub(logged) >= 60_000
                    && self
                        .ahead_logged
                        .compare_exchange(logged, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(
                        key = %u.key,
                        ahead_ms = u.reg.marker.ms - now,
                        "kvcrdt: not merging registers stamped beyond max_clock_skew ahead of this \
                         node's clock (a peer's clock is ahead, or this one is behind); they are \
                         taken once this clock is within the bound (logged once a minute)"
                    );
                }
                continue;
            }
            let space = self.state.space(&u.ns);
            match self
                .state
                .merge(&space, &u.key, u.reg.clone(), now, self.retention_ms)
            {
                Merged::Changed => {
                    if let Some(hook) = self.merge_hook.get() {
                        hook(&u.ns, &u.key);
                    }
                    changed.push(u);
                }
                Merged::Collected if u.reg.val.value.is_none() => {
                    collected.push((u.ns, u.key, u.reg.marker));
                }
                Merged::Collected | Merged::Unchanged => {}
            }
        }
        if let (Some(to), false) = (from, collected.is_empty()) {
            let msg = encode(WIRE_VERSION, &Msg::Collected(collected));
            let _ = self.jobs.send(Job::Tell(to, msg));
        }
        changed
    }
}

/// Keeps the count of online peers current as members join and leave, so a write made just
/// after a join is broadcast.
pub(crate) struct Membership {
    name: String,
    peers_online: Arc<AtomicUsize>,
}

impl EventDelegate for Membership {
    type Id = Name;
    type Address = SocketAddr;

    async fn notify_join(&self, node: Arc<NodeState<Name, SocketAddr>>) {
        if node.id().as_str() != self.name {
            self.peers_online.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn notify_leave(&self, node: Arc<NodeState<Name, SocketAddr>>) {
        if node.id().as_str() != self.name {
            // Saturating: the periodic recount is the authority.
            let _ = self
                .peers_online
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    async fn notify_update(&self, _node: Arc<NodeState<Name, SocketAddr>>) {}
}

/// The memberlist ping delegate: every ack carries the acker's wall clock, and every probe that
/// comes back measures the peer's clock against this node's ([`Skew`]).
pub(crate) struct Probe {
    shared: Arc<Shared>,
}

impl PingDelegate for Probe {
    type Id = Name;
    type Address = SocketAddr;

    async fn ack_payload(&self) -> Bytes {
        Bytes::copy_from_slice(&self.shared.now().to_le_bytes())
    }

    async fn notify_ping_complete(
        &self,
        node: Arc<NodeState<Name, SocketAddr>>,
        rtt: Duration,
        payload: Bytes,
    ) {
        if let Ok(ms) = <[u8; 8]>::try_from(payload.as_ref()) {
            self.shared
                .skew
                .measured(node.id().as_str(), u64::from_le_bytes(ms), rtt);
        }
    }
}

impl NodeDelegate for Gossip {
    async fn notify_message(&self, msg: Cow<'_, [u8]>) {
        match decode::<Msg>(&msg) {
            Some(Msg::Gossip(updates)) => {
                self.shared.merge_all(updates, None);
            }
            Some(Msg::Direct { from, updates }) => {
                self.shared.merge_all(updates, Some(from));
            }
            Some(Msg::Collected(list)) => {
                let now = self.shared.now();
                for (ns, key, hlc) in list {
                    let space = self.shared.state.space(&ns);
                    self.shared.state.peer_collected(&space, &key, &hlc, now);
                }
            }
            None => tracing::warn!(bytes = msg.len(), "kvcrdt: ignored an undecodable message"),
        }
    }

    async fn broadcast_messages<F>(
        &self,
        limit: usize,
        _encoded_len: F,
    ) -> impl Iterator<Item = Bytes> + Send
    where
        F: Fn(Bytes) -> (usize, Bytes) + Send + Sync + 'static,
    {
        self.shared.queue.get_broadcasts(limit).await.into_iter()
    }

    async fn local_state(&self, _join: bool) -> Bytes {
        let msg = encode(
            WIRE_VERSION,
            &PushPull {
                name: self.shared.name.clone(),
                addr: self.shared.advertise,
                digests: self
                    .shared
                    .state
                    .digests()
                    .iter()
                    .flat_map(|d| d.to_le_bytes())
                    .collect(),
            },
        );
        self.shared
            .traffic
            .push_pull_bytes
            .fetch_add(msg.len() as u64, Ordering::Relaxed);
        msg
    }

    async fn merge_remote_state(&self, buf: &[u8], _join: bool) {
        let Some(remote) = decode::<PushPull>(buf) else {
            tracing::warn!(
                bytes = buf.len(),
                "kvcrdt: ignored an undecodable push/pull state"
            );
            return;
        };
        self.shared
            .traffic
            .exchanges
            .fetch_add(1, Ordering::Relaxed);
        if remote.name == self.shared.name {
            return;
        }
        let digests: Vec<u64> = remote
            .digests
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        let differ = self
            .shared
            .state
            .compare(&remote.name, &digests, self.shared.now());
        if !differ.is_empty() {
            // The receiver task lives as long as the engine; a closed channel means shutdown.
            let _ = self.shared.jobs.send(Job::Repair(remote.addr, differ));
        }
    }
}

/// The on-disk form of the durable state in files of version 1.
#[derive(Debug, Deserialize)]
struct SnapshotV1 {
    #[allow(dead_code)]
    node: String,
    /// Members whose acknowledgement tombstones wait for.
    members: Vec<String>,
    /// Durable namespaces' registers, tombstones included.
    updates: Vec<Update>,
}

/// The head of a snapshot file (version 2): then each register as a postcard `Some(Update)`,
/// then `None`. Written a register at a time, so the state is never copied whole to save it.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotHead {
    node: String,
    /// Members whose acknowledgement tombstones wait for.
    members: Vec<String>,
}

/// An [`Update`] borrowed from the state: encodes as the `Update` it stands for.
#[derive(Serialize)]
struct UpdateRef<'a> {
    ns: &'a str,
    key: &'a str,
    reg: &'a crate::state::Reg,
}

fn snapshot_path(dir: &std::path::Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

/// The members and registers of a snapshot file's bytes, `None` if they are not a whole
/// snapshot of a known format.
fn parse_snapshot(bytes: &[u8]) -> Option<(Vec<String>, Vec<Update>)> {
    match bytes.split_first()? {
        (1, rest) => {
            let v1: SnapshotV1 = postcard::from_bytes(rest).ok()?;
            Some((v1.members, v1.updates))
        }
        (&SNAPSHOT_VERSION, rest) => {
            let (head, mut rest) = postcard::take_from_bytes::<SnapshotHead>(rest).ok()?;
            let mut updates = Vec::new();
            loop {
                let (item, tail) = postcard::take_from_bytes::<Option<Update>>(rest).ok()?;
                rest = tail;
                match item {
                    Some(u) => updates.push(u),
                    None if rest.is_empty() => return Some((head.members, updates)),
                    None => return None,
                }
            }
        }
        _ => None,
    }
}

/// Reads the snapshot in `dir` into `state`; an absent file is an empty state.
fn load_snapshot(dir: &std::path::Path, state: &State, now_ms: u64) -> Result<usize> {
    let path = snapshot_path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(Error::internal(format!(
                "kvcrdt: cannot read the snapshot {}: {e}",
                path.display()
            )));
        }
    };
    let (members, updates) = parse_snapshot(&bytes).ok_or_else(|| {
        Error::internal(format!(
            "kvcrdt: the snapshot {} is not a whole snapshot of a known format; move it away to start empty",
            path.display()
        ))
    })?;
    drop(bytes);
    for member in &members {
        state.note_member(member, now_ms);
    }
    let n = updates.len();
    for u in updates {
        let space = state.space(&u.ns);
        state.merge(&space, &u.key, u.reg, now_ms, 0);
    }
    Ok(n)
}

/// Writes the durable namespaces of `state` to `dir`, a register at a time: a temporary file,
/// fsynced, renamed over the last snapshot, and the folder fsynced, so a crash leaves the old or
/// the new snapshot.
fn write_snapshot(
    dir: &std::path::Path,
    name: &str,
    state: &State,
    durable: &[String],
) -> Result<()> {
    use std::io::Write;
    let path = snapshot_path(dir);
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let io = |what: &str, e: std::io::Error| {
        Error::internal(format!("kvcrdt: {what} {}: {e}", tmp.display()))
    };
    let file = std::fs::File::create(&tmp).map_err(|e| io("cannot create", e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
    // Each item is encoded into one reused buffer, then written: postcard's own writer would
    // hide the I/O error (a full disk) behind its "buffer full".
    fn put<T: Serialize>(out: &mut impl Write, buf: &mut Vec<u8>, item: &T) -> std::io::Result<()> {
        buf.clear();
        *buf = postcard::to_extend(item, std::mem::take(buf))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        out.write_all(buf)
    }
    let mut buf = Vec::new();
    let head = SnapshotHead {
        node: name.to_owned(),
        members: state.members(),
    };
    out.write_all(&[SNAPSHOT_VERSION])
        .and_then(|()| put(&mut out, &mut buf, &head))
        .and_then(|()| {
            state.each(None, Some(durable), |ns, key, reg| {
                put(&mut out, &mut buf, &Some(UpdateRef { ns, key, reg }))
            })
        })
        .and_then(|()| put(&mut out, &mut buf, &None::<UpdateRef<'_>>))
        .map_err(|e| io("cannot write", e))?;
    let file = out
        .into_inner()
        .map_err(|e| io("cannot write", e.into_error()))?;
    file.sync_all().map_err(|e| io("cannot sync", e))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(|e| io("cannot rename", e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync the folder of", e))?;
    Ok(())
}

/// The AES-256 key gossip is sealed with: HMAC-SHA256 of a fixed label under the secret.
fn gossip_key(secret: &[u8]) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, b"store.kv.crdt gossip key v1");
    let mut out = [0; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// A node's engine before and after it starts: what a registry shares between the
/// `store.kv.crdt` entries it builds (which must not bind sockets while loading) and starts
/// with the node.
#[derive(Debug)]
pub struct CrdtNode {
    config: CrdtConfig,
    state: Arc<State>,
    durable: Arc<Mutex<Vec<String>>>,
    engine: Arc<OnceLock<CrdtEngine>>,
    starting: tokio::sync::Mutex<()>,
}

impl CrdtNode {
    /// An engine to start later with `config`.
    pub fn new(config: CrdtConfig) -> Self {
        Self {
            state: Arc::new(State::new(node_id(&config.name))),
            config,
            durable: Arc::default(),
            engine: Arc::new(OnceLock::new()),
            starting: tokio::sync::Mutex::new(()),
        }
    }

    /// The configuration it starts with.
    pub fn config(&self) -> &CrdtConfig {
        &self.config
    }

    /// The running engine, once started.
    pub fn engine(&self) -> Option<&CrdtEngine> {
        self.engine.get()
    }

    pub(crate) fn slot(&self) -> Arc<OnceLock<CrdtEngine>> {
        Arc::clone(&self.engine)
    }

    pub(crate) fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Marks `namespace` durable: it is snapshotted and replayed at start.
    pub fn make_durable(&self, namespace: &str) {
        let mut durable = self.durable.lock().unwrap_or_else(PoisonError::into_inner);
        if !durable.iter().any(|n| n == namespace) {
            durable.push(namespace.to_owned());
        }
    }

    /// Starts the engine (once; later calls do nothing).
    ///
    /// # Errors
    /// As [`CrdtEngine::start`].
    pub async fn start(&self) -> Result<&CrdtEngine> {
        let _one = self.starting.lock().await;
        if let Some(engine) = self.engine.get() {
            return Ok(engine);
        }
        let engine = CrdtEngine::start_with(
            self.config.clone(),
            Arc::clone(&self.state),
            Arc::clone(&self.durable),
        )
        .await?;
        Ok(self.engine.get_or_init(|| engine))
    }
}

#[async_trait::async_trait]
impl store_core::Lifecycle for CrdtNode {
    async fn start(&self) -> Result<()> {
        CrdtNode::start(self).await.map(|_| ())
    }

    async fn stop(&self) {
        if let Some(engine) = self.engine.get() {
            engine.shutdown().await;
        }
    }
}

/// The node-wide gossip engine. Cloning is cheap and shares it.
#[derive(Clone)]
pub struct CrdtEngine {
    inner: Arc<Inner>,
}

impl fmt::Debug for CrdtEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrdtEngine")
            .field("name", &self.inner.shared.name)
            .field("bind", &self.inner.config.bind)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    list: List,
    config: CrdtConfig,
    durable: Arc<Mutex<Vec<String>>>,
    joined: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stopped: AtomicBool,
    /// The state's change count the last snapshot covers (`u64::MAX`: none yet).
    saved: AtomicU64,
    /// Held while a snapshot is written (inside the blocking task, which outlives an aborted
    /// timer): the periodic, the requested and the final snapshot never write at once.
    writing: Arc<Mutex<()>>,
}

impl CrdtEngine {
    /// Starts an engine: replays the snapshot (if `dir` holds one), binds memberlist on
    /// `bind`, and joins the seeds in the background until one answers.
    ///
    /// # Errors
    /// `Invalid` for a bad name; `Unavailable` when the address cannot be bound; `Internal`
    /// when the snapshot cannot be read.
    pub async fn start(config: CrdtConfig) -> Result<Self> {
        let state = Arc::new(State::new(node_id(&config.name)));
        Self::start_with(config, state, Arc::default()).await
    }

    async fn start_with(
        config: CrdtConfig,
        state: Arc<State>,
        durable: Arc<Mutex<Vec<String>>>,
    ) -> Result<Self> {
        let id = Name::new(&config.name).map_err(|e| {
            Error::invalid(format!(
                "node name {:?}: {e} (1 to {NAME_MAX} bytes)",
                config.name
            ))
            .with_field("name")
        })?;
        let now = config.clock.now_ms();
        if let Some(dir) = &config.dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::internal(format!("kvcrdt: cannot create {}: {e}", dir.display()))
            })?;
            let n = load_snapshot(dir, &state, now)?;
            if n > 0 {
                tracing::info!(registers = n, dir = %dir.display(), "kvcrdt: replayed the snapshot");
            }
        }
        let advertise = config.advertise.unwrap_or(config.bind);
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let nodes = Arc::new(AtomicUsize::new(1));
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            advertise,
            state,
            clock: Arc::clone(&config.clock),
            skew: Skew::new(config.max_clock_skew),
            ahead_logged: AtomicU64::new(0),
            queue: TransmitLimitedQueue::new(4, Arc::clone(&nodes)),
            peers_online: Arc::new(AtomicUsize::new(0)),
            jobs,
            outbox: Mutex::new(Vec::new()),
            flush: tokio::sync::Notify::new(),
            next_broadcast: AtomicU64::new(0),
            traffic: Traffic::default(),
            retention_ms: millis(config.tombstone_retention),
            merge_hook: OnceLock::new(),
        });
        let delegate = CompositeDelegate::new()
            .with_event_delegate(Membership {
                name: config.name.clone(),
                peers_online: Arc::clone(&shared.peers_online),
            })
            .with_node_delegate(Gossip {
                shared: Arc::clone(&shared),
            })
            .with_ping_delegate(Probe {
                shared: Arc::clone(&shared),
            });
        let mut transport = NetTransportOptions::<
            Name,
            SocketAddrResolver<TokioRuntime>,
            BoundTcp<TokioRuntime>,
        >::with_stream_layer_options(id, config.bind.ip());
        transport.add_bind_address(config.bind);
        let transport = transport.with_advertise_address(advertise);
        let mut options = Options::lan()
            .with_push_pull_interval(config.push_pull_interval)
            .with_gossip_interval(config.gossip_interval)
            .with_timeout(Duration::from_secs(5))
            .with_label(
                Label::try_from("store.kv.crdt").map_err(|e| Error::internal(e.to_string()))?,
            );
        if !config.secret.is_empty() {
            options = options
                .with_encryption_algo(EncryptionAlgorithm::NoPadding)
                .with_primary_key(SecretKey::Aes256(gossip_key(&config.secret)))
                .with_gossip_verify_incoming(true)
                .with_gossip_verify_outgoing(true);
        }
        let list = Memberlist::with_delegate(delegate, transport, options)
            .await
            .map_err(|e| {
                Error::unavailable(format!(
                    "kvcrdt: cannot start gossip on {}: {e}",
                    config.bind
                ))
            })?;
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            shared,
            list,
            joined: Arc::new(AtomicBool::new(config.join.is_empty())),
            config,
            durable,
            stop,
            tasks: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            saved: AtomicU64::new(u64::MAX),
            writing: Arc::default(),
        });
        let tasks = vec![
            tokio::spawn(jobs_task(Arc::clone(&inner), jobs_rx)),
            tokio::spawn(tick_task(Arc::clone(&inner), nodes)),
            tokio::spawn(join_task(Arc::clone(&inner))),
            tokio::spawn(flush_task(Arc::clone(&inner))),
        ];
        *inner.tasks.lock().unwrap_or_else(PoisonError::into_inner) = tasks;
        tracing::info!(name = %inner.shared.name, bind = %inner.config.bind, "kvcrdt: gossip engine started");
        Ok(Self { inner })
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    /// The address memberlist listens on.
    pub fn local_addr(&self) -> SocketAddr {
        *self.inner.list.advertise_address()
    }

    /// Whether the node has joined its cluster (always true for a node without seeds).
    pub fn joined(&self) -> bool {
        self.inner.joined.load(Ordering::Relaxed)
    }

    /// Every member memberlist knows (this node included), by name: `alive`, or `dead` once
    /// it failed its probes or left. (memberlist 0.8 keeps a member's suspicion to itself, so
    /// a suspect member shows as alive until it is declared dead.)
    pub async fn members(&self) -> Vec<GossipMember> {
        let online: Vec<Name> = self
            .inner
            .list
            .online_members()
            .await
            .iter()
            .map(|m| m.id().clone())
            .collect();
        let mut out: Vec<GossipMember> = self
            .inner
            .list
            .members()
            .await
            .iter()
            .map(|m| GossipMember {
                name: m.id().as_str().to_owned(),
                addr: *m.address(),
                state: if online.contains(m.id()) {
                    "alive"
                } else {
                    "dead"
                }
                .to_owned(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Calls `hook` with (namespace, key) whenever a message from a peer changes a register on
    /// this node (once per engine; later calls do nothing). For measurements: the benchmark
    /// times how long a write takes to become visible on every node.
    #[doc(hidden)]
    pub fn on_merge(&self, hook: impl Fn(&str, &str) + Send + Sync + 'static) {
        let _ = self.inner.shared.merge_hook.set(Box::new(hook));
    }

    /// Whether the last snapshot holds every change this node has (false without a folder).
    pub fn snapshot_current(&self) -> bool {
        self.inner.config.dir.is_some()
            && self.inner.saved.load(Ordering::Relaxed) == self.inner.shared.state.version()
    }

    /// Traffic counters.
    pub fn traffic(&self) -> &Traffic {
        &self.inner.shared.traffic
    }

    /// How many peers' clocks this node measured in the last minute (its probes' acks).
    pub fn measured_clocks(&self) -> usize {
        self.inner.shared.skew.measured_peers()
    }

    /// Tombstones waiting for collection.
    pub fn tombstones(&self) -> usize {
        self.inner.shared.state.tombstones()
    }

    /// Runs one cleanup pass now (expiry, tombstone collection) instead of waiting for the
    /// timer; returns the tombstones dropped.
    pub fn cleanup_now(&self) -> usize {
        cleanup(&self.inner)
    }

    /// Writes the snapshot now.
    ///
    /// # Errors
    /// `Internal` when it cannot be written.
    pub async fn snapshot_now(&self) -> Result<()> {
        snapshot(&self.inner).await
    }

    /// Stops the engine: background work ends, the final snapshot is written, the node leaves
    /// the cluster (so peers mark it `left`, not dead) and memberlist shuts down. Later calls do
    /// nothing.
    pub async fn shutdown(&self) {
        if self.stop_tasks().await {
            if let Err(e) = snapshot(&self.inner).await {
                tracing::error!(error = %e, "kvcrdt: the final snapshot failed");
            }
            if let Err(e) = self.inner.list.leave(Duration::from_secs(2)).await {
                tracing::warn!(error = %e, "kvcrdt: leaving the cluster failed");
            }
            if let Err(e) = self.inner.list.shutdown().await {
                tracing::warn!(error = %e, "kvcrdt: memberlist shutdown failed");
            }
        }
    }

    /// Stops as a crash would: no snapshot, no leave message; peers find the node dead.
    pub async fn kill(&self) {
        if self.stop_tasks().await {
            let _ = self.inner.list.shutdown().await;
        }
    }

    async fn stop_tasks(&self) -> bool {
        if self.inner.stopped.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.inner.stop.send_replace(true);
        let tasks = std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        true
    }
}

/// Sends the registers of keys written here: packed into messages of at most
/// [`MAX_GOSSIP_MESSAGE`] bytes, each sent at once to every online peer (UDP) and queued for
/// gossip, which retransmits it to random peers a few times more; an update too large for a
/// message goes to every online peer over TCP. Writes that arrive while a batch is being sent
/// wait for the next batch, so a busy node sends fewer, fuller packets.
async fn flush_task(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = inner.shared.flush.notified() => {}
        }
        let batch = std::mem::take(
            &mut *inner
                .shared
                .outbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if batch.is_empty() {
            continue;
        }
        let state = &inner.shared.state;
        let me = *inner.list.advertise_address();
        let peers: Vec<SocketAddr> = inner
            .list
            .online_members()
            .await
            .iter()
            .map(|m| *m.address())
            .filter(|a| *a != me)
            .collect();
        let mut messages = Vec::new();
        let mut current: Vec<Update> = Vec::new();
        let mut size = 0;
        for (space, key) in batch {
            let Some(reg) = state.register(&space, &key) else {
                continue;
            };
            let update = Update {
                ns: space.name().to_owned(),
                key: key.into(),
                reg,
            };
            let estimate = update.ns.len()
                + update.key.len()
                + update.reg.val.value.as_ref().map_or(0, Bytes::len)
                + 40;
            if estimate > MAX_GOSSIP_MESSAGE {
                let direct = encode(
                    WIRE_VERSION,
                    &Msg::Direct {
                        from: inner.shared.advertise,
                        updates: vec![update],
                    },
                );
                let _ = inner.shared.jobs.send(Job::Large(direct));
                continue;
            }
            if size + estimate > MAX_GOSSIP_MESSAGE && !current.is_empty() {
                messages.push(encode(
                    WIRE_VERSION,
                    &Msg::Gossip(std::mem::take(&mut current)),
                ));
                size = 0;
            }
            size += estimate;
            current.push(update);
        }
        if !current.is_empty() {
            messages.push(encode(WIRE_VERSION, &Msg::Gossip(current)));
        }
        for msg in messages {
            for peer in &peers {
                if let Err(e) = inner.list.send(peer, msg.clone()).await {
                    tracing::debug!(peer = %peer, error = %e, "kvcrdt: a broadcast packet was not sent; gossip and anti-entropy repeat it");
                }
            }
            let id = inner.shared.next_broadcast.fetch_add(1, Ordering::Relaxed);
            inner.shared.queue.queue_broadcast(Bcast { id, msg }).await;
        }
    }
}

/// Sends what the delegate asked for: anti-entropy repairs and large updates.
/// Up to [`JOBS_AT_ONCE`] run at once, so a peer slow to answer delays no other.
async fn jobs_task(inner: Arc<Inner>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(JOBS_AT_ONCE));
    while let Some(job) = jobs.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let inner = Arc::clone(&inner);
        tokio::spawn(async move {
            run_job(&inner, job).await;
            drop(slot);
        });
    }
}

async fn run_job(inner: &Inner, job: Job) {
    {
        match job {
            Job::Repair(to, shards) => {
                let updates = inner.shared.state.export(Some(&shards), None);
                let mut chunk = Vec::new();
                let mut size = 0;
                let mut sent = 0u64;
                let total = updates.len();
                for (i, u) in updates.into_iter().enumerate() {
                    size += u.key.len()
                        + u.ns.len()
                        + u.reg.val.value.as_ref().map_or(0, Bytes::len)
                        + 32;
                    chunk.push(u);
                    if size >= CHUNK_BYTES || i + 1 == total {
                        let msg = encode(
                            WIRE_VERSION,
                            &Msg::Direct {
                                from: inner.shared.advertise,
                                updates: std::mem::take(&mut chunk),
                            },
                        );
                        size = 0;
                        sent += msg.len() as u64;
                        if let Err(e) = inner.list.send_reliable(&to, msg).await {
                            tracing::debug!(peer = %to, error = %e, "kvcrdt: a repair was not delivered");
                            break;
                        }
                    }
                }
                inner
                    .shared
                    .traffic
                    .repair_bytes
                    .fetch_add(sent, Ordering::Relaxed);
            }
            Job::Tell(to, msg) => {
                if let Err(e) = inner.list.send_reliable(&to, msg).await {
                    tracing::debug!(peer = %to, error = %e, "kvcrdt: a message was not delivered");
                }
            }
            Job::Large(msg) => {
                let me = *inner.list.advertise_address();
                for m in inner.list.online_members().await.iter() {
                    if *m.address() == me {
                        continue;
                    }
                    if let Err(e) = inner.list.send_reliable(m.address(), msg.clone()).await {
                        tracing::debug!(peer = %m.address(), error = %e, "kvcrdt: a large update was not delivered; anti-entropy will repair it");
                    }
                }
            }
        }
    }
}

/// Expiry, tombstone collection, membership bookkeeping and snapshots, on their timers.
async fn tick_task(inner: Arc<Inner>, nodes: Arc<AtomicUsize>) {
    let mut stop = inner.stop.subscribe();
    let mut cleanup_timer = tokio::time::interval(inner.config.cleanup_interval);
    let mut snapshot_timer = tokio::time::interval(inner.config.snapshot_interval);
    cleanup_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    snapshot_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = cleanup_timer.tick() => {
                let now = inner.shared.now();
                // Every member seen, whatever its state, holds tombstones back until it
                // acknowledged them: a dead or departed node may come back with old data.
                for m in inner.list.members().await.iter() {
                    let name = m.id().as_str();
                    if name != inner.shared.name {
                        inner.shared.state.note_member(name, now);
                    }
                }
                let online = inner.list.num_online_members().await.saturating_sub(1);
                if online > 0 {
                    inner.joined.store(true, Ordering::Relaxed);
                }
                nodes.store(online + 1, Ordering::Relaxed);
                inner.shared.peers_online.store(online, Ordering::Relaxed);
                inner.shared.queue.prune(MAX_QUEUED).await;
                inner.shared.skew.expire();
                // A clock off from the cluster's would turn values into tombstones before (or
                // long after) their deadline.
                if inner.shared.serving_now().is_ok() {
                    cleanup(&inner);
                }
            }
            _ = snapshot_timer.tick() => {
                if inner.config.dir.is_some()
                    && inner.saved.load(Ordering::Relaxed) != inner.shared.state.version()
                    && let Err(e) = snapshot(&inner).await
                {
                    tracing::error!(error = %e, "kvcrdt: snapshot failed");
                }
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn cleanup(inner: &Inner) -> usize {
    let now = inner.shared.now();
    inner.shared.state.expire(now, 10_000);
    // Collected tombstones are remembered for a few exchanges: long enough for every peer to
    // collect its own copy instead of sending it back.
    let grace = millis(inner.config.push_pull_interval.saturating_mul(4)).max(60_000);
    inner
        .shared
        .state
        .collect(now, inner.shared.retention_ms, grace)
}

async fn snapshot(inner: &Inner) -> Result<()> {
    let Some(dir) = inner.config.dir.clone() else {
        return Ok(());
    };
    let durable = inner
        .durable
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let state = Arc::clone(&inner.shared.state);
    let name = inner.shared.name.clone();
    let writing = Arc::clone(&inner.writing);
    // Read before the export: the snapshot covers at least this much.
    let version = state.version();
    tokio::task::spawn_blocking(move || {
        let _one = writing.lock().unwrap_or_else(PoisonError::into_inner);
        write_snapshot(&dir, &name, &state, &durable)
    })
    .await
    .map_err(|e| Error::internal(format!("kvcrdt: the snapshot task failed: {e}")))??;
    inner.saved.store(version, Ordering::Relaxed);
    Ok(())
}

/// Joins the seeds, retrying every second until one answers.
async fn join_task(inner: Arc<Inner>) {
    if inner.config.join.is_empty() {
        return;
    }
    let mut stop = inner.stop.subscribe();
    loop {
        // One seed at a time: memberlist's join_many future cannot move between threads.
        for seed in &inner.config.join {
            match inner.list.join(MaybeResolvedAddress::Resolved(*seed)).await {
                Ok(_) => {
                    inner.joined.store(true, Ordering::Relaxed);
                    tracing::info!(seed = %seed, "kvcrdt: joined the cluster");
                    return;
                }
                Err(e) => {
                    tracing::debug!(seed = %seed, error = %e, "kvcrdt: the seed did not answer yet")
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use store_testkit::TempDir;

    use super::*;
    use crate::state::Cell;

    fn state_with(n: usize) -> State {
        let state = State::new(1);
        let space = state.space("app");
        for i in 0..n {
            let cell = Cell {
                value: Some(Bytes::from(format!("v{i}"))),
                expires_at: None,
            };
            state.write_local(&space, &format!("k{i}"), cell, 1_000);
        }
        state.note_member("n2", 1_000);
        state
    }

    fn sorted(mut updates: Vec<Update>) -> Vec<Update> {
        updates.sort_by(|a, b| (&a.ns, &a.key).cmp(&(&b.ns, &b.key)));
        updates
    }

    /// The file a register at a time holds what the state exports, and a file cut anywhere is
    /// refused rather than read as a smaller state.
    #[test]
    fn a_streamed_snapshot_reads_back_whole_and_a_cut_one_is_refused() {
        let dir = TempDir::new("crdt-snap");
        let state = state_with(300);
        write_snapshot(dir.path(), "n1", &state, &["app".to_owned()]).unwrap();
        let bytes = std::fs::read(snapshot_path(dir.path())).unwrap();
        let (members, updates) = parse_snapshot(&bytes).unwrap();
        assert_eq!(members, state.members());
        assert_eq!(sorted(updates), sorted(state.export(None, None)));
        for cut in (0..bytes.len()).step_by(7) {
            assert!(parse_snapshot(&bytes[..cut]).is_none(), "cut at {cut}");
        }
    }

    /// A file of the first format (one postcard `Snapshot`) is still read.
    #[test]
    fn a_snapshot_of_version_1_is_still_read() {
        #[derive(Serialize)]
        struct V1 {
            node: String,
            members: Vec<String>,
            updates: Vec<Update>,
        }
        let state = state_with(20);
        let v1 = V1 {
            node: "n1".into(),
            members: state.members(),
            updates: state.export(None, None),
        };
        let mut bytes = vec![1u8];
        bytes.extend(postcard::to_allocvec(&v1).unwrap());
        let (members, updates) = parse_snapshot(&bytes).unwrap();
        assert_eq!(members, v1.members);
        assert_eq!(updates, v1.updates);
    }
}
