//! Deterministic tests of the core's rules, with an in-memory store standing in for fjall.

use super::op::{RecordBatch, WriteKind, WriteOp};
use super::txn::{Txn, TxnOp};
use super::*;
use crate::store::digest;
use crate::store::keys;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

/// What a store keeps: only what a commit handed it (a crash loses the core, never this).
#[derive(Default, Clone)]
pub(crate) struct MemStore {
    records: HashMap<(u32, Vec<u8>), StoredRecord>,
    audit: Vec<(u32, u32, u64, Vec<u8>)>,
    catalog: Option<Vec<u8>>,
    hlc_floor: u64,
    origins: Vec<(String, u32)>,
    cursors: BTreeMap<(u32, u32), u64>,
    stats: HashMap<u32, crate::store::TableStats>,
    /// (db, origin) → below this version the audit log of that origin is incomplete here.
    low_watermarks: BTreeMap<(u32, u32), u64>,
    /// Node-local values (a full copy's resume state).
    pub(crate) locals: BTreeMap<String, Vec<u8>>,
}

impl StoreView for MemStore {
    fn get_record(&self, table: u32, pk: &[u8]) -> Result<Option<StoredRecord>, StoreError> {
        Ok(self.records.get(&(table, pk.to_vec())).cloned())
    }
}

impl MemStore {
    fn apply(&mut self, writes: &[Write]) {
        for w in writes {
            match w {
                Write::Record { table, pk, record } => {
                    self.records.insert((*table, pk.clone()), record.clone());
                }
                Write::Audit {
                    db,
                    origin,
                    version,
                    ops,
                } => self.audit.push((*db, *origin, *version, ops.clone())),
                Write::Catalog(json) => self.catalog = Some(json.clone()),
                Write::HlcFloor(v) => self.hlc_floor = *v,
                Write::Origin { name, id } => self.origins.push((name.clone(), *id)),
                Write::Cursor {
                    db,
                    origin,
                    version,
                } => {
                    self.cursors.insert((*db, *origin), *version);
                }
                Write::TableStats { table, stats } => {
                    self.stats.insert(*table, *stats);
                }
                // As the fjall store does: the pruned entries go, and the origin's low
                // watermark rises to the newest of them.
                Write::PruneAudit {
                    db,
                    origins,
                    before,
                } => {
                    for origin in origins {
                        let newest = self
                            .audit
                            .iter()
                            .filter(|(d, o, v, _)| d == db && o == origin && v < before)
                            .map(|(_, _, v, _)| *v)
                            .max();
                        self.audit
                            .retain(|(d, o, v, _)| !(d == db && o == origin && v < before));
                        if let Some(n) = newest {
                            let lw = self.low_watermarks.entry((*db, *origin)).or_insert(0);
                            *lw = (*lw).max(n);
                        }
                    }
                }
                Write::LowWatermark {
                    db,
                    origin,
                    version,
                } => {
                    let lw = self.low_watermarks.entry((*db, *origin)).or_insert(0);
                    *lw = (*lw).max(*version);
                }
                Write::Local { key, value } => match value {
                    Some(v) => {
                        self.locals.insert(key.clone(), v.clone());
                    }
                    None => {
                        self.locals.remove(key);
                    }
                },
                _ => {}
            }
        }
    }

    /// What a restart reads back (as `node::recover` does from fjall).
    fn recovered(&self) -> Recovered {
        Recovered {
            catalog: self.catalog.as_ref().map(|j| {
                let mut c: Catalog = serde_json::from_slice(j).unwrap();
                c.reindex();
                c
            }),
            hlc_floor: self.hlc_floor,
            origins: self.origins.clone(),
            cursors: self.cursors.iter().map(|(&(d, o), &v)| (d, o, v)).collect(),
            table_stats: self.stats.clone(),
            auth: Default::default(),
        }
    }
}

/// Stored entries as a snapshot scan yields them: (primary key, encoded entry).
pub(crate) type StoredRows = Vec<(Vec<u8>, Vec<u8>)>;

pub(crate) struct Node {
    pub(crate) core: Core<u32>,
    pub(crate) store: MemStore,
    pub(crate) now: u64,
}

impl Node {
    pub(crate) fn new(name: &str) -> Node {
        let mut n = Node {
            core: Core::new(name, Recovered::default()),
            store: MemStore::default(),
            now: 1_000_000,
        };
        n.run(WriteOp::CreateTable {
            database: "dev".into(),
            table: "dog".into(),
            primary_key: "id".into(),
            attributes: vec![],
            schema_defined: false,
            expiration: None,
        })
        .unwrap();
        n
    }

    /// Steps one operation and commits its group, returning the reply.
    fn run(&mut self, op: WriteOp) -> OpResult {
        self.now += 1;
        self.core
            .step(
                Input::Write {
                    op,
                    actor: txn::Actor::User("admin".into()),
                    reply: 0,
                },
                self.now,
                &self.store,
            )
            .unwrap();
        self.commit().pop().unwrap()
    }

    pub(crate) fn commit(&mut self) -> Vec<OpResult> {
        let ready = self.core.take_ready();
        self.store.apply(&ready.writes);
        ready
            .replies
            .into_iter()
            .filter_map(|(_, r)| match r {
                Reply::Op(r) => Some(r),
                Reply::Applied(_) => None,
            })
            .collect()
    }

    fn insert(&mut self, kind: WriteKind, records: Value) -> OpResult {
        let records = records
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_object().unwrap().clone())
            .collect();
        let records = RecordBatch::from_maps(records);
        self.run(WriteOp::Records {
            kind,
            database: "dev".into(),
            table: "dog".into(),
            records,
        })
    }

    fn delete(&mut self, ids: Value) -> OpResult {
        self.run(WriteOp::Delete {
            database: "dev".into(),
            table: "dog".into(),
            ids: ids.as_array().unwrap().clone(),
        })
    }

    fn get(&self, id: Value) -> Option<Value> {
        let t = self.core.catalog().table("dev", "dog").unwrap().id;
        let pk = keys::encode_pk(&id).unwrap();
        self.store
            .records
            .get(&(t, pk))
            .and_then(|r| r.json.as_ref())
            .map(|j| serde_json::from_slice(j).unwrap())
    }

    /// Every transaction this node committed in `dev`, as a peer would receive it.
    pub(crate) fn dev_txns(&self) -> Vec<Txn> {
        let db = self.core.catalog().database("dev").unwrap().id;
        self.store
            .audit
            .iter()
            .filter(|(d, o, _, _)| *d == db && *o == self.core.self_origin)
            .map(|(_, _, v, ops)| {
                let e = txn::decode_entry(ops).unwrap();
                Txn {
                    origin: self.core.node_name().to_string(),
                    version: *v,
                    db: "dev".into(),
                    actor: e.actor,
                    kind: e.kind,
                    ops: e.ops,
                }
            })
            .collect()
    }

    /// The dev transactions of `origin` this node holds (its own, or those it applied from a
    /// peer), in commit order: what it relays to a neighbour.
    pub(crate) fn dev_txns_of(&self, origin: &str) -> Vec<Txn> {
        let Some(id) = (if origin == self.core.node_name() {
            Some(self.core.self_origin)
        } else {
            self.store
                .origins
                .iter()
                .find(|(n, _)| n == origin)
                .map(|(_, id)| *id)
        }) else {
            return Vec::new();
        };
        let db = self.core.catalog().database("dev").unwrap().id;
        self.store
            .audit
            .iter()
            .filter(|(d, o, _, _)| *d == db && *o == id)
            .map(|(_, _, v, ops)| {
                let e = txn::decode_entry(ops).unwrap();
                Txn {
                    origin: origin.to_string(),
                    version: *v,
                    db: "dev".into(),
                    actor: e.actor,
                    kind: e.kind,
                    ops: e.ops,
                }
            })
            .collect()
    }

    /// The raw audit entries (version, encoded ops) of `origin` above `after` in dev, as the
    /// store's `audit_after` reads them.
    pub(crate) fn dev_log_after(&self, origin: &str, after: u64) -> Option<Vec<(u64, Vec<u8>)>> {
        let id = if origin == self.core.node_name() {
            self.core.self_origin
        } else {
            self.store
                .origins
                .iter()
                .find(|(n, _)| n == origin)
                .map(|(_, id)| *id)?
        };
        let db = self.core.catalog().database("dev")?.id;
        let mut out: Vec<(u64, Vec<u8>)> = self
            .store
            .audit
            .iter()
            .filter(|(d, o, v, _)| *d == db && *o == id && *v > after)
            .map(|(_, _, v, ops)| (*v, ops.clone()))
            .collect();
        out.sort_by_key(|(v, _)| *v);
        Some(out)
    }

    /// Receives `txns` and commits them, returning what the core reported as covered per
    /// origin (the `Applied` reply a receiving session acknowledges).
    pub(crate) fn receive_applied(&mut self, txns: Vec<Txn>) -> Vec<(String, u64)> {
        self.core
            .step(Input::Replicated { txns, reply: 7 }, self.now, &self.store)
            .unwrap();
        let ready = self.core.take_ready();
        self.store.apply(&ready.writes);
        ready
            .replies
            .into_iter()
            .find_map(|(r, reply)| match (r, reply) {
                (7, Reply::Applied(v)) => Some(v),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// dev.dog's stored entries as the store's snapshot scan yields them (primary key, encoded
    /// entry), in key order, and this node's origin names by id.
    pub(crate) fn dev_stored(&self) -> (StoredRows, HashMap<u32, String>) {
        let t = self.core.catalog().table("dev", "dog").unwrap().id;
        let mut rows: StoredRows = self
            .store
            .records
            .iter()
            .filter(|((table, _), _)| *table == t)
            .map(|((_, pk), r)| (pk.clone(), r.encode()))
            .collect();
        rows.sort();
        let mut names: HashMap<u32, String> = self
            .store
            .origins
            .iter()
            .map(|(n, id)| (*id, n.clone()))
            .collect();
        names.insert(self.core.self_origin, self.core.node_name().to_string());
        (rows, names)
    }

    /// The stored version (live or tombstone) of dev.dog's key `pk`.
    pub(crate) fn dev_version(&self, pk: &[u8]) -> Option<u64> {
        let t = self.core.catalog().table("dev", "dog").unwrap().id;
        self.store.records.get(&(t, pk.to_vec())).map(|r| r.version)
    }

    pub(crate) fn receive(&mut self, txns: Vec<Txn>) {
        self.core
            .step(Input::Replicated { txns, reply: 0 }, self.now, &self.store)
            .unwrap();
        self.commit();
    }

    fn count(&self) -> u64 {
        let t = self.core.catalog().table("dev", "dog").unwrap().id;
        self.core.stats.get(&t).map(|s| s.count).unwrap_or(0)
    }

    /// dev.dog's digest as the core keeps it with every write.
    fn digest(&self) -> u128 {
        let t = self.core.catalog().table("dev", "dog").unwrap().id;
        self.core
            .stats
            .get(&t)
            .map(|s| s.digest.expect("digest known"))
            .unwrap_or(0)
    }

    /// dev.dog's digest recomputed from the stored live records.
    fn scanned_digest(&self) -> u128 {
        let t = self.core.catalog().table("dev", "dog").unwrap().id;
        self.store
            .records
            .iter()
            .filter(|((table, _), _)| *table == t)
            .filter_map(|((_, pk), r)| {
                let json = r.json.as_ref()?;
                Some(digest::record_hash(
                    pk,
                    r.version,
                    self.core.origins.name(r.origin),
                    json,
                ))
            })
            .fold(0, digest::add)
    }
}

#[test]
fn insert_reports_harpers_shape_and_skips_existing_keys() {
    let mut n = Node::new("a");
    let r = n
        .insert(
            WriteKind::Insert,
            json!([{"id":1,"name":"Penny"},{"id":2,"name":"Harper"}]),
        )
        .unwrap();
    assert_eq!(r["message"], "inserted 2 of 2 records");
    assert_eq!(r["inserted_hashes"], json!([1, 2]));
    assert_eq!(r["skipped_hashes"], json!([]));
    assert_eq!(r["new_attributes"], json!(["name"]));
    assert!(r["txn_time"].as_f64().unwrap() > 0.0);
    let r = n
        .insert(WriteKind::Insert, json!([{"id":1,"name":"Dup"}]))
        .unwrap();
    assert_eq!(r["message"], "inserted 0 of 1 records");
    assert_eq!(r["skipped_hashes"], json!([1]));
    assert_eq!(n.get(json!(1)).unwrap()["name"], "Penny");
    assert_eq!(n.count(), 2);
}

#[test]
fn insert_without_primary_key_generates_a_uuid_and_reports_it() {
    let mut n = Node::new("a");
    let r = n
        .insert(WriteKind::Insert, json!([{"name":"Auto"}]))
        .unwrap();
    let id = r["inserted_hashes"][0].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36);
    assert_eq!(n.get(json!(id)).unwrap()["name"], "Auto");
}

#[test]
fn update_merges_and_skips_missing_keys_and_keeps_created_time() {
    let mut n = Node::new("a");
    n.insert(WriteKind::Insert, json!([{"id":1,"name":"Penny","age":5}]))
        .unwrap();
    let created = n.get(json!(1)).unwrap()["__createdtime__"].clone();
    let r = n
        .insert(
            WriteKind::Update,
            json!([{"id":1,"age":6},{"id":99,"age":1}]),
        )
        .unwrap();
    assert_eq!(r["message"], "updated 1 of 2 records");
    assert_eq!(r["update_hashes"], json!([1]));
    assert_eq!(r["skipped_hashes"], json!([99]));
    let rec = n.get(json!(1)).unwrap();
    assert_eq!(rec["name"], "Penny");
    assert_eq!(rec["age"], 6);
    assert_eq!(rec["__createdtime__"], created);
    assert!(rec["__updatedtime__"].as_f64() > created.as_f64());
    assert!(n.get(json!(99)).is_none());
}

#[test]
fn upsert_creates_or_merges_without_skipped_hashes() {
    let mut n = Node::new("a");
    n.insert(WriteKind::Insert, json!([{"id":2,"name":"Harper","age":3}]))
        .unwrap();
    let r = n
        .insert(
            WriteKind::Upsert,
            json!([{"id":2,"age":4},{"id":3,"name":"Rex"}]),
        )
        .unwrap();
    assert_eq!(r["message"], "upserted 2 of 2 records");
    assert_eq!(r["upserted_hashes"], json!([2, 3]));
    assert!(r.get("skipped_hashes").is_none());
    assert_eq!(n.get(json!(2)).unwrap()["name"], "Harper");
}

#[test]
fn delete_leaves_a_tombstone_excluded_from_the_count() {
    let mut n = Node::new("a");
    n.insert(WriteKind::Insert, json!([{"id":1},{"id":2}]))
        .unwrap();
    let r = n.delete(json!([1])).unwrap();
    assert_eq!(r["message"], "1 of 1 record successfully deleted");
    assert_eq!(r["deleted_hashes"], json!([1]));
    // Keys with no record are tombstoned too (a copy on its way from a peer must lose), but
    // reported as skipped: nothing was deleted.
    let r = n.delete(json!([404, 405])).unwrap();
    assert_eq!(r["message"], "0 of 2 records successfully deleted");
    assert_eq!(r["skipped_hashes"], json!([404, 405]));
    assert!(n.get(json!(1)).is_none());
    assert_eq!(n.count(), 1);
    // A new insert of a deleted key is allowed and counted again.
    let r = n.insert(WriteKind::Insert, json!([{"id":1}])).unwrap();
    assert_eq!(r["message"], "inserted 1 of 1 records");
    assert_eq!(n.count(), 2);
}

#[test]
fn two_requests_in_one_group_see_each_others_writes() {
    let mut n = Node::new("a");
    for _ in 0..2 {
        let op = WriteOp::Records {
            kind: WriteKind::Insert,
            database: "dev".into(),
            table: "dog".into(),
            records: RecordBatch::from_maps(vec![json!({"id":7}).as_object().unwrap().clone()]),
        };
        n.core
            .step(
                Input::Write {
                    op,
                    actor: txn::Actor::User("admin".into()),
                    reply: 0,
                },
                n.now,
                &n.store,
            )
            .unwrap();
    }
    let replies = n.commit();
    assert_eq!(
        replies[0].as_ref().unwrap()["message"],
        "inserted 1 of 1 records"
    );
    assert_eq!(
        replies[1].as_ref().unwrap()["message"],
        "inserted 0 of 1 records"
    );
    assert_eq!(n.count(), 1);
}

#[test]
fn bad_input_is_rejected_without_writing_anything() {
    let mut n = Node::new("a");
    let cases = [
        (json!([{"id":1},{"id":"null"}]), 400),
        (json!([{"id":"undefined"}]), 400),
        (json!([{"id":{"x":1}}]), 400),
        (json!([{"id":2,"a`b":1}]), 400),
        (json!([{"id":3,"a/b":1}]), 400),
    ];
    for (records, status) in cases {
        let before = n.store.records.len();
        let err = n.insert(WriteKind::Insert, records.clone()).unwrap_err();
        assert_eq!(err.status, status, "{records}");
        assert_eq!(n.store.records.len(), before, "{records} wrote something");
    }
    let err = n.insert(WriteKind::Update, json!([{"age":1}])).unwrap_err();
    assert!(err.message().contains("valid hash attribute"));
    let err = n
        .run(WriteOp::Records {
            kind: WriteKind::Insert,
            database: "dev".into(),
            table: "nope".into(),
            records: RecordBatch::default(),
        })
        .unwrap_err();
    // Harper: a record write into a missing table or database is a 400.
    assert_eq!(
        (err.status, err.message()),
        (400, "Table 'dev.nope' does not exist")
    );
    let err = n
        .run(WriteOp::Records {
            kind: WriteKind::Insert,
            database: "nodb".into(),
            table: "dog".into(),
            records: RecordBatch::default(),
        })
        .unwrap_err();
    assert_eq!(
        (err.status, err.message()),
        (400, "database 'nodb' does not exist")
    );
}

#[test]
fn each_request_is_one_audited_transaction_with_one_version() {
    let mut n = Node::new("a");
    let before = n.dev_txns().len();
    let r = n
        .insert(WriteKind::Insert, json!([{"id":1},{"id":2}]))
        .unwrap();
    let txns = n.dev_txns();
    assert_eq!(txns.len(), before + 1);
    let last = txns.last().unwrap();
    assert_eq!(last.ops.len(), 2);
    assert_eq!(
        hlc::to_ms_f64(last.version),
        r["txn_time"].as_f64().unwrap()
    );
}

#[test]
fn schema_travels_create_database_in_system_log_create_table_in_its_own() {
    let mut a = Node::new("a");
    let txns = a.dev_txns();
    assert!(txns.iter().any(|t| t
        .ops
        .iter()
        .any(|o| matches!(o, TxnOp::CreateTable { table, .. } if table == "dog"))));
    let mut b = Node::new("b");
    a.insert(WriteKind::Insert, json!([{"id":1,"color":"red"}]))
        .unwrap();
    b.receive(a.dev_txns());
    assert_eq!(b.get(json!(1)).unwrap()["color"], "red");
    assert!(b
        .core
        .catalog()
        .table("dev", "dog")
        .unwrap()
        .attribute("color")
        .is_some());
}

#[test]
fn replicated_writes_keep_the_origin_version_and_timestamps() {
    let mut a = Node::new("a");
    let mut b = Node::new("b");
    a.insert(WriteKind::Insert, json!([{"id":1,"v":"a"}]))
        .unwrap();
    b.receive(a.dev_txns());
    assert_eq!(a.get(json!(1)), b.get(json!(1)));
    // The receiver's clock moved past the origin's version.
    let remote = a.dev_txns().last().unwrap().version;
    b.now = 0; // even with a wall clock far behind
    let r = b
        .insert(WriteKind::Update, json!([{"id":1,"v":"b"}]))
        .unwrap();
    assert!(r["txn_time"].as_f64().unwrap() > hlc::to_ms_f64(remote));
}

#[test]
fn concurrent_writes_to_one_key_converge_to_one_winner_everywhere() {
    let mut nodes: Vec<Node> = ["a", "b", "c"].iter().map(|n| Node::new(n)).collect();
    for n in nodes.iter_mut() {
        n.now = 5_000_000; // same wall clock: versions tie, names break the tie
    }
    for (i, n) in nodes.iter_mut().enumerate() {
        n.insert(WriteKind::Upsert, json!([{"id":"k","by":i}]))
            .unwrap();
    }
    let all: Vec<Vec<Txn>> = nodes.iter().map(|n| n.dev_txns()).collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        for (j, txns) in all.iter().enumerate() {
            if i != j {
                n.receive(txns.clone());
            }
        }
    }
    let winners: Vec<Value> = nodes
        .iter()
        .map(|n| n.get(json!("k")).unwrap()["by"].clone())
        .collect();
    assert_eq!(
        winners,
        vec![json!(2), json!(2), json!(2)],
        "greatest name wins the tie"
    );
}

#[test]
fn delete_not_resurrected_by_a_stale_put_and_a_newer_put_wins() {
    let mut a = Node::new("a");
    let mut b = Node::new("b");
    a.insert(WriteKind::Insert, json!([{"id":1,"v":1}]))
        .unwrap();
    b.receive(a.dev_txns());
    let stale_put = a.dev_txns().last().unwrap().clone();
    a.delete(json!([1])).unwrap();
    b.receive(a.dev_txns());
    assert!(b.get(json!(1)).is_none());
    // The old put arrives again (say from a relay): it is older than the tombstone.
    let mut c = Node::new("c");
    c.receive(a.dev_txns());
    c.receive(vec![stale_put]);
    assert!(c.get(json!(1)).is_none());
    // A strictly newer write on b recreates the key, and a accepts it.
    b.now = a.now + 10;
    b.insert(WriteKind::Upsert, json!([{"id":1,"v":2}]))
        .unwrap();
    a.receive(b.dev_txns());
    assert_eq!(a.get(json!(1)).unwrap()["v"], 2);
    assert_eq!(a.count(), 1);
}

#[test]
fn a_transaction_received_twice_is_applied_once() {
    let mut a = Node::new("a");
    let mut b = Node::new("b");
    a.insert(WriteKind::Insert, json!([{"id":1}])).unwrap();
    b.receive(a.dev_txns());
    let audit_len = b.store.audit.len();
    b.receive(a.dev_txns());
    assert_eq!(b.store.audit.len(), audit_len, "duplicate logged again");
    assert_eq!(b.count(), 1);
    let v = b.core.cursor_vector("dev");
    let from_a: Vec<_> = v.into_iter().filter(|(o, _)| o == "a").collect();
    assert_eq!(
        from_a,
        vec![("a".to_string(), a.dev_txns().last().unwrap().version)]
    );
}

#[test]
fn own_writes_echoed_back_are_ignored() {
    let mut a = Node::new("a");
    a.insert(WriteKind::Insert, json!([{"id":1,"v":1}]))
        .unwrap();
    let txns = a.dev_txns();
    let audit_len = a.store.audit.len();
    a.receive(txns);
    assert_eq!(a.store.audit.len(), audit_len);
}

#[test]
fn users_and_roles_follow_committed_writes() {
    let mut n = Node::new("a");
    let r = n
        .run(WriteOp::AddRole {
            role: "reader".into(),
            id: None,
            permission: json!({"super_user": false}),
        })
        .unwrap();
    assert_eq!(r["id"], "reader");
    assert!(r["__createdtime__"].is_number());
    let err = n
        .run(WriteOp::AddRole {
            role: "reader".into(),
            id: None,
            permission: json!({}),
        })
        .unwrap_err();
    assert_eq!(err.status, 409);
    let r = n
        .run(WriteOp::AddUser {
            username: "u1".into(),
            password_hash: "h".into(),
            role: "reader".into(),
            active: true,
        })
        .unwrap();
    assert_eq!(r["message"], "u1 successfully added");
    assert!(n.core.auth().principal("u1").is_some());
    let err = n
        .run(WriteOp::AddUser {
            username: "u1".into(),
            password_hash: "h".into(),
            role: "reader".into(),
            active: true,
        })
        .unwrap_err();
    assert_eq!((err.status, err.message()), (409, "User u1 already exists"));
    let err = n
        .run(WriteOp::AddUser {
            username: "u2".into(),
            password_hash: "h".into(),
            role: "nope".into(),
            active: true,
        })
        .unwrap_err();
    assert_eq!((err.status, err.message()), (404, "nope role not found"));
    let err = n
        .run(WriteOp::DropRole {
            id: "reader".into(),
        })
        .unwrap_err();
    assert_eq!(err.status, 400);
    n.run(WriteOp::DropUser {
        username: "u1".into(),
    })
    .unwrap();
    assert!(n.core.auth().principal("u1").is_none());
    let r = n
        .run(WriteOp::DropRole {
            id: "reader".into(),
        })
        .unwrap();
    assert_eq!(r["message"], "reader successfully deleted");
}

#[test]
fn schema_errors_use_harpers_messages() {
    let mut n = Node::new("a");
    let err = n
        .run(WriteOp::CreateTable {
            database: "dev".into(),
            table: "dog".into(),
            primary_key: "id".into(),
            attributes: vec![],
            schema_defined: false,
            expiration: None,
        })
        .unwrap_err();
    assert_eq!(err.message(), "Table 'dog' already exists in 'dev'");
    let err = n
        .run(WriteOp::CreateDatabase {
            database: "dev".into(),
        })
        .unwrap_err();
    assert_eq!(err.message(), "database 'dev' already exists");
    let r = n
        .run(WriteOp::DropTable {
            database: "dev".into(),
            table: "dog".into(),
            replicated: false,
        })
        .unwrap();
    assert_eq!(r["message"], "successfully deleted table 'dev.dog'");
    let err = n
        .run(WriteOp::DropDatabase {
            database: "system".into(),
            replicated: false,
        })
        .unwrap_err();
    assert_eq!(err.status, 403);
}

#[test]
fn a_finished_copy_moves_cursors_to_the_copy_vector_and_past_the_peer() {
    let mut n = Node::new("c");
    n.core
        .step(
            Input::CopyDone {
                db: "dev".into(),
                peer: "a".into(),
                vector: vec![("a".into(), 500), ("b".into(), 300), ("c".into(), 999)],
                state_key: "copy:dev".into(),
                reply: 0,
            },
            n.now,
            &n.store,
        )
        .unwrap();
    let ready = n.core.take_ready();
    n.store.apply(&ready.writes);
    let v: HashMap<String, u64> = n.core.cursor_vector("dev").into_iter().collect();
    assert_eq!(v["a"], 500);
    assert_eq!(v["b"], 300);
    assert!(ready
        .writes
        .iter()
        .any(|w| matches!(w, Write::LowWatermark { version: 500, .. })));
    assert!(ready
        .writes
        .iter()
        .any(|w| matches!(w, Write::Cursor { version: 500, .. })));
    // A later, smaller vector never moves cursors back.
    n.core
        .step(
            Input::CopyDone {
                db: "dev".into(),
                peer: "b".into(),
                vector: vec![("a".into(), 100)],
                state_key: "copy:dev".into(),
                reply: 0,
            },
            n.now,
            &n.store,
        )
        .unwrap();
    n.core.take_ready();
    let v: HashMap<String, u64> = n.core.cursor_vector("dev").into_iter().collect();
    assert_eq!(v["a"], 500);
}

/// A small deterministic generator (xorshift64*), so a failing schedule can be replayed from
/// its seed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A node's live records of dev.dog: primary key bytes → (version, record).
fn live_state(n: &Node) -> BTreeMap<Vec<u8>, (u64, Value)> {
    let t = n.core.catalog().table("dev", "dog").unwrap().id;
    n.store
        .records
        .iter()
        .filter(|((table, _), _)| *table == t)
        .filter_map(|((_, pk), r)| {
            let json = r.json.as_ref()?;
            Some((
                pk.clone(),
                (r.version, serde_json::from_slice(json).unwrap()),
            ))
        })
        .collect()
}

/// G1-G6 at the end of a simulated schedule: each origin's committed versions only grow (G6),
/// every node holds exactly the LWW winner over every committed transaction (G1-G3, G5), and
/// no value of a write that was never committed is visible anywhere (G4). `label` names the
/// schedule in failure messages.
pub(crate) fn assert_guarantees(
    label: &str,
    seed: u64,
    names: &[&str],
    nodes: &[Node],
    history: &[Vec<Txn>],
    phantoms: &[u64],
) {
    for (o, txns) in history.iter().enumerate() {
        for pair in txns.windows(2) {
            assert!(
                pair[1].version > pair[0].version,
                "{label}: {} committed version {} after {}",
                names[o],
                pair[1].version,
                pair[0].version
            );
        }
    }
    let expected = assert_lww_converged(seed, names, nodes, history);
    for (_, rec) in expected.values() {
        for field in ["v", "u"] {
            if let Some(x) = rec.get(field).and_then(Value::as_u64) {
                assert!(
                    !phantoms.contains(&x),
                    "{label}: uncommitted value {x} visible"
                );
            }
        }
    }
}

/// G1-G3/G5 once every link healed: each node holds exactly the last-writer-wins winner of
/// every key over every committed transaction (`all[o]`: origin `names[o]`'s log; the winner is
/// the greatest (version, origin name); a delete wins as absence), with its record count and
/// digest agreeing with its data, and every node the same digest. Returns the live winners.
pub(crate) fn assert_lww_converged(
    seed: u64,
    names: &[&str],
    nodes: &[Node],
    all: &[Vec<Txn>],
) -> BTreeMap<Vec<u8>, (u64, Value)> {
    let mut winners: BTreeMap<Vec<u8>, (u64, &str, Option<Value>)> = BTreeMap::new();
    for (o, txns) in all.iter().enumerate() {
        for t in txns {
            for op in &t.ops {
                let (pk, rec) = match op {
                    TxnOp::Put { pk, record, .. } => {
                        (pk, Some(serde_json::from_slice(record).unwrap()))
                    }
                    TxnOp::Delete { pk, .. } => (pk, None),
                    _ => continue,
                };
                let cand = (t.version, names[o], rec);
                let e = winners.entry(pk.clone()).or_insert(cand.clone());
                if (cand.0, cand.1) > (e.0, e.1) {
                    *e = cand;
                }
            }
        }
    }
    let expected: BTreeMap<Vec<u8>, (u64, Value)> = winners
        .into_iter()
        .filter_map(|(pk, (v, _, rec))| Some((pk, (v, rec?))))
        .collect();
    for n in nodes {
        let name = n.core.node_name();
        assert_eq!(
            live_state(n),
            expected,
            "seed {seed}: {name} differs from the LWW winners"
        );
        assert_eq!(
            n.count(),
            expected.len() as u64,
            "seed {seed}: record count of {name} drifted from its data"
        );
        assert_eq!(
            n.digest(),
            n.scanned_digest(),
            "seed {seed}: digest of {name} drifted from its data"
        );
    }
    // The same live records, reached by different arrival orders: the same digest.
    for n in &nodes[1..] {
        assert_eq!(
            n.digest(),
            nodes[0].digest(),
            "seed {seed}: {} and {} hold the same data with different digests",
            n.core.node_name(),
            nodes[0].core.node_name()
        );
    }
    expected
}

/// Randomised schedules of three cores with skewed clocks writing the same few keys (insert,
/// update, upsert, delete) while each origin's stream reaches each peer in order but at its own
/// pace, with duplicates. Afterwards every node must hold exactly the state that LWW on
/// `(version, origin name)` picks over all transactions ever committed, and the same record
/// count. Pins the failures a replicated LWW store is known for: a stale put resurrecting a
/// delete, nodes disagreeing after a tie, a duplicate applied twice, counts drifting from data.
#[test]
fn random_schedules_converge_to_the_lww_winner_of_every_key() {
    const NAMES: [&str; 3] = ["n1", "n2", "n3"];
    for seed in 1..=200u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut nodes: Vec<Node> = NAMES.iter().map(|n| Node::new(n)).collect();
        // Skewed clocks: up to 5 ms apart, so versions interleave and sometimes tie.
        for n in nodes.iter_mut() {
            n.now = 2_000_000 + rng.below(5);
        }
        // delivered[r][o]: how many of origin o's transactions node r has received.
        let mut delivered = [[0usize; 3]; 3];
        for _ in 0..60 {
            let w = rng.below(3) as usize;
            let n = &mut nodes[w];
            n.now += rng.below(3);
            let id = rng.below(5);
            let v = rng.below(1000);
            // Errors (an insert of an existing key, an update of a missing one) are part of the
            // schedule: they must leave nothing behind.
            let _ = match rng.below(4) {
                0 => n.insert(WriteKind::Insert, json!([{"id": id, "v": v, "by": w}])),
                1 => n.insert(WriteKind::Update, json!([{"id": id, "u": v}])),
                2 => n.insert(WriteKind::Upsert, json!([{"id": id, "v": v, "by": w}])),
                _ => n.delete(json!([id])),
            };
            // Some stream moves: origin o sends r its next few transactions, or (a replay
            // after a reconnect) resends some it already sent.
            for _ in 0..rng.below(3) {
                let (r, o) = (rng.below(3) as usize, rng.below(3) as usize);
                if r == o {
                    continue;
                }
                let txns = nodes[o].dev_txns();
                let from = if rng.below(5) == 0 {
                    delivered[r][o].saturating_sub(2)
                } else {
                    delivered[r][o]
                };
                let to = (delivered[r][o] + rng.below(3) as usize).min(txns.len());
                if from < to {
                    nodes[r].receive(txns[from..to].to_vec());
                    delivered[r][o] = delivered[r][o].max(to);
                }
            }
        }
        // The links heal: everything still in flight arrives.
        let all: Vec<Vec<Txn>> = nodes.iter().map(Node::dev_txns).collect();
        for (r, node) in nodes.iter_mut().enumerate() {
            for (o, txns) in all.iter().enumerate() {
                if r != o && delivered[r][o] < txns.len() {
                    node.receive(txns[delivered[r][o]..].to_vec());
                }
            }
        }
        assert_lww_converged(seed, &NAMES, &nodes, &all);
    }
}

#[test]
fn every_audit_entry_records_the_operation_and_the_user_that_made_it() {
    let mut n = Node::new("a");
    n.insert(WriteKind::Insert, json!([{"id": 1}])).unwrap();
    n.insert(WriteKind::Update, json!([{"id": 1, "x": 2}]))
        .unwrap();
    n.insert(WriteKind::Upsert, json!([{"id": 2}])).unwrap();
    n.delete(json!([1])).unwrap();
    let db = n.core.catalog().database("dev").unwrap().id;
    let kinds: Vec<(txn::TxnKind, txn::Actor)> = n
        .store
        .audit
        .iter()
        .filter(|(d, ..)| *d == db)
        .map(|(.., ops)| {
            let e = txn::decode_entry(ops).unwrap();
            (e.kind, e.actor)
        })
        .filter(|(k, _)| *k != txn::TxnKind::None)
        .collect();
    let admin = txn::Actor::User("admin".into());
    assert_eq!(
        kinds,
        [
            (txn::TxnKind::Insert, admin.clone()),
            (txn::TxnKind::Update, admin.clone()),
            (txn::TxnKind::Upsert, admin.clone()),
            (txn::TxnKind::Delete, admin),
        ]
    );
}

#[test]
fn trimming_the_audit_log_raises_each_origins_low_watermark_to_the_newest_edit() {
    let mut n = Node::new("a");
    n.now += 1;
    let edit = |origin, version, ops| op::AuditEdit {
        origin,
        version,
        ops,
    };
    n.core
        .step(
            Input::Write {
                op: WriteOp::TrimAudit {
                    database: "dev".into(),
                    edits: vec![
                        edit(3, 50, None),
                        edit(3, 40, Some(vec![1])),
                        edit(4, 7, None),
                    ],
                },
                actor: txn::Actor::User("admin".into()),
                reply: 0,
            },
            n.now,
            &n.store,
        )
        .unwrap();
    let ready = n.core.take_ready();
    let db = n.core.catalog().database("dev").unwrap().id;
    let marks: Vec<&Write> = ready
        .writes
        .iter()
        .filter(|w| matches!(w, Write::LowWatermark { .. }))
        .collect();
    assert_eq!(
        marks,
        [
            &Write::LowWatermark {
                db,
                origin: 3,
                version: 50
            },
            &Write::LowWatermark {
                db,
                origin: 4,
                version: 7
            }
        ]
    );
    assert!(ready.writes.contains(&Write::AuditEdit {
        db,
        origin: 3,
        version: 40,
        ops: Some(vec![1])
    }));
    let missing = n.run(WriteOp::TrimAudit {
        database: "nodb".into(),
        edits: vec![],
    });
    assert_eq!(missing.unwrap_err().status, 404);
}

#[test]
fn a_deleted_or_overwritten_record_leaves_no_trace_in_the_digest() {
    let mut n = Node::new("a");
    assert_eq!(n.digest(), 0, "an empty table has the zero digest");
    n.insert(WriteKind::Insert, json!([{"id": 1, "v": 1}, {"id": 2}]))
        .unwrap();
    let both = n.digest();
    assert_ne!(both, 0);
    assert_eq!(both, n.scanned_digest());
    n.insert(WriteKind::Update, json!([{"id": 1, "v": 2}]))
        .unwrap();
    assert_ne!(n.digest(), both, "an overwrite changes the digest");
    assert_eq!(n.digest(), n.scanned_digest(), "after an overwrite");
    n.delete(json!([1])).unwrap();
    assert_eq!(n.digest(), n.scanned_digest(), "after a delete");
    n.delete(json!([2])).unwrap();
    assert_eq!(
        n.digest(),
        0,
        "tombstones are not live records: a table whose records were all deleted digests as empty"
    );
}

#[test]
fn the_same_writes_applied_in_another_order_give_the_same_digest() {
    let mut a = Node::new("a");
    let mut b = Node::new("b");
    for i in 0..4 {
        a.insert(WriteKind::Upsert, json!([{"id": i, "v": i, "k": "shared"}]))
            .unwrap();
        b.insert(WriteKind::Upsert, json!([{"id": 10 + i, "v": i}]))
            .unwrap();
    }
    b.now = a.now + 5;
    b.insert(WriteKind::Upsert, json!([{"id": 0, "v": "b wins"}]))
        .unwrap();
    a.delete(json!([3])).unwrap();
    let (from_a, from_b) = (a.dev_txns(), b.dev_txns());
    // c hears a first, d hears b first: LWW ends in the same live records on both, so the
    // digests must be equal.
    let mut c = Node::new("c");
    c.receive(from_a.clone());
    c.receive(from_b.clone());
    let mut d = Node::new("d");
    d.receive(from_b);
    d.receive(from_a);
    assert_eq!(c.get(json!(0)).unwrap()["v"], "b wins");
    assert_eq!(d.get(json!(0)).unwrap()["v"], "b wins");
    assert_ne!(c.digest(), 0);
    assert_eq!(c.digest(), d.digest());
    assert_eq!(c.digest(), c.scanned_digest());
}

/// The `hdb_nodes` row of `name` as the store holds it.
fn node_row(n: &Node, name: &str) -> Option<Map<String, Value>> {
    let t = n.core.catalog().table("system", "hdb_nodes").unwrap().id;
    let pk = keys::encode_pk(&json!(name)).unwrap();
    n.store
        .records
        .get(&(t, pk))
        .and_then(|r| r.json.as_ref())
        .map(|j| serde_json::from_slice(j).unwrap())
}

fn system_audit_entries(n: &Node) -> usize {
    let db = n.core.catalog().database("system").unwrap().id;
    n.store.audit.iter().filter(|(d, ..)| *d == db).count()
}

fn patch(name: &str, fields: Value, if_new: Value, union: Value) -> super::op::MemberChange {
    super::op::MemberChange::PatchNode {
        name: name.into(),
        fields: fields.as_object().unwrap().clone(),
        if_new: if_new.as_object().unwrap().clone(),
        union: union.as_object().unwrap().clone(),
    }
}

#[test]
fn two_membership_changes_of_one_row_in_one_group_both_land() {
    // Before, each change read the row outside the core and wrote back its copy: the second
    // of two changes in flight erased the first one's fields.
    let mut n = Node::new("a");
    for (i, change) in [
        patch(
            "b",
            json!({"url": "ws://b:9933"}),
            json!({"subscriptions": null}),
            json!({}),
        ),
        patch(
            "b",
            json!({}),
            json!({}),
            json!({"revoked_certificates": ["s1"]}),
        ),
        patch(
            "b",
            json!({}),
            json!({"subscriptions": "not used"}),
            json!({"revoked_certificates": ["s2", "s1"]}),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        n.now += 1;
        n.core
            .step(
                Input::Write {
                    op: WriteOp::Membership {
                        changes: vec![change],
                    },
                    actor: txn::Actor::User("admin".into()),
                    reply: i as u32,
                },
                n.now,
                &n.store,
            )
            .unwrap();
    }
    for r in n.commit() {
        r.unwrap();
    }
    let row = node_row(&n, "b").unwrap();
    assert_eq!(row["url"], json!("ws://b:9933"));
    assert_eq!(
        row["subscriptions"],
        Value::Null,
        "if_new applies only to a new row"
    );
    assert_eq!(row["revoked_certificates"], json!(["s1", "s2"]));

    // A change that says what the row already says writes nothing (no audit entry to
    // replicate), and a delete of a missing row is a no-op.
    let before = system_audit_entries(&n);
    n.run(WriteOp::Membership {
        changes: vec![
            patch(
                "b",
                json!({"url": "ws://b:9933"}),
                json!({}),
                json!({"revoked_certificates": ["s2"]}),
            ),
            super::op::MemberChange::DeleteNode {
                name: "nobody".into(),
            },
        ],
    })
    .unwrap();
    assert_eq!(system_audit_entries(&n), before);
    n.run(WriteOp::Membership {
        changes: vec![super::op::MemberChange::DeleteNode { name: "b".into() }],
    })
    .unwrap();
    assert!(node_row(&n, "b").is_none());
    assert_eq!(system_audit_entries(&n), before + 1);
}

impl Node {
    /// A crash: the core and everything it had not committed are gone; the node starts again
    /// on what its store holds, with its clock wherever it is now (possibly behind).
    pub(crate) fn crash_and_restart(&mut self) {
        let name = self.core.node_name().to_string();
        self.core = Core::new(&name, self.store.recovered());
        let _ = self.core.take_ready();
    }

    /// This node's cursor for `origin` in dev (0 when it has none).
    pub(crate) fn dev_cursor(&self, origin: &str) -> u64 {
        self.core
            .cursor_vector("dev")
            .into_iter()
            .find(|(o, _)| o == origin)
            .map_or(0, |(_, v)| v)
    }
}

/// One random write on `n` of the same few keys (insert, update, upsert or delete; `v` marks
/// the value). One in ten is stepped and then lost in a crash before its group commit: never
/// acknowledged, so `v` goes to `phantoms` and must never be seen. Returns whether it crashed.
pub(crate) fn random_write(rng: &mut Rng, n: &mut Node, v: u64, phantoms: &mut Vec<u64>) -> bool {
    let id = rng.below(5);
    let op = match rng.below(4) {
        0 => (WriteKind::Insert, json!([{"id": id, "v": v}])),
        1 => (WriteKind::Update, json!([{"id": id, "u": v}])),
        2 => (WriteKind::Upsert, json!([{"id": id, "v": v}])),
        _ => (WriteKind::Update, Value::Null),
    };
    if rng.below(10) != 0 {
        let _ = match op {
            (_, Value::Null) => n.delete(json!([id])),
            (kind, recs) => n.insert(kind, recs),
        };
        return false;
    }
    n.now += 1;
    let op = match op {
        (_, Value::Null) => WriteOp::Delete {
            database: "dev".into(),
            table: "dog".into(),
            ids: vec![json!(id)],
        },
        (kind, recs) => WriteOp::Records {
            kind,
            database: "dev".into(),
            table: "dog".into(),
            records: RecordBatch::from_maps(
                recs.as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_object().unwrap().clone())
                    .collect(),
            ),
        },
    };
    n.core
        .step(
            Input::Write {
                op,
                actor: txn::Actor::User("admin".into()),
                reply: 0,
            },
            n.now,
            &n.store,
        )
        .unwrap();
    phantoms.push(v);
    n.crash_and_restart();
    true
}

/// Three cores writing the same few keys under crashes (a write stepped but not committed
/// vanishes with the core; a received batch stepped but not committed is received again from
/// the recovered cursor), partitions (a link delivers nothing for a while), duplicates, and
/// clocks that jump backwards by up to 5 s (also across a restart). Afterwards:
/// G1/G5 every node holds exactly the LWW winner over every committed transaction;
/// G2/G3 so no committed write or delete is lost or resurrected (committed = acknowledged:
///     the driver answers only after the commit);
/// G4 no staged-but-uncommitted write is visible anywhere;
/// G6 each origin's versions only ever grow, across restarts and clock jumps.
/// A failing seed replays from its number.
#[test]
fn crashes_partitions_and_clock_jumps_lose_nothing_committed_and_versions_never_go_back() {
    const NAMES: [&str; 3] = ["n1", "n2", "n3"];
    let (mut crashes, mut jumps, mut lost_staged) = (0, 0, 0);
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        let mut nodes: Vec<Node> = NAMES.iter().map(|n| Node::new(n)).collect();
        for n in nodes.iter_mut() {
            n.now = 2_000_000 + rng.below(5);
        }
        let mut delivered = [[0usize; 3]; 3];
        let mut blocked = [[false; 3]; 3];
        // Values written by writes that were never committed: none may ever be seen.
        let mut phantoms: Vec<u64> = Vec::new();
        for step in 0..80u64 {
            let w = rng.below(3) as usize;
            nodes[w].now += rng.below(3);
            if rng.below(12) == 0 {
                // The clock jumps back (NTP step, VM restore).
                let back = rng.below(5_000);
                nodes[w].now = nodes[w].now.saturating_sub(back);
                jumps += 1;
            }
            if random_write(
                &mut rng,
                &mut nodes[w],
                1_000_000 * seed + step,
                &mut phantoms,
            ) {
                crashes += 1;
                lost_staged += 1;
            }
            // Links: a partition starts or heals now and then.
            if rng.below(8) == 0 {
                let (a, b) = (rng.below(3) as usize, rng.below(3) as usize);
                if a != b {
                    let cut = !blocked[a][b];
                    blocked[a][b] = cut;
                    blocked[b][a] = cut;
                }
            }
            for _ in 0..rng.below(3) {
                let (r, o) = (rng.below(3) as usize, rng.below(3) as usize);
                if r == o || blocked[r][o] {
                    continue;
                }
                let txns = nodes[o].dev_txns();
                let from = if rng.below(5) == 0 {
                    delivered[r][o].saturating_sub(2)
                } else {
                    delivered[r][o]
                };
                let to = (delivered[r][o] + 1 + rng.below(3) as usize).min(txns.len());
                if from >= to {
                    continue;
                }
                if rng.below(10) == 0 {
                    // The receiver crashes with the batch staged: it never happened there, and
                    // the sender resumes from the cursor the receiver recovers.
                    let rn = &mut nodes[r];
                    rn.core
                        .step(
                            Input::Replicated {
                                txns: txns[from..to].to_vec(),
                                reply: 0,
                            },
                            rn.now,
                            &rn.store,
                        )
                        .unwrap();
                    rn.crash_and_restart();
                    crashes += 1;
                    for (o2, name) in NAMES.iter().enumerate() {
                        if o2 != r {
                            let c = nodes[r].dev_cursor(name);
                            delivered[r][o2] = nodes[o2]
                                .dev_txns()
                                .iter()
                                .filter(|t| t.version <= c)
                                .count();
                        }
                    }
                    continue;
                }
                nodes[r].receive(txns[from..to].to_vec());
                delivered[r][o] = delivered[r][o].max(to);
            }
        }
        // Every partition heals and everything in flight arrives.
        let all: Vec<Vec<Txn>> = nodes.iter().map(Node::dev_txns).collect();
        for (r, node) in nodes.iter_mut().enumerate() {
            for (o, txns) in all.iter().enumerate() {
                if r != o && delivered[r][o] < txns.len() {
                    node.receive(txns[delivered[r][o]..].to_vec());
                }
            }
        }
        assert_guarantees(
            &format!("seed {seed}"),
            seed,
            &NAMES,
            &nodes,
            &all,
            &phantoms,
        );
    }
    // The schedule must really exercise what it claims.
    assert!(
        crashes > 300 && jumps > 300 && lost_staged > 100,
        "crashes {crashes}, jumps {jumps}, staged writes lost {lost_staged}"
    );
}

/// Relay in a star (one hub, four leaves that never talk to each other) and a chain of four
/// (issue 14: the leaves' data reaches each other only through the nodes between them). Each
/// link carries, for every origin except the receiver, the transactions the sender holds past
/// the receiver's recovered cursor for that origin (the relay's cursor rule: contiguous, so no
/// gaps; a resend from lower now and then, so duplicates), under writer crashes, receiver
/// crashes with a batch staged, link cuts (a cut hub isolates every leaf) and clock jumps.
/// After every link heals and relays until nothing moves, the same G1-G6 checks as the mesh
/// simulation. A failing seed replays from its number and shape.
#[test]
fn star_and_chain_relay_converge_under_crashes_cuts_and_clock_jumps() {
    const NAMES: [&str; 5] = ["n0", "n1", "n2", "n3", "n4"];
    // (name, nodes, links)
    type Shape = (&'static str, usize, &'static [(usize, usize)]);
    let shapes: [Shape; 2] = [
        ("star", 5, &[(0, 1), (0, 2), (0, 3), (0, 4)]),
        ("chain", 4, &[(0, 1), (1, 2), (2, 3)]),
    ];
    let (mut relayed, mut crashes) = (0u64, 0u64);
    for (shape, size, links) in shapes {
        let names = &NAMES[..size];
        for seed in 1..=150u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut nodes: Vec<Node> = names.iter().map(|n| Node::new(n)).collect();
            for n in nodes.iter_mut() {
                n.now = 2_000_000 + rng.below(5);
            }
            let mut cut = vec![false; links.len()];
            let mut phantoms: Vec<u64> = Vec::new();
            // One pass over a link: `to` takes from `from` what it lacks of each origin.
            let pass =
                |nodes: &mut Vec<Node>, rng: &mut Rng, from: usize, to: usize, max: usize| {
                    let mut moved = 0;
                    for o in names {
                        if *o == names[to] {
                            continue;
                        }
                        let cursor = nodes[to].dev_cursor(o);
                        let held = nodes[from].dev_txns_of(o);
                        let start = held
                            .iter()
                            .position(|t| t.version > cursor)
                            .unwrap_or(held.len());
                        let start = if rng.below(6) == 0 {
                            start.saturating_sub(2)
                        } else {
                            start
                        };
                        let end = start.saturating_add(max).min(held.len());
                        if start < end {
                            moved += held[start..end]
                                .iter()
                                .filter(|t| t.version > cursor)
                                .count();
                            nodes[to].receive(held[start..end].to_vec());
                        }
                    }
                    moved
                };
            for step in 0..100u64 {
                let w = rng.below(size as u64) as usize;
                nodes[w].now += rng.below(3);
                if rng.below(12) == 0 {
                    let back = rng.below(5_000);
                    nodes[w].now = nodes[w].now.saturating_sub(back);
                }
                if random_write(
                    &mut rng,
                    &mut nodes[w],
                    1_000_000 * seed + step,
                    &mut phantoms,
                ) {
                    crashes += 1;
                }
                if rng.below(8) == 0 {
                    let l = rng.below(links.len() as u64) as usize;
                    cut[l] = !cut[l];
                }
                for _ in 0..rng.below(4) {
                    let l = rng.below(links.len() as u64) as usize;
                    if cut[l] {
                        continue;
                    }
                    let (a, b) = links[l];
                    let (from, to) = if rng.below(2) == 0 { (a, b) } else { (b, a) };
                    if rng.below(10) == 0 {
                        // The receiver crashes with a relayed batch staged: it resumes from
                        // its recovered cursors.
                        let o = names[rng.below(size as u64) as usize];
                        let held = nodes[from].dev_txns_of(o);
                        if o != names[to] && !held.is_empty() {
                            let rn = &mut nodes[to];
                            rn.core
                                .step(
                                    Input::Replicated {
                                        txns: held[held.len().saturating_sub(2)..].to_vec(),
                                        reply: 0,
                                    },
                                    rn.now,
                                    &rn.store,
                                )
                                .unwrap();
                            rn.crash_and_restart();
                            crashes += 1;
                        }
                        continue;
                    }
                    let max = 1 + rng.below(3) as usize;
                    let moved = pass(&mut nodes, &mut rng, from, to, max);
                    if to != 0 && from != 0 || shape == "chain" {
                        relayed += moved as u64;
                    }
                }
            }
            // Every link heals and relays until nothing moves.
            loop {
                let mut moved = 0;
                for &(a, b) in links {
                    moved += pass(&mut nodes, &mut rng, a, b, usize::MAX);
                    moved += pass(&mut nodes, &mut rng, b, a, usize::MAX);
                }
                if moved == 0 {
                    break;
                }
            }
            let all: Vec<Vec<Txn>> = nodes.iter().map(Node::dev_txns).collect();
            assert_guarantees(
                &format!("{shape} seed {seed}"),
                seed,
                names,
                &nodes,
                &all,
                &phantoms,
            );
        }
    }
    assert!(
        relayed > 1_000 && crashes > 300,
        "relayed {relayed}, crashes {crashes}"
    );
}

impl Node {
    /// This node's low watermark of `origin` in dev: a subscriber below it cannot be streamed
    /// to (the sender's `split_servable`) and needs a full copy.
    pub(crate) fn dev_low_watermark(&self, origin: &str) -> u64 {
        let db = self.core.catalog().database("dev").unwrap().id;
        let id = if origin == self.core.node_name() {
            Some(self.core.self_origin)
        } else {
            self.store
                .origins
                .iter()
                .find(|(n, _)| n == origin)
                .map(|(_, id)| *id)
        };
        id.and_then(|id| self.store.low_watermarks.get(&(db, id)).copied())
            .unwrap_or(0)
    }

    /// What `send_copy` sends of dev.dog: every stored entry (tombstones included) with its
    /// version and origin name, and the cursor vector it vouches for.
    pub(crate) fn dev_copy(&self) -> (Vec<CopyRow>, Vec<(String, u64)>) {
        let t = self.core.catalog().table("dev", "dog").unwrap().id;
        let name = |id: u32| {
            if id == self.core.self_origin {
                self.core.node_name().to_string()
            } else {
                self.store
                    .origins
                    .iter()
                    .find(|(_, i)| *i == id)
                    .map(|(n, _)| n.clone())
                    .unwrap()
            }
        };
        let mut rows: Vec<CopyRow> = self
            .store
            .records
            .iter()
            .filter(|((table, _), _)| *table == t)
            .map(|((_, pk), r)| CopyRow {
                pk: pk.clone(),
                version: r.version,
                origin: name(r.origin),
                json: r.json.clone(),
            })
            .collect();
        rows.sort_by(|a, b| a.pk.cmp(&b.pk));
        (rows, self.core.cursor_vector("dev"))
    }

    /// Receives a full copy of dev.dog from `from` in batches of `batch` rows; with
    /// `crash_after`, the node crashes after that many batches (the copy is then started again
    /// from the beginning, as a resumed copy re-sends at least what was not committed).
    pub(crate) fn receive_copy(
        &mut self,
        from: &str,
        copy: &(Vec<CopyRow>, Vec<(String, u64)>),
        batch: usize,
        crash_after: Option<usize>,
    ) -> bool {
        let table = CopyTable {
            name: "dog".into(),
            pk_attr: "id".into(),
            attributes: Vec::new(),
            schema_defined: false,
            expiration: None,
        };
        for (i, chunk) in copy.0.chunks(batch.max(1)).enumerate() {
            if crash_after == Some(i) {
                self.crash_and_restart();
                return false;
            }
            self.core
                .step(
                    Input::CopyRows {
                        db: "dev".into(),
                        table: table.clone(),
                        rows: chunk.to_vec(),
                        state: ("copy:dev".into(), vec![i as u8]),
                        reply: 0,
                    },
                    self.now,
                    &self.store,
                )
                .unwrap();
            self.commit();
        }
        self.core
            .step(
                Input::CopyDone {
                    db: "dev".into(),
                    peer: from.into(),
                    vector: copy.1.clone(),
                    state_key: "copy:dev".into(),
                    reply: 0,
                },
                self.now,
                &self.store,
            )
            .unwrap();
        self.commit();
        true
    }

    pub(crate) fn tick(&mut self) {
        self.core.step(Input::Tick, self.now, &self.store).unwrap();
        self.commit();
    }
}

/// Audit-log retention and full copies (issue 9: "a node down past audit-log retention: its
/// full copy keeps rows only it had, never a replace"; "a full copy interrupted again and
/// again"). Three cores with a 20 s retention write the same few keys while links are cut for
/// long stretches and every node prunes its log; a node whose cursor of an origin falls below
/// the sender's low watermark cannot be streamed to and gets a full copy of the sender's
/// rows (tombstones included) instead, in small batches, sometimes cut by a crash and started
/// again. The oracle is every transaction as committed (logs are pruned, so it is recorded
/// as it happens). After healing: G1-G6 as in the mesh simulation, and copies must really
/// have happened.
#[test]
fn nodes_behind_past_retention_converge_by_merge_copies_that_lose_nothing() {
    const NAMES: [&str; 3] = ["n1", "n2", "n3"];
    const RETENTION_MS: u64 = 20_000;
    let (mut copies, mut cut_copies) = (0u64, 0u64);
    for seed in 1..=200u64 {
        let mut rng = Rng(seed.wrapping_mul(0xd1b5_4a32_d192_ed03) | 1);
        let mut nodes: Vec<Node> = NAMES.iter().map(|n| Node::new(n)).collect();
        for n in nodes.iter_mut() {
            n.now = 2_000_000 + rng.below(5);
            n.core.set_retention(RETENTION_MS);
        }
        // Each origin's committed transactions, recorded before any prune can take them.
        let mut history: Vec<Vec<Txn>> = vec![Vec::new(); NAMES.len()];
        let record = |nodes: &[Node], history: &mut Vec<Vec<Txn>>| {
            for (o, n) in nodes.iter().enumerate() {
                let last = history[o].last().map_or(0, |t| t.version);
                history[o].extend(n.dev_txns().into_iter().filter(|t| t.version > last));
            }
        };
        let mut cut = [[false; 3]; 3];
        let mut phantoms: Vec<u64> = Vec::new();
        // `to` catches up on `o` directly from `o`: streamed from its cursor when `o` still
        // holds that part of its log, otherwise a full copy.
        let mut sync =
            |nodes: &mut Vec<Node>, rng: &mut Rng, to: usize, o: usize, max: usize| -> bool {
                let cursor = nodes[to].dev_cursor(NAMES[o]);
                if cursor < nodes[o].dev_low_watermark(NAMES[o]) {
                    let copy = nodes[o].dev_copy();
                    let batch = 1 + rng.below(4) as usize;
                    let crash = (rng.below(4) == 0).then(|| rng.below(3) as usize);
                    copies += 1;
                    if !nodes[to].receive_copy(NAMES[o], &copy, batch, crash) {
                        cut_copies += 1;
                    }
                    return true;
                }
                let txns: Vec<Txn> = nodes[o]
                    .dev_txns()
                    .into_iter()
                    .filter(|t| t.version > cursor)
                    .take(max)
                    .collect();
                if txns.is_empty() {
                    return false;
                }
                nodes[to].receive(txns);
                true
            };
        for step in 0..120u64 {
            let w = rng.below(3) as usize;
            // Time passes in long strides (so logs are pruned while links are cut).
            for n in nodes.iter_mut() {
                n.now += rng.below(1_500);
            }
            if rng.below(15) == 0 {
                nodes[w].now = nodes[w].now.saturating_sub(rng.below(5_000));
            }
            random_write(
                &mut rng,
                &mut nodes[w],
                1_000_000 * seed + step,
                &mut phantoms,
            );
            record(&nodes, &mut history);
            if rng.below(6) == 0 {
                let (a, b) = (rng.below(3) as usize, rng.below(3) as usize);
                if a != b {
                    let c = !cut[a][b];
                    cut[a][b] = c;
                    cut[b][a] = c;
                }
            }
            for _ in 0..rng.below(3) {
                let (r, o) = (rng.below(3) as usize, rng.below(3) as usize);
                if r != o && !cut[r][o] {
                    let max = 1 + rng.below(3) as usize;
                    sync(&mut nodes, &mut rng, r, o, max);
                }
            }
            for n in nodes.iter_mut() {
                n.tick();
            }
        }
        // Every link heals; each node catches up on each origin until nothing moves.
        for round in 0.. {
            assert!(round < 50, "seed {seed}: catching up never settles");
            let mut moved = false;
            for r in 0..3 {
                for o in 0..3 {
                    if r != o {
                        moved |= sync(&mut nodes, &mut rng, r, o, usize::MAX);
                    }
                }
            }
            if !moved {
                break;
            }
        }
        assert_guarantees(
            &format!("seed {seed}"),
            seed,
            &NAMES,
            &nodes,
            &history,
            &phantoms,
        );
    }
    eprintln!("retention simulation: {copies} full copies, {cut_copies} cut by a crash");
    assert!(
        copies > 200 && cut_copies > 20,
        "copies {copies}, cut by a crash {cut_copies}"
    );
}

#[test]
fn a_replicated_drop_is_not_undone_by_older_writes_and_spares_a_table_created_since() {
    let mut a = Node::new("a");
    let mut b = Node::new("b");
    // B's record is made before A's drop but reaches A after it.
    b.insert(WriteKind::Insert, json!([{"id":"old"}])).unwrap();
    let late = b.dev_txns();
    a.now += 1_000;
    let r = a
        .run(WriteOp::DropTable {
            database: "dev".into(),
            table: "dog".into(),
            replicated: true,
        })
        .unwrap();
    assert_eq!(r["message"], "successfully deleted table 'dev.dog'");
    let dropped_at = a.core.catalog().dropped_at("dev", "dog");
    assert!(dropped_at > 0);
    a.receive(late.clone());
    assert!(
        a.core.catalog().table("dev", "dog").is_none(),
        "an older write brought the dropped table back"
    );
    // Created again: a new table, which neither the old records nor a late copy of the old
    // drop (another member's, older than this creation) touch.
    a.run(WriteOp::CreateTable {
        database: "dev".into(),
        table: "dog".into(),
        primary_key: "id".into(),
        attributes: vec![],
        schema_defined: false,
        expiration: None,
    })
    .unwrap();
    a.receive(late);
    assert_eq!(a.count(), 0, "an old record landed in the new table");
    a.receive(vec![Txn {
        origin: "c".into(),
        version: dropped_at,
        db: "dev".into(),
        actor: txn::Actor::None,
        kind: txn::TxnKind::None,
        ops: vec![TxnOp::DropTable {
            table: "dog".into(),
        }],
    }]);
    assert!(a.core.catalog().table("dev", "dog").is_some());
}

#[test]
fn records_handed_over_parsed_are_written_like_the_same_records_as_text() {
    let recs = json!([{"id": 1, "n": "a", "x": 1.5}, {"id": 2, "n": null}, {"n": "no key"}, {"id": 1, "n": "dup"}]);
    let maps: Vec<Map<String, Value>> = recs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_object().unwrap().clone())
        .collect();
    let mut text = Node::new("a");
    let mut parsed = Node::new("a");
    let a = text
        .run(WriteOp::Records {
            kind: WriteKind::Insert,
            database: "dev".into(),
            table: "dog".into(),
            records: RecordBatch::from_maps(maps.clone()),
        })
        .unwrap();
    let b = parsed
        .run(WriteOp::Records {
            kind: WriteKind::Insert,
            database: "dev".into(),
            table: "dog".into(),
            records: RecordBatch::parsed(maps),
        })
        .unwrap();
    // Same answer (the generated key aside), same stored records.
    assert_eq!(a["skipped_hashes"], b["skipped_hashes"]);
    assert_eq!(
        a["inserted_hashes"].as_array().unwrap()[..2],
        b["inserted_hashes"].as_array().unwrap()[..2]
    );
    assert_eq!(text.get(json!(1)), parsed.get(json!(1)));
    assert_eq!(text.get(json!(2)), parsed.get(json!(2)));
    assert_eq!(text.count(), 3);
    assert_eq!(parsed.count(), 3);
    // An invalid attribute name is refused the same way from either form.
    let bad: Map<String, Value> = json!({"id": 9, "bad/name": 1}).as_object().unwrap().clone();
    let e = parsed
        .run(WriteOp::Records {
            kind: WriteKind::Insert,
            database: "dev".into(),
            table: "dog".into(),
            records: RecordBatch::parsed(vec![bad.clone()]),
        })
        .unwrap_err();
    let e2 = text
        .run(WriteOp::Records {
            kind: WriteKind::Insert,
            database: "dev".into(),
            table: "dog".into(),
            records: RecordBatch::from_maps(vec![bad]),
        })
        .unwrap_err();
    assert_eq!(e.message(), e2.message());
}
