//! A committed transaction as the audit log stores it and the replication stream carries it.
//!
//! One client request (or one replicated transaction) = one `Txn` = one version. The ops are the
//! transaction's effects after LWW on the origin: whole records for puts (Harper's update/upsert
//! are read-merge-put, so a put always carries the full record), tombstones for deletes, and
//! schema changes, so that tables created on one node appear on the others.

use super::codec::{Dec, DecodeError, Enc};

/// Format byte of an encoded op list; bump it when the layout changes.
const OPS_FORMAT: u8 = 1;

#[derive(Debug, Clone, PartialEq)]
pub struct Txn {
    /// Name of the node where the transaction was first committed.
    pub origin: String,
    pub version: u64,
    pub db: String,
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

pub fn encode_ops(ops: &[TxnOp]) -> Vec<u8> {
    let mut w = OpsWriter::default();
    for op in ops {
        w.op(op);
    }
    w.finish()
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

    /// The encoded op list: `[format][count][ops...]`.
    pub fn finish(self) -> Vec<u8> {
        let mut e = Enc::with_capacity(self.body.buf.len() + 11);
        e.u8(OPS_FORMAT);
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
            } => {
                e.u8(4);
                e.str(table);
                e.str(pk_attr);
                e.bool(*schema_defined);
                e.attributes(attributes);
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
    let ops = decode_ops(buf)?;
    if ops.iter().all(|o| o.table().is_none_or(&keep)) {
        return Ok(None);
    }
    let mut w = OpsWriter::default();
    for op in ops.iter().filter(|o| o.table().is_none_or(&keep)) {
        w.op(op);
    }
    Ok(Some(w.finish()))
}

pub fn decode_ops(buf: &[u8]) -> Result<Vec<TxnOp>, DecodeError> {
    let mut d = Dec::new(buf);
    let ops = decode_ops_from(&mut d)?;
    if !d.is_empty() {
        return Err(DecodeError("trailing bytes after ops"));
    }
    Ok(ops)
}

pub fn decode_ops_from(d: &mut Dec<'_>) -> Result<Vec<TxnOp>, DecodeError> {
    if d.u8()? != OPS_FORMAT {
        return Err(DecodeError("unknown ops format"));
    }
    let n = d.count()?;
    let mut ops = Vec::with_capacity(n);
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
            4 => {
                let table = d.string()?;
                let pk_attr = d.string()?;
                let schema_defined = d.bool()?;
                let attributes = d.attributes()?;
                TxnOp::CreateTable {
                    table,
                    pk_attr,
                    attributes,
                    schema_defined,
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
    Ok(ops)
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
        assert_eq!(decode_ops(&encode_ops(&ops)).unwrap(), ops);
    }

    #[test]
    fn every_truncation_of_a_valid_entry_is_an_error_not_a_panic() {
        let buf = encode_ops(&sample());
        for n in 0..buf.len() {
            assert!(
                decode_ops(&buf[..n]).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
    }
}
