//! [`Duration`]: the spec's durations (`500ms`, `15s`, `1.5m`, `1h30m`), kept as written and parsed once.
//!
//! Not `humantime`: it refuses fractions (`1.5m`), which the API has always accepted, and accepts spaces and
//! words (`15 sec`) that the schema refuses.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a duration looks like, in the CRD schema: one or more decimal numbers, each followed by its unit,
/// `ms`, `s`, `m` or `h`. [`Duration`] accepts exactly these strings.
pub const PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// A duration of the spec, such as `500ms`, `15s`, `1.5m` or `1h30m`.
///
/// It reads and writes as the text the user wrote, unchanged (`90s` stays `90s`, never `1.5m`), so stored
/// objects round-trip byte for byte; [`Duration::as_std`] gives its length. Its schema is a string matching
/// [`PATTERN`], and every such string is a `Duration`: the API server and deserialization refuse the same
/// values.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Duration {
    text: Cow<'static, str>,
    std: StdDuration,
}

impl Duration {
    /// A duration written in the source, such as a default; in a `const` a bad text fails the build.
    ///
    /// # Panics
    ///
    /// When `text` does not match [`PATTERN`].
    pub const fn from_static(text: &'static str) -> Self {
        match parse(text) {
            Some(std) => Self {
                text: Cow::Borrowed(text),
                std,
            },
            None => panic!("Duration::from_static: the text does not match duration::PATTERN"),
        }
    }

    /// How long it is, exact to the nanosecond; a length past [`std::time::Duration::MAX`] is that maximum.
    pub fn as_std(&self) -> StdDuration {
        self.std
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A string that does not match [`PATTERN`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidDuration(String);

impl fmt::Display for InvalidDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a duration: numbers each with a unit, ms, s, m or h (`500ms`, `15s`, `1.5m`, `1h30m`)",
            self.0
        )
    }
}

impl std::error::Error for InvalidDuration {}

impl FromStr for Duration {
    type Err = InvalidDuration;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match parse(text) {
            Some(std) => Ok(Self {
                text: Cow::Owned(text.to_owned()),
                std,
            }),
            None => Err(InvalidDuration(text.to_owned())),
        }
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl AsRef<str> for Duration {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match parse(&text) {
            Some(std) => Ok(Self {
                text: Cow::Owned(text),
                std,
            }),
            None => Err(serde::de::Error::custom(InvalidDuration(text))),
        }
    }
}

impl JsonSchema for Duration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": PATTERN})
    }
}

const NANOS_PER_SEC: u128 = 1_000_000_000;
/// Fraction digits beyond this many are below a nanosecond even in hours (3.6e12 ns), and are dropped; the
/// bound keeps `fraction * unit` within `u128`.
const FRACTION_DIGITS: u32 = 18;

/// The length of `text` when it matches [`PATTERN`]. Exact: decimal fractions go through integers, not
/// floating point (`0.3s` is 300 ms, not 299.999…); sub-nanosecond digits are truncated. `const`, so
/// [`Duration::from_static`] checks its text at compile time.
const fn parse(text: &str) -> Option<StdDuration> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    let mut pos = 0;
    let mut nanos: u128 = 0;
    while pos < bytes.len() {
        let start = pos;
        let mut whole: u128 = 0;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            whole = whole
                .saturating_mul(10)
                .saturating_add((bytes[pos] - b'0') as u128);
            pos += 1;
        }
        if pos == start {
            return None;
        }
        let mut fraction: u128 = 0;
        let mut scale: u128 = 1;
        if pos < bytes.len() && bytes[pos] == b'.' {
            pos += 1;
            let start = pos;
            let mut digits = 0;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                if digits < FRACTION_DIGITS {
                    fraction = fraction * 10 + (bytes[pos] - b'0') as u128;
                    scale *= 10;
                    digits += 1;
                }
                pos += 1;
            }
            if pos == start {
                return None;
            }
        }
        // `ms` before `m`: after an `m` read alone, an `s` could not start the next number.
        let (unit, len): (u128, usize) =
            if pos + 1 < bytes.len() && bytes[pos] == b'm' && bytes[pos + 1] == b's' {
                (1_000_000, 2)
            } else if pos < bytes.len() && bytes[pos] == b's' {
                (NANOS_PER_SEC, 1)
            } else if pos < bytes.len() && bytes[pos] == b'm' {
                (60 * NANOS_PER_SEC, 1)
            } else if pos < bytes.len() && bytes[pos] == b'h' {
                (3600 * NANOS_PER_SEC, 1)
            } else {
                return None;
            };
        pos += len;
        nanos = nanos
            .saturating_add(whole.saturating_mul(unit))
            .saturating_add(fraction * unit / scale);
    }
    let secs = nanos / NANOS_PER_SEC;
    if secs > u64::MAX as u128 {
        return Some(StdDuration::MAX);
    }
    Some(StdDuration::new(
        secs as u64,
        (nanos % NANOS_PER_SEC) as u32,
    ))
}

/// Parses a duration of the API (`500ms`, `15s`, `1.5m`, `1h30m`); `None` for text that does not match
/// [`PATTERN`].
pub fn parse_duration(text: &str) -> Option<StdDuration> {
    parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("15s", Some(15.0)),
            ("500ms", Some(0.5)),
            ("1.5m", Some(90.0)),
            ("1h30m", Some(5400.0)),
            ("2m10s", Some(130.0)),
            ("1m1ms", Some(60.001)),
            ("0s", Some(0.0)),
            ("0.25h", Some(900.0)),
            ("007s", Some(7.0)),
            ("", None),
            ("10", None),
            ("5d", None),
            ("s", None),
            ("1.s", None),
            (".5s", None),
            ("1..5s", None),
            (" 15s", None),
            ("15s ", None),
            ("1 m", None),
            ("-1s", None),
            ("1e3s", None),
            ("15sec", None),
            ("1ms5", None),
            ("soon", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_duration(text).map(|d| d.as_secs_f64()),
                want,
                "{text}"
            );
        }
    }

    /// Decimal fractions are exact, and digits below a nanosecond are dropped, not rounded into error.
    #[test]
    fn fractions_are_exact() {
        let nanos = |text: &str| parse_duration(text).map(|d| d.as_nanos());
        assert_eq!(nanos("0.3s"), Some(300_000_000));
        assert_eq!(nanos("0.1m"), Some(6_000_000_000));
        assert_eq!(nanos("1.0000000001s"), Some(1_000_000_000));
        assert_eq!(
            nanos("0.123456789123456789123456789h"),
            Some(444_444_440_844)
        );
    }

    /// Every text the pattern accepts is a duration, however long: past the largest one, it saturates.
    #[test]
    fn huge_values_saturate() {
        assert_eq!(
            parse_duration("99999999999999999999999999999999999999999999h"),
            Some(StdDuration::MAX)
        );
        assert_eq!(
            parse_duration("1h99999999999999999999999999999999999999999999ms"),
            Some(StdDuration::MAX)
        );
    }

    /// The text survives a round trip unchanged, whatever its length is equal to.
    #[test]
    fn text_round_trips_as_written() {
        for text in ["90s", "1.5m", "1m30s", "0.50h", "007s"] {
            let d: Duration = serde_json::from_value(serde_json::json!(text)).expect(text);
            assert_eq!(d.as_str(), text);
            assert_eq!(d.to_string(), text);
            assert_eq!(
                serde_json::to_value(&d).expect(text),
                serde_json::json!(text)
            );
        }
        let a: Duration = "90s".parse().expect("90s");
        let b: Duration = "1.5m".parse().expect("1.5m");
        assert_eq!(a.as_std(), b.as_std());
        assert_ne!(a, b, "two spellings are two values, as stored");
    }

    #[test]
    fn invalid_text_does_not_deserialize() {
        let err = serde_json::from_value::<Duration>(serde_json::json!("soon"))
            .expect_err("soon is no duration");
        assert!(
            err.to_string().contains("\"soon\" is not a duration"),
            "{err}"
        );
        assert!(serde_json::from_value::<Duration>(serde_json::json!(15)).is_err());
        assert!("5d".parse::<Duration>().is_err());
    }

    /// The spec the API server refuses for its interval does not read either.
    #[test]
    fn bad_interval_spec_does_not_read() {
        let text = include_str!("../../../tests/specs/invalid/bad-interval.yaml");
        let err = serde_yaml::from_str::<crate::ModelDeployment>(text)
            .expect_err("interval: soon is refused");
        assert!(err.to_string().contains("is not a duration"), "{err}");
    }

    #[test]
    fn static_durations() {
        const D: Duration = Duration::from_static("1h30m");
        assert_eq!(D.as_std(), StdDuration::from_secs(5400));
        assert_eq!(D.as_str(), "1h30m");
        assert!(std::panic::catch_unwind(|| Duration::from_static("soon")).is_err());
    }

    #[test]
    fn schema_is_the_pattern() {
        let schema = serde_json::to_value(schemars::schema_for!(Duration)).expect("schema");
        assert_eq!(schema["type"], "string");
        assert_eq!(schema["pattern"], PATTERN);
    }
}
