//! Openraft's network seam: each Raft RPC to a peer is one call on the shared connection.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::net::{CallError, Peers, Reply, Rpc};
use crate::types::{Member, NodeId, TypeConfig};

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
        }
    }
}

/// Raft RPCs to one peer.
pub(crate) struct PeerClient {
    peers: Arc<Peers>,
    target: NodeId,
    addr: String,
    request_timeout: Duration,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, Member, RaftError<NodeId, E>>>;

impl PeerClient {
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
        match self.call(Rpc::Append(rpc), &option).await? {
            Reply::Append(Ok(r)) => Ok(r),
            Reply::Append(Err(e)) => Err(self.remote(e)),
            other => Err(self.unexpected(&other)),
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
