//! The scalar types config values are deserialized through. Each accepts both
//! the TOML spelling and what the environment layer produces (a string, or an
//! integer when the variable looks like one), and its error says what is allowed.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, IntoDeserializer, Visitor};

const SIZE_HELP: &str =
    "write a number of bytes or a number with a unit, like \"50MiB\", \"50 MiB\", \"5MB\" or \"1.5 GiB\"";
const DURATION_HELP: &str =
    "write a duration like \"10s\", \"2m\" or \"1h 30m\", or a whole number of seconds";

/// A byte count: an integer, or a string such as `"50MiB"` or `"1.5 GiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Size(pub u64);

/// A duration: a humantime string (`"10s"`, `"1h 30m"`) or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seconds(pub Duration);

/// `upload.bandwidth_limit` as written: a byte count (an integer), or text
/// that `validate` reads (a size such as `"20MiB"`, `off`, `pause`, or a
/// timetable; see `timetable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BandwidthText {
    Bytes(u64),
    Text(String),
}

/// A non-negative whole number, also accepted as a string of digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Count(pub u64);

/// The upload token as written. It accepts any scalar and turns it into text,
/// so no type error can ever quote it (`INGESTD_API__TOKEN=12345` is an
/// integer to the environment layer).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SecretText(pub String);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

/// Parses `"50MiB"`, `"50 MiB"`, `"5MB"`, `"1.5 GiB"` or `"1048576"`.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    match trimmed.parse::<bytesize::ByteSize>() {
        // bytesize saturates instead of failing on overflow.
        Ok(size) if size.as_u64() == u64::MAX => Err(format!("{text:?} is too large; {SIZE_HELP}")),
        Ok(size) if !trimmed.is_empty() => Ok(size.as_u64()),
        _ => Err(format!("{text:?} is not a size; {SIZE_HELP}")),
    }
}

/// Formats a byte count so that [`parse_size`] reads it back exactly:
/// the largest binary (then decimal) unit that divides it, else bytes.
pub(crate) fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 10] = [
        (1 << 50, "PiB"),
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
        (1_000_000_000_000_000, "PB"),
        (1_000_000_000_000, "TB"),
        (1_000_000_000, "GB"),
        (1_000_000, "MB"),
        (1_000, "kB"),
    ];
    if bytes == 0 {
        return "0".to_string();
    }
    for (factor, unit) in UNITS {
        if bytes.is_multiple_of(factor) {
            return format!("{} {unit}", bytes / factor);
        }
    }
    format!("{bytes} B")
}

/// Parses `"10s"`, `"2m"`, `"1h 30m"` or `"30"` (seconds).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return trimmed
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("{text:?} is too large; {DURATION_HELP}"));
    }
    humantime::parse_duration(trimmed)
        .map_err(|error| format!("{text:?} is not a duration ({error}); {DURATION_HELP}"))
}

/// Formats a duration so that [`parse_duration`] reads it back: `"10s"`, `"1h 30m"`.
pub(crate) fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

fn negative<E: de::Error>(value: impl fmt::Display, what: &str) -> E {
    E::custom(format!("{value} is negative; {what} must be 0 or more"))
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size (a number of bytes or a string like \"50MiB\")")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| negative(v, "a size"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Size, E> {
                // `as` saturates; the bounds check keeps it exact.
                if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64 {
                    Ok(Size(v as u64))
                } else {
                    Err(E::custom(format!(
                        "{v} is not a whole number of bytes; {SIZE_HELP}"
                    )))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecondsVisitor;
        impl Visitor<'_> for SecondsVisitor {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration (a string like \"10s\" or a number of seconds)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(|secs| Seconds(Duration::from_secs(secs)))
                    .map_err(|_| negative(v, "a duration"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                Duration::try_from_secs_f64(v)
                    .map(Seconds)
                    .map_err(|_| E::custom(format!("{v} is not a duration; {DURATION_HELP}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                parse_duration(v).map(Seconds).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SecondsVisitor)
    }
}

impl<'de> Deserialize<'de> for BandwidthText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BandwidthVisitor;
        impl Visitor<'_> for BandwidthVisitor {
            type Value = BandwidthText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a size per second (a number of bytes or a string like \"20MiB\") or a timetable string",
                )
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<BandwidthText, E> {
                Ok(BandwidthText::Bytes(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<BandwidthText, E> {
                // A size's own checks (and errors) for numbers.
                Size::deserialize(v.into_deserializer()).map(|Size(b)| BandwidthText::Bytes(b))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<BandwidthText, E> {
                Size::deserialize(v.into_deserializer()).map(|Size(b)| BandwidthText::Bytes(b))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BandwidthText, E> {
                Ok(BandwidthText::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(BandwidthVisitor)
    }
}

/// `modify_window`: `"auto"`, or a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window(pub Option<Duration>);

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WindowVisitor;
        impl Visitor<'_> for WindowVisitor {
            type Value = Window;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"auto\" or a duration (a string like \"2s\" or a number of seconds)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Window, E> {
                Ok(Window(Some(Duration::from_secs(v))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Window, E> {
                u64::try_from(v)
                    .map(|secs| Window(Some(Duration::from_secs(secs))))
                    .map_err(|_| negative(v, "a duration"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Window, E> {
                if v.trim() == "auto" {
                    return Ok(Window(None));
                }
                parse_duration(v)
                    .map(|d| Window(Some(d)))
                    .map_err(|e| E::custom(format!("{e}, or \"auto\"")))
            }
        }
        deserializer.deserialize_any(WindowVisitor)
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl Visitor<'_> for CountVisitor {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                u64::try_from(v)
                    .map(Count)
                    .map_err(|_| negative(v, "this number"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Count, E> {
                v.trim()
                    .parse::<u64>()
                    .map(Count)
                    .map_err(|_| E::custom(format!("{v:?} is not a whole number")))
            }
        }
        deserializer.deserialize_any(CountVisitor)
    }
}

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;
        impl Visitor<'_> for SecretVisitor {
            type Value = SecretText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the token as a string")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<SecretText, E> {
                Ok(SecretText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SecretText, E> {
                Ok(SecretText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SecretText, E> {
                Ok(SecretText(v.to_string()))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<SecretText, E> {
                Ok(SecretText(v.to_string()))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<SecretText, E> {
                Ok(SecretText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<SecretText, E> {
                Ok(SecretText(v.to_string()))
            }
            fn visit_char<E: de::Error>(self, v: char) -> Result<SecretText, E> {
                Ok(SecretText(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretText, E> {
                Ok(SecretText(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<SecretText, E> {
                Ok(SecretText(v))
            }
        }
        deserializer.deserialize_any(SecretVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_every_documented_spelling() {
        assert_eq!(parse_size("50MiB"), Ok(50 << 20));
        assert_eq!(parse_size("50 MiB"), Ok(50 << 20));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn bad_sizes_are_rejected_with_the_value_and_help() {
        for bad in ["", "MiB", "50 MeB", "-5MiB", "1.5", "lots", "999999999 EiB"] {
            let error = parse_size(bad).expect_err(bad);
            assert!(error.contains(&format!("{bad:?}")), "{error}");
            assert!(error.contains("50MiB"), "{error}");
        }
    }

    #[test]
    fn sizes_format_back_to_what_parses() {
        for bytes in [
            0,
            1,
            1000,
            1024,
            5 << 20,
            50 << 20,
            3 << 29,
            5_000_000,
            52_428_801,
        ] {
            let text = format_size(bytes);
            assert_eq!(parse_size(&text), Ok(bytes), "{text}");
        }
        assert_eq!(format_size(50 << 20), "50 MiB");
        assert_eq!(format_size(0), "0");
    }

    #[test]
    fn durations_parse_and_format_back() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        for secs in [1, 10, 30, 90, 5400] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        let error = parse_duration("10 parsecs").expect_err("not a duration");
        assert!(error.contains("\"10 parsecs\""), "{error}");
    }

    #[test]
    fn secret_text_debug_is_redacted() {
        let secret = SecretText("to1234567890abcdef".into());
        assert!(!format!("{secret:?}").contains("1234567890"));
    }
}
