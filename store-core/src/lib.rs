//! The contract of the store family: the [`Store`] trait, its types, the one [`Error`], the
//! shared argument checks ([`validate`]) and the injectable [`Clock`].
//!
//! Backends (`store-memory`, `store-sql`, …) implement [`Store`]; users call it, plus the helpers
//! of [`StoreExt`], through a concrete store or a [`SharedStore`] (`Arc<dyn Store>`).
//!
//! ```
//! use std::time::Duration;
//! use store_core::{Condition, ErrorKind, ManualClock, PutOptions, validate};
//!
//! // Every backend checks arguments with the same functions before doing any work.
//! assert_eq!(validate::key("").unwrap_err().kind(), ErrorKind::Invalid);
//! assert_eq!(validate::ttl(Some(Duration::from_micros(10))).unwrap(), Some(1));
//!
//! // Time is injectable: tests move a manual clock instead of sleeping.
//! let clock = ManualClock::at_millis(0);
//! clock.advance(Duration::from_secs(1));
//! assert_eq!(store_core::Clock::now_ms(&clock), 1_000);
//!
//! let options = PutOptions::new().if_absent().ttl(Duration::from_secs(5));
//! assert_eq!(options.condition, Condition::IfAbsent);
//! ```
//!
//! This crate must never do I/O or start a runtime: it is the part every other crate shares.

pub mod backend;
mod clock;
mod duration;
mod error;
mod ext;
#[cfg(feature = "tokio")]
mod periodic;
mod store;
mod types;
pub mod validate;

pub use bytes::Bytes;
pub use clock::{
    Clock, ManualClock, SharedClock, SystemClock, from_millis, system_clock, to_millis,
};
pub use duration::{HumanDuration, format_duration, parse_duration};
pub use error::{Error, ErrorKind, Result, TooLarge};
pub use ext::StoreExt;
#[cfg(feature = "tokio")]
pub use periodic::Periodic;
pub use store::{SharedStore, Store};
pub use types::{
    Backend, Condition, Consistency, Entry, ListOptions, Page, PutOptions, StoreInfo, Usage,
};
