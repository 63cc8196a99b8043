//! The clients of a chaos run and their log of every operation and its outcome.
//!
//! Owns: the record shape (every value is a pure function of its key and write token, so the
//! checker can tell a whole value from a torn or invented one), the write and delete requests,
//! and the log (`ops.jsonl`: one line per operation, with the version Skerry returned). Must
//! never count an operation as acknowledged unless a complete 200 answer says it wrote the key.

use crate::node::{post, Reply};
use crate::Rng;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Insert,
    Upsert,
    Update,
    Delete,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Insert => "insert",
            Kind::Upsert => "upsert",
            Kind::Update => "update",
            Kind::Delete => "delete",
        }
    }

    pub fn is_write(self) -> bool {
        self != Kind::Delete
    }

    /// The answer's list of keys the operation wrote.
    fn hashes_field(self) -> &'static str {
        match self {
            Kind::Insert => "inserted_hashes",
            Kind::Upsert => "upserted_hashes",
            Kind::Update => "update_hashes",
            Kind::Delete => "deleted_hashes",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A 200 answer. `effective`: the key is in its written hashes (an insert of an existing
    /// key, an update or delete of a missing one is acknowledged but writes nothing).
    Acked {
        effective: bool,
        version: Option<f64>,
    },
    /// The connection was refused: the node never saw it.
    NotSent,
    /// Sent, but no 200 answer: it may or may not have been applied.
    Unknown(String),
}

#[derive(Debug, Clone)]
pub struct OpRec {
    pub client: String,
    pub kind: Kind,
    pub key: String,
    pub node: usize,
    /// The write token (`w` of the value); None for deletes.
    pub token: Option<String>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub outcome: Outcome,
}

impl OpRec {
    pub fn acked_effective(&self) -> Option<f64> {
        match self.outcome {
            Outcome::Acked {
                effective: true,
                version,
            } => Some(version.unwrap_or(f64::NAN)),
            _ => None,
        }
    }

    /// The version at which this operation changed the table, if it was acknowledged and did:
    /// a write whose key is in its written hashes, or any acknowledged delete (a delete of a
    /// key missing on that node still writes a versioned tombstone, which wins over older
    /// copies of the key elsewhere, although the answer lists the key in `skipped_hashes`).
    pub fn applied_version(&self) -> Option<f64> {
        match self.outcome {
            Outcome::Acked { version, .. } if self.kind == Kind::Delete => {
                Some(version.unwrap_or(f64::NAN))
            }
            _ => self.acked_effective(),
        }
    }

    pub fn unknown(&self) -> bool {
        matches!(self.outcome, Outcome::Unknown(_))
    }

    fn to_json(&self) -> Value {
        let (outcome, effective, version, error) = match &self.outcome {
            Outcome::Acked { effective, version } => ("acked", Some(*effective), *version, None),
            Outcome::NotSent => ("not_sent", None, None, None),
            Outcome::Unknown(e) => ("unknown", None, None, Some(e.clone())),
        };
        json!({
            "client": self.client, "op": self.kind.name(), "key": self.key, "node": self.node,
            "token": self.token, "start_ms": self.start_ms, "end_ms": self.end_ms,
            "outcome": outcome, "effective": effective, "version": version, "error": error,
        })
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The whole value a write of `key` with `token` stores: every field derives from both, so a
/// value mixing two writes (torn) or written by nobody (phantom) cannot pass for a real one.
pub fn value(key: &str, token: &str) -> Value {
    let h = fnv(&format!("{key}/{token}"));
    let len = 20 + (h % 400) as usize;
    let pad: String = token.chars().cycle().take(len).collect();
    json!({"id": key, "w": token, "chk": format!("{h:016x}"), "pad": pad})
}

pub struct Log {
    ops: Mutex<Vec<OpRec>>,
    file: Mutex<std::io::BufWriter<std::fs::File>>,
}

impl Log {
    pub fn create(path: &std::path::Path) -> Result<Log, String> {
        let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Log {
            ops: Mutex::new(Vec::new()),
            file: Mutex::new(std::io::BufWriter::new(f)),
        })
    }

    pub fn push(&self, r: OpRec) {
        if let Ok(mut f) = self.file.lock() {
            let _ = writeln!(f, "{}", r.to_json());
        }
        if let Ok(mut v) = self.ops.lock() {
            v.push(r);
        }
    }

    pub fn flush(&self) {
        if let Ok(mut f) = self.file.lock() {
            let _ = f.flush();
        }
    }

    pub fn all(&self) -> Vec<OpRec> {
        self.ops.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

pub const TABLE: &str = "kv";

/// One write or delete of `key` on node `node` (at `addr`), logged.
pub fn write(
    log: &Log,
    client: &str,
    node: usize,
    addr: &str,
    kind: Kind,
    key: &str,
    token: Option<&str>,
) -> OpRec {
    let body = match (kind, token) {
        (Kind::Delete, _) | (_, None) => json!({
            "operation": "delete", "database": "dev", "table": TABLE,
            "ids": [key], "write_details": true,
        }),
        (_, Some(t)) => json!({
            "operation": kind.name(), "database": "dev", "table": TABLE,
            "records": [value(key, t)], "write_details": true,
        }),
    };
    let start_ms = now_ms();
    let reply = post(addr, &body, Duration::from_secs(20));
    let end_ms = now_ms();
    let outcome = match reply {
        Reply::Answer(200, v) => {
            let effective = v[kind.hashes_field()]
                .as_array()
                .is_some_and(|a| a.iter().any(|h| h.as_str() == Some(key)));
            Outcome::Acked {
                effective,
                version: v["txn_time"].as_f64(),
            }
        }
        Reply::Answer(status, v) => Outcome::Unknown(format!("status {status}: {v}")),
        Reply::NotSent(_) => Outcome::NotSent,
        Reply::Unknown(e) => Outcome::Unknown(e),
    };
    let r = OpRec {
        client: client.to_string(),
        kind,
        key: key.to_string(),
        node,
        token: if kind.is_write() {
            token.map(str::to_string)
        } else {
            None
        },
        start_ms,
        end_ms,
        outcome,
    };
    log.push(r.clone());
    r
}

pub struct Workload {
    pub hot_keys: usize,
    pub keys: usize,
    pub preload: usize,
}

pub fn hot_key(i: usize) -> String {
    format!("hot-{i}")
}

pub fn pre_key(i: usize) -> String {
    format!("pre-{i}")
}

impl Workload {
    pub fn pick_key(&self, rng: &mut Rng) -> String {
        let r = rng.below(100);
        if r < 15 {
            hot_key(rng.below(self.hot_keys as u64) as usize)
        } else if r < 25 && self.preload > 0 {
            pre_key(rng.below(self.preload as u64) as usize)
        } else {
            format!("k-{}", rng.below(self.keys as u64))
        }
    }
}

/// One client: writes, updates and deletes on every node (mostly its home node) until `stop`.
pub fn client_loop(
    c: usize,
    seed: u64,
    addrs: &[String],
    wl: &Workload,
    log: &Log,
    stop: &AtomicBool,
) {
    let mut rng = Rng::new(seed ^ (0x9e37_79b9 * (c as u64 + 1)));
    let name = format!("c{c}");
    let n = addrs.len();
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let node = if rng.below(10) < 7 {
            c % n
        } else {
            rng.below(n as u64) as usize
        };
        let key = wl.pick_key(&mut rng);
        let kind = match rng.below(100) {
            0..=39 => Kind::Upsert,
            40..=59 => Kind::Update,
            60..=74 => Kind::Insert,
            _ => Kind::Delete,
        };
        let token = format!("{name}-{seq}");
        let r = write(log, &name, node, &addrs[node], kind, &key, Some(&token));
        let pause = match r.outcome {
            Outcome::NotSent => 100,
            _ => rng.below(15),
        };
        std::thread::sleep(Duration::from_millis(pause));
    }
}
