//! A committed transaction as the audit log stores it and the replication stream carries it.
//!
//! One client request (or one replicated transaction) = one `Txn` = one version. The ops are the
//! transaction's effects after LWW on the origin: whole records for puts (Harper's update/upsert
//! are read-merge-put, so a put always carries the full record), tombstones for deletes, and
//! schema changes, so that tables created on one node appear on the others.

use super::codec::{vec_for, Dec, DecodeError, Enc};

/// Format byte of an encoded op list; bump it when the layout changes. Format 1 (no actor) is
/// still read: stores and peers written before the actor existed keep working.
const OPS_FORMAT_V1: u8 = 1;
/// Format 2: `[2][actor kind][actor name][count][ops...]` (no write kind); still read.
const OPS_FORMAT_V2: u8 = 2;
/// Format 3: `[3][actor kind][actor name][write kind][count][ops...]`.
const OPS_FORMAT: u8 = 3;

/// Which operation made a transaction (`read_audit_log` names it: Harper reports insert, update,
/// upsert and delete apart). Carried with the entry, so a replicated transaction keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TxnKind {
    /// Not recorded (entries of format 1 and 2, schema changes, node-made system writes).
    #[default]
    None,
    Insert,
    Update,
    Upsert,
    Delete,
}

impl TxnKind {
    fn code(self) -> u8 {
        match self {
            TxnKind::None => 0,
            TxnKind::Insert => 1,
            TxnKind::Update => 2,
            TxnKind::Upsert => 3,
            TxnKind::Delete => 4,
        }
    }

    fn from_code(c: u8) -> Result<Self, DecodeError> {
        Ok(match c {
            0 => TxnKind::None,
            1 => TxnKind::Insert,
            2 => TxnKind::Update,
            3 => TxnKind::Upsert,
            4 => TxnKind::Delete,
            _ => return Err(DecodeError("unknown write kind")),
        })
    }

    /// Harper's operation name, when recorded.
    pub fn name(self) -> Option<&'static str> {
        match self {
            TxnKind::None => None,
            TxnKind::Insert => Some("insert"),
            TxnKind::Update => Some("update"),
            TxnKind::Upsert => Some("upsert"),
            TxnKind::Delete => Some("delete"),
        }
    }
}

/// A decoded audit entry: who, which operation, and its ops.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub actor: Actor,
    pub kind: TxnKind,
    pub ops: Vec<TxnOp>,
}

/// Who made a transaction on its origin node: the authenticated user of the request, or the node
/// itself (membership rows it writes on its own behalf or on a peer's authenticated request).
/// Carried in the audit entry, so `read_audit_log` can name the user and a receiver can check
/// that a write to `system.hdb_user`/`hdb_role` was made by a super_user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Actor {
    /// Unknown (entries written before actors were recorded).
    #[default]
    None,
    User(String),
    Node(String),
}

impl Actor {
    pub fn user_name(&self) -> Option<&str> {
        match self {
            Actor::User(u) => Some(u),
            _ => None,
        }
    }
}

fn put_actor(e: &mut Enc, actor: &Actor) {
    match actor {
        Actor::None => e.u8(0),
        Actor::User(u) => {
            e.u8(1);
            e.str(u);
        }
        Actor::Node(n) => {
            e.u8(2);
            e.str(n);
        }
    }
}

fn get_actor(d: &mut Dec<'_>) -> Result<Actor, DecodeError> {
    Ok(match d.u8()? {
        0 => Actor::None,
        1 => Actor::User(d.string()?),
        2 => Actor::Node(d.string()?),
        _ => return Err(DecodeError("unknown actor kind")),
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct Txn {
    /// Name of the node where the transaction was first committed.
    pub origin: String,
    pub version: u64,
    pub db: String,
    pub actor: Actor,
    pub kind: TxnKind,
    pub ops: Vec<TxnOp>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TxnOp {
    /// A full record. `pk` is the order-preserving key encoding, `record` compact JSON text.
    /// `pk_attr` travels with every write so a receiver can create a table it has not seen yet.
    Put {
        table: String,
        pk_attr: String,
        pk: Vec<u8>,
        record: Vec<u8>,
    },
    Delete {
        table: String,
        pk_attr: String,
        pk: Vec<u8>,
    },
    /// In the `system` log: a database appeared (so new nodes learn every database).
    CreateDatabase {
        name: String,
    },
    CreateTable {
        table: String,
        pk_attr: String,
        attributes: Vec<(String, Option<String>)>,
        schema_defined: bool,
        /// Harper's table `expiration` (seconds); encoded as op kind 9 when set, so entries
        /// without it keep their old encoding.
        expiration: Option<u64>,
    },
    CreateAttribute {
        table: String,
        attribute: String,
    },
    /// Drops travel only when asked (`replicated: true`), as in Harper.
    DropTable {
        table: String,
    },
    DropAttribute {
        table: String,
        attribute: String,
    },
    DropDatabase {
        name: String,
    },
}

impl TxnOp {
    pub fn table(&self) -> Option<&str> {
        match self {
            TxnOp::Put { table, .. }
            | TxnOp::Delete { table, .. }
            | TxnOp::CreateTable { table, .. }
            | TxnOp::CreateAttribute { table, .. }
            | TxnOp::DropTable { table }
            | TxnOp::DropAttribute { table, .. } => Some(table),
            TxnOp::CreateDatabase { .. } | TxnOp::DropDatabase { .. } => None,
        }
    }
}

pub fn encode_ops(actor: &Actor, kind: TxnKind, ops: &[TxnOp]) -> Vec<u8> {
    let mut w = OpsWriter::default();
    for op in ops {
        w.op(op);
    }
    w.finish(actor, kind)
}

/// Builds an encoded op list one op at a time, borrowing the data (the write path encodes each
/// record straight into the audit entry instead of first collecting owned `TxnOp`s).
#[derive(Default)]
pub struct OpsWriter {
    count: usize,
    body: Enc,
}

impl OpsWriter {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn put(&mut self, table: &str, pk_attr: &str, pk: &[u8], record: &[u8]) {
        self.count += 1;
        let e = &mut self.body;
        e.u8(1);
        e.str(table);
        e.str(pk_attr);
        e.bytes(pk);
        e.bytes(record);
    }

    pub fn delete(&mut self, table: &str, pk_attr: &str, pk: &[u8]) {
        self.count += 1;
        let e = &mut self.body;
        e.u8(2);
        e.str(table);
        e.str(pk_attr);
        e.bytes(pk);
    }

    /// The encoded op list: `[format][actor][kind][count][ops...]`.
    pub fn finish(self, actor: &Actor, kind: TxnKind) -> Vec<u8> {
        let mut e = Enc::with_capacity(self.body.buf.len() + 32);
        e.u8(OPS_FORMAT);
        put_actor(&mut e, actor);
        e.u8(kind.code());
        e.varint(self.count as u64);
        e.buf.extend_from_slice(&self.body.buf);
        e.buf
    }

    pub fn op(&mut self, op: &TxnOp) {
        match op {
            TxnOp::Put {
                table,
                pk_attr,
                pk,
                record,
            } => return self.put(table, pk_attr, pk, record),
            TxnOp::Delete { table, pk_attr, pk } => return self.delete(table, pk_attr, pk),
            _ => {}
        }
        self.count += 1;
        let e = &mut self.body;
        match op {
            TxnOp::Put { .. } | TxnOp::Delete { .. } => {}
            TxnOp::CreateDatabase { name } => {
                e.u8(3);
                e.str(name);
            }
            TxnOp::CreateTable {
                table,
                pk_attr,
                attributes,
                schema_defined,
                expiration,
            } => {
                e.u8(if expiration.is_some() { 9 } else { 4 });
                e.str(table);
                e.str(pk_attr);
                e.bool(*schema_defined);
                e.attributes(attributes);
                if let Some(secs) = expiration {
                    e.varint(*secs);
                }
            }
            TxnOp::CreateAttribute { table, attribute } => {
                e.u8(5);
                e.str(table);
                e.str(attribute);
            }
            TxnOp::DropTable { table } => {
                e.u8(6);
                e.str(table);
            }
            TxnOp::DropAttribute { table, attribute } => {
                e.u8(7);
                e.str(table);
                e.str(attribute);
            }
            TxnOp::DropDatabase { name } => {
                e.u8(8);
                e.str(name);
            }
        }
    }
}

/// Keeps only the ops `keep` accepts (ops without a table, like database creation, are always
/// kept); returns None when every op is kept, so callers can forward the original bytes.
pub fn filter_ops(buf: &[u8], keep: impl Fn(&str) -> bool) -> Result<Option<Vec<u8>>, DecodeError> {
    let e = decode_entry(buf)?;
    if e.ops.iter().all(|o| o.table().is_none_or(&keep)) {
        return Ok(None);
    }
    let mut w = OpsWriter::default();
    for op in e.ops.iter().filter(|o| o.table().is_none_or(&keep)) {
        w.op(op);
    }
    Ok(Some(w.finish(&e.actor, e.kind)))
}

/// The ops of an encoded entry (any format).
pub fn decode_ops(buf: &[u8]) -> Result<Vec<TxnOp>, DecodeError> {
    decode_entry(buf).map(|e| e.ops)
}

/// The actor, kind and ops of an encoded entry (any format).
pub fn decode_entry(buf: &[u8]) -> Result<Entry, DecodeError> {
    let mut d = Dec::new(buf);
    let entry = decode_entry_from(&mut d)?;
    if !d.is_empty() {
        return Err(DecodeError("trailing bytes after ops"));
    }
    Ok(entry)
}

pub fn decode_entry_from(d: &mut Dec<'_>) -> Result<Entry, DecodeError> {
    let (actor, kind) = match d.u8()? {
        OPS_FORMAT_V1 => (Actor::None, TxnKind::None),
        OPS_FORMAT_V2 => (get_actor(d)?, TxnKind::None),
        OPS_FORMAT => (get_actor(d)?, TxnKind::from_code(d.u8()?)?),
        _ => return Err(DecodeError("unknown ops format")),
    };
    let n = d.count()?;
    let mut ops = vec_for(n);
    for _ in 0..n {
        let op = match d.u8()? {
            1 => TxnOp::Put {
                table: d.string()?,
                pk_attr: d.string()?,
                pk: d.bytes()?.to_vec(),
                record: d.bytes()?.to_vec(),
            },
            2 => TxnOp::Delete {
                table: d.string()?,
                pk_attr: d.string()?,
                pk: d.bytes()?.to_vec(),
            },
            3 => TxnOp::CreateDatabase { name: d.string()? },
            kind @ (4 | 9) => {
                let table = d.string()?;
                let pk_attr = d.string()?;
                let schema_defined = d.bool()?;
                let attributes = d.attributes()?;
                let expiration = if kind == 9 { Some(d.varint()?) } else { None };
                TxnOp::CreateTable {
                    table,
                    pk_attr,
                    attributes,
                    schema_defined,
                    expiration,
                }
            }
            5 => TxnOp::CreateAttribute {
                table: d.string()?,
                attribute: d.string()?,
            },
            6 => TxnOp::DropTable { table: d.string()? },
            7 => TxnOp::DropAttribute {
                table: d.string()?,
                attribute: d.string()?,
            },
            8 => TxnOp::DropDatabase { name: d.string()? },
            _ => return Err(DecodeError("unknown op kind")),
        };
        ops.push(op);
    }
    Ok(Entry { actor, kind, ops })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<TxnOp> {
        vec![
            TxnOp::CreateDatabase { name: "dev".into() },
            TxnOp::CreateTable {
                table: "dog".into(),
                pk_attr: "id".into(),
                attributes: vec![("name".into(), Some("String".into())), ("age".into(), None)],
                schema_defined: true,
                expiration: Some(60),
            },
            TxnOp::Put {
                table: "dog".into(),
                pk_attr: "id".into(),
                pk: vec![0x10, 1, 2, 3, 4, 5, 6, 7, 8],
                record: br#"{"id":1}"#.to_vec(),
            },
            TxnOp::Delete {
                table: "dog".into(),
                pk_attr: "id".into(),
                pk: vec![0x20, b'a', 0, 1],
            },
            TxnOp::CreateAttribute {
                table: "dog".into(),
                attribute: "x".into(),
            },
            TxnOp::DropAttribute {
                table: "dog".into(),
                attribute: "x".into(),
            },
            TxnOp::DropTable {
                table: "dog".into(),
            },
            TxnOp::DropDatabase { name: "dev".into() },
        ]
    }

    #[test]
    fn ops_round_trip() {
        let ops = sample();
        for (actor, kind) in [
            (Actor::None, TxnKind::None),
            (Actor::User("admin".into()), TxnKind::Insert),
            (Actor::Node("n1".into()), TxnKind::Delete),
            (Actor::User("u".into()), TxnKind::Update),
            (Actor::User("u".into()), TxnKind::Upsert),
        ] {
            assert_eq!(
                decode_entry(&encode_ops(&actor, kind, &ops)).unwrap(),
                Entry {
                    actor,
                    kind,
                    ops: ops.clone()
                }
            );
        }
    }

    #[test]
    fn entries_written_before_actors_and_kinds_still_decode() {
        // Format 3 with no actor and no kind: `[3][0][0][count][ops...]`.
        let v3 = encode_ops(&Actor::None, TxnKind::None, &sample());
        // Format 1: `[1][count][ops...]`, as stores and peers of older releases wrote.
        let mut v1 = vec![OPS_FORMAT_V1];
        v1.extend_from_slice(&v3[3..]);
        // Format 2: `[2][actor][count][ops...]`.
        let mut v2 = vec![OPS_FORMAT_V2, 1, 1, b'u'];
        v2.extend_from_slice(&v3[3..]);
        assert_eq!(
            decode_entry(&v1).unwrap(),
            Entry {
                actor: Actor::None,
                kind: TxnKind::None,
                ops: sample()
            }
        );
        assert_eq!(
            decode_entry(&v2).unwrap(),
            Entry {
                actor: Actor::User("u".into()),
                kind: TxnKind::None,
                ops: sample()
            }
        );
    }

    #[test]
    fn filtering_keeps_the_actor_and_kind() {
        let actor = Actor::User("u".into());
        let buf = encode_ops(&actor, TxnKind::Upsert, &sample());
        let kept = filter_ops(&buf, |t| t != "dog").unwrap().unwrap();
        let e = decode_entry(&kept).unwrap();
        assert_eq!(e.actor, actor);
        assert_eq!(e.kind, TxnKind::Upsert);
        assert_eq!(e.ops.len(), 2);
    }

    #[test]
    fn every_truncation_of_a_valid_entry_is_an_error_not_a_panic() {
        let buf = encode_ops(&Actor::User("x".into()), TxnKind::Insert, &sample());
        for n in 0..buf.len() {
            assert!(
                decode_ops(&buf[..n]).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
    }
}
