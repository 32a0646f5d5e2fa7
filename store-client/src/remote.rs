//! [`RemoteStore`]: one store of a node, behind the [`Store`] trait.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use store_core::backend::validate;
use store_core::{Entry, ErrorKind, ListOptions, Page, PutOptions, Result, Store, StoreInfo};

use crate::Client;

/// One store of a node, used through the [`Store`] trait over HTTP.
///
/// [`Client::store`] checks that the node has the store and keeps its info, so a `404` for a key
/// afterwards means the key is absent. Arguments are checked by the node, with the same rules
/// and messages as a local store; only a value over the store's `max_value_size` is refused here
/// (the node would refuse it unread). [`Store::usage`] is `None`: the data is not in this process
/// (the node reports it in [`Client::describe`]).
#[derive(Debug, Clone)]
pub struct RemoteStore {
    client: Client,
    id: String,
    info: StoreInfo,
}

impl RemoteStore {
    /// Checks that the node has store `id` and keeps its info.
    pub async fn connect(client: Client, id: &str) -> Result<Self> {
        let described = client.describe(id).await?;
        Ok(Self {
            client,
            id: id.to_owned(),
            info: described.info,
        })
    }

    /// The client this store talks through.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

#[async_trait]
impl Store for RemoteStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.entry(key).await?.map(|e| e.value))
    }

    async fn entry(&self, key: &str) -> Result<Option<Entry>> {
        match self.client.entry(&self.id, key).await {
            Ok(entry) => Ok(Some(entry)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn has(&self, key: &str) -> Result<bool> {
        self.client.has(&self.id, key).await
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        self.put(key, value, PutOptions::new().with_ttl(ttl))
            .await
            .map(drop)
    }

    async fn put(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Entry> {
        // A body over the store's limit is refused by the node before it reads it, and the
        // connection closes under the rest: say so here, as the node would, without sending it.
        validate::value(value.len(), self.info.capabilities.max_value_size)?;
        self.client.put(&self.id, key, value, options).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.client.delete(&self.id, key).await
    }

    async fn list(&self, options: ListOptions) -> Result<Page> {
        self.client.list(&self.id, &options).await
    }

    fn info(&self) -> StoreInfo {
        self.info.clone()
    }
}
