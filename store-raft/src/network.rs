//! Openraft's network seam: each Raft RPC to a peer is one call on the node's connections to it.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Entry, EntryPayload};

use crate::net::{CallError, Peers, Reply, Rpc};
use crate::types::{Member, NodeId, TypeConfig};

/// Most bytes of entries one AppendEntries request carries (one entry alone may carry more).
/// openraft 0.9 gives up on a request after one heartbeat interval, and a request in flight
/// holds back the heartbeats behind it: requests stay small enough to finish well within it.
pub(crate) const APPEND_BUDGET: usize = 2 << 20;

/// How many of `entries` fit in [`APPEND_BUDGET`], when not all of them do (at least one).
fn entries_within_budget(entries: &[Entry<TypeConfig>]) -> Option<u64> {
    let mut bytes = 0;
    for (n, entry) in entries.iter().enumerate() {
        bytes += match &entry.payload {
            EntryPayload::Normal(request) => {
                16 + request.commands.iter().map(|c| c.size()).sum::<usize>()
            }
            EntryPayload::Membership(_) => 256,
            EntryPayload::Blank => 16,
        };
        if bytes > APPEND_BUDGET && entries.len() > 1 {
            return Some(n.max(1) as u64);
        }
    }
    None
}

/// Makes a [`PeerClient`] per target; all share the node's connections.
pub(crate) struct Network {
    peers: Arc<Peers>,
    request_timeout: Duration,
}

impl Network {
    pub(crate) fn new(peers: Arc<Peers>, request_timeout: Duration) -> Self {
        Self {
            peers,
            request_timeout,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient {
            peers: Arc::clone(&self.peers),
            target,
            addr: node.addr.clone(),
            request_timeout: self.request_timeout,
            in_flight: None,
        }
    }
}

/// Raft RPCs to one peer.
pub(crate) struct PeerClient {
    peers: Arc<Peers>,
    target: NodeId,
    addr: String,
    request_timeout: Duration,
    /// The last AppendEntries with entries, still running in a task of its own (see
    /// [`PeerClient::append_entries`]).
    in_flight: Option<(
        AppendKey,
        tokio::task::JoinHandle<RpcResult<AppendEntriesResponse<NodeId>>>,
    )>,
}

/// What makes two AppendEntries the same request as far as the follower's log goes.
type AppendKey = (
    openraft::Vote<NodeId>,
    Option<openraft::LogId<NodeId>>,
    Option<openraft::LogId<NodeId>>,
    usize,
);

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, Member, RaftError<NodeId, E>>>;

impl PeerClient {
    /// A copy for a task of its own (without the request in flight).
    fn detached(&self) -> Self {
        Self {
            peers: Arc::clone(&self.peers),
            target: self.target,
            addr: self.addr.clone(),
            request_timeout: self.request_timeout,
            in_flight: None,
        }
    }

    async fn send_append(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self.call(Rpc::Append(rpc), option).await? {
            Reply::Append(Ok(r)) => Ok(r),
            Reply::Append(Err(e)) => Err(self.remote(e)),
            other => Err(self.unexpected(&other)),
        }
    }

    async fn call<E: std::error::Error>(
        &self,
        rpc: Rpc,
        option: &RPCOption,
    ) -> RpcResult<Reply, E> {
        let timeout = option
            .hard_ttl()
            .min(self.request_timeout.max(Duration::from_secs(1)) * 4);
        self.peers
            .call(&self.addr, rpc, timeout)
            .await
            .map_err(|e| match e {
                CallError::NotSent(_) => RPCError::Unreachable(Unreachable::new(&e)),
                CallError::Lost(_) => RPCError::Network(NetworkError::new(&e)),
            })
    }

    fn unexpected<E: std::error::Error>(
        &self,
        reply: &Reply,
    ) -> RPCError<NodeId, Member, RaftError<NodeId, E>> {
        let e = std::io::Error::other(format!("unexpected reply {reply:?}"));
        RPCError::Network(NetworkError::new(&e))
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, Member, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        if let Some(fit) = entries_within_budget(&rpc.entries) {
            // openraft sends the first `fit` entries instead, and as many next time.
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fit),
            ));
        }
        if rpc.entries.is_empty() {
            return self.send_append(rpc, &option).await;
        }
        // openraft 0.9 drops an AppendEntries that has not answered within one heartbeat
        // interval, and sends it again: a request with large entries (or a slow disk on the
        // follower) would be cut off and re-sent forever, and never replicate. So a request with
        // entries runs in a task of its own that outlives openraft's patience; the same request
        // asked again waits for that task instead of sending it twice.
        let key: AppendKey = (
            rpc.vote,
            rpc.prev_log_id,
            rpc.entries.last().map(|e| e.log_id),
            rpc.entries.len(),
        );
        if self.in_flight.as_ref().is_none_or(|(k, _)| *k != key) {
            let client = self.detached();
            // Its own patience: the request timeout, not openraft's heartbeat interval.
            let option = RPCOption::new(self.request_timeout.max(Duration::from_secs(1)));
            let task = tokio::spawn(async move { client.send_append(rpc, &option).await });
            // A different request replaces the one in flight, which runs on to its end alone.
            self.in_flight = Some((key, task));
        }
        let Some((_, task)) = self.in_flight.as_mut() else {
            unreachable!("set above")
        };
        let outcome = task.await;
        self.in_flight = None;
        match outcome {
            Ok(result) => result,
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.call(Rpc::Snapshot(rpc), &option).await? {
            Reply::Snapshot(Ok(r)) => Ok(r),
            Reply::Snapshot(Err(e)) => Err(self.remote(e)),
            other => Err(self.unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self.call(Rpc::Vote(rpc), &option).await? {
            Reply::Vote(Ok(r)) => Ok(r),
            Reply::Vote(Err(e)) => Err(self.remote(e)),
            other => Err(self.unexpected(&other)),
        }
    }
}
