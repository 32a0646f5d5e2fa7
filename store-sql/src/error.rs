//! The one place each driver's errors become [`store_core::Error`] kinds.

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use store_core::Error;

/// Maps a rusqlite error: busy/locked/full/unopenable → `Unavailable` (retryable); a table or
/// column that does not exist, or a constraint the data breaks → `Invalid`; anything else is a
/// bug or corruption → `Internal`.
#[cfg(feature = "sqlite")]
pub(crate) fn sqlite(context: &str, e: rusqlite::Error) -> Error {
    map_sqlite(context, e, false)
}

/// [`sqlite`] for a statement that writes. A write that failed for want of space (or of the
/// lock) was rolled back: `Unavailable`, known not applied. After any other I/O error SQLite may
/// have written part of a commit that a later recovery replays, so the write is indeterminate
/// (`Timeout`).
#[cfg(feature = "sqlite")]
pub(crate) fn sqlite_write(context: &str, e: rusqlite::Error) -> Error {
    map_sqlite(context, e, true)
}

#[cfg(feature = "sqlite")]
fn map_sqlite(context: &str, e: rusqlite::Error, write: bool) -> Error {
    use rusqlite::ErrorCode as C;
    let message = format!("{context}: {e}");
    let mapped = match &e {
        rusqlite::Error::SqliteFailure(f, detail) => match f.code {
            C::DatabaseBusy | C::DatabaseLocked => Error::unavailable(message),
            C::DiskFull if write => Error::unavailable(format!("{message} (write not applied)")),
            C::DiskFull => Error::unavailable(message),
            C::SystemIoFailure if write => {
                Error::write_timeout(format!("{message} (the write may or may not be applied)"))
            }
            C::CannotOpen | C::SystemIoFailure | C::ReadOnly => Error::unavailable(message),
            C::TooBig | C::ConstraintViolation => Error::invalid(message),
            C::PermissionDenied | C::AuthorizationForStatementDenied => {
                Error::permission_denied(message)
            }
            _ if detail
                .as_deref()
                .is_some_and(|d| d.contains("no such table") || d.contains("no such column")) =>
            {
                Error::invalid(format!(
                    "{message} (create the table, or set create_table: true)"
                ))
            }
            _ => Error::internal(message),
        },
        // Not SQLite's error but the driver's, reading what a statement returned: the
        // statement ran to its end, so a write committed.
        _ if write => {
            Error::internal(format!("{message} (the write may be applied)")).indeterminate()
        }
        _ => Error::internal(message),
    };
    mapped.with_source(e)
}

/// Maps a tokio-postgres error by SQLSTATE: connection trouble → `Unavailable`; a value too long
/// for its column, a missing table or column → `Invalid`; failed authentication →
/// `PermissionDenied`; a cancelled statement → `Timeout`; anything else → `Internal`.
#[cfg(feature = "postgres")]
pub(crate) fn postgres(context: &str, e: tokio_postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else {
        // No server answer: the connection is gone or never came up. The driver's message
        // leaves out its causes ("error performing TLS handshake"); the reader needs them.
        let mut message = format!("{context}: database unreachable: {e}");
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let text = c.to_string();
            if !message.ends_with(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            cause = c.source();
        }
        return Error::unavailable(message).with_source(e);
    };
    let code = db.code().code();
    let message = format!("{context}: {} (SQLSTATE {code})", db.message());
    let mapped = match code {
        "22001" => Error::invalid(format!("{message}: value too long for its column")),
        "42P01" | "42703" => Error::invalid(format!(
            "{message} (create the table, or set create_table: true)"
        )),
        "3D000" => Error::invalid(message),
        "57014" => Error::timeout(message),
        c if c.starts_with("08") || c.starts_with("57P") || c.starts_with("53") => {
            Error::unavailable(message)
        }
        "40001" | "40P01" => Error::unavailable(message),
        c if c.starts_with("28") => Error::permission_denied(message),
        _ => Error::internal(message),
    };
    mapped.with_source(e)
}
