//! Order-preserving byte encoding of JSON scalars, used for primary keys and index entries.
//!
//! `encode(a) < encode(b)` (bytewise) whenever `a < b` within one type, and types order as
//! null < false < true < numbers < strings. Strings are escaped so that an encoded value can be
//! followed by another one (an index key is `attribute id ‖ value ‖ primary key`) and still be
//! split unambiguously: 0x00 inside a string becomes 0x00 0xFF and the string ends with 0x00 0x01.

use serde_json::Value;

const TAG_NULL: u8 = 0x01;
const TAG_FALSE: u8 = 0x02;
const TAG_TRUE: u8 = 0x03;
const TAG_NUMBER: u8 = 0x10;
const TAG_STRING: u8 = 0x20;

/// Longest primary key accepted, in encoded bytes. LSM keys are bounded (u16) and long keys make
/// every index entry long; Harper's own LMDB limit is about 1,978 bytes.
pub const MAX_PK_BYTES: usize = 1024;

/// Longest string prefix kept in an index entry. Longer values are truncated in the index only;
/// every index hit is re-checked against the record, so truncation costs precision, never
/// correctness.
pub const MAX_INDEXED_STRING: usize = 256;

/// Appends the encoding of a scalar. Objects and arrays are not encodable (the caller indexes
/// array elements one by one and does not index objects); returns false for them.
pub fn encode_scalar(v: &Value, out: &mut Vec<u8>) -> bool {
    match v {
        Value::Null => out.push(TAG_NULL),
        Value::Bool(false) => out.push(TAG_FALSE),
        Value::Bool(true) => out.push(TAG_TRUE),
        Value::Number(n) => {
            out.push(TAG_NUMBER);
            out.extend_from_slice(&encode_f64(n.as_f64().unwrap_or(0.0)));
        }
        Value::String(s) => encode_str(s, usize::MAX, out),
        Value::Array(_) | Value::Object(_) => return false,
    }
    true
}

/// Appends a string encoding, truncated to `max` bytes of content (on a char boundary).
pub fn encode_str(s: &str, max: usize, out: &mut Vec<u8>) {
    out.push(TAG_STRING);
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    for &b in &s.as_bytes()[..end] {
        if b == 0 {
            out.extend_from_slice(&[0x00, 0xFF]);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// The string-encoding prefix shared by every string starting with `prefix` (no terminator), for
/// `starts_with` range scans.
pub fn encode_str_prefix(prefix: &str, out: &mut Vec<u8>) {
    out.push(TAG_STRING);
    for &b in prefix.as_bytes() {
        if b == 0 {
            out.extend_from_slice(&[0x00, 0xFF]);
        } else {
            out.push(b);
        }
    }
}

/// Encoding of an index value: like `encode_scalar`, with long strings truncated.
pub fn encode_index_value(v: &Value, out: &mut Vec<u8>) -> bool {
    match v {
        Value::String(s) => {
            encode_str(s, MAX_INDEXED_STRING, out);
            true
        }
        other => encode_scalar(other, out),
    }
}

/// The index entries of one attribute value of a record: `attribute id ‖ value ‖ pk`, one per
/// element for arrays, none for objects.
pub fn index_entries(attr_id: u32, value: &Value, pk: &[u8], out: &mut Vec<Vec<u8>>) {
    let mut add = |v: &Value| {
        let mut k = Vec::with_capacity(16 + pk.len());
        k.extend_from_slice(&attr_id.to_be_bytes());
        if encode_index_value(v, &mut k) {
            k.extend_from_slice(pk);
            out.push(k);
        }
    };
    match value {
        Value::Array(items) => items.iter().for_each(&mut add),
        other => add(other),
    }
}

/// Encodes a primary key. Only strings and finite numbers are keys (Harper's rule); the caller
/// has already rejected `null`, `"null"` and `"undefined"` with Harper's message.
pub fn encode_pk(v: &Value) -> Option<Vec<u8>> {
    if is_inexact_integer(v) {
        return None;
    }
    match v {
        Value::String(_) | Value::Number(_) => {
            let mut out = Vec::with_capacity(16);
            encode_scalar(v, &mut out);
            (out.len() <= MAX_PK_BYTES).then_some(out)
        }
        _ => None,
    }
}

/// Largest integer a key keeps exactly: keys are ordered as doubles, and above 2^53 two
/// different integers become the same double (the same key).
pub const MAX_EXACT_INTEGER: u64 = 1 << 53;

/// An integer literal beyond ±2^53, which would share its key with a different integer.
pub fn is_inexact_integer(v: &Value) -> bool {
    let Value::Number(n) = v else { return false };
    match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => u > MAX_EXACT_INTEGER,
        (None, Some(i)) => i.unsigned_abs() > MAX_EXACT_INTEGER,
        _ => false,
    }
}

/// Decodes a primary key encoded by [`encode_pk`] back into JSON.
pub fn decode_pk(b: &[u8]) -> Option<Value> {
    let (v, rest) = decode_scalar(b)?;
    rest.is_empty().then_some(v)
}

/// Decodes one scalar from the front of `b`, returning it and the remaining bytes.
pub fn decode_scalar(b: &[u8]) -> Option<(Value, &[u8])> {
    let (&tag, rest) = b.split_first()?;
    match tag {
        TAG_NULL => Some((Value::Null, rest)),
        TAG_FALSE => Some((Value::Bool(false), rest)),
        TAG_TRUE => Some((Value::Bool(true), rest)),
        TAG_NUMBER => {
            let raw: [u8; 8] = rest.get(..8)?.try_into().ok()?;
            let f = decode_f64(raw);
            // Integers come back as integers so `1` stays `1` and not `1.0` in responses.
            let v = if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                Value::from(f as i64)
            } else {
                serde_json::Number::from_f64(f).map(Value::Number)?
            };
            Some((v, &rest[8..]))
        }
        TAG_STRING => {
            let mut s = Vec::new();
            let mut i = 0;
            loop {
                match (rest.get(i)?, rest.get(i + 1)) {
                    (0x00, Some(0x01)) => {
                        let text = String::from_utf8(s).ok()?;
                        return Some((Value::String(text), &rest[i + 2..]));
                    }
                    (0x00, Some(0xFF)) => {
                        s.push(0);
                        i += 2;
                    }
                    (0x00, _) => return None,
                    (&c, _) => {
                        s.push(c);
                        i += 1;
                    }
                }
            }
        }
        _ => None,
    }
}

/// Length of the encoded scalar at the front of `b` (to split `value ‖ pk` in index keys).
pub fn scalar_len(b: &[u8]) -> Option<usize> {
    match *b.first()? {
        TAG_NULL | TAG_FALSE | TAG_TRUE => Some(1),
        TAG_NUMBER => (b.len() >= 9).then_some(9),
        TAG_STRING => {
            let mut i = 1;
            loop {
                match (b.get(i)?, b.get(i + 1)) {
                    (0x00, Some(0x01)) => return Some(i + 2),
                    (0x00, Some(0xFF)) => i += 2,
                    (0x00, _) => return None,
                    _ => i += 1,
                }
            }
        }
        _ => None,
    }
}

/// IEEE 754 bits rearranged so that bytewise order equals numeric order (and -0 == +0).
pub fn encode_f64(f: f64) -> [u8; 8] {
    let f = if f == 0.0 { 0.0 } else { f };
    let bits = f.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits ^ (1 << 63)
    };
    ordered.to_be_bytes()
}

fn decode_f64(raw: [u8; 8]) -> f64 {
    let ordered = u64::from_be_bytes(raw);
    let bits = if ordered >> 63 == 1 {
        ordered ^ (1 << 63)
    } else {
        !ordered
    };
    f64::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        assert!(encode_scalar(v, &mut out));
        out
    }

    #[test]
    fn encoding_preserves_order_across_and_within_types() {
        let ordered = [
            json!(null),
            json!(false),
            json!(true),
            json!(-1e300),
            json!(-2.5),
            json!(-1),
            json!(0),
            json!(0.5),
            json!(1),
            json!(2),
            json!(10),
            json!(1e300),
            json!(""),
            json!("\u{0}"),
            json!("\u{0}a"),
            json!("a"),
            json!("a\u{0}"),
            json!("ab"),
            json!("b"),
            json!("é"),
        ];
        for w in ordered.windows(2) {
            assert!(enc(&w[0]) < enc(&w[1]), "{} < {}", w[0], w[1]);
        }
    }

    #[test]
    fn negative_zero_equals_zero() {
        assert_eq!(enc(&json!(-0.0)), enc(&json!(0)));
    }

    #[test]
    fn scalars_round_trip_and_split() {
        for v in [
            json!(1),
            json!(-7),
            json!(2.25),
            json!("x\u{0}y"),
            json!(""),
            json!(true),
        ] {
            let mut b = enc(&v);
            let n = b.len();
            b.extend_from_slice(&enc(&json!("tail")));
            assert_eq!(scalar_len(&b), Some(n));
            let (back, rest) = decode_scalar(&b).unwrap();
            assert_eq!(back, v);
            assert_eq!(decode_pk(rest), Some(json!("tail")));
        }
    }

    #[test]
    fn pk_rejects_non_scalars_and_oversized_keys() {
        assert!(encode_pk(&json!({"a": 1})).is_none());
        assert!(encode_pk(&json!([1])).is_none());
        assert!(encode_pk(&json!(null)).is_none());
        assert!(encode_pk(&json!(true)).is_none());
        assert!(encode_pk(&json!("x".repeat(2000))).is_none());
        assert!(encode_pk(&json!("x".repeat(100))).is_some());
    }

    /// Two integers beyond 2^53 round to one double: they must never become one key.
    #[test]
    fn integers_beyond_2_pow_53_are_not_keys() {
        let a: Value = serde_json::from_str("9007199254740993").unwrap();
        let b: Value = serde_json::from_str("9007199254740992").unwrap();
        assert!(encode_pk(&a).is_none());
        assert!(encode_pk(&b).is_some());
        assert!(encode_pk(&json!(-9_007_199_254_740_993i64)).is_none());
        assert!(encode_pk(&json!(1e300)).is_some());
    }

    #[test]
    fn string_prefix_is_a_prefix_of_matching_strings_only() {
        let mut p = Vec::new();
        encode_str_prefix("ab", &mut p);
        assert!(enc(&json!("abc")).starts_with(&p));
        assert!(enc(&json!("ab")).starts_with(&p));
        assert!(!enc(&json!("a")).starts_with(&p));
        assert!(!enc(&json!("b")).starts_with(&p));
    }

    #[test]
    fn index_truncation_keeps_char_boundaries() {
        let long = "é".repeat(MAX_INDEXED_STRING);
        let mut out = Vec::new();
        encode_index_value(&json!(long), &mut out);
        assert!(out.len() <= MAX_INDEXED_STRING + 3);
        assert!(decode_scalar(&out).is_some());
    }
}
