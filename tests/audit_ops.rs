//! The audit log and clean-up operations (suite 22): `read_audit_log` (all, `timestamp`,
//! `username`, `hash_value`), `delete_audit_logs_before` and `delete_records_before` replayed
//! against Harper 4.7.29's captures (tests/fixtures/harper/audit), deletes that replicate, and
//! a trimmed log that still brings a lagging peer everything.

mod common;
use common::cluster::{self as c, iso, now_ms, T};
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const SUITE: u8 = 22;

fn fixture(case: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/harper/audit")
        .join(format!("{case}.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"))).unwrap()
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// The request of a captured case, with `field` set to `value` when given.
fn request(case: &str, field: Option<(&str, Value)>) -> Value {
    let mut r = fixture(case)["request"].clone();
    if let Some((k, v)) = field {
        r[k] = v;
    }
    r
}

/// Waits until `ms` is in the past, so writes after it have later timestamps.
/// A cut past every audit entry of `db.table` on `n` (an entry's time is its HLC version, which
/// can run a millisecond or two ahead of the wall clock) and past now.
fn cut_after_log(n: &TestNode, db: &str, table: &str) -> u64 {
    let newest = n
        .ok(json!({"operation":"read_audit_log","schema":db,"table":table}))
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["timestamp"].as_f64())
                .fold(0.0, f64::max)
        })
        .unwrap_or(0.0);
    now_ms().max(newest.ceil() as u64 + 1)
}

fn after(ms: u64) {
    assert!(wait_until(Duration::from_secs(5), || now_ms() > ms + 1));
}

fn job(n: &TestNode, resp: &Value) -> Value {
    let id = resp["job_id"].as_str().unwrap_or_else(|| panic!("{resp}"));
    assert_eq!(resp["message"], format!("Starting job with id {id}"));
    let mut last = Value::Null;
    assert!(
        wait_until(Duration::from_secs(60), || {
            last = n.ok(json!({"operation":"get_job","id":id}))[0].clone();
            last["status"] != "IN_PROGRESS"
        }),
        "{last}"
    );
    last
}

/// A finished job compared with Harper's record: keys in order, status, type, user, message
/// (Harper's job id replaced by ours).
fn job_like(ours: &Value, case: &str) {
    let h = &fixture(case)["response"][0];
    assert_eq!(keys(ours), keys(h), "{case}: {ours}");
    for k in ["status", "type", "user"] {
        assert_eq!(ours[k], h[k], "{case}");
    }
    let msg = h["message"]
        .as_str()
        .unwrap()
        .replace(h["id"].as_str().unwrap(), ours["id"].as_str().unwrap());
    assert_eq!(ours["message"], msg, "{case}");
}

/// A record as the audit log shows it, without the times (they differ from Harper's).
fn untimed(r: &Value) -> Value {
    let mut r = r.clone();
    if let Some(o) = r.as_object_mut() {
        for k in ["__createdtime__", "__updatedtime__"] {
            assert!(o.remove(k).is_some_and(|t| t.is_f64()), "{k} missing");
        }
    }
    r
}

/// An audit entry compared with Harper's: keys in Harper's order, operation, user_name,
/// hash_values and records (times aside). `user_added`: Harper writes no user_name on the
/// deletes of delete_records_before; Skerry names the user who ran the job.
fn entry_like(ours: &Value, h: &Value, what: &str, user_added: bool) {
    let mut ours = ours.clone();
    if user_added {
        assert_eq!(ours["user_name"], USER, "{what}: {ours}");
        ours.as_object_mut().unwrap().shift_remove("user_name");
    }
    assert_eq!(keys(&ours), keys(h), "{what}: {ours}");
    assert_eq!(ours["operation"], h["operation"], "{what}");
    assert_eq!(ours["user_name"], h["user_name"], "{what}");
    assert_eq!(ours["hash_values"], h["hash_values"], "{what}");
    assert!(ours["timestamp"].is_number(), "{what}");
    let (o, hr) = (
        ours["records"].as_array().unwrap(),
        h["records"].as_array().unwrap(),
    );
    assert_eq!(o.len(), hr.len(), "{what}");
    for (a, b) in o.iter().zip(hr) {
        assert_eq!(untimed(a), untimed(b), "{what}");
    }
}

/// Entries in order, each like Harper's (see `entry_like`); `user_added` lists the positions
/// of the delete_records_before entry.
fn entries_like(ours: &Value, harper: &Value, what: &str, user_added: &[usize]) {
    let (o, h) = (ours.as_array().unwrap(), harper.as_array().unwrap());
    assert_eq!(o.len(), h.len(), "{what}: {ours}");
    let mut ts = 0.0;
    for (i, (a, b)) in o.iter().zip(h).enumerate() {
        entry_like(a, b, &format!("{what}[{i}]"), user_added.contains(&i));
        let t = a["timestamp"].as_f64().unwrap();
        assert!(t > ts, "{what}: not in time order");
        ts = t;
    }
}

/// Replays the C/C2 captures in Harper's order on one node. Harper's state differed before
/// them (more records, so its delete_records_before deleted 23 where this deletes 5): the
/// ids of that one delete are checked on their own.
#[test]
fn audit_log_and_clean_up_jobs_match_harpers_captures() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    n.ok(json!({"operation":"create_database","database":"dev"}));
    create_dog_table(&n);
    n.ok(json!({"operation":"create_table","database":"dev","table":"cat","primary_key":"id"}));
    n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[
        {"id":1,"name":"Penny"},{"id":2,"name":"Harper"},{"id":3,"name":"Kato"},{"id":4,"name":"Alby"}]}));
    n.ok(json!({"operation":"add_role","role":"r_dog","permission":{"super_user":false,"dev":{"tables":{"dog":
        {"read":true,"insert":true,"update":true,"delete":false,"attribute_permissions":[]}}}}}));
    n.ok(json!({"operation":"add_user","role":"r_dog","username":"u_dog","password":"pw","active":true}));

    // delete_audit_logs_before: entries before the cut go, the insert after it stays.
    let cut1 = cut_after_log(&n, "dev", "dog");
    after(cut1);
    n.ok(request("c_insert_after_cut", None));
    let r = n.ok(request(
        "c_delete_audit_logs_before",
        Some(("timestamp", json!(cut1))),
    ));
    job_like(&job(&n, &r), "c_delete_audit_logs_before_job");
    // Harper 4.7 answers `database` with 500 "database is required"; Skerry takes it.
    assert_eq!(fixture("c_read_audit_log")["status"], 500);
    let log = n.ok(request("c_read_audit_log", None));
    let harper_after =
        fixture("c2_read_audit_log_schema_key_before_new_writes")["response"].clone();
    entries_like(&log, &json!([harper_after[0]]), "after the first cut", &[]);
    let c = fixture("c_read_audit_log_non_super_user");
    assert_eq!(
        n.op_as("u_dog", "pw", c["request"].clone()),
        (403, c["response"].clone())
    );

    // delete_records_before: every record created before the date, by the job's user.
    let cut2 = cut_after_log(&n, "dev", "dog");
    after(cut2);
    n.ok(request("c_insert_after_iso", None));
    let r = n.ok(request(
        "c_delete_records_before",
        Some(("date", json!(iso(cut2)))),
    ));
    let done = job(&n, &r);
    assert_eq!(done["message"], "5 of 5 records successfully deleted");
    assert_eq!(
        fixture("c_delete_records_before_job")["response"][0]["message"],
        "23 of 23 records successfully deleted"
    );
    assert_eq!(
        keys(&done),
        keys(&fixture("c_delete_records_before_job")["response"][0])
    );
    let c = fixture("c_search_after_delete_records_before");
    let got = n.ok(c["request"].clone());
    assert_eq!(got.as_array().unwrap().len(), 1, "{got}");
    assert_eq!(keys(&got[0]), keys(&c["response"][0]));
    assert_eq!(untimed(&got[0]), untimed(&c["response"][0]));
    let r = n.ok(request(
        "c_delete_records_before_database_key",
        Some(("date", json!(iso(now_ms())))),
    ));
    job_like(&job(&n, &r), "c_delete_records_before_database_key_job");
    let c = fixture("c_delete_records_before_missing_date");
    assert_eq!(n.op(c["request"].clone()), (400, c["response"].clone()));

    let log = n.ok(request(
        "c2_read_audit_log_schema_key_before_new_writes",
        None,
    ));
    assert_eq!(log[2]["hash_values"], json!([1, 2, 3, 4, 200]));
    assert_eq!(log[2]["records"], json!([null, null, null, null, null]));
    let mut harper = harper_after.clone();
    harper[2]["hash_values"] = json!([1, 2, 3, 4, 200]);
    harper[2]["records"] = json!([null, null, null, null, null]);
    entries_like(&log, &harper, "c2 before new writes", &[2]);

    // insert, update, upsert, delete, and an insert by another user.
    let t_writes = now_ms();
    after(t_writes);
    for case in [
        "c2_insert_300_301",
        "c2_update_300",
        "c2_upsert_301",
        "c2_delete_300",
        "c2_insert_302_as_u_dog",
    ] {
        let c = fixture(case);
        let (s, b) = if case.ends_with("u_dog") {
            n.op_as("u_dog", "pw", c["request"].clone())
        } else {
            n.op(c["request"].clone())
        };
        assert_eq!(
            (s, &b["message"]),
            (200, &c["response"]["message"]),
            "{case}"
        );
    }
    let t_end = now_ms() + 1;
    let mut all = fixture("c2_read_audit_log")["response"].clone();
    all[2]["hash_values"] = json!([1, 2, 3, 4, 200]);
    all[2]["records"] = json!([null, null, null, null, null]);
    entries_like(
        &n.ok(request("c2_read_audit_log", None)),
        &all,
        "c2_read_audit_log",
        &[2],
    );
    entries_like(
        &n.ok(request("c2_read_audit_log_database_and_schema", None)),
        &all,
        "database and schema",
        &[2],
    );
    let c = fixture("c2_read_audit_log_timestamp");
    let window = json!([t_writes, t_end]);
    entries_like(
        &n.ok(request(
            "c2_read_audit_log_timestamp",
            Some(("search_values", window)),
        )),
        &c["response"],
        "timestamp",
        &[],
    );
    let c = fixture("c2_read_audit_log_timestamp_from_only");
    entries_like(
        &n.ok(request(
            "c2_read_audit_log_timestamp_from_only",
            Some(("search_values", json!([t_writes]))),
        )),
        &c["response"],
        "timestamp from",
        &[],
    );
    // By user: an object keyed by user name. Harper's admin list lacks the delete of
    // delete_records_before (it has no user there); Skerry's has it, third.
    let ours = n.ok(request("c2_read_audit_log_username_admin", None));
    assert_eq!(keys(&ours), ["admin"]);
    let mut harper = fixture("c2_read_audit_log_username_admin")["response"]["admin"].clone();
    harper.as_array_mut().unwrap().insert(2, all[2].clone());
    entries_like(&ours["admin"], &harper, "username admin", &[2]);
    let ours = n.ok(request("c2_read_audit_log_username_u_dog", None));
    let h = fixture("c2_read_audit_log_username_u_dog")["response"].clone();
    assert_eq!(keys(&ours), keys(&h));
    entries_like(&ours["u_dog"], &h["u_dog"], "username u_dog", &[]);
    // By primary key: per-record entries, insert and update reported as upsert.
    for case in [
        "c2_read_audit_log_hash_value_301",
        "c2_read_audit_log_hash_value_300",
    ] {
        let ours = n.ok(request(case, None));
        let h = fixture(case)["response"].clone();
        assert_eq!(keys(&ours), keys(&h), "{case}");
        let k = &keys(&h)[0];
        entries_like(&ours[k], &h[k], case, &[]);
    }
    let ours = n.ok(request("c2_read_audit_log_hash_value_1", None));
    let h = fixture("c2_read_audit_log_hash_value_1")["response"].clone();
    entries_like(&ours["1"], &h["1"], "hash_value 1", &[0]);
    for case in [
        "c2_read_audit_log_bad_search_type",
        "c2_read_audit_log_missing_table",
        "c2_read_audit_log_missing_schema",
        "c2_read_audit_log_no_table",
        "c2_delete_audit_logs_before_no_timestamp",
    ] {
        let c = fixture(case);
        assert_eq!(
            n.op(c["request"].clone()),
            (c["status"].as_u64().unwrap() as u16, c["response"].clone()),
            "{case}"
        );
    }

    // A second cut with `schema`: only what came after it is left, and only in that table.
    n.ok(json!({"operation":"insert","database":"dev","table":"cat","records":[{"id":1}]}));
    let cut3 = cut_after_log(&n, "dev", "dog").max(cut_after_log(&n, "dev", "cat"));
    after(cut3);
    n.ok(request("c2_insert_303_after_cut", None));
    let r = n.ok(request(
        "c2_delete_audit_logs_before_schema_key",
        Some(("timestamp", json!(cut3))),
    ));
    job_like(&job(&n, &r), "c2_delete_audit_logs_before_schema_key_job");
    let c = fixture("c2_read_audit_log_after_delete_audit");
    entries_like(
        &n.ok(c["request"].clone()),
        &c["response"],
        "after the second cut",
        &[],
    );
    let r = n.ok(request("c2_delete_audit_logs_before_missing_table", None));
    job_like(
        &job(&n, &r),
        "c2_delete_audit_logs_before_missing_table_job",
    );
    let cat = n.ok(json!({"operation":"read_audit_log","schema":"dev","table":"cat"}));
    assert_eq!(cat.as_array().unwrap().len(), 1, "{cat}");
    assert_eq!(cat[0]["hash_values"], json!([1]));
}

/// delete_records_before deletes through the core: the tombstones replicate, so the peer
/// ends with the same records.
#[test]
fn delete_records_before_replicates_to_a_second_node() {
    let ips = ips(SUITE, 2);
    let nodes = c::start_all(&ips);
    let (a, b) = (&nodes[0], &nodes[1]);
    for n in &nodes {
        create_dog_table(n);
    }
    c::add_node(a, &b.ip);
    c::wait_mesh(&c::refs(&nodes), &["system", "dev"]);
    c::insert(a, "dog", json!([{"id":1},{"id":2},{"id":3}]));
    c::insert(b, "dog", json!([{"id":4}]));
    c::wait_converged(&c::refs(&nodes), "dog", Some(4), T);
    // Past every record's __updatedtime__ (an HLC time, which can run a millisecond or two
    // ahead of the wall clock), not just now_ms().
    let newest = a
        .ok(json!({"operation":"search_by_value","schema":"dev","table":"dog","search_attribute":"id","search_value":"*","get_attributes":["__updatedtime__"]}))
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["__updatedtime__"].as_f64())
        .fold(0.0, f64::max);
    let cut = now_ms().max(newest.ceil() as u64 + 1);
    after(cut);
    c::insert(a, "dog", json!([{"id":5}]));
    let r = a.ok(
        json!({"operation":"delete_records_before","date":iso(cut),"schema":"dev","table":"dog"}),
    );
    let done = job(a, &r);
    assert_eq!(done["message"], "4 of 4 records successfully deleted");
    let left = c::wait_converged(&c::refs(&nodes), "dog", Some(1), T);
    assert_eq!(left.keys().collect::<Vec<_>>(), ["5"]);
    // On the peer the deletes are in the audit log as a replicated transaction by that user.
    let log = b.ok(json!({"operation":"read_audit_log","schema":"dev","table":"dog","search_type":"username","search_values":[USER]}));
    let deletes: Vec<&Value> = log[USER]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["operation"] == "delete")
        .collect();
    assert_eq!(deletes.len(), 1, "{log}");
    assert_eq!(deletes[0]["hash_values"], json!([1, 2, 3, 4]));
}

/// A peer that was away while the log it needed was trimmed is not left with a hole: its
/// cursor is below the trimmed point (the low watermark), so it gets a full copy and ends
/// with every record.
#[test]
fn a_peer_behind_a_trimmed_audit_log_gets_a_full_copy() {
    let ips = ips(SUITE, 2);
    let mut nodes = c::start_all(&ips);
    for n in &nodes {
        create_dog_table(n);
    }
    c::add_node(&nodes[0], &nodes[1].ip);
    c::wait_mesh(&c::refs(&nodes), &["system", "dev"]);
    c::insert(&nodes[0], "dog", json!([{"id":1}]));
    c::wait_converged(&c::refs(&nodes), "dog", Some(1), T);
    nodes[1].stop();
    c::insert(&nodes[0], "dog", json!([{"id":2},{"id":3}]));
    c::delete(&nodes[0], "dog", json!([1]));
    // The cut must be past every entry's timestamp. That is the entry's HLC version, which can
    // run a millisecond or two ahead of the wall clock (several writes in one millisecond), so
    // take it from the log itself rather than from now_ms() (which flaked once: the delete's
    // entry sat exactly at the cut and was kept).
    let newest = nodes[0]
        .ok(json!({"operation":"read_audit_log","schema":"dev","table":"dog"}))
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["timestamp"].as_f64())
        .fold(0.0, f64::max);
    let cut = now_ms().max(newest.ceil() as u64 + 1);
    after(cut);
    let r = nodes[0].ok(json!({"operation":"delete_audit_logs_before","timestamp":cut,"schema":"dev","table":"dog"}));
    assert_eq!(job(&nodes[0], &r)["status"], "COMPLETE");
    assert_eq!(
        nodes[0].ok(json!({"operation":"read_audit_log","schema":"dev","table":"dog"})),
        json!([])
    );
    nodes[1].start_again();
    let left = c::wait_converged(&c::refs(&nodes), "dog", Some(2), T);
    assert_eq!(left.keys().collect::<Vec<_>>(), ["2", "3"]);
    assert!(
        !c::log_lines(&nodes[1], "full copy").is_empty()
            || !c::log_lines(&nodes[0], "needs a full copy").is_empty(),
        "no full copy was made:\n{}",
        c::dump(&c::refs(&nodes))
    );
}
