//! Field-by-field checks of what a peer sends, before anything reaches the core.
//!
//! A peer is another machine: its frames are input like any request body. Everything the core
//! would store, key or index on is checked here (names, key lengths, versions, which database
//! and origin a transaction claims), so a broken or hostile peer can never panic the core,
//! exhaust a key-length limit, or push this node's clock to the end of time. A frame that fails
//! a check ends the session (the peer is disconnected and retried later): skipping a
//! transaction would leave a gap in that origin's stream, which the cursor rules forbid.
//!
//! Must never: touch the store, the core or sockets (pure functions, unit-tested).

use crate::core::catalog::{invalid_name, HDB_NODES, HDB_ROLE, HDB_USER, SYSTEM_DB};
use crate::core::hlc;
use crate::core::txn::{Actor, Txn, TxnOp};
use crate::core::CopyRow;
use crate::store::keys;

/// Longest node (origin) name accepted from a peer. Names are DNS names or IP literals; 255 is
/// DNS's own limit.
pub const MAX_NODE_NAME: usize = 255;

/// The system tables a peer may write to (`hdb_certificate` is node-local).
pub const REPLICATED_SYSTEM_TABLES: [&str; 3] = [HDB_USER, HDB_ROLE, HDB_NODES];

/// The highest version a peer may send now: `now + max_skew`.
pub fn version_ceiling(now_ms: u64, max_skew_ms: u64) -> u64 {
    hlc::from_ms(now_ms.saturating_add(max_skew_ms))
}

pub fn node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NODE_NAME || name.chars().any(char::is_control) {
        return Err(format!(
            "invalid node name ({} bytes)",
            name.len().min(1_000_000)
        ));
    }
    Ok(())
}

/// A hostname an operator may register (add_node, update_node, configure_cluster, a peer's
/// add_node_back): an IP literal (IPv6 with or without brackets) or a DNS name (labels of 1-63
/// letters, digits, `-` or `_`, not starting or ending with `-`; 253 bytes at most; one trailing
/// dot allowed). Anything else would be stored, dialled forever and never answer.
pub fn is_host(h: &str) -> bool {
    let bare = h
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(h);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = h.strip_suffix('.').unwrap_or(h);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

fn version(v: u64, ceiling: u64) -> Result<(), String> {
    if v == 0 || v > ceiling {
        return Err(format!(
            "version {v} is outside what this node accepts (1..={ceiling}); is the peer's clock far ahead?"
        ));
    }
    Ok(())
}

fn name(kind: &str, n: &str) -> Result<(), String> {
    match invalid_name(kind, n) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

fn pk(pk: &[u8]) -> Result<(), String> {
    if pk.len() > keys::MAX_PK_BYTES || keys::decode_pk(pk).is_none() {
        return Err(format!("invalid primary key ({} bytes)", pk.len()));
    }
    Ok(())
}

fn table_in(db: &str, table: &str) -> Result<(), String> {
    name("Table", table)?;
    if db == SYSTEM_DB && !REPLICATED_SYSTEM_TABLES.contains(&table) {
        return Err(format!("system table '{table}' does not replicate"));
    }
    Ok(())
}

/// One op of a transaction in `db`.
fn op(db: &str, op: &TxnOp) -> Result<(), String> {
    match op {
        TxnOp::Put {
            table,
            pk_attr,
            pk: key,
            ..
        }
        | TxnOp::Delete {
            table,
            pk_attr,
            pk: key,
        } => {
            table_in(db, table)?;
            name("Attribute", pk_attr)?;
            pk(key)
        }
        // Databases appear and disappear in the `system` log only, and `system` never does.
        TxnOp::CreateDatabase { name: n } | TxnOp::DropDatabase { name: n } => {
            if db != SYSTEM_DB || n == SYSTEM_DB {
                return Err(format!("database op for '{n}' in the '{db}' log"));
            }
            name("Database", n)
        }
        // The system schema is fixed: no peer creates, alters or drops its tables.
        _ if db == SYSTEM_DB => Err("schema change of the system database".into()),
        TxnOp::CreateTable {
            table,
            pk_attr,
            attributes,
            ..
        } => {
            name("Table", table)?;
            name("Attribute", pk_attr)?;
            attributes
                .iter()
                .try_for_each(|(a, _)| name("Attribute", a))
        }
        TxnOp::CreateAttribute { table, attribute } | TxnOp::DropAttribute { table, attribute } => {
            name("Table", table)?;
            name("Attribute", attribute)
        }
        TxnOp::DropTable { table } => name("Table", table),
    }
}

/// Keeps the transactions of origins this socket asked for (listed, or relayed and not
/// excluded; never this node's own, `self_name`) and returns how many others were dropped. Not
/// an error: right after a subscription changed, transactions of an origin that moved to
/// another socket may still be in flight; dropping them leaves the cursor where it is, so they
/// come again from wherever that origin is streamed now.
pub fn keep_asked_for(
    txns: &mut Vec<Txn>,
    carry: &super::topology::Carry,
    self_name: &str,
) -> usize {
    let before = txns.len();
    txns.retain(|t| carry.asked_for(&t.origin, self_name));
    before - txns.len()
}

/// Checks a batch received on the pull socket for `db`: each transaction must be of that
/// database, with a sane origin name, version, actor and ops.
pub fn txns(txns: &[Txn], db: &str, ceiling: u64) -> Result<(), String> {
    for t in txns {
        if t.db != db {
            return Err(format!(
                "a transaction of database '{}' on the '{db}' stream",
                t.db
            ));
        }
        node_name(&t.origin)?;
        version(t.version, ceiling)?;
        match &t.actor {
            Actor::None => {}
            Actor::User(n) | Actor::Node(n) => {
                if n.is_empty() || n.len() > MAX_NODE_NAME.max(250) {
                    return Err("invalid actor name".into());
                }
            }
        }
        for o in &t.ops {
            op(db, o)?;
        }
    }
    Ok(())
}

/// Checks a version vector (a full copy's snapshot vector).
pub fn vector(v: &[(String, u64)], ceiling: u64) -> Result<(), String> {
    for (origin, ver) in v {
        node_name(origin)?;
        if *ver > ceiling {
            return version(*ver, ceiling);
        }
    }
    Ok(())
}

/// Checks the schema of a table in a full copy of `db`.
pub fn copy_table(
    db: &str,
    table: &str,
    pk_attr: &str,
    attributes: &[(String, Option<String>)],
) -> Result<(), String> {
    table_in(db, table)?;
    name("Attribute", pk_attr)?;
    attributes
        .iter()
        .try_for_each(|(a, _)| name("Attribute", a))
}

/// Checks the rows of a full copy.
pub fn copy_rows(rows: &[CopyRow], ceiling: u64) -> Result<(), String> {
    for r in rows {
        pk(&r.pk)?;
        node_name(&r.origin)?;
        version(r.version, ceiling)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_are_neither_dns_names_nor_ip_literals_are_refused() {
        for ok in [
            "127.0.0.2",
            "::1",
            "[::1]",
            "fe80::1",
            "node-1",
            "node_1.example.com",
            "example.com.",
            "localhost",
            "a",
        ] {
            assert!(is_host(ok), "{ok}");
        }
        let long_label = "a".repeat(64);
        let long_name = vec!["abc"; 70].join(".");
        for bad in [
            "",
            "not a host!!",
            "-lead.example",
            "trail-.example",
            "a..b",
            ".",
            "host:9933",
            "ws://host",
            "h\u{0}st",
            "caf\u{e9}",
            long_label.as_str(),
            long_name.as_str(),
            "[127.0.0.1",
        ] {
            assert!(!is_host(bad), "{bad:?}");
        }
    }

    fn txn(db: &str, origin: &str, version: u64, ops: Vec<TxnOp>) -> Txn {
        Txn {
            origin: origin.into(),
            version,
            db: db.into(),
            actor: Actor::None,
            kind: Default::default(),
            ops,
        }
    }

    fn put(table: &str, pk: Vec<u8>) -> TxnOp {
        TxnOp::Put {
            table: table.into(),
            pk_attr: "id".into(),
            pk,
            record: b"{}".to_vec(),
        }
    }

    fn good_pk() -> Vec<u8> {
        keys::encode_pk(&serde_json::json!(1)).unwrap()
    }

    /// (case, transaction, accepted?) on the `dev` stream that asked for origins a and b.
    #[test]
    fn received_transactions_rule_table() {
        let ceiling = hlc::from_ms(1_000_000);
        let long_name = "x".repeat(70_000);
        let cases: Vec<(&str, Txn, bool)> = vec![
            (
                "ordinary put",
                txn("dev", "a", 5, vec![put("t", good_pk())]),
                true,
            ),
            (
                "other database on this stream",
                txn("system", "a", 5, vec![]),
                false,
            ),
            (
                "version in the far future",
                txn("dev", "a", ceiling + 1, vec![]),
                false,
            ),
            ("version u64::MAX", txn("dev", "a", u64::MAX, vec![]), false),
            ("version zero", txn("dev", "a", 0, vec![]), false),
            (
                "origin name over 64 KiB",
                txn("dev", &long_name, 5, vec![]),
                false,
            ),
            (
                "key over the key limit",
                txn("dev", "a", 5, vec![put("t", vec![0x20; 70_000])]),
                false,
            ),
            (
                "undecodable key",
                txn("dev", "a", 5, vec![put("t", vec![0x99])]),
                false,
            ),
            (
                "table name with a slash",
                txn("dev", "a", 5, vec![put("a/b", good_pk())]),
                false,
            ),
            (
                "database op outside system",
                txn(
                    "dev",
                    "a",
                    5,
                    vec![TxnOp::CreateDatabase { name: "x".into() }],
                ),
                false,
            ),
        ];
        for (case, t, ok) in cases {
            assert_eq!(txns(&[t], "dev", ceiling).is_ok(), ok, "{case}");
        }
    }

    #[test]
    fn transactions_of_origins_not_asked_for_are_dropped() {
        let mut batch = vec![
            txn("dev", "a", 5, vec![]),
            txn("dev", "evil", 6, vec![]),
            txn("dev", "b", 7, vec![]),
        ];
        let listed = super::super::topology::Carry {
            origins: vec!["a".to_string(), "b".to_string()],
            relay_except: None,
        };
        let dropped = keep_asked_for(&mut batch, &listed, "me");
        assert_eq!(dropped, 1);
        assert!(batch.iter().all(|t| t.origin != "evil"));
        // Relaying: any origin but the excluded members and this node itself.
        let relayed = super::super::topology::Carry {
            origins: vec!["a".to_string()],
            relay_except: Some(vec!["b".to_string()]),
        };
        let mut batch = vec![
            txn("dev", "a", 5, vec![]),
            txn("dev", "b", 6, vec![]),
            txn("dev", "me", 7, vec![]),
            txn("dev", "x", 8, vec![]),
        ];
        assert_eq!(keep_asked_for(&mut batch, &relayed, "me"), 2);
        let kept: Vec<_> = batch.iter().map(|t| t.origin.as_str()).collect();
        assert_eq!(kept, ["a", "x"]);
    }

    #[test]
    fn system_stream_carries_only_the_replicated_tables_and_database_ops() {
        let ceiling = hlc::from_ms(1_000_000);
        let ok = |ops: Vec<TxnOp>| txns(&[txn("system", "a", 5, ops)], "system", ceiling).is_ok();
        assert!(ok(vec![put(HDB_USER, good_pk())]));
        assert!(ok(vec![put(HDB_NODES, good_pk())]));
        assert!(ok(vec![TxnOp::CreateDatabase { name: "dev".into() }]));
        assert!(!ok(vec![put("hdb_certificate", good_pk())]));
        assert!(!ok(vec![put("hdb_other", good_pk())]));
        assert!(!ok(vec![TxnOp::DropDatabase {
            name: "system".into()
        }]));
        assert!(!ok(vec![TxnOp::DropTable {
            table: HDB_USER.into()
        }]));
    }
}
