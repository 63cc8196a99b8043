//! Replication frames: what travels inside the binary WebSocket messages between peers.
//!
//! Every frame starts with `[PROTOCOL_VERSION][kind]`. A node refuses a frame of another
//! protocol version with a clear error instead of guessing (rolling upgrades must be explicit).
//! Transactions travel in batches (`Txns`), many per frame, each with its origin, version,
//! database and ops in the audit-log encoding, so a sender can forward audit entries without
//! re-encoding records. See repl/DESIGN.md for the conversation.

use crate::core::codec::{Dec, DecodeError, Enc};
use crate::core::txn::{self, Txn};

pub const PROTOCOL_VERSION: u8 = 1;

/// The WebSocket subprotocol peers negotiate.
pub const SUBPROTOCOL: &str = "skerry-replication-v1";

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Receiver → sender: "send me, for each origin, its transactions after this version".
    /// Replaces the previous subscription; an empty list pauses the stream. `tables` limits
    /// the sender's own transactions to these tables (explicit subscriptions); None = all.
    Subscribe {
        origins: Vec<(String, u64)>,
        tables: Option<Vec<String>>,
    },
    /// Sender → receiver: transactions in per-origin version order.
    Txns {
        txns: Vec<Txn>,
    },
    /// Receiver → sender: everything up to these versions is committed here.
    Ack {
        applied: Vec<(String, u64)>,
    },
    /// Sender → receiver: these origins cannot be served from the requested versions (the
    /// audit log no longer holds them); the receiver needs a full copy.
    NeedCopy {
        origins: Vec<(String, u64)>,
    },
    /// Either way: a JSON operation (add_node_back, remove_node_back) and its answer.
    OpRequest {
        json: Vec<u8>,
    },
    OpResponse {
        status: u16,
        json: Vec<u8>,
    },
    /// Sender → receiver: the stream stops because of `reason` (e.g. an oversized
    /// transaction); the receiver logs it and reconnects later.
    Error {
        reason: String,
    },
    /// Receiver → sender: stream a full copy of the database, after (`table`, `key`) when
    /// resuming an interrupted copy (empty table = from the start).
    CopyRequest {
        table: String,
        key: Vec<u8>,
    },
    /// Sender → receiver: the version vector of the snapshot being copied, and (in a copy of
    /// `system`) every database the sender has, so the receiver learns databases whose
    /// creation it will never replay.
    CopyStart {
        vector: Vec<(String, u64)>,
        databases: Vec<String>,
        /// Records the copy will hold (from the sender's table statistics; 0 = unknown).
        /// Trailing, so a frame from a sender without it still decodes.
        total: u64,
    },
    /// Sender → receiver: the rows of one table follow (schema first, so it can be created).
    CopyTable {
        table: String,
        pk_attr: String,
        schema_defined: bool,
        attributes: Vec<(String, Option<String>)>,
        /// The table's `expiration` (seconds): a trailing field, sent only when set.
        expiration: Option<u64>,
    },
    /// Sender → receiver: stored entries in key order, with their own version and origin.
    CopyRows {
        table: String,
        rows: Vec<CopyRow>,
    },
    /// Sender → receiver: every table was sent; stream from the vector of `CopyStart` next.
    CopyEnd,
}

pub use crate::core::CopyRow;

const SUBSCRIBE: u8 = 1;
const TXNS: u8 = 2;
const ACK: u8 = 3;
const NEED_COPY: u8 = 4;
const OP_REQUEST: u8 = 5;
const OP_RESPONSE: u8 = 6;
const ERROR: u8 = 7;
const COPY_REQUEST: u8 = 8;
const COPY_START: u8 = 9;
const COPY_TABLE: u8 = 10;
const COPY_ROWS: u8 = 11;
const COPY_END: u8 = 12;

fn put_vector(e: &mut Enc, v: &[(String, u64)]) {
    e.varint(v.len() as u64);
    for (name, version) in v {
        e.str(name);
        e.u64_fixed(*version);
    }
}

fn get_vector(d: &mut Dec) -> Result<Vec<(String, u64)>, DecodeError> {
    let n = d.count()?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push((d.string()?, d.u64_fixed()?));
    }
    Ok(v)
}

/// Appends one copied row (the streaming form of `CopyRows`).
pub fn put_copy_row(e: &mut Enc, r: &CopyRow) {
    put_copy_row_parts(e, &r.pk, r.version, &r.origin, r.json.as_deref());
}

pub fn put_copy_row_parts(e: &mut Enc, pk: &[u8], version: u64, origin: &str, json: Option<&[u8]>) {
    e.bytes(pk);
    e.u64_fixed(version);
    e.str(origin);
    match json {
        Some(j) => {
            e.u8(1);
            e.bytes(j);
        }
        None => e.u8(0),
    }
}

/// Starts a `CopyRows` frame for `count` rows of `table`.
pub fn start_copy_rows(table: &str, count: usize) -> Enc {
    let mut e = Enc::with_capacity(64 * 1024);
    e.u8(PROTOCOL_VERSION);
    e.u8(COPY_ROWS);
    e.str(table);
    e.varint(count as u64);
    e
}

/// Appends one transaction to a `Txns` frame under construction.
pub fn put_txn(e: &mut Enc, origin: &str, version: u64, db: &str, ops: &[u8]) {
    e.str(origin);
    e.u64_fixed(version);
    e.str(db);
    e.bytes(ops);
}

/// Starts a `Txns` frame for `count` transactions; follow with `count` calls to [`put_txn`].
pub fn start_txns(count: usize) -> Enc {
    let mut e = Enc::with_capacity(4096);
    e.u8(PROTOCOL_VERSION);
    e.u8(TXNS);
    e.varint(count as u64);
    e
}

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::with_capacity(64);
        e.u8(PROTOCOL_VERSION);
        match self {
            Frame::Subscribe { origins, tables } => {
                e.u8(SUBSCRIBE);
                put_vector(&mut e, origins);
                match tables {
                    None => e.u8(0),
                    Some(t) => {
                        e.u8(1);
                        e.varint(t.len() as u64);
                        for name in t {
                            e.str(name);
                        }
                    }
                }
            }
            Frame::Txns { txns } => {
                e.u8(TXNS);
                e.varint(txns.len() as u64);
                for t in txns {
                    put_txn(
                        &mut e,
                        &t.origin,
                        t.version,
                        &t.db,
                        &txn::encode_ops(&t.actor, t.kind, &t.ops),
                    );
                }
            }
            Frame::Ack { applied } => {
                e.u8(ACK);
                put_vector(&mut e, applied);
            }
            Frame::NeedCopy { origins } => {
                e.u8(NEED_COPY);
                put_vector(&mut e, origins);
            }
            Frame::OpRequest { json } => {
                e.u8(OP_REQUEST);
                e.bytes(json);
            }
            Frame::OpResponse { status, json } => {
                e.u8(OP_RESPONSE);
                e.varint(u64::from(*status));
                e.bytes(json);
            }
            Frame::Error { reason } => {
                e.u8(ERROR);
                e.str(reason);
            }
            Frame::CopyRequest { table, key } => {
                e.u8(COPY_REQUEST);
                e.str(table);
                e.bytes(key);
            }
            Frame::CopyStart {
                vector,
                databases,
                total,
            } => {
                e.u8(COPY_START);
                put_vector(&mut e, vector);
                e.varint(databases.len() as u64);
                for d in databases {
                    e.str(d);
                }
                e.varint(*total);
            }
            Frame::CopyTable {
                table,
                pk_attr,
                schema_defined,
                attributes,
                expiration,
            } => {
                e.u8(COPY_TABLE);
                e.str(table);
                e.str(pk_attr);
                e.bool(*schema_defined);
                e.attributes(attributes);
                if let Some(secs) = expiration {
                    e.varint(*secs);
                }
            }
            Frame::CopyRows { table, rows } => {
                e.u8(COPY_ROWS);
                e.str(table);
                e.varint(rows.len() as u64);
                for r in rows {
                    put_copy_row(&mut e, r);
                }
            }
            Frame::CopyEnd => e.u8(COPY_END),
        }
        e.buf
    }

    pub fn decode(buf: &[u8]) -> Result<Frame, DecodeError> {
        let mut d = Dec::new(buf);
        if d.u8()? != PROTOCOL_VERSION {
            return Err(DecodeError("unsupported replication protocol version"));
        }
        let f = match d.u8()? {
            SUBSCRIBE => {
                let origins = get_vector(&mut d)?;
                let tables = match d.u8()? {
                    0 => None,
                    _ => {
                        let n = d.count()?;
                        let mut t = Vec::with_capacity(n);
                        for _ in 0..n {
                            t.push(d.string()?);
                        }
                        Some(t)
                    }
                };
                Frame::Subscribe { origins, tables }
            }
            TXNS => {
                let n = d.count()?;
                let mut txns = Vec::with_capacity(n);
                for _ in 0..n {
                    let origin = d.string()?;
                    let version = d.u64_fixed()?;
                    let db = d.string()?;
                    let e = txn::decode_entry(d.bytes()?)?;
                    txns.push(Txn {
                        origin,
                        version,
                        db,
                        actor: e.actor,
                        kind: e.kind,
                        ops: e.ops,
                    });
                }
                Frame::Txns { txns }
            }
            ACK => Frame::Ack {
                applied: get_vector(&mut d)?,
            },
            NEED_COPY => Frame::NeedCopy {
                origins: get_vector(&mut d)?,
            },
            OP_REQUEST => Frame::OpRequest {
                json: d.bytes()?.to_vec(),
            },
            OP_RESPONSE => Frame::OpResponse {
                status: u16::try_from(d.varint()?).map_err(|_| DecodeError("bad status"))?,
                json: d.bytes()?.to_vec(),
            },
            ERROR => Frame::Error {
                reason: d.string()?,
            },
            COPY_REQUEST => Frame::CopyRequest {
                table: d.string()?,
                key: d.bytes()?.to_vec(),
            },
            COPY_START => {
                let vector = get_vector(&mut d)?;
                let n = d.count()?;
                let mut databases = Vec::with_capacity(n);
                for _ in 0..n {
                    databases.push(d.string()?);
                }
                let total = if d.is_empty() { 0 } else { d.varint()? };
                Frame::CopyStart {
                    vector,
                    databases,
                    total,
                }
            }
            COPY_TABLE => {
                let table = d.string()?;
                let pk_attr = d.string()?;
                let schema_defined = d.bool()?;
                let attributes = d.attributes()?;
                let expiration = if d.is_empty() {
                    None
                } else {
                    Some(d.varint()?)
                };
                Frame::CopyTable {
                    table,
                    pk_attr,
                    schema_defined,
                    attributes,
                    expiration,
                }
            }
            COPY_ROWS => {
                let table = d.string()?;
                let n = d.count()?;
                let mut rows = Vec::with_capacity(n);
                for _ in 0..n {
                    let pk = d.bytes()?.to_vec();
                    let version = d.u64_fixed()?;
                    let origin = d.string()?;
                    let json = match d.u8()? {
                        0 => None,
                        _ => Some(d.bytes()?.to_vec()),
                    };
                    rows.push(CopyRow {
                        pk,
                        version,
                        origin,
                        json,
                    });
                }
                Frame::CopyRows { table, rows }
            }
            COPY_END => Frame::CopyEnd,
            _ => return Err(DecodeError("unknown frame kind")),
        };
        if !d.is_empty() {
            return Err(DecodeError("trailing bytes in frame"));
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::txn::TxnOp;

    #[test]
    fn every_frame_kind_round_trips() {
        let frames = vec![
            Frame::Subscribe {
                origins: vec![("a".into(), 5), ("b".into(), 0)],
                tables: Some(vec!["dog".into()]),
            },
            Frame::Txns {
                txns: vec![Txn {
                    origin: "a".into(),
                    version: 9,
                    db: "dev".into(),
                    actor: txn::Actor::User("admin".into()),
                    kind: txn::TxnKind::Delete,
                    ops: vec![TxnOp::Delete {
                        table: "t".into(),
                        pk_attr: "id".into(),
                        pk: vec![0x10; 9],
                    }],
                }],
            },
            Frame::Ack {
                applied: vec![("a".into(), 9)],
            },
            Frame::NeedCopy {
                origins: vec![("a".into(), 1)],
            },
            Frame::OpRequest {
                json: b"{}".to_vec(),
            },
            Frame::OpResponse {
                status: 400,
                json: b"{\"error\":\"x\"}".to_vec(),
            },
            Frame::Error {
                reason: "too big".into(),
            },
            Frame::CopyRequest {
                table: "dog".into(),
                key: vec![0x20, b'k', 0, 1],
            },
            Frame::CopyStart {
                vector: vec![("a".into(), 3)],
                databases: vec!["dev".into()],
                total: 12,
            },
            Frame::CopyTable {
                table: "dog".into(),
                pk_attr: "id".into(),
                schema_defined: false,
                attributes: vec![("name".into(), None)],
                expiration: Some(30),
            },
            Frame::CopyRows {
                table: "dog".into(),
                rows: vec![
                    CopyRow {
                        pk: vec![1],
                        version: 5,
                        origin: "a".into(),
                        json: Some(b"{}".to_vec()),
                    },
                    CopyRow {
                        pk: vec![2],
                        version: 6,
                        origin: "b".into(),
                        json: None,
                    },
                ],
            },
            Frame::CopyEnd,
        ];
        for f in frames {
            assert_eq!(Frame::decode(&f.encode()).unwrap(), f);
        }
    }

    #[test]
    fn streamed_txns_frame_equals_encoded_frame() {
        let t = Txn {
            origin: "a".into(),
            version: 3,
            db: "dev".into(),
            actor: txn::Actor::Node("a".into()),
            kind: txn::TxnKind::None,
            ops: vec![TxnOp::CreateDatabase { name: "x".into() }],
        };
        let mut e = start_txns(1);
        put_txn(
            &mut e,
            &t.origin,
            t.version,
            &t.db,
            &txn::encode_ops(&t.actor, t.kind, &t.ops),
        );
        assert_eq!(e.buf, Frame::Txns { txns: vec![t] }.encode());
    }

    #[test]
    fn other_protocol_versions_and_garbage_are_refused() {
        let mut b = Frame::Ack { applied: vec![] }.encode();
        b[0] = 2;
        assert!(Frame::decode(&b).is_err());
        assert!(Frame::decode(&[]).is_err());
        assert!(Frame::decode(&[PROTOCOL_VERSION, 99]).is_err());
        let good = Frame::Subscribe {
            origins: vec![("abc".into(), 1)],
            tables: None,
        }
        .encode();
        for n in 0..good.len() {
            assert!(Frame::decode(&good[..n]).is_err());
        }
    }
}
