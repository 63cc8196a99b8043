//! Durability against the real binary: a clean SIGTERM restart keeps schema, records, users and
//! roles (exit code 0); `kill -9` at any moment loses no acknowledged write, never leaves the
//! store unopenable, and keeps the audit log in step with the data (an entry exists exactly
//! when its write does); one request is one transaction, also across a crash.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const SUITE: u8 = 17;

fn all_records(n: &TestNode, table: &str) -> Value {
    n.ok(json!({"operation":"search_by_value","database":"dev","table":table,"attribute":"id","value":"*","get_attributes":["*"]}))
}

fn ids_of(v: &Value) -> BTreeSet<i64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .filter_map(|r| r["id"].as_i64())
        .collect()
}

/// Ids written (put) according to the table's audit log.
fn audited_puts(n: &TestNode, table: &str) -> BTreeSet<i64> {
    let log = n.ok(json!({"operation":"read_audit_log","database":"dev","table":table}));
    log.as_array()
        .unwrap_or_else(|| panic!("not an array: {log}"))
        .iter()
        .filter(|e| e["operation"] == "upsert")
        .flat_map(|e| e["hash_values"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_i64())
        .collect()
}

/// describe_all without the on-disk sizes (they move on their own).
fn schema(n: &TestNode) -> Value {
    let mut all = n.ok(json!({"operation":"describe_all"}));
    for (_, db) in all.as_object_mut().unwrap() {
        for (_, t) in db.as_object_mut().unwrap() {
            for k in ["db_size", "table_size", "db_audit_size"] {
                t.as_object_mut().unwrap().remove(k);
            }
        }
    }
    all
}

/// What a client can see of dev (schema, dog and cat records, the dog audit log) and of the
/// users and roles, compared across a restart.
fn visible_state(n: &TestNode) -> (Value, Value, Value, Value, Value, Value) {
    (
        schema(n),
        all_records(n, "dog"),
        all_records(n, "cat"),
        n.ok(json!({"operation":"list_users"})),
        n.ok(json!({"operation":"list_roles"})),
        n.ok(json!({"operation":"read_audit_log","database":"dev","table":"dog"})),
    )
}

/// Client threads inserting single records with their own ids until told to stop or until the
/// node stops answering. Returns the ids that were acknowledged with a 200.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<i64>>>,
    /// Highest acknowledged `n` of each thread's counter record (`id` = 1_000_000 + thread).
    counters: Arc<Mutex<BTreeMap<i64, i64>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    fn start(addr: String, threads: usize, id_base: i64) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let counters = Arc::new(Mutex::new(BTreeMap::new()));
        let threads = (0..threads as i64)
            .map(|t| {
                let (addr, stop, acked, counters) =
                    (addr.clone(), stop.clone(), acked.clone(), counters.clone());
                std::thread::spawn(move || {
                    let auth = basic(USER, PASS);
                    let mut k = 0i64;
                    while !stop.load(Ordering::SeqCst) {
                        k += 1;
                        let id = id_base + t * 100_000 + k;
                        let body = if k % 5 == 0 {
                            // Every fifth write moves the thread's counter record forward.
                            json!({"operation":"upsert","database":"dev","table":"dog","records":[{"id":1_000_000 + t,"n":k}]})
                        } else {
                            json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":id,"thread":t,"k":k}]})
                        };
                        let (s, _) = post_json(&addr, Some(&auth), body);
                        if s != 200 {
                            return; // the node went away (or refused while stopping)
                        }
                        if k % 5 == 0 {
                            counters.lock().unwrap().insert(1_000_000 + t, k);
                        } else {
                            acked.lock().unwrap().push(id);
                        }
                    }
                })
            })
            .collect();
        Writers {
            stop,
            acked,
            counters,
            threads,
        }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn finish(self) -> (Vec<i64>, BTreeMap<i64, i64>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        let counters = self.counters.lock().unwrap().clone();
        (acked, counters)
    }
}

/// Every acknowledged write is present, the counters are at least where they were
/// acknowledged, the audit log lists exactly the stored writes, and record_count agrees.
fn check_after_restart(
    n: &TestNode,
    acked: &BTreeSet<i64>,
    counters: &BTreeMap<i64, i64>,
    context: &str,
) {
    let recs = all_records(n, "dog");
    let present = ids_of(&recs);
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{context}: {} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    for (id, n_acked) in counters {
        let rec = recs
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == *id)
            .unwrap_or_else(|| panic!("{context}: counter record {id} lost"));
        let stored = rec["n"].as_i64().unwrap();
        assert!(
            stored >= *n_acked,
            "{context}: counter {id} went back from acknowledged {n_acked} to {stored}"
        );
    }
    let audited = audited_puts(n, "dog");
    let no_audit: Vec<_> = present.difference(&audited).collect();
    assert!(
        no_audit.is_empty(),
        "{context}: records without an audit entry: {:?}",
        &no_audit[..no_audit.len().min(10)]
    );
    let no_data: Vec<_> = audited.difference(&present).collect();
    assert!(
        no_data.is_empty(),
        "{context}: audit entries without their record: {:?}",
        &no_data[..no_data.len().min(10)]
    );
    let t = n.ok(json!({"operation":"describe_table","database":"dev","table":"dog"}));
    assert_eq!(
        t["record_count"].as_u64(),
        Some(present.len() as u64),
        "{context}: record_count disagrees with the records"
    );
}

#[test]
fn schema_records_users_and_roles_survive_a_sigterm_restart_with_exit_zero() {
    let mut n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    n.ok(json!({"operation":"create_table","database":"dev","table":"cat","primary_key":"id"}));
    n.ok(json!({"operation":"create_table","database":"prod","table":"empty","primary_key":"k"}));
    n.ok(
        json!({"operation":"create_attribute","database":"dev","table":"cat","attribute":"lives"}),
    );
    n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[
        {"id":1,"name":"Penny","age":5},{"id":2,"name":"Harper","age":3},{"id":3,"name":"Rex"},{"name":"Auto"}
    ]}));
    n.ok(json!({"operation":"update","database":"dev","table":"dog","records":[{"id":1,"age":6}]}));
    n.ok(json!({"operation":"delete","database":"dev","table":"dog","ids":[3]}));
    n.ok(
        json!({"operation":"insert","database":"dev","table":"cat","records":[{"id":1,"lives":9}]}),
    );
    n.ok(json!({"operation":"add_role","role":"reader","permission":{"super_user":false,"dev":{"tables":{"dog":{"read":true,"insert":false,"update":false,"delete":false,"attribute_permissions":[]}}}}}));
    n.ok(json!({"operation":"add_user","role":"reader","username":"reader1","password":"readerpass","active":true}));
    n.ok(json!({"operation":"alter_user","username":"reader1","password":"changed"}));
    let last = n.ok(
        json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":4}],"write_details":true}),
    );
    let last_txn = last["txn_time"].as_f64().unwrap();
    let (_, tokens) = post_json(
        &n.addr(),
        None,
        json!({"operation":"create_authentication_tokens","username":"admin","password":"password"}),
    );
    let token = format!("Bearer {}", tokens["operation_token"].as_str().unwrap());

    let before = visible_state(&n);
    assert_eq!(
        n.stop(),
        Some(0),
        "SIGTERM did not exit cleanly:\n{}",
        n.log()
    );
    n.start_again();
    let after = visible_state(&n);
    assert_eq!(after.0, before.0, "schema changed across restart");
    assert_eq!(after.1, before.1, "dev.dog changed across restart");
    assert_eq!(after.2, before.2, "dev.cat changed across restart");
    assert_eq!(after.3, before.3, "users changed across restart");
    assert_eq!(after.4, before.4, "roles changed across restart");
    assert_eq!(after.5, before.5, "audit log changed across restart");
    assert_eq!(after.1.as_array().unwrap().len(), 4, "{}", after.1);
    assert!(!ids_of(&after.1).contains(&3), "a deleted record came back");

    assert_eq!(
        n.op_as("reader1", "changed", json!({"operation":"user_info"}))
            .0,
        200
    );
    assert_eq!(
        n.op_as("reader1", "readerpass", json!({"operation":"user_info"}))
            .0,
        401
    );
    assert_eq!(
        n.op_as(
            "reader1",
            "changed",
            json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":9}]})
        )
        .0,
        403,
        "the role's permissions were lost"
    );
    let r = n.ok(
        json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":5}],"write_details":true}),
    );
    assert!(
        r["txn_time"].as_f64().unwrap() > last_txn,
        "the clock went back across the restart"
    );
    let (s, b) = post(&n.addr(), Some(&token), br#"{"operation":"user_info"}"#);
    assert_eq!(
        s, 200,
        "an operation token issued before the restart was refused: {b}"
    );
}

#[test]
fn acknowledged_writes_survive_kill_9_three_times_on_the_same_data_dir() {
    let mut n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    let mut acked_all = BTreeSet::new();
    let mut counters_all = BTreeMap::new();
    for cycle in 0..3i64 {
        let w = Writers::start(n.addr(), 6, cycle * 10_000_000);
        let target = 150;
        assert!(
            wait_until(Duration::from_secs(60), || w.acked_count() >= target),
            "cycle {cycle}: only {} writes acknowledged",
            w.acked_count()
        );
        // The writers are still going: the kill lands in the middle of requests.
        n.kill9();
        let (acked, counters) = w.finish();
        acked_all.extend(acked);
        counters_all.extend(counters);
        n.start_again();
        check_after_restart(
            &n,
            &acked_all,
            &counters_all,
            &format!("after kill -9 number {}", cycle + 1),
        );
    }
}

#[test]
fn sigterm_while_8_clients_write_keeps_every_acknowledged_write_and_exits_zero() {
    let mut n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    let w = Writers::start(n.addr(), 8, 0);
    assert!(
        wait_until(Duration::from_secs(60), || w.acked_count() >= 200),
        "only {} writes acknowledged",
        w.acked_count()
    );
    let code = n.stop();
    let (acked, counters) = w.finish();
    assert_eq!(
        code,
        Some(0),
        "SIGTERM under load did not exit cleanly:\n{}",
        n.log()
    );
    n.start_again();
    check_after_restart(
        &n,
        &acked.into_iter().collect(),
        &counters,
        "after SIGTERM under load",
    );
}

/// One request is one transaction: after a crash, each 50-record insert is there entirely or
/// not at all, and every acknowledged one entirely.
#[test]
fn a_multi_record_insert_is_all_or_nothing_across_kill_9() {
    let mut n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let threads: Vec<_> = (0..4i64)
        .map(|t| {
            let (addr, stop, acked) = (n.addr(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let auth = basic(USER, PASS);
                let mut batch = 0i64;
                while !stop.load(Ordering::SeqCst) {
                    batch += 1;
                    let base = (t * 10_000 + batch) * 100;
                    let records: Vec<Value> = (0..50).map(|i| json!({"id": base + i, "batch": base})).collect();
                    let body = json!({"operation":"insert","database":"dev","table":"dog","records":records});
                    if post_json(&addr, Some(&auth), body).0 != 200 {
                        return;
                    }
                    acked.lock().unwrap().push(base);
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(60), || acked
        .lock()
        .unwrap()
        .len()
        >= 40));
    n.kill9();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    n.start_again();
    let recs = all_records(&n, "dog");
    let mut per_batch: BTreeMap<i64, usize> = BTreeMap::new();
    for r in recs.as_array().unwrap() {
        *per_batch.entry(r["batch"].as_i64().unwrap()).or_default() += 1;
    }
    let torn: Vec<_> = per_batch.iter().filter(|(_, c)| **c != 50).collect();
    assert!(
        torn.is_empty(),
        "batches partly stored after kill -9 (batch, records): {torn:?}"
    );
    for b in acked.lock().unwrap().iter() {
        assert_eq!(per_batch.get(b), Some(&50), "acknowledged batch {b} lost");
    }
}

#[test]
fn deletes_drops_and_schema_changes_survive_kill_9() {
    let mut n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    n.ok(json!({"operation":"create_table","database":"dev","table":"gone","primary_key":"id"}));
    n.ok(json!({"operation":"create_table","database":"olddb","table":"t","primary_key":"id"}));
    n.ok(json!({"operation":"insert","database":"dev","table":"gone","records":[{"id":1}]}));
    n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":1,"name":"Penny"},{"id":2,"name":"Harper"},{"id":3,"name":"Rex"}]}));
    n.ok(json!({"operation":"delete","database":"dev","table":"dog","ids":[2]}));
    n.ok(json!({"operation":"update","database":"dev","table":"dog","records":[{"id":3,"name":"Rex II"}]}));
    n.ok(json!({"operation":"drop_table","database":"dev","table":"gone"}));
    n.ok(json!({"operation":"drop_database","database":"olddb"}));
    n.ok(json!({"operation":"create_attribute","database":"dev","table":"dog","attribute":"is_adorable"}));
    n.ok(json!({"operation":"drop_attribute","database":"dev","table":"dog","attribute":"name"}));
    n.ok(json!({"operation":"create_table","database":"dev","table":"late","primary_key":"id"}));
    n.ok(json!({"operation":"add_role","role":"writer","permission":{"super_user":false,"dev":{"tables":{"dog":{"read":true,"insert":true,"update":false,"delete":false,"attribute_permissions":[]}}}}}));
    n.ok(json!({"operation":"add_user","role":"writer","username":"w1","password":"pw","active":true}));
    let last = n.ok(json!({"operation":"upsert","database":"dev","table":"dog","records":[{"id":1,"is_adorable":true}],"write_details":true}));
    let last_txn = last["txn_time"].as_f64().unwrap();
    let before = (schema(&n), all_records(&n, "dog"));
    n.kill9();
    n.start_again();
    let after = (schema(&n), all_records(&n, "dog"));
    assert_eq!(after.0, before.0, "schema changed across kill -9");
    assert_eq!(after.1, before.1, "records changed across kill -9");
    assert_eq!(ids_of(&after.1), BTreeSet::from([1, 3]));
    let dev = &after.0["dev"];
    assert!(
        dev.get("gone").is_none() && dev.get("late").is_some(),
        "{}",
        after.0
    );
    assert!(after.0.get("olddb").is_none(), "{}", after.0);
    assert_eq!(dev["dog"]["record_count"], 2);
    let by_name = n.ok(json!({"operation":"search_by_value","database":"dev","table":"dog","attribute":"name","value":"Harper"}));
    assert_eq!(by_name, json!([]), "a deleted record is back in an index");
    let (s, b) = n.op_as(
        "w1",
        "pw",
        json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":7}],"write_details":true}),
    );
    assert_eq!(
        s, 200,
        "a user and role acknowledged before kill -9 were lost: {b}"
    );
    assert!(
        b["txn_time"].as_f64().unwrap() > last_txn,
        "the clock went back across kill -9"
    );
}
