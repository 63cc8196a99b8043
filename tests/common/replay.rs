//! Replays requests captured from the real Harper 4.7.29 (`tests/fixtures/harper/<group>/`, one
//! JSON file per case: `{case, order, auth, request, status, response, ...}`) against a Skerry
//! node and compares status and body.
//!
//! Only values that differ between any two runs are normalised: the record timestamps and
//! `last_updated_record` become `<time N>`, numbered by first appearance in each stream (so
//! "this timestamp did not change" and "these two are the same" are still checked), and the
//! storage sizes of describe answers become `<size>`. Everything else, key order included, must
//! match exactly; a test that expects a documented difference from Harper edits the expected
//! body itself, visibly.

use super::{basic, post, TestNode};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// One captured case.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub order: u64,
    /// `Some((user, password))` for Basic auth, None for a request without credentials.
    pub auth: Option<(String, String)>,
    pub request: Value,
    pub status: u16,
    pub response: Value,
}

/// The cases of `tests/fixtures/harper/<group>` whose names start with one of `prefixes`, in
/// capture order.
pub fn load(group: &str, prefixes: &[&str]) -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/harper")
        .join(group);
    let mut cases: Vec<Case> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("fixture entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let v: Value = serde_json::from_slice(&std::fs::read(&p).expect("fixture"))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let auth = v["auth"].as_str().unwrap_or("none");
            Case {
                name: v["case"].as_str().expect("case").to_string(),
                order: v["order"].as_u64().expect("order"),
                auth: auth.strip_prefix("Basic ").map(|up| {
                    let (u, p) = up.split_once(':').expect("user:password");
                    (u.to_string(), p.to_string())
                }),
                request: v["request"].clone(),
                status: v["status"].as_u64().expect("status") as u16,
                response: v["response"].clone(),
            }
        })
        .filter(|c| prefixes.iter().any(|p| c.name.starts_with(p)))
        .collect();
    cases.sort_by_key(|c| c.order);
    cases
}

/// Sends a case's request with the case's credentials (a Skerry user of the same name and
/// password must exist).
pub fn send(n: &TestNode, c: &Case) -> (u16, Value) {
    let auth = c.auth.as_ref().map(|(u, p)| basic(u, p));
    post(&n.addr(), auth.as_deref(), c.request.to_string().as_bytes())
}

const TIME_KEYS: [&str; 3] = ["__createdtime__", "__updatedtime__", "last_updated_record"];
const SIZE_KEYS: [&str; 3] = ["db_size", "table_size", "db_audit_size"];

/// Normalises one stream of answers (Harper's or Skerry's): keep one per stream, and feed it
/// the answers in the same order.
#[derive(Default)]
pub struct Normaliser {
    times: HashMap<String, usize>,
}

impl Normaliser {
    pub fn apply(&mut self, v: &Value) -> Value {
        match v {
            Value::Object(o) => Value::Object(
                o.iter()
                    // A table description's `digest` is Skerry's own field (README,
                    // Differences from Harper): Harper's answers have none to compare with.
                    .filter(|(k, _)| !(k.as_str() == "digest" && o.contains_key("record_count")))
                    .map(|(k, v)| {
                        let v = if TIME_KEYS.contains(&k.as_str()) && v.is_number() {
                            let next = self.times.len() + 1;
                            let n = *self.times.entry(v.to_string()).or_insert(next);
                            Value::String(format!("<time {n}>"))
                        } else if SIZE_KEYS.contains(&k.as_str()) && v.is_number() {
                            Value::String("<size>".into())
                        } else {
                            self.apply(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.apply(v)).collect()),
            other => other.clone(),
        }
    }
}

/// Replaces every occurrence of `from` (anywhere in `v`) by `to`: generated primary keys.
pub fn replace(v: &Value, from: &Value, to: &Value) -> Value {
    if v == from {
        return to.clone();
    }
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), replace(x, from, to)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| replace(x, from, to)).collect()),
        other => other.clone(),
    }
}

/// Compares normalised answers as text, so key order counts too; returns a readable mismatch.
pub fn mismatch(case: &str, want: (u16, &Value), got: (u16, &Value)) -> Option<String> {
    let (w, g) = (want.1.to_string(), got.1.to_string());
    (want.0 != got.0 || w != g).then(|| {
        format!(
            "{case}:\n  Harper {}: {}\n  Skerry {}: {}",
            want.0,
            cut(&w),
            got.0,
            cut(&g)
        )
    })
}

fn cut(s: &str) -> String {
    if s.len() <= 1500 {
        return s.to_string();
    }
    let mut end = 1500;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}
