//! [`Lifecycle`]: how a registry starts, stops and closes what it built.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;

/// The background work and resources of a store or of something stores share (a database, a
/// replication engine), driven by whoever built it: a registry starts shared resources before
/// the stores that use them and stops them after.
///
/// Every method is idempotent and does nothing by default, so a backend implements only what it
/// has. What `close` ends is the backend's to say: a database's stores answer `Closed` after it,
/// while an in-memory store only stops its timer and keeps serving.
///
/// ```
/// use store_core::Lifecycle;
///
/// #[derive(Debug)]
/// struct Nothing;
/// impl Lifecycle for Nothing {}
///
/// # tokio_test_block_on(async {
/// Nothing.start().await.unwrap();
/// Nothing.stop().await;
/// Nothing.close().await;
/// # });
/// # fn tokio_test_block_on(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[async_trait]
pub trait Lifecycle: Send + Sync + 'static {
    /// Starts background work (timers, connections, replication). Fails `Unavailable` when a
    /// resource it needs cannot be reached.
    async fn start(&self) -> Result<()> {
        Ok(())
    }

    /// Stops background work; the store keeps answering requests.
    async fn stop(&self) {}

    /// Releases what the value holds (connections, files, timers).
    async fn close(&self) {}
}

#[async_trait]
impl<L: Lifecycle + ?Sized> Lifecycle for Arc<L> {
    async fn start(&self) -> Result<()> {
        (**self).start().await
    }

    async fn stop(&self) {
        (**self).stop().await;
    }

    async fn close(&self) {
        (**self).close().await;
    }
}
