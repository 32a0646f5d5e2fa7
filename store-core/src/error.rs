//! The one error type of the store family.

use std::fmt;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in terms a caller can act on. Callers match on this, never on messages.
///
/// | kind | retryable | when |
/// |---|---|---|
/// | `NotFound` | no | `IfVersion` on an absent key; unknown store id |
/// | `AlreadyExists` | no | `IfAbsent` on a live key; duplicate id |
/// | `Conflict` | yes | `IfVersion` mismatch |
/// | `Invalid` | no | bad key, value, TTL, options, config |
/// | `Unsupported` | no | a condition or operation the store does not offer |
/// | `Unavailable` | yes | store full, no quorum, database unreachable |
/// | `Timeout` | yes | deadline passed; a write's outcome is unknown |
/// | `PermissionDenied` | no | failed authentication |
/// | `Closed` | no | the store or node was shut down |
/// | `Internal` | no | a bug or corrupted state |
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The key (or store id) the operation needs does not exist.
    NotFound,
    /// The key (or id) exists and the operation required it not to.
    AlreadyExists,
    /// The key's version is not the one the operation expected.
    Conflict,
    /// The caller's input is malformed: key, value, TTL, options or configuration.
    Invalid,
    /// The store does not offer this condition or operation.
    Unsupported,
    /// The store cannot serve the request right now.
    Unavailable,
    /// A deadline passed before the operation completed.
    Timeout,
    /// The caller failed authentication.
    PermissionDenied,
    /// The store has been shut down.
    Closed,
    /// A bug or corrupted state; never a user mistake.
    Internal,
}

impl ErrorKind {
    /// Every kind, in the order of the table above.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Conflict,
        ErrorKind::Invalid,
        ErrorKind::Unsupported,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::PermissionDenied,
        ErrorKind::Closed,
        ErrorKind::Internal,
    ];

    /// Whether an error of this kind is worth retrying unchanged.
    pub const fn default_retryable(self) -> bool {
        matches!(self, Self::Conflict | Self::Unavailable | Self::Timeout)
    }

    /// The kind's name, as used in messages and the HTTP API (`NotFound`, `Conflict`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "NotFound",
            Self::AlreadyExists => "AlreadyExists",
            Self::Conflict => "Conflict",
            Self::Invalid => "Invalid",
            Self::Unsupported => "Unsupported",
            Self::Unavailable => "Unavailable",
            Self::Timeout => "Timeout",
            Self::PermissionDenied => "PermissionDenied",
            Self::Closed => "Closed",
            Self::Internal => "Internal",
        }
    }

    /// The kind named `name` ([`ErrorKind::as_str`] read back), as clients of the HTTP API
    /// receive it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value exceeded its size limit. Carried by [`Error::value_too_large`] so that front ends can
/// answer with a dedicated status (HTTP 413) without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    /// Size of the rejected value in bytes.
    pub size: usize,
    /// The store's limit in bytes.
    pub limit: usize,
}

/// The error of every store operation: a kind, a message, a retry flag and an optional source.
///
/// No backend's own error type appears in the public API; each backend maps its driver's errors
/// into an [`ErrorKind`] and keeps the original as the [`source`](std::error::Error::source).
///
/// Cloning keeps everything, the source included (it is shared), so one failure can answer
/// several callers (a group commit's) without losing its flags.
#[derive(Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    retryable: bool,
    indeterminate: bool,
    too_large: Option<TooLarge>,
    field: Option<String>,
    #[source]
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind)
            .field("message", &self.message)
            .field("retryable", &self.retryable);
        if self.indeterminate {
            d.field("indeterminate", &true);
        }
        if let Some(field) = &self.field {
            d.field("field", field);
        }
        if let Some(source) = &self.source {
            d.field("source", &format_args!("{source}"));
        }
        d.finish()
    }
}

impl Error {
    /// An error of `kind`; `retryable` follows the kind's default.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retryable: kind.default_retryable(),
            indeterminate: false,
            too_large: None,
            field: None,
            source: None,
        }
    }

    /// [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// [`ErrorKind::AlreadyExists`].
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }

    /// [`ErrorKind::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// [`ErrorKind::Invalid`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    /// [`ErrorKind::Unsupported`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// [`ErrorKind::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// [`ErrorKind::Timeout`] for an operation whose outcome is known not to have taken effect
    /// (a read, or a write that was never sent). See [`Error::write_timeout`] for the other case.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    /// [`ErrorKind::Timeout`] for a write that may or may not have been applied.
    pub fn write_timeout(message: impl Into<String>) -> Self {
        let mut e = Self::new(ErrorKind::Timeout, message);
        e.indeterminate = true;
        e
    }

    /// [`ErrorKind::PermissionDenied`].
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message)
    }

    /// [`ErrorKind::Closed`].
    pub fn closed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Closed, message)
    }

    /// [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// [`ErrorKind::Invalid`]: "value too large: N bytes, limit M", with [`Error::too_large`] set.
    pub fn value_too_large(size: usize, limit: usize) -> Self {
        let mut e = Self::invalid(format!("value too large: {size} bytes, limit {limit}"));
        e.too_large = Some(TooLarge { size, limit });
        e
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(std::sync::Arc::new(source));
        self
    }

    /// Overrides the kind's default retry flag.
    #[must_use]
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Marks a write whose outcome is unknown (the request may have been applied before the
    /// connection failed). [`Error::write_timeout`] sets this too.
    #[must_use]
    pub fn indeterminate(mut self) -> Self {
        self.indeterminate = true;
        self
    }

    /// Names the configuration field (or argument) to blame, as data: a loader reports it without
    /// reading the message. The message is unchanged.
    #[must_use]
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Prefixes the message with context (`"{context}: {message}"`), keeping kind and flags.
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// What went wrong, for matching.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether retrying the same operation unchanged may succeed.
    pub fn retryable(&self) -> bool {
        self.retryable
    }

    /// True when a write's outcome is unknown: it may or may not have been applied.
    pub fn is_indeterminate(&self) -> bool {
        self.indeterminate
    }

    /// Set when a value exceeded its store's size limit.
    pub fn too_large(&self) -> Option<TooLarge> {
        self.too_large
    }

    /// The configuration field (or argument) to blame, when one was named with
    /// [`Error::with_field`].
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_follows_the_kind() {
        assert!(Error::conflict("x").retryable());
        assert!(Error::unavailable("x").retryable());
        assert!(Error::timeout("x").retryable());
        assert!(!Error::invalid("x").retryable());
        assert!(!Error::not_found("x").retryable());
        assert!(!Error::internal("x").with_retryable(false).retryable());
    }

    #[test]
    fn only_write_timeouts_are_indeterminate() {
        assert!(!Error::timeout("read").is_indeterminate());
        assert!(Error::write_timeout("write").is_indeterminate());
        assert_eq!(Error::write_timeout("w").kind(), ErrorKind::Timeout);
        let lost = Error::unavailable("connection lost mid-write").indeterminate();
        assert!(lost.is_indeterminate() && lost.retryable());
    }

    #[test]
    fn display_has_kind_and_message_and_source_is_kept() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::unavailable("database unreachable").with_source(io);
        assert_eq!(e.to_string(), "Unavailable: database unreachable");
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("disk on fire"));
    }

    #[test]
    fn a_clone_keeps_kind_flags_and_source() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::write_timeout("lost")
            .with_retryable(false)
            .with_source(io);
        let c = e.clone();
        assert_eq!(
            (c.kind(), c.message(), c.retryable(), c.is_indeterminate()),
            (e.kind(), e.message(), e.retryable(), e.is_indeterminate())
        );
        let source = std::error::Error::source(&c).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("disk on fire"));
        let big = Error::value_too_large(11, 10);
        assert_eq!(big.clone().too_large(), big.too_large());
    }

    #[test]
    fn kinds_read_back_from_their_names_and_fields_are_data() {
        for kind in [
            ErrorKind::NotFound,
            ErrorKind::PermissionDenied,
            ErrorKind::Internal,
        ] {
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ErrorKind::parse("notfound"), None);
        let e = Error::invalid("must be positive").with_field("max_size");
        assert_eq!(
            (e.field(), e.message()),
            (Some("max_size"), "must be positive")
        );
        assert_eq!(e.clone().field(), Some("max_size"));
    }

    #[test]
    fn value_too_large_is_invalid_and_carries_sizes() {
        let e = Error::value_too_large(11, 10);
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert_eq!(e.message(), "value too large: 11 bytes, limit 10");
        assert_eq!(
            e.too_large(),
            Some(TooLarge {
                size: 11,
                limit: 10
            })
        );
    }
}
