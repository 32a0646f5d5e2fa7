//! The `store.memory` registry fields.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use store_core::{Error, HumanDuration, Result};

/// Default `max_size`: 10 000 live keys.
pub const DEFAULT_MAX_SIZE: usize = 10_000;
/// Default `cleanup_interval`: 5 minutes.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(300);

/// Fields of a `store.memory` entry. Absent fields and zeros take the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Most live keys (default 10 000; 0 means the default; negative is `Invalid`).
    #[serde(default)]
    pub max_size: i64,
    /// How often expired keys are reclaimed (default `5m`; `0` means the default).
    #[serde(default)]
    pub cleanup_interval: Option<HumanDuration>,
    /// Largest value in bytes (default 1 MiB).
    #[serde(default)]
    pub max_value_size: Option<u64>,
    /// Most bytes of keys and values held (default, or `0`: unlimited).
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// [`MemoryConfig`] with defaults applied and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most live keys.
    pub max_size: usize,
    /// How often expired keys are reclaimed.
    pub cleanup_interval: Duration,
    /// Largest value in bytes.
    pub max_value_size: usize,
    /// Most bytes of keys and values held; `None` is unlimited.
    pub max_bytes: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_size: DEFAULT_MAX_SIZE,
            cleanup_interval: DEFAULT_CLEANUP_INTERVAL,
            max_value_size: store_core::backend::validate::DEFAULT_MAX_VALUE_SIZE,
            max_bytes: None,
        }
    }
}

impl MemoryConfig {
    /// Every field a `store.memory` entry may have (for "did you mean" suggestions).
    pub const FIELDS: &'static [&'static str] = &[
        "max_size",
        "cleanup_interval",
        "max_value_size",
        "max_bytes",
    ];

    /// Applies defaults and checks every field; errors name the field and the value.
    pub fn limits(&self) -> Result<Limits> {
        let max_size = match self.max_size {
            0 => DEFAULT_MAX_SIZE,
            n if n < 0 => {
                return Err(Error::invalid(format!(
                    "max_size {n}: must not be negative (0 means the default, {DEFAULT_MAX_SIZE})"
                ))
                .with_field("max_size"));
            }
            n => usize::try_from(n).map_err(|_| {
                Error::invalid(format!("max_size {n}: too large for this platform"))
                    .with_field("max_size")
            })?,
        };
        let cleanup_interval = match self.cleanup_interval {
            None => DEFAULT_CLEANUP_INTERVAL,
            Some(HumanDuration(d)) if d.is_zero() => DEFAULT_CLEANUP_INTERVAL,
            Some(HumanDuration(d)) => d,
        };
        let max_value_size = match self.max_value_size {
            None | Some(0) => store_core::backend::validate::DEFAULT_MAX_VALUE_SIZE,
            Some(n) => usize::try_from(n).map_err(|_| {
                Error::invalid(format!("max_value_size {n}: too large for this platform"))
                    .with_field("max_value_size")
            })?,
        };
        let max_bytes = match self.max_bytes {
            None | Some(0) => None,
            Some(n) => Some(usize::try_from(n).map_err(|_| {
                Error::invalid(format!("max_bytes {n}: too large for this platform"))
                    .with_field("max_bytes")
            })?),
        };
        Ok(Limits {
            max_size,
            cleanup_interval,
            max_value_size,
            max_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store_core::ErrorKind;

    #[test]
    fn defaults_apply_to_absent_and_zero_fields() {
        assert_eq!(MemoryConfig::default().limits().unwrap(), Limits::default());
        let zeros = MemoryConfig {
            max_size: 0,
            cleanup_interval: Some(HumanDuration(Duration::ZERO)),
            max_value_size: Some(0),
            max_bytes: Some(0),
        };
        assert_eq!(zeros.limits().unwrap(), Limits::default());
    }

    #[test]
    fn negative_max_size_is_invalid_and_named() {
        let e = MemoryConfig {
            max_size: -1,
            ..MemoryConfig::default()
        }
        .limits()
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert!(e.message().starts_with("max_size -1"), "{e}");
    }

    #[test]
    fn fields_list_matches_serde() {
        let e = serde_json::from_str::<MemoryConfig>(r#"{"__probe__": 0}"#).unwrap_err();
        for f in MemoryConfig::FIELDS {
            assert!(
                e.to_string().contains(&format!("`{f}`")),
                "{f} missing from {e}"
            );
        }
        assert_eq!(
            e.to_string().matches('`').count() / 2,
            MemoryConfig::FIELDS.len() + 1
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = serde_json::from_str::<MemoryConfig>(r#"{"max_sise": 3}"#).unwrap_err();
        assert!(e.to_string().contains("max_sise"), "{e}");
        let c: MemoryConfig =
            serde_json::from_str(r#"{"max_size": 3, "cleanup_interval": "10s"}"#).unwrap();
        assert_eq!(
            c.limits().unwrap().cleanup_interval,
            Duration::from_secs(10)
        );
    }
}
