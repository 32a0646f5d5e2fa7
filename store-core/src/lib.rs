//! The contract of the store family: the [`Store`] trait, its types, the one [`Error`], the
//! [`Lifecycle`] a registry drives, and the injectable [`Clock`].
//!
//! Backends (`store-memory`, `store-sql`, …) implement [`Store`] and [`Lifecycle`]; users call
//! [`Store`], plus the helpers of [`StoreExt`], through a concrete store or a [`SharedStore`]
//! (`Arc<dyn Store>`). What a store can do and the limits of its arguments are in its
//! [`StoreInfo`]'s [`Capabilities`]. Helpers meant only for backend authors (argument checks,
//! the background timer) live in [`backend`].
//!
//! ```
//! use std::time::Duration;
//! use store_core::backend::validate;
//! use store_core::{Capabilities, Condition, ErrorKind, ManualClock, PutOptions};
//!
//! // Every backend checks arguments with the same functions, against its own capabilities,
//! // before doing any work.
//! let caps = Capabilities::new().max_value_size(4);
//! let e = validate::put(&caps, "k", 5, None, Condition::Always).unwrap_err();
//! assert_eq!(e.kind(), ErrorKind::Invalid);
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
mod lifecycle;
mod store;
mod types;

pub use bytes::Bytes;
pub use clock::{
    Clock, ManualClock, SharedClock, SystemClock, from_millis, system_clock, to_millis,
};
pub use duration::{HumanDuration, format_duration, parse_duration};
pub use error::{Error, ErrorKind, Result, TooLarge};
pub use ext::StoreExt;
pub use lifecycle::Lifecycle;
pub use store::{SharedStore, Store};
pub use types::{
    Backend, Capabilities, Condition, Consistency, Entry, ListOptions, Page, PutOptions, StoreInfo,
    Usage,
};
