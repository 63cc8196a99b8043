//! Scalar value grammars shared by the loader: durations, sizes and listen addresses.
//!
//! Each parser returns a plain `String` message on failure ("expected ..., got ..."); the loader
//! prefixes the dotted key, so the grammar code stays reusable (the operations API can use
//! `parse_duration` for request fields too).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;

/// Describes a value for an error message: scalars as JSON (so a string shows its quotes and a
/// `true` is visibly a bool), collections by kind only (they can be large).
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a mapping".to_string(),
        other => {
            let s = other.to_string();
            // Keep one bad value from flooding the log line.
            if s.chars().count() > 80 {
                let cut: String = s.chars().take(77).collect();
                format!("{cut}...")
            } else {
                s
            }
        }
    }
}

const DURATION_EXPECTED: &str =
    "expected a duration (milliseconds, or a number with ms, s, m, h, d or w, e.g. \"30s\", \"3d\")";

/// Parses a duration the way Harper writes them: a bare number is milliseconds (Harper's
/// `pingInterval: 30000`), otherwise a number followed by a unit: `ms`, `s`, `m` (minutes), `h`,
/// `d`, `w` (long forms like `sec`, `min`, `hours`, `days` are accepted too, case-insensitive,
/// optional space). Fractions are allowed (`1.5h`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{DURATION_EXPECTED}, got {}",
            describe(&Value::String(s.to_string()))
        )
    };
    let (number, unit) = split_number(s).ok_or_else(bad)?;
    let unit_ms: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 604_800_000,
        _ => return Err(bad()),
    };
    match number {
        Num::Int(n) => n
            .checked_mul(unit_ms)
            .map(Duration::from_millis)
            .ok_or_else(|| format!("duration {s:?} is too large")),
        Num::Float(f) => Duration::try_from_secs_f64(f * unit_ms as f64 / 1000.0)
            .map_err(|_| format!("duration {s:?} is too large")),
    }
}

const SIZE_EXPECTED: &str =
    "expected a size (bytes, or a number with K, M, G or T, e.g. \"512K\", \"10MB\", \"1GB\")";

/// Parses a byte size: a bare number is bytes, otherwise a number followed by `B`, `K`/`KB`/`KiB`,
/// `M`/`MB`/`MiB`, `G`/`GB`/`GiB` or `T`/`TB`/`TiB` (case-insensitive, optional space). All
/// multiples are binary (1K = 1024) because that is what Harper's `64M`-style values mean and
/// what memory budgets are counted in. Fractions are allowed (`1.5GB`) and rounded down.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{SIZE_EXPECTED}, got {}",
            describe(&Value::String(s.to_string()))
        )
    };
    let (number, unit) = split_number(s).ok_or_else(bad)?;
    let shift: u32 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    let too_large = || format!("size {s:?} is too large");
    match number {
        Num::Int(n) => n.checked_mul(1u64 << shift).ok_or_else(too_large),
        Num::Float(f) => {
            let bytes = (f * (1u64 << shift) as f64).floor();
            // u64::MAX as f64 rounds up to 2^64, so compare with < to stay in range.
            if bytes < u64::MAX as f64 {
                Ok(bytes as u64)
            } else {
                Err(too_large())
            }
        }
    }
}

enum Num {
    Int(u64),
    Float(f64),
}

/// Splits "1.5 GB" into (1.5, "GB"). Negative numbers, signs and exponents are not part of the
/// grammar (a duration or size is never negative), so only digits and one '.' are taken.
fn split_number(s: &str) -> Option<(Num, &str)> {
    let s = s.trim();
    let end = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(s.len(), |(i, _)| i);
    let (digits, unit) = s.split_at(end);
    if digits.is_empty() || digits == "." || digits.matches('.').count() > 1 {
        return None;
    }
    let unit = unit.trim_start();
    // A unit is letters only: "10 MB x" or "5s5" is rejected rather than half-read.
    if !unit.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let number = if digits.contains('.') {
        let f: f64 = digits.parse().ok()?;
        if !f.is_finite() {
            return None;
        }
        Num::Float(f)
    } else {
        // Too many digits for u64 is "too large", not "malformed": carry it as a float so
        // the caller's range check reports it as such.
        match digits.parse::<u64>() {
            Ok(n) => Num::Int(n),
            Err(_) => Num::Float(digits.parse().ok()?),
        }
    };
    Some((number, unit))
}

/// Duration from a YAML value: a number is milliseconds (Harper style), a string goes through
/// [`parse_duration`]. Zero is refused: every duration Skerry reads is an interval or a timeout,
/// and zero would mean a busy loop or an immediate expiry.
pub(crate) fn duration_value(v: &Value) -> Result<Duration, String> {
    let d = match v {
        Value::Number(n) => {
            if let Some(ms) = n.as_u64() {
                Duration::from_millis(ms)
            } else {
                match n.as_f64() {
                    Some(f) if f >= 0.0 => Duration::try_from_secs_f64(f / 1000.0)
                        .map_err(|_| format!("duration {n} is too large"))?,
                    _ => return Err(format!("{DURATION_EXPECTED}, got {n}")),
                }
            }
        }
        Value::String(s) => parse_duration(s)?,
        other => return Err(format!("{DURATION_EXPECTED}, got {}", describe(other))),
    };
    if d.is_zero() {
        return Err(format!("must be greater than zero, got {}", describe(v)));
    }
    Ok(d)
}

/// Size from a YAML value: a number is bytes, a string goes through [`parse_size`]. Zero is
/// refused: every size Skerry reads is a limit or a buffer, and zero would make it unusable.
pub(crate) fn size_value(v: &Value) -> Result<u64, String> {
    let n = match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("{SIZE_EXPECTED}, got {n}"))?,
        Value::String(s) => parse_size(s)?,
        other => return Err(format!("{SIZE_EXPECTED}, got {}", describe(other))),
    };
    if n == 0 {
        return Err(format!("must be greater than zero, got {}", describe(v)));
    }
    Ok(n)
}

/// A positive count (threads, connections, batch sizes).
pub(crate) fn count_value(v: &Value) -> Result<usize, String> {
    match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
        Some(0) => Err("must be greater than zero, got 0".to_string()),
        Some(n) => Ok(n),
        None => Err(format!(
            "expected a positive whole number, got {}",
            describe(v)
        )),
    }
}

pub(crate) fn bool_value(v: &Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("expected true or false, got {}", describe(v)))
}

pub(crate) fn string_value(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Value::String(_) => Err("expected a non-empty string, got \"\"".to_string()),
        other => Err(format!("expected a string, got {}", describe(other))),
    }
}

/// A host name or address as it appears in a node name: no spaces, no '/', no scheme. Kept loose
/// on purpose (Harper accepts any name; certificates, IPs and DNS names all occur).
pub(crate) fn hostname_value(v: &Value) -> Result<String, String> {
    let s = string_value(v).map_err(|_| format!("expected a host name, got {}", describe(v)))?;
    if s.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(format!(
            "expected a host name (no spaces or '/'; put URLs under replication.url), got {}",
            describe(v)
        ));
    }
    Ok(s)
}

/// The host part of a `ws://` or `wss://` URL (brackets of an IPv6 literal removed), or `None`
/// when the string is not such a URL.
pub(crate) fn url_host(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme.to_ascii_lowercase().as_str(), "ws" | "wss") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(inner) = host_port.strip_prefix('[') {
        inner.split_once(']')?.0
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        None
    } else {
        Some(host.to_string())
    }
}

pub(crate) fn url_value(v: &Value) -> Result<String, String> {
    let expected = || {
        format!(
            "expected a ws:// or wss:// URL such as \"ws://node1:9933\", got {}",
            describe(v)
        )
    };
    let s = string_value(v).map_err(|_| expected())?;
    url_host(&s).ok_or_else(expected)?;
    Ok(s)
}

/// A listening address: a port alone (bind every interface, as Harper does) or `host:port` to
/// bind one address; an IPv6 host is written in brackets (`[::1]:9925`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Listen {
    /// The address to bind, without brackets; `None` means every interface.
    pub host: Option<String>,
    /// The TCP port; 0 asks the OS for a free port (useful in tests).
    pub port: u16,
}

impl Listen {
    /// A listener on every interface.
    pub fn any(port: u16) -> Listen {
        Listen { host: None, port }
    }

    /// The `host:port` string to hand to `TcpListener::bind`: `0.0.0.0:port` when no host is
    /// set (IPv4 wildcard, like Harper's default bind), brackets around IPv6 hosts.
    pub fn bind_addr(&self) -> String {
        match &self.host {
            None => format!("0.0.0.0:{}", self.port),
            Some(_) => self.to_string(),
        }
    }
}

impl fmt::Display for Listen {
    /// `host:port`, `[v6]:port`, or `:port` when no host is set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Some(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port),
            Some(h) => write!(f, "{h}:{}", self.port),
            None => write!(f, ":{}", self.port),
        }
    }
}

const LISTEN_EXPECTED: &str = "expected a port number or \"host:port\"";

impl FromStr for Listen {
    type Err = String;

    /// Parses `9925`, `:9925`, `127.0.0.2:9925` or `[::1]:9925`.
    fn from_str(s: &str) -> Result<Listen, String> {
        let t = s.trim();
        let bad = || {
            format!(
                "{LISTEN_EXPECTED}, got {}",
                describe(&Value::String(s.to_string()))
            )
        };
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
            (Some(h), p)
        } else if let Some((h, p)) = t.rsplit_once(':') {
            if h.contains(':') {
                return Err(format!(
                    "{LISTEN_EXPECTED} (write IPv6 hosts in brackets, e.g. \"[::1]:9925\"), got {}",
                    describe(&Value::String(s.to_string()))
                ));
            }
            ((!h.is_empty()).then_some(h), p)
        } else {
            (None, t)
        };
        if !port.chars().all(|c| c.is_ascii_digit()) || port.is_empty() {
            return Err(bad());
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("port {port} is out of range (0-65535) in {s:?}"))?;
        if let Some(h) = host {
            if h.is_empty() || h.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(bad());
            }
        }
        Ok(Listen {
            host: host.map(str::to_string),
            port,
        })
    }
}

pub(crate) fn listen_value(v: &Value) -> Result<Listen, String> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(p) => u16::try_from(p)
                .map(Listen::any)
                .map_err(|_| format!("port {p} is out of range (0-65535)")),
            None => Err(format!("{LISTEN_EXPECTED}, got {n}")),
        },
        Value::String(s) => s.parse(),
        other => Err(format!("{LISTEN_EXPECTED}, got {}", describe(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("500", 500),
            ("500ms", 500),
            ("30s", 30_000),
            ("30 s", 30_000),
            ("5m", 300_000),
            ("5min", 300_000),
            ("2h", 7_200_000),
            ("2H", 7_200_000),
            ("3d", 259_200_000),
            ("1d", 86_400_000),
            ("30d", 2_592_000_000),
            ("1w", 604_800_000),
            ("1.5h", 5_400_000),
            ("0.5s", 500),
            (" 10 seconds ", 10_000),
            ("2 days", 172_800_000),
        ];
        for (input, ms) in ok {
            assert_eq!(
                parse_duration(input),
                Ok(Duration::from_millis(*ms)),
                "input {input:?}"
            );
        }
        let bad = [
            "", "s", "ms", "-5s", "5x", "5 s x", "1.2.3s", "abc", "5s5", "+5s", ".",
        ];
        for input in bad {
            let err = parse_duration(input).expect_err(input);
            assert!(err.contains("expected a duration"), "{input:?}: {err}");
        }
        assert!(parse_duration("99999999999999999999d")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_duration("18446744073709551615d")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn sizes() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("1048576", 1_048_576),
            ("100B", 100),
            ("512K", 512 * 1024),
            ("512k", 512 * 1024),
            ("10KB", 10 * 1024),
            ("10KiB", 10 * 1024),
            ("64M", 64 << 20),
            ("10MB", 10 << 20),
            ("10 MB", 10 << 20),
            ("1GB", 1 << 30),
            ("1gb", 1 << 30),
            ("1.5GB", 3 << 29),
            ("2T", 2 << 40),
            (" 7 ", 7),
        ];
        for (input, bytes) in ok {
            assert_eq!(parse_size(input), Ok(*bytes), "input {input:?}");
        }
        for input in ["", "MB", "-1", "10XB", "10 MB x", "1.2.3M", "ten", "1e3"] {
            let err = parse_size(input).expect_err(input);
            assert!(err.contains("expected a size"), "{input:?}: {err}");
        }
        assert!(parse_size("99999999T").unwrap_err().contains("too large"));
        assert!(parse_size("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn duration_and_size_values() {
        let d = |v: Value| duration_value(&v);
        assert_eq!(d(json!(30000)), Ok(Duration::from_secs(30)));
        assert_eq!(d(json!(1.5)), Ok(Duration::from_micros(1500)));
        assert_eq!(d(json!("2h")), Ok(Duration::from_secs(7200)));
        assert!(d(json!(0)).unwrap_err().contains("greater than zero"));
        assert!(d(json!("0s")).unwrap_err().contains("greater than zero"));
        assert!(d(json!(-1)).unwrap_err().contains("got -1"));
        assert!(d(json!(true)).unwrap_err().contains("got true"));
        assert!(d(json!([1])).unwrap_err().contains("got a list"));
        let s = |v: Value| size_value(&v);
        assert_eq!(s(json!(1048576)), Ok(1_048_576));
        assert_eq!(s(json!("64M")), Ok(64 << 20));
        assert!(s(json!(0)).unwrap_err().contains("greater than zero"));
        assert!(s(json!(1.5)).unwrap_err().contains("got 1.5"));
        assert!(s(json!({"a": 1})).unwrap_err().contains("got a mapping"));
    }

    #[test]
    fn listen_parsing_and_display() {
        let ok: &[(Value, Option<&str>, u16, &str)] = &[
            (json!(9925), None, 9925, ":9925"),
            (json!(0), None, 0, ":0"),
            (json!("9925"), None, 9925, ":9925"),
            (json!(":9925"), None, 9925, ":9925"),
            (
                json!("127.0.0.2:9925"),
                Some("127.0.0.2"),
                9925,
                "127.0.0.2:9925",
            ),
            (json!("localhost:1"), Some("localhost"), 1, "localhost:1"),
            (json!("[::1]:9925"), Some("::1"), 9925, "[::1]:9925"),
            (
                json!("0.0.0.0:65535"),
                Some("0.0.0.0"),
                65535,
                "0.0.0.0:65535",
            ),
        ];
        for (input, host, port, shown) in ok {
            let l = listen_value(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(l.host.as_deref(), *host, "{input}");
            assert_eq!(l.port, *port, "{input}");
            assert_eq!(l.to_string(), *shown, "{input}");
        }
        assert_eq!(Listen::any(9925).bind_addr(), "0.0.0.0:9925");
        assert_eq!(
            listen_value(&json!("[::1]:1")).map(|l| l.bind_addr()),
            Ok("[::1]:1".to_string())
        );
        let bad: &[(Value, &str)] = &[
            (
                json!(true),
                "expected a port number or \"host:port\", got true",
            ),
            (json!(70000), "port 70000 is out of range (0-65535)"),
            (json!("70000"), "out of range"),
            (json!(-1), "got -1"),
            (json!(99.5), "got 99.5"),
            (json!("host"), "got \"host\""),
            (json!("host:"), "got \"host:\""),
            (json!("host:abc"), "got \"host:abc\""),
            (json!("::1:9925"), "brackets"),
            (json!("[::1]9925"), "got"),
            (json!("a b:1"), "got"),
            (json!(""), "got"),
            (json!(null), "got null"),
            (json!([9925]), "got a list"),
        ];
        for (input, msg) in bad {
            let err = listen_value(input).expect_err(&input.to_string());
            assert!(err.contains(msg), "{input}: {err}");
        }
    }

    #[test]
    fn urls_and_hosts() {
        let cases: &[(&str, Option<&str>)] = &[
            ("ws://127.0.0.2:9933", Some("127.0.0.2")),
            ("wss://node-1.example.com", Some("node-1.example.com")),
            ("WSS://Node:1/path?x#y", Some("Node")),
            ("ws://user:pw@host:9933/", Some("host")),
            ("ws://[::1]:9933", Some("::1")),
            ("http://host:1", None),
            ("host:9933", None),
            ("ws://", None),
            ("ws://:9933", None),
        ];
        for (url, host) in cases {
            assert_eq!(url_host(url).as_deref(), *host, "{url}");
        }
        assert!(url_value(&json!("http://x")).is_err());
        assert!(hostname_value(&json!("ws://x")).is_err());
        assert!(hostname_value(&json!("a b")).is_err());
        assert_eq!(hostname_value(&json!("127.0.0.2")), Ok("127.0.0.2".into()));
        assert!(hostname_value(&json!(12)).unwrap_err().contains("got 12"));
    }

    #[test]
    fn counts_bools_strings() {
        assert_eq!(count_value(&json!(16)), Ok(16));
        assert!(count_value(&json!(0)).is_err());
        assert!(count_value(&json!(-2)).is_err());
        assert!(count_value(&json!("16"))
            .unwrap_err()
            .contains("got \"16\""));
        assert_eq!(bool_value(&json!(true)), Ok(true));
        assert!(bool_value(&json!("yes"))
            .unwrap_err()
            .contains("expected true or false, got \"yes\""));
        assert!(string_value(&json!("")).is_err());
        assert!(string_value(&json!(1)).is_err());
        let long = "x".repeat(200);
        assert!(describe(&json!(long)).ends_with("..."));
    }
}
