//! Argument checks shared by every backend. Each backend calls these first, before any work, so a
//! rejected call changes nothing.

use std::fmt::Write as _;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::types::{Capabilities, Condition, ListOptions};

/// Longest key, in UTF-8 bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Default value size limit of a store: 1 MiB.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 1 << 20;
/// Longest TTL: 100 years of 365.25 days.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 31_557_600);
/// Every version a store hands out is below this: 2⁵³, the largest integer a JSON number holds
/// exactly in every client (JavaScript's `Number`), so a version read from a JSON body can be
/// sent back unchanged.
pub const VERSION_LIMIT: u64 = 1 << 53;
/// Page size when the caller gives none (or 0).
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Largest page; larger requests are clamped to it.
pub const MAX_LIST_LIMIT: usize = 1000;

/// Checks a key: 1..=1024 UTF-8 bytes without NUL.
pub fn key(key: &str) -> Result<()> {
    key_within(key, MAX_KEY_LEN)
}

fn key_within(key: &str, max_len: usize) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("key: must not be empty"));
    }
    if key.len() > max_len {
        return Err(Error::invalid(format!(
            "key {}: {} bytes, limit {max_len}",
            quote(key),
            key.len()
        )));
    }
    if let Some(at) = key.find('\0') {
        return Err(Error::invalid(format!(
            "key {}: contains NUL at byte {at}",
            quote(key)
        )));
    }
    Ok(())
}

/// Checks a key a store with `caps` is asked to write: [`key`], then the store's own limits in
/// bytes and characters.
pub fn key_for(caps: &Capabilities, k: &str) -> Result<()> {
    key_within(k, caps.max_key_len.min(MAX_KEY_LEN))?;
    if let Some(limit) = caps.max_key_chars {
        let chars = k.chars().count();
        if chars > limit {
            return Err(Error::invalid(format!(
                "key {}: {chars} characters, limit {limit}",
                quote(k)
            )));
        }
    }
    Ok(())
}

/// Checks a value's size against the store's limit ("value too large: N bytes, limit M").
pub fn value(len: usize, max_value_size: usize) -> Result<()> {
    if len > max_value_size {
        return Err(Error::value_too_large(len, max_value_size));
    }
    Ok(())
}

/// Checks a TTL and converts it to whole milliseconds, rounding up (a key never expires before
/// its TTL has passed): `None` and zero mean no expiry, 1 ns is 1 ms, 1.5 ms is 2 ms, and over
/// [`MAX_TTL`] is `Invalid`.
pub fn ttl(ttl: Option<Duration>) -> Result<Option<u64>> {
    let Some(ttl) = ttl.filter(|t| !t.is_zero()) else {
        return Ok(None);
    };
    if ttl > MAX_TTL {
        return Err(Error::invalid(format!(
            "ttl {ttl:?}: longer than the limit of 100 years"
        )));
    }
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    // MAX_TTL in milliseconds fits comfortably in u64.
    Ok(Some(u64::try_from(ms).unwrap_or(u64::MAX)))
}

/// The absolute deadline (epoch ms) of a TTL of `ttl_ms` starting at `now_ms`.
pub fn deadline(now_ms: u64, ttl_ms: Option<u64>) -> Option<u64> {
    ttl_ms.map(|t| now_ms.saturating_add(t))
}

/// Whether a value with `deadline` (epoch ms) is live at `now_ms`: expired when `now >= deadline`.
pub fn is_live(deadline: Option<u64>, now_ms: u64) -> bool {
    deadline.is_none_or(|d| now_ms < d)
}

/// Checks that a store with `caps` can honour `condition`: `IfVersion(0)` is `Invalid`;
/// `IfAbsent` needs `conditional_put`; `IfVersion` needs it and `versioned`.
pub fn condition(caps: &Capabilities, condition: Condition) -> Result<()> {
    match condition {
        Condition::Always => Ok(()),
        Condition::IfVersion(0) => Err(Error::invalid(
            "condition IfVersion(0): versions start at 1; 0 means unversioned",
        )),
        Condition::IfAbsent if !caps.conditional_put => Err(Error::unsupported(
            "condition IfAbsent: this store does not offer conditional puts",
        )),
        Condition::IfVersion(v) if !(caps.conditional_put && caps.versioned) => {
            Err(Error::unsupported(format!(
                "condition IfVersion({v}): this store does not keep versions"
            )))
        }
        Condition::IfAbsent | Condition::IfVersion(_) => Ok(()),
    }
}

/// Checks every argument of a `put`/`set` against the store's capabilities and returns its TTL
/// in milliseconds.
pub fn put(
    caps: &Capabilities,
    k: &str,
    value_len: usize,
    ttl_arg: Option<Duration>,
    cond: Condition,
) -> Result<Option<u64>> {
    key_for(caps, k)?;
    value(value_len, caps.max_value_size)?;
    let ttl_ms = ttl(ttl_arg)?;
    condition(caps, cond)?;
    Ok(ttl_ms)
}

/// Checks list options and returns the effective page size.
///
/// `prefix` and `after` follow the key rules except that they may be empty (`after: ""` bounds
/// nothing, since every key is greater than the empty string).
pub fn list(options: &ListOptions) -> Result<usize> {
    bound("prefix", &options.prefix)?;
    if let Some(after) = &options.after {
        bound("after", after)?;
    }
    Ok(match options.limit {
        None | Some(0) => DEFAULT_LIST_LIMIT,
        Some(n) => n.min(MAX_LIST_LIMIT),
    })
}

/// The first key a list may return is `>= start` where `start` is the larger of `prefix` and
/// `after`; whether `start` itself is excluded depends on which one it was.
/// Returns `(start, exclusive)`.
pub fn list_start<'a>(prefix: &'a str, after: Option<&'a str>) -> (&'a str, bool) {
    match after {
        Some(a) if a >= prefix => (a, true),
        _ => (prefix, false),
    }
}

fn bound(field: &str, s: &str) -> Result<()> {
    if s.len() > MAX_KEY_LEN {
        return Err(Error::invalid(format!(
            "{field} {}: {} bytes, limit {MAX_KEY_LEN}",
            quote(s),
            s.len()
        )));
    }
    if s.contains('\0') {
        return Err(Error::invalid(format!(
            "{field} {}: contains NUL",
            quote(s)
        )));
    }
    Ok(())
}

/// Checks the namespace of a replicated store's entry: `^[a-z][a-z0-9._-]*$`, at most 64
/// bytes (names starting with `_` are reserved for engines).
///
/// # Errors
/// `Invalid`, naming the field `namespace`.
pub fn namespace(namespace: &str) -> Result<()> {
    let mut chars = namespace.chars();
    let ok = namespace.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "namespace {}: must match ^[a-z][a-z0-9._-]*$ (at most 64 bytes)",
            quote(namespace)
        ))
        .with_field("namespace"))
    }
}

/// A key for an error message: debug-quoted and cut after 64 characters.
pub fn quote(s: &str) -> String {
    const SHOWN: usize = 64;
    let mut out = String::new();
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(SHOWN).collect();
    let _ = write!(out, "{head:?}");
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn keys() {
        assert!(key("a").is_ok());
        assert!(key(&"k".repeat(1024)).is_ok());
        assert!(key("ключ🔑").is_ok());
        let e = key(&"k".repeat(1025)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert!(e.message().contains("1025 bytes"), "{e}");
        assert!(e.message().contains('…'), "long keys are cut: {e}");
        assert_eq!(key("").unwrap_err().kind(), ErrorKind::Invalid);
        assert!(key("a\0b").unwrap_err().message().contains("NUL at byte 1"));
    }

    #[test]
    fn ttls() {
        assert_eq!(ttl(None).unwrap(), None);
        assert_eq!(ttl(Some(Duration::ZERO)).unwrap(), None);
        assert_eq!(ttl(Some(Duration::from_nanos(1))).unwrap(), Some(1));
        assert_eq!(ttl(Some(Duration::from_micros(1500))).unwrap(), Some(2));
        assert_eq!(ttl(Some(Duration::from_millis(7))).unwrap(), Some(7));
        assert_eq!(ttl(Some(MAX_TTL)).unwrap(), Some(3_155_760_000_000));
        let e = ttl(Some(MAX_TTL + Duration::from_millis(1))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert!(e.message().starts_with("ttl "), "{e}");
    }

    #[test]
    fn liveness_boundary() {
        assert!(is_live(None, u64::MAX));
        assert!(is_live(Some(10), 9));
        assert!(!is_live(Some(10), 10));
    }

    #[test]
    fn conditions() {
        let all = Capabilities::new();
        let none = all.conditional_put(false).versioned(false);
        assert!(condition(&none, Condition::Always).is_ok());
        let kind = |caps: &Capabilities, c| condition(caps, c).unwrap_err().kind();
        assert_eq!(kind(&all, Condition::IfVersion(0)), ErrorKind::Invalid);
        assert_eq!(
            kind(&all.conditional_put(false), Condition::IfAbsent),
            ErrorKind::Unsupported
        );
        assert_eq!(
            kind(&all.versioned(false), Condition::IfVersion(3)),
            ErrorKind::Unsupported
        );
        assert!(condition(&all, Condition::IfVersion(3)).is_ok());
    }

    #[test]
    fn a_store_limits_keys_and_values_by_its_capabilities() {
        let caps = Capabilities::new()
            .max_key_len(8)
            .max_key_chars(Some(3))
            .max_value_size(2);
        assert!(put(&caps, "abc", 2, None, Condition::Always).is_ok());
        let e = put(&caps, "abcd", 0, None, Condition::Always).unwrap_err();
        assert!(e.message().contains("4 characters, limit 3"), "{e}");
        let e = put(&caps, "ééééé", 0, None, Condition::Always).unwrap_err();
        assert!(e.message().contains("10 bytes, limit 8"), "{e}");
        let e = put(&caps, "a", 3, None, Condition::Always).unwrap_err();
        assert_eq!(e.too_large().map(|t| t.limit), Some(2));
        // A key within the store's limits still follows the family's rules.
        assert!(put(&caps, "a\0", 0, None, Condition::Always).is_err());
        assert_eq!(
            Capabilities::new().max_key_len(5000).max_key_len,
            MAX_KEY_LEN
        );
    }

    #[test]
    fn list_limits_and_start() {
        assert_eq!(list(&ListOptions::new()).unwrap(), 100);
        assert_eq!(list(&ListOptions::new().limit(0)).unwrap(), 100);
        assert_eq!(list(&ListOptions::new().limit(5000)).unwrap(), 1000);
        assert_eq!(list(&ListOptions::new().after("")).unwrap(), 100);
        let e = list(&ListOptions::new().prefix("a\0")).unwrap_err();
        assert!(e.message().starts_with("prefix "), "{e}");
        assert_eq!(list_start("b", Some("a")), ("b", false));
        assert_eq!(list_start("b", Some("bc")), ("bc", true));
        assert_eq!(list_start("", None), ("", false));
    }
}
