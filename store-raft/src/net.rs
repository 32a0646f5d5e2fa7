//! The internode transport: length-delimited postcard frames over TCP, two persistent,
//! authenticated connections per peer, many requests in flight on each.
//!
//! A frame is a 4-byte big-endian length and a body. After the handshake every message carries
//! a request id; replies come back with the same id in any order, so a slow request (a write
//! waiting for its quorum) never blocks a heartbeat. A request frame over [`BULK_FRAME`] bytes
//! (log entries with large values, a snapshot chunk) goes on the peer's second connection, so a
//! small one (a heartbeat, a vote, a read index) never waits behind its bytes on the wire.
//!
//! **Handshake** (both sides prove they hold the cluster secret; the secret never travels):
//! the dialer sends `Hello {name, claim_c, nonce_c}`; the listener answers
//! `Challenge {name, claim_s, nonce_s, HMAC(secret, "server" ‖ nonce_c ‖ nonce_s ‖ name ‖ claim_s)}`;
//! the dialer checks it and answers `HMAC(secret, "client" ‖ nonce_s ‖ nonce_c ‖ name ‖ claim_c)`;
//! the listener checks that and sends `Welcome`. A peer that fails either check is refused,
//! logged, and its connection closed.
//!
//! **Who a peer is.** A claim is the node's incarnation (a random number its data folder was
//! created with) and the cluster id it knows. Each side then judges the other against the
//! replicated records ([`Records`]): a peer of another cluster, or a member whose incarnation is
//! not the one the cluster recorded for its name (a voter whose data folder was wiped, which
//! would otherwise vote a second time in a term it already voted in), is refused both ways
//! until it is removed from the members and added back as a new one.
//! Handshake frames are plain postcard, at most [`MAX_HANDSHAKE_FRAME`] bytes: a stranger's
//! length prefix is checked before a byte is allocated for it.
//!
//! **Every frame after it is sealed** (ChaCha20-Poly1305): each direction has its own key,
//! `HMAC(secret, "key client→server" or "key server→client" ‖ nonce_c ‖ nonce_s)`, fresh per
//! connection, and the nonce of a frame is its sequence number on that direction, which both
//! sides count; the length prefix is authenticated with it. A frame altered, forged, replayed,
//! reordered or taken from another connection fails to open, and the connection is closed. Frame
//! bodies are read as they arrive, never allocated from a length alone. A listener serves at most
//! [`MAX_CONNECTIONS_PER_IP`] connections from one address at once (a peer needs two).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::types::{Command, NodeId, Response, TypeConfig};

/// Largest frame accepted: a snapshot chunk (3 MiB by default) or a batch of log entries with
/// large values fits with room to spare; anything bigger is a broken peer.
const MAX_FRAME: usize = 256 << 20;
/// Largest handshake frame: a name and a nonce, or a proof.
const MAX_HANDSHAKE_FRAME: usize = 4 << 10;
/// Connections one address may hold to a listener at once (handshaking or established).
const MAX_CONNECTIONS_PER_IP: usize = 16;
/// Request frames larger than this go on a peer's bulk connection, the others on its control
/// connection: on a 100 Mbit/s link 64 KiB is 5 ms, a 3 MiB snapshot chunk a quarter second.
const BULK_FRAME: usize = 64 << 10;
/// Frames waiting to be written on one connection, at most: one more request is refused (not
/// sent); a reply waits for room.
const MAX_QUEUED_FRAMES: usize = 4096;
/// Frame bodies are read in pieces of at most this much, as the bytes arrive.
const READ_PIECE: usize = 64 << 10;
const MAGIC: [u8; 8] = *b"kvraft02";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A request one node sends another.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A client write forwarded to the leader, which stamps and proposes it.
    Write(Command),
    /// A follower asking the leader for a read index and the leader's clock.
    ReadIndex,
    AddMember {
        name: String,
        addr: String,
        voter: bool,
    },
    RemoveMember {
        name: String,
    },
    /// Are you there? (`cluster status` asks every member.)
    Ping,
}

/// The answer to an [`Rpc`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Write(Result<Response, Refusal>),
    ReadIndex(Result<ReadIndex, Refusal>),
    Members(Result<Vec<crate::MemberStatus>, Refusal>),
    Pong,
}

/// What a follower needs for a linearizable read: apply up to `index`, then judge expiry by
/// `now_ms` (the leader's clock).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct ReadIndex {
    pub(crate) index: u64,
    pub(crate) now_ms: u64,
}

/// Why the receiving node did not do what was asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Refusal {
    /// It is not the leader, and did nothing: the sender may retry elsewhere.
    NotLeader,
    /// It tried and failed with this error.
    Failed {
        kind: String,
        message: String,
        indeterminate: bool,
    },
}

impl Refusal {
    pub(crate) fn from_error(e: &store_core::Error) -> Self {
        Self::Failed {
            kind: e.kind().as_str().to_owned(),
            message: e.message().to_owned(),
            indeterminate: e.is_indeterminate(),
        }
    }

    pub(crate) fn into_error(self) -> store_core::Error {
        match self {
            Self::NotLeader => store_core::Error::unavailable("the node asked is not the leader"),
            Self::Failed {
                kind,
                message,
                indeterminate,
            } => {
                let kind =
                    store_core::ErrorKind::parse(&kind).unwrap_or(store_core::ErrorKind::Internal);
                let e = store_core::Error::new(kind, message);
                if indeterminate { e.indeterminate() } else { e }
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    id: u64,
    body: T,
}

#[derive(Serialize, Deserialize)]
enum Handshake {
    Hello {
        magic: [u8; 8],
        name: String,
        claim: Claim,
        nonce: [u8; 32],
    },
    Challenge {
        name: String,
        claim: Claim,
        nonce: [u8; 32],
        proof: Vec<u8>,
    },
    Proof {
        proof: Vec<u8>,
    },
    Welcome,
    Refused {
        reason: String,
    },
}

/// Why a call failed, and whether the request could have reached the peer.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The request was never sent (no connection could be made or the handshake failed).
    NotSent(String),
    /// The request was sent, and no answer came (connection lost or deadline passed).
    Lost(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotSent(why) => write!(f, "not sent: {why}"),
            Self::Lost(why) => write!(f, "no answer: {why}"),
        }
    }
}

impl std::error::Error for CallError {}

/// What one side of a handshake says of itself, bound into its proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claim {
    /// The random number the node's data folder was created with.
    incarnation: u64,
    /// The cluster id it knows (none until its state machine has one).
    cluster: Option<u64>,
}

/// What the replicated state records of the cluster: a peer's claim must agree with it.
pub(crate) trait Records: Send + Sync + 'static {
    /// The cluster id, once recorded.
    fn cluster_id(&self) -> Option<u64>;
    /// The incarnation recorded for member `name`.
    fn incarnation(&self, name: &str) -> Option<u64>;
}

/// This node's name and incarnation, and the records it judges its peers by.
pub(crate) struct Identity {
    name: String,
    incarnation: u64,
    records: Arc<dyn Records>,
    /// Incarnations peers claimed in handshakes that passed the secret, by name (the leader
    /// records them).
    seen: Mutex<HashMap<String, u64>>,
    /// When a refusal of each peer was last logged as a warning (a refused peer retries often).
    warned: Mutex<HashMap<String, tokio::time::Instant>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("incarnation", &format_args!("{:016x}", self.incarnation))
            .finish_non_exhaustive()
    }
}

impl Identity {
    pub(crate) fn new(name: String, incarnation: u64, records: Arc<dyn Records>) -> Self {
        Self {
            name,
            incarnation,
            records,
            seen: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The incarnation `name` claimed in its last handshake with this node.
    pub(crate) fn seen(&self, name: &str) -> Option<u64> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied()
    }

    fn claim(&self) -> Claim {
        Claim {
            incarnation: self.incarnation,
            cluster: self.records.cluster_id(),
        }
    }

    /// Accepts `name` claiming `claim`, or says why not. The claim is noted either way (it
    /// passed the secret): after `name` is removed and added back, its newest incarnation is
    /// the one the leader records.
    fn judge(&self, name: &str, claim: &Claim) -> Result<(), String> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), claim.incarnation);
        if let (Some(mine), Some(theirs)) = (self.records.cluster_id(), claim.cluster)
            && mine != theirs
        {
            return Err(format!(
                "{name} belongs to cluster {theirs:016x}, this node to cluster {mine:016x}"
            ));
        }
        if let Some(recorded) = self.records.incarnation(name)
            && recorded != claim.incarnation
        {
            return Err(format!(
                "{name} comes with incarnation {:016x}, but the cluster recorded {recorded:016x} \
                 for it: its data folder was wiped or replaced, and it may not vote again in a \
                 term it voted in. Remove {name} from the members and add it back to rejoin as a \
                 new member",
                claim.incarnation
            ));
        }
        Ok(())
    }

    /// Logs the refusal of `name`: a warning at most every 10 s per peer, else at debug level.
    fn refused(&self, name: &str, why: &str) {
        let now = tokio::time::Instant::now();
        let loud = {
            let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
            let last = warned.get(name).copied();
            let loud = last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10));
            if loud {
                warned.insert(name.to_owned(), now);
            }
            loud
        };
        if loud {
            tracing::warn!(peer = %name, reason = %why, "raft peer refused");
        } else {
            tracing::debug!(peer = %name, reason = %why, "raft peer refused");
        }
    }
}

/// The bytes of a side's name and claim, as its proof covers them.
fn claimed(name: &str, claim: &Claim) -> Vec<u8> {
    postcard::to_allocvec(&(name, claim)).unwrap_or_default()
}

/// The cluster secret as an HMAC key.
#[derive(Clone)]
pub(crate) struct Secret(hmac::Key);

impl Secret {
    pub(crate) fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    fn proof(&self, role: &[u8], a: &[u8; 32], b: &[u8; 32], who: &[u8]) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(role);
        ctx.update(a);
        ctx.update(b);
        ctx.update(who);
        ctx.sign().as_ref().to_vec()
    }

    fn verify(&self, role: &[u8], a: &[u8; 32], b: &[u8; 32], who: &[u8], proof: &[u8]) -> bool {
        let mut msg = Vec::with_capacity(role.len() + 64 + who.len());
        msg.extend_from_slice(role);
        msg.extend_from_slice(a);
        msg.extend_from_slice(b);
        msg.extend_from_slice(who);
        hmac::verify(&self.0, &msg, proof).is_ok()
    }
}

impl Secret {
    /// The two keys of a connection whose handshake exchanged `client` and `server` nonces:
    /// (client → server, server → client).
    fn session(&self, client: &[u8; 32], server: &[u8; 32]) -> (LessSafeKey, LessSafeKey) {
        let key = |role: &[u8]| {
            let bytes = self.proof(role, client, server, &[]);
            // 32 bytes of HMAC-SHA256 are exactly a ChaCha20-Poly1305 key.
            LessSafeKey::new(
                UnboundKey::new(&aead::CHACHA20_POLY1305, &bytes[..32])
                    .unwrap_or_else(|_| unreachable!("a 32-byte key")),
            )
        };
        (key(b"key client->server"), key(b"key server->client"))
    }
}

/// Seals the frames of one direction, numbering them.
struct Sealer {
    key: LessSafeKey,
    next: u64,
}

/// Opens the frames of one direction, expecting them in order.
struct Opener {
    key: LessSafeKey,
    next: u64,
}

fn sequence_nonce(n: u64) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(nonce)
}

impl Sealer {
    /// Seals `body` in place: the frame is the length answered, then `body`.
    fn seal(&mut self, body: &mut Vec<u8>) -> std::io::Result<[u8; 4]> {
        let sealed_len = body.len() + aead::CHACHA20_POLY1305.tag_len();
        if sealed_len > MAX_FRAME {
            return Err(std::io::Error::other(format!(
                "frame of {sealed_len} bytes exceeds the limit of {MAX_FRAME}"
            )));
        }
        let len = u32::try_from(sealed_len)
            .map_err(|_| std::io::Error::other("frame too large"))?
            .to_be_bytes();
        self.key
            .seal_in_place_append_tag(sequence_nonce(self.next), Aad::from(len), body)
            .map_err(|_| std::io::Error::other("cannot seal a frame"))?;
        self.next += 1;
        Ok(len)
    }
}

impl Opener {
    /// Reads the next frame and opens it: its body, or an error when it does not open.
    async fn read<R: AsyncRead + Unpin, T: DeserializeOwned>(
        &mut self,
        r: &mut R,
        buf: &mut Vec<u8>,
    ) -> std::io::Result<T> {
        let len = read_raw(r, buf, MAX_FRAME).await?;
        let body = self
            .key
            .open_in_place(sequence_nonce(self.next), Aad::from(len.to_be_bytes()), buf)
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "a frame did not open: forged, altered or replayed",
                )
            })?;
        self.next += 1;
        postcard::from_bytes(body).map_err(std::io::Error::other)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A random 64-bit number from the system's source (a node's incarnation, a cluster id).
pub(crate) fn random_u64() -> std::io::Result<u64> {
    let mut n = [0u8; 8];
    SystemRandom::new()
        .fill(&mut n)
        .map_err(|_| std::io::Error::other("the system random source failed"))?;
    Ok(u64::from_be_bytes(n))
}

fn nonce() -> std::io::Result<[u8; 32]> {
    let mut n = [0u8; 32];
    SystemRandom::new()
        .fill(&mut n)
        .map_err(|_| std::io::Error::other("the system random source failed"))?;
    Ok(n)
}

/// Writes a handshake frame.
async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> std::io::Result<()> {
    let body = postcard::to_allocvec(msg).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    let mut bytes = len.to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    w.write_all(&bytes).await?;
    w.flush().await
}

/// Reads a handshake frame.
async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<T> {
    read_raw(r, buf, MAX_HANDSHAKE_FRAME).await?;
    postcard::from_bytes(buf).map_err(std::io::Error::other)
}

/// Reads one frame's body into `buf` and answers its length. A length over `limit` is an error
/// before anything is allocated, and the body grows only as its bytes arrive, so a length alone
/// never pins memory.
async fn read_raw<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<u32> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len);
    let total = n as usize;
    if total > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {total} bytes exceeds the limit of {limit}"),
        ));
    }
    buf.clear();
    while buf.len() < total {
        let start = buf.len();
        let piece = (total - start).min(READ_PIECE);
        buf.resize(start + piece, 0);
        r.read_exact(&mut buf[start..]).await?;
    }
    if buf.capacity() > 4 * READ_PIECE && total < READ_PIECE {
        // After a large frame, give the memory back.
        buf.shrink_to(READ_PIECE);
    }
    Ok(n)
}

/// A request or reply as the sealing writer takes it: the plain body.
fn encode_body<T: Serialize>(msg: &T) -> std::io::Result<Vec<u8>> {
    postcard::to_allocvec(msg).map_err(std::io::Error::other)
}

/// Outgoing connections, one per peer address, made from this node's own bind address.
pub(crate) struct Peers {
    identity: Arc<Identity>,
    bind_ip: IpAddr,
    secret: Secret,
    conns: Mutex<HashMap<String, Arc<Peer>>>,
    /// Request ids, unique across this node's connections.
    next: AtomicU64,
}

impl fmt::Debug for Peers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peers")
            .field("identity", &self.identity)
            .field("bind_ip", &self.bind_ip)
            .finish_non_exhaustive()
    }
}

struct Peer {
    /// The live connections, if any, control then bulk ([`Lane`]); each replaced when it breaks.
    lanes: [tokio::sync::Mutex<Option<Arc<Conn>>>; 2],
}

/// Which of a peer's two connections a request goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Frames of at most [`BULK_FRAME`] bytes: heartbeats, votes, read indexes, small writes.
    Control = 0,
    /// Larger frames: entries with large values, snapshot chunks.
    Bulk = 1,
}

impl Lane {
    fn of(frame: &[u8]) -> Self {
        if frame.len() > BULK_FRAME {
            Lane::Bulk
        } else {
            Lane::Control
        }
    }
}

/// Removes a call's waiter from its connection when the call ends, however it ends.
struct Waiting<'a> {
    conn: &'a Conn,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.conn
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

struct Conn {
    frames: mpsc::Sender<Vec<u8>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    alive: AtomicBool,
}

impl Conn {
    fn fail_all(&self) {
        self.alive.store(false, Ordering::Release);
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl Peers {
    pub(crate) fn new(identity: Arc<Identity>, bind_ip: IpAddr, secret: Secret) -> Self {
        Self {
            identity,
            bind_ip,
            secret,
            conns: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// Sends `rpc` to `addr` and waits for its reply, all within `timeout`.
    pub(crate) async fn call(
        &self,
        addr: &str,
        rpc: Rpc,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let frame = encode_body(&Envelope { id, body: rpc })
            .map_err(|e| CallError::NotSent(format!("{addr}: {e}")))?;
        let lane = Lane::of(&frame);
        let conn = match tokio::time::timeout_at(deadline, self.connection(addr, lane)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(CallError::NotSent(format!("{addr}: {e}"))),
            Err(_) => return Err(CallError::NotSent(format!("{addr}: connect timed out"))),
        };
        let (tx, rx) = oneshot::channel();
        conn.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        // However this call ends (answered, timed out, or dropped by a caller that gave up), its
        // waiter leaves the map.
        let _waiting = Waiting { conn: &conn, id };
        match conn.frames.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(CallError::NotSent(format!(
                    "{addr}: {MAX_QUEUED_FRAMES} frames already wait to be sent"
                )));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(CallError::NotSent(format!("{addr}: connection closed")));
            }
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(CallError::Lost(format!("{addr}: connection lost"))),
            Err(_) => Err(CallError::Lost(format!("{addr}: no reply in {timeout:?}"))),
        }
    }

    async fn connection(&self, addr: &str, lane: Lane) -> std::io::Result<Arc<Conn>> {
        let peer = Arc::clone(
            self.conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(addr.to_owned())
                .or_insert_with(|| {
                    Arc::new(Peer {
                        lanes: Default::default(),
                    })
                }),
        );
        let mut slot = peer.lanes[lane as usize].lock().await;
        if let Some(conn) = slot.as_ref()
            && conn.alive.load(Ordering::Acquire)
        {
            return Ok(Arc::clone(conn));
        }
        let conn = self.dial(addr).await?;
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    async fn dial(&self, addr: &str) -> std::io::Result<Arc<Conn>> {
        let target = tokio::net::lookup_host(addr)
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{addr} resolves to no address")))?;
        let socket = match target {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if !self.bind_ip.is_unspecified() && self.bind_ip.is_ipv4() == target.is_ipv4() {
            socket.bind(SocketAddr::new(self.bind_ip, 0))?;
        }
        let stream = socket.connect(target).await?;
        stream.set_nodelay(true)?;
        let (stream, (send, recv)) =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, self.introduce(stream, addr))
                .await
                .map_err(|_| std::io::Error::other("handshake timed out"))??;
        let sealer = Sealer { key: send, next: 0 };
        let mut opener = Opener { key: recv, next: 0 };
        let (reader, writer) = stream.into_split();
        // Buffered: one read syscall brings many small frames (heartbeats, acks).
        let mut reader = tokio::io::BufReader::with_capacity(64 << 10, reader);
        let (frames, outgoing) = mpsc::channel(MAX_QUEUED_FRAMES);
        let conn = Arc::new(Conn {
            frames,
            pending: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
        });
        let write_conn = Arc::clone(&conn);
        tokio::spawn(async move {
            if pump(writer, sealer, outgoing).await.is_err() {
                write_conn.fail_all();
            }
        });
        let read_conn = Arc::clone(&conn);
        let who = addr.to_owned();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                match opener
                    .read::<_, Envelope<Reply>>(&mut reader, &mut buf)
                    .await
                {
                    Ok(Envelope { id, body }) => {
                        let waiter = read_conn
                            .pending
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&id);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(body);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(peer = %who, error = %e, "raft peer connection closed");
                        read_conn.fail_all();
                        return;
                    }
                }
            }
        });
        Ok(conn)
    }

    /// The dialer's half of the handshake: the stream and its keys (send, receive).
    async fn introduce(
        &self,
        mut stream: TcpStream,
        addr: &str,
    ) -> std::io::Result<(TcpStream, (LessSafeKey, LessSafeKey))> {
        let mine = nonce()?;
        let identity = &self.identity;
        let my_claim = identity.claim();
        write_frame(
            &mut stream,
            &Handshake::Hello {
                magic: MAGIC,
                name: identity.name.clone(),
                claim: my_claim,
                nonce: mine,
            },
        )
        .await?;
        let mut buf = Vec::new();
        let theirs = match read_frame(&mut stream, &mut buf).await? {
            Handshake::Challenge {
                name,
                claim,
                nonce,
                proof,
            } => {
                let who = claimed(&name, &claim);
                if !self.secret.verify(b"server", &mine, &nonce, &who, &proof) {
                    tracing::warn!(peer = %addr, "refusing raft peer: it does not hold the cluster secret");
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        "the peer does not hold the cluster secret",
                    ));
                }
                if let Err(why) = identity.judge(&name, &claim) {
                    identity.refused(&name, &why);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        format!("refused {name} at {addr}: {why}"),
                    ));
                }
                nonce
            }
            Handshake::Refused { reason } => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("refused: {reason}"),
                ));
            }
            _ => return Err(std::io::Error::other("unexpected handshake message")),
        };
        write_frame(
            &mut stream,
            &Handshake::Proof {
                proof: self.secret.proof(
                    b"client",
                    &theirs,
                    &mine,
                    &claimed(&identity.name, &my_claim),
                ),
            },
        )
        .await?;
        match read_frame(&mut stream, &mut buf).await? {
            Handshake::Welcome => Ok((stream, self.secret.session(&mine, &theirs))),
            Handshake::Refused { reason } => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("refused: {reason}"),
            )),
            _ => Err(std::io::Error::other("unexpected handshake message")),
        }
    }
}

/// Seals and writes queued frame bodies in order, flushing whenever the queue runs dry (so a
/// burst goes out in few syscalls).
async fn pump<W: AsyncWrite + Unpin>(
    writer: W,
    mut sealer: Sealer,
    mut frames: mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    let mut writer = BufWriter::with_capacity(64 << 10, writer);
    while let Some(mut body) = frames.recv().await {
        writer.write_all(&sealer.seal(&mut body)?).await?;
        writer.write_all(&body).await?;
        while let Ok(mut body) = frames.try_recv() {
            writer.write_all(&sealer.seal(&mut body)?).await?;
            writer.write_all(&body).await?;
        }
        writer.flush().await?;
    }
    Ok(())
}

/// Accepts peers on `listener` until `stop` turns true, answering each request with `handle`.
pub(crate) async fn serve<H, Fut>(
    listener: TcpListener,
    secret: Secret,
    identity: Arc<Identity>,
    handle: H,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Rpc) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let per_ip: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, from) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "raft listener accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = ConnectionSlot::take(&per_ip, from.ip()) else {
            tracing::warn!(peer = %from, limit = MAX_CONNECTIONS_PER_IP, "raft peer connection refused: too many from this address");
            drop(stream);
            continue;
        };
        let secret = secret.clone();
        let identity = Arc::clone(&identity);
        let handle = handle.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let admitted = admit(stream, &secret, &identity, from);
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, admitted).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(peer = %from, error = %e, "raft peer connection refused");
                    return;
                }
                Err(_) => {
                    tracing::warn!(peer = %from, "raft peer connection refused: handshake timed out");
                    return;
                }
            };
            connection(stream, handle, stop).await;
        });
    }
}

/// One of the connections an address may hold; given back when dropped.
struct ConnectionSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl ConnectionSlot {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_IP {
            return None;
        }
        *n += 1;
        Some(Self {
            counts: Arc::clone(counts),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// The listener's half of the handshake: the stream and its keys (send, receive).
async fn admit(
    mut stream: TcpStream,
    secret: &Secret,
    identity: &Identity,
    from: SocketAddr,
) -> std::io::Result<(TcpStream, (LessSafeKey, LessSafeKey))> {
    let mut buf = Vec::new();
    let (name, claim, theirs) = match read_frame(&mut stream, &mut buf).await? {
        Handshake::Hello {
            magic,
            name,
            claim,
            nonce,
        } if magic == MAGIC => (name, claim, nonce),
        _ => return Err(std::io::Error::other("not a store-raft peer")),
    };
    let mine = nonce()?;
    let my_claim = identity.claim();
    write_frame(
        &mut stream,
        &Handshake::Challenge {
            name: identity.name.clone(),
            claim: my_claim,
            nonce: mine,
            proof: secret.proof(
                b"server",
                &theirs,
                &mine,
                &claimed(&identity.name, &my_claim),
            ),
        },
    )
    .await?;
    let proof = match read_frame(&mut stream, &mut buf).await? {
        Handshake::Proof { proof } => proof,
        _ => return Err(std::io::Error::other("unexpected handshake message")),
    };
    if !secret.verify(b"client", &mine, &theirs, &claimed(&name, &claim), &proof) {
        let _ = write_frame(
            &mut stream,
            &Handshake::Refused {
                reason: "wrong cluster secret".into(),
            },
        )
        .await;
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("peer {name:?} does not hold the cluster secret"),
        ));
    }
    if let Err(why) = identity.judge(&name, &claim) {
        identity.refused(&name, &why);
        let _ = write_frame(
            &mut stream,
            &Handshake::Refused {
                reason: why.clone(),
            },
        )
        .await;
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            why,
        ));
    }
    write_frame(&mut stream, &Handshake::Welcome).await?;
    tracing::debug!(peer = %from, name = %name, "raft peer connected");
    let (client_to_server, server_to_client) = secret.session(&theirs, &mine);
    Ok((stream, (server_to_client, client_to_server)))
}

async fn connection<H, Fut>(
    (stream, (send, recv)): (TcpStream, (LessSafeKey, LessSafeKey)),
    handle: H,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Rpc) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let peer = stream.peer_addr().ok();
    let (reader, writer) = stream.into_split();
    let mut reader = tokio::io::BufReader::with_capacity(64 << 10, reader);
    let (frames, outgoing) = mpsc::channel::<Vec<u8>>(MAX_QUEUED_FRAMES);
    let pump_task = tokio::spawn(pump(writer, Sealer { key: send, next: 0 }, outgoing));
    let mut opener = Opener { key: recv, next: 0 };
    let mut buf = Vec::new();
    loop {
        let request = tokio::select! {
            r = opener.read::<_, Envelope<Rpc>>(&mut reader, &mut buf) => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Envelope { id, body } = match request {
            Ok(e) => e,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    tracing::warn!(peer = ?peer, error = %e, "raft peer connection closed");
                }
                break;
            }
        };
        let handle = handle.clone();
        let frames = frames.clone();
        tokio::spawn(async move {
            let reply = handle(body).await;
            match encode_body(&Envelope { id, body: reply }) {
                Ok(frame) => {
                    let _ = frames.send(frame).await;
                }
                Err(e) => tracing::error!(error = %e, "cannot encode a raft reply"),
            }
        });
    }
    drop(frames);
    pump_task.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn server(secret: &[u8]) -> (SocketAddr, watch::Sender<bool>) {
        server_as(secret, identity("server", 1, Known::default())).await
    }

    async fn server_as(secret: &[u8], who: Arc<Identity>) -> (SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(
            listener,
            Secret::new(secret),
            who,
            |rpc| async move {
                match rpc {
                    Rpc::Ping => Reply::Pong,
                    _ => Reply::Write(Err(Refusal::NotLeader)),
                }
            },
            stopped,
        ));
        (addr, stop)
    }

    /// Records that know what a test says they know.
    #[derive(Default, Clone)]
    struct Known {
        cluster: Option<u64>,
        incarnations: HashMap<String, u64>,
    }

    impl Records for Known {
        fn cluster_id(&self) -> Option<u64> {
            self.cluster
        }
        fn incarnation(&self, name: &str) -> Option<u64> {
            self.incarnations.get(name).copied()
        }
    }

    fn identity(name: &str, incarnation: u64, known: Known) -> Arc<Identity> {
        Arc::new(Identity::new(name.into(), incarnation, Arc::new(known)))
    }

    fn peers(secret: &[u8]) -> Peers {
        Peers::new(
            identity("tester", 7, Known::default()),
            "127.0.0.1".parse().unwrap(),
            Secret::new(secret),
        )
    }

    #[tokio::test]
    async fn a_peer_with_the_secret_is_served_over_one_connection() {
        let (addr, _stop) = server(b"right").await;
        let peers = peers(b"right");
        for _ in 0..100 {
            let reply = peers
                .call(&addr.to_string(), Rpc::Ping, Duration::from_secs(5))
                .await;
            assert!(matches!(reply, Ok(Reply::Pong)), "{reply:?}");
        }
        assert_eq!(peers.conns.lock().unwrap().len(), 1);
    }

    /// A member whose incarnation is not the recorded one (its data folder was wiped) is refused
    /// by the listener and by the dialer; so is a node of another cluster; a member the records
    /// do not know yet, or knows as it is, is served, and its incarnation is noted.
    #[tokio::test]
    async fn a_peer_that_is_not_the_recorded_incarnation_or_cluster_is_refused_both_ways() {
        let records = |cluster: Option<u64>, who: &[(&str, u64)]| Known {
            cluster,
            incarnations: who.iter().map(|(n, i)| ((*n).to_owned(), *i)).collect(),
        };
        let ping = |peers: Peers, addr: SocketAddr| async move {
            let reply = peers
                .call(&addr.to_string(), Rpc::Ping, Duration::from_secs(5))
                .await;
            (peers, reply)
        };
        let dialer = |incarnation: u64, known: Known| {
            Peers::new(
                identity("tester", incarnation, known),
                "127.0.0.1".parse().unwrap(),
                Secret::new(b"right"),
            )
        };
        // The listener records tester as 7: tester wiped (now 8) is refused, with the way out.
        let server = identity("server", 1, records(Some(5), &[("tester", 7)]));
        let (addr, _stop) = server_as(b"right", Arc::clone(&server)).await;
        match ping(dialer(8, Known::default()), addr).await.1 {
            Err(CallError::NotSent(why)) => {
                assert!(
                    why.contains("wiped") && why.contains("add it back"),
                    "{why}"
                );
            }
            other => panic!("a wiped member was served: {other:?}"),
        }
        let (_, reply) = ping(dialer(7, Known::default()), addr).await;
        assert!(matches!(reply, Ok(Reply::Pong)), "{reply:?}");
        assert_eq!(server.seen("tester"), Some(7));
        // The dialer records server as 2: the listener (1) is refused by the dialer.
        match ping(dialer(7, records(None, &[("server", 2)])), addr)
            .await
            .1
        {
            Err(CallError::NotSent(why)) => assert!(why.contains("wiped"), "{why}"),
            other => panic!("a wiped listener was trusted: {other:?}"),
        }
        // Another cluster, either way round.
        match ping(dialer(7, records(Some(6), &[])), addr).await.1 {
            Err(CallError::NotSent(why)) => assert!(why.contains("cluster"), "{why}"),
            other => panic!("a node of another cluster was trusted: {other:?}"),
        }
        let (peers, reply) = ping(dialer(7, records(Some(5), &[("server", 1)])), addr).await;
        assert!(matches!(reply, Ok(Reply::Pong)), "{reply:?}");
        assert_eq!(peers.identity.seen("server"), Some(1));
    }

    /// A TCP relay to `to` that carries at most `rate` bytes a second towards it on each
    /// connection (a slow link), counting the bytes it carried.
    async fn slow_link(to: SocketAddr, rate: u64) -> (SocketAddr, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let carried = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&carried);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(to).await else {
                    continue;
                };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    let mut piece = vec![0; 16 << 10];
                    while let Ok(n) = from_client.read(&mut piece).await {
                        if n == 0 || to_server.write_all(&piece[..n]).await.is_err() {
                            return;
                        }
                        count.fetch_add(n as u64, Ordering::Relaxed);
                        // The link's own pace, not a wait for something to happen.
                        tokio::time::sleep(Duration::from_micros(n as u64 * 1_000_000 / rate))
                            .await;
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                });
            }
        });
        (addr, carried)
    }

    /// Over a link that carries 1 MiB a second, a ping sent while a 2 MiB request is on the wire
    /// is answered at once: it goes on the peer's other connection, not behind those bytes.
    #[tokio::test]
    async fn a_small_request_does_not_wait_behind_a_large_one_on_the_wire() {
        let (server, _stop) = server(b"right").await;
        let (link, carried) = slow_link(server, 1 << 20).await;
        let to = link.to_string();
        let peers = Arc::new(peers(b"right"));
        let reply = peers.call(&to, Rpc::Ping, Duration::from_secs(10)).await;
        assert!(matches!(reply, Ok(Reply::Pong)), "{reply:?}");
        let before = carried.load(Ordering::Relaxed);
        let large = tokio::spawn({
            let peers = Arc::clone(&peers);
            let to = to.clone();
            async move {
                let started = std::time::Instant::now();
                let rpc = Rpc::AddMember {
                    name: "n".repeat(2 << 20),
                    addr: "a".into(),
                    voter: false,
                };
                let reply = peers.call(&to, rpc, Duration::from_secs(60)).await;
                (reply, started.elapsed())
            }
        });
        // Once a quarter of the large frame has gone, the rest is still on its way.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while carried.load(Ordering::Relaxed) < before + (512 << 10) {
            assert!(
                std::time::Instant::now() < deadline,
                "the large request never went out"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = std::time::Instant::now();
        let reply = peers.call(&to, Rpc::Ping, Duration::from_secs(30)).await;
        let ping_took = started.elapsed();
        assert!(matches!(reply, Ok(Reply::Pong)), "{reply:?}");
        let (reply, large_took) = large.await.unwrap();
        assert!(matches!(reply, Ok(Reply::Write(_))), "{reply:?}");
        assert!(
            ping_took * 4 < large_took,
            "the ping took {ping_took:?}, the 2 MiB request {large_took:?}"
        );
    }

    #[tokio::test]
    async fn a_peer_without_the_secret_is_refused_before_any_request() {
        let (addr, _stop) = server(b"right").await;
        let reply = peers(b"wrong")
            .call(&addr.to_string(), Rpc::Ping, Duration::from_secs(5))
            .await;
        match reply {
            Err(CallError::NotSent(why)) => assert!(why.contains("secret"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_listener_without_the_secret_is_not_trusted() {
        let (addr, _stop) = server(b"other cluster").await;
        let reply = peers(b"right")
            .call(&addr.to_string(), Rpc::Ping, Duration::from_secs(5))
            .await;
        assert!(matches!(reply, Err(CallError::NotSent(_))), "{reply:?}");
    }

    #[tokio::test]
    async fn a_stranger_speaking_another_protocol_is_dropped() {
        let (addr, _stop) = server(b"right").await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        // The listener closes the connection without answering a byte.
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
            .await
            .expect("the listener closes the connection")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }

    /// `msg` as a whole sealed frame.
    fn sealed<T: Serialize>(sealer: &mut Sealer, msg: &T) -> Vec<u8> {
        let mut body = encode_body(msg).unwrap();
        let mut frame = sealer.seal(&mut body).unwrap().to_vec();
        frame.extend_from_slice(&body);
        frame
    }

    /// A connection through the real handshake, and its keys, for writing frames by hand.
    async fn handshaken(addr: SocketAddr) -> (TcpStream, Sealer, Opener) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (stream, (send, recv)) = peers(b"right")
            .introduce(stream, &addr.to_string())
            .await
            .unwrap();
        (
            stream,
            Sealer { key: send, next: 0 },
            Opener { key: recv, next: 0 },
        )
    }

    /// Whether the other side closes `stream` within `within` (reading, and dropping, whatever
    /// else it sends).
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        let mut sink = Vec::new();
        tokio::time::timeout(within, stream.read_to_end(&mut sink))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_sealed_frame_is_served_and_the_same_frame_again_closes_the_connection() {
        let (addr, _stop) = server(b"right").await;
        let (mut stream, mut sealer, mut opener) = handshaken(addr).await;
        let ping = sealed(
            &mut sealer,
            &Envelope {
                id: 1,
                body: Rpc::Ping,
            },
        );
        stream.write_all(&ping).await.unwrap();
        let mut buf = Vec::new();
        let reply: Envelope<Reply> = opener.read(&mut stream, &mut buf).await.unwrap();
        assert!(matches!((reply.id, reply.body), (1, Reply::Pong)));
        // Replayed: its sequence number is spent.
        stream.write_all(&ping).await.unwrap();
        assert!(closed_within(&mut stream, Duration::from_secs(3)).await);
    }

    #[tokio::test]
    async fn a_forged_or_altered_frame_after_the_handshake_closes_the_connection() {
        let (addr, _stop) = server(b"right").await;
        // Forged: the right length, bytes of nobody's key.
        let (mut stream, _, _) = handshaken(addr).await;
        let mut forged = 40u32.to_be_bytes().to_vec();
        forged.extend_from_slice(&[7u8; 40]);
        stream.write_all(&forged).await.unwrap();
        assert!(closed_within(&mut stream, Duration::from_secs(3)).await);
        // Altered: a sealed Write with one bit flipped on the way.
        let (mut stream, mut sealer, _) = handshaken(addr).await;
        let write = Rpc::Write(Command::Delete { key: "k".into() });
        let mut frame = sealed(&mut sealer, &Envelope { id: 1, body: write });
        frame[6] ^= 1;
        stream.write_all(&frame).await.unwrap();
        assert!(closed_within(&mut stream, Duration::from_secs(3)).await);
        // A frame sealed for another connection does not open on this one.
        let (_, mut other_sealer, _) = handshaken(addr).await;
        let (mut stream, _, _) = handshaken(addr).await;
        let ping = sealed(
            &mut other_sealer,
            &Envelope {
                id: 1,
                body: Rpc::Ping,
            },
        );
        stream.write_all(&ping).await.unwrap();
        assert!(closed_within(&mut stream, Duration::from_secs(3)).await);
    }

    #[tokio::test]
    async fn a_huge_length_before_the_handshake_closes_the_connection_at_once() {
        let (addr, _stop) = server(b"right").await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(&(256u32 << 20).to_be_bytes())
            .await
            .unwrap();
        // Closed by the length check, well before the 5 s handshake timeout.
        assert!(closed_within(&mut stream, Duration::from_secs(2)).await);
    }

    #[tokio::test]
    async fn a_frame_body_grows_only_as_its_bytes_arrive() {
        // A 200 MiB length (under the limit) followed by 10 bytes and the end of the stream.
        let mut input = (200u32 << 20).to_be_bytes().to_vec();
        input.extend_from_slice(&[0u8; 10]);
        let mut buf = Vec::new();
        let e = read_raw(&mut input.as_slice(), &mut buf, MAX_FRAME)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(buf.capacity() <= 2 * READ_PIECE, "{}", buf.capacity());
        let over = ((MAX_FRAME + 1) as u32).to_be_bytes();
        let e = read_raw(&mut over.as_slice(), &mut buf, MAX_FRAME)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
    }

    #[tokio::test]
    async fn an_address_holds_a_bounded_number_of_connections() {
        let (addr, _stop) = server(b"right").await;
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS_PER_IP {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // The listener takes them in order; one more is closed at once, not after the handshake
        // timeout.
        let mut extra = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut extra, Duration::from_secs(2)).await);
        // A freed slot is taken again: a real peer gets in once an idle one leaves.
        drop(idle.pop());
        let mut reply = Err(CallError::NotSent(String::new()));
        for _ in 0..100 {
            reply = peers(b"right")
                .call(&addr.to_string(), Rpc::Ping, Duration::from_secs(5))
                .await;
            if reply.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(matches!(reply, Ok(Reply::Pong)), "{reply:?}");
    }
}
