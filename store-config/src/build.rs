//! What a kind's builder gets ([`Ctx`]) and hands back ([`Built`]), with no backend named: the
//! registry drives these, and `kinds.rs` fills them in per backend.

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_norway::{Mapping, Value};
use store_core::{ErrorKind, Lifecycle, SharedStore, Store};

use crate::context::NodeContext;
use crate::error::ConfigError;
use crate::source::Source;

/// How a kind is built.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only SQL databases are resource entries yet")
)]
pub(crate) enum Build {
    /// A resource entry (a database) that store entries reference by id.
    Resource(fn(&Ctx<'_>) -> Result<Built, ConfigError>),
    /// A store entry.
    Store(fn(&Ctx<'_>) -> Result<Built, ConfigError>),
    /// Known, but not part of this build; the reason says why.
    #[cfg_attr(
        all(
            feature = "memory",
            feature = "sqlite",
            feature = "postgres",
            feature = "raft",
            feature = "crdt"
        ),
        allow(dead_code, reason = "every kind is part of a build with every feature")
    )]
    Unavailable(&'static str),
}

/// A kind: its name, its fields (besides `name`, `kind`, `meta`, `lifecycle`), which of them
/// must be given, its builder.
pub(crate) struct Kind {
    pub(crate) name: &'static str,
    pub(crate) fields: &'static [&'static str],
    pub(crate) required: &'static [&'static str],
    pub(crate) build: Build,
}

/// A resource as stores find it: downcast to the backend's own handle type.
pub(crate) type Shared = Arc<dyn Any + Send + Sync>;

/// What a builder made.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only SQL databases are resource entries yet")
)]
pub(crate) enum Item {
    /// A store, served under the entry's id.
    Store(SharedStore),
    /// A resource stores reference.
    Resource(Shared),
}

/// An entry's effective settings: its backend's config with every default applied, read back
/// by type ([`Entry::settings`](crate::Entry::settings)).
pub(crate) trait Settings: Any + Debug + Send + Sync {
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any + Debug + Send + Sync> Settings for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A built entry: the item, how to start and stop it, and its effective settings.
pub(crate) struct Built {
    pub(crate) item: Item,
    pub(crate) lifecycle: Arc<dyn Lifecycle>,
    pub(crate) settings: Box<dyn Settings>,
}

#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only SQL databases are resource entries yet")
)]
impl Built {
    /// A store entry.
    pub(crate) fn store<T: Store + Lifecycle>(store: T, settings: impl Settings) -> Self {
        let store = Arc::new(store);
        Self {
            item: Item::Store(store.clone()),
            lifecycle: store,
            settings: Box::new(settings),
        }
    }

    /// A resource entry; stores find it with [`Ctx::resource`].
    pub(crate) fn resource<T: Lifecycle + Any>(resource: T, settings: impl Settings) -> Self {
        let resource = Arc::new(resource);
        Self {
            item: Item::Resource(resource.clone()),
            lifecycle: resource,
            settings: Box::new(settings),
        }
    }
}

/// What a reference to another entry resolved to.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only SQL databases are resource entries yet")
)]
pub(crate) enum Reference<'a> {
    /// A resource entry.
    Resource(String, &'a Shared),
    /// An entry of another kind.
    OtherKind(String, &'static str),
    /// A resource entry that has errors of its own.
    Broken(String),
    /// Nothing with that id; the closest existing id, if one is close.
    Missing(String, Option<String>),
}

/// What a builder gets: the entry's fields, where they came from, and the node it runs in.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only SQL databases are resource entries yet")
)]
pub(crate) struct Ctx<'a> {
    pub(crate) id: &'a str,
    pub(crate) index: usize,
    pub(crate) source: &'a Source,
    pub(crate) fields: &'a Mapping,
    pub(crate) required: &'static [&'static str],
    pub(crate) node: &'a NodeContext,
    pub(crate) resolve: &'a dyn Fn(&str) -> Reference<'a>,
}

#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only SQL databases are resource entries yet")
)]
impl Ctx<'_> {
    pub(crate) fn error(&self, field: Option<&str>, message: impl Into<String>) -> ConfigError {
        self.error_of(ErrorKind::Invalid, field, message)
    }

    pub(crate) fn error_of(
        &self,
        kind: ErrorKind,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> ConfigError {
        let mut e = ConfigError::new(kind, &self.source.path, message).entry(self.id);
        match field {
            Some(f) => {
                e = e.field(f);
                e.at(self
                    .source
                    .field_position(self.index, f)
                    .or_else(|| self.source.entry_position(self.index)))
            }
            None => e.at(self.source.entry_position(self.index)),
        }
    }

    /// Deserializes the entry's fields into a backend config; the error names the field.
    pub(crate) fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        if let Some(missing) = self
            .required
            .iter()
            .find(|f| !self.fields.contains_key(Value::String((**f).to_owned())))
        {
            return Err(self.error(Some(missing), format!("missing field `{missing}`")));
        }
        let value = Value::Mapping(self.fields.clone());
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let field = (path != ".").then(|| path.split('.').next().unwrap_or(&path).to_owned());
            self.error(field.as_deref(), inner)
        })
    }

    /// An error from a backend's own checks, blamed on the field it names
    /// ([`store_core::Error::with_field`]).
    pub(crate) fn backend_error(&self, e: &store_core::Error) -> ConfigError {
        self.error_of(e.kind(), e.field(), e.message())
    }

    /// The resource entry that field `field` references, as a `T`; `wanted` names the kinds
    /// that fit, for the error. A reference without a namespace means the entry's own.
    pub(crate) fn resource<T: Any + Send + Sync>(
        &self,
        field: &str,
        reference: &str,
        wanted: &str,
    ) -> Result<(String, &T), ConfigError> {
        if reference.is_empty() {
            return Err(self.error(
                Some(field),
                format!("missing: give the id of a {wanted} entry"),
            ));
        }
        match (self.resolve)(reference) {
            Reference::Resource(id, shared) => match shared.downcast_ref::<T>() {
                Some(resource) => Ok((id, resource)),
                None => Err(self.error(Some(field), format!("`{id}` is not a {wanted} entry"))),
            },
            Reference::OtherKind(id, kind) => Err(self.error(
                Some(field),
                format!("`{id}` is a {kind} entry; expected {wanted}"),
            )),
            Reference::Broken(id) => Err(self.error(
                Some(field),
                format!("`{id}` could not be built (its own errors are listed too)"),
            )),
            Reference::Missing(id, closest) => {
                let hint = closest
                    .map(|c| format!(", did you mean `{c}`?"))
                    .unwrap_or_default();
                Err(self.error_of(
                    ErrorKind::NotFound,
                    Some(field),
                    format!("no entry `{id}` (dangling reference){hint}"),
                ))
            }
        }
    }
}
