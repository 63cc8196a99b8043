//! Request bodies: parsing with bounded memory.
//!
//! A JSON tree costs many times its text: every value is a 32-72 byte node, every object entry a
//! key allocation and a map slot, so `[{},{},...]` grows ~30x when parsed. The body of a write is
//! mostly its `records`, so they are never parsed here: each record is kept as its span of the
//! body text ([`RecordBatch`]) and the core parses one at a time. Every other field is parsed
//! into a tree only after an estimate of the tree's size (a scan of the text, counting values)
//! fits a budget, so no request builds a tree much larger than the body limit.
//!
//! Must never: authenticate, authorise or execute anything (the caller has authenticated before
//! it read the body).

use crate::core::error::OpError;
use crate::core::op::RecordBatch;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Estimated bytes of tree per JSON value (node, map slot, key) for the budget.
const BYTES_PER_VALUE: usize = 96;

/// A parsed request: its fields (without `records` when they came as an array) and its records.
pub struct Body {
    pub fields: Map<String, Value>,
    pub records: Option<RecordBatch>,
}

fn invalid(e: impl std::fmt::Display) -> OpError {
    OpError::bad_request(format!("Invalid JSON: {e}"))
}

/// Rough size of the tree `text` parses into: values counted by their separators (outside
/// strings), plus the text itself (strings are copied).
pub fn estimated_tree_bytes(text: &[u8]) -> usize {
    let mut values = 1usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' | b',' | b':' => values += 1,
            _ => {}
        }
    }
    values
        .saturating_mul(BYTES_PER_VALUE)
        .saturating_add(text.len())
}

fn too_complex(budget: usize) -> OpError {
    OpError::new(
        413,
        format!(
            "Request body is too complex: parsing it would take more than {budget} bytes of memory (operationsApi.network.maxBodySize)"
        ),
    )
}

/// Parses a request body. `budget` bounds the estimated size of the trees built for the fields
/// other than `records` (together).
pub fn parse(body: Vec<u8>, budget: usize) -> Result<Body, OpError> {
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    let Some(first) = first else {
        return Err(OpError::bad_request(
            "Body cannot be empty when content-type is set to 'application/json'",
        ));
    };
    if first != b'{' {
        return match serde_json::from_slice::<&RawValue>(&body) {
            Ok(_) => Err(OpError::bad_request("Invalid JSON.")),
            Err(e) => Err(invalid(e)),
        };
    }
    let mut fields = Map::new();
    let mut spans: Option<Vec<(u32, u32)>> = None;
    {
        // Borrowed raw values: no tree, no copy of the text. serde_json refuses nesting deeper
        // than 128 levels and invalid UTF-8, so neither the stack nor stored strings suffer.
        let top: HashMap<String, &RawValue> = serde_json::from_slice(&body).map_err(invalid)?;
        let mut spent = 0usize;
        let base = body.as_ptr() as usize;
        for (k, raw) in top {
            let text = raw.get();
            if k == "records" && text.starts_with('[') {
                let items: Vec<&RawValue> = serde_json::from_str(text).map_err(invalid)?;
                let mut s = Vec::with_capacity(items.len());
                for item in items {
                    let t = item.get();
                    if !t.starts_with('{') {
                        return Err(OpError::bad_request(
                            "'records' must be an array of objects",
                        ));
                    }
                    let start = t.as_ptr() as usize - base;
                    let (Ok(a), Ok(b)) = (u32::try_from(start), u32::try_from(start + t.len()))
                    else {
                        return Err(too_complex(budget));
                    };
                    s.push((a, b));
                }
                spans = Some(s);
                continue;
            }
            spent = spent.saturating_add(estimated_tree_bytes(text.as_bytes()));
            if spent > budget {
                return Err(too_complex(budget));
            }
            let v: Value = serde_json::from_str(text).map_err(invalid)?;
            fields.insert(k, v);
        }
    }
    Ok(Body {
        fields,
        records: spans.map(|s| RecordBatch::from_spans(body, s)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_stay_text_and_other_fields_parse() {
        let body = br#"{"operation":"insert","table":"t","records":[{"id":1,"a":"x"}, {"id":2}]}"#;
        let b = parse(body.to_vec(), 1 << 20).unwrap();
        assert_eq!(b.fields.get("operation"), Some(&json!("insert")));
        assert!(!b.fields.contains_key("records"));
        let r = b.records.unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            r.parse(0).unwrap(),
            json!({"id":1,"a":"x"}).as_object().unwrap().clone()
        );
        assert_eq!(r.raw(1), br#"{"id":2}"#);
    }

    #[test]
    fn bad_bodies_get_harpers_errors() {
        let cases: [(&[u8], u16, &str); 5] = [
            (
                b"  ",
                400,
                "Body cannot be empty when content-type is set to 'application/json'",
            ),
            (b"[1,2]", 400, "Invalid JSON."),
            (b"{\"a\":", 400, "Invalid JSON: "),
            (
                br#"{"records":[1]}"#,
                400,
                "'records' must be an array of objects",
            ),
            (
                br#"{"ids":[1,2,3,4,5,6,7,8,9,10,11,12]}"#,
                413,
                "Request body is too complex",
            ),
        ];
        for (body, status, msg) in cases {
            let e = match parse(body.to_vec(), 600) {
                Ok(_) => panic!("{:?} parsed", String::from_utf8_lossy(body)),
                Err(e) => e,
            };
            assert_eq!(e.status, status, "{:?}", String::from_utf8_lossy(body));
            assert!(e.message().starts_with(msg), "{}", e.message());
        }
    }

    #[test]
    fn records_that_are_not_an_array_are_left_for_the_operation_parser() {
        let b = parse(br#"{"records":{"id":1}}"#.to_vec(), 1 << 20).unwrap();
        assert!(b.records.is_none());
        assert!(b.fields.contains_key("records"));
    }

    #[test]
    fn the_estimate_counts_values_not_characters_inside_strings() {
        assert!(
            estimated_tree_bytes(br#"["a,b,c,d:{["]"#) < estimated_tree_bytes(br#"[1,2,3,4,5]"#)
        );
        assert!(estimated_tree_bytes(br#"[[],[],[],[]]"#) >= 5 * BYTES_PER_VALUE);
    }
}
