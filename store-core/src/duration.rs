//! Duration strings as configuration writes them: `500ms`, `30s`, `5m`, `1h30m` (units `ns`,
//! `us`, `ms`, `s`, `m`, `h`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

const UNITS: &[(&str, u128)] = &[
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Parses `500ms`, `30s`, `5m`, `1h30m`, `0`… A bare number other than `0` is an error that
/// shows the expected form.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(store_core::parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// assert!(store_core::parse_duration("30").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = |why: &str| {
        Error::invalid(format!(
            "duration {text:?}: {why}; expected a number with a unit (ns, us, ms, s, m, h), \
             like \"500ms\", \"30s\" or \"1h30m\""
        ))
    };
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("missing number"));
        }
        let (number, tail) = rest.split_at(digits);
        let n: u128 = number.parse().map_err(|_| bad("number too large"))?;
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        if unit_len == 0 {
            return Err(bad("missing unit"));
        }
        let (unit, tail) = tail.split_at(unit_len);
        let Some((_, nanos)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(bad(&format!("unknown unit {unit:?}")));
        };
        total = n
            .checked_mul(*nanos)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| bad("too large"))?;
        rest = tail;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad("too large"))?;
    // The remainder is below 10^9, so it fits in u32.
    let nanos = u32::try_from(total % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration so that [`parse_duration`] reads it back exactly (`1h30m`, `250ms`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let mut nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        let n = nanos / size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            nanos -= n * size;
        }
    }
    out
}

/// A [`Duration`] that (de)serializes as a duration string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string like \"500ms\", \"30s\" or \"1h30m\"")
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<Self::Value, E> {
                parse_duration(v)
                    .map(HumanDuration)
                    .map_err(|e| E::custom(e.message()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
                if v == 0 {
                    Ok(HumanDuration(Duration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "duration {v}: a bare number has no unit; write it like \"{v}s\" or \"{v}ms\""
                    )))
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("duration {v}: must not be negative"))),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_compounds() {
        let p = |s| parse_duration(s).unwrap();
        assert_eq!(p("500ms"), Duration::from_millis(500));
        assert_eq!(p("30s"), Duration::from_secs(30));
        assert_eq!(p("5m"), Duration::from_secs(300));
        assert_eq!(p("1h30m"), Duration::from_secs(5400));
        assert_eq!(p("7ns"), Duration::from_nanos(7));
        assert_eq!(p("7us"), Duration::from_micros(7));
        assert_eq!(p("0"), Duration::ZERO);
        assert_eq!(p("0s"), Duration::ZERO);
    }

    #[test]
    fn rejects_with_the_expected_form() {
        for bad in [
            "30",
            "",
            "s",
            "5x",
            "1.5s",
            "-1s",
            "5m3",
            "99999999999999999999999h",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.message().contains("\"30s\""), "{bad}: {e}");
        }
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(1500),
            Duration::from_secs(5400),
            Duration::new(3_725, 250_000_001),
        ] {
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }

    #[test]
    fn serde_reads_strings_and_zero() {
        let d: HumanDuration = serde_json::from_str("\"10m\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(600));
        let z: HumanDuration = serde_json::from_str("0").unwrap();
        assert_eq!(z.0, Duration::ZERO);
        let e = serde_json::from_str::<HumanDuration>("30").unwrap_err();
        assert!(e.to_string().contains("no unit"), "{e}");
    }
}
