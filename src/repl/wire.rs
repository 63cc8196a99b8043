//! Replication frames: what travels inside the binary WebSocket messages between peers.
//!
//! Every frame starts with `[PROTOCOL_VERSION][kind]`. A node refuses a frame of another
//! protocol version with a clear error instead of guessing (rolling upgrades must be explicit).
//! Transactions travel in batches (`Txns`), many per frame, each with its origin, version,
//! database and ops in the audit-log encoding, so a sender can forward audit entries without
//! re-encoding records. See repl/DESIGN.md for the conversation.

use crate::core::codec::{vec_for, Dec, DecodeError, Enc};
use crate::core::txn::{self, Txn};

pub const PROTOCOL_VERSION: u8 = 1;

/// The WebSocket subprotocol peers negotiate.
pub const SUBPROTOCOL: &str = "skerry-replication-v1";

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Receiver → sender: "send me, for each origin, its transactions after this version".
    /// Replaces the previous subscription; an empty list pauses the stream. `tables` limits
    /// the sender's own transactions to these tables (explicit subscriptions); None = all.
    ///
    /// `relay`: Some(except) = also every other origin the sender holds of this database except
    /// these, from the start of its log (the receiver has none of them: it lists every origin
    /// it holds in `origins`). A trailing field, encoded only when Some.
    Subscribe {
        origins: Vec<(String, u64)>,
        tables: Option<Vec<String>>,
        relay: Option<Vec<String>>,
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
    let mut v = vec_for(n);
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
            Frame::Subscribe {
                origins,
                tables,
                relay,
            } => {
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
                if let Some(except) = relay {
                    e.varint(except.len() as u64);
                    for name in except {
                        e.str(name);
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
                        let mut t = vec_for(n);
                        for _ in 0..n {
                            t.push(d.string()?);
                        }
                        Some(t)
                    }
                };
                let relay = if d.is_empty() {
                    None
                } else {
                    let n = d.count()?;
                    let mut except = vec_for(n);
                    for _ in 0..n {
                        except.push(d.string()?);
                    }
                    Some(except)
                };
                Frame::Subscribe {
                    origins,
                    tables,
                    relay,
                }
            }
            TXNS => {
                let n = d.count()?;
                let mut txns = vec_for(n);
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
                let mut databases = vec_for(n);
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
                let mut rows = vec_for(n);
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
                relay: None,
            },
            Frame::Subscribe {
                origins: vec![("a".into(), 5)],
                tables: None,
                relay: Some(vec!["c".into()]),
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
            relay: None,
        }
        .encode();
        for n in 0..good.len() {
            assert!(Frame::decode(&good[..n]).is_err());
        }
    }
}

/// Property tests of the decoder against hostile input (issue 9, "hardened input"): arbitrary
/// bytes, and valid frames mutated and truncated. A peer's frame must decode or fail with a
/// `DecodeError`, never panic or allocate far beyond its own size; valid frames round-trip;
/// the peer checks of `repl::validate` answer whatever decodes without panicking.
#[cfg(test)]
mod prop_tests {
    use super::*;
    use crate::core::txn::{Actor, TxnKind, TxnOp};
    use crate::util::alloc_probe::peak_allocation;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_]{0,12}",
            any::<String>().prop_map(|s| s.chars().take(16).collect()),
        ]
    }

    fn blob() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..24)
    }

    fn vector() -> impl Strategy<Value = Vec<(String, u64)>> {
        prop::collection::vec((name(), any::<u64>()), 0..4)
    }

    /// Declared attributes: an empty type travels as "absent", so `Some("")` is not a value.
    fn attributes() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
        prop::collection::vec((name(), proptest::option::of("[A-Za-z]{1,8}")), 0..4)
    }

    fn actor() -> impl Strategy<Value = Actor> {
        prop_oneof![
            Just(Actor::None),
            name().prop_map(Actor::User),
            name().prop_map(Actor::Node),
        ]
    }

    fn op() -> impl Strategy<Value = TxnOp> {
        prop_oneof![
            (name(), name(), blob(), blob()).prop_map(|(table, pk_attr, pk, record)| TxnOp::Put {
                table,
                pk_attr,
                pk,
                record
            }),
            (name(), name(), blob()).prop_map(|(table, pk_attr, pk)| TxnOp::Delete {
                table,
                pk_attr,
                pk
            }),
            name().prop_map(|name| TxnOp::CreateDatabase { name }),
            (
                name(),
                name(),
                attributes(),
                any::<bool>(),
                proptest::option::of(any::<u64>())
            )
                .prop_map(
                    |(table, pk_attr, attributes, schema_defined, expiration)| {
                        TxnOp::CreateTable {
                            table,
                            pk_attr,
                            attributes,
                            schema_defined,
                            expiration,
                        }
                    }
                ),
            (name(), name())
                .prop_map(|(table, attribute)| TxnOp::CreateAttribute { table, attribute }),
            name().prop_map(|table| TxnOp::DropTable { table }),
            (name(), name())
                .prop_map(|(table, attribute)| TxnOp::DropAttribute { table, attribute }),
            name().prop_map(|name| TxnOp::DropDatabase { name }),
        ]
    }

    fn txn() -> impl Strategy<Value = Txn> {
        (
            name(),
            any::<u64>(),
            name(),
            actor(),
            kind(),
            prop::collection::vec(op(), 0..4),
        )
            .prop_map(|(origin, version, db, actor, kind, ops)| Txn {
                origin,
                version,
                db,
                actor,
                kind,
                ops,
            })
    }

    fn kind() -> impl Strategy<Value = TxnKind> {
        prop_oneof![
            Just(TxnKind::None),
            Just(TxnKind::Insert),
            Just(TxnKind::Update),
            Just(TxnKind::Upsert),
            Just(TxnKind::Delete),
        ]
    }

    fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (
                vector(),
                proptest::option::of(prop::collection::vec(name(), 0..4)),
                proptest::option::of(prop::collection::vec(name(), 0..4))
            )
                .prop_map(|(origins, tables, relay)| Frame::Subscribe {
                    origins,
                    tables,
                    relay
                }),
            prop::collection::vec(txn(), 0..3).prop_map(|txns| Frame::Txns { txns }),
            vector().prop_map(|applied| Frame::Ack { applied }),
            vector().prop_map(|origins| Frame::NeedCopy { origins }),
            blob().prop_map(|json| Frame::OpRequest { json }),
            (any::<u16>(), blob()).prop_map(|(status, json)| Frame::OpResponse { status, json }),
            name().prop_map(|reason| Frame::Error { reason }),
            (name(), blob()).prop_map(|(table, key)| Frame::CopyRequest { table, key }),
            (vector(), prop::collection::vec(name(), 0..4), any::<u64>()).prop_map(
                |(vector, databases, total)| Frame::CopyStart {
                    vector,
                    databases,
                    total
                }
            ),
            (
                name(),
                name(),
                any::<bool>(),
                attributes(),
                proptest::option::of(any::<u64>())
            )
                .prop_map(
                    |(table, pk_attr, schema_defined, attributes, expiration)| {
                        Frame::CopyTable {
                            table,
                            pk_attr,
                            schema_defined,
                            attributes,
                            expiration,
                        }
                    }
                ),
            (
                name(),
                prop::collection::vec(
                    (blob(), any::<u64>(), name(), proptest::option::of(blob())),
                    0..4
                )
            )
                .prop_map(|(table, rows)| Frame::CopyRows {
                    table,
                    rows: rows
                        .into_iter()
                        .map(|(pk, version, origin, json)| CopyRow {
                            pk,
                            version,
                            origin,
                            json
                        })
                        .collect(),
                }),
            Just(Frame::CopyEnd),
        ]
    }

    /// One edit of an encoded frame.
    #[derive(Debug, Clone)]
    enum Mutation {
        Set(usize, u8),
        Flip(usize, u8),
        Insert(usize, u8),
        Remove(usize),
        Truncate(usize),
        /// A varint claiming a huge length or count, spliced in.
        HugeVarint(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
            (any::<usize>(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, bit)),
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<usize>().prop_map(Mutation::Remove),
            any::<usize>().prop_map(Mutation::Truncate),
            any::<usize>().prop_map(Mutation::HugeVarint),
        ]
    }

    fn mutate(buf: &mut Vec<u8>, m: &Mutation) {
        let len = buf.len();
        let at = |i: usize| if len == 0 { 0 } else { i % len };
        match *m {
            Mutation::Set(i, b) if len > 0 => buf[at(i)] = b,
            Mutation::Flip(i, bit) if len > 0 => buf[at(i)] ^= 1 << bit,
            Mutation::Insert(i, b) => buf.insert(i % (len + 1), b),
            Mutation::Remove(i) if len > 0 => {
                buf.remove(at(i));
            }
            Mutation::Truncate(i) => buf.truncate(i % (len + 1)),
            Mutation::HugeVarint(i) => {
                let mut e = Enc::default();
                e.varint(u64::MAX >> (i % 40));
                let p = i % (len + 1);
                buf.splice(p..p, e.buf);
            }
            _ => {}
        }
    }

    /// What the receiving side runs on a decoded frame before anything reaches the core
    /// (repl::validate): it must answer every frame, however odd, without panicking.
    fn peer_checks(f: &Frame) {
        use crate::repl::validate;
        for ceiling in [0, 1 << 40, u64::MAX] {
            match f {
                Frame::Txns { txns } => {
                    for db in ["system", "dev", ""] {
                        let _ = validate::txns(txns, db, ceiling);
                    }
                }
                Frame::CopyStart { vector, .. } => {
                    let _ = validate::vector(vector, ceiling);
                }
                Frame::CopyTable {
                    table,
                    pk_attr,
                    attributes,
                    ..
                } => {
                    for db in ["system", "dev"] {
                        let _ = validate::copy_table(db, table, pk_attr, attributes);
                    }
                }
                Frame::CopyRows { rows, .. } => {
                    let _ = validate::copy_rows(rows, ceiling);
                }
                _ => {}
            }
        }
    }

    /// The property every input must hold: decoding never panics, an error names its cause,
    /// a frame that decodes is stable through encode/decode, and no allocation is far larger
    /// than the input (a Vec of n items costs up to ~104 bytes per input byte, capped by
    /// `MAX_PREALLOC` items for counts that are still unchecked).
    fn check(buf: &[u8]) -> Result<(), TestCaseError> {
        let (result, peak) = peak_allocation(|| Frame::decode(buf));
        prop_assert!(
            peak <= 64 * 1024 + 128 * buf.len(),
            "decoding {} bytes allocated {peak} bytes at once",
            buf.len()
        );
        match result {
            Ok(f) => {
                peer_checks(&f);
                prop_assert_eq!(Frame::decode(&f.encode()), Ok(f));
            }
            Err(e) => prop_assert!(!e.0.is_empty()),
        }
        Ok(())
    }

    /// `cases` unless `PROPTEST_CASES` asks for another count (longer runs by hand).
    fn config(cases: u32) -> ProptestConfig {
        let mut c = ProptestConfig::default();
        if std::env::var_os("PROPTEST_CASES").is_none() {
            c.cases = cases;
        }
        // Failing seeds are kept under tests/ (re-run first on every run), not in a
        // top-level proptest-regressions/ folder.
        c.failure_persistence = Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "tests/proptest-regressions/wire.txt",
            ),
        ));
        c
    }

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn prop_valid_frames_round_trip(f in frame()) {
            peer_checks(&f);
            prop_assert_eq!(Frame::decode(&f.encode()), Ok(f));
        }

        #[test]
        fn prop_every_truncation_of_a_valid_frame_is_an_error(f in frame(), cut in any::<usize>()) {
            let buf = f.encode();
            let n = cut % buf.len();
            let r = Frame::decode(&buf[..n]);
            // CopyStart's trailing `total` is optional (older senders): cutting exactly it off
            // is a valid frame with total 0. The same holds for CopyTable's `expiration`.
            let optional_tail = match &f {
                Frame::CopyStart { vector, databases, .. } => {
                    let old = Frame::CopyStart {
                        vector: vector.clone(),
                        databases: databases.clone(),
                        total: 0,
                    };
                    n == old.encode().len() - 1 && r == Ok(old)
                }
                // CopyTable's trailing `expiration` likewise (sent only when set).
                Frame::CopyTable { expiration: Some(_), .. } => {
                    let mut old = f.clone();
                    if let Frame::CopyTable { expiration, .. } = &mut old {
                        *expiration = None;
                    }
                    n == old.encode().len() && r == Ok(old)
                }
                // Subscribe's trailing `relay` likewise (sent only when relaying).
                Frame::Subscribe { relay: Some(_), .. } => {
                    let mut old = f.clone();
                    if let Frame::Subscribe { relay, .. } = &mut old {
                        *relay = None;
                    }
                    n == old.encode().len() && r == Ok(old)
                }
                _ => false,
            };
            prop_assert!(r.is_err() || optional_tail, "prefix {n} of {f:?} decoded");
        }

        #[test]
        fn prop_mutated_frames_never_panic(
            f in frame(),
            edits in prop::collection::vec(mutation(), 1..4),
        ) {
            let mut buf = f.encode();
            for m in &edits {
                mutate(&mut buf, m);
            }
            check(&buf)?;
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..256)) {
            check(&buf)?;
        }

        #[test]
        fn prop_arbitrary_bodies_of_every_kind_never_panic(
            kind in 0u8..14,
            body in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut buf = vec![PROTOCOL_VERSION, kind];
            buf.extend_from_slice(&body);
            check(&buf)?;
        }
    }

    /// A count that fits the frame's length but whose items are garbage: the decoder used to
    /// reserve `count` items up front (~112 bytes each), so a 64 MiB frame of zeros claiming
    /// 64 Mi transactions asked for ~7 GiB before reading the first one.
    #[test]
    fn hostile_counts_do_not_reserve_memory_for_items_that_never_come() {
        let n = 1usize << 20;
        for kind in [
            SUBSCRIBE, TXNS, ACK, NEED_COPY, COPY_START, COPY_TABLE, COPY_ROWS,
        ] {
            let mut e = Enc::default();
            e.u8(PROTOCOL_VERSION);
            e.u8(kind);
            if matches!(kind, COPY_TABLE | COPY_ROWS) {
                e.str("t");
            }
            if kind == COPY_TABLE {
                e.str("id");
                e.bool(false);
            }
            e.varint(n as u64);
            e.buf.resize(e.buf.len() + n, 0xff);
            let (r, peak) = peak_allocation(|| Frame::decode(&e.buf));
            assert!(r.is_err(), "kind {kind} decoded");
            assert!(
                peak < 4 * n,
                "kind {kind}: {peak} bytes reserved for a {} byte frame",
                e.buf.len()
            );
        }
        // The same inside a transaction's op list.
        let mut ops = Enc::default();
        ops.u8(2);
        ops.u8(0);
        ops.varint(n as u64);
        ops.buf.resize(ops.buf.len() + n, 0xff);
        let mut e = start_txns(1);
        put_txn(&mut e, "a", 1, "dev", &ops.buf);
        let (r, peak) = peak_allocation(|| Frame::decode(&e.buf));
        assert!(r.is_err());
        assert!(peak < 4 * n, "{peak} bytes reserved for an op list");
    }
}
