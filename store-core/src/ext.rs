//! Conveniences every store gets for free: typed JSON values and named conditional writes.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::validate::quote;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::types::{Entry, PutOptions};

/// Helpers built on [`Store`]. Call them on any store; never implement this trait (a blanket
/// impl covers every `Store`, `Arc<dyn Store>` included).
///
/// # Behavior
/// - `json_helpers_round_trip`: `set_json`/`put_json` then `get_json` give back the value;
///   `get_json` of bytes that are not the type's JSON is `Invalid`.
#[async_trait]
pub trait StoreExt: Store {
    /// The live value of `key` decoded from JSON; `Invalid` if it is not JSON of type `T`.
    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get(key).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::invalid(format!(
                    "value of key {}: not JSON of type {}: {e}",
                    quote(key),
                    std::any::type_name::<T>()
                ))
            }),
        }
    }

    /// [`Store::set`] with `value` encoded as JSON.
    async fn set_json<T: Serialize + Sync + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let bytes = to_json(key, value)?;
        self.set(key, bytes, ttl).await
    }

    /// [`Store::put`] with `value` encoded as JSON.
    async fn put_json<T: Serialize + Sync + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: PutOptions,
    ) -> Result<Entry> {
        let bytes = to_json(key, value)?;
        self.put(key, bytes, options).await
    }

    /// Creates `key`; `AlreadyExists` if it is live.
    async fn put_if_absent(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<Entry> {
        self.put(key, value, PutOptions::new().with_ttl(ttl).if_absent())
            .await
    }

    /// Replaces `key` only if its live version is `version`: `NotFound` if absent, `Conflict` if
    /// the version differs.
    async fn compare_and_swap(
        &self,
        key: &str,
        version: u64,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<Entry> {
        self.put(
            key,
            value,
            PutOptions::new().with_ttl(ttl).if_version(version),
        )
        .await
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

fn to_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Bytes> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| {
        Error::invalid(format!(
            "value of key {}: cannot encode as JSON: {e}",
            quote(key)
        ))
    })
}
